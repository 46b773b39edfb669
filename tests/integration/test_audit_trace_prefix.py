"""``tfshare audit trace`` and ``audit prove`` take a message as ``inbox``/``publish`` do: the
32 hex digits, a unique prefix of 8 or more (any case), or ``SENDER:MSG_ID``; an ambiguous
prefix, or an id two senders used, is refused (exit 2) rather than picked silently.

No broker: coord's audit log is written directly with ``AuditStore`` where the CLI looks for
it, with entries whose msg_ids are chosen to collide; every command is a real subprocess.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import time

import pytest
from test_bad_input_live import Files, agency_files, failure, ok, tfshare
from tfkit import build_taskforce

from tfshare.audit.entry import LogEntry
from tfshare.audit.logstore import AuditStore

UNIQUE = "61f427ec" + "0123456789abcdef01234567"  # the only id starting 61f427ec
TWIN_A = "c0ffee00" + "aa" * 12  # two ids sharing their first 8 digits
TWIN_B = "c0ffee00" + "bb" * 12
COPIED = "dd" * 16  # used by police, then by labour (a copied id)


def message(msg_id: str, sender: str, ts: int) -> LogEntry:
    env = hashlib.sha256(f"{msg_id} {sender}".encode()).digest()
    kid = hashlib.sha256(sender.encode()).digest()[:8]
    return LogEntry(
        "message", bytes.fromhex(msg_id), sender, kid, "nl-north", "alerts", ts, env, [], ts + 5
    )


@dataclasses.dataclass(frozen=True)
class Scene:
    coord: Files

    def audit(self, *args: str) -> subprocess.CompletedProcess[str]:
        return tfshare(self.coord.root / "home", "audit", *args, *self.coord.args())

    def traced(self, ref: str) -> dict[str, str]:
        entry: dict[str, str] = json.loads(ok(self.audit("trace", ref, "--json")).stdout)["entry"]
        return entry


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Scene:
    root = tmp_path_factory.mktemp("audit-prefix")
    t = time.time_ns() // 1_000_000
    coord = agency_files(build_taskforce(now_ms=t), "coord", root / "coord")
    entries = [
        message(UNIQUE, "police", t - 5000),
        message(TWIN_A, "police", t - 4000),
        message(TWIN_B, "labour", t - 3000),
        message(COPIED, "police", t - 2000),
        message(COPIED, "labour", t - 1000),
    ]
    with AuditStore(coord.state / "audit.db") as store:
        assert store.append(entries) == list(range(len(entries)))
    return Scene(coord)


@pytest.mark.parametrize("ref", [UNIQUE[:8], UNIQUE[:8].upper(), UNIQUE[:13], UNIQUE])
def test_trace_accepts_a_unique_prefix_of_8_or_more_digits(scene: Scene, ref: str) -> None:
    """8 digits (the README's promise), in either case, 13, or all 32 name the message."""
    entry = scene.traced(ref)
    assert (entry["msg_id"], entry["sender"]) == (UNIQUE, "police")


def test_trace_refuses_a_prefix_matching_two_messages(scene: Scene) -> None:
    """c0ffee00 starts two msg_ids: exit 2, the hint asks for more digits; 9 digits do."""
    error, hint = failure(scene.audit("trace", TWIN_A[:8]), 2)
    assert "matches 2 messages" in error
    assert "more digits" in hint
    assert scene.traced(TWIN_B[:9])["msg_id"] == TWIN_B


def test_trace_refuses_an_id_two_senders_used_until_the_sender_is_named(scene: Scene) -> None:
    """The copied id is never picked silently: exit 2 naming both senders and SENDER:MSG_ID;
    labour:ID and police:PREFIX pick each one's entry."""
    for ref in (COPIED, COPIED[:8]):
        error, hint = failure(scene.audit("trace", ref), 2)
        assert "several senders (labour, police)" in error
        assert "SENDER:MSG_ID" in hint
    assert scene.traced(f"labour:{COPIED}")["sender"] == "labour"
    assert scene.traced(f"police:{COPIED[:8]}")["sender"] == "police"


@pytest.mark.parametrize(
    ("ref", "code", "said"),
    [
        (UNIQUE[:7], 2, "is not a message id"),
        ("61f427eg", 2, "is not a message id"),
        ("Police!:61f427ec", 2, "is not an agency id"),
        ("deadbeef", 1, "message deadbeef is not in the audit log"),
        (f"ngo:{UNIQUE[:8]}", 1, f"message ngo:{UNIQUE[:8]} is not in the audit log"),
    ],
)
def test_trace_refuses_bad_or_unknown_references(
    scene: Scene, ref: str, code: int, said: str
) -> None:
    """Too short, not hex, a bad sender: usage (2); nothing matching, or the wrong sender: 1."""
    error, _ = failure(scene.audit("trace", ref), code)
    assert said in error


def test_prove_resolves_a_prefix_like_trace(scene: Scene) -> None:
    """``audit prove`` takes the same references: the prefix is resolved to the full id (the
    log has no signed checkpoint yet, so it stops there, naming it), and the copied id needs
    its sender."""
    out = scene.coord.root / "p.tfproof"
    error, _ = failure(scene.audit("prove", UNIQUE[:8], "--out", str(out)), 1)
    assert f"entry {UNIQUE} is not yet covered by a signed checkpoint" in error
    error, _ = failure(scene.audit("prove", COPIED[:8], "--out", str(out)), 2)
    assert "several senders" in error
    error, _ = failure(scene.audit("prove", f"labour:{COPIED[:8]}", "--out", str(out)), 1)
    assert f"entry {COPIED} is not yet covered" in error
    assert not out.exists()
