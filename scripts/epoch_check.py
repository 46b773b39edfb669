"""Demo helper: can an agency's own state open an epoch-mode message? (issue 15)

Opens the envelope POLICE_STATE/state.db keeps as sent message MSG_ID (the sender's copy) with
the receive checks of AGENCY: its key file, the epoch keys its agent keeps in its state, under
each roster given (e.g. the one before its removal, and the current one). Prints one line per
roster: delivered, or the code it is refused with. Exit 0 whatever the outcome.
Usage: epoch_check.py KEYFILE PASSPHRASE_FILE STATE_DIR SENDER_STATE_DIR MSG_ID ANCHOR ROSTER...
"""

from __future__ import annotations

import sqlite3
import sys
import time
from pathlib import Path

from tfshare import roster as R
from tfshare.epochs import EpochKeyring
from tfshare.errors import Rejected
from tfshare.registry.book import shipped
from tfshare.replay import MemoryReplayStore
from tfshare.seal import ReceivePolicy, claimed_header, open_envelope
from tfshare.store import StateStore
from tfshare.workflows.keys import load_identity


def main() -> None:
    key, passphrase_file, state, sender_state = map(Path, sys.argv[1:5])
    msg_id, anchor_path, rosters = sys.argv[5], Path(sys.argv[6]), sys.argv[7:]
    identity = load_identity(key, passphrase_file.read_bytes().splitlines()[0])
    db = sqlite3.connect(f"file:{sender_state / 'state.db'}?mode=ro", uri=True)
    row = db.execute("SELECT envelope FROM sent WHERE msg_id = ?", (bytes.fromhex(msg_id),))
    data = bytes(row.fetchone()[0])
    header = claimed_header(data)
    anchor = R.decode_anchor(anchor_path.read_bytes())
    store = StateStore(state / "state.db")
    keys, _ = store.epoch_keys(header.taskforce, state_key=identity.state_key)
    ring = EpochKeyring(keys)
    held = ", ".join(f"{k.channel} epoch {k.epoch}" for k in ring) or "none"
    print(f"{identity.agency_id} holds epoch keys: {held}")
    now_ms = time.time_ns() // 1_000_000
    for path in rosters:
        trusted, _ = R.verify_roster(Path(path).read_bytes(), anchor=anchor, state=None,
                                     now_ms=now_ms)  # fmt: skip
        try:
            open_envelope(
                data, identity=identity, roster=trusted, replay=MemoryReplayStore(),
                schemas=shipped(), now_ms=now_ms, subject=None, policy=ReceivePolicy(),
                epochs=ring,
            )  # fmt: skip
            outcome = "OPENED"
        except Rejected as exc:
            outcome = f"refused, {exc.code} ({exc.message})"
        print(
            f"message {msg_id} ({header.channel}, epoch {header.epoch}) under roster seq "
            f"{trusted.seq}: {outcome}"
        )


if __name__ == "__main__":
    main()
