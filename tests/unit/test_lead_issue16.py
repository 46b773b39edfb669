"""Issue 16 checks written by the lead."""

from __future__ import annotations

import pytest

from tfshare.interop.markings import Handling, refuse_restricted, restrictions
from tfshare.lineage import HandlingRefused


def test_h3_is_exported_only_with_the_explicit_flag() -> None:
    """H3's conditions are free text no program can check against the platform it goes to:
    like H2 and no_forward, it leaves tfshare only with --allow-restricted (E_HANDLING_H3)."""
    handling = Handling(tlp="GREEN", code="H3", code_note="police only")
    with pytest.raises(HandlingRefused) as raised:
        refuse_restricted("0f", handling)
    assert raised.value.code == "E_HANDLING_H3"
    assert [code for code, _ in restrictions(Handling(tlp="GREEN", code="H1"))] == []
    assert [code for code, _ in restrictions(Handling(tlp="GREEN", code="H0"))] == []
