"""A MISP event read back for a draft (``tfshare import FILE`` with MISP JSON).

Owns: taking the one event out of MISP's JSON forms (``{"Event": ...}``, ``{"response":
[...]}``, a bare event), refusing objects of templates PyMISP does not ship (their meaning is
unknown), loading the event in PyMISP's ``MISPEvent`` (its checks), and the reverse mapping of
``misp_export``: handling and grading from the taxonomies' tags, tfshare's own tags, the
attributes by their ``tfshare:<field>`` comment or by type, ``geolocation`` objects.

Pure; PyMISP is imported by ``collect``.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any, Final

from tfshare.interop import grading as grades
from tfshare.interop.common import InteropError
from tfshare.interop.drafts import (
    ENTITY_KINDS,
    INDICATOR_CODE,
    TIMES,
    Collected,
    place,
    rfc3339,
)
from tfshare.interop.markings import read_misp_tags

if TYPE_CHECKING:
    from pymisp import MISPAttribute, MISPEvent, MISPObject

MAX_LISTED: Final = 20
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
TAGGED: Final = ("severity", "category", "source-type", "response", "confidence")
THREAT_LEVELS: Final = {1: "high", 2: "medium", 3: "low"}
# The least TLP a MISP distribution allows: 0 your organisation only, 4 a sharing group.
DISTRIBUTION_FLOOR: Final = {"0": "AMBER", "4": "AMBER"}
TEXTS: Final = ("summary", "context")
# Attributes misp_export writes that a new message does not take: who sent the original and
# which envelope it was (the new message is signed by the importing agency).
ORIGIN_FIELDS: Final = ("msg_id", "env_hash", "fingerprint", "schema", "ref", "warning")


def event_dict(parsed: dict[str, Any]) -> dict[str, Any]:
    """The one event of a MISP JSON file."""
    if "response" in parsed:
        listed = parsed["response"]
        if not isinstance(listed, list) or len(listed) != 1 or not isinstance(listed[0], dict):
            count = len(listed) if isinstance(listed, list) else "no"
            raise InteropError(
                f"the file holds {count} events; a draft is one message",
                hint="export one event from MISP and import that",
            )
        parsed = listed[0]
    event = parsed.get("Event", parsed)
    if not isinstance(event, dict):
        raise InteropError("the MISP event is not an object", hint="give MISP's event JSON")
    return event


def load(parsed: dict[str, Any]) -> MISPEvent:
    """The event in PyMISP, refused if an object's template is unknown or PyMISP refuses it."""
    from pymisp import MISPEvent  # noqa: PLC0415
    from pymisp.abstract import resources_path  # noqa: PLC0415

    raw = event_dict(parsed)
    templates = {p.name for p in (resources_path / "misp-objects" / "objects").iterdir()}
    objects = [o for o in raw.get("Object") or [] if isinstance(o, dict)]
    unknown = sorted({str(o.get("name")) for o in objects if o.get("name") not in templates})
    if unknown:
        raise InteropError(
            f"the MISP event has objects of unknown templates: {', '.join(unknown[:MAX_LISTED])}",
            hint="tfshare reads objects of MISP's published templates only; remove these "
            "objects in MISP (or move what matters into attributes) and export again",
        )
    event = MISPEvent()
    try:
        event.from_dict(**raw)
    except Exception as exc:  # PyMISP's own checks (types, categories, fields)
        raise InteropError(
            f"PyMISP cannot load the event ({type(exc).__name__}: {str(exc)[:200]})",
            hint="export it again from MISP in its JSON format",
        ) from None
    return event


def collect(parsed: dict[str, Any], kind: str) -> Collected:
    event = load(parsed)
    c = Collected(kind)
    _tags(c, [t.name for t in event.tags])
    # The event's distribution restricts it whatever its tags: organisation only (0) or a
    # sharing group (4) may not become a CLEAR or GREEN draft for the whole channel, unless
    # no-forward, H2 or H3 (which keep tfshare's own events at 0) already say it goes no further.
    floor = DISTRIBUTION_FLOOR.get(str(getattr(event, "distribution", "")))
    if floor is not None and not c.found.no_forward and c.found.code not in ("H2", "H3"):
        c.found.add_tlp(floor)
    fields: dict[str, str] = {}
    for attribute in event.attributes:
        _attribute(c, attribute, fields)
    for obj in event.objects:
        _object(c, obj)
    c.name = str(event.info) if event.info else None
    c.text = next((fields[n] for n in TEXTS if n in fields), None)
    if "recommended_action" in fields:
        c.notes.append(fields["recommended_action"])
    c.times.update({n: rfc3339(v) for n, v in fields.items() if n in TIMES})
    if "severity" not in c.tagged and int(event.threat_level_id or 4) in THREAT_LEVELS:
        c.tagged["severity"] = THREAT_LEVELS[int(event.threat_level_id)]
        c.filled.append(f"severity: {c.tagged['severity']} (the event's threat level)")
    if kind == "tip" and "received" not in c.times and event.date:
        c.times["received"] = f"{event.date.isoformat()}T00:00:00Z"
        c.filled.append("received: the event's date (the event has no time of receipt)")
    if "possible_victims" in fields:
        try:
            c.possible_victims = json.loads(fields["possible_victims"])
        except ValueError:
            c.no_field("possible_victims that is not the JSON tfshare writes")
    if "handling.code_note" in fields:
        c.found.code_note = fields["handling.code_note"]
    return c


