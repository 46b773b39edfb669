"""A STIX 2.1 bundle or a MISP event as a draft body for ``tfshare publish``.

Owns: reading a file an analyst's platform exported (``tfshare import FILE --as KIND``): the
STIX bundle is checked by stix2-validator, the MISP event loaded by PyMISP; then the fields
are mapped back as docs/INTEROP.md says (the reverse of ``stix_export`` / ``misp_export``),
every field that has no place in the body is listed, and the draft is checked against the
schema. Refused, with nothing drafted: an invalid bundle, a MISP object of an unknown
template, a marking tfshare cannot carry, and a handling weaker than the source's markings
(``markings.check_not_weaker``: a bundle's objects marked RED do not become a GREEN draft).

Pure: bytes and a schema document in, a ``Draft`` out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from tfshare.errors import ValidationError
from tfshare.interop import grading as grades
from tfshare.interop.common import KINDS, InteropError, parse_time, stix_time
from tfshare.interop.markings import (
    EXTENSION_ID,
    PAP_ORDER,
    TLP_ORDER,
    FoundHandling,
    Handling,
    check_not_weaker,
    read_misp_tags,
    read_stix_marking,
)

MAX_LISTED: Final = 20
VOCABULARIES: Final = ("ilo:", "htcds:", "fincen:", "polaris:")
INDICATOR_CODE: Final = re.compile(r"^(ilo|htcds|fincen|polaris):[a-z0-9][a-z0-9:.-]{0,62}$")
ENTITY_KINDS: Final = (
    "phone", "account", "vehicle-plate", "online-handle", "ad-url", "email", "address",
    "company", "person-description",
)  # fmt: skip
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
MISP_ENTITIES: Final = {
    "phone-number": "phone",
    "email": "email",
    "email-src": "email",
    "email-dst": "email",
    "url": "ad-url",
    "link": "ad-url",
    "iban": "account",
    "bank-account-nr": "account",
    "btc": "account",
    "xmr": "account",
}


@dataclass
class Draft:
    """A body to publish, and what the analyst must know about it."""

    kind: str
    schema: str
    body: dict[str, Any]
    unmapped: list[str] = field(default_factory=list)  # in the source, not in the body
    filled: list[str] = field(default_factory=list)  # in the body, not from the source
    missing: list[str] = field(default_factory=list)  # required, still to give at publish


def draft(
    data: bytes,
    kind: str,
    document: Mapping[str, Any],
    *,
    tlp: str | None = None,
    pap: str | None = None,
) -> Draft:
    """The draft of ``kind`` (alert, red-flag, tip) from a STIX bundle or MISP event's JSON,
    checked against ``document`` (the kind's schema). ``tlp`` / ``pap``: the analyst's
    choice, refused when weaker than the source's markings."""
    if kind not in KINDS:
        raise InteropError(f"unknown kind {kind!r}", hint=f"use one of {', '.join(KINDS)}")
    try:
        parsed = json.loads(data)
    except (ValueError, RecursionError):
        raise InteropError(
            "the file is not JSON", hint="give a STIX 2.1 bundle or a MISP event as JSON"
        ) from None
    if isinstance(parsed, dict) and parsed.get("type") == "bundle":
        source = _from_stix(parsed, kind)
    elif isinstance(parsed, dict) and (
        "Event" in parsed or "response" in parsed or "info" in parsed
    ):
        source = _from_misp(parsed, kind)
    else:
        raise InteropError(
            "the file is neither a STIX bundle nor a MISP event",
            hint='a STIX file starts {"type": "bundle", ...}; a MISP one {"Event": {...}}',
        )
    return _finish(source, kind, document, tlp, pap)


@dataclass
class _Source:
    """What a file said, before the handling is settled and the schema checked."""

    body: dict[str, Any]
    found: FoundHandling
    unmapped: list[str]
    filled: list[str]


def _finish(
    source: _Source, kind: str, document: Mapping[str, Any], tlp: str | None, pap: str | None
) -> Draft:
    found = source.found
    for given, order, what in ((tlp, TLP_ORDER, "--tlp"), (pap, PAP_ORDER, "--pap")):
        if given is not None and given not in order:
            raise InteropError(f"{what} {given!r} is not a level", hint=f"use {', '.join(order)}")
    missing: list[str] = []
    level = tlp or found.tlp
    if level is None:
        missing.append("handling.tlp (the source has no TLP marking: give --tlp)")
    else:
        handling = Handling(
            tlp=level,
            pap=pap or found.pap or "AMBER",
            code=found.code or "H1",
            code_note=found.code_note,
            no_forward=found.no_forward or level == "RED",
        )
        check_not_weaker(found, handling, what="this draft")
        source.body["handling"] = handling.as_body()
        if found.pap is None and pap is None:
            source.filled.append("handling.pap: AMBER (the schema's default; the source has none)")
        if level == "RED" and not found.no_forward:
            source.filled.append(
                "handling.no_forward: true, because TLP:RED allows no further disclosure"
            )
    from tfshare.registry.validate import all_errors  # noqa: PLC0415

    errors = all_errors(dict(document), source.body)
    problems = [e for e in errors if "missing required property" not in e]
    missing += [
        e.split("missing required property ", 1)[1].strip("'") if e.startswith("$:") else e
        for e in errors
        if "missing required property" in e
    ]
    if problems:
        raise ValidationError(
            f"the draft is not a valid {KINDS[kind]}: " + "; ".join(problems[:MAX_LISTED]),
            hint="the source's values do not fit the schema; fix them in the platform, or "
            "write the body by hand ('tfshare schema show " + KINDS[kind] + "')",
            paths=tuple(p.split(":", 1)[0] for p in problems),
        )
    schema = str(document.get("$id", KINDS[kind])).rsplit(":", 1)[-1]
    return Draft(kind, schema, source.body, source.unmapped, source.filled, missing)


# ---- STIX -------------------------------------------------------------------------------


def validate_bundle(bundle: Mapping[str, Any]) -> list[str]:
    """stix2-validator's errors for ``bundle`` (STIX 2.1): empty when it is valid."""
    from stix2validator import ValidationOptions, validate_instance  # noqa: PLC0415

    try:
        results = validate_instance(dict(bundle), ValidationOptions(version="2.1"))
    except Exception as exc:  # the validator raises on input it cannot even walk
        return [f"{type(exc).__name__}: {str(exc)[:200]}"]
    return [str(error) for error in results.errors]


def _from_stix(bundle: dict[str, Any], kind: str) -> _Source:  # noqa: PLR0915 - one pass, in the order of INTEROP.md
    errors = validate_bundle(bundle)
    if errors:
        raise InteropError(
            f"the STIX bundle is not valid STIX 2.1 ({len(errors)} errors): "
            + "; ".join(errors[:5]),
            hint="export it again from the platform, or check it with 'stix2_validator FILE'",
        )
    objects = [o for o in bundle.get("objects") or [] if isinstance(o, dict)]
    by_id = {str(o.get("id")): o for o in objects}
    reports = [o for o in objects if o.get("type") == "report"]
    if len(reports) > 1:
        raise InteropError(
            f"the bundle holds {len(reports)} reports; a draft is one message",
            hint="export one report (with its objects) from the platform and import that",
        )
    report = reports[0] if reports else None
    if report is not None:
        used = [report] + [by_id[r] for r in report.get("object_refs", []) if r in by_id]
    else:
        used = [
            o
            for o in objects
            if o.get("type")
            not in ("marking-definition", "extension-definition", "language-content")
        ]
    found = FoundHandling()
    unmapped: list[str] = []
    for obj in used:
        refs = list(obj.get("object_marking_refs") or [])
        refs += [
            g.get("marking_ref")
            for g in obj.get("granular_markings") or []
            if isinstance(g, Mapping)
        ]
        for ref in refs:
            definition = by_id.get(str(ref), {"id": ref})
            if not read_stix_marking(found, definition):
                raise _unknown_marking(str(ref), definition)
    origin = _origin(report)
    old = origin.get("body") if isinstance(origin.get("body"), Mapping) else {}
    if old and origin.get("schema", "").split("/")[0] == KINDS[kind]:
        _fold_handling(found, old.get("handling"))
    else:
        old = {}
    body: dict[str, Any] = {}
    filled: list[str] = []
    labels = [str(x) for x in (report or {}).get("labels") or []]
    tagged = _labelled(labels)
    codes = [x for x in labels if INDICATOR_CODE.match(x)]
    entities: list[dict[str, Any]] = []
    indicator_confidence: int | None = None
    locations: list[dict[str, Any]] = []
    notes: list[str] = []
    seen: dict[str, str] = {}
    for obj in used:
        kind_of = obj.get("type")
        if kind_of == "indicator":
            entity = _entity_of_pattern(str(obj.get("pattern", "")))
            if entity is None:
                unmapped.append(
                    f"indicator {obj.get('id')}: pattern {str(obj.get('pattern'))[:80]!r} "
                    "names no entity tfshare maps"
                )
                continue
            entities.append(entity)
            codes += [
                x
                for x in obj.get("labels") or []
                if INDICATOR_CODE.match(str(x)) and x not in codes
            ]
            if isinstance(obj.get("confidence"), int):
                indicator_confidence = obj["confidence"]
            if isinstance(obj.get("valid_from"), str):
                seen.setdefault("first_seen", _time(obj["valid_from"]))
        elif kind_of == "observed-data":
            seen["first_seen"] = _time(str(obj.get("first_observed")))
            seen["last_seen"] = _time(str(obj.get("last_observed")))
        elif kind_of == "location":
            place = _place_of(obj, unmapped)
            if place:
                locations.append(place)
        elif kind_of == "note":
            notes.append(str(obj.get("content", "")))
        elif kind_of in ("report", "identity", "relationship") or kind_of in STIX_SCOS:
            continue  # the report itself, its author, lineage (a new message has its own), SCOs
        else:
            unmapped.append(f"{kind_of} {obj.get('id')}: no field in a {kind}")
    name = str((report or {}).get("name", "")) or None
    description = _description((report or {}).get("description"))
    confidence = (report or {}).get("confidence")
    if old.get("grading") is not None:
        body["grading"] = old["grading"]
    elif isinstance(confidence, int):
        body["grading"] = {
            "system": "admiralty-6x6",
            "source": "F",
            "information": grades.admiralty_information(confidence),
        }
        filled.append(
            f"grading: admiralty F{body['grading']['information']} (source reliability cannot "
            f"be judged; credibility from confidence {confidence}, STIX Annex A)"
        )
    else:
        body["grading"] = {"system": "admiralty-6x6", "source": "F", "information": "6"}
        filled.append(
            "grading: admiralty F6 (the source grades nothing: reliability and truth "
            "cannot be judged)"
        )
    _shape(
        kind,
        body,
        old,
        name,
        description,
        tagged,
        codes,
        entities,
        locations,
        notes,
        seen,
        indicator_confidence,
        unmapped,
        filled,
    )
    for label in labels:
        if not INDICATOR_CODE.match(label) and label.split(":", 1)[0] not in KNOWN_LABELS:
            unmapped.append(f"label {label!r}: no field in a {kind}")
    return _Source(body, found, unmapped, filled)


STIX_SCOS: Final = frozenset(
    ("email-addr", "url", "user-account", "phone-number", "bank-account", "cryptocurrency-wallet")
)
KNOWN_LABELS: Final = frozenset(
    ("tfshare", "severity", "category", "source_type", "response", "grading", "entity")
)


def _unknown_marking(ref: str, definition: Mapping[str, Any]) -> InteropError:
    return InteropError(
        f"marking {ref} ({str(definition.get('name', 'not in the bundle'))[:60]}) is not one "
        "tfshare can carry: its restrictions would be lost",
        hint="tfshare carries TLP (1.0 and 2.0) and its own PAP, handling-code and "
        "no-forward markings; share this content another way",
    )


def _origin(report: Mapping[str, Any] | None) -> dict[str, Any]:
    extensions = (report or {}).get("extensions")
    own = extensions.get(EXTENSION_ID) if isinstance(extensions, Mapping) else None
    origin = own.get("tfshare_message") if isinstance(own, Mapping) else None
    return dict(origin) if isinstance(origin, Mapping) else {}


def _fold_handling(found: FoundHandling, block: Any) -> None:
    """The handling the original tfshare body carried counts as a marking too."""
    if not isinstance(block, Mapping):
        return
    if block.get("tlp") in TLP_ORDER:
        found.add_tlp(str(block["tlp"]))
    if block.get("pap") in PAP_ORDER:
        found.add_pap(str(block["pap"]))
    if block.get("no_forward") is True:
        found.no_forward = True
    if isinstance(block.get("code"), str) and found.code is None:
        found.code = str(block["code"])
    if isinstance(block.get("code_note"), str) and found.code_note is None:
        found.code_note = str(block["code_note"])


def _labelled(labels: list[str]) -> dict[str, str]:
    tagged = {}
    for label in labels:
        name, _, value = label.partition(":")
        if name in ("severity", "category", "source_type", "response") and value:
            tagged[name] = value
    return tagged


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def _entity_of_pattern(pattern: str) -> dict[str, Any] | None:
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


def _place_of(obj: Mapping[str, Any], unmapped: list[str]) -> dict[str, Any] | None:
    country = obj.get("country")
    if not isinstance(country, str) or not re.fullmatch(r"[A-Za-z]{2}", country):
        unmapped.append(
            f"location {obj.get('id')}: no ISO 3166 country, which a tfshare place needs"
        )
        return None
    place: dict[str, Any] = {"country": country.upper()}
    if isinstance(obj.get("administrative_area"), str):
        place["region"] = obj["administrative_area"]
    if isinstance(obj.get("city"), str):
        place["place"] = obj["city"]
    if isinstance(obj.get("latitude"), int | float) and isinstance(
        obj.get("longitude"), int | float
    ):
        place["lat"], place["lon"] = obj["latitude"], obj["longitude"]
    for name in ("street_address", "postal_code", "region", "precision"):
        if name in obj:
            unmapped.append(f"location {obj.get('id')}: {name} (a tfshare place has no such field)")
    return place


def _description(text: Any) -> str | None:
    """The report's description without what the export added (warning, trailer)."""
    if not isinstance(text, str) or not text:
        return None
    parts = [
        p
        for p in text.split("\n\n")
        if not (p.startswith("(tfshare ") or p.startswith("WARNING: "))
    ]
    return "\n\n".join(parts) or None


def _time(text: str) -> str:
    parsed = parse_time(text)
    return _rfc3339(parsed) if parsed is not None else text


def _rfc3339(when: Any) -> str:
    """UTC with Z, seconds (the milliseconds when there are some)."""
    text = stix_time(when)
    return text.replace(".000Z", "Z")


def _shape(  # noqa: PLR0915 - one branch per kind
    kind: str,
    body: dict[str, Any],
    old: Mapping[str, Any],
    name: str | None,
    text: str | None,
    tagged: Mapping[str, str],
    codes: list[str],
    entities: list[dict[str, Any]],
    locations: list[dict[str, Any]],
    notes: list[str],
    seen: Mapping[str, str],
    link_confidence: int | None,
    unmapped: list[str],
    filled: list[str],
) -> None:
    """Put the mapped values where ``kind``'s schema has them; what has no place is listed,
    what only the tfshare extension carried comes from it."""

    def from_old(*names: str) -> None:
        for n in names:
            if n in old and n not in body:
                body[n] = old[n]
                filled.append(f"{n}: from the tfshare extension (the original message)")

    if kind == "alert":
        if name:
            body["title"] = name[:200]
        if text:
            body["summary"] = text
        for n in ("severity", "category", "response"):
            if n in tagged:
                body[n] = tagged[n]
        if locations:
            body["where"] = locations[0]
            unmapped += [
                f"location {i + 1}: an alert has one place (where)"
                for i in range(1, len(locations))
            ]
        if entities:
            body["entities"] = entities
        if codes:
            body["indicators"] = codes
        from_old("when", "expires", "response")
        unmapped += [f"note: {n[:60]!r}: an alert has no field for notes" for n in notes]
    elif kind == "red-flag":
        if text:
            body["context"] = text
        if codes:
            body["indicators"] = codes
        if entities:
            body["entity"] = entities[0]
            unmapped += [
                f"indicator {i + 1}: a red flag is about one entity"
                for i in range(1, len(entities))
            ]
        body.update({k: v for k, v in seen.items()})
        if "confidence" in old:
            body["confidence"] = old["confidence"]
        elif link_confidence is not None:
            body["confidence"] = grades.link_confidence(link_confidence)
        if old:
            for n in ("first_seen", "last_seen"):
                if n in old:
                    body[n] = old[n]
                else:
                    body.pop(n, None)
        unmapped += [f"location: {p['country']}: a red flag has no place field" for p in locations]
        unmapped += [f"note: {n[:60]!r}: a red flag has no field for notes" for n in notes]
    else:  # tip
        if text:
            body["summary"] = text
        if "source_type" in tagged:
            body["source_type"] = tagged["source_type"]
        if locations:
            body["locations"] = locations
        if codes:
            body["indicators"] = codes
        if notes:
            body["recommended_action"] = "\n\n".join(notes)
        from_old("received", "possible_victims", "source_type")
        unmapped += [f"entity {e['kind']}: a tip summary has no entity field" for e in entities]
    exported = name is not None and name.startswith(("Red flag: ", "Tip summary ("))
    if name and kind != "alert" and not exported:
        unmapped.append(f"name {name[:60]!r}: a {kind} has no title")


# ---- MISP -------------------------------------------------------------------------------


def _misp_event_dict(parsed: dict[str, Any]) -> dict[str, Any]:
    if "response" in parsed:
        listed = parsed["response"]
        if not isinstance(listed, list) or len(listed) != 1:
            raise InteropError(
                f"the file holds {len(listed) if isinstance(listed, list) else 'no'} events; "
                "a draft is one message",
                hint="export one event from MISP and import that",
            )
        parsed = listed[0] if isinstance(listed[0], dict) else {}
    event = parsed.get("Event", parsed)
    if not isinstance(event, dict):
        raise InteropError("the MISP event is not an object", hint="give MISP's event JSON")
    return event


def _from_misp(parsed: dict[str, Any], kind: str) -> _Source:  # noqa: PLR0915 - one pass, in the order of INTEROP.md
    from pymisp import MISPEvent  # noqa: PLC0415
    from pymisp.abstract import resources_path  # noqa: PLC0415

    event_dict = _misp_event_dict(parsed)
    templates = {p.name for p in (resources_path / "misp-objects" / "objects").iterdir()}
    unknown = sorted(
        {
            str(o.get("name"))
            for o in event_dict.get("Object") or []
            if isinstance(o, dict) and o.get("name") not in templates
        }
    )
    if unknown:
        raise InteropError(
            f"the MISP event has objects of unknown templates: {', '.join(unknown[:MAX_LISTED])}",
            hint="tfshare reads objects of MISP's published templates only; remove these "
            "objects in MISP (or move what matters into attributes) and export again",
        )
    event = MISPEvent()
    try:
        event.from_dict(**event_dict)
    except Exception as exc:  # PyMISP's own checks (types, categories, fields)
        raise InteropError(
            f"PyMISP cannot load the event ({type(exc).__name__}: {str(exc)[:200]})",
            hint="export it again from MISP in its JSON format",
        ) from None
    found = FoundHandling()
    unmapped: list[str] = []
    tags = [t.name for t in event.tags]
    others = read_misp_tags(found, tags)
    tagged: dict[str, str] = {}
    codes: list[str] = []
    grading: dict[str, Any] | None = None
    admiralty: dict[str, str] = {}
    for tag in others:
        name, _, value = tag.partition("=")
        value = value.strip('"')
        if name == "tfshare:indicator" and INDICATOR_CODE.match(value):
            codes.append(value)
        elif name in (
            "tfshare:severity",
            "tfshare:category",
            "tfshare:source-type",
            "tfshare:response",
            "tfshare:confidence",
        ):
            tagged[name.removeprefix("tfshare:").replace("-", "_")] = value
        elif name == "tfshare:grading":
            system, _, grade = value.partition(":")
            grading = grades.from_written(system, grade)
        elif name.startswith("admiralty-scale:"):
            admiralty[name.removeprefix("admiralty-scale:")] = value.upper()
        elif name in ("tfshare:kind", "tfshare:sender-compromised"):
            continue
        else:
            unmapped.append(f"tag {tag!r}: no field in a {kind}")
    body: dict[str, Any] = {}
    filled: list[str] = []
    if grading is None and admiralty:
        grading = {
            "system": "admiralty-6x6",
            "source": admiralty.get("source-reliability", "F"),
            "information": admiralty.get("information-credibility", "6"),
        }
    if grading is None:
        grading = {"system": "admiralty-6x6", "source": "F", "information": "6"}
        filled.append(
            "grading: admiralty F6 (the event grades nothing: reliability and truth "
            "cannot be judged)"
        )
    body["grading"] = grading
    fields: dict[str, str] = {}
    entities: list[dict[str, Any]] = []
    for attribute in event.attributes:
        for t in attribute.tags:
            rest = read_misp_tags(found, [t.name])
            unmapped += [f"attribute tag {x!r}: no field in a {kind}" for x in rest]
        comment = str(attribute.comment or "")
        value = attribute.value
        text = value.isoformat() if hasattr(value, "isoformat") else str(value)
        if comment.startswith("tfshare:entity"):
            match = re.search(r'kind="([a-z-]+)"', comment)
            entity_kind = match.group(1) if match else MISP_ENTITIES.get(attribute.type)
            if entity_kind in ENTITY_KINDS:
                entity: dict[str, Any] = {"kind": entity_kind, "value": text}
                if comment.endswith(" hashed"):
                    entity["hashed"] = True
                entities.append(entity)
                continue
        elif comment.startswith("tfshare:"):
            fields[comment.removeprefix("tfshare:")] = text
            continue
        if attribute.type in MISP_ENTITIES:
            entities.append({"kind": MISP_ENTITIES[attribute.type], "value": text})
            continue
        unmapped.append(f"attribute {attribute.type} {text[:40]!r}: no field in a {kind}")
    locations: list[dict[str, Any]] = []
    for obj in event.objects:
        if obj.name != "geolocation":
            unmapped.append(f"object {obj.name}: no field in a {kind}")
            continue
        values = {a.object_relation: str(a.value) for a in obj.attributes}
        country = values.get("countrycode") or ""
        if not re.fullmatch(r"[A-Za-z]{2}", country):
            unmapped.append(
                "object geolocation: no ISO 3166 country code, which a tfshare place needs"
            )
            continue
        place: dict[str, Any] = {"country": country.upper()}
        if "region" in values:
            place["region"] = values["region"]
        if "city" in values:
            place["place"] = values["city"]
        if "latitude" in values and "longitude" in values:
            try:
                place["lat"], place["lon"] = float(values["latitude"]), float(values["longitude"])
            except ValueError:
                unmapped.append("object geolocation: latitude/longitude are not numbers")
        for relation in sorted(
            set(values) - {"countrycode", "region", "city", "latitude", "longitude", "country"}
        ):
            unmapped.append(f"object geolocation: {relation} (a tfshare place has no such field)")
        locations.append(place)
    times = {
        k: _time(v)
        for k, v in fields.items()
        if k in ("received", "expires", "first_seen", "last_seen", "when.start", "when.end")
    }
    severity = tagged.get("severity") or {1: "high", 2: "medium", 3: "low"}.get(
        int(event.threat_level_id or 4)
    )
    if kind == "alert":
        if event.info:
            body["title"] = str(event.info)[:200]
        if "summary" in fields or "context" in fields:
            body["summary"] = fields.get("summary") or fields["context"]
        if severity:
            body["severity"] = severity
        for n in ("category", "response"):
            if n in tagged:
                body[n] = tagged[n]
        if locations:
            body["where"] = locations[0]
        if entities:
            body["entities"] = entities
        if codes:
            body["indicators"] = codes
        if "when.start" in times:
            body["when"] = {
                "start": times["when.start"],
                **({"end": times["when.end"]} if "when.end" in times else {}),
            }
        if "expires" in times:
            body["expires"] = times["expires"]
    elif kind == "red-flag":
        if "context" in fields or "summary" in fields:
            body["context"] = fields.get("context") or fields["summary"]
        if codes:
            body["indicators"] = codes
        if entities:
            body["entity"] = entities[0]
            unmapped += [
                f"entity {e['kind']}: a red flag is about one entity" for e in entities[1:]
            ]
        for n in ("first_seen", "last_seen"):
            if n in times:
                body[n] = times[n]
        if "confidence" in tagged:
            body["confidence"] = tagged["confidence"]
    else:
        if "summary" in fields or "context" in fields:
            body["summary"] = fields.get("summary") or fields["context"]
        if "source_type" in tagged:
            body["source_type"] = tagged["source_type"]
        if "received" in times:
            body["received"] = times["received"]
        elif event.date:
            body["received"] = f"{event.date.isoformat()}T00:00:00Z"
            filled.append("received: the event's date (no time of receipt in the event)")
        if locations:
            body["locations"] = locations
        if codes:
            body["indicators"] = codes
        if "recommended_action" in fields:
            body["recommended_action"] = fields["recommended_action"]
        if "possible_victims" in fields:
            try:
                body["possible_victims"] = json.loads(fields["possible_victims"])
            except ValueError:
                unmapped.append("possible_victims: not the JSON tfshare writes")
    if "handling.code_note" in fields:
        found.code_note = fields["handling.code_note"]
    return _Source(body, found, unmapped, filled)
