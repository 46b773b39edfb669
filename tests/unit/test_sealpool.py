"""SealPool: many messages sealed in forked workers, with exactly the results of ``seal``.

Everything is real: the envelopes the workers seal are opened with ``open_envelope`` by every
agency of the task force, so a worker that sealed for the wrong recipients, with the wrong
identity, or out of order fails here. One pool is forked per module (forking is the slow part).
"""

from __future__ import annotations

import asyncio
import base64
import json
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tfkit import NOW_MS, TaskForce, build_taskforce, example_dict

from tfshare import sealpool
from tfshare.encoding import MAX_UINT
from tfshare.errors import (
    RejectCode,
    Rejected,
    RosterRejected,
    TfshareError,
    TrustError,
    ValidationError,
)
from tfshare.keys import Identity
from tfshare.messages import MessageType
from tfshare.registry.book import shipped
from tfshare.replay import MemoryReplayStore
from tfshare.seal import Opened, ReceivePolicy, Sealed, open_envelope
from tfshare.sealpool import SealPool, SealRequest

ALERT = "tf.alert/1"
READERS = ("coord", "police", "ngo", "labour")  # everyone reads "alerts" (tfkit)
EVERYONE = (*READERS, "outsider")
FORK = "fork" in multiprocessing.get_all_start_methods()
DAY_MS = 86_400_000


def _alert_schema() -> MessageType:
    schema = shipped().lookup(ALERT)
    assert schema is not None
    return schema


def alert_body(summary: str) -> bytes:
    """The example alert with its summary replaced: each request gets a body of its own."""
    doc = example_dict(ALERT)
    doc["summary"] = summary
    schema = _alert_schema()
    return schema.to_body(schema.from_json(json.dumps(doc).encode()))


def summary_of(opened: Opened) -> str:
    value = _alert_schema().to_builtins(opened.record)
    assert isinstance(value, dict)
    summary = value["summary"]
    assert isinstance(summary, str)
    return summary


def open_as(tf: TaskForce, agency: str, data: bytes) -> Opened:
    opened = open_envelope(
        data,
        identity=tf.ids[agency],
        roster=tf.trusted(),
        replay=MemoryReplayStore(),
        schemas=shipped(),
        now_ms=NOW_MS,
        subject=None,
        policy=ReceivePolicy(),
    )
    assert isinstance(opened, Opened)
    return opened


def refused_code(tf: TaskForce, agency: str, data: bytes) -> RejectCode:
    with pytest.raises(Rejected) as caught:
        open_as(tf, agency, data)
    return caught.value.reject_code


def request(
    seq: int,
    *,
    channel: str = "alerts",
    schema: str = ALERT,
    to: tuple[str, ...] | None = None,
    now_ms: int = NOW_MS,
) -> SealRequest:
    return SealRequest(channel, schema, alert_body(f"alert number {seq}"), seq, now_ms, to=to)


def sealed_only(results: Sequence[Sealed | TfshareError]) -> list[Sealed]:
    out = [r for r in results if isinstance(r, Sealed)]
    assert len(out) == len(results), [r for r in results if not isinstance(r, Sealed)]
    return out


def gone(pid: int, *, within_s: float = 10.0) -> bool:
    """True once ``pid`` no longer exists (exited and reaped by its parent, this process)."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


def cpu_ticks(pid: int) -> int:
    """utime + stime of ``pid`` from /proc, in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)


@pytest.fixture(scope="module")
def tf() -> TaskForce:
    return build_taskforce()


@pytest.fixture(scope="module")
def pool(tf: TaskForce) -> Iterator[SealPool]:
    with SealPool(tf.ids["police"], tf.trusted(), shipped(), workers=2) as p:
        yield p


@pytest.fixture(scope="module")
def serial_pool(tf: TaskForce) -> Iterator[SealPool]:
    with SealPool(tf.ids["police"], tf.trusted(), shipped(), workers=1) as p:
        yield p


# ---------------------------------------------------------------------------------------------
# Parallel sealing, checked by opening


