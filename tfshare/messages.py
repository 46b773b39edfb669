"""Built-in message types of the task force (domain.md), until the schema registry lands.

Owns: ``tf.alert/1``, ``tf.red_flag/1``, ``tf.tip_summary/1``, ``tf.receipt/1`` as msgspec
Structs, their fingerprints, and the ``SchemaBook`` seam that sealing and opening use. The
registry (issue 3) replaces this module behind the same ``SchemaBook``/``MessageType`` shape.

Never: put a field's value into an error message; errors name the path only.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Any, Final, Literal, Protocol

import msgspec
import rfc8785

from tfshare.encoding import safe_reason
from tfshare.errors import ValidationError

Text = Annotated[str, msgspec.Meta(min_length=1, max_length=4000)]
ShortText = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
DateTime = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})\Z",
        description="RFC 3339 date-time",
    ),
]
IndicatorCode = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^(ilo|htcds|fincen|polaris):[a-z0-9][a-z0-9:.-]{0,62}\Z",
        description="namespaced indicator code, e.g. ilo:debt-bondage",
    ),
]
Tlp = Literal["CLEAR", "GREEN", "AMBER", "AMBER+STRICT", "RED"]
Pap = Literal["CLEAR", "GREEN", "AMBER", "RED"]

_GRADING_CODES: Final = {
    # system: (source codes, information codes, handling codes or None)
    "admiralty-6x6": ("ABCDEFG", "123456", None),
    "europol-4x4": ("ABCX", "1234", None),
    "uk-3x5x2": ("123", "ABCDE", "PC"),
}


class Struct(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """Base of message records: strict, keyword-only; fields equal to their default are left
    off the wire (so no msgpack nil is ever sent), and come back as the default."""


class Handling(Struct, kw_only=True):
    tlp: Tlp
    pap: Pap = "AMBER"
    code: Literal["H0", "H1", "H2", "H3"] = "H1"
    code_note: Annotated[str, msgspec.Meta(max_length=500)] | None = None
    no_forward: bool = False


class Grading(Struct, kw_only=True):
    system: Literal["admiralty-6x6", "europol-4x4", "uk-3x5x2"]
    source: Annotated[str, msgspec.Meta(min_length=1, max_length=1)]
    information: Annotated[str, msgspec.Meta(min_length=1, max_length=1)]
    handling: Annotated[str, msgspec.Meta(min_length=1, max_length=1)] | None = None

    def __post_init__(self) -> None:
        sources, infos, handlings = _GRADING_CODES[self.system]
        if self.source not in sources or self.information not in infos:
            raise ValueError(f"source/information code not valid in {self.system}")
        if (self.handling is None) != (handlings is None) or (
            self.handling is not None and handlings is not None and self.handling not in handlings
        ):
            raise ValueError(f"handling code not valid in {self.system}")


class Location(Struct, kw_only=True):
    country: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{2}\Z", description="ISO 3166-1 a2")]
    region: ShortText | None = None
    place: ShortText | None = None
    lat: Annotated[float, msgspec.Meta(ge=-90, le=90)] | None = None
    lon: Annotated[float, msgspec.Meta(ge=-180, le=180)] | None = None


class TimeWindow(Struct, kw_only=True):
    start: DateTime
    end: DateTime | None = None


class Entity(Struct, kw_only=True):
    kind: Literal[
        "phone",
        "account",
        "vehicle-plate",
        "online-handle",
        "ad-url",
        "email",
        "address",
        "company",
        "person-description",
    ]
    value: Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]
    hashed: bool = False


class Alert(Struct, kw_only=True):
    title: ShortText
    summary: Text
    severity: Literal["low", "medium", "high", "critical"]
    category: Literal[
        "sexual-exploitation",
        "labour-exploitation",
        "forced-criminality",
        "forced-marriage",
        "domestic-servitude",
        "organ-removal",
        "child-trafficking",
        "other",
    ]
    where: Location
    when: TimeWindow | None = None
    entities: Annotated[list[Entity], msgspec.Meta(max_length=100)] = []
    indicators: Annotated[list[IndicatorCode], msgspec.Meta(max_length=50)] = []
    handling: Handling
    grading: Grading
    response: Literal["urgent-8h", "urgent-3d", "7d", "none"] = "none"
    expires: DateTime | None = None


class RedFlag(Struct, kw_only=True):
    indicators: Annotated[list[IndicatorCode], msgspec.Meta(min_length=1, max_length=20)]
    entity: Entity
    context: Text
    first_seen: DateTime | None = None
    last_seen: DateTime | None = None
    confidence: Literal["low", "medium", "high"]
    handling: Handling
    grading: Grading


class PossibleVictims(Struct, kw_only=True):
    count: Annotated[int, msgspec.Meta(ge=0, le=100_000)]
    age_bands: list[Literal["0-12", "13-17", "18-24", "25-39", "40+", "unknown"]] = []
    needs: Annotated[list[ShortText], msgspec.Meta(max_length=20)] = []


class TipSummary(Struct, kw_only=True):
    source_type: Literal["hotline", "community", "ngo-outreach", "online", "financial"]
    received: DateTime
    summary: Text
    locations: Annotated[list[Location], msgspec.Meta(max_length=20)] = []
    indicators: Annotated[list[IndicatorCode], msgspec.Meta(max_length=50)] = []
    possible_victims: PossibleVictims | None = None
    recommended_action: Text | None = None
    handling: Handling
    grading: Grading


class Receipt(Struct, kw_only=True):
    msg_id: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{32}\Z")]
    env_hash: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}\Z")]
    outcome: Literal["accepted", "rejected"]
    code: Annotated[str, msgspec.Meta(pattern=r"^E_[A-Z_]{2,30}\Z")] | None = None
    received: DateTime


class MessageType(Protocol):
    """One schema version as sealing and opening need it."""

    @property
    def name(self) -> str: ...
    @property
    def subject(self) -> str: ...
    @property
    def fingerprint(self) -> bytes: ...
    def from_json(self, data: bytes) -> object: ...
    def to_body(self, record: object) -> bytes: ...
    def from_body(self, body: bytes) -> object: ...
    def to_builtins(self, record: object) -> Any: ...


class SchemaBook(Protocol):
    """Where schemas are looked up by name (``tf.alert/1``)."""

    def lookup(self, name: str) -> MessageType | None: ...


@dataclass(frozen=True)
class BuiltinType:
    """A message type defined by a Struct; fingerprint = SHA-256 of its canonical JSON Schema."""

    name: str
    struct: type[msgspec.Struct]
    fingerprint: bytes

    @classmethod
    def of(cls, name: str, struct: type[msgspec.Struct]) -> BuiltinType:
        schema = msgspec.json.schema(struct)
        return cls(name, struct, hashlib.sha256(rfc8785.dumps(schema)).digest())

    @property
    def subject(self) -> str:
        return self.name.split("/", 1)[0]

    def from_json(self, data: bytes) -> object:
        try:
            return msgspec.json.decode(data, type=self.struct)
        except msgspec.ValidationError as exc:
            path = _path_of(str(exc)) or "$"
            raise ValidationError(
                f"the body is not a valid {self.name}: {safe_reason(exc)}",
                hint=f"fix the field and try again; 'examples/' has a valid {self.subject}",
                paths=(path,),
            ) from None
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            raise ValidationError(
                "the body is not valid JSON",
                hint="the body file must hold one JSON object",
            ) from None

    def to_body(self, record: object) -> bytes:
        return msgspec.msgpack.encode(record)

    def from_body(self, body: bytes) -> object:
        return _body_decoder(self.struct).decode(body)

    def to_builtins(self, record: object) -> Any:
        """Plain data for display and --json, with defaults shown (unlike on the wire)."""
        return _full_builtins(record)


@lru_cache(maxsize=64)
def _body_decoder(struct: type[msgspec.Struct]) -> msgspec.msgpack.Decoder[Any]:
    # A prebuilt Decoder skips the per-call type lookup of msgspec.msgpack.decode(type=...).
    return msgspec.msgpack.Decoder(struct)


def _full_builtins(value: object) -> Any:
    if isinstance(value, msgspec.Struct):
        return {f: _full_builtins(getattr(value, f)) for f in value.__struct_fields__}
    if isinstance(value, list | tuple):
        return [_full_builtins(v) for v in value]
    return value


def _path_of(message: str) -> str | None:
    match = re.search(r"at `(\$[^`]*)`", message)
    return match.group(1) if match else None


class BuiltinSchemas:
    """The four built-in message types."""

    def __init__(self) -> None:
        types = [
            BuiltinType.of("tf.alert/1", Alert),
            BuiltinType.of("tf.red_flag/1", RedFlag),
            BuiltinType.of("tf.tip_summary/1", TipSummary),
            BuiltinType.of("tf.receipt/1", Receipt),
        ]
        self._types = {t.name: t for t in types}

    def lookup(self, name: str) -> BuiltinType | None:
        return self._types.get(name)

    def names(self) -> list[str]:
        return sorted(self._types)
