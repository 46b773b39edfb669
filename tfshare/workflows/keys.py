"""``tfshare keys``: create an agency's key file and card; describe either; open a key file;
rotate its keys.

Owns: the policy for new key files (a passphrase of at least ``MIN_PASSPHRASE_CHARS``
characters unless the person allows a weak one), and the warning that a key file is
protected with the insecure test cost (``InsecureKeyCost``), raised through Python's
``warnings`` each time such a key is created or opened, outside test runs
(``TFSHARE_TEST=1``); the CLI prints it as ``tfshare: warning: ...``.

Also the one place key files are opened for use (``unlock_key``, ``load_identity``): each
opening destroys the retired secrets whose grace period is over, rewriting the file atomically
(mode 0600) - a key file stolen later no longer holds them - except those whose public key the
caller says to ``keep``: a caller that has the roster in force passes ``rotation.listed_keys``
(the agency's keys that roster still lists; a rotation not applied yet), and one that reads the
roster only after the key opens it with ``open_key`` and destroys with ``destroy_expired``.
``keys rotate`` (``rotate_keys``) writes the new keys into the file, then the rotation
statement the coordinators apply; ``remake_statement`` (``keys rotate --statement-only``)
writes that statement again from the key file.
"""

from __future__ import annotations

import os
import re
import time
import warnings
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from tfshare.encoding import encode, is_name
from tfshare.errors import InputError, TfshareError, TrustError, UsageError
from tfshare.files import read_bytes, write_atomic
from tfshare.keyfile import (
    KDF_PROFILES,
    KEYFILE_TAG_V2,
    MIN_PASSPHRASE_CHARS,
    FileKey,
    KdfLimits,
    expire_keyfile_with,
    identity_without_expired,
    is_test_cost,
    open_keyfile_at,
    open_keyfile_keeping_all,
    passphrase_problem,
    read_keyfile_header,
    seal_keyfile,
)
from tfshare.keys import Identity, display_name_problem, fingerprint, kid_enc, kid_sig
from tfshare.roster import TrustedRoster
from tfshare.rotation import (
    DEFAULT_GRACE_MS,
    RotationNotApplied,
    grace_problem,
    listed_keys,
    make_rotation,
    rotation_not_applied,
)
from tfshare.workflows.filekinds import MAX_FILE, load_card, read_kind, sniff

# Set by the test suites (their conftests): their throwaway keys use the insecure test cost
# on purpose, and a warning on every command would drown what the tests look at.
TEST_RUN_ENV = "TFSHARE_TEST"


class InsecureKeyCost(UserWarning):
    """A key file protected with the insecure test cost is being created or used."""


class SecretsNotDestroyed(InsecureKeyCost):
    """Retired secrets past their grace period could not be removed from the key file (it
    cannot be rewritten); shown like ``InsecureKeyCost``, the CLI's warning for key files."""


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
    kind = "key" if _is_key_v2(data) else sniff(data)
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


# A tfshare-key/2 file starts with these bytes (a 10-element array, then its tag). Checked
# here as well as by filekinds.sniff, which may not know the tag yet (it is not this module's).
_KEY_V2_LEAD: Final = b"\x9a" + encode(KEYFILE_TAG_V2)


def _is_key_v2(data: bytes) -> bool:
    return data.startswith(_KEY_V2_LEAD)


def read_key_file(path: Path) -> bytes:
    """The bytes of a key file (v1 or v2), or the precise error of ``read_kind``."""
    data = read_bytes(path, what="key file", limit=MAX_FILE)
    return data if _is_key_v2(data) else read_kind(path, "key")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class UnlockedKey:
    """An opened key file: the identity (without expired secrets) and the key that opened
    the file, for the agent's daily ``destroy_expired`` without the passphrase."""

    path: Path
    identity: Identity = field(repr=False)
    file_key: FileKey = field(repr=False)


