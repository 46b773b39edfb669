"""Roster distribution through the JetStream object store (issue 15), on a real nats-server
with a small max_payload (64 KiB) so that a roster of a few hundred members outgrows one
message: the coordinator publishes (object + pointer), a member fetches it back
byte-identical with its own broker permissions, a tampered or missing object is refused with
E_ROSTER_MALFORMED, a small roster stays in the KV key itself, old objects are pruned."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nkeys
import pytest
from livekit import free_port
from nats.js.api import ObjectMeta, ObjectMetaOptions
from tfkit import build_taskforce, identity

from tfshare import names, rosterdist, transport
from tfshare import roster as R
from tfshare.broker import BrokerProcess, render_config
from tfshare.encoding import MAX_UINT, encode
from tfshare.errors import RejectCode, RosterRejected
from tfshare.keys import Identity
from tfshare.workflows.live import StreamLimits

TF = "nl-north"
SMALL_PAYLOAD = 64 * 1024
ADMIN_SEED: bytes = nkeys.encode_seed(b"\x07" * 32, nkeys.PREFIX_BYTE_USER)
ADMIN_NKEY: str = nkeys.from_seed(ADMIN_SEED).public_key.decode()
COORD, MEMBER = "a0000", "a0001"


def roster_file(members: int, *, seq: int = 1) -> bytes:
    """A roster file of ``members`` agencies (a0000 the coordinator; one channel everyone
    reads), unsigned: the distribution never looks at signatures, the receiver does."""
    cards = [identity(f"a{i:04d}").card_body() for i in range(members)]
    roster = R.Roster(
        v=1,
        taskforce=TF,
        seq=seq,
        issued_ms=1,
        expires_ms=MAX_UINT,
        threshold=1,
        coordinators=[COORD],
        members=[
            R.Member(
                agency_id=card.agency_id,
                display_name=card.display_name,
                roles=["coordinator"] if i == 0 else ["member"],
                sign_keys=[R.KeyValidity(card.sign_pk, card.created_ms, MAX_UINT)],
                enc_key=R.KeyValidity(card.enc_pk, card.created_ms, MAX_UINT),
                enc_self_sig=card.enc_bind_sig,
                nats_user=card.nats_user,
                status="active",
            )
            for i, card in enumerate(cards)
        ],
        channels=[R.Channel("alerts", [c.agency_id for c in cards], [COORD], 1, 1, [])],
        revoked=[],
    )
    return encode(R.SignedRoster(roster=R.encode_roster(roster), sigs=[]))


LARGE = roster_file(300)  # about 85 KB: more than one 64 KiB message


@dataclass
class Broker:
    process: BrokerProcess

    def run(self, agency: str | None, work: Callable[[Any], Awaitable[Any]]) -> Any:
        """Run ``work(conn)`` on a connection of ``agency`` (its own NATS key and broker
        permissions), or of the administrator (None)."""

        async def main() -> Any:
            seed = ADMIN_SEED if agency is None else identity(agency).nats_seed_encoded()
            conn = await transport.connect(
                self.process.url, nkey_seed=seed, agency=agency, name="t", reconnect=False
            )
            try:
                return await work(conn)
            finally:
                await conn.close()

        return asyncio.run(main())


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A nats-server configured from the roster (the members' real permissions) with a
    max_payload of 64 KiB, its roster KV bucket and roster object store provisioned."""
    directory = tmp_path_factory.mktemp("objectstore")
    _, roster = R.decode_signed_roster(LARGE)
    trusted = R.TrustedRoster(roster, roster_bytes=R.encode_roster(roster))
    port = free_port()
    config = render_config(
        trusted, admin_nkey=ADMIN_NKEY, store_dir=directory / "js", port=port
    ).replace("max_payload: 1048576\n", f"max_payload: {SMALL_PAYLOAD}\n")
    assert f"max_payload: {SMALL_PAYLOAD}\n" in config
    (directory / "nats.conf").write_text(config)
    process = BrokerProcess(
        config=directory / "nats.conf", host="127.0.0.1", port=port, log=directory / "nats.log"
    )
    process.start()

    async def provision(conn: Any) -> None:
        roster_kv = transport.bucket_configs(TF)[0]
        roster_kv.max_value_size = SMALL_PAYLOAD
        await conn.js.create_key_value(roster_kv)
        await rosterdist.ensure_roster_objects(conn.js, TF)

    try:
        Broker(process).run(None, provision)
        yield Broker(process)
    finally:
        process.stop()


