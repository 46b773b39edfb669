"""A coordinator's trace page in a real browser (headless Chromium): an escalated tip's
lineage and receipts, drawn from the audit log the coordinator's audit service keeps.

The live task force of ``web_world`` (broker, the four agents with their desks and web
inboxes); coord's audit service runs beside coord's agent in the same loop and writes the
log where ``tfshare audit serve`` would. ngo files a tip summary (police reads tips), police
escalates it into an alert (everyone reads alerts); the agents send their receipts to the
coordinator. The trace pages are opened logged in as coord; the escalation's trace is saved
as docs/screens/trace.png for the README.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from webkit import WebWorld, log_in, now_ms, wait_for

from tfshare.audit.logstore import AuditStore
from tfshare.audit.service import AuditService, CheckpointPolicy
from tfshare.workflows import audit

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SCREENS = Path(__file__).resolve().parents[2] / "docs" / "screens"

pytestmark = pytest.mark.slow


@dataclass
class Running:
    stop: asyncio.Event
    task: asyncio.Task[None]


def start_audit_service(world: WebWorld) -> Running:
    """coord's audit service, in the desks' loop (its SQLite connection lives there)."""

    async def start() -> Running:
        agency = world.desks["coord"].agency
        service = AuditService(
            identity=agency.identity(),
            roster=agency.roster,
            roster_bytes=world.tf.roster_bytes,
            store=AuditStore(audit.audit_db(agency)),
            url=world.broker.url,
            clock=now_ms,
            checkpoints=CheckpointPolicy(every=1, interval_s=0.2),
            schemas=agency.registry,
        )
        stop = asyncio.Event()
        return Running(stop, asyncio.create_task(service.run(stop)))

    return world.call(start())


def stop_audit_service(world: WebWorld, running: Running) -> None:
    async def stop() -> None:
        running.stop.set()
        await asyncio.wait_for(running.task, 15)

    world.call(stop())


def example(name: str, **handling: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((EXAMPLES / f"{name}.json").read_text())
    body["handling"] = {**body["handling"], **handling}
    return body


def traced(world: WebWorld, msg_id: str) -> audit.Trace:
    """The trace as the page computes it (its own log connection, on this thread)."""
    return audit.trace(world.desks["coord"].agency, msg_id)


def receivers(trace: audit.Trace) -> set[str]:
    return {words.receiver for _, words in trace.receipts if words.outcome == "accepted"}


def open_trace(driver: webdriver.Chrome, world: WebWorld, msg_id: str) -> None:
    driver.get(world.url("coord") + f"coord/trace/{msg_id}")
    wait_for(lambda: bool(driver.find_elements(By.ID, "inclusion-status")), what="trace page")


def graph_nodes(driver: webdriver.Chrome) -> dict[str, str]:
    """msg_id -> class of each node of the lineage graph on the page."""
    return {
        str(node.get_attribute("data-msg")): str(node.get_attribute("class"))
        for node in driver.find_elements(By.CSS_SELECTOR, "#lineage svg g.node")
    }


def receipt_rows(driver: webdriver.Chrome) -> dict[str, str]:
    """recipient -> outcome, from the receipts table under the timeline."""
    rows = {}
    for row in driver.find_elements(By.CSS_SELECTOR, "#receipt-table tbody tr.receipt-row"):
        cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
        rows[cells[0]] = cells[1]
    return rows


def test_a_coordinators_trace_page_shows_an_escalated_tips_lineage_and_receipts(
    web_world: WebWorld, chrome: webdriver.Chrome
) -> None:
    world = web_world
    running = start_audit_service(world)
    try:
        tip = world.publish(
            "ngo", "tip", example("tip_summary", no_forward=False, code="H1"), channel="tips"
        )
        world.wait_stored("police", tip.msg_id)
        escalation = world.publish(
            "police", "alert", example("alert"), channel="alerts", derive=("escalate", tip.msg_id)
        )
        for reader in ("coord", "ngo", "labour"):
            world.wait_stored(reader, escalation.msg_id)
        # The log has both, police's receipt of the tip and the readers' receipts of the
        # escalation by the members, and a signed checkpoint covering them.
        wait_for(
            lambda: (
                traced(world, tip.msg_id).proof_verified
                and "police" in receivers(traced(world, tip.msg_id))
            ),
            timeout=30,
            what="the tip logged, receipted by police and in a signed checkpoint",
        )
        wait_for(
            lambda: (
                traced(world, escalation.msg_id).proof_verified
                and receivers(traced(world, escalation.msg_id)) >= {"ngo", "labour"}
            ),
            timeout=30,
            what="the escalation logged, receipted by its readers and in a checkpoint",
        )

        log_in(chrome, world, "coord")
        # The tip: the escalation below it in the graph, police's receipt accepted.
        open_trace(chrome, world, tip.msg_id)
        nodes = graph_nodes(chrome)
        assert set(nodes) == {tip.msg_id, escalation.msg_id}
        assert "focus" in nodes[tip.msg_id] and "focus" not in nodes[escalation.msg_id]
        status = chrome.find_element(By.ID, "inclusion-status").text
        assert re.fullmatch(
            r"Proof verified against checkpoint size \d+\. Log entry \d+ .*", status
        ), status
        assert receipt_rows(chrome).get("police") == "accepted"
        followed = chrome.find_element(By.CSS_SELECTOR, "#lineage li.child").text
        assert "escalate" in followed and "police" in followed

        # The escalation: the tip above it, the readers' receipts on the timeline.
        open_trace(chrome, world, escalation.msg_id)
        nodes = graph_nodes(chrome)
        assert set(nodes) == {tip.msg_id, escalation.msg_id}
        tip_box = chrome.find_element(By.CSS_SELECTOR, f'g.node[data-msg="{tip.msg_id}"] rect')
        alert_box = chrome.find_element(
            By.CSS_SELECTOR, f'g.node[data-msg="{escalation.msg_id}"] rect'
        )
        assert tip_box.location["y"] < alert_box.location["y"]  # the parent drawn above
        # ngo and labour receipted it; coord reads receipts but sends none (the roster gives
        # it no write on the receipts channel), so its row says so.
        rows = receipt_rows(chrome)
        assert (rows.get("ngo"), rows.get("labour"), rows.get("coord")) == (
            "accepted",
            "accepted",
            "no receipt",
        )
        # One mark on the timeline per accepted receipt in the table (police, a reader of
        # alerts too, receipts its own message).
        marks = chrome.find_elements(By.CSS_SELECTOR, "#receipts svg g.receipt.accepted")
        assert len(marks) == list(rows.values()).count("accepted") >= 2
        assert chrome.find_element(By.ID, "trace-sender").text.startswith("police")
        link = chrome.find_element(By.ID, "evidence-link").get_attribute("href") or ""
        assert link.endswith(f"/coord/evidence/police:{escalation.msg_id}")

        SCREENS.mkdir(parents=True, exist_ok=True)
        chrome.set_window_size(1400, 1500)
        assert chrome.save_screenshot(str(SCREENS / "trace.png"))
    finally:
        stop_audit_service(world, running)
