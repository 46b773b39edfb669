"""Adversarial review of issue 14 (clusters, server lists, TLS, leaf nodes, the JetStream
domain): the domain permissions are exactly the plain ones plus each JetStream API subject
in the domain (no member reaches another agency's subjects through them), a server list
never repeats a user or password, and no store path can write directives into a generated
nats-server configuration."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from certkit import make_certkit
from hypothesis import given
from hypothesis import strategies as st
from test_names_permissions import (
    base_roster,
    consumer,
    member_publish,
    member_subscribe,
    overlaps,
    own_publish_space,
    task_forces,
    with_auditor,
)
from tfkit import TaskForce

from tfshare import names
from tfshare import roster as R
from tfshare.broker import BrokerTLS, ClusterLayout, ClusterNode, check_config, render_config
from tfshare.errors import BrokerError, InputError, UsageError
from tfshare.leafnode import SEED_INCLUDE, parse_hub_url, render_leaf_config
from tfshare.tlsconf import check_plain_url, is_loopback_url, plain_off_loopback
from tfshare.urls import parse_server_url, usable_servers
from tfshare.workflows.live import ServerOptions, write_cluster_config

DOMAIN = "hub"


def in_hub(subjects: list[str]) -> list[str]:
    """Each $JS.API subject of ``subjects`` again in the hub's domain, in order."""
    return [s.replace("$JS.API.", f"$JS.{DOMAIN}.API.", 1) for s in subjects if "$JS.API." in s]


# -- the domain permissions, exactly ---------------------------------------------------------


def test_domain_permissions_of_a_member_are_spelled_out(taskforce: TaskForce) -> None:
    """police with a domain: its plain permissions, then each $JS.API subject once more in
    the domain - no $JS.ACK, $KV, channel or proof subject is doubled, nothing else added,
    the subscribe list and replies unchanged."""
    plain = [
        "tf.nl-north.ch.alerts.police",
        *member_publish("police"),
        *consumer("alerts", "agent_police_CH_alerts"),
        *consumer("tips", "agent_police_CH_tips"),
    ]
    got = names.permissions(taskforce.trusted(), "police", jetstream_domain=DOMAIN)
    assert got == names.Permissions(
        publish=(*plain, *in_hub(plain)),
        subscribe=member_subscribe("police"),
        allow_responses=None,
    )
    added = got.publish[len(plain) :]
    # 4 buckets (info, get), the roster object store (info, 2 gets), 2 consumers (next, info)
    assert len(added) == 4 * 2 + 3 + 2 * 2
    assert all(s.startswith(f"$JS.{DOMAIN}.API.") for s in added)


@pytest.mark.parametrize("agency", ["police", "ngo", "labour", "coord", "inspector"])
def test_domain_adds_only_the_js_api_subjects_of_each_role(
    taskforce: TaskForce, agency: str
) -> None:
    """For every role (member, coordinator, auditor): with a domain = without, plus the
    domain form of each $JS.API subject; subscribe and allow_responses identical."""
    trusted = with_auditor(taskforce).trusted()
    plain = names.permissions(trusted, agency)
    domain = names.permissions(trusted, agency, jetstream_domain=DOMAIN)
    assert plain is not None and domain is not None
    assert domain.publish == (*plain.publish, *in_hub(list(plain.publish)))
    assert domain.subscribe == plain.subscribe
    assert domain.allow_responses == plain.allow_responses


def test_no_domain_permission_for_an_inactive_member(taskforce: TaskForce) -> None:
    trusted = taskforce.trusted()
    assert names.permissions(trusted, "stranger", jetstream_domain=DOMAIN) is None


def own_space_in_domain(taskforce: str, agency: str, channels: list[str]) -> list[str]:
    space = own_publish_space(taskforce, agency, channels)
    return space + in_hub(space)


@given(task_forces(base_roster()), st.sampled_from(["hub", "API", "ACK", "tf-hub_1"]))
def test_no_domain_permission_reaches_another_agencys_own_subjects(
    trusted: R.TrustedRoster, domain: str
) -> None:
    """As test_names_permissions's property, with a domain (names colliding with the API's
    own tokens among them): no member's publish permission overlaps another agency's sender
    subjects, consumers (plain or in the domain), acks, proof subject, witness key or inbox;
    the subscribe lists are the plain ones."""
    tf = trusted.taskforce
    channels = names.task_force_channels(trusted)
    space = {
        other: [
            s.replace(f"$JS.{DOMAIN}.API.", f"$JS.{domain}.API.", 1)
            for s in own_space_in_domain(tf, other, channels)
        ]
        for other in trusted.members
    }
    for agency in trusted.members:
        allowed = names.permissions(trusted, agency, jetstream_domain=domain)
        if allowed is None:
            continue
        plain = names.permissions(trusted, agency)
        assert plain is not None and allowed.subscribe == plain.subscribe
        for other, theirs_all in space.items():
            if other == agency:
                continue
            for theirs in theirs_all:
                for mine in allowed.publish:
                    assert not overlaps(mine, theirs), (agency, mine, other, theirs)


