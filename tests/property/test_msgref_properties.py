"""``tfshare.msgref``: what people type to name a message, parsed and resolved alike everywhere."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tfshare import msgref
from tfshare.errors import InputError, UsageError

msg_ids = st.binary(min_size=16, max_size=16)
SENDER = re.compile(r"[a-z][a-z0-9_-]{0,31}", re.ASCII)
senders = st.from_regex(SENDER, fullmatch=True)


@given(msg_ids, st.integers(8, 32), st.booleans())
def test_every_prefix_of_8_or_more_digits_names_its_message(
    msg_id: bytes, length: int, upper: bool
) -> None:
    typed = msg_id.hex()[:length]
    ref = msgref.parse(typed.upper() if upper else typed)
    assert ref.matches("anyone", msg_id)
    assert ref.full == (msg_id if length == 32 else None)
    assert msgref.pick(ref, [("police", msg_id, "it")], where="here", hint="-") == "it"


@given(st.text(max_size=40))
def test_parse_accepts_only_8_to_32_hex_digits_with_an_optional_sender(text: str) -> None:
    """Anything else is a UsageError (exit 2), never another exception."""
    sender, colon, digits = text.strip().rpartition(":")
    valid = (
        8 <= len(digits) <= 32
        and all(c in "0123456789abcdefABCDEF" for c in digits)
        and (not colon or SENDER.fullmatch(sender) is not None)
    )
    try:
        ref = msgref.parse(text)
    except UsageError:
        assert not valid
    else:
        assert valid
        assert ref.prefix == digits.lower()


@given(msg_ids, senders, senders)
def test_one_id_of_two_senders_is_refused_until_the_sender_is_named(
    msg_id: bytes, first: str, second: str
) -> None:
    candidates = [(first, msg_id, 1), (second, msg_id, 2), (first, msg_id, 3)]
    if first != second:
        with pytest.raises(UsageError, match="several senders"):
            msgref.pick(msgref.parse(msg_id.hex()), candidates, where="here", hint="-")
    # The first entry of the named sender (its own later copies are its equivocation).
    named = msgref.parse(f"{first}:{msg_id.hex()[:8]}")
    assert msgref.pick(named, candidates, where="here", hint="-") == 1


def test_a_prefix_of_two_ids_asks_for_more_digits_and_none_is_not_found() -> None:
    a, b = bytes.fromhex("c0ffee00" + "aa" * 12), bytes.fromhex("c0ffee00" + "bb" * 12)
    candidates = [("police", a, "a"), ("ngo", b, "b")]
    with pytest.raises(UsageError, match="matches 2 messages"):
        msgref.pick(msgref.parse("c0ffee00"), candidates, where="here", hint="-")
    assert msgref.pick(msgref.parse("C0FFEE00B"), candidates, where="here", hint="-") == "b"
    with pytest.raises(InputError, match="message deadbeef is not here"):
        msgref.pick(msgref.parse("deadbeef"), candidates, where="here", hint="-")
