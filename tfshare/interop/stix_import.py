"""A STIX 2.1 bundle read back for a draft (``tfshare import FILE`` with a bundle).

Owns: checking the bundle with stix2-validator (an invalid one is refused), choosing what it
says about one message (its one report and the objects the report names, else every
object), reading the markings of every object used (TLP 1.0 and 2.0, tfshare's PAP, code
and no-forward; a marking tfshare cannot carry is refused), and the reverse mapping of
``stix_export``: labels, indicator patterns, observed data, locations, notes, confidence.

Pure; stix2-validator is imported by ``validate_bundle``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from tfshare.interop import grading as grades
from tfshare.interop.common import KINDS, InteropError
from tfshare.interop.drafts import (
    ENTITY_KINDS,
    INDICATOR_CODE,
    Collected,
    place,
    rfc3339,
    take_original,
)
from tfshare.interop.markings import EXTENSION_ID, PAP_ORDER, TLP_ORDER, read_stix_marking

# STIX observables (pattern object:property) as entity kinds; phone-number, bank-account and
# cryptocurrency-wallet are OpenCTI's custom observables.
STIX_ENTITIES: Final = {
    ("email-addr", "value"): "email",
    ("url", "value"): "ad-url",
    ("user-account", "account_login"): "online-handle",
    ("user-account", "user_id"): "online-handle",
    ("phone-number", "value"): "phone",
    ("bank-account", "iban"): "account",
    ("bank-account", "account_number"): "account",
    ("cryptocurrency-wallet", "value"): "account",
}
SIMPLE_PATTERN: Final = re.compile(r"^\[([a-z0-9-]+):([a-z_]+) = '((?:[^'\\]|\\.)*)'\]$")
OWN_PATTERN: Final = re.compile(
    r"^\[x-tfshare-entity:kind = '([a-z-]+)' AND x-tfshare-entity:value = '((?:[^'\\]|\\.)*)'"
    r"( AND x-tfshare-entity:hashed = true)?\]$"
)
# Objects that carry nothing of their own into a body: the report's author, the lineage (a
# new message names its own parents), the observables an indicator's pattern repeats.
SILENT: Final = frozenset(
    ("identity", "relationship", "email-addr", "url", "user-account", "phone-number",
     "bank-account", "cryptocurrency-wallet")
)  # fmt: skip
DEFINITIONS: Final = frozenset(("marking-definition", "extension-definition", "language-content"))
LABELS: Final = ("severity", "category", "source_type", "response")
# The properties each object's reading takes (or that only say what the object is): any
# other is listed as not imported. name / description of an indicator, an observed-data's
# number_observed: stix_export writes them from what the draft has anyway.
COMMON_PROPERTIES: Final = frozenset(
    ("type", "spec_version", "id", "created", "modified", "created_by_ref", "revoked",
     "object_marking_refs", "granular_markings", "labels", "lang")
)  # fmt: skip
MAPPED_PROPERTIES: Final = {
    "report": frozenset(("name", "description", "published", "report_types", "object_refs",
                         "confidence", "external_references", "extensions")),
    "indicator": frozenset(("name", "description", "pattern", "pattern_type",
                            "pattern_version", "valid_from", "valid_until", "confidence")),
    "observed-data": frozenset(("first_observed", "last_observed", "number_observed",
                                "object_refs")),
    "location": frozenset(("country", "administrative_area", "city", "latitude", "longitude",
                           "street_address", "postal_code", "region", "precision")),
    "note": frozenset(("abstract", "content", "object_refs")),
}  # fmt: skip
KNOWN_LABELS: Final = frozenset((*LABELS, "tfshare", "grading", "entity"))


def validate_bundle(bundle: Mapping[str, Any]) -> list[str]:
    """stix2-validator's errors for ``bundle`` (STIX 2.1): empty when it is valid."""
    from stix2validator import ValidationOptions, validate_instance  # noqa: PLC0415

    try:
        results = validate_instance(dict(bundle), ValidationOptions(version="2.1"))
    except Exception as exc:  # the validator raises on input it cannot even walk
        return [f"{type(exc).__name__}: {str(exc)[:200]}"]
    return [str(error) for error in results.errors]


