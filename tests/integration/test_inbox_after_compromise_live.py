"""Messages received before their sender was revoked as compromised stay readable, marked;
and no inbox command stops at one message it cannot show.

As real subprocesses on the CLI-built task force of test_live_cli: labour and police each
publish an alert, ngo's agent stores both; then the coordinators revoke labour as
compromised, and ngo reads its inbox under that roster. A row of ngo's inbox altered at rest
(a flipped byte) stands for a message that cannot be shown.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_live_cli import (
    ALERT,
    MSG_ID,
    CliTaskForce,
    cli_tf,
    ok,
    start_broker,
    wait_for,
)

from tfshare.workflows.live import COMPROMISED_MARK

__all__ = ["cli_tf"]  # the module's task force fixture, shared with test_live_cli

pytestmark = pytest.mark.slow

FORGED_ID = "00" * 16


@dataclass(frozen=True)
class Scene:
    tf: CliTaskForce
    revoked_roster: Path
    from_labour: str
    from_police: str

    def as_ngo(self, *args: str) -> list[str]:
        """ngo's credentials and the roster that revoked labour."""
        anchor = str(self.tf.root / "tf.anchor")
        creds = self.tf.creds("ngo")
        return [*args, *creds, "--roster", str(self.revoked_roster), "--anchor", anchor]


def _publish(tf: CliTaskForce, agency: str, url: str, state: Path) -> str:
    args = ["publish", "alert", "--channel", "alerts", "--file", str(ALERT),
            *tf.creds(agency), *tf.trust(), "--state", str(state), "--server", url]  # fmt: skip
    result = ok(tf.run(*args))
    match = MSG_ID.search(result.stdout)
    assert match is not None, result.stdout
    return match.group(1)


def _add_altered_row(state_db: Path, msg_id: str) -> None:
    """A copy of a stored row with one byte of its ciphertext flipped, filed as the oldest
    message under another msg_id: it can no longer be shown (the signature fails)."""
    db = sqlite3.connect(state_db)
    try:
        row = db.execute(
            "SELECT sender_kid, env_hash, sender, channel, schema, ts_ms, envelope "
            "FROM inbox WHERE msg_id = ?",
            (bytes.fromhex(msg_id),),
        ).fetchone()
        envelope = bytearray(row[6])
        envelope[-100] ^= 0x01
        db.execute(
            "INSERT INTO inbox VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (bytes.fromhex(FORGED_ID), row[0], row[1], row[2], row[3], row[4], row[5], 0,
             bytes(envelope)),
        )  # fmt: skip
        db.commit()
    finally:
        db.close()


