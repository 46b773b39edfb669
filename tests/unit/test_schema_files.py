"""The shipped JSON Schemas and broker config: what other agencies and operators read."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import rfc8785

from tfshare.registry.book import shipped

REPO = Path(__file__).resolve().parents[2]
DOCUMENTS = sorted((REPO / "schemas").glob("*/*.json"))


def _load(path: Path) -> dict[str, Any]:
    value = json.loads(path.read_text())
    assert isinstance(value, dict)
    return value


def test_the_four_message_types_ship() -> None:
    """schemas/ holds tf.alert/1, tf.red_flag/1, tf.tip_summary/1 and tf.receipt/1."""
    names = {f"{p.parent.name}/{p.stem}" for p in DOCUMENTS}
    assert names == {"tf.alert/1", "tf.red_flag/1", "tf.tip_summary/1", "tf.receipt/1"}
    assert shipped().names() == sorted(names)


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_fingerprint_is_sha256_of_the_canonical_file(path: Path) -> None:
    """A shipped schema's fingerprint is SHA-256 of the RFC 8785 form of its file."""
    schema = shipped().lookup(f"{path.parent.name}/{path.stem}")
    assert schema is not None
    assert schema.fingerprint == hashlib.sha256(rfc8785.dumps(_load(path))).digest()


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_id_names_the_file(path: Path) -> None:
    """Each document's $id is urn:tfshare:schema:<subject>/<version> of its own path."""
    assert _load(path)["$id"] == f"urn:tfshare:schema:{path.parent.name}/{path.stem}"


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_property_and_definition_is_described(path: Path) -> None:
    """Agencies read these documents: every property and $defs entry has a description."""
    doc = _load(path)
    missing: list[str] = []

    def walk(schema: Any, where: str) -> None:
        if not isinstance(schema, dict):
            return
        for name, sub in schema.get("properties", {}).items():
            if "description" not in sub:
                missing.append(f"{where}.properties.{name}")
            walk(sub, f"{where}.properties.{name}")
        walk(schema.get("items"), f"{where}.items")

    walk(doc, "$")
    for name, sub in doc.get("$defs", {}).items():
        if "description" not in sub:
            missing.append(f"$.$defs.{name}")
        walk(sub, f"$.$defs.{name}")
    assert not missing


def test_shared_definitions_are_identical_everywhere() -> None:
    """A $defs entry used by several documents (handling, grading, ...) is the same text."""
    seen: dict[str, tuple[str, Any]] = {}
    for path in DOCUMENTS:
        for name, definition in _load(path).get("$defs", {}).items():
            if name in seen:
                assert definition == seen[name][1], f"{name}: {path} differs from {seen[name][0]}"
            else:
                seen[name] = (str(path), definition)
    assert {"handling", "grading", "entity", "indicator_code"} <= seen.keys()


@pytest.mark.parametrize("kind", ["alert", "red_flag", "tip_summary"])
def test_example_bodies_are_the_schemas_first_examples(kind: str) -> None:
    """examples/<kind>.json is the first example inside tf.<kind>/1 and validates."""
    doc = _load(REPO / "schemas" / f"tf.{kind}" / "1.json")
    example = json.loads((REPO / "examples" / f"{kind}.json").read_text())
    assert doc["examples"][0] == example
    schema = shipped().lookup(f"tf.{kind}/1")
    assert schema is not None
    assert schema.example_errors() == []


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
