"""structlog configuration and the redaction processor."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, MutableMapping
from typing import Any

import pytest
import structlog

from tfshare.logconfig import REDACTED, configure, redact

SECRET = "pl4nted-S3CRET-value"
SECRET_BYTES = b"\x8f\x01planted-secret-bytes\xfe"


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """A StringIO to log into; structlog's defaults are restored afterwards."""
    out = io.StringIO()
    try:
        yield out
    finally:
        structlog.reset_defaults()


def _redact(**event: Any) -> MutableMapping[str, Any]:
    return redact(None, "info", dict(event))


def _lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


# redact ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key", ["passphrase", "seed", "body", "plaintext", "secret", "token", "key", "sk"]
)
def test_sensitive_keys_are_redacted(key: str) -> None:
    """Values under sensitive keys are replaced, whatever their type."""
    assert _redact(**{key: SECRET})[key] == REDACTED


@pytest.mark.parametrize(
    "key", ["payload_key", "enc_key", "sign_sk", "nats_seed", "old_passphrase"]
)
def test_sensitive_suffixes_are_redacted(key: str) -> None:
    """Values under *_key, *_sk, *_seed, *_passphrase keys are replaced."""
    assert _redact(**{key: SECRET})[key] == REDACTED


def test_sensitive_keys_match_case_insensitively() -> None:
    """ "Passphrase" is as sensitive as "passphrase"."""
    assert _redact(Passphrase=SECRET)["Passphrase"] == REDACTED


def test_sensitive_bytes_are_redacted_even_under_an_id_suffix() -> None:
    """A sensitive name wins over the bytes rule: seed bytes are never rendered."""
    assert _redact(seed=SECRET_BYTES)["seed"] == REDACTED


@pytest.mark.parametrize("key", ["msg_id", "env_hash", "kid", "sender_kid", "roster_fp"])
def test_bytes_under_id_and_hash_keys_render_as_hex(key: str) -> None:
    """Bytes under *_id, *_hash, kid keys are shown as lowercase hex."""
    assert _redact(**{key: b"\x01\xab"})[key] == "01ab"


def test_bytearray_and_memoryview_render_as_hex() -> None:
    """bytearray and memoryview ids are rendered like bytes."""
    event = _redact(msg_id=bytearray(b"\x01\x02"), env_hash=memoryview(b"\xff"))
    assert event["msg_id"] == "0102"
    assert event["env_hash"] == "ff"


@pytest.mark.parametrize("key", ["data", "ct", "wct", "blob"])
def test_other_bytes_are_redacted(key: str) -> None:
    """Bytes under any other key are replaced, never rendered."""
    assert _redact(**{key: SECRET_BYTES})[key] == REDACTED


def test_other_memoryview_is_redacted() -> None:
    """A memoryview under an ordinary key is replaced too."""
    assert _redact(data=memoryview(SECRET_BYTES))["data"] == REDACTED


def test_ordinary_values_pass_through() -> None:
    """Strings and numbers under ordinary keys are left alone."""
    event = _redact(event="envelope_rejected", code="E_BAD_SIG", size=512, sender="police")
    assert event == {
        "event": "envelope_rejected",
        "code": "E_BAD_SIG",
        "size": 512,
        "sender": "police",
    }


def test_bytes_nested_in_a_list_are_redacted() -> None:
    """Raw bytes inside a list under an ordinary key are not rendered."""
    event = _redact(parts=[SECRET_BYTES])
    assert "planted-secret-bytes" not in repr(event)


def test_sensitive_key_nested_in_a_dict_is_redacted() -> None:
    """A passphrase inside a dict value is redacted too."""
    event = _redact(config={"passphrase": SECRET})
    assert SECRET not in repr(event)


# configure ------------------------------------------------------------------------------------


def test_configure_emits_json_lines(stream: io.StringIO) -> None:
    """With a non-TTY stream each event is one JSON object on its own line."""
    configure("info", stream=stream)
    log = structlog.get_logger()
    log.info("first_event", size=1)
    log.warning("second_event", size=2)
    lines = _lines(stream)
    assert [line["event"] for line in lines] == ["first_event", "second_event"]
    assert [line["size"] for line in lines] == [1, 2]


