"""One wrong schema record never poisons an agency's registry cache (issue 11, item 3).

A record fetched from the broker is verified in full (coordinator signatures, the subject and
version it was asked for, fingerprint, chain, mode, compatibility) before anything is written;
a bad entry already on disk is skipped with a ``schema_record_skipped`` warning, and every other
record still loads.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs
from tfkit import NOW_MS, build_taskforce

from tfshare.encoding import encode
from tfshare.errors import ValidationError
from tfshare.logconfig import configure
from tfshare.registry.book import Registry, shipped
from tfshare.registry.compat import Mode
from tfshare.registry.records import (
    SignedSchemaRecord,
    decode_record,
    new_record,
    sign_record,
    verify_record,
)
from tfshare.registry.schema import Schema
from tfshare.registry_store import DirectoryStore
from tfshare.workflows.schemas import cache_fetched, load_registry, register

Doc = dict[str, Any]
TF: Final = build_taskforce()
TF3: Final = build_taskforce(coordinators=("c1", "c2", "c3"), threshold=2)


def _shipped(name: str) -> Schema:
    schema = shipped().lookup(name)
    assert schema is not None
    return schema


def _next_doc(subject: str, version: int) -> Doc:
    """Version ``version`` of a shipped subject: version 1 plus one optional property per step
    (compatible both ways, so every mode accepts it)."""
    doc = copy.deepcopy(_shipped(f"{subject}/1").document)
    doc["$id"] = f"urn:tfshare:schema:{subject}/{version}"
    for step in range(2, version + 1):
        doc["properties"][f"extra_{step}"] = {"type": "string", "maxLength": 20, "default": "-"}
    return doc


def _register(tmp_path: Path, store: DirectoryStore, subject: str, version: int) -> bytes:
    """Register ``subject/version`` as the 1-of-1 coordinator; the committed record's bytes."""
    path = tmp_path / f"{subject}-{version}.json"
    path.write_text(json.dumps(_next_doc(subject, version)))
    register(path, identity=TF.ids["coord"], roster=TF.trusted(), store=store, mode=None, now_ms=1)
    data = store.get(subject, version)
    assert data is not None
    return data


