"""TLS, the hub's JetStream domain and leaf nodes wired into what tfshare generates and
loads (issue 14, items 3 and 4): broker configurations with TLS (clients; mutual-TLS routes on
a cluster), a domain and a leaf port pass ``nats-server -t``; the members' permissions allow
JetStream's API by the domain; a profile's tls_* files and jetstream_domain are read and
checked; the CLI's TLS files become one SSL context or a named error; an agency's leaf
configuration is written with its seed apart (0600)."""

from __future__ import annotations

import os
import ssl
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from certkit import CertKit, make_certkit
from tfkit import TaskForce
from typer.testing import CliRunner

from tfshare import profiles
from tfshare.broker import BrokerTLS, loopback_cluster
from tfshare.errors import InputError, UsageError
from tfshare.names import permissions
from tfshare.workflows.live import (
    ServerOptions,
    write_broker_config,
    write_cluster_config,
    write_leaf_config,
)

# cli/ installs as tfshare.cli (pyproject); mypy checks it from the source tree as "cli".
from tfshare.cli import broker_cmd, common, leaf_cmd  # type: ignore[import-not-found,unused-ignore]  # isort: skip

NATS_SERVER = Path(sys.executable).parent / "nats-server"


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> CertKit:
    return make_certkit(tmp_path_factory.mktemp("certs"))


def tls_of(kit: CertKit) -> BrokerTLS:
    return BrokerTLS(kit.server.cert, kit.server.key, kit.ca.cert)


