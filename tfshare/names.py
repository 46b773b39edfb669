"""Every name tfshare uses on a NATS broker, and who may use which.

Owns: the subjects (channel subjects and their parser, the audit service's checkpoint and
proof subjects, each agency's private inbox), the JetStream names (one stream per channel,
the durable consumers, the KV buckets and their keys, the roster's object store bucket, the
JetStream API subjects a member needs) and ``permissions``: the broker permissions of each
member of a roster, computed as data, which ``broker.render_config`` only renders.

Pure: no I/O. These names are on the wire (docs/PROTOCOL.md section 10): changing one
strands every broker already provisioned and every agent already running.

Task force, channel and agency names match ``encoding.NAME_PATTERN`` (lower-case letters,
digits, ``_`` and ``-``, at most 32 characters): never ``.``, ``*``, ``>`` or whitespace, so
each is exactly one subject token and no name can widen a permission built from it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, NamedTuple

from tfshare.encoding import is_name
from tfshare.roster import MODE_EPOCH, TrustedRoster

# -- channel subjects -------------------------------------------------------------------------


class ChannelSubject(NamedTuple):
    """The parts of ``tf.<taskforce>.ch.<channel>.<sender>``."""

    taskforce: str
    channel: str
    sender: str


def channel_subject(taskforce: str, channel: str, sender: str) -> str:
    """Where ``sender`` publishes its envelopes of ``channel``; receivers check that an
    envelope arrived on the subject its header names (PROTOCOL.md check 3b)."""
    return f"tf.{taskforce}.ch.{channel}.{sender}"


def parse_channel_subject(subject: str) -> ChannelSubject | None:
    """(taskforce, channel, sender) of a channel subject, or None for anything else (other
    token count or literals, a name that is not a valid name)."""
    parts = subject.split(".")
    if len(parts) != 5 or parts[0] != "tf" or parts[2] != "ch":
        return None
    taskforce, channel, sender = parts[1], parts[3], parts[4]
    if not (is_name(taskforce) and is_name(channel) and is_name(sender)):
        return None
    return ChannelSubject(taskforce, channel, sender)


def stream_subjects(taskforce: str, channel: str) -> list[str]:
    """What a channel's stream keeps: every sender's subject of that channel."""
    return [channel_subject(taskforce, channel, "*")]


# -- streams and consumers --------------------------------------------------------------------


def stream_name(taskforce: str, channel: str) -> str:
    """One JetStream stream per channel, with its own limits (a flood or a busy receipts
    channel never uses up another channel's room). Valid names are valid in stream names as
    they are (no ``.``, ``*``, ``>``, whitespace or path separator), and distinct for
    distinct channels of one task force."""
    return f"TF_{taskforce}_{channel}"


def legacy_stream_name(taskforce: str) -> str:
    """The single stream over every channel that earlier (unreleased) versions provisioned;
    ``transport.provision`` deletes it once drained (its subjects overlap the channels')."""
    return f"TF_{taskforce}"


# Agency and channel names are lower case: an upper-case separator keeps every (agency,
# channel) pair's durable name distinct from every other's.
_CHANNEL_SEPARATOR: Final = "_CH_"


def durable_name(agency: str, channel: str) -> str:
    """A reader's durable pull consumer on one channel's stream: one per readable channel,
    so a backlog on one channel never stands in front of another channel's messages. The
    channel stays in the name (it is unique per stream anyway) so that permissions and logs
    say which channel a consumer reads."""
    return f"agent_{agency}{_CHANNEL_SEPARATOR}{channel}"


def audit_durable_name(agency: str) -> str:
    """The audit service's consumer on each channel's stream (one per channel, read in turn
    like an agent's): every channel of the task force, envelopes only."""
    return f"audit_{agency}"


# -- KV buckets and their keys ----------------------------------------------------------------

ROSTER_KEY: Final = "roster"
CHECKPOINT_KEY: Final = "checkpoint"


def roster_bucket(taskforce: str) -> str:
    """The KV bucket holding the signed roster (key ``roster``), read by every member."""
    return f"tf_{taskforce}_roster"


def roster_objects_bucket(taskforce: str) -> str:
    """The JetStream object store bucket holding every published signed roster (one object
    per version, ``roster_object_name``): the roster KV key holds the roster itself only
    while it fits in one message, else a pointer to its object (docs/PROTOCOL.md, roster
    distribution). Every member reads it; coordinators write it."""
    return f"tf_{taskforce}_rosters"


def roster_object_name(seq: int, sha256: bytes) -> str:
    """The object of the roster of ``seq`` whose bytes have the SHA-256 ``sha256``: a name
    never reused for other bytes, so a reader that follows an older pointer while a newer
    roster is being published still finds the object it names (or none), never another."""
    return f"roster.{seq}.{sha256.hex()}"


def object_stream(bucket: str) -> str:
    """The JetStream stream behind an object store bucket."""
    return f"OBJ_{bucket}"


def schema_bucket(taskforce: str) -> str:
    """The KV bucket of registry records: key ``<subject>.v<version>``, written once."""
    return f"tf_{taskforce}_schemas"


def schema_key(subject: str, version: int) -> str:
    return f"{subject}.v{version}"


def parse_schema_key(key: str) -> tuple[str, int] | None:
    """(subject, version) of a registry bucket key ``<subject>.v<version>``; None if the key
    is not one ``schema_key`` writes (the version in decimal, without leading zeros)."""
    subject, sep, version = key.rpartition(".v")
    if not sep or not subject or not version.isdecimal() or not version.isascii():
        return None
    if version != str(int(version)) or not 1 <= int(version) <= 999_999:
        return None
    return subject, int(version)


def audit_bucket(taskforce: str) -> str:
    """KV bucket holding the audit log's latest signed checkpoint (key ``checkpoint``)."""
    return f"tf_{taskforce}_audit"


def witness_bucket(taskforce: str) -> str:
    """KV bucket of witness cosignatures: key ``witness_key(agency)`` holds that agency's
    cosignature of the latest checkpoint it checked (AUDIT-LOG.md, witnesses). Each member
    writes only its own key; every member reads them all."""
    return f"tf_{taskforce}_witness"


def witness_key(agency: str) -> str:
    """An agency's key in the witness bucket: its name."""
    return agency


def kv_stream(bucket: str) -> str:
    """The JetStream stream behind a KV bucket."""
    return f"KV_{bucket}"


def kv_subject(bucket: str, key: str) -> str:
    """The subject a KV put of ``key`` publishes on (``>`` for every key)."""
    return f"$KV.{bucket}.{key}"


def kv_key(bucket: str, subject: str) -> str | None:
    """The key of a subject of ``bucket`` (``kv_subject``'s inverse), or None."""
    key = subject.removeprefix(kv_subject(bucket, ""))
    return key if key and key != subject else None


# -- the audit service ------------------------------------------------------------------------


def audit_subject(taskforce: str, what: str) -> str:
    """Subjects of the audit service: checkpoints (published) and proofs (request-reply)."""
    return f"tf.{taskforce}.audit.{what}"


def checkpoint_subject(taskforce: str) -> str:
    """Where the audit service announces each signed checkpoint; every member listens."""
    return audit_subject(taskforce, "checkpoint")


def proof_subject(taskforce: str, agency: str) -> str:
    """Where ``agency`` sends inclusion and consistency proof requests: its own subject,
    the only one of them it may publish on, so the subject says who asks. The audit service
    (a coordinator or auditor) subscribes to ``proof_subjects`` and answers on the request's
    reply subject, only in that same agency's inbox."""
    return audit_subject(taskforce, f"proof.{agency}")


def proof_subjects(taskforce: str) -> str:
    """Every member's proof subject (the audit service's subscription)."""
    return proof_subject(taskforce, "*")


def proof_requester(taskforce: str, subject: str) -> str | None:
    """The agency a proof request came from (its proof subject's last token), or None for a
    subject that is not one of ``proof_subjects`` (or whose last token is not a name)."""
    agency = subject.removeprefix(proof_subject(taskforce, ""))
    return agency if agency != subject and is_name(agency) else None


# -- private inboxes --------------------------------------------------------------------------

_INBOX: Final = "_INBOX_"
# The tokens nats-py puts after an inbox prefix (random letters and digits).
_INBOX_TOKENS: Final = re.compile(r"[A-Za-z0-9]+(\.[A-Za-z0-9]+)*")


def inbox_prefix(agency: str) -> str:
    """Each agency's private reply subjects: no one else can read its JetStream acks."""
    return f"{_INBOX}{agency}"


def inbox_subjects(agency: str) -> str:
    """Every reply subject of ``agency``'s inbox (its subscribe permission)."""
    return f"{inbox_prefix(agency)}.>"


def inbox_owner(subject: str) -> str | None:
    """The agency whose private inbox ``subject`` is in (``_INBOX_<agency>.<tokens>``), or
    None for any other subject."""
    prefix, dot, rest = subject.partition(".")
    agency = prefix.removeprefix(_INBOX)
    if not dot or agency == prefix or not is_name(agency) or not _INBOX_TOKENS.fullmatch(rest):
        return None
    return agency


# -- JetStream API subjects a member needs ----------------------------------------------------


def consumer_api(stream: str, durable: str) -> tuple[str, ...]:
    """Fetch from, look at and acknowledge one durable consumer (nothing else of it)."""
    return (
        f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}",
        f"$JS.API.CONSUMER.INFO.{stream}.{durable}",
        f"$JS.ACK.{stream}.{durable}.>",
    )


def kv_read_api(bucket: str) -> tuple[str, ...]:
    """Read a KV bucket: its stream's info and direct gets (no consumer needed)."""
    stream = kv_stream(bucket)
    return (f"$JS.API.STREAM.INFO.{stream}", f"$JS.API.DIRECT.GET.{stream}.>")


def object_read_api(bucket: str) -> tuple[str, ...]:
    """Read an object store bucket without a consumer: its stream's info, and direct gets
    (an object's metadata by its subject, its chunks one after the other by sequence)."""
    stream = object_stream(bucket)
    return (
        f"$JS.API.STREAM.INFO.{stream}",
        f"$JS.API.DIRECT.GET.{stream}",
        f"$JS.API.DIRECT.GET.{stream}.>",
    )


def object_write_api(bucket: str) -> tuple[str, ...]:
    """Put and delete objects of a bucket as nats-py's object store does: publish chunks and
    metadata, read an object's metadata, purge the chunks of a replaced or deleted object."""
    stream = object_stream(bucket)
    return (
        f"$O.{bucket}.C.>",
        f"$O.{bucket}.M.>",
        f"$JS.API.STREAM.MSG.GET.{stream}",
        f"$JS.API.STREAM.PURGE.{stream}",
    )


# -- the roster's view of channels and roles --------------------------------------------------


def task_force_channels(roster: TrustedRoster) -> list[str]:
    """Every channel of the roster: each has its stream; the audit service reads them all."""
    return sorted(c.name for c in roster.roster.channels)


def readable_channels(roster: TrustedRoster, agency: str) -> list[str]:
    # The roster's sets, not the channels' lists: once per member, a list scan made the
    # broker configuration of 20,000 members quadratic (9.5 s; bench/broker_scale.py).
    return sorted(c.name for c in roster.roster.channels if agency in roster.readers[c.name])


def writable_channels(roster: TrustedRoster, agency: str) -> list[str]:
    """The channels ``agency`` writes, in the roster's order."""
    return [c.name for c in roster.roster.channels if agency in roster.writers[c.name]]


def sender_channels(roster: TrustedRoster, agency: str) -> list[str]:
    """The channels on whose sender subject ``agency`` may publish, in the roster's order:
    those it writes and, for an active key manager, every channel whose mode policy allows
    epoch mode (it publishes the epoch key deliveries there, writer or not)."""
    key_manager = agency in roster.key_managers
    return [
        c.name
        for c in roster.roster.channels
        if agency in roster.writers[c.name] or (key_manager and c.mode_policy & MODE_EPOCH)
    ]


def key_manager_channels(roster: TrustedRoster, agency: str) -> list[str]:
    """The channels whose epochs ``agency`` makes: every channel allowing epoch mode, for an
    active key manager; none for anyone else."""
    if agency not in roster.key_managers:
        return []
    return [c.name for c in roster.roster.channels if c.mode_policy & MODE_EPOCH]


def key_manager_api(taskforce: str, channel: str, agency: str) -> tuple[str, ...]:
    """What a key manager reads of an epoch channel's stream: its state (stream info: the
    message budget), and by a direct get of the last message on its OWN sender subject
    only, whether it delivered keys there before (a key manager whose database was lost
    must not start the epochs again from 1). Nobody else's message: the subject is part of
    the permission."""
    stream = stream_name(taskforce, channel)
    return (
        f"$JS.API.DIRECT.GET.{stream}.{channel_subject(taskforce, channel, agency)}",
        # The stream's state (its last sequence): how many messages an epoch has covered,
        # for the per-channel message budget (PROTOCOL.md 8.6).
        f"$JS.API.STREAM.INFO.{stream}",
    )


def is_auditor(roster: TrustedRoster, agency: str) -> bool:
    """Coordinators and agencies with the auditor role may run the audit service."""
    member = roster.members.get(agency)
    return member is not None and (
        agency in roster.roster.coordinators or "auditor" in member.roles
    )


# -- permissions ------------------------------------------------------------------------------

# How long the audit service may take to answer a proof request it received (the broker's
# allow_responses window); answers take milliseconds, the rest is room for a busy service.
PROOF_REPLY_WINDOW: Final = "30s"


@dataclass(frozen=True)
class Responses:
    """nats-server's ``allow_responses``: at most ``max`` replies to the reply subject of
    each request received, within ``expires``."""

    max: int
    expires: str


@dataclass(frozen=True)
class Permissions:
    """What one member's NATS user may do: publish and subscribe allow lists, and replies."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    allow_responses: Responses | None = None

    def __post_init__(self) -> None:
        # nats-server reads an EMPTY allow list as "everything": never render one.
        if not self.publish or not self.subscribe:
            raise ValueError("an empty allow list would allow every subject")


def in_domain(subjects: list[str], domain: str | None) -> list[str]:
    """``subjects`` and, with a JetStream ``domain``, each ``$JS.API.X`` among them again as
    ``$JS.<domain>.API.X``: a client on an agency's leaf node reaches the hub's JetStream by
    the hub's domain only (``$JS.API`` does not cross a leaf link), and the hub checks the
    link's subjects against the agency's permissions as they are sent."""
    if domain is None:
        return subjects
    api = "$JS.API."
    return subjects + [f"$JS.{domain}.API.{s[len(api) :]}" for s in subjects if s.startswith(api)]


def permissions(
    roster: TrustedRoster, agency: str, *, jetstream_domain: str | None = None
) -> Permissions | None:
    """The broker permissions of ``agency`` under ``roster``; None (no NATS user at all) for
    an agency that is not an active member (revoked, removed, suspended or unknown).

    Every active member may publish on its own sender subjects of the channels it writes,
    use its own durable consumers (one per channel it reads, on that channel's stream), read
    the roster, registry, audit and witness buckets and the roster object store, write its
    own witness key, ask for proofs on its own proof subject, and receive replies on its own
    inbox and the checkpoint announcements. A key manager also publishes on its own sender
    subject of every channel that allows epoch mode (its key deliveries), and reads the
    last message on its own subject there (``key_manager_api``). Coordinators also
    write the roster and registry buckets and the roster object store. Coordinators and
    auditors also run the audit service: their audit consumer on every channel's stream,
    the checkpoint subject and key, every member's proof requests, answered through
    ``allow_responses`` (one reply per request received) instead of a standing right to
    publish into other agencies' inboxes. With ``jetstream_domain`` (a hub that agencies'
    leaf nodes join), each JetStream API subject is allowed by the domain's name too.
    """
    member = roster.members.get(agency)
    if member is None or member.status != "active":
        return None
    tf = roster.taskforce
    roster_kv, schemas, audit_kv = roster_bucket(tf), schema_bucket(tf), audit_bucket(tf)
    witness_kv, roster_objects = witness_bucket(tf), roster_objects_bucket(tf)
    publish = [channel_subject(tf, channel, agency) for channel in sender_channels(roster, agency)]
    for bucket in (roster_kv, schemas, audit_kv, witness_kv):
        publish += kv_read_api(bucket)
    publish += object_read_api(roster_objects)
    publish += [kv_subject(witness_kv, witness_key(agency)), proof_subject(tf, agency)]
    subscribe = [inbox_subjects(agency), checkpoint_subject(tf)]
    responses = None
    if agency in roster.roster.coordinators:
        publish += [kv_subject(roster_kv, ROSTER_KEY), kv_subject(schemas, ">")]
        publish += object_write_api(roster_objects)
    for channel in readable_channels(roster, agency):
        publish += consumer_api(stream_name(tf, channel), durable_name(agency, channel))
    for channel in key_manager_channels(roster, agency):
        publish += key_manager_api(tf, channel, agency)
    if is_auditor(roster, agency):
        for channel in task_force_channels(roster):
            publish += consumer_api(stream_name(tf, channel), audit_durable_name(agency))
        publish += [checkpoint_subject(tf), kv_subject(audit_kv, CHECKPOINT_KEY)]
        subscribe.append(proof_subjects(tf))
        responses = Responses(max=1, expires=PROOF_REPLY_WINDOW)
    return Permissions(tuple(in_domain(publish, jetstream_domain)), tuple(subscribe), responses)
