"""Epoch mode (envelope mode 2): seal and open for 10, 1,000 and 20,000 readers, in one run.

Each figure is the best of several timed rounds, in microseconds per operation, beside the
primitives its construction cannot avoid, measured here in the same process at the same sizes:

- seal baseline = Ed25519 sign (of hdr || ct) + AEAD encrypt of the padded payload
- open baseline = Ed25519 verify (of hdr || ct) + AEAD decrypt of the payload
                  + the message-key derivation (one keyed BLAKE2b)
Targets (issue 15): seal and open each within 1.2x of their cost at 10 readers: an epoch-mode
message carries no per-reader wraps, so its cost must not grow with the audience.

The rosters are built directly as structs (a TrustedRoster of the Roster, not the signed file:
what a receiver holds after verifying it), so that a 20,000-member roster costs seconds; only
the sender and the receiver have real keys, the other members random ones (never used here).
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
from nacl import bindings

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from run import alert_body  # noqa: E402
from tfkit import TaskForce, build_taskforce  # noqa: E402

from tfshare import roster as R  # noqa: E402
from tfshare.encoding import MAX_UINT, blake2b_256, encode  # noqa: E402
from tfshare.envelope import Envelope, Mode  # noqa: E402
from tfshare.epochs import (  # noqa: E402
    L_MSGKEY,
    EpochKey,
    EpochKeyring,
    channel_readers_digest,
)
from tfshare.registry.book import shipped  # noqa: E402
from tfshare.replay import MemoryReplayStore  # noqa: E402
from tfshare.seal import ReceivePolicy, open_envelope, seal  # noqa: E402

ROUNDS = 7
NUMBER = 1000
READERS = (10, 1_000, 20_000)
CHANNEL = "bulletins"
TARGET = 1.2


def best_us(fn: Callable[[], object], *, number: int = NUMBER) -> float:
    """Best-of-ROUNDS time per call, in microseconds."""
    best = float("inf")
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - start) / number)
    return best * 1e6


def roster_with_readers(tf: TaskForce, readers: int) -> R.TrustedRoster:
    """The task force's roster with an epoch-only channel read by ``readers`` active members
    (its own members first, then made-up ones) and written by police."""
    _, base = R.decode_signed_roster(tf.roster_bytes)
    template = next(m for m in base.members if m.agency_id == "police")
    extra = readers - len(base.members)
    made_up = [
        msgspec.structs.replace(
            template,
            agency_id=f"reader-{i:05d}",
            display_name=f"Reader {i}",
            sign_keys=[R.KeyValidity(os.urandom(32), 0, MAX_UINT)],
            enc_key=R.KeyValidity(os.urandom(32), 0, MAX_UINT),
        )
        for i in range(extra)
    ]
    members = [*base.members, *made_up]
    names = [m.agency_id for m in members][:readers]
    assert "ngo" in names and "police" in names
    channel = R.Channel(CHANNEL, sorted(names), ["police"], 1, int(Mode.EPOCH), [])
    roster = msgspec.structs.replace(
        base,
        members=members,
        channels=sorted([*base.channels, channel], key=lambda c: c.name),
    )
    return R.TrustedRoster(roster, encode(roster))


def measure(tf: TaskForce, readers: int, body: bytes) -> dict[str, float]:
    """Seal (police) and open (ngo) one epoch-mode alert on a channel of ``readers``."""
    schema = shipped().lookup("tf.alert/1")
    assert schema is not None
    trusted = roster_with_readers(tf, readers)
    assert len(trusted.active_readers(CHANNEL)) == readers
    # Made for the channel's readers, as the key manager's delivery names them (a sender
    # seals only under such a key).
    made_for = channel_readers_digest(trusted, CHANNEL)
    keyring = EpochKeyring([EpochKey(CHANNEL, 1, os.urandom(32), tf.now_ms - 60_000, made_for)])
    police, ngo = tf.ids["police"], tf.ids["ngo"]
    seq = iter(range(1, 10**9))

    def do_seal() -> bytes:
        sealed = seal(
            identity=police,
            roster=trusted,
            channel=CHANNEL,
            to=None,
            schema=schema,
            body=body,
            seq=next(seq),
            now_ms=tf.now_ms,
            rng=os.urandom,
            epochs=keyring,
        )
        return sealed.data

    data = do_seal()
    env = msgspec.msgpack.decode(data, type=Envelope)
    seal_us = best_us(do_seal)
    policy = ReceivePolicy()
    schemas = shipped()
    replay = MemoryReplayStore()  # open never records: the same envelope opens every time

    def do_open() -> object:
        return open_envelope(
            data,
            identity=ngo,
            roster=trusted,
            replay=replay,
            schemas=schemas,
            now_ms=tf.now_ms,
            subject=None,
            policy=policy,
            epochs=keyring,
        )

    opened = do_open()
    assert getattr(opened, "epoch", 0) == 1, opened
    open_us = best_us(do_open)
    base = primitives(len(env.hdr) + len(env.ct) + 24, len(env.ct))
    seal_base = base["sign"] + base["aead_enc"]
    open_base = base["verify"] + base["aead_dec"] + base["derive"]
    return {
        "readers": readers,
        "envelope_bytes": len(data),
        "seal_us": round(seal_us, 1),
        "seal_baseline_us": round(seal_base, 1),
        "seal_ratio": round(seal_us / seal_base, 3),
        "open_us": round(open_us, 1),
        "open_baseline_us": round(open_base, 1),
        "open_ratio": round(open_us / open_base, 3),
    }


def primitives(signed_len: int, ct_len: int) -> dict[str, float]:
    """Raw PyNaCl and hashlib costs at this envelope's sizes, in microseconds."""
    pk, sk = bindings.crypto_sign_seed_keypair(os.urandom(32))
    msg = os.urandom(signed_len)
    sig = bindings.crypto_sign(msg, sk)[:64]
    key, nonce, aad = os.urandom(32), os.urandom(24), os.urandom(400)
    plain = os.urandom(ct_len - 16)
    ct = bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(plain, aad, nonce, key)
    enc = bindings.crypto_aead_xchacha20poly1305_ietf_encrypt
    dec = bindings.crypto_aead_xchacha20poly1305_ietf_decrypt
    derive_input = L_MSGKEY + os.urandom(24)  # msg_id || sender_kid
    return {
        "sign": best_us(lambda: bindings.crypto_sign(msg, sk), number=300),
        "verify": best_us(lambda: bindings.crypto_sign_open(sig + msg, pk), number=300),
        "aead_enc": best_us(lambda: enc(plain, aad, nonce, key)),
        "aead_dec": best_us(lambda: dec(ct, aad, nonce, key)),
        "derive": best_us(lambda: blake2b_256(derive_input, key=key)),
        "sha256": best_us(lambda: hashlib.sha256(msg).digest()),
    }


