"""Exit codes of every lbtui command and the errors that carry them.

    0  ok
    1  runtime failure (a map update failed, the kernel refused, ...)
    2  usage or validation error: nothing was changed
    3  the instance is not running (nothing pinned, or no serve to signal)
    4  not found: the named listener, route, target or connection does not exist
    5  degraded: ``ctl status`` found an interface that lost its XDP program

Scripts can tell "start it first" (3) from "it has no such thing" (4) without reading
messages; ``--json`` carries the same code and a kind name (``lbtui.envelope``).
"""

from __future__ import annotations

OK = 0
FAILURE = 1
USAGE = 2
NOT_RUNNING = 3
NOT_FOUND = 4
DEGRADED = 5


class UsageError(ValueError):
    """Bad arguments or input (exit 2)."""


class NotFound(ValueError):
    """A named object does not exist (exit 4). A ValueError, so code that treats it as bad
    input (the console's forms) keeps working."""


class NotRunning(RuntimeError):
    """The instance (or its serve) is not running (exit 3)."""


class Degraded(RuntimeError):
    """Running, but not as configured: an interface lost its XDP program (exit 5)."""


# Most specific first: NotFound and UsageError are ValueErrors too.
_KINDS: tuple[tuple[type[BaseException], str, int], ...] = (
    (NotFound, "not_found", NOT_FOUND),
    (NotRunning, "not_running", NOT_RUNNING),
    (Degraded, "degraded", DEGRADED),
    (UsageError, "usage", USAGE),
    (ValueError, "usage", USAGE),
    (RuntimeError, "failure", FAILURE),
    (OSError, "failure", FAILURE),
)


def classify(exc: BaseException) -> tuple[str, int]:
    """(kind, exit code) of an error; anything unexpected is a runtime failure."""
    for cls, kind, code in _KINDS:
        if isinstance(exc, cls):
            return kind, code
    return "failure", FAILURE