def publish(broker: Broker, data: bytes) -> int:
    async def work(conn: Any) -> int:
        revision: int = await rosterdist.publish_roster(conn.js, TF, data)
        return revision

    result: int = broker.run(COORD, work)
    return result


def fetch(broker: Broker, *, known: bytes | None = None) -> bytes | None:
    async def work(conn: Any) -> bytes | None:
        return await rosterdist.fetch_roster(conn.js, TF, known=known)

    result: bytes | None = broker.run(MEMBER, work)
    return result


def kv_value(broker: Broker) -> bytes:
    async def work(conn: Any) -> bytes:
        kv = await conn.js.key_value(names.roster_bucket(TF))
        return bytes((await kv.get(names.ROSTER_KEY)).value)

    result: bytes = broker.run(None, work)
    return result


def test_roster_larger_than_a_message_is_fetched_back_byte_identical(broker: Broker) -> None:
    """The coordinator publishes with its own permissions; the KV key holds a pointer, the
    member (read rights only) follows it and gets the exact bytes."""
    assert len(LARGE) > SMALL_PAYLOAD
    publish(broker, LARGE)
    ref = rosterdist.parse_ref(kv_value(broker))
    assert ref == rosterdist.RosterRef(1, hashlib.sha256(LARGE).digest(), len(LARGE))
    assert fetch(broker) == LARGE


def test_a_roster_the_reader_holds_is_not_fetched_again(broker: Broker) -> None:
    publish(broker, LARGE)
    held = bytes(LARGE)
    assert fetch(broker, known=held) is held


