"""Command line entry point: ``lbtui <command>``.

Each feature area registers its own subcommands (``register(subparsers)``) so this module
stays a table of contents: control (serve, check, down, ctl), console, lab (lab, demo).
It also does what every command shares: logging (``--log-level``, ``lbtui.logs``), exit
codes (``lbtui.errors``), errors as JSON for ``--json`` (``lbtui.envelope``) and shell
completion (argcomplete, when the shell asks).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn, TypeAlias

from lbtui import __version__, envelope, errors, logs
from lbtui.errors import UsageError

__all__ = ["Subparsers", "UsageError", "build_parser", "main"]

# Modules that contribute subcommands, in help order.
COMMAND_MODULES = (
    "lbtui.control.cli",
    "lbtui.console.cli",
    "lbtui.lab.cli",
)
log = logging.getLogger("lbtui")
# What each module's register() is given (generic only to the checker, hence a string).
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


class Parser(argparse.ArgumentParser):
    """argparse, except that with ``--json`` a usage error becomes a JSON error document
    (subcommand parsers inherit the class)."""

    json_errors = False

    def error(self, message: str) -> NoReturn:
        if Parser.json_errors:
            raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")
        super().error(message)


def build_parser() -> Parser:
    p = Parser(prog="lbtui",
               description="XDP layer-4 load balancer with an operator console.",
               epilog="Exit codes: 0 ok, 1 runtime failure, 2 usage or validation error, "
                      "3 not running, 4 not found, 5 degraded (docs/cli.md).")
    p.add_argument("--version", action="version", version=f"lbtui {__version__}")
    logs.add_log_level_option(p)
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


def _wants_json(argv: Sequence[str]) -> bool:
    """``--json`` among the options (not in a command passed through after ``--``)."""
    head = list(argv)[:list(argv).index("--")] if "--" in argv else argv
    return "--json" in head


def _autocomplete(parser: argparse.ArgumentParser) -> None:
    """Answer the shell's completion request and exit, when it made one (the scripts
    scripts/setup.sh installs set _ARGCOMPLETE); otherwise do nothing, cheaply."""
    if "_ARGCOMPLETE" not in os.environ:
        return
    import argcomplete

    argcomplete.autocomplete(parser)


def report_error(exc: BaseException, json_out: bool) -> int:
    """Tell the user (or the script) what failed; returns the exit code."""
    kind, code = errors.classify(exc)
    known = isinstance(exc, ValueError | RuntimeError | OSError)
    message = str(exc) if known else f"{type(exc).__name__}: {exc}"
    if json_out:
        print(envelope.dumps(envelope.error(kind, code, message)), flush=True)
    else:
        log.error(message)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    json_out = Parser.json_errors = _wants_json(argv)
    parser = build_parser()
    _autocomplete(parser)
    logs.setup("warning")                 # until the command is known
    try:
        args = parser.parse_args(argv)
    except UsageError as e:               # only with --json: argparse reports otherwise
        return report_error(e, json_out)
    if not getattr(args, "func", None):
        parser.print_help()
        return errors.USAGE
    role = f"lbtui {args.command}"
    logs.setup(getattr(args, "log_level", None) or ("info" if args.command == "serve"
                                                    else "warning"), role)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:            # `lbtui ctl connections | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + 13                # as if killed by SIGPIPE, like other tools
    except Exception as e:  # expected failures carry what to do next in their message
        if getattr(args, "debug", False) and errors.classify(e)[0] in ("failure",):
            raise
        return report_error(e, json_out)


if __name__ == "__main__":
    sys.exit(main())
