"""``tfshare agent``, ``publish``, ``listen`` and ``inbox``: an agency on a live broker."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tfshare.errors import ExitCode, TfshareError, UsageError

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
    passphrase,
    profile_agency,
    shown,
    split_list,
    where,
)

# The commands here talk to the running agent when there is one (tfshare.desk.client: a
# plain socket, no NATS client, no key): what a direct command needs (the NATS client, the
# crypto, the registry) is imported inside the functions that work directly, so that a call
# through the agent starts in a fraction of a second.
if TYPE_CHECKING:
    from tfshare.desk import api
    from tfshare.desk import client as desk_client
    from tfshare.workflows import live
    from tfshare.workflows.bodies import Prompter

SEVERITIES = ("low", "medium", "high", "critical")
SYSTEMD_CREDENTIAL = "tfshare-passphrase"

agent_app = typer.Typer(help="Run an agency's agent.", no_args_is_help=True)
inbox_app = typer.Typer(help="Read the messages the agent received.", no_args_is_help=True)
web_app = typer.Typer(help="The web inbox of the running agent.", no_args_is_help=True)

RegistryOpt = Annotated[Path | None, typer.Option("--registry", help="Registry cache directory.")]


def _state_dir(
    key: Path | None, roster: Path | None, anchor: Path | None, state: Path | None
) -> Path:
    """The agency's state directory (flags, else the profile): where its agent's socket is."""
    return _whose(key, roster, anchor, state)[0]


def _whose(
    key: Path | None, roster: Path | None, anchor: Path | None, state: Path | None
) -> tuple[Path, str | None]:
    """The state directory and the agency of the key (from its public header: no
    passphrase), flags first, then the profile."""
    from tfshare.profiles import home  # noqa: PLC0415

    at = where(key, roster, anchor, state)
    agency = profile_agency() if key is None else None
    if agency is not None:  # the profile's own key: its config names the agency (no crypto)
        return at.state or home() / "state" / agency, agency
    from tfshare.keyfile import read_keyfile_header  # noqa: PLC0415
    from tfshare.workflows.filekinds import read_kind  # noqa: PLC0415

    try:
        agency = read_keyfile_header(read_kind(at.key, "key")).agency_id
    except TfshareError:
        if at.state is None:
            raise  # the state directory is named after the key's agency
        agency = None  # the agent holds its own key; a direct command says what is wrong
    return at.state or home() / "state" / str(agency), agency


def _desk(
    key: Path | None, roster: Path | None, anchor: Path | None, state: Path | None
) -> desk_client.DeskClient | None:
    """The running agent of this agency, or None (the command then works directly). An
    agent of another agency (another key's state directory) is refused when called."""
    from tfshare.desk import client as desk_client  # noqa: PLC0415

    state_dir, agency = _whose(key, roster, anchor, state)
    client = desk_client.connect(state_dir)
    if client is not None:
        client.expect_agency = agency
    return client


def _agent_passphrase(passphrase_file: Path | None) -> bytes:
    """--passphrase-file, else a systemd credential (LoadCredential=tfshare-passphrase:...,
    never the environment of a shell), else TFSHARE_PASSPHRASE or the terminal prompt."""
    if passphrase_file is None:
        credentials = os.environ.get("CREDENTIALS_DIRECTORY")
        if credentials and (Path(credentials) / SYSTEMD_CREDENTIAL).is_file():
            passphrase_file = Path(credentials) / SYSTEMD_CREDENTIAL
    return passphrase(passphrase_file, confirm=False, purpose="the agency key")


def _agency(
    key: Path | None,
    passphrase_file: Path | None,
    roster: Path | None,
    anchor: Path | None,
    state: Path | None,
    registry: Path | None,
    server: str | None = None,
    secret: bytes | None = None,
    tls: TlsFiles | None = None,
) -> tuple[live.Agency, str]:
    """The agency's verified setup (flags, else the profile) and the broker URL to use.
    ``tls``: for a command that connects, its --tls-* files (the profile's when none is
    given), built into the agency's one SSL context before the passphrase is asked (a bad
    file is named at once); None for a command that does not connect."""
    from tfshare.workflows import live  # noqa: PLC0415
    from tfshare.workflows.exchange import Credentials  # noqa: PLC0415

    at = where(key, roster, anchor, state, server, tls or TlsFiles())
    context = at.tls.context() if tls is not None else None
    if secret is None:
        secret = passphrase(passphrase_file, confirm=False, purpose=str(at.key))
    agency = live.Agency.load(
        Credentials(at.key, secret),
        roster_path=at.roster,
        anchor_path=at.anchor,
        state_dir=at.state,
        registry_dir=registry,
        tls=context,
        js_domain=at.jetstream_domain,
    )
    return agency, live.server_url(at.server)


WebFlag = Annotated[
    bool,
    typer.Option("--web", help="Also serve the web inbox (on 127.0.0.1; see 'tfshare web open')."),
]
WebPort = Annotated[
    int,
    typer.Option("--web-port", help="The web inbox's port (0: any free one).", min=0, max=65535),
]


@agent_app.command("run")
def agent_run(
    server: ServerOpt = None,
    key: KeyOpt = None,
    roster: RosterOpt = None,
    anchor: AnchorOpt = None,
    passphrase_file: PassphraseFile = None,
    state: StateDir = None,
    registry: RegistryOpt = None,
    web: WebFlag = False,
    web_port: WebPort = 8470,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            help="Also serve Prometheus /metrics and /healthz on this port of 127.0.0.1 "
            "(off by default).",
            min=0,
            max=65535,
        ),
    ] = None,
    tls_ca: TlsCaOpt = None,
    tls_cert: TlsCertOpt = None,
    tls_key: TlsKeyOpt = None,
) -> None:
    """Run the agency's agent until Ctrl-C (JSON logs on stderr): it receives into the inbox,
    sends the outbox, and holds the unlocked key for the other commands (publish, inbox,
    listen, agent status, web), which then ask it instead of asking for the passphrase.

    The passphrase comes from --passphrase-file, a systemd credential named
    tfshare-passphrase, TFSHARE_PASSPHRASE or the terminal, once."""
    import asyncio  # noqa: PLC0415

    from tfshare.desk.run import run_desk  # noqa: PLC0415
    from tfshare.desk.server import hold_lock  # noqa: PLC0415
    from tfshare.workflows import live  # noqa: PLC0415

    state_dir = _state_dir(key, roster, anchor, state)
    lock = hold_lock(state_dir)  # a second agent is refused before any passphrase is asked
    try:
        secret = _agent_passphrase(passphrase_file)
        tls = TlsFiles(tls_ca, tls_cert, tls_key)
        agency, url = _agency(
            key, None, roster, anchor, state, registry, server, secret=secret, tls=tls
        )
        del secret
        agent = live.make_agent(agency, url=url, clock=now_ms)

        def ready(desk: Any) -> None:
            note(f"agent of {agent.identity.agency_id} consuming from {url}")
            if desk.web is not None:
                note(
                    f"web inbox at {desk.web.url} (log in with the link 'tfshare web open' prints)"
                )

        def metrics_ready(url: str) -> None:
            note(f"metrics at {url}/metrics, health at {url}/healthz")

        asyncio.run(
            run_desk(
                agency, agent, state_dir=state_dir, clock=now_ms, web=web, web_port=web_port,
                metrics_port=metrics_port, metrics_ready=metrics_ready, ready=ready,
            )
        )  # fmt: skip
    finally:
        lock.release()
    s = agent.stats
    note(
        f"agent stopped: {s.delivered} delivered, {s.duplicates} duplicates, "
        f"{s.rejected} rejected ({s.unverified} unsigned junk), {s.failed} processing "
        f"failures, {s.published} sent from the outbox"
    )


