"""structlog configuration and redaction; called once by the CLI, never by the library.

Owns: the processor chain (level filter, timestamp, redaction, JSON or console rendering)
and ``redact``, which removes anything that could carry a secret or plaintext: values under
sensitive keys, and any raw bytes not under a key known to hold an id or a hash.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, Final, TextIO

import structlog

from tfshare.visible import escape

SENSITIVE_KEYS: Final = frozenset(
    {
        "passphrase",
        "password",
        "seed",
        "secret",
        "plaintext",
        "body",
        "record",
        "creds",
        "credentials",
        "token",
        "nkey",
        "payload_key",
        "key",
        "sk",
    }
)
SENSITIVE_SUFFIXES: Final = ("_sk", "_seed", "_secret", "_passphrase", "_plaintext", "_key")
# Byte values are shown (hex) only under these keys: ids and hashes, never keys or content.
BYTES_OK_SUFFIXES: Final = ("_id", "_hash", "kid", "_fp", "fingerprint")
REDACTED: Final = "[redacted]"


def _clean(key: str, value: Any) -> Any:
    lowered = key.lower()
    if lowered in SENSITIVE_KEYS or lowered.endswith(SENSITIVE_SUFFIXES):
        return REDACTED
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex() if lowered.endswith(BYTES_OK_SUFFIXES) else REDACTED
    if isinstance(value, dict):
        return {k: _clean(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        # Items inherit their container's key: ids=[b"..."] stays hex, parts=[b"..."] does not.
        return [_clean(key, v) for v in value]
    return value


def redact(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: drop secrets and plaintext (at any depth), render ids as hex."""
    for key in list(event):
        event[key] = _clean(key, event[key])
    return event


def visible(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor for a terminal: string values (subjects, claimed senders, reasons
    from outside) with control, format and line-break characters escaped, so a log line cannot
    forge another or rewrite the screen. (JSON lines escape them already: ensure_ascii.)"""
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = escape(value)
    return event


def configure(
    level: str = "warning", *, json: bool | None = None, stream: TextIO | None = None
) -> None:
    """Configure structlog for a CLI process: JSON lines unless on a TTY, to stderr."""
    out = stream or sys.stderr
    as_json = json if json is not None else not out.isatty()
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact,
            *([] if as_json else [visible]),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.WARNING)
        ),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
