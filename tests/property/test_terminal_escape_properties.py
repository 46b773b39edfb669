"""Properties of the terminal escapes (tfshare.visible, the CLI's ``shown``) and of the
display-name rule: for any text, what reaches a terminal holds no character that acts on it."""

from __future__ import annotations

import json
import unicodedata
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from tfshare.keys import display_name_problem
from tfshare.visible import HIDDEN_CATEGORIES, escape, escape_char, escape_json, hidden_chars

# Every code point, surrogates included (argv bytes that are not UTF-8 arrive as lone ones).
any_text = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=80)
json_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | any_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=12,
)

SAMPLES = "a\x1b[2J\n\r\t\x00\x7f\x85\x9b\u200b\u200d\u202a\u202e\u2066\u2069\u2028\u2029\ufeff"


def _is_hidden(ch: str) -> bool:
    return unicodedata.category(ch) in HIDDEN_CATEGORIES


@given(any_text)
@example(SAMPLES)
@example("Mallory\n  police   member   abcd efgh")
def test_escaped_text_holds_no_control_format_or_break_character(text: str) -> None:
    """No Cc, Cf, Cs, Co, Cn, Zl or Zp character survives, so the result is one line."""
    out = escape(text)
    assert not any(_is_hidden(ch) for ch in out)
    assert len(out.splitlines()) <= 1


@given(any_text)
@example(SAMPLES)
def test_escape_changes_exactly_the_hidden_characters(text: str) -> None:
    """Each hidden character becomes its escape; every other character stays as it is, in
    order (so ordinary text, in any script, reads as before)."""
    assert escape(text) == "".join(escape_char(ch) if _is_hidden(ch) else ch for ch in text)
    assert hidden_chars(text) == [ch for ch in text if _is_hidden(ch)]


@given(any_text)
def test_a_valid_display_name_is_shown_unchanged(name: str) -> None:
    """Whatever the rule accepts, the terminal shows as it is: nothing accepted needs escaping."""
    if display_name_problem(name) is None:
        assert escape(name) == name
        assert 1 <= len(name) <= 128


@given(any_text)
@example("Police\u202ehtroN")
def test_a_display_name_with_a_hidden_character_is_refused(name: str) -> None:
    """The refusal and the escape agree on the characters: one set, one module."""
    if hidden_chars(name):
        problem = display_name_problem(name)
        assert problem is not None
        assert not hidden_chars(problem)


@given(json_values)
@example({"\u2028": ["\x1b", "\U000e0001", "\udcff"]})
def test_escaped_json_decodes_to_the_same_value_and_hides_nothing(value: Any) -> None:
    """emit_json's escaping is JSON's own: same value back, and no raw hidden character."""
    text = escape_json(json.dumps(value, ensure_ascii=False))
    assert json.loads(text) == value
    assert not hidden_chars(text)
    assert "\n" not in text


@given(json_values)
@example({"a\u2028": ["\x1b\n", {"\u202e": "\t"}]})
def test_escaped_indented_json_keeps_its_layout_and_value(value: Any) -> None:
    """Indented JSON (for people) keeps its structural newlines and spaces, decodes to the
    same value, and holds no hidden character but that layout."""
    dumped = json.dumps(value, ensure_ascii=False, indent=2)
    text = escape_json(dumped)
    assert json.loads(text) == value
    assert set(hidden_chars(text)) <= {"\n"}
    # json.dumps escapes newlines inside strings: each raw one is layout, and all are kept.
    assert text.count("\n") == dumped.count("\n")
