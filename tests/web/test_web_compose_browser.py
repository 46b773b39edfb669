"""Composing in the web inbox, in headless Chromium against real agents (tests/web/conftest.py):
a tip typed into the generated form reaches its reader; an invalid field is named on the page
and what was typed stays (also after a reload: the draft); a reshare of a no_forward message is
refused in the page and nothing is published."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select
from webkit import WebWorld, csp_violations, log_in, wait_for

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _field(driver: webdriver.Chrome, name: str) -> WebElement:
    return driver.find_element(By.NAME, name)


def _choose(driver: webdriver.Chrome, name: str, value: str) -> None:
    Select(_field(driver, name)).select_by_value(value)


def _type(driver: webdriver.Chrome, name: str, text: str) -> None:
    element = _field(driver, name)
    element.clear()
    element.send_keys(text)


def _set_time(driver: webdriver.Chrome, name: str, value: str) -> None:
    # A datetime-local control's keyboard entry depends on the locale; set its value as the
    # picker would.
    driver.execute_script("arguments[0].value = arguments[1];", _field(driver, name), value)


def _sent(world: WebWorld, agency: str, subject: str) -> list[str]:
    """The msg_ids of the agency's own sent messages of one type (its receipts, sent as
    messages arrive, are left out: they come and go on their own time)."""
    sent = world.run(lambda: world.desks[agency].sent(limit=100_000))
    return [s["msg_id"] for s in sent if str(s["schema"]).startswith(f"{subject}/")]


def _received_from(world: WebWorld, agency: str, sender: str) -> list[str]:
    rows = world.run(lambda: world.desks[agency].inbox(limit=100_000)).rows
    return [r.msg_id for r in rows if r.sender == sender and not r.schema.startswith("tf.receipt")]


def _send(driver: webdriver.Chrome) -> None:
    driver.find_element(By.ID, "compose-send").click()


def _wait_done(driver: webdriver.Chrome) -> str:
    """The msg_id on the confirmation page; failing, what the form page said instead."""
    try:
        wait_for(lambda: "/compose/done/" in driver.current_url, what="the confirmation page")
    except AssertionError:
        said = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".problem, .error")]
        raise AssertionError(f"not published: {said or driver.page_source[:2000]}") from None
    return str(driver.find_element(By.ID, "done-msg-id").text)


def test_a_tip_composed_in_the_form_is_delivered_to_its_reader(
    web_world: WebWorld, chrome: webdriver.Chrome
) -> None:
    log_in(chrome, web_world, "ngo")
    chrome.get(web_world.url("ngo") + "compose/tip")
    _choose(chrome, "_channel", "tips")
    _choose(chrome, "source_type", "hotline")
    _set_time(chrome, "received", "2026-12-06T09:42:00")
    _type(chrome, "summary", "Caller: three workers live above the salon <b>and</b> never leave.")
    _type(chrome, "locations.0.country", "NL")
    _type(chrome, "locations.0.place", "Rotterdam")
    _type(chrome, "indicators", "ilo:isolation\nilo:restriction-of-movement")
    _type(chrome, "possible_victims.count", "3")
    _choose(chrome, "handling.tlp", "AMBER")
    _choose(chrome, "grading.system", "europol-4x4")
    # compose.js shows only the chosen grading system's fields (no inline script: CSP).
    admiralty = chrome.find_element(By.CSS_SELECTOR, 'fieldset[data-variant="admiralty-6x6"]')
    assert not admiralty.is_displayed()
    _choose(chrome, "grading@europol-4x4.source", "B")
    _choose(chrome, "grading@europol-4x4.information", "2")
    _send(chrome)

    msg_id = _wait_done(chrome)
    assert msg_id in _sent(web_world, "ngo", "tf.tip_summary")
    assert "police" in chrome.find_element(By.ID, "done-recipients").text
    web_world.wait_stored("police", msg_id)
    received = web_world.run(lambda: web_world.desks["police"].message(msg_id))
    assert received.sender == "ngo"
    assert received.channel == "tips"
    # As the reader decodes it: the schema's defaults filled in (the sender left them out).
    assert received.body == {
        "source_type": "hotline",
        "received": "2026-12-06T09:42:00Z",
        "summary": "Caller: three workers live above the salon <b>and</b> never leave.",
        "locations": [{"country": "NL", "place": "Rotterdam"}],
        "indicators": ["ilo:isolation", "ilo:restriction-of-movement"],
        "possible_victims": {"count": 3, "age_bands": [], "needs": []},
        "handling": {"tlp": "AMBER", "pap": "AMBER", "code": "H1", "no_forward": False},
        "grading": {"system": "europol-4x4", "source": "B", "information": "2"},
    }
    assert csp_violations(chrome) == []


def test_an_invalid_field_is_named_on_the_page_and_the_typed_values_stay(
    web_world: WebWorld, chrome: webdriver.Chrome
) -> None:
    sent_before = _sent(web_world, "ngo", "tf.tip_summary")
    log_in(chrome, web_world, "ngo")
    page = web_world.url("ngo") + "compose/tip"
    chrome.get(page)
    _choose(chrome, "_channel", "tips")
    _choose(chrome, "source_type", "online")
    _type(chrome, "summary", "An ad offers 'work abroad, passport kept safe'.")
    _type(chrome, "locations.0.country", "Netherlands")  # not a two-letter code
    _choose(chrome, "handling.tlp", "GREEN")
    _send(chrome)

    wait_for(lambda: chrome.find_elements(By.ID, "error-received") != [], what="the errors")
    country_error = chrome.find_element(By.ID, "error-locations.0.country").text
    assert country_error == "locations[0].country: must match ^[A-Z]{2}$"
    assert chrome.find_element(By.ID, "error-received").text == "received: a value is needed here"
    assert chrome.find_element(By.ID, "compose-error").is_displayed()
    # Everything typed is still there, the invalid value too, to be corrected.
    assert _field(chrome, "locations.0.country").get_attribute("value") == "Netherlands"
    summary = _field(chrome, "summary").get_attribute("value")
    assert summary == "An ad offers 'work abroad, passport kept safe'."
    assert Select(_field(chrome, "handling.tlp")).first_selected_option.text == "GREEN"
    assert Select(_field(chrome, "_channel")).first_selected_option.text == "tips"
    # A reload (a new GET) shows the draft.
    chrome.get(page)
    assert _field(chrome, "locations.0.country").get_attribute("value") == "Netherlands"
    assert _field(chrome, "summary").get_attribute("value") == summary
    assert _sent(web_world, "ngo", "tf.tip_summary") == sent_before

    # Corrected, it goes.
    _type(chrome, "locations.0.country", "NL")
    _set_time(chrome, "received", "2026-12-06T10:00")
    _choose(chrome, "grading.system", "uk-3x5x2")
    _choose(chrome, "grading@uk-3x5x2.source", "2")
    _choose(chrome, "grading@uk-3x5x2.intelligence", "C")
    _choose(chrome, "grading@uk-3x5x2.handling", "P")
    _send(chrome)
    web_world.wait_stored("police", _wait_done(chrome))


def test_a_reshare_of_a_no_forward_message_is_refused_in_the_page_and_nothing_is_published(
    web_world: WebWorld, chrome: webdriver.Chrome
) -> None:
    body = json.loads((EXAMPLES / "alert.json").read_text())
    assert body["handling"]["no_forward"] is True
    original = web_world.publish("labour", "alert", body, channel="alerts")
    web_world.wait_stored("police", original.msg_id)
    readers = ("labour", "ngo", "coord")
    assert _sent(web_world, "police", "tf.alert") == []
    assert all(_received_from(web_world, a, "police") == [] for a in readers)

    log_in(chrome, web_world, "police")
    chrome.get(web_world.url("police") + f"message/{original.msg_id}")
    chrome.find_element(By.LINK_TEXT, "Reshare").click()
    wait_for(lambda: "reshare=" in chrome.current_url, what="the reshare form")
    assert chrome.find_element(By.ID, "compose-no-forward").is_displayed()
    # The form starts from the parent's body.
    assert _field(chrome, "title").get_attribute("value") == body["title"]
    assert _field(chrome, "entities.2.value").get_attribute("value") == "K-123-AB"
    _send(chrome)

    wait_for(lambda: chrome.find_elements(By.ID, "compose-error") != [], what="the refusal")
    refusal = chrome.find_element(By.ID, "compose-error").text
    assert "cannot reshare this message" in refusal
    assert "ask the originator to release it" in refusal
    assert "Nothing was published." in refusal
    assert "/compose/alert" in chrome.current_url  # still the form, not a confirmation
    # Sealing keeps a message among the sent ones (and in the outbox) before it goes out: an
    # empty list here means nothing was sealed, so nothing can be sent later either.
    assert _sent(web_world, "police", "tf.alert") == []
    assert web_world.run(lambda: web_world.desks["police"].status().outbox) == 0
    assert all(_received_from(web_world, a, "police") == [] for a in readers)
