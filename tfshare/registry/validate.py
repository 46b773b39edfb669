"""Every failing path of a JSON value against a profile schema, for people fixing a body.

msgspec stops at the first error, which is what receivers want; a person fixing a tip summary
wants all of them at once. This walks the document (already admitted to the profile) and the
parsed body together. Messages name the path and the rule, never the value.
"""

from __future__ import annotations

import re
from typing import Any, Final

from tfshare.registry.profile import DATE_TIME_PATTERN, DEF_REF, python_pattern

MAX_ERRORS: Final = 100


def all_errors(doc: dict[str, Any], value: Any) -> list[str]:
    """``["$.severity: not one of the allowed values", ...]``; empty if ``value`` is valid."""
    errors: list[str] = []
    _walk(doc, value, "$", doc.get("$defs", {}), errors)
    return errors[:MAX_ERRORS]


def _type_ok(kind: str, value: Any) -> bool:
    if kind == "object":
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, list)
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, int | float) and not isinstance(value, bool)  # number


def _walk(schema: Any, value: Any, path: str, defs: dict[str, Any], errors: list[str]) -> None:
    if len(errors) >= MAX_ERRORS or not isinstance(schema, dict):
        return
    if "$ref" in schema:
        match = DEF_REF.match(str(schema["$ref"]))
        if match is not None:
            _walk(defs.get(match.group(1)), value, path, defs, errors)
        return
    if "oneOf" in schema:
        _union(schema["oneOf"], value, path, defs, errors)
        return
    if "enum" in schema or "const" in schema:
        allowed = schema["enum"] if "enum" in schema else [schema["const"]]
        if value not in allowed or not isinstance(value, str):
            errors.append(f"{path}: not one of the allowed values")
        return
    kind = schema.get("type")
    if not isinstance(kind, str):
        return
    if not _type_ok(kind, value):
        errors.append(f"{path}: expected {kind}")
        return
    if kind == "object":
        _object(schema, value, path, defs, errors)
    elif kind == "array":
        _bounds(len(value), schema, "minItems", "maxItems", f"{path}: items", errors)
        for i, item in enumerate(value):
            _walk(schema.get("items"), item, f"{path}[{i}]", defs, errors)
    elif kind == "string":
        _bounds(len(value), schema, "minLength", "maxLength", f"{path}: length", errors)
        pattern = DATE_TIME_PATTERN if schema.get("format") == "date-time" else None
        if "pattern" in schema:
            pattern = python_pattern(schema["pattern"])
        if pattern is not None and re.search(pattern, value) is None:
            what = "an RFC 3339 date-time" if "format" in schema else "the required pattern"
            errors.append(f"{path}: not {what}")
    elif kind in ("integer", "number"):
        _number_bounds(value, schema, path, errors)


def _number_bounds(value: float, schema: dict[str, Any], path: str, errors: list[str]) -> None:
    low, high = schema.get("minimum"), schema.get("maximum")
    xlow, xhigh = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    for key, bad in (
        ("minimum", low is not None and value < low),
        ("maximum", high is not None and value > high),
        ("exclusiveMinimum", xlow is not None and value <= xlow),
        ("exclusiveMaximum", xhigh is not None and value >= xhigh),
    ):
        if bad:
            errors.append(f"{path}: outside {key} {schema[key]}")


def _bounds(
    n: int, schema: dict[str, Any], low: str, high: str, what: str, errors: list[str]
) -> None:
    if low in schema and n < schema[low]:
        errors.append(f"{what} below {low} {schema[low]}")
    if high in schema and n > schema[high]:
        errors.append(f"{what} above {high} {schema[high]}")


def _object(
    schema: dict[str, Any],
    value: dict[str, Any],
    path: str,
    defs: dict[str, Any],
    errors: list[str],
) -> None:
    properties = schema.get("properties", {})
    for name in schema.get("required", []):
        if name not in value:
            errors.append(f"{path}: missing required property {name!r}")
    for name, item in value.items():
        if name in properties:
            _walk(properties[name], item, f"{path}.{name}", defs, errors)
        else:
            errors.append(f"{path}: unknown property")


def _resolve(schema: Any, defs: dict[str, Any]) -> Any:
    if isinstance(schema, dict) and "$ref" in schema:
        match = DEF_REF.match(str(schema["$ref"]))
        return defs.get(match.group(1)) if match else None
    return schema


def _union(
    variants: list[Any], value: Any, path: str, defs: dict[str, Any], errors: list[str]
) -> None:
    resolved = [_resolve(v, defs) for v in variants]
    if not isinstance(value, dict):
        errors.append(f"{path}: expected object")
        return
    for variant in resolved:
        props = variant.get("properties", {}) if isinstance(variant, dict) else {}
        for name, sub in props.items():
            if isinstance(sub, dict) and "const" in sub and value.get(name) == sub["const"]:
                _walk(variant, value, path, defs, errors)
                return
    errors.append(f"{path}: does not match any variant (check its discriminator)")


def value_errors(schema: Any, value: Any, defs: dict[str, Any]) -> list[str]:
    """Every failing path of one property's ``value`` against that property's ``schema``
    (``$`` is the value itself; ``defs`` are the document's ``$defs``): the same rules as
    ``all_errors``, for checking one answer as it is typed."""
    errors: list[str] = []
    _walk(schema, value, "$", defs, errors)
    return errors[:MAX_ERRORS]
