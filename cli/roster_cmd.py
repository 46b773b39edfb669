"""``tfshare roster``: build, sign, pin, verify and review the task-force roster."""

# Each command imports the library it runs: every command of the CLI imports this module, and
# the roster code (PyNaCl, msgspec, SQLite, for publish the NATS client) is for these commands
# only (cli/common.py, issue 13).
# ruff: noqa: PLC0415

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from tfshare.visible import hidden_chars

from .common import (
    JsonFlag,
    PassphraseFile,
    TlsCaOpt,
    TlsCertOpt,
    TlsKeyOpt,
    emit_fields,
    emit_json,
    note,
    now_ms,
    passphrase,
    shown,
    tls_context,
)

if TYPE_CHECKING:
    from tfshare.workflows.rosters import Head

app = typer.Typer(help="Edit, sign and verify the task-force roster.", no_args_is_help=True)

RosterPath = Annotated[Path, typer.Argument(help="The roster file.")]


def _saved(roster: Head, what: str) -> None:
    note(
        f"{what}; roster seq {roster.seq} is unsigned: {roster.threshold} coordinator "
        "signature(s) needed (tfshare roster sign)"
    )


@app.command("init")
def init_cmd(
    taskforce: Annotated[str, typer.Option("--taskforce", help="Task-force name.")],
    coordinator: Annotated[
        list[Path], typer.Option("--coordinator", help="A coordinator's card (repeat).")
    ],
    threshold: Annotated[int, typer.Option("--threshold", help="Signatures needed (k).")],
    out: Annotated[Path, typer.Option("--out", help="The roster file to create.")],
    valid_days: Annotated[int, typer.Option("--valid-days", help="Lifetime of each version.")] = 90,
) -> None:
    """Create a roster whose members are the founding coordinators."""
    from tfshare.workflows import rosters as workflow

    roster = workflow.init(
        out,
        taskforce=taskforce,
        coordinator_cards=coordinator,
        threshold=threshold,
        valid_days=valid_days,
        now_ms=now_ms(),
    )
    _saved(roster, f"created {out}")


@app.command("add")
def add_cmd(
    path: RosterPath,
    cards: Annotated[
        list[Path],
        typer.Argument(
            help="Agency cards, or directories of *.card files (check each fingerprint!).",
            show_default=False,
        ),
    ],
    role: Annotated[
        Literal["member", "coordinator", "auditor", "key-manager"], typer.Option("--role")
    ] = "member",
) -> None:
    """Add agencies from their cards (files, or directories of *.card files), in one version."""
    from tfshare.workflows import rosters as workflow

    roster, added = workflow.add(path, cards, role=role, now_ms=now_ms())
    who = ", ".join(added) if len(added) <= 10 else f"{len(added)} agencies"
    _saved(roster, f"added {who} as {role}")


Agencies = Annotated[
    str | None,
    typer.Argument(
        help="Agency ids, comma-separated (e.g. police-nl,ngo-x); or use --all-members.",
        show_default=False,
    ),
]
AllMembers = Annotated[
    bool, typer.Option("--all-members", help="Every active member of the roster.")
]
AgencyOpt = Annotated[
    list[str] | None,
    typer.Option("--agency", help="An agency id (repeat for several).", show_default=False),
]
ChannelOpt = Annotated[str, typer.Option("--channel", help="Channel name.")]


def _write_only_warning(channel: str, writers: list[str]) -> None:
    """One line naming the writers of an epoch-only channel that do not read it."""
    if not writers:
        return
    who = ", ".join(writers) if len(writers) <= 10 else f"{len(writers)} agencies"
    verb = "writes" if len(writers) == 1 else "write"
    it = "it" if len(writers) == 1 else "they"
    note(
        f"tfshare: warning: {who} {verb} {channel!r} but do{'es' if len(writers) == 1 else ''} "
        f"not read it: in epoch mode {it} never hold{'s' if len(writers) == 1 else ''} the key "
        "and cannot send (grant --read, or allow direct mode: roster channel --modes "
        "direct,epoch)"
    )


def _rights_done(
    roster: Head | None, verb: str, agencies: list[str], channel: str, read: bool, write: bool
) -> None:
    rights = "+".join(r for r, on in (("read", read), ("write", write)) if on)
    who = (", ".join(agencies) if len(agencies) <= 10 else f"{len(agencies)} agencies") or "nobody"
    if roster is None:
        note(f"nothing changed: {rights} on {channel} was already as asked for {who}")
        return
    _saved(roster, f"{verb} {rights} on {channel}: {who}")


