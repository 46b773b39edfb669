"""Registry workflows: register, co-sign, load (bad records skipped), export, compare, validate."""

from __future__ import annotations

import contextlib
import copy
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import pytest
from structlog.testing import capture_logs
from tfkit import EXAMPLES, NOW_MS, TaskForce, build_taskforce

from tfshare.encoding import encode
from tfshare.errors import TrustError, UsageError, ValidationError
from tfshare.keys import Identity
from tfshare.registry.book import shipped
from tfshare.registry.compat import DEFAULT_MODE, Mode
from tfshare.registry.records import (
    SignedSchemaRecord,
    decode_record,
    new_record,
    sign_record,
    verify_record,
)
from tfshare.registry.schema import Schema
from tfshare.registry_store import DirectoryStore
from tfshare.workflows.schemas import (
    Registration,
    compat_files,
    export,
    load_registry,
    register,
    sign_pending,
    validate_body,
)

Doc = dict[str, Any]
TF3: Final = build_taskforce(coordinators=("c1", "c2", "c3"), threshold=2)
MEMBER: Final[Identity] = TF3.ids["police"]


def _shipped(name: str) -> Schema:
    schema = shipped().lookup(name)
    assert schema is not None
    return schema


ALERT1: Final = _shipped("tf.alert/1")


def _alert_doc(version: int, change: Callable[[Doc], None] | None = None) -> Doc:
    doc = copy.deepcopy(ALERT1.document)
    doc["$id"] = f"urn:tfshare:schema:tf.alert/{version}"
    if change is not None:
        change(doc)
    return doc


def add_optional(doc: Doc) -> None:
    """Add an optional property with a default (compatible both ways)."""
    doc["properties"]["source_ref"] = {"type": "string", "maxLength": 100, "default": "none"}


def add_another_optional(doc: Doc) -> None:
    add_optional(doc)
    doc["properties"]["case_ref"] = {"type": "string", "maxLength": 50, "default": "none"}


def remove_required(doc: Doc) -> None:
    del doc["properties"]["summary"]
    doc["required"].remove("summary")
    for example in doc["examples"]:
        example.pop("summary", None)


def remove_enum_value(doc: Doc) -> None:
    doc["properties"]["severity"]["enum"].remove("low")


def _write(folder: Path, doc: Doc, name: str = "schema.json") -> Path:
    path = folder / name
    path.write_text(json.dumps(doc, indent=2))
    return path


def _register(
    path: Path,
    tf: TaskForce,
    who: str,
    store: DirectoryStore,
    *,
    mode: Mode | None = None,
    now_ms: int = NOW_MS,
) -> Registration:
    return register(
        path, identity=tf.ids[who], roster=tf.trusted(), store=store, mode=mode, now_ms=now_ms
    )


