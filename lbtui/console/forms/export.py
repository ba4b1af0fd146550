"""Export the rows of a view to a CSV or JSON file the operator names."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from rich.markup import escape
from textual.app import ComposeResult
from textual.widgets import Input, Static

from lbtui.console.data.export import export_path
from lbtui.console.forms.base import FormScreen, field_row, field_value


class ExportForm(FormScreen):
    """Collects a checked path; ``apply`` writes the file and returns the row count."""

    FAILURE: ClassVar[str] = "could not write the file"

    def __init__(self, view: str, rows: int, default: Path,
                 apply: Callable[[Path], object]) -> None:
        super().__init__(f"Export {view} ({rows:,} rows)", apply)
        self.default = default

    def fields(self) -> ComposeResult:
        yield Static(escape(f"The rows as filtered and sorted now, every column. The "
                            f"format follows the name: .csv or .json. A relative name is "
                            f"under {Path.cwd()}."))
        yield from field_row("file", Input(str(self.default), id="path", compact=True),
                             "path-error")

    def collect(self) -> Path:
        path: Path = field_value(self.query_one("#path", Input),
                                 self.query_one("#path-error", Static), export_path)
        return path
