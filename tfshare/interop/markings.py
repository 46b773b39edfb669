"""Handling rules as the platforms spell them, both ways, and the refusal of a weakening.

Owns: TLP 2.0 by its official STIX marking-definition ids (OASIS cti-stix-common-objects,
extension ``extension-definition--60a3c5c5-...``), PAP, the handling codes H0-H3 and
no_forward as marking definitions of tfshare's own extension; the same as MISP tags (the
``tlp`` and ``PAP`` taxonomies; ``tfshare:`` tags where MISP has none) and the MISP
distribution they allow; which messages need ``--allow-restricted`` to leave tfshare; and
``check_not_weaker``, which refuses a draft whose handling is weaker than its source's.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from tfshare.interop.common import HandlingRefused, derived_id

TLP_ORDER: Final = ("CLEAR", "GREEN", "AMBER", "AMBER+STRICT", "RED")
PAP_ORDER: Final = ("CLEAR", "GREEN", "AMBER", "RED")
CODES: Final = ("H0", "H1", "H2", "H3")

# TLP 2.0 marking definitions (FIRST TLP 2.0, published by OASIS in cti-stix-common-objects):
# the same ids in every bundle, so platforms recognise them.
TLP2_EXTENSION_ID: Final = "extension-definition--60a3c5c5-0d10-413e-aab3-9e08dde9e88d"
TLP2_IDS: Final = {
    "CLEAR": "marking-definition--94868c89-83c2-464b-929b-a1a8aa3c8487",
    "GREEN": "marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb",
    "AMBER": "marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421",
    "AMBER+STRICT": "marking-definition--939a9414-2ddd-4d32-a0cd-375ea402b003",
    "RED": "marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1",
}
TLP2_CREATED: Final = "2022-10-01T00:00:00.000Z"
# TLP 1.0 (STIX 2.1 section 7.2.1.4), read on import only: WHITE is CLEAR.
TLP1_IDS: Final = {
    "marking-definition--613f2e26-407d-48c7-9eca-b8e91df99dc9": "CLEAR",
    "marking-definition--34098fce-860f-48ae-8e50-ebd3cc5e41da": "GREEN",
    "marking-definition--f88d31f6-486f-44da-b317-01333bde0b82": "AMBER",
    "marking-definition--5e57c739-391a-4eb3-b6be-7d15ca92d5ed": "RED",
}
TLP_OF_ID: Final = {**{v: k for k, v in TLP2_IDS.items()}, **TLP1_IDS}

# tfshare's own STIX extension (property-extension): on marking definitions (PAP, handling
# code, no-forward) and on reports (the message's origin, handling and grading verbatim).
EXTENSION_ID: Final = "extension-definition--3f0b8d52-7a4e-4c1f-9b6d-2e5a8c7d1f40"
TFSHARE_IDENTITY_ID: Final = "identity--5c2f8e1a-9d3b-4a6e-8f7c-1b0d2e4a6c8f"
EXTENSION_CREATED: Final = "2026-12-01T00:00:00.000Z"


@dataclass(frozen=True)
class Handling:
    """A body's handling block with the schema's defaults applied."""

    tlp: str
    pap: str = "AMBER"
    code: str = "H1"
    code_note: str | None = None
    no_forward: bool = False

    def as_body(self) -> dict[str, Any]:
        """The block as a body carries it (defaults spelled out: a draft says what it means)."""
        block: dict[str, Any] = {"tlp": self.tlp, "pap": self.pap, "code": self.code}
        if self.code_note is not None:
            block["code_note"] = self.code_note
        block["no_forward"] = self.no_forward
        return block


def handling_of(record: Mapping[str, Any]) -> Handling:
    """The handling of a received body; an unknown TLP counts as RED (never weaker)."""
    block = record.get("handling")
    block = block if isinstance(block, Mapping) else {}
    tlp = block.get("tlp")
    pap = block.get("pap")
    code = block.get("code")
    note = block.get("code_note")
    return Handling(
        tlp=tlp if tlp in TLP_ORDER else "RED",
        pap=pap if pap in PAP_ORDER else "AMBER",
        code=code if code in CODES else "H1",
        code_note=note if isinstance(note, str) else None,
        no_forward=block.get("no_forward") is True,
    )


def restrictions(handling: Handling) -> list[tuple[str, str]]:
    """(code, why) for each rule that keeps the message inside tfshare: no_forward, H2, H3."""
    found = []
    if handling.no_forward:
        found.append(("E_NO_FORWARD", "is marked no_forward"))
    if handling.code == "H2":
        found.append(("E_HANDLING_H2", "carries handling code H2"))
    if handling.code == "H3":
        # H3's conditions are free text (code_note) that no program can check for the
        # platform it is going to: a person decides, as for H2.
        found.append(
            ("E_HANDLING_H3", "carries handling code H3 (conditions set by its originator)")
        )
    return found


def refuse_restricted(msg_id: str, handling: Handling) -> None:
    """Raise unless the message may leave tfshare without --allow-restricted."""
    found = restrictions(handling)
    if found:
        code, _ = found[0]
        why = " and ".join(reason for _, reason in found)
        raise HandlingRefused(
            f"message {msg_id} {why}: it must not be passed on without the originator's consent",
            hint="export it only where the originator allows it, with --allow-restricted "
            "(its markings travel with it)",
            code=code,
        )


# ---- STIX -------------------------------------------------------------------------------


def tlp_marking(tlp: str) -> dict[str, Any]:
    """The official TLP 2.0 marking definition."""
    return {
        "type": "marking-definition",
        "spec_version": "2.1",
        "id": TLP2_IDS[tlp],
        "created": TLP2_CREATED,
        "name": f"TLP:{tlp}",
        "extensions": {
            TLP2_EXTENSION_ID: {"extension_type": "property-extension", "tlp_2_0": tlp.lower()}
        },
    }


def _own_marking(name: str, **properties: Any) -> dict[str, Any]:
    key = "|".join(f"{k}={properties[k]}" for k in sorted(properties))
    return {
        "type": "marking-definition",
        "spec_version": "2.1",
        "id": derived_id("marking-definition", key),
        "created": EXTENSION_CREATED,
        "created_by_ref": TFSHARE_IDENTITY_ID,
        "name": name,
        "extensions": {EXTENSION_ID: {"extension_type": "property-extension", **properties}},
    }


def stix_markings(handling: Handling) -> list[dict[str, Any]]:
    """Every marking definition the handling asks for: TLP, PAP, the code (with its note),
    and no-forward when set. Applied to every object of the message."""
    markings = [
        tlp_marking(handling.tlp),
        _own_marking(f"PAP:{handling.pap}", pap=handling.pap),
    ]
    code: dict[str, Any] = {"handling_code": handling.code}
    if handling.code_note is not None:
        code["code_note"] = handling.code_note
    markings.append(_own_marking(f"Handling code {handling.code}", **code))
    if handling.no_forward:
        markings.append(_own_marking("tfshare no-forward: do not pass on", no_forward=True))
    return markings


@dataclass
class FoundHandling:
    """What a foreign file's markings say (None where it says nothing)."""

    tlp: str | None = None
    pap: str | None = None
    code: str | None = None
    code_note: str | None = None
    no_forward: bool = False

    def add_tlp(self, tlp: str) -> None:
        self.tlp = stricter(TLP_ORDER, self.tlp, tlp)

    def add_pap(self, pap: str) -> None:
        self.pap = stricter(PAP_ORDER, self.pap, pap)


