"""Audit log benchmark: append rate beside raw SHA-256, proofs and full verification at 1M.

Measured in one run, on this machine:
- the append rate of the SQLite audit log (entries/s, in batches as the service commits them)
  beside the rate of the SHA-256 work each append needs (a leaf hash and, on average, one
  node hash per entry), as a ratio;
- inclusion and consistency proof times from a 1,000,000-entry log on disk (target < 1 ms);
- the time to verify that whole log from scratch (``tfshare audit verify``).

TFSHARE_BENCH_AUDIT_N changes the log size (default 1,000,000).
"""

from __future__ import annotations

import hashlib
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from tfkit import identity  # noqa: E402

from tfshare.audit.entry import LogEntry, encode_entry  # noqa: E402
from tfshare.audit.logstore import AuditStore, verify_store  # noqa: E402
from tfshare.audit.merkle import leaf_hash, verify_consistency, verify_inclusion  # noqa: E402
from tfshare.audit.note import Checkpoint, NoteVerifier, sign_checkpoint  # noqa: E402
from tfshare.audit.service import IdentitySigner  # noqa: E402

N = int(os.environ.get("TFSHARE_BENCH_AUDIT_N", "1000000"))
BATCH = 5000
ORIGIN = "tfshare/nl-north/audit"


def entry(i: int) -> LogEntry:
    return LogEntry(
        entry_type="message",
        msg_id=i.to_bytes(16, "big"),
        sender="police-nl",
        sender_kid=b"\x01" * 8,
        taskforce="nl-north",
        channel="alerts",
        ts_ms=1_790_000_000_000 + i,
        env_sha256=hashlib.sha256(i.to_bytes(8, "big")).digest(),
        refs=[],
        observed_ms=1_790_000_000_000 + i,
    )


def sha256_rate(sample: bytes) -> float:
    """Entries per second if appending cost only its SHA-256 work (leaf + one node)."""
    node = bytes(65)
    count = 200_000
    start = time.perf_counter()
    for _ in range(count):
        hashlib.sha256(b"\x00" + sample).digest()
        hashlib.sha256(node).digest()
    return count / (time.perf_counter() - start)


def main() -> None:
    signer_identity = identity("coord")
    signer = IdentitySigner(signer_identity, ORIGIN)
    verifier = NoteVerifier.from_public_key(ORIGIN, signer_identity.sign_pk)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "audit.db"
        store = AuditStore(path)
        baseline = sha256_rate(encode_entry(entry(0)))
        start = time.perf_counter()
        first = min(N, 50_000)
        for offset in range(0, first, BATCH):
            store.append([entry(i) for i in range(offset, min(offset + BATCH, first))])
        append_rate = first / (time.perf_counter() - start)
        for offset in range(first, N, BATCH):
            store.append([entry(i) for i in range(offset, min(offset + BATCH, N))])
        build_s = time.perf_counter() - start
        root = store.root()
        store.add_checkpoint(N, sign_checkpoint(Checkpoint(ORIGIN, N, root), [signer]), 0)

        rng = random.Random(7)
        inclusion, consistency = [], []
        for _ in range(2000):
            index = rng.randrange(N)
            t = time.perf_counter()
            proof = store.inclusion_proof(index, N)
            inclusion.append((time.perf_counter() - t) * 1e3)
            verify_inclusion(leaf_hash(store.entry_bytes(index)), index, N, proof, root)
        for _ in range(500):
            old = rng.randrange(1, N)
            t = time.perf_counter()
            proof = store.consistency_proof(old, N)
            consistency.append((time.perf_counter() - t) * 1e3)
        old = N // 3
        verify_consistency(old, N, store.root_at(old), root, store.consistency_proof(old, N))
        store.close()

        start = time.perf_counter()
        report = verify_store(path, [verifier], ORIGIN)
        verify_s = time.perf_counter() - start
        assert report.entries == N

    def p(samples: list[float], q: float) -> float:
        return sorted(samples)[min(len(samples) - 1, int(len(samples) * q))]

    print(f"\naudit log ({N} entries, SQLite on this disk, batches of {BATCH}):")
    print(
        f"  append: {append_rate:8.0f} entries/s   SHA-256 work alone {baseline:8.0f}/s   "
        f"ratio {append_rate / baseline:.3f}   (whole log built in {build_s:.1f} s)"
    )
    print(
        f"  inclusion proof:   median {statistics.median(inclusion):.3f} ms  "
        f"p99 {p(inclusion, 0.99):.3f} ms  (target < 1 ms)"
    )
    print(
        f"  consistency proof: median {statistics.median(consistency):.3f} ms  "
        f"p99 {p(consistency, 0.99):.3f} ms  (target < 1 ms)"
    )
    print(f"  full verification (audit verify): {verify_s:.1f} s")


if __name__ == "__main__":
    main()
