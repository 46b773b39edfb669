"""structlog configuration and redaction; called once by the CLI, never by the library.

Owns: the processor chain (level filter, timestamp, redaction, JSON or console rendering)
and ``redact``, which removes anything that could carry a secret or plaintext: values under
sensitive keys, and any raw bytes not under a key known to hold an id or a hash.

structlog is imported only by the modules that log (importing it costs more than starting
typer: it loads its console renderer, rich and asyncio), so a command that never logs -
``--help``, ``--version``, a call to the running agent - never pays for it. ``configure``
therefore applies the chain at once if structlog is already loaded, and otherwise the moment
it is first imported (``_AfterImport``): every logger is created after that, since loggers
come from ``structlog.get_logger``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final, TextIO, cast

from tfshare.visible import escape

if TYPE_CHECKING:
    from importlib.machinery import ModuleSpec

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


class _CurrentStderr:
    """``sys.stderr`` as it is when a line is written, not as it was when logging was set
    up: the chain may be applied long after ``configure`` (when structlog is first
    imported), and a process may replace ``sys.stderr`` in between (pytest's capture does,
    for each test, and closes the old one)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


# structlog takes a TextIO; print() needs only write and flush.
_CURRENT_STDERR: Final = cast(TextIO, _CurrentStderr())


@dataclass(frozen=True)
class _Settings:
    level: str
    as_json: bool
    out: TextIO


def configure(
    level: str = "warning", *, json: bool | None = None, stream: TextIO | None = None
) -> None:  # stream: a fixed one (tests); None: the process's stderr at each line
    """Configure structlog for a CLI process: JSON lines unless on a TTY, to stderr.

    Applied now if structlog is loaded, else when it is first imported (the module docstring
    says why); a later call replaces an earlier one that was not applied yet."""
    out = stream or _CURRENT_STDERR
    settings = _Settings(level, json if json is not None else not out.isatty(), out)
    loaded = sys.modules.get("structlog")
    if loaded is not None:
        _AfterImport.cancel()
        _apply(settings)
    else:
        _AfterImport.schedule("structlog", lambda: _apply(settings))


def _apply(settings: _Settings) -> None:
    # Here, not at the top: structlog is loaded by now (the module docstring says why), and
    # logging is needed only for its level names.
    import logging  # noqa: PLC0415

    import structlog  # noqa: PLC0415

    renderer: Any = (
        structlog.processors.JSONRenderer()
        if settings.as_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact,
            *([] if settings.as_json else [visible]),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(settings.level.upper(), logging.WARNING)
        ),
        logger_factory=structlog.PrintLoggerFactory(settings.out),
        cache_logger_on_first_use=False,
    )


class _AfterImport:
    """A finder on ``sys.meta_path`` that runs one action right after a module's first import
    has finished executing (Python has no post-import hook of its own). It finds nothing
    itself: it asks the finders after it for the module and wraps the loader they return.
    One at a time: a new ``schedule`` replaces the pending action."""

    _pending: _AfterImport | None = None

    def __init__(self, name: str, action: Callable[[], None]) -> None:
        self.name = name
        self.action = action

    @classmethod
    def schedule(cls, name: str, action: Callable[[], None]) -> None:
        cls.cancel()
        cls._pending = cls(name, action)
        sys.meta_path.insert(0, cls._pending)

    @classmethod
    def cancel(cls) -> None:
        if cls._pending is not None and cls._pending in sys.meta_path:
            sys.meta_path.remove(cls._pending)
        cls._pending = None

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname != self.name:
            return None
        _AfterImport.cancel()  # once; and the finders below answer for the module itself
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec: ModuleSpec | None = find(fullname, path, target) if find else None
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        exec_module = getattr(loader, "exec_module", None)
        if loader is None or exec_module is None:
            return spec
        action = self.action

        def exec_then_act(module: ModuleType) -> None:
            exec_module(module)
            action()

        # On this spec's own loader object (a new one per find): the module keeps its real
        # loader, only its first execution is followed by the action.
        setattr(loader, "exec_module", exec_then_act)  # noqa: B010
        return spec
