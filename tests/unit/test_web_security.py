"""The web inbox's access rules, against the real aiohttp application (tfshare.web.app).

The desk is a small stand-in offering the desk's documented reading methods over real
``tfshare.desk.api`` structs: these tests are about who may see and change what, not about
crypto or the broker (tests/web drive the whole thing in a browser). Host refusals are 421
Misdirected Request; session refusals 401 (or a 303 to /login for a page); CSRF and Origin
refusals 403.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tfshare.desk import api
from tfshare.errors import RejectCode, Rejected, UsageError
from tfshare.web.app import build_app, start
from tfshare.web.inbox import QUARANTINE_HINTS, due_view
from tfshare.web.security import (
    CONTENT_SECURITY_POLICY,
    LOGINS,
    SESSION_COOKIE,
    SETTINGS,
    Logins,
)

MSG_ID = "0123456789abcdef0123456789abcdef"


def message(msg_id: str = MSG_ID, **body: Any) -> api.Message:
    full = {"title": "a title", "severity": "high", "handling": {"tlp": "AMBER"}, **body}
    return api.Message(
        msg_id=msg_id,
        sender="ngo",
        fingerprint="ab12 cd34",
        channel="alerts",
        schema="tf.alert/1",
        sent="2026-12-06T10:00:00Z",
        received="2026-12-06T10:00:01Z",
        warning=None,
        body=full,
        roster_seq=3,
        received_ms=1_796_032_801_000,
    )


@dataclass
class StandInDesk:
    """The desk's reading side over a list of messages (newest first) and a feed queue."""

    agency_id: str = "police"
    taskforce: str = "tf-test"
    stored: list[api.Message] = field(default_factory=list)
    feeds: list[asyncio.Queue[api.FeedItem]] = field(default_factory=list)

    def inbox(self, limit: int = 1000) -> api.InboxRows:
        rows = [
            api.InboxRow(m.msg_id, m.sender, m.channel, m.schema, m.sent, m.received)
            for m in self.stored[:limit]
        ]
        return api.InboxRows(rows)

    def messages(self, limit: int = 1000) -> list[api.Message | api.Unreadable]:
        return list(self.stored[:limit])

    def message(self, ref: str) -> api.Message:
        wanted = ref.rsplit(":", maxsplit=1)[-1]
        for m in self.stored:
            if m.msg_id.startswith(wanted):
                return m
        raise Rejected(RejectCode.E_MALFORMED, f"no message {wanted} in the inbox")

    def quarantine(self, limit: int = 100) -> api.QuarantineRows:
        row = api.QuarantineRow("ee" * 32, "E_BAD_SIG", "bad <b>sig</b>", None, "tf.x", "t", 9, 9)
        return api.QuarantineRows([row])

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[AsyncIterator[api.FeedItem]]:
        queue: asyncio.Queue[api.FeedItem] = asyncio.Queue()
        self.feeds.append(queue)

        async def items() -> AsyncIterator[api.FeedItem]:
            while True:
                yield await queue.get()

        try:
            yield items()
        finally:
            self.feeds.remove(queue)


class Clock:
    def __init__(self) -> None:
        self.now = 1_796_000_000.0

    def __call__(self) -> float:
        return self.now


Scenario = Callable[[TestClient[web.Request, web.Application], StandInDesk, Clock], Awaitable[None]]


def run(scenario: Scenario, desk: StandInDesk | None = None) -> None:
    async def main() -> None:
        clock = Clock()
        the_desk = desk or StandInDesk(stored=[message()])
        app = build_app(the_desk, clock=clock)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        app[SETTINGS].allow("127.0.0.1", server.port or 0)
        async with TestClient(server) as client:
            await scenario(client, the_desk, clock)

    asyncio.run(main())


def own_origin(client: TestClient[web.Request, web.Application]) -> dict[str, str]:
    return {"Origin": f"http://127.0.0.1:{client.port}"}


async def log_in(client: TestClient[web.Request, web.Application]) -> str:
    """Log in with a fresh token; the session's CSRF token (read from the page)."""
    token, _ = client.app[LOGINS].issue()
    response = await client.get(f"/login?token={token}", allow_redirects=False)
    assert response.status == 303
    page = await (await client.get("/")).text()
    marker = 'name="csrf" value="'
    start_at = page.index(marker) + len(marker)
    return page[start_at : page.index('"', start_at)]