@pytest.mark.skipif(not FORK, reason="the pool forks its workers; no fork here")
def test_two_workers_are_two_forked_processes(pool: SealPool) -> None:
    assert pool.parallel
    assert pool.workers == 2
    pids = pool.worker_pids
    assert len(pids) == 2
    assert len(set(pids)) == 2
    assert os.getpid() not in pids
    for pid in pids:
        os.kill(pid, 0)  # alive
    # The parent keeps no second reference to the sender once the workers are forked.
    assert sealpool._SENDERS == {}


def test_a_batch_comes_back_in_order_and_opens_for_every_reader(
    tf: TaskForce, pool: SealPool
) -> None:
    requests = [request(seq) for seq in range(100, 112)]
    results = pool.seal_many(requests)
    assert len(results) == 12
    sealed = sealed_only(results)
    assert [s.seq for s in sealed] == [r.seq for r in requests]
    assert all(s.ts_ms == NOW_MS for s in sealed)
    assert len({s.msg_id for s in sealed}) == 12
    assert len({s.data for s in sealed}) == 12
    for req, s in zip(requests, sealed, strict=True):
        assert sorted(s.recipients) == sorted(READERS)
        for reader in READERS:
            opened = open_as(tf, reader, s.data)
            assert opened.sender == "police"
            assert opened.sender_kid == tf.ids["police"].kid_sig
            assert opened.channel == "alerts"
            assert opened.schema == ALERT
            assert opened.seq == req.seq
            assert opened.msg_id == s.msg_id
            assert opened.env_hash == s.env_hash
            assert sorted(opened.recipients) == sorted(READERS)
            # The body of *this* request (not a neighbour's), decoded.
            assert summary_of(opened) == f"alert number {req.seq}"
            assert opened.record == _alert_schema().from_body(req.body)
        assert refused_code(tf, "outsider", s.data) is RejectCode.E_NOT_RECIPIENT


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads CPU time from /proc")
@pytest.mark.skipif(not FORK, reason="the pool forks its workers; no fork here")
def test_the_workers_do_the_sealing(tf: TaskForce, pool: SealPool) -> None:
    pids = pool.worker_pids
    before = sum(cpu_ticks(pid) for pid in pids)
    body = alert_body("cpu")
    results = pool.seal_many([SealRequest("alerts", ALERT, body, i, NOW_MS) for i in range(400)])
    assert len(sealed_only(results)) == 400
    # About 0.3 ms of CPU per message with four recipients: over 10 ticks between the workers
    # (idle workers use none). A pool that sealed in this process would leave them at 0.
    assert sum(cpu_ticks(pid) for pid in pids) - before >= 3
    assert open_as(tf, "ngo", sealed_only(results)[-1].data).seq == 399


def test_to_restricts_the_recipients(tf: TaskForce, pool: SealPool) -> None:
    requests = [request(seq, to=("ngo",)) for seq in range(1, 5)]
    for req, s in zip(requests, sealed_only(pool.seal_many(requests)), strict=True):
        assert s.recipients == ("ngo",)
        opened = open_as(tf, "ngo", s.data)
        assert opened.recipients == ("ngo",)
        assert opened.seq == req.seq
        assert summary_of(opened) == f"alert number {req.seq}"
        # labour reads the channel, but this message was not addressed to it.
        assert refused_code(tf, "labour", s.data) is RejectCode.E_NOT_RECIPIENT
        assert refused_code(tf, "police", s.data) is RejectCode.E_NOT_RECIPIENT
        assert refused_code(tf, "outsider", s.data) is RejectCode.E_NOT_RECIPIENT


# ---------------------------------------------------------------------------------------------
# Refusals come back in their request's place


