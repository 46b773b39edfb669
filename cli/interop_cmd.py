"""``tfshare export`` and ``tfshare import``: received messages to STIX 2.1 / MISP, and a
STIX bundle / MISP event to a draft body for ``publish`` (docs/INTEROP.md).

stix2, stix2-validator and PyMISP (over a second to import) load inside the commands, never
when the CLI starts.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tfshare.errors import UsageError

from .common import (
    AnchorOpt,
    KeyOpt,
    PassphraseFile,
    RosterOpt,
    StateDir,
    note,
    passphrase,
    where,
)

if TYPE_CHECKING:
    from tfshare.interop.common import Received
    from tfshare.workflows import live

RegistryOpt = Annotated[Path | None, typer.Option("--registry", help="Registry cache directory.")]
MAX_IMPORT = 16 * 1024 * 1024


def export_cmd(
    msg_ids: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="MSG_ID",
            help="msg_ids from 'inbox list' (or SENDER:MSG_ID); or use --since.",
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            metavar="DATE",
            help="Every received message sent since DATE (UTC) or date-time.",
        ),
    ] = None,
    channel: Annotated[
        str | None,
        typer.Option("--channel", metavar="CHANNEL", help="With --since: only this channel."),
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", metavar="stix|misp", help="stix (a STIX 2.1 bundle) or misp.")
    ] = "stix",
    out: Annotated[
        Path | None,
        typer.Option("--out", metavar="FILE", help="Write to FILE (mode 0600) instead of stdout."),
    ] = None,
    allow_restricted: Annotated[
        bool,
        typer.Option(
            "--allow-restricted",
            help="Also export messages marked no_forward or H2 (only where the originator "
            "allows it); their markings travel with them.",
        ),
    ] = False,
    key: KeyOpt = None,
    roster: RosterOpt = None,
    anchor: AnchorOpt = None,
    passphrase_file: PassphraseFile = None,
    state: StateDir = None,
    registry: RegistryOpt = None,
) -> None:
    """Export received messages (decrypted from this agency's inbox) as a STIX 2.1 bundle
    or MISP events, with their handling as markings and tags. A message marked no_forward or
    H2 is refused (exit 3) unless --allow-restricted."""
    from tfshare.interop.exporting import FORMATS, parse_since, render  # noqa: PLC0415

    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}", hint="use --format stix or --format misp")
    if bool(msg_ids) == (since is not None):
        raise UsageError(
            "name the messages or give --since, one of the two",
            hint="tfshare export MSG_ID... --format stix, or tfshare export --since 2026-11-21",
        )
    if channel is not None and since is None:
        raise UsageError("--channel goes with --since", hint="give --since DATE as well")
    since_ms = parse_since(since) if since is not None else None
    if msg_ids:
        from tfshare import msgref  # noqa: PLC0415

        for text in msg_ids:
            msgref.parse(text)  # a malformed id is refused before the passphrase is asked
    agency = _agency(key, passphrase_file, roster, anchor, state, registry)
    if since_ms is not None:
        messages = read_since(agency, since_ms, channel)
    else:
        messages = read_named(agency, msg_ids or [])
    if not messages:
        note("no received message matches; nothing exported")
    for message in messages:
        if message.warning:  # the export carries it too (label, description, extension)
            note(f"warning: {message.msg_id} from {message.sender}: {message.warning}")
    text = render(messages, fmt, allow_restricted=allow_restricted)
    _write(text, out)
    if out is not None:
        note(f"exported {len(messages)} message(s) as {fmt} to {out}")


def _agency(
    key: Path | None,
    passphrase_file: Path | None,
    roster: Path | None,
    anchor: Path | None,
    state: Path | None,
    registry: Path | None,
) -> live.Agency:
    """The agency's verified setup (flags, else the profile), opened directly: export reads
    the inbox as 'inbox show' does without an agent (SQLite readers do not block the agent)."""
    from tfshare.workflows import live  # noqa: PLC0415
    from tfshare.workflows.exchange import Credentials  # noqa: PLC0415

    at = where(key, roster, anchor, state)
    secret = passphrase(passphrase_file, confirm=False, purpose=str(at.key))
    return live.Agency.load(
        Credentials(at.key, secret),
        roster_path=at.roster,
        anchor_path=at.anchor,
        state_dir=at.state,
        registry_dir=registry,
        tls=None,
        js_domain=at.jetstream_domain,
    )


def read_named(agency: live.Agency, refs: list[str]) -> list[Received]:
    """The named messages, decrypted and verified again (``live.read_inbox_item``)."""
    from tfshare import msgref  # noqa: PLC0415
    from tfshare.interop.common import from_opened  # noqa: PLC0415
    from tfshare.workflows import live  # noqa: PLC0415

    messages = []
    for text in refs:
        ref = msgref.parse(text)
        received, _ = agency.store.find_by_prefix(ref.prefix)
        item = msgref.pick(
            ref,
            [(i.sender, i.msg_id, i) for i in received],
            where="in the inbox",
            hint="see 'tfshare inbox list' (export reads received messages only)",
        )
        read = live.read_inbox_item(agency, item)
        messages.append(from_opened(read.opened, warning=read.warning))
    return messages


def read_since(agency: live.Agency, since_ms: int, channel: str | None) -> list[Received]:
    """Every readable received message sent since ``since_ms`` (oldest first); one that
    cannot be read is named on stderr and left out."""
    from tfshare.interop.common import from_opened  # noqa: PLC0415
    from tfshare.interop.exporting import since_filter  # noqa: PLC0415
    from tfshare.workflows import live  # noqa: PLC0415

    items = [
        i
        for i in reversed(agency.store.inbox(limit=100_000))
        if since_filter(i.ts_ms, i.channel, since_ms=since_ms, only_channel=channel)
    ]
    messages = []
    for read in live.read_inbox(agency, items):
        if isinstance(read, live.Unreadable):
            note(
                f"{read.item.msg_id.hex()} from {read.item.sender} left out: "
                f"{read.code}: {read.reason}"
            )
            continue
        messages.append(from_opened(read.opened, warning=read.warning))
    return messages


def _write(text: str, out: Path | None) -> None:
    """``text`` (JSON) to the file, or to stdout with every character a terminal would act
    on written as its JSON escape (message content comes from other agencies)."""
    if out is None:
        from tfshare.visible import escape_json  # noqa: PLC0415

        sys.stdout.write(escape_json(text))
        sys.stdout.flush()
        return
    from tfshare.files import write_atomic  # noqa: PLC0415

    write_atomic(out, text.encode(), secret=True)  # decrypted message content


def import_cmd(
    file: Annotated[
        Path,
        typer.Argument(metavar="FILE", help="A STIX 2.1 bundle or a MISP event (JSON), or '-'."),
    ],
    kind: Annotated[
        str,
        typer.Option(
            "--as", metavar="tip|red-flag|alert", help="The draft's kind: tip, red-flag or alert."
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", metavar="FILE", help="Write the draft to FILE (mode 0600) instead of stdout."
        ),
    ] = None,
    tlp: Annotated[
        str | None,
        typer.Option(
            "--tlp",
            metavar="LEVEL",
            help="TLP for the draft when the source has none, or stricter.",
        ),
    ] = None,
    pap: Annotated[
        str | None, typer.Option("--pap", metavar="LEVEL", help="PAP for the draft (not weaker).")
    ] = None,
) -> None:
    """Turn a STIX bundle or MISP event into a draft body for 'tfshare publish KIND
    --body-file FILE', checked against the schema. Each field that does not map is listed on
    stderr; an invalid bundle, an unknown MISP object template, a marking tfshare cannot
    carry or a weaker handling than the source's is refused, and nothing is written."""
    import json  # noqa: PLC0415

    from tfshare.files import read_bytes  # noqa: PLC0415
    from tfshare.interop.common import KINDS  # noqa: PLC0415
    from tfshare.interop.importing import draft  # noqa: PLC0415
    from tfshare.registry.book import shipped  # noqa: PLC0415

    if kind not in KINDS:
        raise UsageError(f"unknown kind {kind!r}", hint=f"use --as {', '.join(KINDS)}")
    if str(file) == "-":
        data = sys.stdin.buffer.read(MAX_IMPORT + 1)
        if len(data) > MAX_IMPORT:
            raise UsageError(
                f"the file on stdin is larger than {MAX_IMPORT} bytes",
                hint="a draft is one message: export one report or event from the platform",
            )
    else:
        data = read_bytes(file, what="file to import", limit=MAX_IMPORT)
    schema = shipped().latest(KINDS[kind])
    assert schema is not None  # shipped with tfshare
    result = draft(data, kind, schema.document, tlp=tlp, pap=pap)
    for line in result.unmapped:
        note(f"tfshare: not imported: {line}")
    for line in result.filled:
        note(f"tfshare: filled in: {line}")
    for line in result.missing:
        note(f"tfshare: still to give: {line}")
    text = json.dumps(result.body, indent=2, ensure_ascii=False) + "\n"
    _write(text, out)
    target = str(out) if out is not None else "FILE"
    note(
        f"tfshare: draft {result.schema}; publish it with "
        f"'tfshare publish {kind} --body-file {target}'"
        + (" (it asks for the fields still to give)" if result.missing else "")
    )
