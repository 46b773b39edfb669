"""A wrong record in the broker's registry bucket, or a bad file in an agency's registry cache,
never poisons the agency (issue 11, item 3), on a real nats-server.

The scene: the coordinator registers tf.alert/2 and tf.red_flag/2, but what sits in the
bucket under the key of tf.red_flag/2 is the (validly signed) record of tf.alert/2. ngo's
agent meets police's tf.red_flag/2 message, fetches, refuses the record and caches nothing;
police's tf.alert/1 message is delivered; after a restart ``tfshare inbox list`` and
``tfshare schema list`` work.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from livekit import make_agent, publish_as, run_agents
from structlog.testing import capture_logs
from tfkit import TaskForce, example_json

from tfshare import transport
from tfshare.broker import BrokerProcess, channel_subject
from tfshare.encoding import encode
from tfshare.keyfile import KDF_PROFILES, seal_keyfile
from tfshare.registry.book import shipped
from tfshare.registry.schema import Schema
from tfshare.registry_store import DirectoryStore
from tfshare.seal import seal
from tfshare.workflows import live
from tfshare.workflows.exchange import Credentials
from tfshare.workflows.live import Agency
from tfshare.workflows.schemas import load_registry, register, store_for

TF = "nl-north"
TFSHARE = Path(sys.executable).parent / "tfshare"

pytestmark = pytest.mark.slow


def _now() -> int:
    return time.time_ns() // 1_000_000


def _v2_doc(subject: str) -> dict[str, Any]:
    v1 = shipped().lookup(f"{subject}/1")
    assert v1 is not None
    doc = copy.deepcopy(v1.document)
    doc["$id"] = f"urn:tfshare:schema:{subject}/2"
    doc["properties"]["case_ref"] = {"type": "string", "maxLength": 64, "default": "none"}
    return doc


def _coordinator_cache(tf: TaskForce, root: Path) -> DirectoryStore:
    """The coordinator's cache with tf.alert/2 and tf.red_flag/2 registered (not published)."""
    cache = store_for(root / "coord-registry", TF)
    for subject in ("tf.alert", "tf.red_flag"):
        path = root / f"{subject}-2.json"
        path.write_text(json.dumps(_v2_doc(subject)))
        register(
            path, identity=tf.ids["coord"], roster=tf.trusted(), store=cache, mode=None, now_ms=1
        )
    return cache


def _put_record(tf: TaskForce, url: str, subject: str, version: int, data: bytes) -> None:
    """What a coordinator's NATS user may do: put any bytes under any key of the bucket."""

    async def put() -> None:
        identity = tf.ids["coord"]
        conn = await transport.connect(
            url,
            nkey_seed=identity.nats_seed_encoded(),
            agency=identity.agency_id,
            name="test",
            reconnect=False,
        )
        try:
            await transport.put_schema_record(conn, TF, subject, version, data)
        finally:
            await conn.close()

    asyncio.run(put())


def _publish(tf: TaskForce, url: str, schema: Schema, body_json: bytes, seq: int) -> str:
    sealed = seal(
        identity=tf.ids["police"],
        roster=tf.trusted(),
        channel="alerts",
        to=["ngo"],
        schema=schema,
        body=schema.to_body(schema.from_json(body_json)),
        seq=seq,
        now_ms=_now(),
        rng=os.urandom,
    )
    publish_as(
        tf, "police", url, channel_subject(TF, "alerts", "police"), sealed.data, sealed.msg_id.hex()
    )
    return sealed.msg_id.hex()


def _ngo_files(tf: TaskForce, root: Path) -> tuple[Credentials, list[str]]:
    """ngo's key file, roster and anchor on disk; the CLI flags that name them."""
    root.mkdir(parents=True, exist_ok=True)
    passphrase = os.urandom(8).hex().encode()
    key = root / "ngo.key"
    key.write_bytes(
        seal_keyfile(
            tf.ids["ngo"], passphrase, limits=KDF_PROFILES["insecure-test"], rng=os.urandom
        )
    )
    (root / "ngo.pass").write_bytes(passphrase + b"\n")
    (root / "tf.roster").write_bytes(tf.roster_bytes)
    (root / "tf.anchor").write_bytes(encode(tf.anchor))
    flags = [
        "--key", str(key), "--passphrase-file", str(root / "ngo.pass"),
        "--roster", str(root / "tf.roster"), "--anchor", str(root / "tf.anchor"),
        "--state", str(root / "agents" / "ngo"), "--registry", str(root / "registry"),
    ]  # fmt: skip
    return Credentials(key, passphrase), flags


def _load_ngo(creds: Credentials, root: Path) -> Agency:
    """ngo's agency as 'tfshare agent run' loads it (same state database as the agent's)."""
    return Agency.load(
        creds,
        roster_path=root / "tf.roster",
        anchor_path=root / "tf.anchor",
        state_dir=root / "agents" / "ngo",
        registry_dir=root / "registry",
    )


def _tfshare(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(root),
        "TFSHARE_HOME": str(root / "home"),
        "LC_ALL": "C.UTF-8",
        "PYTHONIOENCODING": "utf-8",
    }
    return subprocess.run(
        [str(TFSHARE), *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _tree(root: Path) -> dict[str, bytes | None]:
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): p.read_bytes() if p.is_file() else None
        for p in sorted(root.rglob("*"))
        if p.name != ".lock"
    }


