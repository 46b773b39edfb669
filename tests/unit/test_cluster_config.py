"""The configuration of an N-node JetStream cluster (issue 14, item 1): one file per node that
``nats-server -t`` accepts, each with its own server name, a route to every other node, its
own JetStream store and the same users as a single server; checked together, so a node
missing, two nodes of one name or nodes of different clusters are a clear ``BrokerError``
(exit 1) rather than a cluster that never forms."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from tfkit import TaskForce

from tfshare.broker import (
    ClusterLayout,
    ClusterNode,
    check_cluster_configs,
    loopback_cluster,
    render_config,
)
from tfshare.errors import BrokerError, ExitCode, InputError, UsageError
from tfshare.transport import default_replicas
from tfshare.workflows.live import (
    USERS_INCLUDE,
    node_configs,
    write_broker_config,
    write_cluster_config,
)

NATS_SERVER = Path(sys.executable).parent / "nats-server"
TASKFORCE = "nl-north"


def layout(size: int = 3) -> ClusterLayout:
    return loopback_cluster(TASKFORCE, size, port=14300, cluster_port=16300)


def authorization(text: str) -> str:
    return text[text.index("authorization {") :]


@pytest.fixture
def three(taskforce: TaskForce, tmp_path: Path) -> list[Path]:
    return write_cluster_config(taskforce.trusted(), tmp_path / "cluster", layout())


def test_each_node_configuration_of_a_three_node_cluster_passes_nats_server_t(
    three: list[Path],
) -> None:
    assert [p.name for p in three] == ["nats-1.conf", "nats-2.conf", "nats-3.conf"]
    for path in three:
        result = subprocess.run(
            [str(NATS_SERVER), "-t", "-c", str(path)], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr


def test_each_node_has_its_own_name_store_and_addresses_and_routes_to_the_others(
    three: list[Path],
) -> None:
    texts = [p.read_text() for p in three]
    for index, text in enumerate(texts, start=1):
        assert f"server_name: tfshare-{TASKFORCE}-{index}\n" in text
        assert f"listen: 127.0.0.1:{14300 + index - 1}\n" in text
        assert f"    name: tfshare-{TASKFORCE}\n" in text
        assert f"    listen: 127.0.0.1:{16300 + index - 1}\n" in text
        routes = re.findall(r"nats-route://127\.0\.0\.1:(\d+)", text)
        assert sorted(int(r) for r in routes) == sorted(
            16300 + other for other in range(3) if other != index - 1
        )
        assert f'store_dir: "{three[0].parent / f"jetstream-{index}"}"' in text


def test_every_node_has_the_users_and_permissions_of_a_single_server(
    taskforce: TaskForce, three: list[Path], tmp_path: Path
) -> None:
    single = write_broker_config(taskforce.trusted(), tmp_path / "cluster", port=14299)
    expected = authorization(single.read_text())
    for path in three:
        assert authorization(path.read_text()) == expected
    assert authorization((three[0].parent / USERS_INCLUDE).read_text()) == expected


def test_the_nodes_are_found_in_node_order(taskforce: TaskForce, tmp_path: Path) -> None:
    paths = write_cluster_config(taskforce.trusted(), tmp_path, layout(11))
    assert node_configs(tmp_path) == paths


def test_a_smaller_cluster_written_over_a_larger_one_leaves_no_stale_node(
    taskforce: TaskForce, tmp_path: Path
) -> None:
    write_cluster_config(taskforce.trusted(), tmp_path, layout(5))
    paths = write_cluster_config(taskforce.trusted(), tmp_path, layout(3))
    assert node_configs(tmp_path) == paths
    check_cluster_configs(node_configs(tmp_path))


def test_a_node_missing_is_named_with_the_route_that_leads_nowhere(three: list[Path]) -> None:
    with pytest.raises(InputError) as caught:
        check_cluster_configs(three[:2])
    assert caught.value.exit_code == ExitCode.ERROR
    assert "127.0.0.1:16302" in caught.value.message
    assert "missing" in caught.value.message
    assert "--cluster" in caught.value.hint


def test_nodes_of_different_cluster_names_are_refused(three: list[Path]) -> None:
    text = three[1].read_text().replace(f"name: tfshare-{TASKFORCE}\n", "name: other\n")
    three[1].write_text(text)
    with pytest.raises(InputError, match="different clusters"):
        check_cluster_configs(three)


def test_two_nodes_of_one_server_name_are_refused(three: list[Path]) -> None:
    text = three[2].read_text().replace(f"tfshare-{TASKFORCE}-3", f"tfshare-{TASKFORCE}-1")
    three[2].write_text(text)
    with pytest.raises(InputError, match="two nodes have the server name"):
        check_cluster_configs(three)


def test_a_single_server_configuration_is_not_taken_for_a_node(
    taskforce: TaskForce, three: list[Path], tmp_path: Path
) -> None:
    single = write_broker_config(taskforce.trusted(), tmp_path / "single", port=14298)
    with pytest.raises(InputError, match="not the configuration of a cluster node"):
        check_cluster_configs([three[0], three[1], single])


def test_nats_servers_own_refusal_is_passed_on(three: list[Path]) -> None:
    three[0].write_text(three[0].read_text().replace("cluster {", "cluster { bogus_key: [", 1))
    with pytest.raises(BrokerError) as caught:
        check_cluster_configs(three)
    assert "nats-server refuses the configuration" in caught.value.message
    assert "nats-1.conf" in caught.value.message
    assert caught.value.hint  # nats-server's own last line


def test_a_cluster_of_one_node_is_a_usage_error(taskforce: TaskForce, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="2 nodes or more"):
        write_cluster_config(taskforce.trusted(), tmp_path, layout(1))


def test_nodes_on_several_hosts_listen_each_on_its_own_host(taskforce: TaskForce) -> None:
    hosts = ClusterLayout(
        TASKFORCE, tuple(ClusterNode(h, 4222, 6222) for h in ("a.example", "b.example", "fd00::3"))
    )
    text = render_config(
        taskforce.trusted(), admin_nkey="UADMIN", store_dir=Path("/x"), cluster=hosts, node=3
    )
    assert 'listen: "[fd00::3]:4222"\n' in text
    assert 'listen: "[fd00::3]:6222"\n' in text
    assert "nats-route://a.example:6222" in text and "nats-route://b.example:6222" in text
    assert hosts.urls == ("nats://a.example:4222", "nats://b.example:4222", "nats://[fd00::3]:4222")


@pytest.mark.parametrize(("nodes", "replicas"), [(1, 1), (2, 1), (3, 3), (5, 3)])
def test_three_replicas_from_three_nodes(nodes: int, replicas: int) -> None:
    assert default_replicas(nodes) == replicas
