"""``tfshare inbox`` on state directories of other tfshare versions (issue 12, item 8): one of
the previous version is upgraded in place and its inbox listed; one of a newer version is
refused with exit 1, an error and a hint, no traceback, and left as it was."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Final

Run = Callable[..., subprocess.CompletedProcess[str]]


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    return result


# The state schema of the previous tfshare, verbatim (git show c9cc8ce:tfshare/store.py).
PREVIOUS_STATE_DDL: Final = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS replay (
    sender_kid BLOB NOT NULL, msg_id BLOB NOT NULL, env_hash BLOB NOT NULL,
    ts_ms INTEGER NOT NULL, sender TEXT NOT NULL, channel TEXT NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (sender_kid, msg_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sender_seq (
    sender TEXT NOT NULL, channel TEXT NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (sender, channel)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbound_seq (
    channel TEXT PRIMARY KEY, seq INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS inbox (
    msg_id BLOB NOT NULL, sender_kid BLOB NOT NULL, env_hash BLOB NOT NULL,
    sender TEXT NOT NULL, channel TEXT NOT NULL, schema TEXT NOT NULL, ts_ms INTEGER NOT NULL,
    received_ms INTEGER NOT NULL, envelope BLOB NOT NULL,
    PRIMARY KEY (sender_kid, msg_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS quarantine (
    env_hash BLOB PRIMARY KEY, code TEXT NOT NULL, reason TEXT NOT NULL, sender TEXT,
    msg_id BLOB, subject TEXT, received_ms INTEGER NOT NULL, envelope BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox (
    msg_id BLOB PRIMARY KEY, subject TEXT NOT NULL, envelope BLOB NOT NULL,
    created_ms INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, refused TEXT
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sent (
    msg_id BLOB PRIMARY KEY, env_hash BLOB NOT NULL, channel TEXT NOT NULL,
    schema TEXT NOT NULL, ts_ms INTEGER NOT NULL, no_forward INTEGER NOT NULL,
    handling_code TEXT NOT NULL, envelope BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS roster_state (
    taskforce TEXT PRIMARY KEY, seq INTEGER NOT NULL, state BLOB NOT NULL
) WITHOUT ROWID;
"""

MSG_ID: Final = bytes.fromhex("0123456789abcdef0123456789abcdef")


def _state_dir(root: Path, schema: str) -> Path:
    state = root / "state"
    state.mkdir(mode=0o700)
    db = sqlite3.connect(state / "state.db")
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(PREVIOUS_STATE_DDL)
        with db:
            db.execute("INSERT INTO meta VALUES ('schema', ?)", (schema,))
            db.execute(
                "INSERT INTO inbox VALUES (?, ?, ?, 'police', 'alerts', 'tf.alert/1', ?, ?, ?)",
                (MSG_ID, b"K" * 8, b"h" * 32, 1_795_000_000_000, 1_795_000_000_500, b"env"),
            )
            db.execute(
                "INSERT INTO quarantine VALUES (x'01', 'E_MALFORMED', 'r', NULL, NULL, NULL, 5, "
                "x'aabbcc')"
            )
    finally:
        db.close()
    return state


def _schema(state: Path) -> str:
    db = sqlite3.connect(state / "state.db")
    try:
        return str(db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0])
    finally:
        db.close()


def test_inbox_list_upgrades_a_state_directory_of_the_previous_version(
    run: Run, tmp_path: Path, creds: Callable[[str], list[str]], trust: list[str]
) -> None:
    state = _state_dir(tmp_path, "1")
    listed = ok(run("inbox", "list", "--json", "--state", state, *creds("ngo"), *trust))
    [message] = json.loads(listed.stdout)["messages"]
    assert (message["msg_id"], message["sender"]) == (MSG_ID.hex(), "police")
    assert _schema(state) == "5"
    quarantine = ok(run("inbox", "quarantine", "--state", state, *creds("ngo"), *trust))
    assert "E_MALFORMED" in quarantine.stdout


def test_inbox_list_refuses_a_state_directory_of_a_newer_version_with_a_hint(
    run: Run, tmp_path: Path, creds: Callable[[str], list[str]], trust: list[str]
) -> None:
    state = _state_dir(tmp_path, "9")
    before = (state / "state.db").read_bytes()
    result = run("inbox", "list", "--state", state, *creds("ngo"), *trust)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.splitlines()
    [error] = [line for line in lines if line.startswith("tfshare: error: ")]
    [hint] = [line for line in lines if line.startswith("tfshare: hint: ")]
    assert "state.db" in error and "has schema 9, newer than this version" in error
    assert "upgrade tfshare" in hint
    assert result.stdout == ""
    assert (state / "state.db").read_bytes() == before
    assert _schema(state) == "9"
