"""The CLI and epoch keys (issue 15): ``tfshare publish`` without an agent (the direct path) on
an epoch-only channel is refused with exit 6 and a hint while no epoch key is held; once the
state holds one (as the agent keeps it), it is sealed in epoch mode and reported as for "all
readers of CH (epoch N)". ``agent status`` lists the epochs the running agent holds."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from agent_epochs_kit import epoch_taskforce, load_agency, new_key
from livekit import free_port
from tfkit import EXAMPLES

from tfshare.desk import api
from tfshare.desk.run import run_desk
from tfshare.desk.views import iso
from tfshare.encoding import encode
from tfshare.keyfile import KDF_PROFILES, seal_keyfile
from tfshare.store import StateStore
from tfshare.workflows import live

TFSHARE = Path(sys.executable).parent / "tfshare"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def environment(root: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(root / "home"),
        "TFSHARE_HOME": str(root / "home"),
        "TFSHARE_TEST": "1",
        "LC_ALL": "C.UTF-8",
    }


def tfshare(root: Path, *args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    env = environment(root)
    return subprocess.run(
        [str(TFSHARE), *(os.fspath(a) for a in args)],
        cwd=root,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.slow
def test_direct_publish_on_an_epoch_only_channel_exit_6_without_a_key_then_epoch_mode(
    tmp_path: Path,
) -> None:
    tf = epoch_taskforce(now_ms=now_ms())
    passphrase = b"police passphrase for the epoch cli test"
    (tmp_path / "police.key").write_bytes(
        seal_keyfile(
            tf.ids["police"], passphrase, limits=KDF_PROFILES["insecure-test"], rng=os.urandom
        )
    )
    (tmp_path / "police.pass").write_bytes(passphrase + b"\n")
    (tmp_path / "tf.roster").write_bytes(tf.roster_bytes)
    (tmp_path / "tf.anchor").write_bytes(encode(tf.anchor))
    state = tmp_path / "state"
    broker = live.start_broker(
        tf.trusted(), tmp_path / "broker", port=free_port(), roster_bytes=tf.roster_bytes
    )
    try:
        common: list[str | os.PathLike[str]] = [
            "--key", tmp_path / "police.key", "--passphrase-file", tmp_path / "police.pass",
            "--roster", tmp_path / "tf.roster", "--anchor", tmp_path / "tf.anchor",
            "--state", state, "--server", broker.url,
        ]  # fmt: skip
        publish: list[str | os.PathLike[str]] = [
            "publish",
            "alert",
            "--channel",
            "bulletin",
            "--file",
            EXAMPLES / "alert.json",
        ]

        refused = tfshare(tmp_path, *publish, *common)
        assert refused.returncode == 6, refused.stderr
        assert "tfshare: error: no epoch key for channel 'bulletin' yet" in refused.stderr
        assert "tfshare: hint:" in refused.stderr and "keys serve" in refused.stderr
        assert "Traceback" not in refused.stderr

        # The key as the agent keeps it: sealed in the state database under the state key.
        store = StateStore(state / "state.db")
        key = new_key("bulletin", 1, starts_ms=now_ms() - 1000)
        store.epoch_key_add(
            "nl-north", key, state_key=tf.ids["police"].state_key, received_ms=now_ms()
        )
        store.close()

        as_json = tfshare(tmp_path, *publish, *common, "--json")
        assert as_json.returncode == 0, as_json.stderr
        answer = json.loads(as_json.stdout)
        assert (answer["epoch"], answer["recipients"], answer["channel"]) == (1, [], "bulletin")
        assert answer["queued"] is False

        shown = tfshare(tmp_path, *publish, *common)
        assert shown.returncode == 0, shown.stderr
        assert "published alert to all readers of bulletin (epoch 1) (stream seq" in shown.stderr
    finally:
        broker.stop()


def test_agent_status_lists_per_channel_the_newest_epoch_its_start_and_the_older_ones_kept(
    tmp_path: Path,
) -> None:
    """Asked of the running agent (its desk, no passphrase): text and --json. The agent need
    not reach a broker for this."""
    tf = epoch_taskforce(now_ms=now_ms())
    now = now_ms()
    keys = [
        new_key("alerts", 1, starts_ms=now - 3_600_000),
        new_key("alerts", 2, starts_ms=now - 60_000),
        new_key("bulletin", 4, starts_ms=now - 1000),
    ]
    agency = load_agency(tf, "ngo", tmp_path)
    for key in keys:
        agency.store.epoch_key_add(
            "nl-north", key, state_key=tf.ids["ngo"].state_key, received_ms=now
        )
    agency.store.close()
    agency = load_agency(tf, "ngo", tmp_path)
    agent = live.make_agent(agency, url=f"nats://127.0.0.1:{free_port()}", clock=now_ms)
    state = tmp_path / "state"
    who = ["--key", str(tmp_path / "ngo.key"), "--roster", str(tmp_path / "tf.roster")]
    who += ["--anchor", str(tmp_path / "tf.anchor"), "--state", str(state)]
    outputs: list[tuple[int, str, str]] = []

    async def main() -> None:
        stop = asyncio.Event()
        desk = asyncio.create_task(
            run_desk(agency, agent, state_dir=state, clock=now_ms, stop=stop)
        )
        while not api.socket_path(state).exists():
            await asyncio.sleep(0.02)
        for extra in ([], ["--json"]):
            process = await asyncio.create_subprocess_exec(
                str(TFSHARE), "agent", "status", *who, *extra,
                cwd=tmp_path, env=environment(tmp_path), stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )  # fmt: skip
            out, err = await process.communicate()
            outputs.append((process.returncode or 0, out.decode(), err.decode()))
        stop.set()
        await asyncio.wait_for(desk, timeout=10)

    asyncio.run(main())
    agency.store.close()
    (code, text, err), (json_code, as_json, json_err) = outputs
    assert code == 0, err
    [line] = [x for x in text.splitlines() if x.startswith("epoch keys")]
    assert line.split(None, 2)[2].strip() == (
        f"alerts epoch 2 since {iso(keys[1].starts_ms)} (1 older kept); "
        f"bulletin epoch 4 since {iso(keys[2].starts_ms)}"
    )
    assert json_code == 0, json_err
    assert json.loads(as_json)["epoch_keys"] == [
        {"channel": "alerts", "epoch": 2, "starts": iso(keys[1].starts_ms), "older": 1},
        {"channel": "bulletin", "epoch": 4, "starts": iso(keys[2].starts_ms), "older": 0},
    ]
    for key in keys:  # never a key, in any form
        assert key.key.hex() not in text + as_json
