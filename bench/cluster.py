"""Cluster benchmark: a loopback 3-node JetStream cluster beside a single nats-server, in one
run, on this machine (issue 14, "Benchmark").

Owns: the figures for the cost of replication and the pause a node's failure causes.

Measured, each against the single node:
- acked publish rate of sealed alerts, one at a time (a ``publish`` through the desk) and
  256 in flight (the agent's outbox, ``transport.publish_many``), with the streams at R3 and
  at R1 on the cluster (a second cluster, provisioned ``replicas=1``: provisioning never
  lowers a stream's replicas);
- consume rate of the reader's agent (verify, decrypt, persist, ack);
- on the R3 cluster: a steady stream of alerts at RATE msg/s from another process (each
  publish retried with its Nats-Msg-Id until acked, as the outbox does); the node the
  reader's agent is connected to is SIGKILLed; the delivery delay (sealed -> in the
  reader's inbox) p50/p99 before, p99 and max of the alerts sealed around the kill, the
  longest pause in deliveries while alerts were sent, and how many waited for the
  consumer's ack wait (delivered through the killed node, never acknowledged: 30 s).

Every node of a loopback cluster shares the machine's cores (and disk: ``sync_interval:
always`` fsyncs on every node), so the ratios are a floor for machines of their own.

Run: .venv/bin/python bench/cluster.py  (TFSHARE_BENCH_CLUSTER_N: alerts per rate, 1000)
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "integration"))

from livekit import free_port  # noqa: E402
from tfkit import TaskForce, build_taskforce  # noqa: E402

from tfshare import transport  # noqa: E402
from tfshare.agent import Agent  # noqa: E402
from tfshare.broker import (  # noqa: E402
    BrokerCluster,
    channel_subject,
    check_port_free,
    loopback_cluster,
)
from tfshare.encoding import encode  # noqa: E402
from tfshare.errors import BrokerError  # noqa: E402
from tfshare.logconfig import configure  # noqa: E402
from tfshare.names import stream_name  # noqa: E402
from tfshare.registry.book import shipped  # noqa: E402
from tfshare.seal import Sealed  # noqa: E402
from tfshare.store import StateStore  # noqa: E402
from tfshare.workflows.live import StreamLimits, admin_seed, start_broker, start_cluster  # noqa: E402

TF = "nl-north"
SUBJECT = channel_subject(TF, "alerts", "police")
# The rates are the best of two rounds, each with envelopes of its own: police's, then
# labour's (each sender's quota is a flood bound; the failover stream is police's too).
SENDERS = ("police", "labour")
N = int(os.environ.get("TFSHARE_BENCH_CLUSTER_N", "1000"))
ONE_AT_A_TIME = max(100, N // 4)
IN_FLIGHT = 256
RATE = 200  # the steady stream during the failover, msg/s
CALM_S = 4.0  # before the kill
AFTER_S = 8.0  # after it
# A message the killed node was handing to the reader comes back after the consumer's ack
# wait (30 s): the run waits that long for the last ones.
DRAIN_S = 45.0
# The sender quota (a flood bound) raised for the run, within its channel's share.
HELD_MS = 20_000  # the consumer's ack wait is 30 s: a delay this long is a redelivery
LIMITS = StreamLimits(max_msgs_per_sender=ONE_AT_A_TIME + N + int(RATE * (CALM_S + AFTER_S)) + 100)
_FORK = multiprocessing.get_context("fork")  # the child inherits the keys; nothing is pickled


def _now() -> int:
    return time.time_ns() // 1_000_000


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive free ports."""
    for _ in range(50):
        first = free_port()
        if first + count > 65535:
            continue
        try:
            for port in range(first, first + count):
                check_port_free("127.0.0.1", port)
        except BrokerError:
            continue
        return first
    raise RuntimeError("no consecutive free ports")


def _reader(tf: TaskForce, url: str, state: Path) -> Agent:
    return Agent(
        identity=tf.ids["ngo"],
        roster=tf.trusted(),
        schemas=shipped(),
        store=StateStore(state / "state.db"),
        url=url,
        clock=_now,
        batch=64,
        fetch_timeout=0.05,
    )


