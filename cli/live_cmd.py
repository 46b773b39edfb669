"""``tfshare agent``, ``publish``, ``listen`` and ``inbox``: an agency on a live broker."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from tfshare import msgref
from tfshare.errors import ExitCode, TfshareError, UsageError
from tfshare.workflows import live
from tfshare.workflows.bodies import Prompter, is_draft, read_stdin_body, save_draft
from tfshare.workflows.exchange import Credentials

from .common import (
    AnchorOpt,
    JsonFlag,
    KeyOpt,
    PassphraseFile,
    RosterOpt,
    ServerOpt,
    StateDir,
    emit_fields,
    emit_json,
    iso,
    note,
    now_ms,
    passphrase,
    shown,
    split_list,
    where,
)

agent_app = typer.Typer(help="Run an agency's agent.", no_args_is_help=True)
inbox_app = typer.Typer(help="Read the messages the agent received.", no_args_is_help=True)

RegistryOpt = Annotated[Path | None, typer.Option("--registry", help="Registry cache directory.")]


def _agency(
    key: Path | None,
    passphrase_file: Path | None,
    roster: Path | None,
    anchor: Path | None,
    state: Path | None,
    registry: Path | None,
    server: str | None = None,
) -> tuple[live.Agency, str]:
    """The agency's verified setup (flags, else the profile) and the broker URL to use."""
    at = where(key, roster, anchor, state, server)
    creds = Credentials(at.key, passphrase(passphrase_file, confirm=False, purpose=str(at.key)))
    agency = live.Agency.load(
        creds,
        roster_path=at.roster,
        anchor_path=at.anchor,
        state_dir=at.state,
        registry_dir=registry,
    )
    return agency, live.server_url(at.server)


@agent_app.command("run")
def agent_run(
    server: ServerOpt = None,
    key: KeyOpt = None,
    roster: RosterOpt = None,
    anchor: AnchorOpt = None,
    passphrase_file: PassphraseFile = None,
    state: StateDir = None,
    registry: RegistryOpt = None,
) -> None:
    """Receive the agency's messages into its inbox until Ctrl-C (JSON logs on stderr)."""
    agency, url = _agency(key, passphrase_file, roster, anchor, state, registry, server)
    agent = live.make_agent(agency, url=url, clock=now_ms)
    note(f"agent of {agent.identity.agency_id} consuming from {url}")
    asyncio.run(live.run_until_signalled(agent))
    s = agent.stats
    note(
        f"agent stopped: {s.delivered} delivered, {s.duplicates} duplicates, "
        f"{s.rejected} rejected ({s.unverified} unsigned junk), {s.failed} processing "
        f"failures, {s.published} sent from the outbox"
    )


def _ask(path: str, offered: list[str] | None) -> str:
    """Read one answer on the terminal. What the field takes and why an answer was refused
    are said by the prompts (``bodies.Prompter.say``); an empty answer is passed on, so that
    the prompts say what is needed instead of typer repeating the question."""
    answer: str = typer.prompt(path, default="", show_default=False, err=True)
    return answer


def _keep_draft(
    agency: live.Agency, prompter: Prompter | None, kind: str, exc: BaseException
) -> None:
    """After a failed publish, keep what was typed at the prompts in a 0600 draft and name
    it (in the error's hint, or on stderr for an interrupt). Nothing is kept if nothing
    was typed: the body file and the --field flags are still where they were."""
    if prompter is None or not prompter.answered or prompter.draft is None:
        return
    state_dir = agency.store.path.parent
    try:
        path = save_draft(state_dir, prompter.draft, kind=kind, now=dt.datetime.now(dt.UTC))
    except TfshareError as failed:
        note(f"the answers could not be kept as a draft: {failed.message}")
        return
    resume = f"your answers are kept in {path} (readable by you only): correct it if "
    resume += f"needed, then run 'tfshare publish {kind} --body-file {path}'"
    if isinstance(exc, TfshareError):
        exc.hint = f"{resume}; {exc.hint}"
    else:
        note(resume)


