"""``tfshare roster``: edit, sign, anchor, verify, show and diff roster files, and publish them.

Owns: the file-level edits (cards added from files and directories, grants and ungrants for
several agencies at once, channel modes and epoch policies, roles, key rotations; every name
checked before anything is written), who may sign (refused before the passphrase, file
unchanged), and what ``publish`` may replace in the broker's roster bucket (never a verified
newer roster: E_ROSTER_ROLLBACK).

Each edit reads the file, decodes the envelope, lets ``tfshare.roster`` make the change
(one decode of the content, one encode) and writes the file once; what it reports back is the
roster's head (``Head``), not a third decode of 20,000 members.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import msgspec

from tfshare import roster as R
from tfshare import transport
from tfshare.encoding import DECODE_ERRORS, MAX_UINT, encode, is_name
from tfshare.errors import RejectCode, RosterRejected, TrustError, UsageError
from tfshare.files import read_bytes, write_atomic
from tfshare.keyfile import read_keyfile_header
from tfshare.keys import CardBody, Identity, fingerprint, kid_enc, kid_sig
from tfshare.store import StateStore
from tfshare.workflows.filekinds import MAX_FILE, load_anchor, load_card, read_kind
from tfshare.workflows.keys import load_identity


def read_roster_file(path: Path) -> bytes:
    """The bytes of a roster file (up to ``R.MAX_ROSTER_FILE``: 20,000 members are ~6 MB)."""
    return read_kind(path, "roster", limit=R.MAX_ROSTER_FILE)


def _read(path: Path) -> R.SignedRoster:
    """The roster file's envelope, strictly decoded; the content is decoded by the edit."""
    return R.decode_signed(read_roster_file(path))


class Head(msgspec.Struct, array_like=True, frozen=True):
    """The first elements of a roster: what a command reports after an edit. Decoding only
    these skips the members (an array struct ignores the elements after its fields)."""

    v: int
    taskforce: str
    seq: int
    issued_ms: int
    expires_ms: int
    threshold: int


_head_decoder: Final = msgspec.msgpack.Decoder(Head)


def _write(path: Path, signed: R.SignedRoster) -> Head:
    write_atomic(path, encode(signed))
    return _head_decoder.decode(signed.roster)


def _content(signed: R.SignedRoster) -> R.Roster:
    try:
        return R.decode_roster(signed.roster)
    except DECODE_ERRORS:
        raise TrustError("the roster file is damaged", hint="fetch the roster file again") from None


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
) -> Head:
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
    return _head_decoder.decode(signed.roster)


def add(
    path: Path, cards: Path | Sequence[Path], *, role: R.Role, now_ms: int
) -> tuple[Head, list[str]]:
    """Add the agencies of ``cards`` (card files, or directories of ``*.card`` files) in one
    roster version; returns its head and the agencies added. All or nothing."""
    loaded = load_cards([cards] if isinstance(cards, Path) else cards)
    signed = R.add_members(_read(path), [c for _, c in loaded], role=role, now_ms=now_ms)
    return _write(path, signed), [c.agency_id for _, c in loaded]


_SECRET_KEY_MAGIC: Final = b"tfshare-key/"


