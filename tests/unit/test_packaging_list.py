"""pyproject.toml lists every package, so a wheel install has all the code (an editable
install would hide a missing one)."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _config() -> dict[str, object]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    tool = data["tool"]["setuptools"]
    assert isinstance(tool, dict)
    return tool


def test_every_library_package_is_listed() -> None:
    """Each folder of tfshare/ with an __init__.py is a listed package."""
    found = {
        ".".join(p.parent.relative_to(REPO).parts)
        for p in (REPO / "tfshare").rglob("__init__.py")
        if "__pycache__" not in p.parts
    }
    listed = set(_config()["packages"])  # type: ignore[call-overload]
    assert found <= listed, f"missing from pyproject.toml packages: {sorted(found - listed)}"


def test_cli_and_schemas_install_under_tfshare() -> None:
    """cli/ installs as tfshare.cli and schemas/ (with its JSON files) as tfshare.schemas."""
    config = _config()
    package_dir = config["package-dir"]
    assert isinstance(package_dir, dict)
    assert package_dir["tfshare.cli"] == "cli"
    assert package_dir["tfshare.schemas"] == "schemas"
    assert "cli" not in config["packages"]  # type: ignore[operator]
    package_data = config["package-data"]
    assert isinstance(package_data, dict)
    assert "*/*.json" in package_data["tfshare.schemas"]
    assert (REPO / "schemas" / "__init__.py").exists()
