"""Re-key benchmark: one epoch of a channel with 10,000 readers, beside its primitives.

Measured in one run, in-process (no broker), on this machine:
- building the key deliveries of one epoch for N readers (``plan.seal_deliveries``: ceil(N /
  256) direct-mode envelopes, one X25519 and one wrap per reader, each envelope signed)
  beside N X25519 + wrap-key derivations + wrap encryptions alone, as a ratio (target <= 1.3);
- the whole re-key as the key manager does it (``KeyManager.make_epochs``: the plan over the
  roster, the key, the sealing, and the epoch, its readers and its envelopes persisted in
  SQLite before anything is published), for the same roster.

Identities are made cheaply from a seeded rng. TFSHARE_BENCH_REKEY_N changes N (default
10,000).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from tfkit import NOW_MS, DeterministicRng, identity  # noqa: E402

from tfshare import primitives  # noqa: E402
from tfshare import roster as R  # noqa: E402
from tfshare.encoding import encode  # noqa: E402
from tfshare.keymanager.plan import channel_readers, seal_deliveries  # noqa: E402
from tfshare.keymanager.service import KeyManager  # noqa: E402
from tfshare.keymanager.store import KeyManagerStore  # noqa: E402
from tfshare.keys import Identity  # noqa: E402
from tfshare.seal import L_WRAP, ZERO_NONCE, Recipient, wrap_key  # noqa: E402

N = int(os.environ.get("TFSHARE_BENCH_REKEY_N", "10000"))
# Rounds of each, interleaved (both see the same load from other work on the machine); the
# fastest of each is compared.
ROUNDS = 7


def timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def primitives_only(readers: list[Recipient], rng: DeterministicRng) -> None:
    """What re-keying cannot do without: per reader one X25519, its wrap key, one wrap."""
    eph_sk = rng(32)
    eph_pk = primitives.scalarmult_base(eph_sk)
    payload_key, msg_id, sender_kid = rng(32), rng(16), rng(8)
    ad = L_WRAP + msg_id
    for reader in readers:
        shared = primitives.scalarmult(eph_sk, reader.enc_pk)
        wk = wrap_key(shared, eph_pk, reader.enc_pk, msg_id, sender_kid)
        primitives.aead_encrypt(payload_key, ad, ZERO_NONCE, wk)


def task_force(n: int) -> tuple[R.TrustedRoster, Identity]:
    """A roster of n members reading "alerts" (epoch mode) and a key manager."""
    t = NOW_MS - 3_600_000
    coord, keyman = identity("coord"), identity("keyman")
    signed = R.new_roster("nl-north", [coord.card_body()], threshold=1, now_ms=t, valid_days=90)
    cards = [
        Identity.generate(
            f"r{i}", f"Reader {i}", rng=DeterministicRng(f"r{i}"), now_ms=t
        ).card_body()
        for i in range(n)
    ]
    signed = R.add_members(signed, cards, role="member", now_ms=t)
    signed = R.add_member(signed, keyman.card_body(), role="key-manager", now_ms=t)
    signed = R.grant(signed, [c.agency_id for c in cards], channel="alerts", read=True,
                     write=False, now_ms=t)  # fmt: skip
    signed = R.set_channel_modes(signed, "alerts", direct=True, epoch=True, now_ms=t)
    signed = R.sign(signed, coord)
    _, roster = R.decode_signed_roster(encode(signed))
    trusted, _ = R.verify_roster(encode(signed), anchor=R.anchor_of(roster), state=None,
                                 now_ms=NOW_MS)  # fmt: skip
    return trusted, keyman


def main() -> None:
    start = time.perf_counter()
    roster, keyman = task_force(N)
    setup_s = time.perf_counter() - start
    readers = channel_readers(roster, "alerts")
    assert len(readers) == N
    rng = DeterministicRng("bench rekey")

    def deliveries() -> None:
        sealed = seal_deliveries(
            identity=keyman, roster=roster, channel="alerts", epoch=1, key=rng(32),
            starts_ms=NOW_MS, reason="initial", readers=readers, first_seq=1, now_ms=NOW_MS,
            rng=rng,
        )  # fmt: skip
        assert len(sealed) == -(-N // 256)

    floor_s, rekey_s = [], []
    for _ in range(ROUNDS):
        floor_s.append(timed(lambda: primitives_only(readers, rng)))
        rekey_s.append(timed(deliveries))
    floor, rekey = min(floor_s), min(rekey_s)

    with tempfile.TemporaryDirectory() as tmp:
        store = KeyManagerStore(Path(tmp) / "keymanager.db", state_key=keyman.state_key)
        manager = KeyManager(
            identity=keyman, roster=roster, roster_bytes=b"", store=store, url="nats://-",
            clock=lambda: NOW_MS, rng=rng,
        )  # fmt: skip
        start = time.perf_counter()
        [made] = manager.make_epochs({})
        whole = time.perf_counter() - start
        envelopes = len(store.pending())
        store.close()

    print(f"\nre-key of a channel with {N} readers (in-process; roster built in {setup_s:.1f} s):")
    print(
        f"  key deliveries: {rekey * 1000:.0f} ms for {-(-N // 256)} envelopes beside "
        f"{N} X25519 + wraps alone {floor * 1000:.0f} ms: ratio {rekey / floor:.2f} "
        "(target <= 1.3)"
    )
    print(
        f"  whole re-key (plan, seal, persist the epoch, its {N} readers and {envelopes} "
        f"envelopes in SQLite): {whole * 1000:.0f} ms (reason {made.reason})"
    )


if __name__ == "__main__":
    main()
