"""FIX-KM (second review of issue 15), through the installed ``tfshare`` command: an epoch
policy beyond what a roster holds is a usage error that says so (not "at least a minute",
exit 6), and the warning for writers that cannot send on an epoch-only channel.

The session task force (conftest): "alerts" read by police, ngo, labour; written by police,
labour. coord writes nothing and reads nothing.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def roster(tf: Path, tmp_path: Path) -> Path:
    path = tmp_path / "tf.roster"
    shutil.copyfile(tf / "taskforce.roster", path)
    return path


@pytest.mark.parametrize(
    ("option", "value", "said"),
    [
        ("--epoch-period", "999999999w", "longer than a roster can hold"),
        ("--epoch-messages", str(2**64), "more than a roster can hold"),
    ],
)
def test_an_epoch_policy_beyond_a_rosters_range_is_a_usage_error_that_says_so(
    run: Run, roster: Path, option: str, value: str, said: str
) -> None:
    before = roster.read_bytes()
    result = run("roster", "channel", roster, "alerts", option, value)
    assert result.returncode == 2, result.stderr
    assert said in result.stderr
    assert "at least" not in result.stderr
    assert "Traceback" not in result.stderr
    assert roster.read_bytes() == before


def test_no_warning_when_every_writer_reads_the_epoch_only_channel(run: Run, roster: Path) -> None:
    result = run("roster", "channel", roster, "alerts", "--modes", "epoch")
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr


def test_taking_read_from_a_writer_of_an_epoch_only_channel_is_said(run: Run, roster: Path) -> None:
    assert run("roster", "channel", roster, "alerts", "--modes", "epoch").returncode == 0
    result = run("roster", "ungrant", roster, "labour", "--channel", "alerts", "--read")
    assert result.returncode == 0, result.stderr
    [warning] = [line for line in result.stderr.splitlines() if "warning" in line]
    assert warning.startswith("tfshare: warning: labour writes 'alerts' but does not read it")