def _running(
    key: Path | None, roster: Path | None, anchor: Path | None, state: Path | None
) -> desk_client.DeskClient:
    from tfshare.desk import client as desk_client  # noqa: PLC0415

    client = _desk(key, roster, anchor, state)
    if client is None:
        raise desk_client.AgentUnavailable(
            "no agent runs for this agency",
            hint="start it with 'tfshare agent run' (add --web for the web inbox)",
        )
    return client


@agent_app.command("status")
def agent_status(
    key: KeyOpt = None,
    roster: RosterOpt = None,
    anchor: AnchorOpt = None,
    state: StateDir = None,
    as_json: JsonFlag = False,
) -> None:
    """What the running agent is doing: connection, roster, backlog, outbox, last message,
    witness, latest errors (exit 4 if no agent runs)."""
    from tfshare.desk import api  # noqa: PLC0415

    answer = _running(key, roster, anchor, state).call(api.StatusRequest())
    assert isinstance(answer, api.Status)
    if as_json:
        import msgspec  # noqa: PLC0415

        emit_json(msgspec.to_builtins(answer))
        return
    link = (
        f"connected to {answer.server} since {answer.connected_since}"
        if answer.connected
        else f"NOT connected (trying {answer.server})"
    )
    backlog = ", ".join(f"{b.channel} {b.pending}" for b in answer.backlog) or "none"
    outbox = f"{answer.outbox} queued" + (
        f", {answer.outbox_refused} refused by the broker" if answer.outbox_refused else ""
    )
    last = f"{answer.last_message} from {answer.last_sender}" if answer.last_message else "none yet"
    emit_fields(
        [
            ("agency", f"{answer.agency} (task force {answer.taskforce})"),
            ("agent", f"pid {answer.pid}, running since {answer.started}"),
            ("broker", f"{link}; {answer.reconnects} reconnects"),
            ("roster", f"seq {answer.roster_seq}"),
            ("backlog", backlog),
            ("outbox", outbox),
            ("inbox", f"{answer.inbox} messages; quarantine {answer.quarantine}"),
            ("last message", last),
            (
                "counts",
                f"{answer.delivered} delivered, {answer.rejected} rejected, "
                f"{answer.duplicates} duplicates, {answer.failed} failures, "
                f"{answer.published} sent",
            ),
            ("witness", answer.witness or "no checkpoint co-signed yet"),
            ("web inbox", answer.web or "off"),
            ("epoch keys", _epoch_keys_line(answer.epoch_keys)),
        ]
    )
    for line in answer.errors:
        note(f"recent error: {line}")


