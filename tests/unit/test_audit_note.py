"""C2SP signed notes and tlog checkpoints (tfshare.audit.note): the published vectors, byte for
byte, and every way a note, a key string or a checkpoint can be refused."""

from __future__ import annotations

import base64
import hashlib
import json
import pickle
from pathlib import Path
from typing import Any, Final

import pytest

from tfshare.audit.merkle import EMPTY_ROOT, MAX_TREE_SIZE
from tfshare.audit.merkle import root as merkle_root
from tfshare.audit.note import (
    MAX_SIGNATURES,
    Checkpoint,
    NoteCode,
    NoteError,
    NoteSigner,
    NoteVerifier,
    OpenedNote,
    checkpoint_origin,
    is_key_name,
    key_id,
    open_checkpoint,
    open_note,
    sign_checkpoint,
    sign_note,
)
from tfshare.audit.tree import MemorySubtreeStore, MerkleLog
from tfshare.errors import ExitCode, TrustError

VECTORS: Final[dict[str, Any]] = json.loads(
    (Path(__file__).parents[1] / "vectors" / "rfc6962.json").read_text()
)
KATS: Final[list[dict[str, Any]]] = VECTORS["signed_note_kats"]["cases"]
ORIGIN: Final = "tfshare/nl-north/audit"
LOG_KEY: Final = NoteSigner(ORIGIN, hashlib.sha256(b"test log key").digest())
WITNESS: Final = NoteSigner("witness.example/police", hashlib.sha256(b"test witness").digest())
TEXT: Final = "tfshare/nl-north/audit\n3\n" + base64.b64encode(bytes(32)).decode() + "\n"


def kat_note(case: dict[str, Any]) -> bytes:
    text: str = case["text"]
    line: str = case["signature_line"]
    return (text + "\n" + line + "\n").encode()


def refused(note: bytes, verifiers: list[NoteVerifier]) -> str | None:
    """The code open_note refuses ``note`` with (the test fails if it is accepted)."""
    with pytest.raises(NoteError) as excinfo:
        open_note(note, verifiers)
    return excinfo.value.code


def sig_line(name: str, raw: bytes) -> bytes:
    return f"\u2014 {name} {base64.b64encode(raw).decode()}\n".encode()


# --- the published vectors ---------------------------------------------------------------------


@pytest.mark.parametrize("case", KATS, ids=lambda c: c["vkey"].split("+")[0])
def test_signed_note_vector_verifies(case: dict[str, Any]) -> None:
    """Each vector note opens with its verifier key and names that key as the signer."""
    verifier = NoteVerifier.parse(case["vkey"])
    opened = open_note(kat_note(case), [verifier])
    assert opened == OpenedNote(case["text"], (verifier.name,))
    text, names = opened  # also unpacks as (text, verified_names)
    assert text == case["text"]
    assert names == (verifier.name,)


@pytest.mark.parametrize("case", KATS, ids=lambda c: c["vkey"].split("+")[0])
def test_verifier_key_vector_round_trips_and_has_the_spec_key_id(case: dict[str, Any]) -> None:
    """format(parse(vkey)) == vkey; key id = SHA-256(name || 0x0A || 0x01 || pk)[:4]."""
    verifier = NoteVerifier.parse(case["vkey"])
    assert verifier.format() == case["vkey"]
    name, hex8, key64 = case["vkey"].split("+", 2)
    raw = base64.b64decode(key64)
    assert raw[0] == 0x01
    assert verifier.public_key == raw[1:]
    expected = hashlib.sha256(name.encode() + b"\n\x01" + raw[1:]).digest()[:4]
    assert verifier.key_id == expected == bytes.fromhex(hex8) == key_id(name, raw[1:])
    # The signature line carries the same key id in front of the 64-byte signature.
    sig = base64.b64decode(case["signature_line"].rsplit(" ", 1)[1])
    assert sig[:4] == verifier.key_id
    assert len(sig) == 68


