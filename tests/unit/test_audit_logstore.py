"""The audit log on disk (tfshare.audit.logstore): appends, dedupe, proofs, checkpoints, and
tampering found by ``verify_store``.

Every test uses a real SQLite file in tmp_path and real Ed25519 checkpoint signatures. The
tamper tests close the store and edit the file with sqlite3 directly, as someone with access
to the disk would, then expect ``verify_store`` to name the code and the place.
"""

from __future__ import annotations

import hashlib
import os
import random
import sqlite3
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import pytest

from tfshare.audit import merkle
from tfshare.audit.entry import (
    RECEIPT_OF,
    EntryError,
    LogEntry,
    decode_entry,
    encode_entry,
    entry_leaf_hash,
)
from tfshare.audit.logstore import (
    AuditStore,
    AuditTampered,
    SqliteSubtreeStore,
    TamperCode,
    VerifyReport,
    verify_store,
)
from tfshare.audit.merkle import (
    EMPTY_ROOT,
    ProofCode,
    ProofError,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from tfshare.audit.note import (
    Checkpoint,
    NoteError,
    NoteSigner,
    checkpoint_origin,
    sign_checkpoint,
)
from tfshare.audit.tree import CompactRange
from tfshare.errors import InputError, TfshareError, TrustError

ORIGIN: Final = checkpoint_origin("nl-north")
LOG_KEY: Final = NoteSigner(ORIGIN, hashlib.sha256(b"audit store test key").digest())
OTHER_KEY: Final = NoteSigner(ORIGIN, hashlib.sha256(b"someone else's key").digest())
VERIFIERS: Final = [LOG_KEY.verifier]
T0: Final = 1_795_000_000_000


def digest(*parts: object) -> bytes:
    return hashlib.sha256(repr(parts).encode()).digest()


def gen(i: int, **changes: Any) -> LogEntry:
    """Entry i of a deterministic log: messages, reshares of the previous entry, receipts."""
    kind = i % 5
    fields: dict[str, Any] = {
        "entry_type": "message",
        "msg_id": digest("msg", i)[:16],
        "sender": ("police", "ngo", "labour")[i % 3],
        "sender_kid": digest("kid", i % 3)[:8],
        "taskforce": "nl-north",
        "channel": "ops",
        "ts_ms": T0 + i,
        "env_sha256": digest("env", i),
        "refs": [],
        "observed_ms": T0 + i + 100,
    }
    if kind == 1:
        fields["refs"] = [(1, digest("msg", i - 1)[:16], digest("env", i - 1))]
    elif kind == 2:
        fields.update(
            entry_type="receipt",
            channel="receipts",
            refs=[(RECEIPT_OF, digest("msg", i - 2)[:16], digest("env", i - 2))],
        )
    fields.update(changes)
    return LogEntry(**fields)


def sign(size: int, root: bytes, key: NoteSigner = LOG_KEY) -> bytes:
    return sign_checkpoint(Checkpoint(ORIGIN, size, root), [key])


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AuditStore]:
    with AuditStore(tmp_path / "audit" / "audit.db") as opened:
        yield opened


# --- a fresh store ------------------------------------------------------------------------------


