"""The ``tfshare`` command: global options, command groups, and the one place where errors
become ``tfshare: error:`` / ``tfshare: hint:`` lines and exit codes.

Starting it is cheap (issue 13): the command modules import at their top only typer, the
standard library and tfshare's small leaf modules, and the library a command runs inside that
command; ``tests/cli/test_startup_imports.py`` says what ``--help`` and ``--version`` must not
load, ``bench/startup.py`` measures it.
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Callable, Iterator, MutableMapping
from typing import Annotated, Any

import typer
import typer.main
from typer.core import TyperCommand, TyperGroup

from tfshare.errors import ExitCode, TfshareError
from tfshare.logconfig import configure

from . import (
    audit_cmd,
    broker_cmd,
    envelope_cmd,
    interop_cmd,
    keys_cmd,
    leaf_cmd,
    live_cmd,
    roster_cmd,
    schema_cmd,
)
from .common import set_profile, shown

# The top-level commands and groups, in the order --help lists them.
SUBCOMMANDS: dict[str, Callable[..., Any] | typer.Typer] = {
    "publish": live_cmd.publish_cmd,
    "listen": live_cmd.listen_cmd,
    "init": keys_cmd.profile_init_cmd,
    "seal": envelope_cmd.seal_cmd,
    "open": envelope_cmd.open_cmd,
    "export": interop_cmd.export_cmd,
    "import": interop_cmd.import_cmd,
    "keys": keys_cmd.app,
    "roster": roster_cmd.app,
    "schema": schema_cmd.app,
    "broker": broker_cmd.broker_app,
    "leaf": leaf_cmd.app,
    "agent": live_cmd.agent_app,
    "inbox": live_cmd.inbox_app,
    "web": live_cmd.web_app,
    "audit": audit_cmd.app,
}
# How typer builds them: the same settings for every level (as add_typer would pass down).
_SETTINGS: dict[str, Any] = {
    "add_completion": False,
    "pretty_exceptions_enable": False,
    "rich_markup_mode": None,
}


def _build(name: str, target: Callable[..., Any] | typer.Typer) -> Any:
    """The click command typer makes of one top-level command or group, exactly as when it
    is registered on the root (a throwaway root holds it)."""
    holder = typer.Typer(**_SETTINGS)
    if isinstance(target, typer.Typer):
        holder.add_typer(target, name=name)
    else:
        holder.command(name)(target)
    return typer.main.get_group(holder).commands[name]


def _summary(name: str, target: Callable[..., Any] | typer.Typer) -> TyperCommand:
    """A stand-in carrying only the help text typer would give the command or group: what
    the root's command list shows, without building it."""
    if isinstance(target, typer.Typer):
        text = typer.main.solve_typer_info_help(typer.models.TyperInfo(target, name=name))
    else:
        text = inspect.getdoc(target) or ""
    return TyperCommand(name, help=text, rich_markup_mode=None)


class _Subcommands(MutableMapping[str, Any]):
    """The root's commands by name, each built by typer only when asked for. Building one
    reads every parameter's annotations and default (typer evaluates them: about 2 ms a
    command, 50 commands): ``--version`` needs none, ``tfshare keys show`` needs one group."""

    def __init__(self, targets: dict[str, Callable[..., Any] | typer.Typer]) -> None:
        self.targets = targets
        self.built: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self.built:
            self.built[name] = _build(name, self.targets[name])
        return self.built[name]

    def __setitem__(self, name: str, command: Any) -> None:
        self.built[name] = command
        self.targets.setdefault(name, command)

    def __delitem__(self, name: str) -> None:
        del self.targets[name]
        self.built.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(self.targets)

    def __len__(self) -> int:
        return len(self.targets)


