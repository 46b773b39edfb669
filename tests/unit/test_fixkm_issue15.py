"""FIX-KM (second review of issue 15): the key manager's quota on an epoch channel, its read
permission on its own deliveries, and re-keys sealed off the event loop.

Real keys, rosters and SQLite; no broker (tests/integration/test_fixkm_issue15_live.py has
the ones that need it).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from kmkit import KM, km_taskforce, trusted
from tfkit import NOW_MS, DeterministicRng

from tfshare import transport
from tfshare.envelope import MAX_RECIPIENTS, WRAP_SIZE
from tfshare.keymanager.service import KeyManager
from tfshare.keymanager.store import KeyManagerStore
from tfshare.names import channel_subject, permissions, stream_name

TF = "nl-north"


def test_the_key_managers_quota_is_thirty_rekeys_of_the_channels_readers() -> None:
    assert transport.key_manager_quota(20_000) == 30 * 79
    assert transport.key_manager_quota(256) == 30
    assert transport.key_manager_quota(257) == 60
    assert transport.key_manager_quota(0) == 30  # a channel before its first reader


def test_a_delivery_envelope_fits_the_size_the_quota_is_counted_in() -> None:
    """The largest delivery: 256 readers, the longest channel name, a large epoch number,
    the longest reason; 1 KiB left for the subject and headers."""
    import os  # noqa: PLC0415

    from nacl.public import PrivateKey  # noqa: PLC0415

    from tfshare.keymanager.plan import seal_deliveries  # noqa: PLC0415
    from tfshare.seal import Recipient  # noqa: PLC0415

    tf = km_taskforce()
    readers = [
        Recipient(f"agency-{i:05d}", bytes(PrivateKey.generate().public_key), os.urandom(8))
        for i in range(MAX_RECIPIENTS)
    ]
    [delivery] = seal_deliveries(
        identity=tf.ids[KM], roster=trusted(tf, now_ms=NOW_MS), channel="c" * 32,
        epoch=2**40, key=os.urandom(32), starts_ms=NOW_MS, reason="messages", readers=readers,
        first_seq=2**40, now_ms=NOW_MS, rng=os.urandom,
    )  # fmt: skip
    assert len(delivery.data) > MAX_RECIPIENTS * WRAP_SIZE
    assert len(delivery.data) + 1024 <= transport.EPOCH_DELIVERY_MAX_SIZE


def test_an_epoch_channels_quota_is_raised_to_the_key_managers_need_only() -> None:
    share = 75 * transport.MIB
    assert transport.epoch_channel_quota("alerts", share=share, quota=72, readers=20_000) == 2370
    # A quota already large enough, or a small channel's, is left as it is.
    assert transport.epoch_channel_quota("alerts", share=share, quota=3000, readers=20_000) == 3000
    assert transport.epoch_channel_quota("alerts", share=share, quota=72, readers=40) == 72


def test_epoch_readers_names_the_epoch_channels_and_counts_their_readers() -> None:
    roster = trusted(km_taskforce(), now_ms=NOW_MS)
    assert transport.epoch_readers(roster) == {"alerts": 4}  # tips is direct-only


def test_channel_streams_allow_direct_gets() -> None:
    limits = transport.ChannelLimits(
        max_bytes=transport.GIB, max_msgs_per_sender=10, max_age_days=30, max_msg_size=1024
    )
    assert transport.stream_config(TF, "alerts", limits).allow_direct is True


def test_the_key_manager_may_read_the_last_message_of_its_own_subject_only() -> None:
    roster = trusted(km_taskforce(), now_ms=NOW_MS)
    km = permissions(roster, KM)
    assert km is not None
    own = f"$JS.API.DIRECT.GET.{stream_name(TF, 'alerts')}.{channel_subject(TF, 'alerts', KM)}"
    direct = [s for s in km.publish if "DIRECT.GET" in s and "KV_" not in s and "OBJ_" not in s]
    assert direct == [own]  # not tips (direct only), nobody else's subject, no wildcard
    police = permissions(roster, "police")
    assert police is not None
    assert not [s for s in police.publish if stream_name(TF, "alerts") in s and "DIRECT" in s]


def test_a_rekey_is_sealed_while_the_event_loop_goes_on(tmp_path: Path) -> None:
    """``turn`` makes epochs with ``make_epochs_off_loop``: the sealing runs in a worker
    thread, so another task (the connection's pings) runs before it ends; the result is
    the same as ``make_epochs``'s (the epoch stored, its deliveries queued)."""
    tf = km_taskforce()
    manager = KeyManager(
        identity=tf.ids[KM],
        roster=trusted(tf, now_ms=NOW_MS),
        roster_bytes=tf.roster_bytes,
        store=KeyManagerStore(tmp_path / "km.db", state_key=tf.ids[KM].state_key),
        url="nats://127.0.0.1:1",
        clock=lambda: NOW_MS,
        rng=DeterministicRng("off the loop"),
    )
    order: list[str] = []

    async def other() -> None:
        order.append("other task ran")

    async def main() -> None:
        task = asyncio.create_task(other())
        made = await manager.make_epochs_off_loop({})
        order.append(f"made {[(r.channel, r.epoch) for r in made]}")
        await task

    asyncio.run(main())
    assert order == ["other task ran", "made [('alerts', 1)]"]
    assert manager.store.current()["alerts"].state.epoch == 1
    assert len(manager.store.pending()) == 1
    manager.store.close()


def test_a_channel_found_delivered_before_gets_no_epoch_1_the_others_do(tmp_path: Path) -> None:
    tf = km_taskforce()
    manager = KeyManager(
        identity=tf.ids[KM],
        roster=trusted(tf, now_ms=NOW_MS),
        roster_bytes=tf.roster_bytes,
        store=KeyManagerStore(tmp_path / "km.db", state_key=tf.ids[KM].state_key),
        url="nats://127.0.0.1:1",
        clock=lambda: NOW_MS,
        rng=DeterministicRng("lost"),
    )
    assert manager.make_epochs({}, lost={"alerts"}) == []
    assert manager.store.current() == {} and manager.store.pending() == []
    assert [r.channel for r in manager.make_epochs({})] == ["alerts"]
    manager.store.close()


def test_a_writer_that_does_not_read_an_epoch_channel_is_told_why_it_has_no_key() -> None:
    import pytest  # noqa: PLC0415

    from tfshare.envelope import Mode  # noqa: PLC0415
    from tfshare.epochs import choose_mode  # noqa: PLC0415
    from tfshare.errors import ExitCode, TrustError  # noqa: PLC0415

    with pytest.raises(TrustError) as refused:
        choose_mode(
            channel="alerts", mode_policy=Mode.EPOCH, active_readers=3, named_recipients=False,
            current=None, sender="coord", sender_reads=False,
        )  # fmt: skip
    assert refused.value.exit_code == ExitCode.TRUST
    assert refused.value.message == (
        "'coord' writes channel 'alerts' but does not read it: epoch keys go to readers only"
    )
    assert "read access" in (refused.value.hint or "")
    # A reader without a key yet is still told to look at the key manager.
    with pytest.raises(TrustError, match="no epoch key for channel 'alerts' yet"):
        choose_mode(
            channel="alerts", mode_policy=Mode.EPOCH, active_readers=3, named_recipients=False,
            current=None, sender="police", sender_reads=True,
        )  # fmt: skip
    # Direct mode allowed: a writer that does not read sends direct, as before.
    both = Mode.EPOCH | Mode.DIRECT
    choice = choose_mode(
        channel="alerts", mode_policy=both, active_readers=3, named_recipients=False,
        current=None, sender="coord", sender_reads=False,
    )  # fmt: skip
    assert choice.mode == Mode.DIRECT


def test_write_only_writers_of_epoch_only_channels_only() -> None:
    from tfshare import roster as R  # noqa: PLC0415
    from tfshare.workflows.rosters import write_only_writers  # noqa: PLC0415

    tf = km_taskforce(direct=False)  # alerts: epoch only; its writers read it; keyman neither
    signed = R.grant(tf.signed, KM, channel="alerts", read=False, write=True, now_ms=NOW_MS)
    content = R.decode_roster(signed.roster)
    assert write_only_writers(content, "alerts") == [KM]
    assert write_only_writers(content, "tips") == []  # direct only
    assert write_only_writers(content, "no-such-channel") == []
    both = R.set_channel_modes(signed, "alerts", direct=True, epoch=True, now_ms=NOW_MS)
    assert write_only_writers(R.decode_roster(both.roster), "alerts") == []


def test_a_lost_channel_gets_the_first_epoch_given_and_no_other_channel_does(
    tmp_path: Path,
) -> None:
    tf = km_taskforce()
    manager = KeyManager(
        identity=tf.ids[KM],
        roster=trusted(tf, now_ms=NOW_MS),
        roster_bytes=tf.roster_bytes,
        store=KeyManagerStore(tmp_path / "km.db", state_key=tf.ids[KM].state_key),
        url="nats://127.0.0.1:1",
        clock=lambda: NOW_MS,
        rng=DeterministicRng("resume"),
        first_epoch=12,
    )
    [made] = manager.make_epochs({}, lost={"alerts"})
    assert (made.channel, made.epoch, made.reason) == ("alerts", 12, "initial")
    assert manager.store.current()["alerts"].state.epoch == 12
    manager.store.close()


def test_a_share_that_cannot_hold_the_key_managers_rekeys_is_logged_as_an_error() -> None:
    import structlog  # noqa: PLC0415

    needed = transport.key_manager_quota(20_000) * transport.EPOCH_DELIVERY_MAX_SIZE
    with structlog.testing.capture_logs() as logs:
        transport.epoch_channel_quota("alerts", share=needed, quota=27, readers=20_000)
        transport.epoch_channel_quota("alerts", share=needed - 1, quota=27, readers=20_000)
    events = [(e["event"], e["log_level"]) for e in logs]
    assert events == [
        ("sender_quota_raised", "warning"),
        ("sender_quota_raised", "warning"),
        ("epoch_delivery_share_small", "error"),
    ]