def _tree(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its bytes (None for folders): a snapshot to compare."""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): p.read_bytes() if p.is_file() else None
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture
def store(tmp_path: Path) -> DirectoryStore:
    return DirectoryStore(tmp_path / "registry")


@pytest.fixture
def with_v2(tmp_path: Path, store: DirectoryStore, taskforce: TaskForce) -> Registration:
    """tf.alert/2 (one optional property added) registered by the 1-of-1 coordinator."""
    return _register(
        _write(tmp_path, _alert_doc(2, add_optional), "v2.json"), taskforce, "coord", store
    )


# ---------------------------------------------------------------------------------------------
# register: the compatible case


def test_register_compatible_version_commits(with_v2: Registration, store: DirectoryStore) -> None:
    """A compatible tf.alert/2 by the only coordinator is committed and becomes latest."""
    assert with_v2.committed
    assert (with_v2.approvals, with_v2.threshold) == (1, 1)
    assert with_v2.pending_path is None
    assert with_v2.mode is DEFAULT_MODE
    assert store.versions("tf.alert") == [2]
    assert store.latest("tf.alert") == (2, 1)
    assert not any((store.root / "pending").rglob("*.tfschema"))


def test_load_registry_knows_the_new_version_and_its_predecessor(
    with_v2: Registration, store: DirectoryStore, taskforce: TaskForce
) -> None:
    """After registering, load_registry finds tf.alert/2 after tf.alert/1 in the history."""
    registry = load_registry(store, taskforce.trusted())
    schema = registry.lookup("tf.alert/2")
    assert schema is not None
    assert schema.fingerprint == with_v2.schema.fingerprint
    assert registry.by_fingerprint(schema.fingerprint) is schema
    assert [s.name for s in registry.history("tf.alert")] == ["tf.alert/1", "tf.alert/2"]
    assert registry.latest("tf.alert") is schema
    assert registry.mode("tf.alert") is DEFAULT_MODE


def test_committed_record_names_its_predecessor(
    with_v2: Registration, store: DirectoryStore
) -> None:
    """The stored record's previous_fingerprint is tf.alert/1's fingerprint."""
    data = store.get("tf.alert", 2)
    assert data is not None
    _, record = decode_record(data)
    assert record.previous_fingerprint == ALERT1.fingerprint
    assert record.registered_ms == NOW_MS


def test_registered_version_validates_bodies(
    with_v2: Registration, store: DirectoryStore, taskforce: TaskForce
) -> None:
    """The new version accepts its new property and an old body alike."""
    schema = load_registry(store, taskforce.trusted()).lookup("tf.alert/2")
    assert schema is not None
    old_body = (EXAMPLES / "alert.json").read_bytes()
    schema.from_json(old_body)
    new = {**json.loads(old_body), "source_ref": "case 7"}
    assert schema.to_builtins(schema.from_json(json.dumps(new).encode()))["source_ref"] == "case 7"


def test_load_registry_without_roster_is_only_shipped(
    with_v2: Registration, store: DirectoryStore
) -> None:
    """With no roster to verify against, cached records are not used."""
    assert load_registry(store, None).lookup("tf.alert/2") is None


def test_third_version_follows_the_second(
    with_v2: Registration, tmp_path: Path, store: DirectoryStore, taskforce: TaskForce
) -> None:
    """tf.alert/3 is checked against 1 and 2 and moves latest to revision 2."""
    path = _write(tmp_path, _alert_doc(3, add_another_optional), "v3.json")
    registration = _register(path, taskforce, "coord", store)
    assert registration.committed
    assert store.latest("tf.alert") == (3, 2)
    data = store.get("tf.alert", 3)
    assert data is not None
    assert decode_record(data)[1].previous_fingerprint == with_v2.schema.fingerprint


def test_new_subject_takes_the_given_mode(
    tmp_path: Path, store: DirectoryStore, taskforce: TaskForce
) -> None:
    """A new subject's first version is registered under --mode, and loads with it."""
    doc = copy.deepcopy(ALERT1.document)
    doc["$id"] = "urn:tfshare:schema:tf.case_note/1"
    registration = _register(_write(tmp_path, doc), taskforce, "coord", store, mode=Mode.BACKWARD)
    assert registration.committed
    assert load_registry(store, taskforce.trusted()).mode("tf.case_note") is Mode.BACKWARD


def test_mode_for_an_existing_subject_is_a_usage_error(
    tmp_path: Path, store: DirectoryStore, taskforce: TaskForce
) -> None:
    """--mode cannot change an existing subject's mode; nothing is written."""
    path = _write(tmp_path, _alert_doc(2, add_optional))
    with pytest.raises(UsageError):
        _register(path, taskforce, "coord", store, mode=Mode.NONE)
    assert _tree(store.root) == {}


# ---------------------------------------------------------------------------------------------
# register: refusals write nothing


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (remove_required, "$.properties.summary: required property removed"),
        (remove_enum_value, '$.properties.severity.enum: value "low" removed'),
    ],
    ids=["remove-required", "remove-enum-value"],
)
def test_incompatible_change_is_refused_and_writes_nothing(
    change: Callable[[Doc], None],
    expected: str,
    with_v2: Registration,
    tmp_path: Path,
    store: DirectoryStore,
    taskforce: TaskForce,
) -> None:
    """An incompatible tf.alert/3 is a ValidationError with the compat reasons; no file changes."""
    before = _tree(store.root)
    with pytest.raises(ValidationError) as info:
        _register(_write(tmp_path, _alert_doc(3, change), "v3.json"), taskforce, "coord", store)
    assert expected in str(info.value)
    assert "FULL_TRANSITIVE" in str(info.value)
    assert _tree(store.root) == before
    assert store.versions("tf.alert") == [2]
    assert store.latest("tf.alert") == (2, 1)
    assert not store.pending_path("tf.alert", 3).exists()


