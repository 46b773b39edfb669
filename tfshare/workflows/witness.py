"""An agency as a witness of the audit log: keep the latest checkpoint seen, check each new
one against it, co-sign what is consistent, refuse and report a fork.

Owns: the held checkpoint file (``witness.checkpoint`` in the agency's state directory,
written atomically, only ever replaced by a checkpoint proven to extend it), one witness round
(``witness_once``: fetch the latest checkpoint from the audit bucket, verify it with the
roster's log keys, compare it with the held one, ask the audit service for a consistency proof
when it grew, compare it with what the other witnesses published, co-sign, publish), and
collecting the published cosignatures for an evidence bundle (``collect_cosignatures``).

A fork (two signed checkpoints that cannot both be the log: the same size with two roots, or a
consistency proof that fails) is logged as the event ``log_fork_detected`` with both
checkpoints, never co-signed, and raised as ``WitnessError`` E_LOG_FORK (exit 6); the held
checkpoint is kept as it was, as evidence.

The running agent calls ``witness_once`` every ``WITNESS_INTERVAL_S`` seconds with its own
connection (see the module's ``run_witness``); ``tfshare audit witness`` runs one round.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import structlog

from tfshare import transport
from tfshare.audit.evidence import MAX_NOTE_SIZE
from tfshare.audit.note import Checkpoint, NoteError, checkpoint_origin, open_checkpoint, split_note
from tfshare.audit.proofs import (
    AnswerRefused,
    ResponseCode,
    ResponseRejected,
    consistency_request,
    encode_request,
    verify_consistency_response,
)
from tfshare.audit.service import log_verifiers
from tfshare.audit.witness import (
    WitnessCode,
    WitnessError,
    cosign,
    judge,
)
from tfshare.backoff import sleep_or_stop
from tfshare.errors import BrokerError, TrustError
from tfshare.files import read_bytes, write_atomic
from tfshare.keys import Identity
from tfshare.names import proof_subject
from tfshare.roster import TrustedRoster

if TYPE_CHECKING:  # live imports this module to give every agent its witness
    from tfshare.workflows.live import Agency

log = structlog.get_logger("tfshare.witness")

HELD_FILE: Final = "witness.checkpoint"
WITNESS_INTERVAL_S: Final = 30.0
PROOF_TIMEOUT_S: Final = 5.0


def held_path(state_dir: Path) -> Path:
    return state_dir / HELD_FILE


def load_held(path: Path, taskforce: str) -> tuple[bytes, Checkpoint] | None:
    """The checkpoint note this witness holds (it verified and co-signed it), or None."""
    if not path.is_file():
        return None
    note = read_bytes(path, what="held checkpoint", limit=MAX_NOTE_SIZE)
    try:
        text, _ = split_note(note)
        checkpoint = Checkpoint.parse(text.decode("utf-8"))
    except (NoteError, UnicodeDecodeError):
        raise TrustError(
            f"the witness's held checkpoint {str(path)!r} is damaged",
            hint="keep the file for the coordinators; restore the state directory from backup",
        ) from None
    if checkpoint.origin != checkpoint_origin(taskforce):
        raise TrustError(
            f"the held checkpoint is of log {checkpoint.origin!r}",
            hint="this state directory belongs to another task force",
        )
    return note, checkpoint


@dataclass(frozen=True, slots=True)
class WitnessRound:
    """What one round did: ``verdict`` is none (no checkpoint published yet), first, same,
    newer or older (a stale checkpoint: not co-signed)."""

    verdict: str
    size: int
    cosigned: bool


def _fork(held: bytes, seen: bytes, why: str) -> WitnessError:
    log.error(
        "log_fork_detected",
        code=WitnessCode.E_LOG_FORK.value,
        reason=why,
        held_checkpoint=held.decode("utf-8", "replace"),
        seen_checkpoint=seen.decode("utf-8", "replace"),
    )
    return WitnessError(WitnessCode.E_LOG_FORK, f"the audit log forked: {why}")


async def _consistency(
    conn: transport.Connection,
    roster: TrustedRoster,
    old: tuple[bytes, Checkpoint],
    new: tuple[bytes, Checkpoint],
    timeout: float,
) -> None:
    """Prove ``new`` extends ``old`` with the audit service's consistency proof; a proof
    that fails, or a root other than the one held or seen, is a fork."""
    request = consistency_request(roster.taskforce, old[1].size, new[1].size)
    try:
        data = await transport.request(
            conn,
            proof_subject(roster.taskforce, conn.member),
            encode_request(request),
            timeout=timeout,
        )
    except transport.NoResponders:
        raise BrokerError(
            "no audit service is answering proof requests: the new checkpoint cannot be "
            "checked, so it is not co-signed",
            hint="a coordinator must be running 'tfshare audit serve'; try again later",
        ) from None
    except transport.NoAnswer:
        raise BrokerError(
            "the audit service did not answer the consistency request in time",
            hint="try again; nothing was co-signed",
        ) from None
    try:
        checked = verify_consistency_response(
            data, request, verifiers=log_verifiers(roster), known=old[0]
        )
    except ResponseRejected as exc:
        if exc.code in (ResponseCode.E_RESPONSE_FORK.value, ResponseCode.E_RESPONSE_PROOF.value):
            raise _fork(old[0], new[0], exc.message) from None
        raise
    except AnswerRefused as exc:
        raise WitnessError(
            WitnessCode.E_WITNESS_UNPROVEN,
            f"the audit service gives no consistency proof from size {old[1].size} to "
            f"{new[1].size} ({exc.code}): the checkpoint is not co-signed",
        ) from None
    if checked.new_root != new[1].root_hash:
        raise _fork(
            old[0] if checked.new_size != new[1].size else checked.new_checkpoint,
            new[0],
            f"the audit service's signed tree of {new[1].size} entries has another root than "
            "the checkpoint published",
        )


PEER_PROOFS_PER_ROUND: Final = 4
"""Consistency proofs a round asks for other witnesses' checkpoints of another size (each is
remembered once proven, so a large task force is covered over a few rounds, within the audit
service's per-member rate)."""


