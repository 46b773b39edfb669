"""The broker permission table (``tfshare.names.permissions``), tested as data: exactly which
subjects each role gets (spelled out, so a renamed subject on the wire fails here too), no
user for an agency that is not active, no permission of one agency reaching another's own
subjects whatever the names, and ``render_config`` rendering exactly the table."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tfkit import TaskForce, build_taskforce, identity

from tfshare import names
from tfshare import roster as R
from tfshare.broker import render_config
from tfshare.encoding import NAME_PATTERN

TF = "nl-north"
# Every member reads the four buckets (roster, registry, checkpoint, cosignatures).
BUCKET_READS = [
    f"$JS.API.{api}.KV_tf_nl-north_{bucket}{tail}"
    for bucket in ("roster", "schemas", "audit", "witness")
    for api, tail in (("STREAM.INFO", ""), ("DIRECT.GET", ".>"))
]


# ... and the roster object store, without a consumer (stream info, direct gets).
OBJECT_READS = [
    "$JS.API.STREAM.INFO.OBJ_tf_nl-north_rosters",
    "$JS.API.DIRECT.GET.OBJ_tf_nl-north_rosters",
    "$JS.API.DIRECT.GET.OBJ_tf_nl-north_rosters.>",
]
# Coordinators put and prune roster objects as nats-py's object store does.
OBJECT_WRITES = [
    "$O.tf_nl-north_rosters.C.>",
    "$O.tf_nl-north_rosters.M.>",
    "$JS.API.STREAM.MSG.GET.OBJ_tf_nl-north_rosters",
    "$JS.API.STREAM.PURGE.OBJ_tf_nl-north_rosters",
]


def consumer(channel: str, durable: str) -> list[str]:
    stream = f"TF_nl-north_{channel}"
    return [
        f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}",
        f"$JS.API.CONSUMER.INFO.{stream}.{durable}",
        f"$JS.ACK.{stream}.{durable}.>",
    ]


def member_publish(agency: str) -> list[str]:
    """What every active member may publish: bucket reads, its witness key, its proofs."""
    return [
        *BUCKET_READS,
        *OBJECT_READS,
        f"$KV.tf_nl-north_witness.{agency}",
        f"tf.nl-north.audit.proof.{agency}",
    ]


def member_subscribe(agency: str) -> tuple[str, ...]:
    return (f"_INBOX_{agency}.>", "tf.nl-north.audit.checkpoint")


AUDITOR_PUBLISH = ["tf.nl-north.audit.checkpoint", "$KV.tf_nl-north_audit.checkpoint"]


def with_auditor(tf: TaskForce) -> TaskForce:
    """The kit's task force plus ``inspector``, an auditor that reads and writes nothing."""
    inspector = identity("inspector")
    signed = R.add_member(tf.signed, inspector.card_body(), role="auditor", now_ms=tf.now_ms)
    return dataclasses.replace(
        tf, ids={**tf.ids, "inspector": inspector}, signed=R.sign(signed, tf.ids["coord"])
    )


def with_status(tf: TaskForce, agency: str, status: R.Status) -> TaskForce:
    _, roster = R.decode_signed_roster(tf.roster_bytes)
    members = [
        msgspec.structs.replace(m, status=status) if m.agency_id == agency else m
        for m in roster.members
    ]
    edited = R.edit(tf.signed, msgspec.structs.replace(roster, members=members), now_ms=tf.now_ms)
    return dataclasses.replace(tf, signed=R.sign(edited, tf.ids["coord"]))


# -- exactly which subjects, role by role ----------------------------------------------------


def test_member_that_writes_and_reads_two_channels(taskforce: TaskForce) -> None:
    """police: writes alerts, reads alerts and tips - its sender subject and one consumer per
    channel it reads, nothing of the roster's writers, no proof serving."""
    got = names.permissions(taskforce.trusted(), "police")
    assert got == names.Permissions(
        publish=(
            "tf.nl-north.ch.alerts.police",
            *member_publish("police"),
            *consumer("alerts", "agent_police_CH_alerts"),
            *consumer("tips", "agent_police_CH_tips"),
        ),
        subscribe=member_subscribe("police"),
        allow_responses=None,
    )


def test_member_that_writes_a_channel_it_does_not_read(taskforce: TaskForce) -> None:
    """ngo: writes tips, reads alerts only - no consumer on tips."""
    got = names.permissions(taskforce.trusted(), "ngo")
    assert got == names.Permissions(
        publish=(
            "tf.nl-north.ch.tips.ngo",
            *member_publish("ngo"),
            *consumer("alerts", "agent_ngo_CH_alerts"),
        ),
        subscribe=member_subscribe("ngo"),
    )


