"""The audit service on a bad day: a write error is a write error, never tampering.

The fault is real: the process's file size limit (RLIMIT_FSIZE) is lowered to the size the
audit log's WAL already has, so SQLite's next write fails with EFBIG, which SQLite reports as
its extended code SQLITE_IOERR_WRITE - exactly what a disk quota or a failing disk gives. No
SQLite call is faked; the limit is lifted by the test's pause, as an operator frees space.
(CPython ignores SIGXFSZ, so the write fails instead of killing the process.)
"""

from __future__ import annotations

import asyncio
import os
import resource
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import structlog
from tfkit import NOW_MS, TaskForce

from tfshare.audit.logstore import AuditStore, AuditStoreUnavailable, verify_store
from tfshare.audit.note import checkpoint_origin
from tfshare.audit.service import AuditService, log_verifiers
from tfshare.backoff import Backoff
from tfshare.broker import channel_subject
from tfshare.sqlfail import Failure


@contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """Every write of this process past ``limit`` bytes of a file fails (EFBIG) meanwhile."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def _service(tf: TaskForce, path: Path) -> AuditService:
    service = AuditService(
        identity=tf.ids["coord"],
        roster=tf.trusted(),
        roster_bytes=tf.roster_bytes,
        store=AuditStore(path),
        url="nats://127.0.0.1:1",  # never connected: the batch is handed over directly
        clock=lambda: NOW_MS,
        store_backoff=Backoff(first=0.5, ceiling=4.0, jitter=0.0),
    )
    service.start()
    return service


def _alert(tf: TaskForce, seq: int) -> tuple[bytes, str]:
    sealed = tf.seal("police", seq=seq, rng_seed=f"fault{seq}")
    return sealed.data, channel_subject("nl-north", "alerts", "police")


def _wal_size(path: Path) -> int:
    return os.path.getsize(f"{path}-wal")


def test_a_failing_write_is_an_io_error_of_the_store_not_tampering(
    taskforce: TaskForce, tmp_path: Path
) -> None:
    path = tmp_path / "audit.db"
    service = _service(taskforce, path)
    before = service.store.size
    with file_size_limit(_wal_size(path)), pytest.raises(AuditStoreUnavailable) as raised:
        service.ingest([_alert(taskforce, 1)])
    cause = raised.value.__context__
    assert isinstance(cause, sqlite3.Error)
    assert cause.sqlite_errorname == "SQLITE_IOERR_WRITE"  # the extended code of the report
    assert raised.value.failure is Failure.IO
    assert raised.value.code is None  # not E_LOG_TAMPERED
    assert "keep the file as evidence" not in (raised.value.hint or "")
    # Nothing half-written, and the file checks out.
    assert service.store.size == before
    report = verify_store(path, log_verifiers(taskforce.trusted()), checkpoint_origin("nl-north"))
    assert report.entries == before


def test_the_service_waits_retries_and_commits_the_batch_once_the_disk_is_back(
    taskforce: TaskForce, tmp_path: Path
) -> None:
    path = tmp_path / "audit.db"
    service = _service(taskforce, path)
    before = service.store.size
    pauses: list[float] = []
    limit = _wal_size(path)
    lifted = False

    async def pause(stop: asyncio.Event, seconds: float) -> None:
        nonlocal lifted
        pauses.append(seconds)
        if len(pauses) == 3:  # the operator frees space during the third wait
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
            lifted = True

    service.pause = pause
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    batch: list[tuple[bytes, str | None]] = [_alert(taskforce, 1), _alert(taskforce, 2)]
    with structlog.testing.capture_logs() as events, file_size_limit(limit):
        indices = asyncio.run(service.store_batch(batch, asyncio.Event()))
    assert lifted
    failed = [e for e in events if e["event"] == "audit_store_failed"]
    assert [e["failure"] for e in failed] == ["io", "io", "io"]
    assert not [e for e in events if "TAMPERED" in str(e.get("code", ""))]
    assert pauses == [0.5, 1.0, 2.0]  # the shared backoff, growing while the disk fails
    assert service.stats.store_failures == 3
    # Committed once, whole, in order; the log verifies.
    assert indices == [before, before + 1]
    assert service.store.size == before + 2
    assert (
        service.store.entry(before).msg_id
        == taskforce.seal("police", seq=1, rng_seed="fault1").msg_id
    )
    service.maybe_checkpoint(force=True)
    report = verify_store(path, log_verifiers(taskforce.trusted()), checkpoint_origin("nl-north"))
    assert report.entries == before + 2
    # The next failure starts again from the first pause.
    assert service.store_backoff.current == 0


def test_a_service_stopped_while_the_disk_fails_commits_nothing_and_says_so(
    taskforce: TaskForce, tmp_path: Path
) -> None:
    path = tmp_path / "audit.db"
    service = _service(taskforce, path)
    before = service.store.size
    stop = asyncio.Event()

    async def pause(stop_event: asyncio.Event, seconds: float) -> None:
        stop_event.set()  # the operator stops the service during the wait

    service.pause = pause
    with file_size_limit(_wal_size(path)):
        stored = asyncio.run(service.store_batch([_alert(taskforce, 1)], stop))
    assert stored is None  # the caller acknowledges nothing: the broker redelivers later
    assert service.store.size == before
