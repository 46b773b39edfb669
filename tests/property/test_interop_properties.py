"""Properties of tfshare.interop over hypothesis-generated messages (every body valid under
its shipped schema): every STIX bundle passes stix2-validator with no error; every MISP
event loads in PyMISP's MISPEvent and round-trips; export then import gives the body back
(its handling's defaults spelled out); a no_forward or H2 message never leaves without
--allow-restricted, and with it its markings travel."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pymisp import MISPEvent
from stix2validator import ValidationOptions, validate_instance
from tfkit import SCHEMAS

from tfshare.interop import importing, misp_export, stix_export
from tfshare.interop.common import HandlingRefused, LineageRef, Received
from tfshare.interop.exporting import render
from tfshare.interop.markings import handling_of, restrictions

SCHEMA_OF = {"alert": "tf.alert/1", "red-flag": "tf.red_flag/1", "tip": "tf.tip_summary/1"}
# No shrinking: each step re-runs the validator or PyMISP, and a failure as generated is
# readable enough (the body is small).
SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)

# Text as people type it, quotes, backslashes, newlines and any script included.
text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\x00"),
    min_size=1,
    max_size=40,
).filter(lambda s: s.strip() == s and s.strip())
times = st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2099, 12, 31)).map(
    lambda d: d.replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
)
codes = st.from_regex(r"(ilo|htcds|fincen|polaris):[a-z0-9][a-z0-9:.-]{0,20}", fullmatch=True)
kinds_of_entity = st.sampled_from(
    ["phone", "account", "vehicle-plate", "online-handle", "ad-url", "email", "address",
     "company", "person-description"]
)  # fmt: skip


@st.composite
def handling(draw: st.DrawFn) -> dict[str, Any]:
    block: dict[str, Any] = {
        "tlp": draw(st.sampled_from(["CLEAR", "GREEN", "AMBER", "AMBER+STRICT", "RED"]))
    }
    if draw(st.booleans()):
        block["pap"] = draw(st.sampled_from(["CLEAR", "GREEN", "AMBER", "RED"]))
    if draw(st.booleans()):
        block["code"] = draw(st.sampled_from(["H0", "H1", "H2", "H3"]))
        if block["code"] == "H3" and draw(st.booleans()):
            block["code_note"] = draw(text)
    if draw(st.booleans()):
        block["no_forward"] = draw(st.booleans())
    return block


grading = st.one_of(
    st.fixed_dictionaries(
        {
            "system": st.just("admiralty-6x6"),
            "source": st.sampled_from("ABCDEFG"),
            "information": st.sampled_from("123456"),
        }
    ),
    st.fixed_dictionaries(
        {
            "system": st.just("europol-4x4"),
            "source": st.sampled_from("ABCX"),
            "information": st.sampled_from("1234"),
        }
    ),
    st.fixed_dictionaries(
        {
            "system": st.just("uk-3x5x2"),
            "source": st.sampled_from("123"),
            "intelligence": st.sampled_from("ABCDE"),
            "handling": st.sampled_from("PC"),
        }
    ),
)
entity = st.one_of(
    st.fixed_dictionaries(
        {"kind": kinds_of_entity, "value": text}, optional={"hashed": st.just(True)}
    ),
    # values the standard observables take (email-addr, url), and some they do not
    st.fixed_dictionaries({"kind": st.just("email"), "value": st.emails()}),
    st.fixed_dictionaries(
        {
            "kind": st.just("ad-url"),
            "value": st.from_regex(
                r"https?://[a-z0-9.-]{1,20}(/[a-zA-Z0-9_.~%-]{0,20})?", fullmatch=True
            ),
        }
    ),
)
location = st.fixed_dictionaries(
    {"country": st.from_regex(r"[A-Z]{2}", fullmatch=True)},
    optional={"region": text, "place": text},
)
located = st.one_of(
    location,
    st.builds(
        lambda p, lat, lon: {**p, "lat": lat, "lon": lon},
        location,
        st.floats(-90, 90, allow_nan=False),
        st.floats(-180, 180, allow_nan=False),
    ),
)


def unique(strategy: st.SearchStrategy[str], low: int, high: int) -> st.SearchStrategy[list[str]]:
    return st.lists(strategy, min_size=low, max_size=high, unique=True)


alerts = st.fixed_dictionaries(
    {
        "title": text,
        "summary": text,
        "severity": st.sampled_from(["low", "medium", "high", "critical"]),
        "category": st.sampled_from(["sexual-exploitation", "child-trafficking", "other"]),
        "where": located,
        "handling": handling(),
        "grading": grading,
    },
    optional={
        "when": st.fixed_dictionaries({"start": times}, optional={"end": times}),
        "entities": st.lists(entity, max_size=3),
        "indicators": unique(codes, 0, 3),
        "response": st.sampled_from(["urgent-8h", "urgent-3d", "7d", "none"]),
        "expires": times,
    },
)
red_flags = st.fixed_dictionaries(
    {
        "indicators": unique(codes, 1, 3),
        "entity": entity,
        "context": text,
        "confidence": st.sampled_from(["low", "medium", "high"]),
        "handling": handling(),
        "grading": grading,
    },
    optional={"first_seen": times, "last_seen": times},
)
tips = st.fixed_dictionaries(
    {
        "source_type": st.sampled_from(
            ["hotline", "community", "ngo-outreach", "online", "financial"]
        ),
        "received": times,
        "summary": text,
        "handling": handling(),
        "grading": grading,
    },
    optional={
        "locations": st.lists(located, max_size=3),
        "indicators": unique(codes, 0, 3),
        "possible_victims": st.fixed_dictionaries(
            {"count": st.integers(0, 100_000)},
            optional={
                "age_bands": unique(st.sampled_from(["0-12", "13-17", "18-24", "unknown"]), 0, 4),
                "needs": st.lists(text, max_size=3),
            },
        ),
        "recommended_action": text,
    },
)
BODIES: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "alert": alerts,
    "red-flag": red_flags,
    "tip": tips,
}


@st.composite
def messages(draw: st.DrawFn) -> Received:
    kind = draw(st.sampled_from(sorted(BODIES)))
    body = draw(BODIES[kind])
    schema = SCHEMAS.lookup(SCHEMA_OF[kind])
    assert schema is not None
    schema.from_json(json.dumps(body).encode())  # the generator makes valid bodies only
    n = draw(st.integers(1, 2**64))
    refs = draw(
        st.lists(
            st.builds(
                LineageRef,
                st.sampled_from(["reshare", "escalate", "amend", "merge", "retract", "reply"]),
                st.binary(min_size=16, max_size=16).map(bytes.hex),
                st.binary(min_size=32, max_size=32).map(bytes.hex),
            ),
            max_size=2,
        )
    )
    return Received(
        sender=draw(st.from_regex(r"[a-z][a-z0-9-]{0,15}", fullmatch=True)),
        fingerprint=draw(st.from_regex(r"[0-9a-f]{16}", fullmatch=True)),
        msg_id=f"{n % 2**128:032x}",
        env_hash=f"{n:064x}",
        ts_ms=draw(st.integers(946_684_800_000, 4_000_000_000_000)),
        channel="alerts",
        schema=SCHEMA_OF[kind],
        record=body,
        refs=tuple(refs),
    )


def as_published(body: dict[str, Any]) -> dict[str, Any]:
    """A body as it means: an empty list left out (the schema's default, said or not), the
    handling's defaults spelled out, a RED message never forwardable (as publish makes it)."""
    body = {k: v for k, v in json.loads(json.dumps(body)).items() if v != []}
    if isinstance(body.get("possible_victims"), dict):
        body["possible_victims"] = {k: v for k, v in body["possible_victims"].items() if v != []}
    handling = handling_of(body).as_body()
    handling["no_forward"] = handling["no_forward"] or handling["tlp"] == "RED"
    body["handling"] = handling
    return body


@pytest.mark.slow
@SETTINGS
@given(st.lists(messages(), min_size=1, max_size=3))
def test_every_exported_bundle_passes_stix2_validator(batch: list[Received]) -> None:
    bundle = stix_export.bundle(batch, allow_restricted=True)
    result = validate_instance(bundle, ValidationOptions(version="2.1"))
    assert [str(e) for e in result.errors] == []


@pytest.mark.slow
@SETTINGS
@given(messages())
def test_every_misp_event_loads_in_pymisp_and_round_trips(message: Received) -> None:
    text = misp_export.event(message, allow_restricted=True).to_json()
    again = MISPEvent()
    again.load(text)
    assert json.loads(again.to_json()) == json.loads(text)


@pytest.mark.slow
@SETTINGS
@given(messages(), st.sampled_from(["stix", "misp"]))
def test_export_then_import_gives_the_body_back(message: Received, fmt: str) -> None:
    if fmt == "stix":
        exported: dict[str, Any] = stix_export.bundle([message], allow_restricted=True)
    else:
        exported = misp_export.event_json(misp_export.event(message, allow_restricted=True))
    schema = SCHEMAS.lookup(message.schema)
    assert schema is not None and message.kind is not None
    back = importing.draft(json.dumps(exported).encode(), message.kind, schema.document)
    assert as_published(back.body) == as_published(dict(message.record))
    assert back.missing == []


@pytest.mark.slow
@SETTINGS
@given(messages())
def test_a_restricted_message_leaves_only_with_the_flag_and_its_markings(message: Received) -> None:
    handling = handling_of(message.record)
    restricted = bool(restrictions(handling))
    for fmt in ("stix", "misp"):
        if restricted:
            with pytest.raises(HandlingRefused):
                render([message], fmt, allow_restricted=False)
        else:
            render([message], fmt, allow_restricted=False)
    bundle = stix_export.bundle([message], allow_restricted=True)
    names = {o.get("name") for o in bundle["objects"] if o["type"] == "marking-definition"}
    assert f"TLP:{handling.tlp}" in names
    assert f"Handling code {handling.code}" in names
    assert ("tfshare no-forward: do not pass on" in names) == handling.no_forward
    tags = {t.name for t in misp_export.event(message, allow_restricted=True).tags}
    assert ("tfshare:no-forward" in tags) == handling.no_forward
    assert f'tfshare:handling-code="{handling.code}"' in tags
