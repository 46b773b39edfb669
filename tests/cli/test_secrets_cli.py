"""Planted secrets never leak: passphrases and seeds appear in no output and no log line; the
plaintext appears only as the data of a successful open (its stdout), never in files or logs.

Every command runs with ``--log-level debug`` so that every log line is emitted (JSON, on stderr).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tfshare import roster as R
from tfshare.keyfile import open_keyfile
from tfshare.registry.book import shipped
from tfshare.seal import seal

Run = Callable[..., subprocess.CompletedProcess[str]]
RunIn = Callable[[Path], Run]

ALERT = Path(__file__).resolve().parents[2] / "examples" / "alert.json"
PASS_MARKER = "PASSPHRASE-MARKER-c41e9b"
PLAIN_MARKER = "PLAINTEXT-MARKER-7f3a"
AGENCIES = ("coord", "police", "ngo", "labour")


@dataclass(frozen=True)
class Record:
    """One command run: a label for failure messages, its result, and whether it is a
    successful open (whose stdout is the plaintext by design)."""

    label: str
    result: subprocess.CompletedProcess[str]
    delivered: bool = False

    def outputs(self) -> Iterator[tuple[str, str]]:
        yield f"{self.label} (stdout)", self.result.stdout
        yield f"{self.label} (stderr)", self.result.stderr


@dataclass
class Scene:
    """Everything the module's commands produced, for the tests to search."""

    records: list[Record]
    passphrases: list[str]
    seeds: list[bytes]  # newcomer's first, then police's: signing, encryption, NATS
    nkey_seeds: list[str]
    key_files: list[Path]
    card_files: list[Path]
    envelopes: list[Path]


def alert_body(**changes: Any) -> str:
    body = json.loads(ALERT.read_text())
    body["summary"] = f"Witness statement {PLAIN_MARKER}: the van leaves at six."
    body.update(changes)
    return json.dumps(body)


def crafted_invalid_envelope(tf: Path, passphrase: bytes, out: Path) -> Path:
    """A correctly signed alert from police whose body breaks the schema with plaintext in
    the offending value: built with the library, since ``tfshare seal`` refuses such bodies."""
    identity = open_keyfile((tf / "keys" / "police.key").read_bytes(), passphrase)
    now_ms = time.time_ns() // 1_000_000
    trusted, _ = R.verify_roster(
        (tf / "taskforce.roster").read_bytes(),
        anchor=R.decode_anchor((tf / "taskforce.anchor").read_bytes()),
        state=None,
        now_ms=now_ms,
    )
    schema = shipped().lookup("tf.alert/1")
    assert schema is not None
    body = json.loads(alert_body(severity=f"it's {PLAIN_MARKER}"))
    sealed = seal(
        identity=identity,
        roster=trusted,
        channel="alerts",
        to=None,
        schema=schema,
        body=msgspec.msgpack.encode(body),
        seq=1000,
        now_ms=now_ms,
        rng=os.urandom,
    )
    out.write_bytes(sealed.data)
    return out


