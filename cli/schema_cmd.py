"""``tfshare schema``: the message types the task force agreed on, and their evolution."""

# Each command imports the library it runs: every command of the CLI imports this module, and
# the registry (its compiler of JSON Schemas into msgspec types, the roster, the broker's
# registry bucket) is for these commands only (cli/common.py, issue 13).
# ruff: noqa: PLC0415

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tfshare.errors import BrokerError

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
    from tfshare.keys import Identity
    from tfshare.registry_store import DirectoryStore
    from tfshare.roster import TrustedRoster
    from tfshare.workflows import schemas as workflow

app = typer.Typer(help="List, check, register and export message schemas.", no_args_is_help=True)

RegistryDir = Annotated[
    Path | None,
    typer.Option(
        "--registry",
        help="Registry cache directory. Default: $TFSHARE_REGISTRY or $TFSHARE_HOME/registry.",
        show_default=False,
    ),
]
RosterOpt = Annotated[
    Path | None, typer.Option("--roster", help="Verify registered versions with this roster.")
]
AnchorOpt = Annotated[Path | None, typer.Option("--anchor", help="The pinned trust anchor.")]
StateOpt = Annotated[
    Path | None, typer.Option("--state", help="Receiver state directory (roster seq).")
]


class ModeName(StrEnum):
    """The choices of --mode: ``tfshare.registry.compat.Mode``, spelled out so that --help
    needs not import the compatibility rules; tests/cli/test_startup_imports.py checks that
    they are the same."""

    NONE = "NONE"
    BACKWARD = "BACKWARD"
    BACKWARD_TRANSITIVE = "BACKWARD_TRANSITIVE"
    FORWARD = "FORWARD"
    FORWARD_TRANSITIVE = "FORWARD_TRANSITIVE"
    FULL = "FULL"
    FULL_TRANSITIVE = "FULL_TRANSITIVE"


DEFAULT_MODE = ModeName.FULL_TRANSITIVE  # compat.DEFAULT_MODE
ModeOpt = Annotated[ModeName | None, typer.Option("--mode", case_sensitive=False)]


def _registry(
    registry_dir: Path | None,
    roster: Path | None,
    anchor: Path | None,
    state: Path | None,
    key: Path | None = None,
) -> workflow.Registry:
    from tfshare.workflows import schemas as workflow
    from tfshare.workflows.exchange import default_state_dir, tfshare_home
    from tfshare.workflows.rosters import trusted_roster

    if roster is None or anchor is None:
        if (roster is None) != (anchor is None):
            raise typer.BadParameter("--roster and --anchor go together")
        cached = workflow.cached_count(registry_dir)
        if cached:
            note(
                f"note: {cached} registered version(s) in the registry cache not shown; "
                "give --roster and --anchor to verify and include them"
            )
        return workflow.shipped()
    # Without a key there is no agency: keep this viewer's roster state on its own.
    state_dir = state or (default_state_dir(key) if key else tfshare_home() / "state" / "_viewer")
    trusted = trusted_roster(roster, anchor, state_dir, now_ms=now_ms())
    return workflow.load_registry(workflow.store_for(registry_dir, trusted.taskforce), trusted)