def test_a_record_under_another_subjects_key_does_not_poison_the_agency(
    live_tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    """tf.alert/2's record under the key tf.red_flag.v2: ngo's agent refuses it, caches
    nothing, quarantines the tf.red_flag/2 message (E_SCHEMA) and delivers police's other
    messages; ngo's commands keep working after a restart."""
    coord = _coordinator_cache(live_tf, tmp_path)
    alert2_record = coord.get("tf.alert", 2)
    assert alert2_record is not None
    _put_record(live_tf, broker.url, "tf.red_flag", 2, alert2_record)
    coord_registry = load_registry(coord, live_tf.trusted())
    red_flag2 = coord_registry.lookup("tf.red_flag/2")
    alert1 = shipped().lookup("tf.alert/1")
    assert red_flag2 is not None and alert1 is not None

    creds, flags = _ngo_files(live_tf, tmp_path)
    agency = _load_ngo(creds, tmp_path)
    cache = store_for(tmp_path / "registry", TF)
    before = _tree(cache.root)

    poisoned_id = _publish(live_tf, broker.url, red_flag2, example_json("tf.red_flag/1"), 1)
    first_id = _publish(live_tf, broker.url, alert1, example_json("tf.alert/1"), 2)
    later_id = _publish(live_tf, broker.url, alert1, example_json("tf.alert/1"), 3)

    ngo = make_agent(live_tf, "ngo", broker.url, tmp_path / "agents")

    ngo.fetch_schema = agency.fetch_schema
    with capture_logs() as logs:
        run_agents(
            [ngo],
            lambda: ngo.stats.delivered == 2 and len(ngo.store.quarantined()) == 1,
            timeout=20,
        )
    assert ngo.stats.delivered == 2
    ngo.store.close()
    agency.store.close()

    refusals = [log for log in logs if log["event"] == "schema_fetch_failed"]
    assert refusals and "tf.alert/2, not of tf.red_flag/2" in refusals[0]["reason"]
    assert _tree(cache.root) == before  # nothing of the wrong record was written
    (quarantined,) = _load_ngo(creds, tmp_path).store.quarantined()
    assert quarantined.code == "E_SCHEMA"
    assert quarantined.msg_id is not None and quarantined.msg_id.hex() == poisoned_id

    # After a restart, the agency's commands work and know every message it received.
    listed = _tfshare(tmp_path, "inbox", "list", "--json", *flags)
    assert listed.returncode == 0, listed.stderr
    ids = {m["msg_id"] for m in json.loads(listed.stdout)["messages"]}
    assert ids == {first_id, later_id}
    assert _load_ngo(creds, tmp_path).registry.lookup("tf.red_flag/2") is None


def test_a_poisoned_cache_entry_left_on_disk_is_skipped_by_every_command(
    live_tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    """The cache as an older tfshare left it (tf.alert/2's record filed as tf.red_flag/2)
    next to a good tf.alert/2: ngo's agent starts and delivers tf.alert/2 messages, and
    'inbox list' and 'schema list' exit 0 with a warning on stderr naming the file."""
    coord = _coordinator_cache(live_tf, tmp_path)
    alert2_record = coord.get("tf.alert", 2)
    assert alert2_record is not None
    creds, flags = _ngo_files(live_tf, tmp_path)
    cache = store_for(tmp_path / "registry", TF)
    cache.create("tf.alert", 2, alert2_record)
    cache.create("tf.red_flag", 2, alert2_record)  # the poison
    poison = cache.root / "tf.red_flag" / "2.tfschema"

    with capture_logs() as logs:
        agency = _load_ngo(creds, tmp_path)
    assert [log["file"] for log in logs if log["event"] == "schema_record_skipped"] == [str(poison)]
    alert2 = agency.registry.lookup("tf.alert/2")
    assert alert2 is not None

    body = json.loads(example_json("tf.alert/1"))
    body["case_ref"] = "NL-2026-0042"
    msg_id = _publish(live_tf, broker.url, alert2, json.dumps(body).encode(), 1)
    ngo = live.make_agent(agency, url=broker.url, clock=_now)  # as 'tfshare agent run' does
    run_agents([ngo], lambda: ngo.stats.delivered == 1, timeout=15)
    agency.store.close()
    assert ngo.stats.delivered == 1

    listed = _tfshare(tmp_path, "inbox", "list", "--json", *flags)
    assert listed.returncode == 0, listed.stderr
    assert [m["msg_id"] for m in json.loads(listed.stdout)["messages"]] == [msg_id]
    warnings = [line for line in listed.stderr.splitlines() if "schema_record_skipped" in line]
    assert len(warnings) == 1 and str(poison) in warnings[0] and '"warning"' in warnings[0]
    assert "tfshare: error" not in listed.stderr

    schemas = _tfshare(
        tmp_path, "schema", "list", "--json", *flags[4:8], "--registry", str(tmp_path / "registry")
    )
    assert schemas.returncode == 0, schemas.stderr
    assert "tf.alert/2" in schemas.stdout and "tf.red_flag/2" not in schemas.stdout
    assert "schema_record_skipped" in schemas.stderr
