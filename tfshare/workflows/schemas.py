"""``tfshare schema``: list, show, validate, check compatibility, register, sign and export.

The registry a command sees is the shipped schemas plus the records in the registry cache
(``--registry``, default ``$TFSHARE_HOME/registry``), each verified against the roster when a
roster and anchor are given. Nothing is registered or cached unless every check passed.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

import structlog

from tfshare import transport
from tfshare.encoding import encode
from tfshare.errors import InputError, TfshareError, TrustError, UsageError, ValidationError
from tfshare.files import read_bytes, write_atomic
from tfshare.keys import Identity
from tfshare.registry import compat
from tfshare.registry.book import Registry, shipped
from tfshare.registry.profile import MAX_DOCUMENT_BYTES, parse_document
from tfshare.registry.records import (
    SignedSchemaRecord,
    VerifiedRecord,
    decode_record,
    new_record,
    sign_record,
    verify_record,
)
from tfshare.registry.schema import Schema, split_name
from tfshare.registry_store import MAX_RECORD_FILE, Conflict, DirectoryStore
from tfshare.roster import TrustedRoster, anchor_of

__all__ = ["DirectoryStore", "Registry", "ValidationError", "shipped"]


def default_registry_dir() -> Path:
    """$TFSHARE_REGISTRY, else $TFSHARE_HOME/registry (records are public and signed, so
    every agency on a machine may share one cache)."""
    explicit = os.environ.get("TFSHARE_REGISTRY")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("TFSHARE_HOME") or Path.home() / ".tfshare") / "registry"


log = structlog.get_logger("tfshare.registry")


@dataclass(frozen=True)
class Skipped:
    """A cached record that was not used, and why (built from identifiers, never content)."""

    subject: str
    version: int
    path: Path
    reason: str


def load_registry(store: DirectoryStore, roster: TrustedRoster | None) -> Registry:
    """Shipped schemas, plus every cached record verified against ``roster`` (if given).

    A cached record that fails verification is skipped with a warning (``schema_record_skipped``),
    never used and never fatal: one bad file must not stop every command of the agency. Every
    other record still loads; a message of the skipped version is fetched again (or refused
    with E_SCHEMA), exactly as if the file were not there.
    """
    return _load(store, roster)[0]


def _load(store: DirectoryStore, roster: TrustedRoster | None) -> tuple[Registry, list[Skipped]]:
    registry = shipped()
    skipped: list[Skipped] = []
    if roster is None:
        return registry, skipped
    for subject in store.subjects():
        broken: int | None = None  # the first version skipped: later ones cannot follow it
        for version in store.versions(subject):
            try:
                if broken is not None:
                    raise ValidationError(
                        f"it follows {subject}/{broken}, which was skipped", hint=""
                    )
                data = store.get(subject, version)
                if data is None:
                    continue  # removed since the folder was listed
                verified = _verify_cached(registry, roster, subject, version, data)
            except TfshareError as exc:
                broken = version if broken is None else broken
                entry = Skipped(subject, version, store.path_of(subject, version), exc.message)
                skipped.append(entry)
                log.warning(
                    "schema_record_skipped",
                    schema=f"{subject}/{version}",
                    file=str(entry.path),
                    reason=entry.reason,
                )
                continue
            registry = registry.with_schema(verified.schema, verified.mode)
    return registry, skipped


def _verify_cached(
    registry: Registry, roster: TrustedRoster, subject: str, version: int, data: bytes
) -> VerifiedRecord:
    """A cached record: fully verified, filed under its own name, the next link of its chain."""
    verified = verify_record(data, roster, name=(subject, version))
    latest = registry.latest(subject)
    expected = latest.fingerprint if latest else b""
    if version != (latest.version + 1 if latest else 1) or (
        verified.record.previous_fingerprint != expected
    ):
        raise ValidationError("it does not follow the version before it", hint="")
    return verified


def _check_history(skipped: list[Skipped], subject: str) -> None:
    """Coordinators build the next version on a subject's history: refuse to build on a
    history with a cached record that failed verification (others' subjects do not matter)."""
    for entry in skipped:
        if entry.subject == subject:
            raise ValidationError(
                f"cached schema record {entry.subject}/{entry.version} fails verification "
                f"({entry.reason})",
                hint=f"remove {str(entry.path)!r} and fetch it again",
            )


def store_for(registry_dir: Path | None, taskforce: str) -> DirectoryStore:
    """The registry cache of one task force: REGISTRY/<taskforce>/ (records never mix)."""
    return DirectoryStore((registry_dir or default_registry_dir()) / taskforce)


def cached_count(registry_dir: Path | None) -> int:
    """How many registered versions the cache holds, over every task force."""
    root = registry_dir or default_registry_dir()
    return sum(1 for _ in root.glob("*/*/*.tfschema")) if root.is_dir() else 0


def _read_document_bytes(path: Path) -> bytes:
    # Oversized files go on to parse_document, which refuses them as schemas (exit 5).
    return read_bytes(path, what="schema file", limit=MAX_DOCUMENT_BYTES, oversize_ok=True)


def read_schema_file(path: Path, *, name: str | None = None) -> Schema:
    return Schema.from_bytes(_read_document_bytes(path), name=name)


def resolve(registry: Registry, name: str) -> Schema:
    """A schema by ``subject/version``, or a subject's latest version by ``subject``."""
    schema = registry.lookup(name) if "/" in name else registry.latest(name)
    if schema is None:
        raise ValidationError(
            f"unknown schema {name!r}",
            hint=f"known: {', '.join(registry.names())} ('tfshare schema list')",
        )
    return schema


def validate_body(registry: Registry, name: str, body_path: Path) -> Schema:
    """Raise ValidationError naming every failing path, or return the schema."""
    schema = resolve(registry, name)
    schema.from_json(read_bytes(body_path, what="body file", limit=512 * 1024))
    return schema


def compat_files(old: Path, new: Path, mode: compat.Mode) -> list[str]:
    """Reasons why NEW is not compatible with OLD under ``mode`` (empty: compatible).

    Both files must be inside the profile; they need no ``$id`` (drafts often have none).
    """
    documents = []
    for path in (old, new):
        doc = parse_document(_read_document_bytes(path))
        name = None if isinstance(doc.get("$id"), str) else "draft/1"
        documents.append(Schema.from_document(doc, name=name).document)
    return compat.check(documents[1], [documents[0]], mode)


@dataclass(frozen=True)
class Registration:
    schema: Schema
    mode: compat.Mode
    approvals: int
    threshold: int
    committed: bool
    pending_path: Path | None


def register(
    path: Path,
    *,
    identity: Identity,
    roster: TrustedRoster,
    store: DirectoryStore,
    mode: compat.Mode | None,
    now_ms: int,
) -> Registration:
    """Check NEW against the subject's history and register it (or leave it pending)."""
    schema = read_schema_file(path)
    problems = schema.example_errors()
    if problems:
        raise ValidationError(
            f"{schema.name}: its examples are not valid: " + "; ".join(problems),
            hint="every schema carries at least one valid example",
        )
    registry, skipped = _load(store, roster)
    _check_history(skipped, schema.subject)
    if (
        mode is not None
        and registry.history(schema.subject)
        and mode != registry.mode(schema.subject)
    ):
        raise UsageError(
            f"{schema.subject} is registered under {registry.mode(schema.subject)}",
            hint="--mode only applies to a new subject's first version",
        )
    history = _check_slot(registry, schema)
    pending = store.pending_path(schema.subject, schema.version)
    if pending.exists():
        raise ValidationError(
            f"a registration of {schema.name} is already waiting for signatures",
            hint=f"sign it (tfshare schema sign {pending}) or remove it to start over",
        )
    signed = new_record(
        schema,
        taskforce=roster.taskforce,
        mode=mode or registry.mode(schema.subject),
        previous=history[-1] if history else None,
        now_ms=now_ms,
    )
    return _sign_and_maybe_commit(
        signed, identity=identity, roster=roster, store=store, registry=registry
    )


def sign_pending(
    path: Path, *, identity: Identity, roster: TrustedRoster, store: DirectoryStore
) -> Registration:
    """Add a coordinator's signature to a pending record; commit it once k have signed.

    The record is checked again from scratch: a pending file is just a file, and whoever
    signs it approves what it says, not what the first signer was told."""
    data = read_bytes(path, what="schema record", limit=MAX_RECORD_FILE)
    signed, record = decode_record(data)
    registry, skipped = _load(store, roster)
    _check_history(skipped, record.subject)
    return _sign_and_maybe_commit(
        signed, identity=identity, roster=roster, store=store, registry=registry
    )


def _check_slot(registry: Registry, schema: Schema) -> list[Schema]:
    """The name is free and is the subject's next version; returns the subject's history."""
    existing = registry.lookup(schema.name)
    if existing is not None:
        same = existing.fingerprint == schema.fingerprint
        raise ValidationError(
            f"{schema.name} is already registered"
            + (" with the same content" if same else " with other content; versions never change"),
            hint="nothing to do" if same else "register the change as the next version",
        )
    history = registry.history(schema.subject)
    expected = history[-1].version + 1 if history else 1
    if schema.version != expected:
        raise ValidationError(
            f"{schema.name}: the next version of {schema.subject} is {expected}",
            hint=f'set "$id" to "urn:tfshare:schema:{schema.subject}/{expected}"',
        )
    return history


def _check_next(registry: Registry, verified: VerifiedRecord) -> None:
    """The record takes the next free version, names its predecessor, keeps the subject's
    mode, and is compatible with the history under that mode."""
    schema, record = verified.schema, verified.record
    history = _check_slot(registry, schema)
    previous = history[-1].fingerprint if history else b""
    if record.previous_fingerprint != previous:
        raise ValidationError(
            f"{schema.name} does not name the current version as its predecessor",
            hint="register it again from the current registry",
        )
    if history and verified.mode != registry.mode(schema.subject):
        raise ValidationError(
            f"{schema.name} changes {schema.subject}'s mode to {verified.mode.value}",
            hint="a subject keeps the compatibility mode of its first version",
        )
    reasons = compat.check(schema.document, [h.document for h in history], verified.mode)
    if reasons:
        raise ValidationError(
            f"{schema.name} is not {verified.mode.value}-compatible with {schema.subject}'s "
            "history: " + "; ".join(reasons),
            hint=f"make the change compatible, or publish it under a new subject "
            f"(e.g. {schema.subject}-v2)",
        )


def _sign_and_maybe_commit(
    signed: SignedSchemaRecord,
    *,
    identity: Identity,
    roster: TrustedRoster,
    store: DirectoryStore,
    registry: Registry,
) -> Registration:
    anchor = anchor_of(roster.roster)
    if not any(k.sign_pk == identity.sign_pk for k in anchor.coordinators):
        raise TrustError(
            f"{identity.agency_id!r} is not a coordinator of task force {roster.taskforce!r}",
            hint="schema records are signed by the coordinators",
        )
    signed = sign_record(signed, identity)
    data = encode(signed)
    verified = verify_record(data, roster, require_threshold=False)
    _check_next(registry, verified)
    schema = verified.schema
    pending = store.pending_path(schema.subject, schema.version)
    if len(verified.approvals) < anchor.threshold:
        # Only coordinators should be able to put records in front of other coordinators.
        pending.parent.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        pending.parent.mkdir(mode=0o700, exist_ok=True)
        write_atomic(pending, data)
        return Registration(
            schema, verified.mode, len(verified.approvals), anchor.threshold, False, pending
        )
    current = store.latest(schema.subject)
    store.create(schema.subject, schema.version, data)
    store.set_latest(schema.subject, schema.version, expected_revision=current[1] if current else 0)
    pending.unlink(missing_ok=True)
    return Registration(
        schema, verified.mode, len(verified.approvals), anchor.threshold, True, None
    )


# -- records fetched from the broker's registry bucket -----------------------------------------


async def fetch_schema(
    conn: transport.Connection,
    name: str,
    *,
    registry: Registry,
    roster: TrustedRoster,
    store: DirectoryStore,
    now_ms: int,
) -> Registry | None:
    """Fetch a schema version (and any missing predecessors) from the broker's registry
    bucket, keep each record that verifies fully (``cache_fetched``), and return the registry
    that knows them; None if the bucket lacks one. A record that fails raises, and neither it
    nor anything after it is written."""
    subject, version = split_name(name)
    latest = registry.latest(subject)
    first = latest.version + 1 if latest else 1
    if version < first:
        return None  # we know this version: a fingerprint mismatch is not fixed here
    for number in range(first, version + 1):
        data = await transport.get_schema_record(conn, roster.taskforce, subject, number)
        if data is None:
            return None
        registry = cache_fetched(store, registry, roster, subject, number, data, now_ms=now_ms)
    return registry


def cache_fetched(
    store: DirectoryStore,
    registry: Registry,
    roster: TrustedRoster,
    subject: str,
    version: int,
    data: bytes,
    *,
    now_ms: int,
) -> Registry:
    """Keep a record fetched for ``subject/version`` and return ``registry`` with its schema.

    The record is verified in full BEFORE anything is written: k coordinator signatures of
    this roster, the subject and version it was asked for (a validly signed record of another
    version under this key is refused), fingerprint and profile, the next link of the
    subject's chain, the subject's mode, compatibility with every earlier version. A record
    that fails raises ValidationError (keeping its code) and the cache is left as it was.

    A file already in the slot that the registry did not take (it failed verification when
    loaded) is moved aside, kept as evidence, and replaced: the cache heals without a hand.
    """
    try:
        verified = verify_record(data, roster, name=(subject, version))
        _check_next(registry, verified)
    except TfshareError as exc:
        refused = ValidationError(
            f"the registry record fetched for {subject}/{version} was refused: {exc.message}",
            hint="nothing was cached; a coordinator should check the broker's registry bucket",
        )
        refused.code = exc.code  # E_ROSTER_SIG and the like stay visible in the agent's log
        raise refused from None
    path = store.path_of(subject, version)
    if path.exists() or path.is_symlink():
        existing = _read_quietly(store, subject, version)
        if existing == data:
            return registry.with_schema(verified.schema, verified.mode)
        kept = _verify_next(registry, roster, subject, version, existing)
        if kept is not None:
            # Valid too (written by another process since the registry was loaded): a
            # verified version is never replaced.
            return registry.with_schema(kept.schema, kept.mode)
        aside = store.set_aside(subject, version, stamp=now_ms)
        log.warning(
            "schema_record_set_aside",
            schema=f"{subject}/{version}",
            file=str(path),
            moved_to=str(aside),
            reason="it failed verification; replaced by the verified record from the broker",
        )
    current = store.latest(subject)
    try:
        store.create(subject, version, data)
    except Conflict:
        # Another agent sharing this cache kept it meanwhile: the same record, or we refuse.
        if _read_quietly(store, subject, version) != data:
            raise
        return registry.with_schema(verified.schema, verified.mode)
    store.set_latest(subject, version, expected_revision=current[1] if current else 0)
    return registry.with_schema(verified.schema, verified.mode)


def _verify_next(
    registry: Registry, roster: TrustedRoster, subject: str, version: int, data: bytes | None
) -> VerifiedRecord | None:
    """``data`` verified in full as the record of ``subject/version`` next in ``registry``,
    or None if it is missing or fails anything."""
    if data is None:
        return None
    try:
        verified = verify_record(data, roster, name=(subject, version))
        _check_next(registry, verified)
    except TfshareError:
        return None
    return verified


def _read_quietly(store: DirectoryStore, subject: str, version: int) -> bytes | None:
    """The file's bytes, or None if it is missing or cannot be read (a damaged entry)."""
    try:
        return store.get(subject, version)
    except TfshareError:
        return None


def export(registry: Registry, directory: Path) -> list[Path]:
    """Write every known schema as DIR/<subject>/<version>.json (for other tools)."""
    written = []
    for name in registry.names():
        schema = registry.lookup(name)
        assert schema is not None
        subject, version = split_name(name)
        folder = directory / subject
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(
                f"cannot create {str(folder)!r}: {exc.strerror}",
                hint="give a directory (it is created if missing)",
            ) from None
        path = folder / f"{version}.json"
        write_atomic(
            path, (json.dumps(schema.document, indent=2, ensure_ascii=False) + "\n").encode()
        )
        written.append(path)
    return written


def publish_record(
    store: DirectoryStore,
    *,
    subject: str,
    version: int,
    identity: Identity,
    url: str,
    taskforce: str,
    tls: ssl.SSLContext | None = None,
) -> None:
    """Put a committed record into the broker's registry bucket (coordinators' NATS users may
    write it), so agents fetch it when they first meet the version."""
    data = store.get(subject, version)
    if data is None:
        raise ValidationError(f"{subject}/{version} is not registered here", hint="register it")

    async def put() -> None:
        conn = await transport.connect(
            url,
            nkey_seed=identity.nats_seed_encoded(),
            agency=identity.agency_id,
            name="tfshare-schema",
            reconnect=False,
            connect_timeout=1.0,
            tls=tls,
        )
        try:
            await transport.put_schema_record(conn, taskforce, subject, version, data)
        finally:
            await conn.close()

    asyncio.run(put())
