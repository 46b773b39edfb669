"""What a hostile or careless schema, record or cache must not achieve (registry review)."""

from __future__ import annotations

import copy
import json
import os
import re
import stat
import time
from pathlib import Path
from typing import Any, Final

import msgspec
import pytest
from structlog.testing import capture_logs
from tfkit import NOW_MS, build_taskforce

from tfshare import roster as R
from tfshare.encoding import encode
from tfshare.errors import InputError, ValidationError
from tfshare.files import read_bytes
from tfshare.registry.book import shipped
from tfshare.registry.compat import Mode
from tfshare.registry.profile import ProfileError, parse_document
from tfshare.registry.records import new_record, sign_record, verify_record
from tfshare.registry.regex import PatternError, check_pattern
from tfshare.registry.schema import Schema
from tfshare.workflows.schemas import load_registry, register, store_for

Doc = dict[str, Any]
TF: Final = build_taskforce()
_ALERT1 = shipped().lookup("tf.alert/1")
assert _ALERT1 is not None
ALERT1: Final[Schema] = _ALERT1


def _doc(props: Doc, defs: Doc | None = None, name: str = "x.test/1") -> Doc:
    doc: Doc = {
        "$id": f"urn:tfshare:schema:{name}",
        "type": "object",
        "properties": props,
        "additionalProperties": False,
    }
    if defs is not None:
        doc["$defs"] = defs
    return doc


# -- patterns ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pattern",
    [
        "^([a-z0-9]+[-.]?)*[a-z0-9]+$",  # nested quantifiers: catastrophic backtracking
        "^(a|a)*b$",  # ambiguous alternation under a quantifier
        "^[a-z]*[a-z]*[a-z]*!$",  # three variable quantifiers: cubic
        "^a{,3}$",  # Python reads {,3}; ECMA-262 reads it literally
        "^\\d+$",  # Unicode digits in Python
        "^\\w+$",
        "^\\s+$",
        "^.+$",  # line terminators differ
        "^a$|^b$",  # anchors bind differently; only the last $ would become \\Z
        "^(?P<x>a)$",  # not ECMA-262
        "^(?i)a$",
        "^a+?$",
        "^é$",
    ],
)
def test_pattern_outside_the_portable_safe_subset_is_refused(pattern: str) -> None:
    """Patterns that can backtrack catastrophically or mean different things in ECMA-262
    and Python are refused, as a pattern and inside a schema."""
    with pytest.raises(PatternError):
        check_pattern(pattern)
    with pytest.raises(ProfileError) as info:
        Schema.from_document(_doc({"s": {"type": "string", "pattern": pattern}}))
    assert info.value.keyword == "pattern"


def test_shipped_patterns_are_in_the_subset() -> None:
    """Every pattern in the shipped documents passes the subset check."""
    found = []
    for name in shipped().names():
        schema = shipped().lookup(name)
        assert schema is not None
        found += re.findall(r'"pattern": "((?:[^"\\]|\\.)*)"', json.dumps(schema.document))
    assert found
    for pattern in found:
        check_pattern(json.loads(f'"{pattern}"'))


def test_refused_redos_pattern_would_have_been_slow() -> None:
    """The nested-quantifier pattern really is dangerous in Python's re (so refusing matters)."""
    started = time.perf_counter()
    assert re.match(r"^([a-z0-9]+[-.]?)*[a-z0-9]+\Z", "a" * 21 + "!") is None
    assert time.perf_counter() - started > 0.05


@pytest.mark.parametrize(
    "value",
    [
        "\u0662\u0660\u0662\u0666-11-21T10:00:00Z",  # Arabic-Indic digits
        "2026-13-01T00:00:00Z",
        "2026-11-21T25:00:00Z",
        "2026-11-21T10:61:00Z",
        "2026-11-21T10:00:00+99:99",
        "2026-11-21T10:00:00Z\n",
    ],
)
def test_date_time_is_ascii_rfc3339_in_range(value: str) -> None:
    """format: date-time accepts only ASCII RFC 3339 with fields in range."""
    body = json.loads((Path(__file__).parents[2] / "examples" / "alert.json").read_text())
    body["expires"] = value
    with pytest.raises(ValidationError):
        ALERT1.from_json(json.dumps(body).encode())


# -- documents --------------------------------------------------------------------------------


def test_discriminator_with_extra_keywords_is_refused() -> None:
    """A union's discriminator must be exactly {"const": ...}: no $id/$schema tricks."""
    variant: Doc = {
        "type": "object",
        "properties": {"kind": {"const": "a", "$id": "urn:evil"}},
        "required": ["kind"],
        "additionalProperties": False,
    }
    other = copy.deepcopy(variant)
    other["properties"]["kind"] = {"const": "b"}
    doc = _doc(
        {"u": {"oneOf": [{"$ref": "#/$defs/a"}, {"$ref": "#/$defs/b"}]}},
        {"a": variant, "b": other},
    )
    with pytest.raises(ProfileError) as info:
        Schema.from_document(doc)
    assert info.value.path == "$.$defs.a.properties.kind"


def test_unreferenced_definition_is_still_checked() -> None:
    """A $defs entry nobody references must be inside the profile too."""
    with pytest.raises(ProfileError) as info:
        Schema.from_document(_doc({}, {"unused": {"anyOf": [{"type": "string"}]}}))
    assert info.value.path.startswith("$.$defs.unused")


