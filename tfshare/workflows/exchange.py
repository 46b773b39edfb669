"""``tfshare seal`` / ``tfshare open``: offline exchange of envelopes as files.

Air-gapped agencies carry .tfenv files; agents (issue 4) carry the same bytes over NATS.
Both verify the roster against the pinned anchor and the persisted state before trusting it,
and unlock the key first: a command that fails leaves no new state database behind
(``statedb.open_agency_state``).
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
from tfshare.workflows.filekinds import read_envelope, read_kind
from tfshare.workflows.keys import destroy_expired_under, open_key
from tfshare.workflows.schemas import resolve
from tfshare.workflows.statedb import STATE_DB, AgencyState, open_agency_state, removed_if_failed

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


def _state(
    directory: Path,
    *,
    roster_path: Path,
    anchor_path: Path,
    registry_dir: Path | None,
    now_ms: int,
) -> AgencyState:
    return open_agency_state(
        directory,
        roster_path=roster_path,
        anchor_path=anchor_path,
        registry_dir=registry_dir,
        now_ms=now_ms,
    )


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
    # The key first (a wrong passphrase fails before anything is written); what it may
    # destroy is known only with the roster, which may still list a key past its grace.
    unlocked = open_key(creds.key_path, creds.passphrase)
    directory = state_dir or default_state_dir(creds.key_path)
    now_ms = clock()
    with removed_if_failed(directory / STATE_DB):  # a new state is kept only if sealed
        state = _state(
            directory,
            roster_path=roster_path,
            anchor_path=anchor_path,
            registry_dir=registry_dir,
            now_ms=now_ms,
        )
        try:
            identity = destroy_expired_under(unlocked, state.roster, now_ms=now_ms).identity
            schema = resolve(state.registry, schema_name)
            record = schema.from_json(body_json)
            sealed = seal(
                identity=identity,
                roster=state.roster,
                channel=channel,
                to=to,
                schema=schema,
                body=schema.to_body(record),
                seq=state.store.next_seq(channel),
                now_ms=now_ms,
                rng=os.urandom,
            )
            write_atomic(out_path, sealed.data)
        finally:
            state.store.close()
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
    unlocked = open_key(creds.key_path, creds.passphrase)  # as seal_file does
    directory = state_dir or default_state_dir(creds.key_path)
    with removed_if_failed(directory / STATE_DB):
        state = _state(
            directory,
            roster_path=roster_path,
            anchor_path=anchor_path,
            registry_dir=registry_dir,
            now_ms=clock(),
        )
        try:
            identity = destroy_expired_under(unlocked, state.roster, now_ms=clock()).identity
            receiver = Receiver(
                identity=identity,
                roster=state.roster,
                replay=state.store.replay(),
                schemas=state.registry,
                clock=clock,
                policy=policy,
            )
            return receiver.receive(data)
        finally:
            state.store.close()
