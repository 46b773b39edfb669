"""``tfshare.urls.parse_server_url``: the one check of a broker URL (issue 12, item 5)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tfshare.errors import ExitCode, UsageError
from tfshare.urls import parse_server_url

_LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
HOSTS = st.one_of(
    st.lists(_LABEL, min_size=1, max_size=4)
    .map(".".join)
    .filter(lambda h: not all(p.isdigit() for p in h.split("."))),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
)


@given(scheme=st.sampled_from(["nats", "tls", "NATS", "Tls"]), host=HOSTS,
       port=st.none() | st.integers(1, 65535))  # fmt: skip
def test_every_well_formed_url_is_accepted_with_its_scheme_lower_cased(
    scheme: str, host: str, port: int | None
) -> None:
    text = f"{scheme}://{host}" + ("" if port is None else f":{port}")
    assert parse_server_url(text) == f"{scheme.lower()}://{text.partition('://')[2]}"


@given(st.text(max_size=80))
def test_any_text_is_accepted_or_refused_as_a_usage_error(text: str) -> None:
    try:
        parsed = parse_server_url(text)
    except UsageError as exc:
        assert exc.exit_code == ExitCode.USAGE
        assert "nats://HOST:PORT" in exc.hint
    else:
        assert parsed.startswith(("nats://", "tls://"))


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("http://127.0.0.1:4222", "scheme http://"),
        ("ws://127.0.0.1:4222", "scheme ws://"),
        ("not a url", "no scheme"),
        ("127.0.0.1:4222", "no scheme"),
        ("", "no scheme"),
        ("nats://127.0.0.1:99999", "port"),
        ("nats://127.0.0.1:0", "port"),
        ("nats://127.0.0.1:", "port"),
        ("nats://127.0.0.1:42a2", "port"),
        ("nats://:4222", "no host"),
        ("nats://", "no host"),
        ("nats://999.1.1.1:4222", "not a host"),
        ("nats://host_name:4222", "not a host"),
        ("nats://-bad.example:4222", "not a host"),
        ("nats://[::1", "not a host"),
        ("nats://[::zz]:4222", "not a host"),
        ("nats://host:4222/path", "no path"),
        ("nats://host:4222?x=1", "no path"),
        ("nats://b\u00fccher.example:4222", "not a host"),
        ("nats://" + "a" * 300, "longer than"),
    ],
)
def test_malformed_urls_are_usage_errors_that_name_them_and_say_why(text: str, why: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_server_url(text, source="TFSHARE_SERVER")
    message = str(caught.value)
    assert message.startswith("TFSHARE_SERVER ")
    assert why in message
    if len(text) < 100:
        assert repr(text) in message


def test_credentials_in_a_url_are_refused_and_never_repeated() -> None:
    with pytest.raises(UsageError) as caught:
        parse_server_url("nats://admin:hunter2-secret@127.0.0.1:4222")
    assert "hunter2-secret" not in str(caught.value) + caught.value.hint
    assert "no user or password" in str(caught.value)


@pytest.mark.parametrize(
    "text",
    ["nats://127.0.0.1:4222", "tls://broker.example.org:4443", "nats://localhost",
     "nats://[::1]:4222", "nats://broker.example.org.:4222"],
)  # fmt: skip
def test_the_forms_the_readme_gives_are_accepted(text: str) -> None:
    assert parse_server_url(text) == text


def test_a_trailing_slash_is_dropped() -> None:
    assert parse_server_url("nats://127.0.0.1:4222/") == "nats://127.0.0.1:4222"
