"""``publish --no-queue`` never sends later what it said it did not send; a queued publish is
sent exactly once and says that it was queued.

As real subprocesses on the CLI-built task force of test_live_cli: labour publishes (with its
own state directory) while its own ``agent run`` uses the same state directory, so the agent
sends whatever the outbox holds; ngo's agent reads the channel. The broker is "away" for
publish in two ways: an address that accepts the connection and never answers (publish waits
its whole connect timeout, while labour's agent, on the real broker, keeps flushing the
outbox), and the broker stopped, then started again on the same port and directory.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_live_cli import (
    ALERT,
    MSG_ID,
    Background,
    CliTaskForce,
    LiveBroker,
    cli_tf,
    ok,
    outbox,
    start_broker,
    wait_for,
)

from tfshare.store import StateStore

__all__ = ["cli_tf"]  # the module's task force fixture, shared with test_live_cli

pytestmark = pytest.mark.slow


def publish_as_labour(tf: CliTaskForce, state: Path, url: str, *extra: str) -> tuple[int, str, str]:
    result = tf.run(
        "publish", "alert", "--channel", "alerts", "--file", ALERT, *tf.creds("labour"),
        *tf.trust(), "--state", state, "--server", url, *extra,
    )  # fmt: skip
    return result.returncode, result.stdout, result.stderr


def labour_messages(tf: CliTaskForce, reader: str) -> list[str]:
    """The msg_ids from labour in ``reader``'s inbox, one entry per stored message."""
    result = ok(tf.run("inbox", "list", "--json", *tf.creds(reader), *tf.trust()))
    return [m["msg_id"] for m in json.loads(result.stdout)["messages"] if m["sender"] == "labour"]


def sent_ids(state: Path) -> set[str]:
    store = StateStore(state / "state.db")
    try:
        return {item.msg_id.hex() for item in store.sent(limit=10_000)}
    finally:
        store.close()


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A URL whose port accepts TCP connections (the kernel's backlog) and never says a
    word: a NATS client waits its whole connect timeout there, as behind a dead link."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"nats://127.0.0.1:{sock.getsockname()[1]}"


def agent(tf: CliTaskForce, name: str, agency: str, url: str, *extra: str) -> Background:
    process = tf.spawn(
        name, "agent", "run", *tf.creds(agency), *tf.trust(), "--server", url, *extra
    )
    process.wait_stderr("consuming from")
    return process


def test_no_queue_publish_that_fails_is_never_sent_by_the_running_agent(
    cli_tf: CliTaskForce, silent_server: str, tmp_path: Path
) -> None:
    """Five ``--no-queue`` publishes that cannot reach the broker exit 4 and leave no outbox
    row and no sent entry; labour's own agent, started then and flushing its outbox, sends
    none of them: ngo never receives them. With the agent running, a publish naming another
    broker (--server) is refused (exit 2, nothing kept: the agent sends every message), and
    one through the agent arrives exactly once."""
    broker = start_broker(cli_tf, "broker-silent")
    state = tmp_path / "labour"
    agents: list[Background] = []
    try:
        agents.append(agent(cli_tf, "agent-ngo-1", "ngo", broker.url))
        before = labour_messages(cli_tf, "ngo")
        for _ in range(5):
            code, stdout, stderr = publish_as_labour(cli_tf, state, silent_server, "--no-queue")
            assert code == 4, stderr
            assert "not sent and is not kept for later (--no-queue)" in stderr
            assert "nothing will send it later" in stderr
            assert stdout == ""
            assert outbox(state) == []
        assert sent_ids(state) == set()
        agents.append(agent(cli_tf, "agent-labour-1", "labour", broker.url, "--state", str(state)))
        assert wait_for((state / "agent.sock").exists, timeout=20, interval=0.2)

        code, stdout, stderr = publish_as_labour(cli_tf, state, silent_server)
        assert code == 2, stderr
        assert "is not the broker of this agency's running agent" in stderr
        assert stdout == "" and outbox(state) == []

        result = cli_tf.run(
            "publish", "alert", "--channel", "alerts", "--file", ALERT, "--key",
            cli_tf.root / "keys" / "labour.key", *cli_tf.trust(), "--state", state,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        sent = msg_id_of_text(result.stdout)
        assert wait_for(lambda: sent in labour_messages(cli_tf, "ngo"), timeout=20, interval=0.3)
        time.sleep(2)  # several flushes of labour's agent: nothing else may follow
        assert labour_messages(cli_tf, "ngo") == [sent, *before]
        assert outbox(state) == []
        assert sent_ids(state) == {sent}
    finally:
        for process in agents:
            process.cleanup()
        broker.process.cleanup()


def test_no_queue_publish_while_the_broker_is_down_is_not_sent_when_it_returns(
    cli_tf: CliTaskForce, tmp_path: Path
) -> None:
    """The broker stopped, labour's agent running (retrying): five ``--no-queue`` publishes
    exit 4, a queued one exits 0 saying "queued". When the broker is back, labour's agent
    sends the queued one, and only it, and ngo stores it once."""
    broker = start_broker(cli_tf, "broker-down")
    state = tmp_path / "labour"
    agents: list[Background] = []
    try:
        agents.append(agent(cli_tf, "agent-ngo-2", "ngo", broker.url))
        agents.append(agent(cli_tf, "agent-labour-2", "labour", broker.url, "--state", str(state)))
        before = labour_messages(cli_tf, "ngo")
        broker.process.cleanup()
        for _ in range(5):
            code, _, stderr = publish_as_labour(cli_tf, state, broker.url, "--no-queue")
            assert code == 4, stderr
            assert "not sent and is not kept for later (--no-queue)" in stderr
        code, stdout, stderr = publish_as_labour(cli_tf, state, broker.url, "--json")
        assert code == 0, stderr
        published = json.loads(stdout)
        assert published["queued"] is True
        assert outbox(state) == [published["msg_id"]]

        broker = restart_broker(cli_tf, broker, "broker-down")
        assert wait_for(
            lambda: published["msg_id"] in labour_messages(cli_tf, "ngo"),
            timeout=30,
            interval=0.3,
        )
        time.sleep(2)
        assert labour_messages(cli_tf, "ngo") == [published["msg_id"], *before]
        assert outbox(state) == []
        assert sent_ids(state) == {published["msg_id"]}
    finally:
        for process in agents:
            process.cleanup()
        broker.process.cleanup()


def msg_id_of_text(stdout: str) -> str:
    """The msg_id line of publish's plain output."""
    match = MSG_ID.search(stdout)
    assert match is not None, stdout
    return match.group(1)


def restart_broker(tf: CliTaskForce, old: LiveBroker, name: str) -> LiveBroker:
    """``broker up`` again on the same port and directory (its streams and consumers kept)."""
    process = tf.spawn(
        f"{name}-again", "broker", "up", *tf.trust(), "--dir", tf.root / name,
        "--port", str(old.port),
    )  # fmt: skip
    process.wait_stderr("listening on", timeout=30)
    return LiveBroker(old.url, old.port, process)
