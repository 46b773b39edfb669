"""``tfshare roster witnesses``: coordinators set the roster's witness threshold, ``roster
show`` and ``roster diff`` say so, and an impossible threshold is refused."""

from __future__ import annotations

import json
from pathlib import Path

from test_audit_check_envelope import refused, run
from tfkit import build_taskforce

from tfshare.encoding import encode


def test_coordinators_set_the_witness_threshold_and_review_it(tmp_path: Path) -> None:
    tf = build_taskforce()
    path = tmp_path / "tf.roster"
    path.write_bytes(encode(tf.signed))
    old = tmp_path / "old.roster"
    old.write_bytes(encode(tf.signed))
    done = run(tmp_path / "home", "roster", "witnesses", path, "2")
    assert done.returncode == 0, done.stderr
    shown = json.loads(run(tmp_path / "home", "roster", "show", path, "--json").stdout)
    assert shown["witness_threshold"] == 2 and shown["seq"] == 2
    diff = run(tmp_path / "home", "roster", "diff", old, path).stdout
    assert "witness_threshold: 0 -> 2" in diff
    # coord, police, ngo, labour are active: at most 3 can witness the log's signer.
    assert "witness threshold 4" in refused(
        run(tmp_path / "home", "roster", "witnesses", path, "4"), 6
    )
