"""``tfshare keys init --dir DIR``: DIR is created (0700) when missing, and every check that
needs no passphrase (agency id, display name, existing files) is made before the passphrase is
asked, so nobody types it twice to learn the command could never succeed.

The prompts need a terminal: these tests run tfshare on a pseudo-terminal and answer them.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

TFSHARE = Path(sys.executable).parent / "tfshare"
PASSPHRASE = b"a long passphrase for keys init tests"
PROMPT = b"Passphrase for "
REPEAT = b"Repeat the passphrase: "
_SECONDS = 30


def run_on_pty(*args: str | os.PathLike[str], cwd: Path, answers: list[bytes]) -> tuple[int, bytes]:
    """Run tfshare on a pseudo-terminal, typing ``answers[i]`` at the i-th passphrase prompt;
    a prompt beyond the answers stops the process (exit code -SIGKILL). (exit code, output)."""
    home = cwd / "home"
    home.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(home),
        "TFSHARE_HOME": str(home),
        "TFSHARE_KDF": "insecure-test",
        "TFSHARE_TEST": "1",  # test keys: no warning about their insecure test cost
        "LC_ALL": "C.UTF-8",
        "PYTHONIOENCODING": "utf-8",
        "TERM": "xterm",
    }
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [str(TFSHARE), *(os.fspath(a) for a in args)],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=cwd,
            env=env,
            start_new_session=True,  # the pty becomes its controlling terminal (getpass)
        )
    finally:
        os.close(slave)
    out, answered = bytearray(), 0
    deadline = time.monotonic() + _SECONDS
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the process closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            prompts = out.count(PROMPT) + out.count(REPEAT)
            if prompts > answered:
                if answered == len(answers):
                    proc.send_signal(signal.SIGKILL)  # asked for more than the test gives
                    break
                os.write(master, answers[answered] + b"\n")
                answered += 1
            elif not ready and proc.poll() is not None:
                break
        code = proc.wait(timeout=_SECONDS)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return code, bytes(out)


def test_keys_init_creates_the_missing_directory_0700(tmp_path: Path) -> None:
    """The README's first command, on a terminal, with no keys/ yet: the passphrase is asked
    twice and the key, the card and a 0700 keys/ exist afterwards."""
    code, out = run_on_pty(
        "keys", "init", "police-nl", "--dir", "keys", "--name", "Police NL",
        cwd=tmp_path, answers=[PASSPHRASE, PASSPHRASE],
    )  # fmt: skip
    assert code == 0, out.decode(errors="replace")
    keys = tmp_path / "keys"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    assert (keys / "police-nl.key").is_file() and (keys / "police-nl.card").is_file()
    assert stat.S_IMODE((keys / "police-nl.key").stat().st_mode) == 0o600


def test_keys_init_with_a_passphrase_file_creates_nested_directories(tmp_path: Path) -> None:
    """Without a terminal too (--passphrase-file): a missing keys/agencies/ is made."""
    secret = tmp_path / "pass"
    secret.write_bytes(PASSPHRASE + b"\n")
    home = tmp_path / "home"
    result = subprocess.run(
        [str(TFSHARE), "keys", "init", "ngo", "--dir", "keys/agencies", "--passphrase-file",
         str(secret)],
        cwd=tmp_path,
        env={"PATH": os.environ.get("PATH", os.defpath), "HOME": str(home),
             "TFSHARE_HOME": str(home), "TFSHARE_KDF": "insecure-test", "LC_ALL": "C.UTF-8"},
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    made = tmp_path / "keys" / "agencies"
    assert stat.S_IMODE(made.stat().st_mode) == 0o700
    assert (made / "ngo.key").is_file()


def test_existing_key_files_are_refused_before_the_passphrase_is_asked(tmp_path: Path) -> None:
    """An agency whose key is already in --dir: exit 1 at once, no prompt, files untouched."""
    code, _ = run_on_pty(
        "keys", "init", "police-nl", "--dir", "keys", cwd=tmp_path, answers=[PASSPHRASE] * 2
    )
    assert code == 0
    before = (tmp_path / "keys" / "police-nl.key").read_bytes()
    code, out = run_on_pty("keys", "init", "police-nl", "--dir", "keys", cwd=tmp_path, answers=[])
    assert code == 1, out.decode(errors="replace")
    assert PROMPT not in out
    assert b"already exists" in out
    assert (tmp_path / "keys" / "police-nl.key").read_bytes() == before


def test_a_bad_agency_id_is_refused_before_the_passphrase_and_no_directory_is_made(
    tmp_path: Path,
) -> None:
    """An invalid agency id is a usage error (exit 2) before any prompt; keys/ is not made."""
    code, out = run_on_pty("keys", "init", "Police NL", "--dir", "keys", cwd=tmp_path, answers=[])
    assert code == 2, out.decode(errors="replace")
    assert PROMPT not in out
    assert not (tmp_path / "keys").exists()


def test_mismatched_passphrases_leave_no_new_directory(tmp_path: Path) -> None:
    """The two passphrases differ: exit 6, and the directory made for the keys is gone."""
    code, out = run_on_pty(
        "keys", "init", "police-nl", "--dir", "keys",
        cwd=tmp_path, answers=[PASSPHRASE, PASSPHRASE + b"x"],
    )  # fmt: skip
    assert code == 6, out.decode(errors="replace")
    assert b"do not match" in out
    assert not (tmp_path / "keys").exists()


def test_an_existing_directory_keeps_its_mode(tmp_path: Path) -> None:
    """A --dir that exists is used as it is (its mode is the owner's choice)."""
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o750)
    os.chmod(keys, 0o750)
    code, out = run_on_pty(
        "keys", "init", "police-nl", "--dir", keys, cwd=tmp_path, answers=[PASSPHRASE] * 2
    )
    assert code == 0, out.decode(errors="replace")
    assert stat.S_IMODE(keys.stat().st_mode) == 0o750
