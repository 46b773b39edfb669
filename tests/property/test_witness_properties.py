"""Witness cosignatures under arbitrary input: reading any note ends in witnesses found or a
``WitnessError`` with its code, never another exception; a cosignature verifies only on the
exact text, time and key it was made for; merging never changes what the log signed."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tfkit import build_taskforce

from tfshare.audit.note import Checkpoint, checkpoint_origin, split_note
from tfshare.audit.witness import (
    WitnessError,
    cosign,
    merge_witnessed,
    witness_name,
    witnesses_of,
)

TF = build_taskforce()
ROSTER = TF.trusted()
ORIGIN = checkpoint_origin("nl-north")
TEXT = Checkpoint(ORIGIN, 3, bytes(32)).format().encode()
LINE = cosign(TEXT, TF.ids["ngo"], taskforce="nl-north", timestamp=1_795_000_000)
NAME = witness_name("nl-north", "ngo")


@settings(max_examples=300)
@given(st.binary(max_size=600))
def test_any_bytes_are_witnesses_or_a_witness_error(data: bytes) -> None:
    try:
        found = witnesses_of(data, ROSTER)
    except WitnessError as exc:
        assert exc.code and exc.code.startswith("E_WITNESS")
    else:
        assert all(c.agency in ROSTER.members for c in found)


@settings(max_examples=300)
@given(st.binary(min_size=1, max_size=120))
def test_any_raw_field_under_a_witness_name_is_refused_or_counted_exactly(raw: bytes) -> None:
    line = f"\u2014 {NAME} {base64.b64encode(raw).decode()}\n".encode()
    try:
        found = witnesses_of(TEXT + b"\n" + line, ROSTER)
    except WitnessError:
        return
    # Only ngo's real cosignature can count; anything else is an unknown key, ignored.
    assert found == () or (len(found) == 1 and line == LINE)


@given(st.integers(min_value=0, max_value=len(LINE) - 2), st.integers(min_value=1, max_value=255))
def test_a_changed_byte_of_a_cosignature_never_counts(position: int, mask: int) -> None:
    damaged = bytearray(LINE)
    damaged[position] ^= mask
    try:
        found = witnesses_of(TEXT + b"\n" + bytes(damaged), ROSTER)
    except WitnessError:
        return
    assert found == ()


@given(st.integers(min_value=0, max_value=2**32))
def test_a_cosignature_does_not_verify_on_another_checkpoint(size: int) -> None:
    other = Checkpoint(ORIGIN, size, bytes(32)).format().encode()
    if other == TEXT:
        return
    with pytest.raises(WitnessError) as refused:
        witnesses_of(other + b"\n" + LINE, ROSTER)
    assert refused.value.code == "E_WITNESS_BAD_SIG"


@given(st.lists(st.binary(max_size=200), max_size=5))
def test_merging_never_changes_the_signed_text(published: list[bytes]) -> None:
    note = TEXT + b"\n" + LINE
    merged = merge_witnessed(
        note, [(f"a{i}", p) for i, p in enumerate([*published, TEXT + b"\n" + LINE])], ROSTER
    ).note
    assert split_note(merged)[0] == TEXT
    assert merged.startswith(note)