def test_signer_key_vector_resigns_byte_for_byte() -> None:
    """The published test signer key re-creates the vector's signature line exactly."""
    (case,) = [c for c in KATS if "public_test_signer_key" in c]
    signer = NoteSigner.parse(case["public_test_signer_key"])
    assert signer.verifier == NoteVerifier.parse(case["vkey"])
    assert sign_note(case["text"], [signer]) == kat_note(case)


def test_vector_notes_refused_by_the_wrong_key() -> None:
    """A vector note checked only against another vector's key: no known signature."""
    a, b = KATS[0], KATS[2]
    assert refused(kat_note(a), [NoteVerifier.parse(b["vkey"])]) == NoteCode.E_NOTE_UNKNOWN_KEY


def test_two_vector_signatures_on_one_text_both_verify() -> None:
    """PeterNeumann and EnochRoot signed the same text: one note carrying both lines."""
    peter, enoch = KATS[1], KATS[2]
    assert peter["text"] == enoch["text"]
    note = (
        peter["text"] + "\n" + peter["signature_line"] + "\n" + enoch["signature_line"] + "\n"
    ).encode()
    verifiers = [NoteVerifier.parse(peter["vkey"]), NoteVerifier.parse(enoch["vkey"])]
    assert open_note(note, verifiers).verified_names == ("PeterNeumann", "EnochRoot")
    assert open_note(note, verifiers[1:]).verified_names == ("EnochRoot",)


# --- signing and opening -----------------------------------------------------------------------


def test_sign_note_layout() -> None:
    """text, a blank line, then '— name base64(keyid || sig)' per signer, in order."""
    note = sign_note(TEXT, [LOG_KEY, WITNESS])
    text, blank_and_sigs = note.split(b"\n\n", 1)
    assert text + b"\n" == TEXT.encode()
    lines = blank_and_sigs.split(b"\n")
    assert lines[-1] == b""
    assert lines[0].startswith(f"\u2014 {ORIGIN} ".encode())
    assert lines[1].startswith(b"\xe2\x80\x94 witness.example/police ")
    raw = base64.b64decode(lines[0].split(b" ")[2])
    assert raw[:4] == LOG_KEY.key_id
    assert LOG_KEY.verifier.verify(TEXT.encode(), raw[4:])
    assert open_note(note, [LOG_KEY.verifier, WITNESS.verifier]).verified_names == (
        ORIGIN,
        "witness.example/police",
    )


def test_signing_is_deterministic() -> None:
    """Ed25519 (RFC 8032) signs the same text identically every time."""
    assert sign_note(TEXT, [LOG_KEY]) == sign_note(TEXT, [LOG_KEY])


@pytest.mark.parametrize(
    "text",
    [
        "\n",
        "one line\n",
        "blank lines\n\ninside\n\n",
        "— looks like a signature line\n",
        "unicode: straße, 東京, \u2014, \x7f\n",
    ],
)
def test_texts_round_trip(text: str) -> None:
    """Any valid text (blank lines, em dashes, non-ASCII) comes back exactly."""
    note = sign_note(text, [LOG_KEY])
    assert open_note(note, [LOG_KEY.verifier]) == (text, (ORIGIN,))


@pytest.mark.parametrize(
    "text", ["", "no newline", "tab\there\n", "cr\r\n", "nul\x00\n", "esc\x1b\n", "\ud800\n"]
)
def test_invalid_texts_are_not_signed(text: str) -> None:
    """No final newline, a control character or a lone surrogate: E_NOTE_MALFORMED."""
    with pytest.raises(NoteError) as excinfo:
        sign_note(text, [LOG_KEY])
    assert excinfo.value.code == NoteCode.E_NOTE_MALFORMED


