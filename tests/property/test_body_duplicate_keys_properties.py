"""Bodies with a map key given twice, at any depth, are refused; every other body survives
the check and re-encodes to itself (issue 11, item 8; PROTOCOL.md 9).

Maps are built as lists of (key, value) pairs and encoded by hand, so a duplicate can be put
into any map of any body; plain values are encoded by msgspec.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tfshare.encoding import DECODE_ERRORS, NonCanonical, check_body_form
from tfshare.errors import ValidationError
from tfshare.registry.schema import Schema, duplicate_key_path

# A schema whose receive type ignores every key below (they all start with "x"), so the
# typed decode accepts these bodies and only the form check can refuse them.
OPEN_SCHEMA = Schema.from_document(
    {
        "$id": "urn:tfshare:schema:t.open/1",
        "type": "object",
        "properties": {"title": {"type": "string"}},
        "additionalProperties": False,
    }
)


class Pairs(list[tuple[str, Any]]):
    """A msgpack map as its entries, repeats allowed."""


keys = st.text(alphabet="xyz_ab", min_size=1, max_size=4).map(lambda k: "x" + k)
scalars = (
    st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.booleans()
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=20,
)
bodies = st.dictionaries(keys, values, max_size=6)


def as_pairs(value: Any) -> Any:
    if isinstance(value, dict):
        return Pairs((k, as_pairs(v)) for k, v in value.items())
    if isinstance(value, list):
        return [as_pairs(v) for v in value]
    return value


def _header(n: int, fix: int, wide16: int, wide32: int) -> bytes:
    if n < 16:
        return bytes([fix | n])
    if n < 65536:
        return bytes([wide16]) + n.to_bytes(2, "big")
    return bytes([wide32]) + n.to_bytes(4, "big")


def encode(node: Any) -> bytes:
    """msgpack of a pairs tree, shortest forms, entries in the given order and number."""
    if isinstance(node, Pairs):
        return _header(len(node), 0x80, 0xDE, 0xDF) + b"".join(
            msgspec.msgpack.encode(k) + encode(v) for k, v in node
        )
    if isinstance(node, list):
        return _header(len(node), 0x90, 0xDC, 0xDD) + b"".join(encode(v) for v in node)
    return msgspec.msgpack.encode(node)


def maps_in(node: Any) -> list[Pairs]:
    """Every map of a pairs tree, the root included."""
    found: list[Pairs] = []
    if isinstance(node, Pairs):
        found.append(node)
        for _, v in node:
            found.extend(maps_in(v))
    elif isinstance(node, list):
        for v in node:
            found.extend(maps_in(v))
    return found


@st.composite
def with_duplicate(draw: st.DrawFn) -> Pairs:
    """A body in which one map, at any depth, has one key twice (any value the second time,
    before or after the first)."""
    tree = Pairs(as_pairs(draw(bodies)))
    target = draw(st.sampled_from(maps_in(tree)))
    if target:
        key = draw(st.sampled_from([k for k, _ in target]))
    else:
        key = draw(keys)
        target.append((key, as_pairs(draw(values))))
    target.insert(draw(st.integers(0, len(target))), (key, as_pairs(draw(values))))
    return tree


def json_of(node: Any) -> str:
    """JSON text of a pairs tree, keeping every entry (repeats included)."""
    if isinstance(node, Pairs):
        return "{" + ",".join(f"{json.dumps(k)}:{json_of(v)}" for k, v in node) + "}"
    if isinstance(node, list):
        return "[" + ",".join(json_of(v) for v in node) + "]"
    return json.dumps(node)


@settings(max_examples=300)
@given(with_duplicate())
def test_a_body_with_a_key_twice_at_any_depth_is_refused(tree: Pairs) -> None:
    """The form check refuses it, and so does receiving (one of DECODE_ERRORS: E_BODY),
    although msgspec alone would decode it with the last value winning."""
    data = encode(tree)
    msgspec.msgpack.decode(data)  # well-formed msgpack: only the repeat is wrong
    with pytest.raises(NonCanonical):
        check_body_form(data)
    with pytest.raises(DECODE_ERRORS):
        OPEN_SCHEMA.from_body(data)


@settings(max_examples=300)
@given(bodies)
def test_a_body_without_repeats_passes_and_reencodes_to_itself(body: dict[str, Any]) -> None:
    """Any map of distinct keys in shortest form passes, in any key order, and decodes and
    re-encodes to exactly the bytes received."""
    data = encode(as_pairs(body))
    assert data == msgspec.msgpack.encode(body)  # the hand encoder is msgpack's shortest form
    check_body_form(data)
    OPEN_SCHEMA.from_body(data)
    assert msgspec.msgpack.encode(msgspec.msgpack.decode(data)) == data
    reordered = encode(Pairs(reversed(as_pairs(body))))
    check_body_form(reordered)


@settings(max_examples=200)
@given(with_duplicate())
def test_a_json_body_with_a_key_twice_at_any_depth_is_a_validation_error(tree: Pairs) -> None:
    """On the sending side the same body as JSON is refused (exit 5) with the key's path."""
    text = json_of(tree).encode()
    assert duplicate_key_path(text) is not None
    with pytest.raises(ValidationError) as info:
        OPEN_SCHEMA.from_json(text)
    assert "twice" in info.value.message


@settings(max_examples=200)
@given(bodies)
def test_a_json_body_without_repeats_has_no_duplicate_path(body: dict[str, Any]) -> None:
    """No false alarm: JSON whose objects all have distinct keys passes the check."""
    assert duplicate_key_path(json.dumps(body).encode()) is None
