"""``lbtui lab status`` as text (the data comes from ``lifecycle.status``)."""

from __future__ import annotations

import time
from typing import Any

import humanize


def _shares(counts: dict[str, int]) -> str:
    total = sum(counts.values())
    if not total:
        return "-"
    return " ".join(f"{b} {100 * n / total:.0f}%" for b, n in sorted(counts.items()))


def render_status(st: dict[str, Any]) -> str:
    lab = st["lab"]
    if not st["exists"]:
        return f"lab {lab}: not up (`lbtui lab up --lab {lab}` or `lbtui demo --lab {lab}`)"
    owner = st["owner"]
    if owner["alive"]:
        who = f"owned by pid {owner['pid']} ({owner['role'] or '?'})"
    else:
        who = "no owner running (kept, or left by a crash: `lbtui lab down` removes it)"
    lines = [f"lab {lab}: {'ready' if st['ready'] else 'not ready'}, {who}",
             f"  instance {st['instance']}, config {st['config_path'] or '-'}"]
    ns = st["namespaces"]
    present = [n["name"] for n in ns if n["present"]]
    missing = [n["name"] for n in ns if not n["present"]]
    lines.append(f"namespaces  {len(present)}/{len(ns)} present"
                 + (f"; MISSING: {', '.join(missing)}" if missing else
                    f": {', '.join(present)}"))
    procs = st["processes"]
    by_role: dict[str, list[str]] = {}
    for p in procs:
        by_role.setdefault(p["role"], []).append(
            f"{p['node']} {p['pid']}" + ("" if p["alive"] else " (exited)"))
    for role, items in sorted(by_role.items()):
        lines.append(f"processes   {role}: {', '.join(items)}")
    if st["xdp"]:
        lines.append("XDP (LB)    " + "  ".join(
            f"{x['ifname']}:{x['mode'] or 'none'}" + (f"#{x['prog_id']}" if x["prog_id"] else "")
            for x in st["xdp"]))
    dp = st["datapath"] or {}
    if "error" in dp:
        lines.append(f"datapath    not loaded: {dp['error']}")
    elif dp:
        m = dp["maps"]
        ct = m["conntrack"]
        lines.append(
            f"datapath    prog {dp['prog_id']}, manager pid {dp['manager_pid'] or '-'}, "
            f"{ct['flows']} flows ({ct['entries']}/{ct['max_entries']} conntrack entries), "
            f"listen {m['listen']['entries']}, source routes {m['source_routes']['entries']}, "
            f"SNI routes {m['sni_routes']['entries']}, events lost {dp['events_lost']}")
        c = dp["counters"]
        lines.append("counters    " + ", ".join(f"{k} {v}" for k, v in c.items() if v) or "-")
    now = time.time()
    for client, t in sorted(st["traffic"].items()):
        kinds = t["kinds"]
        active = [k for k, v in kinds.items() if v["ok"] or v["errors"]]
        state = "finished" if t["done"] else (
            f"{humanize.naturaldelta(max(0.0, t['ends'] - now))} left")
        lines.append(f"traffic     {client} ({state}): " + ("; ".join(
            f"{k} {kinds[k]['rate']:.1f}/s ok {kinds[k]['ok']} err {kinds[k]['errors']}"
            for k in active) or "starting"))
        for k in active:
            if kinds[k]["recent_by_backend"]:
                lines.append(f"              {k} last 5 s: "
                             f"{_shares(kinds[k]['recent_by_backend'])}")
            if kinds[k]["last_error"] and kinds[k]["errors"]:
                lines.append(f"              {k} last error: {kinds[k]['last_error']}")
        if t["echo_open"]:
            lines.append("              open echo connections: " + ", ".join(
                f"{b} {n}" for b, n in t["echo_open"].items()))
    if not st["traffic"]:
        lines.append("traffic     none (started with --no-traffic, or not yet)")
    return "\n".join(lines)
