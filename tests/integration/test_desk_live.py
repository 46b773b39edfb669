"""The agency's desk (issue 13) as real subprocesses: ``tfshare agent run`` holds the key and
serves its Unix socket; ``publish``, ``inbox``, ``listen`` and ``agent status`` ask it without
any passphrase, on a real nats-server started by ``tfshare broker up``.

The module's task force is test_live_cli's (coord; police writes "alerts", ngo and labour read
it). For the module: one broker, police's desk (the publisher) and ngo's desk (a reader), each
on its own ``--state``. Tests that stop or kill an agent start their own.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import pytest
from livekit import free_port
from test_live_cli import (
    ALERT,
    TFSHARE,
    Background,
    CliTaskForce,
    LiveBroker,
    clean_env,
    cli_tf,
    ok,
    wait_for,
)

from tfshare.desk import api

__all__ = ["cli_tf"]  # the module's task force fixture, from test_live_cli

SEEN = 30.0  # seconds a delivery may take on a loaded machine (not a timed assertion)


@dataclass
class DeskAgent:
    """One agency's ``agent run`` on its own state directory, and the CLI without passphrase."""

    tf: CliTaskForce
    agency: str
    state: Path
    process: Background
    published: list[str] = field(default_factory=list)

    @property
    def socket(self) -> Path:
        return api.socket_path(self.state)

    def args(self) -> list[str]:
        """Who and where, but no passphrase: no --passphrase-file, no TFSHARE_PASSPHRASE."""
        key = self.tf.root / "keys" / f"{self.agency}.key"
        return ["--key", str(key), *self.tf.trust(), "--state", str(self.state)]

    def run(
        self, *args: str | os.PathLike[str], timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return self.tf.run(*args, *self.args(), timeout=timeout)

    def status(self) -> dict[str, object]:
        data: dict[str, object] = json.loads(ok(self.run("agent", "status", "--json")).stdout)
        return data

    def inbox_ids(self) -> set[str]:
        listed = json.loads(ok(self.run("inbox", "list", "--json")).stdout)
        return {m["msg_id"] for m in listed["messages"]}

    def publish(self, *extra: str, body: Path = ALERT) -> subprocess.CompletedProcess[str]:
        result = self.run(
            "publish", "alert", "--channel", "alerts", "--file", body, "--json", *extra
        )
        if result.returncode == 0:
            self.published.append(json.loads(result.stdout)["msg_id"])
        return result


def spawn_agent(
    tf: CliTaskForce,
    agency: str,
    state: Path,
    url: str,
    *,
    name: str,
    passphrase: bool = True,
    env: dict[str, str] | None = None,
) -> Background:
    """``agent run`` in the background (its own session), the passphrase from its file."""
    keys = tf.root / "keys"
    args = ["agent", "run", "--key", str(keys / f"{agency}.key"), *tf.trust()]
    if passphrase:
        args += ["--passphrase-file", str(keys / f"{agency}.pass")]
    args += ["--state", str(state), "--server", url]
    out, err = tf.root / f"{name}.out", tf.root / f"{name}.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(
            [str(TFSHARE), *args],
            cwd=tf.root,
            env={**clean_env(tf.home), **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
    return Background(process, out, err)


def start_desk(
    tf: CliTaskForce, agency: str, state: Path, url: str, *, name: str, connected: bool = True
) -> DeskAgent:
    process = spawn_agent(tf, agency, state, url, name=name)
    process.wait_stderr("consuming from")
    desk = DeskAgent(tf, agency, state, process)
    if connected:
        assert wait_for(lambda: desk.status()["connected"] is True, SEEN, 0.2), process.stderr()
    return desk


def broker_on(tf: CliTaskForce, name: str, port: int) -> LiveBroker:
    """``broker up`` on a given port and directory (to restart the same broker)."""
    process = tf.spawn(
        f"{name}-{port}-{os.urandom(2).hex()}",
        "broker",
        "up",
        *tf.trust(),
        "--dir",
        tf.root / name,
        "--port",
        str(port),
    )
    process.wait_stderr("listening on")
    return LiveBroker(f"nats://127.0.0.1:{port}", port, process)


def socket_connections(path: Path) -> int:
    """Connections the agent accepted on its socket (each accepted socket carries its name)."""
    lines = Path("/proc/net/unix").read_text().splitlines()[1:]
    return sum(1 for line in lines if line.split()[-1] == str(path)) - 1


def raw_conversation(path: Path, *frames: bytes) -> list[api.Answer | None]:
    """Send ``frames`` to the socket as they are; the answers until the agent closes
    (None for a frame that does not decode)."""
    answers: list[api.Answer | None] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        # All at once, as a client that does not wait for the Welcome would; the agent may
        # close before reading it all (it refused the first frame).
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(b"".join(frames))
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    while received:
        size = int.from_bytes(received[:4], "big")
        body, received = received[4 : 4 + size], received[4 + size :]
        try:
            answers.append(api.decode_answer(body))
        except api.FrameError:
            answers.append(None)
    return answers


def is_error_with_hint(result: subprocess.CompletedProcess[str]) -> bool:
    return (
        "tfshare: error: " in result.stderr
        and "tfshare: hint: " in result.stderr
        and "Traceback" not in result.stderr
    )


@pytest.fixture(scope="module")
def broker(cli_tf: CliTaskForce) -> Iterator[LiveBroker]:
    live = broker_on(cli_tf, "desk-broker", free_port())
    try:
        yield live
    finally:
        live.process.cleanup()


@pytest.fixture(scope="module")
def police(cli_tf: CliTaskForce, broker: LiveBroker) -> Iterator[DeskAgent]:
    """police's desk: the publisher of the module."""
    desk = start_desk(cli_tf, "police", cli_tf.root / "desk-police", broker.url, name="desk-police")
    try:
        yield desk
    finally:
        desk.process.cleanup()


@pytest.fixture(scope="module")
def ngo(cli_tf: CliTaskForce, broker: LiveBroker) -> Iterator[DeskAgent]:
    """ngo's desk: a reader of "alerts"."""
    desk = start_desk(cli_tf, "ngo", cli_tf.root / "desk-ngo", broker.url, name="desk-ngo")
    try:
        yield desk
    finally:
        desk.process.cleanup()


def published_id(result: subprocess.CompletedProcess[str]) -> str:
    ok(result)
    msg_id: str = json.loads(result.stdout)["msg_id"]
    return msg_id


# -- 1, 2: the commands through the agent, without a passphrase ---------------------------


@pytest.mark.slow
def test_inbox_commands_through_the_agent_need_no_passphrase_and_answer_as_the_direct_path(
    cli_tf: CliTaskForce, broker: LiveBroker, police: DeskAgent, tmp_path: Path
) -> None:
    """With labour's agent running, inbox list/show/search/quarantine and agent status work
    with no passphrase at all; stopped, the same commands (with the passphrase, directly on
    the same state) print the same JSON."""
    labour = start_desk(cli_tf, "labour", tmp_path / "labour", broker.url, name="desk-labour-1")
    try:
        sent = [published_id(police.publish()) for _ in range(2)]
        assert wait_for(lambda: set(sent) <= labour.inbox_ids(), SEEN, 0.2)
        commands: list[tuple[str, ...]] = [
            ("inbox", "list", "--json"),
            ("inbox", "show", sent[0]),
            ("inbox", "show", f"police:{sent[1][:10]}"),
            ("inbox", "search", "ESCORT AD", "--json"),
            ("inbox", "search", "no-such-words-anywhere", "--json"),
            ("inbox", "quarantine", "--json"),
        ]
        refusals: list[tuple[str, ...]] = [("inbox", "show", "deadbeefdeadbeef")]
        through, failed = {}, {}
        for command in commands:
            result = labour.run(*command)
            assert result.returncode == 0, (command, result.stderr)
            through[command] = json.loads(result.stdout)
        status = labour.status()
        assert status["agency"] == "labour" and status["connected"] is True
        assert status["pid"] == labour.process.process.pid
        assert status["inbox"] == len(through[commands[0]]["messages"])
        assert {m["msg_id"] for m in through[commands[3]]["matches"]} >= set(sent)
        assert through[commands[4]] == {"matches": []}
        assert through[commands[1]]["sender"] == "police"
        assert through[commands[2]]["msg_id"] == sent[1]
        # Refusals are the direct path's too: exit code, message and hint.
        for command in refusals:
            failed[command] = labour.run(*command)
        assert failed[refusals[0]].returncode != 0
        assert all(is_error_with_hint(f) and f.stdout == "" for f in failed.values())
        assert labour.status()["outbox"] == 0
        # A listen waiting when the agent stops is told so (exit 4), not left hanging.
        listen = cli_tf.spawn("desk-listen-1", "listen", "--json", *labour.args())
        assert wait_for(lambda: socket_connections(labour.socket) >= 1, SEEN, 0.05)
    finally:
        code, _ = labour.process.signal_and_wait(signal.SIGINT, timeout=15)
    assert code == 0, labour.process.stderr()
    assert not labour.socket.exists()
    try:
        assert listen.process.wait(timeout=SEEN) == 4, listen.stderr()
        assert "tfshare: hint: " in listen.stderr() and "Traceback" not in listen.stderr()
    finally:
        listen.cleanup()
    # No agent now: without a passphrase the commands refuse (exit 6); with it, the same JSON.
    refused = labour.run("inbox", "list", "--json")
    assert refused.returncode == 6 and "no passphrase given" in refused.stderr, refused.stderr
    passfile = ["--passphrase-file", str(cli_tf.root / "keys" / "labour.pass")]
    for command in commands:
        direct = ok(labour.run(*command, *passfile))
        assert json.loads(direct.stdout) == through[command], command
    for command in refusals:
        direct = labour.run(*command, *passfile)
        assert (direct.returncode, direct.stderr) == (
            failed[command].returncode,
            failed[command].stderr,
        ), command


@pytest.mark.slow
def test_a_handling_refusal_through_the_agent_names_its_reject_code_as_the_direct_path(
    cli_tf: CliTaskForce, broker: LiveBroker, police: DeskAgent, tmp_path: Path
) -> None:
    """labour may write on "alerts" but not reshare police's no_forward alert: exit 3 with
    E_NO_FORWARD through its agent, the same lines as without the agent."""
    labour = start_desk(cli_tf, "labour", tmp_path / "labour", broker.url, name="desk-labour-nf")
    reshare = ("publish", "alert", "--reshare", "", "--json")
    try:
        msg_id = published_id(police.publish())  # examples/alert.json is no_forward
        assert wait_for(lambda: msg_id in labour.inbox_ids(), SEEN, 0.2)
        reshare = ("publish", "alert", "--reshare", msg_id, "--json")
        through = labour.run(*reshare)
        assert labour.status()["outbox"] == 0
    finally:
        labour.process.cleanup()
    passfile = ["--passphrase-file", str(cli_tf.root / "keys" / "labour.pass")]
    direct = labour.run(*reshare, *passfile)
    assert direct.returncode == 3 and "E_NO_FORWARD" in direct.stderr, direct.stderr
    assert through.returncode == 3 and through.stdout == ""
    assert through.stderr == direct.stderr


@pytest.mark.slow
def test_publish_through_the_agent_without_passphrase_reaches_the_reader(
    police: DeskAgent, ngo: DeskAgent
) -> None:
    """publish asks police's agent (no passphrase): sent at once, in ngo's inbox soon."""
    result = police.publish()
    assert result.returncode == 0, result.stderr
    sent = json.loads(result.stdout)
    assert sent["queued"] is False and sent["queued_because"] is None
    assert sent["recipients"] and "ngo" in sent["recipients"]
    assert wait_for(lambda: sent["msg_id"] in ngo.inbox_ids(), SEEN, 0.2)
    shown = json.loads(ok(ngo.run("inbox", "show", sent["msg_id"])).stdout)
    assert shown["body"]["title"] == json.loads(ALERT.read_text())["title"]


def test_audit_disclose_through_the_agent_needs_no_passphrase_and_the_disclosure_checks(
    police: DeskAgent, ngo: DeskAgent, cli_tf: CliTaskForce, tmp_path: Path
) -> None:
    """ngo discloses a message it received, through its agent (no passphrase): the file it
    writes passes 'audit check-disclosure' and names police as the sender."""
    sent = json.loads(ok(police.publish()).stdout)["msg_id"]
    assert wait_for(lambda: sent in ngo.inbox_ids(), SEEN, 0.2)
    out = tmp_path / "x.tfdisclosure"
    result = ngo.run("audit", "disclose", sent, "--out", out)
    assert result.returncode == 0, result.stderr
    assert "from police" in result.stderr
    checked = cli_tf.run("audit", "check-disclosure", out, *cli_tf.trust(), "--json")
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout)["sender"] == "police"


# -- 3: the broker away -----------------------------------------------------------------------


@pytest.mark.slow
def test_publish_through_the_agent_with_the_broker_away_is_queued_and_sent_by_the_agent(
    cli_tf: CliTaskForce, tmp_path: Path
) -> None:
    """Broker stopped: publish through the agent comes back queued at once, saying the agent
    is not connected; when the broker is back, the agent (the outbox's one owner) sends it
    and the reader gets it, with no further publish."""
    port = free_port()
    name = f"desk-broker-away-{os.urandom(3).hex()}"
    live = broker_on(cli_tf, name, port)
    police = ngo = None
    try:
        police = start_desk(cli_tf, "police", tmp_path / "police", live.url, name=f"{name}-p")
        ngo = start_desk(cli_tf, "ngo", tmp_path / "ngo", live.url, name=f"{name}-n")
        code, _ = live.process.signal_and_wait(signal.SIGINT, timeout=15)
        assert code == 0, live.process.stderr()
        assert wait_for(lambda: police.status()["connected"] is False, SEEN, 0.2)
        result = police.publish()
        assert result.returncode == 0, result.stderr
        queued = json.loads(result.stdout)
        assert queued["queued"] is True
        assert "not connected" in queued["queued_because"], queued
        assert police.status()["outbox"] == 1
        human = ok(police.run("agent", "status"))
        assert "NOT connected" in human.stdout and "1 queued" in human.stdout
        # --no-queue: not sent, not kept (exit 4); the outbox still holds the one message.
        refused = police.publish("--no-queue")
        assert refused.returncode == 4 and is_error_with_hint(refused), refused.stderr
        assert police.status()["outbox"] == 1
        live = broker_on(cli_tf, name, port)  # the same broker, back
        assert wait_for(lambda: queued["msg_id"] in ngo.inbox_ids(), 60, 0.3)
        after = police.status()
        assert after["outbox"] == 0
        assert isinstance(after["published"], int) and after["published"] >= 1
    finally:
        for desk in (police, ngo):
            if desk is not None:
                desk.process.cleanup()
        live.process.cleanup()


# -- 4: the live feed ---------------------------------------------------------------------------


@pytest.mark.slow
def test_listen_through_the_agent_is_pushed_three_messages_published_after_it_started(
    cli_tf: CliTaskForce, police: DeskAgent, ngo: DeskAgent
) -> None:
    """``listen --json --count 3`` (no passphrase) prints the next three messages stored by
    ngo's agent, pushed to it, then exits 0."""
    # Messages of earlier tests are all stored first, so the feed holds only the new three.
    assert wait_for(lambda: set(police.published) <= ngo.inbox_ids(), SEEN, 0.2)
    listen = cli_tf.spawn("desk-listen", "listen", "--json", "--count", "3", *ngo.args())
    try:
        assert wait_for(lambda: socket_connections(ngo.socket) >= 1, SEEN, 0.05), listen.stderr()
        sent = [published_id(police.publish()) for _ in range(3)]
        listen.process.wait(timeout=SEEN)
        assert listen.process.returncode == 0, listen.stderr()
        lines = listen.out.read_text().splitlines()
        assert [json.loads(line)["msg_id"] for line in lines] == sent
        assert all(json.loads(line)["sender"] == "police" for line in lines)
    finally:
        listen.cleanup()


# -- 5, 6: one agent per profile; agent status ----------------------------------------------------


def test_a_second_agent_for_the_same_state_is_refused_and_the_first_keeps_serving(
    cli_tf: CliTaskForce, broker: LiveBroker, police: DeskAgent
) -> None:
    """Exit 2 naming the running agent's pid (before any passphrase); the first still answers."""
    second = spawn_agent(
        cli_tf, "police", police.state, broker.url, name="desk-second", passphrase=False
    )
    try:
        assert second.process.wait(timeout=SEEN) == 2, second.stderr()
    finally:
        second.cleanup()
    assert f"pid {police.process.process.pid}" in second.stderr()
    assert "tfshare: hint: " in second.stderr() and "Traceback" not in second.stderr()
    assert police.process.process.poll() is None
    assert police.status()["pid"] == police.process.process.pid
    assert police.socket.exists()


def test_agent_status_without_an_agent_exits_4_with_a_hint(
    cli_tf: CliTaskForce, tmp_path: Path
) -> None:
    desk = DeskAgent(cli_tf, "police", tmp_path / "nobody", Background(None, Path(), Path()))  # type: ignore[arg-type]
    for command in (("agent", "status"), ("agent", "status", "--json")):
        result = desk.run(*command)
        assert result.returncode == 4, result.stderr
        assert is_error_with_hint(result)
        assert "no agent runs" in result.stderr and "tfshare agent run" in result.stderr
        assert result.stdout == ""


@pytest.mark.slow
def test_agent_status_json_of_a_running_agent(police: DeskAgent, ngo: DeskAgent) -> None:
    """connected, roster seq, outbox and inbox counts, as the agent knows them."""
    assert wait_for(lambda: set(police.published) <= ngo.inbox_ids(), SEEN, 0.2)
    status = ngo.status()
    assert status["connected"] is True
    assert status["agency"] == "ngo" and status["taskforce"] == "tf-north"
    assert isinstance(status["roster_seq"], int) and status["roster_seq"] >= 1
    assert status["outbox"] == 0 and status["outbox_refused"] == 0
    assert status["inbox"] == len(ngo.inbox_ids())
    assert status["quarantine"] == 0
    assert status["server"] and status["connected_since"]
    human = ok(ngo.run("agent", "status"))
    assert "connected to" in human.stdout and f"pid {ngo.process.process.pid}" in human.stdout


# -- 7, 8: the socket's owner and mode; another API version ------------------------------------


def test_a_socket_open_to_others_or_of_another_owner_is_refused_and_nothing_is_sent(
    police: DeskAgent,
) -> None:
    before = police.status()
    try:
        os.chmod(police.socket, 0o666)
        opened = police.publish()
        assert opened.returncode == 6, opened.stderr
        assert is_error_with_hint(opened) and "open to others" in opened.stderr
        assert opened.stdout == ""
        listed = police.run("inbox", "list", "--json")
        assert listed.returncode == 6 and listed.stdout == ""
        os.chmod(police.socket, 0o600)
        os.chown(police.socket, 65534, 65534)
        foreign = police.run("agent", "status", "--json")
        assert foreign.returncode == 6, foreign.stderr
        assert is_error_with_hint(foreign) and "another user" in foreign.stderr
        foreign_publish = police.publish()
        assert foreign_publish.returncode == 6 and foreign_publish.stdout == ""
    finally:
        os.chown(police.socket, os.getuid(), os.getgid())
        os.chmod(police.socket, 0o600)
    after = police.status()
    assert (after["outbox"], after["published"]) == (before["outbox"], before["published"])


def test_a_file_that_is_not_a_socket_is_refused(cli_tf: CliTaskForce, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    api.socket_path(state).write_bytes(b"")
    desk = DeskAgent(cli_tf, "ngo", state, Background(None, Path(), Path()))  # type: ignore[arg-type]
    result = desk.run("inbox", "list", "--json")
    assert result.returncode == 6, result.stderr
    assert is_error_with_hint(result) and "not the agent's socket" in result.stderr


def test_a_client_of_another_api_version_gets_a_failed_naming_both_versions(
    police: DeskAgent,
) -> None:
    answers = raw_conversation(
        police.socket, api.frame(api.Hello(version=999)), api.frame(api.StatusRequest())
    )
    assert len(answers) == 1
    failed = answers[0]
    assert isinstance(failed, api.Failed)
    assert f"version {api.API_VERSION}" in failed.message and "version 999" in failed.message
    assert failed.exit_code == 2 and failed.kind == "ApiVersion"
    assert failed.hint
    # A request without a Hello first is answered the same way (version "none").
    (no_hello,) = raw_conversation(police.socket, api.frame(api.StatusRequest()))
    assert isinstance(no_hello, api.Failed) and "version none" in no_hello.message


def test_junk_and_oversize_frames_are_closed_without_an_answer_and_the_agent_serves_on(
    police: DeskAgent,
) -> None:
    oversize = (api.MAX_FRAME + 1).to_bytes(4, "big")
    assert raw_conversation(police.socket, oversize + b"x" * 64) == []
    junk = b"\x00\x00\x00\x05" + b"\xc1\xc1\xc1\xc1\xc1"
    assert raw_conversation(police.socket, junk) == []
    hello = api.frame(api.Hello(api.API_VERSION))
    welcome, status = raw_conversation(police.socket, hello, api.frame(api.StatusRequest()))
    assert isinstance(welcome, api.Welcome) and welcome.agency == "police"
    assert isinstance(status, api.Status) and status.pid == police.process.process.pid
    assert msgspec.to_builtins(status)["agency"] == "police"


# -- 9: an agent that dies while a call waits -----------------------------------------------------


@pytest.mark.slow
def test_an_agent_killed_while_listen_waits_ends_listen_with_exit_4_then_commands_work_directly(
    cli_tf: CliTaskForce, broker: LiveBroker, police: DeskAgent, tmp_path: Path
) -> None:
    labour = start_desk(cli_tf, "labour", tmp_path / "labour", broker.url, name="desk-labour-9")
    listen = None
    try:
        msg_id = published_id(police.publish())
        assert wait_for(lambda: msg_id in labour.inbox_ids(), SEEN, 0.2)
        listen = cli_tf.spawn("desk-listen-9", "listen", "--json", *labour.args())
        assert wait_for(lambda: socket_connections(labour.socket) >= 1, SEEN, 0.05)
        os.kill(labour.process.process.pid, signal.SIGKILL)
        labour.process.process.wait(timeout=SEEN)
        assert listen.process.wait(timeout=SEEN) == 4, listen.stderr()
        stderr = listen.stderr()
        assert "tfshare: error: " in stderr and "tfshare: hint: " in stderr, stderr
        assert "Traceback" not in stderr
        assert listen.out.read_text() == ""
    finally:
        if listen is not None:
            listen.cleanup()
        labour.process.cleanup()
    assert labour.socket.exists()  # left behind by the killed agent, and no lock held
    refused = labour.run("inbox", "list", "--json")
    assert refused.returncode == 6 and "no passphrase given" in refused.stderr, refused.stderr
    direct = ok(
        labour.run(
            "inbox", "list", "--json", "--passphrase-file", cli_tf.root / "keys" / "labour.pass"
        )
    )
    assert msg_id in {m["msg_id"] for m in json.loads(direct.stdout)["messages"]}


# -- 10, 11: long paths; the systemd credential -------------------------------------------------


@pytest.mark.slow
def test_a_state_dir_whose_socket_path_exceeds_108_bytes_works(
    cli_tf: CliTaskForce, broker: LiveBroker, ngo: DeskAgent, tmp_path: Path
) -> None:
    state = tmp_path / ("long-" + "d" * 60) / ("deeper-" + "e" * 60)
    assert len(str(api.socket_path(state)).encode()) > 108
    police = start_desk(cli_tf, "police", state, broker.url, name="desk-long")
    try:
        assert police.socket.exists()
        assert police.status()["pid"] == police.process.process.pid
        msg_id = published_id(police.publish())
        assert wait_for(lambda: msg_id in ngo.inbox_ids(), SEEN, 0.2)
    finally:
        police.process.cleanup()
    assert not police.socket.exists()


@pytest.mark.slow
def test_the_agent_takes_its_passphrase_from_a_systemd_credential(
    cli_tf: CliTaskForce, broker: LiveBroker, tmp_path: Path
) -> None:
    """CREDENTIALS_DIRECTORY/tfshare-passphrase and no other source: the agent starts; the
    same without the credential is refused (exit 6)."""
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o700)
    (credentials / "tfshare-passphrase").write_bytes(
        (cli_tf.root / "keys" / "police.pass").read_bytes()
    )
    without = spawn_agent(
        cli_tf, "police", tmp_path / "s0", broker.url, name="desk-nocred", passphrase=False
    )
    try:
        assert without.process.wait(timeout=SEEN) == 6, without.stderr()
    finally:
        without.cleanup()
    assert "no passphrase given" in without.stderr()
    agent = spawn_agent(
        cli_tf,
        "police",
        tmp_path / "s1",
        broker.url,
        name="desk-cred",
        passphrase=False,
        env={"CREDENTIALS_DIRECTORY": str(credentials)},
    )
    desk = DeskAgent(cli_tf, "police", tmp_path / "s1", agent)
    try:
        agent.wait_stderr("consuming from")
        assert wait_for(lambda: desk.status()["connected"] is True, SEEN, 0.2)
    finally:
        agent.cleanup()


# -- more bad input: a call meant for another agency, a stuck agent, a stopped call -------------


def test_a_call_with_another_agencys_key_is_not_answered_by_the_agent_of_this_state_dir(
    cli_tf: CliTaskForce, police: DeskAgent
) -> None:
    """--key ngo.key with police's state directory: the running agent is police's, so the
    command must not publish as police (nor list police's inbox as ngo's): refused, exit 6.
    (Directly, ngo may not write on "alerts" at all.)"""
    before = police.status()
    ngo_key = ["--key", str(cli_tf.root / "keys" / "ngo.key"), *cli_tf.trust()]
    where = ["--state", str(police.state)]
    published = cli_tf.run(
        "publish", "alert", "--channel", "alerts", "--file", ALERT, "--json", *ngo_key, *where
    )
    listed = cli_tf.run("inbox", "list", "--json", *ngo_key, *where)
    after = police.status()
    assert (after["outbox"], after["published"]) == (before["outbox"], before["published"])
    assert published.returncode == 6, published.stdout
    assert published.stdout == "" and is_error_with_hint(published)
    assert "police" in published.stderr and "ngo" in published.stderr
    assert listed.returncode == 6 and listed.stdout == ""


@pytest.mark.slow
def test_an_agent_killed_before_it_read_a_publish_ends_it_with_exit_4_and_nothing_is_sent(
    cli_tf: CliTaskForce, broker: LiveBroker, tmp_path: Path
) -> None:
    """police's agent stopped (SIGSTOP) takes the connection in its backlog but never reads
    it; killed, the waiting publish exits 4 with the nothing-half-sent hint. The agent
    started again on the same state (its stale socket replaced) has nothing in its outbox."""
    state = tmp_path / "police"
    police = start_desk(cli_tf, "police", state, broker.url, name="desk-stopped")
    publish = None
    try:
        os.kill(police.process.process.pid, signal.SIGSTOP)
        publish = cli_tf.spawn(
            "desk-stopped-publish",
            "publish",
            "alert",
            "--channel",
            "alerts",
            "--file",
            ALERT,
            "--json",
            *police.args(),
        )
        # The probe and the call, both waiting in the stopped agent's backlog.
        assert wait_for(lambda: socket_connections(police.socket) >= 2, SEEN, 0.05)
        os.kill(police.process.process.pid, signal.SIGKILL)
        assert publish.process.wait(timeout=SEEN) == 4, publish.stderr()
        assert "nothing is half-sent" in publish.stderr()
        assert "tfshare: error: " in publish.stderr() and "Traceback" not in publish.stderr()
        assert publish.out.read_text() == ""
    finally:
        if publish is not None:
            publish.cleanup()
        police.process.cleanup()
    again = start_desk(cli_tf, "police", state, broker.url, name="desk-stopped-again")
    try:
        status = again.status()
        assert status["pid"] == again.process.process.pid
        assert (status["outbox"], status["published"]) == (0, 0)
    finally:
        again.process.cleanup()


def test_a_profile_locked_by_an_agent_without_its_socket_is_not_worked_directly(
    cli_tf: CliTaskForce, tmp_path: Path
) -> None:
    """An agent that holds the profile's lock but does not answer (starting, or its socket
    removed): a command says so (exit 4) instead of opening the stores beside it."""
    state = tmp_path / "police"
    state.mkdir()
    desk = DeskAgent(cli_tf, "police", state, Background(None, Path(), Path()))  # type: ignore[arg-type]
    fd = os.open(api.lock_path(state), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        passfile = ["--passphrase-file", str(cli_tf.root / "keys" / "police.pass")]
        result = desk.run("inbox", "list", "--json", *passfile)
        assert result.returncode == 4, result.stderr
        assert is_error_with_hint(result) and "starting or not answering" in result.stderr
        assert not (state / "state.db").exists()
    finally:
        os.close(fd)


def test_an_invalid_body_through_the_agent_exits_5_naming_the_field_and_queues_nothing(
    police: DeskAgent, tmp_path: Path
) -> None:
    body = json.loads(ALERT.read_text())
    body["severity"] = "apocalyptic"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(body))
    before = police.status()
    result = police.publish(body=bad)
    assert result.returncode == 5, result.stderr
    assert is_error_with_hint(result) and "severity" in result.stderr
    assert result.stdout == ""
    after = police.status()
    assert (after["outbox"], after["published"]) == (before["outbox"], before["published"])


def test_the_agents_socket_and_lock_are_only_for_its_user(police: DeskAgent) -> None:
    info = os.lstat(police.socket)
    assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600
    assert info.st_uid == os.getuid()
    lock = api.lock_path(police.state)
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600
    assert lock.read_text().strip() == str(police.process.process.pid)
    assert stat.S_IMODE(police.state.stat().st_mode) == 0o700


@pytest.mark.slow
def test_listen_all_through_the_agent_shows_the_inbox_oldest_first(
    cli_tf: CliTaskForce, police: DeskAgent, ngo: DeskAgent
) -> None:
    assert wait_for(lambda: set(police.published) <= ngo.inbox_ids(), SEEN, 0.2)
    listed = json.loads(ok(ngo.run("inbox", "list", "--json")).stdout)["messages"]
    count = str(len(listed))
    result = ngo.run("listen", "--json", "--all", "--count", count, timeout=SEEN)
    assert result.returncode == 0, result.stderr
    shown = [json.loads(line)["msg_id"] for line in result.stdout.splitlines()]
    assert shown == [m["msg_id"] for m in reversed(listed)]


@pytest.mark.slow
def test_concurrent_publishes_through_the_agent_are_each_sent_once(
    cli_tf: CliTaskForce, police: DeskAgent, ngo: DeskAgent
) -> None:
    """Six publishes at once through one agent (its outbox lock): six messages, each sent,
    none left in the outbox, all in the reader's inbox; the reader's ``listen``, pushed the
    burst by its agent, shows each of them once."""
    assert wait_for(lambda: set(police.published) <= ngo.inbox_ids(), SEEN, 0.2)
    listen = cli_tf.spawn("desk-burst-listen", "listen", "--json", "--count", "6", *ngo.args())
    assert wait_for(lambda: socket_connections(ngo.socket) >= 1, SEEN, 0.05), listen.stderr()
    runs = [
        cli_tf.spawn(
            f"desk-parallel-{i}",
            "publish",
            "alert",
            "--channel",
            "alerts",
            "--file",
            ALERT,
            "--json",
            *police.args(),
        )
        for i in range(6)
    ]
    try:
        for run in runs:
            assert run.process.wait(timeout=SEEN) == 0, run.stderr()
    finally:
        for run in runs:
            run.cleanup()
    answers = [json.loads(run.out.read_text()) for run in runs]
    ids = {a["msg_id"] for a in answers}
    assert len(ids) == 6
    police.published.extend(ids)
    assert wait_for(lambda: ids <= ngo.inbox_ids(), SEEN, 0.2)
    assert police.status()["outbox"] == 0
    try:
        assert listen.process.wait(timeout=SEEN) == 0, listen.stderr()
    finally:
        listen.cleanup()
    shown = [json.loads(line)["msg_id"] for line in listen.out.read_text().splitlines()]
    assert sorted(shown) == sorted(ids)


def test_publish_through_the_agent_reads_the_body_from_stdin(
    cli_tf: CliTaskForce, police: DeskAgent, ngo: DeskAgent
) -> None:
    result = subprocess.run(
        [
            str(TFSHARE),
            "publish",
            "alert",
            "--channel",
            "alerts",
            "--file",
            "-",
            "--json",
            *police.args(),
        ],
        cwd=cli_tf.root,
        env=clean_env(cli_tf.home),
        input=ALERT.read_bytes(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    msg_id = json.loads(result.stdout)["msg_id"]
    police.published.append(msg_id)
    assert wait_for(lambda: msg_id in ngo.inbox_ids(), SEEN, 0.2)


def test_web_open_without_the_web_inbox_exits_2_with_a_hint(police: DeskAgent) -> None:
    result = police.run("web", "open")
    assert result.returncode == 2, result.stderr
    assert is_error_with_hint(result) and "--web" in result.stderr
    assert result.stdout == ""


FAKE_AGENT = """
import os, socket, sys
path = sys.argv[1]
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(path)  # the file is root's, mode 0600: as a real agent's would be
os.chmod(path, 0o600)
os.setgid(65534)
os.setuid(65534)  # ... but the process answering on it is another user's (nobody)
server.listen()
print("listening", flush=True)
for _ in range(2):  # the client's probe, then its call
    conn, _ = server.accept()
    conn.settimeout(5)
    data = b""
    try:
        while chunk := conn.recv(65536):
            data += chunk
            if len(data) > 4 and b"SECRET-MARKER" in data:
                break
    except TimeoutError:
        pass
    print("received", len(data), b"SECRET-MARKER" in data, flush=True)
    conn.close()
"""


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to answer as another user")
def test_a_socket_answered_by_another_users_process_is_refused_before_anything_is_sent(
    cli_tf: CliTaskForce, tmp_path: Path
) -> None:
    """The socket file passes the owner and mode checks (root's, 0600), but the process
    behind it runs as nobody: the CLI must check its peer and send it nothing - not the
    Hello, not the message body in clear."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    body = json.loads(ALERT.read_text())
    body["title"] = "SECRET-MARKER in the clear"
    body_file = tmp_path / "body.json"
    body_file.write_text(json.dumps(body))
    fake = subprocess.Popen(
        [sys.executable, "-c", FAKE_AGENT, str(api.socket_path(state))],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert fake.stdout is not None
        assert fake.stdout.readline().strip() == "listening"
        desk = DeskAgent(cli_tf, "police", state, Background(None, Path(), Path()))  # type: ignore[arg-type]
        result = desk.run(
            "publish", "alert", "--channel", "alerts", "--file", body_file, "--json", timeout=30
        )
    finally:
        fake.kill()
        received, _ = fake.communicate(timeout=10)
    assert "True" not in received, f"the other user's process got the body: {received}"
    assert result.returncode == 6, result.stderr
    assert is_error_with_hint(result) and result.stdout == ""


# What a call through the agent must not load in the command's process (issue 13: no NATS
# client, no key derivation, no web framework, no audit service, no registry compiler).
CLIENT_CALL_MUST_NOT_IMPORT = (
    "nats",
    "aiohttp",
    "tfshare.transport",
    "tfshare.agent",
    "tfshare.audit.service",
    "tfshare.registry.profile",
    "tfshare.registry.schema",
    "tfshare.registry.book",
    "tfshare.workflows.live",
)


@pytest.mark.parametrize(
    "argv",
    [["inbox", "list", "--json"], ["agent", "status", "--json"], ["inbox", "quarantine"]],
    ids=["inbox-list", "agent-status", "quarantine"],
)
def test_a_call_through_the_agent_loads_no_nats_client_crypto_or_registry(
    police: DeskAgent, argv: list[str]
) -> None:
    """The command runs in-process after its modules were recorded: what it imported for
    the call is what a user waits for. (With --key, the agency is read from the key file's
    public header: no passphrase, no key derivation; with a profile, from its config.)"""
    script = (
        "import json, sys\n"
        "from tfshare.cli.app import run\n"
        "code = run(sys.argv[1:])\n"
        "print(json.dumps(sorted(sys.modules)), file=sys.stderr)\n"
        "sys.exit(code)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, *argv, *police.args()],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=police.tf.root,
        env=clean_env(police.tf.home),
    )
    assert result.returncode == 0, result.stderr
    modules = set(json.loads(result.stderr.strip().splitlines()[-1]))
    loaded = sorted(
        m
        for m in modules
        if any(m == h or m.startswith(h + ".") for h in CLIENT_CALL_MUST_NOT_IMPORT)
    )
    assert loaded == []
