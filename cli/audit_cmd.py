"""``tfshare audit``: the coordinators' provenance log (serve, verify, trace, overdue, report,
prove, check, disclose) and every member's part in it (witness)."""

# Each command imports the library it runs: every command of the CLI imports this module, and
# the audit service, its log store, the NATS client and the registry are for these commands
# only (cli/common.py, issue 13). The agency loader is live_cmd's, borrowed when a command runs.
# ruff: noqa: PLC0415

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tfshare.errors import UsageError

from .common import (
    AnchorOpt,
    JsonFlag,
    KeyOpt,
    PassphraseFile,
    RosterOpt,
    ServerOpt,
    StateDir,
    TlsCaOpt,
    TlsCertOpt,
    TlsFiles,
    TlsKeyOpt,
    emit_fields,
    emit_json,
    iso,
    note,
    now_ms,
    shown,
    where,
)

if TYPE_CHECKING:
    from tfshare.audit.entry import LogEntry
    from tfshare.audit.logstore import ReceiptWords
    from tfshare.audit.service import HandlingFlag
    from tfshare.workflows import audit

app = typer.Typer(help="Provenance: the tamper-evident audit log.", no_args_is_help=True)


@app.command("serve")
def serve_cmd(
    server: ServerOpt = None,
    tls_ca: TlsCaOpt = None,
    tls_cert: TlsCertOpt = None,
    tls_key: TlsKeyOpt = None,
    key: KeyOpt = None,
    roster: RosterOpt = None,
    anchor: AnchorOpt = None,
    passphrase_file: PassphraseFile = None,
    state: StateDir = None,
    every: Annotated[int, typer.Option("--every", help="Sign after this many entries.")] = 100,
    interval: Annotated[
        float, typer.Option("--interval", help="...or after this many seconds.")
    ] = 10.0,
    proof_rate: Annotated[
        float,
        typer.Option(
            "--proof-rate",
            help="Proof requests a second each member may make; over it the member is "
            "answered E_RATE_LIMITED.",
        ),
    ] = 20.0,
    proof_burst: Annotated[
        float,
        typer.Option("--proof-burst", help="...in bursts of up to this many requests."),
    ] = 40.0,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            help="Also serve Prometheus /metrics and /healthz on 127.0.0.1 at this port.",
            min=0,
            max=65535,
        ),
    ] = None,
) -> None:
    """Log every envelope of the task force (verified, never decrypted) until Ctrl-C."""
    from tfshare.workflows import audit

    from .live_cmd import _agency

    agency, url = _agency(
        key, passphrase_file, roster, anchor, state, None, server,
        tls=TlsFiles(tls_ca, tls_cert, tls_key),
    )  # fmt: skip
    agency.identity()  # the passphrase is checked before the service says it is running
    note(f"audit service of {agency.roster.taskforce} consuming from {url}")
    service = audit.serve(
        agency,
        url=url,
        every=every,
        interval_s=interval,
        proof_rate=proof_rate,
        proof_burst=proof_burst,
        metrics_port=metrics_port,
        metrics_ready=lambda url: note(f"metrics at {url}/metrics, health at {url}/healthz"),
    )
    s = service.stats
    note(
        f"audit service stopped: {s.appended} appended, {s.duplicates} already logged, "
        f"{s.refused} refused, {s.junk} unsigned junk counted, {s.equivocations} "
        f"equivocations flagged, {s.checkpoints} checkpoints signed"
    )


@app.command("verify")
def verify_cmd(
    key: KeyOpt = None,
    roster: RosterOpt = None,
    anchor: AnchorOpt = None,
    passphrase_file: PassphraseFile = None,
    state: StateDir = None,
    as_json: JsonFlag = False,
) -> None:
    """Recompute the whole log and check every checkpoint and their consistency."""
    from tfshare.workflows import audit

    from .live_cmd import _agency

    agency, _ = _agency(key, passphrase_file, roster, anchor, state, None)
    result = audit.verify(agency)
    if as_json:
        emit_json({"entries": result.entries, "checkpoints": result.checkpoints, "ok": True})
    else:
        typer.echo(
            f"audit log verified: {result.entries} entries, {result.checkpoints} checkpoints "
            "signed by the roster's coordinators, each consistent with the one before"
        )