@app.command("list")
def list_cmd(
    registry_dir: RegistryDir = None,
    roster: RosterOpt = None,
    anchor: AnchorOpt = None,
    state: StateOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """List the schemas: subject, version, fingerprint and compatibility mode."""
    registry = _registry(registry_dir, roster, anchor, state)
    rows: list[dict[str, str | int]] = []
    for name in registry.names():
        schema = registry.lookup(name)
        assert schema is not None
        rows.append(
            {
                "name": name,
                "subject": schema.subject,
                "version": schema.version,
                "fingerprint": schema.fingerprint.hex(),
                "mode": registry.mode(schema.subject).value,
            }
        )
    if as_json:
        emit_json({"schemas": rows})
        return
    for row in rows:
        typer.echo(shown(f"{row['name']!s:<22} {str(row['fingerprint'])[:16]}  {row['mode']}"))


@app.command("show")
def show_cmd(
    name: Annotated[str, typer.Argument(help="tf.alert/1, or a subject for its latest version.")],
    registry_dir: RegistryDir = None,
    roster: RosterOpt = None,
    anchor: AnchorOpt = None,
    state: StateOpt = None,
) -> None:
    """Print a schema document (JSON) on stdout; its fingerprint and mode on stderr."""
    from tfshare.workflows import schemas as workflow

    registry = _registry(registry_dir, roster, anchor, state)
    schema = workflow.resolve(registry, name)
    note(
        f"{schema.name}  fingerprint {schema.fingerprint.hex()}  "
        f"mode {registry.mode(schema.subject).value}"
    )
    emit_json(schema.document, indent=2)  # a published document: escaped, same JSON value


@app.command("validate")
def validate_cmd(
    name: Annotated[str, typer.Argument(help="Schema name, e.g. tf.tip_summary/1.")],
    body: Annotated[Path, typer.Argument(help="The body, a JSON file.")],
    registry_dir: RegistryDir = None,
    roster: RosterOpt = None,
    anchor: AnchorOpt = None,
    state: StateOpt = None,
) -> None:
    """Check a body against a schema: exit 0, or 5 with every failing path."""
    from tfshare.workflows import schemas as workflow

    registry = _registry(registry_dir, roster, anchor, state)
    schema = workflow.validate_body(registry, name, body)
    note(f"valid {schema.name}")


@app.command("compat")
def compat_cmd(
    old: Annotated[Path, typer.Argument(help="The schema in force (JSON).")],
    new: Annotated[Path, typer.Argument(help="The proposed schema (JSON).")],
    mode: Annotated[ModeName, typer.Option("--mode", case_sensitive=False)] = DEFAULT_MODE,
    as_json: JsonFlag = False,
) -> None:
    """Is NEW compatible with OLD? Exit 0 if so, 5 with the reasons if not."""
    from tfshare.registry.compat import Mode
    from tfshare.workflows import schemas as workflow

    reasons = workflow.compat_files(old, new, Mode(mode))
    if as_json:
        emit_json({"compatible": not reasons, "mode": mode.value, "reasons": reasons})
    if reasons:
        for reason in reasons:
            note(reason)
        raise workflow.ValidationError(
            f"not {mode.value}-compatible ({len(reasons)} reason(s) above)",
            hint="make the change compatible, or publish it under a new subject",
        )
    if not as_json:
        note(f"compatible under {mode.value}")


@app.command("register")
def register_cmd(
    file: Annotated[Path, typer.Argument(help="The schema document, with its $id.")],
    key: Annotated[Path, typer.Option("--key", help="Your coordinator key file.")],
    roster: Annotated[Path, typer.Option("--roster", help="The signed roster.")],
    anchor: Annotated[Path, typer.Option("--anchor", help="The pinned trust anchor.")],
    registry_dir: RegistryDir = None,
    state: StateOpt = None,
    mode: ModeOpt = None,
    server: Annotated[
        str | None,
        typer.Option(
            "--server",
            envvar="TFSHARE_SERVER",
            help="Also publish the record to this broker's registry bucket.",
        ),
    ] = None,
    passphrase_file: PassphraseFile = None,
    as_json: JsonFlag = False,
    tls_ca: TlsCaOpt = None,
    tls_cert: TlsCertOpt = None,
    tls_key: TlsKeyOpt = None,
) -> None:
    """Register a new schema version (refused with reasons if it breaks compatibility)."""
    from tfshare.registry.compat import Mode
    from tfshare.workflows import schemas as workflow

    identity, trusted, store = _coordinator(
        key, passphrase_file, roster, anchor, state, registry_dir
    )
    result = workflow.register(
        file,
        identity=identity,
        roster=trusted,
        store=store,
        mode=None if mode is None else Mode(mode),
        now_ms=now_ms(),
    )
    if result.committed and server:
        try:
            workflow.publish_record(
                store,
                subject=result.schema.subject,
                version=result.schema.version,
                identity=identity,
                url=server,
                taskforce=trusted.taskforce,
                tls=tls_context(tls_ca, tls_cert, tls_key),
            )
            note(f"published {result.schema.name} to the broker's registry")
        except BrokerError as exc:
            note(f"registered locally; not published to the broker ({exc.message})")
    _render_registration(result, as_json)


@app.command("sign")
def sign_cmd(
    pending: Annotated[Path, typer.Argument(help="A pending record (REGISTRY/.pending/...).")],
    key: Annotated[Path, typer.Option("--key", help="Your coordinator key file.")],
    roster: Annotated[Path, typer.Option("--roster", help="The signed roster.")],
    anchor: Annotated[Path, typer.Option("--anchor", help="The pinned trust anchor.")],
    registry_dir: RegistryDir = None,
    state: StateOpt = None,
    passphrase_file: PassphraseFile = None,
    as_json: JsonFlag = False,
) -> None:
    """Add your coordinator signature to a pending schema record."""
    from tfshare.workflows import schemas as workflow

    identity, trusted, store = _coordinator(
        key, passphrase_file, roster, anchor, state, registry_dir
    )
    result = workflow.sign_pending(pending, identity=identity, roster=trusted, store=store)
    _render_registration(result, as_json)


def _coordinator(
    key: Path,
    passphrase_file: Path | None,
    roster: Path,
    anchor: Path,
    state: Path | None,
    registry_dir: Path | None,
) -> tuple[Identity, TrustedRoster, DirectoryStore]:
    """A coordinator's identity, the verified roster, and the task force's registry cache."""
    from tfshare.workflows import schemas as workflow
    from tfshare.workflows.exchange import default_state_dir
    from tfshare.workflows.keys import load_identity
    from tfshare.workflows.rosters import trusted_roster

    identity = load_identity(key, passphrase(passphrase_file, confirm=False, purpose=str(key)))
    trusted = trusted_roster(roster, anchor, state or default_state_dir(key), now_ms=now_ms())
    return identity, trusted, workflow.store_for(registry_dir, trusted.taskforce)


def _render_registration(result: workflow.Registration, as_json: bool) -> None:
    info: dict[str, object] = {
        "name": result.schema.name,
        "fingerprint": result.schema.fingerprint.hex(),
        "mode": result.mode.value,
        "signatures": result.approvals,
        "threshold": result.threshold,
        "registered": result.committed,
        "pending": str(result.pending_path) if result.pending_path else None,
    }
    if as_json:
        emit_json(info)
        return
    if result.committed:
        note(f"registered {result.schema.name} ({result.mode.value})")
    else:
        note(
            f"{result.schema.name} has {result.approvals} of {result.threshold} signatures; "
            f"other coordinators run: tfshare schema sign {result.pending_path} --key ..."
        )
    emit_fields([("name", result.schema.name), ("fingerprint", result.schema.fingerprint.hex())])


@app.command("export")
def export_cmd(
    directory: Annotated[Path, typer.Argument(help="Where to write <subject>/<version>.json.")],
    registry_dir: RegistryDir = None,
    roster: RosterOpt = None,
    anchor: AnchorOpt = None,
    state: StateOpt = None,
) -> None:
    """Write the JSON Schemas for other agencies' tools."""
    from tfshare.workflows import schemas as workflow

    registry = _registry(registry_dir, roster, anchor, state)
    for path in workflow.export(registry, directory):
        typer.echo(str(path))
