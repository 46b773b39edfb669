"""``tfshare roster``: edit, sign, anchor, verify, show and diff roster files."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tfshare import roster as R
from tfshare import transport
from tfshare.encoding import encode, is_name
from tfshare.errors import TrustError, UsageError
from tfshare.files import write_atomic
from tfshare.keys import Identity, fingerprint, kid_enc, kid_sig
from tfshare.store import StateStore
from tfshare.workflows.filekinds import load_anchor, load_card, read_kind


def _read(path: Path) -> R.SignedRoster:
    signed, _ = R.decode_signed_roster(read_kind(path, "roster"))
    return signed


def _write(path: Path, signed: R.SignedRoster) -> None:
    write_atomic(path, encode(signed))


def _name(value: str, what: str) -> str:
    if not is_name(value):
        raise UsageError(
            f"{value!r} is not a valid {what}",
            hint="use 1-32 lowercase letters, digits, '-' or '_', starting with a letter",
        )
    return value


def init(
    out: Path,
    *,
    taskforce: str,
    coordinator_cards: Sequence[Path],
    threshold: int,
    valid_days: int,
    now_ms: int,
) -> R.Roster:
    _name(taskforce, "task-force name")
    cards = [load_card(p) for p in coordinator_cards]
    if not cards:
        raise UsageError("at least one --coordinator card is needed", hint="add --coordinator")
    if not 1 <= threshold <= len(cards):
        raise UsageError(
            f"threshold {threshold} with {len(cards)} coordinator(s)",
            hint="choose --threshold between 1 and the number of coordinators",
        )
    if valid_days < 1:
        raise UsageError("--valid-days must be at least 1", hint="a roster is valid for days")
    if len({c.agency_id for c in cards}) != len(cards):
        raise UsageError("a coordinator card is given twice", hint="name each card once")
    signed = R.new_roster(
        taskforce, cards, threshold=threshold, now_ms=now_ms, valid_days=valid_days
    )
    write_atomic(out, encode(signed), overwrite=False)
    return R.decode_signed_roster(encode(signed))[1]


def add(path: Path, card_path: Path, *, role: R.Role, now_ms: int) -> R.Roster:
    signed = R.add_member(_read(path), load_card(card_path), role=role, now_ms=now_ms)
    _write(path, signed)
    return R.decode_signed_roster(encode(signed))[1]


def grant(
    path: Path, agency: str, *, channel: str, read: bool, write: bool, now_ms: int
) -> R.Roster:
    _name(channel, "channel name")
    if not (read or write):
        raise UsageError("nothing to grant", hint="add --read, --write or both")
    signed = R.grant(_read(path), agency, channel=channel, read=read, write=write, now_ms=now_ms)
    _write(path, signed)
    return R.decode_signed_roster(encode(signed))[1]


def channel_schemas(path: Path, channel: str, schemas: list[str], *, now_ms: int) -> R.Roster:
    signed = R.set_channel_schemas(_read(path), channel, schemas, now_ms=now_ms)
    _write(path, signed)
    return R.decode_signed_roster(encode(signed))[1]


def witnesses(path: Path, threshold: int, *, now_ms: int) -> R.Roster:
    """Set how many member witnesses a checkpoint needs before evidence is trusted."""
    signed = R.set_witness_threshold(_read(path), threshold, now_ms=now_ms)
    _write(path, signed)
    return R.decode_signed_roster(encode(signed))[1]


def revoke(path: Path, agency: str, *, reason: R.Reason, now_ms: int) -> R.Roster:
    signed = R.revoke(_read(path), agency, reason=reason, now_ms=now_ms)
    _write(path, signed)
    return R.decode_signed_roster(encode(signed))[1]


def sign(path: Path, identity: Identity) -> tuple[R.Roster, set[str], bool]:
    """Add a signature; returns the roster, its own coordinators' approvals, and whether the
    signer is one of its coordinators (an outgoing coordinator may sign a set change)."""
    signed = R.sign(_read(path), identity)
    _write(path, signed)
    _, roster, approvals = R.self_verify(encode(signed))
    own = R.anchor_of(roster)
    is_coordinator = any(k.sign_pk == identity.sign_pk for k in own.coordinators)
    return roster, approvals, is_coordinator


def export_anchor(path: Path, out: Path) -> R.Anchor:
    """Export the anchor of a roster that its own coordinators have fully signed."""
    _, roster, approvals = R.self_verify(read_kind(path, "roster"))
    if len(approvals) < roster.threshold:
        raise TrustError(
            f"roster seq {roster.seq} has {len(approvals)} of {roster.threshold} coordinator "
            "signatures; an anchor is exported only from a fully signed roster",
            hint="collect the coordinators' signatures first (tfshare roster sign)",
        )
    anchor = R.anchor_of(roster)
    write_atomic(out, encode(anchor))
    return anchor


def load_trusted(
    roster_path: Path, anchor_path: Path, store: StateStore, *, now_ms: int
) -> R.TrustedRoster:
    """Verify a roster against the pinned anchor and the persisted state; persist the new
    state only if it verifies (a rejected roster changes nothing)."""
    anchor = load_anchor(anchor_path)
    data = read_kind(roster_path, "roster")
    trusted, state = R.verify_roster(
        data, anchor=anchor, state=store.roster_state(anchor.taskforce), now_ms=now_ms
    )
    store.save_roster_state(anchor.taskforce, state)
    return trusted


def trusted_roster(
    roster_path: Path, anchor_path: Path, state_dir: Path, *, now_ms: int
) -> R.TrustedRoster:
    """``load_trusted`` with the state database of ``state_dir`` opened and closed around it."""
    store = StateStore(state_dir / "state.db")
    try:
        return load_trusted(roster_path, anchor_path, store, now_ms=now_ms)
    finally:
        store.close()


# ---------------------------------------------------------------------------------------------
# Rendering helpers (data, not text: the CLI decides how it looks)


def _iso(ms: int) -> str:
    if ms >= 2**53 - 1:
        return "never"
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).isoformat(timespec="seconds")


def summary(path: Path) -> dict[str, Any]:
    """The roster as plain data for ``roster show`` (and its --json)."""
    signed, roster, approvals = R.self_verify(read_kind(path, "roster"))
    return _summary(signed, roster, approvals)


def _summary(signed: R.SignedRoster, roster: R.Roster, approvals: set[str]) -> dict[str, Any]:
    revoked = {r.kid: r for r in roster.revoked}
    return {
        "taskforce": roster.taskforce,
        "seq": roster.seq,
        "issued": _iso(roster.issued_ms),
        "expires": _iso(roster.expires_ms),
        "threshold": roster.threshold,
        "witness_threshold": roster.witness_threshold,
        "coordinators": roster.coordinators,
        "signed_by": sorted(approvals),
        "signatures": len(signed.sigs),
        "fully_signed": len(approvals) >= roster.threshold,
        "members": [
            {
                "agency": m.agency_id,
                "name": m.display_name,
                "roles": m.roles,
                "status": m.status,
                "fingerprint": fingerprint(m.sign_keys[-1].pk),
                "sign_keys": [
                    {
                        "kid": kid_sig(k.pk).hex(),
                        "not_before": _iso(k.not_before_ms),
                        "not_after": _iso(k.not_after_ms),
                        "revoked": revoked[kid_sig(k.pk)].reason
                        if kid_sig(k.pk) in revoked
                        else None,
                    }
                    for k in m.sign_keys
                ],
                "enc_kid": kid_enc(m.enc_key.pk).hex(),
                "nats_user": m.nats_user,
            }
            for m in roster.members
        ],
        "channels": [
            {
                "name": c.name,
                "readers": c.readers,
                "writers": c.writers,
                "schemas": c.schemas,
                "min_suite": c.min_suite,
                "mode_policy": c.mode_policy,
            }
            for c in roster.channels
        ],
        "revoked": [
            {"kid": r.kid.hex(), "at": _iso(r.at_ms), "reason": r.reason} for r in roster.revoked
        ],
    }


def _keys(member: dict[str, Any]) -> str:
    return ", ".join(f"{k['kid']} {k['not_before']}..{k['not_after']}" for k in member["sign_keys"])


def diff(old_path: Path, new_path: Path) -> list[str]:
    """What signing NEW would approve, relative to OLD, one change per line."""
    old = summary(old_path)
    new = summary(new_path)
    changes: list[str] = []
    if old["taskforce"] != new["taskforce"]:
        changes.append(f"task force: {old['taskforce']} -> {new['taskforce']}")
    for field in ("seq", "threshold", "witness_threshold", "expires"):
        if old[field] != new[field]:
            changes.append(f"{field}: {old[field]} -> {new[field]}")
    for who in sorted(set(new["coordinators"]) - set(old["coordinators"])):
        changes.append(f"coordinator added: {who}")
    for who in sorted(set(old["coordinators"]) - set(new["coordinators"])):
        changes.append(f"coordinator removed: {who}")
    old_m = {m["agency"]: m for m in old["members"]}
    new_m = {m["agency"]: m for m in new["members"]}
    for agency in sorted(new_m.keys() - old_m.keys()):
        m = new_m[agency]
        changes.append(
            f"member added: {agency} ({m['name']}) roles={','.join(m['roles'])} "
            f"fingerprint {m['fingerprint']}"
        )
    for agency in sorted(old_m.keys() - new_m.keys()):
        changes.append(f"member removed: {agency}")
    for agency in sorted(old_m.keys() & new_m.keys()):
        a, b = old_m[agency], new_m[agency]
        for field in ("name", "roles", "status", "fingerprint", "enc_kid", "nats_user"):
            if a[field] != b[field]:
                changes.append(f"member {agency}: {field} {a[field]} -> {b[field]}")
        if a["sign_keys"] != b["sign_keys"]:
            before = ", ".join(
                f"{k['kid']} {k['not_before']}..{k['not_after']}" for k in a["sign_keys"]
            )
            after = ", ".join(
                f"{k['kid']} {k['not_before']}..{k['not_after']}" for k in b["sign_keys"]
            )
            changes.append(f"member {agency}: signing keys [{before}] -> [{after}]")
    old_c = {c["name"]: c for c in old["channels"]}
    new_c = {c["name"]: c for c in new["channels"]}
    for name in sorted(new_c.keys() - old_c.keys()):
        c = new_c[name]
        changes.append(
            f"channel added: {name} readers={','.join(c['readers']) or '-'} "
            f"writers={','.join(c['writers']) or '-'}"
        )
    for name in sorted(old_c.keys() - new_c.keys()):
        changes.append(f"channel removed: {name}")
    for name in sorted(old_c.keys() & new_c.keys()):
        for field in ("readers", "writers"):
            added = sorted(set(new_c[name][field]) - set(old_c[name][field]))
            removed = sorted(set(old_c[name][field]) - set(new_c[name][field]))
            if added:
                changes.append(f"channel {name}: {field} + {','.join(added)}")
            if removed:
                changes.append(f"channel {name}: {field} - {','.join(removed)}")
        for field in ("min_suite", "mode_policy"):
            if old_c[name][field] != new_c[name][field]:
                changes.append(
                    f"channel {name}: {field} {old_c[name][field]} -> {new_c[name][field]}"
                )
        if old_c[name]["schemas"] != new_c[name]["schemas"]:
            changes.append(
                f"channel {name}: schemas -> {','.join(new_c[name]['schemas']) or 'any'}"
            )
    # Every revocation difference: a weakened or withdrawn revocation must be visible.
    old_r = {r["kid"]: r for r in old["revoked"]}
    new_r = {r["kid"]: r for r in new["revoked"]}
    for kid in sorted(new_r.keys() - old_r.keys()):
        changes.append(f"key revoked: {kid} ({new_r[kid]['reason']}) at {new_r[kid]['at']}")
    for kid in sorted(old_r.keys() - new_r.keys()):
        changes.append(f"REVOCATION WITHDRAWN: {kid} (was {old_r[kid]['reason']})")
    for kid in sorted(old_r.keys() & new_r.keys()):
        a, b = old_r[kid], new_r[kid]
        if (a["reason"], a["at"]) != (b["reason"], b["at"]):
            changes.append(
                f"revocation changed: {kid} {a['reason']} at {a['at']} -> "
                f"{b['reason']} at {b['at']}"
            )
    return changes


def publish(path: Path, identity: Identity, *, url: str) -> tuple[R.Roster, int]:
    """Put a roster that its own coordinators fully signed into the broker's roster bucket,
    using a coordinator's NATS credentials (only coordinators may write the bucket)."""
    data = read_kind(path, "roster")
    _, roster, approvals = R.self_verify(data)
    if len(approvals) < roster.threshold:
        raise TrustError(
            f"roster seq {roster.seq} has {len(approvals)} of {roster.threshold} signatures",
            hint="collect the coordinators' signatures first (tfshare roster sign)",
        )

    async def put() -> int:
        conn = await transport.connect(
            url,
            nkey_seed=identity.nats_seed_encoded(),
            agency=identity.agency_id,
            name=f"tfshare-roster-{identity.agency_id}",
            reconnect=False,
        )
        try:
            return await transport.put_roster(conn, roster.taskforce, data)
        finally:
            await conn.close()

    return roster, asyncio.run(put())
