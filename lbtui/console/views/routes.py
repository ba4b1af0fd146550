"""Routes: listeners, source routes and SNI routes with their targets and weights."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, Static

from lbtui.console.groups import Group, find_group
from lbtui.model import GroupKind


def keep_cursor(table: DataTable, rows: list[tuple[str, tuple]]) -> None:
    """Replace a DataTable's rows, keeping the cursor on the same row key."""
    old = None
    if table.row_count and table.cursor_row < table.row_count:
        old = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
    table.clear()
    for key, cells in rows:
        table.add_row(*cells, key=key)
    if old is not None:
        try:
            table.move_cursor(row=table.get_row_index(old), animate=False)
        except Exception:  # the row is gone: leave the cursor where clear() put it
            pass


class RoutesView(Vertical):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("w", "edit_weights", "Weights", id="routes.weights"),
        Binding("e", "edit", "Edit", id="routes.edit"),
        Binding("l", "add('listener')", "Add listener", id="routes.add_listener"),
        Binding("c", "add('source')", "Add source route", id="routes.add_source"),
        Binding("n", "add('sni')", "Add SNI route", id="routes.add_sni"),
        Binding("x,delete", "delete", "Delete", id="routes.delete"),
    ]
    DEFAULT_CSS = """
    RoutesView > #routes-title { height: 1; padding: 0 1; background: $boost; }
    RoutesView > DataTable { height: 1fr; }
    """

    class Requested(Message):
        """The operator asked for ``action`` on ``group`` (None for add)."""

        def __init__(self, action: str, kind: str, group: Group | None) -> None:
            self.action = action
            self.kind = kind
            self.group = group
            super().__init__()

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.groups: list[Group] = []
        self._shown: tuple = ()

    def compose(self) -> ComposeResult:
        yield Static("[b]Routes[/b]", id="routes-title")
        t: DataTable = DataTable(id="routes-table", cursor_type="row", zebra_stripes=True)
        t.add_columns("kind", "match", "options", "target", "weight")
        yield t

    def show(self, groups: list[Group]) -> None:
        self.groups = groups
        state = tuple((g.ref, g.route, g.detail) for g in groups)
        if state == self._shown:
            return
        self._shown = state
        rows = []
        for g in groups:
            for i, t in enumerate(g.route.targets):
                first = i == 0
                weight = Text(str(t.weight), style="dim" if t.weight == 0 else "")
                if t.weight == 0:
                    weight.append(" drained", "yellow")
                rows.append((f"{g.ref}|{t}", (
                    g.kind.value if first else "", _match(g) if first else "",
                    g.detail if first else "", str(t), weight)))
        keep_cursor(self.query_one(DataTable), rows)
        n = {k.value: sum(g.kind is k for g in groups) for k in GroupKind}
        self.query_one("#routes-title", Static).update(
            f"[b]Routes[/b]  {n['listener']} listeners · {n['source']} source routes · "
            f"{n['sni']} SNI routes")

    @property
    def selected(self) -> Group | None:
        t = self.query_one(DataTable)
        if not t.row_count:
            return None
        key = t.coordinate_to_cell_key(t.cursor_coordinate).row_key.value or ""
        kind, gkey, _target = key.split("|", 2)
        return find_group(self.groups, f"{kind}|{gkey}")

    def _request(self, action: str) -> None:
        g = self.selected
        if g is None:
            self.notify("no route selected", severity="warning")
            return
        self.post_message(self.Requested(action, g.kind, g))

    def action_edit_weights(self) -> None:
        self._request("weights")

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self._request("weights")   # Enter on a row

    def action_edit(self) -> None:
        self._request("edit")

    def action_delete(self) -> None:
        self._request("delete")

    def action_add(self, kind: str) -> None:
        self.post_message(self.Requested("add", kind, None))


def _match(g: Group) -> str:
    return f":{g.key.key}" if g.kind is GroupKind.LISTENER else str(g.key.key)