def test_signer_list_must_be_non_empty_distinct_and_bounded() -> None:
    """No signer, the same key twice, or more than MAX_SIGNATURES signers are refused."""
    with pytest.raises(NoteError) as excinfo:
        sign_note(TEXT, [])
    assert excinfo.value.code == NoteCode.E_NOTE_MALFORMED
    with pytest.raises(NoteError) as excinfo:
        sign_note(TEXT, [LOG_KEY, WITNESS, LOG_KEY])
    assert excinfo.value.code == NoteCode.E_NOTE_MALFORMED
    many = [NoteSigner(f"w{i}", hashlib.sha256(bytes([i])).digest()) for i in range(101)]
    with pytest.raises(NoteError) as excinfo:
        sign_note(TEXT, many)
    assert excinfo.value.code == NoteCode.E_NOTE_TOO_MANY_SIGS


def test_unknown_signatures_are_ignored_when_a_known_one_verifies() -> None:
    """A witness's signature we have no key for is skipped, not trusted, not an error."""
    note = sign_note(TEXT, [WITNESS, LOG_KEY])
    assert open_note(note, [LOG_KEY.verifier]) == (TEXT, (ORIGIN,))


def test_only_unknown_signatures_is_refused() -> None:
    """No signature from a known key: E_NOTE_UNKNOWN_KEY, also with no verifiers at all."""
    note = sign_note(TEXT, [WITNESS])
    assert refused(note, [LOG_KEY.verifier]) == NoteCode.E_NOTE_UNKNOWN_KEY
    assert refused(note, []) == NoteCode.E_NOTE_UNKNOWN_KEY


def test_same_name_other_key_id_is_an_unknown_key() -> None:
    """A line with a known name but another key id (a rotated key) is ignored, not failed."""
    other = NoteSigner(ORIGIN, hashlib.sha256(b"another key").digest())
    assert other.key_id != LOG_KEY.key_id
    note = sign_note(TEXT, [other])
    assert refused(note, [LOG_KEY.verifier]) == NoteCode.E_NOTE_UNKNOWN_KEY


def test_same_key_id_other_name_is_an_unknown_key() -> None:
    """A line with a known key id under another name is ignored (the pair names the key)."""
    note = sign_note(TEXT, [LOG_KEY])
    head, sigs = note.rsplit(b"\n\n", 1)
    renamed = head + b"\n\n" + sigs.replace(ORIGIN.encode(), b"tfshare/other/audit")
    assert refused(renamed, [LOG_KEY.verifier]) == NoteCode.E_NOTE_UNKNOWN_KEY


def test_altered_text_is_a_bad_signature() -> None:
    """Changing the signed text makes the known key's signature fail: E_NOTE_BAD_SIG."""
    note = sign_note(TEXT, [LOG_KEY])
    altered = note.replace(b"\n3\n", b"\n4\n", 1)
    assert refused(altered, [LOG_KEY.verifier]) == NoteCode.E_NOTE_BAD_SIG


def test_one_bad_known_signature_rejects_the_whole_note() -> None:
    """A good signature does not excuse a failing one from another known key."""
    good = sign_note(TEXT, [LOG_KEY])
    forged = sig_line(WITNESS.name, WITNESS.key_id + bytes(64))
    note = good + forged
    assert open_note(good, [LOG_KEY.verifier, WITNESS.verifier]).verified_names == (ORIGIN,)
    assert refused(note, [LOG_KEY.verifier, WITNESS.verifier]) == NoteCode.E_NOTE_BAD_SIG
    # Only because the witness key is known: unknown, the forged line is ignored.
    assert open_note(note, [LOG_KEY.verifier]).verified_names == (ORIGIN,)


def test_known_key_signature_of_wrong_length_is_a_bad_signature() -> None:
    """A known key id followed by a signature that is not 64 bytes fails verification."""
    note = TEXT.encode() + b"\n" + sig_line(ORIGIN, LOG_KEY.key_id + bytes(63))
    assert refused(note, [LOG_KEY.verifier]) == NoteCode.E_NOTE_BAD_SIG


def test_repeated_signature_lines_are_named_once() -> None:
    """The same good line twice verifies; the signer's name is reported once."""
    note = sign_note(TEXT, [LOG_KEY])
    line = note.rsplit(b"\n\n", 1)[1]
    assert open_note(note + line, [LOG_KEY.verifier]).verified_names == (ORIGIN,)


