"""Agents on a real nats-server: delivery, isolation, and the broker rows of attacks.md."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
from livekit import free_port, make_agent, publish_as, run_agents
from tfkit import DeterministicRng, TaskForce, example_json

from tfshare import transport
from tfshare.broker import BrokerProcess, channel_subject
from tfshare.errors import BrokerError
from tfshare.keys import Identity
from tfshare.registry.book import shipped
from tfshare.seal import Recipient, Sealed, seal_to
from tfshare.workflows.live import StreamLimits, admin_seed, start_broker


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def sealed_alert(
    tf: TaskForce,
    sender: str,
    *,
    to: list[str] | None = None,
    seq: int = 1,
    channel: str = "alerts",
) -> Sealed:
    return tf.seal(
        sender, channel=channel, to=to, now_ms=now_ms(), seq=seq, rng_seed=os.urandom(8).hex()
    )


def test_alert_reaches_every_reader_and_no_one_else(
    live_tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    """An alert to the channel is delivered once to each reader; a reader outside --to
    skips it quietly (no inbox, no quarantine)."""
    agents = {a: make_agent(live_tf, a, broker.url, tmp_path) for a in ("ngo", "labour", "coord")}
    broadcast = sealed_alert(live_tf, "police")
    direct = sealed_alert(live_tf, "police", to=["ngo"], seq=2)
    subject = channel_subject("nl-north", "alerts", "police")
    publish_as(live_tf, "police", broker.url, subject, broadcast.data, broadcast.msg_id.hex())
    publish_as(live_tf, "police", broker.url, subject, direct.data, direct.msg_id.hex())
    run_agents(
        list(agents.values()),
        lambda: (
            len(agents["ngo"].store.inbox()) == 2
            and all(a.stats.delivered + a.stats.skipped == 2 for a in agents.values())
        ),
    )
    inbox = {a: {i.msg_id for i in ag.store.inbox()} for a, ag in agents.items()}
    assert inbox["ngo"] == {broadcast.msg_id, direct.msg_id}
    assert inbox["labour"] == {broadcast.msg_id}
    assert inbox["coord"] == {broadcast.msg_id}
    assert agents["labour"].stats.skipped == 1
    assert not agents["labour"].store.quarantined()


def test_row31_publishing_on_another_agencys_subject_is_refused(
    live_tf: TaskForce, broker: BrokerProcess
) -> None:
    """An agency's NATS user may publish only on its own sender subjects (broker refuses)."""
    sealed = sealed_alert(live_tf, "police")
    with pytest.raises(BrokerError):
        publish_as(
            live_tf,
            "police",
            broker.url,
            channel_subject("nl-north", "alerts", "labour"),
            sealed.data,
        )
    # ...and on a channel it may not write, even under its own name.
    with pytest.raises(BrokerError):
        publish_as(
            live_tf, "ngo", broker.url, channel_subject("nl-north", "alerts", "ngo"), sealed.data
        )