def test_new_store_is_empty_private_and_durable(store: AuditStore) -> None:
    assert store.size == 0
    assert store.root() == EMPTY_ROOT
    assert store.root_at(0) == EMPTY_ROOT
    assert store.checkpoints() == []
    assert store.latest_checkpoint() is None
    assert store.find(bytes(16)) == []
    assert os.stat(store.path).st_mode & 0o777 == 0o600
    db = sqlite3.connect(store.path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_an_empty_store_verifies(store: AuditStore) -> None:
    report = verify_store(store, VERIFIERS, ORIGIN)
    assert report == VerifyReport(0, EMPTY_ROOT, 0, 0, None, ())


# --- appending --------------------------------------------------------------------------------


def test_append_returns_indices_and_entries_round_trip(store: AuditStore) -> None:
    entries = [gen(i) for i in range(12)]
    assert store.append(entries[:5]) == [0, 1, 2, 3, 4]
    assert store.append(entries[5:]) == list(range(5, 12))
    assert store.append([]) == []
    assert store.size == 12
    data = [encode_entry(entry) for entry in entries]
    for index, entry in enumerate(entries):
        assert store.entry(index) == entry
        assert store.entry_bytes(index) == data[index]
    assert store.root() == merkle.root(data)
    with pytest.raises(ProofError) as caught:
        store.entry(12)
    assert caught.value.proof_code is ProofCode.E_PROOF_INDEX
    with pytest.raises(ProofError):
        store.entry_bytes(-1)


def test_the_log_persists_and_keeps_growing_after_reopening(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    entries = [gen(i) for i in range(23)]
    with AuditStore(path) as first:
        first.append(entries[:13])
        root13 = first.root()
    with AuditStore(path) as second:
        assert second.size == 13
        assert second.root() == root13
        assert second.append(entries[13:]) == list(range(13, 23))
        assert second.root() == merkle.root([encode_entry(e) for e in entries])
        assert second.root_at(13) == root13


def test_a_redelivered_entry_is_not_appended_twice(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    entries = [gen(i) for i in range(6)]
    with AuditStore(path) as store:
        assert store.append(entries) == list(range(6))
        root = store.root()
        # Seen again later (another observed_ms), alone or mixed with new ones.
        again = [gen(i, observed_ms=T0 + 10**6) for i in range(6)]
        assert store.append(again) == [None] * 6
        assert store.append([gen(6), gen(2), gen(7)]) == [6, None, 7]
        # Twice in one batch: the second is the duplicate.
        assert store.append([gen(8), gen(8, observed_ms=1)]) == [8, None]
    with AuditStore(path) as store:  # and after a restart
        assert store.append(entries) == [None] * 6
        assert store.size == 9
        assert store.root_at(6) == root


def test_dedupe_key_is_type_env_hash_and_for_receipts_the_sender(store: AuditStore) -> None:
    message = gen(0)
    receipt = gen(2)
    assert store.append([message, receipt]) == [0, 1]
    # Same envelope hash, another type: a different fact, logged.
    assert store.append([gen(0, entry_type="retraction", refs=[(5, bytes(16), bytes(32))])]) == [2]
    # A message's hash with another sender is still the same envelope: not logged again.
    assert store.append([gen(0, sender="labour")]) == [None]
    # The same receipt hash from another sender is another receipt.
    assert gen(2).sender == "labour"
    assert store.append([gen(2, sender="police")]) == [3]
    assert store.append([gen(2, sender="police", observed_ms=5)]) == [None]


def test_append_is_all_or_nothing_when_an_entry_is_invalid(store: AuditStore) -> None:
    store.append([gen(0)])
    root = store.root()
    bad = gen(3, msg_id=b"short")
    with pytest.raises(EntryError):
        store.append([gen(1), gen(2), bad])
    assert store.size == 1
    assert store.root() == root
    assert store.find(gen(1).msg_id) == []
    assert store.append([gen(1)]) == [1]  # and nothing of the failed batch blocks it


def test_append_is_all_or_nothing_when_the_database_fails(
    store: AuditStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.append([gen(i) for i in range(5)])
    root = store.root()

    def fail(self: SqliteSubtreeStore, count: int) -> None:
        raise OSError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(SqliteSubtreeStore, "set_leaf_count", fail)
        with pytest.raises(OSError, match="disk full"):
            store.append([gen(i) for i in range(5, 9)])
    assert store.size == 5
    assert store.root() == root
    assert store.find(gen(6).msg_id) == []
    assert store.referencing(gen(5).msg_id) == []
    # A failure inside SQLite half way through the entries (a trigger refuses entry 7).
    store._db.execute(
        "CREATE TRIGGER fail7 BEFORE INSERT ON entries WHEN NEW.idx = 7 "
        "BEGIN SELECT RAISE(ABORT, 'injected'); END"
    )
    with pytest.raises(TfshareError):
        store.append([gen(i) for i in range(5, 9)])
    store._db.execute("DROP TRIGGER fail7")
    assert store.size == 5
    assert store._db.execute("SELECT count(*) FROM entries").fetchone()[0] == 5
    assert (
        store._db.execute("SELECT count(*) FROM nodes WHERE idx >= 5 AND level = 0").fetchone()[0]
        == 0
    )
    assert store.append([gen(i) for i in range(5, 9)]) == [5, 6, 7, 8]
    assert store.root() == merkle.root([encode_entry(gen(i)) for i in range(9)])
    verify_store(store, VERIFIERS, ORIGIN)


def test_an_append_by_another_process_is_seen(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with AuditStore(path) as one, AuditStore(path) as two:
        one.append([gen(0), gen(1)])
        assert two.size == 2
        assert two.append([gen(2)]) == [2]
        assert one.append([gen(3)]) == [3]
        assert one.root() == two.root() == merkle.root([encode_entry(gen(i)) for i in range(4)])
        verify_store(path, VERIFIERS, ORIGIN)


# --- proofs -----------------------------------------------------------------------------------


def test_roots_and_proofs_equal_the_reference_for_every_size_up_to_40(store: AuditStore) -> None:
    entries = [gen(i) for i in range(40)]
    data = [encode_entry(entry) for entry in entries]
    for entry in entries:  # one at a time: every size is once the current size too
        store.append([entry])
    for size in range(1, 41):
        prefix = data[:size]
        root = merkle.root(prefix)
        assert store.root_at(size) == root
        for index in range(size):
            proof = store.inclusion_proof(index, size)
            assert proof == merkle.inclusion_proof(prefix, index)
            verify_inclusion(leaf_hash(data[index]), index, size, proof, root)
        for old in range(1, size + 1):
            proof = store.consistency_proof(old, size)
            assert proof == merkle.consistency_proof(prefix, old)
            verify_consistency(old, size, merkle.root(data[:old]), root, proof)
    assert store.inclusion_proof(39) == merkle.inclusion_proof(data, 39)
    assert store.consistency_proof(17) == merkle.consistency_proof(data, 17)


def test_proofs_at_random_points_of_a_larger_log(store: AuditStore) -> None:
    entries = [gen(i) for i in range(1500)]
    data = [encode_entry(entry) for entry in entries]
    rng = random.Random(6962)
    position = 0
    while position < len(entries):  # batches of random sizes
        step = rng.randint(1, 300)
        store.append(entries[position : position + step])
        position += step
    assert store.root() == merkle.root(data)
    for _ in range(40):
        size = rng.randint(1, 1500)
        index = rng.randrange(size)
        old = rng.randint(1, size)
        assert store.inclusion_proof(index, size) == merkle.inclusion_proof(data[:size], index)
        assert store.consistency_proof(old, size) == merkle.consistency_proof(data[:size], old)


def test_proof_requests_outside_the_log_are_refused(store: AuditStore) -> None:
    store.append([gen(i) for i in range(5)])
    cases: list[tuple[Callable[[], object], ProofCode]] = [
        (lambda: store.inclusion_proof(5), ProofCode.E_PROOF_INDEX),
        (lambda: store.inclusion_proof(3, 3), ProofCode.E_PROOF_INDEX),
        (lambda: store.inclusion_proof(0, 6), ProofCode.E_PROOF_SIZE),
        (lambda: store.consistency_proof(0, 5), ProofCode.E_PROOF_SIZE),
        (lambda: store.consistency_proof(4, 3), ProofCode.E_PROOF_SIZE),
        (lambda: store.consistency_proof(1, 6), ProofCode.E_PROOF_SIZE),
        (lambda: store.root_at(6), ProofCode.E_PROOF_SIZE),
    ]
    for call, code in cases:
        with pytest.raises(ProofError) as caught:
            call()
        assert caught.value.proof_code is code
    assert store.consistency_proof(5, 5) == []


# --- lookups ----------------------------------------------------------------------------------


def test_find_and_referencing(store: AuditStore) -> None:
    parent = gen(0)
    pid, penv = parent.msg_id, parent.env_sha256
    reshare = gen(10, refs=[(1, pid, penv)])
    receipt = gen(12, refs=[(RECEIPT_OF, pid, penv)])
    merge = gen(20, refs=[(4, gen(15).msg_id, gen(15).env_sha256), (4, pid, penv)])
    retraction = gen(30, entry_type="retraction", refs=[(5, pid, penv), (5, pid, penv)])
    record = gen(40, entry_type="key_event", msg_id=pid, sender="coord", sender_kid=b"")
    store.append([parent, gen(5), reshare, receipt, merge, retraction, record])
    assert store.find(pid) == [(0, parent), (6, record)]
    assert store.referencing(pid) == [(2, reshare), (3, receipt), (4, merge), (5, retraction)]
    assert store.find(reshare.msg_id) == [(2, reshare)]
    assert store.referencing(reshare.msg_id) == []
    assert store.find(bytes(16)) == []


def test_lookups_do_not_trust_an_edited_index_column(store: AuditStore) -> None:
    store.append([gen(0), gen(1)])
    store._db.execute("UPDATE entries SET msg_id = ? WHERE idx = 1", (gen(0).msg_id,))
    assert store.find(gen(0).msg_id) == [(0, gen(0))]


# --- checkpoints ------------------------------------------------------------------------------


def test_checkpoints_are_kept_listed_and_checked_against_the_log(store: AuditStore) -> None:
    store.append([gen(i) for i in range(10)])
    notes = {size: sign(size, store.root_at(size)) for size in (0, 4, 10)}
    store.add_checkpoint(4, notes[4], T0)
    store.add_checkpoint(10, notes[10], T0 + 1)
    store.add_checkpoint(0, notes[0], T0 + 2)
    store.add_checkpoint(4, notes[4], T0 + 3)  # the identical note again: no-op
    assert store.checkpoints() == [(0, notes[0]), (4, notes[4]), (10, notes[10])]
    assert store.latest_checkpoint() == (10, notes[10])
    report = verify_store(store, VERIFIERS, ORIGIN)
    assert (report.checkpoints, report.latest_checkpoint_size, report.signers) == (3, 10, (ORIGIN,))

    with pytest.raises(InputError, match="already stored"):
        store.add_checkpoint(4, sign(4, store.root_at(4), OTHER_KEY), T0)
    with pytest.raises(AuditTampered) as caught:
        store.add_checkpoint(5, sign(5, store.root_at(6)), T0)
    assert caught.value.code == "E_CHECKPOINT_INCONSISTENT"
    assert caught.value.checkpoint_size == 5
    with pytest.raises(AuditTampered, match="size 6"):
        store.add_checkpoint(5, sign(6, store.root_at(6)), T0)
    with pytest.raises(AuditTampered):
        store.add_checkpoint(11, sign(11, store.root()), T0)
    with pytest.raises(NoteError):
        store.add_checkpoint(3, b"not a note", T0)
    with pytest.raises(InputError):
        store.add_checkpoint(3, sign(3, store.root_at(3)), -1)
    assert [size for size, _ in store.checkpoints()] == [0, 4, 10]


# --- verify_store: a sound log ----------------------------------------------------------------


SIZE: Final = 20


@pytest.fixture
def built(tmp_path: Path) -> Path:
    """A closed log of SIZE entries with signed checkpoints at 8 and SIZE."""
    path = tmp_path / "audit.db"
    with AuditStore(path) as store:
        store.append([gen(i) for i in range(SIZE)])
        store.add_checkpoint(8, sign(8, store.root_at(8)), T0)
        store.add_checkpoint(SIZE, sign(SIZE, store.root()), T0)
    return path


def test_verify_store_recomputes_everything(built: Path) -> None:
    report = verify_store(built, VERIFIERS, ORIGIN)
    data = [encode_entry(gen(i)) for i in range(SIZE)]
    assert report.entries == report.size == SIZE
    assert report.root == merkle.root(data)
    assert report.nodes == 2 * SIZE - SIZE.bit_count()  # leaves plus completed parents
    assert report.checkpoints == 2
    assert report.latest_checkpoint_size == SIZE
    assert report.signers == (ORIGIN,)
    # The file is unchanged by verifying (read only), and an open store verifies too.
    with AuditStore(built) as store:
        assert verify_store(store, VERIFIERS, ORIGIN) == report


# --- verify_store: tampering ------------------------------------------------------------------


def edit(path: Path, sql: str, *params: object) -> None:
    db = sqlite3.connect(path)
    try:
        db.execute(sql, params)
        db.commit()
    finally:
        db.close()


def rewrite(path: Path, change: Callable[[list[bytes]], list[bytes]]) -> None:
    """Replace the entry rows by ``change(entries)``, renumbered from 0, with lookup columns
    and ref rows recomputed: what someone who understands the schema would do."""
    db = sqlite3.connect(path)
    try:
        rows = [bytes(r[0]) for r in db.execute("SELECT entry FROM entries ORDER BY idx")]
        db.execute("DELETE FROM entries")
        db.execute("DELETE FROM refs")
        for index, data in enumerate(change(rows)):
            entry = decode_entry(data)
            sender = entry.sender if entry.entry_type == "receipt" else ""
            db.execute(
                "INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?)",
                (index, data, entry.entry_type, entry.env_sha256, sender, entry.msg_id),
            )
            db.executemany(
                "INSERT INTO refs VALUES (?, ?, ?)",
                [(index, pos, ref[1]) for pos, ref in enumerate(entry.refs)],
            )
        db.commit()
    finally:
        db.close()


def rebuild_nodes(path: Path) -> None:
    """Recompute the whole stored tree from the entries as they are now (a careful forger)."""
    db = sqlite3.connect(path)
    try:
        edge = CompactRange()
        nodes = []
        for (data,) in db.execute("SELECT entry FROM entries ORDER BY idx"):
            nodes.extend(edge.append(entry_leaf_hash(bytes(data))))
        db.execute("DELETE FROM nodes")
        db.executemany("INSERT INTO nodes VALUES (?, ?, ?)", nodes)
        db.execute("UPDATE meta SET value = ? WHERE key = 'leaf_count'", (str(edge.size),))
        db.commit()
    finally:
        db.close()


def tampered(path: Path) -> AuditTampered:
    with pytest.raises(AuditTampered) as caught:
        verify_store(path, VERIFIERS, ORIGIN)
    assert isinstance(caught.value, TrustError)
    assert caught.value.hint
    assert caught.value.code == caught.value.tamper_code.value
    assert caught.value.tamper_code in TamperCode
    return caught.value


def test_a_changed_entry_is_named(built: Path) -> None:
    edit(built, "UPDATE entries SET entry = ? WHERE idx = 5", encode_entry(gen(5, ts_ms=1)))
    error = tampered(built)
    assert (error.code, error.index) == ("E_LOG_TAMPERED", 5)
    assert "entry 5 was changed" in error.message
    assert "decode" not in error.message  # still a well-formed entry, just another one
    with AuditStore(built) as store:  # reading it through the store is refused too
        with pytest.raises(AuditTampered, match="entry 5"):
            store.entry(5)
        assert store.entry(4) == gen(4)


def test_an_entry_changed_to_garbage_or_another_type_is_named(built: Path) -> None:
    edit(built, "UPDATE entries SET entry = ? WHERE idx = 9", b"\x00garbage")
    error = tampered(built)
    assert error.index == 9
    assert "entry 9 was changed" in error.message
    assert "do not decode" in error.message
    edit(built, "UPDATE entries SET entry = 'text' WHERE idx = 9")
    error = tampered(built)
    assert error.index == 9
    assert "entry 9" in error.message


def test_a_deleted_entry_row_is_named(built: Path) -> None:
    edit(built, "DELETE FROM entries WHERE idx = 7")
    error = tampered(built)
    assert (error.code, error.index) == ("E_LOG_TAMPERED", 7)
    assert "entry 7 is missing (deleted)" in error.message


def test_a_deleted_last_entry_is_named(built: Path) -> None:
    edit(built, "DELETE FROM entries WHERE idx = ?", SIZE - 1)
    error = tampered(built)
    assert error.index == SIZE - 1
    assert "missing" in error.message


def test_a_deleted_entry_with_the_rest_moved_down_is_named(built: Path) -> None:
    rewrite(built, lambda rows: rows[:4] + rows[5:])
    error = tampered(built)
    assert error.index == 4
    assert "entry 4 was deleted" in error.message


def test_swapped_entries_are_named(built: Path) -> None:
    def swap(rows: list[bytes]) -> list[bytes]:
        rows[3], rows[11] = rows[11], rows[3]
        return rows

    rewrite(built, swap)
    error = tampered(built)
    assert (error.code, error.index) == ("E_LOG_TAMPERED", 3)
    assert "entries 3 and 11 were swapped (reordered)" in error.message


def test_an_entry_moved_elsewhere_is_named_as_reordered(built: Path) -> None:
    rewrite(built, lambda rows: rows[:2] + rows[6:7] + rows[2:6] + rows[7:])
    error = tampered(built)
    assert error.index == 2
    assert "reordered" in error.message and "belongs at 6" in error.message


def test_an_entry_inserted_in_the_middle_is_named(built: Path) -> None:
    forged = encode_entry(gen(99))
    rewrite(built, lambda rows: [*rows[:4], forged, *rows[4:]])
    error = tampered(built)
    assert error.index == 4
    assert "inserted at index 4" in error.message


def test_an_entry_appended_behind_the_logs_back_is_named(built: Path) -> None:
    entry = gen(99)
    edit(
        built,
        "INSERT INTO entries VALUES (?, ?, ?, ?, '', ?)",
        SIZE,
        encode_entry(entry),
        entry.entry_type,
        entry.env_sha256,
        entry.msg_id,
    )
    error = tampered(built)
    assert error.index == SIZE
    assert f"entry {SIZE} is beyond the log's committed size {SIZE} (inserted)" in error.message
    with AuditStore(built) as store:  # an append must not build on it either
        with pytest.raises(AuditTampered):
            store.append([gen(100)])
        assert store.size == SIZE


def test_a_changed_interior_node_is_named(built: Path) -> None:
    edit(built, "UPDATE nodes SET hash = ? WHERE level = 2 AND idx = 1", bytes(32))
    error = tampered(built)
    assert error.node == (2, 1)
    assert "level 2, index 1" in error.message


def test_a_changed_leaf_hash_is_told_apart_from_a_changed_entry(built: Path) -> None:
    edit(built, "UPDATE nodes SET hash = ? WHERE level = 0 AND idx = 6", bytes(32))
    error = tampered(built)
    assert (error.index, error.node) == (6, (0, 6))
    assert "stored leaf hash of entry 6 was changed" in error.message


def test_a_deleted_node_is_named(built: Path) -> None:
    edit(built, "DELETE FROM nodes WHERE level = 3 AND idx = 0")
    error = tampered(built)
    assert error.node == (3, 0)
    with AuditStore(built) as store:  # proofs that need it fail clearly, not with KeyError
        with pytest.raises(AuditTampered, match=r"\(3, 0\)"):
            store.root_at(8)
        with pytest.raises(AuditTampered):
            store.inclusion_proof(9, 10)  # its sibling is the left 8 leaves, node (3, 0)


def test_a_rewrite_with_a_recomputed_tree_is_caught_by_the_checkpoints(built: Path) -> None:
    def change(rows: list[bytes]) -> list[bytes]:
        rows[2] = encode_entry(gen(2, sender="police"))
        return rows

    rewrite(built, change)
    rebuild_nodes(built)
    error = tampered(built)
    assert (error.code, error.checkpoint_size) == ("E_LOG_TAMPERED", 8)
    assert "signed checkpoint at size 8" in error.message


def test_a_truncated_log_is_caught_by_its_checkpoint(built: Path) -> None:
    rewrite(built, lambda rows: rows[:15])
    rebuild_nodes(built)
    error = tampered(built)
    assert (error.index, error.checkpoint_size) == (15, SIZE)
    assert f"entries 15..{SIZE - 1} were removed" in error.message


def test_a_checkpoint_signed_by_an_unknown_key_is_refused(built: Path) -> None:
    with AuditStore(built) as store:
        root12 = store.root_at(12)
    edit(built, "INSERT INTO checkpoints VALUES (12, ?, 0)", sign(12, root12, OTHER_KEY))
    error = tampered(built)
    assert (error.code, error.checkpoint_size) == ("E_CHECKPOINT_BAD_SIG", 12)
    assert "checkpoint at size 12" in error.message
    assert "E_NOTE_UNKNOWN_KEY" in error.message


def test_an_altered_checkpoint_note_is_refused(built: Path) -> None:
    db = sqlite3.connect(built)
    note = bytes(db.execute("SELECT note FROM checkpoints WHERE size = 8").fetchone()[0])
    db.close()
    forged = note.replace(b"\n8\n", b"\n9\n", 1)
    edit(built, "UPDATE checkpoints SET note = ?, size = 9 WHERE size = 8", forged)
    error = tampered(built)
    assert (error.code, error.checkpoint_size) == ("E_CHECKPOINT_BAD_SIG", 9)
    assert "E_NOTE_BAD_SIG" in error.message


def test_a_checkpoint_of_another_log_is_refused(built: Path) -> None:
    other = checkpoint_origin("be-south")
    note = sign_checkpoint(
        Checkpoint(other, 3, bytes(32)), [NoteSigner(other, hashlib.sha256(b"k").digest())]
    )
    edit(built, "INSERT INTO checkpoints VALUES (3, ?, 0)", note)
    assert tampered(built).code == "E_CHECKPOINT_BAD_SIG"


def test_a_checkpoint_row_edited_to_text_is_refused(built: Path) -> None:
    edit(built, "UPDATE checkpoints SET note = 'signed, trust me' WHERE size = 8")
    error = tampered(built)
    assert (error.code, error.checkpoint_size) == ("E_CHECKPOINT_BAD_SIG", 8)
    with AuditStore(built) as store, pytest.raises(AuditTampered, match="size 8"):
        store.checkpoints()


def test_a_checkpoint_moved_to_another_size_is_refused(built: Path) -> None:
    edit(built, "UPDATE checkpoints SET size = 9 WHERE size = 8")
    error = tampered(built)
    assert (error.code, error.checkpoint_size) == ("E_LOG_TAMPERED", 9)
    assert "signed for size 8" in error.message


def fork_root(size: int, changed: int) -> bytes:
    data = [encode_entry(gen(i)) for i in range(size)]
    data[changed] = encode_entry(gen(changed, channel="intel"))
    return merkle.root(data)


def test_a_split_view_later_checkpoint_is_refused(built: Path) -> None:
    """The log key signed size 14 of a fork that differs at entry 10: it cannot extend the
    checkpoint at 8 into this log."""
    edit(built, "INSERT INTO checkpoints VALUES (14, ?, 0)", sign(14, fork_root(14, 10)))
    error = tampered(built)
    assert (error.code, error.checkpoint_size) == ("E_CHECKPOINT_INCONSISTENT", 14)
    assert "size 14 is not consistent with the signed checkpoint at size 8" in error.message


def test_a_split_view_earlier_checkpoint_is_refused(built: Path) -> None:
    edit(built, "INSERT INTO checkpoints VALUES (5, ?, 0)", sign(5, fork_root(5, 1)))
    error = tampered(built)
    assert (error.code, error.checkpoint_size) == ("E_CHECKPOINT_INCONSISTENT", 5)
    assert "size 8" in error.message


def test_edited_lookup_columns_and_ref_rows_are_named(built: Path, tmp_path: Path) -> None:
    pristine = built.read_bytes()
    edit(built, "UPDATE entries SET msg_id = ? WHERE idx = 3", bytes(16))
    assert tampered(built).index == 3
    built.write_bytes(pristine)
    edit(built, "DELETE FROM refs WHERE idx = 6")
    error = tampered(built)
    assert error.index == 6
    assert "ref rows of entry 6" in error.message
    built.write_bytes(pristine)
    edit(built, "INSERT INTO refs VALUES (5, 0, ?)", bytes(16))
    assert tampered(built).index == 5
    built.write_bytes(pristine)
    edit(built, "UPDATE entries SET dedupe_sender = 'x' WHERE idx = 2")
    assert tampered(built).index == 2


def test_a_damaged_leaf_count_is_refused(built: Path) -> None:
    edit(built, "UPDATE meta SET value = 'many' WHERE key = 'leaf_count'")
    assert "leaf count" in tampered(built).message
    with pytest.raises(AuditTampered):
        AuditStore(built).size  # noqa: B018


# --- damaged files --------------------------------------------------------------------------


def test_a_truncated_file_is_a_clear_error(built: Path) -> None:
    data = built.read_bytes()
    assert not Path(f"{built}-wal").exists()  # closed: everything is in the main file
    built.write_bytes(data[: len(data) // 2])
    error = tampered(built)
    assert error.code == "E_LOG_TAMPERED"
    assert "damaged, truncated or not an audit log" in error.message
    with pytest.raises(TfshareError), AuditStore(built) as store:
        store.entry(SIZE - 1)


@pytest.mark.parametrize(
    "content", [b"", b"\x00" * 4096, os.urandom(8192), b"SQLite format 3\x00" + bytes(84)]
)
def test_a_garbage_file_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "audit.db"
    path.write_bytes(content)
    error = tampered(path)
    assert error.code == "E_LOG_TAMPERED"


def test_a_garbage_file_cannot_be_opened_as_a_store(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    path.write_bytes(os.urandom(8192))
    with pytest.raises(TfshareError) as caught:
        AuditStore(path)
    assert caught.value.hint


def test_another_sqlite_database_is_not_taken_for_a_log(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    edit(path, "CREATE TABLE replay (x)")
    with pytest.raises(InputError, match="not a tfshare audit log"):
        AuditStore(path)
    assert "not an audit log" in tampered(path).message
    db = sqlite3.connect(path)
    assert [r[0] for r in db.execute("SELECT name FROM sqlite_master")] == ["replay"]
    db.close()


def test_a_missing_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no audit log"):
        verify_store(tmp_path / "nothing.db", VERIFIERS, ORIGIN)


# --- size and speed ---------------------------------------------------------------------------


def _bulk(store: AuditStore, count: int, batch: int = 20_000) -> None:
    for start in range(0, count, batch):
        store.append([gen(i) for i in range(start, min(count, start + batch))])


def _timed_proofs(store: AuditStore, rounds: int) -> tuple[float, float]:
    """Median seconds of an inclusion and of a consistency proof at random sizes; each
    proof is also verified against the store's roots."""
    rng = random.Random(1)
    inclusion, consistency = [], []
    size_now = store.size
    for _ in range(rounds):
        size = rng.randint(1, size_now)
        index = rng.randrange(size)
        old = rng.randint(1, size)
        start = time.perf_counter()
        proof = store.inclusion_proof(index, size)
        inclusion.append(time.perf_counter() - start)
        start = time.perf_counter()
        cproof = store.consistency_proof(old, size)
        consistency.append(time.perf_counter() - start)
        root = store.root_at(size)
        verify_inclusion(entry_leaf_hash(store.entry_bytes(index)), index, size, proof, root)
        verify_consistency(old, size, store.root_at(old), root, cproof)
    return statistics.median(inclusion), statistics.median(consistency)


@pytest.mark.slow
def test_proofs_from_a_large_log_on_disk_are_fast(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with AuditStore(path) as store:
        _bulk(store, 100_000)
    with AuditStore(path) as store:  # a fresh process's view: nothing cached
        inclusion, consistency = _timed_proofs(store, 200)
    assert inclusion < 5e-3
    assert consistency < 5e-3