@app.command("grant")
def grant_cmd(
    path: RosterPath,
    channel: Annotated[str, typer.Option("--channel", help="Channel name (created if new).")],
    agencies: Agencies = None,
    read: Annotated[bool, typer.Option("--read", help="May read the channel.")] = False,
    write: Annotated[bool, typer.Option("--write", help="May write the channel.")] = False,
    all_members: AllMembers = False,
    agency: AgencyOpt = None,
) -> None:
    """Let agencies (--agency A --agency B, or --all-members) read and/or write a channel."""
    from tfshare.workflows import rosters as workflow

    done = workflow.grant(
        path,
        [*([agencies] if agencies else []), *(agency or [])],
        channel=channel,
        read=read,
        write=write,
        all_members=all_members,
        now_ms=now_ms(),
    )
    _rights_done(done.head, "granted", done.agencies, channel, read, write)
    _write_only_warning(channel, done.write_only)


@app.command("ungrant")
def ungrant_cmd(
    path: RosterPath,
    channel: ChannelOpt,
    agencies: Agencies = None,
    read: Annotated[bool, typer.Option("--read", help="May no longer read it.")] = False,
    write: Annotated[bool, typer.Option("--write", help="May no longer write it.")] = False,
    all_members: AllMembers = False,
    agency: AgencyOpt = None,
) -> None:
    """Take read and/or write on a channel away from agencies (--agency, or --all-members)."""
    from tfshare.workflows import rosters as workflow

    done = workflow.ungrant(
        path,
        [*([agencies] if agencies else []), *(agency or [])],
        channel=channel,
        read=read,
        write=write,
        all_members=all_members,
        now_ms=now_ms(),
    )
    _rights_done(done.head, "removed", done.agencies, channel, read, write)
    _write_only_warning(channel, done.write_only)


@app.command("channel")
def channel_cmd(
    path: RosterPath,
    channel: Annotated[str, typer.Argument(help="Channel name.")],
    schema: Annotated[
        list[str] | None,
        typer.Option("--schema", help="Allowed schema subject, e.g. tf.alert (repeat)."),
    ] = None,
    modes: Annotated[
        str | None,
        typer.Option(
            "--modes",
            help="Envelope modes allowed: direct, epoch or direct,epoch (senders pick by "
            "audience).",
            show_default=False,
        ),
    ] = None,
    epoch_period: Annotated[
        str | None,
        typer.Option(
            "--epoch-period",
            help="Rotate the epoch key after this long, e.g. 7d, 12h.",
            show_default=False,
        ),
    ] = None,
    epoch_messages: Annotated[
        int | None,
        typer.Option(
            "--epoch-messages", help="... or after this many messages.", show_default=False
        ),
    ] = None,
) -> None:
    """Set what a channel carries (--schema; none of the options: any known type), which
    envelope modes it allows and when its epoch key rotates; other settings are kept."""
    from tfshare.workflows import rosters as workflow

    only_schemas = modes is None and epoch_period is None and epoch_messages is None
    done = workflow.channel_settings(
        path,
        channel,
        schemas=schema if schema or not only_schemas else [],
        modes=modes,
        epoch_period=epoch_period,
        epoch_messages=epoch_messages,
        now_ms=now_ms(),
    )
    what = (
        f"channel {channel}: schemas {', '.join(done.schemas) or 'any'}; modes {done.modes}; "
        f"epoch key rotates every {done.period} or {done.max_messages} messages"
    )
    if done.head is None:
        note(f"nothing changed: {what}")
    else:
        _saved(done.head, what)
    _write_only_warning(channel, done.write_only)


@app.command("role")
def role_cmd(
    path: RosterPath,
    agency: Annotated[str, typer.Argument(help="Agency id.")],
    roles: Annotated[
        str,
        typer.Option(
            "--roles",
            help="Its roles, comma-separated, e.g. member,key-manager.",
            show_default=False,
        ),
    ],
) -> None:
    """Set an agency's roles (key-manager runs tfshare keys serve; coordinators change with
    the coordinator set, not here)."""
    from tfshare.workflows import rosters as workflow

    roster = workflow.roles(path, agency, roles, now_ms=now_ms())
    _saved(roster, f"{agency} has the roles {roles}")


@app.command("rotate")
def rotate_cmd(
    path: RosterPath,
    statement: Annotated[
        Path, typer.Argument(help="The agency's rotation statement (tfshare keys rotate).")
    ],
) -> None:
    """Apply an agency's key rotation: its new encryption key (the old one is kept as retired
    for the grace period) and, if it made one, its new signing key."""
    from tfshare.workflows import rosters as workflow

    roster, done = workflow.rotate(path, statement, now_ms=now_ms())
    _saved(roster, done)


