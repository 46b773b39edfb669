"""``tfshare publish`` without an agent (the direct path) on an epoch-only channel (issue 15):
refused with exit 6 and a hint while no epoch key is held; once the state holds one (as the
agent keeps it), sealed in epoch mode and reported as for "all readers of CH (epoch N)"."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from agent_epochs_kit import epoch_taskforce, new_key
from livekit import free_port
from tfkit import EXAMPLES

from tfshare.encoding import encode
from tfshare.keyfile import KDF_PROFILES, seal_keyfile
from tfshare.store import StateStore
from tfshare.workflows import live

TFSHARE = Path(sys.executable).parent / "tfshare"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def tfshare(root: Path, *args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(root / "home"),
        "TFSHARE_HOME": str(root / "home"),
        "TFSHARE_TEST": "1",
        "LC_ALL": "C.UTF-8",
    }
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
