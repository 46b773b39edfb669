"""``tfshare seal`` and ``tfshare open``: round trip, rejections, and stdout/stderr discipline."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tfshare.workflows.keys import describe

Run = Callable[..., subprocess.CompletedProcess[str]]
RunIn = Callable[[Path], Run]
Creds = Callable[[str], list[str]]

ALERT = Path(__file__).resolve().parents[2] / "examples" / "alert.json"
TASKFORCE = "tf-north"


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"{result.args}: exit {result.returncode}\n{result.stderr}"
    return result


def fields(stdout: str) -> dict[str, str]:
    """The aligned ``label  value`` lines before the body, as a dict."""
    rows: dict[str, str] = {}
    for line in stdout.splitlines():
        if line.startswith("{"):
            break
        parts = re.split(r"\s{2,}", line.strip(), maxsplit=1)
        if len(parts) == 2:
            rows[parts[0]] = parts[1]
    return rows


def body_of(stdout: str) -> Any:
    """The JSON body printed after the fields of a successful open."""
    return json.loads(stdout[stdout.index("\n{") + 1 :])


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("tfshare: error: ")]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("exchange")


@pytest.fixture(scope="module")
def mrun(run_in: RunIn, workdir: Path) -> Run:
    return run_in(workdir)


@pytest.fixture(scope="module")
def sealed(
    mrun: Run, creds: Creds, trust: list[str], workdir: Path
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """police seals examples/alert.json on "alerts" (all its readers): the file and the run."""
    out = workdir / "alert.tfenv"
    result = mrun(
        "seal", *creds("police"), *trust, "--state", workdir / "police-state",
        "--channel", "alerts", "--schema", "tf.alert/1", "--in", ALERT, "--out", out,
    )  # fmt: skip
    return out, ok(result)


@pytest.fixture(scope="module")
def alert(sealed: tuple[Path, subprocess.CompletedProcess[str]]) -> Path:
    """The .tfenv file police sealed to the alerts channel."""
    return sealed[0]


@pytest.fixture(scope="module")
def opened(
    mrun: Run, creds: Creds, trust: list[str], alert: Path, workdir: Path
) -> subprocess.CompletedProcess[str]:
    """ngo opens the alert with a fresh state (human-readable output)."""
    return mrun("open", alert, *creds("ngo"), *trust, "--state", workdir / "ngo-state")


@pytest.fixture(scope="module")
def police_only(mrun: Run, creds: Creds, trust: list[str], workdir: Path) -> Path:
    """An alert sealed by labour --to police only."""
    out = workdir / "police-only.tfenv"
    ok(
        mrun(
            "seal", *creds("labour"), *trust, "--state", workdir / "labour-state",
            "--channel", "alerts", "--to", "police", "--schema", "tf.alert/1",
            "--in", ALERT, "--out", out,
        )
    )  # fmt: skip
    return out


@pytest.fixture(scope="module")
def not_recipient(
    mrun: Run, creds: Creds, trust: list[str], police_only: Path, workdir: Path
) -> subprocess.CompletedProcess[str]:
    """ngo tries to open the police-only alert (human-readable output)."""
    return mrun("open", police_only, *creds("ngo"), *trust, "--state", workdir / "ngo-state-2")


def test_seal_prints_ids_on_stdout_and_note_on_stderr(
    sealed: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    """seal: msg_id and env_hash are data (stdout); the "sealed ... ->" note is on stderr."""
    out, result = sealed
    rows = fields(result.stdout)
    assert re.fullmatch(r"[0-9a-f]{32}", rows["msg_id"])
    assert re.fullmatch(r"[0-9a-f]{64}", rows["env_hash"])
    assert "sealed" not in result.stdout
    assert f"-> {out}" in result.stderr
    assert out.stat().st_size > 0


def test_seal_json_is_one_object(run: Run, creds: Creds, trust: list[str], tmp_path: Path) -> None:
    """seal --json prints one JSON object with the recipients and output path, stderr empty."""
    out = tmp_path / "a.tfenv"
    result = ok(
        run(
            "seal", *creds("police"), *trust, "--state", "state", "--json",
            "--channel", "alerts", "--schema", "tf.alert/1", "--in", ALERT, "--out", out,
        )
    )  # fmt: skip
    (line,) = result.stdout.splitlines()
    info = json.loads(line)
    assert info["out"] == str(out)
    assert set(info["recipients"]) == {"police", "ngo", "labour"}
    assert (info["channel"], info["schema"]) == ("alerts", "tf.alert/1")
    assert result.stderr == ""


def test_open_prints_verified_sender_and_fingerprint(
    opened: subprocess.CompletedProcess[str], tf: Path
) -> None:
    """open shows the verified sender and the sender's fingerprint (as on its card)."""
    rows = fields(ok(opened).stdout)
    assert rows["verified sender"] == "police"
    assert rows["fingerprint"] == describe(tf / "keys" / "police.card").fingerprint