@pytest.mark.parametrize(
    "domain", ["*", ">", "a.b", "a b", 'x"', "x\ninclude /etc/passwd", "", "x" * 33]
)
def test_render_config_refuses_a_domain_that_is_not_one_token(
    taskforce: TaskForce, tmp_path: Path, domain: str
) -> None:
    """A wildcard or a dotted domain would widen every $JS.<domain>.API permission; a quote
    or newline would write configuration."""
    with pytest.raises(UsageError):
        render_config(
            taskforce.trusted(), admin_nkey="UADMIN", store_dir=tmp_path, jetstream_domain=domain
        )


# -- generated configuration: no injection through the store path -----------------------------


@pytest.mark.parametrize(
    "store",
    [
        '/srv/tf"\n    store_dir: "/tmp/elsewhere',
        "/srv/tf\ninclude /etc/tfshare/other.conf",
        '/srv/tf" }\nauthorization { users = [ { user: x, password: y } ] }\njetstream {',
        "/srv/tf\\",
    ],
)
def test_render_config_refuses_a_store_path_that_breaks_out_of_its_string(
    taskforce: TaskForce, store: str
) -> None:
    """broker config --dir 'x"<newline>...' wrote its own directives into nats.conf (the
    store path was put between quotes unchecked): an open user, another include."""
    with pytest.raises(InputError, match="JetStream store path"):
        render_config(taskforce.trusted(), admin_nkey="UADMIN", store_dir=Path(store))


def test_render_config_keeps_an_ordinary_store_path(taskforce: TaskForce) -> None:
    text = render_config(
        taskforce.trusted(), admin_nkey="UADMIN", store_dir=Path("/srv/tf broker/js-1")
    )
    assert 'store_dir: "/srv/tf broker/js-1"\n' in text


# -- server lists: a user or password is never repeated ----------------------------------------

SECRET_URLS = [
    "nats://alice:s3cr,et@10.0.0.1:4222",
    "nats://10.0.0.2:4222,nats://alice:pa,ss@h:1",
    "tls://alice:pa,ss,word@h:1,tls://10.0.0.3:4222",
]


@pytest.mark.parametrize("text", SECRET_URLS)
def test_a_password_with_a_comma_is_not_repeated_in_the_error(text: str) -> None:
    """A comma in a password splits the URL over two entries: the first ('nats://alice:s3cr')
    has no '@' and was quoted in full - the user name and half the password."""
    with pytest.raises(UsageError) as caught:
        parse_server_url(text)
    shown = caught.value.message + (caught.value.hint or "")
    assert "alice" not in shown
    assert "s3cr" not in shown and ":pa" not in shown


def test_a_profile_list_with_a_password_names_no_part_of_it() -> None:
    """usable_servers keeps the good entries; what it says of the bad ones (logged, shown by
    agent status) holds no user or password."""
    found, skipped = usable_servers("nats://10.0.0.2:4222,nats://alice:pa,ss@h:1", source="p")
    assert found == "nats://10.0.0.2:4222"
    assert skipped and all("alice" not in s and ":pa" not in s for s in skipped)


def test_a_bad_entry_without_credentials_is_still_named() -> None:
    with pytest.raises(UsageError, match=re.escape("'http://10.0.0.9:4222'")):
        parse_server_url("nats://10.0.0.2:4222,http://10.0.0.9:4222")


# -- plain links: a list is judged entry by entry ---------------------------------------------


def test_a_plain_entry_after_a_tls_one_is_a_plain_link_off_this_machine() -> None:
    """plain_off_loopback looked at the list's first scheme and the whole text as one host:
    'tls://A,nats://B' passed check_plain_url with B in clear text."""
    mixed = "tls://10.0.0.5:4222,nats://10.0.0.6:4222"
    assert plain_off_loopback(mixed)
    with pytest.raises(UsageError, match="plain nats://"):
        check_plain_url(mixed, allow_plain=False)
    local = "nats://127.0.0.1:4222,nats://localhost:4223,nats://[::1]:4224"
    assert is_loopback_url(local) and not plain_off_loopback(local)
    assert check_plain_url(local, allow_plain=False) == local
    assert not is_loopback_url("nats://127.0.0.1:4222,nats://10.0.0.6:4222")


