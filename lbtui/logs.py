"""Logging for every lbtui process: the stdlib ``logging`` module, configured once.

    from lbtui import logs
    logs.setup("info", role="lbtui serve")     # cli.main does this for every command
    log = logging.getLogger(__name__)          # modules log under the "lbtui" tree

One line per event, on stderr, made for both people and journald:
- on a terminal: ``lbtui serve: warning: message`` with the level word in colour, unless
  ``NO_COLOR`` is set (https://no-color.org) or the stream is not a terminal;
- under systemd (``JOURNAL_STREAM`` names our stderr): ``<4>message``, the sd-daemon(3)
  priority prefix, so journald records the level and adds its own timestamp and name;
- when the stream is not a terminal (journal, log file, pipe), newlines in a message (a
  config error listing several problems) are folded into the same line, so one event
  never becomes several journal entries; an exception is always folded into its line.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from typing import TextIO

LEVELS = ("debug", "info", "warning", "error")
ROOT = "lbtui"
# sd-daemon(3) / syslog priorities of the stdlib levels.
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
             logging.CRITICAL: 2}
_COLOR = {logging.DEBUG: "2", logging.WARNING: "33", logging.ERROR: "31",
          logging.CRITICAL: "31"}
_TRACE_FRAMES = 3   # innermost frames kept when an exception is folded into its line


def is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def color_enabled(stream: TextIO) -> bool:
    """Colours only on a terminal, and never when ``NO_COLOR`` is set to anything."""
    return not os.environ.get("NO_COLOR") and is_terminal(stream)


def journald_stream(stream: TextIO) -> bool:
    """True when systemd connected ``stream`` to the journal (it sets JOURNAL_STREAM to
    the stream's device:inode, so a redirected stderr of a child does not count)."""
    want = os.environ.get("JOURNAL_STREAM")
    if not want:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return want == f"{st.st_dev}:{st.st_ino}"


def one_line(text: str) -> str:
    """A multi-line text as one line: lines joined with " | ", indentation dropped."""
    parts = [p.strip() for p in text.splitlines() if p.strip()]
    return " | ".join(parts)


def _folded_exception(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)[-_TRACE_FRAMES:]
    where = " < ".join(f"{os.path.basename(f.filename)}:{f.lineno} in {f.name}"
                       for f in reversed(frames))
    return f"{type(exc).__name__}: {exc}" + (f" [at {where}]" if where else "")


class LineFormatter(logging.Formatter):
    """Formats a record as one line (see the module docstring)."""

    def __init__(self, role: str, *, color: bool, journald: bool, fold: bool) -> None:
        super().__init__()
        self.role = role
        self.color = color
        self.journald = journald
        self.fold = fold

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            msg = f"{msg}: {_folded_exception(record.exc_info[1])}"
        if self.fold or self.journald:
            msg = one_line(msg)
        if self.journald:
            return f"<{_PRIORITY.get(record.levelno, 6)}>{msg}"
        word = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}:"
        if word and self.color:
            word = f"\033[{_COLOR.get(record.levelno, '0')}m{word}\033[0m"
        return f"{self.role}: {word + ' ' if word else ''}{msg}"


def parse_level(name: str) -> int:
    """A level name (debug, info, warning, error) as a logging level; ValueError names
    the choices."""
    if name.lower() not in LEVELS:
        raise ValueError(f"log level {name!r}: use one of {', '.join(LEVELS)}")
    return logging.getLevelNamesMapping()[name.upper()]


def setup(level: str = "info", role: str = "lbtui", stream: TextIO | None = None
          ) -> logging.Logger:
    """Send the "lbtui" logger tree to ``stream`` (stderr) at ``level``, replacing an
    earlier set-up; ``role`` prefixes each line (``lbtui serve``)."""
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(LineFormatter(role, color=color_enabled(stream),
                                       journald=journald_stream(stream),
                                       fold=not is_terminal(stream)))
    logger = logging.getLogger(ROOT)
    for old in list(logger.handlers):
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(parse_level(level))
    logger.propagate = False
    return logger


def add_log_level_option(p: argparse.ArgumentParser) -> None:
    """``--log-level`` on a parser; unset leaves the default of the command."""
    p.add_argument("--log-level", choices=LEVELS, default=argparse.SUPPRESS,
                   help="log messages of this level and above (default: info for serve, "
                        "warning otherwise)")