def _card_files(paths: Sequence[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.glob("*.card") if not p.is_dir())
            if not found:
                raise UsageError(
                    f"{str(path)!r} holds no *.card file; nothing was changed",
                    hint="give the agencies' card files, or a directory of them",
                )
            files += found
        else:
            files.append(path)
    if not files:
        raise UsageError("no card given", hint="give card files, or a directory of them")
    return files


def load_cards(paths: Sequence[Path]) -> list[tuple[Path, CardBody]]:
    """Read and verify the cards of ``paths`` (files, or directories of ``*.card`` files),
    each file once. Refused, before anything is written: a secret key file among them (its
    magic, whatever its name), an agency in two files, a key in two files (both named)."""
    loaded: list[tuple[Path, CardBody]] = []
    seen: set[Path] = set()
    agencies: dict[str, Path] = {}
    keys: dict[tuple[str, bytes | str], Path] = {}
    for path in _card_files(paths):
        if path.resolve() in seen:
            continue  # the same file given twice (by name and in its directory)
        seen.add(path.resolve())
        head = read_bytes(path, what="agency card", limit=MAX_FILE)[:32]
        if _SECRET_KEY_MAGIC in head:
            raise TrustError(
                f"{str(path)!r} is a secret key file, not an agency card; nothing was changed",
                hint="never pass a secret key file where a public card is expected: give the "
                ".card files only, and keep the key file where it was, private",
            )
        card = load_card(path)
        other = agencies.get(card.agency_id)
        if other is not None:
            raise UsageError(
                f"agency {card.agency_id!r} is in two cards, {str(other)!r} and "
                f"{str(path)!r}; nothing was changed",
                hint="keep the card whose fingerprint the agency confirmed by phone, "
                "remove the other",
            )
        agencies[card.agency_id] = path
        for what, key in (
            ("signing key", card.sign_pk),
            ("encryption key", card.enc_pk),
            ("NATS key", card.nats_user),
        ):
            other = keys.get((what, key))
            if other is not None:
                raise TrustError(
                    f"{str(other)!r} and {str(path)!r} carry the same {what}; nothing was changed",
                    hint="a key belongs to one agency: check both agencies' fingerprints by phone",
                )
            keys[(what, key)] = path
        loaded.append((path, card))
    return loaded


Right = Literal["read", "write"]


def _agencies(
    roster: R.Roster, names: str | Sequence[str] | None, *, all_members: bool, granting: bool
) -> list[str]:
    """The agencies a grant or ungrant names: ``names`` is agency ids (each may be a
    comma-separated list), or ``all_members`` every active member. Every name is checked
    before anything is changed."""
    given = [names] if isinstance(names, str) else list(names or [])
    if (not given) == (not all_members):
        raise UsageError(
            "name the agencies or give --all-members (one of the two)",
            hint="e.g. --agency police-nl --agency ngo-x (or 'police-nl,ngo-x'), or --all-members",
        )
    if all_members:
        return [m.agency_id for m in roster.members if m.status == "active"]
    members = {m.agency_id: m for m in roster.members}
    wanted: list[str] = []
    for name in (part.strip() for item in given for part in item.split(",")):
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
        wanted.append(name)
    return list(dict.fromkeys(wanted))


def _rights(read: bool, write: bool, verb: str) -> list[Right]:
    pairs: tuple[tuple[Right, bool], ...] = (("read", read), ("write", write))
    rights = [right for right, on in pairs if on]
    if not rights:
        raise UsageError(f"nothing to {verb}", hint="add --read, --write or both")
    return rights


def _needs_change(
    roster: R.Roster, channel: str, agencies: Sequence[str], rights: Sequence[Right], *, add: bool
) -> bool:
    """Whether granting (or taking) ``rights`` on ``channel`` changes anything; a grant on a
    new channel always does (it creates it). An ungrant needs the channel to exist."""
    ch = next((c for c in roster.channels if c.name == channel), None)
    if ch is None:
        if not add:
            raise UsageError(
                f"channel {channel!r} is not in roster seq {roster.seq}; nothing was changed",
                hint="'tfshare roster show' lists the channels",
            )
        return True
    lists = {"read": set(ch.readers), "write": set(ch.writers)}
    for right in rights:
        holders = lists[right]
        if any((a not in holders) if add else (a in holders) for a in agencies):
            return True
    return False


def write_only_writers(roster: R.Roster, channel: str) -> list[str]:
    """The active writers of an epoch-only ``channel`` that do not read it: epoch keys go to
    readers only, so none of them can ever seal a message on it. Empty for a channel that
    allows direct mode (they send direct), or that is not in ``roster``."""
    ch = next((c for c in roster.channels if c.name == channel), None)
    if ch is None or ch.mode_policy & R.MODE_DIRECT or not ch.mode_policy & R.MODE_EPOCH:
        return []
    active = {m.agency_id for m in roster.members if m.status == "active"}
    readers = set(ch.readers)
    return sorted(w for w in set(ch.writers) if w in active and w not in readers)


@dataclass(frozen=True)
class RightsChange:
    """What ``roster grant``/``ungrant`` did: the new roster's head (None: nothing changed),
    the agencies, and the writers of the channel that can never send on it
    (``write_only_writers``)."""

    head: Head | None
    agencies: list[str]
    write_only: list[str]


def _change_rights(
    path: Path,
    names: str | Sequence[str] | None,
    *,
    all_members: bool,
    channel: str,
    read: bool,
    write: bool,
    add: bool,
    now_ms: int,
) -> RightsChange:
    _name(channel, "channel name")
    rights = _rights(read, write, "grant" if add else "remove")
    signed = _read(path)
    roster = _content(signed)
    agencies = _agencies(roster, names, all_members=all_members, granting=add)
    if not _needs_change(roster, channel, agencies, rights, add=add):
        # Nothing to change: the file (and its signatures) stay as they are.
        return RightsChange(None, agencies, write_only_writers(roster, channel))
    change = R.grant if add else R.ungrant
    signed = change(signed, agencies, channel=channel, read=read, write=write, now_ms=now_ms)
    head = _write(path, signed)
    return RightsChange(head, agencies, write_only_writers(_content(signed), channel))


def grant(
    path: Path,
    names: str | Sequence[str] | None,
    *,
    channel: str,
    read: bool,
    write: bool,
    now_ms: int,
    all_members: bool = False,
) -> RightsChange:
    """Let the agencies ``names`` (ids, or one comma-separated string) or ``all_members``
    (every active member) read and/or write ``channel``, created if new. Returns the new
    roster's head (None when they all had those rights: nothing is written), the agencies
    and the channel's writers that cannot send on it (epoch-only, and they do not read)."""
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
    names: str | Sequence[str] | None,
    *,
    channel: str,
    read: bool,
    write: bool,
    now_ms: int,
    all_members: bool = False,
) -> RightsChange:
    """Take read and/or write on ``channel`` away from the agencies named (or all members).
    Returns the new roster's head (None when none had those rights), the agencies and the
    channel's writers that cannot send on it (taking read from a writer of an epoch-only
    channel makes it one)."""
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