class _Root(TyperGroup):
    """The ``tfshare`` group, with its subcommands built on demand (``_Subcommands``)."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.commands = _Subcommands(SUBCOMMANDS)

    def list_commands(self, ctx: Any) -> list[str]:
        return list(self.commands)  # the names alone: nothing built

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        # typer's own listing, given stand-ins with each command's help text.
        listing = TyperGroup(
            name=self.name,
            commands={name: _summary(name, target) for name, target in SUBCOMMANDS.items()},
            rich_markup_mode=self.rich_markup_mode,
        )
        listing.format_commands(ctx, formatter)


app = typer.Typer(
    name="tfshare",
    help="Signed, end-to-end encrypted sharing for anti-trafficking task forces.",
    no_args_is_help=True,
    cls=_Root,
    **_SETTINGS,
)

_debug = False


def installed_version() -> str:
    """The version of the installed distribution (the one pip and bug reports name)."""
    found = _dist_info_version()
    if found is not None:
        return found
    # Anything but a plain .dist-info directory (an egg-info, a zip): importlib.metadata, which
    # costs more to import (email parsing, zipfile) than the rest of --version.
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        return version("tfshare")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def _dist_info_version() -> str | None:
    """The Version field of the first ``tfshare-*.dist-info/METADATA`` on sys.path, found as
    importlib.metadata finds it (sys.path in order, the first directory holding tfshare's
    metadata); None as soon as anything else could come first (an egg-info, a zip, a METADATA
    without a version), so that importlib.metadata decides."""
    for entry in sys.path:
        folder = entry or "."
        if not os.path.isdir(folder):
            if os.path.exists(folder):
                return None  # a zip on sys.path
            continue
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            lowered = name.lower()
            if not lowered.startswith("tfshare"):
                continue
            if lowered.endswith(".egg-info"):
                return None
            if lowered.startswith("tfshare-") and lowered.endswith(".dist-info"):
                return _metadata_version(os.path.join(folder, name, "METADATA"))
    return None


def _metadata_version(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as metadata:
            for line in metadata:
                if not line.strip():
                    break  # the end of the headers
                if line.startswith("Version:"):
                    return line.removeprefix("Version:").strip() or None
    except OSError:
        pass
    return None


def _print_version(requested: bool) -> None:
    if requested:
        print(f"tfshare {installed_version()}")
        raise typer.Exit(ExitCode.OK)


@app.callback()
def _global(
    _version: Annotated[
        bool,
        typer.Option(
            "--version",
            is_eager=True,
            callback=_print_version,
            help="Print the version and exit.",
        ),
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
    log_level: Annotated[
        str,
        typer.Option("--log-level", envvar="TFSHARE_LOG_LEVEL", help="debug, info, warning."),
    ] = "warning",
    profile: Annotated[
        str | None,
        typer.Option(
            "--profile",
            envvar="TFSHARE_PROFILE",
            help="Use this agency profile's key, roster, anchor, server and state.",
        ),
    ] = None,
) -> None:
    global _debug  # noqa: PLW0603 - one process, one CLI invocation
    _debug = debug
    configure(log_level)
    set_profile(profile)


def _fail(message: str, hint: str, code: int) -> int:
    # Messages quote values from outside (a path, a name, typer's echo of a bad argument):
    # one line each, escaped, so an error cannot forge or hide the line after it.
    print(f"tfshare: error: {shown(message)}", file=sys.stderr)
    print(f"tfshare: hint: {shown(hint)}", file=sys.stderr)
    return code


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (documented in the README)."""
    args = sys.argv[1:] if argv is None else argv
    try:
        result = app(args=args, prog_name="tfshare", standalone_mode=False)
    except TfshareError as exc:
        if _debug:
            raise
        return _fail(str(exc), exc.hint, exc.exit_code)
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        print("tfshare: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except typer.TyperException as exc:
        # Typer's usage errors (unknown option, missing argument, bad value) carry the
        # command context; show one error line and point at that command's help.
        ctx = getattr(exc, "ctx", None)
        command = getattr(ctx, "command_path", None) or "tfshare"
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
            print(ctx.get_help(), file=sys.stderr)
            return ExitCode.USAGE
        message = exc.format_message().strip().splitlines() or ["invalid usage"]
        return _fail(message[0], f"see '{command} --help'", ExitCode.USAGE)
    except Exception as exc:
        if _debug:
            raise
        return _fail(
            f"internal error ({type(exc).__name__})",
            "this is a bug in tfshare: rerun with --debug and report the traceback",
            ExitCode.ERROR,
        )
    # Without standalone mode, typer.Exit(code) raised in a command comes back as the result.
    return result if isinstance(result, int) else ExitCode.OK


def main() -> None:
    """Console-script entry point."""
    sys.exit(run())
