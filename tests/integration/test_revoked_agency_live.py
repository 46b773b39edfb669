"""A revoked agency is told so: its agent stops with exit 6 naming the revocation and the
roster seq, and its publish says "revoked", not "ask for write access".

On the CLI-built task force of test_live_cli (labour reads and writes "alerts", police
writes it). Each test uses its own state directories and roster copies, so the rollback
state of one never meets the rosters of another.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import time
from pathlib import Path

import pytest
from livekit import free_port, make_agent
from test_live_cli import ALERT, CliTaskForce, cli_tf, start_broker, wait_for
from tfkit import TaskForce

from tfshare import roster as R
from tfshare import transport
from tfshare.agent import AgencyRevoked
from tfshare.broker import BrokerProcess
from tfshare.encoding import encode
from tfshare.roster import decode_signed_roster
from tfshare.store import StateStore

__all__ = ["cli_tf"]  # the module's task force fixture, shared with test_live_cli

REVOKED = re.compile(
    r"^tfshare: error: this agency \('(\w+)'\) was revoked \((compromised|retired)\) in roster "
    r"seq (\d+)$",
    re.MULTILINE,
)


def revoked_roster(tf: CliTaskForce, agency: str, reason: str, name: str) -> tuple[Path, int]:
    """A copy of the module's roster revoking ``agency``, signed; and its seq."""
    path = tf.root / name
    shutil.copyfile(tf.root / "tf.roster", path)
    result = tf.run("roster", "revoke", path, agency, "--reason", reason)
    assert result.returncode == 0, result.stderr
    result = tf.run("roster", "sign", path, *tf.creds("coord"))
    assert result.returncode == 0, result.stderr
    return path, decode_signed_roster(path.read_bytes())[1].seq


@pytest.fixture(scope="module")
def labour_compromised(cli_tf: CliTaskForce) -> tuple[Path, int]:
    """The one roster of the module revoking labour as compromised: brokers and agents keep
    the highest roster they accepted, so two different ones of the same seq would clash."""
    return revoked_roster(cli_tf, "labour", "compromised", "labour-compromised.roster")


def trust(tf: CliTaskForce, roster: Path) -> list[str]:
    return ["--roster", str(roster), "--anchor", str(tf.root / "tf.anchor")]


def assert_told_revoked(stderr: str, agency: str, reason: str, seq: int) -> None:
    """The error line names the revocation; the hint never points at getting access back."""
    match = REVOKED.search(stderr)
    assert match is not None, stderr
    assert match.groups() == (agency, reason, str(seq))
    hint = next(line for line in stderr.splitlines() if line.startswith("tfshare: hint: "))
    for advice in ("grant", "broker config", "regenerate", "reload"):
        assert advice not in hint, hint


def test_agent_of_a_revoked_agency_exits_6_before_connecting(
    cli_tf: CliTaskForce, labour_compromised: tuple[Path, int], tmp_path: Path
) -> None:
    """``agent run`` with a roster that revoked its agency as compromised exits 6 at once,
    saying so with the roster seq, and never says it is consuming."""
    roster, seq = labour_compromised
    result = cli_tf.run(
        "agent", "run", *cli_tf.creds("labour"), *trust(cli_tf, roster),
        "--state", tmp_path / "labour", "--server", "nats://127.0.0.1:9",
    )  # fmt: skip
    assert result.returncode == 6, result.stderr
    assert_told_revoked(result.stderr, "labour", "compromised", seq)
    assert "consuming from" not in result.stderr


def test_publish_by_a_revoked_agency_says_revoked_and_keeps_nothing(
    cli_tf: CliTaskForce, tmp_path: Path
) -> None:
    """``publish`` by an agency its roster revoked (retired) exits 6 "was revoked", not "ask a
    coordinator to grant write access", before anything is sealed or queued."""
    roster, seq = revoked_roster(cli_tf, "police", "retired", "publish.roster")
    state = tmp_path / "police"
    result = cli_tf.run(
        "publish", "alert", "--channel", "alerts", "--file", ALERT, *cli_tf.creds("police"),
        *trust(cli_tf, roster), "--state", state, "--server", "nats://127.0.0.1:9",
    )  # fmt: skip
    assert result.returncode == 6, result.stderr
    assert_told_revoked(result.stderr, "police", "retired", seq)
    assert "write access" not in result.stderr
    store = StateStore(state / "state.db")
    try:
        assert (store.outbox(), store.sent()) == ([], [])
    finally:
        store.close()


