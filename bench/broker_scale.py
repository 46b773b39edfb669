"""Broker scale benchmark: the nats-server of a task force of 20,000 agencies beside one of
100, measured in the same run on this machine (issue 15, items 4 and 5).

Owns: the figures behind the broker's design at scale (docs/DEPLOY.md, "Large task forces").

Measured, for each roster size (3 channels, every member reads, one in ten writes):
- ``broker config``: ``broker.render_config`` time and the file's size;
- ``nats-server -t`` on that file (parse and check, as ``broker config`` does);
- start-up: ``nats-server -c`` until it logs "Server is ready", and its RSS then;
- reload: SIGHUP (what every roster change does) until it logs that it reloaded.

And durable consumers: CONSUMERS_SMALL and CONSUMERS_LARGE durable pull consumers (the
agents' consumer configuration) on one stream of a single node (the small roster's
configuration, so that the RSS is the consumers'): the time to create them (IN_FLIGHT
requests at a time: the server's cost), the time to add one that exists again (as
provisioning after every roster change does), the server's RSS and the JetStream store's
disk use after, and the time the server takes to stop (SIGTERM) and to start again with
them all (what a restart or an upgrade costs).

The rosters are built in process from seeded identities (the signatures and keys are real,
the roster is not signed: the broker never looks at signatures).

Run: .venv/bin/python bench/broker_scale.py  (TFSHARE_BENCH_BROKER_MEMBERS: the large roster's
members, 20000; TFSHARE_BENCH_CONSUMERS: the large consumer count, 5000)
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "integration"))

import nkeys  # noqa: E402
from livekit import free_port  # noqa: E402
from tfkit import NOW_MS, identity  # noqa: E402

from tfshare import roster as R  # noqa: E402
from tfshare import transport  # noqa: E402
from tfshare.broker import BrokerProcess, find_nats_server, render_config  # noqa: E402
from tfshare.encoding import MAX_UINT  # noqa: E402
from tfshare.names import durable_name, stream_name  # noqa: E402

SMALL = 100
LARGE = int(os.environ.get("TFSHARE_BENCH_BROKER_MEMBERS", "20000"))
# 2,000 and 20,000 take about 9 minutes here (creating, and above all stopping the server:
# more than 150 s with 20,000): the default keeps the bench near 2 minutes.
CONSUMERS_SMALL = 1_000
CONSUMERS_LARGE = int(os.environ.get("TFSHARE_BENCH_CONSUMERS", "5000"))
CHANNELS = ("alerts", "tips", "receipts")
TASKFORCE = "nl-north"


def scale_roster(members: int, *, channels: tuple[str, ...] = CHANNELS) -> R.TrustedRoster:
    """A roster of ``members`` agencies (a00000 the coordinator, a00001 a key manager,
    a00002 an auditor, the rest members): every channel read by all, written by one in ten.
    Built as structs (not through the edit functions, which check limits and cost one
    verification per edit)."""
    cards = [identity(f"a{i:05d}").card_body() for i in range(members)]
    roles: dict[int, list[R.Role]] = {0: ["coordinator"], 1: ["key-manager"], 2: ["auditor"]}
    member_list = [
        R.Member(
            agency_id=card.agency_id,
            display_name=card.display_name,
            roles=roles.get(i, ["member"]),
            sign_keys=[R.KeyValidity(card.sign_pk, card.created_ms, MAX_UINT)],
            enc_key=R.KeyValidity(card.enc_pk, card.created_ms, MAX_UINT),
            enc_self_sig=card.enc_bind_sig,
            nats_user=card.nats_user,
            status="active",
        )
        for i, card in enumerate(cards)
    ]
    names = [card.agency_id for card in cards]
    roster = R.Roster(
        v=1,
        taskforce=TASKFORCE,
        seq=1,
        issued_ms=NOW_MS - 3_600_000,
        expires_ms=NOW_MS + 90 * R.DAY_MS,
        threshold=1,
        coordinators=[names[0]],
        members=member_list,
        channels=[
            R.Channel(channel, list(names), names[::10], 1, 3, []) for channel in sorted(channels)
        ],
        revoked=[],
    )
    return R.TrustedRoster(roster, R.encode_roster(roster))


@dataclass(frozen=True)
class ConfigFigures:
    members: int
    roster_bytes: int
    render_s: float
    config_bytes: int
    check_s: float
    start_s: float
    rss_kib: int
    reload_s: float  # SIGHUP (a roster change) until the server says it reloaded


def rss_kib(pid: int) -> int:
    """The process's resident set (VmRSS), KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def admin_nkey() -> tuple[bytes, str]:
    seed = nkeys.encode_seed(b"\x07" * 32, nkeys.PREFIX_BYTE_USER)
    return seed, nkeys.from_seed(seed).public_key.decode()


