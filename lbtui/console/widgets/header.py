"""The two status lines at the top: who we are looking at, and how busy it is.

Each line is a list of parts, most important first. When a line is wider than the
screen, parts switch to their short form (least important first) and then the least
important are left out, so an 80-column terminal still shows the instance, the
connection counts, the rates, conntrack fill and lost events.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.text import Text
from textual.widget import Widget

from lbtui.console.data import fmt
from lbtui.console.data.snapshot import Snapshot

SEP = " · "


@dataclass(frozen=True)
class Part:
    full: Text
    short: Text | None = None     # the same fact in fewer columns
    rank: int = 0                 # 0: never left out; higher: left out first


def _t(*pieces: str | tuple[str, str]) -> Text:
    t = Text()
    for p in pieces:
        if isinstance(p, tuple):
            t.append(*p)
        else:
            t.append(p)
    return t


def fit(parts: Sequence[Part], width: int, lead: Text | None = None) -> Text:
    """``parts`` joined by dots after ``lead``, shortened and thinned to ``width``."""
    chosen: list[Text | None] = [p.full for p in parts]
    head = lead.cell_len if lead is not None else 0

    def used() -> int:
        shown = [t for t in chosen if t is not None]
        return head + sum(t.cell_len for t in shown) + len(SEP) * max(0, len(shown) - 1)

    order = sorted(range(len(parts)), key=lambda i: (-parts[i].rank, -i))
    for i in order:
        if used() <= width:
            break
        if parts[i].short is not None:
            chosen[i] = parts[i].short
    for i in order:
        if used() <= width:
            break
        if parts[i].rank > 0:
            chosen[i] = None
    out = Text(no_wrap=True, overflow="ellipsis")
    if lead is not None:
        out.append_text(lead)
    out.append_text(Text(SEP).join(t for t in chosen if t is not None))
    return out


def node_parts(s: Snapshot) -> list[Part]:
    """A cluster console's: which nodes it reads, the unreachable ones in red with why
    (shortened first), and the nodes whose routes differ from the first's."""
    up = sum(n.reachable for n in s.nodes)
    full, short = _t(f"{up}/{len(s.nodes)} nodes "), _t(f"{up}/{len(s.nodes)} ")
    for i, n in enumerate(s.nodes):
        for t in (full, short):
            if i:
                t.append(" ")
            t.append(n.name, "green" if n.reachable else "bold red")
        if not n.reachable:
            full.append(f" unreachable ({n.problem})", "red")
            short.append(" ✗", "bold red")
    parts = [Part(full, short)]
    if s.drift:
        parts.append(Part(_t(("routes differ: " + ",".join(s.drift), "yellow")), rank=1))
    return parts


def identity_parts(s: Snapshot) -> tuple[Text, list[Part]]:
    info = s.info
    lead = _t((" lbtui ", "bold reverse"), " ")
    ifs = ",".join(info.interfaces) or "-"
    if s.nodes:
        who = [Part(_t((f"cluster {info.name}", "bold")), _t((info.name, "bold"))),
               *node_parts(s)]
    else:
        who = [Part(_t((f"instance {info.name}", "bold")), _t((info.name, "bold")))]
    parts = [
        *who,
        Part(_t(f"{ifs} ({info.xdp_mode})"), _t(f"{ifs} {info.xdp_mode}"), rank=2),
    ]
    if info.reply_interfaces:
        parts.append(Part(_t(f"reply {','.join(info.reply_interfaces)}"), rank=5))
    if info.netns:
        parts.append(Part(_t((f"netns {info.netns}", "dim")), rank=6))
    parts.append(Part(_t(f"up {fmt.duration(s.uptime_s)}"), rank=4))
    on = s.stats_enabled
    parts.append(Part(_t("stats ", ("on" if on else "off", "bold green" if on else "bold red")),
                      rank=1))
    top = s.top_reasons(2)
    if top:      # packets lbtui handed to the kernel stack, and mostly why (6: the view)
        rate = (f"{fmt.rate(s.stack_pps)}/s", "yellow" if s.stack_pps else "")
        why = ", ".join(name + (f" {fmt.rate(r)}/s" if r else "") for name, r in top)
        parts.append(Part(_t("to stack ", rate, (f" ({why})", "dim")),
                          _t("stack ", rate, (f" ({top[0][0]})", "dim")), rank=3))
    return lead, parts


def traffic_parts(s: Snapshot) -> list[Part]:
    r, c = s.rates, s.conns
    if c.sampled:
        conns = _t((f"conns {fmt.count(c.total)}", "bold"), (" (sampled)", "yellow"))
        short = _t((f"conns {fmt.count(c.total)}", "bold"), ("*", "yellow"))
    else:
        conns = _t((f"conns {fmt.count(c.total)}", "bold"), f" active {fmt.count(s.active)}")
        short = _t((f"conns {fmt.count(c.total)}", "bold"), f"/{fmt.count(s.active)} act")
    fill = c.entries / s.ct_max if s.ct_max else 0
    fill_style = "bold red" if fill > 0.9 else "yellow" if fill > 0.7 else ""
    lost = s.counters.get("events_lost", 0)
    lost_style = "bold red" if lost else ""
    return [
        Part(conns, short),
        Part(_t(f"new {fmt.rate(r.new_conns)}/s")),
        Part(_t(f"→ {fmt.rate(r.pps_fwd)} pkt/s {fmt.rate_bytes(r.bps_fwd)}"),
             _t(f"→ {fmt.rate_bytes(r.bps_fwd)}"), rank=2),
        Part(_t(f"← {fmt.rate(r.pps_rev)} pkt/s {fmt.rate_bytes(r.bps_rev)}"),
             _t(f"← {fmt.rate_bytes(r.bps_rev)}"), rank=2),
        Part(_t("conntrack ", (f"{fmt.count(c.entries)}/{fmt.count(s.ct_max)} ({fill:.0%})",
                               fill_style)),
             _t("ct ", (f"{fill:.0%}", fill_style))),
        Part(_t("lost events ", (fmt.count(lost), lost_style)),
             _t("lost ", (fmt.count(lost), lost_style))),
    ]


def header_text(s: Snapshot, width: int = 1000) -> Text:
    lead, ident = identity_parts(s)
    t = fit(ident, width, lead)
    t.append("\n")
    t.append_text(fit(traffic_parts(s), width, Text(" ")))
    return t


class StatusHeader(Widget):
    DEFAULT_CSS = """
    StatusHeader { height: 2; background: $panel; color: $text; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.snap: Snapshot | None = None

    def show(self, snap: Snapshot) -> None:
        self.snap = snap
        self.refresh()

    def render(self) -> Text:
        return header_text(self.snap, self.size.width) if self.snap else Text("")