@pytest.fixture(scope="module")
def scene(run_in: RunIn, tf: Path, tmp_path_factory: pytest.TempPathFactory) -> Scene:
    """Run every command once, with planted passphrase and plaintext markers."""
    work = tmp_path_factory.mktemp("secrets")
    base = run_in(work)
    keys = tf / "keys"
    records: list[Record] = []

    def cli(label: str, *args: str | Path, delivered: bool = False, **kw: Any) -> None:
        records.append(Record(label, base("--log-level", "debug", *args, **kw), delivered))

    def creds(agency: str) -> list[str | Path]:
        return ["--key", keys / f"{agency}.key", "--passphrase-file", keys / f"{agency}.pass"]

    trust: list[str | Path] = ["--roster", tf / "taskforce.roster"]
    trust += ["--anchor", tf / "taskforce.anchor"]
    seal_args: list[str | Path] = ["--channel", "alerts", "--schema", "tf.alert/1"]

    # keys: a new agency with a planted passphrase, from a file and from the environment
    (work / "new.pass").write_text(f"{PASS_MARKER} new agency\n")
    (work / "keys").mkdir()
    cli("keys init", "keys", "init", "newcomer", "--dir", work / "keys",
        "--passphrase-file", work / "new.pass")  # fmt: skip
    cli("keys init --json (env)", "keys", "init", "envcomer", "--dir", work / "keys", "--json",
        env={"TFSHARE_PASSPHRASE": f"{PASS_MARKER} env agency"})  # fmt: skip
    cli("keys init (exists)", "keys", "init", "newcomer", "--dir", work / "keys",
        "--passphrase-file", work / "new.pass")  # fmt: skip
    cli("keys show key", "keys", "show", work / "keys" / "newcomer.key")
    cli("keys show --json key", "keys", "show", "--json", work / "keys" / "envcomer.key")
    cli("keys show card", "keys", "show", work / "keys" / "newcomer.card")

    # roster: edit a copy, sign it (passphrase), verify it
    roster = work / "edited.roster"
    shutil.copyfile(tf / "taskforce.roster", roster)
    cli("roster grant", "roster", "grant", roster, "coord", "--channel", "alerts", "--read")
    (work / "wrong.pass").write_text(f"{PASS_MARKER} wrong\n")
    cli("roster sign (wrong passphrase)", "roster", "sign", roster, "--key", keys / "coord.key",
        "--passphrase-file", work / "wrong.pass")  # fmt: skip
    cli("roster sign", "roster", "sign", roster, *creds("coord"))
    cli("roster verify", "roster", "verify", roster, "--anchor", tf / "taskforce.anchor")
    cli("roster show --json", "roster", "show", "--json", roster)

    # seal: the alert with a planted plaintext marker; invalid variants with it too
    body = work / "alert.json"
    body.write_text(alert_body())
    a, b, c = work / "a.tfenv", work / "b.tfenv", work / "c.tfenv"
    cli("seal", "seal", *creds("police"), *trust, "--state", work / "s-police", *seal_args,
        "--in", body, "--out", a)  # fmt: skip
    cli("seal --json", "seal", *creds("police"), *trust, "--state", work / "s-police",
        *seal_args, "--in", body, "--out", b, "--json")  # fmt: skip
    cli("seal --to police", "seal", *creds("labour"), *trust, "--state", work / "s-labour",
        *seal_args, "--to", "police", "--in", body, "--out", c)  # fmt: skip
    invalid = {
        "invalid severity": alert_body(severity="extreme"),
        "quoted enum value": alert_body(severity=f"it's {PLAIN_MARKER}"),
        "unknown field": alert_body(**{PLAIN_MARKER: "x"}),
        "summary too long": alert_body(summary=f"{PLAIN_MARKER} " * 500),
    }
    for label, text in invalid.items():
        path = work / f"{label.replace(' ', '-')}.json"
        path.write_text(text)
        cli(f"seal ({label})", "seal", *creds("police"), *trust, "--state", work / "s-police",
            *seal_args, "--in", path, "--out", work / "never.tfenv")  # fmt: skip
    cli("seal (no passphrase)", "seal", "--key", keys / "police.key", *trust,
        "--state", work / "s-police", *seal_args, "--in", body,
        "--out", work / "never.tfenv")  # fmt: skip

    # open: deliveries, duplicates, rejections, a wrong passphrase (also with --debug)
    ngo = [*creds("ngo"), *trust, "--state", work / "s-ngo"]
    cli("open", "open", a, *ngo, delivered=True)
    cli("open --json", "open", b, *ngo, "--json", delivered=True)
    cli("open (duplicate)", "open", a, *ngo)
    cli("open --json (duplicate)", "open", b, *ngo, "--json")
    cli("open (not recipient)", "open", c, *ngo)
    cli("open --json (not recipient)", "open", c, *ngo, "--json")
    tampered = bytearray(a.read_bytes())
    tampered[-100] ^= 0x01
    (work / "tampered.tfenv").write_bytes(bytes(tampered))
    cli("open (tampered)", "open", work / "tampered.tfenv", *creds("labour"), *trust,
        "--state", work / "s-labour-in")  # fmt: skip
    cli("open --json (tampered)", "open", work / "tampered.tfenv", *creds("labour"), *trust,
        "--state", work / "s-labour-in", "--json")  # fmt: skip
    wrong: list[str | Path] = ["--key", keys / "ngo.key", "--passphrase-file", work / "wrong.pass"]
    cli("open (wrong passphrase)", "open", a, *wrong, *trust, "--state", work / "s-x")
    cli("--debug open (wrong passphrase)", "--debug", "open", a, *wrong, *trust,
        "--state", work / "s-x")  # fmt: skip
    police_pass = (keys / "police.pass").read_text().splitlines()[0]
    cli("open (passphrase from env)", "open", a, "--key", keys / "police.key", *trust,
        "--state", work / "s-police-in", env={"TFSHARE_PASSPHRASE": police_pass},
        delivered=True)  # fmt: skip
    crafted = crafted_invalid_envelope(tf, police_pass.encode(), work / "crafted.tfenv")
    cli("open --json (invalid body)", "open", crafted, *ngo, "--json")
    cli("open (invalid body)", "open", crafted, *creds("labour"), *trust,
        "--state", work / "s-labour-2")  # fmt: skip

    passphrases = [(keys / f"{a}.pass").read_text().splitlines()[0] for a in AGENCIES]
    passphrases += [PASS_MARKER]
    seeds: list[bytes] = []
    nkey_seeds: list[str] = []
    for path, passphrase in [
        (work / "keys" / "newcomer.key", f"{PASS_MARKER} new agency"),
        (keys / "police.key", police_pass),
    ]:
        identity = open_keyfile(path.read_bytes(), passphrase.encode())
        seeds += identity.secret_material()
        nkey_seeds.append(identity.nats_seed_encoded().decode("ascii"))
    return Scene(
        records=records,
        passphrases=passphrases,
        seeds=seeds,
        nkey_seeds=nkey_seeds,
        key_files=[work / "keys" / "newcomer.key", work / "keys" / "envcomer.key"],
        card_files=[work / "keys" / "newcomer.card", work / "keys" / "envcomer.card"],
        envelopes=[a, b, c],
    )


