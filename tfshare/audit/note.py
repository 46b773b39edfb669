"""C2SP signed notes with Ed25519, and C2SP tlog checkpoints: how audit tree heads are signed.

Owns: key names and key ids (SHA-256(name || 0x0A || 0x01 || pk)[:4]), the verifier key string
``name+hex8+base64(0x01||pk)`` and signer key string ``PRIVATE+KEY+name+hex8+base64(0x01||seed)``
(the formats of golang.org/x/mod/sumdb/note, so keys move between implementations),
``sign_note``/``open_note`` (c2sp.org/signed-note), and ``Checkpoint`` with its strict text form
``origin\\nsize\\nbase64(root)\\n[extension lines]`` (c2sp.org/tlog-checkpoint).

Every refusal is a ``NoteError`` whose ``code`` names the reason; hostile bytes raise nothing
else.

Never: accept a note without a verified signature from a known key, accept one where a known
key's signature fails, put a seed in a message or repr, or read the clock.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, NamedTuple, Protocol

from nacl import bindings

from tfshare.audit.merkle import HASH_SIZE, MAX_TREE_SIZE
from tfshare.encoding import is_name
from tfshare.errors import TrustError
from tfshare.keys import verify_signature

SIG_TYPE_ED25519: Final = 0x01
KEY_ID_SIZE: Final = 4
ED25519_KEY_SIZE: Final = 32
ED25519_SIG_SIZE: Final = 64
# c2sp.org/signed-note: verifiers MUST accept at least 16 signatures and SHOULD cap them; 100
# (as golang.org/x/mod does) leaves room for many witnesses and bounds the work per note.
MAX_SIGNATURES: Final = 100

_SIG_PREFIX: Final = "\u2014 "  # em dash, space
_SIG_PREFIX_BYTES: Final = _SIG_PREFIX.encode()
# ASCII control characters other than newline: forbidden anywhere in a note.
_CONTROL_RE: Final = re.compile(r"[\x00-\x09\x0b-\x1f]")
# Unicode White_Space (what Go's unicode.IsSpace accepts), the plus sign and control
# characters: none may appear in a key name.
_NAME_FORBIDDEN_RE: Final = re.compile(
    "[\x00-\x20+\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
)
_HEX8_RE: Final = re.compile(r"[0-9a-fA-F]{8}\Z")
_DECIMAL_RE: Final = re.compile(r"(0|[1-9][0-9]*)\Z")


class NoteCode(StrEnum):
    """Why a note, key or checkpoint was refused. Stable: callers and tests match on them."""

    E_NOTE_MALFORMED = "E_NOTE_MALFORMED"  # not a well-formed signed note (or note text)
    E_NOTE_TOO_MANY_SIGS = "E_NOTE_TOO_MANY_SIGS"  # more than MAX_SIGNATURES signature lines
    E_NOTE_UNKNOWN_KEY = "E_NOTE_UNKNOWN_KEY"  # no signature from any known key
    E_NOTE_BAD_SIG = "E_NOTE_BAD_SIG"  # a known key's signature does not verify
    E_NOTE_KEY = "E_NOTE_KEY"  # a key string or key name is malformed or inconsistent
    E_CHECKPOINT_MALFORMED = "E_CHECKPOINT_MALFORMED"  # note text is not a valid checkpoint
    E_CHECKPOINT_ORIGIN = "E_CHECKPOINT_ORIGIN"  # checkpoint of another log


_HINTS: Final = {
    NoteCode.E_NOTE_MALFORMED: (
        "a signed note is UTF-8 text ending in a newline, a blank line, then lines "
        "'\u2014 <key name> <base64>'; no control characters other than newline"
    ),
    NoteCode.E_NOTE_TOO_MANY_SIGS: f"a note may carry at most {MAX_SIGNATURES} signatures",
    NoteCode.E_NOTE_UNKNOWN_KEY: (
        "none of the signatures is from a key you trust: check that the log's verifier key "
        "is configured and current"
    ),
    NoteCode.E_NOTE_BAD_SIG: (
        "a signature from a trusted key does not verify: the note was altered or forged; "
        "do not use it, keep it and report it"
    ),
    NoteCode.E_NOTE_KEY: (
        "a verifier key reads 'name+hex8+base64', a signer key 'PRIVATE+KEY+name+hex8+base64'; "
        "names have no spaces or '+', and the key id must match the key"
    ),
    NoteCode.E_CHECKPOINT_MALFORMED: (
        "a checkpoint is the origin, the tree size in decimal without leading zeros and the "
        "base64 32-byte root hash, one per line, then optional non-empty extension lines"
    ),
    NoteCode.E_CHECKPOINT_ORIGIN: (
        "the checkpoint names another log: check the task force, and that you fetched this "
        "log's checkpoint"
    ),
}


class NoteError(TrustError):
    """A signed note, key string or checkpoint was refused; ``code`` is a ``NoteCode``."""

    def __init__(self, code: NoteCode, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint or _HINTS[code], code=code.value)
        self.note_code = code


# --- keys ------------------------------------------------------------------------------------


def is_key_name(name: str) -> bool:
    """True if ``name`` may name a note key: non-empty, no Unicode space, '+' or control."""
    return bool(name) and _NAME_FORBIDDEN_RE.search(name) is None


def key_id(name: str, public_key: bytes) -> bytes:
    """The 4-byte Ed25519 key id: SHA-256(name || 0x0A || 0x01 || public_key)[:4]."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([SIG_TYPE_ED25519]) + public_key).digest()[
        :KEY_ID_SIZE
    ]


