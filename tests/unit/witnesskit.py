"""Shared helpers for the witness and evidence tests: a task force whose roster may require
witnesses, a real audit log on disk (SQLite) holding real envelopes, checkpoints signed with
a coordinator's identity key (as the audit service signs them), and bundles made from it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from tfkit import NOW_MS, TaskForce, build_taskforce

from tfshare import roster as R
from tfshare.audit.entry import LogEntry
from tfshare.audit.evidence import encode_bundle, make_bundle
from tfshare.audit.logstore import AuditStore
from tfshare.audit.note import Checkpoint, checkpoint_origin, sign_checkpoint
from tfshare.audit.service import IdentitySigner, log_verifiers
from tfshare.audit.witness import cosign, merge_witnessed, witness_note
from tfshare.encoding import encode
from tfshare.keys import Identity
from tfshare.seal import claimed_header

TASKFORCE = "nl-north"
ORIGIN = checkpoint_origin(TASKFORCE)


def with_witnesses(tf: TaskForce, threshold: int, *, now_ms: int = NOW_MS) -> TaskForce:
    """The task force after its coordinators set the roster's witness threshold."""
    signed = R.set_witness_threshold(tf.signed, threshold, now_ms=now_ms - 1_800_000)
    signed = R.sign(signed, tf.ids["coord"])
    _, roster = R.decode_signed_roster(encode(signed))
    return TaskForce(ids=tf.ids, signed=signed, anchor=R.anchor_of(roster), now_ms=tf.now_ms)


def taskforce(threshold: int = 0) -> TaskForce:
    tf = build_taskforce()
    return with_witnesses(tf, threshold) if threshold else tf


def entry_for(envelope: bytes, *, observed_ms: int = NOW_MS) -> LogEntry:
    """The ``message`` entry an auditor logs for ``envelope`` (fields from its header)."""
    hdr = claimed_header(envelope)
    return LogEntry(
        entry_type="message",
        msg_id=hdr.msg_id,
        sender=hdr.sender,
        sender_kid=hdr.sender_kid,
        taskforce=hdr.taskforce,
        channel=hdr.channel,
        ts_ms=hdr.ts_ms,
        env_sha256=hashlib.sha256(envelope).digest(),
        refs=[],
        observed_ms=observed_ms,
    )


@dataclass
class Log:
    store: AuditStore
    tf: TaskForce

    def checkpoint(self, signer: Identity | None = None) -> bytes:
        """The log's current tree, signed as the audit service signs it."""
        who = signer or self.tf.ids["coord"]
        return sign_checkpoint(
            Checkpoint(ORIGIN, self.store.size, self.store.root()), [IdentitySigner(who, ORIGIN)]
        )

    def bundle(self, index: int, note: bytes) -> bytes:
        vkeys = [v.format() for v in log_verifiers(self.tf.trusted())]
        return encode_bundle(make_bundle(self.store, index, note, vkeys, TASKFORCE))


def open_log(path: Path, tf: TaskForce, entries: list[LogEntry]) -> Log:
    store = AuditStore(path)
    store.append(entries)
    return Log(store, tf)


def cosigned(note: bytes, tf: TaskForce, *agencies: str, timestamp: int) -> bytes:
    """``note`` with the cosignatures of ``agencies`` at ``timestamp`` (POSIX s) merged in,
    as ``audit prove --from-broker`` merges the witness bucket's notes."""
    text = note[: note.rfind(b"\n\n") + 1]
    published = [
        (a, witness_note(text, cosign(text, tf.ids[a], taskforce=TASKFORCE, timestamp=timestamp)))
        for a in agencies
    ]
    return merge_witnessed(note, published, tf.trusted()).note
