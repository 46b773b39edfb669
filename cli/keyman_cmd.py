"""``tfshare keys serve`` and ``tfshare keys resend``: the key manager's commands (issue 15).

Thin: parse, one call into ``tfshare.keymanager``, render. Registered on the ``keys`` group by
cli/keys_cmd.py. The agency loader and the passphrase (--passphrase-file, a systemd
credential, TFSHARE_PASSPHRASE or the terminal) are the agent's (cli/live_cmd.py).
"""

# Each command imports the library it runs (cli/common.py, issue 13).
# ruff: noqa: PLC0415

from __future__ import annotations

from typing import Annotated

import typer

from .common import (
    AnchorOpt,
    JsonFlag,
    KeyOpt,
    PassphraseFile,
    RosterOpt,
    ServerOpt,
    StateDir,
    TlsCaOpt,
    TlsCertOpt,
    TlsFiles,
    TlsKeyOpt,
    emit_json,
    note,
)


def serve_cmd(
    server: ServerOpt = None,
    tls_ca: TlsCaOpt = None,
    tls_cert: TlsCertOpt = None,
    tls_key: TlsKeyOpt = None,
    key: KeyOpt = None,
    roster: RosterOpt = None,
    anchor: AnchorOpt = None,
    passphrase_file: PassphraseFile = None,
    state: StateDir = None,
    every: Annotated[
        float,
        typer.Option("--every", help="Look at the roster and the streams every this many seconds."),
    ] = 2.0,
    first_epoch: Annotated[
        int | None,
        typer.Option(
            "--first-epoch",
            help="Only after keymanager.db was lost without a backup: the epoch number a "
            "channel the key manager delivered on before starts from (above every epoch its "
            "readers hold: tfshare agent status).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run the task force's key manager until Ctrl-C (JSON logs on stderr): epoch 1 for
    every channel that allows epoch mode, a new epoch when a channel's readers change, its
    period passes or its message budget is used, each key delivered to every current reader.
    The agency needs the role key-manager in the roster (exit 6 otherwise)."""
    from tfshare.keymanager import run

    from .live_cmd import _agency, _agent_passphrase

    secret = _agent_passphrase(passphrase_file)
    agency, url = _agency(
        key, None, roster, anchor, state, None, server, secret=secret,
        tls=TlsFiles(tls_ca, tls_cert, tls_key),
    )  # fmt: skip
    del secret
    manager = run.key_manager(agency, url=url, every_s=every, first_epoch=first_epoch)
    note(f"key manager of {agency.roster.taskforce} ({manager.agency}) publishing to {url}")
    s = run.serve(manager).stats
    note(
        f"key manager stopped: {s.epochs} epochs made, {s.deliveries} deliveries published, "
        f"{s.refused} refused by the broker, {s.rosters} newer rosters followed"
    )


def resend_cmd(
    channel: Annotated[str, typer.Option("--channel", help="The epoch-mode channel.")],
    to: Annotated[str, typer.Option("--to", help="The reader (agency id) to send it to.")],
    server: ServerOpt = None,
    tls_ca: TlsCaOpt = None,
    tls_cert: TlsCertOpt = None,
    tls_key: TlsKeyOpt = None,
    key: KeyOpt = None,
    roster: RosterOpt = None,
    anchor: AnchorOpt = None,
    passphrase_file: PassphraseFile = None,
    state: StateDir = None,
    as_json: JsonFlag = False,
) -> None:
    """Deliver a channel's current epoch key again to one of its readers (an agency that
    lost its state, say). Run it with the key manager's own key and state."""
    from tfshare.keymanager import run

    from .live_cmd import _agency

    agency, url = _agency(
        key, passphrase_file, roster, anchor, state, None, server,
        tls=TlsFiles(tls_ca, tls_cert, tls_key),
    )  # fmt: skip
    epoch, published = run.resend(agency, url=url, channel=channel, to=to)
    if as_json:
        emit_json({"channel": channel, "epoch": epoch, "to": to, "published": published})
        return
    note(f"epoch {epoch} of {channel} delivered again to {to} ({published} envelope(s) published)")