def _entry_json(entry: LogEntry) -> dict[str, Any]:
    return {
        "type": entry.entry_type,
        "msg_id": entry.msg_id.hex(),
        "sender": entry.sender,
        "sender_kid": entry.sender_kid.hex(),
        "channel": entry.channel,
        "ts": iso(entry.ts_ms),
        "env_sha256": entry.env_sha256.hex(),
        "observed": iso(entry.observed_ms),
    }


def _flag_json(flag: HandlingFlag) -> dict[str, Any]:
    return {
        "code": flag.code,
        "why": flag.why,
        "relation": flag.relation,
        "index": flag.index,
        "msg_id": flag.child.msg_id.hex(),
        "sender": flag.child.sender,
        "parent_index": flag.parent_index,
        "parent_msg_id": flag.parent.msg_id.hex(),
        "parent_sender": flag.parent.sender,
    }


_RESPONSE = {
    "urgent-8h": "a reply within 8 hours of receipt",
    "urgent-3d": "a reply within 3 days of receipt",
    "7d": "a reply within 7 days of receipt",
    "none": "no reply requested",
}
_FORMATS = ("md", "json", "csv")


@app.command("trace")
def trace_cmd(
    msg_id: Annotated[
        str,
        typer.Argument(
            help="The message id: 32 hex digits, a unique prefix of 8 or more, or SENDER:MSG_ID."
        ),
    ],
    key: KeyOpt = None,
    roster: RosterOpt = None,
    anchor: AnchorOpt = None,
    passphrase_file: PassphraseFile = None,
    state: StateDir = None,
    as_json: JsonFlag = False,
) -> None:
    """Who sent the message, when, on which channel, to whom, each recipient's receipt, its
    lineage and any handling rule broken, and its inclusion in the latest signed checkpoint."""
    from tfshare.workflows import audit

    from .live_cmd import _agency

    agency, _ = _agency(key, passphrase_file, roster, anchor, state, None)
    t = audit.trace(agency, msg_id)
    facts = t.facts
    read = facts if facts is not None and facts.read else None  # the body's facts, if read
    if as_json:
        emit_json(
            {
                "index": t.index,
                "entry": _entry_json(t.entry),
                "inclusion": {"checkpoint_size": t.checkpoint_size, "verified": t.proof_verified},
                "parents": [
                    {"relation": r, "msg_id": pid.hex(), "logged": e is not None}
                    for r, e, pid in t.parents
                ],
                "children": [
                    {"relation": r, "index": i, **_entry_json(e)} for r, i, e in t.children
                ],
                "receipts": [
                    {
                        "index": i,
                        "receiver": w.receiver,
                        "outcome": w.outcome,
                        "code": w.code,
                        "received": iso(w.received_ms),
                    }
                    for i, w in t.receipts
                ],
                "recipients": None if facts is None else list(facts.recipients),
                "schema": read.schema if read else None,
                "handling": (
                    {"code": read.handling_code, "no_forward": read.no_forward} if read else None
                ),
                "response_class": read.response_class if read else None,
                "flags": [_flag_json(f) for f in t.flags],
            }
        )
        return
    e = t.entry
    rows = [
        ("message", e.msg_id.hex()),
        ("sender", f"{e.sender} (signature verified by the audit service)"),
        ("sent", iso(e.ts_ms)),
        ("channel", e.channel),
        ("logged", f"entry {t.index} at {iso(e.observed_ms)}"),
        ("envelope", f"sha256 {e.env_sha256.hex()}"),
        (
            "inclusion",
            f"proved in signed checkpoint of size {t.checkpoint_size}"
            if t.proof_verified
            else "not yet in a signed checkpoint",
        ),
    ]
    for relation, parent, pid in t.parents:
        who = f"from {parent.sender}" if parent else "(not in this log)"
        rows.append(("derived from", f"{relation} of {pid.hex()} {who}"))
    for relation, index, child in t.children:
        rows.append(
            ("followed by", f"{relation}: {child.msg_id.hex()} by {child.sender} (entry {index})")
        )
    if facts is not None:
        rows.append(("recipients", ", ".join(facts.recipients)))
        if read:
            rows.append(("schema", str(read.schema)))
            no_forward = ", no_forward" if read.no_forward else ""
            rows.append(("handling", f"{read.handling_code}{no_forward}"))
            response = read.response_class or "none"
            rows.append(("response", f"{response}: {_RESPONSE.get(response, 'unknown class')}"))
        else:
            rows.append(
                ("body", "not read by the audit service: schema, handling and response unknown")
            )
    # One line per recipient (its receipts, or "no receipt"), then receipts from anyone else.
    named = list(facts.recipients) if facts is not None else []
    for who in named:
        mine = [(i, w) for i, w in t.receipts if w.receiver == who]
        label = f"{who} (sender)" if who == e.sender else who
        if not mine:
            rows.append(("receipt", f"{label}: no receipt"))
        rows.extend(("receipt", _receipt_line(label, i, w)) for i, w in mine)
    rows.extend(
        ("receipt", _receipt_line(w.receiver, i, w))
        for i, w in t.receipts
        if w.receiver not in named
    )
    if not t.receipts and not named:
        rows.append(("receipt", "none yet"))
    for flag in t.flags:
        rows.append(
            (
                "FLAG",
                f"{flag.code}: {flag.relation} {flag.child.msg_id.hex()} by {flag.child.sender} "
                f"(entry {flag.index}) of {flag.parent.msg_id.hex()} by {flag.parent.sender}: "
                f"{flag.why}",
            )
        )
    emit_fields(rows)


