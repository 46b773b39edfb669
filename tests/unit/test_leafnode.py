"""Agency leaf nodes: the rendered leaf and hub configurations pass ``nats-server -t`` (with
the roster's users, real certificates and the seed in its include file), the operators'
templates in broker_config/leafnode/ do too, and bad input - a plain link off this machine,
a bad hub URL, a seed that is no seed - is a clear error that never repeats the seed."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import nkeys  # type: ignore[import-untyped,unused-ignore]
import pytest
from certkit import CertKit, make_certkit
from tfkit import TaskForce, build_taskforce, identity

from tfshare.broker import check_config, find_nats_server
from tfshare.errors import BrokerError, InputError, UsageError
from tfshare.leafnode import (
    SEED_INCLUDE,
    LeafTLS,
    hub_leafnodes_block,
    parse_hub_url,
    render_leaf_config,
    render_seed_include,
)
from tfshare.workflows.live import write_broker_config

TEMPLATES = Path(__file__).resolve().parents[2] / "broker_config" / "leafnode"
POLICE = identity("police")


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> CertKit:
    return make_certkit(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def tf() -> TaskForce:
    return build_taskforce()


def write_leaf(directory: Path, config: str, seed: bytes = POLICE.nats_seed_encoded()) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / SEED_INCLUDE).write_text(render_seed_include(seed))
    os.chmod(directory / SEED_INCLUDE, 0o600)
    path = directory / "leaf.conf"
    path.write_text(config)
    return path


def test_a_loopback_leaf_without_tls_passes_nats_server_t(tmp_path: Path) -> None:
    config = render_leaf_config(
        agency="police",
        taskforce="nl-north",
        hub_urls=["nats-leaf://127.0.0.1:7422"],
        local_nkey=POLICE.nats_user,
    )
    assert "listen: 127.0.0.1:4222" in config
    assert "jetstream" not in config  # the streams live on the hub only
    check_config(write_leaf(tmp_path, config))


def test_the_seed_is_in_its_include_file_not_in_the_configuration(tmp_path: Path) -> None:
    seed = POLICE.nats_seed_encoded().decode()
    config = render_leaf_config(
        agency="police", taskforce="nl-north", hub_urls=["nats-leaf://127.0.0.1:7422"]
    )
    assert seed not in config
    assert f'include "./{SEED_INCLUDE}"' in config
    assert seed in render_seed_include(POLICE.nats_seed_encoded())


def test_a_tls_leaf_to_a_cluster_passes_nats_server_t(kit: CertKit, tmp_path: Path) -> None:
    config = render_leaf_config(
        agency="police",
        taskforce="nl-north",
        hub_urls=["tls://hub1.example.org:7422", "nats-leaf://hub2.example.org:7422"],
        tls=LeafTLS(ca=kit.ca.cert, cert=kit.client.cert, key=kit.client.key),
        http_port=8222,
    )
    # Every hub URL is dialled with TLS once a TLS block is given.
    assert '"tls://hub1.example.org:7422", "tls://hub2.example.org:7422"' in config
    assert f'ca_file: "{kit.ca.cert}"' in config
    check_config(write_leaf(tmp_path, config))


def test_a_leaf_with_its_own_jetstream_domain_passes_nats_server_t(tmp_path: Path) -> None:
    config = render_leaf_config(
        agency="police",
        taskforce="nl-north",
        hub_urls=["nats-leaf://127.0.0.1:7422"],
        jetstream_domain="police",
        store_dir=tmp_path / "js",
    )
    assert "domain: police" in config
    check_config(write_leaf(tmp_path, config))


def test_the_hub_block_appended_to_the_rosters_configuration_passes_nats_server_t(
    tf: TaskForce, kit: CertKit, tmp_path: Path
) -> None:
    hub = write_broker_config(tf.trusted(), tmp_path / "hub", port=4999)
    block = hub_leafnodes_block(
        port=7999,
        tls_cert=kit.server.cert,
        tls_key=kit.server.key,
        tls_ca=kit.ca.cert,
        verify_leaves=True,
    )
    assert "authorization" not in block  # leaf links sign in as the agencies' own users
    hub.write_text(hub.read_text() + block)
    check_config(hub)


def test_a_hub_block_on_loopback_needs_no_tls(tmp_path: Path) -> None:
    block = hub_leafnodes_block(host="127.0.0.1", port=7999)
    assert "tls" not in block
    path = tmp_path / "hub.conf"
    path.write_text("listen: 127.0.0.1:4999\n" + block)
    check_config(path)


def test_a_plain_hub_leaf_port_off_loopback_is_refused() -> None:
    with pytest.raises(UsageError, match="without TLS"):
        hub_leafnodes_block(port=7422)
    assert "tls" not in hub_leafnodes_block(port=7422, allow_plain=True)


def test_a_plain_link_to_another_machine_is_refused_unless_allowed() -> None:
    args = {"agency": "police", "taskforce": "nl-north"}
    with pytest.raises(UsageError, match="without TLS") as caught:
        render_leaf_config(**args, hub_urls=["nats-leaf://hub.example.org:7422"])  # type: ignore[arg-type]
    assert "--tls-ca" in caught.value.hint
    allowed = render_leaf_config(
        **args,  # type: ignore[arg-type]
        hub_urls=["nats-leaf://hub.example.org:7422"],
        allow_plain=True,
    )
    assert "nats-leaf://hub.example.org:7422" in allowed


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://hub:7422", "not a leaf node URL"),
        ("hub:7422", "not a leaf node URL"),
        ("nats-leaf://hub:99999", "port"),
        ("nats-leaf://user:pw@hub:7422", "user or password"),
    ],
)
def test_bad_hub_urls_are_named(url: str, why: str) -> None:
    with pytest.raises(UsageError, match=why) as caught:
        render_leaf_config(agency="police", taskforce="nl-north", hub_urls=[url], allow_plain=True)
    assert "pw" not in str(caught.value)


def test_hub_url_forms() -> None:
    assert parse_hub_url("nats://127.0.0.1:7422") == "nats-leaf://127.0.0.1:7422"
    assert parse_hub_url("TLS://hub.example.org:7422/") == "tls://hub.example.org:7422"


def test_no_hub_a_repeated_hub_and_a_local_listener_off_loopback_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="hub's address"):
        render_leaf_config(agency="police", taskforce="nl-north", hub_urls=[])
    with pytest.raises(UsageError, match="twice"):
        render_leaf_config(
            agency="police",
            taskforce="nl-north",
            hub_urls=["nats-leaf://127.0.0.1:7422", "nats://127.0.0.1:7422"],
        )
    with pytest.raises(UsageError, match="off this machine"):
        render_leaf_config(
            agency="police",
            taskforce="nl-north",
            hub_urls=["nats-leaf://127.0.0.1:7422"],
            local_host="0.0.0.0",
        )
    with pytest.raises(UsageError, match="domain"):
        render_leaf_config(
            agency="police",
            taskforce="nl-north",
            hub_urls=["nats-leaf://127.0.0.1:7422"],
            jetstream_domain="police",
        )


def test_a_seed_that_is_no_user_seed_is_refused_without_repeating_it() -> None:
    secret = b"SAAOPERATORSEEDTHATMUSTNOTAPPEAR"
    with pytest.raises(InputError) as caught:
        render_seed_include(secret)
    assert secret.decode() not in f"{caught.value} {caught.value.hint} {caught.value!r}"


def test_a_local_nkey_that_is_no_user_key_is_refused() -> None:
    with pytest.raises(InputError, match="not a user nkey"):
        render_leaf_config(
            agency="police",
            taskforce="nl-north",
            hub_urls=["nats-leaf://127.0.0.1:7422"],
            local_nkey="not-a-key",
        )


def test_a_wrong_seed_in_the_include_is_named_by_nats_server_t(tmp_path: Path) -> None:
    """An operator who pastes a broken seed by hand hears it from ``nats-server -t``."""
    config = render_leaf_config(
        agency="police", taskforce="nl-north", hub_urls=["nats-leaf://127.0.0.1:7422"]
    )
    path = write_leaf(tmp_path, config)
    (tmp_path / SEED_INCLUDE).write_text('nkey: "SUNOTAVALIDSEED"\n')
    with pytest.raises(BrokerError) as caught:
        check_config(path)
    assert "not a valid seed" in caught.value.hint


# --- the operators' templates -------------------------------------------------------------


def _template_env(kit: CertKit, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "TFSHARE_LEAF_PORT": "4998",
        "TFSHARE_HUB_LEAF_URL": "tls://hub.example.org:7422",
        "TFSHARE_AGENCY_NKEY": nkeys.from_seed(
            nkeys.encode_seed(b"\x07" * 32, nkeys.PREFIX_BYTE_USER)
        ).public_key.decode(),
        "TFSHARE_HUB_LEAF_PORT": "7998",
        "TFSHARE_TLS_CA": str(kit.ca.cert),
        "TFSHARE_TLS_CERT": str(kit.server.cert),
        "TFSHARE_TLS_KEY": str(kit.server.key),
        "TFSHARE_HOST": "127.0.0.1",
        "TFSHARE_PORT": "4997",
        "TFSHARE_MAX_PAYLOAD": "1MB",
        "TFSHARE_STORE_DIR": str(tmp_path / "js"),
        "TFSHARE_MAX_FILE_STORE": "1GB",
    }


@pytest.mark.parametrize("name", ["agency-leaf.conf", "hub-leafnodes.conf"])
def test_each_leafnode_template_passes_nats_server_t(
    name: str, kit: CertKit, tmp_path: Path
) -> None:
    shutil.copy(TEMPLATES / name, tmp_path / name)
    (tmp_path / SEED_INCLUDE).write_text(render_seed_include(POLICE.nats_seed_encoded()))
    (tmp_path / "tfshare-users.conf").write_text(
        f"authorization {{\n  users = [ {{ nkey: {POLICE.nats_user} }} ]\n}}\n"
    )
    result = subprocess.run(
        [str(find_nats_server()), "-t", "-c", str(tmp_path / name)],
        env=_template_env(kit, tmp_path),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr + result.stdout
