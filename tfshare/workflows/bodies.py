"""Message bodies from the command line: ``--field path=value`` flags and, on a terminal,
prompts for required fields that are still missing.

Owns: building a publish body from a body file, ``--field``s and prompts; checking each
prompted answer against its property's schema as it is typed (a bad answer is asked again,
with a one-line reason); the safe handling default of a TLP:RED message; drafts (the answers
typed so far, kept in a 0600 file when the message cannot be published).

Field paths are dotted (``handling.tlp=RED``, ``where.country=NL``); a value that reads as
JSON (a number, true/false, a list) is taken as such, anything else as a string - unless the
schema says the field is text or one of a list of codes: then the text as typed. Codes are
matched regardless of case and written in the schema's spelling (``red`` and ``TLP:red`` are
``RED``), as long as no two codes differ only in case.

Also a body given as one JSON object on stdin (``--body-file -``), which never appears in the
process's command line. No key may be given twice, in the JSON or in two ``--field``s: which
value would count is exactly what a reader must never have to guess (PROTOCOL.md 9).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from tfshare.errors import UsageError, ValidationError
from tfshare.files import write_atomic
from tfshare.registry.profile import DEF_REF
from tfshare.registry.schema import refuse_duplicate_keys
from tfshare.registry.validate import value_errors

MAX_BODY_JSON = 512 * 1024  # as for a body file: an envelope holds no more

Prompt = Callable[[str, list[str] | None], str]
"""prompt(path, values offered or None) -> what the person typed."""

Say = Callable[[str], None]

DATE_TIME_EXAMPLE: Final = "2026-11-21T09:00:00Z"
NOW: Final = "now"
DRAFTS: Final = "drafts"
# Scales a schema widens beyond their standard. The prompt offers the standard's values; the
# others stay valid (the schema allows them) and are named as additions, never offered as if
# they were part of the standard. The admiralty (NATO) scale grades sources A to F; the
# shipped schemas add G ("deliberately deceptive", "an addition some agencies use").
STANDARD_SCALES: Final[dict[tuple[str, str], tuple[str, ...]]] = {
    ("admiralty-6x6", "source"): ("A", "B", "C", "D", "E", "F"),
}
_YES: Final = frozenset({"y", "yes", "true"})
_NO: Final = frozenset({"n", "no", "false"})


def _silent(_line: str) -> None:
    return None


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class Prompter:
    """The prompts of one publish on a terminal.

    ``ask`` reads one answer, ``say`` shows one line (the field's format and an example, why
    an answer was refused, a default that was applied), ``now`` is the clock ``now`` reads.
    ``draft`` is the body being filled - the same object, so it holds every answer taken so
    far - and ``answered`` counts the answers: what the caller keeps as a draft when the
    message cannot be published."""

    ask: Prompt
    say: Say = _silent
    now: Callable[[], dt.datetime] = _utc_now
    draft: dict[str, Any] | None = None
    answered: int = 0

    def __call__(self, path: str, offered: list[str] | None) -> str:
        return self.ask(path, offered)


class _Refused(Exception):
    """An answer that does not fit its field; ``reason`` is one line for the person."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


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


def _variant(schema: dict[str, Any], node: Any, defs: dict[str, Any]) -> dict[str, Any] | None:
    """The variant of a tagged union (``oneOf``) that ``node``'s tag names, if any."""
    variants = [_resolve(v, defs) for v in schema["oneOf"]]
    tag = _tag_of(variants)
    if tag is None or not isinstance(node, dict):
        return None
    return next((v for v in variants if v["properties"][tag]["const"] == node.get(tag)), None)


def _tag_of(variants: list[Any]) -> str | None:
    first = variants[0] if variants and isinstance(variants[0], dict) else {}
    props = first.get("properties", {})
    return next((k for k, s in props.items() if isinstance(s, dict) and "const" in s), None)


