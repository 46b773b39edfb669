"""Property tests of the roster encoding with its optional trailing elements (issue 15).

Any roster round-trips through ``encode_roster``/``decode_roster``; the encoding has exactly
the base elements plus the trailing ones up to the last that is not at its default; and the
same roster spelled with a trailing default written out is refused as non-canonical.
"""

from __future__ import annotations

from typing import Final

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tfkit import build_taskforce

from tfshare import roster as R
from tfshare.encoding import MAX_UINT, NonCanonical, encode

BASE: Final = R.decode_roster(build_taskforce().signed.roster)
NAMES: Final = st.from_regex(r"[a-z][a-z0-9_-]{0,31}", fullmatch=True)
UINTS: Final = st.integers(min_value=0, max_value=MAX_UINT)

retired_keys = st.lists(
    st.builds(R.RetiredEncKey, NAMES, st.binary(min_size=32, max_size=32), UINTS, UINTS),
    max_size=4,
)
epoch_policies = st.lists(st.builds(R.EpochPolicy, NAMES, UINTS, UINTS), max_size=4)


@given(witnesses=UINTS, retired=retired_keys, policies=epoch_policies)
def test_a_roster_with_any_trailing_elements_round_trips_in_its_shortest_form(
    witnesses: int, retired: list[R.RetiredEncKey], policies: list[R.EpochPolicy]
) -> None:
    roster = msgspec.structs.replace(
        BASE, witness_threshold=witnesses, retired_enc_keys=retired, epoch_policies=policies
    )
    data = R.encode_roster(roster)
    assert R.decode_roster(data) == roster
    trailing = (witnesses, retired, policies)
    present = max((i + 1 for i, v in enumerate(trailing) if v != (0, [], [])[i]), default=0)
    elements = msgspec.msgpack.decode(data)
    assert len(elements) == R.ROSTER_BASE_FIELDS + present
    # Every longer spelling (the defaults after the last element written out) is refused.
    full = list(msgspec.structs.astuple(roster))
    for length in range(R.ROSTER_BASE_FIELDS + present + 1, len(full) + 1):
        with pytest.raises(NonCanonical):
            R.decode_roster(encode(full[:length]))
