"""Hand-written msgspec Structs of the same shape as tf.alert/1 and tf.tip_summary/1.

The comparison point for the registry's generated types in ``make bench``: what a developer
would write by hand for one message type. bench/run.py checks (with the registry's own
admission check) that they validate exactly what the shipped documents say before timing.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from tfshare.registry.profile import DATE_TIME_PATTERN

DateTime = Annotated[str, msgspec.Meta(pattern=DATE_TIME_PATTERN)]
Indicator = Annotated[
    str, msgspec.Meta(pattern=r"^(ilo|htcds|fincen|polaris):[a-z0-9][a-z0-9:.-]{0,62}\Z")
]
Short = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=4000)]
Unset = msgspec.UnsetType


class Base(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    pass


class Handling(Base, kw_only=True):
    tlp: Literal["CLEAR", "GREEN", "AMBER", "AMBER+STRICT", "RED"]
    pap: Literal["CLEAR", "GREEN", "AMBER", "RED"] = "AMBER"
    code: Literal["H0", "H1", "H2", "H3"] = "H1"
    code_note: Unset | Annotated[str, msgspec.Meta(min_length=1, max_length=500)] = msgspec.UNSET
    no_forward: bool = False


class Admiralty(Base, kw_only=True, tag_field="system", tag="admiralty-6x6"):
    source: Literal["A", "B", "C", "D", "E", "F", "G"]
    information: Literal["1", "2", "3", "4", "5", "6"]


class Europol(Base, kw_only=True, tag_field="system", tag="europol-4x4"):
    source: Literal["A", "B", "C", "X"]
    information: Literal["1", "2", "3", "4"]


class UK(Base, kw_only=True, tag_field="system", tag="uk-3x5x2"):
    source: Literal["1", "2", "3"]
    intelligence: Literal["A", "B", "C", "D", "E"]
    handling: Literal["P", "C"]


class Location(Base, kw_only=True):
    country: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{2}\Z")]
    region: Unset | Short = msgspec.UNSET
    place: Unset | Short = msgspec.UNSET
    lat: Unset | Annotated[float, msgspec.Meta(ge=-90, le=90)] = msgspec.UNSET
    lon: Unset | Annotated[float, msgspec.Meta(ge=-180, le=180)] = msgspec.UNSET


class TimeWindow(Base, kw_only=True):
    start: DateTime
    end: Unset | DateTime = msgspec.UNSET


class Entity(Base, kw_only=True):
    kind: Literal[
        "phone",
        "account",
        "vehicle-plate",
        "online-handle",
        "ad-url",
        "email",
        "address",
        "company",
        "person-description",
    ]
    value: Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]
    hashed: bool = False


class Alert(Base, kw_only=True):
    title: Short
    summary: Text
    severity: Literal["low", "medium", "high", "critical"]
    category: Literal[
        "sexual-exploitation",
        "labour-exploitation",
        "forced-criminality",
        "forced-marriage",
        "domestic-servitude",
        "organ-removal",
        "child-trafficking",
        "other",
    ]
    where: Location
    when: Unset | TimeWindow = msgspec.UNSET
    entities: Annotated[list[Entity], msgspec.Meta(max_length=100)] = []
    indicators: Annotated[list[Indicator], msgspec.Meta(max_length=50)] = []
    handling: Handling
    grading: Admiralty | Europol | UK
    response: Literal["urgent-8h", "urgent-3d", "7d", "none"] = "none"
    expires: Unset | DateTime = msgspec.UNSET


class PossibleVictims(Base, kw_only=True):
    count: Annotated[int, msgspec.Meta(ge=0, le=100_000)]
    age_bands: Annotated[
        list[Literal["0-12", "13-17", "18-24", "25-39", "40+", "unknown"]],
        msgspec.Meta(max_length=6),
    ] = []
    needs: Annotated[list[Short], msgspec.Meta(max_length=20)] = []


class TipSummary(Base, kw_only=True):
    source_type: Literal["hotline", "community", "ngo-outreach", "online", "financial"]
    received: DateTime
    summary: Text
    locations: Annotated[list[Location], msgspec.Meta(max_length=20)] = []
    indicators: Annotated[list[Indicator], msgspec.Meta(max_length=50)] = []
    possible_victims: Unset | PossibleVictims = msgspec.UNSET
    recommended_action: Unset | Text = msgspec.UNSET
    handling: Handling
    grading: Admiralty | Europol | UK