def _epoch_keys_line(held: list[api.EpochKeysHeld]) -> str:
    """Per channel: its newest epoch, since when, and how many older epochs are kept."""
    if not held:
        return "none"
    return "; ".join(
        f"{h.channel} epoch {h.epoch} since {h.starts}"
        + (f" ({h.older} older kept)" if h.older else "")
        for h in held
    )


@web_app.command("open")
def web_open(
    key: KeyOpt = None,
    roster: RosterOpt = None,
    anchor: AnchorOpt = None,
    state: StateDir = None,
    browser: Annotated[
        bool, typer.Option("--browser", help="Open it in this machine's web browser.")
    ] = False,
) -> None:
    """Print a one-time login link to the running agent's web inbox (valid one minute, for
    one login): open it in a browser on this machine."""
    from tfshare.desk import api  # noqa: PLC0415

    state_dir = _state_dir(key, roster, anchor, state)
    answer = _running(key, roster, anchor, state).call(api.LoginRequest())
    assert isinstance(answer, api.LoginLink)
    if browser:
        import webbrowser  # noqa: PLC0415

        # Not the link itself: a browser's command line is readable by every local user
        # (/proc/PID/cmdline), who could log in with the token first. The browser gets a
        # page only this user can read, which forwards to the link.
        if webbrowser.open(_login_page(state_dir, answer.url).as_uri()):
            note(
                f"opened the web inbox (the link expires at {answer.expires}); if the browser "
                "shows no inbox, run 'tfshare web open' without --browser and open its link"
            )
            return
    typer.echo(answer.url)
    note(f"one login, until {answer.expires}; keep the link to yourself")


LOGIN_PAGE = "web-login.html"


def _login_page(state_dir: Path, url: str) -> Path:
    """A 0600 page in the state directory that forwards the browser to the login ``url``."""
    import html  # noqa: PLC0415

    from tfshare.files import write_atomic  # noqa: PLC0415

    shown = html.escape(url, quote=True)
    page = (
        '<!doctype html>\n<meta charset="utf-8">\n<meta name="referrer" content="no-referrer">\n'
        f'<meta http-equiv="refresh" content="0;url={shown}">\n'
        f'<title>tfshare web inbox</title>\n<p><a href="{shown}">Open the web inbox</a></p>\n'
    )
    path = state_dir / LOGIN_PAGE
    write_atomic(path, page.encode(), secret=True)
    return path


