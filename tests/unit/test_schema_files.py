"""The shipped JSON Schemas and broker config match what the code uses."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import rfc8785

from tfshare.messages import BuiltinSchemas

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

from export_schemas import documents  # noqa: E402


def test_schema_files_match_the_builtin_types() -> None:
    """schemas/<subject>/<version>.json is exactly the exported schema of each built-in type."""
    for name, schema in documents().items():
        subject, version = name.split("/")
        shipped = json.loads((REPO / "schemas" / subject / f"{version}.json").read_text())
        assert shipped == schema, f"{name}: run scripts/export_schemas.py"


def test_fingerprints_are_sha256_of_the_canonical_shipped_schema() -> None:
    """A built-in type's fingerprint is SHA-256 of the RFC 8785 form of its shipped file."""
    book = BuiltinSchemas()
    for name in book.names():
        subject, version = name.split("/")
        shipped = json.loads((REPO / "schemas" / subject / f"{version}.json").read_text())
        message_type = book.lookup(name)
        assert message_type is not None
        assert message_type.fingerprint == hashlib.sha256(rfc8785.dumps(shipped)).digest()


def test_dev_broker_config_is_valid_for_nats_server() -> None:
    """broker_config/dev.conf passes `nats-server -t` with the virtualenv's nats-server."""
    server = Path(sys.executable).parent / "nats-server"
    result = subprocess.run(
        [str(server), "-t", "-c", str(REPO / "broker_config" / "dev.conf")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "is valid" in result.stdout + result.stderr
