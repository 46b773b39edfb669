"""Text that is safe to put in front of a person: no character that moves, hides or reorders.

Owns: the one set of characters tfshare never shows raw (``hidden_chars``), their visible
escapes (``escape``, ``escape_json``), and so the rule a display name must satisfy.

Why: text that came from outside (display names in cards and rosters, message fields, broker
subjects, claimed senders) reaches terminals. A newline lets it forge whole lines - an
impostor's name that ends in "fingerprint <the real agency's>" - and an escape sequence or a
bidirectional override can rewrite or reorder what is already on the screen. Each such character
is shown as its escape instead (``\\x1b``, ``\\u202e``), so what people read aloud is what is
there.

The set is the Unicode general categories Cc (controls: C0, DEL, C1, so also newline and tab),
Cf (format: bidirectional embeddings, overrides and isolates U+202A-202E and U+2066-2069,
zero-width space and joiners U+200B-200D, marks U+200E/200F, U+2060, U+FEFF, tags), Zl and Zp
(U+2028, U+2029), Cs (lone surrogates: undecodable bytes of a command line), Co (private use)
and Cn (unassigned here: a newer terminal may know them as anything). Backslashes are left as
they are: text such as ``C:\\cases`` stays readable, and an escape can only ever make a
character more visible, never forge a line.
"""

from __future__ import annotations

import re
import unicodedata
from functools import cache
from typing import Final

HIDDEN_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


@cache
def _hidden(ch: str) -> bool:
    return unicodedata.category(ch) in HIDDEN_CATEGORIES


# Printable ASCII is by far the common case: a regex finds the rest, and only those are looked up.
_CANDIDATES: Final = re.compile(r"[^\x20-\x7e]")


def hidden_chars(text: str) -> list[str]:
    """The characters of ``text`` that are never shown raw, in order of appearance."""
    return [m.group() for m in _CANDIDATES.finditer(text) if _hidden(m.group())]


def escape_char(ch: str) -> str:
    """Python's escape spelling of one character: ``\\x1b``, ``\\u202e``, ``\\U000e0001``."""
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def codepoint(ch: str) -> str:
    """How an error names a character without printing it: ``U+202E``."""
    return f"U+{ord(ch):04X}"


def _escape_match(match: re.Match[str]) -> str:
    ch = match.group()
    return escape_char(ch) if _hidden(ch) else ch


def escape(text: str) -> str:
    """``text`` with every hidden character replaced by its visible escape (one line always)."""
    return _CANDIDATES.sub(_escape_match, text)


def _json_escape(ch: str) -> str:
    code = ord(ch)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000  # JSON spells astral characters as a UTF-16 surrogate pair
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def escape_json(document: str) -> str:
    """A JSON text with every hidden character written as a ``\\uXXXX`` escape.

    Valid on JSON text only: outside strings JSON is ASCII, and its only control characters
    there are the whitespace tab, newline and carriage return, which are left as they are
    (inside strings a valid JSON text already escapes them). Everywhere else ``\\uXXXX`` is
    JSON's own spelling of the same character, so the document decodes to the same value.
    """
    return _CANDIDATES.sub(_json_escape_match, document)


def _json_escape_match(match: re.Match[str]) -> str:
    ch = match.group()
    return _json_escape(ch) if _hidden(ch) and ch not in _JSON_WHITESPACE else ch


_JSON_WHITESPACE: Final = frozenset("\t\n\r")
