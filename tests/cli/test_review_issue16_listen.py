"""Review of issue 16: ``tfshare listen --format stix`` end to end, the console script as a
subprocess against a real inbox (police's key file, roster, anchor and state database, filled
by the real receiver with messages other agencies sealed), no agent running: listen reads the
inbox directly. Each line must be one STIX 2.1 bundle stix2-validator accepts, a no_forward /
H2 message left out (named on stderr) unless --allow-restricted, with its markings on every
object when it is let through, and nothing another agency wrote able to act on a terminal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from stix2validator import ValidationOptions, validate_instance
from tfkit import SCHEMAS, TaskForce, build_taskforce, example_dict

from tfshare.encoding import encode
from tfshare.keyfile import KDF_PROFILES, seal_keyfile
from tfshare.names import channel_subject
from tfshare.protocol import Delivered, Receiver
from tfshare.seal import ReceivePolicy
from tfshare.workflows.exchange import Credentials
from tfshare.workflows.live import Agency

TFSHARE = Path(sys.executable).parent / "tfshare"
HOSTILE = "normal \u202eesrever\u202c then \x1b[2J cleared"


@dataclass
class Inbox:
    flags: list[str]
    ids: dict[str, str]  # kind -> msg_id hex
    root: Path


def _seal(tf: TaskForce, sender: str, schema: str, channel: str, body: Any, ts: int) -> bytes:
    message_type = SCHEMAS.lookup(schema)
    assert message_type is not None
    record = message_type.from_json(json.dumps(body).encode())
    return tf.seal(
        sender,
        channel=channel,
        schema=schema,
        body=message_type.to_body(record),
        now_ms=ts,
        rng_seed=f"review16-{ts}",
    ).data


@pytest.fixture(scope="module")
def inbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Inbox]:
    tf = build_taskforce()
    root = tmp_path_factory.mktemp("police-listen")
    secret = os.urandom(8).hex().encode()
    key = root / "police.key"
    key.write_bytes(
        seal_keyfile(tf.ids["police"], secret, limits=KDF_PROFILES["insecure-test"], rng=os.urandom)
    )
    (root / "pass").write_bytes(secret + b"\n")
    (root / "tf.roster").write_bytes(tf.roster_bytes)
    (root / "tf.anchor").write_bytes(encode(tf.anchor))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TFSHARE_TEST", "1")  # test keys at the insecure test cost: no warning
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
    hostile = example_dict("tf.red_flag/1")
    hostile["context"] = HOSTILE
    sent = [  # oldest first, as listen --all gives them
        ("red-flag", "labour", "tf.red_flag/1", "alerts", example_dict("tf.red_flag/1")),
        ("alert", "labour", "tf.alert/1", "alerts", example_dict("tf.alert/1")),  # no_forward H2
        ("tip", "ngo", "tf.tip_summary/1", "tips", example_dict("tf.tip_summary/1")),  # RED H2
        ("hostile", "labour", "tf.red_flag/1", "alerts", hostile),
    ]
    ids = {}
    for offset, (kind, sender, schema, channel, body) in enumerate(sent):
        data = _seal(tf, sender, schema, channel, body, now - 50_000 + offset * 10_000)
        delivered = receiver.receive(data, channel_subject("nl-north", channel, sender))
        assert isinstance(delivered, Delivered), delivered
        ids[kind] = delivered.message.msg_id.hex()
    flags = [
        "--key", str(key), "--roster", str(root / "tf.roster"), "--anchor", str(root / "tf.anchor"),
        "--state", str(root / "state"), "--registry", str(root / "registry"),
        "--passphrase-file", str(root / "pass"),
    ]  # fmt: skip
    yield Inbox(flags, ids, root)


def listen(inbox: Inbox, *args: str) -> subprocess.CompletedProcess[bytes]:
    home = inbox.root / "home"
    home.mkdir(exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(home),
        "TFSHARE_HOME": str(home),
        "TFSHARE_TEST": "1",
        "LC_ALL": "C.UTF-8",
        "PYTHONIOENCODING": "utf-8",
    }
    return subprocess.run(
        [str(TFSHARE), "listen", "--format", "stix", "--all", *args, *inbox.flags],
        env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=120, check=False,
    )  # fmt: skip


def bundles(stdout: bytes) -> list[dict[str, Any]]:
    lines = stdout.decode("utf-8").splitlines()
    return [json.loads(line) for line in lines]


def report_of(bundle: dict[str, Any]) -> dict[str, Any]:
    reports: list[dict[str, Any]] = [o for o in bundle["objects"] if o["type"] == "report"]
    assert len(reports) == 1
    return reports[0]


def test_listen_stix_feeds_valid_bundles_and_leaves_restricted_messages_out(inbox: Inbox) -> None:
    result = listen(inbox, "--count", "2")
    stderr = result.stderr.decode()
    assert result.returncode == 0, stderr
    assert "Traceback" not in stderr
    fed = bundles(result.stdout)
    assert len(fed) == 2
    for bundle in fed:
        assert bundle["type"] == "bundle"
        errors = validate_instance(bundle, ValidationOptions(version="2.1")).errors
        assert [str(e) for e in errors] == []
    fed_ids = [report_of(b)["external_references"][0]["external_id"] for b in fed]
    assert fed_ids == [inbox.ids["red-flag"], inbox.ids["hostile"]]
    # the no_forward alert and the H2 tip are named, not fed
    assert f"{inbox.ids['alert']} from labour left out of the feed" in stderr
    assert f"{inbox.ids['tip']} from ngo left out of the feed" in stderr
    assert inbox.ids["alert"].encode() not in result.stdout
    assert inbox.ids["tip"].encode() not in result.stdout


def test_listen_stix_escapes_what_another_agency_wrote_and_keeps_its_value(inbox: Inbox) -> None:
    result = listen(inbox, "--count", "2")
    assert result.returncode == 0, result.stderr.decode()
    assert b"\x1b" not in result.stdout
    assert "\u202e".encode() not in result.stdout
    hostile = bundles(result.stdout)[1]
    assert report_of(hostile)["description"].startswith(HOSTILE)


def test_listen_stix_with_allow_restricted_carries_the_markings_on_every_object(
    inbox: Inbox,
) -> None:
    result = listen(inbox, "--count", "4", "--allow-restricted")
    assert result.returncode == 0, result.stderr.decode()
    fed = bundles(result.stdout)
    assert len(fed) == 4
    by_id = {report_of(b)["external_references"][0]["external_id"]: b for b in fed}
    for kind, tlp in (("alert", "TLP:AMBER+STRICT"), ("tip", "TLP:RED")):
        bundle = by_id[inbox.ids[kind]]
        assert validate_instance(bundle, ValidationOptions(version="2.1")).errors == []
        names = {o["id"]: o["name"] for o in bundle["objects"] if o["type"] == "marking-definition"}
        made_of_message = [
            o
            for o in bundle["objects"]
            if o["type"] not in ("marking-definition", "extension-definition", "identity")
        ]
        assert made_of_message
        for obj in made_of_message:
            marked = {names[ref] for ref in obj.get("object_marking_refs", [])}
            assert {tlp, "Handling code H2", "tfshare no-forward: do not pass on"} <= marked, obj


def test_listen_stix_rejects_an_unknown_format_as_a_usage_error(inbox: Inbox) -> None:
    home = inbox.root / "home"
    home.mkdir(exist_ok=True)
    result = subprocess.run(
        [str(TFSHARE), "listen", "--format", "stx", *inbox.flags],
        env={"PATH": os.environ.get("PATH", os.defpath), "HOME": str(home),
             "TFSHARE_HOME": str(home), "TFSHARE_TEST": "1"},
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("tfshare: error: unknown format 'stx'")
    assert result.stdout == ""


def tfshare(inbox: Inbox, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
    home = inbox.root / "home"
    home.mkdir(exist_ok=True)
    return subprocess.run(
        [str(TFSHARE), *args],
        env={"PATH": os.environ.get("PATH", os.defpath), "HOME": str(home),
             "TFSHARE_HOME": str(home), "TFSHARE_TEST": "1", "LC_ALL": "C.UTF-8"},
        input=stdin.decode(), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_a_refused_export_leaves_an_existing_out_file_as_it_was(inbox: Inbox) -> None:
    out = inbox.root / "earlier.json"
    out.write_text("an earlier export\n")
    result = tfshare(inbox, "export", "--since", "2000-01-01", "--out", str(out), *inbox.flags)
    assert result.returncode == 3, result.stderr
    assert result.stderr.startswith("tfshare: error: E_NO_FORWARD: ")
    assert out.read_text() == "an earlier export\n"


def test_export_into_a_missing_directory_is_an_error_line_not_a_traceback(inbox: Inbox) -> None:
    out = inbox.root / "no-such-dir" / "x.json"
    result = tfshare(inbox, "export", inbox.ids["red-flag"], "--out", str(out), *inbox.flags)
    assert "Traceback" not in result.stderr
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("tfshare: error: ")
    assert not out.exists()


def test_import_with_a_tlp_that_is_no_level_is_a_usage_error(inbox: Inbox) -> None:
    """A flag's value that is not one of its choices is a usage error (exit 2), as the CLI's
    other flags (--format, --as, --min-severity) have it. Before: exit 5 (validation)."""
    bundle = inbox.root / "bundle.json"
    made = tfshare(inbox, "export", inbox.ids["red-flag"], "--out", str(bundle), *inbox.flags)
    assert made.returncode == 0, made.stderr
    result = tfshare(inbox, "import", str(bundle), "--as", "red-flag", "--tlp", "red")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("tfshare: error: --tlp 'red' is not a level")
    assert result.stdout == ""
