"""Fixtures for the CLI tests: the installed ``tfshare`` console script, run as a real subprocess.

Every run gets a clean environment: ``TFSHARE_HOME`` and ``HOME`` point into the test's own
directory, ``TFSHARE_KDF=insecure-test`` keeps Argon2id fast, ``TFSHARE_TEST=1`` says so (no
warning that a key has the insecure test cost; a test of that warning passes ``TFSHARE_TEST=""``),
no ``TFSHARE_PASSPHRASE`` unless a test passes one, and stdin is ``/dev/null`` (never a TTY), so a
missing passphrase is an error rather than a prompt.

The session task force (built once, never modified: tests that edit the roster copy it first)
lives in one directory with a fixed layout::

    keys/AGENCY.key, keys/AGENCY.card, keys/AGENCY.pass   for coord, police, ngo, labour, outsider
                                                          (each passphrase unique to the session)
    taskforce.roster                                      task force "tf-north", seq 1, signed
    taskforce.anchor                                      its trust anchor

coord is the only coordinator (threshold 1); police, ngo and labour are members; outsider has keys
but is not in the roster. Channel "alerts": read police, ngo, labour; write police, labour.
"""

from __future__ import annotations

import functools
import os
import secrets
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

TFSHARE = Path(sys.executable).parent / "tfshare"
TASKFORCE = "tf-north"
AGENCIES = ("coord", "police", "ngo", "labour", "outsider")

Run = Callable[..., subprocess.CompletedProcess[str]]


def clean_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A minimal environment: nothing of the caller's TFSHARE_* settings leaks in."""
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(home),
        "TFSHARE_HOME": str(home),
        "TFSHARE_KDF": "insecure-test",
        "TFSHARE_TEST": "1",
        "LC_ALL": "C.UTF-8",
        "PYTHONIOENCODING": "utf-8",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    env.update(extra or {})
    return env


def run_tfshare(
    *args: str | os.PathLike[str],
    home: Path,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    umask: int = -1,
) -> subprocess.CompletedProcess[str]:
    """Run the console script once; never raises on a non-zero exit code."""
    home.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [str(TFSHARE), *(os.fspath(a) for a in args)],
        cwd=cwd,
        env=clean_env(home, env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=60,
        check=False,
        umask=umask,
    )


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """``result``, after asserting that the command succeeded (its stderr in the message)."""
    assert result.returncode == 0, f"{result.args}: exit {result.returncode}\n{result.stderr}"
    return result


@pytest.fixture(scope="session")
def run_in() -> Callable[[Path], Run]:
    """``run_in(directory)``: a runner with TFSHARE_HOME in ``directory``, run from there."""

    def _run_in(directory: Path) -> Run:
        directory.mkdir(parents=True, exist_ok=True)
        return functools.partial(run_tfshare, home=directory / "home", cwd=directory)

    return _run_in


@pytest.fixture
def run(run_in: Callable[[Path], Run], tmp_path: Path) -> Run:
    """Run tfshare with TFSHARE_HOME in this test's directory, from that directory."""
    return run_in(tmp_path)


@pytest.fixture(scope="session")
def tf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session task force's directory (layout in this module's docstring). Read-only."""
    root = tmp_path_factory.mktemp("taskforce")
    keys = root / "keys"
    keys.mkdir()
    token = secrets.token_hex(8)  # every passphrase is unique: tests look for it in outputs
    cli = functools.partial(run_tfshare, home=root / "home", cwd=root)
    for agency in AGENCIES:
        (keys / f"{agency}.pass").write_text(f"{agency} passphrase {token}\n")
        ok(
            cli(
                "keys",
                "init",
                agency,
                "--dir",
                keys,
                "--name",
                f"{agency.title()} agency",
                "--passphrase-file",
                keys / f"{agency}.pass",
            )
        )
    roster = root / "taskforce.roster"
    ok(
        cli(
            "roster",
            "init",
            "--taskforce",
            TASKFORCE,
            "--coordinator",
            keys / "coord.card",
            "--threshold",
            "1",
            "--out",
            roster,
        )
    )
    for agency in ("police", "ngo", "labour"):
        ok(cli("roster", "add", roster, keys / f"{agency}.card"))
    ok(cli("roster", "grant", roster, "police", "--channel", "alerts", "--read", "--write"))
    ok(cli("roster", "grant", roster, "ngo", "--channel", "alerts", "--read"))
    ok(cli("roster", "grant", roster, "labour", "--channel", "alerts", "--read", "--write"))
    ok(
        cli(
            "roster",
            "sign",
            roster,
            "--key",
            keys / "coord.key",
            "--passphrase-file",
            keys / "coord.pass",
        )
    )
    ok(cli("roster", "anchor", roster, "--out", root / "taskforce.anchor"))
    return root


@pytest.fixture(scope="session")
def creds(tf: Path) -> Callable[[str], list[str]]:
    """``creds(agency)``: the --key and --passphrase-file arguments of a session agency."""

    def _creds(agency: str) -> list[str]:
        keys = tf / "keys"
        return [
            "--key",
            str(keys / f"{agency}.key"),
            "--passphrase-file",
            str(keys / f"{agency}.pass"),
        ]

    return _creds


@pytest.fixture(scope="session")
def trust(tf: Path) -> list[str]:
    """The --roster and --anchor arguments of the session task force."""
    return ["--roster", str(tf / "taskforce.roster"), "--anchor", str(tf / "taskforce.anchor")]
