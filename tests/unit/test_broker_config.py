"""nats-server configuration from the roster: accepted by ``nats-server -t``, one user per active
agency with exactly its own permissions, no user for revoked or suspended agencies, and the
broker directory written by ``write_broker_config`` (admin seed 0600, reused); the operators'
templates in broker_config/ pass ``nats-server -t`` with their variables and the generated
users file, and refuse to start without them."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import msgspec
import nkeys  # type: ignore[import-untyped,unused-ignore]
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tfkit import TaskForce, identity

from tfshare import broker, names
from tfshare import roster as R
from tfshare.broker import ServerLimits, render_config
from tfshare.encoding import NAME_PATTERN
from tfshare.names import (
    CHECKPOINT_KEY,
    PROOF_REPLY_WINDOW,
    ROSTER_KEY,
    audit_bucket,
    audit_durable_name,
    audit_subject,
    channel_subject,
    durable_name,
    inbox_prefix,
    legacy_stream_name,
    proof_subject,
    proof_subjects,
    readable_channels,
    roster_bucket,
    schema_bucket,
    stream_name,
    witness_bucket,
)
from tfshare.workflows.live import USERS_INCLUDE, write_broker_config

NATS_SERVER = Path(sys.executable).parent / "nats-server"
BROKER_CONFIG = Path(__file__).resolve().parents[2] / "broker_config"
TEMPLATES = sorted(BROKER_CONFIG.glob("*.conf"))
TASKFORCE = "nl-north"
CHANNELS = ("alerts", "tips", "receipts")
KIT_CHANNELS = ("alerts", "tips")  # the channels of tfkit's roster (no receipts channel)
BUCKET = roster_bucket(TASKFORCE)
# Every member reads the roster from its KV bucket; only coordinators publish rosters there.
SCHEMAS = schema_bucket(TASKFORCE)
AUDIT_KV = audit_bucket(TASKFORCE)
WITNESS_KV = witness_bucket(TASKFORCE)
ROSTER_OBJECTS = "tf_nl-north_rosters"  # the roster object store bucket
ROSTER_READ = [
    f"$JS.API.STREAM.INFO.KV_{BUCKET}",
    f"$JS.API.DIRECT.GET.KV_{BUCKET}.>",
    f"$JS.API.STREAM.INFO.KV_{SCHEMAS}",  # registry records are read the same way
    f"$JS.API.DIRECT.GET.KV_{SCHEMAS}.>",
    f"$JS.API.STREAM.INFO.KV_{AUDIT_KV}",  # ... and the audit log's latest checkpoint
    f"$JS.API.DIRECT.GET.KV_{AUDIT_KV}.>",
    f"$JS.API.STREAM.INFO.KV_{WITNESS_KV}",  # ... and every witness's cosignature
    f"$JS.API.DIRECT.GET.KV_{WITNESS_KV}.>",
    f"$JS.API.STREAM.INFO.OBJ_{ROSTER_OBJECTS}",  # ... and the roster object store
    f"$JS.API.DIRECT.GET.OBJ_{ROSTER_OBJECTS}",
    f"$JS.API.DIRECT.GET.OBJ_{ROSTER_OBJECTS}.>",
]
CHECKPOINTS = audit_subject(TASKFORCE, "checkpoint")
# Proof requests (request-reply): every member may ask on its own subject; only the audit
# service listens (to all of them).
PROOFS = proof_subjects(TASKFORCE)


def consumer_rights(channel: str, durable: str) -> list[str]:
    stream = stream_name(TASKFORCE, channel)
    return [
        f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}",
        f"$JS.API.CONSUMER.INFO.{stream}.{durable}",
        f"$JS.ACK.{stream}.{durable}.>",
    ]


# The coordinator also runs the audit service: its own consumer on every channel's stream,
# and it publishes the signed checkpoints (subject and bucket).
AUDIT = [
    *(s for c in KIT_CHANNELS for s in consumer_rights(c, audit_durable_name("coord"))),
    CHECKPOINTS,
    f"$KV.{AUDIT_KV}.{CHECKPOINT_KEY}",
]
ROSTER_WRITE = f"$KV.{BUCKET}.{ROSTER_KEY}"
ROSTER_OBJECTS_WRITE = [
    f"$O.{ROSTER_OBJECTS}.C.>",
    f"$O.{ROSTER_OBJECTS}.M.>",
    f"$JS.API.STREAM.MSG.GET.OBJ_{ROSTER_OBJECTS}",
    f"$JS.API.STREAM.PURGE.OBJ_{ROSTER_OBJECTS}",
]
SCHEMA_WRITE = f"$KV.{SCHEMAS}.>"
ADMIN_SEED: bytes = nkeys.encode_seed(b"\x07" * 32, nkeys.PREFIX_BYTE_USER)
ADMIN_NKEY: str = nkeys.from_seed(ADMIN_SEED).public_key.decode()
# What each agency of the kit writes (tfkit.build_taskforce): alerts by police and labour,
# tips by ngo; every member reads alerts, police also reads tips.
WRITES: dict[str, list[str]] = {
    "coord": [],
    "police": ["alerts"],
    "ngo": ["tips"],
    "labour": ["alerts"],
}
USER_RE = re.compile(r"\{ nkey: (U[A-Z2-7]{55})")
ALLOW_RE = re.compile(r"(publish|subscribe): \{ allow: (\[[^\]]*\]) \}")
RESPONSES_RE = re.compile(r"allow_responses: \{ max: (\d+), expires: \"([0-9a-z]+)\" \}")


@dataclasses.dataclass(frozen=True)
class User:
    nkey: str
    publish: list[str] | None  # None: no permissions block at all
    subscribe: list[str] | None
    responses: tuple[int, str] | None = None  # allow_responses (max, expires), if any


def users(config: str) -> dict[str, User]:
    """The users of a rendered configuration by nkey, with their publish/subscribe allow lists."""
    starts = [m.start() for m in USER_RE.finditer(config)]
    found: dict[str, User] = {}
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else len(config)
        block = config[start:end]
        match = USER_RE.match(block)
        assert match is not None
        allow = {kind: json.loads(items) for kind, items in ALLOW_RE.findall(block)}
        responses = RESPONSES_RE.search(block)
        found[match.group(1)] = User(
            match.group(1),
            allow.get("publish"),
            allow.get("subscribe"),
            (int(responses.group(1)), responses.group(2)) if responses else None,
        )
    return found


def nats_allows(allow: list[str] | None, subject: str) -> bool:
    """NATS semantics of an allow list: absent or EMPTY means no restriction at all."""
    if not allow:
        return True
    tokens = subject.split(".")
    for pattern in allow:
        parts = pattern.split(".")
        for i, part in enumerate(parts):
            if part == ">":
                if len(tokens) > i:
                    return True
                break
            if i >= len(tokens) or (part not in ("*", tokens[i])):
                break
        else:
            if len(parts) == len(tokens):
                return True
    return False


def render(tf: TaskForce, store_dir: Path, port: int = 4222) -> str:
    return render_config(tf.trusted(), admin_nkey=ADMIN_NKEY, store_dir=store_dir, port=port)


def nats_check(
    config: Path, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(NATS_SERVER), "-t", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={"PATH": os.environ.get("PATH", os.defpath), **(env or {})},
    )


def with_status(tf: TaskForce, agency: str, status: R.Status) -> TaskForce:
    """The task force after a coordinator set ``agency``'s status and re-signed."""
    _, roster = R.decode_signed_roster(tf.roster_bytes)
    members = [
        msgspec.structs.replace(m, status=status) if m.agency_id == agency else m
        for m in roster.members
    ]
    edited = R.edit(tf.signed, msgspec.structs.replace(roster, members=members), now_ms=tf.now_ms)
    return dataclasses.replace(tf, signed=R.sign(edited, tf.ids["coord"]))