def test_open_prints_channel_and_schema(opened: subprocess.CompletedProcess[str]) -> None:
    """open shows the channel with its task force and the schema."""
    rows = fields(ok(opened).stdout)
    assert rows["channel"] == f"alerts @ {TASKFORCE}"
    assert rows["schema"].startswith("tf.alert/1 ")


def test_open_prints_the_body(opened: subprocess.CompletedProcess[str]) -> None:
    """open prints the decrypted body as JSON after the fields, equal to what was sealed."""
    body = body_of(ok(opened).stdout)
    sent = json.loads(ALERT.read_text())
    for key in ("title", "summary", "severity", "category", "indicators", "response", "expires"):
        assert body[key] == sent[key]


def test_clean_open_prints_nothing_on_stderr(
    opened: subprocess.CompletedProcess[str],
) -> None:
    """A clean delivery prints nothing on stderr (at the default log level)."""
    assert ok(opened).stderr == ""


def test_open_json_is_delivered_with_body(
    run: Run, creds: Creds, trust: list[str], alert: Path
) -> None:
    """open --json prints one object: outcome "delivered", sender, channel, schema and body."""
    result = ok(run("open", alert, *creds("labour"), *trust, "--state", "state", "--json"))
    (line,) = result.stdout.splitlines()
    info = json.loads(line)
    assert info["outcome"] == "delivered"
    assert (info["sender"], info["channel"], info["schema"]) == ("police", "alerts", "tf.alert/1")
    assert info["taskforce"] == TASKFORCE
    assert info["body"]["summary"] == json.loads(ALERT.read_text())["summary"]


def test_open_uses_default_state_under_tfshare_home(
    run: Run, creds: Creds, trust: list[str], alert: Path, tmp_path: Path
) -> None:
    """Without --state, the replay state lives in $TFSHARE_HOME/state/AGENCY."""
    ok(run("open", alert, *creds("labour"), *trust))
    assert (tmp_path / "home" / "state" / "labour").is_dir()


def test_open_twice_with_same_state_is_duplicate(
    run: Run, creds: Creds, trust: list[str], alert: Path
) -> None:
    """Opening the same envelope again with the same --state exits 3 with DUPLICATE on stderr."""
    ok(run("open", alert, *creds("police"), *trust, "--state", "state"))
    again = run("open", alert, *creds("police"), *trust, "--state", "state")
    assert again.returncode == 3
    assert "DUPLICATE" in again.stderr
    assert again.stdout == ""


def test_open_twice_with_other_state_delivers_again(
    run: Run, creds: Creds, trust: list[str], alert: Path
) -> None:
    """Replay protection is per state: a different --state delivers the message again."""
    ok(run("open", alert, *creds("police"), *trust, "--state", "one"))
    ok(run("open", alert, *creds("police"), *trust, "--state", "two"))


def test_non_recipient_is_rejected(not_recipient: subprocess.CompletedProcess[str]) -> None:
    """A reader not in --to (ngo, for a police-only alert) gets exit 3 and E_NOT_RECIPIENT."""
    assert not_recipient.returncode == 3
    (error,) = error_lines(not_recipient.stderr)
    assert "E_NOT_RECIPIENT" in error


def test_rejected_open_prints_nothing_on_stdout(
    not_recipient: subprocess.CompletedProcess[str],
) -> None:
    """A rejected open without --json writes only to stderr."""
    assert not_recipient.returncode == 3
    assert not_recipient.stdout == ""