@pytest.mark.slow
def test_running_agent_stops_with_exit_6_when_its_revocation_is_published(
    cli_tf: CliTaskForce, labour_compromised: tuple[Path, int], tmp_path: Path
) -> None:
    """labour's agent runs on ``broker up``; the coordinators publish a roster revoking labour
    as compromised. Whichever comes first -- the agent reading the bucket, or the broker
    dropping labour's NATS user -- the agent ends with exit 6 naming the revocation: from
    the bucket at once, or, once refused (its log then says a revoked agency is not to be
    let in again), as soon as the roster at --roster is the new one."""
    broker = start_broker(cli_tf, "broker-revoke")
    own_roster = tmp_path / "labour.roster"
    shutil.copyfile(cli_tf.root / "tf.roster", own_roster)
    revoked, seq = labour_compromised
    agent = cli_tf.spawn(
        "agent-labour-revoked", "agent", "run", *cli_tf.creds("labour"),
        *trust(cli_tf, own_roster), "--state", tmp_path / "labour", "--server", broker.url,
    )  # fmt: skip
    try:
        agent.wait_stderr("consuming from")
        published = cli_tf.run(
            "roster", "publish", revoked, *cli_tf.creds("coord"), "--server", broker.url,
            "--anchor", cli_tf.root / "tf.anchor",
        )  # fmt: skip
        assert published.returncode == 0, published.stderr
        assert wait_for(
            lambda: agent.process.poll() is not None or "broker_auth_failed" in agent.stderr(),
            timeout=20,
        ), agent.stderr()
        if agent.process.poll() is None:
            # Refused before it read the bucket: it says what that may mean, and stops once
            # the roster it is given says so.
            assert "never reconfigure the broker to let a revoked agency in" in agent.stderr()
            shutil.copyfile(revoked, own_roster)
        assert wait_for(lambda: agent.process.poll() is not None, timeout=45), agent.stderr()
        assert agent.process.returncode == 6, agent.stderr()
        assert_told_revoked(agent.stderr(), "labour", "compromised", seq)
    finally:
        agent.cleanup()
        broker.process.cleanup()


@pytest.mark.slow
def test_agent_refused_by_the_broker_never_advises_readmission_and_stops_on_the_roster(
    cli_tf: CliTaskForce, labour_compromised: tuple[Path, int], tmp_path: Path
) -> None:
    """The broker already runs the roster revoking labour (no NATS user for it); labour's
    agent, still holding the old roster, is refused: its ``broker_auth_failed`` log says a
    revoked agency is never to be let in again (and does not say to re-grant it), and it
    keeps trying; once the new roster is at its --roster, it stops with exit 6."""
    revoked, seq = labour_compromised
    port = free_port()
    broker = cli_tf.spawn(
        "broker-refused", "broker", "up", *trust(cli_tf, revoked), "--dir",
        cli_tf.root / "broker-refused", "--port", str(port),
    )  # fmt: skip
    own_roster = tmp_path / "labour.roster"
    shutil.copyfile(cli_tf.root / "tf.roster", own_roster)
    agent = None
    try:
        broker.wait_stderr("listening on")
        agent = cli_tf.spawn(
            "agent-labour-refused", "agent", "run", *cli_tf.creds("labour"),
            *trust(cli_tf, own_roster), "--state", tmp_path / "labour",
            "--server", f"nats://127.0.0.1:{port}",
        )  # fmt: skip
        running = agent
        assert wait_for(lambda: running.stderr().count("broker_auth_failed") >= 2, timeout=20)
        assert running.process.poll() is None
        refused = [line for line in running.stderr().splitlines() if "broker_auth_failed" in line]
        assert all("never reconfigure the broker to let a revoked agency in" in line
                   for line in refused)  # fmt: skip
        assert not any("grant" in line for line in refused)
        shutil.copyfile(revoked, own_roster)
        assert wait_for(lambda: running.process.poll() is not None, timeout=45), running.stderr()
        assert running.process.returncode == 6, running.stderr()
        assert_told_revoked(running.stderr(), "labour", "compromised", seq)
    finally:
        if agent is not None:
            agent.cleanup()
        broker.cleanup()


async def _put_roster(tf: TaskForce, url: str, data: bytes) -> None:
    conn = await transport.connect(
        url, nkey_seed=tf.ids["coord"].nats_seed_encoded(), agency="coord", name="test-coord",
        reconnect=False,
    )  # fmt: skip
    try:
        await transport.put_roster(conn, "nl-north", data)
    finally:
        await conn.close()


def test_agent_following_the_bucket_stops_on_its_own_revocation(
    live_tf: TaskForce, broker: BrokerProcess, tmp_path: Path
) -> None:
    """An agent whose NATS user the broker keeps (no supervisor here) reads the roster
    revoking its agency from the bucket and stops: ``AgencyRevoked`` (exit 6), roster seq
    named; before that it consumed normally."""
    now = time.time_ns() // 1_000_000
    labour = make_agent(live_tf, "labour", broker.url, tmp_path)
    labour.accept_roster = lambda data: R.verify_roster(
        data, anchor=live_tf.anchor, state=None, now_ms=now + 1000
    )[0]
    labour.reload_every_s = 0.05
    revoked = R.sign(
        R.revoke(live_tf.signed, "labour", reason="retired", now_ms=now), live_tf.ids["coord"]
    )
    seq = decode_signed_roster(encode(revoked))[1].seq

    async def main() -> None:
        stop = asyncio.Event()
        run = asyncio.create_task(labour.run(stop))
        await asyncio.sleep(0.5)
        assert not run.done()
        await _put_roster(live_tf, broker.url, encode(revoked))
        try:
            await asyncio.wait_for(run, timeout=10)
        finally:
            stop.set()

    with pytest.raises(AgencyRevoked) as raised:
        asyncio.run(main())
    assert raised.value.exit_code == 6
    assert str(raised.value) == f"this agency ('labour') was revoked (retired) in roster seq {seq}"
