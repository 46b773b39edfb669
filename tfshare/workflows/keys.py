"""``tfshare keys``: create an agency's key file and card; describe either."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tfshare.encoding import encode, is_name
from tfshare.errors import InputError, TrustError, UsageError
from tfshare.files import read_bytes, write_atomic
from tfshare.keyfile import KDF_PROFILES, open_keyfile, read_keyfile_header, seal_keyfile
from tfshare.keys import Identity, display_name_problem, fingerprint, kid_enc, kid_sig
from tfshare.workflows.filekinds import MAX_FILE, load_card, read_kind, sniff


@dataclass(frozen=True)
class KeyInfo:
    """Public facts about an agency's keys, for people and for --json."""

    kind: Literal["key", "card"]
    agency_id: str
    display_name: str | None
    kid_sig: str
    kid_enc: str
    fingerprint: str
    nats_user: str | None
    path: str


def _check_name(agency_id: str) -> None:
    if not is_name(agency_id):
        raise UsageError(
            f"{agency_id!r} is not a valid agency id",
            hint="use 1-32 lowercase letters, digits, '-' or '_', starting with a letter",
        )


def check_display_name(name: str) -> None:
    """Refuse a display name that could forge or hide lines on a terminal (a usage error:
    the person typed it, and is told before any passphrase is asked)."""
    problem = display_name_problem(name)
    if problem is not None:
        raise UsageError(
            problem,
            hint="give --name the agency's plain name on one line, e.g. --name "
            "'Police North', without control characters, direction marks or line breaks",
        )


def init_keys(
    agency_id: str,
    directory: Path,
    *,
    display_name: str | None,
    passphrase: bytes,
    kdf: str,
    now_ms: int,
) -> tuple[KeyInfo, KeyInfo]:
    """Generate an identity; write DIR/AGENCY.key (0600) and DIR/AGENCY.card atomically."""
    _check_name(agency_id)
    if kdf not in KDF_PROFILES:
        raise UsageError(
            f"unknown KDF profile {kdf!r}", hint=f"choose one of {', '.join(KDF_PROFILES)}"
        )
    name = display_name or agency_id
    check_display_name(name)
    key_path = directory / f"{agency_id}.key"
    card_path = directory / f"{agency_id}.card"
    for path in (key_path, card_path):
        if path.exists():
            raise InputError(
                f"{str(path)!r} already exists; refusing to overwrite an agency's keys",
                hint="choose another --dir, or move the old files away first",
            )
    identity = Identity.generate(agency_id, name, rng=os.urandom, now_ms=now_ms)
    key_bytes = seal_keyfile(identity, passphrase, limits=KDF_PROFILES[kdf], rng=os.urandom)
    card_bytes = _encode_card(identity)
    write_atomic(key_path, key_bytes, secret=True, overwrite=False)
    try:
        write_atomic(card_path, card_bytes, overwrite=False)
    except BaseException:
        key_path.unlink(missing_ok=True)  # nothing half-written: no key without its card
        raise
    return describe(key_path), describe(card_path)


def _encode_card(identity: Identity) -> bytes:
    return encode(identity.card())


def describe(path: Path) -> KeyInfo:
    """Public facts of a key file (no passphrase needed) or a card (signature checked)."""
    data = read_bytes(path, what="key or card file", limit=MAX_FILE)
    kind = sniff(data)
    if kind == "key":
        header = read_keyfile_header(data)
        return KeyInfo(
            kind="key",
            agency_id=header.agency_id,
            display_name=None,
            kid_sig=kid_sig(header.sign_pk).hex(),
            kid_enc=kid_enc(header.enc_pk).hex(),
            fingerprint=fingerprint(header.sign_pk),
            nats_user=None,
            path=str(path),
        )
    if kind == "card":
        body = load_card(path)
        return KeyInfo(
            kind="card",
            agency_id=body.agency_id,
            display_name=body.display_name,
            kid_sig=kid_sig(body.sign_pk).hex(),
            kid_enc=kid_enc(body.enc_pk).hex(),
            fingerprint=fingerprint(body.sign_pk),
            nats_user=body.nats_user,
            path=str(path),
        )
    raise TrustError(
        f"{str(path)!r} is neither a key file nor an agency card",
        hint="give an AGENCY.key or AGENCY.card written by 'tfshare keys init'",
    )


def load_identity(path: Path, passphrase: bytes) -> Identity:
    """Open a key file with its passphrase."""
    return open_keyfile(read_kind(path, "key"), passphrase)
