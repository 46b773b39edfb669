"""The live commands as real subprocesses: ``tfshare broker up``, ``agent run``, ``publish`` and
``inbox list|show``, on a task force built with the CLI itself.

The module's task force (coord coordinator; police and labour write "alerts", ngo and labour
read it) shares one TFSHARE_HOME; one broker and ngo's agent run for the whole module. Every
publishing test passes its own ``--state`` so outboxes never mix.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from livekit import free_port

from tfshare.store import StateStore

TFSHARE = Path(sys.executable).parent / "tfshare"
REPO = Path(__file__).resolve().parents[2]
ALERT = REPO / "examples" / "alert.json"
TASKFORCE = "tf-north"
AGENCIES = ("coord", "police", "ngo", "labour")
MSG_ID = re.compile(r"^msg_id\s+([0-9a-f]{32})$", re.MULTILINE)


def clean_env(home: Path) -> dict[str, str]:
    """A minimal environment (as in tests/cli): nothing of the caller's TFSHARE_* leaks in."""
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(home),
        "TFSHARE_HOME": str(home),
        "TFSHARE_KDF": "insecure-test",
        "TFSHARE_TEST": "1",  # test keys: no warning about their insecure test cost
        "LC_ALL": "C.UTF-8",
        "PYTHONIOENCODING": "utf-8",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


