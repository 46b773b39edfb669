"""Schema compatibility: every row of the registry's table, both ways, in every mode."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tfshare.errors import ValidationError
from tfshare.registry import compat
from tfshare.registry.compat import DEFAULT_MODE, Change, Mode, changes, check

Schema = dict[str, Any]

REPO = Path(__file__).resolve().parents[2]
STR: Schema = {"type": "string"}
INT: Schema = {"type": "integer"}
NUM: Schema = {"type": "number"}
BOOL: Schema = {"type": "boolean"}


def _object(properties: dict[str, Schema], required: Sequence[str] = ()) -> Schema:
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


def _one(prop: Schema, *, required: bool = True) -> Schema:
    """A document whose only property, x, has the schema ``prop``."""
    return _object({"x": prop}, ["x"] if required else [])


def _variant(tag: str, **properties: Schema) -> Schema:
    """A tagged-union variant: discriminator ``kind`` plus required ``properties``."""
    return _object({"kind": {"const": tag}, **properties}, ["kind", *properties])


def _union(*variants: Schema) -> Schema:
    return _one({"oneOf": list(variants)})


def _alertish(country: Schema) -> Schema:
    """Alert-like nesting: where -> $defs.location (by $ref) -> country."""
    return {
        **_object({"where": {"$ref": "#/$defs/location"}}, ["where"]),
        "$defs": {"location": _object({"country": country}, ["country"])},
    }


def _items(items: Schema, **bounds: int) -> Schema:
    return _one({"type": "array", "items": items, **bounds})


# (id, old, new, BACKWARD-compatible (new reads old), FORWARD-compatible (old reads new)).
# Each row is also run reversed, where the two verdicts swap: that covers both directions.
ROWS: list[tuple[str, Schema, Schema, bool, bool]] = [
    # properties
    ("add-optional-property", _one(STR), _object({"x": STR, "y": INT}, ["x"]), True, True),
    (
        "add-optional-property-with-default",
        _one(STR),
        _object({"x": STR, "y": {**INT, "default": 3}}, ["x"]),
        True,
        True,
    ),
    ("add-required-property", _one(STR), _object({"x": STR, "y": INT}, ["x", "y"]), False, True),
    ("optional-to-required", _one(STR, required=False), _one(STR), False, True),
    (
        "required-property-renamed",
        _object({"a": STR}, ["a"]),
        _object({"b": STR}, ["b"]),
        False,
        False,
    ),
    (
        "optional-property-changes-type",
        _one(STR, required=False),
        _one(INT, required=False),
        False,
        False,
    ),
    # types
    ("string-to-integer", _one(STR), _one(INT), False, False),
    ("boolean-to-string", _one(BOOL), _one(STR), False, False),
    ("object-to-array", _one(_object({})), _one({"type": "array", "items": STR}), False, False),
    ("integer-to-number", _one(INT), _one(NUM), True, False),
    (
        "integer-to-number-same-bounds",
        _one({**INT, "minimum": 0, "maximum": 10}),
        _one({**NUM, "minimum": 0, "maximum": 10}),
        True,
        False,
    ),
    (
        "integer-to-number-fractional-bound",
        _one({**INT, "minimum": 0.5}),
        _one({**NUM, "minimum": 0.5}),
        True,
        False,
    ),
    (
        "integer-exclusiveMinimum-0-to-number-minimum-1",
        _one({**INT, "exclusiveMinimum": 0}),
        _one({**NUM, "minimum": 1}),
        True,
        False,
    ),
    # enums and consts
    ("enum-gains-value", _one({"enum": ["a", "b"]}), _one({"enum": ["a", "b", "c"]}), True, False),
    ("enum-reordered", _one({"enum": ["a", "b"]}), _one({"enum": ["b", "a"]}), True, True),
    (
        "typed-enum-is-bare-enum",
        _one({"type": "string", "enum": ["a", "b"]}),
        _one({"enum": ["a", "b"]}),
        True,
        True,
    ),
    ("const-changed", _one({"const": "a"}), _one({"const": "b"}), False, False),
    ("const-to-wider-enum", _one({"const": "a"}), _one({"enum": ["a", "b"]}), True, False),
    ("const-is-one-value-enum", _one({"const": "a"}), _one({"enum": ["a"]}), True, True),
    ("enum-to-string", _one({"enum": ["a", "bb"]}), _one({**STR, "maxLength": 5}), True, False),
    (
        "enum-to-too-short-string",
        _one({"enum": ["a", "long-value"]}),
        _one({**STR, "maxLength": 5}),
        False,
        False,
    ),
    (
        "enum-to-string-with-pattern",
        _one({"enum": ["a"]}),
        _one({**STR, "pattern": "^[a-z]$"}),
        False,
        False,
    ),
    # string bounds, pattern, format
    (
        "maxLength-raised",
        _one({**STR, "maxLength": 10}),
        _one({**STR, "maxLength": 20}),
        True,
        False,
    ),
    (
        "minLength-lowered",
        _one({**STR, "minLength": 5}),
        _one({**STR, "minLength": 1}),
        True,
        False,
    ),
    ("maxLength-removed", _one({**STR, "maxLength": 10}), _one(STR), True, False),
    ("minLength-0-added", _one(STR), _one({**STR, "minLength": 0}), True, True),
    ("pattern-removed", _one({**STR, "pattern": "^[A-Z]{2}$"}), _one(STR), True, False),
    ("format-removed", _one({**STR, "format": "date-time"}), _one(STR), True, False),
    (
        "pattern-changed",
        _one({**STR, "pattern": "^[A-Z]{2}$"}),
        _one({**STR, "pattern": "^[A-Z]{3}$"}),
        False,
        False,
    ),
    # numeric bounds
    ("maximum-raised", _one({**NUM, "maximum": 90}), _one({**NUM, "maximum": 180}), True, False),
    ("minimum-lowered", _one({**INT, "minimum": 0}), _one({**INT, "minimum": -5}), True, False),
    (
        "exclusiveMaximum-raised",
        _one({**NUM, "exclusiveMaximum": 1}),
        _one({**NUM, "exclusiveMaximum": 2}),
        True,
        False,
    ),
    (
        "exclusiveMinimum-lowered",
        _one({**NUM, "exclusiveMinimum": 0}),
        _one({**NUM, "exclusiveMinimum": -1}),
        True,
        False,
    ),
    ("minimum-removed", _one({**NUM, "minimum": 0}), _one(NUM), True, False),
    (
        "minimum-becomes-exclusive",
        _one({**NUM, "minimum": 0}),
        _one({**NUM, "exclusiveMinimum": 0}),
        False,
        True,
    ),
    (
        "integer-minimum-1-is-exclusiveMinimum-0",
        _one({**INT, "minimum": 1}),
        _one({**INT, "exclusiveMinimum": 0}),
        True,
        True,
    ),
    # annotations and defaults
    (
        "annotations-edited",
        {**_one({**STR, "title": "X", "description": "old"}), "examples": [{"x": "a"}]},
        {
            **_one({**STR, "title": "Y", "description": "new", "$comment": "why"}),
            "examples": [{"x": "b"}],
        },
        True,
        True,
    ),
    # Bodies leave out values equal to the default, so a changed default changes what old
    # messages mean: incompatible both ways (and so is adding or dropping one).
    (
        "default-changed",
        _one({**STR, "default": "a"}, required=False),
        _one({**STR, "default": "b"}, required=False),
        False,
        False,
    ),
    (
        "default-added",
        _one(STR, required=False),
        _one({**STR, "default": "b"}, required=False),
        False,
        False,
    ),
    # arrays
    ("maxItems-raised", _items(STR, maxItems=5), _items(STR, maxItems=10), True, False),
    ("minItems-lowered", _items(STR, minItems=2), _items(STR, minItems=1), True, False),
    ("array-items-change-type", _items(STR), _items(INT), False, False),
    ("array-items-enum-gains", _items({"enum": ["a"]}), _items({"enum": ["a", "b"]}), True, False),
    (
        "array-item-property-becomes-required",
        _items(_object({"v": STR})),
        _items(_object({"v": STR}, ["v"])),
        False,
        True,
    ),
    # tagged unions
    (
        "union-variant-added",
        _union(_variant("a")),
        _union(_variant("a"), _variant("b")),
        True,
        False,
    ),
    (
        "union-variants-reordered",
        _union(_variant("a"), _variant("b")),
        _union(_variant("b"), _variant("a")),
        True,
        True,
    ),
    (
        "union-variant-gains-required-property",
        _union(_variant("a"), _variant("b")),
        _union(_variant("a"), _variant("b", n=INT)),
        False,
        True,
    ),
    (
        "union-discriminator-renamed",
        _union(_variant("a"), _variant("b")),
        _union(
            _object({"tag": {"const": "a"}}, ["tag"]),
            _object({"tag": {"const": "b"}}, ["tag"]),
        ),
        False,
        False,
    ),
    ("object-to-union", _one(_variant("a")), _union(_variant("a"), _variant("b")), False, False),
    # references and nesting
    (
        "ref-is-inline",
        _alertish(STR),
        _object({"where": _object({"country": STR}, ["country"])}, ["where"]),
        True,
        True,
    ),
    (
        "deep-pattern-added",
        _alertish(STR),
        _alertish({**STR, "pattern": "^[A-Z]{2}$"}),
        False,
        True,
    ),
    (
        "deep-required-property-removed",
        _alertish(STR),
        {
            **_object({"where": {"$ref": "#/$defs/location"}}, ["where"]),
            "$defs": {"location": _object({})},
        },
        True,
        False,
    ),
    (
        "additionalProperties-dropped",
        _one(STR),
        {**_one(STR), "additionalProperties": True},
        False,
        False,
    ),
]


def _both_ways() -> Iterator[Any]:
    for name, old, new, backward, forward in ROWS:
        yield pytest.param(old, new, backward, forward, id=name)
        yield pytest.param(new, old, forward, backward, id=f"{name}-reversed")


@pytest.mark.parametrize(("old", "new", "backward", "forward"), list(_both_ways()))
def test_verdict_in_every_mode(old: Schema, new: Schema, backward: bool, forward: bool) -> None:
    """One change judged by NONE, BACKWARD, FORWARD and FULL, plain and transitive."""
    expected = {
        Mode.NONE: True,
        Mode.BACKWARD: backward,
        Mode.BACKWARD_TRANSITIVE: backward,
        Mode.FORWARD: forward,
        Mode.FORWARD_TRANSITIVE: forward,
        Mode.FULL: backward and forward,
        Mode.FULL_TRANSITIVE: backward and forward,
    }
    for mode, compatible in expected.items():
        reasons = check(new, [old], mode)
        assert (reasons == []) is compatible, (mode, reasons)
    found = changes(old, new)
    assert all(c.backward for c in found) is backward
    assert all(c.forward for c in found) is forward


@pytest.mark.parametrize(
    ("old", "new", "reasons"),
    [
        pytest.param(
            _object({"severity": {"enum": ["low", "high", "urgent"]}}, ["severity"]),
            _object({"severity": {"enum": ["low", "high"]}}, ["severity"]),
            ['$.properties.severity.enum: value "urgent" removed - FORWARD-compatible only'],
            id="enum-value-removed",
        ),
        pytest.param(
            _alertish(STR),
            _alertish({**STR, "pattern": "^[A-Z]{2}$"}),
            [
                "$.properties.where.properties.country.pattern: "
                'pattern "^[A-Z]{2}$" added - FORWARD-compatible only'
            ],
            id="pattern-added-deep-in-defs",
        ),
        pytest.param(
            _one(STR),
            _object({"x": STR, "y": INT}, ["x", "y"]),
            ["$.properties.y: required property added - FORWARD-compatible only"],
            id="required-property-added",
        ),
        pytest.param(
            _one(STR),
            _object({}),
            ["$.properties.x: required property removed - BACKWARD-compatible only"],
            id="required-property-removed",
        ),
        pytest.param(
            _one(STR),
            _one(STR, required=False),
            ["$.properties.x: property became optional - BACKWARD-compatible only"],
            id="property-became-optional",
        ),
        pytest.param(
            _one(STR),
            _one(INT),
            ["$.properties.x.type: type changed from string to integer - incompatible"],
            id="type-changed",
        ),
        pytest.param(
            _one({**NUM, "minimum": 0}),
            _one({**NUM, "exclusiveMinimum": 0}),
            [
                "$.properties.x.exclusiveMinimum: lower bound changed from minimum 0 "
                "to exclusiveMinimum 0 - FORWARD-compatible only"
            ],
            id="bound-keyword-changed",
        ),
        pytest.param(
            _one({"const": "a"}),
            _one({"const": "b"}),
            ['$.properties.x.const: const changed from "a" to "b" - incompatible'],
            id="const-changed",
        ),
        pytest.param(
            _items({**STR, "maxLength": 8}, maxItems=3),
            _items({**STR, "maxLength": 4}, maxItems=6),
            [
                "$.properties.x.maxItems: maxItems raised from 3 to 6 - BACKWARD-compatible only",
                "$.properties.x.items.maxLength: maxLength lowered from 8 to 4"
                " - FORWARD-compatible only",
            ],
            id="array-and-items",
        ),
        pytest.param(
            _union(_variant("a"), _variant("b", n=INT)),
            _union(_variant("c"), _variant("b", n=STR)),
            [
                '$.properties.x.oneOf[0]: variant "c" added - BACKWARD-compatible only',
                "$.properties.x.oneOf[1].properties.n.type: type changed from integer to string"
                " - incompatible",
                '$.properties.x.oneOf: variant "a" removed - FORWARD-compatible only',
            ],
            id="union-variants",
        ),
        pytest.param(
            _one(STR),
            {**_one(STR), "additionalProperties": True},
            [
                "$.additionalProperties: additionalProperties changed from false to true"
                " - incompatible"
            ],
            id="additionalProperties",
        ),
    ],
)
def test_reasons_are_exact(old: Schema, new: Schema, reasons: list[str]) -> None:
    """FULL reports each change as '<path in the new document>: <what> - <verdict>'."""
    assert check(new, [old], Mode.FULL) == reasons


def test_forward_mode_does_not_report_a_forward_compatible_change() -> None:
    """A removed enum value breaks only BACKWARD, so FORWARD accepts it."""
    old = _one({"enum": ["low", "urgent"]})
    new = _one({"enum": ["low"]})
    assert check(new, [old], Mode.FORWARD) == []
    assert check(new, [old], Mode.BACKWARD) == [
        '$.properties.x.enum: value "urgent" removed - FORWARD-compatible only'
    ]


V1_STRING_X = _object({"x": STR, "y": STR}, ["y"])
V2_NO_X = _object({"y": STR}, ["y"])
V3_INTEGER_X = _object({"x": INT, "y": STR}, ["y"])
READDED = (
    "against version 1: $.properties.x.type: type changed from string to integer - incompatible"
)


@pytest.mark.parametrize(
    ("mode", "reasons"),
    [
        pytest.param(Mode.NONE, [], id="none"),
        pytest.param(Mode.BACKWARD, [], id="backward"),
        pytest.param(Mode.FORWARD, [], id="forward"),
        pytest.param(Mode.FULL, [], id="full"),
        pytest.param(Mode.BACKWARD_TRANSITIVE, [READDED], id="backward-transitive"),
        pytest.param(Mode.FORWARD_TRANSITIVE, [READDED], id="forward-transitive"),
        pytest.param(Mode.FULL_TRANSITIVE, [READDED], id="full-transitive"),
    ],
)
def test_property_removed_then_readded_with_another_type(mode: Mode, reasons: list[str]) -> None:
    """Optional x: string (v1), dropped (v2), back as integer: only transitive modes see it."""
    assert check(V3_INTEGER_X, [V1_STRING_X, V2_NO_X], mode) == reasons


def _max_length(n: int) -> Schema:
    return _one({**STR, "maxLength": n})


@pytest.mark.parametrize(
    ("mode", "reasons"),
    [
        pytest.param(Mode.FORWARD, [], id="forward"),
        pytest.param(
            Mode.FORWARD_TRANSITIVE,
            [
                "against version 1: $.properties.x.maxLength: maxLength raised from 10 to 15"
                " - BACKWARD-compatible only"
            ],
            id="forward-transitive",
        ),
        pytest.param(
            Mode.BACKWARD,
            ["$.properties.x.maxLength: maxLength lowered from 20 to 15 - FORWARD-compatible only"],
            id="backward",
        ),
    ],
)
def test_forward_transitive_sees_a_loosening_since_version_1(
    mode: Mode, reasons: list[str]
) -> None:
    """maxLength 10, 20, then 15: tighter than v2 (FORWARD-compatible) but looser than v1."""
    assert check(_max_length(15), [_max_length(10), _max_length(20)], mode) == reasons


def test_transitive_reasons_latest_first_then_older_versions_newest_first() -> None:
    """The latest version's reasons come unprefixed, then version N-1, N-2, ... prefixed."""
    history = [_one({"enum": ["a", "b", "c"]}), _one({"enum": ["a", "b"]}), _one({"enum": ["a"]})]
    added = '$.properties.x.enum: value "d" added - BACKWARD-compatible only'
    removed = '$.properties.x.enum: value "{}" removed - FORWARD-compatible only'
    assert check(_one({"enum": ["a", "d"]}), history, Mode.FULL_TRANSITIVE) == [
        added,
        f"against version 2: {added}",
        f"against version 2: {removed.format('b')}",
        f"against version 1: {added}",
        f"against version 1: {removed.format('b')}",
        f"against version 1: {removed.format('c')}",
    ]


