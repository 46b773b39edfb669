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
    KeyOpt,
    PassphraseFile,
    emit_fields,
    emit_json,
    iso,
    note,
    now_ms,
    passphrase,
    where,
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


@app.command("rotate")
def rotate_cmd(
    key: KeyOpt = None,
    enc: Annotated[
        bool,
        typer.Option("--enc/--no-enc", help="Make a new encryption key (the default)."),
    ] = True,
    sign: Annotated[bool, typer.Option("--sign", help="Also make a new signing key.")] = False,
    grace: Annotated[
        str,
        typer.Option(
            "--grace",
            help="How long the old secret is kept (messages to the old key still open): "
            "1h..90d, e.g. 12h, 7d, 2w.",
        ),
    ] = "7d",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Where to write the rotation statement (default: AGENCY.rotation beside the key).",
            show_default=False,
        ),
    ] = None,
    statement_only: Annotated[
        bool,
        typer.Option(
            "--statement-only",
            help="Rotate nothing: write again the statement of the newest rotation the key "
            "file records (lost, or never written because 'keys rotate' was interrupted).",
        ),
    ] = False,
    passphrase_file: PassphraseFile = None,
    as_json: JsonFlag = False,
) -> None:
    """Replace your agency's encryption key (and with --sign its signing key): the new keys
    go into the key file, the old secret is kept for the grace period (and for as long as
    the roster still lists its key) and then destroyed, and a rotation statement signed by
    your current key is written for the coordinators."""
    from tfshare.workflows import keys as workflow

    grace_ms = workflow.parse_grace(grace)  # a typing mistake is said before the passphrase
    key_path = key if key is not None else where(None, None, None).key

    def ask() -> bytes:
        return passphrase(passphrase_file, confirm=False, purpose=str(key_path))

    if statement_only:
        again = workflow.remake_statement(key_path, ask_passphrase=ask, out=out)
        if as_json:
            emit_json(dataclasses.asdict(again))
            return
        note(f"wrote {again.statement_path} again (the rotation of {iso(again.created_ms)})")
        _say_next(again)
        return
    done = workflow.rotate_keys(
        key_path,
        ask_passphrase=ask,
        enc=enc,
        sign=sign,
        grace_ms=grace_ms,
        out=out,
        now_ms=now_ms(),
    )
    if as_json:
        emit_json(dataclasses.asdict(done))
        return
    what = " and ".join(
        name
        for name, made in (("encryption", done.rotated_enc), ("signing", done.rotated_sign))
        if made
    )
    note(
        f"{done.key_path} now holds a new {what} key; the old one is kept until "
        f"{iso(done.destroy_after_ms)} (longer if the roster still lists it then), then the "
        "first tfshare command that opens the key destroys it"
    )
    note(f"wrote {done.statement_path} (public, signed by your current key)")
    _say_next(done)


def _say_next(done: workflow.RotationDone) -> None:
    note(
        "next: send it to a coordinator of your task force; they run "
        f"'tfshare roster rotate ROSTER {Path(done.statement_path).name}' and publish the roster "
        f"before {iso(done.destroy_after_ms)}; once it is applied, move "
        f"{Path(done.statement_path).name} away (the next 'keys rotate' will not overwrite it)"
    )
    note(
        "restart your agent now so it holds the new key; until the new roster is out, "
        "senders keep using the old key, and messages to either key open"
    )
    emit_fields(
        [
            ("agency", done.agency_id),
            ("fingerprint", done.fingerprint),
            ("signing kid", done.kid_sig),
            ("encryption kid", done.kid_enc),
        ]
    )


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
