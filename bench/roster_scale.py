"""Roster benchmark at 20,000 members: build, sign, verify and a single edit, in one run.

Each figure is the best of a few timed rounds (the least disturbed by the rest of the
machine), in milliseconds. Beside each, the cost its work cannot avoid, measured here in the
same process on the same roster:

- verify (previous given) baseline = strict decode of the roster (msgspec) + its canonical
  re-encoding + one Ed25519 verification of the signed bytes + the roster hash (BLAKE2b)
- first-join verify baseline       = the same + per member one Ed25519 verification (the
  encryption key's binding), on one core; the low-order check is a set look-up (no X25519).
  The verifications run on the machine's cores (roster._members_crypto_problems): the row
  "first join, one core" is the same verification with the pool switched off, and the CPU
  time of the first join is printed beside its wall time
- single edit baseline             = strict decode + canonical re-encoding + one encoding
- sign baseline                    = one Ed25519 signature over the roster bytes
- build baselines                  = add: one encoding + a key id (BLAKE2b) per new key;
                                     grant: like a single edit
Targets (issue 15): verify of 20,000 members under 1 s (with the previous roster given); a
single edit within 1.3x of one verify.

The 20,000 identities are generated from a seeded generator and their cards built in the
process (no key files, no Argon2id): that part is not timed.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
from nacl import bindings

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from tfkit import NOW_MS, DeterministicRng  # noqa: E402

from tfshare import roster as R  # noqa: E402
from tfshare.encoding import blake2b_256, encode  # noqa: E402
from tfshare.keys import CardBody, Identity, kid_sig  # noqa: E402

MEMBERS = 20_000
ROUNDS = 3
EDIT_TARGET = 1.3
VERIFY_TARGET_MS = 1000.0
T0 = NOW_MS - 3_600_000


def best_ms(fn: Callable[[], object], *, rounds: int = ROUNDS) -> float:
    """Best-of-``rounds`` time of one call, in milliseconds."""
    return best_wall_cpu_ms(fn, rounds=rounds)[0]


def best_wall_cpu_ms(fn: Callable[[], object], *, rounds: int = ROUNDS) -> tuple[float, float]:
    """Best-of-``rounds`` wall time of one call and the process CPU time of that round (all
    threads), in milliseconds."""
    best = (float("inf"), 0.0)
    for _ in range(rounds):
        start, cpu = time.perf_counter(), time.process_time()
        fn()
        wall = time.perf_counter() - start
        if wall < best[0]:
            best = (wall, time.process_time() - cpu)
    return best[0] * 1e3, best[1] * 1e3


def one_core_ms(fn: Callable[[], object], *, rounds: int) -> float:
    """``best_ms`` with the roster's parallel checks switched off."""
    saved = R.PARALLEL_CRYPTO_MIN
    R.PARALLEL_CRYPTO_MIN = MEMBERS + 1
    try:
        return best_ms(fn, rounds=rounds)
    finally:
        R.PARALLEL_CRYPTO_MIN = saved


def cards(n: int) -> list[CardBody]:
    """n agencies' cards from one seeded generator (about 0.2 ms each)."""
    rng = DeterministicRng("roster-scale")
    return [
        Identity.generate(f"a{i:05d}", f"Agency {i}", rng=rng, now_ms=T0).card_body()
        for i in range(n)
    ]


def timings(coord: Identity, extra: Identity, members: list[CardBody]) -> dict[str, Any]:
    """Build, sign, verify (first join, and with the previous roster) and a single edit."""
    founded = R.new_roster("big", [coord.card_body()], threshold=1, now_ms=T0, valid_days=90)
    added = R.add_members(founded, members, role="member", now_ms=T0)
    built = R.grant(added, None, channel="alerts", read=True, write=True, now_ms=T0)
    before = R.sign(built, coord)
    before_bytes = encode(before)
    anchor = R.anchor_of(R.decode_signed_roster(before_bytes)[1])
    previous, state = R.verify_roster(before_bytes, anchor=anchor, state=None, now_ms=NOW_MS)

    # The single edit: one agency joins (what happens most often to a big task force), the
    # last one; the roster verified after it has MEMBERS members.
    def one_edit() -> R.SignedRoster:
        return R.add_members(before, [extra.card_body()], role="member", now_ms=NOW_MS - 1000)

    after_bytes = encode(R.sign(one_edit(), coord))

    def first_join() -> object:
        return R.verify_roster(before_bytes, anchor=anchor, state=None, now_ms=NOW_MS)

    first_ms, first_cpu_ms = best_wall_cpu_ms(first_join, rounds=2)
    return {
        "add": best_ms(lambda: R.add_members(founded, members, role="member", now_ms=T0)),
        "grant": best_ms(
            lambda: R.grant(added, None, channel="alerts", read=True, write=True, now_ms=T0)
        ),
        "sign": best_ms(lambda: R.sign(built, coord)),
        "first": first_ms,
        "first_cpu": first_cpu_ms,
        "first_one_core": one_core_ms(first_join, rounds=2),
        "edit": best_ms(one_edit),
        "verify": best_ms(
            lambda: R.verify_roster(
                after_bytes, anchor=anchor, state=state, now_ms=NOW_MS, previous=previous
            )
        ),
        "after_bytes": after_bytes,
    }


