"""What both ends of the desk's socket share: reaching a socket by a path that may be too
long for a Unix socket address, the peer's uid, and whether the profile's agent lock is held.

Owns nothing but these three; standard library only (the CLI side must stay light).

A path to the socket can exceed the 107 bytes a ``sockaddr_un`` holds (deep test or home
directories): the socket is then reached through ``/proc/self/fd/N/agent.sock``, N being an
open descriptor of its directory, which names the same file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

from tfshare.desk import api

MAX_SUN_PATH = 107


@contextlib.contextmanager
def address(path: Path) -> Iterator[str]:
    """An address for the socket at ``path`` that fits a Unix socket address."""
    text = str(path)
    if len(text.encode()) <= MAX_SUN_PATH:
        yield text
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end (SO_PEERCRED)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def agent_locked(state_dir: Path) -> bool:
    """Whether a live process holds the profile's agent lock (an agent starting, or one that
    stopped answering): the kernel drops the lock of a process that died."""
    try:
        fd = os.open(api.lock_path(state_dir), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
