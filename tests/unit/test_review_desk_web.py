"""Adversarial review of the agency's desk and its web inbox (issue 13).

Each test here is a finding of the review: it failed before the fix named in its docstring.
The desk's socket server and its feed are the real ones (``tfshare.desk.server``,
``tfshare.desk.service.Desk``); where the agent or the agency would need a broker or a key,
a small stand-in gives the one attribute the code under test reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest

from tfshare.desk import api
from tfshare.desk import client as desk_client
from tfshare.desk.server import DeskServer
from tfshare.desk.service import Desk, Subscription
from tfshare.errors import ExitCode
from tfshare.protocol import Delivered
from tfshare.seal import Opened
from tfshare.web.security import Sessions

BIG = 450 * 1024  # a body near the 512 KiB envelope limit


def big_message(n: int) -> api.Message:
    return api.Message(
        msg_id=f"{n:032x}",
        sender="hostile",
        fingerprint="ab12",
        channel="alerts",
        schema="tf.alert/1",
        sent="2026-12-06T10:00:00Z",
        received="2026-12-06T10:00:01Z",
        warning=None,
        body={"title": "x", "summary": "a" * BIG},
    )


@dataclass
class StandInDesk:
    """What ``DeskServer`` asks of the desk for the requests used here."""

    agency_id: str = "police"
    taskforce: str = "tf-test"
    login_url: str = "http://127.0.0.1:1/login?token=SECRET-LOGIN-TOKEN-xyz"
    searched: list[str] = field(default_factory=list)

    def search(self, text: str) -> api.SearchResult:
        # As Desk.search: every readable message whose body holds the text, whole.
        self.searched.append(text)
        return api.SearchResult([big_message(n) for n in range(25)], [])

    def inbox(self, limit: int = 1000) -> api.InboxRows:
        return api.InboxRows([])

    def login_link(self) -> api.LoginLink:
        return api.LoginLink(self.login_url, "2026-12-06T10:01:00Z")

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[Subscription]:
        yield Subscription()

    def close(self) -> None:
        pass


@contextlib.contextmanager
def serving(desk: StandInDesk, state_dir: Path) -> Iterator[None]:
    """The real socket server for ``desk`` on ``state_dir``, in a loop of its own thread."""
    loop = asyncio.new_event_loop()
    server = DeskServer(desk, api.socket_path(state_dir))  # type: ignore[arg-type]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
    try:
        yield
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


# -- the socket ----------------------------------------------------------------------------------


def test_an_answer_over_the_frame_limit_is_a_failure_said_plainly_not_a_dead_agent(
    tmp_path: Path,
) -> None:
    """A search whose matches (hostile agencies' 450 KiB bodies, whole) exceed the 8 MiB frame
    used to end the conversation without a word: the CLI said "the agent stopped during the
    call" (exit 4) while the agent ran on. Fixed in desk/server.py: a Failed answer."""
    desk = StandInDesk()
    with serving(desk, tmp_path):
        client = desk_client.connect(tmp_path)
        assert client is not None
        with pytest.raises(desk_client.AgentFailed) as failed:
            client.call(api.InboxSearchRequest("a"))
        assert failed.value.exit_code != ExitCode.BROKER
        assert "too large" in failed.value.message
        assert "narrow" in failed.value.hint
        # the agent still answers
        assert isinstance(client.call(api.InboxListRequest()), api.InboxRows)


# -- the feed ------------------------------------------------------------------------------------


def opened(n: int, size: int) -> Opened:
    return Opened(
        msg_id=n.to_bytes(16, "big"),
        env_hash=bytes(32),
        sender="hostile",
        sender_kid=bytes(8),
        fingerprint="ab12",
        ts_ms=1_796_000_000_000,
        taskforce="tf-test",
        channel="alerts",
        seq=n,
        roster_seq=1,
        schema="tf.alert/1",
        schema_fp=bytes(8),
        record={"title": "x", "summary": "a" * size},
        wraps=b"",
        agency_of_enc_kid={},
    )


def feed_desk() -> Desk:
    agency: Any = SimpleNamespace(roster=SimpleNamespace(revoked={}))
    agent: Any = SimpleNamespace(on_outcome=None)
    return Desk(agency, agent, clock=lambda: 1_796_000_000_000)


def test_a_follower_that_never_reads_is_let_go_before_it_holds_hundreds_of_megabytes() -> None:
    """A ``listen`` suspended with Ctrl-Z (or a stuck browser tab) stops reading; the agent kept
    up to 10 000 items for it whatever their size, so a burst of large messages from a member
    agency (or a long day) held them all: 10 000 x 450 KiB is 4.5 GB in the agent. Fixed in
    desk/service.py: each subscriber's queue is bounded in bytes as well as in items."""

    async def main() -> None:
        desk = feed_desk()
        async with desk.subscribe() as sub:
            for n in range(400):  # 400 x 450 KiB: 180 MB of bodies
                desk._on_outcome(Delivered(opened(n, BIG), None, False))
            queued = [sub.queue.get_nowait() for _ in range(sub.queue.qsize())]
        assert queued[-1] is None, "the stalled follower was not let go"
        assert sub.dropped  # so the agent tells it why it ends (FELL_BEHIND, exit 4)
        held = sum(
            len(item.item.body["summary"])
            for item in queued
            if item is not None and isinstance(item.item, api.Message)
        )
        assert held <= 80 * 1024 * 1024

    asyncio.run(main())


def test_a_follower_that_keeps_up_gets_every_large_message() -> None:
    """The byte bound counts what is waiting, not what went through: a reader that keeps up is
    never let go, however much passes."""

    async def main() -> None:
        desk = feed_desk()
        got = 0
        async with desk.subscribe() as sub:
            items = aiter(sub)
            for n in range(400):
                desk._on_outcome(Delivered(opened(n, BIG), None, False))
                item = await anext(items)
                assert item.item.msg_id == f"{n:032x}"
                got += 1
        assert got == 400

    asyncio.run(main())


# -- tfshare web open --browser -------------------------------------------------------------------


TFSHARE = Path(sys.executable).with_name("tfshare")


def test_web_open_in_a_browser_keeps_the_login_token_out_of_every_command_line(
    tmp_path: Path,
) -> None:
    """``tfshare web open --browser`` gave the login link to the browser on its command line,
    which every user of the machine reads in /proc/PID/cmdline: a local user watching for it
    logs in first (the token is good once) and has the analyst's session. Fixed in
    cli/live_cmd.py: the browser is given a 0600 file in the state directory that forwards
    to the link."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    recorded = tmp_path / "argv.txt"
    browser = tmp_path / "browser.sh"
    browser.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {recorded}\n')
    browser.chmod(0o700)
    desk = StandInDesk()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TFSHARE")}
    env |= {"BROWSER": f"{browser} %s", "TFSHARE_HOME": str(tmp_path / "home")}
    with serving(desk, state):
        flags = ["--key", "k", "--roster", "r", "--anchor", "a", "--state", str(state)]
        done = subprocess.run(
            [str(TFSHARE), "web", "open", "--browser", *flags],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    argv = recorded.read_text()
    assert "SECRET-LOGIN-TOKEN" not in argv
    assert "SECRET-LOGIN-TOKEN" not in done.stdout + done.stderr
    opened_path = Path(argv.strip().removeprefix("file://"))
    assert opened_path.is_file()
    assert stat.S_IMODE(opened_path.stat().st_mode) == 0o600
    assert desk.login_url in opened_path.read_text()


# -- secrets in reprs ----------------------------------------------------------------------------


def test_desk_structs_that_carry_plaintext_or_a_token_keep_them_out_of_their_repr() -> None:
    """A repr ends up in a log line or a traceback; ``seal.Opened`` keeps its record out of its
    repr for that reason, but the desk's structs printed the decrypted body, the body being
    published, a disclosure's message key and the login link's token. Fixed in desk/api.py
    and web/security.py (the session's CSRF token)."""
    plaintext = "victim-name-PLAINTEXT"
    message = big_message(1)
    message = api.Message(**{**msgspec.structs.asdict(message), "body": {"title": plaintext}})
    shown = [
        repr(message),
        repr(api.FeedItem(message)),
        repr(api.SearchResult([message], [])),
        repr(api.PublishRequest("alert", body=plaintext.encode(), fields=[f"title={plaintext}"])),
        repr(api.Disclosure(b"MESSAGE-KEY-" + plaintext.encode(), "00" * 16)),
        repr(api.LoginLink("http://127.0.0.1:1/login?token=" + plaintext, "soon")),
    ]
    sessions = Sessions()
    _, session = sessions.create()
    shown += [repr(session), repr(sessions)]
    for text in shown:
        assert plaintext not in text, text
    assert session.csrf not in repr(session) + repr(sessions)
    assert message.msg_id in repr(message)  # still says which message it is
