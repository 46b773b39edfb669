"""Second adversarial review of issue 15, through the installed ``tfshare`` command: coordinator
edits that leave an agency unable to do what the roster says it may. Each test FAILS until the
command says so.

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


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"{result.args}: exit {result.returncode}\n{result.stderr}"
    return result


@pytest.fixture
def roster(tf: Path, tmp_path: Path) -> Path:
    path = tmp_path / "tf.roster"
    shutil.copyfile(tf / "taskforce.roster", path)
    return path


def _says_writer_cannot_send(result: subprocess.CompletedProcess[str], writer: str) -> None:
    """Either a warning on an exit 0, or a usage refusal (exit 2, one error and one hint
    line): in both cases stderr names the write-only writer and that it does not read."""
    assert "Traceback" not in result.stderr
    assert result.returncode in (0, 2), result.stderr
    lines = [line for line in result.stderr.splitlines() if writer in line]
    negated = ("not", "never", "without", "no ")
    assert any("read" in line and any(n in line for n in negated) for line in lines), (
        f"nothing says {writer!r} writes the channel without reading it, so it can never "
        f"hold an epoch key:\n{result.stderr}"
    )


def test_epoch_only_channel_with_a_write_only_writer_is_said(run: Run, roster: Path) -> None:
    """coord may write "alerts" but does not read it. ``roster channel alerts --modes epoch``
    makes the channel epoch-only: the key manager delivers epoch keys to READERS only, so
    coord can never seal on it; its sends fail with "no epoch key for channel 'alerts' yet
    ... is the key manager running?", which sends everyone looking in the wrong place.
    Today the command succeeds silently.

    Fix (tfshare/workflows/rosters.py, ``channel_settings``; and ``grant`` with --write on
    an epoch-only channel): compute ``write_only = [w for w in ch.writers if w not in
    ch.readers]`` when the new policy is epoch-only, and return it in ``ChannelChange``
    (``write_only: list[str]``); cli/roster_cmd.py prints one ``tfshare: warning:`` line
    "coord writes 'alerts' but does not read it: in epoch mode it never holds the key and
    cannot send (grant it --read, or allow direct mode)". And tfshare/epochs.py
    ``choose_mode`` (sender side): refuse with that reason, not "no epoch key yet", when the
    sender is not a reader of the channel."""
    ok(run("roster", "grant", roster, "coord", "--channel", "alerts", "--write"))
    result = run("roster", "channel", roster, "alerts", "--modes", "epoch")
    _says_writer_cannot_send(result, "coord")


def test_write_grant_on_an_epoch_only_channel_to_a_non_reader_is_said(
    run: Run, roster: Path
) -> None:
    """The same, the other way round: "alerts" is epoch-only, then coord is granted --write
    alone. Fix: as above, in ``rosters.grant``'s result."""
    ok(run("roster", "channel", roster, "alerts", "--modes", "epoch"))
    result = run("roster", "grant", roster, "coord", "--channel", "alerts", "--write")
    _says_writer_cannot_send(result, "coord")