def _b64decode_strict(text: str) -> bytes:
    """Standard base64 with padding, in its one canonical spelling; ValueError otherwise."""
    raw = base64.b64decode(text.encode("ascii"), validate=True)
    if base64.b64encode(raw).decode("ascii") != text:
        raise ValueError("non-canonical base64")
    return raw


def _key_error(message: str) -> NoteError:
    return NoteError(NoteCode.E_NOTE_KEY, message)


def _parse_key_fields(name: str, hex8: str, key64: str, what: str) -> tuple[bytes, bytes]:
    """Check the shared fields of verifier and signer keys; returns (key id, 32-byte key)."""
    if not is_key_name(name):
        raise _key_error(f"{what} has an invalid key name")
    if _HEX8_RE.match(hex8) is None:
        raise _key_error(f"{what} key id is not 8 hex digits")
    try:
        key = _b64decode_strict(key64)
    except (ValueError, UnicodeEncodeError):
        raise _key_error(f"{what} key is not canonical base64") from None
    if not key or key[0] != SIG_TYPE_ED25519:
        raise _key_error(f"{what} is not an Ed25519 (type 0x01) key")
    if len(key) != 1 + ED25519_KEY_SIZE:
        raise _key_error(f"{what} holds {len(key) - 1} key bytes, not 32")
    return bytes.fromhex(hex8), key[1:]


@dataclass(frozen=True, slots=True)
class NoteVerifier:
    """A public Ed25519 note key: its name, key id and 32-byte public key."""

    name: str
    key_id: bytes
    public_key: bytes

    def __post_init__(self) -> None:
        if not is_key_name(self.name):
            raise _key_error("invalid key name")
        if len(self.public_key) != ED25519_KEY_SIZE:
            raise _key_error(f"public key is {len(self.public_key)} bytes, not 32")
        if self.key_id != key_id(self.name, self.public_key):
            raise _key_error(f"key id does not match the key of {self.name!r}")

    @classmethod
    def from_public_key(cls, name: str, public_key: bytes) -> NoteVerifier:
        """The verifier for ``public_key`` under ``name`` (the key id is derived)."""
        if not is_key_name(name):
            raise _key_error("invalid key name")
        return cls(name, key_id(name, public_key), public_key)

    @classmethod
    def parse(cls, vkey: str) -> NoteVerifier:
        """Read ``name+hex8keyid+base64(0x01||pk)``; the key id must match the key."""
        parts = vkey.split("+", 2)
        if len(parts) != 3:
            raise _key_error("verifier key does not have the form name+keyid+key")
        name, hex8, key64 = parts
        kid, public_key = _parse_key_fields(name, hex8, key64, "verifier key")
        if kid != key_id(name, public_key):
            raise _key_error(f"verifier key id does not match the key of {name!r}")
        return cls(name, kid, public_key)

    def format(self) -> str:
        """The verifier key string ``name+hex8keyid+base64(0x01||pk)``."""
        key64 = base64.b64encode(bytes([SIG_TYPE_ED25519]) + self.public_key).decode("ascii")
        return f"{self.name}+{self.key_id.hex()}+{key64}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        """True if ``signature`` is this key's Ed25519 signature of ``message``."""
        return len(signature) == ED25519_SIG_SIZE and verify_signature(
            self.public_key, message, signature
        )