@pytest.mark.parametrize("mode", list(Mode), ids=[m.value for m in Mode])
def test_empty_history_is_compatible(mode: Mode) -> None:
    """The first version of a subject has nothing to be compatible with."""
    assert check(_one(STR), [], mode) == []


def test_none_accepts_anything_and_default_is_full_transitive() -> None:
    """NONE accepts even a type change; the default mode is FULL_TRANSITIVE."""
    assert check(_one(INT), [_one(STR)], Mode.NONE) == []
    assert DEFAULT_MODE is Mode.FULL_TRANSITIVE
    assert check(_one(INT), [_one(STR)], Mode("FULL_TRANSITIVE")) != []


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        pytest.param(Change("$.a", "w", True, False), "$.a: w - BACKWARD-compatible only", id="bw"),
        pytest.param(Change("$.a", "w", False, True), "$.a: w - FORWARD-compatible only", id="fw"),
        pytest.param(Change("$.a", "w", False, False), "$.a: w - incompatible", id="neither"),
    ],
)
def test_change_reason_suffix(change: Change, reason: str) -> None:
    """A Change's reason ends with its verdict."""
    assert change.reason() == reason


def test_a_fully_compatible_change_is_not_a_change() -> None:
    """Change refuses backward=forward=True: such differences are never reported."""
    with pytest.raises(ValueError, match="both directions"):
        Change("$.a", "w", True, True)