def unlock_key(
    path: Path, passphrase: bytes, *, now_ms: int | None = None, keep: Collection[bytes] = ()
) -> UnlockedKey:
    """Open a key file with its passphrase, as of ``now_ms`` (default: now): the retired
    secrets whose grace period is over are left out and the file is rewritten without them
    (atomically, mode 0600), except those whose public key is in ``keep`` (the keys the
    roster in force lists as the agency's: ``rotation.listed_keys``). If it cannot be
    rewritten the command goes on and a ``SecretsNotDestroyed`` warning says so. An
    ``InsecureKeyCost`` warning if the file has the insecure test cost, outside test runs."""
    data = read_key_file(path)
    at = _now_ms() if now_ms is None else now_ms
    opened = open_keyfile_at(data, passphrase, now_ms=at, rng=os.urandom, keep=keep)
    if opened.rewritten is not None:
        _replace_key_file(path, opened.rewritten)
    _warn_if_test_cost(path, read_keyfile_header(data).limits)
    return UnlockedKey(path, opened.identity, opened.file_key)


def open_key(path: Path, passphrase: bytes) -> UnlockedKey:
    """Open a key file with its passphrase, destroying nothing yet: for a command that reads
    the roster only after the key (a wrong passphrase fails first) and then destroys what
    that roster allows with ``destroy_expired(..., keep=rotation.listed_keys(...))``."""
    data = read_key_file(path)
    opened = open_keyfile_keeping_all(data, passphrase)
    _warn_if_test_cost(path, read_keyfile_header(data).limits)
    return UnlockedKey(path, opened.identity, opened.file_key)


def load_identity(
    path: Path, passphrase: bytes, *, now_ms: int | None = None, keep: Collection[bytes] = ()
) -> Identity:
    """Open a key file with its passphrase (``unlock_key``): expired secrets destroyed, but
    never those of ``keep``."""
    return unlock_key(path, passphrase, now_ms=now_ms, keep=keep).identity


def destroy_expired(
    unlocked: UnlockedKey, *, now_ms: int | None = None, keep: Collection[bytes] = ()
) -> UnlockedKey:
    """For a process that keeps a key unlocked (the agent, daily): drop the secrets whose
    grace period ended from memory and from the key file (with the key kept at unlock, no
    passphrase), except those whose public key is in ``keep`` (``rotation.listed_keys`` of
    the roster in force). A key file re-sealed since (``keys rotate``) is left to its next
    opening."""
    at = _now_ms() if now_ms is None else now_ms
    identity = identity_without_expired(unlocked.identity, at, keep=keep)
    try:
        data = read_key_file(unlocked.path)
        opened = expire_keyfile_with(data, unlocked.file_key, now_ms=at, rng=os.urandom, keep=keep)
    except TfshareError as exc:
        _warn_not_destroyed(unlocked.path, exc)
        opened = None
    if opened is not None and opened.rewritten is not None:
        _replace_key_file(unlocked.path, opened.rewritten)
    if identity is unlocked.identity:
        return unlocked
    return UnlockedKey(unlocked.path, identity, unlocked.file_key)


def destroy_expired_under(
    unlocked: UnlockedKey, roster: TrustedRoster, *, now_ms: int | None = None
) -> UnlockedKey:
    """``destroy_expired`` keeping what ``roster`` (the roster in force) still lists as the
    agency's (``rotation.listed_keys``), and ``rotation_not_applied`` logged when that keeps a
    secret past its grace: what a command that opened its key with ``open_key`` does once it
    has verified the roster."""
    at = _now_ms() if now_ms is None else now_ms
    listed = listed_keys(roster, unlocked.identity.agency_id)
    done = destroy_expired(unlocked, now_ms=at, keep=listed)
    warn_rotation_not_applied(done.identity, roster, at)
    return done


