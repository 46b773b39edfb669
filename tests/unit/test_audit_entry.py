"""Audit log entries (tfshare.audit.entry): the exact bytes, round trips, and every refusal.

The entry bytes are what the Merkle tree hashes, so the encoding is pinned against a hand-built
msgpack array, and anything that is not exactly a canonical, valid entry must be refused with
``EntryError`` (code E_ENTRY_MALFORMED) on decode and on encode alike.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

import msgspec
import pytest

from tfshare.audit import merkle
from tfshare.audit.entry import (
    ENTRY_TYPES,
    MAX_ENTRY_SIZE,
    RECEIPT_OF,
    RELATIONS,
    EntryError,
    LogEntry,
    decode_entry,
    encode_entry,
    entry_leaf_hash,
)
from tfshare.envelope import Relation
from tfshare.errors import ExitCode, TrustError

MSG: Final = bytes(range(16))
PARENT: Final = bytes(range(100, 116))
ENV: Final = hashlib.sha256(b"envelope").digest()
PARENT_ENV: Final = hashlib.sha256(b"parent envelope").digest()
KID: Final = b"kid-0001"


def make(entry_type: str = "message", **changes: Any) -> LogEntry:
    fields: dict[str, Any] = {
        "entry_type": entry_type,
        "msg_id": MSG,
        "sender": "police",
        "sender_kid": KID,
        "taskforce": "nl-north",
        "channel": "ops",
        "ts_ms": 1_795_000_000_000,
        "env_sha256": ENV,
        "refs": [(1, PARENT, PARENT_ENV)],
        "observed_ms": 1_795_000_000_500,
    }
    if entry_type == "receipt":
        fields["refs"] = [(RECEIPT_OF, PARENT, PARENT_ENV)]
    elif entry_type == "retraction":
        fields["refs"] = [(5, PARENT, PARENT_ENV)]
    elif entry_type in ("roster", "schema", "key_event"):
        fields.update(sender="coord,police", sender_kid=b"", channel="", refs=[])
    fields.update(changes)
    return LogEntry(**fields)


def as_array(entry: LogEntry) -> list[Any]:
    return [getattr(entry, name) for name in entry.__struct_fields__]


# --- shape and bytes ---------------------------------------------------------------------------


def test_vocabularies_match_the_design_and_the_envelope() -> None:
    assert ENTRY_TYPES == ("message", "receipt", "roster", "schema", "key_event", "retraction")
    assert {number: name.upper() for number, name in RELATIONS.items()} == {
        relation.value: relation.name for relation in Relation
    }
    assert RECEIPT_OF == 0
    assert RECEIPT_OF not in RELATIONS
    assert LogEntry.__struct_fields__ == (
        "entry_type", "msg_id", "sender", "sender_kid", "taskforce", "channel", "ts_ms",
        "env_sha256", "refs", "observed_ms",
    )  # fmt: skip


def test_encoding_is_the_plain_ten_element_msgpack_array() -> None:
    entry = make()
    data = encode_entry(entry)
    assert data == msgspec.msgpack.encode(as_array(entry))
    assert data[0] == 0x9A  # fixarray of 10
    # A fixed golden prefix: another implementation must produce these bytes.
    assert data.startswith(bytes.fromhex("9aa76d657373616765c410") + MSG)


@pytest.mark.parametrize("entry_type", ENTRY_TYPES)
def test_every_entry_type_round_trips(entry_type: str) -> None:
    entry = make(entry_type)
    data = encode_entry(entry)
    assert decode_entry(data) == entry
    assert encode_entry(decode_entry(data)) == data


def test_receipt_with_any_channel_and_record_with_a_key_id_round_trip() -> None:
    for entry in (
        make("receipt", channel="receipts"),
        make("roster", sender_kid=KID, sender="coord"),
        make("message", refs=[]),
        make("message", refs=[(r, PARENT, PARENT_ENV) for r in range(1, 6)] * 3),
        make("message", ts_ms=0, observed_ms=2**53 - 1),
    ):
        assert decode_entry(encode_entry(entry)) == entry


def test_leaf_hash_is_the_rfc6962_leaf_hash_of_the_entry_bytes() -> None:
    data = encode_entry(make())
    assert entry_leaf_hash(data) == merkle.leaf_hash(data)
    assert entry_leaf_hash(data) == hashlib.sha256(b"\x00" + data).digest()


def test_a_change_in_any_field_changes_the_bytes() -> None:
    base = encode_entry(make())
    variants = [
        make(msg_id=PARENT),
        make(sender="ngo"),
        make(sender_kid=b"kid-0002"),
        make(taskforce="be-south"),
        make(channel="intel"),
        make(ts_ms=1),
        make(env_sha256=PARENT_ENV),
        make(refs=[(2, PARENT, PARENT_ENV)]),
        make(observed_ms=1),
    ]
    encoded = {encode_entry(entry) for entry in variants}
    assert len(encoded) == len(variants)
    assert base not in encoded


def test_entry_error_is_a_trust_error_with_its_code() -> None:
    with pytest.raises(EntryError) as caught:
        decode_entry(b"")
    assert isinstance(caught.value, TrustError)
    assert caught.value.code == "E_ENTRY_MALFORMED"
    assert caught.value.exit_code is ExitCode.TRUST
    assert caught.value.hint


# --- refusals: the same rules on encode and decode ---------------------------------------------

BAD: Final[list[tuple[str, LogEntry, str]]] = [
    ("unknown type", make(entry_type="gossip"), "entry_type"),
    ("short msg_id", make(msg_id=MSG[:15]), "msg_id is 15 bytes"),
    ("long msg_id", make(msg_id=MSG + b"x"), "msg_id is 17 bytes"),
    ("short kid", make(sender_kid=KID[:7]), "sender_kid is 7 bytes"),
    ("empty kid on a message", make(sender_kid=b""), "sender_kid is 0 bytes"),
    ("empty kid on a receipt", make("receipt", sender_kid=b""), "sender_kid"),
    ("short env hash", make(env_sha256=ENV[:31]), "env_sha256 is 31 bytes"),
    ("bad sender", make(sender="Police"), "sender"),
    ("several senders on a message", make(sender="police,ngo"), "sender"),
    ("empty sender part", make("roster", sender="coord,"), "sender"),
    ("bad taskforce", make(taskforce="nl.north"), "taskforce"),
    ("no channel on a message", make(channel=""), "channel"),
    ("bad channel", make(channel="ops*"), "channel"),
    ("negative ts", make(ts_ms=-1), "ts_ms"),
    ("ts beyond 2^53", make(ts_ms=2**53), "ts_ms"),
    ("bool observed", make(observed_ms=True), "observed_ms"),
    ("relation 7", make(refs=[(7, PARENT, PARENT_ENV)]), "relation"),
    ("receipt-of outside a receipt", make(refs=[(0, PARENT, PARENT_ENV)]), "receipt"),
    ("receipt without ref", make("receipt", refs=[]), "exactly one ref"),
    ("receipt with lineage", make("receipt", refs=[(1, PARENT, PARENT_ENV)]), "exactly one"),
    (
        "receipt with two refs",
        make("receipt", refs=[(0, PARENT, PARENT_ENV), (0, MSG, ENV)]),
        "exactly one",
    ),
    ("retraction retracting nothing", make("retraction", refs=[(3, PARENT, ENV)]), "retract"),
    ("short ref id", make(refs=[(1, PARENT[:15], PARENT_ENV)]), "refs[0] msg_id"),
    ("short ref hash", make(refs=[(1, PARENT, PARENT_ENV[:31])]), "refs[0] env_hash"),
    ("17 refs", make(refs=[(1, PARENT, PARENT_ENV)] * 17), "at most 16"),
]


@pytest.mark.parametrize(("case", "entry", "says"), BAD, ids=[case for case, _, _ in BAD])
def test_encode_refuses(case: str, entry: LogEntry, says: str) -> None:
    with pytest.raises(EntryError) as caught:
        encode_entry(entry)
    assert says in caught.value.message, case


@pytest.mark.parametrize(("case", "entry", "says"), BAD, ids=[case for case, _, _ in BAD])
def test_decode_refuses_the_same_entries(case: str, entry: LogEntry, says: str) -> None:
    # Bytes another implementation could have written: the raw array, unchecked.
    data = msgspec.msgpack.encode(as_array(entry))
    with pytest.raises(EntryError) as caught:
        decode_entry(data)
    assert caught.value.code == "E_ENTRY_MALFORMED", case


def test_encode_refuses_python_values_that_would_not_round_trip() -> None:
    for entry in (
        make(msg_id=bytearray(MSG)),
        make(refs=[[1, PARENT, PARENT_ENV]]),
        make(refs=((1, PARENT, PARENT_ENV),)),
        make(sender=b"police"),
    ):
        with pytest.raises(EntryError):
            encode_entry(entry)
    with pytest.raises(EntryError, match="expected a LogEntry"):
        encode_entry(as_array(make()))  # type: ignore[arg-type]


def test_decode_refuses_non_canonical_and_misshapen_bytes() -> None:
    entry = make(ts_ms=5)
    array = as_array(entry)
    good = encode_entry(entry)
    # ts_ms 5 as a uint16 where a positive fixint suffices: same value, other bytes.
    at = len(msgspec.msgpack.encode(array[:6]))  # same 1-byte array header as ten fields
    assert good[at] == 5
    wide = good[:at] + b"\xcd\x00\x05" + good[at + 1 :]
    assert msgspec.msgpack.decode(wide) == msgspec.msgpack.decode(good)
    cases = {
        "non-canonical integer": wide,
        "trailing byte": good + b"\x00",
        "truncated": good[:-1],
        "nine fields": msgspec.msgpack.encode(array[:9]),
        "eleven fields": msgspec.msgpack.encode([*array, ""]),
        "a map": msgspec.msgpack.encode(dict(zip(entry.__struct_fields__, array, strict=True))),
        "msg_id as str": msgspec.msgpack.encode([array[0], "x" * 16, *array[2:]]),
        "ts_ms as float": msgspec.msgpack.encode([*array[:6], 1.0, *array[7:]]),
        "ts_ms as nil": msgspec.msgpack.encode([*array[:6], None, *array[7:]]),
        "ref of two": msgspec.msgpack.encode([*array[:8], [[1, PARENT]], array[9]]),
        "invalid utf-8": good.replace(b"\xa6police", b"\xa6polic\xff"),
        "empty": b"",
        "too large": b"\x00" * (MAX_ENTRY_SIZE + 1),
    }
    for case, data in cases.items():
        with pytest.raises(EntryError) as caught:
            decode_entry(data)
        assert caught.value.code == "E_ENTRY_MALFORMED", case
    with pytest.raises(EntryError, match="not the canonical encoding"):
        decode_entry(wide)


def test_decode_refuses_non_bytes() -> None:
    with pytest.raises(EntryError):
        decode_entry(bytearray(encode_entry(make())))  # type: ignore[arg-type]


def test_refusal_messages_never_quote_values() -> None:
    secret = "victim-name"
    data = msgspec.msgpack.encode([*as_array(make())[:2], {secret: 1}, *as_array(make())[3:]])
    with pytest.raises(EntryError) as caught:
        decode_entry(data)
    assert secret not in str(caught.value)