class NoteSigner:
    """A secret Ed25519 note key. Never printed: ``repr`` shows the name and key id only."""

    __slots__ = ("_secret_key", "verifier")

    def __init__(self, name: str, seed: bytes) -> None:
        if not is_key_name(name):
            raise _key_error("invalid key name")
        if len(seed) != ED25519_KEY_SIZE:
            raise _key_error(f"seed is {len(seed)} bytes, not 32")
        public_key, self._secret_key = bindings.crypto_sign_seed_keypair(seed)
        self.verifier = NoteVerifier.from_public_key(name, public_key)

    @classmethod
    def parse(cls, skey: str) -> NoteSigner:
        """Read ``PRIVATE+KEY+name+hex8keyid+base64(0x01||seed)``; the key id must match."""
        parts = skey.split("+", 4)
        if len(parts) != 5 or parts[0] != "PRIVATE" or parts[1] != "KEY":
            raise _key_error("signer key does not have the form PRIVATE+KEY+name+keyid+key")
        _, _, name, hex8, key64 = parts
        kid, seed = _parse_key_fields(name, hex8, key64, "signer key")
        signer = cls(name, seed)
        if signer.key_id != kid:
            raise _key_error(f"signer key id does not match the key of {name!r}")
        return signer

    @property
    def name(self) -> str:
        return self.verifier.name

    @property
    def key_id(self) -> bytes:
        return self.verifier.key_id

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``message`` (deterministic, RFC 8032)."""
        signed: bytes = bindings.crypto_sign(message, self._secret_key)
        return signed[:ED25519_SIG_SIZE]

    def __repr__(self) -> str:
        return f"NoteSigner(name={self.name!r}, key_id={self.key_id.hex()})"

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("a NoteSigner holds a secret key and is not pickled")


# --- signed notes ----------------------------------------------------------------------------


class OpenedNote(NamedTuple):
    """A note whose signatures checked out: its text and the names of the keys that signed."""

    text: str
    verified_names: tuple[str, ...]


def _malformed(message: str) -> NoteError:
    return NoteError(NoteCode.E_NOTE_MALFORMED, message)


def _check_text(text: str) -> bytes:
    """The UTF-8 of a valid note text: ends in newline, no other control characters."""
    if not text.endswith("\n"):
        raise _malformed("note text does not end with a newline")
    if _CONTROL_RE.search(text) is not None:
        raise _malformed("note text contains a control character other than newline")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise _malformed("note text is not valid Unicode (lone surrogate)") from None


class Signer(Protocol):
    """What signs a note: a key name, its key id and Ed25519. ``NoteSigner`` holds a seed;
    the audit service signs with the agency's identity key through the same interface."""

    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> bytes: ...

    def sign(self, message: bytes) -> bytes: ...


def sign_note(text: str, signers: Sequence[Signer]) -> bytes:
    """The signed note: ``text``, a blank line, one signature line per signer, in order."""
    message = _check_text(text)
    if not signers:
        raise _malformed("a signed note needs at least one signer")
    if len(signers) > MAX_SIGNATURES:
        raise NoteError(
            NoteCode.E_NOTE_TOO_MANY_SIGS, f"{len(signers)} signers, at most {MAX_SIGNATURES}"
        )
    seen: set[tuple[str, bytes]] = set()
    lines: list[str] = []
    for signer in signers:
        ident = (signer.name, signer.key_id)
        if ident in seen:
            raise _malformed(f"key {signer.name!r} ({signer.key_id.hex()}) is listed twice")
        seen.add(ident)
        sig64 = base64.b64encode(signer.key_id + signer.sign(message)).decode("ascii")
        lines.append(f"{_SIG_PREFIX}{signer.name} {sig64}\n")
    return message + b"\n" + "".join(lines).encode("utf-8")