def _ask(path: str, offered: list[str] | None) -> str:
    """Read one answer on the terminal. What the field takes and why an answer was refused
    are said by the prompts (``bodies.Prompter.say``); an empty answer is passed on, so that
    the prompts say what is needed instead of typer repeating the question."""
    answer: str = typer.prompt(path, default="", show_default=False, err=True)
    return answer


def _keep_draft(state_dir: Path, prompter: Prompter | None, kind: str, exc: BaseException) -> None:
    """After a failed publish, keep what was typed at the prompts in a 0600 draft and name
    it (in the error's hint, or on stderr for an interrupt). Nothing is kept if nothing
    was typed: the body file and the --field flags are still where they were."""
    from tfshare.workflows.bodies import save_draft  # noqa: PLC0415

    if prompter is None or not prompter.answered or prompter.draft is None:
        return
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
    tls_ca: TlsCaOpt = None,
    tls_cert: TlsCertOpt = None,
    tls_key: TlsKeyOpt = None,
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
    if kind not in KINDS:
        raise UsageError(f"unknown kind {kind!r}", hint=f"use one of {', '.join(KINDS)}")
    from_stdin = body == "-"
    body_path = Path(body) if body is not None and not from_stdin else None
    state_dir = _state_dir(key, roster, anchor, state)
    on_terminal = sys.stdin.isatty() and sys.stderr.isatty() and not from_stdin
    desk = _desk(key, roster, anchor, state)
    if desk is not None and server:
        _same_broker(desk, server)
    if desk is not None:
        info = _publish_through(
            desk, state_dir, kind, channel, to, body_path, from_stdin, field or [],
            on_terminal, not no_queue, derived[0] if derived else None,
        )  # fmt: skip
    else:
        info = _publish_direct(
            key, passphrase_file, roster, anchor, state, registry, server, kind, channel, to,
            body_path, from_stdin, field or [], on_terminal, not no_queue,
            derived[0] if derived else None, TlsFiles(tls_ca, tls_cert, tls_key),
        )  # fmt: skip
    _report_published(kind, info, as_json)


KINDS = ("alert", "red-flag", "tip")


def _same_broker(desk: desk_client.DeskClient, server: str) -> None:
    """--server with a running agent: the agent sends every message (it owns the outbox),
    so another broker named here cannot be honoured; refused rather than ignored."""
    from tfshare.desk import api  # noqa: PLC0415
    from tfshare.urls import parse_server_url, split_servers  # noqa: PLC0415

    status = desk.call(api.StatusRequest())
    assert isinstance(status, api.Status)
    wanted = parse_server_url(server)
    if set(split_servers(wanted)) != set(split_servers(status.server)):
        raise UsageError(
            f"--server {wanted} is not the broker of this agency's running agent "
            f"({status.server}), which sends every message",
            hint="leave out --server to publish through the agent, or stop the agent to "
            "publish directly",
        )


def _read_body(body_path: Path | None, from_stdin: bool) -> bytes | None:
    from tfshare.files import read_bytes  # noqa: PLC0415
    from tfshare.workflows.bodies import read_stdin_body  # noqa: PLC0415

    if from_stdin:
        return read_stdin_body(sys.stdin.buffer)
    if body_path is not None:
        return read_bytes(body_path, what="body file", limit=512 * 1024)
    return None