def _check_refusals_in_place(tf: TaskForce, p: SealPool) -> None:
    requests = [
        request(1),
        request(2, channel="tips"),  # police reads "tips" but may not write it
        request(3),
        request(4, to=("nobody",)),  # not in the roster
        request(5, channel="no-such-channel"),
        request(6, to=("ngo", "outsider")),  # one outsider in the list refuses the message
        request(7),
    ]
    results = p.seal_many(requests)
    assert len(results) == len(requests)

    for index in (0, 2, 6):
        ok = results[index]
        assert isinstance(ok, Sealed)
        assert ok.seq == requests[index].seq
        assert summary_of(open_as(tf, "labour", ok.data)) == f"alert number {ok.seq}"

    tips = results[1]
    assert isinstance(tips, TrustError)
    assert "'police' may not write to channel 'tips'" in str(tips)
    assert "grant write access" in tips.hint
    assert tips.code is None

    nobody = results[3]
    assert isinstance(nobody, TrustError)
    assert "'nobody' is not in the roster" in str(nobody)
    assert "roster show" in nobody.hint

    channel = results[4]
    assert isinstance(channel, TrustError)
    assert "'no-such-channel' is not in the roster" in str(channel)
    assert channel.hint

    outsider = results[5]
    assert isinstance(outsider, TrustError)
    assert "'outsider'" in str(outsider)


def test_refused_requests_come_back_in_place(tf: TaskForce, pool: SealPool) -> None:
    _check_refusals_in_place(tf, pool)


def test_refused_requests_come_back_in_place_without_workers(
    tf: TaskForce, serial_pool: SealPool
) -> None:
    _check_refusals_in_place(tf, serial_pool)


@pytest.mark.parametrize("workers", [1, 2])
def test_an_unknown_schema_is_a_validation_error_in_place(
    tf: TaskForce, pool: SealPool, serial_pool: SealPool, workers: int
) -> None:
    p = pool if workers == 2 else serial_pool
    results = p.seal_many([request(1), request(2, schema="tf.nope/9"), request(3)])
    assert len(results) == 3
    assert isinstance(results[0], Sealed)
    assert isinstance(results[2], Sealed)
    unknown = results[1]
    assert isinstance(unknown, ValidationError)
    assert "tf.nope/9" in str(unknown)
    assert "register it" in unknown.hint


@pytest.mark.parametrize("workers", [1, 2])
def test_an_expired_roster_is_a_roster_rejection_in_place(
    tf: TaskForce, pool: SealPool, serial_pool: SealPool, workers: int
) -> None:
    p = pool if workers == 2 else serial_pool
    late = NOW_MS + 91 * DAY_MS  # the roster is valid for 90 days
    results = p.seal_many([request(1), request(2, now_ms=late), request(3)])
    assert len(results) == 3
    assert isinstance(results[0], Sealed)
    assert isinstance(results[2], Sealed)
    expired = results[1]
    assert isinstance(expired, RosterRejected)
    assert expired.code == RejectCode.E_ROSTER_EXPIRED.value
    assert expired.reject_code is RejectCode.E_ROSTER_EXPIRED
    assert "expired" in str(expired)


# A seq outside 0..MAX_UINT would be sealed into a header every receiver refuses as
# E_MALFORMED; ``seal`` refuses it instead, in the request's place.
@pytest.mark.parametrize("seq", [-1, MAX_UINT + 1])
def test_a_seq_no_receiver_accepts_is_refused(tf: TaskForce, pool: SealPool, seq: int) -> None:
    results = pool.seal_many([request(1), request(seq), request(3)])
    assert isinstance(results[0], Sealed)
    assert isinstance(results[2], Sealed)
    assert isinstance(results[1], ValidationError)
    assert str(seq) in str(results[1])


def test_the_largest_seq_opens(tf: TaskForce, pool: SealPool) -> None:
    sealed = sealed_only(pool.seal_many([request(0), request(MAX_UINT)]))
    assert [open_as(tf, "ngo", s.data).seq for s in sealed] == [0, MAX_UINT]


# ---------------------------------------------------------------------------------------------
# async


def test_seal_many_async_matches_seal_many(tf: TaskForce, pool: SealPool) -> None:
    requests = [request(seq) for seq in range(50, 58)]
    requests.insert(3, request(99, channel="tips"))
    results = asyncio.run(pool.seal_many_async(requests))
    assert len(results) == len(requests)
    refused = results[3]
    assert isinstance(refused, TrustError)
    assert "'tips'" in str(refused)
    sealed = [r for r in results if isinstance(r, Sealed)]
    expected = [r for i, r in enumerate(requests) if i != 3]
    assert [s.seq for s in sealed] == [r.seq for r in expected]
    assert len({s.msg_id for s in sealed}) == len(sealed)
    for req, s in zip(expected, sealed, strict=True):
        for reader in READERS:
            opened = open_as(tf, reader, s.data)
            assert opened.sender == "police"
            assert opened.seq == req.seq
            assert summary_of(opened) == f"alert number {req.seq}"
        assert refused_code(tf, "outsider", s.data) is RejectCode.E_NOT_RECIPIENT


