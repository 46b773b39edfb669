"""Sealing many messages at once on every core: a pool of forked worker processes.

Owns: ``SealPool`` -- ``seal`` (with all its roster policy) run in worker processes, for a
sender with a backlog: a bulk import of red flags, a large outbox. One message costs about
ten X25519 multiplications with ten recipients; on CPython, threads cannot share that work
out (each multiplication hands the GIL over and back), processes can.

Why fork, and only fork: the workers inherit the agency's ``Identity`` in memory. It is
never pickled (``Identity`` refuses to be) and never crosses a pipe; what crosses is the
request (channel, recipients, schema name, body, seq, time) and the sealed envelope, which is
ciphertext. The workers are started when the pool is made, so make the pool before opening
connections or files that the children should not hold. Where fork is not available the pool
seals in this process: same results, one core.

Errors: a request that ``seal`` refuses gives its ``TfshareError`` back, in the request's
place, so one bad request does not cost the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import itertools
import multiprocessing
import os
import signal
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from tfshare.envelope import Ref
from tfshare.errors import TfshareError, TrustError, ValidationError
from tfshare.keys import Identity
from tfshare.messages import SchemaBook
from tfshare.roster import TrustedRoster
from tfshare.seal import Sealed, seal


@dataclass(frozen=True)
class SealRequest:
    """One message to seal. ``schema`` is a name the pool's schema book knows."""

    channel: str
    schema: str
    body: bytes
    seq: int
    now_ms: int
    to: tuple[str, ...] | None = None
    refs: tuple[Ref, ...] = ()

    def __repr__(self) -> str:  # never the body: a repr can reach a log
        return f"SealRequest(channel={self.channel!r}, schema={self.schema!r}, seq={self.seq})"


@dataclass(frozen=True)
class _Sender:
    identity: Identity
    roster: TrustedRoster
    schemas: SchemaBook


