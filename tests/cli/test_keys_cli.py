"""``tfshare keys init`` and ``tfshare keys show``: files, modes, output streams, passphrases."""

from __future__ import annotations

import json
import re
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

from tfshare.keyfile import open_keyfile

Run = Callable[..., subprocess.CompletedProcess[str]]

FINGERPRINT = re.compile(r"[0-9a-z]{4}( [0-9a-z]{4}){7}")
KID = re.compile(r"[0-9a-f]{16}")


def fields(stdout: str) -> dict[str, str]:
    """The aligned ``label  value`` lines of a command's stdout, as a dict."""
    rows: dict[str, str] = {}
    for line in stdout.splitlines():
        parts = re.split(r"\s{2,}", line.strip(), maxsplit=1)
        if len(parts) == 2:
            rows[parts[0]] = parts[1]
    return rows


def assert_error(result: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    """Exit ``code``; exactly one error line (containing ``text``) and one hint line."""
    errors = [line for line in result.stderr.splitlines() if line.startswith("tfshare: error: ")]
    hints = [line for line in result.stderr.splitlines() if line.startswith("tfshare: hint: ")]
    assert result.returncode == code, result.stderr
    assert len(errors) == 1, result.stderr
    assert len(hints) == 1, result.stderr
    assert text in errors[0]
    assert "Traceback" not in result.stderr + result.stdout


def write_pass(path: Path, value: str = "a passphrase of several words") -> Path:
    path.write_text(value + "\n")
    return path


def test_init_writes_secret_key_with_mode_0600(run: Run, tmp_path: Path) -> None:
    """keys init writes AGENCY.key readable by its owner only, even with a permissive umask."""
    result = run(
        "keys",
        "init",
        "police",
        "--dir",
        tmp_path,
        "--passphrase-file",
        write_pass(tmp_path / "p"),
        umask=0,
    )
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE((tmp_path / "police.key").stat().st_mode) == 0o600


def test_init_writes_public_card(run: Run, tmp_path: Path) -> None:
    """keys init writes AGENCY.card next to the key, world-readable (it is public)."""
    result = run(
        "keys",
        "init",
        "police",
        "--dir",
        tmp_path,
        "--passphrase-file",
        write_pass(tmp_path / "p"),
        umask=0,
    )
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE((tmp_path / "police.card").stat().st_mode) == 0o644


def test_init_prints_identity_on_stdout_and_notes_on_stderr(run: Run, tmp_path: Path) -> None:
    """keys init: the agency's fields are data (stdout); "wrote ..." notes go to stderr."""
    result = run(
        "keys", "init", "ngo", "--dir", tmp_path, "--passphrase-file", write_pass(tmp_path / "p")
    )
    assert result.returncode == 0, result.stderr
    assert fields(result.stdout)["agency"] == "ngo"
    assert "wrote" not in result.stdout
    assert str(tmp_path / "ngo.key") in result.stderr
    assert str(tmp_path / "ngo.card") in result.stderr


def test_init_refuses_to_overwrite_existing_keys(run: Run, tf: Path) -> None:
    """keys init over an existing AGENCY.key fails (exit 1) and leaves the old key intact."""
    key = tf / "keys" / "police.key"
    before = key.read_bytes()
    result = run(
        "keys",
        "init",
        "police",
        "--dir",
        tf / "keys",
        "--passphrase-file",
        tf / "keys" / "police.pass",
    )
    assert_error(result, 1, "already exists")
    assert key.read_bytes() == before


def test_init_invalid_agency_id_is_usage_error(run: Run, tmp_path: Path) -> None:
    """keys init with an invalid agency id exits 2 and writes nothing."""
    out = tmp_path / "keys"
    out.mkdir()
    result = run(
        "keys",
        "init",
        "Police North!",
        "--dir",
        out,
        "--passphrase-file",
        write_pass(tmp_path / "p"),
    )
    assert_error(result, 2, "not a valid agency id")
    assert list(out.iterdir()) == []


def test_init_without_any_passphrase_is_trust_error(run: Run, tmp_path: Path) -> None:
    """No --passphrase-file, no TFSHARE_PASSPHRASE and no TTY: exit 6, error and hint, no files."""
    out = tmp_path / "keys"
    out.mkdir()
    result = run("keys", "init", "police", "--dir", out)
    assert_error(result, 6, "no passphrase")
    assert list(out.iterdir()) == []


def test_init_empty_passphrase_file_is_trust_error(run: Run, tmp_path: Path) -> None:
    """An empty passphrase file is refused with exit 6 and nothing is written."""
    out = tmp_path / "keys"
    out.mkdir()
    empty = tmp_path / "empty.pass"
    empty.write_text("")
    result = run("keys", "init", "police", "--dir", out, "--passphrase-file", empty)
    assert_error(result, 6, "empty")
    assert list(out.iterdir()) == []


def test_init_takes_passphrase_from_environment(run: Run, tmp_path: Path) -> None:
    """TFSHARE_PASSPHRASE is used when no file is given; the key opens with that passphrase."""
    result = run(
        "keys",
        "init",
        "labour",
        "--dir",
        tmp_path,
        env={"TFSHARE_PASSPHRASE": "env passphrase for labour"},
    )
    assert result.returncode == 0, result.stderr
    identity = open_keyfile((tmp_path / "labour.key").read_bytes(), b"env passphrase for labour")
    assert identity.agency_id == "labour"


def test_init_json_is_one_object_on_stdout(run: Run, tmp_path: Path) -> None:
    """keys init --json prints exactly one JSON object (one line) on stdout and nothing else."""
    result = run(
        "keys",
        "init",
        "police",
        "--dir",
        tmp_path,
        "--json",
        "--passphrase-file",
        write_pass(tmp_path / "p"),
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    info = json.loads(lines[0])
    assert info["agency_id"] == "police"
    assert info["key"] == str(tmp_path / "police.key")
    assert info["card"] == str(tmp_path / "police.card")


def test_show_key_prints_agency_kids_and_fingerprint(run: Run, tf: Path) -> None:
    """keys show of a key file (no passphrase) prints agency, both kids and an 8x4 fingerprint."""
    result = run("keys", "show", tf / "keys" / "police.key")
    assert result.returncode == 0, result.stderr
    rows = fields(result.stdout)
    assert rows["agency"] == "police"
    assert KID.fullmatch(rows["signing kid"])
    assert KID.fullmatch(rows["encryption kid"])
    assert FINGERPRINT.fullmatch(rows["fingerprint"])
    assert "secret key file" in rows["file"]


def test_show_card_prints_agency_kids_and_fingerprint(run: Run, tf: Path) -> None:
    """keys show of a card prints agency, name, both kids and an 8x4 fingerprint."""
    result = run("keys", "show", tf / "keys" / "police.card")
    assert result.returncode == 0, result.stderr
    rows = fields(result.stdout)
    assert rows["agency"] == "police"
    assert rows["name"] == "Police agency"
    assert KID.fullmatch(rows["signing kid"])
    assert KID.fullmatch(rows["encryption kid"])
    assert FINGERPRINT.fullmatch(rows["fingerprint"])
    assert "agency card" in rows["file"]


def test_show_key_and_card_agree(run: Run, tf: Path) -> None:
    """The key file and the card of one agency show the same fingerprint and kids."""
    key = fields(run("keys", "show", tf / "keys" / "labour.key").stdout)
    card = fields(run("keys", "show", tf / "keys" / "labour.card").stdout)
    for label in ("agency", "fingerprint", "signing kid", "encryption kid"):
        assert key[label] == card[label]


def test_show_fingerprints_differ_between_agencies(run: Run, tf: Path) -> None:
    """Two agencies' cards have different fingerprints."""
    police = fields(run("keys", "show", tf / "keys" / "police.card").stdout)
    ngo = fields(run("keys", "show", tf / "keys" / "ngo.card").stdout)
    assert police["fingerprint"] != ngo["fingerprint"]


def test_show_json_is_one_object_on_stdout(run: Run, tf: Path) -> None:
    """keys show --json prints one JSON object on stdout, nothing on stderr."""
    result = run("keys", "show", "--json", tf / "keys" / "ngo.card")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    info = json.loads(lines[0])
    assert info["kind"] == "card"
    assert info["agency_id"] == "ngo"
    assert KID.fullmatch(info["kid_sig"])
    assert KID.fullmatch(info["kid_enc"])
    assert FINGERPRINT.fullmatch(info["fingerprint"])
    assert result.stderr == ""


def test_show_json_of_key_has_no_secret_fields(run: Run, tf: Path) -> None:
    """keys show --json of a key file reports public facts only."""
    result = run("keys", "show", "--json", tf / "keys" / "ngo.key")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["kind"] == "key"
    assert set(info) <= {"kind", "agency_id", "kid_sig", "kid_enc", "fingerprint", "path"}


def test_passphrase_file_uses_first_line_without_crlf(run: Run, tmp_path: Path) -> None:
    """Only the first line of a passphrase file counts, without its CR LF ending."""
    passfile = tmp_path / "p"
    passfile.write_bytes(b"first line words\r\nsecond line\n")
    result = run("keys", "init", "police", "--dir", tmp_path, "--passphrase-file", passfile)
    assert result.returncode == 0, result.stderr
    identity = open_keyfile((tmp_path / "police.key").read_bytes(), b"first line words")
    assert identity.agency_id == "police"