def main() -> None:
    tf = build_taskforce()
    schema = shipped().lookup("tf.alert/1")
    assert schema is not None
    body = alert_body(schema)
    print(
        f"\nepoch mode (mode 2): {len(body)}-byte alert body, best of {ROUNDS} rounds, "
        "microseconds per operation"
    )
    rows = [measure(tf, n, body) for n in READERS]
    head = ("readers", "bytes", "seal us", "base us", "ratio", "open us", "base us", "ratio")
    print("{:>8} {:>6} {:>9} {:>9} {:>6} {:>9} {:>9} {:>6}".format(*head))
    for r in rows:
        print(
            f"{r['readers']:>8} {r['envelope_bytes']:>6} {r['seal_us']:>9} "
            f"{r['seal_baseline_us']:>9} {r['seal_ratio']:>6} {r['open_us']:>9} "
            f"{r['open_baseline_us']:>9} {r['open_ratio']:>6}"
        )
    print("baseline: seal = sign + AEAD of the padded payload;")
    print("          open = verify + AEAD of the payload + the message-key derivation (BLAKE2b)")
    first = rows[0]
    print(f"cost against {first['readers']} readers (target <= {TARGET}x):")
    for r in rows[1:]:
        seal_x = r["seal_us"] / first["seal_us"]
        open_x = r["open_us"] / first["open_us"]
        print(f"{r['readers']:>8} readers: seal {seal_x:.2f}x, open {open_x:.2f}x")


if __name__ == "__main__":
    main()