def test_seal_many_async_single_request_and_empty(tf: TaskForce, pool: SealPool) -> None:
    assert asyncio.run(pool.seal_many_async([])) == []
    assert pool.seal_many([]) == []
    (one,) = asyncio.run(pool.seal_many_async([request(7, to=("labour",))]))
    assert isinstance(one, Sealed)
    assert one.recipients == ("labour",)
    assert open_as(tf, "labour", one.data).seq == 7
    assert refused_code(tf, "ngo", one.data) is RejectCode.E_NOT_RECIPIENT


def test_seal_many_async_without_workers(tf: TaskForce, serial_pool: SealPool) -> None:
    assert asyncio.run(serial_pool.seal_many_async([])) == []
    results = asyncio.run(serial_pool.seal_many_async([request(1), request(2)]))
    assert [s.seq for s in sealed_only(results)] == [1, 2]
    assert summary_of(open_as(tf, "coord", sealed_only(results)[1].data)) == "alert number 2"


# ---------------------------------------------------------------------------------------------
# One worker: no processes, same results


def test_one_worker_seals_in_this_process(tf: TaskForce, serial_pool: SealPool) -> None:
    assert not serial_pool.parallel
    assert serial_pool.worker_pids == ()
    assert serial_pool.workers == 1
    requests = [request(seq) for seq in range(1, 4)] + [request(4, to=("ngo",))]
    sealed = sealed_only(serial_pool.seal_many(requests))
    assert [s.seq for s in sealed] == [1, 2, 3, 4]
    assert len({s.msg_id for s in sealed}) == 4
    for s in sealed[:3]:
        assert sorted(s.recipients) == sorted(READERS)
        for reader in READERS:
            opened = open_as(tf, reader, s.data)
            assert opened.sender == "police"
            assert summary_of(opened) == f"alert number {s.seq}"
    assert sealed[3].recipients == ("ngo",)
    assert open_as(tf, "ngo", sealed[3].data).seq == 4
    assert refused_code(tf, "labour", sealed[3].data) is RejectCode.E_NOT_RECIPIENT


def test_workers_are_at_least_one(tf: TaskForce) -> None:
    with SealPool(tf.ids["labour"], tf.trusted(), shipped(), workers=0) as p:
        assert p.workers >= 1
        (s,) = p.seal_many([request(1)])
        assert isinstance(s, Sealed)
        assert open_as(tf, "coord", s.data).sender == "labour"


# ---------------------------------------------------------------------------------------------
# close


@pytest.mark.skipif(not FORK, reason="the pool forks its workers; no fork here")
def test_close_ends_the_workers_and_is_idempotent(tf: TaskForce) -> None:
    p = SealPool(tf.ids["labour"], tf.trusted(), shipped(), workers=2)
    pids = p.worker_pids
    assert len(pids) == 2
    assert len(sealed_only(p.seal_many([request(1), request(2)]))) == 2
    p.close()
    assert not p.parallel
    assert p.worker_pids == ()
    for pid in pids:
        assert gone(pid), f"worker {pid} still exists after close()"
    p.close()  # again: nothing left to close, no error
    assert not p.parallel


@pytest.mark.skipif(not FORK, reason="the pool forks its workers; no fork here")
def test_the_context_manager_closes(tf: TaskForce) -> None:
    with SealPool(tf.ids["labour"], tf.trusted(), shipped(), workers=2) as p:
        assert p.parallel
        pids = p.worker_pids
        assert len(pids) == 2
        (s, _) = p.seal_many([request(1, to=("police",)), request(2)])
        assert isinstance(s, Sealed)
        assert open_as(tf, "police", s.data).sender == "labour"
    assert not p.parallel
    assert p.worker_pids == ()
    for pid in pids:
        assert gone(pid), f"worker {pid} still exists after the with block"


