"""Server lists (issue 14, item 2): --server, TFSHARE_SERVER and a profile's server may list a
cluster's nodes, separated by commas. Each entry passes ``parse_server_url``'s check; a bad
one is named (which entry, exit 2) for a flag or the environment, and left out - named in
the log - from a profile's list while the others are used. The agent warns of a plain
``nats://`` URL to another machine."""

from __future__ import annotations

import asyncio
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import nats.js.errors
import pytest
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs
from tfkit import TaskForce

from tfshare import profiles, transport
from tfshare.agent import Agent
from tfshare.errors import ExitCode, UsageError
from tfshare.registry.book import shipped
from tfshare.store import StateStore
from tfshare.urls import MAX_SERVERS, parse_server_url, plain_remote, split_servers
from tfshare.workflows.live import server_url

PORTS = st.integers(1, 65535)
URLS = st.builds(lambda h, p: f"nats://{h}:{p}", st.sampled_from(["a.example", "10.1.2.3"]), PORTS)


@given(st.lists(URLS, min_size=1, max_size=MAX_SERVERS, unique=True))
def test_a_list_of_good_urls_is_kept_in_order(urls: list[str]) -> None:
    assert split_servers(parse_server_url(", ".join(urls))) == urls


def test_schemes_are_lower_cased_and_repeats_and_blanks_left_out() -> None:
    text = "NATS://a:1/, tls://b:2,,nats://a:1,"
    assert parse_server_url(text) == "nats://a:1,tls://b:2"


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("nats://a:1,http://b:2", "--server entry 2 of 2 'http://b:2'"),
        ("nats://a:99999,nats://b:2,nats://c:3", "--server entry 1 of 3 'nats://a:99999'"),
        ("nats://a:1,b:2", "--server entry 2 of 2 'b:2'"),
        ("nats://a:1,nats://user:secret@b:2", "--server entry 2 of 2 the URL"),
    ],
)
def test_a_bad_entry_is_a_usage_error_that_says_which(text: str, named: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_server_url(text)
    assert caught.value.exit_code == ExitCode.USAGE
    assert caught.value.message.startswith(named)
    assert "secret" not in caught.value.message
    assert "separated by commas" in caught.value.hint


def test_a_list_longer_than_any_cluster_is_refused() -> None:
    text = ",".join(f"nats://n{i}:4222" for i in range(MAX_SERVERS + 1))
    with pytest.raises(UsageError, match=f"more than {MAX_SERVERS}"):
        parse_server_url(text)


def test_tfshare_server_may_be_a_list_and_a_bad_entry_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TFSHARE_SERVER", "nats://a:1,nats://b:2")
    assert server_url(None) == "nats://a:1,nats://b:2"
    monkeypatch.setenv("TFSHARE_SERVER", "nats://a:1,nats//b:2")
    with pytest.raises(UsageError, match="TFSHARE_SERVER entry 2 of 2"):
        server_url(None)


def write_profile(home: Path, server_line: str) -> None:
    folder = home / "profiles" / "police"
    folder.mkdir(parents=True)
    (folder / "config.toml").write_text(f'agency = "police"\n{server_line}\n')


def test_a_profiles_bad_entry_is_named_and_the_others_are_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TFSHARE_HOME", str(tmp_path))
    write_profile(tmp_path, 'server = "nats://a:4222,htp://b:4222,nats://c:4222"')
    with capture_logs() as logs:
        profile = profiles.load("police")
    assert profile.server == "nats://a:4222,nats://c:4222"
    assert len(profile.skipped_servers) == 1
    assert "entry 2 of 3 'htp://b:4222'" in profile.skipped_servers[0]
    assert [e["event"] for e in logs] == ["profile_server_skipped"]


def test_a_profile_may_list_its_servers_as_a_toml_array(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TFSHARE_HOME", str(tmp_path))
    write_profile(tmp_path, 'server = ["tls://a:4222", "tls://b:4222"]')
    assert profiles.load("police").server == "tls://a:4222,tls://b:4222"


def test_a_profile_with_no_good_server_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TFSHARE_HOME", str(tmp_path))
    write_profile(tmp_path, 'server = "http://a:4222,ftp://b"')
    with pytest.raises(UsageError, match="entry 1 of 2 'http://a:4222'"):
        profiles.load("police")


@pytest.mark.parametrize(
    ("text", "plain"),
    [
        ("nats://127.0.0.1:4222,nats://127.9.9.9:1,nats://[::1]:2,nats://localhost:3", []),
        ("tls://broker.example:4222,tls://10.0.0.2:4222", []),
        ("nats://10.0.0.2:4222,tls://10.0.0.3:4222", ["nats://10.0.0.2:4222"]),
        ("nats://broker.example:4222", ["nats://broker.example:4222"]),
        ("nats://[fd00::1]:4222", ["nats://[fd00::1]:4222"]),
    ],
)
def test_plain_remote_names_the_clear_text_urls_to_other_machines(
    text: str, plain: list[str]
) -> None:
    assert plain_remote(parse_server_url(text)) == plain


def agent(taskforce: TaskForce, url: str, state: Path) -> Agent:
    return Agent(
        identity=taskforce.ids["ngo"],
        roster=taskforce.trusted(),
        schemas=shipped(),
        store=StateStore(state / "state.db"),
        url=url,
        clock=lambda: time.time_ns() // 1_000_000,
    )


def run_stopped(subject: Agent) -> list[MutableMapping[str, Any]]:
    stop = asyncio.Event()
    stop.set()  # the checks at start, and no connection
    with capture_logs() as logs:
        asyncio.run(subject.run(stop))
    return logs


def test_the_agent_warns_of_a_plain_url_to_another_machine(
    taskforce: TaskForce, tmp_path: Path
) -> None:
    subject = agent(taskforce, "nats://127.0.0.1:4222,nats://10.0.0.2:4222", tmp_path)
    logs = run_stopped(subject)
    warned = [e for e in logs if e["event"] == "plain_remote_server"]
    assert [e["url"] for e in warned] == ["nats://10.0.0.2:4222"]
    assert warned[0]["log_level"] == "warning"
    assert any("plain_remote_server: nats://10.0.0.2:4222" in e for e in subject.health.errors)


def test_the_agent_does_not_warn_of_loopback_or_tls(taskforce: TaskForce, tmp_path: Path) -> None:
    subject = agent(taskforce, "nats://127.0.0.1:4222,tls://10.0.0.2:4222", tmp_path)
    logs = run_stopped(subject)
    assert not [e for e in logs if e["event"] == "plain_remote_server"]
    assert not subject.health.errors


def test_a_cluster_electing_a_leader_is_not_taken_for_a_missing_stream() -> None:
    """JetStream's 503 "temporarily unavailable" (a leader election after a node went) says
    so and that tfshare retries; it does not send the operator to 'broker provision'."""
    electing = nats.js.errors.ServiceUnavailableError(
        code=503, err_code=10008, description="JetStream system temporarily unavailable"
    )
    error = transport.broker_error(electing, doing="fetching")
    assert "temporarily unavailable" in error.message
    assert "provision" not in error.hint and "retries" in error.hint
    missing = nats.js.errors.NotFoundError(code=404, err_code=10059, description="not found")
    assert "provision" in transport.broker_error(missing, doing="fetching").hint
