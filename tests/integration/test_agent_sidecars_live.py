"""Jobs beside the agent's consumer (``Agent.sidecars``) on a real nats-server.

Every agency's agent, made as ``tfshare agent run`` makes it, witnesses the audit log beside
the real audit service: its cosignature of the log's checkpoint appears in the witness bucket
and verifies, while it goes on delivering alerts. A job that fails at once is logged
(``sidecar_failed``) and the agent delivers what is published afterwards on the same
connection. Jobs end with the connection: the event is set when the agent stops and no task
of theirs is left behind. Shown a forged checkpoint (coord's stolen log key, another tree of
the size it holds), the agent's witness logs ``log_fork_detected``, never co-signs the
forgery, and the agent goes on delivering.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from livekit import make_agent
from structlog.testing import capture_logs
from test_audit_proofs_live import agency_of, running, service_factory, signed_size
from tfkit import TaskForce

from tfshare import transport
from tfshare.agent import Agent, Sidecar
from tfshare.audit.logstore import AuditStore
from tfshare.audit.note import Checkpoint, checkpoint_origin, sign_checkpoint, split_note
from tfshare.audit.service import IdentitySigner
from tfshare.audit.witness import witnesses_of
from tfshare.broker import CHECKPOINT_KEY, BrokerProcess, audit_bucket, channel_subject
from tfshare.workflows import live
from tfshare.workflows.witness import held_path, run_witness

TF = "nl-north"
ALERTS = channel_subject(TF, "alerts", "police")


def _now() -> int:
    return time.time_ns() // 1_000_000


async def _connect(tf: TaskForce, agency: str, url: str) -> transport.Connection:
    return await transport.connect(
        url,
        nkey_seed=tf.ids[agency].nats_seed_encoded(),
        agency=agency,
        name=f"test-{agency}",
        reconnect=False,
    )


async def _publish_alerts(tf: TaskForce, url: str, seqs: range) -> None:
    """police publishes one alert per seq (to every reader of the alerts channel)."""
    conn = await _connect(tf, "police", url)
    try:
        for seq in seqs:
            sealed = tf.seal("police", seq=seq, now_ms=_now(), rng_seed=os.urandom(8).hex())
            await transport.publish(conn, ALERTS, sealed.data, msg_id=sealed.msg_id.hex())
    finally:
        await conn.close()


async def _until(condition: Callable[[], Awaitable[bool] | bool], timeout: float = 20.0) -> None:
    """Poll (on the agent's loop, so it keeps running) until ``condition`` holds."""
    deadline = time.monotonic() + timeout
    while True:
        held = condition()
        if not isinstance(held, bool):
            held = await held
        if held:
            return
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def _this_task() -> asyncio.Task[object]:
    task = asyncio.current_task()
    assert task is not None
    return task


def _text(note: bytes) -> bytes:
    text, _ = split_note(note)
    return text


def _signed_texts(log: Path) -> dict[bytes, int]:
    """The checkpoint texts the audit service signed, with their sizes."""
    with AuditStore(log) as store:
        return {_text(note): size for size, note in store.checkpoints()}


def _fast_witness(agency: live.Agency, interval_s: float) -> Sidecar:
    """The sidecar ``live.make_agent`` gives every agent, with a short round interval: its
    ``interval_s`` default is bound when ``run_witness`` is defined (WITNESS_INTERVAL_S, 30 s),
    so patching the module constant would not reach it."""
    identity = agency.identity()  # unlocked once by Agency.load (the passphrase is not kept)

    async def witness_log(conn: transport.Connection, ended: asyncio.Event) -> None:
        await run_witness(
            conn,
            identity=identity,
            roster=lambda: agency.roster,
            state_dir=agency.store.path.parent,
            stop=ended,
            interval_s=interval_s,
        )

    return witness_log


def test_a_running_agent_cosigns_the_audit_log(
    live_tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    ngo = agency_of(live_tf, "ngo", tmp_path / "ngo")
    log = tmp_path / "audit.db"
    agent = live.make_agent(ngo, url=broker.url, clock=_now)  # as 'tfshare agent run' does
    cosigned: list[bytes] = []

    async def main() -> None:
        # A checkpoint is in the bucket before the agent starts: its first round takes it.
        await _publish_alerts(live_tf, broker.url, range(1, 3))
        coord = await _connect(live_tf, "coord", broker.url)

        async def published_checkpoint_covers_the_alerts() -> bool:
            note = await transport.get_checkpoint(coord, TF)
            return note is not None and _signed_texts(log).get(_text(note), 0) >= 3

        async def ngo_cosigned() -> bool:
            note = await transport.get_cosignature(coord, TF, "ngo")
            if note is not None:
                cosigned.append(note)
            return note is not None

        await _until(published_checkpoint_covers_the_alerts)
        stop = asyncio.Event()
        running_agent = asyncio.create_task(agent.run(stop))
        try:
            await _until(ngo_cosigned)
            delivered = agent.stats.delivered
            # The witness ran beside the consumer; the consumer goes on delivering.
            await _publish_alerts(live_tf, broker.url, range(3, 6))
            await _until(lambda: agent.stats.delivered == delivered + 3)
        finally:
            stop.set()
            await asyncio.wait_for(running_agent, timeout=15)
            await coord.close()

    with running(service_factory(live_tf, broker.url, log)):
        asyncio.run(main())
    ngo.store.close()

    assert agent.stats.delivered == 5
    note = cosigned[-1]
    # A checkpoint the audit service signed, covering the roster entry and the two alerts
    # published before the agent started...
    assert _signed_texts(log).get(_text(note), 0) >= 3
    # ...carrying coord's log signature and ngo's cosignature, which verifies under the roster.
    assert [(w.agency, w.name) for w in witnesses_of(note, ngo.roster)] == [
        ("ngo", "tfshare/nl-north/witness/ngo")
    ]
    # What ngo holds now is the log-signed note it co-signed (its cosignature line added).
    held = held_path(ngo.store.path.parent).read_bytes()
    assert note.startswith(held)
    assert note[len(held) :].startswith("\u2014 tfshare/nl-north/witness/ngo ".encode())


def test_a_failing_sidecar_is_logged_and_the_agent_keeps_delivering(
    live_tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    agent = make_agent(live_tf, "ngo", broker.url, tmp_path)

    async def breaks_at_once(conn: transport.Connection, ended: asyncio.Event) -> None:
        raise RuntimeError("a bug in a job beside the consumer")

    agent.sidecars = [breaks_at_once]

    async def main() -> None:
        stop = asyncio.Event()
        running_agent = asyncio.create_task(agent.run(stop))
        try:
            await _until(lambda: any(e["event"] == "sidecar_failed" for e in events))
            await _publish_alerts(live_tf, broker.url, range(1, 4))
            await _until(lambda: agent.stats.delivered == 3)
        finally:
            stop.set()
            await asyncio.wait_for(running_agent, timeout=15)

    with capture_logs() as events:
        asyncio.run(main())
    agent.store.close()

    assert agent.stats.delivered == 3
    failures = [e for e in events if e["event"] == "sidecar_failed"]
    assert [(e["job"], e["error"], e["log_level"]) for e in failures] == [
        ("breaks_at_once", "RuntimeError", "error")
    ]
    assert "a bug in a job" not in repr(events)  # the type is logged, not what it said
    # The consumer was never taken down: one connection, no error, no reconnection.
    names = [e["event"] for e in events]
    assert names.count("agent_connected") == 1
    assert not {"agent_error", "broker_lost"} & set(names)


def _stopping_jobs(seen: dict[str, object], jobs: list[asyncio.Task[object]]) -> list[Sidecar]:
    """Two jobs: one waits for its event (noting how it ended), one ignores it."""

    async def waits_for_the_end(conn: transport.Connection, ended: asyncio.Event) -> None:
        jobs.append(_this_task())
        # The agent's own connection, usable while it is up (no audit service: no checkpoint).
        seen["checkpoint"] = await transport.get_checkpoint(conn, TF)
        seen["started"] = True
        try:
            await ended.wait()
            seen["returned"] = True
        finally:
            seen["ended_set"] = ended.is_set()

    async def ignores_the_event(conn: transport.Connection, ended: asyncio.Event) -> None:
        jobs.append(_this_task())
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            seen["cancelled"] = True
            raise

    return [waits_for_the_end, ignores_the_event]


def _run_and_stop(agent: Agent, seen: dict[str, object], jobs: list[asyncio.Task[object]]) -> int:
    """Run the agent until both jobs started, stop it; the tasks left once run returned."""
    left: list[asyncio.Task[object]] = []

    async def main() -> None:
        stop = asyncio.Event()
        running_agent = asyncio.create_task(agent.run(stop))
        await _until(lambda: seen.get("started") is True and len(jobs) == 2)
        assert "ended_set" not in seen  # not before the agent stops
        stop.set()
        await asyncio.wait_for(running_agent, timeout=15)
        left.extend(t for t in asyncio.all_tasks() if t is not asyncio.current_task())

    asyncio.run(main())
    agent.store.close()
    return len(left)


def test_sidecars_stop_with_the_connection(
    live_tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    agent = make_agent(live_tf, "ngo", broker.url, tmp_path)
    seen: dict[str, object] = {}
    jobs: list[asyncio.Task[object]] = []
    agent.sidecars = _stopping_jobs(seen, jobs)

    assert _run_and_stop(agent, seen, jobs) == 0  # nothing left pending once run returns
    assert seen["checkpoint"] is None
    assert seen["ended_set"] is True  # the event was set by the time the job was stopped
    assert seen["cancelled"] is True  # a job that ignores the event is cancelled
    assert all(job.done() for job in jobs)


def test_a_sidecar_waiting_on_its_event_returns_on_its_own(
    live_tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    agent = make_agent(live_tf, "ngo", broker.url, tmp_path)
    seen: dict[str, object] = {}
    jobs: list[asyncio.Task[object]] = []
    agent.sidecars = _stopping_jobs(seen, jobs)

    assert _run_and_stop(agent, seen, jobs) == 0
    assert seen.get("returned") is True  # its wait returned: not cancelled
    assert seen["cancelled"] is True


def test_an_agent_shown_a_forked_log_keeps_delivering(
    live_tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    ngo = agency_of(live_tf, "ngo", tmp_path / "ngo")
    log = tmp_path / "audit.db"
    agent = live.make_agent(ngo, url=broker.url, clock=_now, witness=False)
    agent.sidecars = [_fast_witness(ngo, interval_s=0.2)]
    held_file = held_path(ngo.store.path.parent)
    published: list[bytes] = []  # every cosignature of ngo's the test saw in the bucket
    forgery: dict[str, bytes] = {}

    async def main() -> None:
        coord = await _connect(live_tf, "coord", broker.url)
        stop = asyncio.Event()
        running_agent = asyncio.create_task(agent.run(stop))

        async def ngo_cosignature() -> bytes | None:
            note = await transport.get_cosignature(coord, TF, "ngo")
            if note is not None and note not in published:
                published.append(note)
            return note

        async def ngo_holds_the_latest() -> bool:
            # Quiet: every alert delivered and logged, the log's latest checkpoint published
            # and co-signed by ngo (ngo writes no receipts under the kit's roster).
            note = await ngo_cosignature()
            latest = await transport.get_checkpoint(coord, TF)
            return (
                agent.stats.delivered == 2
                and note is not None
                and latest is not None
                and _text(note) == _text(latest)
                and _signed_texts(log).get(_text(latest)) == signed_size(log) >= 3
            )

        try:
            await _publish_alerts(live_tf, broker.url, range(1, 3))
            await _until(ngo_holds_the_latest)
            held = held_file.read_bytes()
            size = Checkpoint.parse(_text(held).decode()).size
            # A thief of coord's log key shows another tree of the size ngo holds.
            forged = sign_checkpoint(
                Checkpoint(checkpoint_origin(TF), size, os.urandom(32)),
                [IdentitySigner(live_tf.ids["coord"], checkpoint_origin(TF))],
            )
            forgery["note"], forgery["held"] = forged, held
            kv = await coord.js.key_value(audit_bucket(TF))
            await kv.put(CHECKPOINT_KEY, forged)

            async def fork_seen_twice() -> bool:
                await ngo_cosignature()
                return [e["event"] for e in events].count("log_fork_detected") >= 2

            await _until(fork_seen_twice)
            assert held_file.read_bytes() == held  # kept as evidence
            delivered = agent.stats.delivered
            await _publish_alerts(live_tf, broker.url, range(3, 5))

            async def delivered_and_real_log_cosigned() -> bool:
                # The real log grows past the forgery (the new alerts are logged):
                # ngo, holding the real checkpoint, proves the new one extends it and co-signs.
                note = await ngo_cosignature()
                return (
                    agent.stats.delivered == delivered + 2
                    and note is not None
                    and _signed_texts(log).get(_text(note), 0) > size
                )

            await _until(delivered_and_real_log_cosigned)
        finally:
            stop.set()
            await asyncio.wait_for(running_agent, timeout=15)
            await coord.close()

    with capture_logs() as events, running(service_factory(live_tf, broker.url, log)):
        asyncio.run(main())
    ngo.store.close()

    assert agent.stats.delivered == 4
    forks = [e for e in events if e["event"] == "log_fork_detected"]
    assert forks and all(e["code"] == "E_LOG_FORK" for e in forks)
    assert forks[0]["held_checkpoint"] == forgery["held"].decode()
    assert forks[0]["seen_checkpoint"] == forgery["note"].decode()
    # Never co-signed: every cosignature ngo published is of a checkpoint the service signed.
    signed = _signed_texts(log)
    assert published and all(_text(note) in signed for note in published)
    assert _text(forgery["note"]) not in {_text(note) for note in published}
    # The agent never went down over it.
    names = [e["event"] for e in events]
    assert names.count("agent_connected") == 1
    assert not {"agent_error", "broker_lost", "sidecar_failed"} & set(names)


def test_a_checkpoint_announcement_starts_a_witness_round_at_once(
    live_tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    """Rounds used to come only every interval (30 s), so a checkpoint signed just after a
    round waited that long for its witnesses. They now also start when the audit service
    announces a checkpoint: with an interval of an hour, the agent co-signs the first
    checkpoint on connecting and the next one as soon as it is announced."""
    ngo = agency_of(live_tf, "ngo", tmp_path / "ngo")
    log = tmp_path / "audit.db"
    agent = live.make_agent(ngo, url=broker.url, clock=_now, witness_interval_s=3600)

    async def main() -> None:
        coord = await _connect(live_tf, "coord", broker.url)

        async def cosigned_size() -> int:
            note = await transport.get_cosignature(coord, TF, "ngo")
            return 0 if note is None else int(split_note(note)[0].split(b"\n")[1])

        async def cosigned_at_least(size: int) -> bool:
            return await cosigned_size() >= size

        await _until(lambda: signed_size(log) >= 1)  # the roster entry, signed
        stop = asyncio.Event()
        running_agent = asyncio.create_task(agent.run(stop))
        try:
            await _until(lambda: cosigned_at_least(1))  # the round on connecting
            first = await cosigned_size()
            await _publish_alerts(live_tf, broker.url, range(1, 3))
            await _until(lambda: cosigned_at_least(first + 2))  # announced, not polled
        finally:
            stop.set()
            await asyncio.wait_for(running_agent, timeout=15)
            await coord.close()

    with running(service_factory(live_tf, broker.url, log)):
        asyncio.run(main())
    ngo.store.close()