def revoked(tf: TaskForce, agency: str) -> TaskForce:
    signed = R.revoke(tf.signed, agency, reason="compromised", now_ms=tf.now_ms)
    return dataclasses.replace(tf, signed=R.sign(signed, tf.ids["coord"]))


def test_rendered_config_passes_nats_server_check(taskforce: TaskForce, tmp_path: Path) -> None:
    """The configuration for the kit's task force is accepted by ``nats-server -t``."""
    config = tmp_path / "nats.conf"
    config.write_text(render(taskforce, tmp_path / "jetstream", port=14222))
    result = nats_check(config)
    assert result.returncode == 0, result.stderr or result.stdout


@pytest.mark.parametrize("agency", ["coord", "police", "ngo", "labour"])
def test_active_agency_has_exactly_its_own_permissions(
    taskforce: TaskForce, tmp_path: Path, agency: str
) -> None:
    """An active agency gets exactly its own sender, consumer, ack, roster and inbox subjects."""
    # Publish: its sender subjects, its durable consumers (one per channel it reads) and their
    # acks, the consumer names (to find its own), roster reads, proof requests (coordinators
    # also write the roster and run the audit service); subscribe: its own inbox prefix and the
    # checkpoint announcements (the audit service also the proof requests, which it answers
    # through allow_responses). Nothing else.
    user = users(render(taskforce, tmp_path))[taskforce.ids[agency].nats_user]
    channels = readable_channels(taskforce.trusted(), agency)
    assert channels  # every agency of the kit reads something
    consumers = [
        s for channel in channels for s in consumer_rights(channel, durable_name(agency, channel))
    ]
    expected = [channel_subject(TASKFORCE, channel, agency) for channel in WRITES[agency]] + [
        *consumers,
        *ROSTER_READ,
        f"$KV.{WITNESS_KV}.{agency}",  # its own witness cosignature, no one else's
        proof_subject(TASKFORCE, agency),  # its own proof requests, no one else's
        *([ROSTER_WRITE, SCHEMA_WRITE, *ROSTER_OBJECTS_WRITE, *AUDIT] if agency == "coord" else []),
    ]
    assert sorted(user.publish or []) == sorted(expected)
    auditor = agency == "coord"
    assert user.subscribe == [
        f"{inbox_prefix(agency)}.>",
        CHECKPOINTS,
        *([PROOFS] if auditor else []),
    ]
    assert user.responses == ((1, PROOF_REPLY_WINDOW) if auditor else None)