def test_changes_lists_each_difference_with_its_path_and_verdict() -> None:
    """changes() names paths in the new document as a reader sees it, $refs followed."""
    old = _alertish({**STR, "maxLength": 2})
    new = _alertish({**STR, "maxLength": 3, "pattern": "^[A-Z]+$"})
    country = "$.properties.where.properties.country"
    assert changes(old, new) == [
        Change(f"{country}.maxLength", "maxLength raised from 2 to 3", True, False),
        Change(f"{country}.pattern", 'pattern "^[A-Z]+$" added', False, True),
    ]


@pytest.mark.parametrize("subject", ["tf.alert", "tf.receipt", "tf.red_flag", "tf.tip_summary"])
def test_shipped_schemas_are_compatible_with_themselves(subject: str) -> None:
    """Each shipped schema is read without error and differs from itself in nothing."""
    document = json.loads((REPO / "schemas" / subject / "1.json").read_text())
    assert changes(document, document) == []
    assert check(document, [document, document], DEFAULT_MODE) == []


@pytest.mark.parametrize(
    ("document", "path", "fragment"),
    [
        pytest.param(
            _one({"$ref": "#/$defs/missing"}),
            "$.properties.x.$ref",
            "does not resolve",
            id="unresolved-ref",
        ),
        pytest.param(
            _one({"$ref": "other.json#/$defs/x"}),
            "$.properties.x.$ref",
            "#/$defs/<name>",
            id="non-local-ref",
        ),
        pytest.param(
            {
                **_one({"$ref": "#/$defs/a"}),
                "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}},
            },
            "$.$defs.b.$ref",
            "cycle",
            id="ref-cycle",
        ),
        pytest.param(
            {
                **_one({"$ref": "#/$defs/node"}),
                "$defs": {"node": _object({"child": {"$ref": "#/$defs/node"}})},
            },
            "$.$defs.node.properties.child.$ref",
            "cycle",
            id="recursive-type",
        ),
        pytest.param(
            _one({"anyOf": [STR, {"type": "null"}]}),
            "$.properties.x.anyOf",
            "outside the profile",
            id="keyword-outside-profile",
        ),
        pytest.param(
            _one({**STR, "contentEncoding": "base64"}),
            "$.properties.x.contentEncoding",
            "outside the profile",
            id="string-keyword-outside-profile",
        ),
        pytest.param(
            _union(_object({"a": STR}, ["a"]), _object({"b": STR}, ["b"])),
            "$.properties.x.oneOf",
            "not a tagged union",
            id="oneOf-without-discriminator",
        ),
        pytest.param(
            _one({"type": "array"}),
            "$.properties.x",
            "without items",
            id="array-without-items",
        ),
        pytest.param(
            _object({"a": STR}, ["a", "b"]),
            "$.required",
            "not a property",
            id="required-undeclared",
        ),
        pytest.param(
            _one({**INT, "minimum": float("nan")}),
            "$.properties.x.minimum",
            "finite number",
            id="nan-bound",
        ),
    ],
)
def test_uninterpretable_documents_raise_naming_the_path(
    document: Schema, path: str, fragment: str
) -> None:
    """What the checker cannot follow is refused with the path, never passed as compatible."""
    with pytest.raises(ValidationError) as info:
        changes(document, document)
    assert info.value.paths == (path,)
    assert fragment in info.value.message
    assert info.value.message.startswith("the old schema: ")
    assert info.value.hint