@pytest.mark.skipif(not FORK, reason="the pool forks its workers; no fork here")
def test_the_context_manager_closes_on_an_exception(tf: TaskForce) -> None:
    pids: tuple[int, ...] = ()
    with (
        pytest.raises(RuntimeError, match="boom"),
        SealPool(tf.ids["labour"], tf.trusted(), shipped(), workers=2) as p,
    ):
        pids = p.worker_pids
        raise RuntimeError("boom")
    assert len(pids) == 2
    assert not p.parallel
    for pid in pids:
        assert gone(pid)


# ---------------------------------------------------------------------------------------------
# reprs


def _secret_forms(identity: Identity) -> list[str]:
    forms: list[str] = []
    for name in ("_sign_sk", "_enc_sk", "_nats_seed"):
        secret = getattr(identity, name)
        assert isinstance(secret, bytes)
        assert len(secret) >= 32
        forms += [
            secret.hex()[:16],
            secret[:32].hex()[16:32],
            base64.b64encode(secret[:12]).decode(),
            repr(secret[:8])[2:-1],
        ]
    return forms


def test_reprs_hold_no_body_and_no_secret(
    tf: TaskForce, pool: SealPool, serial_pool: SealPool
) -> None:
    marker = "ZQX-MARKER-7f3a9c"
    body = alert_body(f"victim details {marker}")
    assert marker.encode() in body  # the body really holds it
    req = SealRequest("alerts", ALERT, body, 42, NOW_MS, to=("ngo",))
    reprs = {"request": repr(req), "pool": repr(pool), "serial": repr(serial_pool)}
    for name, text in reprs.items():
        assert marker not in text, name
        assert "victim details" not in text, name
        for form in _secret_forms(tf.ids["police"]):
            assert form not in text, (name, form)
    assert "seq=42" in reprs["request"]
    assert "'alerts'" in reprs["request"]
    assert "'police'" in reprs["pool"]
    # The result carries the marker only as ciphertext.
    (s,) = pool.seal_many([req])
    assert isinstance(s, Sealed)
    assert marker.encode() not in s.data
    assert summary_of(open_as(tf, "ngo", s.data)) == f"victim details {marker}"


# ---------------------------------------------------------------------------------------------
# property: the named recipients, and only they, open every result


@settings(max_examples=10, deadline=None)
@given(
    batch=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=MAX_UINT),
            st.lists(st.sampled_from(READERS), min_size=1, max_size=4, unique=True),
        ),
        min_size=2,
        max_size=6,
    )
)
def test_named_recipients_and_only_they_open(
    tf: TaskForce, pool: SealPool, batch: list[tuple[int, list[str]]]
) -> None:
    requests = [request(seq, to=tuple(to)) for seq, to in batch]
    sealed = sealed_only(pool.seal_many(requests))
    assert len({s.msg_id for s in sealed}) == len(sealed)
    for (seq, to), s in zip(batch, sealed, strict=True):
        assert s.seq == seq
        assert sorted(s.recipients) == sorted(to)
        for reader in EVERYONE:
            if reader in to:
                opened = open_as(tf, reader, s.data)
                assert opened.seq == seq
                assert opened.sender == "police"
                assert sorted(opened.recipients) == sorted(to)
                assert summary_of(opened) == f"alert number {seq}"
            else:
                assert refused_code(tf, reader, s.data) is RejectCode.E_NOT_RECIPIENT


# ---------------------------------------------------------------------------------------------
# errors cross the process boundary whole