def test_exponential_reference_expansion_is_refused_quickly() -> None:
    """A small document whose references expand exponentially is refused, not computed."""
    defs: Doc = {"l0": {"type": "string"}}
    for level in range(1, 6):
        defs[f"l{level}"] = {
            "type": "object",
            "properties": {f"p{i}": {"$ref": f"#/$defs/l{level - 1}"} for i in range(64)},
            "additionalProperties": False,
        }
    started = time.perf_counter()
    with pytest.raises(ProfileError):
        Schema.from_document(_doc({"root": {"$ref": "#/$defs/l5"}}, defs))
    assert time.perf_counter() - started < 20


def test_one_variant_in_two_unions_is_admitted() -> None:
    """A definition used as a variant in two unions builds (no clash of generated names)."""
    a = {
        "type": "object",
        "properties": {"k": {"const": "a"}},
        "required": ["k"],
        "additionalProperties": False,
    }
    b = {
        "type": "object",
        "properties": {"k": {"const": "b"}},
        "required": ["k"],
        "additionalProperties": False,
    }
    union = {"oneOf": [{"$ref": "#/$defs/a"}, {"$ref": "#/$defs/b"}]}
    schema = Schema.from_document(_doc({"p": union, "q": copy.deepcopy(union)}, {"a": a, "b": b}))
    record = schema.from_json(b'{"p": {"k": "a"}, "q": {"k": "b"}}')
    assert msgspec.to_builtins(record) == {"p": {"k": "a"}, "q": {"k": "b"}}


@pytest.mark.parametrize(
    "text",
    [b'{"type": "object", "x": 1e400}', b'{"type": "object", "x": 1152921504606846976}'],
)
def test_numbers_not_every_implementation_reads_alike_are_refused(text: bytes) -> None:
    """Infinite floats and integers beyond 2^53 in a schema are refused as ProfileError."""
    with pytest.raises(ProfileError):
        parse_document(text)


# -- records and the cache --------------------------------------------------------------------


def _v2_doc() -> Doc:
    doc = copy.deepcopy(ALERT1.document)
    doc["$id"] = "urn:tfshare:schema:tf.alert/2"
    doc["properties"]["case_ref"] = {"type": "string", "maxLength": 64, "description": "c"}
    return doc


def test_record_of_another_task_force_is_refused() -> None:
    """A record signed for task force A does not verify under B's roster, even with the same
    coordinator keys."""
    schema = Schema.from_document(_v2_doc())
    signed = sign_record(
        new_record(
            schema, taskforce="be-south", mode=Mode.FULL_TRANSITIVE, previous=ALERT1, now_ms=NOW_MS
        ),
        TF.ids["coord"],
    )
    with pytest.raises(ValidationError, match="task force"):
        verify_record(encode(signed), TF.trusted())


def test_caches_of_two_task_forces_do_not_mix(tmp_path: Path) -> None:
    """Each task force has its own cache folder under the registry directory."""
    assert store_for(tmp_path, "nl-north").root == tmp_path / "nl-north"
    assert store_for(tmp_path, "be-south").root != store_for(tmp_path, "nl-north").root


def test_record_breaking_the_version_chain_is_skipped(tmp_path: Path) -> None:
    """A cached record that does not name its predecessor's fingerprint is skipped, warned."""
    store = store_for(tmp_path, "nl-north")
    doc_path = tmp_path / "v2.json"
    doc_path.write_text(json.dumps(_v2_doc()))
    register(
        doc_path,
        identity=TF.ids["coord"],
        roster=TF.trusted(),
        store=store,
        mode=None,
        now_ms=NOW_MS,
    )
    v3 = _v2_doc()
    v3["$id"] = "urn:tfshare:schema:tf.alert/3"
    schema = Schema.from_document(v3)
    forged = sign_record(
        new_record(
            schema, taskforce="nl-north", mode=Mode.FULL_TRANSITIVE, previous=ALERT1, now_ms=NOW_MS
        ),  # names version 1, not version 2, as its predecessor
        TF.ids["coord"],
    )
    store.create("tf.alert", 3, encode(forged))
    with capture_logs() as logs:
        registry = load_registry(store, TF.trusted())
    assert registry.lookup("tf.alert/2") is not None
    assert registry.lookup("tf.alert/3") is None
    assert [e["schema"] for e in logs] == ["tf.alert/3"]
    assert "does not follow" in logs[0]["reason"]


def test_pending_records_folder_is_private(tmp_path: Path) -> None:
    """Records awaiting signatures live in a 0700 folder."""
    tf = build_taskforce(coordinators=("c1", "c2"), threshold=2)
    store = store_for(tmp_path, "nl-north")
    doc_path = tmp_path / "v2.json"
    doc_path.write_text(json.dumps(_v2_doc()))
    result = register(
        doc_path, identity=tf.ids["c1"], roster=tf.trusted(), store=store, mode=None, now_ms=NOW_MS
    )
    assert not result.committed and result.pending_path is not None
    assert stat.S_IMODE(os.stat(store.root / ".pending").st_mode) == 0o700


def test_fifo_is_refused_not_waited_on(tmp_path: Path) -> None:
    """Reading a FIFO where a file belongs fails at once with InputError."""
    fifo = tmp_path / "roster"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="regular file"):
        read_bytes(fifo, what="roster", limit=100)


def test_roster_module_unchanged_by_registry_records() -> None:
    """Registry signatures use their own label: a roster signature never verifies a record."""
    assert R.L_ROSTER != b"tfshare/v1/schema\x00"