@pytest.mark.parametrize(
    "hub", ["nats-leaf://127.0.0.1:7422,nats://10.0.0.6:7422", "tls://a.example:7422,tls://b:7422"]
)
def test_a_hub_url_list_is_refused_with_the_repeat_hint(hub: str) -> None:
    """parse_hub_url took a comma list and the leaf configuration held it as one URL."""
    with pytest.raises(UsageError, match="repeating --hub"):
        parse_hub_url(hub)


# -- nats-server's own message passed on: never a seed -----------------------------------------


def test_a_mistyped_seed_is_not_repeated_from_nats_server_t(tmp_path: Path) -> None:
    """nats-server -t quotes a seed it cannot decode; check_config passed its last line on as
    the hint: a seed with one character off (almost all of the agency's secret) reached the
    terminal."""
    config = render_leaf_config(
        agency="police", taskforce="nl-north", hub_urls=["nats-leaf://127.0.0.1:7422"]
    )
    path = tmp_path / "leaf.conf"
    path.write_text(config)
    typo = "SUAMLK2ZNL35WSMW37E7UD4VZ7ELPEW7LCWDAKCEHYBBPTWIBSSEDX7QPX"
    (tmp_path / SEED_INCLUDE).write_text(f'nkey: "{typo}"\n')
    with pytest.raises(BrokerError) as caught:
        check_config(path)
    shown = caught.value.message + (caught.value.hint or "")
    assert "not a valid seed" in shown
    assert typo[:12] not in shown


# -- the operators' leaf template --------------------------------------------------------------

LEAF_TEMPLATE = Path(__file__).parents[2] / "broker_config" / "leafnode" / "agency-leaf.conf"


def test_the_leaf_template_lets_only_the_agency_use_its_local_server() -> None:
    """As written, any process of any user on the agency's machine may connect to the leaf
    without credentials and act as the agency on the hub: fetch and acknowledge - take away
    - the messages waiting in the agency's consumers before its agent sees them, write its
    witness key. render_leaf_config always writes the authorization; the template must too."""
    live = [line.split("#", 1)[0] for line in LEAF_TEMPLATE.read_text().splitlines()]
    assert any(line.strip().startswith("authorization") for line in live)


def test_the_hub_template_for_leaf_nodes_fsyncs_before_every_acknowledgement() -> None:
    """broker_config/leafnode/hub-leafnodes.conf - the task force's node that agencies' leaf
    nodes join - kept nats-server's default sync (every 2 minutes), unlike the other
    templates: an acknowledged message, already gone from its sender's outbox, could be lost
    with the hub's power."""
    template = LEAF_TEMPLATE.with_name("hub-leafnodes.conf").read_text()
    jetstream = template[template.index("jetstream {") :]
    jetstream = jetstream[: jetstream.index("}")]
    assert "sync_interval: always" in jetstream


# -- a cluster across machines: TLS, or nothing ------------------------------------------------


def _hosts_layout(taskforce: str) -> ClusterLayout:
    hosts = ("10.0.0.1", "nats2.example.org", "nats3.example.org")
    return ClusterLayout(taskforce, tuple(ClusterNode(h, 4222, 6222) for h in hosts))


def test_a_cluster_on_other_machines_without_tls_is_refused(
    taskforce: TaskForce, tmp_path: Path
) -> None:
    """broker config --cluster 3 --hosts A,B,C (DEPLOY.md's own example) wrote plain client
    listeners and plain routes with no authentication: any machine reaching port 6222 joined
    the cluster, with every message of every agency."""
    trusted = taskforce.trusted()
    with pytest.raises(UsageError, match="without TLS"):
        write_cluster_config(trusted, tmp_path, _hosts_layout(trusted.taskforce))
    assert not list(tmp_path.glob("nats-*.conf"))


def test_a_cluster_on_other_machines_with_tls_is_written(
    taskforce: TaskForce, tmp_path: Path
) -> None:
    kit = make_certkit(tmp_path / "certs")
    trusted = taskforce.trusted()
    tls = BrokerTLS(kit.server.cert, kit.server.key, kit.ca.cert)
    paths = write_cluster_config(
        trusted, tmp_path / "out", _hosts_layout(trusted.taskforce), options=ServerOptions(tls=tls)
    )
    assert len(paths) == 3
    assert all("verify: true" in p.read_text() for p in paths)


def test_a_cluster_with_an_ipv6_node_passes_nats_server_t(
    taskforce: TaskForce, tmp_path: Path
) -> None:
    kit = make_certkit(tmp_path / "certs")
    trusted = taskforce.trusted()
    nodes = tuple(ClusterNode(h, 4222, 6222) for h in ("10.0.0.1", "10.0.0.2", "fd00::3"))
    tls = BrokerTLS(kit.server.cert, kit.server.key, kit.ca.cert)
    write_cluster_config(
        trusted,
        tmp_path / "out",
        ClusterLayout(trusted.taskforce, nodes),
        options=ServerOptions(tls=tls),
    )
