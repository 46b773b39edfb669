"""One registered schema version: its document, fingerprint and msgspec types.

Owns: ``Schema``, the ``tfshare.messages.MessageType`` that sealing and opening use. Publishing
decodes JSON strictly (unknown fields refused, every failing path reported); receiving decodes
msgpack tolerantly (a newer producer's optional additions are ignored).
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

from tfshare.encoding import DECODE_ERRORS, safe_reason
from tfshare.errors import ValidationError
from tfshare.registry.profile import BuiltTypes, ProfileError, build_types, parse_document
from tfshare.registry.validate import all_errors

SUBJECT: Final = re.compile(r"^[a-z][a-z0-9_.-]{0,63}\Z")
NAME: Final = re.compile(r"^([a-z][a-z0-9_.-]{0,63})/([1-9][0-9]{0,5})\Z")
ID_PREFIX: Final = "urn:tfshare:schema:"
MAX_BODY_DEPTH: Final = 64


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
        """A body from JSON, strictly; ValidationError naming every failing path."""
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
        return self._body_decoder.decode(body)

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
