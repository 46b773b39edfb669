"""Bad input: every failure is one ``tfshare: error:`` line and one ``tfshare: hint:`` line on
stderr, the documented exit code, no traceback, nothing on stdout and nothing written."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

Run = Callable[..., subprocess.CompletedProcess[str]]
RunIn = Callable[[Path], Run]
Arg = str | Path

ALERT = Path(__file__).resolve().parents[2] / "examples" / "alert.json"


@dataclass(frozen=True)
class Ctx:
    """Where a case runs: the session task force, the case's work directory, its state."""

    tf: Path
    work: Path
    state: Path

    def key(self, agency: str) -> Path:
        return self.tf / "keys" / f"{agency}.key"

    def card(self, agency: str) -> Path:
        return self.tf / "keys" / f"{agency}.card"

    def passfile(self, agency: str) -> Path:
        return self.tf / "keys" / f"{agency}.pass"

    def roster_copy(self) -> Path:
        """A copy of the signed roster inside the work directory (to check it is not changed)."""
        path = self.work / "taskforce.roster"
        shutil.copyfile(self.tf / "taskforce.roster", path)
        return path

    def write(self, name: str, data: bytes | str) -> Path:
        path = self.work / name
        if isinstance(data, str):
            path.write_text(data)
        else:
            path.write_bytes(data)
        return path

    def seal(
        self,
        *,
        key: Arg | None = None,
        passfile: Arg | None = None,
        roster: Arg | None = None,
        body: Arg = ALERT,
        schema: str = "tf.alert/1",
        out: Arg | None = None,
        extra: Sequence[Arg] = (),
    ) -> list[Arg]:
        """A seal command line by police that works unless one part is replaced."""
        return [
            "seal",
            "--key", key or self.key("police"),
            "--passphrase-file", passfile or self.passfile("police"),
            "--roster", roster or self.tf / "taskforce.roster",
            "--anchor", self.tf / "taskforce.anchor",
            "--state", self.state,
            "--channel", "alerts",
            "--schema", schema,
            "--in", body,
            "--out", out or self.work / "out.tfenv",
            *extra,
        ]  # fmt: skip

    def open(self, envelope: Arg) -> list[Arg]:
        """An open command line by ngo of ``envelope``."""
        return [
            "open", envelope,
            "--key", self.key("ngo"), "--passphrase-file", self.passfile("ngo"),
            "--roster", self.tf / "taskforce.roster", "--anchor", self.tf / "taskforce.anchor",
            "--state", self.state,
        ]  # fmt: skip


