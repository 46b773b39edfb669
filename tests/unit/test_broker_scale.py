"""The broker's names and configuration for large task forces and epoch mode (issue 15): the
key manager's sender subjects on epoch channels, the roster object store's rights, the
limits a configuration for thousands of agencies needs (consumers per stream, connections),
and a configuration of 2,000 agencies that nats-server accepts."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import socket
import subprocess
from pathlib import Path

import msgspec
import nats
import nats.js.errors
import nkeys
import pytest
from tfkit import TaskForce, identity

from tfshare import names
from tfshare import roster as R
from tfshare.broker import (
    CONNECTION_HEADROOM,
    BrokerProcess,
    ServerLimits,
    find_nats_server,
    render_config,
    server_connections,
)
from tfshare.encoding import MAX_UINT, encode

TF = "nl-north"
ADMIN_SEED: bytes = nkeys.encode_seed(b"\x07" * 32, nkeys.PREFIX_BYTE_USER)
ADMIN_NKEY: str = nkeys.from_seed(ADMIN_SEED).public_key.decode()
OBJECT_READS = (
    "$JS.API.STREAM.INFO.OBJ_tf_nl-north_rosters",
    "$JS.API.DIRECT.GET.OBJ_tf_nl-north_rosters",
    "$JS.API.DIRECT.GET.OBJ_tf_nl-north_rosters.>",
)
OBJECT_WRITES = (
    "$O.tf_nl-north_rosters.C.>",
    "$O.tf_nl-north_rosters.M.>",
    "$JS.API.STREAM.MSG.GET.OBJ_tf_nl-north_rosters",
    "$JS.API.STREAM.PURGE.OBJ_tf_nl-north_rosters",
)


def with_key_manager(tf: TaskForce, *, status: R.Status = "active") -> TaskForce:
    """The kit's task force plus ``keyman`` (member and key-manager, reads and writes
    nothing); alerts allows direct and epoch mode, tips direct only."""
    keyman = identity("keyman")
    t = tf.now_ms
    signed = R.add_members(tf.signed, [keyman.card_body()], role="member", now_ms=t)
    signed = R.set_roles(signed, "keyman", ["member", "key-manager"], now_ms=t)
    signed = R.set_channel_modes(signed, "alerts", direct=True, epoch=True, now_ms=t)
    if status != "active":
        _, roster = R.decode_signed_roster(encode(signed))
        members = [
            msgspec.structs.replace(m, status=status) if m.agency_id == "keyman" else m
            for m in roster.members
        ]
        signed = R.edit(signed, msgspec.structs.replace(roster, members=members), now_ms=t)
    return dataclasses.replace(
        tf, ids={**tf.ids, "keyman": keyman}, signed=R.sign(signed, tf.ids["coord"])
    )


def trusted_of(tf: TaskForce) -> R.TrustedRoster:
    _, roster = R.decode_signed_roster(tf.roster_bytes)
    return R.TrustedRoster(roster, tf.signed.roster)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def nats_check(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(find_nats_server()), "-t", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# -- the key manager publishes its key deliveries --------------------------------------------


def test_key_manager_publishes_on_its_own_subject_of_epoch_channels_only(
    taskforce: TaskForce,
) -> None:
    """keyman writes nothing, yet may publish on tf.<tf>.ch.alerts.keyman (alerts allows
    epoch mode): its key deliveries go there. Not on tips (direct only), never on another
    agency's subject."""
    roster = trusted_of(with_key_manager(taskforce))
    got = names.permissions(roster, "keyman")
    assert got is not None
    channel_subjects = [s for s in got.publish if s.startswith("tf.nl-north.ch.")]
    assert channel_subjects == ["tf.nl-north.ch.alerts.keyman"]