def passes_t(path: Path) -> None:
    result = subprocess.run(
        [str(NATS_SERVER), "-t", "-c", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def block(text: str, name: str) -> str:
    """The top-level block ``name {...}`` of a configuration."""
    start = text.index(f"\n{name} {{") + 1
    depth = 0
    for end in range(start, len(text)):
        depth += (text[end] == "{") - (text[end] == "}")
        if text[end] == "}" and depth == 0:
            return text[start : end + 1]
    raise AssertionError(f"no end of {name}")


def test_a_single_node_with_tls_requires_tls_13_of_clients_and_passes_nats_server_t(
    taskforce: TaskForce, kit: CertKit, tmp_path: Path
) -> None:
    path = write_broker_config(
        taskforce.trusted(), tmp_path, port=14222, options=ServerOptions(tls=tls_of(kit))
    )
    passes_t(path)
    tls = block(path.read_text(), "tls")
    assert f'cert_file: "{kit.server.cert}"' in tls and 'min_version: "1.3"' in tls
    assert "verify: true" not in tls  # the clients sign in with their nkeys


def test_each_cluster_node_has_mutual_tls_routes_and_tls_clients(
    taskforce: TaskForce, kit: CertKit, tmp_path: Path
) -> None:
    layout = loopback_cluster("tf", 3, port=14400, cluster_port=16400)
    paths = write_cluster_config(
        taskforce.trusted(), tmp_path, layout, options=ServerOptions(tls=tls_of(kit))
    )
    for path in paths:
        passes_t(path)
        text = path.read_text()
        cluster = block(text, "cluster")
        assert "tls {" in cluster and "verify: true" in cluster
        assert f'ca_file: "{kit.ca.cert}"' in cluster
        assert "\ntls {" in text  # the clients' block, outside cluster {}


def test_cluster_routes_without_the_ca_are_refused(
    taskforce: TaskForce, kit: CertKit, tmp_path: Path
) -> None:
    layout = loopback_cluster("tf", 3, port=14500, cluster_port=16500)
    options = ServerOptions(tls=BrokerTLS(kit.server.cert, kit.server.key))
    with pytest.raises(UsageError, match="CA"):
        write_cluster_config(taskforce.trusted(), tmp_path, layout, options=options)


def test_the_domain_is_the_same_on_every_node_and_loopback_leaf_ports_differ(
    taskforce: TaskForce, kit: CertKit, tmp_path: Path
) -> None:
    layout = loopback_cluster("tf", 3, port=14600, cluster_port=16600)
    options = ServerOptions(tls=tls_of(kit), jetstream_domain="tf", leaf_port=17422)
    paths = write_cluster_config(taskforce.trusted(), tmp_path, layout, options=options)
    for index, path in enumerate(paths):
        passes_t(path)
        text = path.read_text()
        assert "    domain: tf\n" in block(text, "jetstream")
        leaf = block(text, "leafnodes")
        assert f"listen: 127.0.0.1:{17422 + index}" in leaf and "verify: true" in leaf
    users = (tmp_path / "tfshare-users.conf").read_text()
    assert "leafnodes" not in users  # the templates' include holds the users alone


def test_a_bad_domain_name_is_refused(taskforce: TaskForce, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="domain"):
        write_broker_config(
            taskforce.trusted(), tmp_path, port=1, options=ServerOptions(jetstream_domain="a b")
        )


def test_permissions_allow_jetstream_by_the_domain_beside_the_plain_api(
    taskforce: TaskForce,
) -> None:
    plain = permissions(taskforce.trusted(), "labour")
    domain = permissions(taskforce.trusted(), "labour", jetstream_domain="tf")
    assert plain is not None and domain is not None
    api = [s for s in plain.publish if s.startswith("$JS.API.")]
    assert api and not any(s.startswith("$JS.tf.") for s in plain.publish)
    for subject in api:
        assert subject.replace("$JS.API.", "$JS.tf.API.", 1) in domain.publish
    assert set(plain.publish) <= set(domain.publish)
    assert plain.subscribe == domain.subscribe
    # Acks keep their own subjects (checked live: test_leafnode_live).
    assert not any(s.startswith("$JS.tf.ACK") for s in domain.publish)


def _profile(home: Path, extra: str) -> None:
    folder = home / "profiles" / "p"
    folder.mkdir(parents=True)
    (folder / "config.toml").write_text(
        f'agency = "police"\nserver = "tls://127.0.0.1:4222"\n{extra}'
    )


def test_a_profile_holds_tls_files_and_a_jetstream_domain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TFSHARE_HOME", str(tmp_path))
    _profile(tmp_path, 'tls_ca = "/etc/tf/ca.pem"\ntls_cert = "/etc/tf/c.pem"\n'
             'tls_key = "/etc/tf/k.pem"\njetstream_domain = "tf"\n')  # fmt: skip
    loaded = profiles.load("p")
    assert loaded.tls_ca == Path("/etc/tf/ca.pem") and loaded.tls_key == Path("/etc/tf/k.pem")
    assert loaded.jetstream_domain == "tf"


@pytest.mark.parametrize(
    "extra",
    ['tls_ca = "ca.pem"\n', "tls_ca = 3\n", 'jetstream_domain = "a.b"\n'],
)
def test_a_profile_with_a_relative_tls_path_or_a_bad_domain_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: str
) -> None:
    monkeypatch.setenv("TFSHARE_HOME", str(tmp_path))
    _profile(tmp_path, extra)
    with pytest.raises(InputError):
        profiles.load("p")


def test_tls_files_make_one_context_or_a_named_error(kit: CertKit, tmp_path: Path) -> None:
    assert common.TlsFiles().context() is None
    context = common.TlsFiles(kit.ca.cert).context()
    assert isinstance(context, ssl.SSLContext)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_3
    mutual = common.TlsFiles(kit.ca.cert, kit.client.cert, kit.client.key).context()
    assert getattr(mutual, "tfshare_client_cert", False)
    with pytest.raises(UsageError, match="without the CA"):
        common.TlsFiles(None, kit.client.cert, kit.client.key).context()
    with pytest.raises(InputError, match="does not exist"):
        common.TlsFiles(tmp_path / "missing.pem").context()


def test_broker_config_with_a_leaf_port_needs_a_domain(
    taskforce: TaskForce, tmp_path: Path
) -> None:
    roster, anchor = tmp_path / "r", tmp_path / "a"
    roster.write_bytes(taskforce.roster_bytes)
    result = CliRunner().invoke(
        broker_cmd.broker_app,
        ["config", "--roster", str(roster), "--anchor", str(anchor), "--dir", str(tmp_path),
         "--leaf-port", "7422"],
    )  # fmt: skip
    assert isinstance(result.exception, UsageError), result.output
    assert "--jetstream-domain" in result.exception.hint


def test_the_leaf_config_is_written_with_the_seed_apart_and_passes_nats_server_t(
    taskforce: TaskForce, kit: CertKit, tmp_path: Path
) -> None:
    police = taskforce.ids["police"]
    path = write_leaf_config(
        police,
        tmp_path / "leaf",
        taskforce="tf",
        hub_urls=["tls://hub.example:7422"],
        tls_ca=kit.ca.cert,
        tls_cert=kit.client.cert,
        tls_key=kit.client.key,
    )
    passes_t(path)
    text = path.read_text()
    seed = police.nats_seed_encoded().decode()
    assert seed not in text and police.nats_user in text
    seed_file = tmp_path / "leaf" / "leaf-nkey.conf"
    assert seed in seed_file.read_text()
    assert stat.S_IMODE(os.stat(seed_file).st_mode) == 0o600


def test_a_leaf_off_this_machine_without_tls_is_refused(
    taskforce: TaskForce, tmp_path: Path
) -> None:
    with pytest.raises(UsageError, match="without TLS"):
        write_leaf_config(
            taskforce.ids["police"], tmp_path, taskforce="tf", hub_urls=["nats-leaf://hub:7422"]
        )


def tfshare_leaf() -> typer.Typer:
    """``tfshare leaf`` as cli/app.py registers a group (a root holding it)."""
    holder = typer.Typer()
    holder.add_typer(leaf_cmd.app, name="leaf")
    return holder


def test_the_leaf_command_is_a_light_typer_app() -> None:
    result = CliRunner().invoke(tfshare_leaf(), ["leaf", "config", "--help"])
    assert result.exit_code == 0 and "--hub" in result.output


@pytest.fixture(scope="module")
def police_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A real key file of agency police (tfshare keys init, test KDF) and its passphrase."""
    directory = tmp_path_factory.mktemp("keys")
    secret = directory / "police.pass"
    secret.write_text("police passphrase for tests\n")
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(directory),
           "TFSHARE_HOME": str(directory), "TFSHARE_KDF": "insecure-test",
           "TFSHARE_TEST": "1"}  # fmt: skip
    result = subprocess.run(
        [str(Path(sys.executable).parent / "tfshare"), "keys", "init", "police", "--dir",
         str(directory), "--passphrase-file", str(secret)],
        capture_output=True, text=True, env=env, check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return directory / "police.key", secret


def test_leaf_config_command_writes_the_agencys_leaf(
    police_key: tuple[Path, Path], kit: CertKit, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TFSHARE_TEST", "1")  # the test KDF, on purpose
    key, secret = police_key
    result = CliRunner().invoke(
        tfshare_leaf(),
        ["leaf", "config", "--agency", "police", "--taskforce", "tf", "--hub", "tls://hub.example:7422",
         "--key", str(key), "--passphrase-file", str(secret), "--dir", str(tmp_path / "leaf"),
         "--tls-ca", str(kit.ca.cert)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    config = tmp_path / "leaf" / "leaf.conf"
    assert result.stdout.strip() == str(config)
    passes_t(config)
    assert '"tls://hub.example:7422"' in config.read_text()


def test_leaf_config_refuses_another_agencys_key(
    police_key: tuple[Path, Path], kit: CertKit, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TFSHARE_TEST", "1")  # the test KDF, on purpose
    key, secret = police_key
    result = CliRunner().invoke(
        tfshare_leaf(),
        ["leaf", "config", "--agency", "ngo", "--taskforce", "tf", "--hub", "tls://hub.example:7422",
         "--key", str(key), "--passphrase-file", str(secret), "--dir", str(tmp_path / "leaf"),
         "--tls-ca", str(kit.ca.cert)],
    )  # fmt: skip
    assert isinstance(result.exception, UsageError)
    assert "belongs to 'police'" in result.exception.message
    assert not (tmp_path / "leaf").exists()
