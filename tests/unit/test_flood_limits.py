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
from tfshare.errors import UsageError
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
    # One flooding sender cannot fill the stream on one channel with its quota.
    assert limits.sender_worst_case <= limits.max_bytes
    assert limits.file_store > limits.max_bytes


@pytest.mark.parametrize(
    ("limits", "flag"),
    [
        (StreamLimits(max_msgs_per_sender=0), "--max-msgs-per-sender"),
        (StreamLimits(max_ack_pending=-5), "--max-ack-pending"),
        (StreamLimits(max_bytes=MIB), "--max-bytes"),
        (StreamLimits(max_bytes=GIB, max_msgs_per_sender=100_000), "one sender could fill"),
        (StreamLimits(max_file_store=GIB), "--max-file-store"),
        (StreamLimits(max_age_days=0), "--max-age-days"),
        (StreamLimits(max_age_days=0.001, duplicate_window_s=3600), "--duplicate-window"),
    ],
)
def test_limits_that_make_no_sense_are_refused(limits: StreamLimits, flag: str) -> None:
    with pytest.raises(UsageError) as caught:
        limits.check()
    assert flag in caught.value.message
    assert caught.value.hint


def test_the_stream_refuses_new_messages_and_never_drops_old_ones() -> None:
    """DiscardNew per subject: a full quota refuses the sender's new message; nothing of
    anyone else's is deleted to make room."""
    config = transport.stream_config("nl-north", max_bytes=GIB, max_msgs_per_sender=77)
    assert config.discard == DiscardPolicy.NEW
    assert config.discard_new_per_subject is True
    assert config.max_msgs_per_subject == 77
    assert config.max_bytes == GIB
    assert config.max_msg_size == transport.MAX_MSG_SIZE


def test_reader_consumers_are_bounded() -> None:
    config = transport.reader_consumer_config(
        "agent_police_CH_alerts", ["tf.nl-north.ch.alerts.*"], max_ack_pending=9, max_waiting=3
    )
    assert (config.max_ack_pending, config.max_waiting) == (9, 3)
    assert config.filter_subjects == ["tf.nl-north.ch.alerts.*"]


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--max-bytes", "lots"], "--max-bytes"),
        (["--max-msgs-per-sender", "0"], "--max-msgs-per-sender"),
        (["--max-bytes", "1GiB", "--max-msgs-per-sender", "100000"], "one sender could fill"),
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
        for flag in ("--max-bytes", "--max-msgs-per-sender", "--max-ack-pending"):
            assert flag in text
        assert "quota" in text
