"""Feeding a MISP instance: one event per delivered message, through PyMISP's REST client.

Owns: ``feed``, which hands each message's event to a PyMISP-like client (``add_event``);
``received_of_bundle``, which reads a message back from a bundle of ``listen --format stix``
(the report's tfshare extension carries the whole origin); and the pipe
``tfshare listen --format stix | python -m tfshare.interop.misp_feed --url URL``, whose API
key comes from ``--key-file`` or ``TFSHARE_MISP_KEY`` (never the command line, which other
local users can read). tfshare stores neither. Tested against PyMISP's objects, not a live MISP.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from tfshare.interop.common import (
    HandlingRefused,
    InteropError,
    LineageRef,
    Received,
    parse_time,
)
from tfshare.interop.markings import (
    EXTENSION_ID,
    FoundHandling,
    check_not_weaker,
    handling_of,
    read_stix_marking,
    restrictions,
)
from tfshare.interop.misp_export import event

KEY_VARIABLE = "TFSHARE_MISP_KEY"


class MispClient(Protocol):
    """What ``feed`` needs of ``pymisp.PyMISP``."""

    def add_event(self, event: Any, pythonify: bool = False) -> Any: ...


@dataclass(frozen=True)
class Fed:
    """One message's outcome: added (with MISP's event uuid), skipped, or refused by MISP."""

    msg_id: str
    outcome: str  # "added", "skipped", "failed"
    detail: str


def feed(
    client: MispClient, messages: Iterable[Received], *, allow_restricted: bool = False
) -> list[Fed]:
    """Add each message to MISP as an event. A no_forward / H2 message is skipped unless
    ``allow_restricted`` (then its MISP distribution is "your organisation only"); MISP's
    refusal of one event (``{"errors": ...}``) is reported and the rest go on."""
    return [feed_one(client, m, allow_restricted=allow_restricted) for m in messages]


def feed_one(client: MispClient, message: Received, *, allow_restricted: bool = False) -> Fed:
    found = restrictions(handling_of(message.record))
    if found and not allow_restricted:
        return Fed(message.msg_id, "skipped", found[0][0])
    answer = client.add_event(event(message, allow_restricted=True), pythonify=True)
    if isinstance(answer, Mapping) and "errors" in answer:
        return Fed(message.msg_id, "failed", str(answer["errors"])[:200])
    return Fed(message.msg_id, "added", str(getattr(answer, "uuid", "")))


def received_of_bundle(bundle: Mapping[str, Any]) -> Received:
    """The message a tfshare bundle was made of (its report's ``tfshare_message``): one per
    bundle (a line of ``listen --format stix``), its body's handling no weaker than the
    markings the bundle carries on its report."""
    objects = [o for o in bundle.get("objects") or [] if isinstance(o, Mapping)]
    reports = [o for o in objects if o.get("type") == "report"]
    if len(reports) > 1:
        raise InteropError(
            f"the bundle holds {len(reports)} reports; the feed takes one message per line",
            hint="feed the lines of 'tfshare listen --format stix'",
        )
    for obj in objects:
        if not isinstance(obj, Mapping) or obj.get("type") != "report":
            continue
        extensions = obj.get("extensions")
        own = extensions.get(EXTENSION_ID) if isinstance(extensions, Mapping) else None
        origin = own.get("tfshare_message") if isinstance(own, Mapping) else None
        if not isinstance(origin, Mapping) or not isinstance(origin.get("body"), Mapping):
            continue
        sent = parse_time(str(origin.get("sent")))
        if sent is None:
            break
        _markings_agree(objects, obj, origin["body"])
        return Received(
            sender=str(origin.get("sender")),
            fingerprint=str(origin.get("fingerprint")),
            msg_id=str(origin.get("msg_id")),
            env_hash=str(origin.get("env_hash")),
            ts_ms=int(sent.timestamp() * 1000),
            channel=str(origin.get("channel")),
            schema=str(origin.get("schema")),
            record=dict(origin["body"]),
            refs=tuple(
                LineageRef(str(r.get("relation")), str(r.get("msg_id")), str(r.get("env_hash")))
                for r in origin.get("refs") or []
                if isinstance(r, Mapping)
            ),
            warning=origin.get("warning") if isinstance(origin.get("warning"), str) else None,
        )
    raise InteropError(
        "the bundle holds no tfshare message",
        hint="feed the lines of 'tfshare listen --format stix'",
    )


def _markings_agree(
    objects: list[Mapping[str, Any]], report: Mapping[str, Any], body: Mapping[str, Any]
) -> None:
    """Refuse a bundle whose report is marked stricter than its message's body says (an
    edited line): the feed's refusals and MISP distribution come from the body."""
    by_id = {str(o.get("id")): o for o in objects}
    found = FoundHandling()
    for ref in report.get("object_marking_refs") or []:
        read_stix_marking(found, by_id.get(str(ref), {"id": ref}))
    try:
        check_not_weaker(found, handling_of(body), what="its tfshare message")
    except HandlingRefused as exc:
        raise InteropError(
            f"the bundle's markings are stricter than {exc.message}",
            hint="feed the lines of 'tfshare listen --format stix' as they are",
        ) from None