def test_every_error_kind_survives_pickling_with_its_attributes() -> None:
    rejected = Rejected(RejectCode.E_BAD_SIG, "signature does not verify")
    rejected.sender = "police"
    errors: list[TfshareError] = [
        ValidationError("field 'severity' is missing", hint="add it", paths=("severity",)),
        RosterRejected(RejectCode.E_ROSTER_EXPIRED, "roster seq 3 expired", hint="re-sign it"),
        rejected,
        TrustError("agency 'x' is not in the roster", hint="check the spelling", code="E_X"),
    ]
    for error in errors:
        back = pickle.loads(pickle.dumps(error))
        assert type(back) is type(error)
        assert back.__dict__ == error.__dict__
        assert (str(back), repr(back), back.args) == (str(error), repr(error), error.args)
    assert pickle.loads(pickle.dumps(errors[0])).paths == ("severity",)
    assert pickle.loads(pickle.dumps(errors[1])).reject_code is RejectCode.E_ROSTER_EXPIRED
    assert pickle.loads(pickle.dumps(rejected)).sender == "police"


# ---------------------------------------------------------------------------------------------
# workers hold the keys: they never outlive the pool's owner; a dead worker is a clean error


def dead(pid: int, *, within_s: float = 10.0) -> bool:
    """True once ``pid`` has exited: gone, or a zombie waiting for a reaper that is not us."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            with open(f"/proc/{pid}/status") as f:
                if any(line.startswith("State:\tZ") for line in f):
                    return True
        except FileNotFoundError:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


OWNER = """
import sys, time
sys.path.insert(0, {tests!r})
from tfkit import build_taskforce
from tfshare.registry.book import shipped
from tfshare.sealpool import SealPool
tf = build_taskforce()
pool = SealPool(tf.ids["police"], tf.trusted(), shipped(), workers=2)
print(" ".join(map(str, pool.worker_pids)), flush=True)
time.sleep(60)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_workers_die_with_a_killed_owner() -> None:
    tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER.format(tests=tests)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert owner.stdout is not None
        pids = [int(p) for p in owner.stdout.readline().split()]
        assert len(pids) == 2
        assert not any(dead(pid, within_s=0) for pid in pids)
        owner.kill()  # SIGKILL: no atexit, no executor shutdown
        owner.wait(timeout=10)
        assert all(dead(pid) for pid in pids), "a worker holding the keys outlived its owner"
    finally:
        if owner.poll() is None:
            owner.kill()


def test_a_dead_worker_fails_the_batch_cleanly_and_the_pool_goes_on(tf: TaskForce) -> None:
    with SealPool(tf.ids["police"], tf.trusted(), shipped(), workers=2) as pool:
        victim = pool.worker_pids[0]
        os.kill(victim, signal.SIGKILL)
        assert dead(victim)
        with pytest.raises(TfshareError) as caught:
            pool.seal_many([request(seq) for seq in range(1, 9)])
        assert type(caught.value) is TfshareError
        assert "worker process died" in caught.value.message
        assert not pool.parallel and pool.worker_pids == ()
        # Sealed in this process from now on, correctly.
        again = sealed_only(pool.seal_many([request(seq) for seq in range(1, 4)]))
        assert [open_as(tf, "ngo", s.data).seq for s in again] == [1, 2, 3]


def test_a_pool_refuses_to_seal_under_a_roster_that_is_no_longer_in_force(
    tf: TaskForce, pool: SealPool
) -> None:
    newer = build_taskforce(members=("police", "labour"))  # ngo gone: another roster
    with pytest.raises(TrustError) as caught:
        pool.seal_many([request(1), request(2)], roster=newer.trusted())
    assert "new SealPool" in caught.value.hint
    with pytest.raises(TrustError):
        asyncio.run(pool.seal_many_async([request(1), request(2)], roster=newer.trusted()))
    assert pool.roster_hash == tf.trusted().hash
    same = sealed_only(pool.seal_many([request(1), request(2)], roster=tf.trusted()))
    assert len(same) == 2


@pytest.mark.parametrize(
    ("seq", "now_ms"), [(True, NOW_MS), (2.0, NOW_MS), (1, -1), (1, MAX_UINT + 1), (1, 1.5)]
)
def test_values_no_receiver_would_decode_are_refused(
    serial_pool: SealPool, seq: object, now_ms: object
) -> None:
    bad = SealRequest("alerts", ALERT, b"{}", seq=seq, now_ms=now_ms)  # type: ignore[arg-type]
    (result,) = serial_pool.seal_many([bad])
    assert isinstance(result, ValidationError)
    assert "is not an integer" in result.message