@dataclass(frozen=True)
class CliTaskForce:
    """The module's task force directory and how to run tfshare in it."""

    root: Path

    @property
    def home(self) -> Path:
        return self.root / "home"

    def trust(self) -> list[str]:
        return ["--roster", str(self.root / "tf.roster"), "--anchor", str(self.root / "tf.anchor")]

    def creds(self, agency: str) -> list[str]:
        keys = self.root / "keys"
        return [
            "--key",
            str(keys / f"{agency}.key"),
            "--passphrase-file",
            str(keys / f"{agency}.pass"),
        ]

    def run(
        self, *args: str | os.PathLike[str], timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run tfshare once and wait; never raises on a non-zero exit code."""
        return subprocess.run(
            [str(TFSHARE), *(os.fspath(a) for a in args)],
            cwd=self.root,
            env=clean_env(self.home),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            timeout=timeout,
            check=False,
        )

    def spawn(self, name: str, *args: str | os.PathLike[str]) -> Background:
        """Start tfshare in the background, its own session, stdout/stderr into files."""
        out, err = self.root / f"{name}.out", self.root / f"{name}.err"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            process = subprocess.Popen(
                [str(TFSHARE), *(os.fspath(a) for a in args)],
                cwd=self.root,
                env=clean_env(self.home),
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )
        return Background(process, out, err)

    def publish(
        self,
        state: Path,
        url: str,
        *extra: str,
        body: Path = ALERT,
        channel: str = "alerts",
        roster: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """police publishes an alert (``roster``: another roster than the module's)."""
        trust = self.trust()
        if roster is not None:
            trust[1] = str(roster)
        return self.run(
            "publish",
            "alert",
            "--channel",
            channel,
            "--file",
            body,
            *self.creds("police"),
            *trust,
            "--state",
            state,
            "--server",
            url,
            *extra,
        )

    def inbox_ids(self, agency: str) -> set[str]:
        result = ok(self.run("inbox", "list", "--json", *self.creds(agency), *self.trust()))
        return {m["msg_id"] for m in json.loads(result.stdout)["messages"]}


@dataclass
class Background:
    process: subprocess.Popen[bytes]
    out: Path
    err: Path

    def stderr(self) -> str:
        return self.err.read_text(encoding="utf-8", errors="replace")

    def wait_stderr(self, text: str, timeout: float = 15) -> None:
        assert wait_for(lambda: text in self.stderr() or self.process.poll() is not None, timeout)
        assert text in self.stderr(), f"exit {self.process.poll()}: {self.stderr()}"

    def signal_and_wait(self, signum: int, timeout: float) -> tuple[int | None, float]:
        """Send ``signum`` to the process (not its group); (exit code or None, seconds)."""
        started = time.monotonic()
        self.process.send_signal(signum)
        try:
            code: int | None = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
        return code, time.monotonic() - started

    def cleanup(self) -> None:
        """Stop politely; if that fails, hard (the session we created: tfshare, nats-server)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=8)
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"{result.args}: exit {result.returncode}\n{result.stderr}"
    return result


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def msg_id_of(result: subprocess.CompletedProcess[str]) -> str:
    match = MSG_ID.search(result.stdout)
    assert match is not None, result.stdout
    return match.group(1)


def outbox(state: Path) -> list[str]:
    store = StateStore(state / "state.db")
    try:
        return [msg_id.hex() for msg_id, _, _ in store.outbox()]
    finally:
        store.close()


@pytest.fixture(scope="module")
def cli_tf(tmp_path_factory: pytest.TempPathFactory) -> CliTaskForce:
    """keys init for every agency, roster init/add/grant/sign/anchor, as in tests/cli."""
    tf = CliTaskForce(tmp_path_factory.mktemp("live-cli"))
    keys = tf.root / "keys"
    keys.mkdir()
    for agency in AGENCIES:
        (keys / f"{agency}.pass").write_text(f"{agency} passphrase {os.urandom(4).hex()}\n")
        ok(
            tf.run(
                "keys",
                "init",
                agency,
                "--dir",
                keys,
                "--name",
                f"{agency.title()} agency",
                "--passphrase-file",
                keys / f"{agency}.pass",
            )
        )
    roster = tf.root / "tf.roster"
    ok(
        tf.run(
            "roster",
            "init",
            "--taskforce",
            TASKFORCE,
            "--coordinator",
            keys / "coord.card",
            "--threshold",
            "1",
            "--out",
            roster,
        )
    )
    for agency in ("police", "ngo", "labour"):
        ok(tf.run("roster", "add", roster, keys / f"{agency}.card"))
    ok(tf.run("roster", "grant", roster, "police", "--channel", "alerts", "--write"))
    ok(tf.run("roster", "grant", roster, "ngo", "--channel", "alerts", "--read"))
    ok(tf.run("roster", "grant", roster, "labour", "--channel", "alerts", "--read", "--write"))
    ok(tf.run("roster", "sign", roster, *tf.creds("coord")))
    ok(tf.run("roster", "anchor", roster, "--out", tf.root / "tf.anchor"))
    return tf


@pytest.fixture(scope="module")
def newer_roster(cli_tf: CliTaskForce) -> Path:
    """A copy of the roster, re-signed after granting police read+write on a new channel
    "cases": a roster the running broker (configured from the old one) does not know yet."""
    roster = cli_tf.root / "newer.roster"
    shutil.copyfile(cli_tf.root / "tf.roster", roster)
    ok(cli_tf.run("roster", "grant", roster, "police", "--channel", "cases", "--read", "--write"))
    ok(cli_tf.run("roster", "sign", roster, *cli_tf.creds("coord")))
    return roster


@dataclass(frozen=True)
class LiveBroker:
    url: str
    port: int
    process: Background


def start_broker(tf: CliTaskForce, name: str) -> LiveBroker:
    port = free_port()
    process = tf.spawn(
        name, "broker", "up", *tf.trust(), "--dir", tf.root / name, "--port", str(port)
    )
    # The note comes after the stream and consumers are provisioned.
    process.wait_stderr("listening on")
    return LiveBroker(f"nats://127.0.0.1:{port}", port, process)


@pytest.fixture(scope="module")
def broker(cli_tf: CliTaskForce) -> Iterator[LiveBroker]:
    """``tfshare broker up`` for the module."""
    live = start_broker(cli_tf, "broker")
    try:
        yield live
    finally:
        live.process.cleanup()


@pytest.fixture(scope="module")
def reader(cli_tf: CliTaskForce, broker: LiveBroker) -> Iterator[Background]:
    """ngo's ``tfshare agent run`` on the module's broker."""
    agent = cli_tf.spawn(
        "agent-ngo", "agent", "run", *cli_tf.creds("ngo"), *cli_tf.trust(), "--server", broker.url
    )
    agent.wait_stderr("consuming from")
    try:
        yield agent
    finally:
        agent.cleanup()


def test_broker_up_listens_and_reports_its_url(broker: LiveBroker) -> None:
    """``broker up`` runs a nats-server on --port and says so with the task force's name."""
    assert listening(broker.port)
    assert f"broker for task force {TASKFORCE} listening on {broker.url}" in (
        broker.process.stderr()
    )


def test_publish_exits_0_and_prints_the_msg_id(
    cli_tf: CliTaskForce, broker: LiveBroker, tmp_path: Path
) -> None:
    """``publish alert`` to a running broker exits 0 and prints the msg_id and subject."""
    result = ok(cli_tf.publish(tmp_path / "police", broker.url))
    assert re.fullmatch(r"[0-9a-f]{32}", msg_id_of(result))
    assert f"tf.{TASKFORCE}.ch.alerts.police" in result.stdout
    assert "published alert to" in result.stderr


def test_published_alert_reaches_the_reader_inbox(
    cli_tf: CliTaskForce, broker: LiveBroker, reader: Background, tmp_path: Path
) -> None:
    """Within a few seconds the reader's ``inbox list --json`` shows the published msg_id."""
    msg_id = msg_id_of(ok(cli_tf.publish(tmp_path / "police", broker.url)))
    assert wait_for(lambda: msg_id in cli_tf.inbox_ids("ngo"), timeout=10, interval=0.2)


def test_inbox_show_prints_the_body(
    cli_tf: CliTaskForce, broker: LiveBroker, reader: Background, tmp_path: Path
) -> None:
    """``inbox show MSG_ID`` decrypts the stored message: the body of examples/alert.json."""
    msg_id = msg_id_of(ok(cli_tf.publish(tmp_path / "police", broker.url)))
    assert wait_for(lambda: msg_id in cli_tf.inbox_ids("ngo"), timeout=10, interval=0.2)
    shown = json.loads(
        ok(cli_tf.run("inbox", "show", msg_id, *cli_tf.creds("ngo"), *cli_tf.trust())).stdout
    )
    expected = json.loads(ALERT.read_text())
    assert (shown["msg_id"], shown["sender"], shown["channel"]) == (msg_id, "police", "alerts")
    assert shown["body"]["title"] == expected["title"]
    assert shown["body"]["severity"] == expected["severity"]


def test_inbox_show_takes_a_unique_prefix_of_eight_digits_as_the_readme_promises(
    cli_tf: CliTaskForce, broker: LiveBroker, reader: Background, tmp_path: Path
) -> None:
    """``inbox show`` with the first 8 hex digits (and as ``SENDER:PREFIX``) shows the full
    message; 7 digits are not a message id (exit 2, refused before the passphrase)."""
    msg_id = msg_id_of(ok(cli_tf.publish(tmp_path / "police", broker.url)))
    assert wait_for(lambda: msg_id in cli_tf.inbox_ids("ngo"), timeout=10, interval=0.2)
    for ref in (msg_id[:8], msg_id[:8].upper(), f"police:{msg_id[:12]}"):
        shown = json.loads(
            ok(cli_tf.run("inbox", "show", ref, *cli_tf.creds("ngo"), *cli_tf.trust())).stdout
        )
        assert shown["msg_id"] == msg_id
    short = cli_tf.run("inbox", "show", msg_id[:7], *cli_tf.creds("ngo"), *cli_tf.trust())
    assert short.returncode == 2
    assert "tfshare: error:" in short.stderr and "tfshare: hint:" in short.stderr
    assert "Traceback" not in short.stderr


def test_inbox_search_finds_words_in_the_decrypted_bodies(
    cli_tf: CliTaskForce, broker: LiveBroker, reader: Background, tmp_path: Path
) -> None:
    """``inbox search`` matches words inside the encrypted-at-rest bodies, and only those."""
    msg_id = msg_id_of(ok(cli_tf.publish(tmp_path / "police", broker.url)))
    assert wait_for(lambda: msg_id in cli_tf.inbox_ids("ngo"), timeout=10, interval=0.2)
    found = json.loads(
        ok(
            cli_tf.run(
                "inbox", "search", "ESCORT AD", "--json", *cli_tf.creds("ngo"), *cli_tf.trust()
            )
        ).stdout
    )
    assert msg_id in {m["msg_id"] for m in found["matches"]}
    none = json.loads(
        ok(
            cli_tf.run(
                "inbox",
                "search",
                "no-such-words-anywhere",
                "--json",
                *cli_tf.creds("ngo"),
                *cli_tf.trust(),
            )
        ).stdout
    )
    assert none == {"matches": []}


def test_agent_exits_0_on_sigterm_with_its_summary(
    cli_tf: CliTaskForce, broker: LiveBroker, tmp_path: Path
) -> None:
    """SIGTERM stops a running agent within 5 s, exit 0, with its summary on stderr."""
    agent = cli_tf.spawn(
        "agent-labour",
        "agent",
        "run",
        *cli_tf.creds("labour"),
        *cli_tf.trust(),
        "--server",
        broker.url,
    )
    try:
        agent.wait_stderr("consuming from")
        # Once it has delivered a message, it is certainly inside its loop.
        msg_id = msg_id_of(ok(cli_tf.publish(tmp_path / "police", broker.url)))
        assert wait_for(lambda: msg_id in cli_tf.inbox_ids("labour"), timeout=10, interval=0.2)
        code, seconds = agent.signal_and_wait(signal.SIGTERM, timeout=5)
        assert code == 0, agent.stderr()
        assert seconds < 5
        summary = re.search(
            r"agent stopped: (\d+) delivered, 0 duplicates, 0 rejected \(0 unsigned junk\), "
            r"0 processing failures, 0 sent from the outbox",
            agent.stderr(),
        )
        assert summary is not None, agent.stderr()
        assert int(summary.group(1)) == len(cli_tf.inbox_ids("labour"))
    finally:
        agent.cleanup()


def test_broker_exits_0_on_sigint_and_stops_nats_server(cli_tf: CliTaskForce) -> None:
    """SIGINT to ``broker up`` stops it and its nats-server within 5 s, exit 0."""
    live = start_broker(cli_tf, "broker-sigint")
    try:
        assert listening(live.port)
        code, seconds = live.process.signal_and_wait(signal.SIGINT, timeout=5)
        assert code == 0, live.process.stderr()
        assert seconds < 5
        assert "broker stopped" in live.process.stderr()
        assert not listening(live.port)
    finally:
        live.process.cleanup()


def test_broker_up_fails_when_its_nats_server_dies(cli_tf: CliTaskForce) -> None:
    """If its nats-server dies (crash, OOM kill), ``broker up`` exits non-zero with an error."""
    # A service manager must see a failure here, not a clean stop.
    live = start_broker(cli_tf, "broker-crash")
    try:
        pid = live.process.process.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        servers = [
            c for c in children if Path(f"/proc/{c}/comm").read_text().strip() == "nats-server"
        ]
        assert len(servers) == 1, children
        os.kill(int(servers[0]), signal.SIGKILL)
        try:
            code: int | None = live.process.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        assert code is not None, "broker up kept running without its nats-server"
        assert code != 0, live.process.stderr()
        assert "tfshare: error: " in live.process.stderr()
    finally:
        live.process.cleanup()


def test_publish_without_broker_queues_and_the_next_publish_sends_both(
    cli_tf: CliTaskForce, broker: LiveBroker, reader: Background, tmp_path: Path
) -> None:
    """With no broker, publish queues (exit 0); the next one sends both; the reader gets both."""
    state = tmp_path / "police"
    queued = cli_tf.publish(state, f"nats://127.0.0.1:{free_port()}")
    assert queued.returncode == 0, queued.stderr
    assert "queued" in queued.stderr
    first = msg_id_of(queued)
    assert outbox(state) == [first]
    sent = json.loads(ok(cli_tf.publish(state, broker.url, "--json")).stdout)
    assert (sent["queued"], sent["also_sent_from_outbox"]) == (False, 1)
    assert outbox(state) == []
    assert wait_for(
        lambda: {first, sent["msg_id"]} <= cli_tf.inbox_ids("ngo"), timeout=10, interval=0.2
    )


def test_publish_no_queue_without_broker_exits_4(cli_tf: CliTaskForce, tmp_path: Path) -> None:
    """``--no-queue`` with no broker exits 4 with tfshare: error/hint lines and queues nothing."""
    state = tmp_path / "police"
    result = cli_tf.publish(state, f"nats://127.0.0.1:{free_port()}", "--no-queue")
    assert result.returncode == 4, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith("tfshare: error: ")
    assert lines[1].startswith("tfshare: hint: ")
    assert "queued" not in result.stderr
    assert outbox(state) == []


def test_publish_invalid_body_exits_5_and_queues_nothing(
    cli_tf: CliTaskForce, tmp_path: Path
) -> None:
    """A body that does not match tf.alert/1 exits 5 before anything is sealed or queued."""
    body = json.loads(ALERT.read_text())
    body["severity"] = "apocalyptic"
    del body["title"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(body))
    state = tmp_path / "police"
    result = cli_tf.publish(state, f"nats://127.0.0.1:{free_port()}", body=bad)
    assert result.returncode == 5, result.stderr
    assert result.stderr.startswith("tfshare: error: ")
    assert "tfshare: hint: " in result.stderr
    assert result.stdout == ""
    assert outbox(state) == []


def test_publish_refused_by_the_broker_is_reported_as_refused(
    cli_tf: CliTaskForce, broker: LiveBroker, newer_roster: Path, tmp_path: Path
) -> None:
    """A publish the broker refuses exits 4 "permission denied", not "queued: unreachable"."""
    # The broker's configuration predates the roster that lets police write on "cases".
    roster = newer_roster
    state = tmp_path / "police"
    result = cli_tf.publish(state, broker.url, channel="cases", roster=roster)
    assert "queued" not in result.stderr, result.stderr
    assert result.returncode == 4, result.stderr
    assert "permission denied" in result.stderr


def test_a_message_the_broker_refuses_does_not_block_later_publishes(
    cli_tf: CliTaskForce,
    broker: LiveBroker,
    reader: Background,
    newer_roster: Path,
    tmp_path: Path,
) -> None:
    """After the broker refused one message, a publish on a permitted channel still goes out."""
    # The refused envelope sits at the head of the outbox; it must not hold the rest up.
    roster = newer_roster
    state = tmp_path / "police"
    cli_tf.publish(state, broker.url, channel="cases", roster=roster)
    result = ok(cli_tf.publish(state, broker.url, "--json", roster=roster))
    sent = json.loads(result.stdout)
    assert sent["queued"] is False, result.stderr
    assert wait_for(lambda: sent["msg_id"] in cli_tf.inbox_ids("ngo"), timeout=10, interval=0.2)