def _publish_through(
    desk: desk_client.DeskClient,
    state_dir: Path,
    kind: str,
    channel: str | None,
    to: str | None,
    body_path: Path | None,
    from_stdin: bool,
    fields: list[str],
    on_terminal: bool,
    queue: bool,
    derive: tuple[str, str] | None,
) -> dict[str, Any]:
    """Publish through the running agent: it holds the key and the outbox. On a terminal,
    required fields still missing are asked for here (the agent has no terminal), against
    the schema the agent uses."""
    from tfshare.desk import api  # noqa: PLC0415

    data = _read_body(body_path, from_stdin)
    prompter: Prompter | None = None
    if on_terminal and derive is None:
        from tfshare.workflows.bodies import Prompter, body_json  # noqa: PLC0415

        document = desk.call(api.SchemaRequest(kind))
        assert isinstance(document, api.SchemaDocument)
        prompter = Prompter(ask=_ask, say=note)
        try:
            data = body_json(document.document, base=data, fields=fields, prompt=prompter)
        except (TfshareError, typer.Abort, KeyboardInterrupt) as exc:
            _keep_draft(state_dir, prompter, kind, exc)
            raise
        fields = []
    if data is None and not fields and derive is None:
        raise UsageError(
            "no body given",
            hint="give --body-file BODY.json (or - for stdin) and/or --field path=value",
        )
    request = api.PublishRequest(
        kind=kind, channel=channel, to=split_list(to), body=data, fields=fields, queue=queue,
        derive=derive,
    )  # fmt: skip
    try:
        answer = desk.call(request)
    except (TfshareError, KeyboardInterrupt) as exc:
        _keep_draft(state_dir, prompter, kind, exc)
        raise
    assert isinstance(answer, api.Published)
    _drop_published_draft(state_dir, body_path)
    return {
        "msg_id": answer.msg_id,
        "subject": answer.subject,
        "recipients": answer.recipients,
        "channel": answer.channel,
        "epoch": answer.epoch or None,
        "queued": answer.queued,
        "queued_because": answer.reason,
        "stream_seq": answer.seq,
        "also_sent_from_outbox": answer.flushed,
        "by": "agent",
    }


def _drop_published_draft(state_dir: Path, body_path: Path | None) -> None:
    from tfshare.workflows.bodies import is_draft  # noqa: PLC0415

    if body_path is not None and is_draft(state_dir, body_path):
        body_path.unlink()  # sealed into the outbox or sent: the plaintext copy goes
        note(f"draft {body_path} published and removed")


def _publish_direct(
    key: Path | None,
    passphrase_file: Path | None,
    roster: Path | None,
    anchor: Path | None,
    state: Path | None,
    registry: Path | None,
    server: str | None,
    kind: str,
    channel: str | None,
    to: str | None,
    body_path: Path | None,
    from_stdin: bool,
    fields: list[str],
    on_terminal: bool,
    queue: bool,
    derive: tuple[str, str] | None,
    tls: TlsFiles,
) -> dict[str, Any]:
    """Publish without an agent: unlock the key here and talk to the broker directly."""
    from tfshare.workflows import live  # noqa: PLC0415
    from tfshare.workflows.bodies import Prompter, read_stdin_body  # noqa: PLC0415

    # Read before the passphrase prompt could touch stdin; a piped stdin is spent after this.
    stdin_body = read_stdin_body(sys.stdin.buffer) if from_stdin else None
    agency, url = _agency(key, passphrase_file, roster, anchor, state, registry, server, tls=tls)
    prompter = Prompter(ask=_ask, say=note) if on_terminal else None
    state_dir = agency.store.path.parent
    try:
        result = live.publish(
            agency,
            kind=kind,
            channel=channel,
            to=split_list(to),
            body_path=body_path,
            body=stdin_body,
            fields=fields,
            prompt=prompter,
            url=url,
            queue=queue,
            derive=derive,
        )
    except (TfshareError, typer.Abort, KeyboardInterrupt) as exc:
        _keep_draft(state_dir, prompter, kind, exc)
        raise
    _drop_published_draft(state_dir, body_path)
    return {
        "msg_id": result.sealed.msg_id.hex(),
        "subject": result.subject,
        "recipients": list(result.sealed.recipients),
        "channel": result.channel,
        "epoch": result.sealed.epoch or None,
        "queued": result.queued,
        "queued_because": result.reason,
        "stream_seq": result.seq,
        "also_sent_from_outbox": result.flushed,
    }