def baselines(coord: Identity, members: list[CardBody], after_bytes: bytes) -> dict[str, float]:
    """The primitives each figure cannot avoid, on this roster's bytes, in milliseconds."""
    signed, content = R.decode_signed_roster(after_bytes)
    roster_bytes = signed.roster
    message = R.roster_message(roster_bytes)
    sig = coord.sign(message)
    decoder = msgspec.msgpack.Decoder(R.Roster)
    pks = [c.sign_pk for c in members]
    return {
        "decode": best_ms(lambda: decoder.decode(roster_bytes)),
        "encode": best_ms(lambda: R.encode_roster(content)),
        "ed25519_verify": best_ms(lambda: bindings.crypto_sign_open(sig + message, coord.sign_pk)),
        "ed25519_sign": best_ms(lambda: coord.sign(message)),
        "kids": best_ms(lambda: [kid_sig(pk) for pk in pks]),
        "hash": best_ms(lambda: blake2b_256(roster_bytes)),
        "per_member": _per_member_ms(coord),
        "roster_bytes": len(roster_bytes),
    }


def main() -> None:
    coord = Identity.generate("coord", "Coordinator", rng=DeterministicRng("coord"), now_ms=T0)
    extra = Identity.generate("late", "Late Agency", rng=DeterministicRng("late"), now_ms=T0)
    began = time.perf_counter()
    members = cards(MEMBERS - 2)  # with the coordinator and the single edit's: MEMBERS
    made_s = time.perf_counter() - began
    t = timings(coord, extra, members)
    b = baselines(coord, members, t["after_bytes"])
    verify_base = b["decode"] + b["encode"] + b["ed25519_verify"] + b["hash"]
    edit_base = b["decode"] + 2 * b["encode"]
    first_base = verify_base + MEMBERS * b["per_member"]
    rows = [
        ("build: add all members (one batch)", t["add"], b["encode"] + b["kids"]),
        ("build: grant all (one edit)", t["grant"], edit_base),
        ("sign", t["sign"], b["ed25519_sign"]),
        ("verify, first join (previous=None)", t["first"], first_base),
        ("verify, first join, one core", t["first_one_core"], first_base),
        ("verify, previous = roster before the edit", t["verify"], verify_base),
        ("single edit (one agency joins)", t["edit"], edit_base),
    ]
    print(
        f"\nroster of {MEMBERS} members ({b['roster_bytes'] / 1e6:.1f} MB), best of {ROUNDS} "
        f"rounds, milliseconds ({MEMBERS - 2} identities made in {made_s:.1f} s, not timed)"
    )
    print("{:>44} {:>9} {:>9} {:>6}".format("", "ms", "base ms", "ratio"))
    for name, ms, base in rows:
        print(f"{name:>44} {ms:>9.1f} {base:>9.1f} {ms / base:>6.2f}")
    print(
        f"baselines: decode {b['decode']:.1f} + encode {b['encode']:.1f} + Ed25519 over the "
        f"roster {b['ed25519_verify']:.1f} + hash {b['hash']:.1f} ms; per member (first join) "
        f"{b['per_member'] * 1e3:.0f} us; {MEMBERS} key ids {b['kids']:.1f} ms"
    )
    print(
        f"first join: {t['first']:.0f} ms wall, {t['first_cpu']:.0f} ms CPU on "
        f"{R.cores()} core(s) ({t['first_one_core']:.0f} ms on one)"
    )
    ratio = t["edit"] / t["verify"]
    print(
        f"build (add + grant) {t['add'] + t['grant']:.0f} ms. Single edit / verify: {ratio:.2f}x "
        f"(target <= {EDIT_TARGET}x: {'met' if ratio <= EDIT_TARGET else 'NOT met'}); verify "
        f"{t['verify']:.0f} ms (target < {VERIFY_TARGET_MS:.0f} ms: "
        f"{'met' if t['verify'] < VERIFY_TARGET_MS else 'NOT met'})"
    )
    out = REPO / "bench-out"
    out.mkdir(exist_ok=True)
    figures = {
        "members": MEMBERS,
        "roster_bytes": b["roster_bytes"],
        "rows": [
            {"what": name, "ms": round(ms, 1), "baseline_ms": round(base, 1)}
            for name, ms, base in rows
        ],
        "edit_vs_verify": round(ratio, 3),
        "first_join_cpu_ms": round(t["first_cpu"], 1),
        "cores": R.cores(),
    }
    (out / "roster_scale.json").write_text(json.dumps(figures, indent=2))
    print(f"figures written to {out / 'roster_scale.json'}")


def _per_member_ms(signer: Identity) -> float:
    """One binding verification (a short message) per member, in ms (best of 3 x 500)."""
    message = b"x" * 80
    signed = signer.sign(message) + message

    def five_hundred() -> None:
        for _ in range(500):
            bindings.crypto_sign_open(signed, signer.sign_pk)

    return best_ms(five_hundred) / 500


if __name__ == "__main__":
    main()