def _verifier_index(verifiers: Iterable[NoteVerifier]) -> dict[tuple[str, bytes], NoteVerifier]:
    known: dict[tuple[str, bytes], NoteVerifier] = {}
    for verifier in verifiers:
        ident = (verifier.name, verifier.key_id)
        other = known.setdefault(ident, verifier)
        if other.public_key != verifier.public_key:
            # Two trusted keys that a signature line cannot tell apart: a configuration error.
            raise _key_error(
                f"two verifier keys share the name {verifier.name!r} and id {verifier.key_id.hex()}"
            )
    return known


class NoteLine(NamedTuple):
    """One signature line of a note: the key name and the decoded key id || signature."""

    name: str
    raw: bytes

    @property
    def key_id(self) -> bytes:
        return self.raw[:KEY_ID_SIZE]

    @property
    def signature(self) -> bytes:
        return self.raw[KEY_ID_SIZE:]


def split_note(note: bytes) -> tuple[bytes, list[NoteLine]]:
    """The signed text of a note (bytes, exactly as received) and its signature lines, read
    strictly but not verified. Raises ``NoteError`` (E_NOTE_MALFORMED, E_NOTE_TOO_MANY_SIGS)."""
    try:
        decoded = note.decode("utf-8")
    except UnicodeDecodeError:
        raise _malformed("note is not valid UTF-8") from None
    if _CONTROL_RE.search(decoded) is not None:
        raise _malformed("note contains a control character other than newline")
    # The text ends at the last blank line: the text may contain blank lines, signature lines
    # never are blank. Splitting the bytes keeps the signed message exactly as received.
    split = note.rfind(b"\n\n")
    if split < 0:
        raise _malformed("note has no blank line before its signatures")
    text, block = note[: split + 1], note[split + 2 :]
    if not block or not block.endswith(b"\n"):
        raise _malformed("note has no signature lines, or they do not end with a newline")
    lines = block[:-1].split(b"\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(
            NoteCode.E_NOTE_TOO_MANY_SIGS,
            f"note has {len(lines)} signature lines, at most {MAX_SIGNATURES}",
        )
    parsed: list[NoteLine] = []
    for number, line in enumerate(lines, start=1):
        if not line.startswith(_SIG_PREFIX_BYTES):
            raise _malformed(f"signature line {number} does not start with an em dash and space")
        name_bytes, space, sig64 = line[len(_SIG_PREFIX_BYTES) :].partition(b" ")
        name = name_bytes.decode("utf-8")  # valid: the whole note decoded
        if not space or not is_key_name(name) or not sig64:
            raise _malformed(f"signature line {number} is not '<name> <base64 signature>'")
        try:
            raw = _b64decode_strict(sig64.decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            raise _malformed(f"signature line {number} is not canonical base64") from None
        if len(raw) <= KEY_ID_SIZE:
            raise _malformed(f"signature line {number} is too short")
        parsed.append(NoteLine(name, raw))
    return text, parsed


def format_note_line(name: str, raw: bytes) -> bytes:
    """One signature line: em dash, space, key name, space, base64(raw), newline."""
    if not is_key_name(name):
        raise _key_error("invalid key name")
    return f"{_SIG_PREFIX}{name} {base64.b64encode(raw).decode('ascii')}\n".encode()


def open_note(note: bytes, verifiers: Iterable[NoteVerifier]) -> OpenedNote:
    """Verify a signed note against the trusted ``verifiers``; returns its text and signers.

    Signatures from unknown keys (another name, or the same name with another key id) are
    ignored, as c2sp.org/signed-note requires; every signature from a known key must verify,
    and at least one must be present.
    """
    known = _verifier_index(verifiers)
    text, lines = split_note(note)
    verified: list[str] = []
    for line in lines:
        verifier = known.get((line.name, line.key_id))
        if verifier is None:
            continue  # an unknown key (a witness, a rotated key): ignored, never trusted
        if not verifier.verify(text, line.signature):
            raise NoteError(
                NoteCode.E_NOTE_BAD_SIG,
                f"signature by {line.name!r} ({verifier.key_id.hex()}) does not verify",
            )
        if line.name not in verified:
            verified.append(line.name)
    if not verified:
        raise NoteError(NoteCode.E_NOTE_UNKNOWN_KEY, "note carries no signature from a known key")
    return OpenedNote(text.decode("utf-8"), tuple(verified))


# --- checkpoints -----------------------------------------------------------------------------


def checkpoint_origin(taskforce: str) -> str:
    """The origin line of a task force's audit log: ``tfshare/<taskforce>/audit``."""
    if not is_name(taskforce):
        raise NoteError(NoteCode.E_CHECKPOINT_ORIGIN, f"{taskforce!r} is not a task-force name")
    return f"tfshare/{taskforce}/audit"


def _checkpoint_error(message: str) -> NoteError:
    return NoteError(NoteCode.E_CHECKPOINT_MALFORMED, message)


def _check_line(value: str, what: str) -> None:
    if not value:
        raise _checkpoint_error(f"checkpoint {what} is empty")
    if "\n" in value or _CONTROL_RE.search(value) is not None:
        raise _checkpoint_error(f"checkpoint {what} contains a newline or control character")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A C2SP tlog-checkpoint body: the log's origin, tree size and root hash."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_line(self.origin, "origin")
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise _checkpoint_error(f"tree size {self.size} is outside 0..2^64-1")
        if len(self.root_hash) != HASH_SIZE:
            raise _checkpoint_error(f"root hash is {len(self.root_hash)} bytes, not 32")
        extensions = tuple(self.extensions)
        for line in extensions:
            _check_line(line, "extension line")
        object.__setattr__(self, "extensions", extensions)

    def format(self) -> str:
        """The note text: origin, size, base64 root and extension lines, each ending in \\n."""
        root64 = base64.b64encode(self.root_hash).decode("ascii")
        head = f"{self.origin}\n{self.size}\n{root64}\n"
        return head + "".join(f"{line}\n" for line in self.extensions)

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Read a checkpoint note text strictly; ``parse(c.format()) == c``."""
        if not text.endswith("\n"):
            raise _checkpoint_error("checkpoint text does not end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise _checkpoint_error("checkpoint has fewer than three lines")
        origin, size_line, root_line, *extensions = lines
        # 20 digits hold 2^64-1; the length check also keeps int() away from huge strings.
        if len(size_line) > 20 or _DECIMAL_RE.match(size_line) is None:
            raise _checkpoint_error("tree size is not a decimal number without leading zeros")
        try:
            root_hash = _b64decode_strict(root_line)
        except (ValueError, UnicodeEncodeError):
            raise _checkpoint_error("root hash is not canonical base64") from None
        return cls(origin, int(size_line), root_hash, tuple(extensions))


def sign_checkpoint(checkpoint: Checkpoint, signers: Sequence[Signer]) -> bytes:
    """The checkpoint as a signed note (the log's key name SHOULD be its origin)."""
    return sign_note(checkpoint.format(), signers)


def open_checkpoint(
    note: bytes, verifiers: Iterable[NoteVerifier], *, origin: str
) -> tuple[Checkpoint, tuple[str, ...]]:
    """Verify a signed checkpoint of the log ``origin``; returns it and the verified signers."""
    opened = open_note(note, verifiers)
    checkpoint = Checkpoint.parse(opened.text)
    if checkpoint.origin != origin:
        raise NoteError(
            NoteCode.E_CHECKPOINT_ORIGIN,
            f"checkpoint is for {checkpoint.origin!r}, expected {origin!r}",
        )
    return checkpoint, opened.verified_names
