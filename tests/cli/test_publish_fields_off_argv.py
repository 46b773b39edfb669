"""``publish`` keeps message content out of the command line (issue 11, item 9).

``--field`` values are in the process's argv, which every local user can read in ``ps`` and
/proc. ``--body-file PATH`` and ``--body-file -`` (stdin) give the same body without that, and
``--help`` says so. Bad bodies end in one ``tfshare: error:`` and one ``tfshare: hint:`` line.

No broker runs here: publish queues the sealed envelope in its outbox (exit 0), and the test
takes it from there and opens it as ngo with ``tfshare open``, real keys and real crypto.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tfshare.store import StateStore

Run = Callable[..., subprocess.CompletedProcess[str]]
TFSHARE = Path(sys.executable).parent / "tfshare"

REPO = Path(__file__).resolve().parents[2]
ALERT = REPO / "examples" / "alert.json"
MARKER = "Victim-Marker-4417"  # stands for case content nobody else on the machine may see

Creds = Callable[[str], list[str]]


def clean_env(home: Path) -> dict[str, str]:
    """As tests/cli/conftest.py's (several conftest modules: not importable by name)."""
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(home),
        "TFSHARE_HOME": str(home),
        "TFSHARE_KDF": "insecure-test",
        "TFSHARE_TEST": "1",  # test keys: no warning about their insecure test cost
        "LC_ALL": "C.UTF-8",
        "PYTHONIOENCODING": "utf-8",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"{result.args}: exit {result.returncode}\n{result.stderr}"
    return result


def _closed_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"nats://127.0.0.1:{port}"  # nothing listens: publish queues


def _alert() -> dict[str, object]:
    body: dict[str, object] = json.loads(ALERT.read_text())
    body["title"] = f"Transfer tonight ({MARKER})"
    return body


def _publish_args(tf: Path, creds: Creds, trust: list[str], state: Path) -> list[str]:
    return [
        "publish",
        "alert",
        "--channel",
        "alerts",
        "--server",
        _closed_url(),
        *creds("police"),
        *trust,
        "--state",
        str(state),
    ]


def _publish_stdin(args: list[str], data: bytes, home: Path) -> subprocess.CompletedProcess[str]:
    """Run tfshare with ``data`` on stdin (conftest's runner gives /dev/null)."""
    result = subprocess.run(
        [str(TFSHARE), *args],
        cwd=home.parent,
        env=clean_env(home),
        input=data,
        capture_output=True,
        timeout=60,
        check=False,
    )
    return subprocess.CompletedProcess(
        result.args, result.returncode, result.stdout.decode(), result.stderr.decode()
    )


def _queued_body(run: Run, creds: Creds, trust: list[str], state: Path, out: Path) -> object:
    """The body of the one envelope in ``state``'s outbox, as ngo opens it."""
    store = StateStore(state / "state.db")
    try:
        ((_, _, envelope),) = store.outbox()
    finally:
        store.close()
    out.write_bytes(envelope)
    state_of_ngo = out.with_suffix(".state")
    opened = ok(run("open", out, *creds("ngo"), *trust, "--state", state_of_ngo, "--json"))
    info = json.loads(opened.stdout)
    assert info["outcome"] == "delivered"
    return info["body"]


