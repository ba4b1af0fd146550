"""The one way blocking work leaves the console's event loop: Controller edits (map writes,
the config file, netlink through pyroute2, whose sync API refuses to run inside a running
event loop), exports and stopping the instance all go through ``run_blocking``, awaited by
the form or the app's async worker that asked for it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """What a blocking call gave: its value, or why it changed nothing."""

    value: T | None = None
    refused: str | None = None   # ValueError: bad input, nothing changed
    failed: str | None = None    # RuntimeError/OSError: a map or file write failed, undone

    @property
    def ok(self) -> bool:
        return self.refused is None and self.failed is None

    @property
    def problem(self) -> str:
        if self.refused is not None:
            return f"refused: {self.refused}"
        if self.failed is not None:
            return f"failed, nothing changed: {self.failed}"
        return ""


async def run_blocking(call: Callable[[], T]) -> Outcome[T]:
    """Run ``call`` on a thread; the errors of the control plane become an Outcome (any
    other exception is a bug and propagates)."""
    try:
        return Outcome(await asyncio.to_thread(call))
    except ValueError as e:
        return Outcome(refused=str(e))
    except (RuntimeError, OSError) as e:
        return Outcome(failed=str(e))
