"""Helpers for integration tests: free ports, agents on the test broker, running them."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

from tfkit import TaskForce

from tfshare import transport
from tfshare.agent import Agent
from tfshare.errors import BrokerError
from tfshare.keys import Identity
from tfshare.registry.book import shipped
from tfshare.store import StateStore


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def make_agent(tf: TaskForce, agency: str, url: str, state: Path) -> Agent:
    return Agent(
        identity=tf.ids[agency],
        roster=tf.trusted(),
        schemas=shipped(),
        store=StateStore(state / agency / "state.db"),
        url=url,
        clock=lambda: time.time_ns() // 1_000_000,
        fetch_timeout=0.2,
    )


def run_agents(agents: list[Agent], until: Callable[[], bool], *, timeout: float = 10.0) -> None:
    """Run agents concurrently until ``until()`` holds (or the timeout), then stop them."""

    async def main() -> None:
        stop = asyncio.Event()
        tasks = [asyncio.create_task(a.run(stop)) for a in agents]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not until() and loop.time() < deadline:
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=10)

    asyncio.run(main())


async def _publish_as(
    identity: Identity, url: str, subject: str, data: bytes, msg_id: str
) -> tuple[int, bool]:
    conn = await transport.connect(
        url,
        nkey_seed=identity.nats_seed_encoded(),
        agency=identity.agency_id,
        name="test",
        reconnect=False,
    )
    try:
        return await transport.publish(conn, subject, data, msg_id=msg_id, timeout=2)
    finally:
        await conn.close()


def publish_as(
    tf: TaskForce, agency: str, url: str, subject: str, data: bytes, msg_id: str | None = None
) -> tuple[int, bool]:
    return asyncio.run(
        _publish_as(tf.ids[agency], url, subject, data, msg_id or os.urandom(16).hex())
    )


async def until_answered(
    conn: transport.Connection, subject: str, request: bytes, *, timeout: float = 30.0
) -> None:
    """Ask on ``subject`` until a service answers: a service that signed its first checkpoint
    may not have subscribed yet, and a request sent before reaches no one (NATS keeps
    nothing for a subject without a subscriber)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await transport.request(conn, subject, request, timeout=2)
            return
        except BrokerError:  # no responders yet
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)