def channel_schemas(path: Path, channel: str, schemas: list[str], *, now_ms: int) -> Head:
    signed = R.set_channel_schemas(_read(path), channel, schemas, now_ms=now_ms)
    return _write(path, signed)


_DURATION: Final = re.compile(r"^([0-9]{1,9})([smhdw])\Z")
_UNIT_MS: Final = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_MODES: Final = {"direct": R.MODE_DIRECT, "epoch": R.MODE_EPOCH}


def parse_period(text: str) -> int:
    """``--epoch-period``: a number and a unit (s, m, h, d, w), e.g. 7d; at least a minute."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise UsageError(
            f"{text!r} is not a duration",
            hint="give --epoch-period as a number and a unit: 30m, 12h, 7d, 2w",
        )
    period_ms = int(match.group(1)) * _UNIT_MS[match.group(2)]
    if period_ms < R.MIN_EPOCH_PERIOD_MS:
        raise UsageError(f"an epoch period of {text!r} is under a minute", hint="give 1m or more")
    if period_ms > MAX_UINT:
        raise UsageError(
            f"an epoch period of {text!r} is longer than a roster can hold "
            f"({MAX_UINT // _UNIT_MS['w']}w)",
            hint="give a period of days or weeks: 7d (the default), 12h, 2w",
        )
    return period_ms


def parse_modes(text: str) -> int:
    """``--modes direct``, ``epoch`` or ``direct,epoch``: the channel's mode policy bits."""
    policy = 0
    for part in (p.strip() for p in text.split(",")):
        if part not in _MODES:
            raise UsageError(
                f"{part!r} is not an envelope mode",
                hint="give --modes direct, epoch or direct,epoch",
            )
        policy |= _MODES[part]
    return policy


@dataclass(frozen=True)
class ChannelChange:
    """What ``roster channel`` changed (nothing when every setting was already so)."""

    head: Head | None
    modes: str
    period_ms: int
    max_messages: int
    schemas: list[str]
    # Writers of the channel that cannot send on it (epoch-only, and they do not read it).
    write_only: list[str]

    @property
    def period(self) -> str:
        return _duration(self.period_ms)


