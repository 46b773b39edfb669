"""Received messages as MISP events (``tfshare export --format misp``, ``misp_feed``).

Owns: the mapping of docs/INTEROP.md, MISP side. One event per message: info from the
title, date from the sending time, threat level from the severity, distribution from the
handling (``markings.misp_distribution``), the sending agency as the creator organisation;
tags from the taxonomies ``tlp``, ``PAP`` and ``admiralty-scale``, and tfshare's own
(``tfshare:...``) for what no taxonomy or galaxy covers (handling codes, no-forward, other
grading systems, the ILO / HTCDS / FinCEN / Polaris indicator codes, severity, category);
attributes for the text, each entity (phone-number, email, url, iban / bank-account-nr,
text), the times, and the message's msg_id, envelope hash and key fingerprint (comments
``tfshare:<field>`` say which field each holds, so ``importing`` can read them back); a
``geolocation`` object per place. Every uuid is derived from the envelope hash.

Pure; PyMISP is imported by the functions that build events.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from tfshare.interop import grading as grades
from tfshare.interop.common import NAMESPACE, Received, headline
from tfshare.interop.markings import (
    handling_of,
    misp_distribution,
    misp_tags,
    refuse_restricted,
)

if TYPE_CHECKING:
    from pymisp import MISPEvent

THREAT_LEVELS: Final = {"critical": 1, "high": 1, "medium": 2, "low": 3}
# Entity kinds as MISP attribute types (describeTypes); account: iban when it is one.
ENTITY_TYPES: Final = {
    "phone": "phone-number",
    "email": "email",
    "ad-url": "url",
    "account": "bank-account-nr",
    "online-handle": "text",
    "vehicle-plate": "text",
    "address": "text",
    "company": "text",
    "person-description": "text",
}
IBAN: Final = re.compile(r"^[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}$")
# The tfshare fields carried as tags (name=value) rather than attributes.
TAG_FIELDS: Final = ("severity", "category", "source_type", "response", "confidence")
ENTITY_COMMENT: Final = "tfshare:entity"


def _uuid(*parts: str) -> str:
    return str(uuid.uuid5(NAMESPACE, "|".join(("misp", *parts))))


def events(messages: Sequence[Received], *, allow_restricted: bool = False) -> list[MISPEvent]:
    """One event per message (a no_forward / H2 / H3 one refused unless ``allow_restricted``)."""
    for message in messages:
        if not allow_restricted:
            refuse_restricted(message.msg_id, handling_of(message.record))
    return [event(m, allow_restricted=True) for m in messages]


def event(message: Received, *, allow_restricted: bool = False) -> MISPEvent:
    """The MISP event of one message."""
    from pymisp import MISPEvent, MISPOrganisation  # noqa: PLC0415

    record = message.record
    handling = handling_of(record)
    if not allow_restricted:
        refuse_restricted(message.msg_id, handling)
    built = MISPEvent()
    built.uuid = _uuid("event", message.env_hash)
    built.info = headline(message, title_of_any_kind=True)
    built.set_date(message.sent.date())
    built.distribution = misp_distribution(handling)
    built.threat_level_id = THREAT_LEVELS.get(str(record.get("severity")), 4)
    built.analysis = 0
    built.published = False  # the agency's MISP publishes it, not the export
    creator = MISPOrganisation()
    creator.name = message.sender
    creator.uuid = _uuid("org", message.sender)
    built.Orgc = creator
    for tag in _tags(message):
        built.add_tag(tag)
    attribute = _attribute_adder(built, message)
    text = record.get("summary") or record.get("context")
    if isinstance(text, str):
        attribute("text", text, "summary" if "summary" in record else "context")
    for name in ("recommended_action",):
        if isinstance(record.get(name), str):
            attribute("text", record[name], name)
    for name in ("received", "expires", "first_seen", "last_seen"):
        if isinstance(record.get(name), str):
            attribute("datetime", record[name], name)
    when = record.get("when")
    if isinstance(when, Mapping):
        for end in ("start", "end"):
            if isinstance(when.get(end), str):
                attribute("datetime", when[end], f"when.{end}")
    victims = record.get("possible_victims")
    if isinstance(victims, Mapping):
        attribute(
            "text", json.dumps(victims, ensure_ascii=False, sort_keys=True), "possible_victims"
        )
    if isinstance(record.get("handling"), Mapping) and isinstance(
        record["handling"].get("code_note"), str
    ):
        attribute("text", record["handling"]["code_note"], "handling.code_note")
    for index, entity in enumerate(_entities(record)):
        _add_entity(built, message, entity, index, "entity" if "entity" in record else "entities")
    for index, place in enumerate(_places(record)):
        _add_place(built, message, place, index)
    attribute("text", message.msg_id, "msg_id", correlate=False)
    attribute("sha256", message.env_hash, "env_hash", correlate=False)
    attribute("text", message.fingerprint, "fingerprint", correlate=False)
    attribute("text", message.schema, "schema", correlate=False)
    for ref in message.refs:
        attribute("text", f"{ref.relation} {ref.msg_id} {ref.env_hash}", "ref", correlate=False)
    if message.warning:
        attribute("text", message.warning, "warning", correlate=False)
    return built


def event_json(built: MISPEvent) -> dict[str, Any]:
    """The event as MISP's JSON format has it (``{"Event": {...}}``)."""
    data: dict[str, Any] = json.loads(built.to_json())
    return {"Event": data}