def _report_published(kind: str, info: dict[str, Any], as_json: bool) -> None:
    by_agent = info.pop("by", None) == "agent"
    if as_json:
        emit_json(info)
        return
    if info["queued"]:
        later = "the agent sends it" if by_agent else "goes out with the next publish or the agent"
        note(
            f"queued: {info['queued_because'] or 'the broker is unreachable'}; {info['msg_id']} "
            f"is in the outbox and {later}"
        )
    elif info["stream_seq"] is None:
        note(f"published {kind} to {_audience(info)} (through the agent)")
    else:
        note(f"published {kind} to {_audience(info)} (stream seq {info['stream_seq']})")
    emit_fields([("msg_id", str(info["msg_id"])), ("subject", str(info["subject"]))])


def _audience(info: dict[str, Any]) -> str:
    """Who a published message is for: its recipients (direct mode), or every reader of
    the channel's epoch (epoch mode seals to the channel's key, not to a list)."""
    if info.get("epoch"):
        return f"all readers of {info['channel']} (epoch {info['epoch']})"
    return ", ".join(info["recipients"])


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
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="text (the default), json (as --json), or stix: one STIX 2.1 bundle per "
            "message, one per line, for OpenCTI or MISP (docs/INTEROP.md).",
        ),
    ] = None,
    allow_restricted: Annotated[
        bool,
        typer.Option(
            "--allow-restricted",
            help="With --format stix: also messages marked no_forward or H2, only where their "
            "originators allow it (their markings travel with them).",
        ),
    ] = False,
) -> None:
    """The live feed: each message the agent stores, the moment it is stored (NDJSON with
    --json; STIX 2.1 bundles, one per line, with --format stix). Without a running agent, the
    inbox is read directly as the agent fills it."""
    from tfshare.desk import api  # noqa: PLC0415

    if fmt not in (None, "text", "json", "stix"):
        raise UsageError(f"unknown format {fmt!r}", hint="use --format text, json or stix")
    if as_json and fmt not in (None, "json"):
        raise UsageError("--json and --format disagree", hint="give one of the two")
    as_json = as_json or fmt == "json"
    as_stix = fmt == "stix"
    if min_severity is not None and min_severity not in SEVERITIES:
        raise UsageError(
            f"unknown severity {min_severity!r}", hint=f"use one of {', '.join(SEVERITIES)}"
        )
    floor = SEVERITIES.index(min_severity) if min_severity else 0
    desk = _desk(key, roster, anchor, state)
    if desk is not None:
        feed = _follow_through(desk, include_existing)
        who = desk.agency
    else:
        agency, _ = _agency(key, passphrase_file, roster, anchor, state, registry)
        feed = _follow_direct(agency, include_existing)
        who = agency.identity().agency_id
    shown_count = 0
    if not as_json and not as_stix:
        note(f"listening for {who}'s messages (Ctrl-C to stop)")
    for view in feed:
        if isinstance(view, api.Unreadable):
            _report_unreadable(view, as_json=as_json)
            continue
        body = view.body
        severity = body.get("severity") if isinstance(body, dict) else None
        if channel and view.channel != channel:
            continue
        if severity in SEVERITIES and SEVERITIES.index(severity) < floor:
            continue
        if as_stix:
            if not _emit_stix(view, allow_restricted):
                continue  # named on stderr; --count counts what the feed gave
        elif as_json:
            emit_json(_message_json(view))
        else:
            _render_feed(view)
        sys.stdout.flush()
        shown_count += 1
        if count is not None and shown_count >= count:
            return


def _emit_stix(view: api.Message, allow_restricted: bool) -> bool:
    """One STIX 2.1 bundle, one line, for a platform (OpenCTI; MISP through
    tfshare.interop.misp_feed); a no_forward / H2 message is named on stderr instead, and the
    feed goes on (False). stix2 and PyMISP are never imported here (the bundle is built as
    JSON)."""
    from tfshare.interop.common import from_view  # noqa: PLC0415
    from tfshare.interop.stix_export import feed_line  # noqa: PLC0415
    from tfshare.visible import escape_json  # noqa: PLC0415

    line = feed_line(from_view(view), allow_restricted=allow_restricted)
    if line is None:
        note(
            f"{view.msg_id} from {view.sender} left out of the feed: marked no_forward or H2 "
            "(--allow-restricted only where its originator allows it)"
        )
        return False
    typer.echo(escape_json(line))
    return True


