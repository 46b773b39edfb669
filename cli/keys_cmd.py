"""``tfshare keys``: create and describe agency identities."""

# Each command imports the library it runs: every command of the CLI imports this module, and
# the key file code (PyNaCl, msgspec) is for these commands only (cli/common.py, issue 13).
# ruff: noqa: PLC0415

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tfshare.urls import parse_server_url

from .common import (
    AllowWeakPassphrase,
    JsonFlag,
    PassphraseFile,
    emit_fields,
    emit_json,
    note,
    now_ms,
    passphrase,
)

if TYPE_CHECKING:
    from tfshare.workflows import keys as workflow

# tfshare.keyfile.DEFAULT_KDF, written out so that --help shows it without importing the key
# file code; tests/cli/test_startup_imports.py checks that it is the library's.
DEFAULT_KDF = "moderate"

app = typer.Typer(help="Create and inspect agency keys and cards.", no_args_is_help=True)


@app.command("init")
def init_cmd(
    agency_id: Annotated[str, typer.Argument(help="Agency id, e.g. police-north.")],
    directory: Annotated[Path, typer.Option("--dir", help="Where to write AGENCY.key/.card.")],
    name: Annotated[str | None, typer.Option("--name", help="Display name.")] = None,
    passphrase_file: PassphraseFile = None,
    kdf: Annotated[
        str,
        typer.Option(
            "--kdf",
            envvar="TFSHARE_KDF",
            help="Argon2id cost: interactive, moderate, sensitive (insecure-test for tests).",
        ),
    ] = DEFAULT_KDF,
    allow_weak_passphrase: AllowWeakPassphrase = False,
    as_json: JsonFlag = False,
) -> None:
    """Create AGENCY.key (secret, passphrase-protected, 0600) and AGENCY.card (public) in
    --dir (created, 0700, if it does not exist). The passphrase needs 12 characters or more."""
    from tfshare.workflows import keys as workflow

    key, card = workflow.create_keys(
        agency_id,
        directory,
        display_name=name,
        # asked only once every other check passed and the directory exists
        ask_passphrase=lambda: passphrase(
            passphrase_file, confirm=True, purpose=f"the new key of {agency_id}"
        ),
        kdf=kdf,
        now_ms=now_ms(),
        allow_weak_passphrase=allow_weak_passphrase,
    )
    if as_json:
        emit_json({"key": key.path, "card": card.path, **_public(card)})
        return
    note(f"wrote {key.path} (secret: keep it, back it up, never send it)")
    note(f"wrote {card.path} (public: send it to a coordinator)")
    _render(card)


@app.command("show")
def show_cmd(
    path: Annotated[Path, typer.Argument(help="A .key or .card file.")],
    as_json: JsonFlag = False,
) -> None:
    """Show the agency, key ids and fingerprint of a key file or card (no passphrase needed)."""
    from tfshare.workflows import keys as workflow

    info = workflow.describe(path)
    if as_json:
        emit_json(_public(info))
    else:
        _render(info)


def _public(info: workflow.KeyInfo) -> dict[str, object]:
    return {k: v for k, v in dataclasses.asdict(info).items() if v is not None}


def _render(info: workflow.KeyInfo) -> None:
    rows = [("agency", info.agency_id)]
    if info.display_name:
        rows.append(("name", info.display_name))
    rows += [
        ("file", f"{info.path} ({'secret key file' if info.kind == 'key' else 'agency card'})"),
        ("fingerprint", info.fingerprint),
        ("signing kid", info.kid_sig),
        ("encryption kid", info.kid_enc),
    ]
    if info.nats_user:
        rows.append(("nats user", info.nats_user))
    emit_fields(rows)


def profile_init_cmd(
    agency: Annotated[str, typer.Option("--agency", help="Your agency id.")],
    server: Annotated[str, typer.Option("--server", help="Broker URL(s), e.g. nats://host:4222.")],
    roster: Annotated[Path, typer.Option("--roster", help="The signed roster.")],
    anchor: Annotated[Path, typer.Option("--anchor", help="The anchor (check its fingerprints).")],
    profile: Annotated[str, typer.Option("--profile", help="Profile name.")] = "default",
    key: Annotated[
        Path | None, typer.Option("--key", help="Import this key file instead of creating keys.")
    ] = None,
    passphrase_file: PassphraseFile = None,
    kdf: Annotated[str, typer.Option("--kdf", envvar="TFSHARE_KDF")] = DEFAULT_KDF,
    allow_weak_passphrase: AllowWeakPassphrase = False,
) -> None:
    """Set up an agency profile: keys, roster, anchor, state, server (then use --profile)."""
    from tfshare import profiles

    server = parse_server_url(server)  # a typing mistake is said before any passphrase is asked
    # Importing a key file needs no passphrase here: it is asked when the key is used.
    secret = (
        b""
        if key is not None
        else passphrase(passphrase_file, confirm=True, purpose=f"{agency}'s new key")
    )
    made = profiles.create(
        profile,
        agency=agency,
        server=server,
        roster=roster,
        anchor=anchor,
        key=key,
        passphrase=secret,
        kdf=kdf,
        now_ms=now_ms(),
        allow_weak_passphrase=allow_weak_passphrase,
    )
    note(f"profile {made.name} created in {made.folder}")
    if key is None:
        note(f"new keys: send {made.folder / (agency + '.card')} to a coordinator")
    note(f"use it with: tfshare --profile {made.name} ... (or TFSHARE_PROFILE={made.name})")


# The key manager's commands live in their own module (cli/keyman_cmd.py).
from . import keyman_cmd  # noqa: E402

app.command("serve")(keyman_cmd.serve_cmd)
app.command("resend")(keyman_cmd.resend_cmd)
