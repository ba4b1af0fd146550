"""Pilot helpers shared by the console's UI tests."""

from __future__ import annotations

from collections.abc import Callable

from textual.pilot import Pilot

from lbtui.console.app import ConsoleApp

KEY_NAMES = {" ": "space", "!": "exclamation_mark"}


def keys(text: str) -> list[str]:
    """``text`` as keys for ``pilot.press`` (spaces and ``!`` by name)."""
    return [KEY_NAMES.get(c, c) for c in text]


async def until(pilot: Pilot, cond: Callable[[], object], what: str, timeout: float = 10
                ) -> None:
    for _ in range(int(timeout / 0.05)):
        if cond():
            return
        await pilot.pause(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def loaded(pilot: Pilot) -> None:
    """Wait for the console's first snapshot to be shown."""
    app: ConsoleApp = pilot.app  # type: ignore[assignment]
    for _ in range(200):
        if app.refreshes:
            break
        await pilot.pause(0.02)
    assert app.refreshes, "the first snapshot never arrived"
    await pilot.pause()
