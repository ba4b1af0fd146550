"""Command palette entries built from live data ("Drain 198.18.101.2:8080", ...)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual.command import DiscoveryHit, Hit, Hits, Provider

if TYPE_CHECKING:
    from lbtui.console.app import ConsoleApp


@dataclass(frozen=True)
class LiveCommand:
    title: str
    help: str
    run: Callable[[], object]


class LiveCommands(Provider):
    """Asks the app for its current commands on every search."""

    def _commands(self) -> list[LiveCommand]:
        app: ConsoleApp = self.app  # type: ignore[assignment]
        return app.live_commands()

    async def discover(self) -> Hits:
        for c in self._commands():
            yield DiscoveryHit(c.title, c.run, help=c.help)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for c in self._commands():
            score = matcher.match(c.title)
            if score > 0:
                yield Hit(score, matcher.highlight(c.title), c.run, help=c.help)
