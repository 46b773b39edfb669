"""The systemd units in broker_config/systemd/: parsed, and checked for what docs/DEPLOY.md
promises of them - the passphrase through a systemd credential and never the environment,
the hardening options, a writable path limited to the service's own state, and command lines
the CLI accepts. Where ``systemd-analyze`` exists, ``verify`` checks them too (with the
executables pointed at this checkout's, since /opt/tfshare is not installed here).
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any, Final

import pytest
import typer

# cli/ installs as tfshare.cli (pyproject); mypy checks it from the source tree as "cli".
from tfshare.cli import app, live_cmd  # type: ignore[import-not-found,unused-ignore]  # isort: skip

SYSTEMD_CREDENTIAL: Final[str] = live_cmd.SYSTEMD_CREDENTIAL

UNITS: Final = Path(__file__).resolve().parents[2] / "broker_config" / "systemd"
VENV_BIN: Final = Path(__file__).resolve().parents[2] / ".venv" / "bin"
AGENT: Final = "tfshare-agent@.service"
AUDIT: Final = "tfshare-audit.service"
NATS: Final = "nats-server.service"

Unit = dict[str, list[tuple[str, str]]]


def parse(path: Path) -> Unit:
    """Sections of a unit file, each a list of (key, value) in order: systemd allows a key
    more than once (SystemCallFilter=, Environment=), which configparser does not."""
    unit: Unit = {}
    section: list[tuple[str, str]] | None = None
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        assert not line.endswith("\\"), f"{path.name}: continued lines are not used here"
        if line.startswith("[") and line.endswith("]"):
            section = unit.setdefault(line[1:-1], [])
            continue
        assert section is not None, f"{path.name}: {line!r} outside a section"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: {line!r} is not key=value"
        section.append((key.strip(), value.strip()))
    return unit


def values(unit: Unit, key: str, section: str = "Service") -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def one(unit: Unit, key: str, section: str = "Service") -> str:
    found = values(unit, key, section)
    assert len(found) == 1, f"{key}= given {len(found)} times"
    return found[0]


def test_the_three_units_are_there() -> None:
    assert {p.name for p in UNITS.glob("*.service")} >= {AGENT, AUDIT, NATS}


@pytest.mark.parametrize("name", [AGENT, AUDIT, NATS])
def test_every_unit_is_hardened(name: str) -> None:
    unit = parse(UNITS / name)
    assert one(unit, "NoNewPrivileges") == "yes"
    assert one(unit, "ProtectSystem") == "strict"
    assert one(unit, "PrivateTmp") == "yes"
    assert one(unit, "ProtectHome") == "yes"
    assert one(unit, "PrivateDevices") == "yes"
    assert one(unit, "CapabilityBoundingSet") == ""  # no capability at all
    assert one(unit, "UMask") == "0077"
    assert one(unit, "User") not in {"", "root", "0"}
    assert "@system-service" in values(unit, "SystemCallFilter")
    assert values(unit, "WantedBy", "Install") == ["multi-user.target"]


@pytest.mark.parametrize(
    ("name", "writable"),
    [
        (AGENT, "/var/lib/tfshare/profiles/%i"),  # its own profile, not the others'
        (AUDIT, "/var/lib/tfshare/profiles/audit"),
        (NATS, "/var/lib/tfshare-broker"),
    ],
)
def test_only_the_services_own_state_is_writable(name: str, writable: str) -> None:
    unit = parse(UNITS / name)
    assert values(unit, "ReadWritePaths") == [writable]


@pytest.mark.parametrize("name", [AGENT, AUDIT])
def test_the_passphrase_comes_as_a_systemd_credential_never_the_environment(name: str) -> None:
    unit = parse(UNITS / name)
    credential = one(unit, "LoadCredential")
    assert credential.startswith(f"{SYSTEMD_CREDENTIAL}:/etc/tfshare/credentials/")
    assert SYSTEMD_CREDENTIAL == "tfshare-passphrase"  # the name the agent looks for
    assert values(unit, "EnvironmentFile") == []
    for setting in values(unit, "Environment"):
        assert "PASSPHRASE" not in setting.upper(), setting
    assert values(unit, "Environment") == ["TFSHARE_HOME=/var/lib/tfshare"]
    exec_start = one(unit, "ExecStart")
    assert "TFSHARE_PASSPHRASE" not in exec_start
    # The only passphrase file named on a command line is the credential's copy.
    args = shlex.split(exec_start)
    if "--passphrase-file" in args:
        assert args[args.index("--passphrase-file") + 1] == f"%d/{SYSTEMD_CREDENTIAL}"


def command(path: list[str]) -> Any:
    """The CLI's (click) command at ``path`` (typer vendors click: no import of it here)."""
    found: Any = typer.main.get_command(app.app)
    for name in path:
        found = found.get_command(found.context_class(found), name)
        assert found is not None, f"no command {' '.join(path)}"
    return found


def options(cmd: Any) -> set[str]:
    return {opt for param in cmd.params for opt in getattr(param, "opts", [])}


@pytest.mark.parametrize(("name", "path"), [(AGENT, ["agent", "run"]), (AUDIT, ["audit", "serve"])])
def test_exec_start_is_a_command_line_the_cli_accepts(name: str, path: list[str]) -> None:
    args = shlex.split(one(parse(UNITS / name), "ExecStart"))
    assert args[0] == "/opt/tfshare/bin/tfshare"
    assert args[1] == "--profile" and "--profile" in options(command([]))
    assert args[3 : 3 + len(path)] == path
    rest = args[3 + len(path) :]
    flags = {a for a in rest if a.startswith("--")}
    assert flags <= options(command(path)), flags - options(command(path))


def test_the_agent_is_not_restarted_after_a_trust_failure() -> None:
    """Exit 6 (revoked, wrong passphrase, a roster that does not verify): restarting cannot
    help and would knock on the broker forever."""
    unit = parse(UNITS / AGENT)
    assert "6" in one(unit, "RestartPreventExitStatus").split()
    assert one(unit, "Restart") == "on-failure"


def test_nats_server_checks_its_config_reloads_on_hup_and_leaves_in_lame_duck_mode() -> None:
    unit = parse(UNITS / NATS)
    assert one(unit, "ExecStartPre").split()[1:] == ["-t", "-c", "/etc/tfshare-broker/nats.conf"]
    assert one(unit, "ExecStart").split()[1:] == ["-c", "/etc/tfshare-broker/nats.conf"]
    assert one(unit, "ExecReload") == "/bin/kill -s HUP $MAINPID"
    assert one(unit, "KillSignal") == "SIGUSR2"
    assert one(unit, "StateDirectory") == "tfshare-broker"
    assert values(unit, "LoadCredential") == []  # nkeys: no secret on the server


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_analyze_verifies_the_units(tmp_path: Path) -> None:
    for unit in UNITS.glob("*.service"):
        text = unit.read_text(encoding="utf-8")
        text = text.replace("/opt/tfshare/bin/tfshare", str(VENV_BIN / "tfshare"))
        text = text.replace("/usr/local/bin/nats-server", str(VENV_BIN / "nats-server"))
        (tmp_path / unit.name.replace("@.", "@test.")).write_text(text, encoding="utf-8")
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *sorted(map(str, tmp_path.iterdir()))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr
