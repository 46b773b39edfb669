"""The web inbox in a real browser (headless Chromium): login with a one-time link, the live
feed, filters, the message view, hostile messages rendered inert, and the refusals a foreign
page, a missing session or CSRF token, and a rebound Host get. Saves docs/screens/inbox.png and
docs/screens/message.png (the README shows them).

The task force is real (tests/web/conftest.py): labour and police write "alerts" (everyone
reads), ngo writes "tips" (police reads); messages are published through the sender's desk
and reach police's open page over its agent and the Server-Sent Events feed.
"""

from __future__ import annotations

import asyncio
import copy
import http.client
import http.server
import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select
from webkit import WebWorld, csp_violations, log_in, wait_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SCREENS = ROOT / "docs" / "screens"


def example(name: str) -> dict[str, Any]:
    body = json.loads((ROOT / "examples" / f"{name}.json").read_text())
    assert isinstance(body, dict)
    return body


def alert(
    title: str, *, severity: str = "medium", tlp: str = "AMBER", **extra: Any
) -> dict[str, Any]:
    body = copy.deepcopy(example("alert"))
    body.update(title=title, severity=severity, **extra)
    body["handling"] = {"tlp": tlp, "pap": "GREEN", "code": "H1"}
    return body


def tip(summary: str) -> dict[str, Any]:
    body = copy.deepcopy(example("tip_summary"))
    body["summary"] = summary
    body["handling"] = {"tlp": "AMBER", "pap": "AMBER", "code": "H1"}
    return body


def visible_rows(driver: webdriver.Chrome) -> list[str]:
    rows = driver.find_elements(By.CSS_SELECTOR, "#inbox-rows tr.msg")
    return [r.get_attribute("data-msg-id") or "" for r in rows if r.is_displayed()]


def row_present(driver: webdriver.Chrome, msg_id: str) -> bool:
    return bool(driver.find_elements(By.CSS_SELECTOR, f'#inbox-rows tr[data-msg-id="{msg_id}"]'))


def no_alert_dialog(driver: webdriver.Chrome) -> bool:
    try:
        driver.switch_to.alert  # noqa: B018 - raises when there is none
    except NoAlertPresentException:
        return True
    return False


def wait_live(driver: webdriver.Chrome) -> None:
    state = driver.find_element(By.ID, "live-state")
    wait_for(lambda: state.get_attribute("data-state") == "live", what="the live feed")


def test_a_message_from_another_agency_appears_on_the_open_page_without_reload(
    web_world: WebWorld, chrome: webdriver.Chrome
) -> None:
    log_in(chrome, web_world, "police")
    assert chrome.find_element(By.ID, "agency-name").text == "police"
    wait_live(chrome)
    chrome.execute_script("window.loadedOnce = 'yes';")  # gone if the page reloads
    title = f"Van seen at the harbour {uuid.uuid4().hex[:8]}"
    published = web_world.publish("labour", "alert", alert(title, severity="critical"))
    wait_for(lambda: row_present(chrome, published.msg_id), what="the new row")
    assert chrome.execute_script("return window.loadedOnce;") == "yes"
    row = chrome.find_element(By.CSS_SELECTOR, f'tr[data-msg-id="{published.msg_id}"]')
    assert row.find_element(By.CSS_SELECTOR, "td.title a").text == title
    assert row.find_element(By.CSS_SELECTOR, "td.sender").text == "labour"
    assert row.find_element(By.CSS_SELECTOR, "td.severity").text == "critical"
    assert "loud" in (row.get_attribute("class") or "")  # the visual cue of a critical alert
    assert chrome.title.startswith("(1) ")
    assert "alarm" in (chrome.find_element(By.TAG_NAME, "body").get_attribute("class") or "")
    first = chrome.find_elements(By.CSS_SELECTOR, "#inbox-rows tr.msg")[0]
    assert first.get_attribute("data-msg-id") == published.msg_id  # newest on top
    href = row.find_element(By.CSS_SELECTOR, "td.title a").get_attribute("href")
    assert href == f"{web_world.url('police')}message/{published.msg_id}"
    assert csp_violations(chrome) == []


