"""Demo helper: an agency outside the roster forges an alert with its own keys.

It uses the library's raw construction (seal_to), which skips the roster policy that
`tfshare seal` enforces, to show what a receiver does with such a message.
Usage: forge.py KEYFILE PASSPHRASE_FILE ROSTER OUT
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from tfshare import roster as R
from tfshare.registry.book import shipped
from tfshare.seal import Recipient, seal_to
from tfshare.workflows.keys import load_identity


def main() -> None:
    key, passphrase_file, roster_path, out = map(Path, sys.argv[1:5])
    identity = load_identity(key, passphrase_file.read_bytes().splitlines()[0])
    _, roster = R.decode_signed_roster(roster_path.read_bytes())
    readers = next(c for c in roster.channels if c.name == "alerts").readers
    recipients = [
        Recipient(m.agency_id, m.enc_key.pk) for m in roster.members if m.agency_id in readers
    ]
    schema = shipped().lookup("tf.alert/1")
    assert schema is not None
    record = schema.from_json(Path("examples/alert.json").read_bytes())
    sealed = seal_to(
        identity=identity,
        taskforce=roster.taskforce,
        channel="alerts",
        roster_seq=roster.seq,
        recipients=recipients,
        schema=schema,
        body=schema.to_body(record),
        seq=1,
        now_ms=time.time_ns() // 1_000_000,
        rng=os.urandom,
    )
    out.write_bytes(sealed.data)


if __name__ == "__main__":
    main()