@dataclass
class Rates:
    one: float  # acked publishes per second, one at a time
    many: float  # ... IN_FLIGHT in flight
    consume: float  # delivered per second by the reader's agent


async def _publish_rates(
    tf: TaskForce, url: str, sender: str, sealed: list[Sealed]
) -> tuple[float, float]:
    subject = channel_subject(TF, "alerts", sender)
    identity = tf.ids[sender]
    conn = await transport.connect(url, nkey_seed=identity.nats_seed_encoded(), agency=sender,
                                   name="bench", reconnect=False)  # fmt: skip
    try:
        single, piped = sealed[:ONE_AT_A_TIME], sealed[ONE_AT_A_TIME:]
        start = time.perf_counter()
        for s in single:
            await transport.publish(conn, subject, s.data, msg_id=s.msg_id.hex())
        one = len(single) / (time.perf_counter() - start)
        start = time.perf_counter()
        for first in range(0, len(piped), IN_FLIGHT):
            items = [(subject, s.data, s.msg_id.hex()) for s in piped[first : first + IN_FLIGHT]]
            results = await transport.publish_many(conn, items)
            failed = [r for r in results if isinstance(r, BrokerError)]
            if failed:
                raise RuntimeError(f"{len(failed)} publishes failed: {failed[0]}")
        many = len(piped) / (time.perf_counter() - start)
        return one, many
    finally:
        await conn.close()


async def _consume_rate(tf: TaskForce, url: str, state: Path, count: int) -> float:
    agent = _reader(tf, url, state)  # a new store each round: its stats start at 0
    stop = asyncio.Event()
    start = time.perf_counter()
    task = asyncio.create_task(agent.run(stop))
    deadline = time.monotonic() + 120
    while agent.stats.delivered < count and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    rate = agent.stats.delivered / (time.perf_counter() - start)
    stop.set()
    await task
    if agent.stats.delivered < count:
        raise RuntimeError(f"consumer stalled: {agent.stats}")
    return rate


def rates(tf: TaskForce, url: str, state: Path, rounds: dict[str, list[Sealed]]) -> Rates:
    """The best of the rounds (each publishes its envelopes, then the reader takes them)."""
    best = Rates(0.0, 0.0, 0.0)
    for number, (sender, sealed) in enumerate(rounds.items(), start=1):
        one, many = asyncio.run(_publish_rates(tf, url, sender, sealed))
        consume = asyncio.run(_consume_rate(tf, url, state / f"round-{number}", len(sealed)))
        best = Rates(max(best.one, one), max(best.many, many), max(best.consume, consume))
    return best


# -- the failover -----------------------------------------------------------------------------


def _steady_publisher(tf: TaskForce, url: str, go: Any, out: Any) -> None:
    """Child process: RATE alerts a second for CALM_S + AFTER_S, each retried with its
    Nats-Msg-Id until acked; sends back {msg_id: wall-clock time it was sealed} and how many
    publishes were retried."""
    go.wait(timeout=60)

    async def run() -> tuple[dict[bytes, float], int]:
        police = tf.ids["police"]
        sent: dict[bytes, float] = {}
        retries = 0
        conn: transport.Connection | None = None
        start = time.monotonic()
        total = int(RATE * (CALM_S + AFTER_S))
        for i in range(total):
            await asyncio.sleep(max(0.0, start + i / RATE - time.monotonic()))
            sealed = tf.seal("police", now_ms=_now(), seq=100_000 + i, rng_seed=os.urandom(8).hex())
            sent[sealed.msg_id] = time.time()
            while True:
                try:
                    if conn is None:
                        conn = await transport.connect(
                            url, nkey_seed=police.nats_seed_encoded(), agency="police",
                            name="steady", reconnect=False, connect_timeout=1.0,
                        )  # fmt: skip
                    await transport.publish(
                        conn, SUBJECT, sealed.data, msg_id=sealed.msg_id.hex(), timeout=2
                    )
                    break
                except BrokerError:
                    retries += 1
                    if conn is not None:
                        await conn.close()
                    conn = None
                    await asyncio.sleep(0.05)
        if conn is not None:
            await conn.close()
        return sent, retries

    out.send(asyncio.run(run()))
    out.close()


