"""``tfshare seal`` / ``tfshare open``: offline exchange of envelopes as files.

Air-gapped agencies carry .tfenv files; agents (issue 4) carry the same bytes over NATS.
Both verify the roster against the pinned anchor and the persisted state before trusting it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tfshare.errors import ValidationError
from tfshare.files import read_bytes, write_atomic
from tfshare.keyfile import read_keyfile_header
from tfshare.protocol import Clock, Outcome, Receiver
from tfshare.seal import ReceivePolicy, Sealed, seal
from tfshare.store import StateStore
from tfshare.workflows.filekinds import read_envelope, read_kind
from tfshare.workflows.keys import load_identity
from tfshare.workflows.rosters import load_trusted
from tfshare.workflows.schemas import load_registry, resolve, store_for

MAX_BODY_FILE = 512 * 1024


@dataclass(frozen=True)
class Credentials:
    """Where an agency's secret comes from; the passphrase itself is never a CLI argument."""

    key_path: Path
    passphrase: bytes

    def __repr__(self) -> str:
        return f"Credentials(key_path={str(self.key_path)!r}, passphrase=<secret>)"


def tfshare_home() -> Path:
    return Path(os.environ.get("TFSHARE_HOME") or Path.home() / ".tfshare")


def default_state_dir(key_path: Path) -> Path:
    """$TFSHARE_HOME/state/<agency>: one state per agency, even with several keys on a host."""
    agency = read_keyfile_header(read_kind(key_path, "key")).agency_id
    return tfshare_home() / "state" / agency


def _store(state_dir: Path | None, key_path: Path) -> StateStore:
    directory = state_dir or default_state_dir(key_path)
    return StateStore(directory / "state.db")


def seal_file(
    creds: Credentials,
    *,
    roster_path: Path,
    anchor_path: Path,
    channel: str,
    to: Sequence[str] | None,
    schema_name: str,
    body_path: Path,
    out_path: Path,
    state_dir: Path | None,
    registry_dir: Path | None,
    clock: Clock,
) -> Sealed:
    """Verify the roster, validate the body through the registry, seal, write atomically."""
    body_json = read_bytes(body_path, what="body file", limit=MAX_BODY_FILE)
    if "/" not in schema_name:
        raise ValidationError(
            f"{schema_name!r} names no version", hint="name the version, e.g. tf.alert/1"
        )
    identity = load_identity(creds.key_path, creds.passphrase)
    store = _store(state_dir, creds.key_path)
    try:
        now_ms = clock()
        roster = load_trusted(roster_path, anchor_path, store, now_ms=now_ms)
        registry = load_registry(store_for(registry_dir, roster.taskforce), roster)
        schema = resolve(registry, schema_name)
        record = schema.from_json(body_json)
        sealed = seal(
            identity=identity,
            roster=roster,
            channel=channel,
            to=to,
            schema=schema,
            body=schema.to_body(record),
            seq=store.next_seq(channel),
            now_ms=now_ms,
            rng=os.urandom,
        )
        write_atomic(out_path, sealed.data)
    finally:
        store.close()
    return sealed


def open_file(
    creds: Credentials,
    envelope_path: Path,
    *,
    roster_path: Path,
    anchor_path: Path,
    state_dir: Path | None,
    registry_dir: Path | None,
    clock: Clock,
    policy: ReceivePolicy,
) -> Outcome:
    """Verify the roster, then run the receive pipeline on one .tfenv file."""
    data = read_envelope(envelope_path)
    identity = load_identity(creds.key_path, creds.passphrase)
    store = _store(state_dir, creds.key_path)
    try:
        roster = load_trusted(roster_path, anchor_path, store, now_ms=clock())
        registry = load_registry(store_for(registry_dir, roster.taskforce), roster)
        receiver = Receiver(
            identity=identity,
            roster=roster,
            replay=store.replay(),
            schemas=registry,
            clock=clock,
            policy=policy,
        )
        return receiver.receive(data)
    finally:
        store.close()
