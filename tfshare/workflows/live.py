"""Live operation on a broker: run the embedded broker, publish, run the agent, read the inbox.

The offline workflows (exchange.py) seal and open files; these move the same envelopes
through a real nats-server with JetStream.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec
import nkeys  # type: ignore[import-untyped,unused-ignore]

from tfshare import transport
from tfshare.agent import Agent
from tfshare.broker import BrokerProcess, channel_subject, check_config, render_config
from tfshare.errors import BrokerError, BrokerRefused, UsageError
from tfshare.files import read_bytes, write_atomic
from tfshare.protocol import Clock
from tfshare.registry.book import Registry
from tfshare.registry.records import verify_record
from tfshare.registry.schema import split_name
from tfshare.replay import MemoryReplayStore
from tfshare.roster import Anchor, TrustedRoster, decode_signed_roster, roster_hash, verify_roster
from tfshare.seal import Opened, ReceivePolicy, Sealed, open_envelope, seal
from tfshare.store import InboxItem, StateStore
from tfshare.workflows.bodies import Prompt, body_json
from tfshare.workflows.exchange import Credentials, default_state_dir
from tfshare.workflows.filekinds import load_anchor
from tfshare.workflows.keys import load_identity
from tfshare.workflows.rosters import load_trusted
from tfshare.workflows.schemas import load_registry, resolve, store_for

DEFAULT_URL = "nats://127.0.0.1:4222"
KINDS = {"alert": "tf.alert", "red-flag": "tf.red_flag", "tip": "tf.tip_summary"}


def server_url(flag: str | None) -> str:
    return flag or os.environ.get("TFSHARE_SERVER") or DEFAULT_URL


def _now() -> int:
    return time.time_ns() // 1_000_000


# -- broker -----------------------------------------------------------------------------------


def admin_seed(directory: Path) -> bytes:
    """The broker administrator's nkey seed, created once per broker directory (0600)."""
    path = directory / "admin.seed"
    if path.exists():
        return read_bytes(path, what="broker admin seed", limit=256).strip()
    seed: bytes = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    write_atomic(path, seed + b"\n", secret=True, overwrite=False)
    return seed


def write_broker_config(
    roster: TrustedRoster, directory: Path, *, port: int, host: str = "127.0.0.1"
) -> Path:
    """Write DIR/nats.conf for the roster (checked with ``nats-server -t``)."""
    directory.mkdir(parents=True, exist_ok=True)
    public = nkeys.from_seed(admin_seed(directory)).public_key.decode()
    config = render_config(
        roster, admin_nkey=public, store_dir=directory / "jetstream", host=host, port=port
    )
    path = directory / "nats.conf"
    write_atomic(path, config.encode())
    check_config(path)
    return path


async def _admin(url: str, directory: Path) -> transport.Connection:
    return await transport.connect(
        url, nkey_seed=admin_seed(directory), agency=None, name="tfshare-admin", reconnect=False
    )


@dataclass(frozen=True)
class StreamLimits:
    """How long the broker keeps messages, and its duplicate-detection window."""

    max_age_days: float = 30
    duplicate_window_s: float = 120


async def provision_broker(
    url: str,
    directory: Path,
    roster: TrustedRoster,
    roster_bytes: bytes | None = None,
    limits: StreamLimits = StreamLimits(),
) -> None:
    """Stream, consumers and roster bucket; seeds the bucket with ``roster_bytes`` if it is
    empty (a roster already there, perhaps newer, is left alone)."""
    admin = await _admin(url, directory)
    try:
        await transport.provision(
            admin,
            roster,
            max_age_days=limits.max_age_days,
            duplicate_window_s=limits.duplicate_window_s,
        )
        if roster_bytes is not None and await transport.get_roster(admin, roster.taskforce) is None:
            await transport.put_roster(admin, roster.taskforce, roster_bytes)
    finally:
        await admin.close()


def start_broker(
    roster: TrustedRoster,
    directory: Path,
    *,
    port: int,
    roster_bytes: bytes | None = None,
    limits: StreamLimits = StreamLimits(),
) -> BrokerProcess:
    """Configure, start and provision a nats-server for the roster's task force."""
    config = write_broker_config(roster, directory, port=port)
    broker = BrokerProcess(config=config, host="127.0.0.1", port=port, log=directory / "nats.log")
    broker.start()
    try:
        asyncio.run(provision_broker(broker.url, directory, roster, roster_bytes, limits))
    except BaseException:
        broker.stop()
        raise
    return broker