def test_tampered_roster_object_is_refused(broker: Broker) -> None:
    """Someone with write access to the object store replaces the object's bytes (same
    name, same size, one byte changed): the member refuses it, E_ROSTER_MALFORMED."""
    publish(broker, LARGE)
    tampered = bytearray(LARGE)
    tampered[len(tampered) // 2] ^= 0x01
    name = names.roster_object_name(1, hashlib.sha256(LARGE).digest())

    async def replace(conn: Any) -> None:
        objects = await conn.js.object_store(names.roster_objects_bucket(TF))
        chunks = ObjectMetaOptions(max_chunk_size=SMALL_PAYLOAD // 2)
        await objects.put(name, bytes(tampered), meta=ObjectMeta(name=name, options=chunks))

    broker.run(None, replace)
    with pytest.raises(RosterRejected) as refused:
        fetch(broker)
    assert refused.value.reject_code is RejectCode.E_ROSTER_MALFORMED
    assert refused.value.hint
    publish(broker, LARGE)  # the coordinator repairs it ...
    assert fetch(broker) == LARGE  # ... and it is served again


def test_pointer_to_a_missing_object_is_refused(broker: Broker) -> None:
    missing = rosterdist.RosterRef(99, bytes(32), 1000)

    async def point(conn: Any) -> None:
        kv = await conn.js.key_value(names.roster_bucket(TF))
        await kv.put(names.ROSTER_KEY, encode(missing))

    broker.run(None, point)
    with pytest.raises(RosterRejected) as refused:
        fetch(broker)
    assert refused.value.reject_code is RejectCode.E_ROSTER_MALFORMED
    assert "not in the broker's roster object store" in refused.value.message


def test_malformed_pointer_is_refused(broker: Broker) -> None:
    """A value that claims to be a pointer (its tag) but does not decode strictly."""
    bad = encode(rosterdist.RosterRef(1, bytes(32), 10))[:-1] + b"\xc0"

    async def point(conn: Any) -> None:
        kv = await conn.js.key_value(names.roster_bucket(TF))
        await kv.put(names.ROSTER_KEY, bad)

    broker.run(None, point)
    with pytest.raises(RosterRejected) as refused:
        fetch(broker)
    assert refused.value.reject_code is RejectCode.E_ROSTER_MALFORMED


def test_small_roster_stays_in_the_kv_key_and_goes_to_the_object_store(broker: Broker) -> None:
    small = roster_file(3, seq=2)
    publish(broker, small)
    assert kv_value(broker) == small
    assert fetch(broker) == small

    async def stored(conn: Any) -> bytes:
        objects = await conn.js.object_store(names.roster_objects_bucket(TF))
        name = names.roster_object_name(2, hashlib.sha256(small).digest())
        return bytes((await objects.get(name)).data)

    assert broker.run(None, stored) == small


def test_only_the_newest_objects_are_kept(broker: Broker) -> None:
    for seq in range(3, 9):
        publish(broker, roster_file(2, seq=seq))

    async def live_names(conn: Any) -> list[str]:
        objects = await conn.js.object_store(names.roster_objects_bucket(TF))
        return sorted(info.name for info in await objects.list() if not info.deleted)

    kept = broker.run(None, live_names)
    assert [name.split(".")[1] for name in kept] == ["5", "6", "7", "8"]


def test_a_member_cannot_write_the_roster_object_store(broker: Broker) -> None:
    """Read rights only: the broker refuses a member's put (permissions violation), the
    KV key is not changed, the coordinator's roster is still what members get."""
    publish(broker, LARGE)
    forged = roster_file(300, seq=50)

    async def work(conn: Any) -> list[str]:
        js = conn.client.jetstream(timeout=0.5)
        with pytest.raises(Exception):  # noqa: B017 (the broker's refusal, as nats-py sees it)
            await rosterdist.publish_roster(js, TF, forged)
        await asyncio.sleep(0.1)  # the server's -ERR arrives asynchronously
        errors: list[str] = conn.errors
        return errors

    errors = broker.run(MEMBER, work)
    # Refused at its first write step (reading the object's metadata as nats-py's put does,
    # a coordinator's right); nats-py reports the subject in lower case.
    assert any("permissions violation" in e and "obj_tf_nl-north_rosters" in e for e in errors)
    assert fetch(broker) == LARGE


def signed_large_taskforce() -> tuple[bytes, R.TrustedRoster]:
    """The kit's task force and 300 more members (read nothing): a fully signed roster of
    about 85 KB, as ``roster add`` and ``roster sign`` make it."""
    tf = build_taskforce(now_ms=time.time_ns() // 1_000_000)
    cards = [identity(f"m{i:04d}").card_body() for i in range(300)]
    signed = R.add_members(tf.signed, cards, role="member", now_ms=tf.now_ms)
    signed = R.sign(signed, tf.ids["coord"])
    data = encode(signed)
    trusted, _ = R.verify_roster(data, anchor=tf.anchor, state=None, now_ms=tf.now_ms)
    return data, trusted


def test_transport_publishes_and_fetches_a_roster_larger_than_a_message(tmp_path: Path) -> None:
    """What 'roster publish', the agents and the audit service call: provisioned by
    ``transport.provision``, published by coord, fetched by police, byte-identical."""
    data, trusted = signed_large_taskforce()
    assert len(data) > SMALL_PAYLOAD
    port = free_port()
    config = render_config(
        trusted, admin_nkey=ADMIN_NKEY, store_dir=tmp_path / "js", port=port
    ).replace("max_payload: 1048576\n", f"max_payload: {SMALL_PAYLOAD}\n")
    (tmp_path / "nats.conf").write_text(config)
    process = BrokerProcess(
        config=tmp_path / "nats.conf", host="127.0.0.1", port=port, log=tmp_path / "nats.log"
    )
    process.start()
    broker = Broker(process)
    tf = trusted.taskforce
    try:
        limits = StreamLimits().channel_limits(names.task_force_channels(trusted))
        broker.run(None, lambda conn: transport.provision(conn, trusted, limits))
        kit = build_taskforce()

        async def publish(conn: Any) -> int:
            revision: int = await transport.put_roster(conn, tf, data)
            return revision

        async def fetch(conn: Any) -> bytes | None:
            return await transport.get_roster(conn, tf)

        # the kit's identities are the roster's: coord publishes, police reads
        assert kit.ids["coord"].nats_user == trusted.members["coord"].nats_user
        broker_run_as(broker, kit.ids["coord"], publish)
        assert broker_run_as(broker, kit.ids["police"], fetch) == data
    finally:
        process.stop()


def broker_run_as(broker: Broker, who: Identity, work: Callable[[Any], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        conn = await transport.connect(
            broker.process.url,
            nkey_seed=who.nats_seed_encoded(),
            agency=who.agency_id,
            name="t",
            reconnect=False,
        )
        try:
            return await work(conn)
        finally:
            await conn.close()

    return asyncio.run(main())


def test_provisioning_again_creates_the_roster_objects_once_and_updates_consumers(
    tmp_path: Path,
) -> None:
    """``ensure_roster_objects`` twice keeps the bucket (and what it holds); provisioning
    again with another max_ack_pending changes every reader's consumer (whatever provision
    skips as already there, it never skips a consumer configured otherwise)."""
    tf = build_taskforce(now_ms=time.time_ns() // 1_000_000)
    trusted = tf.trusted()
    port = free_port()
    config = tmp_path / "nats.conf"
    config.write_text(
        render_config(trusted, admin_nkey=ADMIN_NKEY, store_dir=tmp_path / "js", port=port)
    )
    process = BrokerProcess(config=config, host="127.0.0.1", port=port, log=tmp_path / "nats.log")
    process.start()
    broker = Broker(process)
    limits = StreamLimits().channel_limits(names.task_force_channels(trusted))

    async def provision(conn: Any, max_ack_pending: int) -> None:
        await transport.provision(conn, trusted, limits, max_ack_pending=max_ack_pending)

    async def objects_then_again(conn: Any) -> bytes:
        await rosterdist.ensure_roster_objects(conn.js, trusted.taskforce)
        objects = await conn.js.object_store(names.roster_objects_bucket(trusted.taskforce))
        await objects.put("kept", b"still here")
        await rosterdist.ensure_roster_objects(conn.js, trusted.taskforce)
        return bytes((await objects.get("kept")).data)

    async def ack_pending(conn: Any) -> set[int]:
        found = set()
        for channel in names.task_force_channels(trusted):
            for agency in sorted(trusted.readers[channel]):
                stream = names.stream_name(trusted.taskforce, channel)
                info = await conn.js.consumer_info(stream, names.durable_name(agency, channel))
                found.add(int(info.config.max_ack_pending))
        return found

    try:
        broker.run(None, lambda conn: provision(conn, 256))
        assert broker.run(None, objects_then_again) == b"still here"
        assert broker.run(None, ack_pending) == {256}
        broker.run(None, lambda conn: provision(conn, 100))
        assert broker.run(None, ack_pending) == {100}
    finally:
        process.stop()


def test_provisioning_needs_no_server_consumer_default(tmp_path: Path) -> None:
    """A nats-server tfshare did not configure (an operator's own, or one whose default cap
    of consumers per stream is lower than a channel's readers: 3 here, 1,000 by default in
    nats-server 2.15) still takes every reader's consumer: the streams say their own."""
    tf = build_taskforce(now_ms=time.time_ns() // 1_000_000)
    trusted = tf.trusted()
    assert len(trusted.readers["alerts"]) > 3
    port = free_port()
    config = tmp_path / "nats.conf"
    config.write_text(
        f"listen: 127.0.0.1:{port}\n"
        f'jetstream {{ store_dir: "{tmp_path / "js"}", limits {{ default_max_consumers: 3 }} }}\n'
        f"authorization {{ users = [ {{ nkey: {ADMIN_NKEY} }} ] }}\n"
    )
    process = BrokerProcess(config=config, host="127.0.0.1", port=port, log=tmp_path / "nats.log")
    process.start()
    limits = StreamLimits().channel_limits(names.task_force_channels(trusted))
    try:
        Broker(process).run(None, lambda conn: transport.provision(conn, trusted, limits))
    finally:
        process.stop()
