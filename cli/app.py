"""The ``tfshare`` command: global options, command groups, and the one place where errors
become ``tfshare: error:`` / ``tfshare: hint:`` lines and exit codes.

Starting it is cheap (issue 13): the command modules import at their top only typer, the
standard library and tfshare's small leaf modules, and the library a command runs inside that
command; ``tests/cli/test_startup_imports.py`` says what ``--help`` and ``--version`` must not
load, ``bench/startup.py`` measures it.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from tfshare.errors import ExitCode, TfshareError
from tfshare.logconfig import configure

from . import audit_cmd, broker_cmd, envelope_cmd, keys_cmd, live_cmd, roster_cmd, schema_cmd
from .common import set_profile, shown

app = typer.Typer(
    name="tfshare",
    help="Signed, end-to-end encrypted sharing for anti-trafficking task forces.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.add_typer(keys_cmd.app, name="keys")
app.add_typer(roster_cmd.app, name="roster")
app.add_typer(schema_cmd.app, name="schema")
app.add_typer(broker_cmd.broker_app, name="broker")
app.add_typer(live_cmd.agent_app, name="agent")
app.add_typer(live_cmd.inbox_app, name="inbox")
app.add_typer(audit_cmd.app, name="audit")
app.command("publish")(live_cmd.publish_cmd)
app.command("listen")(live_cmd.listen_cmd)
app.command("init")(keys_cmd.profile_init_cmd)
app.command("seal")(envelope_cmd.seal_cmd)
app.command("open")(envelope_cmd.open_cmd)

_debug = False


def installed_version() -> str:
    """The version of the installed distribution (the one pip and bug reports name)."""
    # Here, not at the top: importlib.metadata (email parsing, zipfile) is for --version only.
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        return version("tfshare")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


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