def test_without_a_session_pages_redirect_to_login_and_the_feed_is_401() -> None:
    async def scenario(client: Any, desk: StandInDesk, clock: Clock) -> None:
        for path in ("/", f"/message/{MSG_ID}", f"/message/{MSG_ID}.json", "/quarantine"):
            response = await client.get(path, allow_redirects=False)
            assert response.status == 303, path
            assert response.headers["Location"] == "/login"
        assert (await client.get("/events")).status == 401
        logout = await client.post("/logout", data={"csrf": "x"}, headers=own_origin(client))
        assert logout.status == 401
        page = await client.get("/login")
        assert page.status == 401
        assert "tfshare web open" in await page.text()

    run(scenario)


def test_a_login_token_logs_in_once_only() -> None:
    async def scenario(client: Any, desk: StandInDesk, clock: Clock) -> None:
        token, _ = client.app[LOGINS].issue()
        first = await client.get(f"/login?token={token}", allow_redirects=False)
        assert first.status == 303
        assert first.headers["Location"] == "/"
        assert (await client.get("/", allow_redirects=False)).status == 200
        client.session.cookie_jar.clear()
        second = await client.get(f"/login?token={token}", allow_redirects=False)
        assert second.status == 403
        assert SESSION_COOKIE not in second.cookies
        assert (await client.get("/", allow_redirects=False)).status == 303

    run(scenario)


def test_a_stale_login_token_is_refused_after_60_seconds() -> None:
    async def scenario(client: Any, desk: StandInDesk, clock: Clock) -> None:
        logins = client.app[LOGINS]
        fresh, _ = logins.issue()
        stale, _ = logins.issue()
        clock.now += 59
        assert (await client.get(f"/login?token={fresh}", allow_redirects=False)).status == 303
        client.session.cookie_jar.clear()
        clock.now += 2
        refused = await client.get(f"/login?token={stale}", allow_redirects=False)
        assert refused.status == 403
        assert "older than 60 seconds" in await refused.text()

    run(scenario)


def test_an_unknown_login_token_is_refused() -> None:
    async def scenario(client: Any, desk: StandInDesk, clock: Clock) -> None:
        client.app[LOGINS].issue()
        response = await client.get("/login?token=guessed", allow_redirects=False)
        assert response.status == 403
        assert (await client.get("/", allow_redirects=False)).status == 303

    run(scenario)


def test_login_tokens_are_kept_hashed() -> None:
    logins = Logins(clock=lambda: 0.0)
    token, expires = logins.issue()
    assert expires == 60.0
    assert token.encode() not in repr(vars(logins)).encode()
    assert token not in repr(vars(logins))
    assert logins.redeem(token)
    assert not logins.redeem(token)


def test_the_session_cookie_is_httponly_samesite_strict_and_lives_12_hours() -> None:
    async def scenario(client: Any, desk: StandInDesk, clock: Clock) -> None:
        token, _ = client.app[LOGINS].issue()
        response = await client.get(f"/login?token={token}", allow_redirects=False)
        cookie = response.headers["Set-Cookie"]
        assert cookie.startswith(f"{SESSION_COOKIE}=")
        attributes = {a.strip().split("=")[0].lower(): a for a in cookie.split(";")[1:]}
        assert "httponly" in attributes
        assert attributes["samesite"].strip() == "SameSite=Strict"
        assert attributes["path"].strip() == "Path=/"
        assert attributes["max-age"].strip() == "Max-Age=43200"
        clock.now += 12 * 3600 - 1
        assert (await client.get("/", allow_redirects=False)).status == 200
        clock.now += 2
        assert (await client.get("/", allow_redirects=False)).status == 303

    run(scenario)


def test_a_change_without_or_with_a_wrong_csrf_token_is_403() -> None:
    async def scenario(client: Any, desk: StandInDesk, clock: Clock) -> None:
        csrf = await log_in(client)
        missing = await client.post("/logout", data={}, headers=own_origin(client))
        assert missing.status == 403
        wrong = await client.post(
            "/logout", data={"csrf": csrf[:-1] + "x"}, headers=own_origin(client)
        )
        assert wrong.status == 403
        assert (await client.get("/", allow_redirects=False)).status == 200  # still logged in
        right = await client.post("/logout", data={"csrf": csrf}, headers=own_origin(client))
        assert right.status == 200
        assert (await client.get("/", allow_redirects=False)).status == 303  # session ended

    run(scenario)