def test_every_active_agency_has_one_user_and_the_outsider_none(
    taskforce: TaskForce, tmp_path: Path
) -> None:
    """The users are the admin plus one per active member; the outsider has none."""
    found = users(render(taskforce, tmp_path))
    members = {taskforce.ids[a].nats_user for a in ("coord", "police", "ngo", "labour")}
    assert set(found) == {ADMIN_NKEY, *members}
    assert taskforce.ids["outsider"].nats_user not in found


def test_no_agency_may_publish_on_another_agencys_subject(
    taskforce: TaskForce, tmp_path: Path
) -> None:
    """No agency may publish as another, consume its consumer or read its inbox."""
    found = users(render(taskforce, tmp_path))
    for agency in ("coord", "police", "ngo", "labour"):
        user = found[taskforce.ids[agency].nats_user]
        for other in ("coord", "police", "ngo", "labour"):
            if other == agency:
                continue
            for channel in ("alerts", "tips"):
                assert not nats_allows(user.publish, channel_subject(TASKFORCE, channel, other))
            for channel in CHANNELS:
                stream = stream_name(TASKFORCE, channel)
                for api in ("MSG.NEXT", "INFO"):
                    subject = f"$JS.API.CONSUMER.{api}.{stream}.{durable_name(other, channel)}"
                    assert not nats_allows(user.publish, subject)
                ack = f"$JS.ACK.{stream}.{durable_name(other, channel)}.1.2.3.4.5"
                assert not nats_allows(user.publish, ack)
            assert not nats_allows(user.subscribe, f"{inbox_prefix(other)}.abc")
            # Nor ask for proofs as another (the audit service's rate limit keys on it).
            assert not nats_allows(user.publish, proof_subject(TASKFORCE, other))


