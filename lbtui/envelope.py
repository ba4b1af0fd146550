"""The one JSON document every ``--json`` output is, success or error.

    {"version": 1, "ok": true,  "data": ...}
    {"version": 1, "ok": false, "error": {"kind": "not_running", "exit_code": 3,
                                          "message": "..."}}

``version`` is the envelope's schema version: it changes only when these fields change
meaning. ``data`` is the command's own document; an error may carry ``data`` too (``ctl
status`` of a degraded instance). Kinds and exit codes: ``lbtui.errors``.
"""

from __future__ import annotations

import json
from typing import Any

VERSION = 1


def ok(data: Any) -> dict[str, Any]:
    return {"version": VERSION, "ok": True, "data": data}


def error(kind: str, exit_code: int, message: str, data: Any = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"version": VERSION, "ok": False,
                           "error": {"kind": kind, "exit_code": exit_code,
                                     "message": message}}
    if data is not None:
        doc["data"] = data
    return doc


def dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=1, default=str)
