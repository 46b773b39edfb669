"""FIX-KM (second review of issue 15), on a real nats-server: a key delivery the broker
refuses because the key manager's quota on the channel is full is tried again while the key
manager runs, and goes out once there is room (here: the operator raised the quota), with no
restart.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import structlog
from kmkit import KM, km_taskforce, trusted, without
from test_keymanager_live import (
    TF,
    Reader,
    _km_broker,
    _manager,
    _now,
    _publish_roster,
    _receive,
    _with_manager,
)

from tfshare.backoff import Backoff
from tfshare.names import stream_name
from tfshare.workflows.live import _admin

pytestmark = pytest.mark.slow


async def _set_quota(url: str, directory: Path, quota: int) -> None:
    """What an operator does to the channel's stream (provision with other limits)."""
    admin = await _admin(url, directory)
    try:
        info = await admin.js.stream_info(stream_name(TF, "alerts"))
        config = info.config
        config.max_msgs_per_subject = quota
        await admin.js.update_stream(config)
    finally:
        await admin.close()


def test_a_delivery_refused_for_a_full_quota_goes_out_without_a_restart(tmp_path: Path) -> None:
    tf = km_taskforce(now_ms=_now())
    broker = _km_broker(tf, tmp_path / "broker")
    try:
        asyncio.run(_set_quota(broker.url, tmp_path / "broker", 1))  # room for epoch 1 only
        ngo = Reader("ngo", tf, trusted(tf, now_ms=_now()))
        manager = _manager(tf, broker.url, tmp_path / "keymanager.db")
        manager.refused_backoff = Backoff(first=0.1, ceiling=0.2)
        removed = without(tf, "labour", now_ms=_now())

        async def work() -> None:
            await _receive(broker.url, [ngo], lambda: len(ngo.deliveries) == 1, 10)
            await _publish_roster(removed, broker.url)
            ngo.roster = trusted(removed, now_ms=_now())
            deadline = asyncio.get_running_loop().time() + 10
            while manager.stats.refused < 2 and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.05)  # refused, retried, refused again
            assert manager.stats.refused >= 2, manager.stats
            await _set_quota(broker.url, tmp_path / "broker", 10)
            await _receive(broker.url, [ngo], lambda: len(ngo.deliveries) == 2, 10)

        with structlog.testing.capture_logs() as logs:
            asyncio.run(_with_manager(manager, work))
        pending = manager.store.pending()
        manager.store.close()
    finally:
        broker.stop()
    assert [(d.epoch, d.reason) for d in ngo.deliveries] == [(1, "initial"), (2, "members")]
    assert pending == []
    quota = [e for e in logs if e["event"] == "epoch_delivery_quota"]
    assert quota and {(e["channel"], e["epoch"]) for e in quota} == {("alerts", 2)}
    assert any(e["event"] == "epoch_deliveries_retried" for e in logs)


def test_a_lost_database_without_a_backup_goes_on_from_the_first_epoch_given(
    tmp_path: Path,
) -> None:
    """The key manager's database is lost; started again with ``first_epoch`` 2 (above the
    epoch the readers hold), it makes epoch 2 of "alerts" and the readers take it: the
    channel is re-keyed without a backup. (Without ``first_epoch`` it makes nothing:
    tests/integration/test_review2_issue15_live.py.)"""
    tf = km_taskforce(now_ms=_now())
    broker = _km_broker(tf, tmp_path / "broker")
    try:
        ngo = Reader("ngo", tf, trusted(tf, now_ms=_now()))
        first = _manager(tf, broker.url, tmp_path / "state-1" / "keymanager.db")

        async def epoch_1() -> None:
            await _receive(broker.url, [ngo], lambda: bool(ngo.keyring.get("alerts", 1)), 10)

        asyncio.run(_with_manager(first, epoch_1))
        first.store.close()

        again = _manager(tf, broker.url, tmp_path / "state-2" / "keymanager.db")
        again.first_epoch = 2

        async def epoch_2() -> None:
            await _receive(broker.url, [ngo], lambda: bool(ngo.keyring.get("alerts", 2)), 10)

        with structlog.testing.capture_logs() as logs:
            asyncio.run(_with_manager(again, epoch_2))
        stored = again.store.current()["alerts"].state.epoch
        again.store.close()
    finally:
        broker.stop()
    assert ngo.refused == []
    assert [(d.epoch, d.reason) for d in ngo.deliveries] == [(1, "initial"), (2, "initial")]
    assert stored == 2
    lost = [e for e in logs if e["event"] == "keymanager_state_lost"]
    assert [e["channel"] for e in lost] == ["alerts"]


def test_without_the_direct_get_permission_epoch_1_is_still_made_and_the_gap_said(
    tmp_path: Path,
) -> None:
    """A broker configured before the key manager could look at its own deliveries (no
    $JS.API.DIRECT.GET on its subject): a lost database cannot be noticed there, but a new
    channel must still get its epoch 1; the log says once why the look is missing."""
    from livekit import free_port  # noqa: PLC0415

    from tfshare.broker import BrokerProcess, check_config  # noqa: PLC0415
    from tfshare.names import channel_subject  # noqa: PLC0415
    from tfshare.workflows.live import provision_broker, write_broker_config  # noqa: PLC0415

    tf = km_taskforce(now_ms=_now())
    roster = trusted(tf, now_ms=_now())
    port, directory = free_port(), tmp_path / "broker"
    config = write_broker_config(roster, directory, port=port)
    own = f'"$JS.API.DIRECT.GET.{stream_name(TF, "alerts")}.{channel_subject(TF, "alerts", KM)}"'
    text = config.read_text()
    assert own in text
    config.write_text(text.replace(own + ", ", "").replace(", " + own, ""))
    check_config(config)
    assert own not in config.read_text()
    broker = BrokerProcess(config=config, host="127.0.0.1", port=port, log=directory / "nats.log")
    broker.start()
    try:
        asyncio.run(provision_broker(broker.url, directory, roster, tf.roster_bytes))
        ngo = Reader("ngo", tf, roster)
        manager = _manager(tf, broker.url, tmp_path / "keymanager.db")

        async def work() -> None:
            await _receive(broker.url, [ngo], lambda: bool(ngo.keyring.get("alerts", 1)), 10)

        with structlog.testing.capture_logs() as logs:
            asyncio.run(_with_manager(manager, work))
        manager.store.close()
    finally:
        broker.stop()
    assert [(d.epoch, d.reason) for d in ngo.deliveries] == [(1, "initial")]
    said = [e for e in logs if e["event"] == "keymanager_stream_unlookable"]
    assert [e["channel"] for e in said] == ["alerts"]
