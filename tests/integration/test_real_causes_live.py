"""Errors that name the real cause (issue 12, item 5), on real nats-server processes:
``broker up`` on a port something else listens on says that the port is in use (it used to
connect to whatever answered there and report "refused the administrator's credentials"),
and leaves no --dir and no state database of its own behind; a start only counts when the
nats-server we started says, in its own log lines, that it listens on our port.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from livekit import free_port
from tfkit import TaskForce

from tfshare import broker as broker_module
from tfshare.broker import BrokerProcess
from tfshare.encoding import encode
from tfshare.errors import BrokerError
from tfshare.workflows.live import write_broker_config

TFSHARE = Path(sys.executable).parent / "tfshare"


def _files(tf: TaskForce, root: Path) -> tuple[Path, Path]:
    root.mkdir(parents=True, exist_ok=True)
    (root / "tf.roster").write_bytes(encode(tf.signed))
    (root / "tf.anchor").write_bytes(encode(tf.anchor))
    return root / "tf.roster", root / "tf.anchor"


def _broker_up(
    tf: TaskForce, root: Path, port: int, directory: Path
) -> subprocess.CompletedProcess[str]:
    roster, anchor = _files(tf, root)
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(root / "home"),
        "TFSHARE_HOME": str(root / "home"),
        "TFSHARE_TEST": "1",
        "LC_ALL": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    return subprocess.run(
        [str(TFSHARE), "broker", "up", "--roster", str(roster), "--anchor", str(anchor),
         "--dir", str(directory), "--port", str(port), "--state", str(root / "broker-state")],
        env=env, cwd=root, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip


@pytest.fixture
def occupied_port() -> Iterator[int]:
    """A port another program (a plain socket, not a nats-server) listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _says_port_in_use(result: subprocess.CompletedProcess[str], port: int) -> None:
    assert result.returncode == 4, result.stderr
    assert f"tfshare: error: port {port} on 127.0.0.1 is already in use" in result.stderr
    assert "tfshare: hint: stop it" in result.stderr and "--port" in result.stderr
    assert "credentials" not in result.stderr
    assert "Traceback" not in result.stderr


def test_broker_up_on_the_port_of_a_running_broker_says_the_port_is_in_use(
    broker: BrokerProcess, live_tf: TaskForce, tmp_path: Path
) -> None:
    """The issue's case: a second 'broker up' on the port of a running one. Before, it
    talked to the running broker, whose refusal of the new admin key was reported."""
    result = _broker_up(live_tf, tmp_path, broker.port, tmp_path / "second-broker")
    _says_port_in_use(result, broker.port)
    assert not (tmp_path / "second-broker").exists()  # the --dir it would have made
    assert not (tmp_path / "broker-state").exists()  # and its state database
    assert broker.process is not None and broker.process.poll() is None  # untouched


def test_broker_up_on_a_port_another_program_listens_on_makes_nothing(
    occupied_port: int, live_tf: TaskForce, tmp_path: Path
) -> None:
    result = _broker_up(live_tf, tmp_path, occupied_port, tmp_path / "b")
    _says_port_in_use(result, occupied_port)
    assert not (tmp_path / "b").exists()
    assert not (tmp_path / "broker-state").exists()


def test_a_failed_broker_up_keeps_a_directory_that_existed(
    occupied_port: int, live_tf: TaskForce, tmp_path: Path
) -> None:
    existing = tmp_path / "b"
    existing.mkdir()
    (existing / "operator-notes.txt").write_text("kept")
    _says_port_in_use(_broker_up(live_tf, tmp_path, occupied_port, existing), occupied_port)
    assert (existing / "operator-notes.txt").read_text() == "kept"


def test_a_start_counts_only_when_our_nats_server_listens_on_the_port(
    occupied_port: int, live_tf: TaskForce, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The port is taken between the check and nats-server's own bind (the check skipped
    here to make that race certain): the start must not take the other listener for ours,
    but read our nats-server's refusal (its pid's log lines) and say the port is in use."""
    monkeypatch.setattr(broker_module, "check_port_free", lambda host, port: None)
    config = write_broker_config(live_tf.trusted(), tmp_path / "b", port=occupied_port)
    process = BrokerProcess(
        config=config, host="127.0.0.1", port=occupied_port, log=tmp_path / "b" / "nats.log"
    )
    with pytest.raises(BrokerError, match=f"port {occupied_port} on 127.0.0.1 is already in use"):
        process.start()
    assert process.process is not None and process.process.poll() is not None  # not running


def test_a_broker_log_of_another_run_does_not_count_as_ready(
    live_tf: TaskForce, tmp_path: Path, occupied_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """nats.log already holds a ready server's lines for this port (an earlier run, or
    another broker started with the same --dir): they are not ours."""
    monkeypatch.setattr(broker_module, "check_port_free", lambda host, port: None)
    config = write_broker_config(live_tf.trusted(), tmp_path / "b", port=occupied_port)
    log = tmp_path / "b" / "nats.log"
    log.write_text(
        f"[1] 2026/01/01 00:00:00.000000 [INF] Listening for client connections on "
        f"127.0.0.1:{occupied_port}\n[1] 2026/01/01 00:00:00.000001 [INF] Server is ready\n"
    )
    process = BrokerProcess(config=config, host="127.0.0.1", port=occupied_port, log=log)
    with pytest.raises(BrokerError, match="already in use"):
        process.start()


def test_a_broker_on_a_free_port_starts_and_says_where(live_tf: TaskForce, tmp_path: Path) -> None:
    port = free_port()
    config = write_broker_config(live_tf.trusted(), tmp_path / "b", port=port)
    process = BrokerProcess(config=config, host="127.0.0.1", port=port, log=tmp_path / "nats.log")
    process.start()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            assert conn.recv(4096).startswith(b"INFO ")
    finally:
        process.stop()
