"""``tfshare seal`` and ``tfshare open``: envelopes as files, for offline exchange."""

# Each command imports the library it runs: every command of the CLI imports this module, and
# sealing, opening and logging (structlog) are for these two only (cli/common.py, issue 13).
# ruff: noqa: PLC0415

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tfshare.errors import ExitCode

from .common import (
    AnchorOpt,
    JsonFlag,
    KeyOpt,
    PassphraseFile,
    RosterOpt,
    StateDir,
    emit_fields,
    emit_json,
    iso,
    note,
    now_ms,
    passphrase,
    split_list,
    where,
)

if TYPE_CHECKING:
    from tfshare.protocol import Delivered

# tfshare.envelope.DEFAULT_MAX_AGE_MS in days, written out so that --help shows it without
# importing the envelope code; tests/cli/test_startup_imports.py checks that it is the same.
DEFAULT_MAX_AGE_DAYS = 44.0  # envelope.DEFAULT_MAX_AGE_MS (checked by a test)
LOGGER = "tfshare.cli"

RegistryDir = Annotated[
    Path | None,
    typer.Option(
        "--registry",
        help="Registry cache (registered schema versions). Default: $TFSHARE_HOME/registry.",
        show_default=False,
    ),
]


def seal_cmd(
    channel: Annotated[str, typer.Option("--channel", help="Channel to send on.")],
    schema: Annotated[str, typer.Option("--schema", help="e.g. tf.alert/1")],
    body: Annotated[Path, typer.Option("--in", help="The message body, a JSON file.")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the .tfenv file.")],
    to: Annotated[
        str | None,
        typer.Option("--to", help="Recipients, comma-separated (default: the channel's readers)."),
    ] = None,
    key: KeyOpt = None,
    roster: RosterOpt = None,
    anchor: AnchorOpt = None,
    passphrase_file: PassphraseFile = None,
    state: StateDir = None,
    registry: RegistryDir = None,
    as_json: JsonFlag = False,
) -> None:
    """Sign and encrypt a message body to its recipients, as a .tfenv file."""
    import structlog

    from tfshare.workflows.exchange import Credentials, seal_file

    at = where(key, roster, anchor, state)
    creds = Credentials(at.key, passphrase(passphrase_file, confirm=False, purpose=str(at.key)))
    sealed = seal_file(
        creds,
        roster_path=at.roster,
        anchor_path=at.anchor,
        channel=channel,
        to=split_list(to),
        schema_name=schema,
        body_path=body,
        out_path=out,
        state_dir=at.state,
        registry_dir=registry,
        clock=now_ms,
    )
    structlog.get_logger(LOGGER).info(
        "envelope_sealed",
        msg_id=sealed.msg_id.hex(),
        env_hash=sealed.env_hash.hex(),
        channel=channel,
        recipients=len(sealed.recipients),
        size=len(sealed.data),
    )
    info = {
        "out": str(out),
        "msg_id": sealed.msg_id.hex(),
        "env_hash": sealed.env_hash.hex(),
        "channel": channel,
        "schema": schema,
        "recipients": list(sealed.recipients),
        "seq": sealed.seq,
        "time": iso(sealed.ts_ms),
        "size": len(sealed.data),
    }
    if as_json:
        emit_json(info)
        return
    note(f"sealed {schema} for {', '.join(sealed.recipients)} -> {out} ({len(sealed.data)} bytes)")
    emit_fields([("msg_id", sealed.msg_id.hex()), ("env_hash", sealed.env_hash.hex())])


def open_cmd(
    envelope: Annotated[Path, typer.Argument(help="The .tfenv file.")],
    key: KeyOpt = None,
    roster: RosterOpt = None,
    anchor: AnchorOpt = None,
    passphrase_file: PassphraseFile = None,
    state: StateDir = None,
    registry: RegistryDir = None,
    max_age_days: Annotated[
        float, typer.Option("--max-age-days", help="Refuse messages older than this (E_STALE).")
    ] = DEFAULT_MAX_AGE_DAYS,
    as_json: JsonFlag = False,
) -> None:
    """Verify and decrypt a .tfenv file; exit 3 with the code if it is rejected."""
    import structlog

    from tfshare.protocol import Rejection, log_event
    from tfshare.seal import Duplicate, ReceivePolicy
    from tfshare.workflows.exchange import Credentials, open_file

    at = where(key, roster, anchor, state)
    creds = Credentials(at.key, passphrase(passphrase_file, confirm=False, purpose=str(at.key)))
    outcome = open_file(
        creds,
        envelope,
        roster_path=at.roster,
        anchor_path=at.anchor,
        state_dir=at.state,
        registry_dir=registry,
        clock=now_ms,
        policy=ReceivePolicy(max_age_ms=int(max_age_days * 86_400_000)),
    )
    event, fields = log_event(outcome)
    structlog.get_logger(LOGGER).info(event, **fields)
    if isinstance(outcome, Rejection):
        if as_json:
            emit_json(
                {
                    "outcome": "rejected",
                    "code": outcome.code.value,
                    "reason": outcome.reason,
                    "env_hash": outcome.env_hash.hex(),
                }
            )
        note(f"tfshare: error: message rejected: {outcome.code.value} ({outcome.reason})")
        note("tfshare: hint: do not act on it; report the code to the sender or a coordinator")
        raise typer.Exit(ExitCode.REJECTED)
    if isinstance(outcome, Duplicate):
        if as_json:
            emit_json(
                {
                    "outcome": "duplicate",
                    "code": "DUPLICATE",
                    "sender": outcome.sender,
                    "msg_id": outcome.msg_id.hex(),
                    "env_hash": outcome.env_hash.hex(),
                }
            )
        note(
            f"tfshare: error: DUPLICATE: message {outcome.msg_id.hex()} from {outcome.sender} "
            "was already opened with this state"
        )
        note("tfshare: hint: it was delivered before; nothing new to act on")
        raise typer.Exit(ExitCode.REJECTED)
    _render_delivered(outcome, as_json)


def _render_delivered(outcome: Delivered, as_json: bool) -> None:
    import msgspec

    message = outcome.message
    body: Any = msgspec.to_builtins(message.record)
    info = {
        "outcome": "delivered",
        "sender": message.sender,
        "fingerprint": message.fingerprint,
        "time": iso(message.ts_ms),
        "taskforce": message.taskforce,
        "channel": message.channel,
        "schema": message.schema,
        "schema_fp": message.schema_fp.hex(),
        "msg_id": message.msg_id.hex(),
        "env_hash": message.env_hash.hex(),
        "seq": message.seq,
        "recipients": list(message.recipients),
        "body": body,
    }
    if outcome.roster_expired:
        note("warning: the roster has expired; ask the coordinators for a re-signed one")
    if outcome.seq_note:
        note(f"note: sequence {outcome.seq_note} from {message.sender} on {message.channel}")
    if as_json:
        emit_json(info)
        return
    emit_fields(
        [
            ("verified sender", message.sender),
            ("fingerprint", message.fingerprint),
            ("sent", f"{info['time']} (seq {message.seq})"),
            ("channel", f"{message.channel} @ {message.taskforce}"),
            ("schema", f"{message.schema} ({info['schema_fp'][:16]})"),
            ("recipients", ", ".join(message.recipients)),
            ("msg_id", info["msg_id"]),
        ]
    )
    emit_json(body, indent=2)  # the sender's content: escaped for the terminal, same JSON value
