"""A STIX 2.1 bundle or a MISP event as a draft body for ``tfshare publish``.

Owns: ``draft`` (``tfshare import FILE --as KIND``): which format the file is, the reader
for it (``stix_import``, ``misp_import``), the body (``drafts.shape``), the handling settled
(the source's markings, the analyst's --tlp / --pap, never weaker: ``check_not_weaker``), and
the check against the kind's schema. Refused, with nothing drafted: a file that is neither
format, an invalid bundle, a MISP object of an unknown template, a marking tfshare cannot
carry, a weaker handling, a value the schema refuses. Listed: every field that did not map,
every value filled in, every required field still to give (``publish`` asks for them).

Pure: bytes and a schema document in, a ``Draft`` out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from tfshare.errors import UsageError, ValidationError
from tfshare.interop.common import KINDS, InteropError
from tfshare.interop.drafts import Collected, shape
from tfshare.interop.markings import PAP_ORDER, TLP_ORDER, Handling, check_not_weaker

MAX_LISTED: Final = 20
REQUIRED: Final = "missing required property "


@dataclass
class Draft:
    """A body to publish, and what the analyst must know about it."""

    kind: str
    schema: str
    body: dict[str, Any]
    unmapped: list[str] = field(default_factory=list)  # in the source, not in the body
    filled: list[str] = field(default_factory=list)  # in the body, not from the source
    missing: list[str] = field(default_factory=list)  # required, still to give at publish


def draft(
    data: bytes,
    kind: str,
    document: Mapping[str, Any],
    *,
    tlp: str | None = None,
    pap: str | None = None,
) -> Draft:
    """The draft of ``kind`` (alert, red-flag, tip) from a STIX bundle or MISP event's JSON,
    checked against ``document`` (the kind's schema). ``tlp`` / ``pap``: the analyst's
    choice, refused when weaker than the source's markings."""
    if kind not in KINDS:
        raise InteropError(f"unknown kind {kind!r}", hint=f"use one of {', '.join(KINDS)}")
    for given, order, what in ((tlp, TLP_ORDER, "--tlp"), (pap, PAP_ORDER, "--pap")):
        if given is not None and given not in order:
            raise UsageError(f"{what} {given!r} is not a level", hint=f"use {', '.join(order)}")
    try:
        parsed = json.loads(data)
    except (ValueError, RecursionError):
        raise InteropError(
            "the file is not JSON", hint="give a STIX 2.1 bundle or a MISP event as JSON"
        ) from None
    if isinstance(parsed, dict) and parsed.get("type") == "bundle":
        from tfshare.interop import stix_import  # noqa: PLC0415

        collected = stix_import.collect(parsed, kind)
    elif isinstance(parsed, dict) and ({"Event", "response", "info"} & parsed.keys()):
        from tfshare.interop import misp_import  # noqa: PLC0415

        collected = misp_import.collect(parsed, kind)
    else:
        raise InteropError(
            "the file is neither a STIX bundle nor a MISP event",
            hint='a STIX file starts {"type": "bundle", ...}; a MISP one {"Event": {...}}',
        )
    return _finish(collected, document, tlp, pap)


def _finish(c: Collected, document: Mapping[str, Any], tlp: str | None, pap: str | None) -> Draft:
    body = shape(c)
    missing = _settle_handling(c, body, tlp, pap)
    from tfshare.registry.validate import all_errors  # noqa: PLC0415

    errors = all_errors(dict(document), body)
    problems = [e for e in errors if REQUIRED not in e]
    missing += [_required(e) for e in errors if REQUIRED in e]
    subject = KINDS[c.kind]
    if problems:
        raise ValidationError(
            f"the draft is not a valid {subject}: " + "; ".join(problems[:MAX_LISTED]),
            hint="the source's values do not fit the schema; fix them in the platform, or "
            f"write the body by hand ('tfshare schema show {subject}')",
            paths=tuple(p.split(":", 1)[0] for p in problems),
        )
    schema = str(document.get("$id", subject)).rsplit(":", 1)[-1]
    return Draft(c.kind, schema, body, c.unmapped, c.filled, missing)


def _settle_handling(
    c: Collected, body: dict[str, Any], tlp: str | None, pap: str | None
) -> list[str]:
    """The draft's handling: the source's markings, or the analyst's when stricter; a TLP is
    required (the schema has no default: someone must choose). Returns what is missing."""
    found = c.found
    level = tlp or found.tlp
    if level is None:
        return ["handling.tlp (the source has no TLP marking: give --tlp)"]
    handling = Handling(
        tlp=level,
        pap=pap or found.pap or "AMBER",
        code=found.code or "H1",
        code_note=found.code_note,
        no_forward=found.no_forward or level == "RED",
    )
    check_not_weaker(found, handling, what="this draft")
    body["handling"] = handling.as_body()
    if found.pap is None and pap is None:
        c.filled.append("handling.pap: AMBER (the schema's default; the source has none)")
    if found.code is None:
        c.filled.append("handling.code: H1 (the schema's default; the source has none)")
    if level == "RED" and not found.no_forward:
        c.filled.append("handling.no_forward: true, because TLP:RED allows no further disclosure")
    return []


def _required(error: str) -> str:
    """``$.where: missing required property 'country'`` -> ``where.country``."""
    path, _, rest = error.partition(": ")
    name = rest.removeprefix(REQUIRED).strip("'")
    prefix = path.removeprefix("$").removeprefix(".")
    return f"{prefix}.{name}" if prefix else name