@pytest.mark.parametrize("agency", ["coord", "police", "ngo", "labour"])
def test_agency_may_consume_only_the_channels_it_reads(
    taskforce: TaskForce, tmp_path: Path, agency: str
) -> None:
    """One consumer per channel it reads, on that channel's stream, none for a channel it
    does not read, and nothing on the single all-channels stream of earlier versions."""
    user = users(render(taskforce, tmp_path))[taskforce.ids[agency].nats_user]
    reads = readable_channels(taskforce.trusted(), agency)
    for channel in CHANNELS:
        stream = stream_name(TASKFORCE, channel)
        subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable_name(agency, channel)}"
        assert nats_allows(user.publish, subject) is (channel in reads), channel
        for other in CHANNELS:  # a channel's consumer is never reachable on another's stream
            if other != channel:
                wrong = stream_name(TASKFORCE, other)
                assert not nats_allows(
                    user.publish,
                    f"$JS.API.CONSUMER.MSG.NEXT.{wrong}.{durable_name(agency, channel)}",
                )
    legacy = legacy_stream_name(TASKFORCE)
    for channel in CHANNELS:
        subject = f"$JS.API.CONSUMER.MSG.NEXT.{legacy}.{durable_name(agency, channel)}"
        assert not nats_allows(user.publish, subject)


def test_durable_names_of_different_readers_never_collide() -> None:
    """Names with underscores cannot make one agency's channel consumer another's."""
    pairs = [("a", "b_c"), ("a_b", "c"), ("a_", "b"), ("a", "_b"), ("ab", "c"), ("a", "bc")]
    names = [durable_name(agency, channel) for agency, channel in pairs]
    assert len(set(names)) == len(names)


@given(st.from_regex(NAME_PATTERN), st.lists(st.from_regex(NAME_PATTERN), min_size=1, max_size=8))
def test_every_channel_gets_a_valid_stream_name_of_its_own(
    taskforce_name: str, channels: list[str]
) -> None:
    """Any roster names make valid JetStream stream names (no '.', '*', '>', whitespace or
    path separator, at most 255 bytes), distinct per channel and from the legacy stream."""
    names = {stream_name(taskforce_name, c) for c in set(channels)}
    assert len(names) == len(set(channels))
    assert legacy_stream_name(taskforce_name) not in names
    for name in names:
        assert not re.search(r"[.*>\s/\\]", name)
        assert len(name.encode()) <= 255


def test_server_limits_are_in_the_generated_config(taskforce: TaskForce, tmp_path: Path) -> None:
    """The operator's server limits reach nats.conf, and nats-server accepts them."""
    limits = ServerLimits(
        max_file_store=3 * 1024**3, max_connections=77, max_subscriptions=55, max_ack_pending=999
    )
    text = render_config(
        taskforce.trusted(),
        admin_nkey=ADMIN_NKEY,
        store_dir=tmp_path / "jetstream",
        port=14226,
        limits=limits,
    )
    assert f"max_file_store: {3 * 1024**3}" in text
    assert "max_connections: 77" in text
    assert "max_subscriptions: 55" in text
    assert "max_ack_pending: 999" in text
    config = tmp_path / "nats.conf"
    config.write_text(text)
    result = nats_check(config)
    assert result.returncode == 0, result.stderr or result.stdout


def test_agency_without_channels_may_publish_nothing(taskforce: TaskForce, tmp_path: Path) -> None:
    """An active member with no channel grant may publish on no channel or JetStream API."""
    # NATS reads an EMPTY allow list as "everything": render_config once emitted exactly that
    # (publish: { allow: [] }) for a member added before its grants.
    newcomer = identity("newcomer")
    signed = R.add_member(
        taskforce.signed, newcomer.card_body(), role="member", now_ms=taskforce.now_ms
    )
    tf = dataclasses.replace(taskforce, signed=R.sign(signed, taskforce.ids["coord"]))
    user = users(render(tf, tmp_path))[newcomer.nats_user]
    assert not nats_allows(user.publish, channel_subject(TASKFORCE, "alerts", "police"))
    for channel in CHANNELS:
        assert not nats_allows(
            user.publish, f"$JS.API.STREAM.DELETE.{stream_name(TASKFORCE, channel)}"
        )


