"""``tfshare roster grant`` for several agencies or ``--all-members`` at once, and
``tfshare roster ungrant``; every bad name is a usage error (exit 2) and nothing is written."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

Run = Callable[..., subprocess.CompletedProcess[str]]


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"{result.args}: exit {result.returncode}\n{result.stderr}"
    return result


@pytest.fixture
def roster(tf: Path, tmp_path: Path) -> Path:
    """A copy of the session roster (signed, seq 1; alerts: read police, ngo, labour; write
    police, labour)."""
    path = tmp_path / "tf.roster"
    shutil.copyfile(tf / "taskforce.roster", path)
    return path


def channel(run: Run, roster: Path, name: str) -> dict[str, Any]:
    info = json.loads(ok(run("roster", "show", "--json", roster)).stdout)
    found: dict[str, Any] = next(c for c in info["channels"] if c["name"] == name)
    return found


def usage_refused(result: subprocess.CompletedProcess[str], roster: Path, before: bytes) -> str:
    """Exit 2 with one error line and one hint, no traceback, the roster untouched."""
    errors = [line for line in result.stderr.splitlines() if line.startswith("tfshare: error: ")]
    hints = [line for line in result.stderr.splitlines() if line.startswith("tfshare: hint: ")]
    assert result.returncode == 2, result.stderr
    assert len(errors) == 1 and len(hints) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert roster.read_bytes() == before
    return errors[0]


def test_grant_to_several_agencies_at_once(run: Run, roster: Path) -> None:
    """'ngo,coord' both get write on a new channel in one version (seq 2, unsigned)."""
    result = ok(run("roster", "grant", roster, "ngo,coord", "--channel", "receipts", "--write"))
    assert "ngo, coord" in result.stderr
    receipts = channel(run, roster, "receipts")
    assert receipts["writers"] == ["ngo", "coord"]
    assert receipts["readers"] == []
    info = json.loads(ok(run("roster", "show", "--json", roster)).stdout)
    assert info["seq"] == 2 and info["signatures"] == 0


def test_grant_to_all_members_skips_removed_agencies(run: Run, roster: Path) -> None:
    """--all-members: every active member (coordinators too), not a revoked one."""
    ok(run("roster", "revoke", roster, "labour", "--reason", "retired"))
    ok(run("roster", "grant", roster, "--all-members", "--channel", "receipts", "--write"))
    assert channel(run, roster, "receipts")["writers"] == ["coord", "police", "ngo"]


def test_ungrant_removes_write_and_keeps_read(run: Run, roster: Path) -> None:
    ok(run("roster", "ungrant", roster, "police,labour", "--channel", "alerts", "--write"))
    alerts = channel(run, roster, "alerts")
    assert alerts["writers"] == []
    assert alerts["readers"] == ["police", "ngo", "labour"]


def test_ungrant_read_and_write_of_all_members(run: Run, roster: Path) -> None:
    ok(
        run(
            "roster", "ungrant", roster, "--all-members", "--channel", "alerts", "--read", "--write"
        )
    )
    alerts = channel(run, roster, "alerts")
    assert alerts["readers"] == [] and alerts["writers"] == []


@pytest.mark.parametrize("verb", ["grant", "ungrant"])
def test_a_change_that_changes_nothing_leaves_the_signed_file_alone(
    run: Run, roster: Path, verb: str
) -> None:
    """Granting a right already held (or removing one not held) writes nothing: the signed
    roster keeps its seq and its signatures."""
    before = roster.read_bytes()
    agencies = "police,labour" if verb == "grant" else "ngo"
    result = ok(run("roster", verb, roster, agencies, "--channel", "alerts", "--write"))
    assert "nothing changed" in result.stderr
    assert roster.read_bytes() == before


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["police,Police2", "--channel", "alerts", "--read"], "'Police2' is not a valid agency"),
        (["police,,ngo", "--channel", "alerts", "--read"], "'' is not a valid agency id"),
        (["police,nobody", "--channel", "alerts", "--read"], "'nobody' is not in roster"),
        (["--channel", "alerts", "--read"], "--all-members"),
        (["police", "--all-members", "--channel", "alerts", "--read"], "--all-members"),
        (["police", "--channel", "alerts"], "nothing to"),
        (["police", "--channel", "Alerts!", "--read"], "not a valid channel name"),
    ],
)
@pytest.mark.parametrize("verb", ["grant", "ungrant"])
def test_bad_names_are_usage_errors_and_nothing_is_written(
    run: Run, roster: Path, verb: str, args: list[str], said: str
) -> None:
    """A bad agency among good ones, an unknown agency, neither or both of names and
    --all-members, no right, a bad channel: exit 2, a hint, the file unchanged."""
    before = roster.read_bytes()
    error = usage_refused(run("roster", verb, roster, *args), roster, before)
    assert said in error


def test_grant_to_a_revoked_agency_is_refused(run: Run, roster: Path) -> None:
    ok(run("roster", "revoke", roster, "labour", "--reason", "retired"))
    before = roster.read_bytes()
    error = usage_refused(
        run("roster", "grant", roster, "ngo,labour", "--channel", "tips", "--read"), roster, before
    )
    assert "'labour' is removed" in error


def test_ungrant_on_an_unknown_channel_is_refused(run: Run, roster: Path) -> None:
    before = roster.read_bytes()
    error = usage_refused(
        run("roster", "ungrant", roster, "police", "--channel", "tips", "--read"), roster, before
    )
    assert "channel 'tips' is not in roster" in error
