"""``tfshare roster`` for large task forces (issue 15): ``add`` with directories of cards,
``grant --agency``/``--all-members``, ``channel --modes/--epoch-*``, ``role`` and ``rotate``;
``show`` and ``diff`` cover modes, epoch policies and retired encryption keys. A refused
command writes nothing."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tfkit import NOW_MS, DeterministicRng

from tfshare.encoding import encode
from tfshare.keys import Identity

Run = Callable[..., subprocess.CompletedProcess[str]]


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"{result.args}: exit {result.returncode}\n{result.stderr}"
    return result


def refused(
    result: subprocess.CompletedProcess[str], code: int, roster: Path, before: bytes
) -> str:
    """Exit ``code``, one error line and one hint, no traceback, the roster untouched."""
    lines = result.stderr.splitlines()
    errors = [line for line in lines if line.startswith("tfshare: error: ")]
    hints = [line for line in lines if line.startswith("tfshare: hint: ")]
    assert result.returncode == code, result.stderr
    assert len(errors) == 1 and len(hints) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert roster.read_bytes() == before
    return errors[0]


@pytest.fixture
def roster(tf: Path, tmp_path: Path) -> Path:
    """A copy of the session roster (coord, police, ngo, labour; alerts: read police, ngo,
    labour; write police, labour)."""
    path = tmp_path / "tf.roster"
    shutil.copyfile(tf / "taskforce.roster", path)
    return path


def show(run: Run, roster: Path) -> dict[str, Any]:
    info: dict[str, Any] = json.loads(ok(run("roster", "show", "--json", roster)).stdout)
    return info


def write_card(directory: Path, agency: str, *, file: str | None = None, seed: str = "") -> Path:
    """A real card of a new agency, made in the process (no key file, no passphrase)."""
    ident = Identity.generate(
        agency, f"{agency} agency", rng=DeterministicRng(agency + seed), now_ms=NOW_MS
    )
    path = directory / (file or f"{agency}.card")
    path.write_bytes(encode(ident.card()))
    return path


def test_add_a_directory_of_cards_in_one_version(run: Run, roster: Path, tmp_path: Path) -> None:
    cards = tmp_path / "cards"
    cards.mkdir()
    for agency in ("bank-a", "bank-b", "inspect-c"):
        write_card(cards, agency)
    (cards / "README.txt").write_text("not a card")  # only *.card files are read
    result = ok(run("roster", "add", roster, cards, write_card(tmp_path, "ngo-d")))
    assert "added bank-a, bank-b, inspect-c, ngo-d as member" in result.stderr
    info = show(run, roster)
    assert [m["agency"] for m in info["members"]][-4:] == ["bank-a", "bank-b", "inspect-c", "ngo-d"]
    assert info["seq"] == 2


def test_add_refuses_an_agency_in_two_cards_naming_both_files(
    run: Run, roster: Path, tmp_path: Path
) -> None:
    cards = tmp_path / "cards"
    cards.mkdir()
    first = write_card(cards, "bank-a", file="a.card")
    second = write_card(cards, "bank-a", file="b.card", seed="other keys")
    write_card(cards, "bank-c")
    before = roster.read_bytes()
    error = refused(run("roster", "add", roster, cards), 2, roster, before)
    assert str(first) in error and str(second) in error and "'bank-a'" in error


def test_add_refuses_two_cards_with_one_key(run: Run, roster: Path, tmp_path: Path) -> None:
    """Two agency ids, one key (a copied card, renamed): refused as a trust problem."""
    cards = tmp_path / "cards"
    cards.mkdir()
    ident = Identity.generate("bank-a", "Bank A", rng=DeterministicRng("same"), now_ms=NOW_MS)
    twin = Identity(
        agency_id="bank-b",
        display_name="Bank B",
        sign_seed=DeterministicRng("same")(32),
        enc_sk=DeterministicRng("other")(32),
        nats_seed=DeterministicRng("another")(32),
        created_ms=NOW_MS,
    )
    (cards / "a.card").write_bytes(encode(ident.card()))
    (cards / "b.card").write_bytes(encode(twin.card()))
    before = roster.read_bytes()
    error = refused(run("roster", "add", roster, cards), 6, roster, before)
    assert "same signing key" in error and "a.card" in error and "b.card" in error


@pytest.mark.parametrize(
    ("as_card", "version"),
    [(True, None), (False, None), (True, b"9")],
    ids=["renamed-in-dir", "named-directly", "future-key-format"],
)
def test_add_refuses_a_secret_key_among_the_cards(
    run: Run, roster: Path, tmp_path: Path, tf: Path, as_card: bool, version: bytes | None
) -> None:
    """Any file with the secret key magic (tfshare-key/, whatever version follows: a newer
    tfshare's key file too) is refused as a secret key, exit 6, nothing written."""
    cards = tmp_path / "cards"
    cards.mkdir()
    write_card(cards, "bank-a")
    secret = cards / ("zz.card" if as_card else "outsider.key")
    data = (tf / "keys" / "outsider.key").read_bytes()
    if version is not None:
        at = data.index(b"tfshare-key/") + len(b"tfshare-key/")
        data = data[:at] + version + data[at + 1 :]
    secret.write_bytes(data)
    before = roster.read_bytes()
    given = [cards] if as_card else [cards, secret]
    error = refused(run("roster", "add", roster, *given), 6, roster, before)
    assert "secret key file" in error and str(secret) in error


def test_grant_with_agency_options_and_to_all_members(run: Run, roster: Path) -> None:
    ok(
        run(
            "roster",
            "grant",
            roster,
            "--agency",
            "ngo",
            "--agency",
            "coord",
            "--channel",
            "receipts",
            "--write",
        )
    )
    ok(run("roster", "grant", roster, "--all-members", "--channel", "news", "--read"))
    channels = {c["name"]: c for c in show(run, roster)["channels"]}
    assert channels["receipts"]["writers"] == ["ngo", "coord"]
    assert channels["news"]["readers"] == ["coord", "police", "ngo", "labour"]
    assert channels["news"]["modes"] == "direct"


@pytest.mark.slow
def test_channel_modes_and_epoch_policy_are_shown_and_diffed(
    run: Run, roster: Path, tmp_path: Path
) -> None:
    old = tmp_path / "old.roster"
    shutil.copyfile(roster, old)
    ok(run("roster", "channel", roster, "alerts", "--schema", "tf.alert"))
    ok(
        run(
            "roster",
            "channel",
            roster,
            "alerts",
            "--modes",
            "direct,epoch",
            "--epoch-period",
            "12h",
            "--epoch-messages",
            "500",
        )
    )
    alerts = next(c for c in show(run, roster)["channels"] if c["name"] == "alerts")
    assert alerts["modes"] == "direct,epoch" and alerts["mode_policy"] == 3
    assert alerts["epoch_policy"] == {
        "period_ms": 43_200_000,
        "period": "12h",
        "max_messages": 500,
        "default": False,
    }
    assert alerts["schemas"] == ["tf.alert"]  # kept: no --schema given this time
    text = ok(run("roster", "show", roster)).stdout
    assert "modes direct,epoch; epoch key every 12h or 500 messages" in text
    changes = ok(run("roster", "diff", old, roster)).stdout.splitlines()
    assert "channel alerts: modes direct -> direct,epoch" in changes
    assert (
        "channel alerts: epoch policy every 7d or 100000 messages (default) -> "
        "every 12h or 500 messages" in changes
    )
    again = ok(run("roster", "channel", roster, "alerts", "--modes", "epoch,direct"))
    assert "nothing changed" in again.stderr


@pytest.mark.parametrize(
    "option",
    [["--modes", "broadcast"], ["--epoch-period", "30s"], ["--epoch-period", "soon"]],
    ids=["mode", "short-period", "not-a-duration"],
)
def test_channel_refuses_bad_settings_as_usage_errors(
    run: Run, roster: Path, option: list[str]
) -> None:
    before = roster.read_bytes()
    refused(run("roster", "channel", roster, "alerts", *option), 2, roster, before)


def test_role_makes_a_key_manager_and_refuses_a_coordinator_change(run: Run, roster: Path) -> None:
    ok(run("roster", "role", roster, "ngo", "--roles", "member,key-manager"))
    info = show(run, roster)
    assert info["key_managers"] == ["ngo"]
    assert next(m for m in info["members"] if m["agency"] == "ngo")["roles"] == [
        "member",
        "key-manager",
    ]
    before = roster.read_bytes()
    error = refused(
        run("roster", "role", roster, "ngo", "--roles", "coordinator"), 6, roster, before
    )
    assert "coordinator" in error


@pytest.mark.slow
def test_rotate_applies_a_statement_and_refuses_it_twice(
    run: Run, roster: Path, tmp_path: Path, tf: Path
) -> None:
    """police rotates (keys rotate on a copy of its key file); the coordinator applies the
    statement: a new encryption key, the old one retired; a replay is refused."""
    key = tmp_path / "police.key"
    shutil.copyfile(tf / "keys" / "police.key", key)
    statement = tmp_path / "police.rotation"
    ok(
        run(
            "keys",
            "rotate",
            "--key",
            key,
            "--passphrase-file",
            tf / "keys" / "police.pass",
            "--grace",
            "1d",
            "--out",
            statement,
        )
    )
    old = tmp_path / "old.roster"
    shutil.copyfile(roster, old)
    before = show(run, roster)
    result = ok(run("roster", "rotate", roster, statement))
    assert "rotated the encryption key" in result.stderr and "police" in result.stderr
    police_before = next(m for m in before["members"] if m["agency"] == "police")
    police = next(m for m in show(run, roster)["members"] if m["agency"] == "police")
    assert police["enc_kid"] != police_before["enc_kid"]
    assert [k["kid"] for k in police["retired_enc_keys"]] == [police_before["enc_kid"]]
    changes = "\n".join(ok(run("roster", "diff", old, roster)).stdout.splitlines())
    assert "member police: retired encryption keys [-] -> [" in changes
    assert (
        "retired encryption key " + police_before["enc_kid"]
        in ok(run("roster", "show", roster)).stdout
    )
    unchanged = roster.read_bytes()
    refused(run("roster", "rotate", roster, statement), 6, roster, unchanged)