def test_revoked_agency_has_no_user(taskforce: TaskForce, tmp_path: Path) -> None:
    """After revocation and re-signing, the agency has no user and no subject of its own."""
    config = render(revoked(taskforce, "labour"), tmp_path)
    assert taskforce.ids["labour"].nats_user not in config
    assert taskforce.ids["labour"].nats_user not in users(config)
    assert "labour" not in re.sub(r"#.*", "", config)


def test_suspended_agency_has_no_user(taskforce: TaskForce, tmp_path: Path) -> None:
    """A suspended agency has no user and no subject of its own."""
    config = render(with_status(taskforce, "police", "suspended"), tmp_path)
    assert taskforce.ids["police"].nats_user not in config
    assert "police" not in re.sub(r"#.*", "", config)


def test_admin_user_is_present_without_restrictions(taskforce: TaskForce, tmp_path: Path) -> None:
    """The admin nkey is a user, unrestricted (it provisions the stream and consumers)."""
    admin = users(render(taskforce, tmp_path))[ADMIN_NKEY]
    assert (admin.publish, admin.subscribe) == (None, None)


def test_revoked_and_suspended_configs_pass_nats_server_check(
    taskforce: TaskForce, tmp_path: Path
) -> None:
    """Configurations without a revoked and a suspended agency pass ``nats-server -t``."""
    tf = with_status(revoked(taskforce, "labour"), "police", "suspended")
    config = tmp_path / "nats.conf"
    config.write_text(render(tf, tmp_path / "jetstream"))
    result = nats_check(config)
    assert result.returncode == 0, result.stderr or result.stdout


def test_written_broker_config_is_accepted(taskforce: TaskForce, tmp_path: Path) -> None:
    """``write_broker_config`` writes DIR/nats.conf, which ``nats-server -t`` accepts."""
    path = write_broker_config(taskforce.trusted(), tmp_path / "broker", port=14223)
    assert path == tmp_path / "broker" / "nats.conf"
    result = nats_check(path)
    assert result.returncode == 0, result.stderr or result.stdout
    assert "listen: 127.0.0.1:14223" in path.read_text()


def test_admin_seed_is_private(taskforce: TaskForce, tmp_path: Path) -> None:
    """DIR/admin.seed is a user nkey seed, mode 0600, whose public key is the admin user."""
    write_broker_config(taskforce.trusted(), tmp_path, port=14224)
    seed_file = tmp_path / "admin.seed"
    assert stat.S_IMODE(seed_file.stat().st_mode) == 0o600
    public = nkeys.from_seed(seed_file.read_bytes().strip()).public_key.decode()
    assert public in users((tmp_path / "nats.conf").read_text())


def test_admin_seed_is_reused(taskforce: TaskForce, tmp_path: Path) -> None:
    """A second ``write_broker_config`` keeps the admin seed and its user."""
    write_broker_config(taskforce.trusted(), tmp_path, port=14225)
    seed = (tmp_path / "admin.seed").read_bytes()
    first = users((tmp_path / "nats.conf").read_text())
    write_broker_config(taskforce.trusted(), tmp_path, port=14225)
    assert (tmp_path / "admin.seed").read_bytes() == seed
    assert users((tmp_path / "nats.conf").read_text()).keys() == first.keys()
    assert stat.S_IMODE((tmp_path / "admin.seed").stat().st_mode) == 0o600


# -- broker_config/: the templates for operators who run nats-server themselves ---------------


def template_variables(template: Path) -> set[str]:
    """The $VARIABLES a template uses (outside comments)."""
    text = re.sub(r"#.*", "", template.read_text())
    return set(re.findall(r"\$([A-Z][A-Z0-9_]*)", text))


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a test certificate for the TLS template")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
         "-subj", "/CN=localhost"],
        capture_output=True, check=True, timeout=30,
    )  # fmt: skip
    return cert, key


def operator_setup(taskforce: TaskForce, template: Path, directory: Path) -> dict[str, str]:
    """What broker_config/README.md tells operators to do: ``tfshare broker config`` into a
    directory, the template copied beside its users file; returns the environment."""
    write_broker_config(taskforce.trusted(), directory, port=14230)
    shutil.copyfile(template, directory / template.name)
    env = {
        "TFSHARE_HOST": "127.0.0.1",
        "TFSHARE_PORT": "14231",
        "TFSHARE_STORE_DIR": str(directory / "jetstream"),
        "TFSHARE_MAX_PAYLOAD": "1MB",
        "TFSHARE_MAX_FILE_STORE": "1GB",
    }
    if "TFSHARE_TLS_CERT" in template_variables(template):
        cert, key = self_signed_certificate(directory)
        env |= {"TFSHARE_TLS_CERT": str(cert), "TFSHARE_TLS_KEY": str(key)}
    return env


