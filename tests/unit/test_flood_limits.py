"""The broker's limits against flooding: sizes as operators write them, limits that do not make
sense refused before anything starts (exit 2, with a hint), and the stream and consumer
configuration they become (DiscardNew, a per-sender quota, bounded consumers)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nats.js.api import DiscardPolicy

from tfshare import transport
from tfshare.audit.evidence import MAX_NOTE_SIZE
from tfshare.broker import MAX_PAYLOAD
from tfshare.encoding import encode
from tfshare.envelope import (
    MAX_RECIPIENTS,
    MAX_REFS,
    WRAP_SIZE,
    Envelope,
    Header,
    Ref,
    size_classes_from,
)
from tfshare.errors import UsageError
from tfshare.protocol import RECEIPT_SCHEMA
from tfshare.seal import plain_size
from tfshare.workflows.live import StreamLimits, parse_size

MIB = 1024 * 1024


def tfshare(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in its own process (it configures logging for the whole process)."""
    return subprocess.run(
        [sys.executable, "-m", "tfshare", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )


GIB = 1024 * MIB


@pytest.mark.parametrize(
    ("text", "expected"),
    [("8GiB", 8 * GIB), ("512MB", 512 * 1000**2), ("1048576", MIB), ("1.5 GiB", 3 * GIB // 2)],
)
def test_sizes_take_nats_server_units(text: str, expected: int) -> None:
    assert parse_size(text, flag="--max-bytes") == expected


@pytest.mark.parametrize("text", ["", "GiB", "-1GiB", "0", "8 parsecs", "nan", "inf", "1e30TiB"])
def test_a_size_that_is_not_one_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_size(text, flag="--max-bytes")
    assert "--max-bytes" in caught.value.message


@given(st.text(max_size=30))
def test_parse_size_gives_a_positive_size_or_a_usage_error(text: str) -> None:
    try:
        size = parse_size(text, flag="--max-bytes")
    except UsageError:
        return
    assert 1 <= size < 2**62


def test_the_defaults_pass_their_own_check() -> None:
    limits = StreamLimits().check()
    # One flooding sender cannot fill a message channel with its quota (one channel besides
    # the receipts: the most favourable split, which check() sees).
    assert 2 * limits.sender_worst_case <= limits.max_bytes - limits.receipts_bytes
    assert limits.file_store >= limits.max_bytes + transport.BUCKETS_MAX_BYTES


@pytest.mark.parametrize(
    ("limits", "flag"),
    [
        (StreamLimits(max_msgs_per_sender=0), "--max-msgs-per-sender"),
        (StreamLimits(max_receipts_per_sender=0), "--max-receipts-per-sender"),
        (StreamLimits(receipts_max_age_days=0), "--receipts-max-age-days"),
        (StreamLimits(max_ack_pending=-5), "--max-ack-pending"),
        (StreamLimits(max_bytes=MIB), "--max-bytes"),
        (StreamLimits(max_bytes=GIB, max_msgs_per_sender=100_000), "one sender could fill"),
        (StreamLimits(max_bytes=GIB, max_msgs_per_sender=10), "one reader could fill the"),
        (StreamLimits(max_file_store=GIB), "--max-file-store"),
        (StreamLimits(max_age_days=0), "--max-age-days"),
        (StreamLimits(max_age_days=0.001, duplicate_window_s=3600), "--duplicate-window"),
        (StreamLimits(receipts_max_age_days=0.01, duplicate_window_s=3600), "--duplicate-window"),
    ],
)
def test_limits_that_make_no_sense_are_refused(limits: StreamLimits, flag: str) -> None:
    with pytest.raises(UsageError) as caught:
        limits.check()
    assert flag in caught.value.message
    assert caught.value.hint


def test_each_channel_has_its_own_limits_and_receipts_their_own() -> None:
    """One stream per channel: the receipts channel keeps small messages for a week with a
    large quota in an eighth of max_bytes; message channels keep envelopes of up to 516 KiB
    for 30 days and share the rest equally."""
    limits = StreamLimits().check()
    found = limits.channel_limits(["alerts", "tips", "receipts"])
    receipts, alerts, tips = found["receipts"], found["alerts"], found["tips"]
    assert alerts == tips
    assert receipts.max_msg_size == transport.RECEIPT_MAX_MSG_SIZE < alerts.max_msg_size
    assert alerts.max_msg_size == transport.MAX_MSG_SIZE
    assert (receipts.max_age_days, alerts.max_age_days) == (7, 30)
    assert receipts.max_msgs_per_sender == limits.max_receipts_per_sender
    assert receipts.max_msgs_per_sender > 5 * alerts.max_msgs_per_sender
    assert alerts.max_msgs_per_sender == limits.max_msgs_per_sender
    assert receipts.max_bytes == limits.max_bytes // 8
    assert receipts.max_bytes + alerts.max_bytes + tips.max_bytes <= limits.max_bytes
    # A busy task force (20 agencies x 50 alerts a day: ~1000 receipts a day per reader) stays
    # well inside a reader's receipts quota over the receipts' max age.
    assert 1000 * receipts.max_age_days * 2 <= receipts.max_msgs_per_sender
    for channel in found.values():  # one sender never fills more than half of a channel
        assert 2 * channel.sender_worst_case <= channel.max_bytes


def test_many_channels_lower_the_quota_to_half_of_each_share() -> None:
    limits = StreamLimits().check()
    channels = [f"ch{i}" for i in range(12)] + ["receipts"]
    found = limits.channel_limits(channels)
    share = (limits.max_bytes - limits.receipts_bytes) // 12
    assert found["ch0"].max_bytes == share
    assert found["ch0"].max_msgs_per_sender == share // (2 * transport.MAX_MSG_SIZE)
    assert found["ch0"].max_msgs_per_sender < limits.max_msgs_per_sender
    assert found["receipts"].max_msgs_per_sender == limits.max_receipts_per_sender


def test_a_share_too_small_for_two_messages_is_a_usage_error() -> None:
    limits = StreamLimits(max_bytes=64 * MIB, max_msgs_per_sender=10, max_receipts_per_sender=10)
    with pytest.raises(UsageError) as caught:
        limits.check().channel_limits([f"ch{i}" for i in range(200)])
    assert "--max-bytes" in caught.value.message


def test_without_a_receipts_channel_the_message_channels_share_everything() -> None:
    found = StreamLimits().channel_limits(["alerts"])
    assert found["alerts"].max_bytes == transport.DEFAULT_MAX_BYTES


def test_the_largest_receipt_fits_the_receipts_stream() -> None:
    """RECEIPT_MAX_ENVELOPE holds the largest receipt any member can seal: MAX_RECIPIENTS
    wraps, names of 32 characters, every ref, and a ciphertext a padding class above what a
    receipt's Plain can be."""
    name = "a" * 32
    header = Header(
        v=2**53 - 1, suite=2**53 - 1, msg_id=bytes(16), ts_ms=2**53 - 1, sender=name,
        sender_kid=bytes(8), taskforce=name, channel=name, seq=2**53 - 1,
        roster_seq=2**53 - 1, mode=2**53 - 1, epoch=2**53 - 1, eph_pk=bytes(32),
        wraps=bytes(MAX_RECIPIENTS * WRAP_SIZE), nonce=bytes(24), commit=bytes(32),
        refs=[Ref(6, bytes(16), bytes(32))] * MAX_REFS,
    )  # fmt: skip
    body = b"x" * 400  # a receipt's body (five short fields) is under 300 bytes
    plain = plain_size(RECEIPT_SCHEMA, len(body))
    ciphertext = size_classes_from(size_classes_from(plain) + 1) + 16  # a class more, + tag
    envelope = encode(Envelope(v=1, hdr=encode(header), ct=bytes(ciphertext), sig=bytes(64)))
    assert len(envelope) <= transport.RECEIPT_MAX_ENVELOPE
    assert transport.RECEIPT_MAX_MSG_SIZE >= transport.RECEIPT_MAX_ENVELOPE + 1024


def test_the_stream_refuses_new_messages_and_never_drops_old_ones() -> None:
    """DiscardNew per subject: a full quota refuses the sender's new message; nothing of
    anyone else's is deleted to make room. One stream per channel, its subjects only."""
    limits = transport.ChannelLimits(
        max_bytes=GIB, max_msgs_per_sender=77, max_age_days=7, max_msg_size=9999
    )
    config = transport.stream_config("nl-north", "receipts", limits)
    assert config.name == "TF_nl-north_receipts"
    assert config.subjects == ["tf.nl-north.ch.receipts.*"]
    assert config.discard == DiscardPolicy.NEW
    assert config.discard_new_per_subject is True
    assert config.max_msgs_per_subject == 77
    assert config.max_bytes == GIB
    assert config.max_msg_size == 9999
    assert config.max_age == 7 * 86400


def test_reader_consumers_are_bounded() -> None:
    config = transport.reader_consumer_config(
        "agent_police_CH_alerts", max_ack_pending=9, max_waiting=3
    )
    assert (config.max_ack_pending, config.max_waiting) == (9, 3)


def test_every_kv_bucket_is_bounded() -> None:
    """No bucket takes a value larger than its largest legitimate one, nor grows without
    bound: roster and registry records up to the broker's max_payload, checkpoints up to
    MAX_NOTE_SIZE, cosignatures a checkpoint and a line."""
    configs = {c.bucket: c for c in transport.bucket_configs("nl-north")}
    assert set(configs) == {
        "tf_nl-north_roster", "tf_nl-north_schemas", "tf_nl-north_audit", "tf_nl-north_witness"
    }  # fmt: skip
    for config in configs.values():
        assert config.max_value_size and config.max_bytes
        assert config.max_value_size <= MAX_PAYLOAD
        assert config.max_bytes >= config.history * config.max_value_size or (
            config.bucket.endswith(("_schemas", "_witness"))
        )
    assert configs["tf_nl-north_audit"].max_value_size == MAX_NOTE_SIZE
    assert (configs["tf_nl-north_witness"].max_value_size or 0) > MAX_NOTE_SIZE


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--max-bytes", "lots"], "--max-bytes"),
        (["--max-msgs-per-sender", "0"], "--max-msgs-per-sender"),
        (["--max-bytes", "1GiB", "--max-msgs-per-sender", "100000"], "one sender could fill"),
        (["--max-receipts-per-sender", "1000000"], "one reader could fill"),
        (["--max-ack-pending", "-1"], "--max-ack-pending"),
    ],
)
@pytest.mark.parametrize("command", ["up", "provision"])
def test_bad_limit_flags_are_usage_errors(command: str, flags: list[str], named: str) -> None:
    """Refused with exit 2, one error line and a hint, before any roster is read."""
    where = ["--server", "nats://127.0.0.1:1"] if command == "provision" else []
    argv = ["broker", command, "--roster", "no.roster", "--anchor", "no.anchor", "--dir", "x"]
    result = tfshare(*argv, *where, *flags)
    err = result.stderr
    assert result.returncode == 2, err
    assert f"tfshare: error: {named}" in err or named in err.splitlines()[0]
    assert "tfshare: hint: " in err
    assert "Traceback" not in err


def test_limit_flags_are_explained_in_help() -> None:
    for command in ("up", "provision"):
        result = tfshare("broker", command, "--help")
        assert result.returncode == 0
        text = " ".join(result.stdout.split())
        for flag in (
            "--max-bytes",
            "--max-msgs-per-sender",
            "--max-receipts-per-sender",
            "--receipts-max-age-days",
            "--max-ack-pending",
        ):
            assert flag in text
        assert "quota" in text
