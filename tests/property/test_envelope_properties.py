"""Property tests of sealed envelopes: round trips to any audience, and tampering refused.

One task force of twelve member agencies (plus the coordinator, plus one outsider with keys but
no membership) is built once per module; every agency may read "alerts", police and labour
write it. Randomness and the clock are fixed per example, so every failure replays exactly.
"""

from __future__ import annotations

import json
from typing import Any, Final

import msgspec
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from tfkit import NOW_MS, REPO, DeterministicRng, build_taskforce, identity

from tfshare import roster as R
from tfshare.encoding import MAX_UINT, encode
from tfshare.envelope import MAX_RECIPIENTS
from tfshare.errors import RejectCode, ValidationError
from tfshare.keys import Identity
from tfshare.protocol import Delivered, Outcome, Receiver, Rejection
from tfshare.registry.schema import Schema
from tfshare.replay import MemoryReplayStore
from tfshare.seal import ReceivePolicy, Recipient, Sealed, seal, seal_to

MEMBERS: Final = (
    "police",
    "ngo",
    "labour",
    "customs",
    "immigration",
    "prosecutor",
    "shelter",
    "hotline",
    "bank",
    "municipality",
    "port-authority",
    "inspectorate",
)
TF: Final = build_taskforce(members=MEMBERS)
TRUSTED: Final = TF.trusted()
READERS: Final = tuple(TRUSTED.channels["alerts"].readers)  # coord and the twelve members
WRITERS: Final = tuple(TRUSTED.channels["alerts"].writers)  # police and labour
EVERYONE: Final = (*READERS, "outsider")
_alert_type = TF.schemas.lookup("tf.alert/1")
assert _alert_type is not None
ALERT: Final[Schema] = _alert_type
# The strategies below read their value sets from the schema file itself, so a new enum value
# or grading system in schemas/tf.alert/1.json is generated without touching this module.
ALERT_DOC: Final[dict[str, Any]] = json.loads(
    (REPO / "schemas" / "tf.alert" / "1.json").read_bytes()
)
assert ALERT.document == ALERT_DOC

# Every envelope-level code of the receiver's table (envelope.md), none of the roster codes.
ENVELOPE_CODES: Final = frozenset(RejectCode) - {c for c in RejectCode if "ROSTER" in c.name}
# A modified envelope can never carry a valid signature, so it must be refused at or before
# check 5: the codes of checks 7-9 (and replay) would mean tampered bytes got past the signature.
TAMPER_CODES: Final = frozenset(
    {
        RejectCode.E_TOO_LARGE,
        RejectCode.E_MALFORMED,
        RejectCode.E_NONCANONICAL,
        RejectCode.E_VERSION,
        RejectCode.E_CHANNEL,
        RejectCode.E_STALE,
        RejectCode.E_FUTURE,
        RejectCode.E_UNKNOWN_SENDER,
        RejectCode.E_REVOKED,
        RejectCode.E_NOT_AUTHORIZED,
        RejectCode.E_EPOCH,
        RejectCode.E_BAD_SIG,
    }
)
assert TAMPER_CODES <= ENVELOPE_CODES


def receiver(agency: str) -> Receiver:
    """A fresh receiver (empty replay store) for ``agency`` over the module's roster."""
    return Receiver(
        identity=TF.ids[agency],
        roster=TRUSTED,
        replay=MemoryReplayStore(),
        schemas=TF.schemas,
        clock=lambda: NOW_MS,
        policy=ReceivePolicy(),
    )


def alert_record(value: dict[str, Any]) -> object:
    """A tf.alert/1 record from a plain dict, through the strict JSON path senders use."""
    return ALERT.from_json(json.dumps(value).encode())


def as_published(received: object) -> object:
    """A received (tolerant receive type) record as the strict publish type, for comparing."""
    return alert_record(json.loads(msgspec.json.encode(received)))


def seal_alert(record: object, *, sender: str, to: list[str], seed: bytes) -> Sealed:
    return seal(
        identity=TF.ids[sender],
        roster=TRUSTED,
        channel="alerts",
        to=to,
        schema=ALERT,
        body=ALERT.to_body(record),
        seq=1,
        now_ms=NOW_MS,
        rng=DeterministicRng(seed),
    )


def flip(data: bytes, position: int, xor: int) -> bytes:
    out = bytearray(data)
    out[position] ^= xor
    return bytes(out)


def is_tamper_rejection(outcome: Outcome) -> bool:
    return isinstance(outcome, Rejection) and outcome.code in TAMPER_CODES


