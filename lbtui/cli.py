"""Command line entry point: ``lbtui <command>``.

Each feature area registers its own subcommands (``register(subparsers)``) so this module
stays a table of contents: control (serve, down, ctl), console, lab (lab, demo).
Exit codes: 0 ok, 1 runtime failure, 2 usage or validation error.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from lbtui import __version__

# Modules that contribute subcommands, in help order.
COMMAND_MODULES = (
    "lbtui.control.cli",
    "lbtui.console.cli",
    "lbtui.lab.cli",
)


class UsageError(Exception):
    """Bad arguments or input: exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lbtui", description="XDP layer-4 load balancer with an operator console.")
    p.add_argument("--version", action="version", version=f"lbtui {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if not name.startswith(e.name or "\0"):
                raise
            continue
        mod.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UsageError as e:
        print(f"lbtui: {e}", file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"lbtui: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except (RuntimeError, OSError) as e:  # expected failures carry what to do next
        if getattr(args, "debug", False):
            raise
        print(f"lbtui: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # last resort: one line, what to do next is in the message
        if getattr(args, "debug", False):
            raise
        print(f"lbtui: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
