"""Poison input at the command line (issue 11, item 1): no "internal error" for a bad input.

An envelope signed by a real member whose ciphertext is shorter than the AEAD tag made
``tfshare open`` exit 1 with "internal error (ValueError)"; a key file cut the same way did the
same for every command that opens it. Now the envelope is a rejection with its code (exit 3)
and the key file a trust error (exit 6), each with one error line and one hint line.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import msgspec

from tfshare.envelope import Envelope
from tfshare.keyfile import open_keyfile, read_keyfile_header
from tfshare.seal import signed_message

Run = Callable[..., subprocess.CompletedProcess[str]]
Creds = Callable[[str], list[str]]
ALERT = Path(__file__).resolve().parents[2] / "examples" / "alert.json"


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"{result.args}: exit {result.returncode}\n{result.stderr}"
    return result


def one_error_and_hint(result: subprocess.CompletedProcess[str], code: int) -> tuple[str, str]:
    assert result.returncode == code, f"exit {result.returncode}\n{result.stderr}"
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    errors = [x for x in result.stderr.splitlines() if x.startswith("tfshare: error: ")]
    hints = [x for x in result.stderr.splitlines() if x.startswith("tfshare: hint: ")]
    assert len(errors) == 1 and len(hints) == 1, result.stderr
    return errors[0], hints[0]


def test_open_of_a_signed_envelope_with_a_too_short_ciphertext_is_rejected_with_e_decrypt(
    run: Run, creds: Creds, trust: list[str], tf: Path, tmp_path: Path
) -> None:
    """police seals an alert, then re-signs it with 5 bytes of ciphertext (a member's buggy or
    hostile software): ngo's ``open`` exits 3 with E_DECRYPT, nothing on stdout; with --json,
    one object with the code."""
    sealed = tmp_path / "alert.tfenv"
    ok(
        run(
            "seal", *creds("police"), *trust, "--state", "police-state",
            "--channel", "alerts", "--schema", "tf.alert/1", "--in", ALERT, "--out", sealed,
        )
    )  # fmt: skip
    passphrase = (tf / "keys" / "police.pass").read_text().splitlines()[0].encode()
    police = open_keyfile((tf / "keys" / "police.key").read_bytes(), passphrase)
    env = msgspec.msgpack.decode(sealed.read_bytes(), type=Envelope)
    ct = env.ct[:5]
    poison = tmp_path / "poison.tfenv"
    poison.write_bytes(
        msgspec.msgpack.encode(
            Envelope(env.v, env.hdr, ct, police.sign(signed_message(env.hdr, ct)))
        )
    )
    result = run("open", poison, *creds("ngo"), *trust, "--state", "ngo-state")
    error, hint = one_error_and_hint(result, 3)
    assert "E_DECRYPT" in error
    assert "do not act on it" in hint
    assert result.stdout == ""
    as_json = run("open", poison, *creds("ngo"), *trust, "--state", "ngo-state", "--json")
    assert as_json.returncode == 3
    assert json.loads(as_json.stdout)["code"] == "E_DECRYPT"


def test_a_key_file_with_a_too_short_ciphertext_exits_6(
    run: Run, tf: Path, trust: list[str], tmp_path: Path
) -> None:
    """A key file whose ciphertext is cut below the 16-byte tag: exit 6 (trust), the same
    error and hint as any modified key file, not exit 1 "internal error"."""
    header = read_keyfile_header((tf / "keys" / "police.key").read_bytes())
    cut = tmp_path / "police.key"
    cut.write_bytes(msgspec.msgpack.encode(msgspec.structs.replace(header, ct=b"\x00" * 7)))
    cut.chmod(0o600)
    result = run(
        "seal", "--key", cut, "--passphrase-file", tf / "keys" / "police.pass", *trust,
        "--state", "state", "--channel", "alerts", "--schema", "tf.alert/1",
        "--in", ALERT, "--out", tmp_path / "x.tfenv",
    )  # fmt: skip
    error, hint = one_error_and_hint(result, 6)
    assert "cannot open the key file of 'police'" in error
    assert "wrong passphrase, or the file was modified" in error
    assert "restore the key file from your backup" in hint
    assert not (tmp_path / "x.tfenv").exists()
