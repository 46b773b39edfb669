"""The schemas a process knows: shipped ones and verified registrations, by name and fingerprint.

Owns: ``Registry`` (the ``SchemaBook`` that sealing and opening use), each subject's history
and compatibility mode, and ``shipped()``, the four documents that come with tfshare.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from importlib import resources
from typing import Final

from tfshare.registry.compat import DEFAULT_MODE, Mode
from tfshare.registry.schema import Schema

SHIPPED_PACKAGE: Final = "tfshare.schemas"


class Registry:
    """Schemas by name (``tf.alert/1``) and by fingerprint, with each subject's mode."""

    def __init__(self, schemas: Iterable[Schema] = (), modes: dict[str, Mode] | None = None):
        self._by_name: dict[str, Schema] = {}
        self._by_fp: dict[bytes, Schema] = {}
        self.modes: dict[str, Mode] = dict(modes or {})
        for schema in schemas:
            self._add(schema)

    def _add(self, schema: Schema) -> None:
        self._by_name[schema.name] = schema
        self._by_fp[schema.fingerprint] = schema

    def with_schema(self, schema: Schema, mode: Mode | None = None) -> Registry:
        """A new registry that also knows ``schema``."""
        modes = dict(self.modes)
        if mode is not None:
            modes[schema.subject] = mode
        return Registry([*self._by_name.values(), schema], modes)

    def lookup(self, name: str) -> Schema | None:
        return self._by_name.get(name)

    def by_fingerprint(self, fp: bytes) -> Schema | None:
        return self._by_fp.get(fp)

    def names(self) -> list[str]:
        return sorted(self._by_name, key=lambda n: (n.split("/")[0], int(n.split("/")[1])))

    def subjects(self) -> list[str]:
        return sorted({s.subject for s in self._by_name.values()})

    def history(self, subject: str) -> list[Schema]:
        """Every version of ``subject``, oldest first."""
        return sorted(
            (s for s in self._by_name.values() if s.subject == subject), key=lambda s: s.version
        )

    def latest(self, subject: str) -> Schema | None:
        history = self.history(subject)
        return history[-1] if history else None

    def mode(self, subject: str) -> Mode:
        return self.modes.get(subject, DEFAULT_MODE)


@lru_cache(maxsize=1)
def shipped() -> Registry:
    """The schemas shipped with tfshare (``schemas/`` in the source tree)."""
    root = resources.files(SHIPPED_PACKAGE)
    schemas = []
    for subject_dir in sorted(root.iterdir(), key=lambda p: p.name):
        if not subject_dir.is_dir() or subject_dir.name.startswith(("_", ".")):
            continue
        for file in sorted(subject_dir.iterdir(), key=lambda p: p.name):
            if file.name.endswith(".json"):
                name = f"{subject_dir.name}/{file.name.removesuffix('.json')}"
                schemas.append(Schema.from_bytes(file.read_bytes(), name=name))
    return Registry(schemas)