@pytest.fixture(scope="module")
def scene(cli_tf: CliTaskForce, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    broker = start_broker(cli_tf, "broker-compromise")
    reader = cli_tf.spawn(
        "agent-ngo-compromise", "agent", "run", *cli_tf.creds("ngo"), *cli_tf.trust(),
        "--server", broker.url,
    )  # fmt: skip
    try:
        reader.wait_stderr("consuming from")
        states = tmp_path_factory.mktemp("publishers")
        from_labour = _publish(cli_tf, "labour", broker.url, states / "labour")
        from_police = _publish(cli_tf, "police", broker.url, states / "police")

        def stored() -> bool:
            found = ok(cli_tf.run("inbox", "list", "--json", *cli_tf.creds("ngo"), *cli_tf.trust()))
            ids = {m["msg_id"] for m in json.loads(found.stdout)["messages"]}
            return {from_labour, from_police} <= ids

        assert wait_for(stored, timeout=20, interval=0.3)
    finally:
        reader.cleanup()
        broker.process.cleanup()
    revoked = cli_tf.root / "compromise.roster"
    shutil.copyfile(cli_tf.root / "tf.roster", revoked)
    ok(cli_tf.run("roster", "revoke", revoked, "labour", "--reason", "compromised"))
    ok(cli_tf.run("roster", "sign", revoked, *cli_tf.creds("coord")))
    _add_altered_row(cli_tf.home / "state" / "ngo" / "state.db", from_police)
    yield Scene(cli_tf, revoked, from_labour, from_police)


def test_inbox_search_marks_a_compromised_senders_message_and_reports_a_bad_row(
    scene: Scene,
) -> None:
    """``inbox search`` finds both alerts (exit 0): labour's marked as revoked as compromised
    after receipt, police's unmarked; the altered row is listed with its code, not fatal."""
    result = ok(scene.tf.run(*scene.as_ngo("inbox", "search", "ESCORT AD", "--json")))
    found = json.loads(result.stdout)
    warnings = {m["msg_id"]: m["warning"] for m in found["matches"]}
    assert warnings == {scene.from_labour: COMPROMISED_MARK, scene.from_police: None}
    assert [(u["msg_id"], u["code"]) for u in found["unreadable"]] == [(FORGED_ID, "E_BAD_SIG")]

    text = ok(scene.tf.run(*scene.as_ngo("inbox", "search", "ESCORT AD")))
    assert text.stdout.count(f"WARNING: {COMPROMISED_MARK}") == 1
    lines = [line for line in text.stderr.splitlines() if FORGED_ID in line]
    assert len(lines) == 1 and "E_BAD_SIG" in lines[0], text.stderr


def test_inbox_show_of_a_compromised_senders_message_shows_it_marked(scene: Scene) -> None:
    """``inbox show`` of labour's earlier alert exits 0 with the body and the mark (JSON and
    a warning line on stderr)."""
    result = ok(scene.tf.run(*scene.as_ngo("inbox", "show", scene.from_labour)))
    shown = json.loads(result.stdout)
    assert (shown["sender"], shown["warning"]) == ("labour", COMPROMISED_MARK)
    assert shown["body"]["title"] == json.loads(ALERT.read_text())["title"]
    assert f"warning: {COMPROMISED_MARK}" in result.stderr


def test_inbox_show_of_an_altered_row_is_refused_with_its_code(scene: Scene) -> None:
    """The one message that cannot be shown is refused alone (exit 3, E_BAD_SIG)."""
    result = scene.tf.run(*scene.as_ngo("inbox", "show", FORGED_ID))
    assert result.returncode == 3, result.stderr
    assert "E_BAD_SIG" in result.stderr


def test_listen_all_goes_past_a_bad_row_and_marks_the_compromised_sender(scene: Scene) -> None:
    """``listen --all --json`` reports the altered row (oldest) as unreadable with its code,
    then shows both alerts, labour's with its warning."""
    result = ok(scene.tf.run(*scene.as_ngo("listen", "--all", "--count", "2", "--json")))
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events[0] == {
        "msg_id": FORGED_ID,
        "sender": "police",
        "unreadable": {"code": "E_BAD_SIG", "reason": "signature does not verify"},
    }
    warnings = {e["msg_id"]: e["warning"] for e in events[1:]}
    assert warnings == {scene.from_labour: COMPROMISED_MARK, scene.from_police: None}

    text = ok(scene.tf.run(*scene.as_ngo("listen", "--all", "--count", "2")))
    assert text.stdout.count(f"WARNING: {COMPROMISED_MARK}") == 1
    assert f"{FORGED_ID} from police cannot be shown: E_BAD_SIG" in text.stderr


def test_a_compromised_senders_message_cannot_be_derived_from(scene: Scene) -> None:
    """Shown marked, never built upon: ``publish --reshare`` of labour's earlier alert exits 3
    E_REVOKED before anything is sealed."""
    result = scene.tf.run(
        *scene.as_ngo("publish", "alert", "--reshare", scene.from_labour, "--server",
                      "nats://127.0.0.1:9", "--state", str(scene.tf.home / "state" / "ngo"))
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    assert "E_REVOKED" in result.stderr and COMPROMISED_MARK in result.stderr


RELABELLED_ID = "5e1a8e1ed5e1a8e1ed5e1a8e1ed5e1a8"


def test_a_row_relabelled_as_another_senders_message_is_refused(scene: Scene) -> None:
    """Review (R2 F1): a row of the state database naming police as sender but holding
    labour's genuine envelope was shown, and referenced, as police's message. The row must
    say what the verified envelope says: ``inbox show`` refuses it (exit 3, E_MALFORMED)."""
    state_db = scene.tf.home / "state" / "ngo" / "state.db"
    db = sqlite3.connect(state_db)
    try:
        row = db.execute(
            "SELECT sender_kid, env_hash, channel, schema, ts_ms, envelope FROM inbox "
            "WHERE msg_id = ?",
            (bytes.fromhex(scene.from_labour),),
        ).fetchone()
        db.execute(
            "INSERT INTO inbox VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (bytes.fromhex(RELABELLED_ID), row[0], row[1], "police", row[2], row[3], row[4],
             0, row[5]),
        )  # fmt: skip
        db.commit()
    finally:
        db.close()
    result = scene.tf.run(*scene.as_ngo("inbox", "show", RELABELLED_ID))
    assert result.returncode == 3, result.stderr
    assert "E_MALFORMED" in result.stderr and "does not match the envelope" in result.stderr
