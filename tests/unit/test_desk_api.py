"""The desk's framing and message types (tfshare.desk.api): whatever arrives on the socket
either decodes to an API struct or is refused as ``FrameError``, never another exception,
and a frame over ``MAX_FRAME`` is refused on both sides."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tfshare.desk import api

REQUEST_TAGS = [
    "hello",
    "status",
    "publish",
    "inbox.list",
    "inbox.show",
    "inbox.search",
    "inbox.quarantine",
    "follow",
    "schema",
    "audit.disclose",
    "web.login",
]
ANSWER_TAGS = [
    "welcome",
    "failed",
    "status",
    "published",
    "inbox.rows",
    "message",
    "search",
    "quarantine.rows",
    "feed",
    "schema.document",
    "disclosure",
    "web.link",
]
FIELDS = [
    "version",
    "client",
    "kind",
    "channel",
    "to",
    "body",
    "fields",
    "queue",
    "derive",
    "wait_s",
    "limit",
    "ref",
    "text",
    "include_existing",
    "message",
    "hint",
    "exit_code",
    "rows",
    "item",
    "matches",
    "unreadable",
    "msg_id",
    "document",
    "data",
    "url",
    "expires",
]

# Values of every msgpack type, nested: what a confused or hostile peer could send.
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=True)
    | st.text(max_size=40)
    | st.binary(max_size=40)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=25,
)


def tagged(tags: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """A map that looks like an API struct: a known (or unknown) tag and fields of any type."""
    return st.builds(
        lambda tag, fields: {"type": tag, **fields},
        st.sampled_from(tags) | st.text(max_size=12),
        st.dictionaries(st.sampled_from(FIELDS), values, max_size=6),
    )


def decodes_or_frame_error(decode: Any, data: bytes) -> None:
    try:
        decoded = decode(data)
    except api.FrameError:
        return
    assert isinstance(decoded, msgspec.Struct)


@settings(max_examples=400)
@given(st.binary(max_size=256))
def test_any_bytes_decode_as_a_request_or_raise_frame_error(data: bytes) -> None:
    decodes_or_frame_error(api.decode_request, data)


@settings(max_examples=400)
@given(st.binary(max_size=256))
def test_any_bytes_decode_as_an_answer_or_raise_frame_error(data: bytes) -> None:
    decodes_or_frame_error(api.decode_answer, data)


@settings(max_examples=400)
@given(tagged(REQUEST_TAGS + ANSWER_TAGS) | values)
def test_any_msgpack_value_decodes_as_a_request_or_raises_frame_error(value: Any) -> None:
    data = msgspec.msgpack.encode(value)
    decodes_or_frame_error(api.decode_request, data)


@settings(max_examples=400)
@given(tagged(ANSWER_TAGS + REQUEST_TAGS) | values)
def test_any_msgpack_value_decodes_as_an_answer_or_raises_frame_error(value: Any) -> None:
    data = msgspec.msgpack.encode(value)
    decodes_or_frame_error(api.decode_answer, data)


@pytest.mark.parametrize("decode", [api.decode_request, api.decode_answer])
def test_deeply_nested_msgpack_is_a_frame_error_not_a_recursion_error(decode: Any) -> None:
    """100 000 nested one-element arrays (3 bytes each level would be too many: 1 byte)."""
    data = b"\x91" * 100_000 + b"\xc0"
    with pytest.raises(api.FrameError):
        decode(data)


@settings(max_examples=200)
@given(
    st.sampled_from(
        [
            api.Hello(version=1),
            api.StatusRequest(),
            api.InboxListRequest(limit=3),
            api.InboxShowRequest(ref="police:0123abcd"),
            api.InboxSearchRequest(text="escort"),
            api.QuarantineRequest(),
            api.FollowRequest(include_existing=True),
            api.SchemaRequest(kind="tip"),
            api.DiscloseRequest(ref="0123abcd"),
            api.LoginRequest(),
        ]
    ),
    st.binary(max_size=4096),
    st.lists(st.text(max_size=30), max_size=4),
)
def test_requests_round_trip_through_their_frame(
    request_: Any, body: bytes, fields: list[str]
) -> None:
    publish = api.PublishRequest(kind="alert", body=body, fields=fields, derive=("reply", "ab"))
    for message in (request_, publish):
        framed = api.frame(message)
        assert api.frame_length(framed[:4]) == len(framed) - 4
        assert api.decode_request(framed[4:]) == message


def test_a_request_is_not_an_answer_and_an_answer_is_not_a_request() -> None:
    """Tags keep the two directions apart: a peer that answers with a request is refused."""
    with pytest.raises(api.FrameError):
        api.decode_answer(api.frame(api.StatusRequest())[4:])
    with pytest.raises(api.FrameError):
        api.decode_request(api.frame(api.Welcome(1, "ngo", "tf-north"))[4:])


def test_a_frame_length_over_the_limit_is_refused_before_reading_it() -> None:
    assert api.frame_length(api.MAX_FRAME.to_bytes(4, "big")) == api.MAX_FRAME
    with pytest.raises(api.FrameError, match="over the"):
        api.frame_length((api.MAX_FRAME + 1).to_bytes(4, "big"))
    with pytest.raises(api.FrameError):
        api.frame_length(b"\xff\xff\xff\xff")


def test_an_oversize_message_is_refused_when_framed() -> None:
    big = api.Disclosure(data=b"x" * api.MAX_FRAME, msg_id="00" * 16)
    with pytest.raises(api.FrameError, match="over the"):
        api.frame(big)
    just_fits = api.Disclosure(data=b"x" * (api.MAX_FRAME - 256), msg_id="00" * 16)
    assert api.frame_length(api.frame(just_fits)[:4]) <= api.MAX_FRAME


def test_a_hello_of_another_version_still_decodes_so_the_agent_can_name_it() -> None:
    """The agent answers an unknown version with a Failed naming it: the Hello must decode."""
    hello = api.decode_request(api.frame(api.Hello(version=999))[4:])
    assert hello == api.Hello(version=999)