def _follow_through(
    desk: desk_client.DeskClient, include_existing: bool
) -> Iterator[api.Message | api.Unreadable]:
    from tfshare.desk import api  # noqa: PLC0415

    with desk.conversation(api.FollowRequest(include_existing), timeout=None) as answers:
        for answer in answers:
            if isinstance(answer, api.FeedItem):
                yield answer.item


def _follow_direct(
    agency: live.Agency, include_existing: bool
) -> Iterator[api.Message | api.Unreadable]:
    from tfshare.desk.views import read_view  # noqa: PLC0415
    from tfshare.workflows import live  # noqa: PLC0415

    for read in live.follow_inbox(agency, include_existing=include_existing):
        yield read_view(read)


def _message_json(view: api.Message) -> dict[str, Any]:
    return {
        "msg_id": view.msg_id,
        "sender": view.sender,
        "fingerprint": view.fingerprint,
        "channel": view.channel,
        "schema": view.schema,
        "sent": iso(view.sent_ms),
        "warning": view.warning,
        "body": view.body,
    }


_COLOURS = {"critical": "red", "high": "magenta", "medium": "yellow", "low": "green"}


def _report_unreadable(read: api.Unreadable, *, as_json: bool) -> None:
    """One line for a stored message that cannot be shown (its code); the list goes on."""
    if as_json:
        emit_json(
            {
                "msg_id": read.msg_id,
                "sender": read.sender,
                "unreadable": {"code": read.code, "reason": read.reason},
            }
        )
        return
    note(f"{read.msg_id} from {read.sender} cannot be shown: {read.code}: {read.reason}")


def _render_feed(view: api.Message) -> None:
    """One message for people: what, how urgent, from whom (verified), how to handle it."""
    body = view.body if isinstance(view.body, dict) else {}
    severity = body.get("severity")
    # Every field of the body came from the sender: escaped (shown), so it cannot move the
    # cursor, clear the screen, reorder text or forge the "from ... (fp ...)" line below.
    text = shown(body.get("title") or body.get("summary") or body.get("context") or view.schema)
    headline = text if len(text) <= 100 else text[:97] + "..."
    tag = shown(f"[{str(severity).upper()}]" if severity else f"[{view.schema.split('/')[0]}]")
    color = (
        _COLOURS.get(str(severity))
        if sys.stdout.isatty() and not os.environ.get("NO_COLOR")
        else None
    )
    typer.echo(typer.style(tag, fg=color, bold=bool(color)) + f" {headline}")
    if view.warning:
        typer.echo(typer.style(f"  WARNING: {view.warning}", fg="red" if color else None))
    handling = body.get("handling", {})
    handling = handling if isinstance(handling, dict) else {}
    marks = [f"TLP:{handling.get('tlp')}", f"PAP:{handling.get('pap')}", str(handling.get("code"))]
    if handling.get("no_forward"):
        marks.append("no-forward")
    typer.echo(
        shown(
            f"  from {view.sender} (fp {view.fingerprint}) on {view.channel}, "
            f"sent {iso(view.sent_ms)}"
        )
    )
    typer.echo(shown(f"  handling {' '.join(marks)}"))
    indicators = body.get("indicators") or []
    if isinstance(indicators, list) and indicators:
        typer.echo(shown(f"  indicators {', '.join(str(i) for i in indicators[:6])}"))