def warn_rotation_not_applied(
    identity: Identity, roster: TrustedRoster, now_ms: int
) -> RotationNotApplied | None:
    """Log ``rotation_not_applied`` (agency, when it rotated, how long overdue) when the roster
    in force still lists a key whose grace period is over (its secret is kept); returns it
    for whoever shows a status. Nothing is logged otherwise."""
    late = rotation_not_applied(identity, roster, now_ms)
    if late is None:
        return None
    # Imported here: structlog is for the modules that log, and this one logs only this.
    import structlog  # noqa: PLC0415

    structlog.get_logger("tfshare.keys").warning(
        "rotation_not_applied",
        agency=late.agency_id,
        rotated_ms=late.rotated_ms,
        overdue_hours=late.overdue_ms // 3_600_000,
        reason=late.reason,
        hint=late.hint,
    )
    return late


def _replace_key_file(path: Path, data: bytes) -> None:
    try:
        write_atomic(path, data, secret=True)
    except TfshareError as exc:
        _warn_not_destroyed(path, exc)


def _warn_not_destroyed(path: Path, exc: TfshareError) -> None:
    warnings.warn(
        SecretsNotDestroyed(
            f"the key file {str(path)!r} still holds old secrets whose grace period is over "
            f"({exc.message}): whoever copies it with the passphrase can open old messages; "
            "fix the file's directory so tfshare can rewrite it"
        ),
        stacklevel=1,
    )


