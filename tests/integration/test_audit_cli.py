"""``tfshare audit`` end to end: a coordinator goes from "what happened to message X?" to a
proof that anyone holding the task force's anchor checks offline.

For the whole module, as real subprocesses: a nats-server (``tfshare broker up``), the agents
of ngo and labour (``tfshare agent run``: each receipts every message it processed to the
coordinators) and coord's audit service (``tfshare audit serve``). The task force is the
kit's, with a "receipts" channel (members write, coordinators read), on disk as key,
passphrase, roster and anchor files. police publishes one alert with ``tfshare publish``;
each test then asks the CLI about it. Offline checks run in a home of their own ("court"),
with nothing but the files they are given.

Every failure is one ``tfshare: error:`` line, then one ``tfshare: hint:`` line, the
documented exit code, nothing on stdout and no traceback (``failure``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from livekit import free_port
from test_bad_input_live import Files, agency_files, clean_env, failure, ok, tfshare
from test_live_cli import Background, wait_for
from tfkit import TaskForce, build_taskforce

from tfshare import roster as R
from tfshare.audit.disclosure import decode_disclosure
from tfshare.encoding import encode

TFSHARE = Path(sys.executable).parent / "tfshare"
REPO = Path(__file__).resolve().parents[2]
ALERT = REPO / "examples" / "alert.json"
TITLE = json.loads(ALERT.read_text())["title"]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def home(files: Files) -> Path:
    return files.root / "home"


def trust(files: Files) -> list[str]:
    """The --roster and --anchor of an agency's task force: all an offline checker needs."""
    return ["--roster", str(files.root / "tf.roster"), "--anchor", str(files.root / "tf.anchor")]


def spawn(files: Files, name: str, *args: str | os.PathLike[str]) -> Background:
    """Start tfshare in the background as ``files``' agency (own session, output in files)."""
    home(files).mkdir(parents=True, exist_ok=True)
    out, err = files.root / f"{name}.out", files.root / f"{name}.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(
            [str(TFSHARE), *(os.fspath(a) for a in args)],
            cwd=home(files),
            env=clean_env(home(files)),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
    return Background(process, out, err)


