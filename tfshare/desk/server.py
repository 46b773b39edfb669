"""The desk's Unix socket, in the running agent.

Owns: the agent's lock on its state directory (one agent per profile: the one owner of the
socket, the inbox and the outbox), the socket file (created 0600, owner checked), the peer
check (only this user's processes), and one conversation per connection (``api``).

Long socket paths are bound as ``unixsock.address`` says.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import structlog

from tfshare.desk import api
from tfshare.desk.service import Desk
from tfshare.desk.unixsock import address, peer_uid
from tfshare.errors import ExitCode, TfshareError, UsageError

log = structlog.get_logger("tfshare.desk")


FELL_BEHIND = api.Failed(
    "this feed fell too far behind the messages arriving and was ended by the agent",
    "the messages are in the inbox: see 'tfshare inbox list', and start listen again (read "
    "its output as it comes: a paused listen holds the agent's memory)",
    int(ExitCode.BROKER),
    "FellBehind",
)


class AgentRunning(TfshareError):
    """Another agent holds this profile's state directory."""

    exit_code = ExitCode.USAGE


@dataclass
class AgentLock:
    """The exclusive lock on ``agent.lock`` in the state directory, held while the agent
    runs (the kernel releases it if the process dies: no stale lock)."""

    fd: int

    def release(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def hold_lock(state_dir: Path) -> AgentLock:
    """Take the profile's agent lock, or refuse: one agent per profile."""
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = api.lock_path(state_dir)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        os.close(fd)
        raise AgentRunning(
            f"an agent already runs for this profile (pid {holder or 'unknown'})",
            hint="one agent per profile owns its inbox and outbox: use that one "
            "('tfshare agent status'), or stop it first",
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return AgentLock(fd)


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    size = api.frame_length(await reader.readexactly(4))
    return await reader.readexactly(size)


def _failed(exc: TfshareError) -> api.Failed:
    return api.Failed(exc.message, exc.hint, int(exc.exit_code), type(exc).__name__, exc.code)


@dataclass
class DeskServer:
    """The socket server; ``close`` stops it and removes the socket file."""

    desk: Desk
    path: Path
    server: asyncio.AbstractServer | None = None
    _follows: set[asyncio.Task[None]] | None = None

    async def start(self) -> None:
        self._follows = set()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a stale socket of an agent that died: ours now (locked)
        old_umask = os.umask(0o177)  # created 0600, never for a moment wider
        try:
            with address(self.path) as where:
                self.server = await asyncio.start_unix_server(self._converse, path=where)
        finally:
            os.umask(old_umask)
        os.chmod(self.path, stat.S_IRUSR | stat.S_IWUSR)
        log.info("desk_listening", socket=str(self.path))

    async def close(self) -> None:
        self.desk.close()
        if self.server is not None:
            self.server.close()
            for task in list(self._follows or ()):
                task.cancel()
            await self.server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        try:
            if sock is None or peer_uid(sock) != os.getuid():
                log.warning("desk_foreign_peer")  # the 0600 socket should make this impossible
                return
            await self._answer(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client went away: nothing to answer
        except api.FrameError as exc:
            log.warning("desk_bad_frame", reason=str(exc))
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # a bug: logged; this conversation ends, the agent goes on
            log.error("desk_error", error=type(exc).__name__)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hello = api.decode_request(await _read_frame(reader))
        if not isinstance(hello, api.Hello) or hello.version != api.API_VERSION:
            version = hello.version if isinstance(hello, api.Hello) else "none"
            writer.write(
                api.frame(
                    api.Failed(
                        f"the agent speaks desk API version {api.API_VERSION}, this command "
                        f"version {version}",
                        "the tfshare command and the running agent are of different releases: "
                        "restart the agent after upgrading, or use the same release",
                        int(ExitCode.USAGE),
                        "ApiVersion",
                    )
                )
            )
            await writer.drain()
            return
        desk = self.desk
        writer.write(api.frame(api.Welcome(api.API_VERSION, desk.agency_id, desk.taskforce)))
        request = api.decode_request(await _read_frame(reader))
        if isinstance(request, api.FollowRequest):
            await self._follow(request, reader, writer)
            return
        try:
            answer = await self._dispatch(request)
        except TfshareError as exc:
            answer = _failed(exc)
        except Exception as exc:  # a bug: said as such, and the agent goes on serving
            log.error("desk_error", request=type(request).__name__, error=type(exc).__name__)
            answer = api.Failed(
                f"internal error in the agent ({type(exc).__name__})",
                "this is a bug in tfshare: see the agent's log and report it",
                int(ExitCode.ERROR),
            )
        try:
            framed = api.frame(answer)
        except api.FrameError:
            # A search over large bodies can exceed one frame: say so, rather than close the
            # connection (which the CLI can only read as an agent that died, exit 4).
            framed = api.frame(
                api.Failed(
                    f"the answer is too large to pass from the agent ({api.MAX_FRAME} bytes "
                    "at most)",
                    "narrow the request (a longer search text) and try again",
                    int(ExitCode.USAGE),
                )
            )
        writer.write(framed)
        await writer.drain()

    async def _dispatch(self, request: api.Hello | api.Request) -> api.Answer:
        desk = self.desk
        match request:
            case api.StatusRequest():
                await desk.refresh_backlog()
                return desk.status()
            case api.PublishRequest():
                return await desk.publish(request)
            case api.InboxListRequest(limit=limit):
                return desk.inbox(limit)
            case api.InboxShowRequest(ref=ref):
                return desk.message(ref)
            case api.InboxSearchRequest(text=text):
                return desk.search(text)
            case api.QuarantineRequest(limit=limit):
                return desk.quarantine(limit)
            case api.SchemaRequest(kind=kind):
                return desk.schema_document(kind)
            case api.DiscloseRequest(ref=ref):
                return desk.disclose(ref)
            case api.LoginRequest():
                return desk.login_link()
        raise UsageError("not a desk request", hint="use the tfshare command of this release")

    async def _follow(
        self,
        request: api.FollowRequest,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        """Stream each stored message until the client goes away (it sends nothing more:
        end of file on its side ends the stream)."""
        task = asyncio.current_task()
        if task is not None and self._follows is not None:
            self._follows.add(task)
        gone = asyncio.ensure_future(reader.read(1))
        try:
            async with self.desk.subscribe() as feed:
                if request.include_existing:
                    for n, view in enumerate(reversed(self.desk.messages(limit=100_000))):
                        writer.write(api.frame(api.FeedItem(view)))
                        if n % 64 == 63:
                            await writer.drain()  # the client's pace, not the whole inbox
                    await writer.drain()
                items = aiter(feed)
                while True:
                    nxt = asyncio.ensure_future(anext(items))
                    done, _ = await asyncio.wait({nxt, gone}, return_when=asyncio.FIRST_COMPLETED)
                    if gone in done:
                        nxt.cancel()
                        return
                    try:
                        item = nxt.result()
                    except StopAsyncIteration:
                        if feed.dropped:
                            writer.write(api.frame(FELL_BEHIND))
                            await writer.drain()
                        return
                    writer.write(api.frame(item))
                    await writer.drain()
        finally:
            gone.cancel()
            if task is not None and self._follows is not None:
                self._follows.discard(task)


async def serve(desk: Desk, state_dir: Path) -> DeskServer:
    server = DeskServer(desk, api.socket_path(state_dir))
    await server.start()
    return server