def test_incompatible_first_change_leaves_the_store_empty(
    tmp_path: Path, store: DirectoryStore, taskforce: TaskForce
) -> None:
    """Refusing tf.alert/2 against the shipped tf.alert/1 creates no file or folder."""
    with pytest.raises(ValidationError, match="required property removed"):
        _register(_write(tmp_path, _alert_doc(2, remove_required)), taskforce, "coord", store)
    assert _tree(store.root) == {}


def test_registering_the_same_version_again_is_refused(
    with_v2: Registration, tmp_path: Path, store: DirectoryStore, taskforce: TaskForce
) -> None:
    """tf.alert/2 again (same content) is refused; the stored record is unchanged."""
    before = _tree(store.root)
    with pytest.raises(ValidationError, match="already registered"):
        _register(
            _write(tmp_path, _alert_doc(2, add_optional), "again.json"), taskforce, "coord", store
        )
    assert _tree(store.root) == before


def test_registering_other_content_under_a_taken_name_is_refused(
    with_v2: Registration, tmp_path: Path, store: DirectoryStore, taskforce: TaskForce
) -> None:
    """tf.alert/2 with different content is refused: versions never change."""
    before = _tree(store.root)
    path = _write(tmp_path, _alert_doc(2, add_another_optional), "other.json")
    with pytest.raises(ValidationError, match="other content"):
        _register(path, taskforce, "coord", store)
    assert _tree(store.root) == before


def test_registering_a_shipped_schema_is_refused(
    tmp_path: Path, store: DirectoryStore, taskforce: TaskForce
) -> None:
    """tf.alert/1 is shipped: registering it is refused as already registered."""
    with pytest.raises(ValidationError, match="already registered"):
        _register(_write(tmp_path, ALERT1.document), taskforce, "coord", store)
    assert _tree(store.root) == {}


@pytest.mark.parametrize("version", [3, 7])
def test_wrong_next_version_is_refused(
    version: int, tmp_path: Path, store: DirectoryStore, taskforce: TaskForce
) -> None:
    """After tf.alert/1 the next version is 2; skipping ahead is refused, nothing written."""
    with pytest.raises(ValidationError, match=re.escape("next version of tf.alert is 2")):
        _register(_write(tmp_path, _alert_doc(version, add_optional)), taskforce, "coord", store)
    assert _tree(store.root) == {}


def test_first_version_of_a_new_subject_must_be_1(
    tmp_path: Path, store: DirectoryStore, taskforce: TaskForce
) -> None:
    """A new subject starts at version 1."""
    doc = copy.deepcopy(ALERT1.document)
    doc["$id"] = "urn:tfshare:schema:tf.case_note/2"
    with pytest.raises(ValidationError, match=re.escape("next version of tf.case_note is 1")):
        _register(_write(tmp_path, doc), taskforce, "coord", store)


def test_schema_with_an_invalid_example_is_refused(
    tmp_path: Path, store: DirectoryStore, taskforce: TaskForce
) -> None:
    """Every registered schema carries valid examples."""

    def bad_example(doc: Doc) -> None:
        add_optional(doc)
        doc["examples"][0]["severity"] = "apocalyptic"

    with pytest.raises(ValidationError, match="examples"):
        _register(_write(tmp_path, _alert_doc(2, bad_example)), taskforce, "coord", store)
    assert _tree(store.root) == {}


def test_oversized_schema_file_is_refused_as_a_schema(
    tmp_path: Path, store: DirectoryStore, taskforce: TaskForce
) -> None:
    """A 10 MB schema file is a ValidationError (exit 5); nothing is written."""
    path = tmp_path / "huge.json"
    path.write_bytes(b'{"description": "' + b"x" * (10 * 1024 * 1024) + b'"}')
    with pytest.raises(ValidationError):
        _register(path, taskforce, "coord", store)
    assert _tree(store.root) == {}


@pytest.mark.parametrize("who", ["police", "outsider"])
def test_non_coordinator_cannot_register(
    who: str, tmp_path: Path, store: DirectoryStore, taskforce: TaskForce
) -> None:
    """A member's or an outsider's key is a TrustError; nothing is written."""
    with pytest.raises(TrustError):
        _register(_write(tmp_path, _alert_doc(2, add_optional)), taskforce, who, store)
    assert _tree(store.root) == {}


# ---------------------------------------------------------------------------------------------
# 2-of-3: pending, then co-signed