def _receipt_line(label: str, index: int, words: ReceiptWords) -> str:
    outcome = words.outcome + (f" {words.code}" if words.code else "")
    return f"{label}: {outcome} at {iso(words.received_ms)} (entry {index})"


@app.command("overdue")
def overdue_cmd(
    key: KeyOpt = None,
    roster: RosterOpt = None,
    anchor: AnchorOpt = None,
    passphrase_file: PassphraseFile = None,
    state: StateDir = None,
    as_json: JsonFlag = False,
) -> None:
    """Requests (response class urgent-8h, urgent-3d, 7d) whose recipients are past the
    deadline without a reply, most overdue first. The deadline counts from the recipient's
    receipt, or from sending if it sent none."""
    from tfshare.audit import report as reports
    from tfshare.workflows import audit

    from .live_cmd import _agency

    agency, _ = _agency(key, passphrase_file, roster, anchor, state, None)
    result = audit.overdue(agency, now_ms=now_ms())
    if as_json:
        emit_json(reports.overdue_json(result))
    else:
        for line in reports.overdue_table(result.rows) or ["no overdue replies"]:
            typer.echo(shown(line))
        note(
            f"{_many(result.requests, 'request')} with a reply deadline ({result.withdrawn} "
            f"withdrawn by their sender), {_many(len(result.rows), 'recipient')} past it "
            "without a reply"
        )
    if result.unread:
        note(
            f"note: {_many(result.unread, 'message')} could not be judged: the audit service "
            "could not read the body (it is not among the recipients), so whether a reply is "
            "asked for is unknown"
        )