@dataclass
class BrokerSupervisor:
    """Keeps a running broker in step with the roster published in its KV bucket: a new
    verified roster rewrites the configuration, reloads nats-server (SIGHUP) and provisions
    consumers for new readers. A removed agency loses its NATS user with it."""

    broker: BrokerProcess
    directory: Path
    anchor: Anchor
    store: StateStore
    roster: TrustedRoster

    def check(self) -> TrustedRoster | None:
        """One look at the bucket; returns the new roster if it changed and was applied."""

        async def fetch() -> bytes | None:
            admin = await _admin(self.broker.url, self.directory)
            try:
                return await transport.get_roster(admin, self.roster.taskforce)
            finally:
                await admin.close()

        data = asyncio.run(fetch())
        if data is None or roster_hash(decode_signed_roster(data)[0].roster) == self.roster.hash:
            return None
        trusted, state = verify_roster(
            data,
            anchor=self.anchor,
            state=self.store.roster_state(self.anchor.taskforce),
            now_ms=_now(),
        )
        self.store.save_roster_state(self.anchor.taskforce, state)
        write_broker_config(trusted, self.directory, port=self.broker.port)
        self.broker.reload()
        asyncio.run(provision_broker(self.broker.url, self.directory, trusted))
        self.roster = trusted
        return trusted


# -- an agency's side -------------------------------------------------------------------------


@dataclass
class Agency:
    """What an agency's live commands need, loaded and verified once."""

    creds: Credentials
    roster: TrustedRoster
    registry: Registry
    store: StateStore
    roster_path: Path
    anchor_path: Path
    registry_dir: Path | None = None

    @classmethod
    def load(
        cls,
        creds: Credentials,
        *,
        roster_path: Path,
        anchor_path: Path,
        state_dir: Path | None,
        registry_dir: Path | None,
    ) -> Agency:
        store = StateStore((state_dir or default_state_dir(creds.key_path)) / "state.db")
        roster = load_trusted(roster_path, anchor_path, store, now_ms=_now())
        registry = load_registry(store_for(registry_dir, roster.taskforce), roster)
        return cls(creds, roster, registry, store, roster_path, anchor_path, registry_dir)

    async def fetch_schema(self, conn: transport.Connection, name: str) -> Registry | None:
        """Fetch a schema version (and any missing predecessors) from the broker's registry
        bucket, verify each record, cache it, and return the updated registry."""
        subject, version = split_name(name)
        latest = self.registry.latest(subject)
        first = latest.version + 1 if latest else 1
        if version < first:
            return None  # we know this version: a fingerprint mismatch is not fixed here
        store = store_for(self.registry_dir, self.roster.taskforce)
        for number in range(first, version + 1):
            data = await transport.get_schema_record(conn, self.roster.taskforce, subject, number)
            if data is None:
                return None
            verify_record(data, self.roster)
            if store.get(subject, number) is None:
                current = store.latest(subject)
                store.create(subject, number, data)
                store.set_latest(subject, number, expected_revision=current[1] if current else 0)
        # load_registry verifies the whole chain again; a bad record stops it (fail closed).
        self.registry = load_registry(store, self.roster)
        return self.registry

    def accept_roster(self, data: bytes) -> TrustedRoster:
        """A roster from the broker's bucket: verified against the anchor and the rollback
        state, then kept (state and roster file) and returned; a bad one raises."""
        trusted, state = verify_roster(
            data,
            anchor=load_anchor(self.anchor_path),
            state=self.store.roster_state(self.roster.taskforce),
            now_ms=_now(),
        )
        self.store.save_roster_state(self.roster.taskforce, state)
        write_atomic(self.roster_path, data)
        self.roster = trusted
        return trusted

    def reload_roster(self) -> TrustedRoster:
        """The roster file as it is now, verified (and its state persisted) as at start."""
        self.roster = load_trusted(self.roster_path, self.anchor_path, self.store, now_ms=_now())
        return self.roster


@dataclass(frozen=True)
class Published:
    sealed: Sealed
    subject: str
    queued: bool
    seq: int | None
    duplicate: bool
    flushed: int