def _attribute_adder(built: MISPEvent, message: Received) -> Any:
    counter = [0]

    def add(kind: str, value: str, field: str, *, correlate: bool = True) -> None:
        counter[0] += 1
        built.add_attribute(
            kind,
            value,
            comment=f"tfshare:{field}",
            uuid=_uuid("attribute", message.env_hash, str(counter[0])),
            to_ids=False,
            disable_correlation=not correlate,
            distribution=5,  # inherit the event's
        )

    return add


def _tags(message: Received) -> list[str]:
    record = message.record
    tags = misp_tags(handling_of(record))
    grading = record.get("grading")
    if isinstance(grading, Mapping):
        tags.extend(grades.misp_tags(grading))
    tags.append(f'tfshare:kind="{message.kind or message.subject}"')
    for name in TAG_FIELDS:
        if isinstance(record.get(name), str):
            tags.append(f'tfshare:{name.replace("_", "-")}="{record[name]}"')
    for code in record.get("indicators") or []:
        if isinstance(code, str):
            tags.append(f'tfshare:indicator="{code}"')
    if message.warning:
        tags.append("tfshare:sender-compromised")
    return tags


def _entities(record: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    found = [e for e in record.get("entities") or [] if isinstance(e, Mapping)]
    if isinstance(record.get("entity"), Mapping):
        found.append(record["entity"])
    return found


def _places(record: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    found = [("locations", p) for p in record.get("locations") or [] if isinstance(p, Mapping)]
    if isinstance(record.get("where"), Mapping):
        found.insert(0, ("where", record["where"]))
    return found


def entity_type(entity: Mapping[str, Any]) -> str:
    kind, value = str(entity.get("kind")), str(entity.get("value"))
    if entity.get("hashed") is True:
        return "text"
    if kind == "account" and IBAN.match(value.replace(" ", "")):
        return "iban"
    if kind == "email" and "@" not in value:
        return "text"
    return ENTITY_TYPES.get(kind, "text")


def _add_entity(
    built: MISPEvent, message: Received, entity: Mapping[str, Any], index: int, field: str
) -> None:
    hashed = entity.get("hashed") is True
    kind = str(entity.get("kind"))
    built.add_attribute(
        entity_type(entity),
        str(entity.get("value")),
        comment=f'{ENTITY_COMMENT}:{field} kind="{kind}"' + (" hashed" if hashed else ""),
        uuid=_uuid("entity", message.env_hash, str(index)),
        to_ids=False,
        distribution=5,
    )


def _add_place(
    built: MISPEvent, message: Received, place: tuple[str, Mapping[str, Any]], index: int
) -> None:
    from pymisp import MISPObject  # noqa: PLC0415

    field, where = place
    geo = MISPObject("geolocation", standalone=False)
    geo.uuid = _uuid("place", message.env_hash, str(index))
    geo.comment = f"tfshare:{field}"
    geo.distribution = 5
    values: list[tuple[str, Any]] = [("countrycode", str(where.get("country")))]
    if isinstance(where.get("region"), str):
        values.append(("region", where["region"]))
    if isinstance(where.get("place"), str):
        values.append(("city", where["place"]))
    if isinstance(where.get("lat"), int | float) and isinstance(where.get("lon"), int | float):
        values += [("latitude", where["lat"]), ("longitude", where["lon"])]
    for relation, value in values:
        geo.add_attribute(
            relation, value=value, uuid=_uuid("place", message.env_hash, str(index), relation)
        )
    built.add_object(geo)