def property_schema(
    document: dict[str, Any], body: dict[str, Any], path: str
) -> dict[str, Any] | None:
    """The (resolved) schema of the property at dotted ``path`` of ``body``, or None if the
    document has no such property. Through a tagged union, the variant the body names."""
    defs = document.get("$defs", {})
    schema: Any = document
    node: Any = body
    for key in path.split("."):
        if isinstance(schema, dict) and "oneOf" in schema:
            schema = _variant(schema, node, defs)
        if not isinstance(schema, dict):
            return None
        sub = schema.get("properties", {}).get(key)
        if sub is None:
            return None
        schema = _resolve(sub, defs)
        node = node.get(key) if isinstance(node, dict) else None
    return schema if isinstance(schema, dict) else None


def _choices(schema: dict[str, Any]) -> list[str] | None:
    if isinstance(schema.get("enum"), list):
        return [str(v) for v in schema["enum"]]
    if isinstance(schema.get("const"), str):
        return [schema["const"]]
    return None


def normalise_choice(text: str, choices: Sequence[str], name: str) -> str | None:
    """``text`` as one of ``choices``, in the schema's spelling: an exact match, else the one
    choice equal to it regardless of case (``red`` -> ``RED``; ``TLP:RED`` for a field named
    tlp, as the standard writes it). None if none matches, or several do."""
    if text in choices:
        return text
    bare = text.strip()
    prefix = f"{name}:"
    if bare.casefold().startswith(prefix.casefold()):
        bare = bare[len(prefix) :].strip()
    hits = [c for c in choices if c.casefold() == bare.casefold()]
    return hits[0] if len(hits) == 1 else None


