"""Received messages as one STIX 2.1 bundle (``tfshare export --format stix``, ``listen
--format stix``).

Owns: the mapping of docs/INTEROP.md, STIX side: per sending agency an ``identity`` (its key
fingerprint as an external reference); per message a ``report`` (msg_id and envelope hash as
an external reference, the original body, handling and grading kept verbatim in tfshare's
property extension), an ``indicator`` per entity (STIX patterns on the standard observables
where one fits, ``x-tfshare-entity`` otherwise), ``observed-data`` for a red flag's first and
last sightings, a ``location`` per place, a ``note`` for a recommended action, a
``relationship`` per lineage ref; every object marked with the message's TLP 2.0, PAP,
handling-code and no-forward markings; grading as ``confidence`` (Annex A).

Pure: a function of the messages; the same messages give the same bundle (derived ids).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from tfshare.interop import grading as grades
from tfshare.interop.common import (
    Received,
    derived_id,
    headline,
    parse_time,
    report_id,
    stix_time,
)
from tfshare.interop.markings import (
    EXTENSION_CREATED,
    EXTENSION_ID,
    TFSHARE_IDENTITY_ID,
    Handling,
    handling_of,
    refuse_restricted,
    stix_markings,
)

# STIX 2.1 section 2.9: the namespace of deterministic SCO ids.
SCO_NAMESPACE: Final = uuid.UUID("00abedb4-aa42-466c-9c01-fed23315a9b7")

# Entity kinds with a standard observable: (SCO type, property).
STANDARD_OBSERVABLES: Final = {
    "email": ("email-addr", "value"),
    "ad-url": ("url", "value"),
    "online-handle": ("user-account", "account_login"),
}
CUSTOM_OBSERVABLE: Final = "x-tfshare-entity"
# The values those observables accept (stix2-validator checks email-addr:value with this very
# expression, url:value as an RFC 3986 URI): anything else goes in x-tfshare-entity, as typed.
EMAIL: Final = re.compile(r"^[a-zA-Z0-9_.+-]+@[a-zA-Z0-9-]+\.[a-zA-Z0-9-.]+$")
URL: Final = re.compile(
    r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~!$&'()*+,;=:@/-]*)?"
    r"(\?[A-Za-z0-9._~!$&'()*+,;=:@/?-]*)?(#[A-Za-z0-9._~!$&'()*+,;=:@/?-]*)?$"
)
FITS: Final = {"email": EMAIL, "ad-url": URL}

# Lineage relations as STIX relationship types (the common ones: derived-from, related-to).
RELATIONSHIP_TYPES: Final = {
    "reshare": "derived-from",
    "escalate": "derived-from",
    "merge": "derived-from",
    "amend": "derived-from",
    "retract": "related-to",
    "reply": "related-to",
}


def bundle(messages: Sequence[Received], *, allow_restricted: bool = False) -> dict[str, Any]:
    """One bundle for ``messages``. A no_forward or H2 message raises ``HandlingRefused``
    unless ``allow_restricted``; then its markings travel on every object made of it."""
    handlings = []
    for message in messages:
        handling = handling_of(message.record)
        if not allow_restricted:
            refuse_restricted(message.msg_id, handling)
        handlings.append(handling)
    objects: dict[str, dict[str, Any]] = {}
    for marking in _shared_objects():
        objects[marking["id"]] = marking
    for identity in _identities(messages):
        objects[identity["id"]] = identity
    for message, handling in zip(messages, handlings, strict=True):
        for obj in message_objects(message, handling):
            kept = objects.setdefault(obj["id"], obj)
            if kept is not obj and "object_marking_refs" in obj:
                # An object two messages share (an observable's id derives from its value):
                # the markings of both, so the strictest applies wherever it is read.
                merged = [*kept.get("object_marking_refs", []), *obj["object_marking_refs"]]
                kept["object_marking_refs"] = list(dict.fromkeys(merged))
    key = [m.env_hash for m in messages] or ["empty"]
    return {"type": "bundle", "id": derived_id("bundle", *key), "objects": list(objects.values())}


def message_bundle(message: Received, *, allow_restricted: bool = False) -> dict[str, Any]:
    """One message's bundle (the live feed: one per line)."""
    return bundle([message], allow_restricted=allow_restricted)