def _one_error(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith("tfshare: error: ")
    assert lines[1].startswith("tfshare: hint: ")
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.mark.slow
def test_body_file_stdin_and_fields_deliver_the_same_body(
    run: Run, tf: Path, creds: Creds, trust: list[str], tmp_path: Path
) -> None:
    """One alert given as --field flags, as --body-file PATH and on stdin (--body-file -)
    opens to the same body at the recipient."""
    body = _alert()
    fields = [f"--field={name}={json.dumps(value)}" for name, value in body.items()]
    ok(run(*_publish_args(tf, creds, trust, tmp_path / "s-fields"), *fields))
    path = tmp_path / "body.json"
    path.write_text(json.dumps(body))
    ok(run(*_publish_args(tf, creds, trust, tmp_path / "s-file"), "--body-file", path))
    piped = _publish_stdin(
        [*_publish_args(tf, creds, trust, tmp_path / "s-stdin"), "--body-file", "-"],
        json.dumps(body).encode(),
        tmp_path / "home",
    )
    assert piped.returncode == 0, piped.stderr
    assert "queued" in piped.stderr
    bodies = [
        _queued_body(run, creds, trust, tmp_path / f"s-{how}", tmp_path / f"{how}.tfenv")
        for how in ("fields", "file", "stdin")
    ]
    assert bodies[0] == bodies[1] == bodies[2]
    assert isinstance(bodies[0], dict) and bodies[0]["title"] == body["title"]


def test_help_says_field_is_visible_to_other_local_users(run: Run) -> None:
    """publish --help warns that --field is readable by other users and offers --body-file."""
    text = " ".join(ok(run("publish", "--help")).stdout.split())
    assert "VISIBLE to other local users" in text
    assert "--body-file" in text
    assert "'-' for stdin" in text


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"title: not json", "not valid JSON"),
        (b'["an", "array"]', "not a JSON object"),
        (b'{"title": "a", "severity": "low", "title": "b"}', "$.title twice"),
        (b'{"title": "a", "handling": {"tlp": "RED", "tlp": "CLEAR"}}', "$.handling.tlp twice"),
        (b'{"entities": [{"kind": "phone", "kind": "email"}]}', "$.entities[0].kind twice"),
    ],
    ids=["not-json", "not-an-object", "duplicate-key", "nested-duplicate", "duplicate-in-array"],
)
def test_bad_body_file_exits_5_with_one_error_and_a_hint(
    run: Run, tf: Path, creds: Creds, trust: list[str], tmp_path: Path, content: bytes, says: str
) -> None:
    """A body file that is not JSON, not an object, or has a key twice (at any depth) is a
    validation error (exit 5): nothing is sealed or queued."""
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    state = tmp_path / "state"
    result = run(*_publish_args(tf, creds, trust, state), "--body-file", path)
    assert says in _one_error(result, 5)
    assert result.stdout == ""
    store = StateStore(state / "state.db")
    try:
        assert store.outbox() == []
    finally:
        store.close()


def test_duplicate_key_on_stdin_exits_5(
    tf: Path, creds: Creds, trust: list[str], tmp_path: Path
) -> None:
    """The same check holds for a body piped to stdin."""
    result = _publish_stdin(
        [*_publish_args(tf, creds, trust, tmp_path / "state"), "--body-file", "-"],
        b'{"severity": "low", "severity": "critical"}',
        tmp_path / "home",
    )
    assert "$.severity twice" in _one_error(result, 5)


def test_empty_stdin_exits_5_with_a_hint(
    tf: Path, creds: Creds, trust: list[str], tmp_path: Path
) -> None:
    """``--body-file -`` with nothing on stdin says so instead of publishing an empty body."""
    result = _publish_stdin(
        [*_publish_args(tf, creds, trust, tmp_path / "state"), "--body-file", "-"],
        b"",
        tmp_path / "home",
    )
    assert "no body on stdin" in _one_error(result, 5)


def test_missing_body_file_exits_1_naming_the_file(
    run: Run, tf: Path, creds: Creds, trust: list[str], tmp_path: Path
) -> None:
    """A body file that does not exist is an unusable input file (exit 1, like every other
    file option), with one error line naming it and a hint."""
    result = run(*_publish_args(tf, creds, trust, tmp_path / "s"), "--body-file", "nope.json")
    line = _one_error(result, 1)
    assert "nope.json" in line and "does not exist" in line


def test_field_given_twice_exits_5(
    run: Run, tf: Path, creds: Creds, trust: list[str], tmp_path: Path
) -> None:
    """Two --field flags for one path are refused rather than the last silently winning."""
    result = run(
        *_publish_args(tf, creds, trust, tmp_path / "s"),
        "--body-file",
        ALERT,
        "--field",
        "severity=low",
        "--field",
        "severity=critical",
    )
    assert "--field severity is given twice" in _one_error(result, 5)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_stdin_body_is_not_in_the_running_process_cmdline(
    tf: Path, creds: Creds, trust: list[str], tmp_path: Path
) -> None:
    """While publish waits for its stdin body, /proc/PID/cmdline (what other local users
    see) holds the flags but none of the content; the body then goes out as usual."""
    home = tmp_path / "home"
    home.mkdir()
    process = subprocess.Popen(
        [
            str(TFSHARE),
            *_publish_args(tf, creds, trust, tmp_path / "state"),
            "--body-file",
            "-",
        ],
        cwd=tmp_path,
        env=clean_env(home),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        cmdline = b""
        deadline = time.monotonic() + 30
        while b"--body-file" not in cmdline and time.monotonic() < deadline:
            cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes()
            time.sleep(0.05)
        assert b"--body-file" in cmdline
        assert MARKER.encode() not in cmdline
        assert process.stdin is not None
        _, err = process.communicate(json.dumps(_alert()).encode(), timeout=60)
        assert process.returncode == 0, err.decode()
    finally:
        if process.poll() is None:
            os.kill(process.pid, 9)
            process.wait()