def test_reader_that_writes_nothing(taskforce: TaskForce) -> None:
    """A member granted read only on alerts publishes on no channel subject at all."""
    reader, now = identity("reader"), taskforce.now_ms
    signed = R.add_member(taskforce.signed, reader.card_body(), role="member", now_ms=now)
    signed = R.grant(signed, "reader", channel="alerts", read=True, write=False, now_ms=now)
    tf = dataclasses.replace(taskforce, signed=R.sign(signed, taskforce.ids["coord"]))
    got = names.permissions(tf.trusted(), "reader")
    assert got is not None
    assert got.publish == (*member_publish("reader"), *consumer("alerts", "agent_reader_CH_alerts"))
    assert got.subscribe == member_subscribe("reader")


def test_coordinator_writes_the_buckets_and_runs_the_audit_service(taskforce: TaskForce) -> None:
    """coord: the roster key and registry records, its reader consumer, its audit consumer on
    every channel's stream, the checkpoint subject and key, every proof request, and one
    reply per request received."""
    got = names.permissions(taskforce.trusted(), "coord")
    assert got == names.Permissions(
        publish=(
            *member_publish("coord"),
            "$KV.tf_nl-north_roster.roster",
            "$KV.tf_nl-north_schemas.>",
            *OBJECT_WRITES,
            *consumer("alerts", "agent_coord_CH_alerts"),
            *consumer("alerts", "audit_coord"),
            *consumer("tips", "audit_coord"),
            *AUDITOR_PUBLISH,
        ),
        subscribe=(*member_subscribe("coord"), "tf.nl-north.audit.proof.*"),
        allow_responses=names.Responses(max=1, expires="30s"),
    )


def test_auditor_runs_the_audit_service_without_writing_the_roster(taskforce: TaskForce) -> None:
    """An auditor that is not a coordinator: the audit service's rights, not the buckets'."""
    got = names.permissions(with_auditor(taskforce).trusted(), "inspector")
    assert got == names.Permissions(
        publish=(
            *member_publish("inspector"),
            *consumer("alerts", "audit_inspector"),
            *consumer("tips", "audit_inspector"),
            *AUDITOR_PUBLISH,
        ),
        subscribe=(*member_subscribe("inspector"), "tf.nl-north.audit.proof.*"),
        allow_responses=names.Responses(max=1, expires="30s"),
    )


@pytest.mark.parametrize("status", ["suspended", "removed"])
def test_inactive_member_gets_no_user(taskforce: TaskForce, status: R.Status) -> None:
    assert names.permissions(with_status(taskforce, "police", status).trusted(), "police") is None


def test_revoked_member_and_stranger_get_no_user(taskforce: TaskForce) -> None:
    signed = R.revoke(taskforce.signed, "labour", reason="compromised", now_ms=taskforce.now_ms)
    trusted = dataclasses.replace(taskforce, signed=R.sign(signed, taskforce.ids["coord"]))
    assert names.permissions(trusted.trusted(), "labour") is None
    assert names.permissions(taskforce.trusted(), "outsider") is None


@pytest.mark.parametrize("empty", ["publish", "subscribe"])
def test_an_empty_allow_list_cannot_be_made(empty: str) -> None:
    """nats-server reads an empty allow list as 'everything': the table refuses to hold one."""
    publish, subscribe = ((), ("b",)) if empty == "publish" else (("a",), ())
    with pytest.raises(ValueError, match="empty allow list"):
        names.Permissions(publish, subscribe)


# -- render_config renders the table, nothing else -------------------------------------------

USER = re.compile(r"\{ nkey: (U[A-Z2-7]{55})  # ([a-z0-9_-]+)\n(.*?)\n      \} \}", re.S)
ALLOW = re.compile(r"(publish|subscribe): \{ allow: (\[[^\]]*\]) \}")
RESPONSES = re.compile(r'allow_responses: \{ max: (\d+), expires: "([0-9a-z]+)" \}')


def rendered_table(config: str) -> dict[str, tuple[str, names.Permissions]]:
    """agency -> (nkey, permissions) as read back from a rendered configuration."""
    table = {}
    for nkey, agency, block in USER.findall(config):
        allow = {kind: tuple(json.loads(items)) for kind, items in ALLOW.findall(block)}
        responses = RESPONSES.search(block)
        table[agency] = (
            nkey,
            names.Permissions(
                allow["publish"],
                allow["subscribe"],
                names.Responses(int(responses[1]), responses[2]) if responses else None,
            ),
        )
    return table


def test_render_config_renders_exactly_the_permission_table(
    taskforce: TaskForce, tmp_path: Path
) -> None:
    """Every active member's user carries its ``permissions`` as they are (order kept); no
    other member user exists; the administrator is the only user without permissions."""
    tf = with_status(with_auditor(taskforce), "ngo", "suspended")
    trusted = tf.trusted()
    config = render_config(trusted, admin_nkey="UADMIN", store_dir=tmp_path)
    expected = {}
    for member in trusted.roster.members:
        allowed = names.permissions(trusted, member.agency_id)
        if allowed is not None:
            expected[member.agency_id] = (member.nats_user, allowed)
    assert set(expected) == {"coord", "police", "labour", "inspector"}
    assert rendered_table(config) == expected
    assert config.count("{ nkey: ") == len(expected) + 1
    assert "{ nkey: UADMIN }" in config