def feed_lines(
    client: MispClient, lines: Iterable[str], *, allow_restricted: bool = False
) -> Iterable[Fed]:
    """Each NDJSON line of ``listen --format stix`` into MISP, as it comes."""
    for line in lines:
        if not line.strip():
            continue
        try:
            bundle = json.loads(line)
        except (ValueError, RecursionError):
            raise InteropError(
                "a line is not JSON", hint="feed the lines of 'tfshare listen --format stix'"
            ) from None
        if not isinstance(bundle, Mapping):
            raise InteropError("a line is not a bundle", hint="feed 'listen --format stix'")
        yield feed_one(client, received_of_bundle(bundle), allow_restricted=allow_restricted)


def main(argv: list[str] | None = None) -> int:
    """``python -m tfshare.interop.misp_feed --url URL``: stdin's bundles into MISP."""
    parser = argparse.ArgumentParser(prog="python -m tfshare.interop.misp_feed")
    parser.add_argument("--url", required=True, help="the agency's MISP, https://misp.example")
    parser.add_argument("--ca", help="CA bundle for the MISP's certificate (default: system)")
    parser.add_argument("--key-file", help=f"a file holding the API key (else ${KEY_VARIABLE})")
    parser.add_argument("--allow-restricted", action="store_true")
    args = parser.parse_args(argv)
    key = os.environ.get(KEY_VARIABLE, "")
    if args.key_file:
        try:
            with open(args.key_file, encoding="utf-8") as handle:
                key = handle.readline().strip()
        except (OSError, UnicodeDecodeError) as exc:
            from tfshare.visible import escape  # noqa: PLC0415

            why = getattr(exc, "strerror", None) or type(exc).__name__
            print(
                f"tfshare: error: cannot read the MISP API key file {escape(args.key_file)}: {why}",
                file=sys.stderr,
            )
            print(
                "tfshare: hint: give --key-file a readable file with the key on its first line",
                file=sys.stderr,
            )
            return 6
    if not key:
        print(f"tfshare: error: no MISP API key (--key-file or {KEY_VARIABLE})", file=sys.stderr)
        print("tfshare: hint: MISP shows keys under Administration > Auth keys", file=sys.stderr)
        return 6
    from pymisp import PyMISP  # noqa: PLC0415

    try:
        client = PyMISP(args.url, key, ssl=args.ca or True)  # it asks the MISP who we are
        for fed in feed_lines(client, sys.stdin, allow_restricted=args.allow_restricted):
            print(json.dumps({"msg_id": fed.msg_id, "outcome": fed.outcome, "detail": fed.detail}))
            sys.stdout.flush()
    except InteropError as exc:
        print(f"tfshare: error: {exc.message}", file=sys.stderr)
        print(f"tfshare: hint: {exc.hint}", file=sys.stderr)
        return 5
    except Exception as exc:  # requests' and PyMISP's errors: the MISP is unreachable or refused
        # The type only: a message could quote the URL with its credentials.
        print(
            f"tfshare: error: the MISP at the given URL failed ({type(exc).__name__})",
            file=sys.stderr,
        )
        print(
            "tfshare: hint: check --url, --ca and the API key; lines already fed stay in MISP",
            file=sys.stderr,
        )
        return 4
    return 0


if __name__ == "__main__":
    sys.exit(main())