def _inbox_rows(
    key: Path | None,
    passphrase_file: Path | None,
    roster: Path | None,
    anchor: Path | None,
    state: Path | None,
    registry: Path | None,
) -> list[dict[str, str]]:
    from tfshare.desk import api  # noqa: PLC0415

    desk = _desk(key, roster, anchor, state)
    if desk is not None:
        answer = desk.call(api.InboxListRequest(limit=100))
        assert isinstance(answer, api.InboxRows)
        return [
            {
                "msg_id": r.msg_id,
                "sender": r.sender,
                "channel": r.channel,
                "schema": r.schema,
                "sent": r.sent,
                "received": r.received,
            }
            for r in answer.rows
        ]
    agency, _ = _agency(key, passphrase_file, roster, anchor, state, registry)
    return [
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
    rows = _inbox_rows(key, passphrase_file, roster, anchor, state, registry)
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
    from tfshare import msgref  # noqa: PLC0415
    from tfshare.desk import api  # noqa: PLC0415

    msgref.parse(msg_id)  # a malformed id is refused before the passphrase is asked
    desk = _desk(key, roster, anchor, state)
    if desk is not None:
        answer = desk.call(api.InboxShowRequest(msg_id))
        assert isinstance(answer, api.Message)
        view = answer
    else:
        view = _show_direct(msg_id, key, passphrase_file, roster, anchor, state, registry)
    if view.warning:
        note(f"warning: {view.warning}")
    emit_json(_message_json(view))


def _show_direct(
    msg_id: str,
    key: Path | None,
    passphrase_file: Path | None,
    roster: Path | None,
    anchor: Path | None,
    state: Path | None,
    registry: Path | None,
) -> api.Message:
    from tfshare import msgref  # noqa: PLC0415
    from tfshare.desk.views import message_view  # noqa: PLC0415
    from tfshare.workflows import live  # noqa: PLC0415

    ref = msgref.parse(msg_id)
    agency, _ = _agency(key, passphrase_file, roster, anchor, state, registry)
    received, _ = agency.store.find_by_prefix(ref.prefix)
    item = msgref.pick(
        ref,
        [(i.sender, i.msg_id, i) for i in received],
        where="in the inbox",
        hint="see 'tfshare inbox list'",
    )
    read = live.read_inbox_item(agency, item)
    return message_view(read.opened, received_ms=item.received_ms, warning=read.warning)


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
    from tfshare.desk import api  # noqa: PLC0415

    desk = _desk(key, roster, anchor, state)
    if desk is not None:
        answer = desk.call(api.InboxSearchRequest(text))
        assert isinstance(answer, api.SearchResult)
        matches, unreadable = answer.matches, answer.unreadable
    else:
        matches, unreadable = _search_direct(
            text, key, passphrase_file, roster, anchor, state, registry
        )
    hits = [_message_json(m) for m in matches]
    if as_json:
        found: dict[str, object] = {"matches": hits}
        if unreadable:  # said only when there are some: the list's shape is as it was
            found["unreadable"] = [
                {"msg_id": u.msg_id, "sender": u.sender, "code": u.code, "reason": u.reason}
                for u in unreadable
            ]
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


def _search_direct(
    text: str,
    key: Path | None,
    passphrase_file: Path | None,
    roster: Path | None,
    anchor: Path | None,
    state: Path | None,
    registry: Path | None,
) -> tuple[list[api.Message], list[api.Unreadable]]:
    from tfshare.desk import api  # noqa: PLC0415
    from tfshare.desk.views import read_view  # noqa: PLC0415
    from tfshare.workflows import live  # noqa: PLC0415

    agency, _ = _agency(key, passphrase_file, roster, anchor, state, registry)
    needle = text.casefold()
    matches: list[api.Message] = []
    unreadable: list[api.Unreadable] = []
    for read in live.read_inbox(agency, agency.store.inbox(limit=100_000)):
        view = read_view(read)
        if isinstance(view, api.Unreadable):
            unreadable.append(view)
        elif needle in json.dumps(view.body, ensure_ascii=False).casefold():
            matches.append(view)
    return matches, unreadable


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
    from tfshare.desk import api  # noqa: PLC0415

    desk = _desk(key, roster, anchor, state)
    if desk is not None:
        answer = desk.call(api.QuarantineRequest())
        assert isinstance(answer, api.QuarantineRows)
        quarantined = answer.rows
    else:
        from tfshare.desk.views import quarantine_rows  # noqa: PLC0415

        agency, _ = _agency(key, passphrase_file, roster, anchor, state, registry)
        quarantined = quarantine_rows(agency.store.quarantined())
    rows = [
        {
            "env_hash": q.env_hash,
            "code": q.code,
            "reason": q.reason,
            "sender": q.sender,
            "subject": q.subject,
            "received": q.received,
            "size": q.size,
            "kept": q.kept,  # the quarantine keeps content only up to its caps
        }
        for q in quarantined
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


__all__ = ["ExitCode", "agent_app", "inbox_app", "listen_cmd", "publish_cmd", "web_app"]
