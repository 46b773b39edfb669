"""Fixtures for the web inbox's browser tests: headless Chromium, and a live task force whose
agents run with the web inbox on.

``chrome``: Selenium 4 driving Debian's chromium through chromedriver (no download). A missing
browser FAILS the test naming the packages to install: a skipped browser test would pass a
broken inbox.

``web_world``: a real nats-server for the kit's task force (channel "alerts": police and
labour write, everyone reads; "tips": ngo writes, police reads; "receipts": members write, the
coordinator reads), and for each agency its real agent with the real ``Desk`` and the web
inbox (``tfshare.web.app.start``) in one asyncio loop on a background thread - what
``tfshare agent run --web`` runs, minus the signal handlers (they need the main thread) and the
Unix socket. Tests call into that loop with ``WebWorld.call``.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from tfkit import TaskForce, build_taskforce
from webkit import WebWorld, free_port, now_ms

from tfshare.desk.service import Desk
from tfshare.encoding import encode
from tfshare.registry.book import shipped
from tfshare.store import StateStore
from tfshare.web.app import start
from tfshare.workflows import live
from tfshare.workflows.exchange import Credentials

os.environ["TFSHARE_TEST"] = "1"


CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
INSTALL_HINT = (
    "the browser tests need Debian's chromium and its driver: "
    "apt-get install chromium chromium-driver"
)
AGENCIES = ("coord", "police", "ngo", "labour")
SCREENS = Path(__file__).resolve().parents[2] / "docs" / "screens"


@pytest.fixture
def chrome() -> Iterator[webdriver.Chrome]:
    """Headless Chromium (Selenium 4); fails, not skips, where the browser is not installed."""
    for needed in (CHROMIUM, CHROMEDRIVER):
        if not needed.exists():
            pytest.fail(f"{needed} is missing; {INSTALL_HINT}", pytrace=False)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        "--autoplay-policy=no-user-gesture-required",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _agency(tf: TaskForce, name: str, state: Path, roster_bytes: bytes) -> live.Agency:
    """The agency as ``Agency.load`` makes it, from the kit's (already unlocked) identity."""
    directory = state / name
    directory.mkdir(parents=True, exist_ok=True)
    roster_path = directory / "roster.bin"
    roster_path.write_bytes(roster_bytes)
    anchor_path = directory / "anchor.tfanchor"
    anchor_path.write_bytes(encode(tf.anchor))
    return live.Agency(
        creds=Credentials(directory / "key.tfkey", b"unused: the identity is unlocked"),
        roster=tf.trusted(),
        registry=shipped(),
        store=StateStore(directory / "state.db"),
        roster_path=roster_path,
        anchor_path=anchor_path,
        _identity=tf.ids[name],
    )


@pytest.fixture(scope="module")
def web_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebWorld]:
    """A broker and the agents of coord, police, ngo and labour, each with its web inbox."""
    tmp = tmp_path_factory.mktemp("web")
    tf = build_taskforce(now_ms=now_ms(), receipts=True)
    broker = live.start_broker(
        tf.trusted(), tmp / "broker", port=free_port(), roster_bytes=tf.roster_bytes
    )
    loop = asyncio.new_event_loop()
    world = WebWorld(tf=tf, broker=broker, loop=loop)
    ready = threading.Event()
    stop_holder: list[asyncio.Event] = []
    failure: list[BaseException] = []

    async def main() -> None:
        stop = asyncio.Event()
        stop_holder.append(stop)
        tasks = []
        try:
            for name in AGENCIES:
                agency = _agency(tf, name, tmp / "state", tf.roster_bytes)
                agent = live.make_agent(agency, url=broker.url, clock=now_ms, witness=False)
                desk = Desk(agency, agent, now_ms)
                inbox = await start(desk)
                desk.web = inbox
                world.desks[name] = desk
                world.inboxes[name] = inbox
                tasks.append(asyncio.create_task(agent.run(stop)))
        except BaseException as exc:
            failure.append(exc)
            stop.set()
        finally:
            ready.set()
        await stop.wait()
        for desk in world.desks.values():
            desk.close()
        for inbox in world.inboxes.values():
            await inbox.close()
        await asyncio.gather(*tasks, return_exceptions=True)

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    try:
        ready.wait(60)
        if failure:
            raise failure[0]
        yield world
    finally:
        if stop_holder:
            loop.call_soon_threadsafe(stop_holder[0].set)
        thread.join(30)
        loop.close()
        broker.stop()