def _truncated_roster(c: Ctx) -> Path:
    data = (c.tf / "taskforce.roster").read_bytes()
    return c.write("truncated.roster", data[: len(data) // 2])


def _invalid_alert(c: Ctx) -> Path:
    body = json.loads(ALERT.read_text())
    body["severity"] = "somewhat"
    return c.write("invalid.json", json.dumps(body))


def _roster_init(c: Ctx, coordinator: Path) -> list[Arg]:
    return [
        "roster", "init", "--taskforce", "tf-x", "--coordinator", coordinator,
        "--threshold", "1", "--out", c.work / "new.roster",
    ]  # fmt: skip


def _directory(c: Ctx) -> Path:
    path = c.work / "folder"
    path.mkdir()
    return path


@dataclass(frozen=True)
class Case:
    """One bad input: the command line, the exit code and a phrase of the error line."""

    name: str
    build: Callable[[Ctx], list[Arg]]
    code: int
    message: str

    def __str__(self) -> str:
        return self.name


CASES = [
    Case(
        "card-as-key",
        lambda c: c.seal(key=c.card("police")),
        6,
        "is an agency card, not a secret key file",
    ),
    Case(
        "secret-key-as-card",
        lambda c: ["roster", "add", c.roster_copy(), c.key("outsider")],
        6,
        "is a secret key file, not an agency card",
    ),
    Case(
        "secret-key-as-coordinator-card",
        lambda c: _roster_init(c, c.key("coord")),
        6,
        "is a secret key file, not an agency card",
    ),
    Case(
        "truncated-roster",
        lambda c: c.seal(roster=_truncated_roster(c)),
        6,
        "truncated",
    ),
    Case(
        "truncated-roster-show",
        lambda c: ["roster", "show", _truncated_roster(c)],
        6,
        "truncated",
    ),
    Case(
        "foreign-file-as-card",
        lambda c: ["roster", "add", c.roster_copy(), c.write("notes.txt", "meeting at 10\n")],
        6,
        "is not an agency card",
    ),
    Case(
        "foreign-file-as-key-or-card",
        lambda c: ["keys", "show", c.write("notes.txt", "meeting at 10\n")],
        6,
        "neither a key file nor an agency card",
    ),
    Case(
        "foreign-file-as-envelope",
        lambda c: c.open(c.write("notes.txt", "meeting at 10\n")),
        3,
        "E_MALFORMED",
    ),
    Case(
        "secret-key-as-envelope",
        lambda c: c.open(c.key("ngo")),
        1,
        "is a secret key file, not a sealed message",
    ),
    Case(
        "missing-body",
        lambda c: c.seal(body=c.work / "missing.json"),
        1,
        "does not exist",
    ),
    Case(
        "missing-envelope",
        lambda c: c.open(c.work / "missing.tfenv"),
        1,
        "does not exist",
    ),
    Case(
        "missing-output-directory",
        lambda c: c.seal(out=c.work / "no-such-dir" / "out.tfenv"),
        1,
        "does not exist",
    ),
    Case(
        "directory-as-body",
        lambda c: c.seal(body=_directory(c)),
        1,
        "is a directory",
    ),
    Case(
        "directory-as-key",
        lambda c: c.seal(key=_directory(c)),
        1,
        "is a directory",
    ),
    Case(
        "directory-as-output",
        lambda c: c.seal(out=_directory(c)),
        1,
        "folder",
    ),
    Case(
        "unknown-recipient",
        lambda c: c.seal(extra=["--to", "police,nobody"]),
        6,
        "'nobody' is not in the roster",
    ),
    Case(
        "body-not-json",
        lambda c: c.seal(body=c.write("body.json", '{"title": "unterminated')),
        5,
        "not valid JSON",
    ),
    Case(
        "body-invalid-for-type",
        lambda c: c.seal(body=_invalid_alert(c)),
        5,
        "$.severity",
    ),
    Case(
        "unknown-schema",
        lambda c: c.seal(schema="tf.nonsense/1"),
        5,
        "unknown schema 'tf.nonsense/1'",
    ),
    Case(
        "unknown-option",
        lambda c: c.seal(extra=["--colour", "blue"]),
        2,
        "--colour",
    ),
    Case(
        "missing-required-option",
        lambda c: ["seal", "--key", c.key("police")],
        2,
        "Missing option",
    ),
    Case(
        "invalid-role",
        lambda c: ["roster", "add", c.roster_copy(), c.card("outsider"), "--role", "boss"],
        2,
        "--role",
    ),
    Case(
        "wrong-passphrase",
        lambda c: c.seal(passfile=c.write("wrong.pass", "not the passphrase\n")),
        6,
        "wrong passphrase",
    ),
]


@dataclass(frozen=True)
class Outcome:
    result: subprocess.CompletedProcess[str]
    before: dict[str, bytes | None]
    after: dict[str, bytes | None]


def snapshot(directory: Path) -> dict[str, bytes | None]:
    """Every path under ``directory`` (hidden ones too) with its bytes (None for directories)."""
    return {
        str(p.relative_to(directory)): None if p.is_dir() else p.read_bytes()
        for p in sorted(directory.rglob("*"))
    }


@pytest.fixture(scope="module")
def outcome(
    run_in: RunIn, tf: Path, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[Case], Outcome]:
    """``outcome(case)``: run the case once per module (cached) in its own directory."""
    root = tmp_path_factory.mktemp("bad-input")
    cache: dict[str, Outcome] = {}

    def _outcome(case: Case) -> Outcome:
        if case.name not in cache:
            directory = root / case.name
            ctx = Ctx(tf=tf, work=directory / "work", state=directory / "state")
            ctx.work.mkdir(parents=True)
            args = case.build(ctx)
            before = snapshot(ctx.work)
            result = run_in(directory)(*args)
            cache[case.name] = Outcome(result, before, snapshot(ctx.work))
        return cache[case.name]

    return _outcome


def lines(stderr: str, prefix: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(prefix)]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_exit_code(outcome: Callable[[Case], Outcome], case: Case) -> None:
    """The command exits with the documented code for this kind of failure."""
    result = outcome(case).result
    assert result.returncode == case.code, result.stderr


@pytest.mark.parametrize("case", CASES, ids=str)
def test_one_error_line(outcome: Callable[[Case], Outcome], case: Case) -> None:
    """Exactly one "tfshare: error:" line on stderr."""
    result = outcome(case).result
    assert len(lines(result.stderr, "tfshare: error: ")) == 1, result.stderr


@pytest.mark.parametrize("case", CASES, ids=str)
def test_one_hint_line(outcome: Callable[[Case], Outcome], case: Case) -> None:
    """Exactly one "tfshare: hint:" line on stderr, right after the error line."""
    stderr = outcome(case).result.stderr
    hints = lines(stderr, "tfshare: hint: ")
    errors = lines(stderr, "tfshare: error: ")
    assert len(hints) == 1, stderr
    assert errors, stderr
    all_lines = stderr.splitlines()
    assert all_lines.index(hints[0]) == all_lines.index(errors[0]) + 1


@pytest.mark.parametrize("case", CASES, ids=str)
def test_error_names_the_problem(outcome: Callable[[Case], Outcome], case: Case) -> None:
    """The error line says what is wrong (the file's kind, the path, the field or the code)."""
    result = outcome(case).result
    (error,) = lines(result.stderr, "tfshare: error: ") or [""]
    assert case.message in error, result.stderr


@pytest.mark.parametrize("case", CASES, ids=str)
def test_no_traceback(outcome: Callable[[Case], Outcome], case: Case) -> None:
    """No Python traceback on stderr or stdout."""
    result = outcome(case).result
    assert "Traceback" not in result.stderr
    assert "Traceback" not in result.stdout


@pytest.mark.parametrize("case", CASES, ids=str)
def test_nothing_on_stdout(outcome: Callable[[Case], Outcome], case: Case) -> None:
    """A failed command prints no data on stdout."""
    assert outcome(case).result.stdout == ""


@pytest.mark.parametrize("case", CASES, ids=str)
def test_nothing_written(outcome: Callable[[Case], Outcome], case: Case) -> None:
    """No output file, temporary file or modified input is left in the work directory."""
    result = outcome(case)
    assert result.after == result.before
