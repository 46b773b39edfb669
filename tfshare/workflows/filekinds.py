"""Recognising tfshare files by their leading tag, so a wrong file gets a precise error.

age refuses a secret key pasted where a public one belongs; so do we: every tfshare file is a
msgpack array whose first element names its kind (``tfshare-key/1``, ``tfshare-card/1``, ...),
and an envelope starts with its version integer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final, Literal

import msgspec

from tfshare.encoding import DECODE_ERRORS
from tfshare.envelope import MAX_ENVELOPE
from tfshare.errors import InputError, TrustError
from tfshare.files import read_bytes
from tfshare.keyfile import KEYFILE_TAG, KEYFILE_TAG_V2
from tfshare.keys import Card, CardBody, verify_card
from tfshare.roster import ANCHOR_TAG, MAX_ROSTER_FILE, ROSTER_TAG, Anchor, decode_anchor
from tfshare.rotation import ROTATION_TAG

Kind = Literal["key", "card", "roster", "anchor", "rotation", "envelope", "unknown"]

_TAGS: Final[dict[str, Kind]] = {
    KEYFILE_TAG: "key",
    KEYFILE_TAG_V2: "key",
    "tfshare-card/1": "card",
    ROSTER_TAG: "roster",
    ANCHOR_TAG: "anchor",
    ROTATION_TAG: "rotation",
}
NAMES: Final[dict[Kind, str]] = {
    "key": "a secret key file",
    "card": "an agency card",
    "roster": "a roster",
    "anchor": "a trust anchor",
    "rotation": "a key rotation statement",
    "envelope": "a sealed message (.tfenv)",
    "unknown": "not a tfshare file",
}
MAX_FILE: Final = 4 * 1024 * 1024  # any file but a roster (roster.MAX_ROSTER_FILE: 20,000 members)
_card_decoder: Final = msgspec.msgpack.Decoder(Card)


def sniff(data: bytes) -> Kind:
    """What kind of tfshare file ``data`` is, from its leading bytes only.

    Reads the array header and the first element by hand: decoding the whole file here would
    let a hostile file (deep nesting, bad UTF-8) fail in ways the real decoder reports better.
    """
    if not data:
        return "unknown"
    lead = data[0]
    if 0x91 <= lead <= 0x9F:
        count, pos = lead & 0x0F, 1
    elif lead == 0xDC and len(data) >= 3:
        count, pos = int.from_bytes(data[1:3], "big"), 3
    else:
        return "unknown"
    if pos >= len(data):
        return "unknown"
    first = data[pos]
    if first == 0x01:
        return "envelope" if count == 4 else "unknown"
    if 0xA0 <= first <= 0xBF:
        length, start = first & 0x1F, pos + 1
    elif first == 0xD9 and pos + 1 < len(data):
        length, start = data[pos + 1], pos + 2
    else:
        return "unknown"
    try:
        tag = data[start : start + length].decode("ascii")
    except UnicodeDecodeError:
        return "unknown"
    return _TAGS.get(tag, "unknown")


def read_kind(path: Path, expected: Kind, *, limit: int | None = None) -> bytes:
    """Read ``path`` and insist it is of kind ``expected``, naming what it is instead."""
    if limit is None:
        limit = MAX_ROSTER_FILE if expected == "roster" else MAX_FILE
    data = read_bytes(path, what=NAMES[expected].split(" ", 1)[1], limit=limit)
    kind = sniff(data)
    if kind != expected:
        hint = (
            "never pass a secret key file where a public card is expected; give the .card file"
            if kind == "key"
            else f"give {NAMES[expected]} here"
        )
        if kind == "unknown" and expected != "envelope":
            message = f"{str(path)!r} is not {NAMES[expected]} (truncated, damaged or foreign)"
        else:
            message = f"{str(path)!r} is {NAMES[kind]}, not {NAMES[expected]}"
        error_type = TrustError if expected in ("key", "card", "anchor", "roster") else InputError
        raise error_type(message, hint=hint)
    return data


def load_card(path: Path) -> CardBody:
    """Read and verify an agency card file."""
    data = read_kind(path, "card")
    try:
        card = _card_decoder.decode(data)
    except DECODE_ERRORS:
        raise TrustError(
            f"{str(path)!r} is a damaged agency card",
            hint="ask the agency to send its card again",
        ) from None
    return verify_card(card)


def load_anchor(path: Path) -> Anchor:
    return decode_anchor(read_kind(path, "anchor"))


def read_envelope(path: Path) -> bytes:
    """Read a .tfenv file. Another tfshare file (a key, a card...) is a mistake of the person
    and is named as such; anything else goes to the receiver, which reports its code (damaged
    or foreign bytes: E_MALFORMED; oversized: E_TOO_LARGE)."""
    data = read_bytes(path, what="sealed message", limit=MAX_ENVELOPE, oversize_ok=True)
    kind = sniff(data)
    if kind not in ("envelope", "unknown"):
        raise InputError(
            f"{str(path)!r} is {NAMES[kind]}, not {NAMES['envelope']}",
            hint="give the .tfenv file written by 'tfshare seal'",
        )
    return data
