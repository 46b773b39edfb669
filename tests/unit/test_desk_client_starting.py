"""A command that finds its agent starting (the profile locked, no socket yet: the agent is
unlocking its key) waits for it instead of failing at once: ``make demo`` published right
after starting its agents and got "starting or not answering" (exit 4)."""

from __future__ import annotations

import fcntl
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from tfshare.desk import api, client


def _serve_after(path: Path, delay_s: float, stop: threading.Event) -> threading.Thread:
    """A listener on the socket path after ``delay_s``: what the agent opens once its key is
    unlocked (the probe of ``client.connect`` only connects)."""

    def run() -> None:
        time.sleep(delay_s)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(path))
        os.chmod(path, 0o600)
        server.listen(4)
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            conn.close()
        server.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_command_waits_for_an_agent_that_is_starting(tmp_path: Path) -> None:
    state = tmp_path / "s"
    state.mkdir(mode=0o700)
    fd = os.open(api.lock_path(state), os.O_RDWR | os.O_CREAT, 0o600)
    stop = threading.Event()
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # the agent holds the profile
        thread = _serve_after(api.socket_path(state), 0.5, stop)
        found = client.connect(state, starting_wait_s=10.0)
        assert found is not None and found.path == api.socket_path(state)
    finally:
        stop.set()
        os.close(fd)
    thread.join(timeout=5)


def test_an_agent_that_never_answers_is_reported_after_the_wait(tmp_path: Path) -> None:
    state = tmp_path / "s"
    state.mkdir(mode=0o700)
    fd = os.open(api.lock_path(state), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(client.AgentUnavailable, match="starting or not answering"):
            client.connect(state, starting_wait_s=0.3)
    finally:
        os.close(fd)


def test_no_lock_and_no_socket_is_no_agent(tmp_path: Path) -> None:
    assert client.connect(tmp_path, starting_wait_s=0.3) is None
