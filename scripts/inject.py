"""Demo helper: someone holding an agency's leaked NATS credentials (not its signing key)
injects garbage and a forged alert on that agency's subject. Receivers must reject both.

Usage: inject.py KEYFILE PASSPHRASE_FILE ROSTER URL
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

from tfshare import roster as R
from tfshare import transport
from tfshare.broker import channel_subject
from tfshare.keys import Identity
from tfshare.registry.book import shipped
from tfshare.seal import Recipient, seal_to
from tfshare.workflows.keys import load_identity


async def main() -> None:
    key, passphrase_file, roster_path, url = sys.argv[1:5]
    victim = load_identity(Path(key), Path(passphrase_file).read_bytes().splitlines()[0])
    _, roster = R.decode_signed_roster(Path(roster_path).read_bytes())
    subject = channel_subject(roster.taskforce, "alerts", victim.agency_id)
    schema = shipped().lookup("tf.alert/1")
    assert schema is not None
    # An impostor: the victim's name, but keys the roster does not know.
    impostor = Identity.generate(victim.agency_id, "impostor", rng=os.urandom, now_ms=0)
    readers = next(c for c in roster.channels if c.name == "alerts").readers
    forged = seal_to(
        identity=impostor,
        taskforce=roster.taskforce,
        channel="alerts",
        roster_seq=roster.seq,
        recipients=[
            Recipient(m.agency_id, m.enc_key.pk) for m in roster.members if m.agency_id in readers
        ],
        schema=schema,
        body=schema.to_body(schema.from_json(Path("examples/alert.json").read_bytes())),
        seq=99,
        now_ms=time.time_ns() // 1_000_000,
        rng=os.urandom,
    )
    conn = await transport.connect(
        url,
        nkey_seed=victim.nats_seed_encoded(),
        agency=victim.agency_id,
        name="injector",
        reconnect=False,
    )
    try:
        for data in (b"\x00 garbage on the wire \xff", forged.data):
            await transport.publish(conn, subject, data, msg_id=os.urandom(16).hex())
    finally:
        await conn.close()
    print(f"injected 2 messages on {subject} with {victim.agency_id}'s NATS credentials")


if __name__ == "__main__":
    asyncio.run(main())
