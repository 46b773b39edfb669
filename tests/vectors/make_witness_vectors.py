"""Generate witness-v1.json: the witness cosignature (docs/AUDIT-LOG.md section 13) and a
roster with a witness threshold (its optional 11th element), from fixed keys.

Run from the repository root: ``.venv/bin/python tests/vectors/make_witness_vectors.py``.
The committed file is checked against the code and an independent re-derivation by
``tests/unit/test_witness_vectors.py``; v1.json is not touched."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from make_vectors import T0, fixed_identity, identities, roster_bytes

from tfshare import roster as R
from tfshare.audit.witness import cosign, cosigned_message, cosigner_key_id, witness_name
from tfshare.encoding import encode

HERE = Path(__file__).parent
# The checkpoint of AUDIT-LOG.md section 6's example (the 8 vector leaves).
CHECKPOINT_TEXT = "tfshare/nl-north/audit\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n"
TIMESTAMP = 1_795_000_000


def build() -> dict[str, Any]:
    ngo = fixed_identity("ngo", 3)  # ngo of v1.json
    name = witness_name("nl-north", "ngo")
    text = CHECKPOINT_TEXT.encode()
    line = cosign(text, ngo, taskforce="nl-north", timestamp=TIMESTAMP)
    ids = identities()
    signed, _ = R.decode_signed_roster(roster_bytes(ids))
    with_witnesses = R.sign(R.set_witness_threshold(signed, 2, now_ms=T0 + 1000), ids["coord"])
    return {
        "description": "tfshare witness vectors (AUDIT-LOG.md section 13). Byte strings are "
        "hex; the witness is ngo of v1.json.",
        "cosignature": {
            "sign_seed": ngo.secret_material()[0].hex(),
            "public_key": ngo.sign_pk.hex(),
            "key_name": name,
            "key_id": cosigner_key_id(name, ngo.sign_pk).hex(),
            "timestamp": TIMESTAMP,
            "checkpoint_text": CHECKPOINT_TEXT,
            "signed_message": cosigned_message(text, TIMESTAMP).hex(),
            "line": line.decode(),
            "line_raw": base64.b64decode(line.decode().split(" ")[2]).hex(),
        },
        "roster_witness_threshold": {
            "note": "v1.json's roster after 'witness threshold 2' (seq 2), signed by coord; "
            "the roster array has 11 elements, the last 2",
            "witness_threshold": 2,
            "signed_roster": encode(with_witnesses).hex(),
        },
    }


if __name__ == "__main__":
    (HERE / "witness-v1.json").write_text(json.dumps(build(), indent=1) + "\n")
    print(f"wrote {HERE / 'witness-v1.json'}")