def ndjson_line(message: Received, *, allow_restricted: bool = False) -> str:
    """``message_bundle`` as one line of JSON (no newline inside; ends without one)."""
    return json.dumps(
        message_bundle(message, allow_restricted=allow_restricted),
        ensure_ascii=False,
        separators=(",", ":"),
    )


def feed_line(message: Received, *, allow_restricted: bool = False) -> str | None:
    """``listen --format stix``: the message's bundle as one NDJSON line, or None for a
    no_forward / H2 message without ``allow_restricted`` (the feed names it on stderr and
    goes on: one restricted message must not stop a platform's feed)."""
    from tfshare.interop.markings import restrictions  # noqa: PLC0415

    if not allow_restricted and restrictions(handling_of(message.record)):
        return None
    return ndjson_line(message, allow_restricted=True)


def _shared_objects() -> list[dict[str, Any]]:
    """tfshare's identity and the definition of its extension, in every bundle."""
    return [
        {
            "type": "identity",
            "spec_version": "2.1",
            "id": TFSHARE_IDENTITY_ID,
            "created": EXTENSION_CREATED,
            "modified": EXTENSION_CREATED,
            "name": "tfshare",
            "description": "The tfshare software, author of the tfshare STIX extension.",
            "identity_class": "system",
        },
        {
            "type": "extension-definition",
            "spec_version": "2.1",
            "id": EXTENSION_ID,
            "created_by_ref": TFSHARE_IDENTITY_ID,
            "created": EXTENSION_CREATED,
            "modified": EXTENSION_CREATED,
            "name": "tfshare message origin and handling",
            "description": "Handling (PAP, handling codes H0-H3, no-forward) as marking "
            "definitions, and on reports the signed tfshare message they come from: msg_id, "
            "envelope SHA-256, sender, key fingerprint, channel, schema and the body verbatim.",
            "schema": "tfshare docs/INTEROP.md, section 'The tfshare extension' (plain text): "
            "on a marking-definition one of pap (CLEAR|GREEN|AMBER|RED), handling_code "
            "(H0|H1|H2|H3) with code_note, no_forward (true); on a report tfshare_message "
            "(object: msg_id, env_hash, sender, fingerprint, channel, schema, sent, body, "
            "refs, warning).",
            "version": "1.0",
            "extension_types": ["property-extension"],
        },
    ]


def _identities(messages: Iterable[Received]) -> list[dict[str, Any]]:
    """One identity per sending agency, with every key fingerprint its messages were signed
    with (a rotated key gives a second one)."""
    seen: dict[str, tuple[set[str], int]] = {}
    for m in messages:
        fingerprints, first = seen.get(m.sender, (set(), m.ts_ms))
        fingerprints.add(m.fingerprint)
        seen[m.sender] = (fingerprints, min(first, m.ts_ms))
    identities = []
    for sender, (fingerprints, first) in seen.items():
        created = stix_time(_utc(first))
        identities.append(
            {
                "type": "identity",
                "spec_version": "2.1",
                "id": agency_identity_id(sender),
                "created": created,
                "modified": created,
                "name": sender,
                "description": f"tfshare agency {sender}",
                "identity_class": "organization",
                "external_references": [
                    {
                        "source_name": "tfshare-key-fingerprint",
                        "external_id": fp,
                        "description": f"fingerprint of {sender}'s signing key in the roster",
                    }
                    for fp in sorted(fingerprints)
                ],
            }
        )
    return identities


def agency_identity_id(sender: str) -> str:
    return derived_id("identity", "agency", sender)


def _utc(ms: int) -> Any:
    import datetime as dt  # noqa: PLC0415

    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)


