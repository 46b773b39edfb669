"""Display names cannot impersonate (issue 12, item 6): the rule, where it is enforced, where
it deliberately is not (rosters signed before it), and the escapes that make text visible."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest
from tfkit import NOW_MS, DeterministicRng, build_taskforce, identity

from tfshare import roster as R
from tfshare.encoding import encode, label, u32
from tfshare.errors import TrustError, UsageError
from tfshare.keys import Card, Identity, display_name_problem, verify_card
from tfshare.visible import escape, escape_json, hidden_chars
from tfshare.workflows.keys import init_keys

# cli/ installs as tfshare.cli (pyproject); mypy checks it from the source tree as "cli".
from tfshare.cli.common import (  # type: ignore[import-not-found,unused-ignore]  # isort: skip
    emit_fields,
    emit_json,
    note,
    shown,
)

FORGING = {
    "newline": ("Police\nNorth", "U+000A"),
    "carriage return": ("Police\rNorth", "U+000D"),
    "tab": ("Police\tNorth", "U+0009"),
    "escape sequence": ("\x1b[2J\x1b[HPolice North", "U+001B"),
    "delete": ("Police\x7f", "U+007F"),
    "C1 CSI": ("Police\x9b2J", "U+009B"),
    "next line": ("Police\x85North", "U+0085"),
    "right-to-left override": ("Police \u202ehtroN", "U+202E"),
    "left-to-right embedding": ("\u202aPolice", "U+202A"),
    "right-to-left isolate": ("Police \u2067North", "U+2067"),
    "pop directional isolate": ("Police\u2069", "U+2069"),
    "zero-width space": ("Pol\u200bice", "U+200B"),
    "zero-width joiner": ("Pol\u200dice", "U+200D"),
    "right-to-left mark": ("Police\u200f", "U+200F"),
    "byte order mark": ("\ufeffPolice", "U+FEFF"),
    "line separator": ("Police\u2028North", "U+2028"),
    "paragraph separator": ("Police\u2029North", "U+2029"),
    "language tag": ("Police\U000e0001", "U+E0001"),
    "private use": ("Police\ue000", "U+E000"),
    "lone surrogate (undecodable argv byte)": ("Police\udcff", "U+DCFF"),
}


@pytest.mark.parametrize(("name", "char"), FORGING.values(), ids=FORGING.keys())
def test_display_name_with_a_control_format_or_break_char_is_refused(name: str, char: str) -> None:
    """Each kind of character that can forge or hide a line is refused, named by code point."""
    problem = display_name_problem(name)
    assert problem is not None
    assert f"holds {char} " in problem


@pytest.mark.parametrize(("name", "_"), FORGING.values(), ids=FORGING.keys())
def test_display_name_problem_never_repeats_the_name(name: str, _: str) -> None:
    """The reason is printed to a terminal: nothing of the name is in it."""
    problem = display_name_problem(name)
    assert problem is not None
    assert not hidden_chars(problem)
    assert "Police" not in problem and "North" not in problem


@pytest.mark.parametrize(
    "name",
    [
        "Police North",
        "Policía Federal",
        "Ärzte ohne Grenzen",
        "警察 北",
        "شرطة الشمال",  # right-to-left script itself is fine: only overrides are refused
        "Labour Inspectorate (NL) - Team 2",
        "x" * 128,
    ],
)
def test_ordinary_display_names_are_accepted(name: str) -> None:
    """Names in any script, with punctuation, up to 128 characters, are fine."""
    assert display_name_problem(name) is None


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "1-128 characters, this one 0"),
        ("x" * 129, "1-128 characters, this one 129"),
        (" Police", "starts or ends with a space"),
        ("Police ", "starts or ends with a space"),
    ],
)
def test_display_name_length_and_edges(name: str, why: str) -> None:
    """Empty, too long, or padded with spaces (which a terminal hides) is refused."""
    assert why in (display_name_problem(name) or "")


def _forged_card(agency: str, name: str) -> Card:
    """A correctly self-signed card with any name (a forger's own tool makes one)."""
    ident = Identity.generate(agency, name, rng=DeterministicRng(agency), now_ms=NOW_MS)
    body = encode(ident.card_body())
    return Card(body=body, self_sig=ident.sign(label("tfshare/v1/card") + u32(body)))


def test_verify_card_refuses_a_self_signed_card_with_an_escape_in_its_name() -> None:
    """The signature is valid, the name is not: a TrustError (exit 6) naming U+001B, with a
    hint to ask the agency for a new card."""
    with pytest.raises(TrustError) as caught:
        verify_card(_forged_card("mallory", "Police North\x1b[2K"))
    assert caught.value.exit_code == 6
    assert caught.value.message.startswith("the card of 'mallory' is refused: ")
    assert "U+001B" in caught.value.message
    assert "keys init --name" in caught.value.hint


def test_verify_card_accepts_a_card_with_a_plain_non_ascii_name() -> None:
    """The rule does not touch ordinary names."""
    assert verify_card(_forged_card("policia", "Policía Federal")).display_name == (
        "Policía Federal"
    )


def test_roster_add_member_refuses_a_card_body_with_a_forging_name() -> None:
    """Defence in depth: a CardBody that never went through verify_card is refused too."""
    tf = build_taskforce()
    body = msgspec.structs.replace(
        Identity.generate(
            "mallory", "x", rng=DeterministicRng("mallory"), now_ms=NOW_MS
        ).card_body(),
        display_name="Mallory\n  police",
    )
    with pytest.raises(TrustError, match="'mallory' cannot be added: the display name holds U"):
        R.add_member(tf.signed, body, role="member", now_ms=NOW_MS)


def test_new_roster_refuses_a_coordinator_card_with_a_forging_name() -> None:
    """The founding coordinators' names follow the same rule."""
    body = msgspec.structs.replace(identity("coord").card_body(), display_name="Coord\u202e")
    with pytest.raises(TrustError, match="U\\+202E"):
        R.new_roster("tf", [body], threshold=1, now_ms=NOW_MS, valid_days=30)


def _signed_before_the_rule(agency: str, name: str) -> tuple[R.Anchor, R.SignedRoster]:
    """A roster whose member ``agency`` carries ``name``, signed by the coordinator (as a
    roster made before display names were checked)."""
    tf = build_taskforce()
    _, roster = R.decode_signed_roster(encode(tf.signed))
    members = [
        msgspec.structs.replace(m, display_name=name) if m.agency_id == agency else m
        for m in roster.members
    ]
    edited = msgspec.structs.replace(roster, members=members, seq=roster.seq + 1)
    unsigned = R.SignedRoster(roster=R.encode_roster(edited), sigs=[])
    return tf.anchor, R.sign(unsigned, tf.ids["coord"])


def test_a_roster_signed_before_the_rule_still_verifies() -> None:
    """Refusing it would cut the whole task force off: the name is shown escaped instead."""
    anchor, signed = _signed_before_the_rule("police", "Police\nNorth")
    trusted, _ = R.verify_roster(encode(signed), anchor=anchor, state=None, now_ms=NOW_MS)
    assert trusted.members["police"].display_name == "Police\nNorth"


def test_a_roster_signed_before_the_rule_can_still_be_edited_to_revoke_the_impostor() -> None:
    """The coordinators' way out is a revocation: editing such a roster is not refused."""
    _, signed = _signed_before_the_rule("police", "Police\x1b[2J")
    revoked = R.revoke(signed, "police", reason="compromised", now_ms=NOW_MS)
    _, roster = R.decode_signed_roster(encode(revoked))
    assert next(m for m in roster.members if m.agency_id == "police").status == "removed"


@pytest.mark.parametrize("name", ["Police\nNorth", "\x1b[2JPolice", "Police \u202ehtroN"])
def test_init_keys_refuses_the_name_as_usage_and_writes_nothing(tmp_path: Path, name: str) -> None:
    """keys init --name with a control character: UsageError (exit 2), no key, no card."""
    with pytest.raises(UsageError) as caught:
        init_keys(
            "mallory",
            tmp_path,
            display_name=name,
            passphrase=b"a long test passphrase",
            kdf="insecure-test",
            now_ms=NOW_MS,
        )
    assert caught.value.exit_code == 2
    assert caught.value.message.startswith("the display name holds U+")
    assert list(tmp_path.iterdir()) == []


def test_escape_spells_each_hidden_character_as_python_does() -> None:
    """\\xNN up to U+00FF, \\uNNNN in the BMP, \\UNNNNNNNN above; everything else unchanged."""
    assert escape("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert escape("Police\nNorth\r") == "Police\\x0aNorth\\x0d"
    assert escape("x\x85\u202e\u2028\U000e0001y") == "x\\x85\\u202e\\u2028\\U000e0001y"
    assert escape("Policía 警察 C:\\cases") == "Policía 警察 C:\\cases"


def test_escape_json_keeps_the_value_and_hides_nothing() -> None:
    """The document decodes to the same value; no hidden character is left raw."""
    value = {"name": "a\u2028b\u202ec\x7f\x9b\U000e0001", "n": [1, "\n"]}
    text = escape_json(json.dumps(value, ensure_ascii=False))
    assert json.loads(text) == value
    assert not hidden_chars(text)
    assert "\\u2028" in text and "\\udb40\\udc01" in text


def test_shown_is_one_visible_line(capsys: pytest.CaptureFixture[str]) -> None:
    """shown() is the CLI's one escape; emit_fields and note apply it to every value, so an
    outside value cannot add a line; emit_json writes the escapes JSON understands."""
    assert shown("Mallory\n  police  fp") == "Mallory\\x0a  police  fp"
    assert shown(42) == "42"
    emit_fields([("name", "Mallory\n  police  fp"), ("fingerprint", "abcd")])
    note("from \x1b[31mmallory\u202e")
    emit_json({"sender": "x\u2066y"})
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "name         Mallory\\x0a  police  fp",
        "fingerprint  abcd",
        '{"sender": "x\\u2066y"}',
    ]
    assert err == "from \\x1b[31mmallory\\u202e\n"
