"""JetStream's ``sync_interval``: acknowledged publish rates with the default (fsync at most
every 2 minutes) and with ``always`` (fsync before each acknowledgement), on a real
nats-server started here for each setting, on this machine's disk.

Owns: the figures docs/DEPLOY.md quotes for the choice (issue 14, item 7).

Two patterns, as tfshare publishes: one message at a time waiting for its ack (a ``publish``
through the desk), and 256 in flight (the outbox flushed after an outage,
``transport.publish_many``). Envelopes of 2 KiB (a typical alert) on a file stream.

Run: .venv/bin/python bench/sync_interval.py [--messages N] [--dir DIR]
(DIR: where JetStream writes; give a directory on the disk the broker will use.)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import nats
from nats.js.api import StorageType, StreamConfig

NATS_SERVER = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "nats-server"
SIZE = 2048
IN_FLIGHT = 256


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(root: Path, sync: str | None) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    line = f"    sync_interval: {sync}\n" if sync else ""
    conf = root / "nats.conf"
    conf.write_text(
        f'host: 127.0.0.1\nport: {port}\njetstream {{\n    store_dir: "{root / "js"}"\n{line}}}\n',
        encoding="utf-8",
    )
    process = subprocess.Popen(
        [str(NATS_SERVER), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return process, port
        time.sleep(0.05)
    process.kill()
    raise SystemExit("nats-server did not start")


async def rates(port: int, messages: int) -> tuple[float, float]:
    """(acked messages per second one at a time, ... with IN_FLIGHT in flight)."""
    client = await nats.connect(f"nats://127.0.0.1:{port}")
    js = client.jetstream()
    await js.add_stream(StreamConfig(name="BENCH", subjects=["bench.>"], storage=StorageType.FILE))
    body = os.urandom(SIZE)
    started = time.perf_counter()
    for i in range(messages):
        await js.publish("bench.one", body, headers={"Nats-Msg-Id": f"one-{i}"})
    one = messages / (time.perf_counter() - started)
    started = time.perf_counter()
    for start in range(0, messages, IN_FLIGHT):
        futures = [
            await js.publish_async("bench.many", body, headers={"Nats-Msg-Id": f"many-{i}"})
            for i in range(start, min(start + IN_FLIGHT, messages))
        ]
        await asyncio.gather(*futures)
    many = messages / (time.perf_counter() - started)
    await client.close()
    return one, many


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"{args.messages} messages of {SIZE} B, file storage, R1; best of {args.rounds}")
    for sync in (None, "always"):
        best = (0.0, 0.0)
        for _ in range(args.rounds):
            root = Path(tempfile.mkdtemp(prefix="tfshare-sync-", dir=args.dir))
            process, port = start_server(root, sync)
            try:
                one, many = asyncio.run(rates(port, args.messages))
            finally:
                process.terminate()
                process.wait(timeout=20)
                shutil.rmtree(root, ignore_errors=True)
            best = (max(best[0], one), max(best[1], many))
        name = f"sync_interval: {sync}" if sync else "sync_interval default (2m)"
        print(
            f"{name:28} one at a time {best[0]:8.0f} msg/s   "
            f"{IN_FLIGHT} in flight {best[1]:8.0f} msg/s"
        )


if __name__ == "__main__":
    main()