def _tree(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its bytes (None for folders): a snapshot to compare."""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): p.read_bytes() if p.is_file() else None
        for p in sorted(root.rglob("*"))
        if p.name != ".lock"
    }


@pytest.fixture
def source(tmp_path: Path) -> DirectoryStore:
    """A coordinator's cache with tf.alert/2, tf.alert/3, tf.red_flag/2 and tf.tip_summary/2."""
    store = DirectoryStore(tmp_path / "coord")
    for subject, version in (
        ("tf.alert", 2),
        ("tf.alert", 3),
        ("tf.red_flag", 2),
        ("tf.tip_summary", 2),
    ):
        _register(tmp_path, store, subject, version)
    return store


def _copy(source: DirectoryStore, target: DirectoryStore) -> None:
    for subject in source.subjects():
        for version in source.versions(subject):
            data = source.get(subject, version)
            assert data is not None
            target.create(subject, version, data)


def _record_of(source: DirectoryStore, subject: str, version: int) -> bytes:
    data = source.get(subject, version)
    assert data is not None
    return data


# -- a bad entry on disk is skipped with a warning ------------------------------------------------


def _flip_signature(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


def _change_schema_text(data: bytes) -> bytes:
    assert data.count(b'"maxLength":20') >= 1
    return data.replace(b'"maxLength":20', b'"maxLength":21', 1)


def _truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _member_signed(data: bytes) -> bytes:
    signed, _ = decode_record(data)
    return encode(sign_record(SignedSchemaRecord(record=signed.record, sigs=[]), TF.ids["police"]))


BAD_ENTRIES: Final[dict[str, Callable[[bytes, DirectoryStore], bytes]]] = {
    "signature-bit": lambda data, _: _flip_signature(data),
    "schema-text": lambda data, _: _change_schema_text(data),
    "truncated": lambda data, _: _truncate(data),
    "empty": lambda data, _: b"",
    "not-msgpack": lambda data, _: b"\xc1 this is not a record",
    "member-signed": lambda data, _: _member_signed(data),
    # validly signed by the coordinator, but the record of another subject and version
    "other-subject": lambda _, source: _record_of(source, "tf.alert", 2),
    "other-version": lambda _, source: _record_of(source, "tf.red_flag", 2),
}


@pytest.mark.parametrize("bad", list(BAD_ENTRIES), ids=list(BAD_ENTRIES))
def test_one_bad_entry_is_skipped_and_every_other_record_loads(
    bad: str, source: DirectoryStore, tmp_path: Path
) -> None:
    """tf.tip_summary/2 on disk is bad: it is left out with one warning naming its file and
    why; tf.alert/2, tf.alert/3 and tf.red_flag/2 load as if it were not there."""
    cache = DirectoryStore(tmp_path / "agency")
    _copy(source, cache)
    path = cache.path_of("tf.tip_summary", 2)
    path.write_bytes(BAD_ENTRIES[bad](path.read_bytes(), source))

    with capture_logs() as logs:
        registry = load_registry(cache, TF.trusted())

    for name in ("tf.alert/2", "tf.alert/3", "tf.red_flag/2", "tf.tip_summary/1"):
        assert registry.lookup(name) is not None, name
    assert registry.lookup("tf.tip_summary/2") is None
    assert [log["event"] for log in logs] == ["schema_record_skipped"]
    (warning,) = logs
    assert warning["log_level"] == "warning"
    assert warning["schema"] == "tf.tip_summary/2"
    assert warning["file"] == str(path)
    assert warning["reason"]
    assert set(warning) == {"event", "log_level", "schema", "file", "reason"}


def test_a_record_filed_under_another_subject_is_skipped_with_that_reason(
    source: DirectoryStore, tmp_path: Path
) -> None:
    """The coordinator-signed tf.alert/2 record filed as tf.red_flag/2 is not tf.red_flag/2:
    the warning says whose record it is."""
    cache = DirectoryStore(tmp_path / "agency")
    cache.create("tf.red_flag", 2, _record_of(source, "tf.alert", 2))
    with capture_logs() as logs:
        registry = load_registry(cache, TF.trusted())
    assert registry.lookup("tf.red_flag/2") is None
    assert registry.lookup("tf.alert/2") is None  # not under its own name: not used at all
    assert "tf.alert/2" in logs[0]["reason"] and "tf.red_flag/2" in logs[0]["reason"]


def test_versions_after_a_skipped_one_are_skipped_too(
    source: DirectoryStore, tmp_path: Path
) -> None:
    """tf.alert/3 follows tf.alert/2: with 2 bad, 3 has no verified predecessor and is left
    out too (each with its own warning); other subjects are untouched."""
    cache = DirectoryStore(tmp_path / "agency")
    _copy(source, cache)
    path = cache.path_of("tf.alert", 2)
    path.write_bytes(_flip_signature(path.read_bytes()))
    with capture_logs() as logs:
        registry = load_registry(cache, TF.trusted())
    assert registry.history("tf.alert") == [_shipped("tf.alert/1")]
    assert registry.lookup("tf.red_flag/2") is not None
    assert [log["schema"] for log in logs] == ["tf.alert/2", "tf.alert/3"]
    assert "tf.alert/2" in logs[1]["reason"]


def test_an_unreadable_entry_is_skipped(source: DirectoryStore, tmp_path: Path) -> None:
    """A record file that is far too large is not read whole; it is skipped like the others."""
    cache = DirectoryStore(tmp_path / "agency")
    _copy(source, cache)
    cache.path_of("tf.red_flag", 2).write_bytes(b"\x00" * (2 * 1024 * 1024))
    with capture_logs() as logs:
        registry = load_registry(cache, TF.trusted())
    assert registry.lookup("tf.red_flag/2") is None
    assert registry.lookup("tf.alert/3") is not None
    assert [log["schema"] for log in logs] == ["tf.red_flag/2"]


def test_a_cache_of_another_task_force_loads_nothing_and_stops_nothing(
    source: DirectoryStore,
) -> None:
    """Records that TF3's coordinators never signed are all skipped; the shipped schemas stay."""
    with capture_logs() as logs:
        registry = load_registry(source, TF3.trusted())
    assert registry.names() == shipped().names()
    assert len(logs) == 4


@given(
    cut=st.integers(min_value=0, max_value=4000),
    flip=st.integers(min_value=0, max_value=4000),
    bit=st.integers(min_value=0, max_value=7),
)
def test_any_damage_to_a_cached_record_never_stops_the_load(
    cut: int, flip: int, bit: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A record truncated anywhere and with any bit flipped: load_registry returns (no
    exception), and the record is used only if the damage left it byte-for-byte valid."""
    tmp = tmp_path_factory.mktemp("damage")
    store = DirectoryStore(tmp / "agency")
    data = _register(tmp, store, "tf.alert", 2)
    damaged = bytearray(data[: max(cut, 1)] if cut < len(data) else data)
    damaged[flip % len(damaged)] ^= 1 << bit
    store.path_of("tf.alert", 2).write_bytes(bytes(damaged))
    with capture_logs() as logs:
        registry = load_registry(store, TF.trusted())
    assert registry.lookup("tf.alert/1") is not None
    assert registry.lookup("tf.alert/2") is None  # any change breaks a signature or encoding
    assert [log["event"] for log in logs] == ["schema_record_skipped"]


def test_warning_reaches_a_configured_logger(
    source: DirectoryStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With the CLI's logging (JSON lines on stderr), the skip is one warning line that names
    the file; nothing of the record's content is printed."""
    cache = DirectoryStore(tmp_path / "agency")
    _copy(source, cache)
    path = cache.path_of("tf.alert", 3)
    path.write_bytes(_truncate(path.read_bytes()))
    configure("warning", json=True)
    try:
        load_registry(cache, TF.trusted())
    finally:
        structlog.reset_defaults()
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if "schema_record_skipped" in line]
    assert str(path) in line and '"level": "warning"' in line
    assert "maxLength" not in line


# -- coordinators do not build on a damaged history -------------------------------------------


def test_register_refuses_to_build_on_a_skipped_version_of_its_subject(
    source: DirectoryStore, tmp_path: Path
) -> None:
    """A coordinator registering tf.alert/4 over a damaged tf.alert/3 is stopped (exit 5) and
    told which file to remove; nothing is written."""
    path = source.path_of("tf.alert", 3)
    path.write_bytes(_flip_signature(path.read_bytes()))
    before = _tree(source.root)
    doc = tmp_path / "alert4.json"
    doc.write_text(json.dumps(_next_doc("tf.alert", 4)))
    with pytest.raises(ValidationError, match=re.escape("tf.alert/3")) as info:
        register(
            doc, identity=TF.ids["coord"], roster=TF.trusted(), store=source, mode=None, now_ms=1
        )
    assert str(path) in info.value.hint
    assert _tree(source.root) == before


def test_register_is_not_stopped_by_another_subjects_bad_entry(
    source: DirectoryStore, tmp_path: Path
) -> None:
    """A damaged tf.red_flag/2 does not keep a coordinator from registering tf.alert/4."""
    path = source.path_of("tf.red_flag", 2)
    path.write_bytes(_truncate(path.read_bytes()))
    _register(tmp_path, source, "tf.alert", 4)
    assert source.versions("tf.alert") == [2, 3, 4]


# -- a fetched record is verified in full before it is written --------------------------------


def _signed(doc: Doc, *, previous: Schema, mode: Mode = Mode.FULL_TRANSITIVE) -> bytes:
    """A record for ``doc`` that the coordinator signs (so only the check under test fails)."""
    schema = Schema.from_document(doc)
    record = new_record(schema, taskforce="nl-north", mode=mode, previous=previous, now_ms=NOW_MS)
    return encode(sign_record(record, TF.ids["coord"]))


def _incompatible_alert2() -> bytes:
    doc = _next_doc("tf.alert", 2)
    doc["properties"]["severity"]["enum"].remove("low")  # not FULL_TRANSITIVE-compatible
    return _signed(doc, previous=_shipped("tf.alert/1"))


def _alert2_naming_another_predecessor() -> bytes:
    return _signed(_next_doc("tf.alert", 2), previous=_shipped("tf.red_flag/1"))


def _alert2_with_another_mode() -> bytes:
    return _signed(_next_doc("tf.alert", 2), previous=_shipped("tf.alert/1"), mode=Mode.BACKWARD)


REFUSED_FETCHES: Final[dict[str, tuple[str, int, Callable[[DirectoryStore], bytes]]]] = {
    # (asked-for subject, version, the record the bucket returns)
    "other-subject": ("tf.red_flag", 2, lambda src: _record_of(src, "tf.alert", 2)),
    "other-version": ("tf.alert", 2, lambda src: _record_of(src, "tf.alert", 3)),
    "member-signed": ("tf.alert", 2, lambda src: _member_signed(_record_of(src, "tf.alert", 2))),
    "truncated": ("tf.alert", 2, lambda src: _truncate(_record_of(src, "tf.alert", 2))),
    "incompatible": ("tf.alert", 2, lambda _: _incompatible_alert2()),
    "wrong-predecessor": ("tf.alert", 2, lambda _: _alert2_naming_another_predecessor()),
    "mode-change": ("tf.alert", 2, lambda _: _alert2_with_another_mode()),
}


@pytest.mark.parametrize("case", list(REFUSED_FETCHES), ids=list(REFUSED_FETCHES))
def test_a_fetched_record_that_fails_any_check_is_refused_and_nothing_is_written(
    case: str, source: DirectoryStore, tmp_path: Path
) -> None:
    """The bucket answers the key asked for with a wrong record: cache_fetched raises
    ValidationError naming what was asked for, and the agency's cache is byte-for-byte as
    before (no file, no latest pointer, nothing moved aside)."""
    subject, version, make = REFUSED_FETCHES[case]
    data = make(source)
    cache = DirectoryStore(tmp_path / "agency")
    cache.create("tf.tip_summary", 2, _record_of(source, "tf.tip_summary", 2))
    registry = load_registry(cache, TF.trusted())
    before = _tree(cache.root)
    with pytest.raises(ValidationError, match=re.escape(f"{subject}/{version}")):
        cache_fetched(cache, registry, TF.trusted(), subject, version, data, now_ms=NOW_MS)
    assert _tree(cache.root) == before
    assert load_registry(cache, TF.trusted()).lookup(f"{subject}/{version}") is None


def test_a_record_of_another_subject_is_refused_by_name(source: DirectoryStore) -> None:
    """verify_record with the name asked for refuses a validly signed record of another one,
    and says whose record it is."""
    data = _record_of(source, "tf.alert", 2)
    assert verify_record(data, TF.trusted(), name=("tf.alert", 2)).schema.name == "tf.alert/2"
    with pytest.raises(ValidationError, match=re.escape("tf.alert/2, not of tf.red_flag/2")):
        verify_record(data, TF.trusted(), name=("tf.red_flag", 2))


def test_a_verified_fetch_is_written_and_known(source: DirectoryStore, tmp_path: Path) -> None:
    """The right records, fetched in order, are cached with their latest pointer and known."""
    cache = DirectoryStore(tmp_path / "agency")
    registry: Registry = load_registry(cache, TF.trusted())
    for version in (2, 3):
        data = _record_of(source, "tf.alert", version)
        registry = cache_fetched(
            cache, registry, TF.trusted(), "tf.alert", version, data, now_ms=NOW_MS
        )
    assert registry.lookup("tf.alert/3") is not None
    assert cache.versions("tf.alert") == [2, 3]
    assert cache.latest("tf.alert") == (3, 2)
    assert load_registry(cache, TF.trusted()).lookup("tf.alert/3") is not None


def test_a_skipped_entry_is_replaced_by_the_verified_record_and_kept_aside(
    source: DirectoryStore, tmp_path: Path
) -> None:
    """A poisoned tf.red_flag/2 file (another subject's record) left by an older tfshare heals
    itself: the verified tf.red_flag/2 takes its place, the bad file is kept beside it."""
    cache = DirectoryStore(tmp_path / "agency")
    poison = _record_of(source, "tf.alert", 2)
    cache.create("tf.red_flag", 2, poison)
    registry = load_registry(cache, TF.trusted())
    good = _record_of(source, "tf.red_flag", 2)
    with capture_logs() as logs:
        registry = cache_fetched(
            cache, registry, TF.trusted(), "tf.red_flag", 2, good, now_ms=NOW_MS
        )
    assert registry.lookup("tf.red_flag/2") is not None
    assert cache.get("tf.red_flag", 2) == good
    aside = cache.path_of("tf.red_flag", 2).with_name(f"2.tfschema.{NOW_MS}.bad")
    assert aside.read_bytes() == poison
    assert cache.versions("tf.red_flag") == [2]
    assert [log["event"] for log in logs] == ["schema_record_set_aside"]
    assert load_registry(cache, TF.trusted()).lookup("tf.red_flag/2") is not None


def test_a_valid_entry_already_there_is_never_replaced(
    source: DirectoryStore, tmp_path: Path
) -> None:
    """The same record already cached (another agency sharing the cache fetched it): nothing
    is written, the registry learns it."""
    cache = DirectoryStore(tmp_path / "agency")
    registry = load_registry(cache, TF.trusted())
    data = _record_of(source, "tf.alert", 2)
    cache.create("tf.alert", 2, data)
    before = _tree(cache.root)
    registry = cache_fetched(cache, registry, TF.trusted(), "tf.alert", 2, data, now_ms=NOW_MS)
    assert registry.lookup("tf.alert/2") is not None
    assert _tree(cache.root) == before
