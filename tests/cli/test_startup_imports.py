"""The CLI starts fast (issue 13): ``--version``, ``--help``, a group's ``--help`` and the
command modules themselves import no NATS client, no aiohttp, no structlog, no audit service
and no registry compiler. Those are imported by the commands that use them, when they run.

Each check runs the real CLI entry (``tfshare.cli.app.run``) in a fresh interpreter and reads
the modules it loaded: what a person waits for on every command is what any other process
would import too. No timing here (bench/startup.py measures it).
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from tfshare.envelope import DEFAULT_MAX_AGE_MS
from tfshare.keyfile import DEFAULT_KDF
from tfshare.registry import compat
from tfshare.workflows.live import StreamLimits

# cli/ installs as tfshare.cli (pyproject); mypy checks it from the source tree as "cli".
from tfshare.cli import (  # type: ignore[import-not-found,unused-ignore]  # isort: skip
    app,
    broker_cmd,
    envelope_cmd,
    keys_cmd,
    schema_cmd,
)

# What starting the CLI must not pull in: the NATS client and what carries it, the web
# framework, the logging library (configured lazily), the audit service, and the registry's
# compiler of JSON Schemas into msgspec types (tfshare.registry.profile) with what uses it.
HEAVY = (
    "nats",
    "aiohttp",
    "structlog",
    "tfshare.transport",
    "tfshare.agent",
    "tfshare.audit.service",
    "tfshare.registry.profile",
    "tfshare.registry.schema",
    "tfshare.registry.book",
    # tfshare export / import (issue 16): over a second to import, loaded by those commands only
    "stix2",
    "stix2validator",
    "pymisp",
    "tfshare.interop",
)

# Every command module this task made light (live_cmd is the agent client's, and checked
# through the entry below).
COMMAND_MODULES = (
    "tfshare.cli.common",
    "tfshare.cli.audit_cmd",
    "tfshare.cli.broker_cmd",
    "tfshare.cli.envelope_cmd",
    "tfshare.cli.keys_cmd",
    "tfshare.cli.roster_cmd",
    "tfshare.cli.schema_cmd",
    "tfshare.cli.leaf_cmd",
    "tfshare.cli.interop_cmd",
    "tfshare.logconfig",
)


def _loaded_after(source: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run ``source`` in a fresh interpreter; the names in sys.modules when it ended."""
    out = tmp_path / "modules.json"
    program = (
        "import atexit, json, sys\n"
        f"atexit.register(lambda: open({str(out)!r}, 'w').write(json.dumps(sorted(sys.modules))))\n"
        + source
    )
    result = subprocess.run(
        [sys.executable, "-c", program],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TFSHARE_HOME": str(tmp_path)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.exists(), result.stderr
    return result, set(json.loads(out.read_text()))


def _heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


@pytest.mark.parametrize(
    "argv",
    [
        ["--version"],
        ["--help"],
        ["keys", "--help"],
        ["inbox", "--help"],
        ["audit", "--help"],
        ["export", "--help"],
        ["import", "--help"],
    ],
    ids=" ".join,
)
def test_cli_entry_imports_nothing_heavy(argv: list[str], tmp_path: Path) -> None:
    """The CLI entry with these arguments runs (exit 0, its output printed) without loading
    the NATS client, aiohttp, structlog, the audit service or the registry compiler."""
    result, modules = _loaded_after(
        f"from tfshare.cli.app import run\nraise SystemExit(run({argv!r}))\n", tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()  # it did print its version or help
    assert _heavy(modules) == []


@pytest.mark.parametrize("module", COMMAND_MODULES)
def test_command_module_imports_nothing_heavy(module: str, tmp_path: Path) -> None:
    """Each command module, imported alone, loads none of the heavy modules (and not the
    agent client's live_cmd either: audit_cmd borrows its helper only when a command runs)."""
    result, modules = _loaded_after(f"import {module}\n", tmp_path)
    assert result.returncode == 0, result.stderr
    assert _heavy(modules) == []
    assert "tfshare.cli.live_cmd" not in modules


def test_logging_configured_before_structlog_is_imported_applies_once_it_is(
    tmp_path: Path,
) -> None:
    """configure() leaves structlog unimported; the module that imports it later logs with
    the configured level, JSON rendering and redaction."""
    result, modules = _loaded_after(
        "from tfshare.logconfig import configure\n"
        "configure('info')\n"
        "assert 'structlog' not in sys.modules\n"
        "import structlog\n"
        "log = structlog.get_logger('tfshare.test')\n"
        "log.debug('below_the_level')\n"
        "log.info('configured_later', passphrase='planted-secret', msg_id=b'\\x01\\x02')\n",
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    (line,) = [json.loads(text) for text in result.stderr.splitlines()]
    assert line["event"] == "configured_later"
    assert line["level"] == "info"
    assert line["passphrase"] == "[redacted]"
    assert line["msg_id"] == "0102"
    assert "planted-secret" not in result.stderr
    assert "structlog" in modules


def test_defaults_written_out_for_help_are_the_librarys() -> None:
    """The option defaults the command modules spell out (so that --help needs no heavy
    import) are the values the library uses when nothing is given."""
    library = StreamLimits()
    spelled = {
        name: value for name, value in vars(broker_cmd._DEFAULT).items() if not name.startswith("_")
    }
    assert spelled == {name: getattr(library, name) for name in spelled}
    assert broker_cmd._limits() == library.check()  # every flag left at its default
    assert envelope_cmd.DEFAULT_MAX_AGE_DAYS * 86_400_000 == DEFAULT_MAX_AGE_MS
    assert keys_cmd.DEFAULT_KDF == DEFAULT_KDF
    assert [m.value for m in schema_cmd.ModeName] == [m.value for m in compat.Mode]
    assert schema_cmd.DEFAULT_MODE.value == compat.DEFAULT_MODE.value


def _eager_app() -> typer.Typer:
    """The CLI as typer builds it when everything is registered up front (what tfshare did
    before its commands were built on demand)."""
    eager = typer.Typer(
        name="tfshare",
        help=app.app.info.help,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
    )
    eager.callback()(app._global)
    for name, target in app.SUBCOMMANDS.items():
        if isinstance(target, typer.Typer):
            eager.add_typer(target, name=name)
        else:
            eager.command(name)(target)
    return eager


def _help_paths() -> list[list[str]]:
    paths: list[list[str]] = [[]]
    for name, target in app.SUBCOMMANDS.items():
        paths.append([name])
        if isinstance(target, typer.Typer):
            paths += [[name, str(c.name)] for c in target.registered_commands]
    return paths


def test_help_of_every_command_is_what_typer_gives_when_built_up_front() -> None:
    """Building commands on demand changes no help text: the root's list (summaries from
    help texts alone), every group's and every command's --help are typer's own."""
    runner = CliRunner()
    eager = _eager_app()
    for path in _help_paths():
        lazy_out = runner.invoke(app.app, [*path, "--help"], prog_name="tfshare")
        eager_out = runner.invoke(eager, [*path, "--help"], prog_name="tfshare")
        assert lazy_out.exit_code == 0, (path, lazy_out.output)
        assert lazy_out.output == eager_out.output, path
    root = runner.invoke(app.app, ["--help"], prog_name="tfshare").output
    assert all(f"  {name} " in root for name in app.SUBCOMMANDS)


def test_version_read_from_the_dist_info_is_importlib_metadatas() -> None:
    """--version reads tfshare's METADATA itself (importlib.metadata costs more to import
    than the rest of the command): the same version importlib.metadata finds."""
    assert app._dist_info_version() == importlib.metadata.version("tfshare")
    assert app.installed_version() == importlib.metadata.version("tfshare")


def test_root_lists_its_commands_without_building_them_and_builds_one_once() -> None:
    """The root's command table answers names without building anything (typer evaluates
    every parameter's annotations when it builds a command); a command is built on first
    use, once."""
    commands = app._Subcommands(dict(app.SUBCOMMANDS))
    assert list(commands) == list(app.SUBCOMMANDS)
    assert commands.built == {}
    keys = commands["keys"]
    assert list(commands.built) == ["keys"]
    assert commands["keys"] is keys
    assert sorted(keys.commands) == sorted(str(c.name) for c in keys_cmd.app.registered_commands)