# ---------------------------------------------------------------------------------------------
# Strategies: plain dicts valid under schemas/tf.alert/1.json


def _schema_at(*path: str) -> dict[str, Any]:
    """The schema at ``path`` in the alert document, following a $ref if it is one."""
    node: Any = ALERT_DOC
    for key in path:
        node = node[key]
    if "$ref" in node:
        node = ALERT_DOC["$defs"][node["$ref"].removeprefix("#/$defs/")]
    assert isinstance(node, dict)
    return node


def _enum(*path: str) -> tuple[str, ...]:
    return tuple(_schema_at(*path)["enum"])


def _code(prop: dict[str, Any]) -> st.SearchStrategy[str]:
    return st.just(prop["const"]) if "const" in prop else st.sampled_from(prop["enum"])


_short_text = st.text(min_size=1, max_size=200)
_datetimes = st.builds(
    "{:04d}-{:02d}-{:02d}T{:02d}:{:02d}:{:02d}Z".format,
    st.integers(2000, 2099),
    st.integers(1, 12),
    st.integers(1, 28),
    st.integers(0, 23),
    st.integers(0, 59),
    st.integers(0, 59),
)
_indicators = st.builds(
    "{}:{}".format,
    st.sampled_from(("ilo", "htcds", "fincen", "polaris")),
    st.from_regex(r"[a-z0-9][a-z0-9:.-]{0,62}", fullmatch=True),
)
_entities = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(_enum("$defs", "entity", "properties", "kind")),
        "value": st.text(min_size=1, max_size=120),
    },
    optional={"hashed": st.booleans()},
)
_locations = st.fixed_dictionaries(
    {"country": st.from_regex(r"[A-Z]{2}", fullmatch=True)},
    optional={
        "region": _short_text,
        "place": _short_text,
        "lat": st.floats(-90, 90),
        "lon": st.floats(-180, 180),
    },
)
_handling = st.fixed_dictionaries(
    {"tlp": st.sampled_from(_enum("$defs", "handling", "properties", "tlp"))},
    optional={
        "pap": st.sampled_from(_enum("$defs", "handling", "properties", "pap")),
        "code": st.sampled_from(_enum("$defs", "handling", "properties", "code")),
        "code_note": st.text(min_size=1, max_size=500),
        "no_forward": st.booleans(),
    },
)
# One strategy per grading system (each variant of the oneOf; all their properties required).
_gradings = st.one_of(
    [
        st.fixed_dictionaries(
            {name: _code(prop) for name, prop in _schema_at("$defs", ref)["properties"].items()}
        )
        for ref in (
            v["$ref"].removeprefix("#/$defs/") for v in _schema_at("$defs", "grading")["oneOf"]
        )
    ]
)
_windows = st.fixed_dictionaries({"start": _datetimes}, optional={"end": _datetimes})

alerts: Final = st.fixed_dictionaries(
    {
        "title": _short_text,
        "summary": st.text(min_size=1, max_size=1000),
        "severity": st.sampled_from(_enum("properties", "severity")),
        "category": st.sampled_from(_enum("properties", "category")),
        "where": _locations,
        "handling": _handling,
        "grading": _gradings,
    },
    optional={
        "when": _windows,
        "entities": st.lists(_entities, max_size=6),
        "indicators": st.lists(_indicators, max_size=6),
        "response": st.sampled_from(_enum("properties", "response")),
        "expires": _datetimes,
    },
)
recipient_lists: Final = st.lists(st.sampled_from(READERS), min_size=1, unique=True)
seeds: Final = st.binary(min_size=1, max_size=16)


@given(value=alerts)
def test_generated_alerts_are_valid(value: dict[str, Any]) -> None:
    """Every generated dict is a valid tf.alert/1 body (the strategies match the schema)."""
    record = alert_record(value)
    assert isinstance(record, ALERT.types.publish)
    assert alert_record(json.loads(msgspec.json.encode(record))) == record


def test_grading_strategy_covers_every_system() -> None:
    """The grading strategy has one branch per system, each filling every (required) field."""
    variants = [
        _schema_at("$defs", v["$ref"].removeprefix("#/$defs/"))
        for v in _schema_at("$defs", "grading")["oneOf"]
    ]
    assert {v["properties"]["system"]["const"] for v in variants} == {
        "admiralty-6x6",
        "europol-4x4",
        "uk-3x5x2",
    }
    for variant in variants:
        assert set(variant["required"]) == set(variant["properties"])


# ---------------------------------------------------------------------------------------------
# 1. Round trips


