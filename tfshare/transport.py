"""NATS / JetStream adapter: the only module that imports nats.

Owns: connecting as an agency (its NATS nkey, its private inbox prefix) or as the broker
administrator; provisioning one stream per channel with that channel's limits
(``ChannelLimits``), the bounded KV buckets, and each reader's durable pull consumers, one
per channel it reads on that channel's stream, fetched fairly (``Consumer``);
publishing an envelope with its ``Nats-Msg-Id`` (JetStream drops a repeat inside the
duplicate window); fetching and acknowledging; the KV buckets (roster, registry records and
the keys of the registry bucket, checkpoints); request-reply (``request``, and
``serve_requests`` for a service answering on a subject). Every nats error becomes a ``BrokerError``
(exit 4) with a hint, so callers never see nats exceptions. Some are not transient and
say so: ``BrokerAuthFailed`` (the broker has no user with these NATS credentials),
``MessageTooLarge`` (over the broker's max_payload or the stream's maximum message size),
``SenderQuotaFull`` (this sender's subject holds as many messages as the channel's stream
keeps per sender) and ``StreamFull`` (the channel's stream holds its max_bytes).

Never: look inside envelopes; this layer moves opaque bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import nats
import nats.errors
import nats.js.errors
import nkeys  # type: ignore[import-untyped,unused-ignore]
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    KeyValueConfig,
    StorageType,
    StreamConfig,
)

from tfshare import rosterdist
from tfshare.audit.evidence import MAX_NOTE_SIZE
from tfshare.broker import MAX_PAYLOAD
from tfshare.envelope import MAX_ENVELOPE, MAX_RECIPIENTS, Mode
from tfshare.errors import BrokerError, BrokerRefused
from tfshare.names import (
    CHECKPOINT_KEY,
    audit_bucket,
    audit_durable_name,
    checkpoint_subject,
    durable_name,
    inbox_prefix,
    is_auditor,
    kv_key,
    kv_stream,
    kv_subject,
    legacy_stream_name,
    parse_schema_key,
    readable_channels,
    roster_bucket,
    schema_bucket,
    schema_key,
    stream_name,
    stream_subjects,
    task_force_channels,
    witness_bucket,
    witness_key,
)
from tfshare.roster import MAX_MEMBERS, TrustedRoster
from tfshare.urls import split_servers

log = structlog.get_logger("tfshare.transport")

NATS_ERRORS: Final = (nats.errors.Error, OSError, TimeoutError)
DAY_S: Final = 24 * 3600
# JetStream's error code for "message size exceeds maximum allowed" (the stream's max_msg_size).
JS_MESSAGE_TOO_LARGE: Final = 10054
# ... for a stream limit reached under DiscardNew: "maximum messages per subject exceeded"
# (this sender's quota), "maximum bytes exceeded" / "maximum messages exceeded" (the stream).
JS_STREAM_LIMIT: Final = 10077
# ... for "insufficient resources": the server's JetStream storage (max_file_store) is full.
JS_INSUFFICIENT_RESOURCES: Final = 10023
JS_INSUFFICIENT_STORAGE: Final = 10047  # "insufficient storage resources available"
JS_TEMPORARILY_UNAVAILABLE: Final = 10008  # "JetStream system temporarily unavailable"
JS_NO_PEERS: Final = 10005  # "no suitable peers for placement": fewer nodes than replicas
MIB: Final = 1024 * 1024
GIB: Final = 1024 * MIB
# A message channel's largest message: the largest envelope, and room for its headers.
MAX_MSG_SIZE: Final = MAX_ENVELOPE + 4096
_PROVISION_HINT: Final = (
    "the task force's streams or consumers are missing on the broker: run 'tfshare broker up', "
    "or 'tfshare broker provision' for a nats-server you run yourself; tfshare retries"
)


class ReplicasUnavailable(BrokerError):
    """The broker cannot place the replicas asked for ("no suitable peers for placement"):
    fewer nodes than replicas, or a cluster just started whose nodes have not all met yet."""


class BrokerAuthFailed(BrokerRefused):
    """The broker has no user with these NATS credentials ("Authorization Violation"): its
    configuration does not know this agency's NATS key. Retrying the same credentials cannot
    help until the broker is reconfigured, so this is never treated like an outage."""


class NoResponders(BrokerError):
    """A request found nobody subscribed to its subject: the service is not running (the
    broker says so at once; nothing was delivered)."""


class NoAnswer(BrokerError):
    """A request was delivered but no reply came in time."""


class BrokerTimeout(BrokerError):
    """The broker did not answer in time. For a publish that went out, it may have stored
    the message all the same: only its answer is known to be lost."""


class MessageTooLarge(BrokerRefused):
    """The broker refuses a message for its size: over the server's max_payload, or over the
    stream's maximum message size. Sending it again cannot help."""


def _auth_violation(exc: BaseException) -> bool:
    return isinstance(exc, nats.errors.AuthorizationError) or (
        "authorization violation" in str(exc).lower()
    )


def auth_failed(url: str, agency: str | None, nkey_seed: bytes) -> BrokerAuthFailed:
    """The error for credentials the broker does not know; names the (public) NATS user."""
    if agency is None:
        return BrokerAuthFailed(
            f"the broker at {url} refused the administrator's NATS credentials "
            "(authorization violation)",
            hint="the running nats-server was configured with another admin key: regenerate "
            "its configuration from this broker directory (tfshare broker config) and reload it",
        )
    try:
        user = str(nkeys.from_seed(nkey_seed).public_key.decode())
    except Exception:  # a malformed seed: the key file check would have caught it first
        user = "?"
    return BrokerAuthFailed(
        f"the broker at {url} refused the NATS credentials of agency {agency!r} "
        f"(authorization violation: it has no user {user})",
        hint="if this agency was revoked or suspended, the broker refuses it for good: never "
        "add it back. Otherwise the broker does not know this agency's NATS key: regenerate "
        "the broker config from the current roster ('tfshare broker config', or 'tfshare "
        "roster publish' to a 'tfshare broker up' broker) and reload nats-server; check "
        "--server is this task force's broker",
    )


class SenderQuotaFull(BrokerRefused):
    """The stream already keeps as many messages from this sender on this channel as it
    keeps per sender (max_msgs_per_subject, DiscardNew per subject): the broker refuses the
    new one rather than drop an older one. Room comes back as old messages expire."""


class StreamFull(BrokerRefused):
    """A channel's stream (or the server's JetStream storage) is full: DiscardNew refuses
    every new message on that channel rather than delete older ones that readers have not
    read. Other channels have streams (and shares of max_bytes) of their own."""


def quota_full(subject: str) -> SenderQuotaFull:
    return SenderQuotaFull(
        f"publish refused: sender quota full on {subject} (the broker already keeps as many "
        "messages from this agency on this channel as it keeps per sender)",
        hint="nothing was sent; room comes back as this agency's older messages on the "
        "channel expire (the stream's max age). If this agency did not send that many, its "
        "key may be in the wrong hands: tell the coordinators. Operators set the quota with "
        "'tfshare broker up/provision --max-msgs-per-sender' (--max-receipts-per-sender for "
        "the receipts channel)",
    )


def stream_full(subject: str, what: str) -> StreamFull:
    return StreamFull(
        f"publish refused on {subject}: the channel's stream on the broker is full ({what})",
        hint="nothing was sent, and nothing already accepted was dropped; tell the broker's "
        "operator: raise 'tfshare broker up/provision --max-bytes' (and the disk JetStream "
        "may use, --max-file-store), or lower the per-sender quota",
    )


def _limit_refusal(subject: str, exc: BaseException) -> BrokerRefused | None:
    """The refusal for a stream limit reached, or None if ``exc`` is something else."""
    if not isinstance(exc, nats.js.errors.APIError):
        return None
    description = (exc.description or "").lower()
    if exc.err_code == JS_STREAM_LIMIT and "per subject" in description:
        return quota_full(subject)
    if exc.err_code == JS_STREAM_LIMIT:
        return stream_full(subject, exc.description or "a stream limit")
    if exc.err_code in (JS_INSUFFICIENT_RESOURCES, JS_INSUFFICIENT_STORAGE):
        return stream_full(subject, "JetStream storage")
    return None