async def _compare_with_peers(
    conn: transport.Connection,
    roster: TrustedRoster,
    identity: Identity,
    seen: bytes,
    timeout: float,
    proven: set[tuple[int, bytes]] | None = None,
) -> None:
    """What the other witnesses co-signed. A log-signed checkpoint of the same size with
    another root is a split view (each of us was shown a different log); one of another size
    must be consistent with ours, which the audit service proves (a proof it cannot give
    for two checkpoints its own keys signed is a fork). ``proven`` remembers the (size,
    root) pairs already shown consistent, across rounds."""
    origin = checkpoint_origin(roster.taskforce)
    verifiers = log_verifiers(roster)
    mine, _ = open_checkpoint(seen, verifiers, origin=origin)
    proven = set() if proven is None else proven
    asked = 0
    for member in roster.roster.members:
        if member.agency_id == identity.agency_id or member.status != "active":
            continue
        published = await transport.get_cosignature(conn, roster.taskforce, member.agency_id)
        if published is None:
            continue
        try:
            theirs, _ = open_checkpoint(published, verifiers, origin=origin)
        except NoteError:
            continue  # not log-signed: proves nothing either way
        if theirs.size == mine.size:
            if theirs.root_hash != mine.root_hash:
                raise _fork(
                    published,
                    seen,
                    f"{member.agency_id} co-signed another tree of {mine.size} entries",
                )
            continue
        key = (theirs.size, theirs.root_hash)
        if key in proven or asked >= PEER_PROOFS_PER_ROUND:
            continue
        asked += 1
        ours, other = (seen, mine), (published, theirs)
        old, new = (other, ours) if theirs.size < mine.size else (ours, other)
        try:
            await _consistency(conn, roster, old, new, timeout)
        except WitnessError as exc:
            if exc.witness_code is WitnessCode.E_LOG_FORK:
                raise
            continue  # no proof to be had now (E_WITNESS_UNPROVEN): tried again next round
        except BrokerError:
            continue
        proven.add(key)