def test_key_manager_gets_every_epoch_channel_and_keeps_its_writes(taskforce: TaskForce) -> None:
    """A key manager that also writes a direct-only channel keeps that right, and gets each
    epoch channel once (writer there or not), in the roster's order."""
    tf = with_key_manager(taskforce)
    t = tf.now_ms
    signed = R.grant(tf.signed, "keyman", channel="tips", read=False, write=True, now_ms=t)
    signed = R.grant(signed, "keyman", channel="alerts", read=False, write=True, now_ms=t)
    signed = R.set_channel_modes(signed, "tips", direct=False, epoch=True, now_ms=t)
    signed = R.grant(signed, "ngo", channel="cases", read=True, write=True, now_ms=t)
    signed = R.set_channel_modes(signed, "cases", direct=True, epoch=True, now_ms=t)
    tf = dataclasses.replace(tf, signed=R.sign(signed, tf.ids["coord"]))
    got = names.permissions(trusted_of(tf), "keyman")
    assert got is not None
    channel_subjects = [s for s in got.publish if s.startswith("tf.nl-north.ch.")]
    assert channel_subjects == [
        f"tf.nl-north.ch.{c.name}.keyman" for c in trusted_of(tf).roster.channels
    ]
    assert sorted(channel_subjects) == [
        "tf.nl-north.ch.alerts.keyman",
        "tf.nl-north.ch.cases.keyman",
        "tf.nl-north.ch.tips.keyman",
    ]


def test_member_without_the_role_gets_no_epoch_channel_subject(taskforce: TaskForce) -> None:
    """ngo reads alerts (an epoch channel) but is no key manager and no writer there: only
    its own tips subject (it writes tips)."""
    got = names.permissions(trusted_of(with_key_manager(taskforce)), "ngo")
    assert got is not None
    assert [s for s in got.publish if s.startswith("tf.nl-north.ch.")] == [
        "tf.nl-north.ch.tips.ngo"
    ]


def test_suspended_key_manager_gets_no_user(taskforce: TaskForce) -> None:
    roster = trusted_of(with_key_manager(taskforce, status="suspended"))
    assert "keyman" not in roster.key_managers
    assert names.permissions(roster, "keyman") is None


def test_config_with_a_key_manager_passes_nats_server_check(
    taskforce: TaskForce, tmp_path: Path
) -> None:
    roster = trusted_of(with_key_manager(taskforce))
    config = tmp_path / "nats.conf"
    text = render_config(roster, admin_nkey=ADMIN_NKEY, store_dir=tmp_path / "js", port=14222)
    assert '"tf.nl-north.ch.alerts.keyman"' in text
    config.write_text(text)
    result = nats_check(config)
    assert result.returncode == 0, result.stderr or result.stdout


# -- the roster object store ------------------------------------------------------------------


def test_every_member_reads_the_roster_object_store_without_a_consumer(
    taskforce: TaskForce,
) -> None:
    """Stream info and direct gets of the roster object store: no consumer creation, no
    write, for a member that is not a coordinator."""
    got = names.permissions(taskforce.trusted(), "police")
    assert got is not None
    assert [s for s in got.publish if "OBJ_" in s or s.startswith("$O.")] == list(OBJECT_READS)


def test_coordinators_write_the_roster_object_store(taskforce: TaskForce) -> None:
    got = names.permissions(taskforce.trusted(), "coord")
    assert got is not None
    assert [s for s in got.publish if "OBJ_" in s or s.startswith("$O.")] == [
        *OBJECT_READS,
        *OBJECT_WRITES,
    ]


def test_object_names_are_one_subject_token_per_bucket() -> None:
    """The object bucket is the task force's own; an object name says seq and digest."""
    assert names.roster_objects_bucket(TF) == "tf_nl-north_rosters"
    assert names.object_stream("tf_nl-north_rosters") == "OBJ_tf_nl-north_rosters"
    digest = bytes(range(32))
    assert names.roster_object_name(7, digest) == f"roster.7.{digest.hex()}"


# -- limits for thousands of agencies ---------------------------------------------------------


def scale_roster(members: int) -> R.TrustedRoster:
    """``members`` agencies (a0000 the coordinator), built as structs: 3 channels, all read,
    one in ten write; alerts also allows epoch mode."""
    cards = [identity(f"a{i:04d}").card_body() for i in range(members)]
    member_list = [
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
    ]
    ids = [card.agency_id for card in cards]
    roster = R.Roster(
        v=1,
        taskforce=TF,
        seq=1,
        issued_ms=1,
        expires_ms=MAX_UINT,
        threshold=1,
        coordinators=[ids[0]],
        members=member_list,
        channels=[
            R.Channel(name, list(ids), ids[::10], 1, 3 if name == "alerts" else 1, [])
            for name in ("alerts", "receipts", "tips")
        ],
        revoked=[],
    )
    return R.TrustedRoster(roster, R.encode_roster(roster))