@pytest.fixture
def pending(tmp_path: Path, store: DirectoryStore) -> Registration:
    """tf.alert/2 registered by c1 in the 2-of-3 task force (so still pending)."""
    return _register(_write(tmp_path, _alert_doc(2, add_optional)), TF3, "c1", store)


def _sign(path: Path, who: str, store: DirectoryStore) -> Registration:
    return sign_pending(path, identity=TF3.ids[who], roster=TF3.trusted(), store=store)


def test_first_of_two_signatures_leaves_a_pending_record(
    pending: Registration, store: DirectoryStore
) -> None:
    """One of two approvals: a pending file, no version, no latest, unknown to load_registry."""
    assert not pending.committed
    assert (pending.approvals, pending.threshold) == (1, 2)
    assert pending.pending_path == store.pending_path("tf.alert", 2)
    assert pending.pending_path.is_file()
    assert store.versions("tf.alert") == []
    assert store.latest("tf.alert") is None
    assert load_registry(store, TF3.trusted()).lookup("tf.alert/2") is None


def test_pending_record_carries_the_first_signature(pending: Registration) -> None:
    """The pending file verifies (without threshold) with c1's approval."""
    assert pending.pending_path is not None
    verified = verify_record(
        pending.pending_path.read_bytes(), TF3.trusted(), require_threshold=False
    )
    assert verified.approvals == frozenset({"c1"})


def test_second_coordinator_commits_the_pending_record(
    pending: Registration, store: DirectoryStore
) -> None:
    """sign_pending by c2 commits: version file, latest, pending removed, loadable."""
    assert pending.pending_path is not None
    done = _sign(pending.pending_path, "c2", store)
    assert done.committed
    assert (done.approvals, done.threshold) == (2, 2)
    assert done.pending_path is None
    assert not pending.pending_path.exists()
    assert store.versions("tf.alert") == [2]
    assert store.latest("tf.alert") == (2, 1)
    schema = load_registry(store, TF3.trusted()).lookup("tf.alert/2")
    assert schema is not None
    assert schema.fingerprint == pending.schema.fingerprint


def test_same_coordinator_signing_again_does_not_commit(
    pending: Registration, store: DirectoryStore
) -> None:
    """c1 co-signing its own pending record is still one approval."""
    assert pending.pending_path is not None
    again = _sign(pending.pending_path, "c1", store)
    assert not again.committed
    assert again.approvals == 1
    assert store.versions("tf.alert") == []


def test_member_cannot_co_sign(pending: Registration, store: DirectoryStore) -> None:
    """A member's key is a TrustError and the pending file is unchanged."""
    assert pending.pending_path is not None
    before = pending.pending_path.read_bytes()
    with pytest.raises(TrustError):
        _sign(pending.pending_path, "police", store)
    assert pending.pending_path.read_bytes() == before
    assert store.versions("tf.alert") == []


def test_signing_a_committed_version_is_refused(
    pending: Registration, store: DirectoryStore
) -> None:
    """Once committed, a leftover copy of the pending record has nothing to sign."""
    assert pending.pending_path is not None
    leftover = pending.pending_path.read_bytes()
    _sign(pending.pending_path, "c2", store)
    pending.pending_path.write_bytes(leftover)
    with pytest.raises(ValidationError, match="already registered"):
        _sign(pending.pending_path, "c3", store)


def test_second_register_keeps_the_first_coordinators_signature(
    pending: Registration, tmp_path: Path, store: DirectoryStore
) -> None:
    """c2 registering the pending version too does not throw away c1's approval."""
    path = _write(tmp_path, _alert_doc(2, add_optional), "by-c2.json")
    with contextlib.suppress(ValidationError):  # refusing ("co-sign it instead") is fine too
        _register(path, TF3, "c2", store, now_ms=NOW_MS + 1)
    data = store.get("tf.alert", 2) or store.pending_path("tf.alert", 2).read_bytes()
    approvals = verify_record(data, TF3.trusted(), require_threshold=False).approvals
    assert "c1" in approvals


def _crafted_pending(store: DirectoryStore, schema: Schema, mode: Mode) -> Path:
    """A pending record nobody signed, dropped in the pending folder (it is a plain folder)."""
    signed = new_record(schema, taskforce="nl-north", mode=mode, previous=ALERT1, now_ms=NOW_MS)
    path = store.pending_path(schema.subject, schema.version)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(signed))
    return path