# What a forked worker inherits: the sender of each pool, by the pool's number. Filled in the
# parent before the workers are forked; the initializer picks the pool's entry by number.
_SENDERS: dict[int, _Sender] = {}
_WORKER: dict[str, _Sender] = {}  # in a worker: {"sender": the sender it seals for}
_numbers = itertools.count(1)
# Requests per task: several tasks per worker, so one that is scheduled out (the cores are
# shared with the event loop and the broker) does not hold up the whole batch. Measured with
# bench/live.py on 2 cores: 25 beat 100 and one task per worker.
PART = 25


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _adopt(number: int, parent: int) -> None:
    """Worker start-up. A worker holds the agency's keys, so it must not outlive the process
    that made it: the kernel kills it when the parent dies (Linux), and one whose parent is
    already gone leaves at once. It also drops the signal handling it inherited (an asyncio
    loop's wake-up fd and handlers): Ctrl-C is the parent's to handle, SIGTERM ends it."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is not None:
        # Not Linux: no prctl; the getppid check below still covers a parent already gone.
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(libc_name, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _WORKER["sender"] = _SENDERS[number]


def _ready(_: int) -> int:
    return os.getpid()


def _seal_one(sender: _Sender, request: SealRequest) -> Sealed | TfshareError:
    schema = sender.schemas.lookup(request.schema)
    try:
        if schema is None:
            raise ValidationError(
                f"schema {request.schema} is not known here",
                hint="register it, or fetch the registry, before sealing",
            )
        return seal(
            identity=sender.identity,
            roster=sender.roster,
            channel=request.channel,
            to=request.to,
            schema=schema,
            body=request.body,
            seq=request.seq,
            now_ms=request.now_ms,
            rng=os.urandom,
            refs=request.refs,
        )
    except TfshareError as exc:  # in the request's place; pickles whole (errors.py)
        return exc


def _seal_chunk(requests: Sequence[SealRequest]) -> list[Sealed | TfshareError]:
    sender = _WORKER["sender"]
    return [_seal_one(sender, r) for r in requests]


class SealPool:
    """Seals for one agency, under one roster, on ``workers`` processes (default: every core).

    A new roster means a new pool: the workers seal with the roster they were forked with."""

    def __init__(
        self,
        identity: Identity,
        roster: TrustedRoster,
        schemas: SchemaBook,
        *,
        workers: int | None = None,
    ) -> None:
        self._sender = _Sender(identity, roster, schemas)
        self.workers = max(1, workers or os.cpu_count() or 1)
        self._number = next(_numbers)
        self._executor: ProcessPoolExecutor | None = None
        if self.workers > 1 and "fork" in multiprocessing.get_all_start_methods():
            _SENDERS[self._number] = self._sender
            try:
                self._executor = ProcessPoolExecutor(
                    self.workers,
                    mp_context=multiprocessing.get_context("fork"),
                    initializer=_adopt,
                    initargs=(self._number, os.getpid()),
                )
                # Fork every worker now, while the parent holds nothing they should not.
                list(self._executor.map(_ready, range(self.workers)))
            except BaseException:
                # A worker that did start holds the keys: it must not be left behind.
                self._discard()
                raise
            finally:
                del _SENDERS[self._number]  # the parent keeps no second reference

    @property
    def roster_hash(self) -> bytes:
        """The roster the workers seal under (they were forked with it)."""
        return self._sender.roster.hash

    def _discard(self) -> None:
        """Stop the workers now, without waiting for them; the pool seals in-process after."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        for process in list((getattr(executor, "_processes", None) or {}).values()):
            process.kill()
        executor.shutdown(wait=False, cancel_futures=True)

    def _check(self, roster: TrustedRoster | None) -> None:
        if roster is not None and roster.hash != self.roster_hash:
            raise TrustError(
                f"this pool seals under roster seq {self._sender.roster.seq}; "
                f"seq {roster.seq} is in force",
                hint="make a new SealPool with the roster in force (a revocation may be in it)",
            )

    def _broken(self) -> TfshareError:
        self._discard()
        return TfshareError(
            "a sealing worker process died; nothing of this batch was sealed",
            hint="seal the batch again: the pool now seals in this process",
        )

    @property
    def worker_pids(self) -> tuple[int, ...]:
        """The workers' process ids (to account for their CPU, say)."""
        if self._executor is None:
            return ()
        processes = getattr(self._executor, "_processes", None) or {}
        return tuple(processes)

    @property
    def parallel(self) -> bool:
        return self._executor is not None

    def seal_many(
        self, requests: Sequence[SealRequest], *, roster: TrustedRoster | None = None
    ) -> list[Sealed | TfshareError]:
        """Seal every request; one result per request, in order.

        ``roster``: the roster in force now. A pool seals under the roster it was made with;
        when they differ (a revocation, say) nothing is sealed and ``TrustError`` is raised.
        A worker that died raises ``TfshareError`` for the whole batch (nothing sealed)."""
        self._check(roster)
        if self._executor is None or len(requests) < 2:
            return [_seal_one(self._sender, r) for r in requests]
        step = max(1, min(-(-len(requests) // self.workers), PART))
        chunks = [requests[i : i + step] for i in range(0, len(requests), step)]
        try:
            return [r for part in self._executor.map(_seal_chunk, chunks) for r in part]
        except BrokenProcessPool:
            raise self._broken() from None

    async def seal_many_async(
        self, requests: Sequence[SealRequest], *, roster: TrustedRoster | None = None
    ) -> list[Sealed | TfshareError]:
        """``seal_many`` without blocking the event loop: the loop goes on (publishing the
        previous batch, say) while the workers seal."""
        if self._executor is None or not requests:
            return self.seal_many(requests, roster=roster)
        self._check(roster)
        loop = asyncio.get_running_loop()
        executor = self._executor
        step = max(1, min(-(-len(requests) // self.workers), PART))
        try:
            parts = await asyncio.gather(
                *(
                    loop.run_in_executor(executor, _seal_chunk, requests[i : i + step])
                    for i in range(0, len(requests), step)
                )
            )
        except BrokenProcessPool:
            raise self._broken() from None
        return [r for part in parts for r in part]

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def __enter__(self) -> SealPool:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"SealPool(agency={self._sender.identity.agency_id!r}, workers={self.workers}, "
            f"parallel={self.parallel})"
        )