def test_a_csrf_token_of_another_session_is_refused() -> None:
    async def scenario(client: Any, desk: StandInDesk, clock: Clock) -> None:
        other = await log_in(client)
        await log_in(client)  # a new login ends the old session and its token
        response = await client.post("/logout", data={"csrf": other}, headers=own_origin(client))
        assert response.status == 403

    run(scenario)


def test_a_change_from_a_foreign_origin_is_403_even_with_the_right_token() -> None:
    async def scenario(client: Any, desk: StandInDesk, clock: Clock) -> None:
        csrf = await log_in(client)
        for headers in (
            {"Origin": "http://evil.example"},
            {"Origin": "null"},
            {"Origin": f"http://127.0.0.1:{client.port + 1}"},
            {"Referer": "http://evil.example/page"},
            {},  # neither Origin nor Referer: a browser always sends one on a form post
        ):
            response = await client.post("/logout", data={"csrf": csrf}, headers=headers)
            assert response.status == 403, headers
        assert (await client.get("/", allow_redirects=False)).status == 200
        referer = {"Referer": f"http://127.0.0.1:{client.port}/message/{MSG_ID}"}
        assert (await client.post("/logout", data={"csrf": csrf}, headers=referer)).status == 200

    run(scenario)


def test_a_rebound_host_is_refused_with_421_even_with_a_session() -> None:
    async def scenario(client: Any, desk: StandInDesk, clock: Clock) -> None:
        await log_in(client)
        for host in (f"evil.example:{client.port}", "127.0.0.1", f"127.0.0.1:{client.port + 1}"):
            for path in ("/", "/login", "/events", "/static/app.js"):
                response = await client.get(path, headers={"Host": host}, allow_redirects=False)
                assert response.status == 421, (host, path)
                assert MSG_ID not in await response.text()
        local = await client.get("/", headers={"Host": f"localhost:{client.port}"})
        assert local.status == 200

    run(scenario)


def test_every_response_carries_the_csp_and_security_headers() -> None:
    async def scenario(client: Any, desk: StandInDesk, clock: Clock) -> None:
        responses = [await client.get("/login")]
        await log_in(client)
        responses += [
            await client.get("/"),
            await client.get(f"/message/{MSG_ID}"),
            await client.get("/quarantine"),
            await client.get("/no-such-page"),
            await client.get("/static/app.css"),
        ]
        for response in responses:
            assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert (
                response.headers["Referrer-Policy"] == "same-origin"
            )  # not no-referrer: Chromium then sends "Origin: null" with a form POST
        for response in responses[:-1]:
            assert response.headers["Cache-Control"] == "no-store", response.url

    run(scenario)


def test_message_text_is_escaped_and_hidden_characters_shown() -> None:
    hostile = message(
        title='<script>alert(1)</script><img src=x onerror="alert(2)">\u202egnp.exe\x1b[31m',
        summary='<a href="javascript:alert(3)">click</a>\nline two',
    )

    async def scenario(client: Any, desk: StandInDesk, clock: Clock) -> None:
        await log_in(client)
        for path in ("/", f"/message/{MSG_ID}"):
            page = await (await client.get(path)).text()
            assert "<script>alert" not in page
            assert "<img src=x" not in page
            assert 'href="javascript:' not in page
            assert "\u202e" not in page and "\x1b" not in page
            assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
            assert "\\u202egnp.exe\\x1b[31m" in page

    run(scenario, StandInDesk(stored=[hostile]))


def test_message_export_is_a_json_attachment_of_the_message() -> None:
    async def scenario(client: Any, desk: StandInDesk, clock: Clock) -> None:
        await log_in(client)
        response = await client.get(f"/message/{MSG_ID}.json")
        assert response.status == 200
        assert response.content_type == "application/json"
        disposition = response.headers["Content-Disposition"]
        assert disposition == f'attachment; filename="tfshare-{MSG_ID}.json"'
        exported = msgspec.json.decode(await response.read(), type=api.Message)
        assert exported == desk.stored[0]
        assert (await client.get("/message/ffff.json")).status == 404

    run(scenario)


def test_quarantine_shows_code_and_its_hint_escaped() -> None:
    async def scenario(client: Any, desk: StandInDesk, clock: Clock) -> None:
        await log_in(client)
        page = await (await client.get("/quarantine")).text()
        assert "E_BAD_SIG" in page
        assert "the signature does not verify" in page
        assert "bad &lt;b&gt;sig&lt;/b&gt;" in page

    run(scenario)