def test_sign_pending_rechecks_compatibility(store: DirectoryStore, taskforce: TaskForce) -> None:
    """sign_pending refuses a pending record whose tf.alert/2 is incompatible; nothing commits."""
    path = _crafted_pending(
        store, Schema.from_document(_alert_doc(2, remove_required)), DEFAULT_MODE
    )
    with pytest.raises(ValidationError):
        sign_pending(path, identity=taskforce.ids["coord"], roster=taskforce.trusted(), store=store)
    assert store.versions("tf.alert") == []


def test_sign_pending_rechecks_the_next_version_and_mode(
    store: DirectoryStore, taskforce: TaskForce
) -> None:
    """A pending tf.alert/7 under mode NONE (subject is FULL_TRANSITIVE) is refused."""
    path = _crafted_pending(store, Schema.from_document(_alert_doc(7, add_optional)), Mode.NONE)
    with pytest.raises((ValidationError, UsageError)):
        sign_pending(path, identity=taskforce.ids["coord"], roster=taskforce.trusted(), store=store)
    assert store.versions("tf.alert") == []


# ---------------------------------------------------------------------------------------------
# load_registry skips a bad cached record with a warning: never used, never fatal


def _tamper_schema_text(data: bytes) -> bytes:
    assert data.count(b'"title":"Alert"') == 1
    return data.replace(b'"title":"Alert"', b'"title":"Alarm"')