def test_signature_line_limit() -> None:
    """MAX_SIGNATURES (100, at least the 16 C2SP requires) lines are read; one more is not."""
    assert MAX_SIGNATURES >= 16
    note = sign_note(TEXT, [LOG_KEY])
    filler = sig_line("unknown.example/w", b"\x00\x00\x00\x01" + bytes(64))
    at_limit = note + filler * (MAX_SIGNATURES - 1)
    assert open_note(at_limit, [LOG_KEY.verifier]).verified_names == (ORIGIN,)
    assert refused(at_limit + filler, [LOG_KEY.verifier]) == NoteCode.E_NOTE_TOO_MANY_SIGS


def _good() -> bytes:
    return sign_note(TEXT, [LOG_KEY])


def _non_canonical_signature() -> bytes:
    """The good note with the unused low bits of its signature's last base64 digit set:
    the same signature bytes, spelled a second way (Go's decoder would accept it)."""
    head, line = _good().rsplit(b" ", 1)
    assert line.endswith(b"=\n")
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet.index(line[-3:-2])
    spelled = line[:-3] + alphabet[last | 0b11 : (last | 0b11) + 1] + b"=\n"
    assert spelled != line
    assert base64.b64decode(spelled[:-1]) == base64.b64decode(line[:-1])
    return head + b" " + spelled


MALFORMED: Final[dict[str, bytes]] = {
    "empty": b"",
    "no blank line": TEXT.encode() + _good().rsplit(b"\n\n", 1)[1],
    "no signature lines": TEXT.encode() + b"\n",
    "signatures without final newline": _good()[:-1],
    "hyphen instead of em dash": _good().replace("\u2014".encode(), b"-"),
    "em dash without space": _good().replace("\u2014 ".encode(), "\u2014".encode()),
    "no space before signature": _good().replace(f" {ORIGIN} ".encode(), f" {ORIGIN}".encode()),
    "two spaces before signature": _good().replace(f"{ORIGIN} ".encode(), f"{ORIGIN}  ".encode()),
    "empty signature": TEXT.encode() + b"\n\xe2\x80\x94 name \n",
    "not base64": TEXT.encode() + b"\n\xe2\x80\x94 name !!!!\n",
    "base64 without padding": _good().replace(b"=\n", b"\n"),
    "non-canonical base64": TEXT.encode() + b"\n\xe2\x80\x94 name AAAAAAB=\n",
    "non-canonical spelling of a good signature": _non_canonical_signature(),
    "signature of 4 bytes": TEXT.encode() + b"\n" + sig_line("name", LOG_KEY.key_id),
    "name with plus": TEXT.encode() + b"\n" + sig_line("a+b", LOG_KEY.key_id + bytes(64)),
    "name with nbsp": TEXT.encode() + b"\n" + sig_line("a\u00a0b", LOG_KEY.key_id + bytes(64)),
    "blank line after signatures": _good() + b"\n",
    "invalid UTF-8": _good().replace(b"audit", b"aud\xffit", 1),
    "overlong UTF-8": _good().replace(b"/", b"\xc0\xaf", 1),
    "UTF-8 surrogate": _good().replace(b"audit", b"aud\xed\xa0\x80it", 1),
    "carriage return": _good().replace(b"\n", b"\r\n", 1),
    "tab in text": _good().replace(b"/", b"\t", 1),
    "nul": _good().replace(b"/", b"\x00", 1),
}