def collect(bundle: dict[str, Any], kind: str) -> Collected:
    errors = validate_bundle(bundle)
    if errors:
        raise InteropError(
            f"the STIX bundle is not valid STIX 2.1 ({len(errors)} errors): "
            + "; ".join(errors[:5]),
            hint="export it again from the platform, or check it with 'stix2_validator FILE'",
        )
    objects = [o for o in bundle.get("objects") or [] if isinstance(o, dict)]
    by_id = {str(o.get("id")): o for o in objects}
    report, used = _used(objects, by_id)
    c = Collected(kind)
    # The report's own markings restrict everything made of it (docs/INTEROP.md).
    _markings(c, used if report is None else [report, *used], by_id)
    for obj in used:
        _read(c, obj)
        _unmapped_properties(c, obj)
    if report is not None:
        _read_report(c, report)
        _unmapped_properties(c, report)
    return c


def _unmapped_properties(c: Collected, obj: Mapping[str, Any]) -> None:
    """Every property of an object read into the draft that the draft does not take."""
    mapped = MAPPED_PROPERTIES.get(str(obj.get("type")))
    if mapped is None:  # an object listed whole, or one that carries nothing (SILENT)
        return
    for name in sorted(set(obj) - COMMON_PROPERTIES - mapped):
        c.no_field(f"{obj.get('type')} {obj.get('id')}: {name}")


