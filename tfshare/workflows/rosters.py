"""``tfshare roster``: edit, sign, anchor, verify, show and diff roster files, and publish them.

Owns: the file-level edits (grants and ungrants for several agencies at once, every name
checked before anything is written), who may sign (refused before the passphrase, file
unchanged), and what ``publish`` may replace in the broker's roster bucket (never a verified
newer roster: E_ROSTER_ROLLBACK).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import msgspec

from tfshare import roster as R
from tfshare import transport
from tfshare.encoding import encode, is_name
from tfshare.errors import RejectCode, RosterRejected, TrustError, UsageError
from tfshare.files import write_atomic
from tfshare.keyfile import read_keyfile_header
from tfshare.keys import Identity, fingerprint, kid_enc, kid_sig
from tfshare.store import StateStore
from tfshare.workflows.filekinds import load_anchor, load_card, read_kind
from tfshare.workflows.keys import load_identity


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


Right = Literal["read", "write"]


def _agencies(
    roster: R.Roster, names: str | None, *, all_members: bool, granting: bool
) -> list[str]:
    """The agencies a grant or ungrant names: ``names`` is comma-separated agency ids, or
    ``all_members`` every active member. Every name is checked before anything is changed."""
    if (names is None) == (not all_members):
        raise UsageError(
            "name the agencies or give --all-members (one of the two)",
            hint="e.g. 'police-nl,ngo-x' (agency ids, comma-separated), or --all-members",
        )
    if all_members:
        return [m.agency_id for m in roster.members if m.status == "active"]
    assert names is not None
    members = {m.agency_id: m for m in roster.members}
    wanted: list[str] = []
    for name in (part.strip() for part in names.split(",")):
        _name(name, "agency id")
        if name not in members:
            raise UsageError(
                f"agency {name!r} is not in roster seq {roster.seq}; nothing was changed",
                hint="'tfshare roster show' lists the members; add its card first (roster add)",
            )
        if granting and members[name].status != "active":
            raise UsageError(
                f"agency {name!r} is {members[name].status}; nothing was changed",
                hint="rights are granted only to active members",
            )
        if name not in wanted:
            wanted.append(name)
    return wanted


def _rights(read: bool, write: bool, verb: str) -> list[Right]:
    pairs: tuple[tuple[Right, bool], ...] = (("read", read), ("write", write))
    rights = [right for right, on in pairs if on]
    if not rights:
        raise UsageError(f"nothing to {verb}", hint="add --read, --write or both")
    return rights


def _with_rights(
    roster: R.Roster, channel: str, agencies: Sequence[str], rights: Sequence[Right], *, add: bool
) -> R.Roster:
    """``roster`` with ``rights`` on ``channel`` given to (or taken from) ``agencies``; the
    channel is created by a grant, and must exist for an ungrant."""
    channels = {c.name: c for c in roster.channels}
    if channel not in channels and not add:
        raise UsageError(
            f"channel {channel!r} is not in roster seq {roster.seq}; nothing was changed",
            hint="'tfshare roster show' lists the channels",
        )
    ch = channels.get(channel) or R.Channel(channel, [], [], 1, 1, [])
    lists = {"read": list(ch.readers), "write": list(ch.writers)}
    for right in rights:
        if add:
            lists[right] += [a for a in agencies if a not in lists[right]]
        else:
            lists[right] = [a for a in lists[right] if a not in agencies]
    channels[channel] = msgspec.structs.replace(ch, readers=lists["read"], writers=lists["write"])
    return msgspec.structs.replace(roster, channels=list(channels.values()))


def _change_rights(
    path: Path,
    names: str | None,
    *,
    all_members: bool,
    channel: str,
    read: bool,
    write: bool,
    add: bool,
    now_ms: int,
) -> tuple[R.Roster | None, list[str]]:
    _name(channel, "channel name")
    rights = _rights(read, write, "grant" if add else "remove")
    signed = _read(path)
    _, roster = R.decode_signed_roster(encode(signed))
    agencies = _agencies(roster, names, all_members=all_members, granting=add)
    changed = _with_rights(roster, channel, agencies, rights, add=add)
    if changed == roster:
        return None, agencies  # nothing to change: the file (and its signatures) stay as they are
    signed = R.edit(signed, changed, now_ms=now_ms)
    _write(path, signed)
    return R.decode_signed_roster(encode(signed))[1], agencies


def grant(
    path: Path,
    names: str | None,
    *,
    channel: str,
    read: bool,
    write: bool,
    now_ms: int,
    all_members: bool = False,
) -> tuple[R.Roster | None, list[str]]:
    """Let the agencies ``names`` (comma-separated ids) or ``all_members`` (every active
    member) read and/or write ``channel``, created if new. Returns the new roster (None when
    they all had those rights: nothing is written) and the agencies."""
    return _change_rights(
        path,
        names,
        all_members=all_members,
        channel=channel,
        read=read,
        write=write,
        add=True,
        now_ms=now_ms,
    )


def ungrant(
    path: Path,
    names: str | None,
    *,
    channel: str,
    read: bool,
    write: bool,
    now_ms: int,
    all_members: bool = False,
) -> tuple[R.Roster | None, list[str]]:
    """Take read and/or write on ``channel`` away from the agencies named (or all members).
    Returns the new roster (None when none had those rights) and the agencies."""
    return _change_rights(
        path,
        names,
        all_members=all_members,
        channel=channel,
        read=read,
        write=write,
        add=False,
        now_ms=now_ms,
    )


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


def sign(
    path: Path,
    key: Path,
    ask_passphrase: Callable[[], bytes],
    *,
    previous: Path | None = None,
) -> tuple[R.Roster, set[str], str, bool]:
    """Add the signature of the key file ``key``; returns the roster, its own coordinators'
    approvals, the signer, and whether the signer is one of its coordinators (else an
    outgoing coordinator of ``previous``, the roster in force, approving a coordinator change).

    A key whose signature could not count (not a coordinator, a suspended coordinator, a
    revoked or retired key) is refused before the passphrase is asked, and the file is left
    exactly as it was."""
    signed, roster, _ = R.self_verify(read_kind(path, "roster"))
    before = None if previous is None else _previous_anchor(previous, roster)
    header = read_keyfile_header(read_kind(key, "key"))
    _check_signer(roster, header.agency_id, header.sign_pk, before)
    identity = load_identity(key, ask_passphrase())
    # The header is not authenticated until the passphrase opened the key: check again.
    _check_signer(roster, identity.agency_id, identity.sign_pk, before)
    signed = R.sign(signed, identity)
    _write(path, signed)
    _, roster, approvals = R.self_verify(encode(signed))
    is_coordinator = R.signer_problem(roster, identity.agency_id, identity.sign_pk) is None
    return roster, approvals, identity.agency_id, is_coordinator


def _check_signer(
    roster: R.Roster, agency_id: str, sign_pk: bytes, previous: R.Anchor | None
) -> None:
    problem = R.signer_problem(roster, agency_id, sign_pk, previous=previous)
    if problem is not None:
        raise TrustError(
            f"{problem}: its signature would not count; the roster was not changed",
            hint="a roster is signed with the key of one of its active coordinators; an "
            "outgoing coordinator approving a coordinator change adds --previous with the "
            "roster in force",
        )


def _previous_anchor(previous: Path, roster: R.Roster) -> R.Anchor:
    """The coordinators of the roster in force, for an outgoing coordinator's signature: it
    must be fully signed by its own coordinators, of the same task force, and older."""
    _, before, approvals = R.self_verify(read_kind(previous, "roster"))
    if before.taskforce != roster.taskforce or before.seq >= roster.seq:
        raise UsageError(
            f"--previous is roster seq {before.seq} of {before.taskforce}, not an earlier "
            f"version of {roster.taskforce} (seq {roster.seq})",
            hint="give --previous the roster in force, the one this version replaces",
        )
    if len(approvals) < before.threshold:
        raise TrustError(
            f"--previous (roster seq {before.seq}) has {len(approvals)} of {before.threshold} "
            "coordinator signatures",
            hint="give --previous the fully signed roster in force",
        )
    return R.anchor_of(before)


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


def publish(
    path: Path,
    identity: Identity,
    *,
    url: str,
    anchor: Path | None = None,
    force: bool = False,
    tls: ssl.SSLContext | None = None,
) -> tuple[R.Roster, int]:
    """Put a roster that its own coordinators fully signed into the broker's roster bucket,
    using a coordinator's NATS credentials (only coordinators may write the bucket).

    The roster already in the bucket is looked at first, so nobody overwrites a newer one by
    mistake (``check_replaces``): an older version, or another one of the same seq, is
    refused with E_ROSTER_ROLLBACK (receivers would refuse it anyway, and agencies that join
    later would be handed the stale one). ``force`` replaces only a bucket value that cannot
    be verified (junk), never a verified newer roster."""
    data = read_kind(path, "roster")
    _, roster, approvals = R.self_verify(data)
    if len(approvals) < roster.threshold:
        raise TrustError(
            f"roster seq {roster.seq} has {len(approvals)} of {roster.threshold} signatures",
            hint="collect the coordinators' signatures first (tfshare roster sign)",
        )
    trust = [R.anchor_of(roster)] + ([] if anchor is None else [load_anchor(anchor)])

    async def put() -> int:
        conn = await transport.connect(
            url,
            nkey_seed=identity.nats_seed_encoded(),
            agency=identity.agency_id,
            name=f"tfshare-roster-{identity.agency_id}",
            reconnect=False,
            tls=tls,
        )
        try:
            current = await transport.get_roster(conn, roster.taskforce)
            if current is not None:
                check_replaces(current, data, trust, force=force)
            return await transport.put_roster(conn, roster.taskforce, data)
        finally:
            await conn.close()

    return roster, asyncio.run(put())


def check_replaces(
    current: bytes, new: bytes, trust: Sequence[R.Anchor], *, force: bool = False
) -> None:
    """Refuse to replace the bucket's roster ``current`` with ``new`` unless ``new`` is newer.

    ``current`` counts only if it verifies against one of ``trust`` (the anchor ``new``
    implies, and the anchor the coordinator pinned): a value that does not (junk, another
    task force, a forged high seq) must not block a repair, but it is not overwritten
    silently either: refused unless ``force``. A value with a lower seq is simply replaced.
    """
    if current == new:
        return  # publishing again is harmless: same bytes, same verdict everywhere
    _, roster = R.decode_signed_roster(new)
    try:
        _, present = R.decode_signed_roster(current)
    except RosterRejected:
        present = None
    if present is not None and present.seq < roster.seq:
        return
    verified = None if present is None else _verified_by(current, trust)
    if verified is not None:
        raise RosterRejected(
            RejectCode.E_ROSTER_ROLLBACK,
            f"the broker's roster bucket holds seq {verified.seq} of {verified.taskforce}, "
            f"{'newer than' if verified.seq > roster.seq else 'another version of'} seq "
            f"{roster.seq}: publishing it would roll the task force back",
            hint="nothing was published; edit and sign the roster in force (seq "
            f"{verified.seq}) to get seq {verified.seq + 1}, then publish that",
        )
    if force:
        return
    what = "something that is not a roster" if present is None else f"a roster seq {present.seq}"
    raise TrustError(
        f"the broker's roster bucket holds {what} that does not verify against this "
        "roster's coordinators" + (" or the anchor" if len(trust) > 1 else ""),
        hint="nothing was published; if that value is junk (not a roster the coordinators "
        "signed), publish again with --force to replace it"
        + ("" if len(trust) > 1 else ", or give --anchor to check it against the pinned anchor"),
    )


def _verified_by(data: bytes, trust: Sequence[R.Anchor]) -> R.Roster | None:
    """The roster ``data`` if it verifies (signatures, coordinator changes, content) against
    one of the anchors in ``trust``, else None. Its expiry does not matter here: an expired
    newer roster still makes an older one a rollback."""
    for anchor in trust:
        floor = msgspec.structs.replace(anchor, min_seq=0)
        _, content = R.decode_signed_roster(data)
        try:
            # Judged as of its own issue time: expiry is not the question.
            trusted, _ = R.verify_roster(data, anchor=floor, state=None, now_ms=content.issued_ms)
        except RosterRejected:
            continue
        return trusted.roster
    return None