def _tamper_signature(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


def _tamper_truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _tamper_member_signature(data: bytes) -> bytes:
    signed, _ = decode_record(data)
    return encode(sign_record(SignedSchemaRecord(record=signed.record, sigs=[]), MEMBER))


@pytest.mark.parametrize(
    "tamper",
    [_tamper_schema_text, _tamper_signature, _tamper_truncate, _tamper_member_signature],
    ids=["schema-text", "signature-bit", "truncated", "member-signed"],
)
def test_tampered_cached_record_is_skipped_with_a_warning(
    tamper: Callable[[bytes], bytes],
    with_v2: Registration,
    store: DirectoryStore,
    taskforce: TaskForce,
) -> None:
    """A cached record changed after commit is not used, and load_registry warns about it."""
    path = store.root / "tf.alert" / "2.tfschema"
    path.write_bytes(tamper(path.read_bytes()))
    with capture_logs() as logs:
        registry = load_registry(store, taskforce.trusted())
    assert registry.lookup("tf.alert/2") is None
    assert registry.lookup("tf.alert/1") is not None
    assert [(e["event"], e["schema"]) for e in logs] == [("schema_record_skipped", "tf.alert/2")]


def test_record_filed_under_another_version_is_skipped(
    with_v2: Registration, store: DirectoryStore, taskforce: TaskForce
) -> None:
    """A valid tf.alert/2 record copied to 3.tfschema is skipped; version 2 still loads."""
    folder = store.root / "tf.alert"
    (folder / "3.tfschema").write_bytes((folder / "2.tfschema").read_bytes())
    with capture_logs() as logs:
        registry = load_registry(store, taskforce.trusted())
    assert registry.lookup("tf.alert/2") is not None
    assert registry.lookup("tf.alert/3") is None
    assert [e["schema"] for e in logs] == ["tf.alert/3"]


def test_cached_record_of_another_task_force_is_skipped(
    with_v2: Registration, store: DirectoryStore
) -> None:
    """Records signed by one task force's coordinator are skipped under another's roster."""
    with capture_logs() as logs:
        registry = load_registry(store, TF3.trusted())
    assert registry.lookup("tf.alert/2") is None
    assert [e["schema"] for e in logs] == ["tf.alert/2"]


def test_tampered_cache_also_stops_register(
    with_v2: Registration, tmp_path: Path, store: DirectoryStore, taskforce: TaskForce
) -> None:
    """Registering on top of a tampered cache is refused (it loads the registry first)."""
    path = store.root / "tf.alert" / "2.tfschema"
    path.write_bytes(_tamper_signature(path.read_bytes()))
    with pytest.raises(ValidationError):
        _register(_write(tmp_path, _alert_doc(3, add_another_optional)), taskforce, "coord", store)
    assert store.versions("tf.alert") == [2]


# ---------------------------------------------------------------------------------------------
# export, compat_files, validate_body


def test_export_writes_every_schema(
    with_v2: Registration, tmp_path: Path, store: DirectoryStore, taskforce: TaskForce
) -> None:
    """export writes DIR/<subject>/<version>.json for every schema, equal to its document."""
    registry = load_registry(store, taskforce.trusted())
    out = tmp_path / "export"
    written = export(registry, out)
    assert sorted(str(p.relative_to(out)) for p in written) == sorted(
        f"{n.split('/')[0]}/{n.split('/')[1]}.json" for n in registry.names()
    )
    assert len(written) == 5
    for name in registry.names():
        subject, version = name.split("/")
        schema = registry.lookup(name)
        assert schema is not None
        data = (out / subject / f"{version}.json").read_bytes()
        assert json.loads(data) == schema.document
        assert Schema.from_bytes(data).fingerprint == schema.fingerprint


def test_export_of_shipped_matches_the_repository_files(tmp_path: Path) -> None:
    """Exporting the shipped registry reproduces the content of schemas/*/1.json."""
    written = export(shipped(), tmp_path)
    repo_schemas = Path(__file__).resolve().parents[2] / "schemas"
    for path in written:
        original = repo_schemas / path.parent.name / path.name
        assert json.loads(path.read_bytes()) == json.loads(original.read_bytes())


def _without_id(doc: Doc) -> Doc:
    return {k: v for k, v in doc.items() if k != "$id"}


def test_compat_files_reports_incompatible_drafts(tmp_path: Path) -> None:
    """Two files without $id: removing a required property is reported with its path."""
    old = _write(tmp_path, _without_id(ALERT1.document), "old.json")
    new = _write(tmp_path, _without_id(_alert_doc(2, remove_required)), "new.json")
    reasons = compat_files(old, new, Mode.FULL)
    assert reasons == ["$.properties.summary: required property removed - BACKWARD-compatible only"]


def test_compat_files_accepts_a_compatible_draft(tmp_path: Path) -> None:
    """Adding an optional property with a default is FULL-compatible: no reasons."""
    old = _write(tmp_path, _without_id(ALERT1.document), "old.json")
    new = _write(tmp_path, _without_id(_alert_doc(2, add_optional)), "new.json")
    assert compat_files(old, new, Mode.FULL) == []


def test_compat_files_direction_follows_the_mode(tmp_path: Path) -> None:
    """Removing a required property is BACKWARD-compatible, not FORWARD; NONE accepts all."""
    old = _write(tmp_path, _without_id(ALERT1.document), "old.json")
    new = _write(tmp_path, _without_id(_alert_doc(2, remove_required)), "new.json")
    assert compat_files(old, new, Mode.BACKWARD) == []
    assert compat_files(old, new, Mode.FORWARD) != []
    assert compat_files(old, new, Mode.NONE) == []


def test_compat_files_refuses_a_file_outside_the_profile(tmp_path: Path) -> None:
    """A draft with anyOf is refused before any comparison."""
    old = _write(tmp_path, _without_id(ALERT1.document), "old.json")
    bad = _without_id(ALERT1.document)
    bad["properties"] = {**bad["properties"], "x": {"anyOf": [{"type": "string"}]}}
    with pytest.raises(ValidationError, match="anyOf"):
        compat_files(old, _write(tmp_path, bad, "bad.json"), Mode.FULL)


def test_validate_body_returns_the_schema(tmp_path: Path) -> None:
    """A valid body file validates against tf.alert/1 and by subject (latest)."""
    body = EXAMPLES / "alert.json"
    assert validate_body(shipped(), "tf.alert/1", body).name == "tf.alert/1"
    assert validate_body(shipped(), "tf.alert", body).name == "tf.alert/1"


def test_validate_body_names_every_failing_path(tmp_path: Path) -> None:
    """An invalid body file raises ValidationError with each failing path."""
    value = json.loads((EXAMPLES / "alert.json").read_bytes())
    value["severity"] = "apocalyptic"
    value["where"] = {"country": "nl"}
    body = tmp_path / "body.json"
    body.write_text(json.dumps(value))
    with pytest.raises(ValidationError) as info:
        validate_body(shipped(), "tf.alert/1", body)
    assert sorted(info.value.paths) == ["$.severity", "$.where.country"]


def test_validate_body_of_an_unknown_schema_is_refused() -> None:
    """An unknown schema name is a ValidationError listing the known ones."""
    with pytest.raises(ValidationError, match=re.escape("tf.nothing/1")) as info:
        validate_body(shipped(), "tf.nothing/1", EXAMPLES / "alert.json")
    assert "tf.alert/1" in info.value.hint