def stricter(order: tuple[str, ...], a: str | None, b: str | None) -> str | None:
    """The stricter of two levels (None: not given)."""
    if a is None:
        return b
    if b is None:
        return a
    return a if order.index(a) >= order.index(b) else b


def read_stix_marking(found: FoundHandling, definition: Mapping[str, Any]) -> bool:
    """Fold one marking definition into ``found``; False if it is none we know. Every way
    it says a level counts (its official id, the TLP 2.0 extension, a TLP 1.0 definition):
    a definition that contradicts its own id is read at the stricter level."""
    known = False
    marking_id = definition.get("id")
    if marking_id in TLP_OF_ID:
        found.add_tlp(TLP_OF_ID[str(marking_id)])
        known = True
    extensions = definition.get("extensions")
    if isinstance(extensions, Mapping):
        tlp2 = extensions.get(TLP2_EXTENSION_ID)
        if isinstance(tlp2, Mapping) and str(tlp2.get("tlp_2_0", "")).upper() in TLP_ORDER:
            found.add_tlp(str(tlp2["tlp_2_0"]).upper())
            known = True
        own = extensions.get(EXTENSION_ID)
        if isinstance(own, Mapping):
            known = _read_own(found, own) or known
    if definition.get("definition_type") == "tlp":  # TLP 1.0
        inner = definition.get("definition")
        level = str(inner.get("tlp", "")).upper() if isinstance(inner, Mapping) else ""
        level = "CLEAR" if level == "WHITE" else level
        if level in TLP_ORDER:
            found.add_tlp(level)
            known = True
    return known