def test_there_are_operator_templates() -> None:
    """broker_config/ holds the development config and the single-node templates."""
    names = {t.name for t in TEMPLATES}
    assert {"dev.conf", "single-node.conf", "single-node-tls.conf"} <= names


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda t: t.name)
def test_every_template_passes_nats_server_check(
    taskforce: TaskForce, tmp_path: Path, template: Path
) -> None:
    """Each file in broker_config/, set up as its README says, passes ``nats-server -t``."""
    env = operator_setup(taskforce, template, tmp_path)
    result = nats_check(tmp_path / template.name, env)
    assert result.returncode == 0, result.stderr or result.stdout
    assert "is valid" in result.stdout + result.stderr


@pytest.mark.parametrize(
    "template", [t for t in TEMPLATES if template_variables(t)], ids=lambda t: t.name
)
def test_a_template_without_one_of_its_variables_is_refused(
    taskforce: TaskForce, tmp_path: Path, template: Path
) -> None:
    """A missing variable stops ``nats-server -t`` with its name (not a server on defaults)."""
    env = operator_setup(taskforce, template, tmp_path)
    for variable in sorted(template_variables(template)):
        result = nats_check(
            tmp_path / template.name, {k: v for k, v in env.items() if k != variable}
        )
        assert result.returncode != 0, variable
        assert variable in result.stderr + result.stdout


@pytest.mark.parametrize(
    "template", [t for t in TEMPLATES if t.name != "dev.conf"], ids=lambda t: t.name
)
def test_a_template_without_the_generated_users_is_refused(
    taskforce: TaskForce, tmp_path: Path, template: Path
) -> None:
    """Without tfshare-users.conf beside it, a template does not start (never without users)."""
    env = operator_setup(taskforce, template, tmp_path)
    (tmp_path / USERS_INCLUDE).unlink()
    result = nats_check(tmp_path / template.name, env)
    assert result.returncode != 0
    assert USERS_INCLUDE in result.stderr + result.stdout
    assert f"include ./{USERS_INCLUDE}" in template.read_text()


def test_users_include_has_exactly_the_users_of_the_full_config(
    taskforce: TaskForce, tmp_path: Path
) -> None:
    """DIR/tfshare-users.conf holds every user of DIR/nats.conf with the same permissions,
    and nothing an operator's template decides (listen address, storage, max_payload)."""
    write_broker_config(taskforce.trusted(), tmp_path, port=14232)
    full = users((tmp_path / "nats.conf").read_text())
    include = (tmp_path / USERS_INCLUDE).read_text()
    assert users(include) == full
    assert taskforce.ids["police"].nats_user in users(include)
    body = re.sub(r"#.*", "", include)
    for key in ("listen", "jetstream", "max_payload", "store_dir", "server_name"):
        assert key not in body


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda t: t.name)
def test_every_template_variable_is_documented(template: Path) -> None:
    """Every $VARIABLE a template uses is explained in broker_config/README.md."""
    readme = (BROKER_CONFIG / "README.md").read_text()
    for variable in template_variables(template):
        assert f"`{variable}`" in readme, variable


def test_only_coordinators_and_auditors_run_the_audit_service(
    taskforce: TaskForce, tmp_path: Path
) -> None:
    """Members may read checkpoints, never sign or announce them, nor consume as the auditor."""
    found = users(render(taskforce, tmp_path))
    for agency in ("police", "ngo", "labour"):
        user = found[taskforce.ids[agency].nats_user]
        assert nats_allows(user.subscribe, CHECKPOINTS)
        assert not nats_allows(user.publish, CHECKPOINTS)
        assert not nats_allows(user.publish, f"$KV.{AUDIT_KV}.{CHECKPOINT_KEY}")
        for auditor in ("coord", agency):
            for channel in CHANNELS:
                stream = stream_name(TASKFORCE, channel)
                subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{audit_durable_name(auditor)}"
                assert not nats_allows(user.publish, subject)
    coord = found[taskforce.ids["coord"].nats_user]
    assert nats_allows(coord.publish, CHECKPOINTS)


