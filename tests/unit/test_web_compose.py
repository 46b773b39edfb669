"""The compose pages (tfshare.web.compose) against the real aiohttp application, with a
stand-in desk: the shipped schemas, a small roster, and a publish that records what it was
asked (or raises the desk's refusal). tests/web/test_web_compose_browser.py does the same
through a real agent and a browser; these check the page logic quickly."""

from __future__ import annotations

import asyncio
import html as html_lib
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgspec
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tfshare.desk import api
from tfshare.errors import RejectCode, Rejected, TfshareError
from tfshare.lineage import HandlingRefused
from tfshare.web.app import build_app
from tfshare.web.security import LOGINS, SETTINGS

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
SUBJECTS = {"alert": "tf.alert", "red-flag": "tf.red_flag", "tip": "tf.tip_summary"}
PARENT = "0123456789abcdef0123456789abcdef"
NEW_ID = "fedcba9876543210fedcba9876543210"


def _tip_body(**handling: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((SCHEMAS / "tf.tip_summary" / "1.json").read_text())[
        "examples"
    ][0]
    body["handling"] = {**body["handling"], **handling}
    body["summary"] = "<script>alert(1)</script> caller says"
    return body


@dataclass
class StandInDesk:
    agency_id: str = "hotline"
    taskforce: str = "tf-test"
    stored: list[api.Message] = field(default_factory=list)
    published: list[api.PublishRequest] = field(default_factory=list)
    refuse: TfshareError | None = None

    def __post_init__(self) -> None:
        channels = {
            "tips": SimpleNamespace(schemas=["tf.tip_summary"]),
            "alerts": SimpleNamespace(schemas=["tf.alert"]),
        }
        roster = SimpleNamespace(
            channels=channels,
            writers={"tips": {"hotline"}, "alerts": {"police"}},
            readers={"tips": {"police", "ngo", "hotline"}, "alerts": {"hotline"}},
        )
        self.agency = SimpleNamespace(roster=roster)

    def schema_document(self, kind: str) -> api.SchemaDocument:
        subject = SUBJECTS[kind]
        return api.SchemaDocument(
            f"{subject}/1", json.loads((SCHEMAS / subject / "1.json").read_text())
        )

    def message(self, ref: str) -> api.Message:
        for m in self.stored:
            if m.msg_id.startswith(ref.rsplit(":", 1)[-1]):
                return m
        raise Rejected(RejectCode.E_MALFORMED, f"no message {ref} in the inbox")

    async def publish(self, request: api.PublishRequest) -> api.Published:
        if self.refuse is not None:
            raise self.refuse
        self.published.append(request)
        return api.Published(NEW_ID, "tf.x", ["police", "ngo"], False, None, 7, 0)


msgspec_replace = msgspec.structs.replace


def parent_message(body: dict[str, Any]) -> api.Message:
    return api.Message(
        PARENT,
        "ngo",
        "ab12",
        "tips",
        "tf.tip_summary/1",
        "2026-12-06T10:00:00Z",
        "2026-12-06T10:00:01Z",
        None,
        body,
    )


Client = TestClient[web.Request, web.Application]


def run(desk: StandInDesk, scenario: Callable[[Client, str], Awaitable[None]]) -> None:
    async def main() -> None:
        app = build_app(desk)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        app[SETTINGS].allow("127.0.0.1", server.port or 0)
        async with TestClient(server) as client:
            token, _ = app[LOGINS].issue()
            assert (await client.get(f"/login?token={token}", allow_redirects=False)).status == 303
            page = await (await client.get("/compose/tip")).text()
            marker = 'name="csrf" value="'
            at = page.index(marker) + len(marker)
            await scenario(client, page[at : page.index('"', at)])

    asyncio.run(main())


def _origin(client: Client) -> dict[str, str]:
    return {"Origin": f"http://127.0.0.1:{client.port}"}


TIP_FORM = {
    "_channel": "tips",
    "source_type": "hotline",
    "received": "2026-12-06T09:42",
    "summary": "Three workers live above the salon.",
    "handling.tlp": "RED",
    "grading.system": "admiralty-6x6",
    "grading@admiralty-6x6.source": "C",
    "grading@admiralty-6x6.information": "3",
}


def test_a_tip_form_publishes_through_the_desk_and_confirms_the_msg_id() -> None:
    desk = StandInDesk()

    async def scenario(client: Client, csrf: str) -> None:
        page = await client.get("/compose/tip")
        text = await page.text()
        assert 'name="handling.tlp"' in text
        assert '<option value="tips">' in text
        assert '<option value="alerts">' not in text  # hotline may not write there
        response = await client.post(
            "/compose/tip",
            data={**TIP_FORM, "csrf": csrf, "_to": "police"},
            headers=_origin(client),
            allow_redirects=False,
        )
        assert response.status == 303
        assert response.headers["Location"] == f"/compose/done/{NEW_ID}"
        done = await (await client.get(response.headers["Location"])).text()
        assert NEW_ID in done and "stream seq 7" in done
        assert "no_forward: true, because TLP:RED" in done

    run(desk, scenario)
    (sent,) = desk.published
    assert sent.kind == "tip" and sent.channel == "tips" and sent.to == ["police"]
    assert sent.derive is None
    body = json.loads(sent.body or b"")
    assert body["handling"] == {"tlp": "RED", "no_forward": True}
    assert body["received"] == "2026-12-06T09:42:00Z"


def test_without_the_csrf_token_nothing_is_published() -> None:
    desk = StandInDesk()

    async def scenario(client: Client, csrf: str) -> None:
        response = await client.post("/compose/tip", data=TIP_FORM, headers=_origin(client))
        assert response.status == 403

    run(desk, scenario)
    assert desk.published == []


def test_an_invalid_field_is_named_beside_it_the_values_stay_and_a_reload_shows_the_draft() -> None:
    desk = StandInDesk()

    async def scenario(client: Client, csrf: str) -> None:
        form = {**TIP_FORM, "handling.tlp": "purple", "summary": "kept <b>as typed</b>"}
        response = await client.post(
            "/compose/tip", data={**form, "csrf": csrf}, headers=_origin(client)
        )
        assert response.status == 422
        text = await response.text()
        assert 'id="error-handling.tlp"' in text
        assert "handling.tlp: must be one of CLEAR, GREEN, AMBER, AMBER+STRICT, RED" in text
        assert "kept &lt;b&gt;as typed&lt;/b&gt;</textarea>" in text
        assert 'value="2026-12-06T09:42"' in text
        assert "Nothing was published." in text
        again = await (await client.get("/compose/tip")).text()
        assert "kept &lt;b&gt;as typed&lt;/b&gt;</textarea>" in again
        assert '<option value="purple" selected>' in again

    run(desk, scenario)
    assert desk.published == []


def test_a_reshare_starts_from_the_parent_and_the_desks_refusal_is_shown_escaped() -> None:
    desk = StandInDesk(stored=[parent_message(_tip_body(no_forward=True))])
    desk.refuse = HandlingRefused(
        "message 01234567 is marked no_forward <b>", hint="ask its sender <i>"
    )

    async def scenario(client: Client, csrf: str) -> None:
        page = await (await client.get(f"/compose/tip?reshare={PARENT}")).text()
        assert "&lt;script&gt;alert(1)&lt;/script&gt; caller says</textarea>" in page
        assert "<script>alert(1)" not in page
        assert 'id="compose-no-forward"' in page
        assert f'name="_parent" value="{PARENT}"' in page
        start = page.index('<form method="post" action="/compose/tip"')
        form = _form_fields(page[start:])
        response = await client.post("/compose/tip", data=form, headers=_origin(client))
        assert response.status == 422
        text = await response.text()
        assert "is marked no_forward &lt;b&gt;" in text
        assert "ask its sender &lt;i&gt;" in text

    run(desk, scenario)
    assert desk.published == []


def test_a_reply_derives_from_the_parent_without_copying_its_body() -> None:
    desk = StandInDesk(stored=[parent_message(_tip_body())])

    async def scenario(client: Client, csrf: str) -> None:
        page = await (await client.get(f"/compose/tip?reply={PARENT}")).text()
        assert "caller says</textarea>" not in page
        form = {**TIP_FORM, "_channel": "", "csrf": csrf, "_relation": "reply", "_parent": PARENT}
        response = await client.post(
            "/compose/tip", data=form, headers=_origin(client), allow_redirects=False
        )
        assert response.status == 303

    run(desk, scenario)
    (sent,) = desk.published
    assert sent.derive == ("reply", PARENT)
    assert sent.channel is None  # the desk uses the parent's channel


def test_a_new_message_without_a_channel_is_refused_naming_the_channel() -> None:
    desk = StandInDesk()

    async def scenario(client: Client, csrf: str) -> None:
        form = {**TIP_FORM, "_channel": "", "csrf": csrf}
        response = await client.post("/compose/tip", data=form, headers=_origin(client))
        assert response.status == 422
        assert "channel: choose the channel to publish on" in await response.text()

    run(desk, scenario)
    assert desk.published == []


def test_an_unknown_kind_is_404_and_two_actions_at_once_are_400() -> None:
    async def scenario(client: Client, csrf: str) -> None:
        assert (await client.get("/compose/receipt")).status == 404
        both = await client.get(f"/compose/tip?reply={PARENT}&reshare={PARENT}")
        assert both.status == 400

    run(StandInDesk(), scenario)


def _form_fields(html: str) -> dict[str, str]:
    """The values a browser would send for the first form in ``html`` (inputs, selected
    options, textareas), enough for these pages."""
    form = html[: html.index("</form>")]
    out: dict[str, str] = {}
    for m in re.finditer(r'<input type="(?:hidden|text|datetime-local)"[^>]*>', form):
        name = re.search(r'name="([^"]*)"', m.group(0))
        value = re.search(r'value="([^"]*)"', m.group(0))
        if name:
            out[html_lib.unescape(name.group(1))] = html_lib.unescape(
                value.group(1) if value else ""
            )
    for m in re.finditer(r'<textarea name="([^"]*)"[^>]*>(.*?)</textarea>', form, re.S):
        out[html_lib.unescape(m.group(1))] = html_lib.unescape(m.group(2))
    for m in re.finditer(r'<select name="([^"]*)".*?</select>', form, re.S):
        chosen = re.search(r'<option value="([^"]*)" selected>', m.group(0))
        out[html_lib.unescape(m.group(1))] = html_lib.unescape(chosen.group(1) if chosen else "")
    return out


def test_an_amendment_of_an_own_message_says_its_body_is_not_kept_and_derives_from_it() -> None:
    desk = StandInDesk()

    async def scenario(client: Client, csrf: str) -> None:
        page = await (await client.get(f"/compose/tip?amend={PARENT}")).text()
        assert "this agency keeps no copy of the bodies it sent" in page
        assert 'name="_relation" value="amend"' in page
        form = {**TIP_FORM, "csrf": csrf, "_relation": "amend", "_parent": PARENT}
        response = await client.post(
            "/compose/tip", data=form, headers=_origin(client), allow_redirects=False
        )
        assert response.status == 303

    run(desk, scenario)
    (sent,) = desk.published
    assert sent.derive == ("amend", PARENT)
    assert sent.channel == "tips"


def test_each_kinds_example_survives_the_rendered_page_and_back() -> None:
    """The schema's example as a parent, shown in the page's HTML and posted back as a browser
    would send it, is published unchanged (the template shows every value the form reads)."""
    for kind, subject in SUBJECTS.items():
        document = json.loads((SCHEMAS / subject / "1.json").read_text())
        example = document["examples"][0]
        parent = parent_message(example)
        desk = StandInDesk(stored=[msgspec_replace(parent, schema=f"{subject}/1")])

        async def scenario(client: Client, csrf: str, kind: str = kind) -> None:
            response = await client.get(f"/compose/{kind}?amend={PARENT}")
            assert response.status == 200
            page = await response.text()
            start = page.index(f'<form method="post" action="/compose/{kind}"')
            posted = await client.post(
                f"/compose/{kind}",
                data=_form_fields(page[start:]),
                headers=_origin(client),
                allow_redirects=False,
            )
            assert posted.status == 303, await posted.text()

        run(desk, scenario)
        (sent,) = desk.published
        assert json.loads(sent.body or b"") == example, kind
