"""``tfshare leaf``: an agency's leaf node, a nats-server at the agency that dials out to the
task force's hub (issue 14, item 3). The agency's agents then use it on loopback, with the
hub's JetStream domain in their profile (``jetstream_domain``)."""

# The leaf's code (key files, the configuration, nats-server -t) is for this command only:
# imported inside it (cli/common.py, issue 13).
# ruff: noqa: PLC0415

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import PassphraseFile, TlsCaOpt, TlsCertOpt, TlsKeyOpt, note, passphrase

app = typer.Typer(help="An agency's leaf node of the task force's hub.", no_args_is_help=True)


@app.command("config")
def leaf_config(
    agency: Annotated[str, typer.Option("--agency", help="Your agency (the key's).")],
    taskforce: Annotated[str, typer.Option("--taskforce", help="The task force's name.")],
    hub: Annotated[
        list[str],
        typer.Option(
            "--hub",
            help="The hub's leaf node port, tls://HOST:7422 (repeat for each node of the "
            "hub's cluster).",
        ),
    ],
    key: Annotated[Path, typer.Option("--key", help="Your agency's key file.")],
    directory: Annotated[
        Path, typer.Option("--dir", help="Where to write leaf.conf and its seed file.")
    ],
    port: Annotated[
        int,
        typer.Option("--port", min=1, max=65535, help="Where your agents connect (127.0.0.1)."),
    ] = 4222,
    passphrase_file: PassphraseFile = None,
    tls_ca: TlsCaOpt = None,
    tls_cert: TlsCertOpt = None,
    tls_key: TlsKeyOpt = None,
    allow_plain: Annotated[
        bool,
        typer.Option(
            "--allow-plain",
            help="Allow a link without TLS to a hub off this machine (inside a VPN you trust).",
        ),
    ] = False,
    http_port: Annotated[
        int | None,
        typer.Option(
            "--http-port",
            min=1,
            max=65535,
            help="Also serve nats-server's monitoring on 127.0.0.1 (/leafz: the link).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Write DIR/leaf.conf (run it with 'nats-server -c DIR/leaf.conf') and DIR/leaf-nkey.conf
    (the agency's NATS seed, 0600): a nats-server on 127.0.0.1 for your agency's agents that
    dials out to the hub as your agency (no port opened to the network). Agents then use
    --server nats://127.0.0.1:PORT and the hub's JetStream domain (profile jetstream_domain)."""
    from tfshare.errors import UsageError
    from tfshare.workflows import live
    from tfshare.workflows.keys import load_identity

    identity = load_identity(key, passphrase(passphrase_file, confirm=False, purpose=str(key)))
    if identity.agency_id != agency:
        raise UsageError(
            f"the key file belongs to {identity.agency_id!r}, not {agency!r}",
            hint="give your agency's own key file (the leaf signs in to the hub as it)",
        )
    path = live.write_leaf_config(
        identity,
        directory,
        taskforce=taskforce,
        hub_urls=hub,
        port=port,
        tls_ca=tls_ca,
        tls_cert=tls_cert,
        tls_key=tls_key,
        allow_plain=allow_plain,
        http_port=http_port,
    )
    typer.echo(str(path))
    note(
        f"leaf node of {agency} checks; agents connect with --server nats://127.0.0.1:{port} "
        'and the hub\'s JetStream domain (profile: jetstream_domain = "...")'
    )
