"""What an imported file says, in one neutral form, and the body of each kind made of it.

Owns: ``Collected`` (what the STIX and the MISP readers found: texts, tagged values,
indicator codes, entities, places, times, grading, markings, and what did not map) and
``shape``, which puts it where the kind's schema has it; the vocabulary and entity checks
both readers share.

Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from tfshare.interop import grading as grades
from tfshare.interop.common import parse_time, stix_time
from tfshare.interop.markings import FoundHandling

INDICATOR_CODE: Final = re.compile(r"^(ilo|htcds|fincen|polaris):[a-z0-9][a-z0-9:.-]{0,62}$")
COUNTRY: Final = re.compile(r"^[A-Za-z]{2}$")
ENTITY_KINDS: Final = (
    "phone", "account", "vehicle-plate", "online-handle", "ad-url", "email", "address",
    "company", "person-description",
)  # fmt: skip
TIMES: Final = ("received", "expires", "first_seen", "last_seen", "when.start", "when.end")
UNGRADED: Final = {"system": "admiralty-6x6", "source": "F", "information": "6"}


@dataclass
class Collected:
    """Everything a reader took from a file, before it is shaped into a body."""

    kind: str
    found: FoundHandling = field(default_factory=FoundHandling)
    name: str | None = None
    text: str | None = None  # summary or context
    tagged: dict[str, str] = field(default_factory=dict)  # severity, category, response, ...
    codes: list[str] = field(default_factory=list)
    entities: list[dict[str, Any]] = field(default_factory=list)
    locations: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # recommended action
    times: dict[str, str] = field(default_factory=dict)
    possible_victims: Any = None
    link_confidence: int | None = None  # a STIX indicator's confidence (0-100)
    grading: dict[str, Any] | None = None
    unmapped: list[str] = field(default_factory=list)
    filled: list[str] = field(default_factory=list)

    def add_code(self, code: str) -> None:
        if code not in self.codes:
            self.codes.append(code)

    def no_field(self, what: str) -> None:
        self.unmapped.append(f"{what}: no field in a {self.kind}")


def rfc3339(text: str) -> str:
    """A date-time as the bodies write it: UTC, Z, seconds (milliseconds if any)."""
    parsed = parse_time(text)
    return stix_time(parsed).replace(".000Z", "Z") if parsed is not None else text


def shape(c: Collected) -> dict[str, Any]:
    """The body of ``c.kind`` (without handling: ``importing`` settles it)."""
    body: dict[str, Any] = {}
    if c.grading is None:
        c.grading = dict(UNGRADED)
        c.filled.append(
            "grading: admiralty F6 (the source grades nothing: reliability and truth "
            "cannot be judged)"
        )
    body["grading"] = c.grading
    if c.kind == "alert":
        _alert(c, body)
    elif c.kind == "red-flag":
        _red_flag(c, body)
    else:
        _tip(c, body)
    exported = c.name is not None and c.name.startswith(("Red flag: ", "Tip summary ("))
    if c.name and c.kind != "alert" and not exported:
        c.no_field(f"name {c.name[:60]!r}")
    return body


def _alert(c: Collected, body: dict[str, Any]) -> None:
    if c.name:
        body["title"] = c.name[:200]
    if c.text:
        body["summary"] = c.text
    for name in ("severity", "category", "response"):
        if name in c.tagged:
            body[name] = c.tagged[name]
    if c.locations:
        body["where"] = c.locations[0]
        c.unmapped += [
            f"place {p['country']}: an alert has one place (where)" for p in c.locations[1:]
        ]
    if c.entities:
        body["entities"] = c.entities
    if c.codes:
        body["indicators"] = c.codes
    if "when.start" in c.times:
        body["when"] = {"start": c.times["when.start"]}
        if "when.end" in c.times:
            body["when"]["end"] = c.times["when.end"]
    if "expires" in c.times:
        body["expires"] = c.times["expires"]
    for note in c.notes:
        c.no_field(f"note {note[:60]!r}")


def _red_flag(c: Collected, body: dict[str, Any]) -> None:
    if c.text:
        body["context"] = c.text
    if c.codes:
        body["indicators"] = c.codes
    if c.entities:
        body["entity"] = c.entities[0]
        c.unmapped += [
            f"entity {e['kind']}: a red flag is about one entity" for e in c.entities[1:]
        ]
    for name in ("first_seen", "last_seen"):
        if name in c.times:
            body[name] = c.times[name]
    if "confidence" in c.tagged:
        body["confidence"] = c.tagged["confidence"]
    elif c.link_confidence is not None:
        body["confidence"] = grades.link_confidence(c.link_confidence)
        c.filled.append(
            f"confidence: {body['confidence']} (STIX confidence {c.link_confidence}, Annex A)"
        )
    for place in c.locations:
        c.no_field(f"place {place['country']}")
    for note in c.notes:
        c.no_field(f"note {note[:60]!r}")


def _tip(c: Collected, body: dict[str, Any]) -> None:
    if c.text:
        body["summary"] = c.text
    if "source_type" in c.tagged:
        body["source_type"] = c.tagged["source_type"]
    if "received" in c.times:
        body["received"] = c.times["received"]
    if c.locations:
        body["locations"] = c.locations
    if c.codes:
        body["indicators"] = c.codes
    if c.possible_victims is not None:
        body["possible_victims"] = c.possible_victims
    if c.notes:
        body["recommended_action"] = "\n\n".join(c.notes)
    for entity in c.entities:
        c.no_field(f"entity {entity['kind']}")


def take_original(c: Collected, original: Mapping[str, Any]) -> None:
    """Fields STIX has no native place for, from the original body a tfshare bundle carries
    (its report's extension), where the bundle itself said nothing."""
    taken = []
    for name in ("expires", "received"):
        if isinstance(original.get(name), str) and name not in c.times:
            c.times[name] = original[name]
            taken.append(name)
    # A red flag's sightings: observed data repeats them only for some entities, and gives a
    # last sighting even when none was written; the original says exactly what was.
    for name in ("first_seen", "last_seen"):
        if isinstance(original.get(name), str):
            c.times[name] = original[name]
        else:
            c.times.pop(name, None)
    when = original.get("when")
    if isinstance(when, Mapping) and "when.start" not in c.times:
        for end in ("start", "end"):
            if isinstance(when.get(end), str):
                c.times[f"when.{end}"] = when[end]
        taken.append("when")
    for name in ("response", "confidence", "source_type"):
        if isinstance(original.get(name), str) and name not in c.tagged:
            c.tagged[name] = original[name]
            taken.append(name)
    if original.get("possible_victims") is not None and c.possible_victims is None:
        c.possible_victims = original["possible_victims"]
        taken.append("possible_victims")
    if isinstance(original.get("grading"), Mapping):
        c.grading = dict(original["grading"])
        taken.append("grading")
    c.filled += [f"{name}: from the tfshare extension (the original message)" for name in taken]


def place(country: Any, region: Any, city: Any, lat: Any, lon: Any) -> dict[str, Any] | None:
    """A tfshare place, or None without an ISO 3166 country (which a place needs)."""
    if not isinstance(country, str) or not COUNTRY.match(country):
        return None
    found: dict[str, Any] = {"country": country.upper()}
    if isinstance(region, str) and region:
        found["region"] = region
    if isinstance(city, str) and city:
        found["place"] = city
    if isinstance(lat, int | float) and isinstance(lon, int | float):
        found["lat"], found["lon"] = lat, lon
    return found
