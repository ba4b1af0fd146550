"""Routes: listeners, source routes and SNI routes with their targets and weights."""

from __future__ import annotations

from typing import Any, ClassVar

from textual.binding import Binding, BindingType

from lbtui.console.data.groups import Group
from lbtui.console.data.tables import RouteRow, relabel, route_rows
from lbtui.console.messages import RouteRequested
from lbtui.console.views.base import LIST_BINDINGS, ListView
from lbtui.console.widgets.linetable import LineTable, TableColumn
from lbtui.model import GroupKind


def match_of(g: Group) -> str:
    """What a group matches, as the Routes view shows it: ``:80``, a CIDR, a hostname."""
    return f":{g.key.key}" if g.kind is GroupKind.LISTENER else str(g.key.key)


# What each way of picking means, for the confirmation before switching (``h``).
HASH_MEANING = {
    "maglev": "A Maglev table picks the target from the connection's addresses: adding or "
              "removing a target changes the pick for about 1/N of connections only, and "
              "a connection that reaches another node mid-way (ECMP after a node change) "
              "is adopted there with the same target.",
    "weighted": "The connection's hash modulo the weights picks the target: exact "
                "weights, but adding or removing a target shifts most picks, and a "
                "connection that reaches a node without its flow is not adopted.",
}


def _weight(r: RouteRow, _c: object) -> str:
    return "0 drained" if r.target.weight == 0 else str(r.target.weight)


ROUTE_COLUMNS = [
    TableColumn("kind", 8, lambda r, _c: r.group.kind.value if r.first else "",
                value=lambda r, _c: r.group.kind.value),
    TableColumn("match", 24, lambda r, _c: match_of(r.group) if r.first else "",
                value=lambda r, _c: match_of(r.group)),
    TableColumn("hash", 9, lambda r, _c: r.group.route.hash if r.first else "", drop=1,
                value=lambda r, _c: r.group.route.hash),
    TableColumn("options", 24, lambda r, _c: r.group.detail if r.first else "", drop=1,
                value=lambda r, _c: r.group.detail),
    TableColumn("target", 21, lambda r, _c: str(r.target)),
    TableColumn("weight", 9, _weight, right=True, search=True,
                value=lambda r, _c: r.target.weight),
]


def route_class(r: RouteRow) -> str | None:
    return "warn" if r.target.weight == 0 else None


class RoutesView(ListView):
    NAME = "routes"
    FIELDS = tuple(c.key for c in ROUTE_COLUMNS)
    ALIASES: ClassVar[dict[str, str]] = {"backend": "target", "host": "match",
                                         "port": "match"}
    EXAMPLE = "kind:sni hash:maglev"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("w", "edit_weights", "Weights", id="routes.weights"),
        Binding("e", "edit", "Edit", id="routes.edit"),
        Binding("h", "switch_hash", "Hash", id="routes.hash"),
        Binding("l", "add('listener')", "New listener", id="routes.add_listener"),
        Binding("c", "add('source')", "New source", id="routes.add_source"),
        Binding("n", "add('sni')", "New SNI", id="routes.add_sni"),
        Binding("x,delete", "delete", "Delete", id="routes.delete"),
        Binding("enter", "edit_weights", "Weights", show=False, id="routes.enter"),
        *LIST_BINDINGS,
    ]

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.groups: list[Group] = []
        self._shown: tuple[object, ...] = ()

    def make_table(self) -> LineTable:
        return LineTable(ROUTE_COLUMNS, key=lambda r: r.ref, row_class=route_class,
                         id="routes-table")

    def on_mount(self) -> None:
        self._render_rows()

    def show(self, groups: list[Group]) -> None:
        self.groups = groups
        state = tuple((g.ref, g.route, g.detail) for g in groups)
        if state == self._shown:
            return
        self._shown = state
        self._render_rows()

    def refilter(self) -> None:
        self._render_rows()

    def _render_rows(self) -> None:
        rows = relabel(self.filtered(route_rows(self.groups), ROUTE_COLUMNS, None))
        self.table.set_rows(rows)
        n = {k.value: sum(g.kind is k for g in self.groups) for k in GroupKind}
        self.title(f"[b]Routes[/b]  {n['listener']} listeners · {n['source']} source "
                   f"routes · {n['sni']} SNI routes")

    @property
    def selected(self) -> Group | None:
        row = self.table.selected
        return row.group if row is not None else None

    def _request(self, action: str) -> None:
        g = self.selected
        if g is None:
            self.notify("no route selected", severity="warning")
            return
        self.post_message(RouteRequested(action, g.kind, g))

    def action_edit_weights(self) -> None:
        self._request("weights")

    def action_edit(self) -> None:
        self._request("edit")

    def action_switch_hash(self) -> None:
        self._request("hash")

    def action_delete(self) -> None:
        self._request("delete")

    def action_add(self, kind: str) -> None:
        self.post_message(RouteRequested("add", kind, None))
