"""The desk's cache of decrypted messages (the web inbox lists and filters on decrypted
fields at every page load): a message is opened once, an altered row is opened again and
refused, and a sender revoked as compromised since is marked whatever the cache holds."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from test_web_inbox_browser import alert
from webkit import WebWorld

from tfshare.desk import api
from tfshare.roster import Revocation
from tfshare.store import InboxItem
from tfshare.workflows import live


def counting_reads(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    opened: list[bytes] = []
    real_read_inbox = live.read_inbox

    def counting(agency: live.Agency, items: Iterable[InboxItem]) -> Iterator[Any]:
        for item in items:
            opened.append(item.msg_id)
            yield from real_read_inbox(agency, [item])

    monkeypatch.setattr(live, "read_inbox", counting)
    return opened


def test_the_inbox_page_decrypts_each_message_once_not_at_every_load(
    web_world: WebWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = [web_world.publish("labour", "alert", alert(f"cached {n}")).msg_id for n in range(5)]
    for msg_id in sent:
        web_world.wait_stored("police", msg_id, timeout=60)
    desk = web_world.desks["police"]
    opened = counting_reads(monkeypatch)
    first = web_world.run(lambda: desk.messages(limit=1000))
    assert {m.msg_id for m in first if isinstance(m, api.Message)} >= set(sent)
    opened.clear()
    again = web_world.run(lambda: desk.messages(limit=1000))
    assert opened == []  # every view from the cache
    assert [m.msg_id for m in again] == [m.msg_id for m in first]


def test_a_row_altered_after_it_was_cached_is_opened_again_and_refused(
    web_world: WebWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    msg_id = web_world.publish("labour", "alert", alert("to be relabelled")).msg_id
    web_world.wait_stored("police", msg_id, timeout=60)
    desk = web_world.desks["police"]
    assert web_world.run(lambda: desk.message(msg_id)).sender == "labour"
    db = sqlite3.connect(desk.agency.store.path)
    with db:
        db.execute("UPDATE inbox SET sender = 'ngo' WHERE msg_id = ?", (bytes.fromhex(msg_id),))
    db.close()
    views = web_world.run(lambda: desk.messages(limit=1000))
    mine = [v for v in views if v.msg_id == msg_id]
    assert len(mine) == 1 and isinstance(mine[0], api.Unreadable)
    assert mine[0].code == "E_MALFORMED"


def test_a_sender_revoked_as_compromised_after_caching_is_marked(
    web_world: WebWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    msg_id = web_world.publish("labour", "alert", alert("before the compromise")).msg_id
    web_world.wait_stored("police", msg_id, timeout=60)
    desk = web_world.desks["police"]
    view = web_world.run(lambda: desk.message(msg_id))
    assert view.warning is None
    roster = desk.agency.roster
    kid = next(k for k, key in roster.sign_keys.items() if key.member.agency_id == "labour")
    revoked = dict(roster.revoked)
    revoked[kid] = Revocation(kid, 0, "compromised")  # as a newer roster would say
    monkeypatch.setattr(roster, "revoked", revoked)
    assert web_world.run(lambda: desk.message(msg_id)).warning == live.COMPROMISED_MARK