def _many(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


@app.command("report")
def report_cmd(
    since: Annotated[
        str, typer.Option("--since", help="From this date (YYYY-MM-DD, UTC) or RFC 3339 time.")
    ],
    until: Annotated[
        str | None, typer.Option("--until", help="Up to (not including) this date or time.")
    ] = None,
    output: Annotated[str, typer.Option("--format", help="md, json or csv.")] = "md",
    key: KeyOpt = None,
    roster: RosterOpt = None,
    anchor: AnchorOpt = None,
    passphrase_file: PassphraseFile = None,
    state: StateDir = None,
) -> None:
    """Per agency and channel: messages sent, received (accepted), rejected by code, and the
    median delay from sending to receipt; then the totals."""
    from tfshare.audit import report as reports
    from tfshare.workflows import audit

    from .live_cmd import _agency

    if output not in _FORMATS:
        raise UsageError(f"unknown format {output!r}", hint=f"use one of {', '.join(_FORMATS)}")
    agency, _ = _agency(key, passphrase_file, roster, anchor, state, None)
    result = audit.report(agency, since=since, until=until)
    if output == "json":
        emit_json(reports.report_json(result))
    elif output == "csv":
        import csv
        import io

        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=reports.REPORT_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(reports.report_rows(result))
        typer.echo(_shown_lines(out.getvalue()), nl=False)
    else:
        typer.echo(_shown_lines(reports.report_markdown(result)), nl=False)


def _shown_lines(text: str) -> str:
    # Split on "\n" only (not splitlines, which also breaks at U+2028, \x85...): each of
    # those is escaped by shown() instead of becoming a line of its own.
    return "\n".join(shown(line) for line in text.split("\n"))


@app.command("prove")
def prove_cmd(
    msg_id: Annotated[
        str,
        typer.Argument(
            help="The message id: 32 hex digits, a unique prefix of 8 or more, or SENDER:MSG_ID."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Where to write the proof bundle.")],
    from_broker: Annotated[
        bool,
        typer.Option(
            "--from-broker",
            help="Ask the task force's audit service over NATS (any member), instead of "
            "reading this agency's own audit log.",
        ),
    ] = False,
    server: ServerOpt = None,
    tls_ca: TlsCaOpt = None,
    tls_cert: TlsCertOpt = None,
    tls_key: TlsKeyOpt = None,
    key: KeyOpt = None,
    roster: RosterOpt = None,
    anchor: AnchorOpt = None,
    passphrase_file: PassphraseFile = None,
    state: StateDir = None,
) -> None:
    """Export an offline evidence bundle: the entry, its inclusion proof, the signed
    checkpoint and the keys that signed it."""
    from tfshare.workflows import audit, audit_remote

    from .live_cmd import _agency

    agency, url = _agency(
        key, passphrase_file, roster, anchor, state, None, server,
        tls=TlsFiles(tls_ca, tls_cert, tls_key),
    )  # fmt: skip
    if from_broker:
        checked = audit_remote.request_inclusion(agency, msg_id, url=url, out=out)
        typer.echo(str(out))
        note(
            f"proof from the audit service, checked against this agency's roster: entry "
            f"{checked.index} in the checkpoint of size {checked.size} signed by "
            f"{', '.join(checked.signers)}"
        )
        return
    size = audit.prove(
        agency,
        msg_id,
        out,
        cosignatures=lambda: audit_remote.fetch_cosignatures(agency, url=url),
    )
    typer.echo(str(out))
    note(f"proof bundle against the signed checkpoint of size {size} written")


@app.command("consistency")
def consistency_cmd(
    old_size: Annotated[
        int | None,
        typer.Argument(help="The tree size of the checkpoint you hold (default: --known's)."),
    ] = None,
    new_size: Annotated[
        int | None, typer.Option("--new", help="The newer size (default: the latest).")
    ] = None,
    known: Annotated[
        Path | None,
        typer.Option("--known", help="A checkpoint note you hold; its root must match."),
    ] = None,
    server: ServerOpt = None,
    tls_ca: TlsCaOpt = None,
    tls_cert: TlsCertOpt = None,
    tls_key: TlsKeyOpt = None,
    key: KeyOpt = None,
    roster: RosterOpt = None,
    anchor: AnchorOpt = None,
    passphrase_file: PassphraseFile = None,
    state: StateDir = None,
    as_json: JsonFlag = False,
) -> None:
    """Ask the audit service (over NATS) to prove that the log only grew since a checkpoint
    you hold: a consistency proof between two signed checkpoints, checked here."""
    from tfshare.workflows import audit_remote

    from .live_cmd import _agency

    agency, url = _agency(
        key, passphrase_file, roster, anchor, state, None, server,
        tls=TlsFiles(tls_ca, tls_cert, tls_key),
    )  # fmt: skip
    checked = audit_remote.request_consistency(
        agency, old_size, new_size=new_size, known=known, url=url
    )
    if as_json:
        emit_json(
            {
                "old_size": checked.old_size,
                "new_size": checked.new_size,
                "old_root": checked.old_root.hex(),
                "new_root": checked.new_root.hex(),
                "signers": list(checked.signers),
                # The signed note itself: keep it (as a file) to pass as --known next time.
                "new_checkpoint": checked.new_checkpoint.decode(),
            }
        )
        return
    typer.echo(
        shown(
            f"consistent: the log of size {checked.old_size} is a prefix of the log of size "
            f"{checked.new_size} (new checkpoint signed by {', '.join(checked.signers)})"
        )
    )


@app.command("witness")
def witness_cmd(
    server: ServerOpt = None,
    tls_ca: TlsCaOpt = None,
    tls_cert: TlsCertOpt = None,
    tls_key: TlsKeyOpt = None,
    key: KeyOpt = None,
    roster: RosterOpt = None,
    anchor: AnchorOpt = None,
    passphrase_file: PassphraseFile = None,
    state: StateDir = None,
    as_json: JsonFlag = False,
) -> None:
    """Witness the audit log once: fetch its latest checkpoint, check it extends the one this
    agency holds (a consistency proof from the audit service), co-sign it and publish the
    cosignature. A fork is refused and reported (exit 6)."""
    from tfshare.workflows import witness

    from .live_cmd import _agency

    agency, url = _agency(
        key, passphrase_file, roster, anchor, state, None, server,
        tls=TlsFiles(tls_ca, tls_cert, tls_key),
    )  # fmt: skip
    result = witness.witness(agency, url=url)
    if as_json:
        emit_json({"verdict": result.verdict, "size": result.size, "cosigned": result.cosigned})
        return
    if result.verdict == "none":
        typer.echo("no checkpoint published yet: nothing to witness")
    elif result.cosigned:
        typer.echo(f"co-signed the checkpoint of size {result.size} ({result.verdict})")
    else:
        typer.echo(
            f"the published checkpoint of size {result.size} is older than the one held "
            "(consistent); nothing co-signed"
        )


def _checker_agency(state: Path | None) -> audit.CheckerAgency | None:
    """The checking agency's own trust: the active profile's roster, anchor and state (its
    --state if given), or --state alone; None without either (an offline check)."""
    from tfshare.workflows import audit

    try:
        at = where(None, None, None, state)
    except UsageError:  # no profile: only what --state gives
        return audit.CheckerAgency(state_dir=state) if state is not None else None
    assert at.state is not None  # a profile always has a state directory
    return audit.CheckerAgency(state_dir=at.state, roster_path=at.roster, anchor_path=at.anchor)


CheckerState = Annotated[
    Path | None,
    typer.Option(
        "--state",
        help="Your agency's state directory (default: the profile's): the roster is checked "
        "against the roster state kept there (an older one is refused), and your agency's "
        "roster is used if it is newer.",
        show_default=False,
    ),
]


def _roster_json(current: audit.CurrentRoster) -> dict[str, Any]:
    return {
        "seq": current.seq,
        "issued": iso(current.issued_ms),
        "source": current.source,
        "rollback_checked": current.rollback_checked,
    }


def _roster_note(current: audit.CurrentRoster) -> None:
    source = "your agency's roster" if current.source == "agency" else "the roster given"
    note(f"judged under roster seq {current.seq} issued {iso(current.issued_ms)} ({source})")
    if not current.rollback_checked:
        note(
            "note: checked offline against the anchor alone: a newer roster may have revoked "
            "keys or raised the witness threshold since; check with your agency's profile or "
            "--state, or with the task force's current roster"
        )


@app.command("check")
def check_cmd(
    bundle: Annotated[Path, typer.Argument(help="The proof bundle.")],
    envelope: Annotated[
        Path | None, typer.Option("--envelope", help="Also check this envelope is the one.")
    ] = None,
    roster: Annotated[
        Path | None,
        typer.Option("--roster", help="Trust the signers of this roster (the current one)..."),
    ] = None,
    anchor: Annotated[
        Path | None, typer.Option("--anchor", help="...pinned by this anchor.")
    ] = None,
    state: CheckerState = None,
    log_key: Annotated[
        list[str] | None,
        typer.Option("--log-key", help="An extra trusted log verifier key (repeat)."),
    ] = None,
    taskforce: Annotated[
        str | None, typer.Option("--taskforce", help="Expected task force.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Check a proof bundle against the task force's current roster: checkpoint signed by
    its log keys and co-signed by its witnesses, inclusion proof, and the envelope's hash,
    sender signature and header. With your agency's profile or --state the roster is checked
    against the roster your agency trusts; without, offline against the anchor alone."""
    from tfshare.workflows import audit

    agency = _checker_agency(state)
    if agency is None and (roster is None) != (anchor is None):
        raise UsageError("--roster and --anchor go together", hint="give both")
    current = (
        None
        if agency is None and roster is None
        else audit.checker_roster(roster, anchor, now_ms=now_ms(), agency=agency)
    )
    evidence = audit.check(
        bundle,
        roster=None if current is None else current.trusted,
        keys=list(log_key or []),
        taskforce=taskforce,
        envelope=envelope,
    )
    assert current is not None  # audit.check refuses without a roster
    result = evidence.checked
    entry = result.entry
    witnesses = [w.agency for w in evidence.witnesses]
    if as_json:
        emit_json(
            {
                "ok": True,
                "entry": _entry_json(entry),
                "signers": list(result.signers),
                "witnesses": witnesses,
                "witness_threshold": evidence.threshold,
                "self_asserted": False,
                "envelope_checked": envelope is not None,
                "roster": _roster_json(current),
            }
        )
        return
    typer.echo(
        shown(
            f"proof verified: {entry.entry_type} {entry.msg_id.hex()} from {entry.sender}"
            + (f" on {entry.channel}" if entry.channel else "")
            + f" at {iso(entry.ts_ms)} is entry {result.index} of the log"
            + (", and the envelope matches" if envelope else "")
        )
    )
    if evidence.envelope is not None:
        note(
            f"envelope signed by {evidence.envelope.header.sender} (key "
            f"{evidence.envelope.fingerprint}), checked against the roster as of its time"
        )
    note(
        f"checkpoint of size {result.size} witnessed by "
        + (", ".join(witnesses) if witnesses else "no other member")
        + f" (the roster requires {evidence.threshold})"
    )
    _roster_note(current)


@app.command("disclose")
def disclose_cmd(
    msg_id: Annotated[
        str,
        typer.Argument(help="The message id (all 32 hex digits)."),
    ],
    out: Annotated[Path, typer.Option("--out", help="Where to write the disclosure.")],
    key: KeyOpt = None,
    roster: RosterOpt = None,
    anchor: AnchorOpt = None,
    passphrase_file: PassphraseFile = None,
    state: StateDir = None,
) -> None:
    """Disclose one received message (envelope + its key, signed by you): proves its exact
    content to anyone holding the task force's anchor, and reveals nothing else."""
    from .live_cmd import _agency, _desk

    desk = _desk(key, roster, anchor, state)
    if desk is not None:  # the running agent holds the key: no passphrase asked
        from tfshare.desk import api
        from tfshare.files import write_atomic

        answer = desk.call(api.DiscloseRequest(msg_id))
        assert isinstance(answer, api.Disclosure)
        write_atomic(out, answer.data)
        sender = answer.sender
    else:
        from tfshare.workflows import audit

        agency, _ = _agency(key, passphrase_file, roster, anchor, state, None)
        sender = audit.disclose(agency, msg_id, out)
    typer.echo(str(out))
    note(f"disclosure of a message from {sender} written; it reveals that message's content")


@app.command("check-disclosure")
def check_disclosure_cmd(
    disclosure: Annotated[Path, typer.Argument(help="The disclosure file.")],
    anchor: Annotated[
        Path | None,
        typer.Option("--anchor", help="The task force's trust anchor (default: the profile's)."),
    ] = None,
    roster: Annotated[
        Path | None,
        typer.Option(
            "--roster",
            help="The task force's current roster, for keys revoked since the message "
            "(needed unless your agency's profile or --state gives it).",
        ),
    ] = None,
    state: CheckerState = None,
    proof: Annotated[
        Path | None,
        typer.Option(
            "--proof",
            help="The message's evidence bundle: needed if the sender's key was revoked as "
            "compromised (it must show the message witnessed in the log before that).",
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Check a disclosure and print the message it proves, judging revocations by the task
    force's current roster (--roster, checked against your agency's roster state if you
    have one, or your agency's own roster if newer)."""
    import msgspec

    from tfshare.registry.book import shipped
    from tfshare.workflows import audit

    agency = _checker_agency(state)
    if agency is None and anchor is None:
        raise UsageError("--anchor is required without a profile", hint="give --anchor FILE")
    checked = audit.check_disclosure_file(
        disclosure, anchor, shipped(), roster=roster, proof=proof, agency=agency, now_ms=now_ms()
    )
    result, current = checked.disclosed, checked.current
    hdr = result.verified.header
    body = msgspec.to_builtins(result.record)
    if as_json:
        emit_json(
            {
                "ok": True,
                "msg_id": hdr.msg_id.hex(),
                "sender": hdr.sender,
                "fingerprint": result.verified.fingerprint,
                "channel": hdr.channel,
                "sent": iso(hdr.ts_ms),
                "schema": result.schema,
                "env_sha256": result.verified.env_hash.hex(),
                "disclosed_by": result.discloser,
                "body": body,
                "roster": _roster_json(current),
            }
        )
        return
    emit_fields(
        [
            ("message", hdr.msg_id.hex()),
            ("sender", f"{hdr.sender} (signature verified, key {result.verified.fingerprint})"),
            ("sent", iso(hdr.ts_ms)),
            ("channel", hdr.channel),
            ("schema", result.schema),
            ("envelope", f"sha256 {result.verified.env_hash.hex()}"),
            ("disclosed by", result.discloser),
        ]
    )
    emit_json(body, indent=2)  # the disclosed message's content: escaped, still valid JSON
    _roster_note(current)
