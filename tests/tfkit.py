"""Test kit: a deterministic task force (identities, signed roster, anchor) and helpers.

Everything is real (real keys, real signatures, real encryption); only the randomness and the
clock are fixed, so tests are reproducible and time checks can be hit at their exact edge.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tfshare import roster as R
from tfshare.encoding import encode
from tfshare.keys import Identity
from tfshare.protocol import Receiver
from tfshare.registry.book import Registry, shipped
from tfshare.registry.schema import Schema
from tfshare.replay import MemoryReplayStore
from tfshare.seal import ReceivePolicy, Sealed, seal

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
NOW_MS = 1_795_000_000_000  # 2026-11-18, a fixed "now" for every deterministic test
SCHEMAS = shipped()


class DeterministicRng:
    """rng(n) -> n bytes from BLAKE2b in counter mode over a seed: reproducible randomness."""

    def __init__(self, seed: bytes | str) -> None:
        self.seed = seed.encode() if isinstance(seed, str) else seed
        self.counter = 0

    def __call__(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.blake2b(
                self.counter.to_bytes(8, "big"), key=self.seed[:64], digest_size=64
            ).digest()
            self.counter += 1
        return out[:n]


def identity(agency_id: str, *, created_ms: int = NOW_MS - 86_400_000) -> Identity:
    return Identity.generate(
        agency_id,
        agency_id.replace("-", " ").title(),
        rng=DeterministicRng(agency_id),
        now_ms=created_ms,
    )


@dataclass
class TaskForce:
    """A signed roster and the identities behind it."""

    ids: dict[str, Identity]
    signed: R.SignedRoster
    anchor: R.Anchor
    now_ms: int = NOW_MS
    schemas: Registry = field(default_factory=shipped)

    @property
    def roster_bytes(self) -> bytes:
        return encode(self.signed)

    def trusted(self) -> R.TrustedRoster:
        trusted, _ = R.verify_roster(
            self.roster_bytes, anchor=self.anchor, state=None, now_ms=self.now_ms
        )
        return trusted

    def receiver(
        self, agency: str, *, replay: MemoryReplayStore | None = None, now_ms: int | None = None
    ) -> Receiver:
        clock_value = self.now_ms if now_ms is None else now_ms
        return Receiver(
            identity=self.ids[agency],
            roster=self.trusted(),
            replay=replay if replay is not None else MemoryReplayStore(),
            schemas=self.schemas,
            clock=lambda: clock_value,
            policy=ReceivePolicy(),
        )

    def seal(
        self,
        sender: str,
        *,
        channel: str = "alerts",
        to: Sequence[str] | None = None,
        schema: str = "tf.alert/1",
        body: bytes | None = None,
        seq: int = 1,
        now_ms: int | None = None,
        rng_seed: str = "message",
    ) -> Sealed:
        message_type = self.schemas.lookup(schema)
        assert isinstance(message_type, Schema)
        if body is None:
            record = message_type.from_json(example_json(schema))
            body = message_type.to_body(record)
        return seal(
            identity=self.ids[sender],
            roster=self.trusted(),
            channel=channel,
            to=to,
            schema=message_type,
            body=body,
            seq=seq,
            now_ms=self.now_ms if now_ms is None else now_ms,
            rng=DeterministicRng(rng_seed),
        )


def example_json(schema: str) -> bytes:
    name = {"tf.alert/1": "alert", "tf.red_flag/1": "red_flag", "tf.tip_summary/1": "tip_summary"}
    return (EXAMPLES / f"{name[schema]}.json").read_bytes()


def example_record(schema: str) -> object:
    message_type = SCHEMAS.lookup(schema)
    assert message_type is not None
    return message_type.from_json(example_json(schema))


def example_dict(schema: str) -> dict[str, object]:
    value = json.loads(example_json(schema))
    assert isinstance(value, dict)
    return value


def build_taskforce(
    *,
    coordinators: Sequence[str] = ("coord",),
    members: Sequence[str] = ("police", "ngo", "labour"),
    threshold: int = 1,
    now_ms: int = NOW_MS,
    outsiders: Sequence[str] = ("outsider",),
    receipts: bool = False,
) -> TaskForce:
    """coordinators + members; channel "alerts": everyone reads, police and labour write;
    channel "tips": ngo writes, police reads. ``outsiders`` get identities but no membership.
    With ``receipts``, channel "receipts": members write, coordinators read."""
    ids = {name: identity(name) for name in [*coordinators, *members, *outsiders]}
    signed = R.new_roster(
        "nl-north",
        [ids[c].card_body() for c in coordinators],
        threshold=threshold,
        now_ms=now_ms - 3_600_000,
        valid_days=90,
    )
    t = now_ms - 3_600_000
    for name in members:
        signed = R.add_member(signed, ids[name].card_body(), role="member", now_ms=t)
    for name in [*coordinators, *members]:
        signed = R.grant(
            signed,
            name,
            channel="alerts",
            read=True,
            write=name in ("police", "labour"),
            now_ms=t,
        )
    if "ngo" in members and "police" in members:
        signed = R.grant(signed, "ngo", channel="tips", read=False, write=True, now_ms=t)
        signed = R.grant(signed, "police", channel="tips", read=True, write=False, now_ms=t)
    if receipts:  # the receipts channel (audit.md): members write, coordinators read
        for name in [*coordinators, *members]:
            signed = R.grant(
                signed,
                name,
                channel="receipts",
                read=name in coordinators,
                write=name in members,
                now_ms=t,
            )
    for name in coordinators[:threshold]:
        signed = R.sign(signed, ids[name])
    _, roster = R.decode_signed_roster(encode(signed))
    return TaskForce(ids=ids, signed=signed, anchor=R.anchor_of(roster), now_ms=now_ms)