@dataclass
class Failover:
    calm_p50: float
    calm_p99: float
    around_p99: float
    around_max: float
    longest_gap_ms: float
    leader: bool  # the killed node led the alerts stream
    publish_retries: int
    delivered: int
    sent: int
    held: int  # delivered only after about the consumer's ack wait
    strangers: int  # delivered, but not sent by the steady publisher (should be 0)


async def _stream_leader(cluster: BrokerCluster, directory: Path) -> str | None:
    admin = await transport.connect(cluster.url, nkey_seed=admin_seed(directory), agency=None,
                                    name="bench-admin", reconnect=False)  # fmt: skip
    try:
        info = await admin.js.stream_info(stream_name(TF, "alerts"))
        return info.cluster.leader if info.cluster is not None else None
    finally:
        await admin.close()


async def _kill_readers_node(
    agent: Agent, cluster: BrokerCluster, directory: Path
) -> tuple[float, bool]:
    """SIGKILL the node the reader's agent is connected to: when, and whether it led the
    alerts stream."""
    assert agent.conn is not None
    url = agent.conn.client.connected_url
    assert url is not None
    node = next(n for n in cluster.nodes if n.port == url.port)
    index = cluster.nodes.index(node) + 1
    leader = await _stream_leader(cluster, directory)
    at = time.time()
    node.kill()
    return at, leader is not None and leader.endswith(f"-{index}")


def failover(tf: TaskForce, cluster: BrokerCluster, directory: Path, state: Path) -> Failover:
    """Times are the wall clock's (the publisher is another process): sealed, and stored in
    the reader's inbox (``received_ms``; the inbox, not the agent's callbacks, as a message
    stored just before the connection broke is acknowledged only on its redelivery)."""
    received: dict[bytes, float] = {}

    go = _FORK.Event()
    pipe_in, pipe_out = _FORK.Pipe(duplex=False)
    child = _FORK.Process(
        target=_steady_publisher, args=(tf, cluster.url, go, pipe_out), daemon=True
    )
    child.start()
    killed: list[tuple[float, bool]] = []

    async def consume() -> None:
        agent = _reader(tf, cluster.url, state)

        def stored() -> None:
            for item in agent.store.inbox(limit=1_000_000):
                received.setdefault(item.msg_id, item.received_ms / 1e3)

        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        while agent.conn is None:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        go.set()
        await asyncio.sleep(CALM_S)
        killed.append(await _kill_readers_node(agent, cluster, directory))
        deadline = time.monotonic() + AFTER_S + DRAIN_S
        while not pipe_in.poll() and time.monotonic() < deadline:  # the publisher's results
            await asyncio.sleep(0.1)
        if not pipe_in.poll():
            raise RuntimeError("the publisher process sent no results")
        sent, retries = pipe_in.recv()
        published.update(sent)
        published_retries.append(retries)
        stored()
        while not published.keys() <= received.keys() and time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            stored()
        stop.set()
        await task

    published: dict[bytes, float] = {}
    published_retries: list[int] = []
    try:
        asyncio.run(consume())
    finally:
        child.join(timeout=10)
        if child.is_alive():
            child.kill()
    at, leader = killed[0]
    return _summary(published, received, at, leader=leader, retries=published_retries[0])