@pytest.mark.parametrize("note", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_notes_are_refused(note: bytes) -> None:
    """Each malformation is refused with E_NOTE_MALFORMED before any key is consulted."""
    assert refused(note, [LOG_KEY.verifier]) == NoteCode.E_NOTE_MALFORMED


def test_del_character_is_allowed() -> None:
    """C2SP forbids only controls below U+0020 (other than newline); U+007F is text."""
    assert open_note(sign_note("del\x7f\n", [LOG_KEY]), [LOG_KEY.verifier]).text == "del\x7f\n"


def test_conflicting_verifiers_are_a_configuration_error() -> None:
    """Two trusted keys with the same name and key id but different keys are refused."""
    real = LOG_KEY.verifier
    # Forge a verifier with the same name and id but another key, bypassing the id check.
    twin = object.__new__(NoteVerifier)
    for field, value in (("name", real.name), ("key_id", real.key_id), ("public_key", bytes(32))):
        object.__setattr__(twin, field, value)
    assert refused(_good(), [real, twin]) == NoteCode.E_NOTE_KEY
    assert open_note(_good(), [real, real]).verified_names == (ORIGIN,)


def test_note_error_is_a_trust_error() -> None:
    """NoteError belongs to the project's error family (exit code TRUST) with a hint."""
    with pytest.raises(NoteError) as excinfo:
        open_note(b"", [])
    assert isinstance(excinfo.value, TrustError)
    assert excinfo.value.exit_code == ExitCode.TRUST
    assert excinfo.value.note_code is NoteCode.E_NOTE_MALFORMED
    assert excinfo.value.hint


# --- key strings -------------------------------------------------------------------------------

VKEY: Final = KATS[0]["vkey"]
SKEY: Final = next(c["public_test_signer_key"] for c in KATS if "public_test_signer_key" in c)


def _vkey_with(key: bytes, name: str = "example.com/foo") -> str:
    return f"{name}+{key_id(name, key[1:]).hex()}+{base64.b64encode(key).decode()}"


BAD_VKEYS: Final[dict[str, str]] = {
    "empty": "",
    "name only": "example.com/foo",
    "no key": "example.com/foo+530d903a",
    "empty name": "+530d903a+" + VKEY.split("+", 2)[2],
    "name with space": _vkey_with(b"\x01" + bytes(32), "a b"),
    "short key id": VKEY.replace("+530d903a+", "+530d903+"),
    "long key id": VKEY.replace("+530d903a+", "+530d903a0+"),
    "non-hex key id": VKEY.replace("+530d903a+", "+530d903g+"),
    "key id with sign": VKEY.replace("+530d903a+", "+-30d903a+"),
    "wrong key id": VKEY.replace("+530d903a+", "+530d903b+"),
    "uppercase name changes the id": VKEY.replace("example.com/foo", "Example.com/foo"),
    "not base64": "example.com/foo+530d903a+!!!",
    "altered key": VKEY[:-1] + ("l" if VKEY[-1] != "l" else "m"),
    "non-canonical base64": "example.com/foo+00000000+AR==",
    "cosignature type 0x04": _vkey_with(b"\x04" + bytes(32)),
    "short key": _vkey_with(b"\x01" + bytes(31)),
    "long key": _vkey_with(b"\x01" + bytes(33)),
    "type byte only": "example.com/foo+00000000+AQ==",
    "empty key": "example.com/foo+00000000+",
    "non-ascii base64": "example.com/foo+530d903a+\u00e9",
}


@pytest.mark.parametrize("vkey", BAD_VKEYS.values(), ids=BAD_VKEYS.keys())
def test_malformed_verifier_keys_are_refused(vkey: str) -> None:
    """Each malformed verifier key string is refused with E_NOTE_KEY."""
    with pytest.raises(NoteError) as excinfo:
        NoteVerifier.parse(vkey)
    assert excinfo.value.code == NoteCode.E_NOTE_KEY


def test_uppercase_hex_key_id_is_accepted() -> None:
    """Go's strconv.ParseUint accepts upper-case hex; so do we (formatting is lower-case)."""
    upper = VKEY.replace("+530d903a+", "+530D903A+")
    assert NoteVerifier.parse(upper) == NoteVerifier.parse(VKEY)


BAD_SKEYS: Final[dict[str, str]] = {
    "verifier key": KATS[1]["vkey"],
    "lowercase prefix": SKEY.replace("PRIVATE+KEY", "private+key"),
    "missing KEY": SKEY.replace("PRIVATE+KEY+", "PRIVATE+"),
    "wrong key id": SKEY.replace("+c74f20a3+", "+c74f20a4+"),
    "wrong name": SKEY.replace("PeterNeumann", "PeterNeuman"),
    "short seed": "PRIVATE+KEY+PeterNeumann+c74f20a3+" + base64.b64encode(bytes(32)).decode(),
}


@pytest.mark.parametrize("skey", BAD_SKEYS.values(), ids=BAD_SKEYS.keys())
def test_malformed_signer_keys_are_refused(skey: str) -> None:
    """Each malformed signer key string is refused with E_NOTE_KEY."""
    with pytest.raises(NoteError) as excinfo:
        NoteSigner.parse(skey)
    assert excinfo.value.code == NoteCode.E_NOTE_KEY


def test_verifier_constructor_checks_the_key_id() -> None:
    """NoteVerifier(name, id, pk) refuses an id that is not the key's."""
    with pytest.raises(NoteError) as excinfo:
        NoteVerifier(ORIGIN, b"\x00\x00\x00\x00", LOG_KEY.verifier.public_key)
    assert excinfo.value.code == NoteCode.E_NOTE_KEY
    with pytest.raises(NoteError) as excinfo:
        NoteVerifier.from_public_key("bad name", LOG_KEY.verifier.public_key)
    assert excinfo.value.code == NoteCode.E_NOTE_KEY
    with pytest.raises(NoteError):
        NoteVerifier.from_public_key(ORIGIN, bytes(31))
    assert NoteVerifier.parse(LOG_KEY.verifier.format()) == LOG_KEY.verifier


def test_signer_constructor_checks_name_and_seed() -> None:
    """A signer needs a valid key name and a 32-byte seed."""
    for name, seed in (("", bytes(32)), ("a+b", bytes(32)), ("a b", bytes(32)), ("ok", bytes(31))):
        with pytest.raises(NoteError) as excinfo:
            NoteSigner(name, seed)
        assert excinfo.value.code == NoteCode.E_NOTE_KEY


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("example.com/foo", True),
        ("tfshare/nl-north/audit", True),
        ("PeterNeumann", True),
        ("東京", True),
        ("", False),
        ("a b", False),
        ("a+b", False),
        ("a\tb", False),
        ("a\u2003b", False),  # em space
        ("a\u3000b", False),  # ideographic space
        ("a\u0085b", False),  # next line
        ("a\x00b", False),
    ],
)
def test_key_names(name: str, valid: bool) -> None:
    """Names: non-empty, no Unicode space, no '+', no control characters."""
    assert is_key_name(name) is valid


