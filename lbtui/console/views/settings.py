"""Settings: stats on/off and the connection timeout, plus the kernel counters."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import Static

from lbtui.console.data import fmt
from lbtui.console.data.snapshot import Snapshot
from lbtui.console.messages import SettingsRequested

COUNTER_LABELS = {
    "flows_created": "flows created",
    "flows_closed": "flows closed (FIN/RST)",
    "flows_deleted": "flows deleted by userspace (sweep, console)",
    "no_target": "packets with no target (all drained)",
    "sni_passed": "packets passed to the SNI splicer",
    "events_lost": "events lost (ring buffer full)",
    "user_events": "events emitted by userspace",
}


class SettingsView(Vertical):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("t", "toggle_stats", "Stats on/off", id="settings.stats"),
        Binding("e", "edit_timeout", "Conn timeout", id="settings.timeout"),
    ]
    DEFAULT_CSS = """
    SettingsView > #settings-title { height: 1; padding: 0 1; background: $boost; }
    SettingsView > #settings-body { padding: 1 2; height: 1fr; }
    """
    can_focus = True

    def compose(self) -> ComposeResult:
        yield Static("[b]Settings[/b]", id="settings-title")
        yield Static(id="settings-body")

    def show(self, s: Snapshot) -> None:
        t = Table.grid(padding=(0, 3))
        t.add_column(style="bold")
        t.add_column()
        state = "[green b]on[/]" if s.stats_enabled else "[red b]off[/]"
        t.add_row("stats events", f"{state}  (t toggles)")
        timeout = (f"{s.conn_timeout} s ({fmt.duration(s.conn_timeout)})"
                   if s.conn_timeout else "0 (ageing disabled)")
        t.add_row("connection timeout", f"{timeout}  (e edits)")
        t.add_row("", "")
        t.add_row("conntrack", f"{fmt.count(s.conns.entries)} of "
                  f"{fmt.count(s.ct_max)} entries (a flow takes two)")
        t.add_row("last read", f"{s.read_ms:.0f} ms conntrack, {s.total_ms:.0f} ms in all")
        t.add_row("", "")
        for key, label in COUNTER_LABELS.items():
            t.add_row(label, fmt.count(s.counters.get(key, 0)))
        self.query_one("#settings-body", Static).update(t)

    def action_toggle_stats(self) -> None:
        self.post_message(SettingsRequested("toggle_stats"))

    def action_edit_timeout(self) -> None:
        self.post_message(SettingsRequested("edit_timeout"))
