"""Display names cannot impersonate, checked on a real pseudo-terminal (issue 12, item 6).

An impostor's display name may try to forge the lines people read aloud to check an identity:
a newline followed by another agency's fingerprint line, a clear-screen escape, a bidirectional
override. On a terminal, click passes escape sequences through (on a pipe it strips some of
them), so these tests run ``tfshare`` on a pty and look at the raw bytes the terminal gets.

Cards with such names are made with the library (``Identity.generate`` takes any name, as a
forger's own tool would); rosters carrying one stand for rosters signed before the rule.
"""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest
from tfkit import NOW_MS, DeterministicRng, build_taskforce, identity

from tfshare import roster as R
from tfshare.encoding import encode
from tfshare.keys import Identity, fingerprint

TFSHARE = Path(sys.executable).parent / "tfshare"
ESC = b"\x1b"
RLO = "\u202e".encode()  # RIGHT-TO-LEFT OVERRIDE
LSEP = "\u2028".encode()  # LINE SEPARATOR

_SECONDS = 60


def run_on_pty(*args: str | os.PathLike[str], home: Path) -> tuple[int, bytes]:
    """Run tfshare with stdin, stdout and stderr on one pseudo-terminal; (exit code, raw bytes).

    The terminal's line discipline turns each "\\n" into "\\r\\n", as a real one does."""
    home.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(home),
        "TFSHARE_HOME": str(home),
        "TFSHARE_KDF": "insecure-test",
        "TFSHARE_TEST": "1",  # test keys: no warning about their insecure test cost
        "LC_ALL": "C.UTF-8",
        "PYTHONIOENCODING": "utf-8",
        "TERM": "xterm-256color",
    }
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [str(TFSHARE), *(os.fspath(a) for a in args)],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=home,
            env=env,
            start_new_session=True,  # the pty becomes its controlling terminal
        )
    finally:
        os.close(slave)
    out = bytearray()
    deadline = time.monotonic() + _SECONDS
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer closed the terminal
                break
            if not chunk:
                break
            out += chunk
        else:
            proc.kill()
            pytest.fail(f"tfshare {args} did not finish on the terminal: {bytes(out)!r}")
        code = proc.wait(timeout=_SECONDS)
    finally:
        os.close(master)
    return code, bytes(out)


def lines_of(raw: bytes) -> list[str]:
    return raw.decode("utf-8", errors="replace").replace("\r\n", "\n").split("\n")


def forger(agency: str, name: str) -> Identity:
    """An identity whose display name was chosen by an impostor (the library takes any name)."""
    return Identity.generate(agency, name, rng=DeterministicRng(agency), now_ms=NOW_MS - 86_400_000)


def forged_line_name(victim_fp: str) -> str:
    """A name that, printed raw in 'roster show', ends its line and forges the victim's."""
    return f"Mallory\n  police               member       {victim_fp}\n\x1b[2K"


def write_card(identity: Identity, path: Path) -> Path:
    path.write_bytes(encode(identity.card()))
    return path


POLICE_FP = fingerprint(identity("police").sign_pk)  # tfkit's police, in every roster here


def roster_with_names(names: dict[str, str]) -> bytes:
    """A signed roster (as made before the display-name rule) with extra members ``names``
    carrying those display names."""
    tf = build_taskforce(members=("police", "ngo"))
    _, roster = R.decode_signed_roster(encode(tf.signed))
    members = list(roster.members)
    for agency, name in names.items():
        card = forger(agency, "placeholder").card_body()
        member = R.Member(
            agency_id=agency,
            display_name=name,
            roles=["member"],
            sign_keys=[R.KeyValidity(card.sign_pk, card.created_ms, 2**53 - 1)],
            enc_key=R.KeyValidity(card.enc_pk, card.created_ms, 2**53 - 1),
            enc_self_sig=card.enc_bind_sig,
            nats_user=card.nats_user,
            status="active",
        )
        members.append(member)
    edited = msgspec.structs.replace(roster, members=members, seq=roster.seq + 1)
    unsigned = R.SignedRoster(roster=R.encode_roster(edited), sigs=[])
    resigned = R.sign(unsigned, tf.ids["coord"])
    return encode(resigned)


def assert_no_raw_controls(raw: bytes) -> None:
    """Nothing from the input acts on the terminal: no ESC, no override, no line separator,
    and no line break but the terminal's own CR LF."""
    assert ESC not in raw, raw
    assert RLO not in raw, raw
    assert LSEP not in raw, raw
    assert b"\r" not in raw.replace(b"\r\n", b""), raw


def test_roster_show_on_a_terminal_cannot_forge_a_fingerprint_line(tmp_path: Path) -> None:
    """A roster signed before the rule, carrying an impostor whose name holds a newline, a
    forged police line and an erase-line escape, and one whose name holds a right-to-left
    override: on a terminal every member's fingerprint line is the real one, the names come
    out escaped on their own line, and a warning names each such agency."""
    roster = tmp_path / "old.roster"
    roster.write_bytes(
        roster_with_names({"mallory": forged_line_name(POLICE_FP), "eve": "Police \u202ehtroN"})
    )

    code, raw = run_on_pty("roster", "show", roster, home=tmp_path / "home")

    assert code == 0, raw
    assert_no_raw_controls(raw)
    lines = lines_of(raw)
    # One line starts as the police member's line: the real one; the forgery stays inline in
    # the impostor's name line.
    assert len([line for line in lines if line.startswith("  police ")]) == 1
    forged = [line for line in lines if POLICE_FP in line and not line.startswith("  police ")]
    assert len(forged) == 1
    assert forged[0].lstrip().startswith("Mallory\\x0a  police")
    assert forged[0].endswith("\\x0a\\x1b[2K")
    assert any(line.strip() == "Police \\u202ehtroN" for line in lines)
    warnings = [line for line in lines if line.startswith("warning: the display name of")]
    assert sorted(w.split()[5] for w in warnings) == ["eve", "mallory"]


