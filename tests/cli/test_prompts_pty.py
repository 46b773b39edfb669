"""``publish`` prompts on a real pseudo-terminal do not lose work (issue 12, item 4).

A person types at the prompts of ``tfshare publish tip``: a bad date is refused at once with
the reason and asked again, ``now`` is taken; a publish that fails after every field was typed
keeps the answers in a 0600 draft whose path the hint names, and ``publish --body-file DRAFT``
then sends it; an interrupted session keeps its draft too, and resuming it asks only for what
is still missing.

No broker runs: publish queues the sealed envelope in its outbox (exit 0), and the tests open
it as ngo with ``tfshare open``, real keys and real crypto.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import pty
import re
import select
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tfshare.store import StateStore

TFSHARE = Path(sys.executable).parent / "tfshare"
Run = Callable[..., subprocess.CompletedProcess[str]]
Creds = Callable[[str], list[str]]
MARKER = "Salon-Marker-5521"  # stands for case content typed at the prompts

_SECONDS = 60


class Terminal:
    """tfshare with stdin, stdout and stderr on one pseudo-terminal, typed at like a person."""

    def __init__(self, args: list[str], home: Path) -> None:
        home.mkdir(parents=True, exist_ok=True)
        env = {
            "PATH": os.environ.get("PATH", os.defpath),
            "HOME": str(home),
            "TFSHARE_HOME": str(home),
            "TFSHARE_KDF": "insecure-test",
            "TFSHARE_TEST": "1",  # test keys: no warning about their insecure test cost
            "LC_ALL": "C.UTF-8",
            "PYTHONIOENCODING": "utf-8",
            "TERM": "xterm-256color",
        }
        self.master, slave = pty.openpty()
        try:
            self.proc = subprocess.Popen(
                [str(TFSHARE), *args],
                stdin=slave,
                stdout=slave,
                stderr=slave,
                cwd=home,
                env=env,
                start_new_session=True,  # the pty becomes its controlling terminal
            )
        finally:
            os.close(slave)
        self.out = ""
        self.seen = 0  # what expect() has consumed

    def _read(self, until: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], max(0.0, min(0.5, until)))
        if not ready:
            return self.proc.poll() is None
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # EIO: every writer closed the terminal
            return False
        self.out += chunk.decode("utf-8", errors="replace").replace("\r\n", "\n")
        return bool(chunk)

    def expect_prompt(self, path: str) -> str:
        """Wait for the question ``path: `` (the last thing on the screen while it waits);
        the text shown since the last question."""
        deadline = time.monotonic() + _SECONDS
        while not self.out[self.seen :].endswith(f"\n{path}: "):
            if time.monotonic() > deadline or not self._read(deadline - time.monotonic()):
                self.close()
                pytest.fail(f"no prompt {path!r}; the terminal shows:\n{self.out}")
        shown, self.seen = self.out[self.seen :], len(self.out)
        return shown

    def type(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\n")

    def end_of_input(self) -> None:
        os.write(self.master, b"\x04")  # Ctrl-D at the start of a line: end of input

    def finish(self) -> tuple[int, str]:
        """Read to the end; (exit code, everything shown since the last question)."""
        deadline = time.monotonic() + _SECONDS
        while time.monotonic() < deadline and self._read(deadline - time.monotonic()):
            pass
        try:
            code = self.proc.wait(timeout=_SECONDS)
        finally:
            self.close()
        return code, self.out[self.seen :]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)


def _closed_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"nats://127.0.0.1:{port}"  # nothing listens: publish queues


def _publish(creds: Creds, trust: list[str], state: Path, *extra: str) -> list[str]:
    return [
        "publish",
        "tip",
        "--channel",
        "alerts",
        "--server",
        _closed_url(),
        *creds("police"),
        *trust,
        "--state",
        str(state),
        *extra,
    ]


def _queued_body(run: Run, creds: Creds, trust: list[str], state: Path, out: Path) -> object:
    """The body of the one envelope in ``state``'s outbox, as ngo opens it."""
    store = StateStore(state / "state.db")
    try:
        ((_, _, envelope),) = store.outbox()
    finally:
        store.close()
    out.write_bytes(envelope)
    opened = run("open", out, *creds("ngo"), *trust, "--state", out.with_suffix(".state"), "--json")
    assert opened.returncode == 0, opened.stderr
    info = json.loads(opened.stdout)
    assert info["outcome"] == "delivered"
    return info["body"]


def _answer_tip(term: Terminal, *, skip: tuple[str, ...] = ()) -> None:
    """Everything but ``received`` and what ``skip`` names, as a person types it."""
    for path, answer in (
        ("summary", f"Caller says three colleagues never leave the shop ({MARKER})."),
        ("handling.tlp", "red"),
        ("grading.system", "admiralty-6x6"),
        ("grading.source", "b"),
        ("grading.information", "2"),
    ):
        if path not in skip:
            term.expect_prompt(path)
            term.type(answer)