def test_signer_repr_and_pickle_reveal_no_secret() -> None:
    """repr names the key only; pickling a signer is refused."""
    seed = hashlib.sha256(b"test log key").digest()
    text = repr(LOG_KEY)
    assert ORIGIN in text
    assert LOG_KEY.key_id.hex() in text
    assert seed.hex() not in text
    assert seed.hex()[:16] not in text
    with pytest.raises(TypeError, match="not pickled"):
        pickle.dumps(LOG_KEY)


# --- checkpoints -------------------------------------------------------------------------------

ROOT: Final = hashlib.sha256(b"some root").digest()


def test_checkpoint_format_is_the_c2sp_body() -> None:
    """origin, decimal size, base64 root, extension lines: each ending in a newline."""
    cp = Checkpoint(ORIGIN, 1234, ROOT, ("ext one", "ext two"))
    root64 = base64.b64encode(ROOT).decode()
    assert cp.format() == f"{ORIGIN}\n1234\n{root64}\next one\next two\n"
    assert Checkpoint(ORIGIN, 0, EMPTY_ROOT).format() == (
        f"{ORIGIN}\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"
    )


def test_checkpoint_parses_the_c2sp_example() -> None:
    """The example body from c2sp.org/tlog-checkpoint reads and formats back identically."""
    body = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    cp = Checkpoint.parse(body)
    assert cp.origin == "example.com/behind-the-sofa"
    assert cp.size == 20852163
    assert len(cp.root_hash) == 32
    assert cp.extensions == ()
    assert cp.format() == body


