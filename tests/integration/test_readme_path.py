"""The README's by-hand path runs as written: executable documentation (issue 12, item 3).

Owns: extracting the README's ```sh blocks (plain fences, ```python and the like are
reference forms and never run) and running them in order, as one bash script with
``set -euo pipefail``, in a temporary directory against the real broker they start, with the
``tfshare`` of this virtualenv on PATH.

What the test changes in the text: nothing but the broker's port (4222 becomes a free port, so
parallel runs and a real broker on 4222 do not collide). Placeholders need no filling in: the
README sets them itself (``MSG_ID=$(tfshare ... publish ... | awk ...)``), as a reader would
copy them from the output. The environment adds only what every test suite sets: the
insecure test cost for key files (TFSHARE_KDF) and TFSHARE_TEST (no warning about it).

Background processes (``... &``) are the README's own; its last block stops them, and the test
kills the script's whole process group (tfshare, nats-server) whatever happened. A failure
names the README line that was running and shows the end of the output and of the logs.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from livekit import free_port

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
BIN = Path(sys.executable).parent  # .venv/bin: this checkout's tfshare and nats-server
README_PORT = "4222"
TIMEOUT_S = 240  # the path takes about 30-60 s on 2 shared cores; this only stops a hang


@dataclass(frozen=True)
class ShellLine:
    readme_line: int  # 1-based line number in README.md
    text: str


def sh_blocks(markdown: str) -> list[list[ShellLine]]:
    """The lines of each block fenced exactly ```sh, in order; every other fence is skipped."""
    blocks: list[list[ShellLine]] = []
    current: list[ShellLine] | None = None
    fence_open = False
    for number, line in enumerate(markdown.splitlines(), start=1):
        stripped = line.strip()
        if not fence_open and stripped.startswith("```"):
            fence_open = True
            current = [] if stripped == "```sh" else None
        elif fence_open and stripped == "```":
            fence_open = False
            if current is not None:
                blocks.append(current)
            current = None
        elif current is not None:
            current.append(ShellLine(number, line))
    return blocks


def build_script(blocks: list[list[ShellLine]], *, port: int, progress: Path) -> list[ShellLine]:
    """One bash script: a header, then every block's lines (4222 -> ``port``). Line i of the
    script is element i-1 of the result; header lines carry README line 0."""
    header = [
        "set -euo pipefail",
        # Before each command, where we are: read back to name the README line that failed.
        f'trap \'printf "%s\\n" "$LINENO" > {_quoted(progress)}\' DEBUG',
    ]
    script = [ShellLine(0, text) for text in header]
    for block in blocks:
        script.extend(
            ShellLine(line.readme_line, line.text.replace(README_PORT, str(port))) for line in block
        )
    return script


def _quoted(path: Path) -> str:
    return "'" + str(path).replace("'", "'\\''") + "'"


def command_at(script: list[ShellLine], script_line: int) -> str:
    """The README lines of the (possibly backslash-continued) command at ``script_line``."""
    index = max(0, min(script_line, len(script)) - 1)
    start = index
    while start > 0 and script[start - 1].text.rstrip().endswith("\\"):
        start -= 1
    end = index
    while end + 1 < len(script) and script[end].text.rstrip().endswith("\\"):
        end += 1
    return "\n".join(f"README.md:{s.readme_line}: {s.text}" for s in script[start : end + 1])


def _environment(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TFSHARE_")}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        TFSHARE_HOME=str(home),  # the README sets its own; this only keeps ~/.tfshare out
        TFSHARE_KDF="insecure-test",
        TFSHARE_TEST="1",
        NO_COLOR="1",
    )
    return env


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """Stop everything the script started (tfshare processes and their nats-server)."""
    for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
        # The shell is gone; its background children may not be yet.
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return


