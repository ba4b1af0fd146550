"""Every message the console's widgets and workers send, as dataclasses in one place.

Views ask (``*Requested``); the app decides, runs the edit and shows the outcome. Workers
report snapshots and table views (``Collected``, ``ViewReady``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from textual.message import Message

from lbtui.console.data.filters import Filter

if TYPE_CHECKING:
    from lbtui.console.data.conns import ConnView, ViewSpec
    from lbtui.console.data.groups import Group
    from lbtui.console.data.snapshot import Snapshot
    from lbtui.console.data.traffic import FlowRow
    from lbtui.console.widgets.linetable import LineTable, TableColumn

# --- collection (worker threads -> app) ---------------------------------------------------


@dataclass
class Collected(Message):
    """A snapshot, and the Connections table computed from it (None while frozen)."""

    snap: Snapshot
    view: ConnView | None


@dataclass
class CollectFailed(Message):
    error: BaseException


@dataclass
class ViewReady(Message):
    """The Connections table recomputed for a new sort, filter or closed-flow choice."""

    view: ConnView


# --- widgets -------------------------------------------------------------------------------


@dataclass
class HeaderClicked(Message):
    table: LineTable
    column: str

    @property
    def control(self) -> LineTable:
        return self.table


@dataclass
class FilterChanged(Message):
    """The filter bar holds a new valid filter (an invalid one is not sent)."""

    filter: Filter
    text: str


@dataclass
class FilterClosed(Message):
    """Enter in the filter bar: the filter stays, the table takes the focus back."""


# --- views -> app --------------------------------------------------------------------------


@dataclass
class SpecChanged(Message):
    """The operator changed how Connections are sorted, filtered or which are shown."""

    spec: ViewSpec


@dataclass
class FreezeToggled(Message):
    frozen: bool


@dataclass
class DeleteConnRequested(Message):
    row: FlowRow


@dataclass
class RouteRequested(Message):
    """``action`` (add, edit, weights, delete) on ``group`` (None when adding a ``kind``)."""

    action: str
    kind: str
    group: Group | None


@dataclass
class TargetRequested(Message):
    """``action`` (drain, weights, connections) on one target of a group."""

    action: str
    group: Group | None
    target: str


@dataclass
class SettingsRequested(Message):
    action: str


@dataclass
class ExportRequested(Message):
    """Write ``rows`` of a view (all of them, filtered as shown) to a file."""

    view: str
    columns: Sequence[TableColumn]
    rows: Sequence[Any]
    context: Any
