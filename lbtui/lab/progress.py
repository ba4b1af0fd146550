"""Step-by-step progress for set-up: each step prints its outcome and how long it took.

    steps = Steps()
    with steps.step("compiling the datapath (BCC)"):
        ...

prints ``  ✓ compiling the datapath (BCC)  2.1 s`` or, when the block raises,
``  ✗ compiling the datapath (BCC)  0.3 s`` followed by the error and the hint given for
that step (what to do next). Sub-step messages (``steps.note``) show under the step.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from lbtui.logs import color_enabled


class StepFailed(RuntimeError):
    """A set-up step failed; the message names the step, the error and what to do."""


class Steps:
    def __init__(self, out: TextIO | None = None, color: bool | None = None) -> None:
        self.out = out or sys.stdout
        # Colours (and the in-place "… title" line) on a terminal without NO_COLOR only.
        self.color = color_enabled(self.out) if color is None else color
        self.done: list[tuple[str, float]] = []
        self._pending = False     # a "… title" line is on screen without its newline

    def _paint(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.color else text

    def _print(self, line: str) -> None:
        if self._pending:         # keep the step's title visible above its details
            print(file=self.out)
            self._pending = False
        print(line, file=self.out, flush=True)

    def _finish(self, line: str) -> None:
        """The step's outcome, over its "… title" line when nothing came in between."""
        if self._pending:
            print("\r\033[K", end="", file=self.out)
            self._pending = False
        print(line, file=self.out, flush=True)

    def note(self, msg: str) -> None:
        """A detail inside the current step (e.g. the loader's own progress)."""
        self._print(self._paint(f"      {msg}", "2"))

    def info(self, msg: str) -> None:
        self._print(f"  {msg}")

    @contextmanager
    def step(self, title: str, hint: str = "") -> Iterator[None]:
        """Run a step; on failure print why and ``hint`` and raise StepFailed."""
        if self.color:
            print(f"  … {title}", end="", file=self.out, flush=True)
            self._pending = True
        t0 = time.monotonic()
        try:
            yield
        except KeyboardInterrupt:
            self._finish(f"  {self._paint('✗', '33')} {title}  (interrupted)")
            raise
        except Exception as e:
            took = time.monotonic() - t0
            self._finish(f"  {self._paint('✗', '31')} {title}  {took:.1f} s")
            self._print(f"      {self._paint('error:', '31')} {e}")
            if hint:
                self._print(f"      {self._paint('fix:', '1')} {hint}")
            raise StepFailed(f"{title}: {e}" + (f" ({hint})" if hint else "")) from e
        took = time.monotonic() - t0
        self.done.append((title, took))
        self._finish(f"  {self._paint('✓', '32')} {title}  {self._paint(f'{took:.1f} s', '2')}")