def _wait(process: subprocess.Popen[bytes], trial: Path) -> tuple[int | None, Path | None]:
    """Wait for the script: its exit code (None: timed out), or the log of a background
    process that printed a tfshare error (it stopped; the script would wait for it)."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            return process.wait(timeout=0.5), None
        except subprocess.TimeoutExpired:
            pass
        for log in trial.glob("*.log"):
            if "tfshare: error:" in log.read_text(errors="replace"):
                return None, log
    return None, None


def _tails(directory: Path, lines: int = 15) -> str:
    parts = []
    for log in sorted(directory.glob("trial/*.log")):
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        parts.append(f"--- {log.name} (last {lines} lines)\n" + "\n".join(tail))
    return "\n".join(parts)


def test_sh_blocks_are_the_sh_fenced_blocks_only_with_their_readme_lines() -> None:
    markdown = "\n".join(
        [
            "text",  # 1
            "```",  # 2
            "make demo",  # 3: a plain fence is not run
            "```",  # 4
            "```sh",  # 5
            "echo one \\",  # 6
            "    two",  # 7
            "```",  # 8
            "```python",  # 9
            "print('no')",  # 10
            "```",  # 11
            "```sh",  # 12
            "echo three",  # 13
            "```",  # 14
        ]
    )
    blocks = sh_blocks(markdown)
    assert [[(s.readme_line, s.text) for s in b] for b in blocks] == [
        [(6, "echo one \\"), (7, "    two")],
        [(13, "echo three")],
    ]
    script = build_script(blocks, port=5000, progress=Path("/x"))
    # A failure reported on either line of a continued command names the whole command.
    assert (
        command_at(script, 3)
        == command_at(script, 4)
        == ("README.md:6: echo one \\\nREADME.md:7:     two")
    )


def test_readme_blocks_name_the_broker_port_that_the_test_replaces() -> None:
    blocks = sh_blocks(README.read_text())
    text = "\n".join(line.text for block in blocks for line in block)
    assert len(blocks) >= 8, "the README's walk-through lost its ```sh blocks"
    assert f"--port {README_PORT}" in text
    assert f"nats://127.0.0.1:{README_PORT}" in text


@pytest.mark.slow
def test_readme_by_hand_path_runs_as_written(tmp_path: Path) -> None:
    assert (BIN / "tfshare").exists(), f"no tfshare in {BIN}: run 'make setup'"
    blocks = sh_blocks(README.read_text())
    progress = tmp_path / "progress"
    script = build_script(blocks, port=free_port(), progress=progress)
    script_file = tmp_path / "readme_path.sh"
    script_file.write_text("\n".join(line.text for line in script) + "\n")
    # The README runs from the top of a clone: its trial/ directory reads ../examples.
    (tmp_path / "examples").symlink_to(REPO / "examples")
    output = tmp_path / "output.txt"

    with output.open("wb") as sink:
        process = subprocess.Popen(
            ["bash", str(script_file)],
            cwd=tmp_path,
            env=_environment(tmp_path / "home"),
            stdin=subprocess.DEVNULL,  # nothing may wait for a prompt
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: killed as a whole below
        )
        try:
            code, died = _wait(process, tmp_path / "trial")
        finally:
            _kill_group(process)

    text = output.read_text(errors="replace")
    if died is not None:
        # A background process (agent, audit service, broker) failed: the script would only
        # wait for it until the timeout. Name the README line that started it.
        started = [s for s in script if f"2> {died.name}" in s.text]
        pytest.fail(
            f"a background process of the README's path failed ({died.name}), started at\n"
            + "\n".join(f"README.md:{s.readme_line}: {s.text}" for s in started)
            + f"\n{_tails(tmp_path)}",
            pytrace=False,
        )
    if code != 0:
        where = progress.read_text().strip() if progress.exists() else "1"
        status = "timed out" if code is None else f"exited {code}"
        pytest.fail(
            f"the README's by-hand path {status} at\n"
            f"{command_at(script, int(where or '1'))}\n"
            f"--- output (last 40 lines)\n" + "\n".join(text.splitlines()[-40:]) + "\n"
            f"{_tails(tmp_path)}",
            pytrace=False,
        )
    # What the walk-through promises its reader, seen in its output.
    alert_title = "Minor advertised online, transfer planned tonight"
    assert re.search(r"^[0-9a-f]{8}$", text, re.MULTILINE), "echo $MSG_ID: no 8-digit prefix"
    assert "published roster seq 2 of nl-north" in text  # roster publish after broker up
    assert text.count(alert_title) >= 2  # the NGO's feed and its inbox show
    assert "from ngo-x" in text  # the police's feed shows the hotline's tip
    assert "inclusion   proved in signed checkpoint" in text
    assert re.search(r"co-signed the checkpoint of size \d+", text)
    assert re.search(r"proof verified: message [0-9a-f]{32} from police-nl on alerts", text)
    # Nothing stopped at a prompt or died in the background.
    logs = {p.name: p.read_text() for p in (tmp_path / "trial").glob("*.log")}
    assert "broker stopped" in logs["broker.log"]
    assert "audit service stopped" in logs["audit.log"]
    for agent_log in ("police.log", "ngo.log", "labour.log"):
        assert "agent stopped" in logs[agent_log], logs[agent_log][-2000:]