def _start(config: Path, port: int, log: Path, *, timeout: float = 120.0) -> BrokerProcess:
    broker = BrokerProcess(config=config, host="127.0.0.1", port=port, log=log)
    broker.start(timeout=timeout)
    return broker


def config_figures(roster: R.TrustedRoster, directory: Path) -> ConfigFigures:
    directory.mkdir(parents=True)
    _, public = admin_nkey()
    port = free_port()
    start = time.perf_counter()
    text = render_config(roster, admin_nkey=public, store_dir=directory / "jetstream", port=port)
    render_s = time.perf_counter() - start
    config = directory / "nats.conf"
    config.write_text(text)
    start = time.perf_counter()
    subprocess.run(
        [str(find_nats_server()), "-t", "-c", str(config)], check=True, capture_output=True
    )
    check_s = time.perf_counter() - start
    start = time.perf_counter()
    broker = _start(config, port, directory / "nats.log")
    start_s = time.perf_counter() - start
    assert broker.process is not None
    rss = rss_kib(broker.process.pid)
    reload_s = _reload_s(broker, directory / "nats.log")
    broker.stop()
    return ConfigFigures(
        members=len(roster.roster.members),
        roster_bytes=len(R.encode_roster(roster.roster)),
        render_s=render_s,
        config_bytes=len(text.encode()),
        check_s=check_s,
        start_s=start_s,
        rss_kib=rss,
        reload_s=reload_s,
    )


def _reload_s(broker: BrokerProcess, log: Path) -> float:
    """SIGHUP until the server's own log line says it reloaded its configuration."""
    assert broker.process is not None
    mine = f"[{broker.process.pid}] "
    before = log.read_text(errors="replace").count("Reloaded server configuration")
    start = time.perf_counter()
    broker.process.send_signal(signal.SIGHUP)
    while time.perf_counter() - start < 120:
        lines = [
            line
            for line in log.read_text(errors="replace").splitlines()
            if line.startswith(mine) and "Reloaded server configuration" in line
        ]
        if len(lines) > before:
            return time.perf_counter() - start
        time.sleep(0.02)
    return float("nan")


@dataclass(frozen=True)
class ConsumerFigures:
    count: int
    create_s: float  # IN_FLIGHT requests at a time
    again_each_s: float  # one existing consumer added again, one request after the other
    rss_before_kib: int
    rss_after_kib: int
    store_bytes: int
    stop_s: float
    restart_s: float
    restart_rss_kib: int


# Consumers created IN_FLIGHT at a time (the server's cost, not a round trip each: provision
# makes them one after the other, AGAIN of them are timed so); AGAIN existing consumers are
# added again one by one, as provisioning after every roster change does.
IN_FLIGHT = 32
AGAIN = 500


def _store_bytes(directory: Path) -> int:
    """Disk used (allocated blocks: a consumer is a directory and small files)."""
    return sum(p.lstat().st_blocks * 512 for p in directory.rglob("*"))


async def _create_consumers(url: str, seed: bytes, count: int) -> tuple[float, float]:
    conn = await transport.connect(
        url, nkey_seed=seed, agency=None, name="bench-admin", reconnect=False
    )
    try:
        js = conn.js
        channel = "alerts"
        limits = transport.ChannelLimits(
            max_bytes=1 << 30, max_msgs_per_sender=3000, max_age_days=30, max_msg_size=1 << 19
        )
        await js.add_stream(transport.stream_config(TASKFORCE, channel, limits))
        stream = stream_name(TASKFORCE, channel)
        configs = [
            transport.reader_consumer_config(durable_name(f"a{i:05d}", channel))
            for i in range(count)
        ]
        slots = asyncio.Semaphore(IN_FLIGHT)

        async def add(config: Any) -> None:
            async with slots:
                await js.add_consumer(stream, config, timeout=60)

        start = time.perf_counter()
        await asyncio.gather(*(add(config) for config in configs))
        create_s = time.perf_counter() - start
        start = time.perf_counter()
        for config in configs[:AGAIN]:
            await js.add_consumer(stream, config, timeout=60)
        return create_s, (time.perf_counter() - start) / min(AGAIN, count)
    finally:
        await conn.close()


def _stop(broker: BrokerProcess) -> float:
    start = time.perf_counter()
    broker.stop(timeout=150)  # the systemd unit's TimeoutStopSec
    return time.perf_counter() - start