@app.command("witnesses")
def witnesses_cmd(
    path: RosterPath,
    threshold: Annotated[
        int,
        typer.Argument(
            min=0,
            help="How many member agencies (other than the log's signer) must co-sign a "
            "checkpoint before evidence resting on it is trusted; 0: none.",
        ),
    ],
) -> None:
    """Require witness cosignatures on the audit log's checkpoints (issue a new version)."""
    from tfshare.workflows import rosters as workflow

    roster = workflow.witnesses(path, threshold, now_ms=now_ms())
    _saved(roster, f"checkpoints need {threshold} witness cosignature(s)")


@app.command("revoke")
def revoke_cmd(
    path: RosterPath,
    agency: Annotated[str, typer.Argument(help="Agency id.")],
    reason: Annotated[Literal["retired", "compromised"], typer.Option("--reason")],
) -> None:
    """Remove an agency and revoke its signing keys (compromised: even earlier messages)."""
    from tfshare.workflows import rosters as workflow

    roster = workflow.revoke(path, agency, reason=reason, now_ms=now_ms())
    _saved(roster, f"revoked {agency} ({reason})")


@app.command("sign")
def sign_cmd(
    path: RosterPath,
    key: Annotated[Path, typer.Option("--key", help="Your coordinator key file.")],
    passphrase_file: PassphraseFile = None,
    previous: Annotated[
        Path | None,
        typer.Option(
            "--previous",
            help="The roster in force: lets its coordinators (outgoing ones too) approve a "
            "change of the coordinator set.",
        ),
    ] = None,
) -> None:
    """Add your coordinator signature to the roster (refused, file unchanged, if your key
    is not an active coordinator key of it)."""
    from tfshare.workflows import rosters as workflow

    roster, approvals, signer, is_coordinator = workflow.sign(
        path,
        key,
        lambda: passphrase(passphrase_file, confirm=False, purpose=str(key)),
        previous=previous,
    )
    if not is_coordinator:
        note(
            f"note: {signer} is not a coordinator of this roster; the signature "
            "counts only as an outgoing coordinator's approval of a coordinator change"
        )
    note(
        f"signed roster seq {roster.seq} as {signer}: "
        f"{len(approvals)} of {roster.threshold} coordinator signature(s)"
    )


@app.command("anchor")
def anchor_cmd(
    path: RosterPath,
    out: Annotated[Path, typer.Option("--out", help="The anchor file to write.")],
    as_json: JsonFlag = False,
) -> None:
    """Export the trust anchor (coordinator keys and threshold) for agencies to pin."""
    from tfshare.keys import fingerprint
    from tfshare.workflows import rosters as workflow

    anchor = workflow.export_anchor(path, out)
    coordinators = [
        {"agency": k.agency_id, "fingerprint": fingerprint(k.sign_pk)} for k in anchor.coordinators
    ]
    if as_json:
        emit_json(
            {
                "taskforce": anchor.taskforce,
                "threshold": anchor.threshold,
                "coordinators": coordinators,
                "out": str(out),
            }
        )
        return
    note(f"wrote {out}; agencies pin it after checking these fingerprints by phone:")
    emit_fields(
        [("taskforce", anchor.taskforce), ("threshold", str(anchor.threshold))]
        + [(c["agency"], c["fingerprint"]) for c in coordinators]
    )


@app.command("publish")
def publish_cmd(
    path: RosterPath,
    key: Annotated[Path, typer.Option("--key", help="Your coordinator key file.")],
    server: Annotated[str | None, typer.Option("--server", help="Broker URL.")] = None,
    passphrase_file: PassphraseFile = None,
    tls_ca: TlsCaOpt = None,
    tls_cert: TlsCertOpt = None,
    tls_key: TlsKeyOpt = None,
    anchor: Annotated[
        Path | None,
        typer.Option(
            "--anchor",
            help="The pinned trust anchor: also trusted to verify the roster already in the "
            "bucket.",
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Replace a bucket value that does not verify (junk); a verified newer "
            "roster is never replaced.",
        ),
    ] = False,
) -> None:
    """Publish a fully signed roster to the broker's roster bucket (agents and the broker
    verify it and follow it). A roster older than the one in the bucket is refused (exit 6,
    E_ROSTER_ROLLBACK)."""
    from tfshare.workflows import rosters as workflow
    from tfshare.workflows.keys import load_identity
    from tfshare.workflows.live import server_url as live_server_url

    url = live_server_url(server)
    tls = tls_context(tls_ca, tls_cert, tls_key)  # a bad file named before the passphrase
    identity = load_identity(key, passphrase(passphrase_file, confirm=False, purpose=str(key)))
    roster, revision = workflow.publish(
        path, identity, url=url, anchor=anchor, force=force, tls=tls
    )
    note(f"published roster seq {roster.seq} of {roster.taskforce} (bucket revision {revision})")


