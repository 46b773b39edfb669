"""Adversarial review of the web inbox (issue 13), in headless Chromium: what a browser does
with what the review changed.

The web inbox is the real one (``tfshare.web.app.start``) over a stand-in desk that lists no
message: these tests are about getting in, not about messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

from selenium import webdriver
from webkit import wait_for

from tfshare.desk import api
from tfshare.desk.service import Subscription
from tfshare.web.app import WebInbox, start

from tfshare.cli.live_cmd import _login_page  # type: ignore[import-not-found,unused-ignore]  # isort: skip


@dataclass
class EmptyDesk:
    agency_id: str = "police"
    taskforce: str = "tf-test"

    def inbox(self, limit: int = 1000) -> api.InboxRows:
        return api.InboxRows([])

    def messages(self, limit: int = 1000) -> list[api.Message | api.Unreadable]:
        return []

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[Subscription]:
        yield Subscription()  # a feed that stays quiet


@contextlib.contextmanager
def running_inbox() -> Iterator[tuple[WebInbox, asyncio.AbstractEventLoop]]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    inbox = asyncio.run_coroutine_threadsafe(start(EmptyDesk()), loop).result(30)
    try:
        yield inbox, loop
    finally:
        asyncio.run_coroutine_threadsafe(inbox.close(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_the_forwarding_page_of_web_open_logs_the_browser_in(
    chrome: webdriver.Chrome, tmp_path: Path
) -> None:
    """``tfshare web open --browser`` hands the browser a 0600 file (not the token on its
    command line): Chromium follows it from file:// to the inbox and is logged in. A login
    opened from outside (file://, another site) answers a page that moves on to the inbox
    itself: a 303 would stay in the cross-site navigation, where the SameSite=Strict cookie
    just set is not sent, and land on "not logged in" (web/inbox.py ``login``)."""
    with running_inbox() as (inbox, loop):

        async def link() -> api.LoginLink:
            return inbox.login_link()

        url = asyncio.run_coroutine_threadsafe(link(), loop).result(10).url
        page = _login_page(tmp_path, url)
        chrome.get(page.as_uri())
        wait_for(lambda: chrome.current_url == inbox.url, what="the inbox after the forward")
        assert chrome.find_element("id", "inbox-rows") is not None
        # The token is spent: the same page again does not log a second browser in.
        chrome.delete_all_cookies()
        chrome.get(page.as_uri())
        wait_for(lambda: chrome.current_url.startswith(inbox.url + "login"), what="login page")
        assert "inbox-rows" not in chrome.page_source