def channel_settings(
    path: Path,
    channel: str,
    *,
    schemas: list[str] | None,
    modes: str | None = None,
    epoch_period: str | None = None,
    epoch_messages: int | None = None,
    now_ms: int,
) -> ChannelChange:
    """Set a channel's allowed schemas, envelope modes and epoch policy in one new version;
    a setting not given keeps its value. Nothing is written when nothing changes."""
    _name(channel, "channel name")
    policy = None if modes is None else parse_modes(modes)
    period = None if epoch_period is None else parse_period(epoch_period)
    if epoch_messages is not None and epoch_messages < 1:
        raise UsageError("--epoch-messages must be at least 1", hint="e.g. --epoch-messages 1000")
    if epoch_messages is not None and epoch_messages > MAX_UINT:
        raise UsageError(
            f"--epoch-messages {epoch_messages} is more than a roster can hold ({MAX_UINT})",
            hint="e.g. --epoch-messages 100000 (the default)",
        )
    signed = _read(path)
    roster = _content(signed)
    ch = next((c for c in roster.channels if c.name == channel), None)
    if ch is None:
        raise UsageError(
            f"channel {channel!r} is not in roster seq {roster.seq}; nothing was changed",
            hint="create it with 'tfshare roster grant' first",
        )
    old_period, old_messages = next(
        ((p.period_ms, p.max_messages) for p in roster.epoch_policies if p.channel == channel),
        (R.DEFAULT_EPOCH_PERIOD_MS, R.DEFAULT_EPOCH_MAX_MESSAGES),
    )
    new_period = old_period if period is None else period
    new_messages = old_messages if epoch_messages is None else epoch_messages
    new_policy = ch.mode_policy if policy is None else policy
    new_schemas = ch.schemas if schemas is None else sorted(set(schemas))
    changed = False
    if new_schemas != ch.schemas:
        signed = R.set_channel_schemas(signed, channel, new_schemas, now_ms=now_ms)
        changed = True
    if new_policy != ch.mode_policy:
        signed = R.set_channel_modes(
            signed,
            channel,
            direct=bool(new_policy & R.MODE_DIRECT),
            epoch=bool(new_policy & R.MODE_EPOCH),
            now_ms=now_ms,
        )
        changed = True
    if (new_period, new_messages) != (old_period, old_messages):
        signed = R.set_epoch_policy(
            signed, channel, period_ms=new_period, max_messages=new_messages, now_ms=now_ms
        )
        changed = True
    return ChannelChange(
        head=_write(path, signed) if changed else None,
        modes=R.mode_names(new_policy),
        period_ms=new_period,
        max_messages=new_messages,
        schemas=new_schemas,
        write_only=write_only_writers(_content(signed), channel),
    )


def roles(path: Path, agency: str, roles: str, *, now_ms: int) -> Head:
    """Give ``agency`` exactly the comma-separated ``roles`` (e.g. member,key-manager)."""
    _name(agency, "agency id")
    wanted: list[R.Role] = []
    for part in (r.strip() for r in roles.split(",")):
        if part not in ("coordinator", "member", "auditor", "key-manager"):
            raise UsageError(
                f"{part!r} is not a role",
                hint="roles are member, key-manager, auditor (and coordinator, which is "
                "changed only with the coordinator set)",
            )
        wanted.append(part)  # type: ignore[arg-type]
    signed = R.set_roles(_read(path), agency, wanted, now_ms=now_ms)
    return _write(path, signed)


MAX_ROTATION_FILE: Final = 4096  # a statement is about 300 bytes


def rotate(path: Path, statement: Path, *, now_ms: int) -> tuple[Head, str]:
    """Apply an agency's key rotation statement (``tfshare keys rotate``) to the roster: the
    statement is checked against the roster (``rotation.read_rotation``: signed by the
    agency's current signing key, new keys usable and unused, not stale), then applied
    (``roster.apply_rotation``). Returns the new head and what changed, for people."""
    from tfshare.rotation import read_rotation  # noqa: PLC0415 (only this command needs it)

    data = read_bytes(statement, what="rotation statement", limit=MAX_ROTATION_FILE)
    signed = _read(path)
    verified = read_rotation(data, _content(signed), now_ms=now_ms)
    signed = R.apply_rotation(
        signed,
        agency=verified.agency_id,
        new_enc_pk=verified.new_enc_pk,
        enc_bind_sig=verified.enc_bind_sig,
        new_sign_pk=verified.new_sign_pk,
        created_ms=verified.created_ms,
        grace_ms=verified.grace_ms,
        now_ms=now_ms,
    )
    keys: list[str] = []
    if verified.rotates_enc:
        keys.append(f"encryption key (new kid {kid_enc(verified.new_enc_pk).hex()})")
    if verified.rotates_sign:
        keys.append(f"signing key (new fingerprint {fingerprint(verified.new_sign_pk)})")
    until = _iso(verified.created_ms + verified.grace_ms)
    done = f"rotated the {' and '.join(keys)} of {verified.agency_id}"
    if verified.rotates_enc:
        done += f"; its old encryption key is retired, valid until {until}"
    return _write(path, signed), done