def test_filters_by_channel_severity_tlp_sender_time_and_text(
    web_world: WebWorld, chrome: webdriver.Chrome
) -> None:
    marker = uuid.uuid4().hex[:8]
    low = web_world.publish("labour", "alert", alert(f"low {marker}", severity="low", tlp="GREEN"))
    high = web_world.publish("police", "alert", alert(f"high {marker}", severity="high", tlp="RED"))
    tipped = web_world.publish("ngo", "tip", tip(f"nail salon {marker}"), channel="tips")
    for published in (low, high, tipped):
        web_world.wait_stored("police", published.msg_id)
    log_in(chrome, web_world, "police")
    wait_live(chrome)
    mine = {low.msg_id, high.msg_id, tipped.msg_id}

    def shown() -> set[str]:
        return set(visible_rows(chrome)) & mine

    assert shown() == mine
    text = chrome.find_element(By.ID, "f-text")
    text.send_keys(marker)
    assert set(visible_rows(chrome)) == mine  # only this test's messages carry the marker
    Select(chrome.find_element(By.ID, "f-channel")).select_by_value("tips")
    assert shown() == {tipped.msg_id}
    Select(chrome.find_element(By.ID, "f-channel")).select_by_value("")
    Select(chrome.find_element(By.ID, "f-severity")).select_by_value("high+")
    assert shown() == {high.msg_id}
    Select(chrome.find_element(By.ID, "f-severity")).select_by_value("low")
    assert shown() == {low.msg_id}
    Select(chrome.find_element(By.ID, "f-severity")).select_by_value("")
    Select(chrome.find_element(By.ID, "f-tlp")).select_by_value("RED")
    assert shown() == {high.msg_id}
    Select(chrome.find_element(By.ID, "f-tlp")).select_by_value("")
    Select(chrome.find_element(By.ID, "f-sender")).select_by_value("ngo")
    assert shown() == {tipped.msg_id}
    Select(chrome.find_element(By.ID, "f-sender")).select_by_value("")
    Select(chrome.find_element(By.ID, "f-since")).select_by_value("3600000")
    assert shown() == mine
    assert chrome.find_element(By.ID, "shown-count").text == "3"
    # A row arriving live obeys the filters in force: hidden under channel "tips".
    Select(chrome.find_element(By.ID, "f-channel")).select_by_value("tips")
    late = web_world.publish("labour", "alert", alert(f"late {marker}", severity="critical"))
    wait_for(lambda: row_present(chrome, late.msg_id), what="the late row")
    assert set(visible_rows(chrome)) == {tipped.msg_id}
    assert not chrome.title.startswith("(")  # a hidden row raises no alarm
    Select(chrome.find_element(By.ID, "f-channel")).select_by_value("")
    assert set(visible_rows(chrome)) == mine | {late.msg_id}
    Select(chrome.find_element(By.ID, "f-since")).select_by_value("")
    chrome.find_element(By.ID, "f-text").clear()
    chrome.execute_script("document.getElementById('f-text').dispatchEvent(new Event('input'))")
    SCREENS.mkdir(parents=True, exist_ok=True)
    chrome.save_screenshot(str(SCREENS / "inbox.png"))


