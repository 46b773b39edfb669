"""Web forms generated from a message type's JSON Schema, and bodies parsed back from them.

Owns: the list of form fields of a registry schema document (``form_fields``), the form
values of a body (``form_values``), and the body a submitted form stands for
(``parse_form``), with one error per field that names the field. Pure: no web framework, no
I/O; the checks are the registry's own (``registry.validate``) and the command line's
(``workflows.bodies``: codes in any case, the property schemas through ``$ref`` and tagged
unions), so a form accepts exactly what ``tfshare publish --field`` accepts.

Names and paths. A field's ``path`` is where its value goes in the body, as the CLI and the
validator name it (``handling.tlp``, ``locations[0].country``); its ``name`` is the form key
(``handling.tlp``, ``locations.0.country``). A tagged union (``grading``: one object per
grading system) gets a select for its tag (``grading.system``) and, for each variant, that
variant's fields, named ``grading.source@uk-3x5x2``: the variant the tag chooses is read, the
others ignored. A list of objects (``locations``) gets the items it has plus one blank item;
a blank item is left out. A list of codes or texts is one textarea, one item a line.

Widgets: ``select`` (codes; an optional yes/no), ``checkbox`` (a required yes/no),
``text``, ``textarea`` (text over 200 characters), ``number``, ``datetime-local`` (UTC; a
full RFC 3339 date-time with its offset is kept as typed) and ``lines``. An empty optional
field is left out of the body; whitespace alone counts as empty.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from tfshare.errors import ValidationError
from tfshare.registry.profile import DATE_TIME_PATTERN
from tfshare.registry.validate import all_errors, value_errors
from tfshare.workflows.bodies import normalise_choice

WIDGETS: Final = ("text", "textarea", "select", "checkbox", "number", "datetime-local", "lines")
LONG_TEXT: Final = 200  # text fields allowing more than this get a textarea
YES: Final = "yes"
NO: Final = "no"
MAX_ITEMS_SHOWN: Final = 100  # list items of objects read back from a form, at most
_LOCAL_TIME: Final = re.compile(
    r"^([0-9]{4}-[0-9]{2}-[0-9]{2})[T ]([0-9]{2}:[0-9]{2})(:[0-9]{2}(\.[0-9]{1,9})?)?\Z"
)
_INDEX: Final = re.compile(r"^(0|[1-9][0-9]{0,5})\Z")


@dataclass(frozen=True)
class Field:
    """One form control. ``variant`` = (name of the tag's field, tag value) for a field of
    one variant of a tagged union; ``group`` the label of the fieldset it belongs to."""

    name: str
    path: str
    label: str
    help: str
    widget: str
    required: bool
    choices: tuple[str, ...] = ()
    group: str = ""
    variant: tuple[str, str] | None = None
    step: str = ""  # number fields: "1" for whole numbers, "any" otherwise
    maxlength: int | None = None


class FormInvalid(ValidationError):
    """A submitted form that does not give a valid body. ``errors`` maps each failing
    field's form name to one line naming its path (``handling.tlp: must be one of ...``);
    the key ``""`` holds what belongs to no one field."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        lines = list(errors.values())
        shown = "; ".join(lines[:3]) + (f" (and {len(lines) - 3} more)" if len(lines) > 3 else "")
        super().__init__(
            f"the form has {len(lines)} invalid field{'s' if len(lines) != 1 else ''}: {shown}",
            hint="correct the fields marked and send the form again",
            paths=tuple(f"$.{line.partition(':')[0]}" for line in lines),
        )
        self.errors = dict(errors)


# -- the schema, walked ----------------------------------------------------------------------


def _resolve(schema: Any, defs: Mapping[str, Any]) -> Any:
    seen = 0
    while isinstance(schema, dict) and "$ref" in schema and seen < 32:
        ref = str(schema["$ref"])
        key = ref.removeprefix("#/$defs/")
        description = schema.get("description")
        target = defs.get(key) if key != ref else None
        schema = target if isinstance(target, dict) else {}
        if description is not None and "description" not in schema:
            schema = {**schema, "description": description}
        seen += 1
    return schema


def _choices(schema: Mapping[str, Any]) -> tuple[str, ...] | None:
    if isinstance(schema.get("enum"), list):
        return tuple(str(v) for v in schema["enum"])
    if isinstance(schema.get("const"), str):
        return (schema["const"],)
    return None


def _variants(schema: Mapping[str, Any], defs: Mapping[str, Any]) -> tuple[str, list[Any]] | None:
    """The tag property's name and the resolved variants of a tagged union, or None."""
    variants = [_resolve(v, defs) for v in schema.get("oneOf", [])]
    if not variants or not all(isinstance(v, dict) for v in variants):
        return None
    props = variants[0].get("properties", {})
    tag = next((k for k, s in props.items() if isinstance(s, dict) and "const" in s), None)
    if tag is None:
        return None
    for variant in variants:
        sub = variant.get("properties", {}).get(tag)
        if not isinstance(sub, dict) or not isinstance(sub.get("const"), str):
            return None
    return tag, variants


def _label(key: str) -> str:
    return key.replace("_", " ").capitalize()


def _help(raw: Any, schema: Mapping[str, Any]) -> str:
    description = raw.get("description") if isinstance(raw, dict) else None
    description = description or schema.get("description")
    return description if isinstance(description, str) else ""


def _is_scalar(schema: Any) -> bool:
    if not isinstance(schema, dict):
        return False
    if _choices(schema) is not None:
        return True
    return schema.get("type") in ("string", "integer", "number", "boolean")


class _Builder:
    def __init__(self, document: Mapping[str, Any]) -> None:
        defs = document.get("$defs", {})
        self.defs: Mapping[str, Any] = defs if isinstance(defs, dict) else {}
        self.fields: list[Field] = []

    def object(
        self,
        schema: Mapping[str, Any],
        node: Any,
        name: str,
        path: str,
        group: str,
        required_here: bool,
        variant: tuple[str, str] | None,
    ) -> None:
        properties = schema.get("properties", {})
        required = (
            set(schema.get("required", [])) if isinstance(schema.get("required"), list) else set()
        )
        if not isinstance(properties, dict):
            return
        for key, raw in properties.items():
            sub = _resolve(raw, self.defs)
            if not isinstance(sub, dict):
                continue
            child = node.get(key) if isinstance(node, dict) else None
            self.property(
                sub,
                raw,
                child,
                f"{name}{key}",
                f"{path}{key}",
                key,
                group,
                required_here and key in required,
                variant,
            )

    def property(
        self,
        sub: Mapping[str, Any],
        raw: Any,
        node: Any,
        name: str,
        path: str,
        key: str,
        group: str,
        required: bool,
        variant: tuple[str, str] | None,
    ) -> None:
        union = _variants(sub, self.defs) if "oneOf" in sub else None
        label = _label(key)
        if union is not None:
            tag, variants = union
            tags = tuple(v["properties"][tag]["const"] for v in variants)
            here = f"{group} / {label}" if group else label
            self.fields.append(
                Field(
                    f"{name}.{tag}",
                    f"{path}.{tag}",
                    _label(tag),
                    _help(raw, sub),
                    "select",
                    required,
                    tags,
                    here,
                    variant,
                )
            )
            for value, chosen in zip(tags, variants, strict=True):
                props = {k: s for k, s in chosen.get("properties", {}).items() if k != tag}
                self.object(
                    {**chosen, "properties": props},
                    node if isinstance(node, dict) and node.get(tag) == value else None,
                    f"{name}@{value}.",
                    f"{path}.",
                    f"{here} ({value})",
                    required,
                    (f"{name}.{tag}", value),
                )
            return
        kind = sub.get("type")
        if kind == "object" and _choices(sub) is None:
            here = f"{group} / {label}" if group else label
            self.object(sub, node, f"{name}.", f"{path}.", here, required, variant)
            return
        if kind == "array":
            item = _resolve(sub.get("items", {}), self.defs)
            if isinstance(item, dict) and item.get("type") == "object" and "oneOf" not in item:
                items = node if isinstance(node, list) else []
                for index in range(min(len(items), MAX_ITEMS_SHOWN) + 1):
                    self.object(
                        item,
                        items[index] if index < len(items) else None,
                        f"{name}.{index}.",
                        f"{path}[{index}].",
                        f"{group} / {label} {index + 1}" if group else f"{label} {index + 1}",
                        False,
                        variant,
                    )
                return
            if _is_scalar(item):
                self.fields.append(
                    Field(
                        name,
                        path,
                        label,
                        _help(raw, sub),
                        "lines",
                        required,
                        group=group,
                        variant=variant,
                    )
                )
            return  # lists of lists are not in the shipped schemas; the validator names them
        if not _is_scalar(sub):
            return
        self.fields.append(self.scalar(sub, raw, name, path, label, group, required, variant))

    def scalar(
        self,
        sub: Mapping[str, Any],
        raw: Any,
        name: str,
        path: str,
        label: str,
        group: str,
        required: bool,
        variant: tuple[str, str] | None,
    ) -> Field:
        help_text = _help(raw, sub)
        choices = _choices(sub)
        if choices is not None:
            return Field(name, path, label, help_text, "select", required, choices, group, variant)
        kind = sub.get("type")
        if kind == "boolean":
            if required:
                return Field(name, path, label, help_text, "checkbox", True, (), group, variant)
            return Field(name, path, label, help_text, "select", False, (YES, NO), group, variant)
        if kind in ("integer", "number"):
            step = "1" if kind == "integer" else "any"
            return Field(name, path, label, help_text, "number", required, (), group, variant, step)
        if sub.get("format") == "date-time":
            return Field(
                name, path, label, help_text, "datetime-local", required, (), group, variant
            )
        longest = sub.get("maxLength")
        short = isinstance(longest, int) and longest <= LONG_TEXT
        widget = "text" if short or "pattern" in sub else "textarea"
        limit = longest if isinstance(longest, int) else None
        return Field(name, path, label, help_text, widget, required, (), group, variant, "", limit)


def form_fields(document: Mapping[str, Any], body: Any = None) -> list[Field]:
    """The fields of a form for ``document``'s messages, in the schema's order. ``body``
    (the values being shown, if any) decides how many items of each list of objects appear:
    the ones it has and one blank."""
    builder = _Builder(document)
    builder.object(document, body, "", "", "", True, None)
    return builder.fields


# -- values shown ------------------------------------------------------------------------------


def _get(body: Any, path: str) -> Any:
    """The value at a field's path (``a.b[0].c``) in ``body``, or None."""
    node = body
    for part in re.findall(r"[^.\[\]]+|\[[0-9]+\]", path):
        if part.startswith("["):
            index = int(part[1:-1])
            node = node[index] if isinstance(node, list) and index < len(node) else None
        else:
            node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            return None
    return node


def _local_time(text: str) -> str:
    """An RFC 3339 date-time as a datetime-local control shows it (UTC, no zone)."""
    if text.endswith("Z"):
        return text[:-1]
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        return text
    if moment.tzinfo is None:
        return text
    return moment.astimezone(dt.UTC).replace(tzinfo=None).isoformat()


def _shown(field_: Field, value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        if field_.widget == "checkbox":
            return YES if value else ""
        return YES if value else NO
    if field_.widget == "lines":
        if not isinstance(value, list):
            return None
        return "\n".join(_shown_item(item) for item in value)
    if field_.widget == "datetime-local" and isinstance(value, str):
        return _local_time(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return repr(value)
    return value if isinstance(value, str) else None


def _shown_item(item: Any) -> str:
    if isinstance(item, bool):
        return YES if item else NO
    return item if isinstance(item, str) else repr(item)


def form_values(document: Mapping[str, Any], body: Any) -> dict[str, str]:
    """What each field of ``form_fields(document, body)`` shows for ``body`` (fields the
    body does not give are left out)."""
    values: dict[str, str] = {}
    fields = form_fields(document, body)
    paths = {f.name: f.path for f in fields}
    for field_ in fields:
        if field_.variant is not None:
            tag_name, tag_value = field_.variant
            if _get(body, paths.get(tag_name, "")) != tag_value:
                continue  # another variant's field: the tag chose a different one
        shown = _shown(field_, _get(body, field_.path))
        if shown is not None:
            values[field_.name] = shown
    return values


# -- values read back ------------------------------------------------------------------------


class _Bad(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class _Reader:
    document: Mapping[str, Any]
    values: Mapping[str, str]
    defs: Mapping[str, Any]
    errors: dict[str, str] = field(default_factory=dict)

    def text(self, name: str) -> str:
        value = self.values.get(name, "")
        return value if isinstance(value, str) else ""

    def filled(self, prefix: str) -> bool:
        """Does any value under this form-name prefix hold something?"""
        return any(k.startswith(prefix) and self.text(k).strip() for k in self.values)

    def object(
        self,
        schema: Mapping[str, Any],
        name: str,
        path: str,
        required_here: bool,
    ) -> dict[str, Any] | None:
        """The object the fields under ``name`` give; None if none is filled in and the
        object is optional."""
        properties = schema.get("properties", {})
        required = schema.get("required", [])
        required = set(required) if isinstance(required, list) else set()
        if not isinstance(properties, dict):
            return None
        if not required_here and not self.filled(name):
            return None
        out: dict[str, Any] = {}
        for key, raw in properties.items():
            sub = _resolve(raw, self.defs)
            if not isinstance(sub, dict):
                continue
            value = self.property(sub, f"{name}{key}", f"{path}{key}", key in required)
            if value is not None:
                out[key] = value
        for key in sorted(required):
            if key not in out and key in properties:
                sub = _resolve(properties[key], self.defs)
                # A union or list the walk did not read names its own problem below.
                if isinstance(sub, dict) and _is_scalar(sub) and f"{name}{key}" not in self.errors:
                    self.errors[f"{name}{key}"] = f"{path}{key}: a value is needed here"
        return out

    def property(self, sub: Mapping[str, Any], name: str, path: str, required: bool) -> Any:
        union = _variants(sub, self.defs) if "oneOf" in sub else None
        if union is not None:
            tag, variants = union
            tags = [v["properties"][tag]["const"] for v in variants]
            tag_name = f"{name}.{tag}"
            typed = self.text(tag_name).strip()
            if not typed:
                if required or self.filled(f"{name}@"):
                    self.errors[tag_name] = f"{path}.{tag}: choose one of {', '.join(tags)}"
                return None
            chosen = normalise_choice(typed, tags, tag)
            if chosen is None:
                self.errors[tag_name] = f"{path}.{tag}: must be one of {', '.join(tags)}"
                return None
            variant = variants[tags.index(chosen)]
            props = {k: s for k, s in variant.get("properties", {}).items() if k != tag}
            body = self.object(
                {**variant, "properties": props}, f"{name}@{chosen}.", f"{path}.", True
            )
            return {tag: chosen, **(body or {})}
        kind = sub.get("type")
        if kind == "object" and _choices(sub) is None:
            return self.object(sub, f"{name}.", f"{path}.", required)
        if kind == "array":
            item = _resolve(sub.get("items", {}), self.defs)
            if isinstance(item, dict) and item.get("type") == "object" and "oneOf" not in item:
                return self.items(item, name, path)
            if not _is_scalar(item):
                return None
            return self.lines(item, name, path)
        if not _is_scalar(sub):
            return None
        text = self.text(name)
        if kind == "boolean" and required and _choices(sub) is None:
            return text.strip().casefold() in ("yes", "on", "true")  # a checkbox
        if not text.strip():
            return None
        try:
            value = self.scalar(sub, text, name.rpartition(".")[2].partition("@")[0])
        except _Bad as bad:
            self.errors[name] = f"{path}: {bad.reason}"
            return None
        return value

    def items(self, item: Mapping[str, Any], name: str, path: str) -> list[Any] | None:
        indices: set[int] = set()
        prefix = f"{name}."
        for key in self.values:
            if key.startswith(prefix):
                digits = key[len(prefix) :].partition(".")[0]
                if _INDEX.match(digits):
                    indices.add(int(digits))
        out: list[Any] = []
        for index in sorted(indices)[:MAX_ITEMS_SHOWN]:
            value = self.object(item, f"{name}.{index}.", f"{path}[{len(out)}].", False)
            if value is not None:
                out.append(value)
        return out or None

    def lines(self, item: Mapping[str, Any], name: str, path: str) -> list[Any] | None:
        text = self.text(name)
        parts = [line.strip() for line in text.replace("\r\n", "\n").split("\n")]
        out: list[Any] = []
        for number, part in enumerate(p for p in parts if p):
            try:
                out.append(self.scalar(item, part, ""))
            except _Bad as bad:
                self.errors.setdefault(name, f"{path}: line {number + 1}: {bad.reason}")
        return out or None

    def scalar(self, schema: Mapping[str, Any], text: str, key: str) -> Any:
        choices = _choices(schema)
        if choices is not None:
            chosen = normalise_choice(text.strip(), choices, key)
            if chosen is None:
                raise _Bad(f"must be one of {', '.join(choices)}")
            return chosen
        kind = schema.get("type")
        value: Any
        if kind == "boolean":
            answer = text.strip().casefold()
            if answer not in (YES, NO):
                raise _Bad("must be yes or no")
            value = answer == YES
        elif kind in ("integer", "number"):
            value = _number(text.strip(), whole=kind == "integer")
        elif schema.get("format") == "date-time":
            value = _date_time(text.strip())
        else:
            value = text.replace("\r\n", "\n")
        problems = value_errors(schema, value, dict(self.defs))
        if problems:
            raise _Bad(_reason(problems[0], schema))
        return value


def _number(text: str, *, whole: bool) -> int | float:
    if re.fullmatch(r"[+-]?[0-9]{1,30}", text):
        return int(text)
    if whole:
        raise _Bad("must be a whole number")
    try:
        value = float(text)
    except ValueError:
        raise _Bad("must be a number") from None
    if not math.isfinite(value):
        raise _Bad("must be a number")
    return value


def _date_time(text: str) -> str:
    if re.search(DATE_TIME_PATTERN, text):
        return text
    local = _LOCAL_TIME.match(text)
    if local is None:
        raise _Bad("must be a date and time, e.g. 2026-11-21T09:00 (UTC)")
    day, minutes, seconds = local.group(1), local.group(2), local.group(3) or ":00"
    return f"{day}T{minutes}{seconds}Z"


def _reason(problem: str, schema: Mapping[str, Any]) -> str:
    """The validator's words for one value, without its ``$`` path."""
    where, _, what = problem.partition(": ")
    what = what or where
    if "required pattern" in what and schema.get("format") != "date-time":
        return f"must match {schema.get('pattern', 'the pattern')}"
    if "RFC 3339" in what or schema.get("format") == "date-time":
        return "must be a date and time, e.g. 2026-11-21T09:00 (UTC)"
    if where.startswith("$["):
        return f"item {where[1:]}: {what}"
    return what


def _form_name(problem_path: str) -> str:
    """The form name of a validator path (``$.locations[0].country`` ->
    ``locations.0.country``); union variants are not told apart here."""
    return re.sub(r"\[([0-9]+)\]", r".\1", problem_path.removeprefix("$").removeprefix("."))


def parse_form(document: Mapping[str, Any], values: Mapping[str, str]) -> dict[str, Any]:
    """The body a submitted form gives (``values``: form name -> text), checked field by
    field and then as a whole against ``document``. ``FormInvalid`` (a ValidationError,
    exit 5) names every failing field; nothing else is raised for any input. Names the
    form does not have are ignored."""
    defs = document.get("$defs", {})
    reader = _Reader(document, values, defs if isinstance(defs, dict) else {})
    try:
        body = reader.object(document, "", "", True) or {}
    except RecursionError:  # a schema nested beyond reason; the registry refuses those
        raise FormInvalid({"": "the form is nested too deeply"}) from None
    if reader.errors:
        raise FormInvalid(reader.errors)
    names = {f.name for f in form_fields(document, body)}
    errors: dict[str, str] = {}
    for problem in all_errors(dict(document), body):
        where, _, what = problem.partition(": ")
        name = _form_name(where)
        key = name if name in names else ""
        shown = where.removeprefix("$").removeprefix(".") or "the message"
        errors.setdefault(key, f"{shown}: {what}")
    if errors:
        raise FormInvalid(errors)
    return body