def test_row26_injected_garbage_and_forgery_are_quarantined_and_the_flow_goes_on(
    live_tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    """With valid NATS credentials, garbage and a forged envelope are rejected with their
    codes into quarantine; the next real message is still delivered."""
    subject = channel_subject("nl-north", "alerts", "police")
    publish_as(live_tf, "police", broker.url, subject, b"garbage, not an envelope")
    schema = shipped().lookup("tf.alert/1")
    assert schema is not None
    body = schema.to_body(schema.from_json(example_json("tf.alert/1")))
    # Signed with keys that are not police's, but claiming to be police.
    impostor = Identity.generate(
        "police", "Police", rng=DeterministicRng("impostor"), now_ms=now_ms()
    )
    forged = seal_to(
        identity=impostor,
        taskforce="nl-north",
        channel="alerts",
        roster_seq=1,
        recipients=[Recipient("ngo", live_tf.ids["ngo"].enc_pk)],
        schema=schema,
        body=body,
        seq=1,
        now_ms=now_ms(),
        rng=os.urandom,
    )
    # Leaked NATS credentials of police carry the forgery: the signature is the control.
    publish_as(live_tf, "police", broker.url, subject, forged.data)
    real = sealed_alert(live_tf, "police")
    publish_as(live_tf, "police", broker.url, subject, real.data, real.msg_id.hex())
    ngo = make_agent(live_tf, "ngo", broker.url, tmp_path)
    run_agents([ngo], lambda: ngo.stats.delivered == 1 and ngo.stats.rejected == 2)
    codes = sorted(q.code for q in ngo.store.quarantined())
    assert codes == ["E_MALFORMED", "E_UNKNOWN_SENDER"]
    assert [i.msg_id for i in ngo.store.inbox()] == [real.msg_id]


def test_row6_row7_a_replayed_envelope_is_delivered_once(
    live_tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    """The same envelope published twice (new Nats-Msg-Id, past JetStream's dedup) is a
    DUPLICATE: acknowledged, delivered once."""
    sealed = sealed_alert(live_tf, "police")
    subject = channel_subject("nl-north", "alerts", "police")
    publish_as(live_tf, "police", broker.url, subject, sealed.data, "first")
    publish_as(live_tf, "police", broker.url, subject, sealed.data, "second")
    ngo = make_agent(live_tf, "ngo", broker.url, tmp_path)
    run_agents([ngo], lambda: ngo.stats.delivered + ngo.stats.duplicates == 2)
    assert (ngo.stats.delivered, ngo.stats.duplicates) == (1, 1)
    assert len(ngo.store.inbox()) == 1


def test_jetstream_drops_a_repeat_with_the_same_msg_id(
    live_tf: TaskForce, broker: BrokerProcess
) -> None:
    """Publishing twice with the same Nats-Msg-Id stores the envelope once."""
    sealed = sealed_alert(live_tf, "police")
    subject = channel_subject("nl-north", "alerts", "police")
    first = publish_as(live_tf, "police", broker.url, subject, sealed.data, sealed.msg_id.hex())
    second = publish_as(live_tf, "police", broker.url, subject, sealed.data, sealed.msg_id.hex())
    assert first[1] is False and second == (first[0], True)


def test_row12_cross_channel_replay_is_refused(
    live_tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    """An alerts envelope re-published by another agency on the tips channel is E_CHANNEL."""
    sealed = sealed_alert(live_tf, "police", to=["police"])
    publish_as(live_tf, "ngo", broker.url, channel_subject("nl-north", "tips", "ngo"), sealed.data)
    police = make_agent(live_tf, "police", broker.url, tmp_path)
    run_agents([police], lambda: police.stats.rejected == 1)
    assert [q.code for q in police.store.quarantined()] == ["E_CHANNEL"]
    assert not police.store.inbox()


def test_outbox_is_delivered_when_the_broker_returns(
    live_tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    """An envelope queued while the broker was down goes out exactly once when it returns."""
    sealed = sealed_alert(live_tf, "police", to=["ngo"])
    subject = channel_subject("nl-north", "alerts", "police")
    police = make_agent(live_tf, "police", broker.url, tmp_path)
    police.store.outbox_add(sealed.msg_id, subject, sealed.data, now_ms())
    broker.stop()
    run_agents([police], lambda: False, timeout=0.6)  # broker away: nothing leaves
    assert [m for m, _, _ in police.store.outbox()] == [sealed.msg_id]
    broker.start()
    ngo = make_agent(live_tf, "ngo", broker.url, tmp_path)
    run_agents([police, ngo], lambda: ngo.stats.delivered == 1)
    assert police.store.outbox() == []
    assert [i.msg_id for i in ngo.store.inbox()] == [sealed.msg_id]


def test_broker_restart_loses_nothing(
    live_tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    """Messages stored before a broker restart and published after it are all delivered,
    each exactly once."""
    subject = channel_subject("nl-north", "alerts", "police")
    first = [sealed_alert(live_tf, "police", seq=i) for i in range(1, 4)]
    for s in first:
        publish_as(live_tf, "police", broker.url, subject, s.data, s.msg_id.hex())
    broker.stop()
    broker.start()
    second = [sealed_alert(live_tf, "police", seq=i) for i in range(4, 7)]
    for s in second:
        publish_as(live_tf, "police", broker.url, subject, s.data, s.msg_id.hex())
    ngo = make_agent(live_tf, "ngo", broker.url, tmp_path)
    run_agents([ngo], lambda: ngo.stats.delivered == 6)
    assert sorted(i.msg_id for i in ngo.store.inbox()) == sorted(s.msg_id for s in first + second)
    assert ngo.stats.duplicates == 0


def test_stream_limits_are_applied(live_tf: TaskForce, tmp_path: Path) -> None:
    """broker up's --max-age-days and --duplicate-window reach every message channel's
    JetStream stream (one per channel)."""
    directory = tmp_path / "limited"
    broker = start_broker(
        live_tf.trusted(),
        directory,
        port=free_port(),
        limits=StreamLimits(max_age_days=2, duplicate_window_s=30),
    )

    async def info() -> tuple[float, float]:
        conn = await transport.connect(
            broker.url, nkey_seed=admin_seed(directory), agency=None, name="t", reconnect=False
        )
        try:
            found = set()
            for channel in ("alerts", "tips"):
                stream = await conn.js.stream_info(f"TF_nl-north_{channel}")
                found.add((float(stream.config.max_age), float(stream.config.duplicate_window)))
            (only,) = found
            return only
        finally:
            await conn.close()

    try:
        assert asyncio.run(info()) == (2 * 86400, 30)
    finally:
        broker.stop()