def _summary(
    sent: dict[bytes, float], received: dict[bytes, float], at: float, *, leader: bool,
    retries: int,
) -> Failover:  # fmt: skip
    """The delays (sealed -> delivered, ms) before the kill at ``at``, and of the alerts
    sealed from half a second before it to 5 s after; the longest time without a delivery."""
    delay = {k: (received[k] - sent[k]) * 1e3 for k in received if k in sent}
    calm = sorted(d for k, d in delay.items() if sent[k] < at - 0.5)
    around = sorted(d for k, d in delay.items() if at - 0.5 <= sent[k] <= at + 5.0)
    # The pause while alerts were still being sent (after that, only the ones held until
    # the consumer's ack wait arrive: counted apart).
    last_sent = max(sent.values())
    times = sorted(t for t in received.values() if at - 0.5 <= t <= last_sent)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    return Failover(
        calm_p50=statistics.median(calm),
        calm_p99=_p99(calm),
        around_p99=_p99(around),
        around_max=around[-1] if around else float("nan"),
        longest_gap_ms=max(gaps, default=0.0) * 1e3,
        leader=leader,
        publish_retries=retries,
        delivered=len(delay),
        sent=len(sent),
        strangers=len(received.keys() - sent.keys()),
        held=sum(d > HELD_MS for d in delay.values()),
    )


def _p99(ordered: list[float]) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else float("nan")


# -- the run ----------------------------------------------------------------------------------


def main() -> None:
    configure(os.environ.get("TFSHARE_BENCH_LOG", "warning"))  # info: what the agents did
    tf = build_taskforce(now_ms=_now(), members=("police", "ngo", "labour"))
    roster_bytes = encode(tf.signed)
    sealed = {
        sender: [
            tf.seal(sender, now_ms=_now(), seq=i + 1, rng_seed=f"bench-{sender}-{i}")
            for i in range(ONE_AT_A_TIME + N)
        ]
        for sender in SENDERS
    }
    found: dict[str, Rates] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        single = start_broker(tf.trusted(), root / "single", port=free_port(),
                              roster_bytes=roster_bytes, limits=LIMITS)  # fmt: skip
        try:
            found["single node"] = rates(tf, single.url, root / "single-ngo", sealed)
        finally:
            single.stop()
        outcome: Failover | None = None
        for name, replicas in (("cluster R3", None), ("cluster R1", 1)):
            directory = root / name.replace(" ", "-")
            layout = loopback_cluster(TF, 3, port=free_ports(3), cluster_port=free_ports(3))
            cluster = start_cluster(tf.trusted(), directory, layout, roster_bytes=roster_bytes,
                                    limits=LIMITS, replicas=replicas)  # fmt: skip
            try:
                found[name] = rates(tf, cluster.url, directory / "ngo", sealed)
                if replicas is None:
                    outcome = failover(tf, cluster, directory, directory / "ngo")
            finally:
                cluster.stop()
    assert outcome is not None
    load = os.getloadavg()
    base = found["single node"]
    print(
        f"\ncluster (3 nats-servers on 127.0.0.1 beside one alone, sync_interval: always, "
        f"{os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f}), sealed alerts: "
        f"{ONE_AT_A_TIME} one at a time, {N} with {IN_FLIGHT} in flight, messages per second "
        f"(ratio to the single node):"
    )
    for name, r in found.items():
        print(
            f"  {name:12s} publish one at a time {r.one:7.0f} ({r.one / base.one:.2f})   "
            f"{IN_FLIGHT} in flight {r.many:7.0f} ({r.many / base.many:.2f})   "
            f"consume {r.consume:7.0f} ({r.consume / base.consume:.2f})"
        )
    f = outcome
    others = f" (+{f.strangers} others)" if f.strangers else ""
    print(
        f"  failover (R3, {RATE} msg/s, the reader's node SIGKILLed"
        f"{', it led the stream' if f.leader else ''}): delivery delay calm p50 "
        f"{f.calm_p50:.1f} p99 {f.calm_p99:.1f} ms;  sealed around the kill (-0.5 s..+5 s) "
        f"p99 {f.around_p99:.0f} ({f.around_p99 / f.calm_p99:.1f} x calm) max "
        f"{f.around_max:.0f} ms\n"
        f"    longest pause in deliveries while alerts were sent {f.longest_gap_ms:.0f} ms; "
        f"{f.held} held until the consumer's ack wait (30 s); {f.delivered} of {f.sent} "
        f"delivered{others}; {f.publish_retries} publishes retried"
    )


if __name__ == "__main__":
    main()