@given(value=alerts, to=recipient_lists, sender=st.sampled_from(WRITERS), seed=seeds)
def test_every_chosen_recipient_opens_the_sealed_record(
    value: dict[str, Any], to: list[str], sender: str, seed: bytes
) -> None:
    """Each named recipient gets Delivered with the exact record and the full recipient list."""
    record = alert_record(value)
    sealed = seal_alert(record, sender=sender, to=to, seed=seed)
    for agency in to:
        outcome = receiver(agency).receive(sealed.data)
        assert isinstance(outcome, Delivered), (agency, outcome)
        received = outcome.message.record
        assert isinstance(received, ALERT.types.receive)
        # The tolerant receive type is another class: compare field by field, strictly.
        assert as_published(received) == record
        assert outcome.message.sender == sender
        assert sorted(outcome.message.recipients) == sorted(to)


@given(value=alerts, to=recipient_lists, sender=st.sampled_from(WRITERS), seed=seeds)
def test_every_other_agency_gets_not_recipient(
    value: dict[str, Any], to: list[str], sender: str, seed: bytes
) -> None:
    """Members left out, and an outsider, are refused with E_NOT_RECIPIENT."""
    sealed = seal_alert(alert_record(value), sender=sender, to=to, seed=seed)
    for agency in set(EVERYONE) - set(to):
        outcome = receiver(agency).receive(sealed.data)
        assert isinstance(outcome, Rejection), (agency, outcome)
        assert outcome.code is RejectCode.E_NOT_RECIPIENT, (agency, outcome)


MANY: Final = [identity(f"r{i:03d}") for i in range(MAX_RECIPIENTS + 1)]


def member_of(ident: Identity, role: R.Role) -> R.Member:
    card = ident.card_body()
    return R.Member(
        agency_id=card.agency_id,
        display_name=card.display_name,
        roles=[role],
        sign_keys=[R.KeyValidity(card.sign_pk, card.created_ms, MAX_UINT)],
        enc_key=R.KeyValidity(card.enc_pk, card.created_ms, MAX_UINT),
        enc_self_sig=card.enc_bind_sig,
        nats_user=card.nats_user,
        status="active",
    )


def big_taskforce() -> R.TrustedRoster:
    """A roster in which all 257 generated agencies read "alerts" (built in one edit: adding
    them one by one re-verifies the whole roster each time)."""
    coord, police = TF.ids["coord"], TF.ids["police"]
    readers = [i.agency_id for i in MANY]
    roster = R.Roster(
        v=1,
        taskforce=TRUSTED.taskforce,
        seq=1,
        issued_ms=NOW_MS - 3_600_000,
        expires_ms=NOW_MS + 30 * R.DAY_MS,
        threshold=1,
        coordinators=["coord"],
        members=[member_of(coord, "coordinator"), member_of(police, "member")]
        + [member_of(i, "member") for i in MANY],
        channels=[R.Channel("alerts", readers, ["police"], 1, 1, [])],
        revoked=[],
    )
    signed = R.sign(R.SignedRoster(roster=R.encode_roster(roster), sigs=[]), coord)
    trusted, _ = R.verify_roster(
        encode(signed), anchor=R.anchor_of(roster), state=None, now_ms=NOW_MS
    )
    return trusted


BIG: Final = big_taskforce()
EXAMPLE_RECORD: Final = alert_record(
    {
        "title": "t",
        "summary": "s",
        "severity": "low",
        "category": "other",
        "where": {"country": "NL"},
        "handling": {"tlp": "GREEN"},
        "grading": {"system": "admiralty-6x6", "source": "A", "information": "1"},
    }
)
EXAMPLE_BODY: Final = ALERT.to_body(EXAMPLE_RECORD)


def seal_to_many(count: int) -> Sealed:
    return seal_to(
        identity=TF.ids["police"],
        taskforce=BIG.taskforce,
        channel="alerts",
        roster_seq=BIG.seq,
        recipients=[Recipient(i.agency_id, i.enc_pk) for i in MANY[:count]],
        schema=ALERT,
        body=EXAMPLE_BODY,
        seq=1,
        now_ms=NOW_MS,
        rng=DeterministicRng(f"many-{count}"),
    )


