"""The agency held by a long-running agent keeps its unlocked key, not its passphrase."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tfkit import build_taskforce

from tfshare.encoding import encode
from tfshare.keyfile import KDF_PROFILES, seal_keyfile
from tfshare.workflows.exchange import Credentials
from tfshare.workflows.live import Agency

os.environ["TFSHARE_TEST"] = "1"


def test_a_loaded_agency_keeps_the_unlocked_key_and_drops_the_passphrase(tmp_path: Path) -> None:
    tf = build_taskforce(now_ms=time.time_ns() // 1_000_000)
    passphrase = b"a passphrase of some length"
    key = tmp_path / "police.key"
    key.write_bytes(
        seal_keyfile(
            tf.ids["police"], passphrase, limits=KDF_PROFILES["insecure-test"], rng=os.urandom
        )
    )
    (tmp_path / "tf.roster").write_bytes(tf.roster_bytes)
    (tmp_path / "tf.anchor").write_bytes(encode(tf.anchor))
    agency = Agency.load(
        Credentials(key, passphrase),
        roster_path=tmp_path / "tf.roster",
        anchor_path=tmp_path / "tf.anchor",
        state_dir=tmp_path / "state",
        registry_dir=None,
    )
    assert agency.creds.passphrase == b""
    assert passphrase not in repr(vars(agency)).encode()
    assert agency.identity().agency_id == "police"
