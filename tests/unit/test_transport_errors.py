"""How transport names a broker failure: a timeout is its own type, so a caller can tell "the
broker may have stored it, its answer was lost" from "it never got there" without reading
message text; a refused agency is never advised to be let in again."""

from __future__ import annotations

import nats.errors
import pytest

from tfshare import transport


@pytest.mark.parametrize("exc", [TimeoutError(), nats.errors.TimeoutError()])
def test_a_timeout_is_a_broker_timeout(exc: BaseException) -> None:
    error = transport.broker_error(exc, doing="publishing")
    assert isinstance(error, transport.BrokerTimeout)
    assert "publishing" in error.message


@pytest.mark.parametrize("exc", [ConnectionRefusedError(), OSError("unreachable")])
def test_an_unreachable_broker_is_not_a_timeout(exc: BaseException) -> None:
    error = transport.broker_error(exc, doing="publishing")
    assert not isinstance(error, transport.BrokerTimeout)
    assert "broker unavailable" in error.message


def test_refused_credentials_never_advise_letting_a_revoked_agency_in() -> None:
    error = transport.auth_failed("nats://127.0.0.1:4222", "police", b"not a seed")
    assert "revoked" in error.hint and "never add it back" in error.hint
    assert "regenerate the broker config from the current roster" in error.hint
