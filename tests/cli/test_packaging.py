"""Packaging: ``python -m tfshare``, the console script, and where ``tfshare.cli`` comes from."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

Run = Callable[..., subprocess.CompletedProcess[str]]

REPO = Path(__file__).resolve().parents[2]


def python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in the project's interpreter from ``cwd`` (so the repository is not on
    sys.path unless the installation puts it there)."""
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"},
    )


def test_python_m_tfshare_help(tmp_path: Path) -> None:
    """``python -m tfshare --help`` prints the usage and exits 0."""
    result = subprocess.run(
        [sys.executable, "-m", "tfshare", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", "TFSHARE_HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    assert "Usage: tfshare" in result.stdout
    for command in ("keys", "roster", "seal", "open"):
        assert command in result.stdout


def test_no_top_level_cli_package(tmp_path: Path) -> None:
    """No top-level "cli" package is importable outside the repository."""
    result = python("import importlib.util; print(importlib.util.find_spec('cli'))", tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "None"


def test_tfshare_cli_is_the_repository_cli_directory(tmp_path: Path) -> None:
    """tfshare.cli resolves to the repository's cli/ directory."""
    result = python("import tfshare.cli; print(tfshare.cli.__file__)", tmp_path)
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()) == REPO / "cli" / "__init__.py"


def test_py_typed_is_shipped(tmp_path: Path) -> None:
    """The installed tfshare package carries its py.typed marker."""
    result = python(
        "import tfshare, pathlib; print(pathlib.Path(tfshare.__file__).parent)", tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert (Path(result.stdout.strip()) / "py.typed").is_file()


def test_console_script_is_installed_beside_python() -> None:
    """The tfshare console script sits next to the interpreter running the tests."""
    script = Path(sys.executable).parent / "tfshare"
    assert script.is_file()
    assert "tfshare.cli.app" in script.read_text()


def test_no_arguments_prints_help_and_exits_2(run: Run) -> None:
    """``tfshare`` alone prints the usage with its commands and exits 2 (a usage error)."""
    result = run()
    assert result.returncode == 2
    output = result.stdout + result.stderr
    assert "Usage: tfshare" in output
    assert "roster" in output
    assert "Traceback" not in output


def test_group_without_command_prints_its_help_and_exits_2(run: Run) -> None:
    """``tfshare roster`` alone prints the roster commands and exits 2."""
    result = run("roster")
    assert result.returncode == 2
    output = result.stdout + result.stderr
    assert "Usage: tfshare roster" in output
    assert "verify" in output


def test_command_help_documents_passphrase_file(run: Run) -> None:
    """``tfshare seal --help`` documents --passphrase-file and exits 0."""
    result = run("seal", "--help")
    assert result.returncode == 0, result.stderr
    assert "--passphrase-file" in result.stdout


def test_version_prints_the_installed_distribution_version(run: Run) -> None:
    """``tfshare --version`` prints "tfshare <version>" (the installed metadata, which is
    pyproject.toml's version) and exits 0 without needing a command."""
    result = run("--version")
    assert result.returncode == 0, result.stderr
    expected = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert result.stdout == f"tfshare {expected}\n"
    assert version("tfshare") == expected
    assert result.stderr == ""