def test_the_message_view_shows_sender_handling_grading_indicators_due_and_actions(
    web_world: WebWorld, chrome: webdriver.Chrome
) -> None:
    parent = web_world.publish("labour", "alert", example("alert"))
    web_world.wait_stored("police", parent.msg_id)
    log_in(chrome, web_world, "police")
    chrome.get(f"{web_world.url('police')}message/{parent.msg_id}")
    stored = web_world.run(lambda: web_world.desks["police"].message(parent.msg_id))
    assert chrome.find_element(By.ID, "sender").text == "labour"
    assert chrome.find_element(By.ID, "fingerprint").text == stored.fingerprint
    assert chrome.find_element(By.ID, "roster-seq").text == str(stored.roster_seq)
    banner = chrome.find_element(By.ID, "handling-banner")
    assert "TLP:AMBER+STRICT" in banner.text
    assert "PAP:AMBER" in banner.text and "H2" in banner.text and "NO FORWARD" in banner.text
    # FIRST TLP 2.0: AMBER (and AMBER+STRICT) is #FFC000 on black.
    assert banner.value_of_css_property("background-color") == "rgba(0, 0, 0, 1)"
    label = banner.find_element(By.CSS_SELECTOR, ".tlp-label")
    assert label.value_of_css_property("color") == "rgba(255, 192, 0, 1)"
    page = chrome.find_element(By.TAG_NAME, "main").text
    assert "admiralty-6x6" in page
    assert "htcds:control:restricted-movement" in page
    assert "IOM Human Trafficking Case Data Standard" in page
    assert "Polaris typology" in page
    due = chrome.find_element(By.ID, "reply-due")
    assert "urgent-8h" in due.text and "OVERDUE" not in due.text
    actions = chrome.find_element(By.ID, "actions")
    hrefs = {a.text: a.get_attribute("href") for a in actions.find_elements(By.TAG_NAME, "a")}
    base = web_world.url("police")
    assert hrefs["Reply"] == f"{base}compose/alert?reply={parent.msg_id}"
    assert hrefs["Escalate"] == f"{base}compose/alert?escalate={parent.msg_id}"
    assert hrefs["Reshare"] == f"{base}compose/alert?reshare={parent.msg_id}"
    assert hrefs["Export JSON"] == f"{base}message/{parent.msg_id}.json"
    assert "Amend" not in hrefs  # only the originator amends or retracts
    SCREENS.mkdir(parents=True, exist_ok=True)
    chrome.save_screenshot(str(SCREENS / "message.png"))
    # A reply goes to the requester only: police's page knows it from police's sent list.
    answer = alert("Plate K-123-AB: rental car, hired yesterday", severity="high")
    reply = web_world.publish("police", "alert", answer, derive=("reply", parent.msg_id))
    web_world.wait_stored("labour", reply.msg_id)
    assert not web_world.has("police", reply.msg_id)
    chrome.refresh()
    due = chrome.find_element(By.ID, "reply-due")
    assert "replied" in due.text and "OVERDUE" not in due.text
    assert csp_violations(chrome) == []


def test_the_message_view_links_parent_and_children(
    web_world: WebWorld, chrome: webdriver.Chrome
) -> None:
    parent = web_world.publish("labour", "alert", alert("Recruiter seen in Zwolle"))
    web_world.wait_stored("police", parent.msg_id)
    escalated = web_world.publish(
        "police",
        "alert",
        alert("Recruiter linked to two farms", severity="high"),
        derive=("escalate", parent.msg_id),
    )
    web_world.wait_stored("police", escalated.msg_id)
    log_in(chrome, web_world, "police")
    chrome.get(f"{web_world.url('police')}message/{parent.msg_id}")
    lineage = chrome.find_element(By.ID, "lineage")
    assert "two farms" in lineage.text
    lineage.find_element(By.CSS_SELECTOR, f'a[href="/message/{escalated.msg_id}"]').click()
    wait_for(lambda: chrome.current_url.endswith(escalated.msg_id), what="the child's page")
    back = chrome.find_element(By.CSS_SELECTOR, f'#lineage a[href="/message/{parent.msg_id}"]')
    assert back.is_displayed()
    assert "Zwolle" in chrome.find_element(By.ID, "lineage").text


HOSTILE_TITLE = '<script>document.body.id="pwned"</script><img id=pwned1 src=x onerror=alert(1)>'
BIDI_ANSI = "\u202egnp.exe\x1b[31m\u2066"


def hostile_alert() -> dict[str, Any]:
    """An alert at the schema's limits, every string an attack, about 400 KiB of text."""
    wide = "\U0001f600"  # four bytes of UTF-8 each: 400 KiB fits the schema's length limits
    payload = '<a id=pwned2 href="javascript:alert(3)">x</a>'
    attack = (payload + BIDI_ANSI + wide * 1000)[:1000]
    entities = [{"kind": "phone", "value": attack if i < 5 else wide * 1000} for i in range(100)]
    body = alert(HOSTILE_TITLE + BIDI_ANSI, severity="critical")
    body["summary"] = ("<svg onload=alert(4)><iframe src=javascript:alert(5)>" + wide * 4000)[:4000]
    body["entities"] = entities
    body["where"] = {"country": "NL", "region": (BIDI_ANSI + wide * 200)[:200], "place": "<b>x</b>"}
    return body