def publish(
    agency: Agency,
    *,
    kind: str,
    channel: str,
    to: Sequence[str] | None,
    body_path: Path | None,
    fields: Sequence[str] = (),
    prompt: Prompt | None = None,
    url: str,
    queue: bool,
) -> Published:
    """Seal a body (a JSON file, ``--field``s, prompts for what is missing) and publish it;
    if the broker is away, keep it in the outbox (``queue``)."""
    if kind not in KINDS:
        raise UsageError(f"unknown kind {kind!r}", hint=f"use one of {', '.join(KINDS)}")
    schema = resolve(agency.registry, KINDS[kind])
    if body_path is None and not fields and prompt is None:
        raise UsageError("no body given", hint="give --file BODY.json and/or --field path=value")
    base = read_bytes(body_path, what="body file", limit=512 * 1024) if body_path else None
    record = schema.from_json(body_json(schema.document, base=base, fields=fields, prompt=prompt))
    identity = load_identity(agency.creds.key_path, agency.creds.passphrase)
    now = _now()
    sealed = seal(
        identity=identity,
        roster=agency.roster,
        channel=channel,
        to=to,
        schema=schema,
        body=schema.to_body(record),
        seq=agency.store.next_seq(channel),
        now_ms=now,
        rng=os.urandom,
    )
    subject = channel_subject(agency.roster.taskforce, channel, identity.agency_id)
    # Into the outbox first: if anything below fails, the message is not lost.
    agency.store.outbox_add(sealed.msg_id, subject, sealed.data, now)

    async def send() -> tuple[int, bool, int]:
        conn = await transport.connect(
            url,
            nkey_seed=identity.nats_seed_encoded(),
            agency=identity.agency_id,
            name=f"tfshare-publish-{identity.agency_id}",
            reconnect=False,
            connect_timeout=1.0,
        )
        try:
            flushed = 0
            result = (0, False)
            for msg_id, subj, data in agency.store.outbox():
                try:
                    result_here = await transport.publish(conn, subj, data, msg_id=msg_id.hex())
                except BrokerRefused as exc:
                    agency.store.outbox_refused(msg_id, exc.message)
                    if msg_id == sealed.msg_id:
                        raise  # this publish itself is refused: say so, do not queue
                    continue  # an older refused one must not block the rest
                agency.store.outbox_done(msg_id)
                if msg_id == sealed.msg_id:
                    result = result_here
                else:
                    flushed += 1
            return result[0], result[1], flushed
        finally:
            await conn.close()

    try:
        seq, duplicate, flushed = asyncio.run(send())
    except BrokerRefused:
        raise
    except BrokerError:
        if not queue:
            agency.store.outbox_done(sealed.msg_id)
            raise
        return Published(sealed, subject, True, None, False, 0)
    return Published(sealed, subject, False, seq, duplicate, flushed)


def make_agent(agency: Agency, *, url: str, clock: Clock) -> Agent:
    """The agency's agent (run it with ``await agent.run(stop)``)."""
    return Agent(
        identity=load_identity(agency.creds.key_path, agency.creds.passphrase),
        roster=agency.roster,
        schemas=agency.registry,
        store=agency.store,
        url=url,
        clock=clock,
        accept_roster=agency.accept_roster,
        fetch_schema=agency.fetch_schema,
    )


async def run_until_signalled(agent: Agent) -> None:
    """Run the agent until SIGINT or SIGTERM; then finish the message in hand and close."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await agent.run(stop)


def read_inbox_item(agency: Agency, item: InboxItem) -> Opened:
    """Decrypt a stored message (verified on arrival) for display: the checks run again,
    with a throwaway replay store and no age limit."""
    identity = load_identity(agency.creds.key_path, agency.creds.passphrase)
    opened = open_envelope(
        item.envelope,
        identity=identity,
        roster=agency.roster,
        replay=MemoryReplayStore(),
        schemas=agency.registry,
        now_ms=item.received_ms,
        subject=None,
        policy=ReceivePolicy(max_age_ms=2**53 - 1),
    )
    assert isinstance(opened, Opened)
    return opened


def body_of(opened: Opened) -> object:
    return msgspec.to_builtins(opened.record)


SEVERITIES = ("low", "medium", "high", "critical")


def follow_inbox(
    agency: Agency,
    *,
    include_existing: bool,
    poll_s: float = 0.3,
    stop: Callable[[], bool] = lambda: False,
) -> Iterator[tuple[InboxItem, Opened]]:
    """New inbox messages as the agent stores them, decrypted, oldest first."""
    seen: set[bytes] = set()
    if not include_existing:
        seen = {i.msg_id + i.sender_kid for i in agency.store.inbox(limit=100_000)}
    while not stop():
        fresh = [
            i
            for i in reversed(agency.store.inbox(limit=1000))
            if i.msg_id + i.sender_kid not in seen
        ]
        for item in fresh:
            seen.add(item.msg_id + item.sender_kid)
            yield item, read_inbox_item(agency, item)
        if not fresh:
            time.sleep(poll_s)
