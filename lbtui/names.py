"""Names that become paths, lock files or network namespaces: one rule per kind.

An instance name becomes ``/sys/fs/bpf/lbtui/<name>/`` and ``/run/lbtui/<name>.lock``, a
lab name becomes namespaces ``lbt-<lab>-<node>`` and ``/run/lbtui/labs/<lab>/``, a netns
name is opened under ``/run/netns/``. Every place that accepts one (command line, config
file, the library functions that build those paths) checks it with ``check_name``, so
``--instance ../../tmp/x`` is refused with the rule before anything is touched.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from dataclasses import dataclass


class BadName(ValueError):
    """A name that breaks its rule (a usage error: exit 2, nothing touched)."""


@dataclass(frozen=True)
class NameRule:
    kind: str              # what the name names, for messages: "instance name"
    pattern: re.Pattern[str]
    rule: str              # the rule in words


INSTANCE = NameRule(
    "instance name", re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}"),
    "1-32 ASCII letters, digits, '_' or '-', starting with a letter or digit")
# A lab's instance is "lab-<lab>" and its namespaces "lbt-<lab>-<node>": both must stay
# valid names, and node names never contain '-', so "lbt-a-b-client1" is lab "a-b".
LAB = NameRule(
    "lab name", re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,19}"),
    "1-20 ASCII letters, digits or '-', starting with a letter or digit")
NETNS = NameRule(
    "network namespace name", re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}"),
    "1-64 ASCII letters, digits, '_', '.' or '-', starting with a letter, digit or '_'")


def check_name(rule: NameRule, value: object) -> str:
    """``value`` if it follows ``rule``; BadName stating the rule otherwise."""
    if isinstance(value, str) and rule.pattern.fullmatch(value):
        return value
    shown = repr(value) if isinstance(value, str) else f"a {type(value).__name__}"
    raise BadName(f"{rule.kind} {shown} is not allowed: {rule.rule}")


def instance_name(value: object) -> str:
    return check_name(INSTANCE, value)


def lab_name(value: object) -> str:
    return check_name(LAB, value)


def netns_name(value: object) -> str:
    return check_name(NETNS, value)


def arg_type_list(rule: NameRule) -> Callable[[str], str]:
    """``arg_type`` for one name or several separated by commas (``--instance a,b``):
    each is checked, the text is returned as given."""
    one = arg_type(rule)

    def convert(text: str) -> str:
        for name in text.split(","):
            one(name.strip())
        return text
    convert.__name__ = rule.kind
    return convert


def arg_type(rule: NameRule) -> Callable[[str], str]:
    """An argparse ``type=``: a bad name is a usage error (exit 2) that states the rule
    (argparse shows only ArgumentTypeError messages verbatim)."""
    def convert(text: str) -> str:
        try:
            return check_name(rule, text)
        except BadName as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    convert.__name__ = rule.kind
    return convert
