"""The CLI's side of the desk: find the running agent of a profile and ask it.

Owns: reaching the socket (owner and mode checked before anything is sent), one conversation
per call, and turning the agent's answers and failures into what the CLI shows. Light on
purpose: plain ``socket`` and the ``api`` structs, no NATS client, no crypto, no key - a
command that goes through the agent starts in a fraction of a second.

``connect`` returns None when no agent runs for the profile (the command then works directly,
with the passphrase, as without an agent). An agent that stopped answering, a socket owned by
another user, or an agent of another API version are errors, never a silent fallback.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from tfshare.desk import api
from tfshare.desk.unixsock import address, agent_locked, peer_uid
from tfshare.errors import ExitCode, TfshareError, TrustError

CALL_TIMEOUT_S = 60.0  # a publish waits for the broker a few seconds at most
STARTING_WAIT_S = 10.0  # an agent unlocking its key (Argon2id) answers within seconds


class AgentUnavailable(TfshareError):
    """The agent stopped (or stopped answering) during a call."""

    exit_code = ExitCode.BROKER


class AgentFailed(TfshareError):
    """A failure the agent reported: its message, hint and exit code, as it would have
    printed them itself."""

    def __init__(self, failed: api.Failed) -> None:
        super().__init__(failed.message, hint=failed.hint, code=failed.code)
        known = {int(code) for code in ExitCode}
        self.exit_code = ExitCode(failed.exit_code if failed.exit_code in known else 1)
        self.kind = failed.kind


def _check_owner(path: Path, info: os.stat_result) -> None:
    if not stat.S_ISSOCK(info.st_mode):
        raise TrustError(
            f"{path} is not the agent's socket",
            hint="remove it; the agent creates its socket when it starts",
        )
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise TrustError(
            f"the agent socket {path} is owned by another user or open to others",
            hint="refused: only an agent run by you, with a socket only you can use, gets your "
            "messages; check who created it, remove it and start your own agent",
        )


@dataclass
class DeskClient:
    """The running agent at ``path``. ``expect_agency``: the agency the command acts for
    (its key); an agent of another agency is refused before any request is sent."""

    path: Path
    agency: str = ""
    expect_agency: str | None = None

    def _open(self, timeout: float | None) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            with address(self.path) as where:
                sock.connect(where)
            # The file's owner was checked; the process behind it is checked too, before a
            # byte is sent: only one running as this user gets the request (a message body).
            if peer_uid(sock) != os.getuid():
                raise TrustError(
                    f"the process answering on {self.path} runs as another user",
                    hint="refused, nothing was sent: only an agent run by you gets your "
                    "messages; find out who runs it, stop it, and start your own agent",
                )
        except (OSError, TrustError):
            sock.close()
            raise
        return sock

    def call(self, request: api.Request, *, timeout: float | None = CALL_TIMEOUT_S) -> api.Answer:
        """One request, one answer; a ``Failed`` answer is raised as ``AgentFailed``."""
        with self.conversation(request, timeout=timeout) as answers:
            return next(answers)

    @contextlib.contextmanager
    def conversation(
        self, request: api.Request, *, timeout: float | None = CALL_TIMEOUT_S
    ) -> Iterator[Iterator[api.Answer]]:
        try:
            sock = self._open(timeout)
        except OSError as exc:
            raise AgentUnavailable(
                f"the agent stopped answering ({exc.strerror or type(exc).__name__})",
                hint="see 'tfshare agent status'; start it again with 'tfshare agent run'",
            ) from None
        try:
            _send(sock, api.Hello(api.API_VERSION))
            welcome = _receive(sock, request)
            if isinstance(welcome, api.Failed):
                raise AgentFailed(welcome)
            if isinstance(welcome, api.Welcome):
                self.agency = welcome.agency
                if self.expect_agency is not None and welcome.agency != self.expect_agency:
                    raise TrustError(
                        f"the agent running for this state directory is {welcome.agency}'s, "
                        f"but the key given is {self.expect_agency}'s",
                        hint="refused, nothing was sent: give the state directory (--state) "
                        "or the profile of the agency whose key you use",
                    )
            _send(sock, request)  # only once the agent is known to be this agency's
            yield _answers(sock, request)
        finally:
            sock.close()


def _send(sock: socket.socket, message: api.Hello | api.Request) -> None:
    sock.sendall(api.frame(message))


def _recv_exactly(sock: socket.socket, size: int) -> bytes | None:
    parts: list[bytes] = []
    left = size
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            return None
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def _lost(request: api.Request, why: str) -> AgentUnavailable:
    hint = "see 'tfshare agent status' and start the agent again if it stopped"
    if isinstance(request, api.PublishRequest):
        hint = (
            "the message was either kept whole in the outbox (sent when the agent runs "
            "again) or not kept at all: nothing is half-sent. Check 'tfshare agent status' "
            "(outbox) after restarting the agent, before publishing it again"
        )
    return AgentUnavailable(f"the agent stopped during the call ({why})", hint=hint)


def _receive(sock: socket.socket, request: api.Request) -> api.Answer:
    try:
        prefix = _recv_exactly(sock, 4)
        if prefix is None:
            raise _lost(request, "connection closed")
        data = _recv_exactly(sock, api.frame_length(prefix))
    except TimeoutError:
        raise _lost(request, "no answer in time") from None
    except OSError as exc:
        raise _lost(request, exc.strerror or type(exc).__name__) from None
    except api.FrameError as exc:
        raise AgentUnavailable(
            f"the agent sent an answer this command cannot read ({exc})",
            hint="the agent and this command are of different releases: use the same one",
        ) from None
    if data is None:
        raise _lost(request, "connection closed")
    try:
        return api.decode_answer(data)
    except api.FrameError as exc:
        raise AgentUnavailable(
            f"the agent sent an answer this command cannot read ({exc})",
            hint="the agent and this command are of different releases: use the same one",
        ) from None


def _answers(sock: socket.socket, request: api.Request) -> Iterator[api.Answer]:
    while True:
        answer = _receive(sock, request)
        if isinstance(answer, api.Failed):
            raise AgentFailed(answer)
        yield answer


def connect(state_dir: Path, *, starting_wait_s: float = STARTING_WAIT_S) -> DeskClient | None:
    """The running agent of this state directory, or None if none runs. An agent that holds
    the profile's lock but does not answer yet (it is unlocking its key: about a second) is
    waited for up to ``starting_wait_s``, then reported (exit 4) - never worked around."""
    deadline = time.monotonic() + starting_wait_s
    while True:
        client = _reach(state_dir)
        if client is not _STARTING:
            return client
        if time.monotonic() >= deadline:
            raise _starting()
        time.sleep(0.1)


_STARTING: Final = DeskClient(Path("/nonexistent/starting"))  # "locked, not answering yet"


def _reach(state_dir: Path) -> DeskClient | None:
    path = api.socket_path(state_dir)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return _STARTING if agent_locked(state_dir) else None
    _check_owner(path, info)
    client = DeskClient(path)
    try:
        probe = client._open(timeout=2.0)
    except (ConnectionRefusedError, FileNotFoundError):
        # A socket left by an agent that died (work directly), or one about to be replaced.
        return _STARTING if agent_locked(state_dir) else None
    except OSError as exc:
        raise AgentUnavailable(
            f"the agent's socket {path} cannot be reached ({exc.strerror})",
            hint="see 'tfshare agent status'; restart the agent",
        ) from None
    probe.close()
    return client


def _starting() -> AgentUnavailable:
    return AgentUnavailable(
        "the agent of this profile is starting or not answering",
        hint="wait for it to ask for (or read) its passphrase and start; if it hangs, stop "
        "it and run 'tfshare agent run' again",
    )