def _handling_tags(c: Collected, names: list[str]) -> list[str]:
    """``read_misp_tags``, refusing a tlp / PAP tag tfshare cannot carry (tlp:ex:chr, ...):
    listing it would drop its restriction, as a STIX marking tfshare cannot carry."""
    others = read_misp_tags(c.found, names)
    uncarried = [t for t in others if t.lower().startswith(("tlp:", "pap:"))]
    if uncarried:
        raise InteropError(
            f"tag {uncarried[0]!r} is not a marking tfshare can carry: its restrictions would "
            "be lost",
            hint="tfshare carries tlp:clear/white, green, amber, amber+strict, red and "
            "PAP:CLEAR/WHITE, GREEN, AMBER, RED; share this content another way",
        )
    return others


def _tags(c: Collected, names: list[str]) -> None:
    admiralty: dict[str, str] = {}
    for tag in _handling_tags(c, names):
        name, _, value = tag.partition("=")
        value = value.strip('"')
        field = name.removeprefix("tfshare:")
        if name == "tfshare:indicator" and INDICATOR_CODE.match(value):
            c.add_code(value)
        elif name.startswith("tfshare:") and field in TAGGED:
            c.tagged[field.replace("-", "_")] = value
        elif name == "tfshare:grading":
            system, _, grade = value.partition(":")
            c.grading = grades.from_written(system, grade)
        elif name.startswith("admiralty-scale:"):
            admiralty[name.removeprefix("admiralty-scale:")] = value.upper()
        elif name not in ("tfshare:kind", "tfshare:sender-compromised"):
            c.no_field(f"tag {tag!r}")
    if c.grading is None and admiralty:
        c.grading = {
            "system": "admiralty-6x6",
            "source": admiralty.get("source-reliability", "F"),
            "information": admiralty.get("information-credibility", "6"),
        }


def _attribute(c: Collected, attribute: MISPAttribute, fields: dict[str, str]) -> None:
    # An attribute's own tags restrict the whole draft (the stricter marking wins).
    for tag in _handling_tags(c, [t.name for t in attribute.tags]):
        c.no_field(f"attribute tag {tag!r}")
    comment = str(attribute.comment or "")
    value = attribute.value
    text = value.isoformat() if hasattr(value, "isoformat") else str(value)
    if comment.startswith("tfshare:entity"):
        match = re.search(r'kind="([a-z-]+)"', comment)
        kind = match.group(1) if match else MISP_ENTITIES.get(str(attribute.type))
        if kind in ENTITY_KINDS:
            entity: dict[str, Any] = {"kind": kind, "value": text}
            if comment.endswith(" hashed"):
                entity["hashed"] = True
            c.entities.append(entity)
            return
    elif comment.startswith("tfshare:"):
        field = comment.removeprefix("tfshare:")
        if field not in ORIGIN_FIELDS:
            fields[field] = text
        return
    if attribute.type in MISP_ENTITIES:
        c.entities.append({"kind": MISP_ENTITIES[str(attribute.type)], "value": text})
        return
    c.no_field(f"attribute {attribute.type} {text[:40]!r}")


def _object(c: Collected, obj: MISPObject) -> None:
    # An object's attributes' tags restrict the whole draft too (the stricter marking wins).
    for attribute in obj.attributes:
        for tag in _handling_tags(c, [t.name for t in attribute.tags]):
            c.no_field(f"object {obj.name} attribute tag {tag!r}")
    if obj.name != "geolocation":
        c.no_field(f"object {obj.name}")
        return
    values = {a.object_relation: a.value for a in obj.attributes}
    found = place(
        values.get("countrycode"),
        values.get("region"),
        values.get("city"),
        _number(values.get("latitude")),
        _number(values.get("longitude")),
    )
    if found is None:
        c.no_field("object geolocation without an ISO 3166 country code")
        return
    c.locations.append(found)
    for relation in sorted(
        set(values) - {"countrycode", "region", "city", "latitude", "longitude"}
    ):
        c.no_field(f"object geolocation: {relation}")


def _number(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