def log_lines(scene: Scene) -> list[tuple[str, dict[str, Any]]]:
    """Every structured log line (JSON objects on stderr), with the command that wrote it."""
    found: list[tuple[str, dict[str, Any]]] = []
    for record in scene.records:
        for line in record.result.stderr.splitlines():
            if line.startswith("{"):
                found.append((record.label, json.loads(line)))
    return found


def test_every_command_ran_as_expected(scene: Scene) -> None:
    """The scene is what it claims: deliveries succeeded and the rest failed or succeeded."""
    codes = {r.label: r.result.returncode for r in scene.records}
    assert codes["open"] == codes["open --json"] == codes["open (passphrase from env)"] == 0
    assert codes["seal"] == codes["seal --json"] == codes["roster sign"] == 0
    assert codes["open (duplicate)"] == codes["open (not recipient)"] == 3
    assert codes["open (tampered)"] == codes["open --json (invalid body)"] == 3
    assert codes["open (wrong passphrase)"] == codes["roster sign (wrong passphrase)"] == 6
    assert codes["seal (quoted enum value)"] == codes["seal (unknown field)"] == 5


def test_debug_log_lines_are_emitted(scene: Scene) -> None:
    """--log-level debug produced log lines for sealing, delivery, duplicates and rejections."""
    events = {line["event"] for _, line in log_lines(scene)}
    expected = {"envelope_sealed", "envelope_delivered", "envelope_duplicate", "envelope_rejected"}
    assert expected <= events


def test_passphrases_absent_from_all_output(scene: Scene) -> None:
    """No passphrase (files, environment, wrong ones) appears in any stdout or stderr."""
    leaks = [
        where
        for record in scene.records
        for where, text in record.outputs()
        for secret in scene.passphrases
        if secret in text
    ]
    assert leaks == []