def _normalise_fields(
    document: dict[str, Any], body: dict[str, Any], fields: Sequence[str]
) -> None:
    """A ``--field`` for a text or code property is text (``information=2`` is the code "2",
    not the number 2; ``title="..."`` is still the JSON string); a code in any case is the
    schema's spelling."""
    for field in fields:
        path, _, text = field.partition("=")
        schema = property_schema(document, body, path)
        if schema is None:
            continue
        keys = path.split(".")
        node: Any = body
        for key in keys[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            continue
        given = node[keys[-1]]
        typed = given if isinstance(given, str) else text
        choices = _choices(schema)
        if choices is not None:
            chosen = normalise_choice(typed, choices, keys[-1])
            node[keys[-1]] = given if chosen is None else chosen
        elif schema.get("type") == "string":
            node[keys[-1]] = typed


def _as_choice(value: Any, schema: dict[str, Any], name: str) -> str | None:
    """A given value that names one of the schema's codes in another case or as a number
    (``--field grading.information=2`` before the grading system was known), in the
    schema's spelling; None if it names none."""
    choices = _choices(schema)
    if choices is None or isinstance(value, bool) or not isinstance(value, str | int):
        return None
    return normalise_choice(str(value), choices, name)


def _first_sentence(text: Any, limit: int = 160) -> str:
    if not isinstance(text, str):
        return ""
    sentence = re.split(r"(?<=[.!?])\s", text.strip(), maxsplit=1)[0]
    return sentence if len(sentence) <= limit else sentence[: limit - 3].rstrip() + "..."


def _meaning(choice: str, description: Any) -> str:
    """What ``choice`` means, when the description spells it ``CODE: meaning.``"""
    if not isinstance(description, str):
        return ""
    found = re.search(rf"(?<![\w+:-]){re.escape(choice)}: ([^.]*)\.", description)
    if found is None:
        return ""
    meaning = found.group(1).strip()
    return meaning if len(meaning) <= 60 else meaning[:57].rstrip() + "..."


def _bounds(schema: dict[str, Any], low: str, high: str, unit: str = "") -> str:
    lo, hi = schema.get(low), schema.get(high)
    if lo is not None and hi is not None:
        return f" from {lo} to {hi}{unit}"
    if lo is not None:
        return f" of at least {lo}{unit}"
    if hi is not None:
        return f" of at most {hi}{unit}"
    return ""


def _format_of(schema: dict[str, Any], defs: dict[str, Any]) -> str:
    """How to write a value of ``schema``, in words."""
    choices = _choices(schema)
    if choices is not None:
        return "one of " + ", ".join(choices)
    kind = schema.get("type")
    if kind == "string":
        if schema.get("format") == "date-time":
            return (
                "a date and time, RFC 3339 with a time zone (Z for UTC, or an offset "
                "such as +01:00), or 'now' for the current time"
            )
        if "pattern" in schema:
            return f"text matching {schema['pattern']}"
        return "text" + _bounds(schema, "minLength", "maxLength", " characters")
    if kind == "integer":
        return "a whole number" + _bounds(schema, "minimum", "maximum")
    if kind == "number":
        return "a number" + _bounds(schema, "minimum", "maximum")
    if kind == "boolean":
        return "yes or no"
    if kind == "array":
        item = _resolve(schema.get("items", {}), defs)
        count = _bounds(schema, "minItems", "maxItems")
        what = _format_of(item, defs) if isinstance(item, dict) else "values"
        return f"a list{count}, separated by commas, each {what}"
    return "a value"


def _promptable(schema: Any, defs: dict[str, Any]) -> bool:
    """Can a person type this property on one line? (codes, text, numbers, yes/no, lists
    of those; not objects or lists of objects)."""
    if not isinstance(schema, dict):
        return False
    if _choices(schema) is not None:
        return True
    kind = schema.get("type")
    if kind == "array":
        item = _resolve(schema.get("items", {}), defs)
        return isinstance(item, dict) and item.get("type") != "array" and _promptable(item, defs)
    return kind in ("string", "integer", "number", "boolean")


def _reason(problem: str, schema: dict[str, Any], defs: dict[str, Any]) -> str:
    """One line saying why a value was refused (the validator's words, without the path)."""
    where, _, what = problem.partition(": ")
    what = what or where
    if schema.get("format") == "date-time":
        return f"not a date and time: write it as {DATE_TIME_EXAMPLE} (RFC 3339), or 'now'"
    if "not one of the allowed values" in what:
        return "not one of the values offered"
    if "required pattern" in what:
        return f"does not match {schema.get('pattern', 'the pattern')}: {_format_of(schema, defs)}"
    if where.startswith("$["):
        return f"item {where[1:]}: {what}"
    return what


class _Asker:
    """Walks a schema and a body together, asking for what is missing or invalid."""

    def __init__(self, document: dict[str, Any], prompter: Prompter) -> None:
        self.defs: dict[str, Any] = document.get("$defs", {})
        self.prompter = prompter
        examples = document.get("examples")
        self.example: Any = examples[0] if isinstance(examples, list) and examples else {}

    def fill(
        self, schema: dict[str, Any], node: dict[str, Any], path: str, example: Any, scale: str
    ) -> None:
        properties = schema.get("properties", {})
        required = [n for n in schema.get("required", []) if n in properties]
        present = [n for n in node if n in properties and n not in required]
        for name in [*required, *present]:
            raw = properties[name]
            sub = _resolve(raw, self.defs)
            if not isinstance(sub, dict):
                continue
            where = f"{path}{name}"
            ex = example.get(name) if isinstance(example, dict) else None
            if sub.get("type") == "object":
                child = node.setdefault(name, {})
                if isinstance(child, dict):
                    self.fill(sub, child, f"{where}.", ex, scale)
            elif "oneOf" in sub:
                self.union(raw, sub, node, name, where, ex)
            elif not _promptable(sub, self.defs):
                continue  # left to the final validation, which names the path
            elif name not in node:
                node[name] = self.ask(where, name, raw, sub, ex, scale)
            elif value_errors(sub, node[name], self.defs):
                repaired = _as_choice(node[name], sub, name)
                if repaired is not None:
                    node[name] = repaired
                    continue
                self.prompter.say(f"{where}: the value given is not valid; type it again")
                node[name] = self.ask(where, name, raw, sub, ex, scale)

    def union(
        self,
        raw: Any,
        schema: dict[str, Any],
        node: dict[str, Any],
        name: str,
        where: str,
        example: Any,
    ) -> None:
        variants = [_resolve(v, self.defs) for v in schema["oneOf"]]
        tag = _tag_of(variants)
        child = node.setdefault(name, {})
        if tag is None or not isinstance(child, dict):
            return
        tags = {"enum": [v["properties"][tag]["const"] for v in variants]}
        description = raw.get("description") if isinstance(raw, dict) else None
        tag_schema = {"description": description, **tags}
        if child.get(tag) not in tags["enum"]:
            if tag in child:
                self.prompter.say(f"{where}.{tag}: the value given is not valid; type it again")
            ex = example.get(tag) if isinstance(example, dict) else None
            child[tag] = self.ask(f"{where}.{tag}", tag, tag_schema, tags, ex, "")
        chosen = next(v for v in variants if v["properties"][tag]["const"] == child[tag])
        fitting = example if isinstance(example, dict) and example.get(tag) == child[tag] else None
        self.fill(chosen, child, f"{where}.", fitting, str(child[tag]))

    def ask(
        self, where: str, name: str, raw: Any, schema: dict[str, Any], example: Any, scale: str
    ) -> Any:
        """Ask until the answer fits ``schema``; the value, in the schema's spelling."""
        description = raw.get("description") if isinstance(raw, dict) else None
        description = description or schema.get("description")
        choices = _choices(schema)
        offered = list(STANDARD_SCALES.get((scale, name), choices or ())) or None
        self.describe(where, schema, description, choices, offered, example)
        while True:
            text = self.prompter.ask(where, offered)
            try:
                value = self.parse(name, schema, text)
            except _Refused as refused:
                self.prompter.say(f"{where}: {refused.reason}")
                continue
            self.prompter.answered += 1
            return value

    def describe(
        self,
        where: str,
        schema: dict[str, Any],
        description: Any,
        choices: list[str] | None,
        offered: list[str] | None,
        example: Any,
    ) -> None:
        say = self.prompter.say
        about = _first_sentence(description)
        say(f"{where}: {about}" if about else f"{where}:")
        if offered is not None and choices is not None:
            listed = []
            for choice in offered:
                meaning = _meaning(choice, description)
                listed.append(f"{choice} ({meaning})" if meaning else choice)
            say(f"  one of: {', '.join(listed)}  (any case)")
            for extra in (c for c in choices if c not in offered):
                meaning = _meaning(extra, description)
                say(
                    f"  also accepted: {extra}{f' ({meaning})' if meaning else ''}, an addition "
                    "to the standard scale that not every agency uses"
                )
            return
        say(f"  format: {_format_of(schema, self.defs)}")
        if schema.get("format") == "date-time":
            example = example if isinstance(example, str) else DATE_TIME_EXAMPLE
        if isinstance(example, str | int | float) and not isinstance(example, bool):
            if not value_errors(schema, example, self.defs):
                say(f"  e.g. {example}")
        elif (
            isinstance(example, list)
            and example
            and all(isinstance(e, str) for e in example)
            and not value_errors(schema, example, self.defs)
        ):
            say(f"  e.g. {', '.join(example)}")

    def parse(self, name: str, schema: dict[str, Any], text: str) -> Any:
        """The value ``text`` stands for, checked against ``schema``; _Refused if it does not
        fit."""
        text = text.strip()
        if not text:
            raise _Refused("a value is needed here")
        choices = _choices(schema)
        if choices is not None:
            chosen = normalise_choice(text, choices, name)
            if chosen is None:
                raise _Refused(f"not one of {', '.join(choices)}")
            return chosen
        value = self.convert(schema, text)
        problems = value_errors(schema, value, self.defs)
        if problems:
            raise _Refused(_reason(problems[0], schema, self.defs))
        return value

    def convert(self, schema: dict[str, Any], text: str) -> Any:
        kind = schema.get("type")
        if kind == "string":
            if schema.get("format") == "date-time" and text.casefold() == NOW:
                return self.prompter.now().astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            return text
        if kind in ("integer", "number"):
            value = _value(text)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise _Refused(
                    "expected " + ("a whole number" if kind == "integer" else "a number")
                )
            if kind == "integer" and isinstance(value, float):
                raise _Refused("expected a whole number")
            return value
        if kind == "boolean":
            if text.casefold() in _YES:
                return True
            if text.casefold() in _NO:
                return False
            raise _Refused("answer yes or no")
        if kind == "array":
            item = _resolve(schema.get("items", {}), self.defs)
            parsed = _value(text) if text.startswith("[") else None
            if isinstance(parsed, list):
                return parsed
            parts = [p.strip() for p in text.split(",") if p.strip()]
            if not isinstance(item, dict):
                return parts
            name = ""
            return [self.parse(name, item, p) for p in parts]
        return _value(text)


def prompt_missing(
    document: dict[str, Any], body: dict[str, Any], prompt: Prompt | Prompter
) -> dict[str, Any]:
    """Ask for every required field still missing, recursively through objects and the
    variant a tagged union's tag chooses, and again for any given field a person can type
    that is not valid. Each answer is checked against its property's schema as it is typed
    and asked again, with the reason, until it fits. ``body`` is filled in place."""
    prompter = prompt if isinstance(prompt, Prompter) else Prompter(ask=prompt)
    prompter.draft = body
    asker = _Asker(document, prompter)
    asker.fill(document, body, "", asker.example, "")
    return body


def safe_handling(document: dict[str, Any], body: dict[str, Any], say: Say = _silent) -> None:
    """A TLP:RED message without ``handling.no_forward`` gets ``no_forward: true``: RED
    means no further disclosure, and the schema's default (false) would let tfshare reshare
    it. Only where the document's handling has both ``tlp`` and a boolean ``no_forward``."""
    handling = property_schema(document, body, "handling")
    if handling is None or not isinstance(body.get("handling"), dict):
        return
    props = handling.get("properties", {})
    forward = props.get("no_forward")
    if "tlp" not in props or not isinstance(forward, dict) or forward.get("type") != "boolean":
        return
    given = body["handling"]
    if given.get("tlp") == "RED" and "no_forward" not in given:
        given["no_forward"] = True
        say(
            "handling.no_forward: true, because TLP:RED allows no further disclosure "
            "(tfshare will refuse to reshare it; give handling.no_forward=false to allow it)"
        )
    defaults = [
        f"{name} {json.dumps(sub['default']).strip(chr(34))}"
        for name, sub in props.items()
        if isinstance(sub, dict) and "default" in sub and name not in given
    ]
    if defaults:
        say(f"handling: the schema's defaults apply: {', '.join(defaults)}")


def body_json(
    document: dict[str, Any],
    *,
    base: bytes | None,
    fields: Sequence[str],
    prompt: Prompt | Prompter | None,
) -> bytes:
    """The JSON body: the file's object (if any), then ``--field``s, then prompts; a RED
    message's handling made safe (``safe_handling``)."""
    body = parse_object(base) if base is not None else {}
    body = apply_fields(body, fields)
    _normalise_fields(document, body, fields)
    say: Say = _silent
    if prompt is not None:
        prompter = prompt if isinstance(prompt, Prompter) else Prompter(ask=prompt)
        body = prompt_missing(document, body, prompter)
        say = prompter.say
    safe_handling(document, body, say)
    return json.dumps(body).encode()


def save_draft(state_dir: Path, body: dict[str, Any], *, kind: str, now: dt.datetime) -> Path:
    """Keep ``body`` (a publish that failed: the answers typed so far) in a new 0600 file
    ``<state>/drafts/<UTC time>-<kind>-<random>.json`` (directory 0700); its path.
    ``publish KIND --body-file PATH`` takes it up again."""
    drafts = state_dir / DRAFTS
    drafts.mkdir(mode=0o700, parents=True, exist_ok=True)
    label = kind if re.fullmatch(r"[a-z][a-z-]{0,31}", kind) else "message"
    stamp = now.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = drafts / f"{stamp}-{label}-{secrets.token_hex(3)}.json"
    data = json.dumps(body, indent=2, ensure_ascii=False) + "\n"
    write_atomic(path, data.encode(), secret=True, overwrite=False)
    return path


def is_draft(state_dir: Path, path: Path) -> bool:
    """Is ``path`` a draft file of this state directory (``save_draft``)?"""
    try:
        return path.resolve().parent == (state_dir / DRAFTS).resolve() and path.is_file()
    except OSError:
        return False


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