def test_members_ask_for_proofs_and_only_the_audit_service_answers(
    taskforce: TaskForce, tmp_path: Path
) -> None:
    """Every active member may send a proof request; only coordinators and auditors may
    receive them, and they answer with one reply per request received (allow_responses), not
    with a right to publish into other agencies' inboxes. Replies reach a requester on its
    own inbox prefix, which no other member may subscribe to."""
    auditor = identity("inspector")
    signed = R.add_member(
        taskforce.signed, auditor.card_body(), role="auditor", now_ms=taskforce.now_ms
    )
    tf = dataclasses.replace(
        taskforce,
        ids={**taskforce.ids, "inspector": auditor},
        signed=R.sign(signed, taskforce.ids["coord"]),
    )
    found = users(render(tf, tmp_path))
    for agency in ("coord", "police", "ngo", "labour", "inspector"):
        user = found[tf.ids[agency].nats_user]
        serves = agency in ("coord", "inspector")
        for other in ("coord", "police", "ngo", "labour", "inspector"):
            # Its own proof subject only; the audit service hears every member's.
            asks = proof_subject(TASKFORCE, other)
            assert nats_allows(user.publish, asks) is (other == agency)
            assert nats_allows(user.subscribe, asks) is serves
        assert user.responses == ((1, PROOF_REPLY_WINDOW) if serves else None)
        for other in ("coord", "police", "ngo", "labour", "inspector"):
            # Nobody, not even the audit service, holds a standing right on an inbox.
            reply = f"{inbox_prefix(other)}.abc.def"
            assert not nats_allows(user.publish, reply)
            assert nats_allows(user.subscribe, reply) is (other == agency)
    assert auditor.nats_user in found
    config = tmp_path / "nats.conf"
    config.write_text(render(tf, tmp_path / "jetstream"))
    result = nats_check(config)
    assert result.returncode == 0, result.stderr or result.stdout


def test_a_revoked_auditor_cannot_serve_or_ask_for_proofs(
    taskforce: TaskForce, tmp_path: Path
) -> None:
    """Revocation removes the NATS user, and with it every proof permission."""
    auditor = identity("inspector")
    signed = R.add_member(
        taskforce.signed, auditor.card_body(), role="auditor", now_ms=taskforce.now_ms
    )
    signed = R.revoke(signed, "inspector", reason="compromised", now_ms=taskforce.now_ms)
    tf = dataclasses.replace(taskforce, signed=R.sign(signed, taskforce.ids["coord"]))
    config = render(tf, tmp_path)
    assert auditor.nats_user not in users(config)
    assert config.count("allow_responses") == 1  # the coordinator's


def test_names_imported_from_broker_are_the_names_module_s() -> None:
    """Callers that import names from tfshare.broker (before tfshare.names existed) get the
    very same objects: one definition of each name."""
    moved = [n for n in broker.__all__ if hasattr(names, n)]
    assert "channel_subject" in moved and "PROOF_REPLY_WINDOW" in moved
    for name in moved:
        assert getattr(broker, name) is getattr(names, name), name


def test_generated_config_and_templates_fsync_before_every_acknowledgement(
    taskforce: TaskForce, tmp_path: Path
) -> None:
    """Issue 14 item 7: a publisher drops a message from its outbox on the broker's ack, so
    the ack must mean "on disk" (nats-server's default syncs every 2 minutes)."""
    config = render(taskforce, tmp_path / "jetstream", port=14222)
    jetstream = config[config.index("jetstream {") : config.index("authorization {")]
    assert "sync_interval: always" in jetstream
    templates = Path(__file__).resolve().parents[2] / "broker_config"
    for name in ("single-node.conf", "single-node-tls.conf", "dev.conf"):
        assert "sync_interval: always" in (templates / name).read_text(), name