def consumer_figures(count: int, roster: R.TrustedRoster, directory: Path) -> ConsumerFigures:
    """``count`` durable consumers on one stream of a single node configured for ``roster``
    (``render_config``: its users, and the limits it renders)."""
    directory.mkdir(parents=True)
    seed, public = admin_nkey()
    port = free_port()
    config = directory / "nats.conf"
    config.write_text(
        render_config(roster, admin_nkey=public, store_dir=directory / "js", port=port)
    )
    broker = _start(config, port, directory / "nats.log")
    assert broker.process is not None
    try:
        before = rss_kib(broker.process.pid)
        create_s, again_each_s = asyncio.run(_create_consumers(broker.url, seed, count))
        after = rss_kib(broker.process.pid)
    finally:
        stop_s = _stop(broker)
    store = _store_bytes(directory / "js")
    start = time.perf_counter()
    broker = _start(config, port, directory / "nats.log")
    restart_s = time.perf_counter() - start
    assert broker.process is not None
    restart_rss = rss_kib(broker.process.pid)
    broker.kill()  # its stop was measured once; the directory goes
    return ConsumerFigures(
        count, create_s, again_each_s, before, after, store, stop_s, restart_s, restart_rss
    )


def _ratio(large: float, small: float) -> str:
    return f"{large / small:.1f}x" if small > 0 else "-"


Row = tuple[str, float, float, str]


def _table(columns: tuple[int, int], unit: str, rows: list[Row]) -> None:
    small, large = columns
    print(f"{'':28}{small:>12,}{large:>14,}{'ratio':>9}   ({unit}: {large / small:.0f}x)")
    for label, a, b, fmt in rows:
        print(f"  {label:26}{fmt.format(a):>12}{fmt.format(b):>14}{_ratio(b, a):>9}")
    sys.stdout.flush()


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="tfshare-broker-scale-") as tmp:
        root = Path(tmp)
        build = time.perf_counter()
        large_roster = scale_roster(LARGE)
        build_s = time.perf_counter() - build
        small = config_figures(scale_roster(SMALL), root / "small")
        large = config_figures(large_roster, root / "large")
        print(
            f"broker configuration, {len(CHANNELS)} channels (all read, 1/10 write); "
            f"{LARGE:,} identities built in {build_s:.1f} s"
        )
        _table(
            (SMALL, LARGE),
            "members",
            [
                ("roster (bytes)", small.roster_bytes, large.roster_bytes, "{:,}"),
                ("render_config (ms)", small.render_s * 1e3, large.render_s * 1e3, "{:,.0f}"),
                ("config file (bytes)", small.config_bytes, large.config_bytes, "{:,}"),
                ("nats-server -t (ms)", small.check_s * 1e3, large.check_s * 1e3, "{:,.0f}"),
                ("start-up to ready (ms)", small.start_s * 1e3, large.start_s * 1e3, "{:,.0f}"),
                ("RSS when ready (MiB)", small.rss_kib / 1024, large.rss_kib / 1024, "{:,.1f}"),
                ("reload, SIGHUP (ms)", small.reload_s * 1e3, large.reload_s * 1e3, "{:,.0f}"),
            ],
        )
        # The small roster's configuration (its limits, 100 users): the RSS is the
        # consumers', not the 20,000 users' (whose parsing leaves garbage the GC returns).
        base = scale_roster(SMALL)
        few = consumer_figures(CONSUMERS_SMALL, base, root / "consumers-small")
        many = consumer_figures(CONSUMERS_LARGE, base, root / "consumers-large")
        print(
            f"durable reader consumers on one stream, single node as configured for {SMALL} "
            f"agencies (sync_interval: always; created {IN_FLIGHT} at a time)"
        )
        mib = 1024
        _table(
            (few.count, many.count),
            "consumers",
            [
                ("create, total (s)", few.create_s, many.create_s, "{:,.1f}"),
                ("create, each (ms)", few.create_s / few.count * 1e3,
                 many.create_s / many.count * 1e3, "{:,.2f}"),
                (f"add again, each (ms; {AGAIN})", few.again_each_s * 1e3,
                 many.again_each_s * 1e3, "{:,.2f}"),
                ("RSS after (MiB)", few.rss_after_kib / mib, many.rss_after_kib / mib, "{:,.1f}"),
                ("RSS added (MiB)", (few.rss_after_kib - few.rss_before_kib) / mib,
                 (many.rss_after_kib - many.rss_before_kib) / mib, "{:,.1f}"),
                ("store on disk (MiB)", few.store_bytes / 2**20, many.store_bytes / 2**20,
                 "{:,.1f}"),
                ("stop, SIGTERM (ms)", few.stop_s * 1e3, many.stop_s * 1e3, "{:,.0f}"),
                ("restart to ready (ms)", few.restart_s * 1e3, many.restart_s * 1e3, "{:,.0f}"),
                ("RSS after restart (MiB)", few.restart_rss_kib / mib,
                 many.restart_rss_kib / mib, "{:,.1f}"),
            ],
        )  # fmt: skip


if __name__ == "__main__":
    main()
