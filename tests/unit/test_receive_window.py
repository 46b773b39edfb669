"""The receive window against the streams' retention (issue 14, item 7): a receiver must not
quarantine (E_STALE) what a stream still rightly holds - a message the stream keeps for its
max_age after storing it, which may have waited sealed in an outbox before that.

Real sealing and receiving (tfkit's task force, the real Receiver), the clock moved on.
"""

from __future__ import annotations

from tfkit import build_taskforce

from tfshare.envelope import DEFAULT_MAX_AGE_MS
from tfshare.errors import RejectCode
from tfshare.protocol import Delivered, Receiver, Rejection
from tfshare.replay import MemoryReplayStore
from tfshare.seal import DAY_MS, OFFLINE_ALLOWANCE_MS, ReceivePolicy, receive_max_age_ms
from tfshare.transport import DEFAULT_MAX_AGE_DAYS

STREAM_MS = int(DEFAULT_MAX_AGE_DAYS * DAY_MS)


def received_after(days: float, policy: ReceivePolicy) -> Delivered | Rejection:
    """A message sealed now, received ``days`` later by ngo under ``policy``."""
    tf = build_taskforce()
    data = tf.seal("police", to=["ngo"]).data
    later = tf.now_ms + int(days * DAY_MS)
    receiver = Receiver(
        identity=tf.ids["ngo"],
        roster=tf.trusted(),
        replay=MemoryReplayStore(),
        schemas=tf.schemas,
        clock=lambda: later,
        policy=policy,
    )
    outcome = receiver.receive(data, None)
    assert isinstance(outcome, Delivered | Rejection)
    return outcome


def test_the_window_for_a_stream_is_its_retention_plus_the_offline_allowance() -> None:
    assert receive_max_age_ms(STREAM_MS) == STREAM_MS + OFFLINE_ALLOWANCE_MS
    assert OFFLINE_ALLOWANCE_MS == 14 * DAY_MS


def test_an_agency_back_after_three_weeks_gets_its_backlog_delivered_not_quarantined() -> None:
    """The issue's case: 21 days away, the stream (30 days) still holds the messages."""
    narrow = received_after(21, ReceivePolicy(max_age_ms=14 * DAY_MS))
    assert isinstance(narrow, Rejection) and narrow.code is RejectCode.E_STALE
    widened = received_after(21, ReceivePolicy(max_age_ms=14 * DAY_MS).for_stream(STREAM_MS))
    assert isinstance(widened, Delivered)


def test_a_message_that_waited_in_an_outbox_then_sat_the_whole_retention_is_delivered() -> None:
    """Sealed, 14 days in an outbox, then 30 days in the stream: still inside the window."""
    policy = ReceivePolicy().for_stream(STREAM_MS)
    days = (STREAM_MS + OFFLINE_ALLOWANCE_MS) / DAY_MS
    assert isinstance(received_after(days, policy), Delivered)
    late = received_after(days + 1 / DAY_MS, policy)  # one millisecond more
    assert isinstance(late, Rejection) and late.code is RejectCode.E_STALE


def test_for_stream_widens_but_never_narrows_the_window() -> None:
    wide = ReceivePolicy(max_age_ms=400 * DAY_MS)
    assert wide.for_stream(STREAM_MS) is wide
    short = ReceivePolicy(max_age_ms=DAY_MS, max_skew_ms=5, retired_grace_ms=7)
    widened = short.for_stream(60 * DAY_MS)
    assert widened == ReceivePolicy(60 * DAY_MS + OFFLINE_ALLOWANCE_MS, 5, 7)


def test_the_default_receive_window_covers_the_default_stream() -> None:
    assert ReceivePolicy().max_age_ms >= receive_max_age_ms(STREAM_MS)
    assert receive_max_age_ms(STREAM_MS) == DEFAULT_MAX_AGE_MS
