"""TLS wired through the CLI (issue 14, item 4), as real subprocesses: ``tfshare broker up``
with --tls-cert/--tls-key/--tls-ca requires TLS of every client; ``agent run`` and
``publish`` with --tls-ca over ``tls://127.0.0.1:PORT`` deliver a message; without the CA
the publish fails with exit 4 naming the broker's certificate (neither sent nor queued).
Certificates from tests/certkit.py; the task force is test_live_cli's (built with the CLI).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from certkit import CertKit, make_certkit
from livekit import free_port
from test_cluster_live import free_ports
from test_live_cli import (
    ALERT,
    TFSHARE,
    Background,
    CliTaskForce,
    clean_env,
    cli_tf,
    msg_id_of,
    ok,
    outbox,
    wait_for,
)

__all__ = ["cli_tf"]  # the module's task force fixture, shared with test_live_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> CertKit:
    return make_certkit(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def tls_broker(cli_tf: CliTaskForce, kit: CertKit) -> Iterator[tuple[str, Background]]:
    """``tfshare broker up`` with TLS for clients: (its tls:// URL, the process)."""
    port = free_port()
    process = cli_tf.spawn(
        "tls-broker", "broker", "up", *cli_tf.trust(), "--dir", cli_tf.root / "tls-broker",
        "--port", str(port), "--tls-cert", kit.server.cert, "--tls-key", kit.server.key,
        "--tls-ca", kit.ca.cert,
    )  # fmt: skip
    try:
        process.wait_stderr("listening on", timeout=30)
        yield f"tls://127.0.0.1:{port}", process
    finally:
        process.cleanup()


def test_broker_up_with_tls_writes_a_config_that_requires_tls_of_clients(
    cli_tf: CliTaskForce, tls_broker: tuple[str, Background]
) -> None:
    config = (cli_tf.root / "tls-broker" / "nats.conf").read_text()
    assert "\ntls {\n" in config and 'min_version: "1.3"' in config


def test_agent_and_publish_with_the_ca_deliver_over_tls(
    cli_tf: CliTaskForce, kit: CertKit, tls_broker: tuple[str, Background], tmp_path: Path
) -> None:
    url, _ = tls_broker
    agent = cli_tf.spawn(
        "tls-agent-ngo", "agent", "run", *cli_tf.creds("ngo"), *cli_tf.trust(),
        "--state", tmp_path / "ngo", "--server", url, "--tls-ca", kit.ca.cert,
    )  # fmt: skip
    try:
        agent.wait_stderr("consuming from", timeout=20)
        published = ok(
            cli_tf.publish(tmp_path / "police", url, "--no-queue", "--tls-ca", str(kit.ca.cert))
        )
        msg_id = msg_id_of(published)
        inbox = tmp_path / "ngo"

        def delivered() -> bool:
            result = cli_tf.run(
                "inbox", "list", "--json", *cli_tf.creds("ngo"), *cli_tf.trust(), "--state", inbox
            )
            return result.returncode == 0 and msg_id in result.stdout

        assert wait_for(delivered, timeout=20, interval=0.3), agent.stderr()
    finally:
        agent.cleanup()


def test_the_ca_from_the_environment_is_used(
    cli_tf: CliTaskForce, kit: CertKit, tls_broker: tuple[str, Background], tmp_path: Path
) -> None:
    """TFSHARE_TLS_CA stands for --tls-ca (systemd units and profiles set it once)."""
    url, _ = tls_broker
    env = clean_env(cli_tf.home) | {"TFSHARE_TLS_CA": str(kit.ca.cert)}
    result = subprocess.run(
        [
            str(TFSHARE), "publish", "alert", "--channel", "alerts", "--file", str(ALERT),
            *cli_tf.creds("police"), *cli_tf.trust(), "--state", str(tmp_path / "police"),
            "--server", url, "--no-queue",
        ],
        cwd=cli_tf.root, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    msg_id_of(result)


def test_publish_without_the_ca_is_exit_4_naming_the_brokers_certificate(
    cli_tf: CliTaskForce, tls_broker: tuple[str, Background], tmp_path: Path
) -> None:
    """The system's CAs do not hold the task force CA: a certificate problem, said as such
    (not "broker unavailable"), and the message is not queued to fail again later."""
    url, _ = tls_broker
    state = tmp_path / "police"
    result = cli_tf.publish(state, url)
    assert result.returncode == 4, result.stderr
    assert "TLS certificate was not accepted" in result.stderr
    assert "--tls-ca" in result.stderr
    assert "neither sent nor queued" in result.stderr
    assert "Traceback" not in result.stderr
    assert outbox(state) == []


def test_publish_trusting_another_ca_is_refused_the_same_way(
    cli_tf: CliTaskForce, kit: CertKit, tls_broker: tuple[str, Background], tmp_path: Path
) -> None:
    url, _ = tls_broker
    result = cli_tf.publish(tmp_path / "police", url, "--tls-ca", str(kit.other_ca.cert))
    assert result.returncode == 4, result.stderr
    assert "TLS certificate was not accepted" in result.stderr


def test_a_missing_ca_file_is_named_before_anything_connects(
    cli_tf: CliTaskForce, tls_broker: tuple[str, Background], tmp_path: Path
) -> None:
    url, _ = tls_broker
    missing = tmp_path / "nope.pem"
    result = cli_tf.publish(tmp_path / "police", url, "--tls-ca", str(missing))
    assert result.returncode == 1, result.stderr
    assert "does not exist" in result.stderr and "nope.pem" in result.stderr


def test_a_three_node_cluster_with_tls_routes_and_tls_clients_serves(
    cli_tf: CliTaskForce, kit: CertKit, tmp_path: Path
) -> None:
    """``broker up --cluster 3`` with TLS: the routes are mutual TLS (the cluster forms and
    provisions R3 through them), the clients' port requires TLS, and a publish with the CA
    over the nodes' tls:// list is acknowledged."""
    port, cluster_port = free_ports(3), free_ports(3)
    broker = cli_tf.spawn(
        "tls-cluster", "broker", "up", *cli_tf.trust(), "--dir", cli_tf.root / "tls-cluster",
        "--port", str(port), "--cluster", "3", "--cluster-port", str(cluster_port),
        "--tls-cert", kit.server.cert, "--tls-key", kit.server.key, "--tls-ca", kit.ca.cert,
    )  # fmt: skip
    try:
        broker.wait_stderr("listening on", timeout=40)
        for i in range(1, 4):
            text = (cli_tf.root / "tls-cluster" / f"nats-{i}.conf").read_text()
            assert "verify: true" in text[text.index("cluster {") :]
        servers = ",".join(f"tls://127.0.0.1:{port + i}" for i in range(3))
        published = ok(
            cli_tf.publish(tmp_path / "police", servers, "--no-queue", "--tls-ca", str(kit.ca.cert))
        )
        msg_id_of(published)  # --no-queue: printed only once the cluster acknowledged it
    finally:
        broker.cleanup()
