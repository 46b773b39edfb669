"""Files on disk: bounded reads and atomic, permission-correct writes.

Owns: ``read_bytes`` (refuses directories, missing files and anything larger than the caller's
limit, with a message naming the path) and ``write_atomic`` (temp file in the same directory,
fsync, rename, fsync of the directory: a crash leaves the old file or the new one, never half
of either). Secret files are created 0600 from the first byte.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

from tfshare.errors import InputError


def read_bytes(path: Path, *, what: str, limit: int, oversize_ok: bool = False) -> bytes:
    """Read a whole file of at most ``limit`` bytes; errors say which file and why.

    With ``oversize_ok`` a larger file is not an error: its first ``limit + 1`` bytes are
    returned so that the caller's own size check reports it (envelopes: E_TOO_LARGE).
    """
    try:
        # O_NONBLOCK: a FIFO put where a file belongs must not hang the command.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            mode = os.fstat(fd).st_mode
            if stat.S_ISDIR(mode):
                raise IsADirectoryError
            if not stat.S_ISREG(mode):
                raise InputError(
                    f"{what} {str(path)!r} is not a regular file", hint="give the file itself"
                )
            data = _read_all(fd, limit + 1)
        finally:
            os.close(fd)
    except FileNotFoundError:
        raise InputError(f"{what} {str(path)!r} does not exist", hint="check the path") from None
    except IsADirectoryError:
        raise InputError(
            f"{what} {str(path)!r} is a directory", hint="give the file inside it"
        ) from None
    except PermissionError:
        raise InputError(
            f"cannot read {what} {str(path)!r}: permission denied",
            hint="check the file's owner and mode",
        ) from None
    except OSError as exc:
        raise InputError(
            f"cannot read {what} {str(path)!r}: {exc.strerror}", hint="check the path"
        ) from None
    if len(data) > limit and not oversize_ok:
        raise InputError(
            f"{what} {str(path)!r} is larger than {limit} bytes",
            hint=f"this does not look like a {what}",
        )
    return data


def _read_all(fd: int, most: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < most:
        chunk = os.read(fd, min(1 << 20, most - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def write_atomic(path: Path, data: bytes, *, secret: bool = False, overwrite: bool = True) -> None:
    """Write ``data`` to ``path`` atomically; mode 0600 if ``secret`` (else 0644).

    With ``overwrite=False`` an existing file is never replaced (keys are not clobbered).
    """
    directory = path.parent
    if not directory.is_dir():
        raise InputError(
            f"directory {str(directory)!r} does not exist", hint="create it first, or fix the path"
        )
    if not overwrite and path.exists():
        raise InputError(
            f"{str(path)!r} already exists; refusing to overwrite it",
            hint="move the old file away first if you really mean to replace it",
        )
    tmp = directory / f".{path.name}.{secrets.token_hex(6)}.tmp"
    mode = 0o600 if secret else 0o644
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, mode)  # the umask may have taken bits away from a public file
            if overwrite:
                os.replace(tmp, path)
            else:
                # link() fails if the target appeared meanwhile: no race can clobber a key.
                os.link(tmp, path)
                os.unlink(tmp)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except FileExistsError:
        raise InputError(
            f"{str(path)!r} already exists; refusing to overwrite it",
            hint="move the old file away first if you really mean to replace it",
        ) from None
    except PermissionError:
        raise InputError(
            f"cannot write {str(path)!r}: permission denied", hint="check the directory's mode"
        ) from None
    except OSError as exc:
        raise InputError(
            f"cannot write {str(path)!r}: {exc.strerror}",
            hint="check free disk space and the path",
        ) from None
