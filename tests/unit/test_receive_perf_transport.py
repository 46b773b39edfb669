"""transport._num_delivered reads JetStream's delivery count from the ack subject itself,
exactly as nats-py's ``Msg.metadata`` does (the agent's retry bound, ``max_attempts``, rests on
it), without building the metadata objects per message."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nats.aio.msg import Msg
from nats.errors import NotJSMessageError

from tfshare.transport import _num_delivered


def _msg(reply: str) -> Msg:
    return Msg(None, subject="tf.nl-north.ch.alerts.police", reply=reply, data=b"")  # type: ignore[arg-type]


def _v1(stream: str, consumer: str, delivered: int) -> str:
    return f"$JS.ACK.{stream}.{consumer}.{delivered}.1234.987.1765000000000000000.12"


def _v2(domain: str, stream: str, consumer: str, delivered: int, *, token: bool) -> str:
    tail = ".x7Yz" if token else ""
    return (
        f"$JS.ACK.{domain}.ACCHASH.{stream}.{consumer}.{delivered}.1234.987.1765000000000.12{tail}"
    )


@pytest.mark.parametrize(
    "reply",
    [
        _v1("TF_nl-north_alerts", "ngo_alerts", 3),
        _v2("hub", "TF_nl-north_alerts", "ngo_alerts", 5, token=True),
        _v2("_", "TF_nl-north_alerts", "ngo_alerts", 7, token=False),
    ],
)
def test_the_delivery_count_is_nats_pys(reply: str) -> None:
    assert _num_delivered(_msg(reply)) == _msg(reply).metadata.num_delivered


def test_a_message_that_is_not_from_jetstream_is_refused_as_nats_py_refuses_it() -> None:
    with pytest.raises(NotJSMessageError):
        _num_delivered(_msg("_INBOX.abc.def"))


_name = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-",
    min_size=1,
    max_size=20,
)


@given(_name, _name, _name, st.integers(min_value=1, max_value=2**40), st.booleans(), st.booleans())
def test_any_ack_subject_gives_the_count_nats_py_gives(
    domain: str, stream: str, consumer: str, delivered: int, v2: bool, token: bool
) -> None:
    reply = (
        _v2(domain, stream, consumer, delivered, token=token)
        if v2
        else _v1(stream, consumer, delivered)
    )
    assert _num_delivered(_msg(reply)) == _msg(reply).metadata.num_delivered == delivered