def test_passphrases_absent_from_log_lines(scene: Scene) -> None:
    """No passphrase appears in any field of any log line."""
    leaks = [
        label
        for label, line in log_lines(scene)
        for secret in scene.passphrases
        if secret in json.dumps(line)
    ]
    assert leaks == []


def test_seeds_absent_from_all_output(scene: Scene) -> None:
    """No secret seed (raw, hex or as a NATS nkey seed) appears in any output."""
    forms = [s.hex() for s in scene.seeds] + scene.nkey_seeds
    leaks = [
        where
        for record in scene.records
        for where, text in record.outputs()
        for f in forms
        if f in text
    ]
    assert leaks == []


def test_plaintext_in_stdout_of_successful_opens(scene: Scene) -> None:
    """The planted plaintext is the data of each successful open (so the marker is real)."""
    delivered = [r for r in scene.records if r.delivered]
    assert len(delivered) == 3
    for record in delivered:
        assert record.result.returncode == 0, record.result.stderr
        assert PLAIN_MARKER in record.result.stdout, record.label


def test_plaintext_absent_from_stderr_of_every_command(scene: Scene) -> None:
    """The plaintext never appears on stderr (notes, errors, log lines), even of an open."""
    leaks = [r.label for r in scene.records if PLAIN_MARKER in r.result.stderr]
    assert leaks == []


def test_plaintext_absent_from_stdout_of_other_commands(scene: Scene) -> None:
    """Outside a successful open, no stdout carries the plaintext (seal, rejections, --json)."""
    leaks = [r.label for r in scene.records if not r.delivered and PLAIN_MARKER in r.result.stdout]
    assert leaks == []


def test_plaintext_absent_from_log_lines(scene: Scene) -> None:
    """No log line carries the plaintext, including those of rejected invalid bodies."""
    leaks = [label for label, line in log_lines(scene) if PLAIN_MARKER in json.dumps(line)]
    assert leaks == []


def test_invalid_enum_value_is_not_echoed(scene: Scene) -> None:
    """A refused body does not echo its offending value, even one containing a quote."""
    record = next(r for r in scene.records if r.label == "seal (quoted enum value)")
    assert "$.severity" in record.result.stderr
    assert PLAIN_MARKER not in record.result.stderr


def test_invalid_body_of_signed_envelope_is_not_echoed(scene: Scene) -> None:
    """A receiver's E_BODY rejection names the field, not the decrypted value."""
    record = next(r for r in scene.records if r.label == "open --json (invalid body)")
    assert json.loads(record.result.stdout)["code"] == "E_BODY"
    assert PLAIN_MARKER not in record.result.stdout + record.result.stderr


def test_key_files_hold_no_passphrase(scene: Scene) -> None:
    """The key files written by keys init do not contain the passphrase."""
    for path in scene.key_files:
        data = path.read_bytes()
        assert PASS_MARKER.encode() not in data
        assert PASS_MARKER.encode().hex().encode() not in data


def test_key_file_holds_no_raw_seed(scene: Scene) -> None:
    """A key file holds its seeds encrypted: no raw or hex seed appears in its bytes."""
    data = scene.key_files[0].read_bytes()
    for seed in scene.seeds[:3]:  # the newcomer's signing, encryption and NATS seeds
        assert seed not in data
        assert seed.hex().encode() not in data
    assert scene.nkey_seeds[0].encode() not in data


def test_cards_hold_no_secret(scene: Scene) -> None:
    """The public cards contain neither the passphrase nor any seed."""
    for path in scene.card_files:
        data = path.read_bytes()
        assert PASS_MARKER.encode() not in data
        for seed in scene.seeds:
            assert seed not in data
        for nkey_seed in scene.nkey_seeds:
            assert nkey_seed.encode() not in data


def test_envelopes_hold_no_plaintext(scene: Scene) -> None:
    """The sealed .tfenv files do not contain the plaintext marker."""
    for path in scene.envelopes:
        assert PLAIN_MARKER.encode() not in path.read_bytes()