def test_errors_name_the_document_at_fault() -> None:
    """A broken earlier version is blamed as 'version N', a broken new one as the new schema."""
    broken = _one({"$ref": "#/$defs/missing"})
    with pytest.raises(ValidationError, match=r"^version 1: .*does not resolve"):
        check(_one(STR), [broken, _one(STR)], Mode.FULL_TRANSITIVE)
    with pytest.raises(ValidationError, match=r"^the new schema: .*does not resolve"):
        check(broken, [_one(STR)], Mode.BACKWARD)


def test_an_exponential_ref_expansion_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """$defs that each use the next twice expand to 2^n paths: refused, not walked."""
    monkeypatch.setattr(compat, "_MAX_STEPS", 1000)
    defs: dict[str, Schema] = {}
    for i in range(16):
        nxt: Schema = {"$ref": f"#/$defs/d{i + 1}"} if i < 15 else STR
        defs[f"d{i}"] = _object({"a": nxt, "b": nxt})
    document = {**_one({"$ref": "#/$defs/d0"}), "$defs": defs}
    with pytest.raises(ValidationError, match="more than 1000"):
        changes(document, document)


def test_odd_property_names_are_quoted_in_paths() -> None:
    """A name that is not an identifier appears JSON-quoted, never raw, in a reason."""
    old = _object({"a b\n": STR}, ["a b\n"])
    assert check(_object({}), [old], Mode.FULL) == [
        '$.properties["a b\\n"]: required property removed - BACKWARD-compatible only'
    ]
