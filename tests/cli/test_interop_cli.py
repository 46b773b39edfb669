"""``tfshare export`` and ``tfshare import`` (issue 16) on a real inbox: police's key file,
roster, anchor and state database, three messages sealed by other agencies and received into
it by the real receiver (a red flag, and an alert and a tip marked no_forward / H2). The
commands run through the CLI's entry (``tfshare.cli.app.run``: its error lines and exit
codes), registered here when cli/app.py does not list them yet."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pymisp import MISPEvent
from stix2validator import ValidationOptions, validate_instance
from tfkit import SCHEMAS, TaskForce, build_taskforce, example_dict

from tfshare.encoding import encode
from tfshare.keyfile import KDF_PROFILES, seal_keyfile
from tfshare.names import channel_subject
from tfshare.protocol import Delivered, Receiver
from tfshare.seal import ReceivePolicy
from tfshare.workflows.exchange import Credentials
from tfshare.workflows.live import Agency

# cli/ installs as tfshare.cli (pyproject); mypy checks it from the source tree as "cli".
from tfshare.cli import app, interop_cmd  # type: ignore[import-not-found,unused-ignore]  # isort: skip

os.environ["TFSHARE_TEST"] = "1"  # test keys at the insecure test cost: no warning


@dataclass
class Inbox:
    flags: list[str]
    ids: dict[str, str]  # red-flag, alert, tip -> msg_id hex
    root: Path


def _seal(
    tf: TaskForce,
    sender: str,
    schema: str,
    channel: str,
    body: dict[str, object],
    ts: int,
    seed: str,
) -> bytes:
    message_type = SCHEMAS.lookup(schema)
    assert message_type is not None
    record = message_type.from_json(json.dumps(body).encode())
    sealed = tf.seal(
        sender,
        channel=channel,
        schema=schema,
        body=message_type.to_body(record),
        now_ms=ts,
        rng_seed=seed,
    )
    return sealed.data


@pytest.fixture(scope="module")
def inbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Inbox]:
    tf = build_taskforce()
    root = tmp_path_factory.mktemp("police")
    secret = os.urandom(8).hex().encode()
    key = root / "police.key"
    key.write_bytes(
        seal_keyfile(tf.ids["police"], secret, limits=KDF_PROFILES["insecure-test"], rng=os.urandom)
    )
    (root / "pass").write_bytes(secret + b"\n")
    (root / "tf.roster").write_bytes(tf.roster_bytes)
    (root / "tf.anchor").write_bytes(encode(tf.anchor))
    agency = Agency.load(
        Credentials(key, secret),
        roster_path=root / "tf.roster",
        anchor_path=root / "tf.anchor",
        state_dir=root / "state",
        registry_dir=root / "registry",
    )
    now = time.time_ns() // 1_000_000
    receiver = Receiver(
        identity=tf.ids["police"],
        roster=agency.roster,
        replay=agency.store.replay(keep_inbox=True),
        schemas=agency.registry,
        clock=lambda: now,
        policy=ReceivePolicy(),
    )
    ids = {}
    sent = [
        ("red-flag", "labour", "tf.red_flag/1", "alerts", now - 50_000),
        ("alert", "labour", "tf.alert/1", "alerts", now - 40_000),
        ("tip", "ngo", "tf.tip_summary/1", "tips", now - 30_000),
    ]
    hostile = example_dict("tf.red_flag/1")
    hostile["context"] = "normal \u202eesrever\u202c then \x1b[2J cleared"
    sent.append(("hostile", "labour", "tf.red_flag/1", "alerts", now - 20_000))
    for kind, sender, schema, channel, ts in sent:
        body = hostile if kind == "hostile" else example_dict(schema)
        data = _seal(tf, sender, schema, channel, body, ts, f"interop-{kind}")
        delivered = receiver.receive(data, channel_subject("nl-north", channel, sender))
        assert isinstance(delivered, Delivered), delivered
        ids[kind] = delivered.message.msg_id.hex()
    flags = [
        "--key", str(key), "--roster", str(root / "tf.roster"), "--anchor", str(root / "tf.anchor"),
        "--state", str(root / "state"), "--registry", str(root / "registry"),
        "--passphrase-file", str(root / "pass"),
    ]  # fmt: skip
    yield Inbox(flags, ids, root)


@pytest.fixture(autouse=True)
def _registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """The commands as cli/app.py registers them (added here until it does)."""
    if "export" not in app.SUBCOMMANDS:
        monkeypatch.setitem(app.SUBCOMMANDS, "export", interop_cmd.export_cmd)
    if "import" not in app.SUBCOMMANDS:
        monkeypatch.setitem(app.SUBCOMMANDS, "import", interop_cmd.import_cmd)


def tfshare(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = app.run(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_export_of_one_received_red_flag_is_a_valid_bundle_pointing_back_to_it(
    inbox: Inbox, capsys: pytest.CaptureFixture[str]
) -> None:
    msg_id = inbox.ids["red-flag"]
    code, out, err = tfshare(capsys, "export", msg_id[:10], "--format", "stix", *inbox.flags)
    assert code == 0, err
    bundle = json.loads(out)
    assert validate_instance(bundle, ValidationOptions(version="2.1")).errors == []
    report = next(o for o in bundle["objects"] if o["type"] == "report")
    assert report["external_references"][0]["external_id"] == msg_id
    assert report["name"] == "Red flag: account"
    labour = next(o for o in bundle["objects"] if o.get("name") == "labour")
    assert labour["external_references"][0]["source_name"] == "tfshare-key-fingerprint"


def test_export_refuses_a_no_forward_message_without_the_flag(
    inbox: Inbox, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = tfshare(capsys, "export", "--since", "2000-01-01", *inbox.flags)
    assert code == 3
    assert out == ""
    lines = err.splitlines()
    assert lines[0].startswith("tfshare: error: E_NO_FORWARD: message ")
    assert lines[1].startswith("tfshare: hint: ") and "--allow-restricted" in lines[1]


def test_export_with_the_flag_writes_misp_events_carrying_the_markings(
    inbox: Inbox, capsys: pytest.CaptureFixture[str]
) -> None:
    out_file = inbox.root / "events.json"
    code, out, err = tfshare(
        capsys, "export", "--since", "2000-01-01", "--format", "misp", "--allow-restricted",
        "--out", str(out_file), *inbox.flags,
    )  # fmt: skip
    assert code == 0, err
    assert out == ""
    assert stat.S_IMODE(out_file.stat().st_mode) == 0o600  # decrypted content
    listed = json.loads(out_file.read_text())["response"]
    events = []
    for item in listed:
        event = MISPEvent()
        event.load(item)
        events.append(event)
    assert [e.info for e in events] == [
        "Red flag: account",
        example_dict("tf.alert/1")["title"],
        "Tip summary (hotline)",
        "Red flag: account",
    ]
    tip_tags = {t.name for t in events[2].tags}
    assert {"tlp:red", "tfshare:no-forward", 'tfshare:handling-code="H2"'} <= tip_tags
    assert int(events[2].distribution) == 0


def test_export_since_a_date_on_one_channel(
    inbox: Inbox, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = tfshare(
        capsys,
        "export",
        "--since",
        "2000-01-01",
        "--channel",
        "tips",
        "--allow-restricted",
        *inbox.flags,
    )
    assert code == 0, err
    reports = [o for o in json.loads(out)["objects"] if o["type"] == "report"]
    assert [r["external_references"][0]["external_id"] for r in reports] == [inbox.ids["tip"]]


@pytest.mark.parametrize(
    "args",
    [
        ["export"],  # neither ids nor --since
        ["export", "00112233aabb", "--since", "2026-01-01"],
        ["export", "--since", "yesterday"],
        ["export", "--since", "2026-01-01", "--format", "csv"],
    ],
)
def test_export_usage_errors_exit_2_before_any_passphrase(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = tfshare(
        capsys, *args, "--key", "/nonexistent.key", "--roster", "/x", "--anchor", "/y"
    )
    assert code == 2, err
    assert err.startswith("tfshare: error: ")


def test_import_writes_a_draft_publish_accepts_and_lists_what_did_not_map(
    inbox: Inbox, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = tfshare(capsys, "export", inbox.ids["red-flag"], *inbox.flags)
    assert code == 0, err
    bundle = json.loads(out)
    bundle["objects"].append(
        {
            "type": "malware",
            "spec_version": "2.1",
            "id": "malware--31b940d4-6f7f-459a-80ea-9c1f17b5891b",
            "created": "2026-11-01T00:00:00.000Z",
            "modified": "2026-11-01T00:00:00.000Z",
            "name": "x",
            "is_family": False,
        }
    )
    next(o for o in bundle["objects"] if o["type"] == "report")["object_refs"].append(
        "malware--31b940d4-6f7f-459a-80ea-9c1f17b5891b"
    )
    source = tmp_path / "bundle.json"
    source.write_text(json.dumps(bundle))
    draft = tmp_path / "draft.json"
    code, out, err = tfshare(capsys, "import", str(source), "--as", "red-flag", "--out", str(draft))
    assert code == 0, err
    assert "tfshare: not imported: malware malware--31b940d4" in err
    assert "publish red-flag --body-file" in err
    schema = SCHEMAS.lookup("tf.red_flag/1")
    assert schema is not None
    schema.from_json(draft.read_bytes())  # what publish checks
    assert json.loads(draft.read_text())["entity"] == example_dict("tf.red_flag/1")["entity"]


def test_import_refuses_a_weaker_tlp_and_writes_nothing(
    inbox: Inbox, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, _ = tfshare(capsys, "export", inbox.ids["red-flag"], *inbox.flags)  # AMBER
    source = tmp_path / "bundle.json"
    source.write_text(out)
    draft = tmp_path / "draft.json"
    code, out, err = tfshare(
        capsys, "import", str(source), "--as", "red-flag", "--tlp", "CLEAR", "--out", str(draft)
    )
    assert code == 3
    assert (
        "tfshare: error: E_WEAKENS_HANDLING: this draft would weaken the handling: TLP:AMBER" in err
    )
    assert not draft.exists()


@pytest.mark.parametrize(
    ("content", "code", "says"),
    [
        ('{"type": "bundle", "id": "bundle--nope", "objects": []}', 5, "not valid STIX 2.1"),
        (
            '{"Event": {"info": "x", "Object": [{"name": "x-secret", "Attribute": []}]}}',
            5,
            "unknown templates: x-secret",
        ),
        ("[1, 2]", 5, "neither a STIX bundle nor a MISP event"),
        ("not json", 5, "not JSON"),
    ],
)
def test_import_refuses_bad_input_with_a_clear_error_and_writes_nothing(
    content: str, code: int, says: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    source = tmp_path / "in.json"
    source.write_text(content)
    draft = tmp_path / "draft.json"
    got, out, err = tfshare(capsys, "import", str(source), "--as", "alert", "--out", str(draft))
    assert got == code
    assert err.startswith("tfshare: error: ") and says in err.splitlines()[0]
    assert not draft.exists() and out == ""


def test_the_interop_command_module_loads_no_stix_or_misp_library() -> None:
    probe = (
        "import sys; import tfshare.cli.interop_cmd; "
        "print([m for m in sys.modules if m.split('.')[0] in "
        "('stix2', 'stix2validator', 'pymisp', 'tfshare') and "
        "(m.startswith(('stix2', 'pymisp')) or m.startswith('tfshare.interop'))])"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    assert loaded == "[]"


def test_export_to_a_terminal_escapes_what_other_agencies_wrote(
    inbox: Inbox, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = tfshare(capsys, "export", inbox.ids["hostile"], *inbox.flags)
    assert code == 0, err
    assert "\u202e" not in out and "\x1b" not in out  # neither reaches the terminal raw
    report = next(o for o in json.loads(out)["objects"] if o["type"] == "report")
    assert report["description"].startswith("normal \u202eesrever\u202c then \x1b[2J cleared")


def test_import_from_stdin_refuses_more_than_it_may_read(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(interop_cmd, "MAX_IMPORT", 64)
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"{" + b" " * 100 + b"}")))
    code, out, err = tfshare(capsys, "import", "-", "--as", "tip")
    assert code == 2
    assert "larger than 64 bytes" in err and out == ""
