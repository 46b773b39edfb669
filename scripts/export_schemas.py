"""Write schemas/<subject>/<version>.json: the JSON Schemas of the built-in message types.

Other agencies' tools read these; tests/unit/test_schema_files.py fails if they drift from
the types in tfshare/messages.py. Run after changing a message type.
"""

from __future__ import annotations

import json
from pathlib import Path

import msgspec

from tfshare.messages import BuiltinSchemas

ROOT = Path(__file__).resolve().parent.parent / "schemas"


def documents() -> dict[str, object]:
    book = BuiltinSchemas()
    out: dict[str, object] = {}
    for name in book.names():
        message_type = book.lookup(name)
        assert message_type is not None
        out[name] = msgspec.json.schema(message_type.struct)
    return out


def main() -> None:
    for name, schema in documents().items():
        subject, version = name.split("/")
        path = ROOT / subject / f"{version}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