def publish_cmd(
    kind: Annotated[str, typer.Argument(help="alert, red-flag or tip.")],
    channel: Annotated[
        str | None,
        typer.Option("--channel", help="Channel to publish on (default: the parent's)."),
    ] = None,
    body: Annotated[
        str | None,
        typer.Option(
            "--body-file",
            "--file",
            metavar="PATH",
            help="The body, one JSON object, from a file, or '-' for stdin: kept out of the "
            "command line, where other users of this machine can read it.",
        ),
    ] = None,
    field: Annotated[
        list[str] | None,
        typer.Option(
            "--field",
            help="path=value, e.g. handling.tlp=RED (repeat). VISIBLE to other local users "
            "of this machine (the command line is public, in ps and /proc): put message "
            "content in --body-file, or let the prompts ask for it.",
        ),
    ] = None,
    to: Annotated[str | None, typer.Option("--to", help="Recipients, comma-separated.")] = None,
    server: ServerOpt = None,
    no_queue: Annotated[
        bool,
        typer.Option(
            "--no-queue",
            help="If the broker cannot take the message now, fail (exit 4) and keep nothing: "
            "it is never sent later (without it, the message waits in the outbox).",
        ),
    ] = False,
    key: KeyOpt = None,
    roster: RosterOpt = None,
    anchor: AnchorOpt = None,
    passphrase_file: PassphraseFile = None,
    state: StateDir = None,
    registry: RegistryOpt = None,
    reshare: Annotated[
        str | None, typer.Option("--reshare", metavar="MSG_ID", help="Pass a message on.")
    ] = None,
    escalate: Annotated[
        str | None, typer.Option("--escalate", metavar="MSG_ID", help="Escalate a message.")
    ] = None,
    amend: Annotated[
        str | None, typer.Option("--amend", metavar="MSG_ID", help="Amend your own message.")
    ] = None,
    retract: Annotated[
        str | None, typer.Option("--retract", metavar="MSG_ID", help="Retract your own message.")
    ] = None,
    reply: Annotated[
        str | None, typer.Option("--reply", metavar="MSG_ID", help="Answer a request.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Seal a message and publish it; queue it in the outbox if the broker is away.

    The body comes from --body-file (a JSON file, or '-' for stdin), then --field flags; on a
    terminal, required fields still missing are asked for (typed answers stay out of the
    command line, which other local users can read), each checked as it is typed ('now' for
    a date and time). If the message then cannot be published, the answers are kept in a
    draft that only you can read, and the hint says how to take it up again.

    With --reshare, --escalate, --amend, --retract or --reply the new message names its parent
    (msg_id and envelope hash, signed); the handling rules are checked first."""
    derived = [
        (relation, parent)
        for relation, parent in (
            ("reshare", reshare),
            ("escalate", escalate),
            ("amend", amend),
            ("retract", retract),
            ("reply", reply),
        )
        if parent is not None
    ]
    if len(derived) > 1:
        raise UsageError(
            "a message derives from one parent here",
            hint="give only one of --reshare, --escalate, --amend, --retract, --reply",
        )
    from_stdin = body == "-"
    # Read before the passphrase prompt could touch stdin; a piped stdin is spent after this.
    stdin_body = read_stdin_body(sys.stdin.buffer) if from_stdin else None
    body_path = Path(body) if body is not None and not from_stdin else None
    agency, url = _agency(key, passphrase_file, roster, anchor, state, registry, server)
    on_terminal = sys.stdin.isatty() and sys.stderr.isatty() and not from_stdin
    prompter = Prompter(ask=_ask, say=note) if on_terminal else None
    try:
        result = live.publish(
            agency,
            kind=kind,
            channel=channel,
            to=split_list(to),
            body_path=body_path,
            body=stdin_body,
            fields=field or [],
            prompt=prompter,
            url=url,
            queue=not no_queue,
            derive=derived[0] if derived else None,
        )
    except (TfshareError, typer.Abort, KeyboardInterrupt) as exc:
        _keep_draft(agency, prompter, kind, exc)
        raise
    state_dir = agency.store.path.parent
    if body_path is not None and is_draft(state_dir, body_path):
        body_path.unlink()  # sealed into the outbox or sent: the plaintext copy goes
        note(f"draft {body_path} published and removed")
    info = {
        "msg_id": result.sealed.msg_id.hex(),
        "subject": result.subject,
        "recipients": list(result.sealed.recipients),
        "queued": result.queued,
        "queued_because": result.reason,
        "stream_seq": result.seq,
        "also_sent_from_outbox": result.flushed,
    }
    if as_json:
        emit_json(info)
    elif result.queued:
        note(
            f"queued: {result.reason or 'the broker is unreachable'}; {info['msg_id']} is in "
            "the outbox and goes out with the next publish or the agent"
        )
    else:
        note(f"published {kind} to {', '.join(result.sealed.recipients)} (stream seq {result.seq})")
    if not as_json:
        emit_fields([("msg_id", str(info["msg_id"])), ("subject", result.subject)])


def listen_cmd(
    channel: Annotated[str | None, typer.Option("--channel", help="Only this channel.")] = None,
    min_severity: Annotated[
        str | None, typer.Option("--min-severity", help="low, medium, high or critical.")
    ] = None,
    count: Annotated[int | None, typer.Option("--count", help="Exit after N messages.")] = None,
    include_existing: Annotated[
        bool, typer.Option("--all", help="Show messages already in the inbox first.")
    ] = False,
    key: KeyOpt = None,
    roster: RosterOpt = None,
    anchor: AnchorOpt = None,
    passphrase_file: PassphraseFile = None,
    state: StateDir = None,
    registry: RegistryOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """The live feed: each message the agent receives, as it arrives (NDJSON with --json)."""
    if min_severity is not None and min_severity not in live.SEVERITIES:
        raise UsageError(
            f"unknown severity {min_severity!r}", hint=f"use one of {', '.join(live.SEVERITIES)}"
        )
    agency, _ = _agency(key, passphrase_file, roster, anchor, state, registry)
    floor = live.SEVERITIES.index(min_severity) if min_severity else 0
    shown = 0
    if not as_json:
        note(f"listening for {agency.creds.key_path.stem}'s messages (Ctrl-C to stop)")
    for read in live.follow_inbox(agency, include_existing=include_existing):
        if isinstance(read, live.Unreadable):
            _report_unreadable(read, as_json=as_json)
            continue
        item, opened = read.item, read.opened
        body = live.body_of(opened)
        severity = body.get("severity") if isinstance(body, dict) else None
        if channel and opened.channel != channel:
            continue
        if severity in live.SEVERITIES and live.SEVERITIES.index(severity) < floor:
            continue
        if as_json:
            emit_json(
                {
                    "msg_id": item.msg_id.hex(),
                    "sender": opened.sender,
                    "fingerprint": opened.fingerprint,
                    "channel": opened.channel,
                    "schema": opened.schema,
                    "sent": iso(opened.ts_ms),
                    "warning": read.warning,
                    "body": body,
                }
            )
        else:
            _render_feed(opened, body, read.warning)
        shown += 1
        if count is not None and shown >= count:
            return


_COLOURS = {"critical": "red", "high": "magenta", "medium": "yellow", "low": "green"}


def _report_unreadable(read: live.Unreadable, *, as_json: bool) -> None:
    """One line for a stored message that cannot be shown (its code); the list goes on."""
    if as_json:
        emit_json(
            {
                "msg_id": read.item.msg_id.hex(),
                "sender": read.item.sender,
                "unreadable": {"code": read.code, "reason": read.reason},
            }
        )
        return
    note(
        f"{read.item.msg_id.hex()} from {read.item.sender} cannot be shown: "
        f"{read.code}: {read.reason}"
    )


def _render_feed(opened: Any, body: Any, warning: str | None = None) -> None:
    """One message for people: what, how urgent, from whom (verified), how to handle it."""
    body = body if isinstance(body, dict) else {}
    severity = body.get("severity")
    # Every field of the body came from the sender: escaped (shown), so it cannot move the
    # cursor, clear the screen, reorder text or forge the "from ... (fp ...)" line below.
    text = shown(body.get("title") or body.get("summary") or body.get("context") or opened.schema)
    headline = text if len(text) <= 100 else text[:97] + "..."
    tag = shown(f"[{str(severity).upper()}]" if severity else f"[{opened.schema.split('/')[0]}]")
    color = (
        _COLOURS.get(str(severity))
        if sys.stdout.isatty() and not os.environ.get("NO_COLOR")
        else None
    )
    typer.echo(typer.style(tag, fg=color, bold=bool(color)) + f" {headline}")
    if warning:
        typer.echo(typer.style(f"  WARNING: {warning}", fg="red" if color else None))
    handling = body.get("handling", {})
    handling = handling if isinstance(handling, dict) else {}
    marks = [f"TLP:{handling.get('tlp')}", f"PAP:{handling.get('pap')}", str(handling.get("code"))]
    if handling.get("no_forward"):
        marks.append("no-forward")
    typer.echo(
        shown(
            f"  from {opened.sender} (fp {opened.fingerprint}) on {opened.channel}, "
            f"sent {iso(opened.ts_ms)}"
        )
    )
    typer.echo(shown(f"  handling {' '.join(marks)}"))
    indicators = body.get("indicators") or []
    if isinstance(indicators, list) and indicators:
        typer.echo(shown(f"  indicators {', '.join(str(i) for i in indicators[:6])}"))


@inbox_app.command("list")
def inbox_list(
    key: KeyOpt = None,
    roster: RosterOpt = None,
    anchor: AnchorOpt = None,
    passphrase_file: PassphraseFile = None,
    state: StateDir = None,
    registry: RegistryOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """The received messages, newest first (metadata only; 'inbox show' decrypts one)."""
    agency, _ = _agency(key, passphrase_file, roster, anchor, state, registry)
    rows = [
        {
            "msg_id": i.msg_id.hex(),
            "sender": i.sender,
            "channel": i.channel,
            "schema": i.schema,
            "sent": iso(i.ts_ms),
            "received": iso(i.received_ms),
        }
        for i in agency.store.inbox()
    ]
    if as_json:
        emit_json({"messages": rows})
        return
    for r in rows:
        typer.echo(
            shown(
                f"{r['received']}  {r['msg_id']}  {r['sender']:<16} {r['channel']:<10} "
                f"{r['schema']}"
            )
        )


@inbox_app.command("show")
def inbox_show(
    msg_id: Annotated[
        str,
        typer.Argument(
            help="The msg_id from 'inbox list' (32 hex digits, a unique prefix of 8 or more, "
            "or SENDER:MSG_ID)."
        ),
    ],
    key: KeyOpt = None,
    roster: RosterOpt = None,
    anchor: AnchorOpt = None,
    passphrase_file: PassphraseFile = None,
    state: StateDir = None,
    registry: RegistryOpt = None,
) -> None:
    """Decrypt and show one received message."""
    ref = msgref.parse(msg_id)  # a malformed id is refused before the passphrase is asked
    agency, _ = _agency(key, passphrase_file, roster, anchor, state, registry)
    received, _ = agency.store.find_by_prefix(ref.prefix)
    item = msgref.pick(
        ref,
        [(i.sender, i.msg_id, i) for i in received],
        where="in the inbox",
        hint="see 'tfshare inbox list'",
    )
    read = live.read_inbox_item(agency, item)
    opened = read.opened
    if read.warning:
        note(f"warning: {read.warning}")
    emit_json(
        {
            "msg_id": item.msg_id.hex(),
            "sender": opened.sender,
            "fingerprint": opened.fingerprint,
            "channel": opened.channel,
            "schema": opened.schema,
            "sent": iso(opened.ts_ms),
            "warning": read.warning,
            "body": live.body_of(opened),
        }
    )


@inbox_app.command("search")
def inbox_search(
    text: Annotated[str, typer.Argument(help="Words to find (case-insensitive) in the bodies.")],
    key: KeyOpt = None,
    roster: RosterOpt = None,
    anchor: AnchorOpt = None,
    passphrase_file: PassphraseFile = None,
    state: StateDir = None,
    registry: RegistryOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Search the received messages' decrypted bodies (nothing is indexed in clear)."""
    agency, _ = _agency(key, passphrase_file, roster, anchor, state, registry)
    needle = text.casefold()
    hits = []
    unreadable: list[live.Unreadable] = []
    for read in live.read_inbox(agency, agency.store.inbox(limit=100_000)):
        if isinstance(read, live.Unreadable):
            unreadable.append(read)
            continue
        opened = read.opened
        body = live.body_of(opened)
        if needle in json.dumps(body, ensure_ascii=False).casefold():
            hits.append(
                {
                    "msg_id": read.item.msg_id.hex(),
                    "sender": opened.sender,
                    "channel": opened.channel,
                    "schema": opened.schema,
                    "sent": iso(opened.ts_ms),
                    "warning": read.warning,
                    "body": body,
                }
            )
    if as_json:
        found: dict[str, object] = {"matches": hits}
        if unreadable:  # said only when there are some: the list's shape is as it was
            found["unreadable"] = [
                {"msg_id": u.item.msg_id.hex(), "sender": u.item.sender, "code": u.code,
                 "reason": u.reason}
                for u in unreadable
            ]  # fmt: skip
        emit_json(found)
        return
    for hit in hits:
        body = hit["body"] if isinstance(hit["body"], dict) else {}
        headline = body.get("title") or body.get("summary") or body.get("context") or ""
        typer.echo(
            shown(f"{hit['sent']}  {hit['msg_id']}  {hit['sender']:<16} ") + shown(headline)[:70]
        )
        if hit["warning"]:
            typer.echo(f"  WARNING: {hit['warning']}")
    for read in unreadable:
        _report_unreadable(read, as_json=False)
    if not hits:
        note("no message matches")


@inbox_app.command("quarantine")
def inbox_quarantine(
    key: KeyOpt = None,
    roster: RosterOpt = None,
    anchor: AnchorOpt = None,
    passphrase_file: PassphraseFile = None,
    state: StateDir = None,
    registry: RegistryOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Messages the agent rejected, with their codes."""
    agency, _ = _agency(key, passphrase_file, roster, anchor, state, registry)
    rows = [
        {
            "env_hash": q.env_hash.hex(),
            "code": q.code,
            "reason": q.reason,
            "sender": q.sender,
            "subject": q.subject,
            "received": iso(q.received_ms),
            "size": q.size,
            "kept": len(q.envelope),  # the quarantine keeps content only up to its caps
        }
        for q in agency.store.quarantined()
    ]
    if as_json:
        emit_json({"quarantine": rows})
        return
    for r in rows:
        kept = "" if r["kept"] == r["size"] else f" (first {r['kept']} bytes kept)"
        # Subject and claimed sender are whatever the publisher sent: escaped.
        typer.echo(
            shown(
                f"{r['received']}  {r['code']!s:<18} {r['subject']}  {str(r['env_hash'])[:16]}  "
                f"{r['size']} bytes{kept}"
            )
        )
    if not rows:
        note("quarantine is empty")


__all__ = ["ExitCode", "agent_app", "inbox_app", "listen_cmd", "publish_cmd"]