def test_rejected_open_json_reports_code(
    run: Run, creds: Creds, trust: list[str], police_only: Path
) -> None:
    """open --json of a rejected envelope prints one object with outcome "rejected" and code."""
    result = run("open", police_only, *creds("ngo"), *trust, "--state", "state", "--json")
    assert result.returncode == 3
    (line,) = result.stdout.splitlines()
    info = json.loads(line)
    assert (info["outcome"], info["code"]) == ("rejected", "E_NOT_RECIPIENT")


def test_addressed_recipient_opens_police_only_alert(
    run: Run, creds: Creds, trust: list[str], police_only: Path
) -> None:
    """The one agency named in --to opens the alert."""
    result = ok(run("open", police_only, *creds("police"), *trust, "--state", "state", "--json"))
    info = json.loads(result.stdout)
    assert (info["sender"], info["recipients"]) == ("labour", ["police"])


def test_outsider_cannot_seal(run: Run, creds: Creds, trust: list[str], tmp_path: Path) -> None:
    """An agency that is not in the roster cannot seal: exit 6, no .tfenv written."""
    result = run(
        "seal", *creds("outsider"), *trust, "--state", "state",
        "--channel", "alerts", "--schema", "tf.alert/1", "--in", ALERT, "--out", "x.tfenv",
    )  # fmt: skip
    assert result.returncode == 6
    assert len(error_lines(result.stderr)) == 1
    assert not (tmp_path / "x.tfenv").exists()


def test_outsider_cannot_open(run: Run, creds: Creds, trust: list[str], alert: Path) -> None:
    """An agency that is not in the roster cannot open an alert: exit 3, nothing on stdout."""
    result = run("open", alert, *creds("outsider"), *trust, "--state", "state")
    assert result.returncode == 3
    assert result.stdout == ""


def test_reader_only_cannot_seal(run: Run, creds: Creds, trust: list[str], tmp_path: Path) -> None:
    """ngo may read but not write "alerts": seal exits 6 and writes nothing."""
    result = run(
        "seal", *creds("ngo"), *trust, "--state", "state",
        "--channel", "alerts", "--schema", "tf.alert/1", "--in", ALERT, "--out", "x.tfenv",
    )  # fmt: skip
    assert result.returncode == 6
    assert "may not write" in result.stderr
    assert not (tmp_path / "x.tfenv").exists()


def test_tampered_envelope_is_rejected(
    run: Run, creds: Creds, trust: list[str], alert: Path, tmp_path: Path
) -> None:
    """One flipped bit inside the ciphertext: exit 3 with E_BAD_SIG, nothing on stdout."""
    data = bytearray(alert.read_bytes())
    data[-100] ^= 0x01
    tampered = tmp_path / "tampered.tfenv"
    tampered.write_bytes(bytes(data))
    result = run("open", tampered, *creds("labour"), *trust, "--state", "state")
    assert result.returncode == 3
    (error,) = error_lines(result.stderr)
    assert "E_BAD_SIG" in error
    assert result.stdout == ""


def test_open_takes_passphrase_from_environment(
    run: Run, tf: Path, trust: list[str], alert: Path
) -> None:
    """open with TFSHARE_PASSPHRASE (no --passphrase-file) delivers the alert."""
    passphrase = (tf / "keys" / "ngo.pass").read_text().splitlines()[0]
    result = run(
        "open", alert, "--key", tf / "keys" / "ngo.key", *trust, "--state", "state", "--json",
        env={"TFSHARE_PASSPHRASE": passphrase},
    )  # fmt: skip
    assert json.loads(ok(result).stdout)["outcome"] == "delivered"


def test_open_max_age_refuses_old_message(
    run: Run, creds: Creds, trust: list[str], alert: Path
) -> None:
    """open --max-age-days smaller than the message's age: exit 3 with E_STALE."""
    result = run(
        "open", alert, *creds("labour"), *trust, "--state", "state", "--max-age-days", "0.0000001"
    )
    assert result.returncode == 3
    assert "E_STALE" in result.stderr
