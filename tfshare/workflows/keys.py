"""``tfshare keys``: create an agency's key file and card; describe either; open a key file.

Owns: the policy for new key files (a passphrase of at least ``MIN_PASSPHRASE_CHARS``
characters unless the person allows a weak one), and the warning that a key file is
protected with the insecure test cost (``InsecureKeyCost``), raised through Python's
``warnings`` each time such a key is created or opened, outside test runs
(``TFSHARE_TEST=1``); the CLI prints it as ``tfshare: warning: ...``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tfshare.encoding import encode, is_name
from tfshare.errors import InputError, TrustError, UsageError
from tfshare.files import read_bytes, write_atomic
from tfshare.keyfile import (
    KDF_PROFILES,
    MIN_PASSPHRASE_CHARS,
    KdfLimits,
    is_test_cost,
    open_keyfile,
    passphrase_problem,
    read_keyfile_header,
    seal_keyfile,
)
from tfshare.keys import Identity, display_name_problem, fingerprint, kid_enc, kid_sig
from tfshare.workflows.filekinds import MAX_FILE, load_card, read_kind, sniff

# Set by the test suites (their conftests): their throwaway keys use the insecure test cost
# on purpose, and a warning on every command would drown what the tests look at.
TEST_RUN_ENV = "TFSHARE_TEST"


class InsecureKeyCost(UserWarning):
    """A key file protected with the insecure test cost is being created or used."""


def _warn_if_test_cost(path: Path, limits: KdfLimits) -> None:
    if is_test_cost(limits) and os.environ.get(TEST_RUN_ENV) != "1":
        warnings.warn(
            InsecureKeyCost(
                f"the key file {str(path)!r} is protected with the insecure test cost "
                "(TFSHARE_KDF=insecure-test): whoever copies it can guess its passphrase "
                "quickly; for real use create keys without TFSHARE_KDF=insecure-test"
            ),
            stacklevel=1,  # one warning per key and command, wherever it is opened from
        )


def check_new_passphrase(passphrase: bytes, *, allow_weak: bool) -> None:
    """Refuse a passphrase too weak to protect a new key file (exit 6, like every other
    passphrase problem), unless the person said ``--allow-weak-passphrase``."""
    problem = passphrase_problem(passphrase)
    if problem is not None and not allow_weak:
        raise TrustError(
            f"{problem}: a stolen key file with a short passphrase is opened by guessing",
            hint=f"choose a passphrase of at least {MIN_PASSPHRASE_CHARS} characters (a few "
            "words), or give --allow-weak-passphrase for a throwaway key",
        )


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


def create_keys(
    agency_id: str,
    directory: Path,
    *,
    display_name: str | None,
    ask_passphrase: Callable[[], bytes],
    kdf: str,
    now_ms: int,
    allow_weak_passphrase: bool = False,
) -> tuple[KeyInfo, KeyInfo]:
    """``keys init``: every check that needs no passphrase first (agency id, display name,
    KDF, existing files), then the directory (made 0700 if missing), then the passphrase,
    then ``init_keys``. Nobody types a passphrase twice to learn that a name is wrong; a
    directory made here is removed again if the command fails and it is still empty."""
    _key_paths(agency_id, directory, display_name=display_name, kdf=kdf)
    made = not directory.exists()
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(
            f"cannot create the directory {str(directory)!r} ({exc.strerror})",
            hint="choose a --dir you can write to",
        ) from None
    if not directory.is_dir():
        raise InputError(
            f"{str(directory)!r} is not a directory", hint="give --dir a directory for the keys"
        )
    try:
        return init_keys(
            agency_id,
            directory,
            display_name=display_name,
            passphrase=ask_passphrase(),
            kdf=kdf,
            now_ms=now_ms,
            allow_weak_passphrase=allow_weak_passphrase,
        )
    except BaseException:
        if made and not any(directory.iterdir()):
            directory.rmdir()
        raise


def _key_paths(
    agency_id: str, directory: Path, *, display_name: str | None, kdf: str
) -> tuple[Path, Path]:
    """The key and card paths, after the checks that need no passphrase."""
    _check_name(agency_id)
    if kdf not in KDF_PROFILES:
        raise UsageError(
            f"unknown KDF profile {kdf!r}", hint=f"choose one of {', '.join(KDF_PROFILES)}"
        )
    check_display_name(display_name or agency_id)
    key_path = directory / f"{agency_id}.key"
    card_path = directory / f"{agency_id}.card"
    for path in (key_path, card_path):
        if path.exists():
            raise InputError(
                f"{str(path)!r} already exists; refusing to overwrite an agency's keys",
                hint="choose another --dir, or move the old files away first",
            )
    return key_path, card_path


def init_keys(
    agency_id: str,
    directory: Path,
    *,
    display_name: str | None,
    passphrase: bytes,
    kdf: str,
    now_ms: int,
    allow_weak_passphrase: bool = False,
) -> tuple[KeyInfo, KeyInfo]:
    """Generate an identity; write DIR/AGENCY.key (0600) and DIR/AGENCY.card atomically.
    The passphrase must be strong enough (``check_new_passphrase``)."""
    key_path, card_path = _key_paths(agency_id, directory, display_name=display_name, kdf=kdf)
    check_new_passphrase(passphrase, allow_weak=allow_weak_passphrase)
    name = display_name or agency_id
    identity = Identity.generate(agency_id, name, rng=os.urandom, now_ms=now_ms)
    key_bytes = seal_keyfile(identity, passphrase, limits=KDF_PROFILES[kdf], rng=os.urandom)
    card_bytes = _encode_card(identity)
    write_atomic(key_path, key_bytes, secret=True, overwrite=False)
    try:
        write_atomic(card_path, card_bytes, overwrite=False)
    except BaseException:
        key_path.unlink(missing_ok=True)  # nothing half-written: no key without its card
        raise
    _warn_if_test_cost(key_path, KDF_PROFILES[kdf])
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
    """Open a key file with its passphrase (an ``InsecureKeyCost`` warning if it has the
    insecure test cost, outside test runs)."""
    data = read_kind(path, "key")
    identity = open_keyfile(data, passphrase)
    _warn_if_test_cost(path, read_keyfile_header(data).limits)
    return identity