# -- no wildcard reaches another agency's subjects, whatever the names -----------------------


def overlaps(a: str, b: str) -> bool:
    """Whether two NATS subject patterns match at least one subject in common (``*``: one
    token, ``>``: one or more tokens, last)."""
    x, y = a.split("."), b.split(".")
    for i in range(min(len(x), len(y))):
        if x[i] == ">" or y[i] == ">":
            return True
        if x[i] != y[i] and "*" not in (x[i], y[i]):
            return False
    return len(x) == len(y)


def test_overlaps_follows_nats_matching() -> None:
    assert overlaps("a.b.c", "a.b.c")
    assert overlaps("a.*.c", "a.b.*")
    assert overlaps("a.>", "a.b.c")
    assert overlaps("*.b", "a.>")
    assert not overlaps("a.>", "a")
    assert not overlaps("a.*", "a.b.c")
    assert not overlaps("a.b", "a.c")
    assert not overlaps("a.b.c", "a.b")


def own_publish_space(taskforce: str, agency: str, channels: list[str]) -> list[str]:
    """The subjects only ``agency`` may publish on (or no one: its inbox)."""
    space = [
        names.channel_subject(taskforce, "*", agency),
        names.proof_subject(taskforce, agency),
        names.kv_subject(names.witness_bucket(taskforce), names.witness_key(agency)),
        names.inbox_subjects(agency),
    ]
    for channel in channels:
        stream = names.stream_name(taskforce, channel)
        space += names.consumer_api(stream, names.durable_name(agency, channel))
        space += names.consumer_api(stream, names.audit_durable_name(agency))
    return space


NAME = st.from_regex(NAME_PATTERN)


@st.composite
def task_forces(draw: st.DrawFn, base: R.Roster) -> R.TrustedRoster:
    """The kit's roster (plus an auditor) under other names, with other channels and grants,
    and any member but the coordinator possibly suspended."""
    agencies = draw(st.lists(NAME, min_size=5, max_size=5, unique=True))
    channels = draw(st.lists(NAME, min_size=1, max_size=3, unique=True))
    rename = dict(zip([m.agency_id for m in base.members], agencies, strict=True))
    members = [
        msgspec.structs.replace(
            m,
            agency_id=rename[m.agency_id],
            status=draw(st.sampled_from(["active", "suspended"]))
            if m.agency_id not in base.coordinators
            else "active",
        )
        for m in base.members
    ]
    template = base.channels[0]
    grants = []
    for channel in channels:
        readers = [a for a in agencies if draw(st.booleans())]
        writers = [a for a in agencies if draw(st.booleans())]
        grants.append(
            msgspec.structs.replace(template, name=channel, readers=readers, writers=writers)
        )
    roster = msgspec.structs.replace(
        base,
        taskforce=draw(NAME),
        members=members,
        coordinators=[rename[c] for c in base.coordinators],
        channels=grants,
    )
    return R.TrustedRoster(roster, b"")


def base_roster() -> R.Roster:
    tf = with_auditor(build_taskforce())
    _, roster = R.decode_signed_roster(tf.roster_bytes)
    return roster


@given(task_forces(base_roster()))
def test_no_permission_reaches_another_agencys_own_subjects(trusted: R.TrustedRoster) -> None:
    """For any names, channels, grants and suspensions: no member's publish permission
    overlaps another agency's sender subjects, consumers, acks, proof subject, witness key or
    inbox; no member's subscribe permission overlaps another's inbox; no one subscribes to a
    channel subject (messages are read through one's own consumers only)."""
    tf = trusted.taskforce
    channels = names.task_force_channels(trusted)
    agencies = list(trusted.members)
    for agency in agencies:
        allowed = names.permissions(trusted, agency)
        if allowed is None:
            continue
        for other in agencies:
            if other == agency:
                continue
            for theirs in own_publish_space(tf, other, channels):
                for mine in allowed.publish:
                    assert not overlaps(mine, theirs), (agency, mine, other, theirs)
            for mine in allowed.subscribe:
                assert not overlaps(mine, names.inbox_subjects(other)), (agency, mine, other)
        for mine in allowed.subscribe:
            assert not overlaps(mine, names.channel_subject(tf, "*", "*")), (agency, mine)


def test_names_is_pure() -> None:
    """tfshare.names pulls in no network, process, database or file module (pure core)."""
    code = (
        "import sys, tfshare.names\n"
        "io = ('nats', 'sqlite3', 'asyncio', 'socket', 'subprocess')\n"
        "mods = ('tfshare.transport', 'tfshare.broker', 'tfshare.store', 'tfshare.files')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in io or m in mods))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"