def _read_own(found: FoundHandling, own: Mapping[str, Any]) -> bool:
    known = False
    if own.get("pap") in PAP_ORDER:
        found.add_pap(str(own["pap"]))
        known = True
    if own.get("handling_code") in CODES:
        found.code = _stricter_code(found.code, str(own["handling_code"]))
        if isinstance(own.get("code_note"), str):
            found.code_note = str(own["code_note"])
        known = True
    if own.get("no_forward") is True:
        found.no_forward = True
        known = True
    return known


# Handling codes have no total order; for merging two markings the one that restricts passing
# on wins (H2), then H3 (other restrictions), H1, H0.
_CODE_RANK: Final = {"H0": 0, "H1": 1, "H3": 2, "H2": 3}


def _stricter_code(a: str | None, b: str) -> str:
    return b if a is None or _CODE_RANK[b] >= _CODE_RANK[a] else a


def check_not_weaker(source: FoundHandling, draft: Handling, *, what: str) -> None:
    """Refuse a draft whose handling is weaker than its source's markings: a lower TLP or PAP,
    another handling code, no_forward dropped (``E_WEAKENS_HANDLING``)."""
    problems = []
    if source.tlp is not None and TLP_ORDER.index(draft.tlp) < TLP_ORDER.index(source.tlp):
        problems.append(f"TLP:{source.tlp} would become TLP:{draft.tlp}")
    if source.pap is not None and PAP_ORDER.index(draft.pap) < PAP_ORDER.index(source.pap):
        problems.append(f"PAP:{source.pap} would become PAP:{draft.pap}")
    if source.code is not None and draft.code != source.code:
        problems.append(f"handling code {source.code} would become {draft.code}")
    if source.no_forward and not draft.no_forward:
        problems.append("no_forward would be dropped")
    if problems:
        raise HandlingRefused(
            f"{what} would weaken the handling: {'; '.join(problems)}",
            hint="keep the source's markings (or stricter ones): a weaker --tlp/--pap is refused, "
            "and every object of a bundle must agree with the handling it is shared under",
            code="E_WEAKENS_HANDLING",
        )


# ---- MISP -------------------------------------------------------------------------------

# MISP distribution levels: 0 your organisation only, 1 this community only, 2 connected
# communities, 3 all communities.
# TLP 2.0 AMBER is the recipient organisation and its clients: "this community" (1) would
# hand it to every organisation of the MISP instance.
DISTRIBUTION: Final = {"CLEAR": 3, "GREEN": 1, "AMBER": 0, "AMBER+STRICT": 0, "RED": 0}


def misp_distribution(handling: Handling) -> int:
    """The widest MISP distribution the handling allows; no_forward and H2 keep it in the
    agency's own organisation (0)."""
    if restrictions(handling):
        return 0
    return DISTRIBUTION[handling.tlp]


def misp_tags(handling: Handling) -> list[str]:
    """The tags: taxonomy ``tlp`` and ``PAP``, then tfshare's (MISP has no taxonomy for the
    Europol-style handling codes or for no-forward)."""
    tags = [f"tlp:{handling.tlp.lower()}", f"PAP:{handling.pap}"]
    tags.append(f'tfshare:handling-code="{handling.code}"')
    if handling.no_forward:
        tags.append("tfshare:no-forward")
    return tags


def read_misp_tags(found: FoundHandling, names: Iterable[str]) -> list[str]:
    """Fold MISP tags into ``found``; the names of the tags that are not handling tags."""
    others = []
    for name in names:
        lowered = name.lower()
        if lowered.startswith("tlp:"):
            level = lowered.removeprefix("tlp:").upper()
            level = "CLEAR" if level == "WHITE" else level
            if level in TLP_ORDER:
                found.add_tlp(level)
                continue
        if lowered.startswith("pap:"):
            level = lowered.removeprefix("pap:").upper()
            level = "CLEAR" if level == "WHITE" else level
            if level in PAP_ORDER:
                found.add_pap(level)
                continue
        if lowered.startswith("tfshare:handling-code="):
            code = name.split("=", 1)[1].strip('"').upper()
            if code in CODES:
                found.code = _stricter_code(found.code, code)
                continue
        if lowered == "tfshare:no-forward":
            found.no_forward = True
            continue
        others.append(name)
    return others