@app.command("verify")
def verify_cmd(
    path: RosterPath,
    anchor: Annotated[Path, typer.Option("--anchor", help="The pinned trust anchor.")],
    state: Annotated[
        Path | None,
        typer.Option("--state", help="Also check against this state directory (read-only)."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Check a roster against the anchor (and the persisted state): exit 0 or 6 with a code."""
    from tfshare import roster as R
    from tfshare.store import StateStore
    from tfshare.workflows.filekinds import load_anchor
    from tfshare.workflows.rosters import read_roster_file

    pinned = load_anchor(anchor)
    saved = None
    if state is not None:
        store = StateStore(state / "state.db")
        try:
            saved = store.roster_state(pinned.taskforce)
        finally:
            store.close()
    trusted, _ = R.verify_roster(
        read_roster_file(path), anchor=pinned, state=saved, now_ms=now_ms()
    )
    expired = trusted.expired(now_ms())
    if as_json:
        emit_json(
            {"valid": True, "taskforce": trusted.taskforce, "seq": trusted.seq, "expired": expired}
        )
        return
    note(
        f"roster seq {trusted.seq} of {trusted.taskforce} is valid"
        + (" but EXPIRED: sending is refused until it is re-signed" if expired else "")
    )


@app.command("show")
def show_cmd(path: RosterPath, as_json: JsonFlag = False) -> None:
    """Show the roster for review (members, fingerprints, channels, revocations, signatures)."""
    from tfshare.workflows import rosters as workflow

    info = workflow.summary(path)
    if as_json:
        emit_json(info)
        return
    emit_fields(
        [
            ("taskforce", info["taskforce"]),
            ("seq", str(info["seq"])),
            ("issued", info["issued"]),
            ("expires", info["expires"]),
            ("witnesses", f"{info['witness_threshold']} needed per checkpoint"),
            (
                "signed",
                f"{', '.join(info['signed_by']) or 'nobody'} "
                f"({len(info['signed_by'])} of {info['threshold']} needed)",
            ),
        ]
    )
    # Every line goes through shown(): only the display names are free text today, but a line
    # of this listing must never be forgeable by anything a card or roster carries.
    typer.echo("members:")
    for m in info["members"]:
        revoked = [k for k in m["sign_keys"] if k["revoked"]]
        flag = f" [{m['status']}]" if m["status"] != "active" else ""
        flag += f" [revoked: {revoked[0]['revoked']}]" if revoked else ""
        typer.echo(
            shown(f"  {m['agency']:<20} {','.join(m['roles']):<12} {m['fingerprint']}{flag}")
        )
        typer.echo(shown(f"  {'':<20} {m['name']}"))
        for old in m["retired_enc_keys"]:
            typer.echo(
                shown(
                    f"  {'':<20} retired encryption key {old['kid']} "
                    f"{old['not_before']}..{old['not_after']}"
                )
            )
    typer.echo("channels:")
    for c in info["channels"]:
        policy = c["epoch_policy"]
        epoch = (
            f"; epoch key every {policy['period']} or {policy['max_messages']} messages"
            if "epoch" in c["modes"] or not policy["default"]
            else ""
        )
        typer.echo(
            shown(
                f"  {c['name']}: read {','.join(c['readers']) or '-'}; "
                f"write {','.join(c['writers']) or '-'}; "
                f"schemas {','.join(c['schemas']) or 'any'}; modes {c['modes']}{epoch}"
            )
        )
    _warn_hidden_names(info["members"])


def _warn_hidden_names(members: list[dict[str, object]]) -> None:
    """A roster signed before display names were checked may carry a name that tries to forge
    lines; it still verifies (refusing it would cut the task force off), shown escaped, flagged."""
    for m in members:
        if hidden_chars(str(m["name"])):
            note(
                f"warning: the display name of {m['agency']} holds characters shown escaped "
                "above (it could forge lines on a terminal): check this agency's fingerprint "
                "by phone"
            )


@app.command("diff")
def diff_cmd(
    old: Annotated[Path, typer.Argument(help="The roster in force.")],
    new: Annotated[Path, typer.Argument(help="The proposed roster.")],
    as_json: JsonFlag = False,
) -> None:
    """Show what signing NEW would approve, compared with OLD."""
    from tfshare.workflows import rosters as workflow

    changes = workflow.diff(old, new)
    if as_json:
        emit_json({"changes": changes})
        return
    for change in changes or ["no changes"]:
        typer.echo(shown(change))  # a change line quotes display names: one line each, escaped