def witnesses(path: Path, threshold: int, *, now_ms: int) -> Head:
    """Set how many member witnesses a checkpoint needs before evidence is trusted."""
    signed = R.set_witness_threshold(_read(path), threshold, now_ms=now_ms)
    return _write(path, signed)


def revoke(path: Path, agency: str, *, reason: R.Reason, now_ms: int) -> Head:
    signed = R.revoke(_read(path), agency, reason=reason, now_ms=now_ms)
    return _write(path, signed)


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
    signed, roster, _ = R.self_verify(read_roster_file(path))
    before = None if previous is None else _previous_anchor(previous, roster)
    header = read_keyfile_header(read_kind(key, "key"))
    _check_signer(roster, header.agency_id, header.sign_pk, before)
    identity = load_identity(key, ask_passphrase())
    # The header is not authenticated until the passphrase opened the key: check again.
    _check_signer(roster, identity.agency_id, identity.sign_pk, before)
    signed = R.sign(signed, identity)
    # A coordinator that rotated its signing key signs with the older keys it still holds too
    # (the roster lists them, unrevoked): receivers still trust the anchor that names the old
    # key, and the roster applying the rotation needs the old set's approval as well as the
    # new one's (PROTOCOL 7.3 step 5). Approvals count once per agency.
    revoked = {r.kid for r in roster.revoked}
    listed = {
        k.pk
        for m in roster.members
        if m.agency_id == identity.agency_id
        for k in m.sign_keys
        if kid_sig(k.pk) not in revoked
    }
    for pk in identity.sign_keys_held:
        if pk != identity.sign_pk and pk in listed:
            signed = R.sign(signed, identity.with_signing_key(pk))
    _write(path, signed)
    # The content was checked in full above and is unchanged: only the signatures are new.
    approvals = R.approvals(R.roster_message(signed.roster), signed.sigs, R.anchor_of(roster))
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
    _, before, approvals = R.self_verify(read_roster_file(previous))
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
    _, roster, approvals = R.self_verify(read_roster_file(path))
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
    roster_path: Path,
    anchor_path: Path,
    store: StateStore,
    *,
    now_ms: int,
    previous: R.TrustedRoster | None = None,
) -> R.TrustedRoster:
    """Verify a roster against the pinned anchor and the persisted state; persist the new
    state only if it verifies (a rejected roster changes nothing). ``previous``, the roster
    in use (if any), spares the checks of member records it already has (``verify_roster``)."""
    anchor = load_anchor(anchor_path)
    data = read_roster_file(roster_path)
    trusted, state = R.verify_roster(
        data,
        anchor=anchor,
        state=store.roster_state(anchor.taskforce),
        now_ms=now_ms,
        previous=previous,
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
    signed, roster, approvals = R.self_verify(read_roster_file(path))
    return _summary(signed, roster, approvals)


def _duration(ms: int) -> str:
    """A period as people write it (7d, 12h, 90m, 45s), exact."""
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms / 1000:g}s"


def _summary(signed: R.SignedRoster, roster: R.Roster, approvals: set[str]) -> dict[str, Any]:
    revoked = {r.kid: r for r in roster.revoked}
    retired: dict[str, list[dict[str, str]]] = {}
    for old in roster.retired_enc_keys:
        retired.setdefault(old.agency_id, []).append(
            {
                "kid": kid_enc(old.pk).hex(),
                "not_before": _iso(old.not_before_ms),
                "not_after": _iso(old.not_after_ms),
            }
        )
    policies = {p.channel: (p.period_ms, p.max_messages) for p in roster.epoch_policies}
    default_policy = (R.DEFAULT_EPOCH_PERIOD_MS, R.DEFAULT_EPOCH_MAX_MESSAGES)
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
                "enc_key": {
                    "kid": kid_enc(m.enc_key.pk).hex(),
                    "not_before": _iso(m.enc_key.not_before_ms),
                    "not_after": _iso(m.enc_key.not_after_ms),
                },
                "retired_enc_keys": retired.get(m.agency_id, []),
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
                "modes": R.mode_names(c.mode_policy),
                "epoch_policy": {
                    "period_ms": policies.get(c.name, default_policy)[0],
                    "period": _duration(policies.get(c.name, default_policy)[0]),
                    "max_messages": policies.get(c.name, default_policy)[1],
                    "default": c.name not in policies,
                },
            }
            for c in roster.channels
        ],
        "key_managers": sorted(
            m.agency_id for m in roster.members if m.status == "active" and "key-manager" in m.roles
        ),
        "revoked": [
            {"kid": r.kid.hex(), "at": _iso(r.at_ms), "reason": r.reason} for r in roster.revoked
        ],
    }


