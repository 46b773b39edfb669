"""One registered schema version: its document, fingerprint and msgspec types.

Owns: ``Schema``, the ``tfshare.messages.MessageType`` that sealing and opening use. Publishing
decodes JSON strictly (unknown fields refused, every failing path reported); receiving decodes
msgpack tolerantly (a newer producer's optional additions are ignored). Both refuse an object
or map that has one key twice, at any depth: decoders disagree about which value wins.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Final

import msgspec
import rfc8785

from tfshare.encoding import DECODE_ERRORS, check_body_form, safe_reason
from tfshare.errors import ValidationError
from tfshare.registry.profile import BuiltTypes, ProfileError, build_types, parse_document
from tfshare.registry.validate import all_errors

SUBJECT: Final = re.compile(r"^[a-z][a-z0-9_.-]{0,63}\Z")
NAME: Final = re.compile(r"^([a-z][a-z0-9_.-]{0,63})/([1-9][0-9]{0,5})\Z")
ID_PREFIX: Final = "urn:tfshare:schema:"
MAX_BODY_DEPTH: Final = 64
_KEY_SHOWN: Final = re.compile(r"^[a-z][a-z0-9_]{0,63}\Z")  # a property name, never content


class _Pairs(list[tuple[str, Any]]):
    """A JSON object as parsed: every (key, value) pair, repeats included."""


def duplicate_key_path(data: bytes) -> str | None:
    """The JSON path of the first object key that appears twice in ``data`` (any depth), or
    None if there is none or ``data`` is not JSON (the caller's own decode says why).

    Only keys shaped like property names are spelled out: the input is a message body, and
    a key the schema does not know may be case content."""
    try:
        parsed = json.loads(data, object_pairs_hook=_Pairs)
    except (ValueError, RecursionError):
        return None
    pending: list[tuple[Any, str]] = [(parsed, "$")]
    while pending:
        value, path = pending.pop()
        if isinstance(value, _Pairs):
            seen: set[str] = set()
            for key, item in value:
                shown = f"{path}.{key}" if _KEY_SHOWN.match(key) else f"{path}.(a key)"
                if key in seen:
                    return shown
                seen.add(key)
                pending.append((item, shown))
        elif isinstance(value, list):
            pending.extend((item, f"{path}[{i}]") for i, item in enumerate(value))
    return None


def refuse_duplicate_keys(data: bytes) -> None:
    """ValidationError (exit 5) if a JSON body has an object key twice, at any depth."""
    path = duplicate_key_path(data)
    if path is not None:
        raise ValidationError(
            f"the body has the key {path} twice",
            hint="give each field once: which of two values counts is not defined, so "
            "tfshare refuses to guess",
            paths=(path,),
        )


def fingerprint_of(doc: dict[str, Any]) -> bytes:
    """SHA-256 of the document's RFC 8785 canonical JSON."""
    return hashlib.sha256(canonical_json(doc)).digest()


def canonical_json(doc: dict[str, Any]) -> bytes:
    return bytes(rfc8785.dumps(doc))


def split_name(name: str) -> tuple[str, int]:
    """``"tf.alert/2"`` -> ``("tf.alert", 2)``; ValidationError otherwise."""
    match = NAME.match(name)
    if match is None:
        raise ValidationError(
            f"{name!r} is not a schema name",
            hint="schema names look like tf.alert/1 (subject/version)",
        )
    return match.group(1), int(match.group(2))


def _share_defaults(value: object) -> None:
    if isinstance(value, msgspec.Struct):
        for field_ in msgspec.structs.fields(value):
            current = getattr(value, field_.name)
            default = field_.default
            if (
                default is not msgspec.NODEFAULT
                and current is not default
                and type(current) is type(default)
                and current == default
            ):
                setattr(value, field_.name, default)
            else:
                _share_defaults(current)
    elif isinstance(value, list):
        for item in value:
            _share_defaults(item)


@dataclass(frozen=True, eq=False)
class Schema:
    """A schema version (``tf.alert/1``) with everything needed to use it."""

    name: str
    document: dict[str, Any] = field(repr=False)
    fingerprint: bytes
    types: BuiltTypes = field(repr=False)

    @classmethod
    def from_document(cls, doc: dict[str, Any], *, name: str | None = None) -> Schema:
        """Admit a parsed document; its name comes from ``$id`` unless given."""
        declared = doc.get("$id")
        if isinstance(declared, str) and declared.startswith(ID_PREFIX):
            declared = declared[len(ID_PREFIX) :]
        if name is None:
            if not isinstance(declared, str):
                raise ProfileError(
                    "$", "$id", f"needs $id {ID_PREFIX}<subject>/<version> to be registered"
                )
            name = declared
        elif declared is not None and declared != name:
            raise ProfileError("$", "$id", f"says {declared!r}, expected {name!r}")
        split_name(name)
        try:
            fingerprint = fingerprint_of(doc)
        except rfc8785.CanonicalizationError:
            raise ProfileError(
                "$", "(numbers)", "holds a number RFC 8785 cannot canonicalize"
            ) from None
        return cls(name, doc, fingerprint, build_types(doc, name=name))

    @classmethod
    def from_bytes(cls, data: bytes, *, name: str | None = None) -> Schema:
        return cls.from_document(parse_document(data), name=name)

    @property
    def subject(self) -> str:
        return split_name(self.name)[0]

    @property
    def version(self) -> int:
        return split_name(self.name)[1]

    @cached_property
    def canonical(self) -> bytes:
        return canonical_json(self.document)

    @cached_property
    def _json_decoder(self) -> msgspec.json.Decoder[Any]:
        return msgspec.json.Decoder(self.types.publish)

    @cached_property
    def _body_decoder(self) -> msgspec.msgpack.Decoder[Any]:
        return msgspec.msgpack.Decoder(self.types.receive)

    def from_json(self, data: bytes) -> object:
        """A body from JSON, strictly; ValidationError naming every failing path, or the
        first key given twice."""
        refuse_duplicate_keys(data)
        try:
            return self._json_decoder.decode(data)
        except msgspec.ValidationError:
            paths = self.errors_in(data)
            raise ValidationError(
                f"the body is not a valid {self.name}: " + "; ".join(paths),
                hint=f"fix the listed fields; 'tfshare schema show {self.name}' shows the schema",
                paths=tuple(dict.fromkeys(p.split(":", 1)[0] for p in paths)),
            ) from None
        except DECODE_ERRORS as exc:
            raise ValidationError(
                f"the body is not valid JSON ({safe_reason(exc)})",
                hint="the body file must hold one JSON object",
            ) from None

    def errors_in(self, data: bytes) -> list[str]:
        """Every failing path of a JSON body (empty if it is valid)."""
        try:
            value = json.loads(data)
        except RecursionError:
            return ["$: nested too deeply"]
        except ValueError:
            return ["$: not JSON"]
        return all_errors(self.document, value) or ["$: invalid"]

    def to_body(self, record: object) -> bytes:
        """The msgpack body. Values spelled out equal to their default are left off, as if
        absent: msgspec's omit_defaults compares by identity, so equal records would
        otherwise encode differently depending on how they were written."""
        _share_defaults(record)
        return msgspec.msgpack.encode(record)

    def from_body(self, body: bytes) -> object:
        """A received body: typed decode, then the form check of PROTOCOL.md 9 (no map key
        twice at any depth, shortest forms). Raises one of ``DECODE_ERRORS`` (E_BODY)."""
        record = self._body_decoder.decode(body)
        check_body_form(body)
        return record

    def to_builtins(self, record: object) -> Any:
        return msgspec.to_builtins(record)

    def example_errors(self) -> list[str]:
        """Problems with the document's own ``examples`` (each must be a valid body)."""
        problems: list[str] = []
        examples = self.document.get("examples")
        if not isinstance(examples, list) or not examples:
            return ["$.examples: at least one example is required"]
        for i, example in enumerate(examples):
            try:
                msgspec.convert(example, self.types.publish)
            except msgspec.ValidationError as exc:
                problems.append(f"$.examples[{i}]: {safe_reason(exc)}")
        return problems
