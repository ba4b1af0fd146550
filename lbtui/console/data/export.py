"""Writing a view to a file: CSV or JSON (chosen by the file's extension), one record per
row with every column, raw values where a column has them (bytes as integers, ages in
seconds). Also the one-line form of a row that "copy" puts on the clipboard."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from lbtui.files import atomic_write

FORMATS = ("csv", "json")


class Column(Protocol):
    """What an export needs of a table column (``widgets.linetable.TableColumn``)."""

    @property
    def key(self) -> str: ...

    @property
    def export(self) -> bool: ...

    def raw(self, row: Any, context: Any) -> object: ...


def record(columns: Sequence[Column], row: Any, context: Any) -> dict[str, object]:
    """A row as {field: raw value}, every exported column, shown on screen or not."""
    return {c.key: c.raw(row, context) for c in columns if c.export}


def copy_text(rec: Mapping[str, object]) -> str:
    """A row as one line of field=value pairs (the names the filter language uses)."""
    return " ".join(f"{k}={v}" for k, v in rec.items() if v not in ("", None))


def default_path(view: str, now: float | None = None, directory: Path | None = None) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    return (directory or Path.cwd()) / f"lbtui-{view}-{stamp}.csv"


def export_path(text: str, directory: Path | None = None) -> Path:
    """The file an operator typed, checked: ends in .csv or .json, its directory exists,
    and it is not there yet (an export never overwrites). Relative to ``directory``
    (default: the working directory)."""
    raw = text.strip()
    if not raw:
        raise ValueError("give a file name ending in .csv or .json")
    p = Path(raw).expanduser()
    if not p.is_absolute():
        p = (directory or Path.cwd()) / p
    if p.suffix.lower().lstrip(".") not in FORMATS:
        raise ValueError(f"{p.name}: the name must end in .csv or .json (the format)")
    if not p.parent.is_dir():
        raise ValueError(f"{p.parent} is not a directory")
    if p.exists():
        raise ValueError(f"{p} exists; choose another name (exports never overwrite)")
    return p


def render(fmt: str, meta: Mapping[str, object], records: list[dict[str, object]]) -> str:
    if fmt == "json":
        return json.dumps({**meta, "rows": records}, indent=1) + "\n"
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=list(records[0]) if records else [],
                       lineterminator="\n")
    w.writeheader()
    w.writerows(records)
    return out.getvalue()


def write_export(path: Path, columns: Sequence[Column], rows: Sequence[Any], context: Any,
                 meta: Mapping[str, object]) -> int:
    """Write ``rows`` to ``path`` (checked by ``export_path``); returns how many. Meant
    for a worker thread: 100k connections take a second or two."""
    records = [record(columns, r, context) for r in rows]
    fmt = path.suffix.lower().lstrip(".")
    atomic_write(path, render(fmt, meta, records), mode=0o644)
    return len(records)