def _window(key: dict[str, str]) -> str:
    return f"{key['kid']} {key['not_before']}..{key['not_after']}"


def _policy(policy: dict[str, Any]) -> str:
    default = " (default)" if policy["default"] else ""
    return f"every {policy['period']} or {policy['max_messages']} messages{default}"


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
    changes += _member_changes(old["members"], new["members"])
    changes += _channel_changes(old["channels"], new["channels"])
    changes += _revocation_changes(old["revoked"], new["revoked"])
    return changes


def _member_changes(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[str]:
    changes: list[str] = []
    old_m = {m["agency"]: m for m in old}
    new_m = {m["agency"]: m for m in new}
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
        for field in ("name", "roles", "status", "fingerprint", "nats_user"):
            if a[field] != b[field]:
                changes.append(f"member {agency}: {field} {a[field]} -> {b[field]}")
        if a["sign_keys"] != b["sign_keys"]:
            before = ", ".join(_window(k) for k in a["sign_keys"])
            after = ", ".join(_window(k) for k in b["sign_keys"])
            changes.append(f"member {agency}: signing keys [{before}] -> [{after}]")
        if a["enc_key"] != b["enc_key"]:
            changes.append(
                f"member {agency}: encryption key {_window(a['enc_key'])} -> "
                f"{_window(b['enc_key'])}"
            )
        if a["retired_enc_keys"] != b["retired_enc_keys"]:
            before = ", ".join(_window(k) for k in a["retired_enc_keys"]) or "-"
            after = ", ".join(_window(k) for k in b["retired_enc_keys"]) or "-"
            changes.append(f"member {agency}: retired encryption keys [{before}] -> [{after}]")
    return changes


def _channel_changes(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[str]:
    changes: list[str] = []
    old_c = {c["name"]: c for c in old}
    new_c = {c["name"]: c for c in new}
    for name in sorted(new_c.keys() - old_c.keys()):
        c = new_c[name]
        changes.append(
            f"channel added: {name} readers={','.join(c['readers']) or '-'} "
            f"writers={','.join(c['writers']) or '-'} modes={c['modes']} "
            f"epoch policy {_policy(c['epoch_policy'])}"
        )
    for name in sorted(old_c.keys() - new_c.keys()):
        changes.append(f"channel removed: {name}")
    for name in sorted(old_c.keys() & new_c.keys()):
        a, b = old_c[name], new_c[name]
        for field in ("readers", "writers"):
            added = sorted(set(b[field]) - set(a[field]))
            removed = sorted(set(a[field]) - set(b[field]))
            if added:
                changes.append(f"channel {name}: {field} + {','.join(added)}")
            if removed:
                changes.append(f"channel {name}: {field} - {','.join(removed)}")
        for field in ("min_suite", "modes"):
            if a[field] != b[field]:
                changes.append(f"channel {name}: {field} {a[field]} -> {b[field]}")
        if a["epoch_policy"] != b["epoch_policy"]:
            changes.append(
                f"channel {name}: epoch policy {_policy(a['epoch_policy'])} -> "
                f"{_policy(b['epoch_policy'])}"
            )
        if a["schemas"] != b["schemas"]:
            changes.append(f"channel {name}: schemas -> {','.join(b['schemas']) or 'any'}")
    return changes


def _revocation_changes(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[str]:
    """Every revocation difference: a weakened or withdrawn revocation must be visible."""
    changes: list[str] = []
    old_r = {r["kid"]: r for r in old}
    new_r = {r["kid"]: r for r in new}
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
    data = read_roster_file(path)
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
            try:
                current = await transport.get_roster(conn, roster.taskforce)
            except RosterRejected:
                # The bucket points to an object that is missing or altered: junk, which
                # check_replaces lets --force replace (and refuses to replace silently).
                current = b""
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
