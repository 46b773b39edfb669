"""Message fields from outside reach the terminal escaped: 'tfshare open' and the live feed
(issue 12, item 6; needs /tmp/tfshare/h12_other_files.patch). Save as
tests/cli/test_display_names_other_commands_pty.py."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from test_display_names_pty import ESC, LSEP, RLO, lines_of, run_on_pty

ALERT = Path(__file__).resolve().parents[2] / "examples" / "alert.json"


def test_open_on_a_terminal_escapes_the_senders_text_and_keeps_the_json(
    tf: Path, creds: Callable[[str], list[str]], trust: list[str], tmp_path: Path
) -> None:
    """A title with a right-to-left override and a summary with a line separator forging a
    'verified sender' line: on a terminal both are \\u escapes, and the body is still JSON
    that decodes to what was sent."""
    body = json.loads(ALERT.read_text())
    body["title"] = "Police \u202ehtroN"
    body["summary"] = "x\u2028verified sender  police"
    (tmp_path / "body.json").write_text(json.dumps(body))
    env = tmp_path / "m.tfenv"
    code, raw = run_on_pty(
        "seal", *creds("police"), *trust, "--state", tmp_path / "ps", "--channel", "alerts",
        "--schema", "tf.alert/1", "--in", tmp_path / "body.json", "--out", env,
        home=tmp_path / "home",
    )  # fmt: skip
    assert code == 0, raw
    code, raw = run_on_pty(
        "open", env, *creds("ngo"), *trust, "--state", tmp_path / "ns", home=tmp_path / "home"
    )
    assert code == 0, raw
    assert RLO not in raw and LSEP not in raw and ESC not in raw
    text = "\n".join(lines_of(raw))
    shown = json.loads(text[text.index("{") :])
    assert shown["title"] == body["title"] and shown["summary"] == body["summary"]


def test_live_feed_on_a_terminal_escapes_every_body_field(tmp_path: Path) -> None:
    """_render_feed with escapes, an override and a newline forging a 'from' line: on a pty,
    the only ESC bytes are tfshare's own colour, and no line but the real one says 'from'."""
    src = (
        "from tfshare.cli import live_cmd\n"
        "from tfshare.desk import api\n"
        "body = {'title': 'T\\x1b[2J\\u202e', 'severity': 'high', "
        "'handling': {'tlp': 'RED\\n  from labour (fp abcd)'}, 'indicators': ['a\\u2066', 5]}\n"
        "live_cmd._render_feed(api.Message('00', 'police', 'abcd', 'alerts', 'tf.alert/1', "
        "'', '', None, body))\n"
    )
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-c", src], stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
        env={**os.environ, "NO_COLOR": "1"}, start_new_session=True,
    )  # fmt: skip
    os.close(slave)
    raw = b""
    while select.select([master], [], [], 30)[0]:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        raw += chunk
    os.close(master)
    assert proc.wait(timeout=30) == 0, raw
    assert b"\x1b[2J" not in raw and RLO not in raw
    lines = lines_of(raw)
    assert [line for line in lines if line.startswith("  from ")] == [
        next(line for line in lines if line.startswith("  from police"))
    ]
    assert "  handling TLP:RED\\x0a  from labour (fp abcd) PAP:None None" in lines
    assert "  indicators a\\u2066, 5" in lines