@pytest.mark.parametrize("size", [0, 1, 9, 10, 2**32, MAX_TREE_SIZE])
def test_checkpoint_round_trips(size: int) -> None:
    """parse(format(c)) == c for sizes from 0 to 2^64-1, with and without extensions."""
    for extensions in ((), ("a",), ("x y", "\u2014 z")):
        cp = Checkpoint(ORIGIN, size, ROOT, extensions)
        assert Checkpoint.parse(cp.format()) == cp


def test_checkpoint_extensions_become_a_tuple() -> None:
    """Extensions given as a list are stored as a tuple (the checkpoint is immutable)."""
    cp = Checkpoint(ORIGIN, 1, ROOT, ["ext"])  # type: ignore[arg-type]
    assert cp.extensions == ("ext",)
    assert hash(cp) == hash(Checkpoint(ORIGIN, 1, ROOT, ("ext",)))


def _body(origin: str = ORIGIN, size: str = "5", root: str | None = None, *ext: str) -> str:
    root64 = base64.b64encode(ROOT).decode() if root is None else root
    return "".join(f"{line}\n" for line in (origin, size, root64, *ext))


BAD_CHECKPOINTS: Final[dict[str, str]] = {
    "empty": "",
    "no final newline": _body()[:-1],
    "two lines": f"{ORIGIN}\n5\n",
    "empty origin": _body(""),
    "leading zero": _body(size="05"),
    "plus sign": _body(size="+5"),
    "minus": _body(size="-1"),
    "space": _body(size=" 5"),
    "hex": _body(size="0x5"),
    "underscore": _body(size="1_000"),
    "arabic-indic digit": _body(size="\u0665"),
    "empty size": _body(size=""),
    "too large": _body(size=str(2**64)),
    "far too large": _body(size="9" * 5000),
    "short root": _body(root=base64.b64encode(bytes(31)).decode()),
    "long root": _body(root=base64.b64encode(bytes(33)).decode()),
    "unpadded root": _body(root=base64.b64encode(ROOT).decode().rstrip("=")),
    "urlsafe root": _body(root=base64.urlsafe_b64encode(b"\xff" * 32).decode()),
    "non-canonical root": _body(root=base64.b64encode(ROOT).decode()[:-2] + "V="),
    "empty root": _body(root=""),
    "empty extension line": _body(ORIGIN, "5", None, "ext", ""),
    "blank line at end": _body() + "\n",
    "control in origin": _body("tfshare/\x01/audit"),
}


@pytest.mark.parametrize("text", BAD_CHECKPOINTS.values(), ids=BAD_CHECKPOINTS.keys())
def test_malformed_checkpoints_are_refused(text: str) -> None:
    """Each malformed checkpoint body is refused with E_CHECKPOINT_MALFORMED."""
    with pytest.raises(NoteError) as excinfo:
        Checkpoint.parse(text)
    assert excinfo.value.code == NoteCode.E_CHECKPOINT_MALFORMED


def test_checkpoint_constructor_refuses_bad_fields() -> None:
    """The constructor applies the same rules as parse."""
    bad: list[tuple[str, int, bytes, tuple[str, ...]]] = [
        ("", 1, ROOT, ()),
        ("a\nb", 1, ROOT, ()),
        (ORIGIN, -1, ROOT, ()),
        (ORIGIN, 2**64, ROOT, ()),
        (ORIGIN, 1, ROOT[:31], ()),
        (ORIGIN, 1, ROOT, ("",)),
        (ORIGIN, 1, ROOT, ("two\nlines",)),
    ]
    for origin, size, root_hash, ext in bad:
        with pytest.raises(NoteError) as excinfo:
            Checkpoint(origin, size, root_hash, ext)
        assert excinfo.value.code == NoteCode.E_CHECKPOINT_MALFORMED


def test_checkpoint_origin() -> None:
    """The origin of a task force's log is tfshare/<taskforce>/audit; names are checked."""
    assert checkpoint_origin("nl-north") == "tfshare/nl-north/audit"
    for bad in ("", "NL", "a/b", "a b", "a+b", "x" * 33):
        with pytest.raises(NoteError) as excinfo:
            checkpoint_origin(bad)
        assert excinfo.value.code == NoteCode.E_CHECKPOINT_ORIGIN


