"""Issue 15, third review: an inbox row that stays readable through the message key kept
with it (PROTOCOL.md 8.7, state schema 5) must stay disclosable too. ``audit disclose`` (CLI,
desk and web) takes K from the wrap or the epoch key held, not from the row: once the epoch
key is past its retention (or the retired secret destroyed) the agency still reads the
message but can no longer hand its K to an auditor (AUDIT-LOG.md, disclosure)."""

from __future__ import annotations

import time
from pathlib import Path

from agent_epochs_kit import epoch_message, epoch_taskforce, load_agency, new_key

from tfshare.audit.disclosure import check_disclosure
from tfshare.epochs import EpochKeyring
from tfshare.protocol import Delivered, Receiver
from tfshare.registry.book import shipped
from tfshare.seal import ReceivePolicy
from tfshare.workflows import live
from tfshare.workflows.audit import disclosure_bytes


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def test_a_message_read_with_its_kept_key_can_be_disclosed_after_its_epoch_key_is_gone(
    tmp_path: Path,
) -> None:
    now = now_ms()
    tf = epoch_taskforce(now_ms=now)
    agency = load_agency(tf, "ngo", tmp_path / "ngo")
    key = new_key("alerts", 1, starts_ms=now - 60_000)
    receiver = Receiver(
        identity=tf.ids["ngo"], roster=tf.trusted(), replay=agency.store.replay(keep_inbox=True),
        schemas=shipped(), clock=now_ms, policy=ReceivePolicy(), epochs=EpochKeyring([key]),
    )  # fmt: skip
    message = epoch_message(tf, "police", key, seq=1, now_ms=now)
    outcome = receiver.receive(message.data, None)
    assert isinstance(outcome, Delivered)
    # The agency's keyring does not hold epoch 1 (deleted past its retention): the row is
    # still read, with the key kept with it.
    assert agency.epochs.get("alerts", 1) is None
    [item] = agency.store.inbox()
    [shown] = list(live.read_inbox(agency, [item]))
    assert isinstance(shown, live.InboxMessage)

    disclosure = disclosure_bytes(agency, item)  # today: Rejected E_EPOCH

    checked = check_disclosure(
        disclosure, anchor=tf.anchor, schemas=shipped(), latest_roster=tf.roster_bytes
    )
    agency.store.close()
    assert checked.verified.header.msg_id == message.msg_id
    assert checked.discloser == "ngo"
