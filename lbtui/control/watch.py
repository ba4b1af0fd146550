"""``lbtui ctl events`` and ``lbtui ctl health``: the instance's event stream and target
health, read from its hub (the one ring-buffer reader, in serve or a managing console)."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from lbtui.control.ctl import emit, table
from lbtui.control.eventhub import subscribe
from lbtui.control.instance import Instance
from lbtui.errors import NotRunning


def _clock(ts: float | None) -> str:
    if not ts:
        return "--:--:--.---"
    return time.strftime("%H:%M:%S", time.localtime(ts)) + f".{int(ts * 1000) % 1000:03d}"


def message_line(m: dict[str, Any]) -> str | None:
    """One human line for a hub message (None: not shown)."""
    kind = m.get("type")
    if kind == "event":
        arrow = f"{m['client_ip']}:{m['client_port']} -> {m['vip_ip']}:{m['vip_port']} => " \
                f"{m['target_ip']}:{m['target_port']}"
        what = m["kind"] + (f" ({m['reason']})" if m.get("reason") else "")
        extra = ""
        if m["kind"] == "closed":
            life = max(0, m["ts_ns"] - m["created_ns"]) / 1e9
            extra = (f"  {life:.3f}s {m['packets_fwd']}/{m['packets_rev']} pkts"
                     f"{'' if m.get('replied') else '  UNANSWERED'}"
                     f"{'  RESET by target' if m.get('rst_by_target') else ''}")
        return (f"{_clock(m.get('ts'))} {what:<15} {m['proto']:<4} {arrow}  "
                f"[{m.get('group_key') or '?'}]{extra}")
    if kind == "edit":
        return (f"{_clock(m.get('ts'))} edit by {m.get('source', '?')} "
                f"({m.get('user', '?')}): {m.get('change', '')}")
    if kind == "transition":
        where = f" of {m['group']}" if m.get("group") else ""
        why = f" ({m['why']})" if m.get("why") else ""
        how = "active check" if m.get("source") == "check" else "traffic"
        return (f"{_clock(m.get('ts'))} target {m['target']}{where}: {m['from']} -> "
                f"{m['to']} [{how}]{why}")
    if kind == "dropped":
        return f"-- {m['count']} messages dropped: this viewer fell behind --"
    return None


def cmd_events(args: argparse.Namespace, inst: Instance) -> int:
    """The recent events and edits, then (``--follow``) live ones until interrupted."""
    stream = subscribe(inst.name, tick=0.5)       # NoHub: not running (exit 3)
    try:
        for m in stream:
            if m is None:
                continue
            if m.get("type") == "live" and not args.follow:
                break
            if m.get("type") in ("hello", "live", "health"):
                continue
            if args.json:
                print(json.dumps(m, separators=(",", ":")), flush=True)
            elif (line := message_line(m)) is not None:
                print(line, flush=True)
        else:
            if args.follow:
                raise NotRunning(f"the event stream of {inst.name!r} ended (its manager "
                                 "stopped)")
    except KeyboardInterrupt:
        pass
    return 0


def health_data(instance: str) -> dict[str, Any]:
    """The hub's current account: per (group, target) traffic health and active checks."""
    stream = subscribe(instance, tick=5)
    live = False
    for m in stream:
        if m is None:
            break
        live = live or m.get("type") == "live"
        if live and m.get("type") == "health":
            return {"targets": m.get("targets", []), "checks": m.get("checks", [])}
    raise RuntimeError(f"the hub of {instance!r} sent no health account")


def health_text(d: dict[str, Any]) -> str:
    rows = [[t["group"], t["target"], t["state"], t["opened"], t["closed"], t["unanswered"],
             t["resets"], t["timeouts"], t["connect_failed"],
             f"{t['recent_ok']}/{t['recent_failed']}"] for t in d["targets"]]
    out = [table(["group", "target", "state", "opened", "closed", "unanswered", "resets",
                  "timeouts", "connect-failed", "window ok/failed"], rows)]
    if d["checks"]:
        out += ["", "active checks (TCP connect)",
                table(["target", "state", "checks", "last error"],
                      [[c["target"], "in rotation" if c["state"] == "up" else
                        "OUT of rotation", c["checked"], c["last_error"] or "-"]
                       for c in d["checks"]])]
    return "\n".join(out)


def cmd_health(args: argparse.Namespace, inst: Instance) -> int:
    d = health_data(inst.name)
    emit(args, d, health_text(d))
    return 0
