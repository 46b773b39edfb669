"""Helpers of the web inbox's browser tests (tests/web): the running task force's handle
(``WebWorld``), logging a browser in, waiting, and reading CSP violations from the console.
The fixtures that make them are in tests/web/conftest.py."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec
from selenium import webdriver
from tfkit import TaskForce

from tfshare.broker import BrokerProcess
from tfshare.desk import api
from tfshare.desk.service import Desk
from tfshare.web.app import WebInbox

T = TypeVar("T")

# The kit's channels: where each kind goes unless a test says otherwise (or derives it).
DEFAULT_CHANNELS = {"alert": "alerts", "red-flag": "alerts", "tip": "tips"}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(condition: Callable[[], bool], *, timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.05)


@dataclass
class WebWorld:
    """The running task force: each agency's desk and web inbox, in the loop of one thread."""

    tf: TaskForce
    broker: BrokerProcess
    loop: asyncio.AbstractEventLoop
    desks: dict[str, Desk] = field(default_factory=dict)
    inboxes: dict[str, WebInbox] = field(default_factory=dict)

    def call(self, coro: Coroutine[Any, Any, T], *, timeout: float = 30.0) -> T:
        """Run ``coro`` in the desks' loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def run(self, fn: Callable[[], T]) -> T:
        """Call ``fn`` in the desks' loop thread (desks and web inboxes are not thread-safe)."""

        async def wrapped() -> T:
            return fn()

        return self.call(wrapped())

    def url(self, agency: str) -> str:
        return self.inboxes[agency].url

    def login_url(self, agency: str) -> str:
        """A fresh one-time login link (what ``tfshare web open`` prints)."""
        return self.run(self.inboxes[agency].login_link).url

    def publish(
        self,
        agency: str,
        kind: str,
        body: dict[str, Any],
        *,
        channel: str | None = None,
        derive: tuple[str, str] | None = None,
    ) -> api.Published:
        """Publish through the agency's desk, as the CLI and the compose form do."""
        if channel is None and derive is None:
            channel = DEFAULT_CHANNELS[kind]
        request = api.PublishRequest(
            kind=kind,
            channel=channel,
            body=msgspec.json.encode(body),
            derive=derive,
            wait_s=5.0,
        )
        return self.call(self.desks[agency].publish(request))

    def has(self, agency: str, msg_id: str) -> bool:
        rows = self.run(lambda: self.desks[agency].inbox(limit=100_000)).rows
        return any(r.msg_id == msg_id for r in rows)

    def wait_stored(self, agency: str, msg_id: str, *, timeout: float = 15.0) -> None:
        wait_for(lambda: self.has(agency, msg_id), timeout=timeout, what=f"{msg_id} at {agency}")


def log_in(driver: webdriver.Chrome, world: WebWorld, agency: str) -> None:
    """Open the agency's inbox in ``driver`` with a fresh one-time link."""
    driver.get(world.login_url(agency))
    wait_for(lambda: driver.current_url == world.url(agency), what="the inbox after login")


def csp_violations(driver: webdriver.Chrome) -> list[str]:
    """Console messages about the Content-Security-Policy (a refused inline script, say)."""
    return [
        str(entry.get("message", ""))
        for entry in driver.get_log("browser")  # type: ignore[no-untyped-call]
        if "Content Security Policy" in str(entry.get("message", ""))
    ]
