"""Property tests of roster files and trust anchors: any damage is refused with a trust error.

``verify_roster`` must answer a damaged file with ``RosterRejected`` (and an E_ROSTER_* code
that a modification can produce before the signatures are checked), and ``decode_anchor`` with
``TrustError``; any other exception type escapes the CLI's error handling and is a bug.
"""

from __future__ import annotations

from typing import Final

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from tfkit import NOW_MS, build_taskforce

from tfshare.encoding import encode
from tfshare.errors import RejectCode, RosterRejected, TrustError
from tfshare.roster import Anchor, decode_anchor, verify_roster

TF: Final = build_taskforce()
ROSTER: Final = TF.roster_bytes
ANCHOR: Final = encode(TF.anchor)

# A modified roster no longer carries the coordinators' signatures: it fails decoding, the
# task-force check (which precedes the signatures) or the signature check; rollback needs a
# saved state and expiry is checked only after the signatures.
ROSTER_CODES: Final = frozenset(
    {RejectCode.E_ROSTER_MALFORMED, RejectCode.E_ROSTER_SIG, RejectCode.E_ROSTER_TASKFORCE}
)
# Offsets of text fields: the file's tag, the task force, a coordinator's agency id.
ROSTER_TAG_AT: Final = ROSTER.index(b"tfshare-roster/1")
ROSTER_TASKFORCE_AT: Final = ROSTER.index(b"nl-north")
ANCHOR_TAG_AT: Final = ANCHOR.index(b"tfshare-anchor/1")
ANCHOR_COORD_AT: Final = ANCHOR.index(b"coord")


def flip(data: bytes, position: int, xor: int) -> bytes:
    out = bytearray(data)
    out[position] ^= xor
    return bytes(out)


def verify(data: bytes) -> None:
    verify_roster(data, anchor=TF.anchor, state=None, now_ms=NOW_MS)


def assert_roster_rejected(data: bytes) -> None:
    with pytest.raises(RosterRejected) as info:
        verify(data)
    assert info.value.reject_code in ROSTER_CODES, info.value


def assert_never_the_pinned_anchor(data: bytes) -> None:
    """Either TrustError, or an anchor that is not the original (canonical decoding is 1:1)."""
    try:
        anchor = decode_anchor(data)
    except TrustError:
        return
    assert isinstance(anchor, Anchor)
    assert anchor != TF.anchor
    assert encode(anchor) == data


# ---------------------------------------------------------------------------------------------
# Roster files


def test_untampered_roster_verifies() -> None:
    """The roster the tampering tests start from verifies against its anchor."""
    verify(ROSTER)


@given(position=st.integers(0, len(ROSTER) - 1), xor=st.integers(1, 255))
@example(position=ROSTER_TAG_AT, xor=0x80)
@example(position=ROSTER_TASKFORCE_AT + 3, xor=0x80)
def test_flipped_roster_byte_is_rejected(position: int, xor: int) -> None:
    """A single flipped byte anywhere in a roster file raises RosterRejected only."""
    assert_roster_rejected(flip(ROSTER, position, xor))


def test_every_roster_position_flipped_is_rejected() -> None:
    """Sweep: each roster byte flipped by 0x01 and by 0x80 raises RosterRejected only."""
    failures: list[str] = []
    for position in range(len(ROSTER)):
        for xor in (0x01, 0x80):
            try:
                verify(flip(ROSTER, position, xor))
            except RosterRejected as exc:
                if exc.reject_code not in ROSTER_CODES:
                    failures.append(f"byte {position} ^ {xor:#04x}: {exc.reject_code}")
            except Exception as exc:
                failures.append(f"byte {position} ^ {xor:#04x}: raised {exc!r}")
            else:
                failures.append(f"byte {position} ^ {xor:#04x}: accepted")
    assert not failures, f"{len(failures)} bad outcomes, first: {failures[:5]}"


@given(length=st.integers(0, len(ROSTER) - 1))
def test_truncated_roster_is_rejected(length: int) -> None:
    """Any proper prefix of a roster file raises RosterRejected only."""
    assert_roster_rejected(ROSTER[:length])


@given(tail=st.binary(min_size=1, max_size=256))
def test_extended_roster_is_rejected(tail: bytes) -> None:
    """A roster file with bytes appended raises RosterRejected only."""
    assert_roster_rejected(ROSTER + tail)


@given(
    data=st.binary(max_size=2048)
    | st.binary(max_size=2048).map(lambda b: ROSTER[: len(ROSTER) // 2] + b)
)
def test_garbage_roster_is_rejected(data: bytes) -> None:
    """Random bytes (also behind a genuine roster prefix) raise RosterRejected only."""
    assert_roster_rejected(data)


# ---------------------------------------------------------------------------------------------
# Trust anchors. An anchor carries no signature (it is checked by fingerprint, out of band), so
# a flip inside a key may still decode: what must hold is that nothing but TrustError escapes
# and that damaged bytes never decode to the anchor that was pinned.


def test_untampered_anchor_decodes() -> None:
    """The anchor bytes the tampering tests start from decode to the task force's anchor."""
    assert decode_anchor(ANCHOR) == TF.anchor


@given(position=st.integers(0, len(ANCHOR) - 1), xor=st.integers(1, 255))
@example(position=ANCHOR_TAG_AT, xor=0x80)
@example(position=ANCHOR_COORD_AT + 1, xor=0x80)
def test_flipped_anchor_byte_raises_trust_error_or_differs(position: int, xor: int) -> None:
    """A flipped anchor byte gives TrustError or a different anchor, never another exception."""
    assert_never_the_pinned_anchor(flip(ANCHOR, position, xor))


def test_every_anchor_flip_raises_trust_error_or_differs() -> None:
    """Sweep: every anchor byte under every xor gives TrustError or a different anchor."""
    failures: list[str] = []
    for position in range(len(ANCHOR)):
        for xor in range(1, 256):
            try:
                assert_never_the_pinned_anchor(flip(ANCHOR, position, xor))
            except Exception as exc:
                failures.append(f"byte {position} ^ {xor:#04x}: raised {exc!r}")
    assert not failures, f"{len(failures)} bad outcomes, first: {failures[:5]}"


@given(length=st.integers(0, len(ANCHOR) - 1))
def test_truncated_anchor_raises_trust_error(length: int) -> None:
    """Any proper prefix of an anchor raises TrustError."""
    with pytest.raises(TrustError):
        decode_anchor(ANCHOR[:length])


@given(tail=st.binary(min_size=1, max_size=256))
def test_extended_anchor_raises_trust_error(tail: bytes) -> None:
    """An anchor with bytes appended raises TrustError."""
    with pytest.raises(TrustError):
        decode_anchor(ANCHOR + tail)


@given(data=st.binary(max_size=512) | st.binary(max_size=512).map(lambda b: ANCHOR[:20] + b))
def test_garbage_anchor_raises_trust_error_or_differs(data: bytes) -> None:
    """Random bytes (also behind a genuine anchor prefix) give TrustError or another anchor."""
    assert_never_the_pinned_anchor(data)