def test_seal_to_256_recipients_opens_for_each() -> None:
    """With the maximum of 256 recipients each opens it; the 257th reader does not."""
    sealed = seal_to_many(MAX_RECIPIENTS)
    for ident in MANY[:MAX_RECIPIENTS]:
        outcome = Receiver(
            identity=ident,
            roster=BIG,
            replay=MemoryReplayStore(),
            schemas=TF.schemas,
            clock=lambda: NOW_MS,
            policy=ReceivePolicy(),
        ).receive(sealed.data)
        assert isinstance(outcome, Delivered), (ident.agency_id, outcome)
        assert as_published(outcome.message.record) == EXAMPLE_RECORD
        assert len(outcome.message.recipients) == MAX_RECIPIENTS
    last = Receiver(
        identity=MANY[MAX_RECIPIENTS],
        roster=BIG,
        replay=MemoryReplayStore(),
        schemas=TF.schemas,
        clock=lambda: NOW_MS,
        policy=ReceivePolicy(),
    ).receive(sealed.data)
    assert isinstance(last, Rejection)
    assert last.code is RejectCode.E_NOT_RECIPIENT


def test_seal_to_refuses_257_recipients() -> None:
    """One recipient over the direct-mode maximum is a ValidationError."""
    with pytest.raises(ValidationError):
        seal_to_many(MAX_RECIPIENTS + 1)


def test_seal_to_refuses_zero_recipients() -> None:
    """An envelope for nobody is a ValidationError."""
    with pytest.raises(ValidationError):
        seal_to_many(0)


# ---------------------------------------------------------------------------------------------
# 2. Tampering

VALID: Final = seal_alert(
    alert_record(
        {
            "title": "Tamper target",
            "summary": "A valid envelope whose every byte the tests below change.",
            "severity": "high",
            "category": "labour-exploitation",
            "where": {"country": "NL", "place": "Den Helder"},
            "handling": {"tlp": "AMBER"},
            "grading": {"system": "europol-4x4", "source": "B", "information": "2"},
        }
    ),
    sender="police",
    to=["ngo", "bank", "police"],
    seed=b"tamper",
).data
# Offsets of text fields inside the header: a flip there must not escape as an exception.
SENDER_AT: Final = VALID.index(b"police")
TASKFORCE_AT: Final = VALID.index(b"nl-north")
CHANNEL_AT: Final = VALID.index(b"alerts")


def test_untampered_envelope_is_delivered() -> None:
    """The envelope the tampering tests start from is itself delivered."""
    assert isinstance(receiver("ngo").receive(VALID), Delivered)


@given(position=st.integers(0, len(VALID) - 1), xor=st.integers(1, 255))
@example(position=SENDER_AT, xor=0x80)
@example(position=TASKFORCE_AT + 2, xor=0xC0)
@example(position=CHANNEL_AT + 5, xor=0x80)
def test_flipped_byte_is_rejected_before_decryption(position: int, xor: int) -> None:
    """A single flipped byte anywhere gives a Rejection at or before the signature check."""
    outcome = receiver("ngo").receive(flip(VALID, position, xor))
    assert is_tamper_rejection(outcome), outcome


def test_every_position_flipped_is_rejected() -> None:
    """Sweep: each byte flipped by 0x01 and by 0x80 is refused, never raised or delivered."""
    failures: list[str] = []
    for position in range(len(VALID)):
        for xor in (0x01, 0x80):
            try:
                outcome = receiver("ngo").receive(flip(VALID, position, xor))
            except Exception as exc:
                failures.append(f"byte {position} ^ {xor:#04x}: raised {exc!r}")
                continue
            if not is_tamper_rejection(outcome):
                failures.append(f"byte {position} ^ {xor:#04x}: {outcome!r}")
    assert not failures, f"{len(failures)} bad outcomes, first: {failures[:5]}"


@given(length=st.integers(0, len(VALID) - 1))
def test_truncated_envelope_is_rejected(length: int) -> None:
    """Any proper prefix of a valid envelope is a Rejection."""
    assert is_tamper_rejection(receiver("ngo").receive(VALID[:length]))


@given(tail=st.binary(min_size=1, max_size=256))
def test_extended_envelope_is_rejected(tail: bytes) -> None:
    """A valid envelope with bytes appended is a Rejection."""
    assert is_tamper_rejection(receiver("ngo").receive(VALID + tail))


@settings(max_examples=200)
@given(
    data=st.binary(max_size=2048)
    | st.binary(max_size=2048).map(lambda b: b"\x94\x01" + b)
    | st.binary(max_size=2048).map(lambda b: VALID[: len(VALID) // 2] + b)
)
def test_garbage_is_rejected(data: bytes) -> None:
    """Random bytes (also behind an envelope-like prefix) are a Rejection, never an exception."""
    assert is_tamper_rejection(receiver("ngo").receive(data))