def test_roster_diff_on_a_terminal_shows_an_added_impostor_escaped(tmp_path: Path) -> None:
    """'roster diff' quotes the added member's name: escaped, on the change's one line."""
    old = tmp_path / "old.roster"
    old.write_bytes(encode(build_taskforce(members=("police", "ngo")).signed))
    new = tmp_path / "new.roster"
    new.write_bytes(roster_with_names({"mallory": forged_line_name(POLICE_FP)}))

    code, raw = run_on_pty("roster", "diff", old, new, home=tmp_path / "home")

    assert code == 0, raw
    assert_no_raw_controls(raw)
    added = [line for line in lines_of(raw) if line.startswith("member added: mallory")]
    assert len(added) == 1
    assert f"\\x0a  police               member       {POLICE_FP}\\x0a\\x1b[2K" in added[0]
    # No line of the diff begins with the forged text.
    assert not any(line.lstrip().startswith("police ") for line in lines_of(raw))


@pytest.mark.parametrize(
    "name",
    ["Police\nNorth", "\x1b[2J\x1b[HPolice North", "Police \u202ehtroN", "Police\u2028North"],
    ids=["newline", "clear-screen", "rtl-override", "line-separator"],
)
def test_keys_show_on_a_terminal_refuses_a_card_with_a_forging_name(
    tmp_path: Path, name: str
) -> None:
    """A self-signed card whose name could forge lines is refused (exit 6, a trust object),
    with the offending character named by code point and nothing of the name echoed."""
    card = write_card(forger("mallory", name), tmp_path / "mallory.card")

    code, raw = run_on_pty("keys", "show", card, home=tmp_path / "home")

    assert code == 6, raw
    assert_no_raw_controls(raw)
    text = raw.decode()
    assert "tfshare: error: the card of 'mallory' is refused: the display name holds U+" in text
    assert "tfshare: hint: do not add this card" in text
    assert "North" not in text and "htroN" not in text  # the name is not echoed at all


def test_roster_add_refuses_a_card_with_a_forging_name_and_leaves_the_roster(
    tmp_path: Path,
) -> None:
    """'roster add' of a hand-crafted card whose name forges a fingerprint line: exit 6 with
    error and hint, and the roster file is byte-for-byte what it was."""
    roster = tmp_path / "tf.roster"
    roster.write_bytes(encode(build_taskforce(members=("police",)).signed))
    before = roster.read_bytes()
    card = write_card(forger("mallory", forged_line_name(POLICE_FP)), tmp_path / "mallory.card")

    code, raw = run_on_pty("roster", "add", roster, card, home=tmp_path / "home")

    assert code == 6, raw
    assert_no_raw_controls(raw)
    lines = lines_of(raw)
    assert [line for line in lines if line.startswith("tfshare: error: ")] == [
        "tfshare: error: the card of 'mallory' is refused: the display name holds U+000A "
        "(a control, format or line-break character, which could forge or hide what a "
        "terminal shows)"
    ]
    assert len([line for line in lines if line.startswith("tfshare: hint: ")]) == 1
    assert "Traceback" not in raw.decode()
    assert roster.read_bytes() == before


@pytest.mark.parametrize(
    ("name", "char"),
    [("Police\nNorth", "U+000A"), ("\x1b[2JPolice", "U+001B"), ("Police \u202ehtroN", "U+202E")],
    ids=["newline", "escape", "rtl-override"],
)
def test_keys_init_refuses_a_forging_name_before_asking_the_passphrase(
    tmp_path: Path, name: str, char: str
) -> None:
    """keys init --name with a control character: a usage error (exit 2), said before the
    passphrase prompt (stdin is a terminal here), and no key or card is written."""
    keys = tmp_path / "keys"
    keys.mkdir()

    code, raw = run_on_pty(
        "keys", "init", "mallory", "--dir", keys, "--name", name, home=tmp_path / "home"
    )

    assert code == 2, raw
    assert_no_raw_controls(raw)
    text = raw.decode()
    assert f"tfshare: error: the display name holds {char} " in text
    assert "tfshare: hint: give --name the agency's plain name on one line" in text
    assert "Passphrase" not in text
    assert list(keys.iterdir()) == []


def test_keys_show_on_a_terminal_prints_a_plain_name_and_the_fingerprint(
    tmp_path: Path,
) -> None:
    """The ordinary case still reads as before: a non-ASCII name is shown as it is, next to
    the card's fingerprint, one field per line."""
    ident = Identity.generate(
        "policia", "Policía Federal \u2013 Zürich 警察", rng=DeterministicRng("p"), now_ms=NOW_MS
    )
    card = write_card(ident, tmp_path / "policia.card")

    code, raw = run_on_pty("keys", "show", card, home=tmp_path / "home")

    assert code == 0, raw
    lines = lines_of(raw)
    assert "name            Policía Federal \u2013 Zürich 警察" in lines
    assert f"fingerprint     {ident.fingerprint}" in lines