@pytest.mark.slow
def test_a_bad_date_is_asked_again_and_now_is_queued_as_the_current_time(
    run: Run, creds: Creds, trust: list[str], tmp_path: Path
) -> None:
    """'yesterday' for received: refused at once with one line saying how to write it, and
    asked again; 'now' is taken. The message queues (exit 0) and opens at ngo with received
    the current UTC time, grading codes in the schema's spelling, and no_forward true for
    TLP:RED (typed as 'red')."""
    state = tmp_path / "state"
    term = Terminal(_publish(creds, trust, state), tmp_path / "home")
    shown = term.expect_prompt("source_type")
    assert "one of: hotline (a call or message to a hotline)" in shown
    term.type("Hotline")
    shown = term.expect_prompt("received")
    assert "format: a date and time, RFC 3339" in shown and "'now'" in shown
    assert "e.g. 2026-11-21T09:42:00Z" in shown
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    term.type("yesterday")
    shown = term.expect_prompt("received")
    assert (
        "received: not a date and time: write it as 2026-11-21T09:00:00Z (RFC 3339), or 'now'"
        in shown.splitlines()
    )
    term.type("now")
    _answer_tip(term)
    code, shown = term.finish()
    after = dt.datetime.now(dt.UTC)
    assert code == 0, shown
    assert "handling.no_forward: true, because TLP:RED" in shown
    assert "queued:" in shown
    body = _queued_body(run, creds, trust, state, tmp_path / "tip.tfenv")
    assert isinstance(body, dict)
    received = dt.datetime.strptime(body["received"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    assert before <= received <= after
    assert body["source_type"] == "hotline"
    assert body["grading"] == {"system": "admiralty-6x6", "source": "B", "information": "2"}
    assert body["handling"]["tlp"] == "RED" and body["handling"]["no_forward"] is True


def _draft_in(hint: str) -> Path:
    found = re.search(r"your answers are kept in (\S+) \(readable by you only\)", hint)
    assert found is not None, hint
    return Path(found.group(1))


@pytest.mark.slow
def test_a_publish_that_fails_after_the_prompts_keeps_a_draft_that_publishes(
    run: Run, creds: Creds, trust: list[str], tmp_path: Path
) -> None:
    """A mistyped --field (handling.tpl) fails the final validation after every field was
    typed: exit 5, and the hint names a 0600 draft in the state's drafts directory holding
    the answers. With the named field fixed in it, 'publish --body-file DRAFT' (no terminal)
    queues the message, and the draft, published, is removed."""
    state = tmp_path / "state"
    term = Terminal(_publish(creds, trust, state, "--field", "handling.tpl=RED"), tmp_path / "home")
    term.expect_prompt("source_type")
    term.type("hotline")
    term.expect_prompt("received")
    term.type("2026-11-21T09:00:00Z")
    _answer_tip(term)
    code, shown = term.finish()
    assert code == 5, shown
    errors = [line for line in shown.splitlines() if line.startswith("tfshare: ")]
    assert errors[0].startswith("tfshare: error: the body is not a valid tf.tip_summary/1")
    assert errors[1].startswith("tfshare: hint: your answers are kept in ")
    draft = _draft_in(errors[1])
    assert draft.parent == state / "drafts"
    assert stat.S_IMODE(draft.stat().st_mode) == 0o600
    kept = json.loads(draft.read_text())
    assert MARKER in kept["summary"]
    assert kept["received"] == "2026-11-21T09:00:00Z"
    assert kept["handling"]["tpl"] == "RED"
    assert f"tfshare publish tip --body-file {draft}" in errors[1]
    assert not StateStore(state / "state.db").outbox()  # nothing was sealed

    del kept["handling"]["tpl"]  # what the error named, fixed as the person would
    draft.write_text(json.dumps(kept))
    resumed = run(*_publish(creds, trust, state, "--body-file", str(draft)))
    assert resumed.returncode == 0, resumed.stderr
    assert f"draft {draft} published and removed" in resumed.stderr
    assert not draft.exists()
    body = _queued_body(run, creds, trust, state, tmp_path / "tip.tfenv")
    assert isinstance(body, dict) and MARKER in body["summary"]


@pytest.mark.slow
def test_an_interrupted_session_keeps_a_draft_and_resuming_asks_only_what_is_missing(
    run: Run, creds: Creds, trust: list[str], tmp_path: Path
) -> None:
    """End of input (Ctrl-D) at the third question: the two answers are kept in a draft,
    named on the terminal. 'publish --body-file DRAFT' on a terminal asks only for the
    fields still missing and queues the message."""
    state = tmp_path / "state"
    term = Terminal(_publish(creds, trust, state), tmp_path / "home")
    term.expect_prompt("source_type")
    term.type("ngo-outreach")
    term.expect_prompt("received")
    term.type("2026-11-21T09:00:00Z")
    term.expect_prompt("summary")
    term.end_of_input()
    code, shown = term.finish()
    assert code != 0, shown
    draft = _draft_in(shown)
    assert json.loads(draft.read_text()) == {
        "source_type": "ngo-outreach",
        "received": "2026-11-21T09:00:00Z",
    }

    term = Terminal(_publish(creds, trust, state, "--body-file", str(draft)), tmp_path / "home")
    shown = term.expect_prompt("summary")
    assert "source_type:" not in shown and "received:" not in shown
    term.type(f"Outreach worker's report ({MARKER}).")
    _answer_tip(term, skip=("summary",))
    code, shown = term.finish()
    assert code == 0, shown
    body = _queued_body(run, creds, trust, state, tmp_path / "tip.tfenv")
    assert isinstance(body, dict)
    assert (body["source_type"], body["received"]) == ("ngo-outreach", "2026-11-21T09:00:00Z")
    assert not draft.exists()
