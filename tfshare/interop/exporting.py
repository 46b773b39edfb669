"""The text ``tfshare export`` writes, from messages already opened.

Owns: ``render`` (a STIX bundle, checked by stix2-validator before it is handed out, or MISP
events in MISP's JSON), and ``since_filter`` (which messages ``--since`` / ``--channel`` take).

Pure: messages in, text out.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Final

from tfshare.errors import TfshareError
from tfshare.interop.common import Received

FORMATS: Final = ("stix", "misp")


def render(messages: Sequence[Received], fmt: str, *, allow_restricted: bool) -> str:
    """The export of ``messages`` in ``fmt`` (stix: one bundle; misp: ``{"response":
    [{"Event": ...}, ...]}``, MISP's own list form, one event per message)."""
    if fmt == "stix":
        from tfshare.interop import stix_export  # noqa: PLC0415
        from tfshare.interop.stix_import import validate_bundle  # noqa: PLC0415

        bundle = stix_export.bundle(messages, allow_restricted=allow_restricted)
        errors = validate_bundle(bundle)
        if errors:  # a mapping bug: never hand out a bundle platforms would reject
            raise TfshareError(
                f"the STIX bundle failed validation: {'; '.join(errors[:3])}",
                hint="this is a bug in tfshare's STIX mapping: report it with the message's schema",
            )
        return json.dumps(bundle, ensure_ascii=False, indent=2) + "\n"
    from tfshare.interop import misp_export  # noqa: PLC0415

    events = misp_export.events(messages, allow_restricted=allow_restricted)
    listed = [misp_export.event_json(e) for e in events]
    return json.dumps({"response": listed}, ensure_ascii=False, indent=2) + "\n"


def parse_since(text: str) -> int:
    """``--since``: a date (UTC midnight) or an RFC 3339 date-time, as ms since the epoch."""
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        from tfshare.errors import UsageError  # noqa: PLC0415

        raise UsageError(
            f"--since {text!r} is not a date",
            hint="give a date (2026-11-21) or a date-time (2026-11-21T18:00:00Z)",
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1000)


def since_filter(ts_ms: int, channel: str, *, since_ms: int, only_channel: str | None) -> bool:
    return ts_ms >= since_ms and (only_channel is None or channel == only_channel)
