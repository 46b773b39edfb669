"""Bad input on a live broker (issue 4): NATS credentials the broker does not know, messages over
the size limits, a full or damaged state database, a missing stream.

Real nats-server processes (one per test, configured from the kit's roster, or from the
operators' template in broker_config/), the real ``tfshare`` command as a subprocess, and agents
in-process. Every CLI failure is one ``tfshare: error:`` line followed by one ``tfshare: hint:``
line, the documented exit code, no traceback, nothing on stdout, and nothing lost or
half-written: the tests look in the outbox, the inbox, the quarantine and the stream.

A full disk is simulated with SQLite's ``PRAGMA max_page_count`` (SQLITE_FULL, "database or disk
is full"): set on the agent's own connection, or, for a CLI subprocess, on every connection the
process opens (a wrapper around ``sqlite3.connect``; the pragma is per connection).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import structlog
from livekit import free_port, make_agent, publish_as, run_agents
from tfkit import TaskForce, example_dict, identity

from tfshare import roster as R
from tfshare import transport
from tfshare.broker import (
    MAX_PAYLOAD,
    BrokerProcess,
    channel_subject,
    durable_name,
    stream_name,
)
from tfshare.encoding import encode
from tfshare.envelope import MAX_ENVELOPE
from tfshare.errors import BrokerError
from tfshare.keyfile import KDF_PROFILES, seal_keyfile
from tfshare.seal import Sealed
from tfshare.store import StateStore
from tfshare.workflows.live import (
    USERS_INCLUDE,
    admin_seed,
    provision_broker,
    write_broker_config,
)

TFSHARE = Path(sys.executable).parent / "tfshare"
REPO = Path(__file__).resolve().parents[2]
ALERT = REPO / "examples" / "alert.json"
TASKFORCE = "nl-north"
SUBJECT = channel_subject(TASKFORCE, "alerts", "police")

# ``tfshare`` whose state database cannot grow: every SQLite connection the process opens is
# capped at the pages the file has (SQLITE_FULL as soon as a write needs a new page).
FULL_DISK_TFSHARE = """
import sqlite3, sys

_connect = sqlite3.connect

def connect(*args, **kwargs):
    db = _connect(*args, **kwargs)
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count = {max(pages, 1)}")
    return db

sqlite3.connect = connect
sys.argv = ["tfshare", *sys.argv[1:]]
from tfshare.cli.app import main
main()
"""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# -- the task forces --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def newer_tf(live_tf: TaskForce) -> TaskForce:
    """The kit's task force after "newcomer" joined (reads and writes alerts), re-signed: a
    roster the module's brokers, configured from the kit's roster, know nothing of."""
    newcomer = identity("newcomer")
    edited = R.add_member(live_tf.signed, newcomer.card_body(), role="member", now_ms=now_ms())
    edited = R.grant(edited, "newcomer", channel="alerts", read=True, write=True, now_ms=now_ms())
    return dataclasses.replace(
        live_tf,
        ids={**live_tf.ids, "newcomer": newcomer},
        signed=R.sign(edited, live_tf.ids["coord"]),
    )


@dataclasses.dataclass(frozen=True)
class Files:
    """An agency's key (with its passphrase file), roster, anchor and state, on disk."""

    root: Path
    agency: str

    @property
    def state(self) -> Path:
        return self.root / "state"

    def args(self) -> list[str]:
        return [
            "--key", str(self.root / f"{self.agency}.key"),
            "--passphrase-file", str(self.root / f"{self.agency}.pass"),
            "--roster", str(self.root / "tf.roster"),
            "--anchor", str(self.root / "tf.anchor"),
            "--state", str(self.state),
        ]  # fmt: skip

    def store(self) -> StateStore:
        return StateStore(self.state / "state.db")


def agency_files(tf: TaskForce, agency: str, root: Path) -> Files:
    root.mkdir(parents=True, exist_ok=True)
    passphrase = f"{agency} passphrase {os.urandom(4).hex()}".encode()
    (root / f"{agency}.pass").write_bytes(passphrase + b"\n")
    key = seal_keyfile(
        tf.ids[agency], passphrase, limits=KDF_PROFILES["insecure-test"], rng=os.urandom
    )
    (root / f"{agency}.key").write_bytes(key)
    (root / f"{agency}.key").chmod(0o600)
    (root / "tf.roster").write_bytes(encode(tf.signed))
    (root / "tf.anchor").write_bytes(encode(tf.anchor))
    return Files(root, agency)


