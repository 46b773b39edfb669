"""Shared CLI plumbing: passphrases, clock, output and the option types every command uses.

Every command module imports this one, so it stays light (stdlib, typer and tfshare's small
leaf modules): what a command needs beyond it is imported inside the command (issue 13: the
CLI starts fast, and ``--help`` or a call to the running agent loads no NATS client). The
same goes for the helpers here: each imports what only it needs (profiles, files, getpass,
json) when it is called.

Output: every string that came from outside (names, message fields, subjects, claimed senders)
reaches the terminal through ``shown`` - directly, or through ``emit_fields``, ``note`` and
``emit_json``, which apply it themselves - so no such string can move the cursor, rewrite the
screen, reorder text or start a line of its own (``tfshare.visible``).
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tfshare.errors import TrustError, UsageError
from tfshare.urls import parse_server_url
from tfshare.visible import escape, escape_json

if TYPE_CHECKING:
    import ssl

    from tfshare import profiles

MAX_PASSPHRASE_FILE = 4096

PassphraseFile = Annotated[
    Path | None,
    typer.Option(
        "--passphrase-file",
        help="Read the passphrase from this file (first line). Also: TFSHARE_PASSPHRASE, "
        "or a prompt on a terminal. Never given on the command line.",
        show_default=False,
    ),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
StateDir = Annotated[
    Path | None,
    typer.Option(
        "--state",
        help="Receiver state (replay store, roster seq). Default: $TFSHARE_HOME/state/AGENCY.",
        show_default=False,
    ),
]


KeyOpt = Annotated[
    Path | None, typer.Option("--key", help="Your agency's key file (default: the profile's).")
]
RosterOpt = Annotated[
    Path | None, typer.Option("--roster", help="The signed roster (default: the profile's).")
]
AnchorOpt = Annotated[
    Path | None, typer.Option("--anchor", help="The pinned trust anchor (default: the profile's).")
]
ServerOpt = Annotated[
    str | None,
    typer.Option(
        "--server",
        help="Broker URL, or a cluster's nodes separated by commas (default: the profile's, "
        "$TFSHARE_SERVER, or nats://127.0.0.1:4222).",
    ),
]

TlsCaOpt = Annotated[
    Path | None,
    typer.Option(
        "--tls-ca",
        envvar="TFSHARE_TLS_CA",
        help="The task force CA's certificate (PEM) to check a tls:// broker against "
        "(default: the profile's tls_ca).",
        show_default=False,
    ),
]
TlsCertOpt = Annotated[
    Path | None,
    typer.Option(
        "--tls-cert",
        envvar="TFSHARE_TLS_CERT",
        help="This client's TLS certificate (PEM), for a broker that verifies clients "
        "(default: the profile's tls_cert).",
        show_default=False,
    ),
]
TlsKeyOpt = Annotated[
    Path | None,
    typer.Option(
        "--tls-key",
        envvar="TFSHARE_TLS_KEY",
        help="The key of --tls-cert (PEM, unencrypted, readable only by you; default: the "
        "profile's tls_key).",
        show_default=False,
    ),
]


@dataclass(frozen=True)
class TlsFiles:
    """The TLS files a client connects with (flags or environment, else the profile's);
    all None: no settings of its own (a tls:// broker is then checked against the
    system's CAs, which do not hold a task force CA)."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    def context(self) -> ssl.SSLContext | None:
        """The SSL context, built once per command (``tlsconf.client_ssl_context``: each
        bad file named); None without settings. Imported here: the CLI starts without ssl."""
        if self.ca is None and self.cert is None and self.key is None:
            return None
        if self.ca is None:
            raise UsageError(
                "a TLS client certificate is given without the CA to check the broker with",
                hint="give --tls-ca (the task force CA's certificate, PEM) as well",
            )
        from tfshare.tlsconf import client_ssl_context  # noqa: PLC0415 - see the docstring
        from tfshare.transport import mark_client_cert  # noqa: PLC0415

        context = client_ssl_context(self.ca, self.cert, self.key)
        return mark_client_cert(context) if self.cert is not None else context


def tls_context(
    ca: Path | None = None, cert: Path | None = None, key: Path | None = None
) -> ssl.SSLContext | None:
    """The SSL context from --tls-ca/--tls-cert/--tls-key, else the active profile's."""
    return _tls_files(TlsFiles(ca, cert, key), _active_profile()).context()


def _active_profile() -> profiles.Profile | None:
    from tfshare import profiles  # noqa: PLC0415 - see the module docstring

    return profiles.load(_profile_name) if _profile_name else None


def _tls_files(given: TlsFiles, profile: profiles.Profile | None) -> TlsFiles:
    """Flags (or TFSHARE_TLS_*) first; the profile's files when none is given."""
    if given.ca is not None or given.cert is not None or given.key is not None:
        return given
    if profile is None:
        return given
    return TlsFiles(profile.tls_ca, profile.tls_cert, profile.tls_key)


AllowWeakPassphrase = Annotated[
    bool,
    typer.Option(
        "--allow-weak-passphrase",
        help="Accept a passphrase shorter than 12 characters for the new key (throwaway keys).",
    ),
]

_profile_name: str | None = None


def set_profile(name: str | None) -> None:
    global _profile_name  # noqa: PLW0603 - one CLI invocation per process
    _profile_name = name


@dataclass(frozen=True)
class Where:
    """Where an agency's files are: explicit flags first, then the active profile."""

    key: Path
    roster: Path
    anchor: Path
    state: Path | None
    server: str | None
    tls: TlsFiles = TlsFiles()
    jetstream_domain: str | None = None  # the profile's (an agency behind its leaf node)


def profile_agency() -> str | None:
    """The agency of the active profile (--profile / TFSHARE_PROFILE), if any."""
    from tfshare import profiles  # noqa: PLC0415

    return profiles.load(_profile_name).agency if _profile_name else None


def where(
    key: Path | None,
    roster: Path | None,
    anchor: Path | None,
    state: Path | None = None,
    server: str | None = None,
    tls: TlsFiles = TlsFiles(),
) -> Where:
    profile = _active_profile()
    for reason in profile.skipped_servers if profile else ():
        note(f"tfshare: warning: {reason}; the profile's other servers are used")

    def pick(flag: Path | None, attr: str, option: str) -> Path:
        if flag is not None:
            return flag
        if profile is None:
            raise UsageError(
                f"{option} is required without a profile",
                hint=f"give {option}, or --profile NAME (see 'tfshare init')",
            )
        value: Path = getattr(profile, attr)
        return value

    return Where(
        key=pick(key, "key", "--key"),
        roster=pick(roster, "roster", "--roster"),
        anchor=pick(anchor, "anchor", "--anchor"),
        state=state or (profile.state if profile else None),
        server=_server(server, profile),
        tls=_tls_files(tls, profile),
        jetstream_domain=profile.jetstream_domain if profile else None,
    )


def _server(flag: str | None, profile: profiles.Profile | None) -> str | None:
    """The broker URL from --server (checked here, before any passphrase is asked or anything
    is opened: a malformed one is a usage error naming it, exit 2, never a connection
    timeout), else the profile's (checked when the profile is loaded); None: the caller's
    default ($TFSHARE_SERVER, checked by ``live.server_url``)."""
    if flag:
        return parse_server_url(flag)
    return profile.server if profile is not None else None


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).isoformat(timespec="milliseconds")


def passphrase(passphrase_file: Path | None, *, confirm: bool, purpose: str) -> bytes:
    """The passphrase from a file, TFSHARE_PASSPHRASE, or a terminal prompt, in that order."""
    if passphrase_file is not None:
        from tfshare.files import read_bytes  # noqa: PLC0415 - see the module docstring

        data = read_bytes(passphrase_file, what="passphrase file", limit=MAX_PASSPHRASE_FILE)
        value = data.split(b"\n", 1)[0].rstrip(b"\r")
        if not value:
            raise TrustError(
                f"the passphrase file {str(passphrase_file)!r} is empty",
                hint="write the passphrase on the file's first line",
            )
        return value
    env = os.environ.get("TFSHARE_PASSPHRASE")
    if env:
        return env.encode()
    if sys.stdin.isatty() and sys.stderr.isatty():
        import getpass  # noqa: PLC0415 - see the module docstring

        first = getpass.getpass(f"Passphrase for {purpose}: ")
        if confirm and getpass.getpass("Repeat the passphrase: ") != first:
            raise TrustError("the passphrases do not match", hint="type the same one twice")
        if not first:
            raise TrustError("the passphrase is empty", hint="choose a passphrase of a few words")
        return first.encode()
    raise TrustError(
        "no passphrase given",
        hint="use --passphrase-file FILE or set TFSHARE_PASSPHRASE (a prompt needs a terminal)",
    )


def shown(text: object) -> str:
    """``text`` made safe to print: each control, format or line-break character (newline,
    ESC, bidirectional overrides and isolates, zero-width characters, U+2028/U+2029, ...)
    becomes its visible escape (``\\x1b``, ``\\u202e``); the result is always one line.

    Use it on every string from outside that is printed other than through ``emit_fields``,
    ``note`` or ``emit_json`` (which apply it): display names, message fields, subjects.
    """
    return escape(text if isinstance(text, str) else str(text))


def emit_json(obj: Any, *, indent: int | None = None) -> None:
    """One JSON value on stdout (one line, or ``indent``-ed for people); characters a terminal
    would act on are ``\\u`` escapes, JSON's own spelling: it decodes to the same value."""
    import json  # noqa: PLC0415 - see the module docstring

    typer.echo(escape_json(json.dumps(obj, ensure_ascii=False, sort_keys=False, indent=indent)))


def emit_fields(rows: list[tuple[str, str]]) -> None:
    """Aligned "label  value" lines on stdout, values escaped (``shown``): one line each."""
    safe = [(shown(key), shown(value)) for key, value in rows]
    width = max((len(k) for k, _ in safe), default=0)
    for key, value in safe:
        typer.echo(f"{key.ljust(width)}  {value}")


def note(message: str) -> None:
    """A message for people (stderr), never data; escaped (``shown``), so one line."""
    typer.echo(shown(message), err=True)


def split_list(value: str | None) -> list[str] | None:
    if value is None:
        return None
    items = [item.strip() for item in value.split(",") if item.strip()]
    return items or None


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """The library's warnings meant for people (``InsecureKeyCost``) as ``tfshare: warning:``
    lines on stderr; any other warning as Python shows it."""
    if _is_insecure_key_cost(category):
        typer.echo(f"tfshare: warning: {shown(str(message))}", err=True)
        return
    _python_showwarning(message, category, filename, lineno, file, line)


def _is_insecure_key_cost(category: type[Warning]) -> bool:
    # Only tfshare.workflows.keys raises it: if that module is not loaded, this is not it
    # (and it is not imported here: it brings the key file code, PyNaCl and msgspec).
    keys = sys.modules.get(_KEYS_MODULE)
    return keys is not None and issubclass(category, keys.InsecureKeyCost)


# The CLI, not the library, decides how a warning looks; each command says it once per key
# it opens (a test run is quiet: the library does not warn with TFSHARE_TEST=1). The filter
# names the module that warns (stacklevel=1 there) rather than the class, which would need
# that module imported.
_KEYS_MODULE = "tfshare.workflows.keys"
_python_showwarning = warnings.showwarning
warnings.showwarning = _show_warning
warnings.filterwarnings("default", category=UserWarning, module=r"tfshare\.workflows\.keys\Z")