def test_json_lines_carry_level_and_timestamp(stream: io.StringIO) -> None:
    """Each JSON line has the level and an ISO UTC timestamp."""
    configure("info", stream=stream)
    structlog.get_logger().warning("an_event")
    (line,) = _lines(stream)
    assert line["level"] == "warning"
    assert line["timestamp"].endswith("Z")


def test_configure_filters_below_the_level(stream: io.StringIO) -> None:
    """Events below the configured level are not written."""
    configure("warning", stream=stream)
    log = structlog.get_logger()
    log.info("quiet_event")
    log.error("loud_event")
    assert [line["event"] for line in _lines(stream)] == ["loud_event"]


def test_configure_applies_redaction(stream: io.StringIO) -> None:
    """The configured chain redacts secrets and renders ids as hex."""
    configure("info", stream=stream)
    structlog.get_logger().info("opened", passphrase=SECRET, msg_id=b"\x01\x02", data=b"xyz")
    (line,) = _lines(stream)
    assert line["passphrase"] == REDACTED
    assert line["msg_id"] == "0102"
    assert line["data"] == REDACTED


def test_planted_passphrase_never_appears(stream: io.StringIO) -> None:
    """A secret passed as passphrase= is absent from the output."""
    configure("debug", stream=stream)
    structlog.get_logger().error("unlock_failed", passphrase=SECRET)
    assert "unlock_failed" in stream.getvalue()
    assert SECRET not in stream.getvalue()


def test_planted_body_never_appears(stream: io.StringIO) -> None:
    """A plaintext passed as body= (str or bytes) is absent from the output."""
    configure("debug", stream=stream)
    log = structlog.get_logger()
    log.info("delivered", body=SECRET)
    log.info("delivered", body=SECRET_BYTES)
    text = stream.getvalue()
    assert text.count("delivered") == 2
    assert SECRET not in text
    assert "planted-secret-bytes" not in text


def test_planted_secret_in_bound_context_never_appears(stream: io.StringIO) -> None:
    """A secret bound to a logger with bind() is redacted like a call argument."""
    configure("info", stream=stream)
    structlog.get_logger().bind(passphrase=SECRET).warning("bound_event")
    assert "bound_event" in stream.getvalue()
    assert SECRET not in stream.getvalue()


def test_planted_secret_in_contextvars_never_appears(stream: io.StringIO) -> None:
    """A secret in structlog's contextvars is merged before redaction."""
    configure("info", stream=stream)
    structlog.contextvars.bind_contextvars(seed=SECRET)
    try:
        structlog.get_logger().warning("ctx_event")
    finally:
        structlog.contextvars.clear_contextvars()
    assert "ctx_event" in stream.getvalue()
    assert SECRET not in stream.getvalue()


def test_console_rendering_redacts_too(stream: io.StringIO) -> None:
    """With json=False the console renderer gets redacted values as well."""
    configure("info", json=False, stream=stream)
    structlog.get_logger().warning("console_event", passphrase=SECRET, body=SECRET)
    assert "console_event" in stream.getvalue()
    assert SECRET not in stream.getvalue()
    assert stream.getvalue().count(REDACTED) == 2


def test_logs_go_to_the_stderr_of_the_moment_not_a_closed_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """configure() without a stream writes to sys.stderr as it is at each line: a process
    that replaces stderr (pytest's capture, per test) and closes the old one must not make
    every later log line fail with "I/O operation on closed file" (it stopped agents)."""
    first = io.StringIO()
    monkeypatch.setattr("sys.stderr", first)
    configure("info", json=True)
    second = io.StringIO()
    monkeypatch.setattr("sys.stderr", second)
    first.close()
    structlog.get_logger("t").info("after_the_switch")
    assert json.loads(second.getvalue())["event"] == "after_the_switch"
