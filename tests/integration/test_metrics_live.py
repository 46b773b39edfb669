"""``tfshare agent run --metrics-port`` on a real nats-server (``tfshare broker up``): the
Prometheus text counts a message police published and ngo's agent delivered, ``/healthz`` is
200 while the agent is connected and 503 with its reason once the broker is gone, and the
endpoint listens on 127.0.0.1 only. No stand-ins: the agent, the broker and the store are
the real ones, in subprocesses.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from livekit import free_port
from prometheus_client.parser import text_string_to_metric_families
from test_live_cli import TASKFORCE, CliTaskForce, cli_tf, ok, start_broker, wait_for

__all__ = ["cli_tf"]

SEEN = 30.0  # seconds a delivery may take on a loaded machine (not a timed assertion)


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def sample(port: int, name: str, **labels: str) -> float | None:
    code, body = get(f"http://127.0.0.1:{port}/metrics")
    if code != 200:
        return None
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return None


@pytest.mark.slow
def test_agent_metrics_count_a_delivery_and_health_follows_the_broker(
    cli_tf: CliTaskForce, tmp_path: Path
) -> None:
    broker = start_broker(cli_tf, "metrics-broker")
    port = free_port()
    agent = None
    try:
        keys = cli_tf.root / "keys"
        agent = cli_tf.spawn(
            "metrics-agent",
            "agent",
            "run",
            "--key",
            keys / "ngo.key",
            "--passphrase-file",
            keys / "ngo.pass",
            *cli_tf.trust(),
            "--state",
            tmp_path / "ngo",
            "--server",
            broker.url,
            "--metrics-port",
            str(port),
        )
        agent.wait_stderr(f"metrics at http://127.0.0.1:{port}/metrics")
        assert wait_for(lambda: get(f"http://127.0.0.1:{port}/healthz")[0] == 200, SEEN, 0.2)
        code, body = get(f"http://127.0.0.1:{port}/healthz")
        assert (code, json.loads(body)) == (200, {"status": "ok", "reasons": []})
        assert sample(port, "tfshare_agent_connected") == 1
        assert sample(port, "tfshare_agent_info", agency="ngo", taskforce=TASKFORCE) == 1

        ok(cli_tf.publish(tmp_path / "police", broker.url))
        delivered = "tfshare_agent_messages_received_total"
        assert wait_for(lambda: sample(port, delivered, outcome="delivered") == 1, SEEN, 0.2), (
            agent.stderr()
        )
        assert sample(port, "tfshare_agent_backlog_messages", channel="alerts") == 0
        assert sample(port, "tfshare_agent_inbox_messages") == 1
        assert sample(port, "tfshare_agent_outbox_messages") == 0

        broker.process.cleanup()
        assert wait_for(lambda: get(f"http://127.0.0.1:{port}/healthz")[0] == 503, SEEN, 0.2)
        code, body = get(f"http://127.0.0.1:{port}/healthz")
        answer = json.loads(body)
        assert answer["status"] == "unhealthy"
        assert any(r.startswith("not connected to the broker") for r in answer["reasons"])
        assert sample(port, "tfshare_agent_connected") == 0
        # Nothing listens on the machine's other addresses (loopback only).
        listening = Path("/proc/net/tcp").read_text().splitlines()[1:]
        ours = [line.split()[1] for line in listening if line.split()[1].endswith(f":{port:04X}")]
        assert ours and all(address.startswith("0100007F:") for address in ours), ours
    finally:
        if agent is not None:
            agent.cleanup()
        broker.process.cleanup()


@pytest.mark.slow
def test_audit_service_metrics_count_an_appended_envelope(
    cli_tf: CliTaskForce, tmp_path: Path
) -> None:
    """``audit serve --metrics-port``: the coordinator's audit service counts what it logged
    and says it is healthy while its log can take a write."""
    broker = start_broker(cli_tf, "metrics-audit-broker")
    port = free_port()
    service = None
    try:
        keys = cli_tf.root / "keys"
        service = cli_tf.spawn(
            "metrics-audit",
            "audit",
            "serve",
            "--key",
            keys / "coord.key",
            "--passphrase-file",
            keys / "coord.pass",
            *cli_tf.trust(),
            "--state",
            tmp_path / "coord",
            "--server",
            broker.url,
            "--interval",
            "1",
            "--metrics-port",
            str(port),
        )
        service.wait_stderr(f"metrics at http://127.0.0.1:{port}/metrics")
        code, body = get(f"http://127.0.0.1:{port}/healthz")
        assert (code, json.loads(body)["status"]) == (200, "ok")
        ok(cli_tf.publish(tmp_path / "police", broker.url))
        appended = "tfshare_audit_appended_total"
        assert wait_for(lambda: (sample(port, appended) or 0) >= 1, SEEN, 0.2), service.stderr()
    finally:
        if service is not None:
            service.cleanup()
        broker.process.cleanup()