# -- running tfshare --------------------------------------------------------------------------


def clean_env(home: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(home),
        "TFSHARE_HOME": str(home),
        "TFSHARE_KDF": "insecure-test",
        "TFSHARE_TEST": "1",  # test keys: no warning about their insecure test cost
        "LC_ALL": "C.UTF-8",
        "PYTHONIOENCODING": "utf-8",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def tfshare(
    home: Path, *args: str | os.PathLike[str], full_disk: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run the tfshare command once (``full_disk``: its state database cannot grow)."""
    home.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-c", FULL_DISK_TFSHARE] if full_disk else [str(TFSHARE)]
    return subprocess.run(
        [*command, *(os.fspath(a) for a in args)],
        cwd=home,
        env=clean_env(home),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=60,
        check=False,
    )


def publish(
    files: Files, url: str, *extra: str, body: Path = ALERT, full_disk: bool = False
) -> subprocess.CompletedProcess[str]:
    return tfshare(
        files.root / "home",
        "publish", "alert", "--channel", "alerts", "--file", body, *files.args(),
        "--server", url, *extra,
        full_disk=full_disk,
    )  # fmt: skip


def failure(result: subprocess.CompletedProcess[str], code: int) -> tuple[str, str]:
    """Assert a clean failure with ``code``; returns the error and hint lines' texts."""
    assert result.returncode == code, f"exit {result.returncode}\n{result.stderr}"
    lines = result.stderr.splitlines()
    errors = [i for i, line in enumerate(lines) if line.startswith("tfshare: error: ")]
    hints = [i for i, line in enumerate(lines) if line.startswith("tfshare: hint: ")]
    assert len(errors) == 1 and len(hints) == 1, result.stderr
    assert hints[0] == errors[0] + 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stdout == ""
    return (
        lines[errors[0]].removeprefix("tfshare: error: "),
        lines[hints[0]].removeprefix("tfshare: hint: "),
    )


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    return result


def big_body(directory: Path) -> Path:
    """A valid alert whose envelope is about 17 KB (the summary at its 4000-character limit)."""
    body = example_dict("tf.alert/1")
    body["summary"] = "Observed repeatedly. " * 190
    path = directory / "big-alert.json"
    path.write_text(json.dumps(body))
    return path


def outbox_of(files: Files) -> tuple[list[str], list[tuple[str, str]]]:
    """(msg_ids waiting in the outbox, [(msg_id, reason)] set aside as refused)."""
    store = files.store()
    try:
        waiting = [m.hex() for m, _, _ in store.outbox()]
        refused = [(m.hex(), reason) for m, _, reason in store.outbox_refusals()]
        return waiting, refused
    finally:
        store.close()


def outbound_seq(files: Files) -> int | None:
    db = sqlite3.connect(files.state / "state.db")
    try:
        row = db.execute("SELECT seq FROM outbound_seq WHERE channel = 'alerts'").fetchone()
        return int(row[0]) if row else None
    finally:
        db.close()


# -- the broker -------------------------------------------------------------------------------


async def _admin(broker: BrokerProcess) -> transport.Connection:
    return await transport.connect(
        broker.url,
        nkey_seed=admin_seed(broker.config.parent),
        agency=None,
        name="test-admin",
        reconnect=False,
    )


def stream_messages(broker: BrokerProcess) -> int:
    async def count() -> int:
        admin = await _admin(broker)
        try:
            total = 0
            for channel in ("alerts", "tips"):  # the kit's channels, a stream each
                info = await admin.js.stream_info(stream_name(TASKFORCE, channel))
                total += int(info.state.messages)
            return total
        finally:
            await admin.close()

    return asyncio.run(count())


def delete_stream(broker: BrokerProcess) -> None:
    async def delete() -> None:
        admin = await _admin(broker)
        try:
            for channel in ("alerts", "tips"):
                await admin.js.delete_stream(stream_name(TASKFORCE, channel))
        finally:
            await admin.close()

    asyncio.run(delete())


async def consumer_state(broker: BrokerProcess, agency: str) -> tuple[int, int, int]:
    """(pending, awaiting an ack, stream seq of the ack floor) of the agency's consumer on
    'alerts' (the channel these tests publish on)."""
    admin = await _admin(broker)
    try:
        info = await admin.js.consumer_info(
            stream_name(TASKFORCE, "alerts"), durable_name(agency, "alerts")
        )
        return int(info.num_pending), int(info.num_ack_pending), int(info.ack_floor.stream_seq)
    finally:
        await admin.close()


def sealed_alert(tf: TaskForce, sender: str = "police", *, body: bytes | None = None) -> Sealed:
    return tf.seal(sender, now_ms=now_ms(), body=body, rng_seed=os.urandom(8).hex())


def big_sealed_alert(tf: TaskForce) -> Sealed:
    schema = tf.schemas.lookup("tf.alert/1")
    assert schema is not None
    body = example_dict("tf.alert/1")
    body["summary"] = "Observed repeatedly. " * 190
    record = schema.from_json(json.dumps(body).encode())
    return sealed_alert(tf, body=schema.to_body(record))


Log = MutableMapping[str, Any]


def events(logs: Sequence[Log], name: str) -> list[Log]:
    return [entry for entry in logs if entry.get("event") == name]


def wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


async def wait_async(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return predicate()


# == 1. NATS credentials the broker does not know ==============================================


@pytest.mark.parametrize("queue", [True, False], ids=["queue", "no-queue"])
def test_publish_with_credentials_the_broker_does_not_know_exits_4_and_queues_nothing(
    newer_tf: TaskForce, broker: BrokerProcess, tmp_path: Path, queue: bool
) -> None:
    """An agency the broker's configuration was generated without: exit 4 "authorization
    violation" (not "queued: unreachable"), a hint to regenerate the broker config, and the
    message neither sent nor left in the outbox (with or without --no-queue)."""
    files = agency_files(newer_tf, "newcomer", tmp_path / "newcomer")
    before = stream_messages(broker)
    result = publish(files, broker.url, *([] if queue else ["--no-queue"]))
    error, hint = failure(result, 4)
    assert "authorization violation" in error
    assert "'newcomer'" in error
    assert newer_tf.ids["newcomer"].nats_user in error
    assert "neither sent nor queued" in error
    assert "does not know this agency's NATS key" in hint
    assert "regenerate the broker config from the current roster" in hint
    assert "queued:" not in result.stderr
    assert outbox_of(files) == ([], [])
    assert stream_messages(broker) == before


def test_an_auth_failure_keeps_what_was_queued_before(
    newer_tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    """A message queued while the broker was down stays queued (nothing lost) when the next
    publish meets an authorization failure; only the refused publish is not kept."""
    files = agency_files(newer_tf, "newcomer", tmp_path / "newcomer")
    queued = ok(publish(files, f"nats://127.0.0.1:{free_port()}", "--json"))
    first = json.loads(queued.stdout)
    assert first["queued"] is True
    failure(publish(files, broker.url), 4)
    assert outbox_of(files) == ([first["msg_id"]], [])


def test_agent_with_credentials_the_broker_does_not_know_backs_off_and_keeps_running(
    newer_tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    """``tfshare agent run`` refused by the broker logs ``broker_auth_failed`` with a growing
    pause (1 s, 2 s, ...: no spinning, and no "broker unavailable"), does not crash, and stops
    cleanly on SIGTERM."""
    files = agency_files(newer_tf, "newcomer", tmp_path / "newcomer")
    err = tmp_path / "agent.err"
    with err.open("wb") as stderr:
        agent = subprocess.Popen(
            [str(TFSHARE), "agent", "run", *files.args(), "--server", broker.url],
            cwd=tmp_path,
            env=clean_env(files.root / "home"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )

    def refused() -> list[Log]:
        complete = err.read_text().splitlines(keepends=True)
        logged = [json.loads(line) for line in complete if line[:1] == "{" and line[-1:] == "\n"]
        return events(logged, "broker_auth_failed")

    try:
        assert wait_for(lambda: len(refused()) >= 2 or agent.poll() is not None, 15)
        assert agent.poll() is None, err.read_text()
        first, second = refused()[:2]
        assert (first["retry_s"], second["retry_s"]) == (1.0, 2.0)
        waited = dt.datetime.fromisoformat(second["timestamp"]) - dt.datetime.fromisoformat(
            first["timestamp"]
        )
        assert waited.total_seconds() >= 0.9  # the pause is kept: no spinning
        assert "authorization violation" in first["reason"]
        assert "broker_unavailable" not in err.read_text()
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=5) == 0, err.read_text()
        text = err.read_text()
        assert "agent stopped: 0 delivered" in text
        assert "Traceback" not in text
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(timeout=5)


def test_agent_connects_once_the_broker_config_is_regenerated_from_the_roster(
    newer_tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    """The fix the hint names works on a running agent: after the broker's configuration is
    regenerated from the current roster (and reloaded, and provisioned), the refused agent
    connects by itself and receives."""
    agent = make_agent(newer_tf, "newcomer", broker.url, tmp_path)
    agent.auth_retry_s, agent.auth_retry_max_s = 0.2, 0.4
    sealed = sealed_alert(newer_tf)  # from police, to every reader of the newer roster

    async def main() -> list[Log]:
        stop = asyncio.Event()
        with structlog.testing.capture_logs() as logs:
            task = asyncio.create_task(agent.run(stop))
            assert await wait_async(lambda: len(events(logs, "broker_auth_failed")) >= 2, 5)
            directory = broker.config.parent
            write_broker_config(newer_tf.trusted(), directory, port=broker.port)
            broker.reload()
            await provision_broker(broker.url, directory, newer_tf.trusted())
            await asyncio.to_thread(
                publish_as, newer_tf, "police", broker.url, SUBJECT, sealed.data
            )
            delivered = await wait_async(lambda: agent.stats.delivered == 1, 10)
            stop.set()
            await asyncio.wait_for(task, 10)
        assert delivered, logs
        return logs

    logs = asyncio.run(main())
    assert [i.msg_id for i in agent.store.inbox()] == [sealed.msg_id]
    assert len(events(logs, "broker_auth_failed")) <= 12  # 0.2 s, then every 0.4 s at most


# == 2. Messages over the size limits ==========================================================


async def _publish_sizes(
    tf: TaskForce, url: str, sizes: list[int]
) -> list[tuple[int, bool] | BrokerError]:
    """Publish payloads of these sizes as police, on one connection, in order."""
    conn = await transport.connect(
        url, nkey_seed=tf.ids["police"].nats_seed_encoded(), agency="police", name="t"
    )
    results: list[tuple[int, bool] | BrokerError] = []
    try:
        for size in sizes:
            try:
                ack = await transport.publish(
                    conn, SUBJECT, b"x" * size, msg_id=os.urandom(16).hex(), timeout=2
                )
            except BrokerError as exc:
                results.append(exc)
            else:
                results.append(ack)
    finally:
        await conn.close()
    return results


def test_a_payload_over_the_brokers_max_payload_is_refused_clearly(
    live_tf: TaskForce, broker: BrokerProcess
) -> None:
    """Over max_payload: MessageTooLarge naming the sizes, before sending (the server would
    close the connection): the same connection then publishes a normal envelope."""
    too_big, normal = asyncio.run(_publish_sizes(live_tf, broker.url, [MAX_PAYLOAD, 2000]))
    assert isinstance(too_big, transport.MessageTooLarge), too_big
    assert f"max_payload {MAX_PAYLOAD} bytes" in too_big.message
    assert "at least 1MB" in too_big.hint
    assert isinstance(normal, tuple)
    assert stream_messages(broker) == 1


def test_a_payload_over_the_streams_limit_is_refused_clearly(
    live_tf: TaskForce, broker: BrokerProcess
) -> None:
    """Under max_payload but over the stream's maximum message size (the envelope limit plus
    headroom): JetStream refuses it, reported as MessageTooLarge, not "broker unavailable"."""
    too_big, normal = asyncio.run(
        _publish_sizes(live_tf, broker.url, [MAX_ENVELOPE + 16 * 1024, 2000])
    )
    assert isinstance(too_big, transport.MessageTooLarge), too_big
    assert "maximum message size" in too_big.message
    assert "unavailable" not in too_big.message
    assert isinstance(normal, tuple)
    assert stream_messages(broker) == 1


def test_an_envelope_over_the_envelope_limit_is_quarantined_and_the_flow_goes_on(
    live_tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    """An envelope the broker carries but over 512 KiB reaches the agent: quarantined with
    E_TOO_LARGE (acknowledged, not redelivered), and the next message is delivered."""
    oversized = b"x" * (MAX_ENVELOPE + 100)
    publish_as(live_tf, "police", broker.url, SUBJECT, oversized)
    real = sealed_alert(live_tf)
    publish_as(live_tf, "police", broker.url, SUBJECT, real.data, real.msg_id.hex())
    ngo = make_agent(live_tf, "ngo", broker.url, tmp_path)
    run_agents([ngo], lambda: ngo.stats.delivered == 1 and ngo.stats.rejected == 1)
    assert [q.code for q in ngo.store.quarantined()] == ["E_TOO_LARGE"]
    kept = ngo.store.quarantined()[0]
    assert kept.size == len(oversized) and len(kept.envelope) == 64 * 1024
    assert [i.msg_id for i in ngo.store.inbox()] == [real.msg_id]
    assert asyncio.run(consumer_state(broker, "ngo"))[:2] == (0, 0)


@pytest.fixture
def template_broker(
    live_tf: TaskForce, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[BrokerProcess]:
    """broker_config/single-node.conf set up as its README says (``tfshare broker config``,
    the template beside the users file), with max_payload 8KB: the operator's mistake."""
    directory = tmp_path / "operator"
    write_broker_config(live_tf.trusted(), directory, port=free_port())
    assert (directory / USERS_INCLUDE).is_file()
    shutil.copyfile(REPO / "broker_config" / "single-node.conf", directory / "single-node.conf")
    port = free_port()
    for name, value in {
        "TFSHARE_HOST": "127.0.0.1",
        "TFSHARE_PORT": str(port),
        "TFSHARE_STORE_DIR": str(directory / "jetstream"),
        "TFSHARE_MAX_PAYLOAD": "8KB",
        # Room for the default --max-bytes (8GiB) the tests provision with: JetStream
        # reserves every stream's max_bytes (an accounting, no disk is used).
        "TFSHARE_MAX_FILE_STORE": "10GB",
    }.items():
        monkeypatch.setenv(name, value)  # nats-server reads them from its environment
    process = BrokerProcess(
        config=directory / "single-node.conf",
        host="127.0.0.1",
        port=port,
        log=directory / "nats.log",
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


def test_publish_over_an_operators_max_payload_exits_4_and_is_set_aside(
    live_tf: TaskForce, template_broker: BrokerProcess, tmp_path: Path
) -> None:
    """On the operator's template (provisioned with ``tfshare broker provision``), a normal
    alert is published; one over the broker's 8KB max_payload exits 4 naming max_payload,
    is not queued as if the broker were away, and is set aside in the outbox as refused."""
    police = agency_files(live_tf, "police", tmp_path / "police")
    provision: list[str | Path] = [
        "broker", "provision",
        "--roster", police.root / "tf.roster", "--anchor", police.root / "tf.anchor",
        "--dir", template_broker.config.parent, "--server", template_broker.url,
    ]  # fmt: skip
    provisioned = ok(tfshare(police.root / "home", *provision))
    assert f"provisioned task force {TASKFORCE}" in provisioned.stderr
    ok(publish(police, template_broker.url))
    result = publish(police, template_broker.url, body=big_body(tmp_path))
    error, hint = failure(result, 4)
    assert "larger than the broker accepts (max_payload 8192 bytes)" in error
    assert "max_payload to at least 1MB" in hint
    assert "queued" not in result.stderr
    waiting, refused = outbox_of(police)
    assert waiting == []
    assert len(refused) == 1 and "max_payload 8192" in refused[0][1]
    assert stream_messages(template_broker) == 1


def test_agent_sets_aside_a_queued_envelope_over_max_payload_and_keeps_going(
    live_tf: TaskForce, template_broker: BrokerProcess, tmp_path: Path
) -> None:
    """An envelope queued while the broker was away and too large for it does not block the
    agent's outbox (set aside with its reason) nor make it reconnect in a loop; the envelope
    queued after it goes out and is delivered."""
    asyncio.run(
        provision_broker(template_broker.url, template_broker.config.parent, live_tf.trusted())
    )
    police = make_agent(live_tf, "police", template_broker.url, tmp_path)
    ngo = make_agent(live_tf, "ngo", template_broker.url, tmp_path)
    big, small = big_sealed_alert(live_tf), sealed_alert(live_tf)
    police.store.outbox_add(big.msg_id, SUBJECT, big.data, now_ms() - 1)
    police.store.outbox_add(small.msg_id, SUBJECT, small.data, now_ms())
    with structlog.testing.capture_logs() as logs:
        run_agents([police, ngo], lambda: ngo.stats.delivered == 1)
    assert police.store.outbox() == []
    [(msg_id, subject, reason)] = police.store.outbox_refusals()
    assert (msg_id, subject) == (big.msg_id, SUBJECT)
    assert "max_payload 8192" in reason
    assert [i.msg_id for i in ngo.store.inbox()] == [small.msg_id]
    assert police.stats.published == 1
    assert len(events(logs, "outbox_refused")) == 1
    assert not events(logs, "broker_lost")


# == 3. A full disk under the state database ===================================================


def fill(store: StateStore) -> None:
    """The disk is full: the database may not grow by one page (this connection only)."""
    db = store._db
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count = {pages}")


def free(store: StateStore) -> None:
    store._db.execute("PRAGMA max_page_count = 1073741823")


def test_agent_with_a_full_store_acknowledges_nothing_then_delivers_each_message_once(
    live_tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    """While nothing can be persisted the agent logs ``persist_failed``, acknowledges nothing
    (JetStream keeps redelivering), stores nothing and keeps running; once there is space,
    every message is delivered exactly once and acknowledged."""
    sealed = [big_sealed_alert(live_tf) for _ in range(3)]
    for s in sealed:
        publish_as(live_tf, "police", broker.url, SUBJECT, s.data, s.msg_id.hex())
    ngo = make_agent(live_tf, "ngo", broker.url, tmp_path)
    ngo.persist_retry_s = 0.3
    fill(ngo.store)

    async def main() -> dict[str, Any]:
        stop = asyncio.Event()
        seen: dict[str, Any] = {}
        with structlog.testing.capture_logs() as logs:
            task = asyncio.create_task(ngo.run(stop))
            # At least one redelivery also failed: the pause between them is the agent's.
            assert await wait_async(lambda: len(events(logs, "persist_failed")) >= 2, 10)
            seen["running"] = not task.done()
            seen["inbox"], seen["quarantine"] = ngo.store.inbox(), ngo.store.quarantined()
            seen["consumer_full"] = await consumer_state(broker, "ngo")
            seen["failure"] = events(logs, "persist_failed")[0]
            free(ngo.store)
            seen["delivered"] = await wait_async(lambda: ngo.stats.delivered == 3, 10)
            for _ in range(50):  # the acks follow the commit
                seen["consumer_after"] = await consumer_state(broker, "ngo")
                if seen["consumer_after"][:2] == (0, 0):
                    break
                await asyncio.sleep(0.1)
            stop.set()
            await asyncio.wait_for(task, 10)
        return seen

    seen = asyncio.run(main())
    assert seen["running"]
    assert (seen["inbox"], seen["quarantine"]) == ([], [])
    pending, awaiting_ack, ack_floor = seen["consumer_full"]
    assert ack_floor == 0 and pending + awaiting_ack == 3
    assert "disk is full" in seen["failure"]["reason"]
    assert seen["delivered"]
    inbox = [i.msg_id for i in ngo.store.inbox()]
    assert sorted(inbox) == sorted(s.msg_id for s in sealed)
    assert ngo.stats.duplicates == 0 and ngo.store.quarantined() == []
    assert seen["consumer_after"] == (0, 0, 3)


def test_publish_with_a_full_store_exits_1_and_writes_nothing(
    live_tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    """``publish`` when the state database cannot grow: exit 1, "the disk is full" with a hint
    to free space, nothing sent, nothing in the outbox, no sequence number used up, and the
    database intact."""
    police = agency_files(live_tf, "police", tmp_path / "police")
    ok(publish(police, broker.url))
    assert outbound_seq(police) == 1
    result = publish(police, broker.url, body=big_body(tmp_path), full_disk=True)
    error, hint = failure(result, 1)
    assert "cannot write the state database" in error
    assert "the disk is full (database or disk is full)" in error
    assert "free disk space" in hint
    assert outbox_of(police) == ([], [])
    assert outbound_seq(police) == 1
    assert stream_messages(broker) == 1
    db = sqlite3.connect(police.state / "state.db")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        db.close()
    # With space again, the same command works.
    ok(publish(police, broker.url, body=big_body(tmp_path)))
    assert stream_messages(broker) == 2


# == 4. A damaged state database, a missing stream =============================================


def damage_table(database: Path, table: str) -> None:
    """Overwrite the root page of ``table`` with garbage (the rest of the file stays valid)."""
    db = sqlite3.connect(database)
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        (root,) = db.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)
        ).fetchone()
    finally:
        db.close()
    with database.open("r+b") as handle:
        handle.seek((root - 1) * page_size)
        handle.write(b"\xa5" * page_size)


def test_publish_with_a_damaged_state_database_exits_1_with_a_hint(
    live_tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    """A state database damaged inside (it opens, one table's page is garbage): exit 1, "is
    damaged", the hint to restore the state directory from backup, and nothing sent."""
    police = agency_files(live_tf, "police", tmp_path / "police")
    ok(publish(police, broker.url))
    damage_table(police.state / "state.db", "outbox")
    error, hint = failure(publish(police, broker.url), 1)
    assert "is damaged" in error and "state.db" in error
    assert "restore the state directory from backup" in hint
    assert stream_messages(broker) == 1


def test_publish_with_the_stream_missing_queues_and_says_why(
    live_tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    """With the task force's stream deleted, publish queues (exit 0) saying the stream is
    missing rather than "unreachable" (on stderr, and in --json); after provisioning, the next
    publish sends all three."""
    police = agency_files(live_tf, "police", tmp_path / "police")
    delete_stream(broker)
    queued = ok(publish(police, broker.url))
    assert "queued: no JetStream stream answered" in queued.stderr
    assert "the channel's stream is missing" in queued.stderr
    first = json.loads(ok(publish(police, broker.url, "--json")).stdout)
    assert first["queued"] is True
    assert "the channel's stream is missing" in first["queued_because"]
    assert len(outbox_of(police)[0]) == 2
    asyncio.run(provision_broker(broker.url, broker.config.parent, live_tf.trusted()))
    sent = json.loads(ok(publish(police, broker.url, "--json")).stdout)
    assert (sent["queued"], sent["queued_because"], sent["also_sent_from_outbox"]) == (
        False,
        None,
        2,
    )
    assert outbox_of(police) == ([], [])
    assert stream_messages(broker) == 3


def test_publish_no_queue_with_the_stream_missing_exits_4_and_says_why(
    live_tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    """``--no-queue`` with the stream deleted: exit 4 naming the missing stream, with the hint
    to provision it, and nothing left in the outbox."""
    police = agency_files(live_tf, "police", tmp_path / "police")
    delete_stream(broker)
    error, hint = failure(publish(police, broker.url, "--no-queue"), 4)
    assert "the channel's stream is missing" in error
    assert "tfshare broker provision" in hint
    assert outbox_of(police) == ([], [])


def test_agent_with_the_stream_missing_backs_off_then_recovers(
    live_tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    """With the stream deleted the agent connects but cannot fetch: it logs ``broker_lost``
    (the stream or consumer is missing) with a growing pause instead of reconnecting in a
    tight loop, and delivers as soon as the stream is provisioned again."""
    delete_stream(broker)
    ngo = make_agent(live_tf, "ngo", broker.url, tmp_path)
    sealed = sealed_alert(live_tf)

    async def main() -> list[Log]:
        stop = asyncio.Event()
        with structlog.testing.capture_logs() as logs:
            task = asyncio.create_task(ngo.run(stop))
            await asyncio.sleep(2.5)
            lost = len(events(logs, "broker_lost"))
            assert not task.done()
            await provision_broker(broker.url, broker.config.parent, live_tf.trusted())
            await asyncio.to_thread(
                publish_as, live_tf, "police", broker.url, SUBJECT, sealed.data, sealed.msg_id.hex()
            )
            delivered = await wait_async(lambda: ngo.stats.delivered == 1, 10)
            stop.set()
            await asyncio.wait_for(task, 10)
        assert delivered
        assert 2 <= lost <= 6, lost  # 0.2 s, 0.4 s, 0.8 s, 1.6 s ... (it was ~1000 a second)
        return logs

    logs = asyncio.run(main())
    assert "the stream or the consumer is missing" in events(logs, "broker_lost")[0]["reason"]
    assert [i.msg_id for i in ngo.store.inbox()] == [sealed.msg_id]
