"""A roster update reaches running agents: a revoked agency's new messages are refused."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
from livekit import make_agent, publish_as, run_agents
from tfkit import TaskForce

from tfshare import roster as R
from tfshare import transport
from tfshare.broker import BrokerProcess, channel_subject
from tfshare.encoding import encode
from tfshare.errors import BrokerError, RejectCode, RosterRejected
from tfshare.store import StateStore
from tfshare.workflows.live import BrokerSupervisor


def _now() -> int:
    return time.time_ns() // 1_000_000


def test_revocation_takes_effect_on_a_running_agent(
    live_tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    """After the roster revoking labour is accepted, labour's next alert is E_REVOKED, while
    its earlier one stays delivered; the agent never restarted."""
    current = {"roster": live_tf.trusted()}
    ngo = make_agent(live_tf, "ngo", broker.url, tmp_path)
    ngo.reload_roster = lambda: current["roster"]
    ngo.reload_every_s = 0.05
    subject = channel_subject("nl-north", "alerts", "labour")

    before = live_tf.seal("labour", now_ms=_now(), rng_seed=os.urandom(8).hex())
    publish_as(live_tf, "labour", broker.url, subject, before.data, before.msg_id.hex())
    run_agents([ngo], lambda: ngo.stats.delivered == 1)

    revoked = R.sign(
        R.revoke(live_tf.signed, "labour", reason="retired", now_ms=_now()), live_tf.ids["coord"]
    )
    current["roster"], _ = R.verify_roster(
        encode(revoked), anchor=live_tf.anchor, state=None, now_ms=_now()
    )
    time.sleep(0.01)  # the next message is dated after the revocation
    after = live_tf.seal("labour", now_ms=_now(), seq=2, rng_seed=os.urandom(8).hex())
    # labour's NATS user still exists (the broker config was not regenerated): the roster
    # and the signatures are the control, not the broker.
    publish_as(live_tf, "labour", broker.url, subject, after.data, after.msg_id.hex())
    run_agents([ngo], lambda: ngo.stats.rejected == 1)

    assert ngo.roster.seq == current["roster"].seq
    assert [q.code for q in ngo.store.quarantined()] == ["E_REVOKED"]
    assert [i.msg_id for i in ngo.store.inbox()] == [before.msg_id]


def test_a_roster_that_fails_verification_changes_nothing(
    live_tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    """A refused roster update is logged and the agent keeps the roster it trusts."""
    ngo = make_agent(live_tf, "ngo", broker.url, tmp_path)
    trusted = ngo.roster

    def refuse() -> R.TrustedRoster:
        raise RosterRejected(RejectCode.E_ROSTER_SIG, "not enough signatures", hint="-")

    ngo.reload_roster = refuse
    ngo.reload_every_s = 0.05
    sealed = live_tf.seal("police", now_ms=_now(), rng_seed=os.urandom(8).hex())
    publish_as(
        live_tf,
        "police",
        broker.url,
        channel_subject("nl-north", "alerts", "police"),
        sealed.data,
        sealed.msg_id.hex(),
    )
    run_agents([ngo], lambda: ngo.stats.delivered == 1)
    assert ngo.roster is trusted


async def _put_roster(tf: TaskForce, url: str, data: bytes) -> int:
    conn = await transport.connect(
        url,
        nkey_seed=tf.ids["coord"].nats_seed_encoded(),
        agency="coord",
        name="test-coord",
        reconnect=False,
    )
    try:
        return await transport.put_roster(conn, "nl-north", data)
    finally:
        await conn.close()


def test_roster_published_to_the_bucket_reaches_agents_and_the_broker(
    live_tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    """A coordinator publishes a roster revoking labour: the running agent follows the bucket
    (labour's new messages E_REVOKED), and the broker drops labour's NATS user."""
    ngo = make_agent(live_tf, "ngo", broker.url, tmp_path)
    ngo.accept_roster = lambda data: R.verify_roster(
        data, anchor=live_tf.anchor, state=None, now_ms=_now()
    )[0]
    ngo.reload_every_s = 0.05
    supervisor = BrokerSupervisor(
        broker,
        tmp_path / "broker",
        live_tf.anchor,
        StateStore(tmp_path / "broker-state" / "state.db"),
        live_tf.trusted(),
    )
    revoked = R.sign(
        R.revoke(live_tf.signed, "labour", reason="compromised", now_ms=_now()),
        live_tf.ids["coord"],
    )
    # Sealed before the change, published after it: compromised means refused regardless.
    sealed = live_tf.seal("labour", now_ms=_now(), rng_seed=os.urandom(8).hex())
    asyncio.run(_put_roster(live_tf, broker.url, encode(revoked)))

    applied = supervisor.check()
    assert applied is not None and applied.seq == ngo.roster.seq + 1
    with pytest.raises(BrokerError):
        publish_as(
            live_tf,
            "labour",
            broker.url,
            channel_subject("nl-north", "alerts", "labour"),
            sealed.data,
        )
    # labour's envelope still gets in through someone else's credentials: the roster
    # signature check must stop it.
    publish_as(
        live_tf, "police", broker.url, channel_subject("nl-north", "alerts", "police"), sealed.data
    )
    run_agents([ngo], lambda: ngo.stats.rejected == 1)
    assert ngo.roster.seq == applied.seq
    assert [q.code for q in ngo.store.quarantined()] in (["E_REVOKED"], ["E_CHANNEL"])