_DURATION: Final = re.compile(r"^([0-9]{1,6})([mhdw])\Z")
_UNIT_MS: Final = {"m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 7 * 86_400_000}


def parse_grace(text: str) -> int:
    """``--grace``: a number and a unit (m, h, d, w), e.g. 7d; 1 hour to 90 days."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise UsageError(
            f"{text!r} is not a duration", hint="give --grace as a number and a unit: 12h, 7d, 2w"
        )
    grace_ms = int(match.group(1)) * _UNIT_MS[match.group(2)]
    problem = grace_problem(grace_ms)
    if problem is not None:
        raise UsageError(problem, hint="give --grace between 1h and 90d (default 7d)")
    return grace_ms


@dataclass(frozen=True)
class RotationDone:
    """What ``keys rotate`` did, for people and for --json."""

    agency_id: str
    key_path: str
    statement_path: str
    rotated_enc: bool
    rotated_sign: bool
    kid_enc: str  # the new (or unchanged) current keys
    kid_sig: str
    fingerprint: str
    created_ms: int
    destroy_after_ms: int


def rotate_keys(
    path: Path,
    *,
    ask_passphrase: Callable[[], bytes],
    enc: bool = True,
    sign: bool = False,
    grace_ms: int = DEFAULT_GRACE_MS,
    out: Path | None = None,
    now_ms: int | None = None,
) -> RotationDone:
    """``keys rotate``: new encryption and/or signing keys in the key file (the replaced ones
    kept until ``now + grace``, and after that for as long as the roster lists them), and the
    rotation statement (default AGENCY.rotation beside the key). Every check that needs no
    passphrase first, among them that no statement is already there: one not applied yet is
    never overwritten (the next would be signed by a key the roster does not list yet).

    The key file is written first and the statement second: a run killed between the two
    leaves new keys (the old secrets still held) and no statement, never a statement for keys
    no file holds; ``remake_statement`` writes it then. If the statement cannot be written the
    key file is put back as it was."""
    if not (enc or sign):
        raise UsageError(
            "nothing to rotate", hint="leave --enc on (the default), or give --sign, or both"
        )
    problem = grace_problem(grace_ms)
    if problem is not None:
        raise UsageError(problem, hint="give --grace between 1h and 90d (default 7d)")
    data = read_key_file(path)
    header = read_keyfile_header(data)
    statement_path = _statement_path(path, header.agency_id, out)
    at = _now_ms() if now_ms is None else now_ms
    passphrase = ask_passphrase()
    # Nothing is destroyed here: this command does not know the roster, which may still list
    # a key whose grace is over (the openings that know it destroy what it allows).
    before = open_keyfile_keeping_all(data, passphrase).identity
    after = before.rotated(rng=os.urandom, now_ms=at, grace_ms=grace_ms, enc=enc, sign=sign)
    statement = make_rotation(before, after, created_ms=at, grace_ms=grace_ms)
    # A fresh salt: the Argon2id output an agent kept for the old file opens nothing new.
    sealed = seal_keyfile(after, passphrase, limits=header.limits, rng=os.urandom)
    write_atomic(path, sealed, secret=True)
    try:
        write_atomic(statement_path, statement, overwrite=False)
    except BaseException:
        write_atomic(path, data, secret=True)  # no rotation rather than one nobody can apply
        raise
    _warn_if_test_cost(path, header.limits)
    return RotationDone(
        agency_id=after.agency_id,
        key_path=str(path),
        statement_path=str(statement_path),
        rotated_enc=enc,
        rotated_sign=sign,
        kid_enc=after.kid_enc.hex(),
        kid_sig=after.kid_sig.hex(),
        fingerprint=after.fingerprint,
        created_ms=at,
        destroy_after_ms=at + grace_ms,
    )


def _statement_path(key_path: Path, agency_id: str, out: Path | None) -> Path:
    """Where the statement goes (``--out``, else AGENCY.rotation beside the key), after the
    checks that need no passphrase: not the key file, a directory that exists, and no file
    there yet (an earlier statement may not be applied: it is never overwritten)."""
    statement_path = out if out is not None else key_path.with_name(f"{agency_id}.rotation")
    if statement_path.resolve() == key_path.resolve():
        raise UsageError("--out is the key file itself", hint="choose another --out file")
    if not statement_path.parent.is_dir():
        raise InputError(
            f"directory {str(statement_path.parent)!r} does not exist",
            hint="create it first, or give --out another file",
        )
    if statement_path.exists() or statement_path.is_symlink():
        raise InputError(
            f"{str(statement_path)!r} already exists: a rotation statement not applied yet is "
            "never overwritten",
            hint=f"if the coordinators have not applied it, send {statement_path.name} to them "
            "first; then move it away (or give --out another file) and run this again",
        )
    return statement_path


def remake_statement(
    path: Path, *, ask_passphrase: Callable[[], bytes], out: Path | None = None
) -> RotationDone:
    """``keys rotate --statement-only``: the statement of the newest rotation the key file
    records, written again (the same bytes: same time, grace and keys, and Ed25519 signatures
    are deterministic), for a ``keys rotate`` that died after writing the key file, or a
    statement lost before the coordinators applied it. Signed with the replaced signing key,
    which the file holds until the roster lists the new one. Never overwrites a file."""
    data = read_key_file(path)
    header = read_keyfile_header(data)
    statement_path = _statement_path(path, header.agency_id, out)
    identity = open_keyfile_keeping_all(data, ask_passphrase()).identity
    retired = identity.retired_secrets()
    rotated_ms = max((r.not_after_ms for r in retired), default=0)
    last = [r for r in retired if r.not_after_ms == rotated_ms]
    grace_ms = last[0].destroy_after_ms - rotated_ms if last else 0
    if rotated_ms == 0 or grace_problem(grace_ms) is not None:
        raise InputError(
            f"the key file {str(path)!r} records no rotation whose statement can be made "
            "(never rotated, or the replaced secrets are already destroyed)",
            hint="to replace the keys, run 'tfshare keys rotate' (without --statement-only)",
        )
    old_sign = next((r.public_key for r in last if r.kind == "sign"), None)
    newest = identity.with_signing_key(identity.sign_keys_held[0])
    before = newest if old_sign is None else newest.with_signing_key(old_sign)
    statement = make_rotation(before, newest, created_ms=rotated_ms, grace_ms=grace_ms)
    write_atomic(statement_path, statement, overwrite=False)
    _warn_if_test_cost(path, header.limits)
    return RotationDone(
        agency_id=newest.agency_id,
        key_path=str(path),
        statement_path=str(statement_path),
        rotated_enc=any(r.kind == "enc" for r in last),
        rotated_sign=old_sign is not None,
        kid_enc=newest.kid_enc.hex(),
        kid_sig=newest.kid_sig.hex(),
        fingerprint=newest.fingerprint,
        created_ms=rotated_ms,
        destroy_after_ms=rotated_ms + grace_ms,
    )
