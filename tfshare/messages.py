"""The seam between the envelope and the schema registry.

Owns: ``MessageType`` (one schema version, as sealing and opening need it) and ``SchemaBook``
(where types are looked up by name). ``tfshare.registry`` implements both; the envelope code
depends only on these two shapes.
"""

from __future__ import annotations

from typing import Any, Protocol


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
