"""Pilot helpers shared by the console's UI tests."""

from __future__ import annotations

from collections.abc import Callable

from textual import events
from textual.keys import _character_to_key
from textual.pilot import Pilot
from textual.widgets import Input

from lbtui.console.app import ConsoleApp


async def type_text(pilot: Pilot, text: str) -> None:
    """Type ``text`` into the focused widget: one key event per character, as a terminal
    sends them, queued at once and settled once (``pilot.press`` waits for the app to go
    idle after every key, about 0.1 s each)."""
    for char in text:
        key = events.Key(_character_to_key(char), char)   # as the terminal driver names it
        key.set_sender(pilot.app)
        pilot.app.post_message(key)
    await pilot.pause()


async def type_into(pilot: Pilot, inp: Input, text: str) -> None:
    """Replace what the input ``inp`` holds by typing ``text`` into it."""
    inp.focus()
    inp.value = ""
    await pilot.pause()
    await type_text(pilot, text)


async def filter_by(pilot: Pilot, text: str, *before: str) -> None:
    """Press ``before`` (a view's key, Esc), open the filter bar, type ``text``, Enter."""
    await pilot.press(*before, "slash")
    await type_text(pilot, text)
    await pilot.press("enter")


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