@pytest.fixture(scope="module")
def large_roster() -> R.TrustedRoster:
    return scale_roster(2_000)


def test_config_of_2000_agencies_has_every_user_and_passes_nats_server_check(
    large_roster: R.TrustedRoster, tmp_path: Path
) -> None:
    """Every active agency has its user with its own rights (the readers/writers sets give
    the same answer as the channel lists they index); nats-server accepts the file."""
    text = render_config(large_roster, admin_nkey=ADMIN_NKEY, store_dir=tmp_path / "js")
    assert text.count("{ nkey: U") == 2_000 + 1  # and the administrator
    for member in large_roster.roster.members[::97]:
        agency = member.agency_id
        got = names.permissions(large_roster, agency)
        assert got is not None
        writes = [c.name for c in large_roster.roster.channels if agency in c.writers]
        reads = sorted(c.name for c in large_roster.roster.channels if agency in c.readers)
        assert names.writable_channels(large_roster, agency) == writes
        assert names.readable_channels(large_roster, agency) == reads
        own = [s for s in got.publish if s.startswith("tf.nl-north.ch.")]
        assert own == [f"tf.nl-north.ch.{c}.{agency}" for c in writes]
    config = tmp_path / "nats.conf"
    config.write_text(text)
    result = nats_check(config)
    assert result.returncode == 0, result.stderr or result.stdout


def test_connections_are_never_fewer_than_the_active_agencies(
    large_roster: R.TrustedRoster, tmp_path: Path
) -> None:
    """1024 connections was every task force's default: with 2,000 agencies 976 agents would
    have been refused. The operator's larger value is kept."""
    assert server_connections(large_roster, ServerLimits()) == 2_000 + CONNECTION_HEADROOM
    assert server_connections(large_roster, ServerLimits(max_connections=50_000)) == 50_000
    text = render_config(large_roster, admin_nkey=ADMIN_NKEY, store_dir=tmp_path / "js")
    assert re.search(r"^max_connections: 2064$", text, re.MULTILINE)


def test_default_consumer_cap_is_lifted_to_two_per_member(tmp_path: Path) -> None:
    """nats-server 2.15 caps a stream at 1,000 consumers unless told otherwise: a channel
    read by more agencies could not be provisioned. Each member has at most two durable
    consumers on a channel's stream (its reader's, its audit service's)."""
    assert ServerLimits().max_consumers_per_stream == 2 * R.MAX_MEMBERS
    roster = scale_roster(3)
    text = render_config(roster, admin_nkey=ADMIN_NKEY, store_dir=tmp_path / "js")
    assert f"default_max_consumers: {2 * R.MAX_MEMBERS}" in text


def test_nats_server_applies_the_rendered_consumer_cap(tmp_path: Path) -> None:
    """The rendered jetstream limit is the one nats-server enforces (a cap of 3 here, so the
    4th durable consumer on a stream is refused): the line is not ignored."""
    roster = scale_roster(3)
    port = free_port()
    config = tmp_path / "nats.conf"
    config.write_text(
        render_config(
            roster,
            admin_nkey=ADMIN_NKEY,
            store_dir=tmp_path / "js",
            port=port,
            limits=ServerLimits(max_consumers_per_stream=3),
        )
    )
    broker = BrokerProcess(config=config, host="127.0.0.1", port=port, log=tmp_path / "nats.log")
    broker.start()

    async def add_four() -> list[str]:
        client = await nats.connect(broker.url, nkeys_seed_str=ADMIN_SEED.decode())
        try:
            js = client.jetstream()
            await js.add_stream(name="S", subjects=["s.>"])
            outcomes = []
            for i in range(4):
                try:
                    await js.add_consumer("S", durable_name=f"c{i}", ack_policy="explicit")
                    outcomes.append("ok")
                except nats.js.errors.BadRequestError as exc:
                    outcomes.append(exc.description or "")
            return outcomes
        finally:
            await client.close()

    try:
        outcomes = asyncio.run(add_four())
    finally:
        broker.stop()
    assert outcomes == ["ok", "ok", "ok", "maximum consumers limit reached"]