def too_large(subject: str, size: int, limit: int | None = None) -> MessageTooLarge:
    if limit is not None:
        return MessageTooLarge(
            f"the envelope for {subject} ({size} bytes with its headers) is larger than the "
            f"broker accepts (max_payload {limit} bytes)",
            hint="tfshare envelopes are up to 512 KiB: set max_payload to at least 1MB in the "
            "broker's configuration (see broker_config/) and restart nats-server",
        )
    return MessageTooLarge(
        f"the broker's stream refuses the envelope for {subject} ({size} bytes): over its "
        "maximum message size",
        hint="tfshare seals envelopes of at most 512 KiB (receipts of at most 24 KiB); if the "
        "stream's limit is lower, provision it again ('tfshare broker up' or 'tfshare broker "
        "provision')",
    )


def broker_error(exc: BaseException, *, doing: str) -> BrokerError:
    text = str(exc) or type(exc).__name__
    if "permissions violation" in text:
        return BrokerError(
            f"the broker refused {doing}: permission denied",
            hint="check the agency's NATS user in the roster and the broker configuration",
        )
    if _auth_violation(exc):
        return BrokerAuthFailed(
            f"the broker refused {doing}: authorization violation",
            hint="the broker does not know these NATS credentials: regenerate the broker "
            "config from the current roster and reload nats-server",
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        return BrokerError(
            f"the broker's TLS certificate was not accepted while {doing} "
            f"({exc.verify_message or exc.reason})",
            hint="a task force CA must be trusted: set SSL_CERT_FILE to its certificate; the "
            "host in --server must match the broker's certificate",
        )
    if isinstance(exc, nats.js.errors.NoStreamResponseError):
        return BrokerError(
            f"no JetStream stream answered while {doing}: the channel's stream is missing",
            hint=_PROVISION_HINT,
        )
    if isinstance(exc, nats.js.errors.ServiceUnavailableError) and (
        exc.err_code == JS_TEMPORARILY_UNAVAILABLE
        or "temporarily unavailable" in (exc.description or "").lower()
    ):
        # A cluster electing a leader (a node went, or is starting): nothing is missing,
        # so "run provision" would send the operator after the wrong thing.
        return BrokerError(
            f"JetStream is temporarily unavailable while {doing} (a cluster electing a "
            "leader, or a node starting)",
            hint="tfshare retries: on a cluster this passes within seconds; if it lasts, "
            "check that most of the cluster's nodes are up and see their logs",
        )
    if isinstance(exc, nats.js.errors.ServiceUnavailableError | nats.js.errors.NotFoundError):
        return BrokerError(
            f"JetStream could not serve the request while {doing} ({type(exc).__name__}): the "
            "stream or the consumer is missing, or JetStream is unavailable",
            hint=_PROVISION_HINT,
        )
    kind = (
        BrokerTimeout if isinstance(exc, TimeoutError | nats.errors.TimeoutError) else BrokerError
    )
    return kind(
        f"broker unavailable while {doing} ({type(exc).__name__})",
        hint="check the server address and that the broker is running; tfshare retries",
    )


def _headers_size(msg_id: str) -> int:
    """Bytes of the NATS header block nats-py sends with a Nats-Msg-Id (the server counts
    them against max_payload, nats-py's own check does not)."""
    return len(f"NATS/1.0\r\nNats-Msg-Id: {msg_id}\r\n\r\n".encode())


def _oversize(conn: Connection, subject: str, data: bytes, msg_id: str) -> MessageTooLarge | None:
    """Refuse before sending what the server would refuse: a message over its max_payload
    makes nats-server close the whole connection."""
    size = len(data) + _headers_size(msg_id)
    limit = int(conn.client.max_payload)
    return too_large(subject, size, limit) if limit and size > limit else None


def _publish_failure(
    conn: Connection, subject: str, data: bytes, exc: BaseException
) -> BrokerError:
    if conn.refused(subject):
        return BrokerRefused(
            f"the broker refused publishing on {subject}: permission denied",
            hint="the roster does not let this agency write that channel (or the broker's "
            "configuration is older than the roster)",
        )
    if isinstance(exc, nats.js.errors.APIError) and exc.err_code == JS_MESSAGE_TOO_LARGE:
        return too_large(subject, len(data))
    return _limit_refusal(subject, exc) or broker_error(exc, doing=f"publishing on {subject}")


@dataclass
class Connection:
    """A connection to the broker with its JetStream context."""

    client: Client
    agency: str | None
    # Asynchronous errors the server reported (permission violations arrive this way, not
    # as the publish's own failure, which only times out).
    errors: list[str] = field(default_factory=list)
    # The hub's JetStream domain, for a client on an agency's leaf node: JetStream's API is
    # then $JS.<domain>.API (``$JS.API`` does not cross a leaf link); None on the hub itself.
    js_domain: str | None = None

    def refused(self, subject: str) -> bool:
        return any("permissions violation" in e and subject in e for e in self.errors)

    @property
    def member(self) -> str:
        """The agency whose credentials (and inbox) this connection uses."""
        if self.agency is None:
            raise BrokerError(
                "this needs a member agency's connection, not the administrator's",
                hint="connect with the agency's own key",
            )
        return self.agency

    _js: Any = field(default=None, repr=False)

    @property
    def js(self) -> Any:
        # One context per connection: each context subscribes for its async publish acks
        # once, so a context per call left a subscription behind every time.
        if self._js is None:
            self._js = self.client.jetstream(domain=self.js_domain)
            _settle_refused_async_publishes(self._js)
        return self._js

    async def close(self) -> None:
        """Close now. Everything we publish is awaited until JetStream acknowledges it, and
        every fetched message is acknowledged (or not) before we get here, so there is
        nothing to drain (and draining a pull subscription can wait for a long time)."""
        try:
            await asyncio.wait_for(self.client.close(), timeout=5)
        except (TimeoutError, *NATS_ERRORS):
            return


def _settle_refused_async_publishes(js: Any) -> None:
    """Make a refused pipelined publish fail at once with JetStream's error.

    nats-py 2.16's reply handler for ``publish_async`` builds the error of a refusal with
    ``APIError.from_error``, which raises instead of returning: the exception escapes the
    callback and the publish's future is never settled, so a refusal (a sender quota full, a
    stream full) looked like a timeout - an outage, retried for ever - instead of a refusal.
    The context subscribes its reply handler by attribute on first use, so this wrapper,
    set on the instance before any publish, settles the future with that error first."""
    original = js._handle_async_reply

    async def handle(msg: Msg) -> None:
        if b'"error"' in msg.data:
            token = msg.subject[len(js._nc._inbox_prefix) + 22 + 2 :]
            future = getattr(js, "_publish_async_futures", {}).get(token)
            try:
                error = json.loads(msg.data).get("error")
            except (ValueError, AttributeError):
                error = None
            if future is not None and not future.done() and isinstance(error, dict):
                try:
                    nats.js.errors.APIError.from_error(error)
                except nats.js.errors.Error as exc:
                    future.set_exception(exc)
                    return
        await original(msg)

    js._handle_async_reply = handle


# How often a connection pings the broker, and how many pings may go unanswered: a node
# that stops answering (stopped, cut off by a partition) while its TCP connection stays open
# is left after about PING_INTERVAL_S x (MAX_OUTSTANDING_PINGS + 1) seconds (nats-py's
# defaults, 2 minutes and 2, kept an agent on a stopped node for 6 minutes, fetching nothing).
PING_INTERVAL_S: Final = 2.0
MAX_OUTSTANDING_PINGS: Final = 2


async def connect(
    url: str,
    *,
    nkey_seed: bytes,
    agency: str | None,
    name: str,
    reconnect: bool = True,
    connect_timeout: float = 2.0,
    error_cb: Callable[[Exception], Awaitable[None]] | None = None,
    tls: ssl.SSLContext | None = None,
    js_domain: str | None = None,
) -> Connection:
    """Connect with an nkey seed ("SU..."); ``agency`` selects its private inbox prefix.

    ``url`` is one broker URL or a comma-separated list of them (the nodes of a cluster,
    ``urls.parse_server_list``): the servers are tried in a random order (so clients spread
    over the nodes) until one answers, and with ``reconnect`` nats-py moves to another one
    when the connection is lost. Without ``reconnect`` a lost connection stays lost and the
    caller (the agent's loop, a CLI command) connects again, to any of them.

    ``tls``: the SSL context for ``tls://`` servers (``tlsconf.client_ssl_context``, built
    once by the caller from the agency's --tls-ca/--tls-cert/--tls-key); without it nats-py
    trusts only the system's CAs. A certificate refused either way is a ``TlsRefused``
    naming which side's certificate and what to give: not an outage, so no other node is
    tried (every node of a task force shows certificates of the same CA).

    ``js_domain``: the hub's JetStream domain when ``url`` is an agency's leaf node (the
    profile's ``jetstream_domain``); every JetStream call of the connection goes through it."""
    servers = split_servers(url)
    random.shuffle(servers)
    last: BrokerError | None = None
    # A node that accepts TCP but never answers (stopped, or cut off) fails one attempt
    # after connect_timeout; the next attempt starts with another node. A refused
    # connection costs nothing: nats-py moves on to the next server within an attempt.
    for attempt in range(len(servers)):
        order = servers[attempt:] + servers[:attempt]
        try:
            conn = await _connect_once(
                order,
                nkey_seed=nkey_seed,
                agency=agency,
                name=name,
                reconnect=reconnect,
                connect_timeout=connect_timeout,
                error_cb=error_cb,
                tls=tls,
            )
            conn.js_domain = js_domain
            return conn
        except (BrokerAuthFailed, TlsRefused):
            raise  # every node of a cluster has the same users and CA: no other will take us
        except _Unreachable as exc:
            last = exc.error
            if not exc.stalled:
                break  # every server refused the connection: trying again in turn is no help
    assert last is not None
    raise last


class TlsRefused(BrokerRefused):
    """A TLS handshake failed on a certificate: the broker's, not signed by the CA this
    client trusts (or not naming the URL's host), or this client's, refused by a broker that
    verifies clients. Configuration, not an outage: retrying cannot help until the CA or
    the certificate given changes."""


def _tls_refused(
    exc: BaseException, failures: Sequence[BaseException], *, url: str, tls: ssl.SSLContext | None
) -> TlsRefused | None:
    """The TLS refusal among this attempt's failures (nats-py reports one server's failure
    through the error callback and may raise another's), or None."""
    from tfshare.tlsconf import tls_refusal  # noqa: PLC0415 - only when a connect failed

    client_cert = bool(getattr(tls, CLIENT_CERT_MARK, False))
    for candidate in (exc, *failures):
        if not isinstance(candidate, ssl.SSLError):
            continue  # a reset alone is named only when nothing else explains it (below)
        found = tls_refusal(candidate, doing=f"connecting to {url}", client_cert=client_cert)
        if found is not None:
            return TlsRefused(found.message, hint=found.hint)
    if tls is not None and isinstance(exc, BrokenPipeError | ConnectionResetError):
        found = tls_refusal(exc, doing=f"connecting to {url}", client_cert=client_cert)
        if found is not None:
            return TlsRefused(found.message, hint=found.hint)
    return None


# Set on an SSL context that holds this client's own certificate (``mark_client_cert``):
# a refusal then names that certificate rather than a missing one.
CLIENT_CERT_MARK: Final = "tfshare_client_cert"


def mark_client_cert(context: ssl.SSLContext) -> ssl.SSLContext:
    """``context``, noted as holding this client's certificate (for the refusal's words)."""
    setattr(context, CLIENT_CERT_MARK, True)
    return context


class _PlainAnswer(nats.errors.Error):
    """A ``tls://`` server answered without TLS (its INFO says tls_required false)."""


class _TlsUrlClient(Client):
    """nats-py's client, refusing a ``tls://`` server that offers no TLS. nats-py upgrades
    to TLS only when the server's INFO says ``tls_required``, whatever the URL's scheme and
    the SSL context given: a server - or anyone on the path - that answers without TLS got
    the agency's sign-in (a signature over the nonce it chose, relayable to the real broker)
    and every message in clear text. The INFO is checked here, before the CONNECT."""

    async def _process_info(self, info: dict[str, Any], initial_connection: bool = False) -> None:
        server = self._current_server
        tls_url = server is not None and server.uri.scheme == "tls"
        if initial_connection and tls_url and not info.get("tls_required", False):
            assert server is not None
            raise _PlainAnswer(f"{server.uri.netloc} answered a tls:// URL without TLS")
        await super()._process_info(info, initial_connection)


def _plain_answer(failures: Sequence[BaseException], *, url: str) -> TlsRefused | None:
    for failure in failures:
        if isinstance(failure, _PlainAnswer):
            return TlsRefused(
                f"a server answered without TLS while connecting to {url} ({failure}): "
                "nothing was sent",
                hint="the broker's nats.conf needs its tls block (tfshare broker config "
                "--tls-cert/--tls-key); if it has one, something on the path is answering "
                "for it",
            )
    return None


class _Unreachable(Exception):
    def __init__(self, error: BrokerError, *, stalled: bool):
        self.error, self.stalled = error, stalled


async def _connect_once(
    servers: list[str],
    *,
    nkey_seed: bytes,
    agency: str | None,
    name: str,
    reconnect: bool,
    connect_timeout: float,
    error_cb: Callable[[Exception], Awaitable[None]] | None,
    tls: ssl.SSLContext | None,
) -> Connection:
    url = ",".join(servers)
    errors: list[str] = []
    failures: list[Exception] = []  # what each server's attempt raised (TLS refusals among them)

    async def _record(exc: Exception) -> None:
        errors.append(str(exc))
        failures.append(exc)
        if error_cb is not None:
            await error_cb(exc)

    options: dict[str, Any] = {
        "servers": servers,
        "dont_randomize": True,  # the order connect() chose
        "name": name,
        "nkeys_seed_str": nkey_seed.decode("ascii"),
        "allow_reconnect": reconnect,
        "connect_timeout": connect_timeout,
        # Without reconnect: each server is tried twice at most, then the connect fails
        # (nats-py would otherwise go round a list of refusing servers until our timeout).
        "max_reconnect_attempts": -1 if reconnect else 1,
        "reconnect_time_wait": 0.5,
        "ping_interval": PING_INTERVAL_S,
        "max_outstanding_pings": MAX_OUTSTANDING_PINGS,
        # A broker that stops reading must not hold a publish forever: nats-py's forced
        # flush (a full write buffer) swallows cancellation, so it needs its own limit.
        "flush_timeout": connect_timeout * 2,
        "error_cb": _record,
    }
    if agency is not None:
        options["inbox_prefix"] = inbox_prefix(agency).encode()
    if tls is not None:
        options["tls"] = tls
    try:
        # nats-py can keep trying a dead server well past connect_timeout: bound it here.
        client = _TlsUrlClient()
        await asyncio.wait_for(client.connect(**options), timeout=connect_timeout * 2)
    except (TimeoutError, *NATS_ERRORS) as exc:
        if _auth_violation(exc) or any("authorization violation" in e.lower() for e in errors):
            raise auth_failed(url, agency, nkey_seed) from None
        refused = _plain_answer([exc, *failures], url=url) or _tls_refused(
            exc, failures, url=url, tls=tls
        )
        if refused is not None:
            raise refused from None
        stalled = isinstance(exc, TimeoutError | nats.errors.TimeoutError)
        raise _Unreachable(
            broker_error(exc, doing=f"connecting to {url}"), stalled=stalled
        ) from None
    return Connection(client, agency, errors)


# Defaults of the limits an operator sets (``tfshare broker up/provision``; README, Limits).
DEFAULT_MAX_BYTES: Final = 8 * GIB  # every channel's stream together
DEFAULT_MAX_MSGS_PER_SENDER: Final = 3000  # per sender per message channel, over max_age
DEFAULT_MAX_RECEIPTS_PER_SENDER: Final = 16_000  # per reader on the receipts channel
DEFAULT_MAX_AGE_DAYS: Final = 30.0
DEFAULT_RECEIPTS_MAX_AGE_DAYS: Final = 7.0
DEFAULT_MAX_ACK_PENDING: Final = 256
DEFAULT_MAX_WAITING: Final = 16
# The receipts channel's share of max_bytes (when the roster has it); the message channels
# share the rest equally.
RECEIPTS_SHARE: Final = 1 / 8
# The largest receipt envelope: at most MAX_RECIPIENTS wraps of WRAP_SIZE bytes (14 KiB: a
# receipt goes to every reader of the receipts channel), a header of fixed-size fields and
# names of at most 32 characters (under 1 KiB, no refs), and a ciphertext of one padding class
# (a receipt's body is under 300 bytes, so its Plain pads to 1 KiB; 4 KiB allowed) plus the
# tag and the signature. tests/unit/test_flood_limits.py builds the worst case and checks it.
RECEIPT_MAX_ENVELOPE: Final = 24 * 1024
RECEIPT_MAX_MSG_SIZE: Final = RECEIPT_MAX_ENVELOPE + 4096

# The KV buckets, bounded too (a coordinator's or a member's key could otherwise fill the
# broker's disk): the largest value each holds, and the bucket's size. A value can never be
# larger than the broker's max_payload anyway.
# A signed roster, or a pointer to it in the roster object store when it is larger.
ROSTER_BUCKET_MAX_VALUE: Final = MAX_PAYLOAD
SCHEMA_BUCKET_MAX_VALUE: Final = MAX_PAYLOAD  # a registry record (its document is <= 1 MiB)
CHECKPOINT_MAX_VALUE: Final = MAX_NOTE_SIZE  # a signed checkpoint note
COSIGNATURE_MAX_VALUE: Final = MAX_NOTE_SIZE + 1024  # a checkpoint note and one cosignature line
BUCKET_MAX_BYTES: Final = {
    "roster": 32 * MIB,  # 16 versions kept
    "schemas": 128 * MIB,  # written once each; records are a few KiB
    "audit": 8 * MIB,  # 64 checkpoints kept
    "witness": 128 * MIB,  # one key per member, 64 versions each
}
# The KV buckets and the roster object store (rosterdist: its 4 newest rosters).
BUCKETS_MAX_BYTES: Final = sum(BUCKET_MAX_BYTES.values()) + rosterdist.OBJECTS_MAX_BYTES


@dataclass(frozen=True)
class ChannelLimits:
    """What one channel's stream keeps: its share of the task force's bytes, each sender's
    quota of messages on it (over ``max_age_days``), and its largest message."""

    max_bytes: int
    max_msgs_per_sender: int
    max_age_days: float
    max_msg_size: int
    replicas: int = 1  # copies JetStream keeps, each on another node of the cluster

    @property
    def sender_worst_case(self) -> int:
        """The most bytes one sender can make this stream keep: its quota of largest ones."""
        return self.max_msgs_per_sender * self.max_msg_size


# The key manager (PROTOCOL.md 8.6) publishes its epoch-key deliveries on its own subject of
# each epoch channel, so they count against that channel's per-sender quota like any
# sender's: a re-key of R readers is ceil(R / 256) envelopes. JetStream has one
# max_msgs_per_subject per stream (no per-subject override), so an epoch channel's quota is
# raised to hold this many re-keys over max_age (a daily one for 30 days), for the readers
# the channel has.
KEY_MANAGER_REKEYS_PER_MAX_AGE: Final = 30
# A delivery envelope: at most 256 wraps (14 KiB), a header, a body under 300 bytes (channel,
# epoch, key, start, reason, reader-set digest) padded to one small class, a signature: 14,876
# bytes measured for 256 readers (tests/unit/test_fixkm_issue15.py builds it); 16 KiB, and
# 1 KiB for the subject and headers as JetStream stores them.
EPOCH_DELIVERY_MAX_SIZE: Final = 17 * 1024


def key_manager_quota(readers: int) -> int:
    """The messages the key manager needs on one epoch channel of ``readers`` readers over
    max_age: ``KEY_MANAGER_REKEYS_PER_MAX_AGE`` re-keys of ceil(readers / 256) envelopes."""
    return KEY_MANAGER_REKEYS_PER_MAX_AGE * max(1, -(-readers // MAX_RECIPIENTS))


def epoch_readers(roster: TrustedRoster) -> dict[str, int]:
    """Each epoch-mode channel's active readers (how many deliveries a re-key takes): what
    ``StreamLimits.channel_limits`` sizes those channels' quotas for."""
    return {
        c.name: len(roster.active_readers(c.name))
        for c in roster.roster.channels
        if c.mode_policy & Mode.EPOCH
    }


def epoch_channel_quota(channel: str, *, share: int, quota: int, readers: int) -> int:
    """The per-sender quota of an epoch channel whose share of max_bytes is ``share`` and
    whose quota would otherwise be ``quota``: at least ``key_manager_quota(readers)``, so
    the key manager's re-keys are never refused by the broker. Raising it above half the
    share in largest messages (what keeps one flooding member from filling the channel) is
    logged (``sender_quota_raised``); a share that cannot hold the key manager's deliveries
    themselves is logged as an error (``epoch_delivery_share_small``: raise --max-bytes)."""
    needed = key_manager_quota(readers)
    if quota >= needed:
        return quota
    log.warning(
        "sender_quota_raised",
        channel=channel,
        quota=quota,
        raised=needed,
        readers=readers,
        share=share,
        hint="the key manager's epoch-key deliveries count against the per-sender quota; "
        "one member may now keep more than half of this channel's share",
    )
    if needed * EPOCH_DELIVERY_MAX_SIZE > share:
        log.error(
            "epoch_delivery_share_small",
            channel=channel,
            share=share,
            deliveries=needed,
            delivery_bytes=needed * EPOCH_DELIVERY_MAX_SIZE,
            hint="raise --max-bytes: this channel's share does not hold "
            f"{KEY_MANAGER_REKEYS_PER_MAX_AGE} re-keys of its {readers} readers",
        )
    return needed


def stream_config(
    taskforce: str,
    channel: str,
    limits: ChannelLimits,
    *,
    duplicate_window_s: float = 120,
    replicas: int = 1,
) -> StreamConfig:
    """One channel's stream. Every limit refuses the NEW message (DiscardNew), never deletes
    an old one: DiscardOld would make room for a flooder by silently dropping other members'
    messages that readers may not have fetched yet. Each sender publishes only on its own
    subject of the channel (tf.<tf>.ch.<channel>.<sender>), so a per-subject limit with
    discard_new_per_subject is a per-sender quota on this channel: a flooder fills its own
    quota and then only its own publishes here are refused (``SenderQuotaFull``); max_bytes
    bounds the stream on disk (``StreamFull`` once reached, for everyone on this channel
    only: so one sender's worst case is kept to half of it, ``channel_limits``)."""
    return StreamConfig(
        name=stream_name(taskforce, channel),
        subjects=stream_subjects(taskforce, channel),
        storage=StorageType.FILE,
        max_age=limits.max_age_days * DAY_S,
        duplicate_window=duplicate_window_s,
        max_msg_size=limits.max_msg_size,
        max_bytes=limits.max_bytes,
        discard=DiscardPolicy.NEW,
        max_msgs_per_subject=limits.max_msgs_per_sender,
        discard_new_per_subject=True,
        num_replicas=replicas,
        # Direct gets: the key manager looks up the last message on its own subject (its
        # permission names that subject: nobody can read another's this way).
        allow_direct=True,
        # Each reader's durable consumer, and an auditor's: nats-server 2.15 caps a stream
        # that does not say at 1,000 consumers (jetstream.limits.default_max_consumers), so a
        # channel of more readers could not be provisioned on a server we did not configure.
        max_consumers=2 * MAX_MEMBERS,
    )


def reader_consumer_config(
    durable: str,
    *,
    max_ack_pending: int = DEFAULT_MAX_ACK_PENDING,
    max_waiting: int = DEFAULT_MAX_WAITING,
) -> ConsumerConfig:
    """A durable pull consumer on one channel's stream (all of it: the stream is the
    channel). ``max_ack_pending`` bounds what one reader holds unacknowledged on one channel
    (a flood waits on the broker, not in the reader's memory); ``max_waiting`` bounds its
    outstanding pull requests (tfshare keeps one or two per consumer)."""
    return ConsumerConfig(
        durable_name=durable,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=30,
        max_deliver=-1,
        max_ack_pending=max_ack_pending,
        max_waiting=max_waiting,
    )


def bucket_configs(taskforce: str, *, replicas: int = 1) -> list[KeyValueConfig]:
    """The task force's KV buckets, each with its largest value and its size."""
    configs = [
        KeyValueConfig(
            bucket=roster_bucket(taskforce),
            history=16,
            direct=True,
            max_value_size=ROSTER_BUCKET_MAX_VALUE,
            max_bytes=BUCKET_MAX_BYTES["roster"],
        ),
        KeyValueConfig(
            bucket=schema_bucket(taskforce),
            history=1,
            direct=True,
            max_value_size=SCHEMA_BUCKET_MAX_VALUE,
            max_bytes=BUCKET_MAX_BYTES["schemas"],
        ),
        KeyValueConfig(
            bucket=audit_bucket(taskforce),
            history=64,
            direct=True,
            max_value_size=CHECKPOINT_MAX_VALUE,
            max_bytes=BUCKET_MAX_BYTES["audit"],
        ),
        KeyValueConfig(
            bucket=witness_bucket(taskforce),
            history=64,
            direct=True,
            max_value_size=COSIGNATURE_MAX_VALUE,
            max_bytes=BUCKET_MAX_BYTES["witness"],
        ),
    ]
    for config in configs:
        config.replicas = replicas
    return configs


async def _ensure_bucket(js: Any, config: KeyValueConfig) -> None:
    """Create the bucket, or give an existing one (made before buckets were bounded) the
    bounds of ``config``; nothing in it is touched."""
    try:
        info = await js.stream_info(kv_stream(config.bucket))
    except nats.js.errors.NotFoundError:
        await js.create_key_value(config)
        return
    current = info.config
    # Never fewer copies than the bucket has: an operator may have raised them by hand.
    replicas = max(int(current.num_replicas or 1), config.replicas)
    wanted = (config.max_value_size, config.max_bytes, replicas)
    if (current.max_msg_size, current.max_bytes, current.num_replicas) != wanted:
        current.max_msg_size = config.max_value_size
        current.max_bytes = config.max_bytes
        current.num_replicas = replicas
        await js.update_stream(current)


def cluster_size(conn: Connection) -> int:
    """How many nodes the broker's cluster has, as the server told this connection (1 for a
    server alone): the client URLs its INFO lists, one per node for the configurations
    tfshare writes (each node listens on one address)."""
    info: dict[str, Any] = getattr(conn.client, "_server_info", None) or {}
    if not info.get("cluster"):
        return 1
    return max(1, len(set(info.get("connect_urls") or ())))


async def wait_jetstream(conn: Connection, *, timeout: float) -> None:
    """Return once JetStream answers an account-info request (a cluster just started has no
    meta leader for a few seconds: requests then time out or say it is unavailable)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    # One answer late is the next try, not a wait.
    js = conn.client.jetstream(timeout=1.0, domain=conn.js_domain)
    while True:
        try:
            await js.account_info()
            return
        except (TimeoutError, *NATS_ERRORS) as exc:
            if loop.time() >= deadline:
                raise broker_error(exc, doing="waiting for JetStream to be ready") from None
            await asyncio.sleep(0.25)


def default_replicas(nodes: int) -> int:
    """R3 on a cluster of 3 nodes or more (one node may go and a majority stays), else 1."""
    return 3 if nodes >= 3 else 1


class LegacyStreamNotDrained(BrokerRefused):
    """The single all-channels stream of an earlier version still holds messages a reader
    has not acknowledged: deleting it would lose them, keeping it blocks the channel streams
    (their subjects overlap)."""


async def _retire_legacy_stream(js: Any, taskforce: str) -> None:
    """Delete the single all-channels stream ``TF_<taskforce>`` of earlier (unreleased)
    versions once every consumer on it has acknowledged everything; refuse while one has
    not (``LegacyStreamNotDrained``). Its subjects overlap the channel streams', so the two
    cannot both exist; nothing is copied over."""
    name = legacy_stream_name(taskforce)
    try:
        info = await js.stream_info(name)
    except nats.js.errors.NotFoundError:
        return
    consumers = await js.consumers_info(name)
    unread = sum(int(c.num_pending) + int(c.num_ack_pending) for c in consumers)
    if unread:
        raise LegacyStreamNotDrained(
            f"the broker still has the single stream {name} of an earlier tfshare version, "
            f"with {unread} message(s) its readers have not acknowledged",
            hint="run the earlier version's agents and audit service until they have read "
            "everything, then provision again; or, if what it holds may be lost, delete it "
            f"('nats stream rm {name}' as the administrator) and provision again",
        )
    await js.delete_stream(name)
    log.info("legacy_stream_deleted", stream=name, messages=int(info.state.messages))


async def _consumer_limits(js: Any, stream: str) -> dict[str, tuple[int, int]]:
    """The durable consumers of ``stream`` and their (max_ack_pending, max_waiting), read
    page by page from the server's consumer list (none for a stream just added)."""
    found: dict[str, tuple[int, int]] = {}
    while True:
        page = await js.consumers_info(stream, offset=len(found))
        for info in page:
            found[info.name] = (int(info.config.max_ack_pending), int(info.config.max_waiting))
        if not page:
            return found


async def _ensure_consumer(
    js: Any, stream: str, config: ConsumerConfig, present: dict[str, tuple[int, int]]
) -> None:
    """Add ``config``'s durable consumer unless it is there with the same limits."""
    assert config.durable_name is not None
    if present.get(config.durable_name) != (config.max_ack_pending, config.max_waiting):
        await js.add_consumer(stream, config)


async def provision(
    admin: Connection,
    roster: TrustedRoster,
    limits: Mapping[str, ChannelLimits],
    *,
    duplicate_window_s: float = 120,
    max_ack_pending: int = DEFAULT_MAX_ACK_PENDING,
    max_waiting: int = DEFAULT_MAX_WAITING,
    replicas: int | None = None,
) -> dict[str, int]:
    """Create or update the task force's KV buckets, one stream per channel of the roster
    with that channel's ``limits``, every active reader's durable consumer on each channel
    it reads, and the audit service's consumer on every channel. Streams that exist are
    updated first, new ones added after: a new channel shrinks the others' share of
    max_bytes, and JetStream checks the storage reservation when a stream is added (a
    stream shrunk below what it holds keeps it all and refuses new messages until under).

    Each stream and bucket gets ``replicas`` copies (None: ``default_replicas`` of the
    cluster's size), and never fewer than it has: provisioning again (after every roster
    change) keeps a stream an operator raised to R3 at R3. The consumers follow their
    stream's. Returns the replicas of each channel's stream."""
    js = admin.js
    tf = roster.taskforce
    nodes = cluster_size(admin)
    wanted = default_replicas(nodes) if replicas is None else replicas
    found: dict[str, int] = {}
    try:
        for bucket in bucket_configs(tf, replicas=wanted):
            await _ensure_bucket(js, bucket)
        await rosterdist.ensure_roster_objects(js, tf, replicas=wanted)
        await _retire_legacy_stream(js, tf)
        existing: list[StreamConfig] = []
        added: list[StreamConfig] = []
        for channel in task_force_channels(roster):
            config = stream_config(
                tf, channel, limits[channel], duplicate_window_s=duplicate_window_s,
                replicas=wanted,
            )  # fmt: skip
            try:
                info = await js.stream_info(config.name)
            except nats.js.errors.NotFoundError:
                added.append(config)
            else:
                config.num_replicas = max(wanted, int(info.config.num_replicas or 1))
                existing.append(config)
            found[channel] = int(config.num_replicas or 1)
        # Update a stream that exists rather than add it again: adding checks the storage
        # reservation of max_bytes before it notices the stream is there, and would count
        # the stream's own reservation twice ("insufficient storage resources").
        for config in existing:
            await js.update_stream(config)
        for config in added:
            await js.add_stream(config)
        reader = reader_consumer_config
        # What each stream has: provisioning again after every roster change adds only the
        # consumers that are new or configured otherwise (one request each, 2-8 ms: with
        # 20,000 readers of 3 channels, minutes for consumers that are there already).
        present = {
            channel: await _consumer_limits(js, stream_name(tf, channel))
            for channel in task_force_channels(roster)
        }
        for member in roster.roster.members:
            if member.status != "active":
                continue
            agency = member.agency_id
            for channel in readable_channels(roster, agency):
                await _ensure_consumer(
                    js,
                    stream_name(tf, channel),
                    reader(
                        durable_name(agency, channel),
                        max_ack_pending=max_ack_pending,
                        max_waiting=max_waiting,
                    ),
                    present[channel],
                )
            if is_auditor(roster, agency):
                # The audit service's consumers: one on every channel, acknowledged only
                # once the entry is committed to the log.
                for channel in task_force_channels(roster):
                    await _ensure_consumer(
                        js,
                        stream_name(tf, channel),
                        reader(
                            audit_durable_name(agency),
                            max_ack_pending=max(max_ack_pending, 1024),
                            max_waiting=max_waiting,
                        ),
                        present[channel],
                    )
    except nats.js.errors.APIError as exc:
        if (
            exc.err_code == JS_NO_PEERS
            or "replica" in (exc.description or "").lower()
            or (exc.err_code in (JS_INSUFFICIENT_RESOURCES, JS_INSUFFICIENT_STORAGE) and wanted > 1)
        ):
            raise ReplicasUnavailable(
                f"the broker cannot keep {wanted} replicas of the streams and buckets "
                f"({exc.description}); its cluster has {nodes} node(s) that this server knows of",
                hint="give --replicas at most the number of the cluster's nodes that are up "
                "(1 for a server alone); if the cluster was just started, wait until every "
                "node is up and provision again",
            ) from None
        if exc.err_code in (JS_INSUFFICIENT_RESOURCES, JS_INSUFFICIENT_STORAGE):
            raise BrokerError(
                "the broker cannot reserve the streams' max_bytes: JetStream's storage limit "
                "(max_file_store) is smaller",
                hint="give JetStream more disk (--max-file-store, or TFSHARE_MAX_FILE_STORE in "
                "your own template: at least --max-bytes plus 1GiB) or provision with a "
                "smaller --max-bytes",
            ) from None
        log.error("provision_refused", code=exc.err_code, description=exc.description)
        raise broker_error(exc, doing="provisioning the streams and consumers") from None
    except NATS_ERRORS as exc:
        raise broker_error(exc, doing="provisioning the streams and consumers") from None
    return found


async def stream_limits(admin: Connection, taskforce: str, channel: str) -> ChannelLimits:
    """What the broker's stream of ``channel`` is configured with (for operators and tests)."""
    try:
        info = await admin.js.stream_info(stream_name(taskforce, channel))
    except NATS_ERRORS as exc:
        raise broker_error(exc, doing=f"reading the stream of channel {channel}") from None
    config = info.config
    return ChannelLimits(
        max_bytes=int(config.max_bytes),
        max_msgs_per_sender=int(config.max_msgs_per_subject),
        max_age_days=float(config.max_age) / DAY_S,
        max_msg_size=int(config.max_msg_size),
        replicas=int(config.num_replicas or 1),
    )


async def put_roster(conn: Connection, taskforce: str, data: bytes) -> int:
    """Publish a signed roster: into the roster object store, and into the roster bucket's
    key (the roster itself, or a pointer to its object when it is larger than one message:
    ``rosterdist``); returns the KV revision."""
    try:
        return await rosterdist.publish_roster(
            conn.js, taskforce, data, max_payload=int(conn.client.max_payload)
        )
    except NATS_ERRORS as exc:
        raise broker_error(exc, doing="publishing the roster") from None


async def get_roster(
    conn: Connection, taskforce: str, *, known: bytes | None = None
) -> bytes | None:
    """The signed roster in the bucket (followed to the object store when the key holds a
    pointer, its digest checked: ``rosterdist``), or None if none was published yet.
    ``known``: the roster the caller holds, returned as is when the pointer names it."""
    try:
        return await rosterdist.fetch_roster(conn.js, taskforce, known=known)
    except NATS_ERRORS as exc:
        raise broker_error(exc, doing="fetching the roster") from None


async def publish_checkpoint(conn: Connection, taskforce: str, note: bytes) -> None:
    """Announce a signed checkpoint on the audit subject and keep it in the audit bucket."""
    try:
        await conn.client.publish(checkpoint_subject(taskforce), note)
        kv = await conn.js.key_value(audit_bucket(taskforce))
        await kv.put(CHECKPOINT_KEY, note)
    except NATS_ERRORS as exc:
        raise broker_error(exc, doing="publishing a checkpoint") from None


async def get_checkpoint(conn: Connection, taskforce: str) -> bytes | None:
    """The latest signed checkpoint in the audit bucket, or None."""
    try:
        kv = await conn.js.key_value(audit_bucket(taskforce))
        entry = await kv.get(CHECKPOINT_KEY)
    except nats.js.errors.KeyNotFoundError:
        return None
    except NATS_ERRORS as exc:
        raise broker_error(exc, doing="fetching the checkpoint") from None
    return bytes(entry.value) if entry.value is not None else None


async def put_cosignature(conn: Connection, taskforce: str, agency: str, data: bytes) -> None:
    """Keep this agency's latest witness cosignature in the witness bucket (key = agency)."""
    try:
        kv = await conn.js.key_value(witness_bucket(taskforce))
        await kv.put(witness_key(agency), data)
    except NATS_ERRORS as exc:
        raise broker_error(exc, doing="publishing a witness cosignature") from None


async def get_cosignature(conn: Connection, taskforce: str, agency: str) -> bytes | None:
    """The latest witness cosignature ``agency`` published, or None."""
    try:
        kv = await conn.js.key_value(witness_bucket(taskforce))
        entry = await kv.get(witness_key(agency))
    except nats.js.errors.KeyNotFoundError:
        return None
    except NATS_ERRORS as exc:
        raise broker_error(exc, doing="fetching a witness cosignature") from None
    return bytes(entry.value) if entry.value is not None else None


async def subscribe_checkpoints(
    conn: Connection, taskforce: str, on_note: Callable[[bytes], None]
) -> None:
    """Call ``on_note`` with every checkpoint the audit service announces from now on."""

    async def handler(msg: Msg) -> None:
        on_note(bytes(msg.data))

    try:
        await conn.client.subscribe(checkpoint_subject(taskforce), cb=handler)
        await conn.client.flush()
    except NATS_ERRORS as exc:
        raise broker_error(exc, doing="subscribing to checkpoints") from None


async def put_schema_record(
    conn: Connection, taskforce: str, subject: str, version: int, data: bytes
) -> None:
    """Store a registry record, write-once: a version already there is never replaced."""
    try:
        kv = await conn.js.key_value(schema_bucket(taskforce))
        await kv.create(schema_key(subject, version), data)
    except nats.js.errors.KeyWrongLastSequenceError:
        return  # already published (by us or another coordinator): versions never change
    except NATS_ERRORS as exc:
        raise broker_error(exc, doing="publishing a schema record") from None


async def get_schema_record(
    conn: Connection, taskforce: str, subject: str, version: int
) -> bytes | None:
    try:
        kv = await conn.js.key_value(schema_bucket(taskforce))
        entry = await kv.get(schema_key(subject, version))
    except nats.js.errors.KeyNotFoundError:
        return None
    except NATS_ERRORS as exc:
        raise broker_error(exc, doing="fetching a schema record") from None
    return bytes(entry.value) if entry.value is not None else None


async def schema_keys(conn: Connection, taskforce: str) -> list[tuple[str, int]]:
    """(subject, version) of every record in the registry bucket, sorted; keys that are not
    ``<subject>.v<version>`` are left out. Read with a stream-info request filtered on the
    bucket's subjects (a permission every member already has for reading the bucket), not
    with a KV watcher, which would need a consumer of its own; a bucket that does not exist
    (a broker provisioned before the registry) has no records."""
    bucket = schema_bucket(taskforce)
    try:
        info = await conn.js.stream_info(kv_stream(bucket), subjects_filter=kv_subject(bucket, ">"))
    except nats.js.errors.NotFoundError:
        return []
    except NATS_ERRORS as exc:
        raise broker_error(exc, doing="listing the registry records") from None
    subjects = info.state.subjects or {}
    found = (kv_key(bucket, subject) for subject in subjects)
    keys = (parse_schema_key(key) for key in found if key is not None)
    return sorted(key for key in keys if key is not None)


async def serve_requests(
    conn: Connection,
    subject: str,
    answer: Callable[[bytes], bytes],
    *,
    reply_allowed: Callable[[str, str], bool],
) -> None:
    """Answer every request on ``subject`` (wildcards allowed) with ``answer(request
    bytes)``, on its reply subject, until the connection closes. ``answer`` must not raise; a
    message without a reply subject is not a request and is dropped. A reply that cannot be
    sent (the connection went away) is dropped too: the requester times out and asks again.

    ``reply_allowed(request subject, reply subject)`` guards the reply: the broker's
    ``allow_responses`` lets the service publish to whatever reply subject a requester
    names, so a member could otherwise aim the answer at a KV key, a channel, or another
    member's inbox. Refused requests are dropped, unanswered (``request_reply_refused``)."""

    async def handler(msg: Msg) -> None:
        if not msg.reply or not reply_allowed(msg.subject, msg.reply):
            if msg.reply:
                log.warning(
                    "request_reply_refused", subject=msg.subject[:120], reply=msg.reply[:120]
                )
            return
        response = answer(bytes(msg.data))
        try:
            await conn.client.publish(msg.reply, response)
        except NATS_ERRORS:
            return

    try:
        await conn.client.subscribe(subject, cb=handler)
        await conn.client.flush()
    except NATS_ERRORS as exc:
        raise broker_error(exc, doing=f"subscribing to {subject}") from None


async def request(conn: Connection, subject: str, data: bytes, *, timeout: float) -> bytes:
    """Send one request on ``subject`` and return the first reply. The reply comes back on
    this agency's private inbox prefix. ``NoResponders`` if nobody serves the subject,
    ``BrokerRefused`` if this user may not publish there, ``BrokerError`` on a timeout."""
    try:
        reply = await conn.client.request(subject, data, timeout=timeout)
    except nats.errors.NoRespondersError:
        raise NoResponders(
            f"nobody answers requests on {subject}",
            hint="the service for this subject is not running on the broker",
        ) from None
    except (nats.errors.TimeoutError, TimeoutError):
        # A refused publish is reported asynchronously; the request itself only times out.
        await _settle(conn)
        if conn.refused(subject):
            raise BrokerRefused(
                f"the broker refused a request on {subject}: permission denied",
                hint="this agency's NATS user may not send it (not a member, or the broker's "
                "configuration is older than the roster)",
            ) from None
        raise NoAnswer(
            f"no answer on {subject} within {timeout:g} s",
            hint="the service may be busy or stopping; try again (or with a longer timeout)",
        ) from None
    except NATS_ERRORS as exc:
        raise broker_error(exc, doing=f"sending a request on {subject}") from None
    return bytes(reply.data)


async def _settle(conn: Connection) -> None:
    """Give asynchronous server errors (permission violations) a round trip to arrive."""
    try:
        await conn.client.flush(timeout=1)
    except (TimeoutError, *NATS_ERRORS):
        return


async def publish(
    conn: Connection, subject: str, data: bytes, *, msg_id: str, timeout: float = 5.0
) -> tuple[int, bool]:
    """Publish one envelope and wait for JetStream's ack: (stream sequence, duplicate?)."""
    oversize = _oversize(conn, subject, data, msg_id)
    if oversize is not None:
        raise oversize
    try:
        ack = await conn.js.publish(subject, data, timeout=timeout, headers={"Nats-Msg-Id": msg_id})
    except NATS_ERRORS as exc:
        raise _publish_failure(conn, subject, data, exc) from None
    return int(ack.seq), bool(ack.duplicate)


async def publish_many(
    conn: Connection, items: Sequence[tuple[str, bytes, str]], *, timeout: float = 5.0
) -> list[tuple[int, bool] | BrokerError]:
    """Publish (subject, envelope, msg_id) items pipelined -- all in flight at once -- and
    wait for JetStream's acks. One result per item, in order: (stream sequence, duplicate?)
    or the ``BrokerError`` for that item (``BrokerRefused`` for a permission denial,
    ``MessageTooLarge`` for one the broker would refuse for its size: never sent)."""
    if not items:
        return []
    js = conn.js  # one context: it owns the futures of its pending publishes
    futures: list[asyncio.Future[Any] | MessageTooLarge] = []
    try:
        # One deadline for the whole submission rather than nats-py's per-call wait_stall:
        # that wraps every call in a task, so each message was written to the socket alone
        # (a syscall and a loop turn each); without it the client writes them in bulk.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with asyncio.timeout(timeout):
            for subject, data, msg_id in items:
                oversize = _oversize(conn, subject, data, msg_id)
                if oversize is not None:
                    futures.append(oversize)  # sending it would cost the whole connection
                    continue
                futures.append(
                    await js.publish_async(subject, data, headers={"Nats-Msg-Id": msg_id})
                )
                if loop.time() > deadline:  # a cancellation nats-py swallowed, say
                    raise TimeoutError
    except NATS_ERRORS as exc:  # TimeoutError among them
        for future in futures:
            if isinstance(future, asyncio.Future):
                future.cancel()
        raise broker_error(exc, doing="publishing") from None
    pending = [f for f in futures if isinstance(f, asyncio.Future)]
    if pending:
        await asyncio.wait(pending, timeout=timeout)
    results: list[tuple[int, bool] | BrokerError] = []
    for (subject, data, _), future in zip(items, futures, strict=True):
        if isinstance(future, MessageTooLarge):
            results.append(future)
            continue
        if not future.done():
            future.cancel()
            failure: BaseException = TimeoutError()
        elif future.exception() is not None:
            failure = future.exception() or TimeoutError()
        else:
            ack = future.result()
            results.append((int(ack.seq), bool(ack.duplicate)))
            continue
        results.append(_publish_failure(conn, subject, data, failure))
    return results


@dataclass
class Delivery:
    """One message from the consumer; ``ack`` only after the outcome is persisted."""

    subject: str
    data: bytes
    delivered: int  # how many times JetStream has delivered it (1 = first)
    message: Msg

    async def ack(self) -> None:
        await self.message.ack()

    async def nak(self, delay: float | None = None) -> None:
        await self.message.nak(delay=delay)


def _num_delivered(msg: Msg) -> int:
    """How many times JetStream has delivered ``msg``: a field of its ack subject (ADR-15:
    ``$JS.ACK.<stream>.<consumer>.<delivered>...``, 9 tokens, or with the domain and account
    hash before the stream, 11 or 12). Read here rather than through ``msg.metadata``, which
    builds two dataclasses and a datetime per message (5 us; this takes 0.3). Names of streams
    and consumers hold no dots, so the tokens are the fields; any other form is left to
    nats-py, which refuses what is not a JetStream message."""
    reply = msg.reply or ""
    tokens = reply.split(".")
    if tokens[:2] == ["$JS", "ACK"]:
        field = 4 if len(tokens) == 9 else 6 if len(tokens) in (11, 12) else None
        if field is not None and tokens[field].isdecimal():
            return int(tokens[field])
    return int(msg.metadata.num_delivered)


@dataclass
class _Lane:
    """One durable consumer of a ``Consumer`` (on one channel's stream): its subscription, the
    pull in flight (at most one) and what it fetched that was not handed out yet."""

    channel: str
    stream: str
    durable: str
    sub: Any
    pull: asyncio.Task[list[Msg]] | None = None
    ready: deque[Msg] = field(default_factory=deque)


def _retrieve(task: asyncio.Task[Any]) -> None:
    """A pull left behind when its connection closed: its error is not news."""
    if not task.cancelled():
        task.exception()


ChannelList = Sequence[str] | Callable[[], Sequence[str]]
"""Channels to read: a list, or a function giving the current list (the roster in force)."""


class Consumer:
    """An agency's durable pull consumers, one per channel it reads, each on that channel's
    stream (or, with ``audit``, its audit service's consumer on every channel's stream),
    behind one ``fetch``.

    Fair by construction: each consumer has at most one pull in flight, asking for its share
    of the batch; ``fetch`` returns as soon as any consumer has messages, and hands them out
    in turn (one from each consumer with messages, starting with a different one each call).
    A pull still waiting when ``fetch`` returns stays in flight for the next call, so nothing
    fetched is dropped. A backlog on one channel therefore costs another channel at most one
    share of a batch, never the backlog.

    ``channels`` (a list, or a function returning the channels now: the agent passes its
    roster's) is looked at again every ``refresh_s``, so a channel granted later is read
    without a reconnect. A channel whose consumer is not on the broker yet (the roster
    changed before the broker was provisioned again) is skipped and looked for at the next
    refresh; only when none of them is there does binding fail (nothing to read)."""

    def __init__(
        self,
        conn: Connection,
        taskforce: str,
        agency: str,
        *,
        channels: ChannelList,
        audit: bool = False,
        refresh_s: float = 30.0,
    ):
        self.conn = conn
        self.taskforce = taskforce
        self.agency = agency
        self.audit = audit
        self.channels = channels
        self.refresh_s = refresh_s
        self._lanes: dict[str, _Lane] = {}  # by channel
        self._bound = False
        self._next_refresh = 0.0
        self._turn = 0
        self._missing: list[str] = []

    @property
    def bound_channels(self) -> list[str]:
        """The channels whose consumers this one reads, in a stable order."""
        return sorted(self._lanes)

    @property
    def missing(self) -> list[str]:
        """Channels wanted whose consumer the broker did not have at the last bind."""
        return list(self._missing)

    def _wanted(self) -> list[str]:
        channels = self.channels() if callable(self.channels) else self.channels
        return sorted(set(channels))

    def _durable(self, channel: str) -> str:
        return audit_durable_name(self.agency) if self.audit else durable_name(self.agency, channel)

    async def bind(self) -> None:
        """Bind to every consumer this agency reads (again: new ones added, gone ones left)."""
        wanted = self._wanted()
        missing: list[str] = []
        try:
            for channel in wanted:
                if channel in self._lanes:
                    continue
                stream, durable = stream_name(self.taskforce, channel), self._durable(channel)
                try:
                    await self.conn.js.consumer_info(stream, durable)
                except nats.js.errors.NotFoundError:
                    missing.append(channel)
                    continue
                sub = await self.conn.js.pull_subscribe_bind(
                    durable, stream, inbox_prefix=f"{inbox_prefix(self.agency)}.".encode()
                )
                self._lanes[channel] = _Lane(channel, stream, durable, sub)
        except NATS_ERRORS as exc:
            raise broker_error(exc, doing=f"binding the consumers of {self.agency}") from None
        for channel in set(self._lanes) - set(wanted):
            lane = self._lanes.pop(channel)  # the agency no longer reads that channel
            if lane.pull is not None:
                lane.pull.cancel()
            with contextlib.suppress(*NATS_ERRORS):
                await lane.sub.unsubscribe()
        if missing and missing != self._missing:
            log.warning(
                "consumer_missing", agency=self.agency, channels=missing, hint=_PROVISION_HINT
            )
        self._missing = missing
        if missing and not self._lanes:
            raise BrokerError(
                f"the stream or the consumer is missing: the broker has no consumer of "
                f"{self.agency} on the stream of channel(s) {', '.join(missing)}",
                hint=_PROVISION_HINT,
            )
        self._bound = True
        loop = asyncio.get_running_loop()
        self._next_refresh = loop.time() + self.refresh_s

    async def _pull(self, lane: _Lane, batch: int, timeout: float) -> list[Msg]:
        try:
            messages: list[Msg] = await lane.sub.fetch(batch, timeout=timeout)
        except (nats.errors.TimeoutError, nats.js.errors.FetchTimeoutError, TimeoutError):
            return []
        return messages

    def _collect(self) -> None:
        """Move the results of finished pulls to their lanes; a pull's broker error ends
        the fetch (the caller reconnects)."""
        for lane in self._lanes.values():
            if lane.pull is None or not lane.pull.done():
                continue
            pull, lane.pull = lane.pull, None
            if pull.cancelled():
                continue
            exc = pull.exception()
            if exc is not None:
                raise broker_error(exc, doing=f"fetching from consumer {lane.durable}") from None
            lane.ready.extend(pull.result())

    def _hand_out(self, batch: int) -> list[Delivery]:
        lanes = [self._lanes[c] for c in self.bound_channels]
        if not lanes:
            return []
        self._turn = (self._turn + 1) % len(lanes)
        order = lanes[self._turn :] + lanes[: self._turn]
        taken: list[Msg] = []
        while len(taken) < batch and any(lane.ready for lane in order):
            for lane in order:
                if lane.ready and len(taken) < batch:
                    taken.append(lane.ready.popleft())
        return [Delivery(m.subject, bytes(m.data), _num_delivered(m), m) for m in taken]

    async def fetch(self, batch: int, timeout: float) -> list[Delivery]:
        """Up to ``batch`` messages; an empty list when none arrived within ``timeout``."""
        loop = asyncio.get_running_loop()
        if not self._bound or loop.time() >= self._next_refresh:
            await self.bind()
        if not self._lanes:  # reads no channel (yet): nothing will come
            await asyncio.sleep(timeout)
            return []
        share = max(1, -(-batch // len(self._lanes)))
        deadline = loop.time() + timeout
        while True:
            self._collect()
            if any(lane.ready for lane in self._lanes.values()):
                break
            for lane in self._lanes.values():
                if lane.pull is None:
                    lane.pull = asyncio.create_task(self._pull(lane, share, timeout))
                    lane.pull.add_done_callback(_retrieve)
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            pulls = [lane.pull for lane in self._lanes.values() if lane.pull is not None]
            done, _ = await asyncio.wait(
                pulls, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                break
        return self._hand_out(batch)

    async def backlog(self) -> dict[str, int]:
        """Messages not yet delivered, per channel (needs CONSUMER.INFO rights)."""
        result: dict[str, int] = {}
        for channel in self.bound_channels:
            lane = self._lanes[channel]
            try:
                info = await self.conn.js.consumer_info(lane.stream, lane.durable)
            except NATS_ERRORS as exc:
                raise broker_error(exc, doing=f"reading consumer {lane.durable}") from None
            result[channel] = int(info.num_pending)
        return result

    async def close(self) -> None:
        """Stop the pulls in flight, and hand back (nak) what was fetched but not handed out,
        so the broker redelivers it at once rather than after the ack wait. What a cancelled
        pull was still receiving comes back after the ack wait."""
        pulls = [lane.pull for lane in self._lanes.values() if lane.pull is not None]
        for pull in pulls:
            pull.cancel()
        await asyncio.gather(*pulls, return_exceptions=True)
        for lane in self._lanes.values():
            lane.pull = None
            while lane.ready:
                with contextlib.suppress(*NATS_ERRORS):
                    await lane.ready.popleft().nak()


async def reader_backlog(
    admin: Connection, taskforce: str, agency: str, channels: Sequence[str]
) -> tuple[int, int]:
    """(not yet delivered, delivered but not acknowledged) over an agency's channel
    consumers: what the single consumer's num_pending and num_ack_pending were."""
    pending = ack_pending = 0
    try:
        for channel in channels:
            info = await admin.js.consumer_info(
                stream_name(taskforce, channel), durable_name(agency, channel)
            )
            pending += int(info.num_pending)
            ack_pending += int(info.num_ack_pending)
    except NATS_ERRORS as exc:
        raise broker_error(exc, doing=f"reading the consumers of {agency}") from None
    return pending, ack_pending
