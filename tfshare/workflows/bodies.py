"""Message bodies from the command line: ``--field path=value`` flags and, on a terminal,
prompts for required fields that are still missing (with their allowed values).

Field paths are dotted (``handling.tlp=RED``, ``where.country=NL``); a value that reads as
JSON (a number, true/false, a list) is taken as such, anything else as a string.

Also a body given as one JSON object on stdin (``--body-file -``), which never appears in the
process's command line. No key may be given twice, in the JSON or in two ``--field``s: which
value would count is exactly what a reader must never have to guess (PROTOCOL.md 9).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from tfshare.errors import UsageError, ValidationError
from tfshare.registry.profile import DEF_REF
from tfshare.registry.schema import refuse_duplicate_keys

MAX_BODY_JSON = 512 * 1024  # as for a body file: an envelope holds no more

Prompt = Callable[[str, list[str] | None], str]
"""prompt(path, allowed values or None) -> what the person typed."""


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def apply_fields(body: dict[str, Any], fields: Sequence[str]) -> dict[str, Any]:
    """Set each ``path=value`` in ``body`` (creating nested objects). A path given twice is
    refused (ValidationError); a field may replace what a body file or a parent said."""
    given: set[str] = set()
    for field in fields:
        path, sep, text = field.partition("=")
        if not sep or not path:
            raise UsageError(f"--field {field!r} is not path=value", hint="e.g. handling.tlp=RED")
        if path in given:
            raise ValidationError(
                f"--field {path} is given twice",
                hint="give each field once: which of two values counts is not defined",
                paths=(f"$.{path}",),
            )
        given.add(path)
        keys = path.split(".")
        node = body
        for key in keys[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise UsageError(f"--field {path}: {key} is not an object", hint="check the path")
            node = child
        node[keys[-1]] = _value(text)
    return body


def _resolve(schema: Any, defs: dict[str, Any]) -> Any:
    while isinstance(schema, dict) and "$ref" in schema:
        match = DEF_REF.match(str(schema["$ref"]))
        schema = defs.get(match.group(1), {}) if match else {}
    return schema


def prompt_missing(
    document: dict[str, Any], body: dict[str, Any], prompt: Prompt
) -> dict[str, Any]:
    """Ask for every required field still missing, recursively through objects."""
    defs = document.get("$defs", {})

    def fill(schema: dict[str, Any], node: dict[str, Any], path: str) -> None:
        for name in schema.get("required", []):
            sub = _resolve(schema.get("properties", {}).get(name, {}), defs)
            where = f"{path}{name}"
            if isinstance(sub, dict) and sub.get("type") == "object":
                child = node.setdefault(name, {})
                if isinstance(child, dict):
                    fill(sub, child, f"{where}.")
            elif isinstance(sub, dict) and "oneOf" in sub:
                variants = [_resolve(v, defs) for v in sub["oneOf"]]
                child = node.setdefault(name, {})
                if not isinstance(child, dict):
                    continue
                tag = next(
                    (k for k, s in variants[0].get("properties", {}).items() if "const" in s), None
                )
                if tag is None:
                    continue
                choices = [v["properties"][tag]["const"] for v in variants]
                if tag not in child:
                    child[tag] = prompt(f"{where}.{tag}", choices)
                chosen = next(
                    (v for v in variants if v["properties"][tag]["const"] == child[tag]), None
                )
                if chosen is not None:
                    fill(chosen, child, f"{where}.")
            elif name not in node:
                allowed = sub.get("enum") if isinstance(sub, dict) else None
                answer = prompt(where, list(allowed) if allowed else None)
                node[name] = answer if allowed or sub.get("type") == "string" else _value(answer)

    fill(document, body, "")
    return body


def body_json(
    document: dict[str, Any],
    *,
    base: bytes | None,
    fields: Sequence[str],
    prompt: Prompt | None,
) -> bytes:
    """The JSON body: the file's object (if any), then ``--field``s, then prompts."""
    body = parse_object(base) if base is not None else {}
    body = apply_fields(body, fields)
    if prompt is not None:
        body = prompt_missing(document, body, prompt)
    return json.dumps(body).encode()


def parse_object(data: bytes) -> dict[str, Any]:
    """A body given as JSON: one object, no key twice at any depth; ValidationError if not."""
    refuse_duplicate_keys(data)
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):
        raise ValidationError(
            "the body is not valid JSON", hint="the body file must hold one JSON object"
        ) from None
    if not isinstance(body, dict):
        raise ValidationError(
            "the body is not a JSON object", hint='give one JSON object: {"title": ...}'
        )
    return body


def read_stdin_body(stream: Any) -> bytes:
    """The body JSON from ``stream`` (binary stdin), at most MAX_BODY_JSON bytes."""
    data: bytes = stream.read(MAX_BODY_JSON + 1)
    if len(data) > MAX_BODY_JSON:
        raise ValidationError(
            f"the body on stdin is larger than {MAX_BODY_JSON} bytes",
            hint="a message body is at most 512 KiB; share large files another way",
        )
    if not data.strip():
        raise ValidationError(
            "no body on stdin", hint="pipe one JSON object in, or give --body-file PATH"
        )
    return data