def flip(source: Path, target: Path, position: int | None = None) -> Path:
    """A copy of ``source`` with one bit of the byte at ``position`` (default: the middle
    one) flipped."""
    data = bytearray(source.read_bytes())
    data[len(data) // 2 if position is None else position] ^= 0x01
    target.write_bytes(bytes(data))
    return target


@dataclasses.dataclass(frozen=True)
class Scene:
    tf: TaskForce
    agencies: dict[str, Files]
    audit: Background
    msg_id: str
    index: int  # the alert's entry in coord's audit log
    rival: Files  # a task force of the same name with another coordinator
    court: Path  # the home of an offline checker: no key, no state
    url: str  # the broker

    @property
    def coord(self) -> Files:
        return self.agencies["coord"]

    def trace(self, *extra: str, agency: str = "coord") -> subprocess.CompletedProcess[str]:
        files = self.agencies[agency]
        return tfshare(home(files), "audit", "trace", *extra, *files.args())

    def check(self, *args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
        return tfshare(self.court, "audit", "check", *args)


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    root = tmp_path_factory.mktemp("audit-cli")
    tf = build_taskforce(now_ms=now_ms(), receipts=True)
    agencies = {a: agency_files(tf, a, root / a) for a in ("coord", "police", "ngo", "labour")}
    rival_tf = build_taskforce(coordinators=("rival",), members=(), outsiders=(), now_ms=now_ms())
    rival = agency_files(rival_tf, "rival", root / "rival")
    coord = agencies["coord"]
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    running: list[Background] = []
    try:
        broker = spawn(coord, "broker", "broker", "up", *trust(coord),
                       "--dir", root / "broker", "--port", str(port))  # fmt: skip
        running.append(broker)
        broker.wait_stderr("listening on")
        for agency in ("ngo", "labour"):
            files = agencies[agency]
            running.append(spawn(files, "agent", "agent", "run", *files.args(), "--server", url))
        audit = spawn(coord, "audit", "audit", "serve", *coord.args(), "--server", url,
                      "--every", "1", "--interval", "0.5")  # fmt: skip
        running.append(audit)
        for process in running[1:]:
            process.wait_stderr("consuming from")

        police = agencies["police"]
        published = tfshare(home(police), "publish", "alert", "--channel", "alerts",
                            "--file", ALERT, *police.args(), "--server", url, "--json")  # fmt: skip
        msg_id = json.loads(ok(published).stdout)["msg_id"]
        assert re.fullmatch(r"[0-9a-f]{32}", msg_id), published.stdout
        traced: dict[str, object] = {}

        def logged_and_receipted() -> bool:
            result = tfshare(home(coord), "audit", "trace", msg_id, "--json", *coord.args())
            if result.returncode != 0:  # not logged yet (exit 1)
                return False
            traced.update(json.loads(result.stdout))
            receipts = traced["receipts"]
            inclusion = traced["inclusion"]
            assert isinstance(receipts, list) and isinstance(inclusion, dict)
            return len(receipts) == 2 and bool(inclusion["verified"])

        assert wait_for(logged_and_receipted, timeout=15, interval=0.3), (
            f"{traced}\n{audit.stderr()}"
        )
        index = traced["index"]
        assert isinstance(index, int)
        yield Scene(tf, agencies, audit, msg_id, index, rival, root / "court", url)
    finally:
        for process in reversed(running):
            process.cleanup()


@pytest.fixture(scope="module")
def bundle(scene: Scene, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """coord's ``audit prove`` of the alert."""
    out = tmp_path_factory.mktemp("proof") / "alert.tfproof"
    result = ok(tfshare(home(scene.coord), "audit", "prove", scene.msg_id, "--out", out,
                        *scene.coord.args()))  # fmt: skip
    assert result.stdout == f"{out}\n"
    assert "proof bundle against the signed checkpoint of size" in result.stderr
    return out


def test_trace_shows_the_sender_the_receipts_and_the_checked_inclusion(scene: Scene) -> None:
    """``audit trace --json``: police sent it on alerts, ngo and labour accepted it (their
    receipts are later entries), and its inclusion in the signed checkpoint was verified."""
    traced = json.loads(ok(scene.trace(scene.msg_id, "--json")).stdout)
    entry = traced["entry"]
    assert (entry["type"], entry["msg_id"]) == ("message", scene.msg_id)
    assert (entry["sender"], entry["channel"]) == ("police", "alerts")
    assert traced["inclusion"]["verified"] is True
    assert traced["inclusion"]["checkpoint_size"] > traced["index"]
    receipts = sorted(traced["receipts"], key=lambda r: r["receiver"])
    assert [(r["receiver"], r["outcome"], r["code"]) for r in receipts] == [
        ("labour", "accepted", None),
        ("ngo", "accepted", None),
    ]
    assert all(r["index"] > traced["index"] for r in receipts)
    assert traced["parents"] == [] and traced["children"] == []

    shown = ok(scene.trace(scene.msg_id))
    assert re.search(r"^sender\s+police \(signature verified by the audit service\)$",
                     shown.stdout, re.MULTILINE), shown.stdout  # fmt: skip
    assert re.search(r"^channel\s+alerts$", shown.stdout, re.MULTILINE), shown.stdout
    assert "proved in signed checkpoint of size" in shown.stdout
    for receiver in ("labour", "ngo"):
        assert re.search(rf"^receipt\s+{receiver}: accepted at ", shown.stdout, re.MULTILINE)


# These two need the audit service running: before the test that stops it.
def test_any_member_gets_a_proof_from_the_broker_and_it_checks_offline(
    scene: Scene, tmp_path: Path
) -> None:
    """police (a member without the log) asks the running audit service over NATS: the bundle
    it writes is checked against its own roster on the way in, and again offline by the
    court. Then a consistency proof from the first checkpoint to the latest."""
    police = scene.agencies["police"]
    out = tmp_path / "from-broker.tfproof"
    result = ok(tfshare(home(police), "audit", "prove", scene.msg_id, "--out", out,
                        "--from-broker", *police.args(), "--server", scene.url))  # fmt: skip
    assert result.stdout == f"{out}\n"
    assert f"entry {scene.index} in the checkpoint of size" in result.stderr
    assert "signed by tfshare/nl-north/audit" in result.stderr
    checked = ok(scene.check(out, *trust(scene.coord)))
    assert f"message {scene.msg_id} from police" in checked.stdout

    ngo = scene.agencies["ngo"]
    proved = json.loads(ok(tfshare(home(ngo), "audit", "consistency", "1", "--json",
                                   *ngo.args(), "--server", scene.url)).stdout)  # fmt: skip
    assert proved["old_size"] == 1 and proved["new_size"] > scene.index
    assert proved["new_checkpoint"].startswith("tfshare/nl-north/audit\n")
    known = tmp_path / "latest.checkpoint"
    known.write_text(proved["new_checkpoint"])
    again = json.loads(ok(tfshare(home(ngo), "audit", "consistency", "--known", known, "--json",
                                  *ngo.args(), "--server", scene.url)).stdout)  # fmt: skip
    assert again["old_size"] == proved["new_size"]
    assert again["old_root"] == proved["new_root"]


def test_a_proof_request_for_an_unknown_message_is_a_clean_failure(scene: Scene) -> None:
    police = scene.agencies["police"]
    result = tfshare(home(police), "audit", "prove", "ab" * 16, "--out", police.root / "x",
                     "--from-broker", *police.args(), "--server", scene.url)  # fmt: skip
    error, _hint = failure(result, 1)
    assert "E_NOT_FOUND" in error
    assert not (police.root / "x").exists()


def test_verify_passes_and_a_changed_entry_is_named(scene: Scene, tmp_path: Path) -> None:
    """``audit verify`` recomputes the log (exit 0); once one byte of the alert's entry is
    changed in audit.db (the service stopped), it exits 6 naming that entry."""
    verified = ok(tfshare(home(scene.coord), "audit", "verify", *scene.coord.args()))
    assert re.fullmatch(
        r"audit log verified: \d+ entries, \d+ checkpoints signed by the roster's "
        r"coordinators, each consistent with the one before\n",
        verified.stdout,
    ), verified.stdout

    # The service stops on SIGINT, signing what was still unsigned, exit 0.
    code, _ = scene.audit.signal_and_wait(signal.SIGINT, timeout=10)
    assert code == 0, scene.audit.stderr()
    assert re.search(r"audit service stopped: \d+ appended, .* checkpoints signed",
                     scene.audit.stderr())  # fmt: skip
    # Tamper with a copy (the other tests keep reading the original).
    copy = Files(Path(shutil.copytree(scene.coord.root, tmp_path / "coord")), "coord")
    db = sqlite3.connect(copy.state / "audit.db")
    try:
        (data,) = db.execute("SELECT entry FROM entries WHERE idx = ?", (scene.index,)).fetchone()
        changed = bytearray(data)
        changed[-1] ^= 0x01
        db.execute("UPDATE entries SET entry = ? WHERE idx = ?", (bytes(changed), scene.index))
        db.commit()
    finally:
        db.close()

    error, hint = failure(tfshare(home(copy), "audit", "verify", *copy.args()), 6)
    assert error.startswith("E_LOG_TAMPERED: ")
    assert f"entry {scene.index} was changed" in error
    assert "keep the file as evidence" in hint
    ok(tfshare(home(scene.coord), "audit", "verify", *scene.coord.args()))


def test_a_proof_bundle_checks_offline_and_a_damaged_or_foreign_one_does_not(
    scene: Scene, bundle: Path, tmp_path: Path
) -> None:
    """``audit check`` with the roster and anchor: exit 0 "proof verified"; a bundle with one
    flipped bit, or checked against another task force's roster and anchor, exit 6."""
    checked = ok(scene.check(bundle, *trust(scene.coord)))
    assert checked.stdout.startswith(
        f"proof verified: message {scene.msg_id} from police on alerts at "
    )
    assert checked.stdout.endswith(f" is entry {scene.index} of the log\n")
    assert "warning" not in checked.stderr  # trusted keys, not the bundle's own
    as_json = json.loads(ok(scene.check(bundle, *trust(scene.coord), "--json")).stdout)
    assert as_json["ok"] is True and as_json["self_asserted"] is False
    assert (as_json["entry"]["msg_id"], as_json["entry"]["sender"]) == (scene.msg_id, "police")

    # One bit of the logged msg_id: the bundle now speaks of another message.
    at = bundle.read_bytes().index(bytes.fromhex(scene.msg_id))
    damaged = flip(bundle, tmp_path / "damaged.tfproof", at)
    error, hint = failure(scene.check(damaged, *trust(scene.coord)), 6)
    assert error.startswith("E_BUNDLE_PROOF: "), error
    assert "it is not evidence" in hint
    error, _ = failure(
        scene.check(flip(bundle, tmp_path / "middle.tfproof"), *trust(scene.coord)), 6
    )
    assert error.startswith("E_BUNDLE_"), error

    # Same task force name, another coordinator: its keys did not sign the checkpoint.
    error, _ = failure(scene.check(bundle, *trust(scene.rival)), 6)
    assert error.startswith("E_BUNDLE_SIGNATURE: "), error

    # A newer roster, then the one in force when the bundle was made: both check, the
    # verdict does not depend on what was checked before, and nothing is written.
    newer = tmp_path / "newer.roster"
    edited = R.grant(scene.tf.signed, "ngo", channel="cases", read=True, write=False,
                     now_ms=now_ms())  # fmt: skip
    newer.write_bytes(encode(R.sign(edited, scene.tf.ids["coord"])))
    anchor = str(scene.coord.root / "tf.anchor")
    ok(scene.check(bundle, "--roster", newer, "--anchor", anchor))
    ok(scene.check(bundle, *trust(scene.coord)))
    assert not (scene.court / "state").exists()


def test_a_recipient_discloses_the_message_and_anyone_checks_it(
    scene: Scene, bundle: Path, tmp_path: Path
) -> None:
    """ngo's ``audit disclose``; ``check-disclosure --roster --anchor`` shows the body (exit
    0) and the roster it judged by, the anchor alone is refused (exit 6), and the disclosed
    envelope is the one the proof bundle logged; flipped bits: exit 6."""
    ngo = scene.agencies["ngo"]
    out = tmp_path / "alert.tfdisclosure"
    disclosed = ok(tfshare(home(ngo), "audit", "disclose", scene.msg_id, "--out", out,
                           *ngo.args()))  # fmt: skip
    assert disclosed.stdout == f"{out}\n"
    assert "disclosure of a message from police written" in disclosed.stderr

    # The anchor alone cannot show a revocation since the roster inside: refused (exit 6).
    anchor = ["--anchor", str(scene.coord.root / "tf.anchor")]
    error, hint = failure(tfshare(scene.court, "audit", "check-disclosure", out, *anchor), 6)
    assert "no current roster" in error, error
    assert "give --roster with the task force's current roster" in hint, hint
    anchor = trust(scene.coord)
    shown = ok(tfshare(scene.court, "audit", "check-disclosure", out, *anchor))
    assert re.search(r"judged under roster seq \d+ issued \S+ \(the roster given\)", shown.stderr)
    assert "a newer roster may have revoked keys" in shown.stderr, shown.stderr
    assert re.search(rf"^message\s+{scene.msg_id}$", shown.stdout, re.MULTILINE), shown.stdout
    assert re.search(r"^sender\s+police \(signature verified", shown.stdout, re.MULTILINE)
    assert re.search(r"^disclosed by\s+ngo$", shown.stdout, re.MULTILINE), shown.stdout
    assert TITLE in shown.stdout
    as_json = json.loads(
        ok(tfshare(scene.court, "audit", "check-disclosure", out, *anchor, "--json")).stdout
    )
    assert (as_json["msg_id"], as_json["disclosed_by"]) == (scene.msg_id, "ngo")
    assert (as_json["roster"]["source"], as_json["roster"]["rollback_checked"]) == ("given", False)
    assert as_json["body"]["title"] == TITLE

    # The envelope ngo received (inside its disclosure) is the one the log proves.
    envelope = tmp_path / "alert.tfenv"
    envelope.write_bytes(decode_disclosure(out.read_bytes()).envelope)
    matched = ok(scene.check(bundle, *trust(scene.coord), "--envelope", envelope))
    assert matched.stdout.endswith(", and the envelope matches\n"), matched.stdout
    other = flip(envelope, tmp_path / "other.tfenv")
    error, _ = failure(scene.check(bundle, *trust(scene.coord), "--envelope", other), 6)
    assert error.startswith("E_BUNDLE_ENVELOPE: "), error

    damaged = flip(out, tmp_path / "damaged.tfdisclosure")
    error, _ = failure(tfshare(scene.court, "audit", "check-disclosure", damaged, *anchor), 6)
    assert error.startswith("E_DISCLOSURE_"), error
    assert TITLE not in error


def test_trace_refuses_bad_input_with_a_hint(scene: Scene) -> None:
    """A malformed id is a usage error (2); an id the log does not hold, or an agency
    without an audit log, exit 1 (and no log is created for it)."""
    error, hint = failure(scene.trace("not-a-message-id"), 2)
    assert "'not-a-message-id' is not a message id" in error
    assert "32 hex digits" in hint
    unknown = "00" * 16
    error, _ = failure(scene.trace(unknown), 1)
    assert f"message {unknown} is not in the audit log" in error

    ngo = scene.agencies["ngo"]
    error, hint = failure(scene.trace(scene.msg_id, agency="ngo"), 1)
    assert error.startswith("no audit log at ")
    assert "audit serve" in hint
    assert not (ngo.state / "audit.db").exists()
    # Only a recipient can disclose: police sent the alert, its inbox does not hold it.
    police = scene.agencies["police"]
    out = police.root / "x.tfdisclosure"
    error, _ = failure(
        tfshare(home(police), "audit", "disclose", scene.msg_id, "--out", out, *police.args()), 1
    )
    assert "is not in this agency's inbox" in error
    assert not out.exists()
