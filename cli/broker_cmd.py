"""``tfshare broker``: configure, start and provision the task force's nats-server."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from tfshare.errors import BrokerError, TfshareError
from tfshare.store import StateStore
from tfshare.workflows import live
from tfshare.workflows.exchange import tfshare_home
from tfshare.workflows.filekinds import load_anchor, read_kind
from tfshare.workflows.rosters import load_trusted, trusted_roster

from .common import (
    StateDir,
    note,
    now_ms,
)

broker_app = typer.Typer(help="Run the task force's nats-server.", no_args_is_help=True)

BrokerRosterOpt = Annotated[Path, typer.Option("--roster", help="The signed roster.")]
BrokerAnchorOpt = Annotated[Path, typer.Option("--anchor", help="The pinned trust anchor.")]


def _broker_roster(roster: Path, anchor: Path, state: Path | None) -> Any:
    return trusted_roster(
        roster, anchor, state or tfshare_home() / "state" / "_broker", now_ms=now_ms()
    )


@broker_app.command("up")
def broker_up(
    roster: BrokerRosterOpt,
    anchor: BrokerAnchorOpt,
    directory: Annotated[Path, typer.Option("--dir", help="Config, admin key, JetStream data.")],
    port: Annotated[int, typer.Option("--port")] = 4222,
    max_age_days: Annotated[
        float, typer.Option("--max-age-days", help="How long the stream keeps messages.")
    ] = 30,
    duplicate_window: Annotated[
        float, typer.Option("--duplicate-window", help="Seconds JetStream drops repeats.")
    ] = 120,
    state: StateDir = None,
) -> None:
    """Run a nats-server with JetStream, configured from the roster, until Ctrl-C.

    It follows the roster bucket: a newer roster published there (tfshare roster publish) is
    verified and applied at once (users and permissions reloaded, consumers provisioned)."""
    store = StateStore((state or tfshare_home() / "state" / "_broker") / "state.db")
    trusted = load_trusted(roster, anchor, store, now_ms=now_ms())
    broker = live.start_broker(
        trusted,
        directory,
        port=port,
        roster_bytes=read_kind(roster, "roster"),
        limits=live.StreamLimits(max_age_days, duplicate_window),
    )
    supervisor = live.BrokerSupervisor(broker, directory, load_anchor(anchor), store, trusted)
    note(
        f"broker for task force {trusted.taskforce} listening on {broker.url} "
        f"(roster seq {trusted.seq}); Ctrl-C to stop"
    )
    stopping = False

    def _stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    next_check = time.monotonic() + 2
    try:
        while not stopping and broker.process is not None and broker.process.poll() is None:
            time.sleep(0.2)
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + 2
                try:
                    updated = supervisor.check()
                except TfshareError as exc:
                    note(f"roster update refused: {exc}")
                else:
                    if updated is not None:
                        note(f"applied roster seq {updated.seq} (users and permissions reloaded)")
    finally:
        died = broker.process is not None and broker.process.poll() is not None and not stopping
        broker.stop()
        store.close()
    if died:
        code = broker.process.returncode if broker.process else "?"
        raise BrokerError(
            f"nats-server exited unexpectedly (code {code})",
            hint=f"see {directory / 'nats.log'}; a service manager should restart it",
        )
    note("broker stopped")


@broker_app.command("config")
def broker_config(
    roster: BrokerRosterOpt,
    anchor: BrokerAnchorOpt,
    directory: Annotated[Path, typer.Option("--dir", help="Where to write nats.conf.")],
    port: Annotated[int, typer.Option("--port")] = 4222,
    state: StateDir = None,
) -> None:
    """Write the nats-server configuration for operators who run nats-server themselves.

    DIR/nats.conf is complete; DIR/tfshare-users.conf (its users and permissions alone) is
    what the templates in broker_config/ include. Run it again after every roster change and
    reload nats-server, then 'tfshare broker provision' for new readers' consumers."""
    path = live.write_broker_config(_broker_roster(roster, anchor, state), directory, port=port)
    typer.echo(str(path))
    typer.echo(str(directory / live.USERS_INCLUDE))


@broker_app.command("provision")
def broker_provision(
    roster: BrokerRosterOpt,
    anchor: BrokerAnchorOpt,
    directory: Annotated[
        Path, typer.Option("--dir", help="The directory of 'broker config' (its admin.seed).")
    ],
    server: Annotated[str, typer.Option("--server", help="The nats-server's URL.")],
    max_age_days: Annotated[
        float, typer.Option("--max-age-days", help="How long the stream keeps messages.")
    ] = 30,
    duplicate_window: Annotated[
        float, typer.Option("--duplicate-window", help="Seconds JetStream drops repeats.")
    ] = 120,
    state: StateDir = None,
) -> None:
    """Create or update the stream, the consumers and the KV buckets on a nats-server you run
    yourself (configured with 'broker config'); seeds the roster bucket if it is empty."""
    trusted = _broker_roster(roster, anchor, state)
    asyncio.run(
        live.provision_broker(
            server,
            directory,
            trusted,
            read_kind(roster, "roster"),
            live.StreamLimits(max_age_days, duplicate_window),
        )
    )
    note(f"provisioned task force {trusted.taskforce} (roster seq {trusted.seq}) on {server}")