async def witness_once(
    conn: transport.Connection,
    *,
    identity: Identity,
    roster: TrustedRoster,
    state_dir: Path,
    now_s: Callable[[], int] = lambda: int(time.time()),
    timeout: float = PROOF_TIMEOUT_S,
    proven: set[tuple[int, bytes]] | None = None,
) -> WitnessRound:
    """One witness round (see the module docstring). Raises ``WitnessError`` (E_LOG_FORK
    after logging ``log_fork_detected``, E_WITNESS_UNPROVEN), ``TrustError`` for a
    checkpoint the roster's log keys did not sign, ``BrokerError``."""
    taskforce = roster.taskforce
    origin = checkpoint_origin(taskforce)
    note = await transport.get_checkpoint(conn, taskforce)
    if note is None:
        return WitnessRound("none", 0, False)
    checkpoint, _ = open_checkpoint(note, log_verifiers(roster), origin=origin)
    path = held_path(state_dir)
    held = load_held(path, taskforce)
    try:
        verdict = judge(None if held is None else held[1], checkpoint)
    except WitnessError as exc:
        assert held is not None
        raise _fork(held[0], note, exc.message) from None
    if verdict == "newer":
        assert held is not None
        await _consistency(conn, roster, held, (note, checkpoint), timeout)
    elif verdict == "older":
        assert held is not None
        # A stale checkpoint (a lagging bucket) is fine if the held one extends it.
        await _consistency(conn, roster, (note, checkpoint), held, timeout)
        return WitnessRound(verdict, checkpoint.size, False)
    await _compare_with_peers(conn, roster, identity, note, timeout, proven)
    text = note[: note.rfind(b"\n\n") + 1]
    line = cosign(text, identity, taskforce=taskforce, timestamp=now_s())
    if verdict != "same":
        state_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(path, note)  # held before published: a crash never un-holds it
    # The log's own signature lines travel with the cosignature, so another witness can tell
    # a split view from a forged note.
    await transport.put_cosignature(conn, taskforce, identity.agency_id, note + line)
    log.info("checkpoint_cosigned", size=checkpoint.size, verdict=verdict)
    return WitnessRound(verdict, checkpoint.size, True)


async def run_witness(
    conn: transport.Connection,
    *,
    identity: Identity,
    roster: Callable[[], TrustedRoster],
    state_dir: Path,
    stop: asyncio.Event,
    interval_s: float = WITNESS_INTERVAL_S,
    min_gap_s: float = 1.0,
) -> None:
    """The agent's witness loop until ``stop``: a round when the audit service announces a
    checkpoint (at most one every ``min_gap_s``), and every ``interval_s`` in any case.

    After a fork (logged ``log_fork_detected``) the held checkpoint stays as it was: the loop
    goes on, never co-signs the checkpoint that forked, and co-signs a later one only once
    the audit service proves that it extends the held one. Other failures are logged and
    tried again next round."""
    announced = asyncio.Event()
    try:
        await transport.subscribe_checkpoints(
            conn, roster().taskforce, lambda _note: announced.set()
        )
    except BrokerError as exc:  # no announcements: the interval alone drives the rounds
        log.warning("witness_not_subscribed", reason=exc.message)
    proven: set[tuple[int, bytes]] = set()
    while not stop.is_set():
        announced.clear()
        try:
            await witness_once(
                conn, identity=identity, roster=roster(), state_dir=state_dir, proven=proven
            )
        except WitnessError as exc:
            if exc.witness_code is not WitnessCode.E_LOG_FORK:
                log.warning("witness_round_failed", code=exc.code, error=exc.message)
        except (TrustError, BrokerError) as exc:
            log.warning("witness_round_failed", code=exc.code, error=exc.message)
        await sleep_or_stop(stop, min_gap_s)
        if stop.is_set():
            break
        wake = asyncio.ensure_future(announced.wait())
        halt = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait(
                {wake, halt}, timeout=interval_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            wake.cancel()
            halt.cancel()


def witness(agency: Agency, *, url: str, timeout: float = PROOF_TIMEOUT_S) -> WitnessRound:
    """``tfshare audit witness``: one round as ``agency``, on a connection of its own."""
    identity = agency.identity()

    async def main() -> WitnessRound:
        conn = await transport.connect(
            url,
            nkey_seed=identity.nats_seed_encoded(),
            agency=identity.agency_id,
            name=f"tfshare-witness-{identity.agency_id}",
            reconnect=False,
            connect_timeout=min(timeout, 2.0),
            tls=agency.tls,
            js_domain=agency.js_domain,
        )
        try:
            return await witness_once(
                conn,
                identity=identity,
                roster=agency.roster,
                state_dir=agency.store.path.parent,
                timeout=timeout,
            )
        finally:
            await conn.close()

    return asyncio.run(main())