def test_a_hostile_message_renders_inert(web_world: WebWorld, chrome: webdriver.Chrome) -> None:
    body = hostile_alert()
    assert len(json.dumps(body, ensure_ascii=False).encode()) >= 400 * 1024
    log_in(chrome, web_world, "police")
    wait_live(chrome)
    published = web_world.publish("labour", "alert", body)
    wait_for(lambda: row_present(chrome, published.msg_id), what="the hostile row", timeout=30)
    for url in (web_world.url("police"), f"{web_world.url('police')}message/{published.msg_id}"):
        if chrome.current_url != url:
            chrome.get(url)
        assert no_alert_dialog(chrome)
        for created in ("pwned", "pwned1", "pwned2"):
            assert chrome.find_elements(By.ID, created) == []
        assert chrome.find_element(By.TAG_NAME, "body").get_attribute("id") in ("", None)
        scripts = chrome.find_elements(By.TAG_NAME, "script")
        assert [s.get_attribute("src") for s in scripts] == [
            f"{web_world.url('police')}static/app.js"
        ]
        assert chrome.find_elements(By.CSS_SELECTOR, "main img, main svg, main iframe") == []
        for link in chrome.find_elements(By.TAG_NAME, "a"):
            assert not (link.get_attribute("href") or "").lower().startswith("javascript:")
        text = chrome.find_element(By.TAG_NAME, "main").text
        assert HOSTILE_TITLE[:60] in text  # shown as text, tags and all
        assert "\u202e" not in text and "\x1b" not in text
        assert "\\u202egnp.exe\\x1b[31m" in text
    # The live row (inserted by app.js) and the rendered page say the same, as text.
    chrome.get(web_world.url("police"))
    row = chrome.find_element(By.CSS_SELECTOR, f'tr[data-msg-id="{published.msg_id}"] td.title')
    assert row.text.startswith(HOSTILE_TITLE[:60])
    assert csp_violations(chrome) == []


@pytest.fixture
def foreign_page() -> Iterator[tuple[str, list[str]]]:
    """Another origin (a page on another port) that can hold a form aimed at the inbox."""
    pages: list[str] = [""]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            data = pages[0].encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{server.server_address[1]}/", pages
    finally:
        server.shutdown()
        server.server_close()


def test_a_foreign_page_cannot_post_to_the_inbox(
    web_world: WebWorld, chrome: webdriver.Chrome, foreign_page: tuple[str, list[str]]
) -> None:
    url, pages = foreign_page
    log_in(chrome, web_world, "police")
    csrf = chrome.find_element(By.CSS_SELECTOR, "form.logout input[name=csrf]").get_attribute(
        "value"
    )
    # Even a page that learnt the CSRF token is refused: no cookie (SameSite), foreign Origin.
    pages[0] = (
        f'<form id=f method=post action="{web_world.url("police")}logout">'
        f'<input name=csrf value="{csrf}"><button id=go>go</button></form>'
    )
    chrome.get(url)
    chrome.find_element(By.ID, "go").click()
    wait_for(lambda: chrome.current_url.startswith(web_world.url("police")), what="the post")
    body = chrome.find_element(By.TAG_NAME, "body").text
    assert "may only come from the web inbox" in body or "not logged in" in body
    chrome.get(web_world.url("police"))
    assert chrome.current_url == web_world.url("police")  # still logged in: not logged out
    assert chrome.find_elements(By.ID, "inbox-rows")


def test_requests_without_session_or_csrf_or_to_a_rebound_host_are_refused(
    web_world: WebWorld,
) -> None:
    inbox = web_world.inboxes["police"]

    def raw(path: str, host: str, method: str = "GET") -> int:
        conn = http.client.HTTPConnection("127.0.0.1", inbox.port, timeout=10)
        try:
            conn.request(method, path, headers={"Host": host})
            return conn.getresponse().status
        finally:
            conn.close()

    own = f"127.0.0.1:{inbox.port}"
    assert raw("/", own) == 303  # no session: to the login page
    assert raw("/events", own) == 401
    assert raw(f"/login?token={uuid.uuid4().hex}", own) == 403
    rebound = f"attacker.example:{inbox.port}"
    assert raw("/", rebound) == 421
    assert raw("/login", rebound) == 421

    async def with_session() -> list[int]:
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as session:
            login = await session.get(web_world.login_url("police"), allow_redirects=False)
            assert login.status == 303
            origin = {"Origin": f"http://{own}"}
            statuses = [(await session.get(inbox.url)).status]
            statuses.append((await session.post(f"{inbox.url}logout", headers=origin)).status)
            wrong = {"csrf": "not-the-token"}
            statuses.append(
                (await session.post(f"{inbox.url}logout", data=wrong, headers=origin)).status
            )
            rebound_host = {"Host": rebound}
            statuses.append((await session.get(inbox.url, headers=rebound_host)).status)
            return statuses

    assert asyncio.run(with_session()) == [200, 403, 403, 421]
