"""Grading and confidence: STIX 2.1 Annex A scales and the MISP admiralty-scale taxonomy.

Owns: the Admiralty information credibility <-> STIX ``confidence`` mapping of Annex A
(1 -> 90, 2 -> 70, 3 -> 50, 4 -> 30, 5 -> 10; 6 "cannot be judged": no confidence), the
None/Low/Med/High scale for a red flag's own confidence (Low 15, Med 50, High 85), the
written grade (B2, 2B P), and the MISP tags of a grading. Europol 4x4 and UK 3x5x2 have no
Annex A scale: they give no ``confidence`` and travel as they are (the schema's rule: tfshare
does not convert between grading systems).

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

ADMIRALTY_CONFIDENCE: Final = {"1": 90, "2": 70, "3": 50, "4": 30, "5": 10}
LINK_CONFIDENCE: Final = {"low": 15, "medium": 50, "high": 85}
MISP_RELIABILITY: Final = frozenset("ABCDEF")  # the taxonomy has no G


def confidence_of(grading: Mapping[str, Any]) -> int | None:
    """STIX confidence of a grading (Annex A, Admiralty credibility), or None."""
    if grading.get("system") != "admiralty-6x6":
        return None
    return ADMIRALTY_CONFIDENCE.get(str(grading.get("information")))


def admiralty_information(confidence: int) -> str:
    """Annex A's reverse mapping: 0-19 -> 5, 20-39 -> 4, 40-59 -> 3, 60-79 -> 2, 80-100 -> 1."""
    return str(5 - min(max(confidence, 0), 100) // 20) if confidence < 100 else "1"


def link_confidence(confidence: int) -> str:
    """None/Low/Med/High (Annex A), as a red flag's low, medium or high (0 counts as low)."""
    if confidence >= 70:
        return "high"
    if confidence >= 30:
        return "medium"
    return "low"


def written(grading: Mapping[str, Any]) -> str:
    """The grade as people write it: B2 (admiralty, europol), 2B P (UK)."""
    if grading.get("system") == "uk-3x5x2":
        return f"{grading.get('source')}{grading.get('intelligence')} {grading.get('handling')}"
    return f"{grading.get('source')}{grading.get('information')}"


def misp_tags(grading: Mapping[str, Any]) -> list[str]:
    """admiralty-scale taxonomy tags where it has the values, and always the grade itself
    as ``tfshare:grading="<system>:<grade>"`` (the original, whatever the system)."""
    tags = []
    if grading.get("system") == "admiralty-6x6":
        source = str(grading.get("source"))
        if source in MISP_RELIABILITY:
            tags.append(f'admiralty-scale:source-reliability="{source.lower()}"')
        tags.append(f'admiralty-scale:information-credibility="{grading.get("information")}"')
    tags.append(f'tfshare:grading="{grading.get("system")}:{written(grading)}"')
    return tags


def from_written(system: str, grade: str) -> dict[str, Any] | None:
    """A grading from ``tfshare:grading`` (``admiralty-6x6:B2``); None if malformed."""
    if system in ("admiralty-6x6", "europol-4x4") and len(grade) == 2:
        return {"system": system, "source": grade[0], "information": grade[1]}
    if system == "uk-3x5x2" and len(grade) == 4 and grade[2] == " ":
        return {
            "system": system,
            "source": grade[0],
            "intelligence": grade[1],
            "handling": grade[3],
        }
    return None
