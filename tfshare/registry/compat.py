"""Schema compatibility: may a new version of a message type follow the versions before it?

Owns: the compatibility modes (after Confluent Schema Registry), ``changes`` -- every difference
between two schema documents that matters to a reader, each with its verdict in both
directions -- and ``check``, which applies a mode to a new document and its subject's history.

Reading rule (the registry design; its compatibility table is normative): "A reads B" when
every document valid under B is valid under A. Producers are closed (they emit only declared
properties), consumers are tolerant (they ignore properties they do not know). BACKWARD: the
new schema reads the old one; FORWARD: the old schema reads the new one; FULL: both.

Never: do I/O or build msgspec types; call a change compatible when it cannot tell. A document
it cannot follow (a ``$ref`` that does not resolve, a ``$ref`` cycle, a keyword outside the
profile of docs/SCHEMA-PROFILE.md) raises ``ValidationError`` naming the path; it is never
skipped. It interprets only what it compares: checking a whole document against the profile is
the profile check's job, not this module's.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from tfshare.errors import ValidationError

__all__ = ["DEFAULT_MODE", "Change", "Mode", "changes", "check"]


class Mode(StrEnum):
    """Which earlier versions a new version must be compatible with, and in which direction."""

    NONE = "NONE"
    BACKWARD = "BACKWARD"
    BACKWARD_TRANSITIVE = "BACKWARD_TRANSITIVE"
    FORWARD = "FORWARD"
    FORWARD_TRANSITIVE = "FORWARD_TRANSITIVE"
    FULL = "FULL"
    FULL_TRANSITIVE = "FULL_TRANSITIVE"


DEFAULT_MODE: Final = Mode.FULL_TRANSITIVE


@dataclass(frozen=True, slots=True)
class Change:
    """One difference between two versions that breaks at least one reading direction.

    ``path`` points into the new document's structure as a reader sees it ($refs followed), e.g.
    ``$.properties.where.properties.country.pattern``. ``backward``: the new schema still reads
    every old document; ``forward``: the old schema still reads every new document.
    """

    path: str
    what: str
    backward: bool
    forward: bool

    def __post_init__(self) -> None:
        # A difference both sides can live with (an optional property added, a description
        # edited) is not a Change: ``changes`` lists only what a mode can refuse.
        if self.backward and self.forward:
            raise ValueError("a change compatible in both directions is not reported")

    def reason(self) -> str:
        """``<path>: <what> - <verdict>``, the line ``check`` reports."""
        if self.backward:
            verdict = "BACKWARD-compatible only"
        elif self.forward:
            verdict = "FORWARD-compatible only"
        else:
            verdict = "incompatible"
        return f"{self.path}: {self.what} - {verdict}"


def changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Change]:
    """Every difference between ``old`` and ``new`` that breaks a reading direction, in order.

    Differences compatible both ways (optional properties added or removed, annotations
    edited, equivalent spellings such as ``minLength: 0``) are not listed. A changed default
    is incompatible both ways: bodies leave default values out, so it changes old messages.
    """
    return _diff(old, new, old_name="the old schema", new_name="the new schema")


def check(new: Mapping[str, Any], history: Sequence[Mapping[str, Any]], mode: Mode) -> list[str]:
    """The reasons ``new`` may not follow ``history`` (versions 1..n, oldest first) under ``mode``.

    An empty list means compatible. Non-transitive modes compare with the latest version only;
    transitive ones with every version, reasons against an older version prefixed with
    ``against version N: ``. NONE, or an empty history, accepts anything.
    """
    mode = Mode(mode)
    if mode is Mode.NONE or not history:
        return []
    base = mode.removesuffix("_TRANSITIVE")
    need_backward = base in (Mode.BACKWARD, Mode.FULL)
    need_forward = base in (Mode.FORWARD, Mode.FULL)
    latest = len(history)
    # Latest first: it is the comparison a non-transitive mode would make, so the reasons read
    # the same whichever way the subject is configured; older versions follow, newest first.
    versions = range(latest, 0, -1) if mode.endswith("_TRANSITIVE") else [latest]
    reasons: list[str] = []
    for version in versions:
        prefix = "" if version == latest else f"against version {version}: "
        found = _diff(
            history[version - 1], new, old_name=f"version {version}", new_name="the new schema"
        )
        for change in found:
            if (need_backward and not change.backward) or (need_forward and not change.forward):
                reasons.append(prefix + change.reason())
    return reasons


# ---------------------------------------------------------------------------------------------
# Walking two documents side by side

# Logical nesting (through $refs) deeper than this is refused rather than recursed into; the
# profile allows 32 physical levels, and a reference adds none of its own.
_MAX_DEPTH: Final = 64
# $refs form a DAG, which can expand to exponentially many paths (each definition using the
# next one twice); a checker that runs on submitted documents must not be made to walk them all.
_MAX_STEPS: Final = 100_000

_ANNOTATIONS: Final = frozenset({"title", "description", "examples", "$comment", "default"})
# Only at the document root: a nested $id would change what "#/$defs/..." refers to.
_ROOT_ONLY: Final = frozenset({"$schema", "$id", "$defs"})
_BOUNDS: Final = frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"})
_KEYWORDS: Final[Mapping[str, frozenset[str]]] = {
    "object": frozenset({"type", "properties", "required", "additionalProperties"}),
    "string": frozenset({"type", "minLength", "maxLength", "pattern", "format"}),
    "integer": frozenset({"type"}) | _BOUNDS,
    "number": frozenset({"type"}) | _BOUNDS,
    "boolean": frozenset({"type"}),
    "array": frozenset({"type", "items", "minItems", "maxItems"}),
    "enum": frozenset({"type", "enum", "const"}),
    "tagged union": frozenset({"oneOf"}),
}
_TYPES: Final = frozenset({"object", "string", "integer", "number", "boolean", "array"})
_REF_PREFIX: Final = "#/$defs/"
_PLAIN_KEY: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HINT: Final = (
    "keep the schema within docs/SCHEMA-PROFILE.md: local references (#/$defs/<name>) that "
    "resolve, no cycles, and only the profile's keywords"
)


@dataclass(frozen=True, slots=True)
class _Doc:
    root: Mapping[str, Any]
    name: str  # "the new schema", "version 2": who to blame in an error


@dataclass(frozen=True, slots=True)
class _At:
    """A schema inside a document: where a reader meets it (``path``) and where it is written."""

    doc: _Doc
    schema: Mapping[str, Any]
    path: str  # logical, through $refs: what Change.path reports
    where: str  # physical, e.g. $.$defs.Location.properties.country: what an author edits
    refs: tuple[str, ...] = ()  # $refs followed to get here (a repeat is a cycle)
    depth: int = 0

    def sub(self, value: object, suffix: str) -> _At:
        if self.depth + 1 > _MAX_DEPTH:
            raise _error(self, f"the schema nests more than {_MAX_DEPTH} levels")
        if not isinstance(value, Mapping):
            raise _error(self, "a subschema is not a JSON object", suffix)
        return _At(
            self.doc,
            value,
            self.path + suffix,
            self.where + suffix,
            self.refs,
            self.depth + 1,
        )


def _error(at: _At, detail: str, suffix: str = "") -> ValidationError:
    where, logical = at.where + suffix, at.path + suffix
    place = where if where == logical else f"{where} (reached as {logical})"
    return ValidationError(f"{at.doc.name}: {detail} at {place}", hint=_HINT, paths=(where,))


def _key(name: str) -> str:
    """A path step for a property or definition name; odd names are quoted, never raw."""
    return f".{name}" if _PLAIN_KEY.fullmatch(name) else f"[{_show(name)}]"


def _show(value: object) -> str:
    # JSON with ASCII escapes: a schema's strings reach terminals and logs, so no control
    # characters or look-alike text get through verbatim.
    return json.dumps(value)


def _only(at: _At, allowed: frozenset[str], kind: str) -> None:
    extra = set(at.schema) - allowed - _ANNOTATIONS
    if at.schema is at.doc.root:
        extra -= _ROOT_ONLY
    if extra:
        keyword = sorted(extra)[0]
        raise _error(
            at, f"keyword {_show(keyword)} is outside the profile for {kind}", _key(keyword)
        )


def _resolve(at: _At) -> _At:
    """Follow ``$ref`` (local ``#/$defs/<name>`` only) until a schema that says something."""
    while "$ref" in at.schema:
        _only(at, frozenset({"$ref"}), "a reference")
        ref = at.schema["$ref"]
        name = ref[len(_REF_PREFIX) :] if isinstance(ref, str) else ""
        if not isinstance(ref, str) or not ref.startswith(_REF_PREFIX) or "/" in name:
            raise _error(at, f"$ref {_show(ref)} is not of the form #/$defs/<name>", ".$ref")
        defs = at.doc.root.get("$defs")
        target = defs.get(name) if isinstance(defs, Mapping) else None
        if not isinstance(target, Mapping):
            raise _error(at, f"$ref {_show(ref)} does not resolve", ".$ref")
        if ref in at.refs:
            raise _error(at, f"$ref {_show(ref)} is a cycle", ".$ref")
        at = _At(at.doc, target, at.path, f"$.$defs{_key(name)}", (*at.refs, ref), at.depth)
    return at


def _kind(at: _At) -> str:
    """What a (resolved) schema describes; its keywords are checked on the way."""
    schema = at.schema
    if "oneOf" in schema:
        kind = "tagged union"
    elif "enum" in schema or "const" in schema:
        kind = "enum"
    elif schema.get("type") in _TYPES:
        kind = str(schema["type"])
    elif "type" in schema:
        raise _error(at, f"type {_show(schema['type'])} is outside the profile", ".type")
    else:
        # Say which keyword is foreign ("anyOf", "not", ...) rather than only "no type".
        _only(at, frozenset({"type", "oneOf", "enum", "const"}), "a schema")
        raise _error(at, "the schema has no type")
    _only(at, _KEYWORDS[kind], f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}")
    return kind


def _kind_keyword(at: _At, kind: str) -> str:
    """The keyword that makes a schema what it is: where a change of kind is reported."""
    if kind == "tagged union":
        return "oneOf"
    if kind == "enum":
        return "enum" if "enum" in at.schema else "const"
    return "type"


def _count(at: _At, keyword: str) -> int | None:
    value = at.schema.get(keyword)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _error(at, f"{keyword} is not a non-negative integer", f".{keyword}")
    return value


def _number(at: _At, keyword: str) -> int | float | None:
    value = at.schema.get(keyword)
    if value is None:
        return None
    # bool is an int in Python, and json.loads accepts NaN and Infinity: neither is a bound.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _error(at, f"{keyword} is not a finite number", f".{keyword}")
    return value


def _text(at: _At, keyword: str) -> str | None:
    value = at.schema.get(keyword)
    if value is not None and not isinstance(value, str):
        raise _error(at, f"{keyword} is not a string", f".{keyword}")
    return value


@dataclass(frozen=True, slots=True)
class _Bound:
    keyword: str
    raw: int | float
    key: tuple[float, int]  # the larger, the tighter


def _bound(at: _At, *, lower: bool) -> _Bound | None:
    """The tightest of a numeric schema's lower (or upper) bounds, or None when unbounded.

    For integers a bound is first rounded to the integers it admits, so ``minimum: 1`` and
    ``exclusiveMinimum: 0`` come out equal and their exchange is not reported.
    """
    integer = at.schema.get("type") == "integer"
    keywords = (("minimum", False), ("exclusiveMinimum", True))
    if not lower:
        keywords = (("maximum", False), ("exclusiveMaximum", True))
    best: _Bound | None = None
    for keyword, exclusive in keywords:
        raw = _number(at, keyword)
        if raw is None:
            continue
        value: float = raw
        strict = exclusive
        if integer:
            if lower:
                value = math.floor(raw) + 1 if exclusive else math.ceil(raw)
            else:
                value = math.ceil(raw) - 1 if exclusive else math.floor(raw)
            strict = False
        key = (value if lower else -value, 1 if strict else 0)
        if best is None or key > best.key:
            best = _Bound(keyword, raw, key)
    return best


def _bound_change(
    before: _Bound | None, after: _Bound | None, lower: bool
) -> tuple[str, str, bool] | None:
    """(keyword to report at, what changed, whether it tightened), or None if nothing did."""
    if after is None:
        if before is None:
            return None
        return before.keyword, f"{before.keyword} {_show(before.raw)} removed", False
    if before is None:
        return after.keyword, f"{after.keyword} {_show(after.raw)} added", True
    if before.key == after.key:
        return None
    tighter = after.key > before.key
    if before.keyword == after.keyword:
        if before.raw == after.raw:
            # The same bound, rounded differently because integer <-> number changed: the type
            # change is reported, and its verdict is this bound's verdict too.
            return None
        direction = "raised" if after.raw > before.raw else "lowered"
        what = f"{after.keyword} {direction} from {_show(before.raw)} to {_show(after.raw)}"
    else:
        what = (
            f"{'lower' if lower else 'upper'} bound changed from {before.keyword} "
            f"{_show(before.raw)} to {after.keyword} {_show(after.raw)}"
        )
    return after.keyword, what, tighter


def _enum_values(at: _At) -> tuple[list[str], str]:
    """An enum's values in order, and the keyword holding them (``const`` is a one-value enum)."""
    schema = at.schema
    if "enum" in schema and "const" in schema:
        raise _error(at, "both enum and const", ".const")
    if schema.get("type", "string") != "string":
        raise _error(at, "an enum or const whose type is not string", ".type")
    keyword = "enum" if "enum" in schema else "const"
    values = schema[keyword] if keyword == "enum" else [schema["const"]]
    if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
        raise _error(at, f"{keyword} is not a non-empty list of strings", f".{keyword}")
    return list(dict.fromkeys(values)), keyword


def _unproven_values(values: list[str], string: _At) -> str | None:
    """Why a string schema may not accept every one of ``values``; None when it surely does."""
    for keyword in ("pattern", "format"):
        if keyword in string.schema:
            # Patterns are not run here: ECMA-262 and Python regexes differ at the edges, and
            # a pattern from a submitted document could backtrack for a long time.
            return f"its {keyword} is not checked against the values"
    low = _count(string, "minLength") or 0
    high = _count(string, "maxLength")
    for value in values:
        if len(value) < low or (high is not None and len(value) > high):
            return f"value {_show(value)} is not accepted"
    return None


def _diff(
    old: Mapping[str, Any], new: Mapping[str, Any], *, old_name: str, new_name: str
) -> list[Change]:
    walk = _Walk()
    walk.compare(
        _At(_Doc(old, old_name), old, "$", "$"),
        _At(_Doc(new, new_name), new, "$", "$"),
    )
    return walk.found


class _Walk:
    """One comparison of two documents; collects its Changes in the order it meets them."""

    def __init__(self) -> None:
        self.found: list[Change] = []
        self.steps = 0

    def emit(self, path: str, what: str, backward: bool, forward: bool) -> None:
        self.found.append(Change(path, what, backward, forward))

    def compare(self, old: _At, new: _At) -> None:
        self.steps += 1
        if self.steps > _MAX_STEPS:
            raise _error(new, f"the schemas expand to more than {_MAX_STEPS} subschemas")
        old, new = _resolve(old), _resolve(new)
        old_kind, new_kind = _kind(old), _kind(new)
        kinds = {old_kind, new_kind}
        if old_kind == new_kind:
            compare_same = {
                "object": self.objects,
                "string": self.strings,
                "integer": self.numbers,
                "number": self.numbers,
                "boolean": self.booleans,
                "array": self.arrays,
                "enum": self.enums,
                "tagged union": self.unions,
            }[new_kind]
            compare_same(old, new)
        elif kinds == {"integer", "number"}:
            widened = new_kind == "number"
            self.emit(
                new.path + ".type",
                f"type changed from {old_kind} to {new_kind}",
                widened,
                not widened,
            )
            self.numbers(old, new)
        elif kinds == {"string", "enum"}:
            self.enum_string(old, new, old_kind)
        else:
            keyword = _kind_keyword(new, new_kind)
            self.emit(
                f"{new.path}.{keyword}", f"type changed from {old_kind} to {new_kind}", False, False
            )

    # -- objects

    def objects(self, old: _At, new: _At) -> None:
        old_props, old_required, old_extra = _object_parts(old)
        new_props, new_required, new_extra = _object_parts(new)
        if old_extra != new_extra:
            # Readers are built with forbid_unknown_fields from additionalProperties: false;
            # any other value changes what a producer may emit and is not in the profile.
            self.emit(
                new.path + ".additionalProperties",
                f"additionalProperties changed from {old_extra} to {new_extra}",
                False,
                False,
            )
        for name, schema in new_props.items():
            step = ".properties" + _key(name)
            path = new.path + step
            if name not in old_props:
                # Optional additions are compatible both ways: old readers ignore them, new
                # readers see them absent in old documents.
                if name in new_required:
                    self.emit(path, "required property added", False, True)
                continue
            if name in old_required and name not in new_required:
                self.emit(path, "property became optional", True, False)
            elif name in new_required and name not in old_required:
                self.emit(path, "property became required", False, True)
            old_default = _default_of(old_props[name])
            new_default = _default_of(schema)
            if old_default != new_default:
                # Bodies leave out values equal to the default, and a reader fills in its own:
                # a changed default silently changes what old messages say.
                self.emit(
                    path + ".default",
                    f"default changed from {_show_default(old_default)} to "
                    f"{_show_default(new_default)}",
                    False,
                    False,
                )
            self.compare(old.sub(old_props[name], step), new.sub(schema, step))
        for name in old_props:
            if name not in new_props and name in old_required:
                self.emit(
                    new.path + ".properties" + _key(name), "required property removed", True, False
                )

    # -- scalars

    def booleans(self, old: _At, new: _At) -> None:
        """Nothing to compare: a boolean has no constraints in the profile."""

    def strings(self, old: _At, new: _At) -> None:
        self.counts(old, new, "minLength", lower=True)
        self.counts(old, new, "maxLength", lower=False)
        for keyword in ("pattern", "format"):
            before, after = _text(old, keyword), _text(new, keyword)
            path = f"{new.path}.{keyword}"
            if before == after:
                continue
            if before is None:
                self.emit(path, f"{keyword} {_show(after)} added", False, True)
            elif after is None:
                self.emit(path, f"{keyword} {_show(before)} removed", True, False)
            else:
                # Whether one regex (or format) admits a subset of the other is not decided
                # here, so a changed one is refused both ways.
                self.emit(
                    path, f"{keyword} changed from {_show(before)} to {_show(after)}", False, False
                )

    def counts(self, old: _At, new: _At, keyword: str, *, lower: bool) -> None:
        before, after = _count(old, keyword), _count(new, keyword)
        unbounded = 0 if lower else math.inf
        effective_before = unbounded if before is None else before
        effective_after = unbounded if after is None else after
        if effective_before == effective_after:
            return
        tighter = (
            effective_after > effective_before if lower else effective_after < effective_before
        )
        if before is None:
            what = f"{keyword} {after} added"
        elif after is None:
            what = f"{keyword} {before} removed"
        else:
            what = f"{keyword} {'raised' if after > before else 'lowered'} from {before} to {after}"
        self.emit(f"{new.path}.{keyword}", what, not tighter, tighter)

    def numbers(self, old: _At, new: _At) -> None:
        for lower in (True, False):
            change = _bound_change(_bound(old, lower=lower), _bound(new, lower=lower), lower)
            if change is not None:
                keyword, what, tighter = change
                self.emit(f"{new.path}.{keyword}", what, not tighter, tighter)

    def enums(self, old: _At, new: _At) -> None:
        before, old_keyword = _enum_values(old)
        after, new_keyword = _enum_values(new)
        path = f"{new.path}.{new_keyword}"
        if old_keyword == new_keyword == "const" and before != after:
            self.emit(
                path, f"const changed from {_show(before[0])} to {_show(after[0])}", False, False
            )
            return
        for value in after:
            if value not in before:
                self.emit(path, f"value {_show(value)} added", True, False)
        for value in before:
            if value not in after:
                self.emit(path, f"value {_show(value)} removed", False, True)

    def enum_string(self, old: _At, new: _At, old_kind: str) -> None:
        """An enum became a free string or the other way round: a widening or a narrowing.

        The string side admits the enum's values only if its constraints accept each of them;
        anything it cannot show counts as not accepted.
        """
        if old_kind == "enum":
            values, _ = _enum_values(old)
            why = _unproven_values(values, new)
            path = f"{new.path}.type"
            backward, forward = why is None, False
        else:
            values, keyword = _enum_values(new)
            why = _unproven_values(values, old)
            path = f"{new.path}.{keyword}"
            backward, forward = False, why is None
        what = f"type changed from {old_kind} to {'string' if old_kind == 'enum' else 'enum'}"
        self.emit(path, f"{what} ({why})" if why else what, backward, forward)

    # -- arrays and tagged unions

    def arrays(self, old: _At, new: _At) -> None:
        for at in (old, new):
            if "items" not in at.schema:
                raise _error(at, "an array without items")
        self.counts(old, new, "minItems", lower=True)
        self.counts(old, new, "maxItems", lower=False)
        self.compare(old.sub(old.schema["items"], ".items"), new.sub(new.schema["items"], ".items"))

    def unions(self, old: _At, new: _At) -> None:
        old_tag, old_variants = _variants(old)
        new_tag, new_variants = _variants(new)
        if old_tag != new_tag:
            self.emit(
                new.path + ".oneOf",
                f"discriminator changed from {_show(old_tag)} to {_show(new_tag)}",
                False,
                False,
            )
            return
        for value, variant in new_variants.items():
            if value in old_variants:
                self.compare(old_variants[value], variant)
            else:
                # An old reader has no type for the new tag and rejects the document.
                self.emit(variant.path, f"variant {_show(value)} added", True, False)
        for value in old_variants:
            if value not in new_variants:
                self.emit(new.path + ".oneOf", f"variant {_show(value)} removed", False, True)


_NO_DEFAULT: Final = object()


def _default_of(schema: Any) -> Any:
    return schema.get("default", _NO_DEFAULT) if isinstance(schema, Mapping) else _NO_DEFAULT


def _show_default(value: Any) -> str:
    return "none" if value is _NO_DEFAULT else _show(value)


def _object_parts(at: _At) -> tuple[Mapping[str, Any], set[str], str]:
    """Properties, required names, and additionalProperties as written (or "absent")."""
    properties = at.schema.get("properties", {})
    if not isinstance(properties, Mapping):
        raise _error(at, "properties is not an object", ".properties")
    required = at.schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise _error(at, "required is not a list of names", ".required")
    for name in required:
        if name not in properties:
            raise _error(at, f"required names {_show(name)}, which is not a property", ".required")
    extra = at.schema.get("additionalProperties")
    if extra is not None and not isinstance(extra, bool):
        raise _error(at, "additionalProperties is not false", ".additionalProperties")
    return properties, set(required), "absent" if extra is None else _show(extra)


def _const_of(variant: _At, name: str) -> str | None:
    """The value of property ``name`` if its schema is ``{"const": "<value>"}`` (a string)."""
    prop = _resolve(variant.sub(variant.schema["properties"][name], ".properties" + _key(name)))
    value = prop.schema.get("const")
    spelled = (
        set(prop.schema)
        - _ANNOTATIONS
        - ({"type"} if prop.schema.get("type") == "string" else set())
    )
    if isinstance(value, str) and spelled == {"const"}:
        return value
    return None


def _variants(at: _At) -> tuple[str, dict[str, _At]]:
    """A tagged union's discriminator and its variants by discriminator value.

    The discriminator is a property required in every variant with a ``const`` schema and a
    different value in each; if several qualify, the first by name, so the choice is the same
    on both sides of a comparison.
    """
    options = at.schema["oneOf"]
    if not isinstance(options, list) or not options:
        raise _error(at, "oneOf is not a non-empty list", ".oneOf")
    variants: list[_At] = []
    tags: list[dict[str, str]] = []
    for index, option in enumerate(options):
        variant = _resolve(at.sub(option, f".oneOf[{index}]"))
        if _kind(variant) != "object":
            raise _error(variant, "a variant of a tagged union is not an object")
        _, required, _ = _object_parts(variant)
        consts = {name: _const_of(variant, name) for name in sorted(required)}
        tags.append({name: value for name, value in consts.items() if value is not None})
        variants.append(variant)
    common = set.intersection(*(set(t) for t in tags))
    for name in sorted(common):
        values = [t[name] for t in tags]
        if len(set(values)) == len(values):
            return name, dict(zip(values, variants, strict=True))
    raise _error(
        at,
        "oneOf is not a tagged union: no required const property tells its variants apart",
        ".oneOf",
    )