def test_the_event_stream_sends_each_stored_message_as_a_json_row() -> None:
    async def scenario(client: Any, desk: StandInDesk, clock: Clock) -> None:
        await log_in(client)
        response = await client.get("/events")
        assert response.headers["Content-Type"] == "text/event-stream"
        assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        while not desk.feeds:
            await asyncio.sleep(0.01)
        fresh = message("ab" * 16, title="<b>new</b>\nline", severity="critical")
        desk.feeds[0].put_nowait(api.FeedItem(fresh))
        lines: list[bytes] = []
        while not lines or not lines[-1].startswith(b"data: "):
            line = (await response.content.readline()).rstrip(b"\n")
            if line.startswith((b"event:", b"data:")):
                lines.append(line)
        assert lines == [b"event: message", lines[-1]]
        row = msgspec.json.decode(lines[-1][len(b"data: ") :])
        assert row["msg_id"] == "ab" * 16
        assert row["href"] == f"/message/{'ab' * 16}"
        assert row["title"] == "<b>new</b>\nline"  # as data: app.js inserts it as text
        assert row["severity"] == "critical" and row["loud"] is True
        response.close()

    run(scenario)


def test_start_refuses_a_non_loopback_address_unless_allowed() -> None:
    async def main() -> None:
        with pytest.raises(UsageError, match="loopback"):
            await start(StandInDesk(), host="0.0.0.0")
        inbox = await start(StandInDesk())
        try:
            assert inbox.url == f"http://127.0.0.1:{inbox.port}/"
            link = inbox.login_link()
            assert link.url.startswith(f"{inbox.url}login?token=")
            assert link.expires.endswith("Z")
        finally:
            await inbox.close()

    asyncio.run(main())


def test_reply_due_counts_from_receipt_and_marks_overdue() -> None:
    hour_ms = 3_600_000
    request = message(response="urgent-8h")
    due = due_view(request, now_ms=request.received_ms + 8 * hour_ms, replied=False)
    assert due is not None
    assert due["due"] == "2026-11-30T18:00:01Z"  # received 10:00:01 + 8 h
    assert due["overdue"] is False  # the deadline itself is still in time
    late = due_view(request, now_ms=request.received_ms + 8 * hour_ms + 1, replied=False)
    assert late is not None and late["overdue"] is True
    answered = due_view(request, now_ms=request.received_ms + 9 * hour_ms, replied=True)
    assert answered is not None and answered["overdue"] is False
    three_days = due_view(message(response="urgent-3d"), now_ms=0, replied=False)
    assert three_days is not None and three_days["due"] == "2026-12-03T10:00:01Z"
    assert due_view(message(response="none"), now_ms=0, replied=False) is None
    assert due_view(message(), now_ms=0, replied=False) is None


def test_an_overdue_request_is_marked_on_its_page() -> None:
    overdue = message(response="urgent-8h")  # received on 2026-11-30, long before now

    async def scenario(client: Any, desk: StandInDesk, clock: Clock) -> None:
        await log_in(client)
        page = await (await client.get(f"/message/{MSG_ID}")).text()
        assert 'id="reply-due" class="overdue"' in page
        assert "OVERDUE" in page

    run(scenario, StandInDesk(stored=[overdue]))


def test_every_receive_code_has_a_quarantine_hint() -> None:
    roster_codes = {c for c in RejectCode if c.value.startswith("E_ROSTER_")}
    assert set(QUARANTINE_HINTS) == {c.value for c in RejectCode} - {c.value for c in roster_codes}


@pytest.mark.parametrize(
    ("example", "schema", "shown"),
    [
        ("alert", "tf.alert/1", "Minor advertised online"),
        ("red_flag", "tf.red_flag/1", "NL91ABNA0417164300"),
        ("tip_summary", "tf.tip_summary/1", "nail salon"),
    ],
)
def test_each_example_message_renders_with_its_handling(
    example: str, schema: str, shown: str
) -> None:
    body = json.loads((Path(__file__).parents[2] / "examples" / f"{example}.json").read_text())
    stored = msgspec.structs.replace(message(), schema=schema, body=body)

    async def scenario(client: Any, desk: StandInDesk, clock: Clock) -> None:
        await log_in(client)
        inbox = await client.get("/")
        assert inbox.status == 200
        page = await client.get(f"/message/{MSG_ID}")
        assert page.status == 200
        text = await page.text()
        assert shown in text
        assert f"TLP:{body['handling']['tlp']}" in text
        assert "ILO indicators of forced labour" in text or "IOM Human Trafficking" in text

    run(scenario, StandInDesk(stored=[stored]))
