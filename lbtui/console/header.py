"""The two status lines at the top: who we are looking at, and how busy it is."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from lbtui.console import fmt
from lbtui.console.snapshot import Snapshot


def header_text(s: Snapshot) -> Text:
    info = s.info
    t = Text(no_wrap=True, overflow="ellipsis")
    t.append(" lbtui ", "bold reverse")
    t.append(f" instance {info.name}", "bold")
    ifs = ",".join(info.interfaces) or "-"
    t.append(f" · {ifs} ({info.xdp_mode})")
    if info.reply_interfaces:
        t.append(f" reply {','.join(info.reply_interfaces)}")
    if info.netns:
        t.append(f" netns {info.netns}", "dim")
    t.append(f" · up {fmt.duration(s.uptime_s)}")
    t.append(" · stats ")
    t.append("on" if s.stats_enabled else "off", "bold green" if s.stats_enabled else "bold red")
    top = s.top_reason()
    if top is not None:      # packets lbtui handed to the kernel stack, and mostly why
        t.append(f" · to stack {fmt.rate(s.stack_pps)}/s", "yellow" if s.stack_pps else "")
        t.append(f" ({top.replace('_', ' ')})", "dim")
    t.append("\n")
    r = s.rates
    c = s.conns
    t.append(f" conns {fmt.count(c.total)}", "bold")
    if c.sampled:
        t.append(" (sampled)", "yellow")
    else:
        t.append(f" active {fmt.count(s.active)}")
    t.append(f" · new {fmt.rate(r.new_conns)}/s")
    t.append(f" · → {fmt.rate(r.pps_fwd)} pkt/s {fmt.rate_bytes(r.bps_fwd)}")
    t.append(f" · ← {fmt.rate(r.pps_rev)} pkt/s {fmt.rate_bytes(r.bps_rev)}")
    fill = c.entries / s.ct_max if s.ct_max else 0
    style = "bold red" if fill > 0.9 else "yellow" if fill > 0.7 else ""
    t.append(" · conntrack ")
    t.append(f"{fmt.count(c.entries)}/{fmt.count(s.ct_max)} ({fill:.0%})", style)
    lost = s.counters.get("events_lost", 0)
    t.append(" · lost events ")
    t.append(fmt.count(lost), "bold red" if lost else "")
    return t


class StatusHeader(Static):
    DEFAULT_CSS = """
    StatusHeader { height: 2; background: $panel; color: $text; }
    """

    def show(self, snap: Snapshot) -> None:
        self.update(header_text(snap))