def message_objects(message: Received, handling: Handling) -> list[dict[str, Any]]:
    """The marking definitions and the objects made of one message, report last."""
    markings = stix_markings(handling)
    marks = [m["id"] for m in markings]
    record = message.record
    sent = stix_time(message.sent)
    author = agency_identity_id(message.sender)
    common = {"spec_version": "2.1", "created": sent, "modified": sent}
    described = {**common, "created_by_ref": author, "object_marking_refs": marks}
    grading = record.get("grading")
    confidence = grades.confidence_of(grading) if isinstance(grading, Mapping) else None
    codes = [str(c) for c in record.get("indicators") or [] if isinstance(c, str)]
    parts: list[dict[str, Any]] = []

    entities = _entities(record)
    link = record.get("confidence")
    indicator_confidence = grades.LINK_CONFIDENCE.get(str(link)) if link else confidence
    for index, entity in enumerate(entities):
        parts.append(
            _indicator(message, entity, index, described, codes, indicator_confidence, record)
        )
        parts.extend(_observed(message, entity, index, described, marks, record))
    for index, place in enumerate(_places(record)):
        parts.append(_location(message, place, index, described))
    action = record.get("recommended_action")
    if isinstance(action, str) and action:
        parts.append(
            {
                "type": "note",
                "id": derived_id("note", message.env_hash, "recommended_action"),
                **described,
                "abstract": "Recommended action",
                "content": action,
                "object_refs": [report_id(message.env_hash)],
            }
        )
    for index, ref in enumerate(message.refs):
        parts.append(
            {
                "type": "relationship",
                "id": derived_id("relationship", message.env_hash, str(index)),
                **described,
                "relationship_type": RELATIONSHIP_TYPES.get(ref.relation, "related-to"),
                "description": f"tfshare {ref.relation} of message {ref.msg_id}",
                "source_ref": report_id(message.env_hash),
                "target_ref": report_id(ref.env_hash),
                "external_references": [_message_reference(ref.msg_id, ref.env_hash)],
            }
        )
    report: dict[str, Any] = {
        "type": "report",
        "id": report_id(message.env_hash),
        **described,
        "name": headline(message, title_of_any_kind=False),
        "description": _description(message),
        "published": sent,
        "report_types": ["threat-report"],
        "labels": _labels(message, codes),
        "object_refs": [author, *(p["id"] for p in parts)],
        "external_references": [_message_reference(message.msg_id, message.env_hash)],
        "extensions": {
            EXTENSION_ID: {
                "extension_type": "property-extension",
                "tfshare_message": _origin(message),
            }
        },
    }
    if confidence is not None:
        report["confidence"] = confidence
    return [*markings, *parts, report]


def _message_reference(msg_id: str, env_hash: str) -> dict[str, Any]:
    reference: dict[str, Any] = {
        "source_name": "tfshare",
        "external_id": msg_id,
        "description": "tfshare msg_id; hashes: SHA-256 of the signed envelope (env_hash)",
    }
    if re.fullmatch(r"[0-9a-f]{64}", env_hash):  # an older agent's view may lack it
        reference["hashes"] = {"SHA-256": env_hash}
    return reference


def _origin(message: Received) -> dict[str, Any]:
    origin: dict[str, Any] = {
        "msg_id": message.msg_id,
        "env_hash": message.env_hash,
        "sender": message.sender,
        "fingerprint": message.fingerprint,
        "channel": message.channel,
        "schema": message.schema,
        "sent": stix_time(message.sent),
        "body": dict(message.record),
    }
    if message.refs:
        origin["refs"] = [
            {"relation": r.relation, "msg_id": r.msg_id, "env_hash": r.env_hash}
            for r in message.refs
        ]
    if message.warning:
        origin["warning"] = message.warning
    return origin


def _description(message: Received) -> str:
    record = message.record
    text = record.get("summary") or record.get("context")
    lines = [str(text)] if isinstance(text, str) else []
    if message.warning:
        lines.insert(0, f"WARNING: {message.warning}")
    lines.append(f"(tfshare {message.schema} from {message.sender}, msg_id {message.msg_id})")
    return "\n\n".join(lines)


def _labels(message: Received, codes: Sequence[str]) -> list[str]:
    record = message.record
    labels = [f"tfshare:{message.kind or message.subject}"]
    for name in ("severity", "category", "source_type", "response"):
        if isinstance(record.get(name), str):
            labels.append(f"{name}:{record[name]}")
    grading = record.get("grading")
    if isinstance(grading, Mapping):
        labels.append(f"grading:{grading.get('system')}:{grades.written(grading)}")
    if message.warning:
        labels.append("tfshare:sender-compromised")
    return labels + list(codes)


