"""Patterns a schema may use: one regex dialect that means the same in ECMA-262 and Python,
and cannot backtrack catastrophically.

Owns: ``check_pattern`` (refuses anything outside the subset, naming what) and
``python_form`` (the pattern as msgspec/Python should run it).

Why a subset: JSON Schema patterns are ECMA-262; tfshare runs them with Python's ``re``.
The two disagree on ``\\d``/``\\w``/``\\s`` and ``.`` with Unicode, on ``{,n}``, on ``$``
before a newline, on named groups. And a pattern every receiver runs on every message must
not be a denial-of-service lever: nested or ambiguous quantifiers are refused.

The subset, inside a mandatory ``^...$``: ASCII literals, escaped metacharacters, character
classes of ASCII characters and ranges, groups ``(...)`` and ``(?:...)`` with ``|`` inside
them, and the quantifiers ``* + ? {n} {n,m}`` (m <= 1000). A quantified group contains no
quantifier and no ``|`` (star height 1), and at most two quantifiers may vary in count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

META: Final = frozenset("\\^$.|?*+()[]{}")
ESCAPABLE: Final = frozenset("\\^$.|?*+()[]{}-/")
MAX_REPEAT: Final = 1000
# Each variable quantifier (* + ? {n,m} with n < m) is a choice the matcher may backtrack
# over; with k of them a failing match can take O(length^k) steps. Two keeps the worst case
# quadratic in the (bounded) string length.
MAX_VARIABLE_QUANTIFIERS: Final = 2


class PatternError(ValueError):
    """A pattern outside the subset; the message says what and where (0-based offset)."""


@dataclass
class _Node:
    """What a parsed piece contains, for the star-height rule."""

    has_quantifier: bool = False
    has_alternation: bool = False


class _Parser:
    def __init__(self, body: str) -> None:
        self.s = body
        self.i = 0
        self.quantifiers = 0

    def fail(self, why: str) -> PatternError:
        return PatternError(f"{why} at offset {self.i + 1}")

    def peek(self) -> str | None:
        return self.s[self.i] if self.i < len(self.s) else None

    def sequence(self, depth: int) -> _Node:
        node = _Node()
        while (c := self.peek()) is not None and c not in "|)":
            atom = self.atom(depth)
            if self.quantifier():
                if atom.has_quantifier or atom.has_alternation:
                    raise self.fail("a quantified group may not contain quantifiers or |")
                atom.has_quantifier = True
            node.has_quantifier |= atom.has_quantifier
            node.has_alternation |= atom.has_alternation
        return node

    def alternation(self, depth: int) -> _Node:
        node = self.sequence(depth)
        while self.peek() == "|":
            if depth == 0:
                raise self.fail("| must be inside a group, e.g. ^(a|b)$")
            self.i += 1
            other = self.sequence(depth)
            node = _Node(node.has_quantifier or other.has_quantifier, has_alternation=True)
        return node

    def atom(self, depth: int) -> _Node:
        c = self.s[self.i]
        if c == "(":
            self.i += 1
            if self.s.startswith("?:", self.i):
                self.i += 2
            elif self.peek() == "?":
                raise self.fail("only (...) and (?:...) groups are allowed")
            inner = self.alternation(depth + 1)
            if self.peek() != ")":
                raise self.fail("unclosed group")
            self.i += 1
            return inner
        if c == "[":
            self.char_class()
            return _Node()
        if c == "\\":
            self.escape(in_class=False)
            return _Node()
        if c == ".":
            raise self.fail('"." differs between ECMA-262 and Python; use a class like [^,]')
        if c in META:
            raise self.fail(f"{c!r} is not allowed here")
        self.literal(c)
        return _Node()

    def literal(self, c: str) -> None:
        if not (c.isascii() and c.isprintable()):
            raise self.fail("only printable ASCII characters (use a class for others)")
        self.i += 1

    def escape(self, *, in_class: bool) -> str:
        if self.i + 1 >= len(self.s):
            raise self.fail("a pattern cannot end with \\")
        c = self.s[self.i + 1]
        if c not in ESCAPABLE:
            raise self.fail(
                f"\\{c} is not in the subset (\\d, \\w, \\s, \\b differ between dialects; "
                "write [0-9], [A-Za-z0-9_] ...)"
            )
        self.i += 2
        return c

    def char_class(self) -> None:
        self.i += 1
        if self.peek() == "^":
            self.i += 1
        count = 0
        while True:
            c = self.peek()
            if c is None:
                raise self.fail("unclosed character class")
            if c == "]" and count:
                self.i += 1
                return
            low = self.class_char()
            if self.peek() == "-" and self.i + 1 < len(self.s) and self.s[self.i + 1] != "]":
                self.i += 1
                high = self.class_char()
                if ord(high) < ord(low):
                    raise self.fail("a range runs backwards")
            count += 1

    def class_char(self) -> str:
        c = self.s[self.i]
        if c == "\\":
            return self.escape(in_class=True)
        if c == "[":
            raise self.fail('"[" inside a class must be escaped')
        if c == "]":
            raise self.fail("an empty character class")
        self.literal(c)
        return c

    def quantifier(self) -> bool:
        c = self.peek()
        variable = True
        if c in ("*", "+", "?"):
            self.i += 1
        elif c == "{":
            end = self.s.find("}", self.i)
            spec = self.s[self.i + 1 : end] if end > 0 else ""
            parts = spec.split(",")
            if not spec or len(parts) > 2 or not all(p.isascii() and p.isdigit() for p in parts):
                raise self.fail("write quantifiers as {n} or {n,m}")
            low, high = int(parts[0]), int(parts[-1])
            if high < low or high > MAX_REPEAT:
                raise self.fail(f"{{n,m}} needs n <= m <= {MAX_REPEAT}")
            variable = high > low
            self.i = end + 1
        else:
            return False
        if self.peek() in ("?", "+", "*", "{"):
            raise self.fail("lazy, possessive or stacked quantifiers are not allowed")
        if variable:
            self.quantifiers += 1
            if self.quantifiers > MAX_VARIABLE_QUANTIFIERS:
                raise self.fail(
                    f"more than {MAX_VARIABLE_QUANTIFIERS} variable quantifiers "
                    "(* + ? {n,m}); fixed counts {n} are not limited"
                )
        return True


def check_pattern(pattern: str) -> None:
    """Raise PatternError unless ``pattern`` is ``^...$`` over the portable, safe subset."""
    if not (pattern.startswith("^") and pattern.endswith("$") and len(pattern) >= 2):
        raise PatternError("a pattern must be anchored: ^...$")
    if pattern.endswith("\\$"):
        raise PatternError("a pattern must end with an unescaped $")
    parser = _Parser(pattern[1:-1])
    parser.alternation(0)
    if parser.i != len(parser.s):
        raise parser.fail("unbalanced )")


def python_form(pattern: str) -> str:
    """How Python runs a checked pattern: ``$`` -> ``\\Z`` (no match before a trailing
    newline, as in ECMA-262). Within the subset nothing else differs."""
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        return pattern[:-1] + "\\Z"
    return pattern
