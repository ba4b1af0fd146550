"""The `?` screen: every binding of the console, with its key, id and meaning."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Static


def bindings_table(sections: list[tuple[str, list[BindingType]]]) -> Table:
    t = Table(box=None, padding=(0, 2), show_header=True, header_style="bold")
    t.add_column("where")
    t.add_column("key")
    t.add_column("does")
    t.add_column("id", style="dim")
    for where, bindings in sections:
        first = True
        for b in bindings:
            if not isinstance(b, Binding):
                continue
            key = b.key_display or b.key.replace("question_mark", "?").replace(
                "slash", "/").replace("greater_than_sign", ">").replace("less_than_sign", "<")
            t.add_row(where if first else "", key, b.description, b.id or "")
            first = False
    return t


CLUSTER_HELP = (
    "[b]Many nodes[/b] (--attach a,b or --cluster FILE). The header lists the nodes, "
    "unreachable ones in red with why; figures are the reachable nodes' totals. Targets "
    "has a row per (group, target) for [i]all[/i] nodes and one per node under it "
    "([i]node:node2[/i] keeps one node's); Connections has a node column "
    "([i]node:node1[/i]). Every edit (weights, drains, hash, routes, listeners, "
    "settings) "
    "goes to every node, all or nothing: each node must be reachable, not locked by "
    "another edit and accept the change, or nothing changes anywhere and the message "
    "names the node; a node that fails while applying is undone on the nodes already "
    "changed. Each node's config file is written, so edits survive restarts.\n")


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 100; max-width: 100%; height: 90%; border: heavy $accent;
        background: $surface; padding: 0 1;
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,question_mark,q", "close", "Close", id="help.close"),
    ]

    def __init__(self, sections: list[tuple[str, list[BindingType]]], *,
                 cluster: bool = False) -> None:
        super().__init__()
        self.sections = sections
        self.cluster = cluster

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(
                "[b]lbtui console[/b]: number keys switch views; ctrl+p opens the command "
                "palette (actions from live data: drain a target, edit a route). Forms: "
                "ctrl+s or Enter saves, Esc cancels; a refused change leaves the form open.\n\n"
                "[b]Filters[/b] (/ in every list): terms separated by spaces, all must hold. "
                "[b]text[/b] is found in any column; [b]field:value[/b] matches a whole part "
                "of one column ([i]target:10.0.1.11[/i] is not 10.0.1.110; a value ending "
                "in . or : is a prefix, [i]client:198.18.2.[/i]); [b]![/b] negates "
                "([i]!udp[/i], [i]!target:10.0.1.11[/i]). The fields are the column names "
                "(Connections: client vip target proto state). Enter keeps the filter, "
                "Esc clears it; a filter that does not parse changes nothing and says why."
                "\n\nConnections hides closed flows (FIN both ways) until [b]c[/b]; resets "
                "are red, unanswered SYNs yellow. [b]y[/b] copies the selected row as "
                "field=value pairs (through the terminal, OSC 52); [b]s[/b] exports the view "
                "as filtered and sorted, every column, to a .csv or .json file. A drain "
                "asks first; [b]u[/b] gives the drained target its weight back. On a "
                "narrow terminal the least important columns are left out; copies and "
                "exports keep them.\n\n"
                "[b]Incidents[/b]. Targets has a row per (group, target): a target two "
                "listeners share is counted under each. [b]health[/b] is judged from the "
                "target's own traffic in that group (healthy, degraded, failing: the "
                "config's [i][health][/i] thresholds over unanswered SYNs, resets, timeouts "
                "and failed connects, each counted in its column); [b]check[/b] is the "
                "active checks' verdict ([i]in[/i] rotation or [i]OUT[/i]). Failing or out "
                "is red, degraded or drained yellow; try [i]!state:healthy[/i]. Events "
                "lists, among the flows, every edit (from the console, ctl or a reload: "
                "who, old -> new) and every change of health "
                "([i]event:edit user:alice[/i], [i]event:health[/i], [i]event:check[/i]). "
                "[b]Reasons[/b] (6) counts the packets XDP handed to the kernel stack "
                "instead of forwarding them, per interface and reason, per second and in "
                "all; the header names the busiest. Every view follows edits made elsewhere "
                "within a refresh, SNI routes by their hostname.\n")
            if self.cluster:
                yield Static(CLUSTER_HELP)
            yield Static(bindings_table(self.sections))
        yield Footer()

    def action_close(self) -> None:
        self.dismiss(None)