def _entities(record: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    found = [e for e in record.get("entities") or [] if isinstance(e, Mapping)]
    if isinstance(record.get("entity"), Mapping):
        found.append(record["entity"])
    return found


def _places(record: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    found = [p for p in record.get("locations") or [] if isinstance(p, Mapping)]
    if isinstance(record.get("where"), Mapping):
        found.insert(0, record["where"])
    return found


def _literal(text: str) -> str:
    """A STIX pattern string literal (section 9.4: backslash and quote escaped)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def standard(entity: Mapping[str, Any]) -> bool:
    """Does the entity go in a standard observable (its kind has one, its value fits it)?"""
    kind, value = str(entity.get("kind")), str(entity.get("value"))
    if entity.get("hashed") is True or kind not in STANDARD_OBSERVABLES:
        return False
    fits = FITS.get(kind)
    return fits is None or fits.match(value) is not None


def pattern_of(entity: Mapping[str, Any]) -> str:
    kind, value = str(entity.get("kind")), str(entity.get("value"))
    if standard(entity):
        sco, prop = STANDARD_OBSERVABLES[kind]
        return f"[{sco}:{prop} = {_literal(value)}]"
    hashed = entity.get("hashed") is True
    clauses = [
        f"{CUSTOM_OBSERVABLE}:kind = {_literal(kind)}",
        f"{CUSTOM_OBSERVABLE}:value = {_literal(value)}",
    ]
    if hashed:
        clauses.append(f"{CUSTOM_OBSERVABLE}:hashed = true")
    return "[" + " AND ".join(clauses) + "]"


def _indicator(
    message: Received,
    entity: Mapping[str, Any],
    index: int,
    described: Mapping[str, Any],
    codes: Sequence[str],
    confidence: int | None,
    record: Mapping[str, Any],
) -> dict[str, Any]:
    kind = str(entity.get("kind"))
    hashed = entity.get("hashed") is True
    first = parse_time(str(record.get("first_seen", ""))) or message.sent
    indicator: dict[str, Any] = {
        "type": "indicator",
        "id": derived_id("indicator", message.env_hash, str(index)),
        **described,
        "name": f"{kind} (hashed)" if hashed else f"{kind}: {entity.get('value')}",
        "description": f"{kind} named in tfshare {message.schema} {message.msg_id}",
        "pattern": pattern_of(entity),
        "pattern_type": "stix",
        "pattern_version": "2.1",
        "valid_from": stix_time(first),
        "labels": [f"entity:{kind}", *codes],
    }
    until = parse_time(str(record.get("expires", "")))
    if until is not None and until > first:
        indicator["valid_until"] = stix_time(until)
    if confidence is not None:
        indicator["confidence"] = confidence
    return indicator


def sco_id(sco_type: str, properties: Mapping[str, str]) -> str:
    """STIX 2.1 deterministic SCO id: UUIDv5 of the canonical JSON of its id properties."""
    import rfc8785  # noqa: PLC0415

    text = rfc8785.dumps(dict(properties)).decode()
    return f"{sco_type}--{uuid.uuid5(SCO_NAMESPACE, text)}"


def _observed(
    message: Received,
    entity: Mapping[str, Any],
    index: int,
    described: Mapping[str, Any],
    marks: Sequence[str],
    record: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """A red flag's sightings (first_seen, last_seen) of an entity with a standard observable."""
    kind = str(entity.get("kind"))
    first = parse_time(str(record.get("first_seen", "")))
    if first is None or not standard(entity):
        return []
    last = parse_time(str(record.get("last_seen", ""))) or first
    if last < first:  # STIX requires last_observed >= first_observed; the report keeps both
        return []
    sco_type, prop = STANDARD_OBSERVABLES[kind]
    properties = {prop: str(entity.get("value"))}
    observable = {
        "type": sco_type,
        "spec_version": "2.1",
        "id": sco_id(sco_type, properties),
        **properties,
        "object_marking_refs": list(marks),
    }
    observed = {
        "type": "observed-data",
        "id": derived_id("observed-data", message.env_hash, str(index)),
        **described,
        "first_observed": stix_time(first),
        "last_observed": stix_time(last),
        "number_observed": 1,
        "object_refs": [observable["id"]],
    }
    return [observable, observed]


def _location(
    message: Received, place: Mapping[str, Any], index: int, described: Mapping[str, Any]
) -> dict[str, Any]:
    location: dict[str, Any] = {
        "type": "location",
        "id": derived_id("location", message.env_hash, str(index)),
        **described,
        "country": str(place.get("country")),
    }
    if isinstance(place.get("region"), str):
        location["administrative_area"] = place["region"]
    if isinstance(place.get("place"), str):
        location["city"] = place["place"]
    lat, lon = place.get("lat"), place.get("lon")
    if isinstance(lat, int | float) and isinstance(lon, int | float):
        location["latitude"] = float(lat)
        location["longitude"] = float(lon)
    return location
