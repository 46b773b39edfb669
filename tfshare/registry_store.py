"""Registry records on disk: the local cache the CLI and agents read.

Owns: ``RegistryStore`` (the interface a NATS KV bucket will also implement: create-only
versions, a compare-and-swap ``latest`` pointer) and ``DirectoryStore``, which keeps
``DIR/<subject>/<version>.tfschema`` files and ``DIR/<subject>/latest``, plus pending records
awaiting more coordinator signatures under ``DIR/.pending/``.

Versions are immutable: ``create`` never replaces a file; only a file that failed verification
is ever moved aside (``set_aside``), to make room for the verified record of its version.
``set_latest`` takes the revision it expects, so two registrars racing cannot both move the
pointer.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from tfshare.errors import InputError, ValidationError
from tfshare.files import read_bytes, write_atomic
from tfshare.registry.profile import MAX_DOCUMENT_BYTES
from tfshare.registry.schema import SUBJECT

MAX_RECORD_FILE = MAX_DOCUMENT_BYTES + 64 * 1024
VERSION_FILE = re.compile(r"[1-9][0-9]{0,5}\.tfschema")


class Conflict(ValidationError):
    """A version already exists, or ``latest`` moved since it was read."""


class RegistryStore(Protocol):
    def get(self, subject: str, version: int) -> bytes | None: ...
    def create(self, subject: str, version: int, data: bytes) -> None: ...
    def latest(self, subject: str) -> tuple[int, int] | None: ...
    def set_latest(self, subject: str, version: int, *, expected_revision: int) -> int: ...
    def subjects(self) -> list[str]: ...
    def versions(self, subject: str) -> list[int]: ...


def _check_subject(subject: str) -> str:
    if not SUBJECT.match(subject):
        raise ValidationError(f"{subject!r} is not a schema subject", hint="e.g. tf.alert")
    return subject


class DirectoryStore:
    """``RegistryStore`` in a directory (default ``$TFSHARE_HOME/registry``)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise InputError(
                f"cannot use registry directory {str(self.root)!r}: {exc.strerror}",
                hint="check the path and its permissions, or pass --registry",
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def path_of(self, subject: str, version: int) -> Path:
        """Where ``subject/version`` is (or would be) kept."""
        return self.root / _check_subject(subject) / f"{version}.tfschema"

    def get(self, subject: str, version: int) -> bytes | None:
        path = self.path_of(subject, version)
        if not path.exists():
            return None
        return read_bytes(path, what="schema record", limit=MAX_RECORD_FILE)

    def create(self, subject: str, version: int, data: bytes) -> None:
        with self._locked():
            path = self.path_of(subject, version)
            if path.exists():
                raise Conflict(
                    f"{subject}/{version} is already registered; versions never change",
                    hint="register the change as the next version",
                )
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, data, overwrite=False)

    def set_aside(self, subject: str, version: int, *, stamp: int) -> Path | None:
        """Move a version's file out of the way (to ``<version>.tfschema.<stamp>.bad``, which
        ``versions`` never lists) so a verified record can take its place; returns where it
        went, or None if there was none. Only for a file that failed verification: it is kept,
        not deleted, as evidence of what was there."""
        with self._locked():
            path = self.path_of(subject, version)
            if not path.exists():
                return None
            aside = path.with_name(f"{path.name}.{stamp}.bad")
            try:
                os.replace(path, aside)
            except OSError as exc:
                raise InputError(
                    f"cannot move {str(path)!r} aside: {exc.strerror}",
                    hint=f"remove {str(path)!r} by hand; it failed verification",
                ) from None
            return aside

    def latest(self, subject: str) -> tuple[int, int] | None:
        path = self.root / _check_subject(subject) / "latest"
        if not path.exists():
            return None
        try:
            version, revision = read_bytes(path, what="latest pointer", limit=64).split()
            return int(version), int(revision)
        except ValueError:
            raise InputError(
                f"the latest pointer of {subject} is damaged",
                hint=f"remove {str(path)!r}; it is rebuilt from the versions present",
            ) from None

    def set_latest(self, subject: str, version: int, *, expected_revision: int) -> int:
        """Point ``latest`` at ``version`` if it is still at ``expected_revision`` (0: unset)."""
        with self._locked():
            current = self.latest(subject)
            revision = current[1] if current else 0
            if revision != expected_revision:
                raise Conflict(
                    f"the latest version of {subject} moved while registering",
                    hint="run the command again",
                )
            write_atomic(self.root / subject / "latest", f"{version} {revision + 1}\n".encode())
            return revision + 1

    def subjects(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and SUBJECT.match(p.name))

    def versions(self, subject: str) -> list[int]:
        folder = self.root / _check_subject(subject)
        if not folder.is_dir():
            return []
        return sorted(
            int(p.name.removesuffix(".tfschema"))
            for p in folder.iterdir()
            if VERSION_FILE.fullmatch(p.name) and p.is_file()
        )

    # pending records (not yet signed by k coordinators) --------------------------------

    def pending_path(self, subject: str, version: int) -> Path:
        # ".pending" can never be a subject name (subjects start with a letter).
        return self.root / ".pending" / _check_subject(subject) / f"{version}.tfschema"
