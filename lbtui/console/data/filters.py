"""The filter language of every list view. Terms are separated by spaces; all must hold.

    text           some searchable field contains ``text`` (case-insensitive)
    field:value    ``value`` is a whole part of that field: ``target:10.0.1.11`` matches
                   10.0.1.11:8080 but not 10.0.1.110:8080; a value that ends in ``.`` or
                   ``:`` is a prefix (``client:198.18.2.`` matches 198.18.2.7:40000)
    !term          the term must not hold (``!target:10.0.1.11``, ``!udp``)

"Whole part" means the match is not glued to more letters or digits on either side, so
``state:syn`` matches syn-sent and ``vip::80`` matches 198.18.0.10:80 but not :8080.
A record is a sequence of lower-case strings, one per field, in the order the filter was
compiled for; views build it from their columns.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

Record = Sequence[str]
Matcher = Callable[[Record], bool]
_WORD = re.compile(r"[a-z_][a-z0-9_]*\Z")


class FilterError(ValueError):
    """The filter text cannot be used; the message says why and what would work."""


@dataclass(frozen=True)
class Term:
    field: str | None      # None: free text, searched in every searchable field
    value: str             # lower-case
    negated: bool = False

    def __str__(self) -> str:
        return ("!" if self.negated else "") + (
            f"{self.field}:{self.value}" if self.field else self.value)


@dataclass(frozen=True)
class Filter:
    """A parsed filter; empty (false) when there are no terms."""

    terms: tuple[Term, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.terms)

    def __str__(self) -> str:
        return " ".join(str(t) for t in self.terms)

    def matcher(self, fields: Sequence[str], searchable: Sequence[str] | None = None
                ) -> Matcher:
        """A predicate over records laid out as ``fields``. Free text looks in the
        ``searchable`` fields (default: all)."""
        index = {f: i for i, f in enumerate(fields)}
        scope = [index[f] for f in (fields if searchable is None else searchable)]
        checks: list[tuple[bool, Callable[[Record], bool]]] = []
        for t in self.terms:
            if t.field is None:
                checks.append((t.negated, _free(t.value, scope)))
            elif t.field not in index:
                raise FilterError(f"unknown field {t.field!r}: fields are "
                                  f"{', '.join(fields)}")
            else:
                checks.append((t.negated, _part(t.value, index[t.field])))

        def match(rec: Record) -> bool:
            return all(fn(rec) != neg for neg, fn in checks)
        return match

    def matches(self, record: Mapping[str, str]) -> bool:
        """One record given as {field: text} (small lists and tests)."""
        fields = list(record)
        return self.matcher(fields)([str(record[f]).lower() for f in fields])


def _free(value: str, scope: Sequence[int]) -> Callable[[Record], bool]:
    def free(rec: Record) -> bool:
        return any(value in rec[i] for i in scope)
    return free


def _part(value: str, i: int) -> Callable[[Record], bool]:
    """``value`` in field ``i``, not glued to letters or digits on either side."""
    head = r"(?<![a-z0-9])" if value[0].isalnum() else ""
    tail = r"(?![a-z0-9])" if value[-1].isalnum() else ""
    search = re.compile(head + re.escape(value) + tail).search

    def part(rec: Record) -> bool:
        return search(rec[i]) is not None
    return part


def parse_filter(text: str, fields: Sequence[str],
                 aliases: Mapping[str, str] | None = None) -> Filter:
    """Parse ``text`` for a view whose fields are ``fields`` (``aliases`` maps other
    names to them). FilterError names the bad term and the fields there are."""
    aliases = aliases or {}
    terms = []
    for word in text.lower().split():
        negated = word.startswith("!")
        body = word[1:] if negated else word
        if not body:
            raise FilterError("'!' needs a term after it: !udp, !target:10.0.1.11")
        name, sep, value = body.partition(":")
        if sep and _WORD.match(name):
            field = aliases.get(name, name)
            if field not in fields:
                raise FilterError(f"unknown field {name!r} in {word!r}: fields are "
                                  f"{', '.join(fields)}")
            if not value:
                raise FilterError(f"{word!r}: give a value after the colon, like "
                                  f"{name}:{_EXAMPLE.get(field, 'text')}")
            terms.append(Term(field, value, negated))
        else:
            # Not a field name before a colon (198.18.0.10:80): free text.
            terms.append(Term(None, body, negated))
    return Filter(tuple(terms))


_EXAMPLE = {"state": "syn-sent", "proto": "udp", "target": "10.0.1.11",
            "client": "198.18.2.", "event": "closed", "why": "rst"}