def _used(
    objects: list[dict[str, Any]], by_id: Mapping[str, dict[str, Any]]
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The report and what it names (a draft is one message), else every object."""
    reports = [o for o in objects if o.get("type") == "report"]
    if len(reports) > 1:
        raise InteropError(
            f"the bundle holds {len(reports)} reports; a draft is one message",
            hint="export one report (with its objects) from the platform and import that",
        )
    if not reports:
        return None, [o for o in objects if o.get("type") not in DEFINITIONS]
    named = [by_id[r] for r in reports[0].get("object_refs", []) if r in by_id]
    return reports[0], [o for o in named if o.get("type") not in DEFINITIONS]


def _markings(c: Collected, used: list[dict[str, Any]], by_id: Mapping[str, Any]) -> None:
    """Every marking of every object used (granular ones too: they restrict the whole)."""
    for obj in used:
        refs = list(obj.get("object_marking_refs") or [])
        refs += [
            g.get("marking_ref")
            for g in obj.get("granular_markings") or []
            if isinstance(g, Mapping)
        ]
        for ref in refs:
            definition = by_id.get(str(ref), {"id": ref})
            if not read_stix_marking(c.found, definition):
                raise InteropError(
                    f"marking {ref} ({str(definition.get('name', 'not in the bundle'))[:60]}) is "
                    "not one tfshare can carry: its restrictions would be lost",
                    hint="tfshare carries TLP (1.0 and 2.0) and its own PAP, handling-code and "
                    "no-forward markings; share this content another way",
                )


def _read(c: Collected, obj: Mapping[str, Any]) -> None:
    kind = obj.get("type")
    if kind == "indicator":
        entity = entity_of_pattern(str(obj.get("pattern", "")))
        if entity is None:
            c.no_field(f"indicator {obj.get('id')} (pattern {str(obj.get('pattern'))[:80]!r})")
            return
        c.entities.append(entity)
        for label in obj.get("labels") or []:
            if INDICATOR_CODE.match(str(label)):
                c.add_code(str(label))
        if isinstance(obj.get("confidence"), int):
            c.link_confidence = obj["confidence"]
        if isinstance(obj.get("valid_until"), str):  # stix_export writes an alert's expires there
            c.times.setdefault("expires", rfc3339(obj["valid_until"]))
    elif kind == "observed-data":
        c.times["first_seen"] = rfc3339(str(obj.get("first_observed")))
        c.times["last_seen"] = rfc3339(str(obj.get("last_observed")))
    elif kind == "location":
        found = place(
            obj.get("country"),
            obj.get("administrative_area"),
            obj.get("city"),
            obj.get("latitude"),
            obj.get("longitude"),
        )
        if found is None:
            c.no_field(f"location {obj.get('id')} without an ISO 3166 country")
            return
        c.locations.append(found)
        for name in ("street_address", "postal_code", "region", "precision"):
            if name in obj:
                c.no_field(f"location {obj.get('id')}: {name}")
    elif kind == "note":
        c.notes.append(str(obj.get("content", "")))
    elif kind not in SILENT and kind != "report":
        c.no_field(f"{kind} {obj.get('id')}")


def _read_report(c: Collected, report: Mapping[str, Any]) -> None:
    labels = [str(x) for x in report.get("labels") or []]
    c.name = str(report.get("name") or "") or None
    c.text = _description(report.get("description"), "tfshare:sender-compromised" in labels)
    for label in labels:
        name, _, value = label.partition(":")
        if INDICATOR_CODE.match(label):
            c.add_code(label)
        elif name in LABELS and value:
            c.tagged[name] = value
        elif name not in KNOWN_LABELS:
            c.no_field(f"label {label!r}")
    origin = _origin(report)
    original = origin.get("body")
    if isinstance(original, Mapping):
        # The original's handling binds whatever kind the draft becomes; its other fields
        # only fit a draft of its own kind.
        _fold_handling(c, original.get("handling"))
        if str(origin.get("schema", "")).split("/")[0] == KINDS[c.kind]:
            take_original(c, original)
    confidence = report.get("confidence")
    if c.grading is None and isinstance(confidence, int):
        information = grades.admiralty_information(confidence)
        c.grading = {"system": "admiralty-6x6", "source": "F", "information": information}
        c.filled.append(
            f"grading: admiralty F{information} (source reliability cannot be judged; "
            f"credibility from confidence {confidence}, STIX Annex A)"
        )


def _origin(report: Mapping[str, Any]) -> dict[str, Any]:
    extensions = report.get("extensions")
    own = extensions.get(EXTENSION_ID) if isinstance(extensions, Mapping) else None
    origin = own.get("tfshare_message") if isinstance(own, Mapping) else None
    return dict(origin) if isinstance(origin, Mapping) else {}


def _fold_handling(c: Collected, block: Any) -> None:
    """The handling the original tfshare body carried counts as a marking too."""
    if not isinstance(block, Mapping):
        return
    if block.get("tlp") in TLP_ORDER:
        c.found.add_tlp(str(block["tlp"]))
    if block.get("pap") in PAP_ORDER:
        c.found.add_pap(str(block["pap"]))
    if block.get("no_forward") is True:
        c.found.no_forward = True
    if isinstance(block.get("code"), str) and c.found.code is None:
        c.found.code = str(block["code"])
    if isinstance(block.get("code_note"), str) and c.found.code_note is None:
        c.found.code_note = str(block["code_note"])


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def entity_of_pattern(pattern: str) -> dict[str, Any] | None:
    """The entity a pattern of ``stix_export`` (or a one-comparison pattern on an observable
    tfshare maps) names; None for any other pattern."""
    own = OWN_PATTERN.match(pattern)
    if own is not None:
        entity: dict[str, Any] = {"kind": own.group(1), "value": _unescape(own.group(2))}
        if own.group(3):
            entity["hashed"] = True
        return entity if entity["kind"] in ENTITY_KINDS else None
    simple = SIMPLE_PATTERN.match(pattern)
    if simple is None:
        return None
    kind = STIX_ENTITIES.get((simple.group(1), simple.group(2)))
    return {"kind": kind, "value": _unescape(simple.group(3))} if kind else None


TRAILER: Final = re.compile(r"\n\n\(tfshare \S+ from [^\n]*, msg_id [0-9a-f]{32}\)\Z")


def _description(text: Any, compromised: bool) -> str | None:
    """The report's description without what ``stix_export`` added: the warning paragraph
    (a sender compromised) and the closing "(tfshare ... msg_id ...)" paragraph."""
    if not isinstance(text, str) or not text:
        return None
    text = TRAILER.sub("", text)
    if compromised and text.startswith("WARNING: ") and "\n\n" in text:
        text = text.split("\n\n", 1)[1]
    return text or None