def test_signed_checkpoint_of_a_real_log_round_trips() -> None:
    """Sign the head of a MerkleLog; open_checkpoint gives back the same size and root."""
    log = MerkleLog(MemorySubtreeStore())
    for i in range(13):
        log.append(f"entry {i}".encode())
    cp = Checkpoint(checkpoint_origin("nl-north"), log.size, log.root())
    note = sign_checkpoint(cp, [LOG_KEY, WITNESS])
    opened, names = open_checkpoint(note, [LOG_KEY.verifier], origin=ORIGIN)
    assert opened == cp
    assert names == (ORIGIN,)
    assert opened.root_hash == log.root_at(13)


def test_checkpoint_of_another_log_is_refused() -> None:
    """A well-signed checkpoint whose origin is not the expected log: E_CHECKPOINT_ORIGIN."""
    other = NoteSigner("tfshare/be-south/audit", hashlib.sha256(b"other log").digest())
    note = sign_checkpoint(Checkpoint("tfshare/be-south/audit", 3, ROOT), [other])
    with pytest.raises(NoteError) as excinfo:
        open_checkpoint(note, [other.verifier], origin=ORIGIN)
    assert excinfo.value.code == NoteCode.E_CHECKPOINT_ORIGIN


def test_signed_note_that_is_not_a_checkpoint_is_refused() -> None:
    """A correctly signed note whose text is not a checkpoint body is refused as such."""
    note = sign_note("hello\n", [LOG_KEY])
    with pytest.raises(NoteError) as excinfo:
        open_checkpoint(note, [LOG_KEY.verifier], origin=ORIGIN)
    assert excinfo.value.code == NoteCode.E_CHECKPOINT_MALFORMED


def test_checkpoint_signature_is_checked_before_its_body() -> None:
    """An altered checkpoint is a bad signature, whatever its body says."""
    note = sign_checkpoint(Checkpoint(ORIGIN, 3, ROOT), [LOG_KEY])
    altered = note.replace(b"\n3\n", b"\n03\n", 1)
    with pytest.raises(NoteError) as excinfo:
        open_checkpoint(altered, [LOG_KEY.verifier], origin=ORIGIN)
    assert excinfo.value.code == NoteCode.E_NOTE_BAD_SIG


def test_docs_example_checkpoint_is_reproduced_byte_for_byte() -> None:
    """The worked example of docs/AUDIT-LOG.md: key string and signed checkpoint."""
    seed = hashlib.sha256(b"tfshare audit example key").digest()
    assert seed.hex() == "740394baf107ca92db17824ad88f722bf07528f582d5cf260948a3c56c9aefdd"
    signer = NoteSigner(checkpoint_origin("nl-north"), seed)
    assert signer.verifier.format() == (
        "tfshare/nl-north/audit+bbae6a25+AU8CMgoJMapIcUg0GKfTHU6AW1WQ5GwkklmSrMa24G3d"
    )
    leaves = [bytes.fromhex(x) for x in VECTORS["leaves_hex"]]
    cp = Checkpoint(ORIGIN, len(leaves), merkle_root(leaves))
    assert (
        sign_checkpoint(cp, [signer])
        == (
            "tfshare/nl-north/audit\n"
            "8\n"
            "XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n"
            "\n"
            "\u2014 tfshare/nl-north/audit u65qJTCoFkX03XoL/bHSgkvWQnWJ1pUCuNs5Z4xBw4tkyuZ6kghU"
            "+lBVqISQGPL1JHu2AZKEFV34qggJSkpcvvDl8gQ=\n"
        ).encode()
    )
    skey = (
        "PRIVATE+KEY+tfshare/nl-north/audit+bbae6a25+" + base64.b64encode(b"\x01" + seed).decode()
    )
    assert NoteSigner.parse(skey).verifier == signer.verifier
