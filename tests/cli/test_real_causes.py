"""Errors that name the real cause (issue 12, item 5), without a broker:

- a malformed server URL is a usage error (exit 2) naming it, from --server, ``tfshare init``
  and a profile's config, before any passphrase is asked (``agent run`` used to retry forever);
- a new key file refuses a passphrase under 12 characters (exit 6) unless
  ``--allow-weak-passphrase``;
- a key file with the insecure test cost warns each time it is created or used, unless
  ``TFSHARE_TEST=1`` (which the conftest sets; these tests clear it);
- a failed command leaves no new state database behind;
- ``audit serve`` checks the passphrase before it says it is consuming.

The broker side (a port in use, ``listen``) is in tests/integration/test_real_causes_live.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tfshare.errors import TrustError
from tfshare.workflows.keys import init_keys

# Not imported from conftest: tests/integration has a conftest module of that name too.
TFSHARE = Path(sys.executable).parent / "tfshare"
ALERT = Path(__file__).resolve().parents[2] / "examples" / "alert.json"
Run = Callable[..., subprocess.CompletedProcess[str]]
Creds = Callable[[str], list[str]]


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"{result.args}: exit {result.returncode}\n{result.stderr}"
    return result


def clean_env(home: Path) -> dict[str, str]:
    """As the conftest's ``run`` fixture runs tfshare (a test run: TFSHARE_TEST=1)."""
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(home),
        "TFSHARE_HOME": str(home),
        "TFSHARE_KDF": "insecure-test",
        "TFSHARE_TEST": "1",
        "LC_ALL": "C.UTF-8",
        "PYTHONIOENCODING": "utf-8",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


BAD_URLS = [
    ("http://127.0.0.1:4222", "scheme http://"),
    ("not a url", "no scheme"),
    ("nats://127.0.0.1:99999", "port"),
    ("nats://:4222", "no host"),
    ("nats://", "no host"),
]
WARNING = "tfshare: warning:"
TEST_COST = "insecure test cost"
NOT_A_TEST = {"TFSHARE_TEST": ""}


def _usage_error_naming(result: object, url: str, why: str) -> None:
    stderr = getattr(result, "stderr", "")
    assert getattr(result, "returncode", None) == 2, stderr
    assert f"tfshare: error: --server {url!r} is not a broker URL" in stderr
    assert why in stderr
    assert "nats://HOST:PORT or tls://HOST:PORT" in stderr  # the hint shows the accepted forms
    assert "Traceback" not in stderr


# -- server URLs ------------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "why"), BAD_URLS)
def test_agent_run_with_a_malformed_server_url_exits_2_naming_it(
    run: Run, creds: Creds, trust: list[str], url: str, why: str
) -> None:
    """Before: the agent retried the URL forever (reported as a broker it could not reach)."""
    result = run("agent", "run", "--server", url, *creds("police"), *trust)
    _usage_error_naming(result, url, why)


@pytest.mark.parametrize(("url", "why"), BAD_URLS[:3])
def test_init_with_a_malformed_server_url_exits_2_before_asking_the_passphrase(
    run: Run, tf: Path, tmp_path: Path, url: str, why: str
) -> None:
    """No passphrase is given and no terminal exists: had it been asked first, the error
    would be 'no passphrase given' (exit 6). No profile is created."""
    result = run("init", "--agency", "police", "--server", url, "--roster",
                 tf / "taskforce.roster", "--anchor", tf / "taskforce.anchor")  # fmt: skip
    _usage_error_naming(result, url, why)
    assert not (tmp_path / "home" / "profiles").exists()


def test_a_hand_edited_profile_server_is_a_usage_error_naming_the_config(
    run: Run, tf: Path, tmp_path: Path
) -> None:
    ok(run("init", "--agency", "police", "--server", "nats://127.0.0.1:4222",
           "--roster", tf / "taskforce.roster", "--anchor", tf / "taskforce.anchor",
           "--key", tf / "keys" / "police.key"))  # fmt: skip
    config = tmp_path / "home" / "profiles" / "default" / "config.toml"
    config.write_text(config.read_text().replace("nats://127.0.0.1:4222", "http://broker:4222"))
    result = run("--profile", "default", "agent", "run",
                 "--passphrase-file", tf / "keys" / "police.pass")  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "'http://broker:4222' is not a broker URL" in result.stderr
    assert "config.toml" in result.stderr


def test_a_server_url_with_a_password_is_refused_without_repeating_it(
    run: Run, creds: Creds, trust: list[str]
) -> None:
    secret = "s3cr3t-broker-password"
    result = run("agent", "run", "--server", f"nats://admin:{secret}@127.0.0.1:4222",
                 *creds("police"), *trust)  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "carries no user or password" in result.stderr
    assert secret not in result.stderr + result.stdout


def test_broker_provision_with_a_malformed_server_url_exits_2(
    run: Run, tf: Path, tmp_path: Path
) -> None:
    result = run("broker", "provision", "--roster", tf / "taskforce.roster",
                 "--anchor", tf / "taskforce.anchor", "--dir", tmp_path / "b",
                 "--server", "nats://127.0.0.1:99999")  # fmt: skip
    _usage_error_naming(result, "nats://127.0.0.1:99999", "port")


@pytest.mark.parametrize("port", ["0", "99999"])
def test_broker_up_with_a_port_out_of_range_exits_2_and_makes_nothing(
    run: Run, tf: Path, tmp_path: Path, port: str
) -> None:
    result = run("broker", "up", "--roster", tf / "taskforce.roster",
                 "--anchor", tf / "taskforce.anchor", "--dir", tmp_path / "b",
                 "--port", port)  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "--port" in result.stderr
    assert not (tmp_path / "b").exists()


# -- weak passphrases -------------------------------------------------------------------------


def test_keys_init_refuses_a_passphrase_under_12_characters_and_writes_nothing(
    run: Run, tmp_path: Path
) -> None:
    (tmp_path / "short.pass").write_text("elevenchars\n")  # 11
    result = run("keys", "init", "ngo", "--dir", tmp_path / "keys",
                 "--passphrase-file", tmp_path / "short.pass")  # fmt: skip
    assert result.returncode == 6, result.stderr
    assert "shorter than 12 characters" in result.stderr
    assert "--allow-weak-passphrase" in result.stderr  # the hint names the way out
    assert "elevenchars" not in result.stderr + result.stdout
    assert not (tmp_path / "keys").exists()  # the directory made for it is gone too


def test_keys_init_accepts_12_characters(run: Run, tmp_path: Path) -> None:
    (tmp_path / "twelve.pass").write_text("twelve chars\n")
    ok(run("keys", "init", "ngo", "--dir", tmp_path / "keys",
           "--passphrase-file", tmp_path / "twelve.pass"))  # fmt: skip
    assert (tmp_path / "keys" / "ngo.key").exists()


def test_keys_init_allow_weak_passphrase_writes_the_key(run: Run, tmp_path: Path) -> None:
    (tmp_path / "short.pass").write_text("pw\n")
    ok(run("keys", "init", "ngo", "--dir", tmp_path / "keys",
           "--passphrase-file", tmp_path / "short.pass", "--allow-weak-passphrase"))  # fmt: skip
    assert (tmp_path / "keys" / "ngo.key").exists()


def test_init_refuses_a_weak_passphrase_and_leaves_no_profile(
    run: Run, tf: Path, tmp_path: Path
) -> None:
    (tmp_path / "short.pass").write_text("short\n")
    result = run("init", "--agency", "police", "--server", "nats://127.0.0.1:4222",
                 "--roster", tf / "taskforce.roster", "--anchor", tf / "taskforce.anchor",
                 "--passphrase-file", tmp_path / "short.pass")  # fmt: skip
    assert result.returncode == 6, result.stderr
    assert "shorter than 12 characters" in result.stderr
    assert not (tmp_path / "home" / "profiles" / "default").exists()


def test_init_keys_weak_passphrase_refusal_counts_characters_not_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twelve characters of a non-Latin script pass; eleven do not (UTF-8 takes more bytes)."""
    monkeypatch.setenv("TFSHARE_TEST", "1")
    init_keys("ngo", tmp_path, display_name=None, passphrase="пароль пароль"[:12].encode(),
              kdf="insecure-test", now_ms=1)  # fmt: skip
    with pytest.raises(TrustError, match="shorter than 12"):
        init_keys("labour", tmp_path, display_name=None, passphrase="пароль пароль"[:11].encode(),
                  kdf="insecure-test", now_ms=1)  # fmt: skip
    assert not (tmp_path / "labour.key").exists()


# -- the insecure test cost -------------------------------------------------------------------


def test_keys_init_with_the_test_cost_warns_outside_tests(run: Run, tmp_path: Path) -> None:
    (tmp_path / "p.pass").write_text("a long enough passphrase\n")
    result = ok(run("keys", "init", "ngo", "--dir", tmp_path / "keys",
                    "--passphrase-file", tmp_path / "p.pass", env=NOT_A_TEST))  # fmt: skip
    assert f"{WARNING} the key file" in result.stderr
    assert TEST_COST in result.stderr
    assert "Traceback" not in result.stderr and "UserWarning" not in result.stderr


def test_every_use_of_a_test_cost_key_warns_once_outside_tests(
    run: Run, creds: Creds, trust: list[str], tmp_path: Path
) -> None:
    for _ in range(2):  # each command says it, once
        result = ok(run("seal", *creds("police"), *trust, "--channel", "alerts",
                        "--schema", "tf.alert/1", "--in", ALERT, "--out", tmp_path / "a.tfenv",
                        "--state", tmp_path / "state", env=NOT_A_TEST))  # fmt: skip
        assert result.stderr.count(WARNING) == 1, result.stderr
        assert TEST_COST in result.stderr and "police.key" in result.stderr


def test_a_test_run_is_quiet_about_the_test_cost(
    run: Run, creds: Creds, trust: list[str], tmp_path: Path
) -> None:
    result = ok(run("seal", *creds("police"), *trust, "--channel", "alerts",
                    "--schema", "tf.alert/1", "--in", ALERT, "--out", tmp_path / "a.tfenv",
                    "--state", tmp_path / "state"))  # fmt: skip
    assert WARNING not in result.stderr


def test_a_key_of_a_real_cost_does_not_warn(run: Run, tmp_path: Path) -> None:
    (tmp_path / "p.pass").write_text("a long enough passphrase\n")
    result = ok(run("keys", "init", "ngo", "--dir", tmp_path / "keys",
                    "--passphrase-file", tmp_path / "p.pass",
                    env={**NOT_A_TEST, "TFSHARE_KDF": "interactive"}))  # fmt: skip
    assert WARNING not in result.stderr


# -- no new state database after a failure ----------------------------------------------------


def test_seal_with_a_bad_roster_leaves_no_state_database(
    run: Run, creds: Creds, tf: Path, tmp_path: Path
) -> None:
    (tmp_path / "bad.roster").write_bytes(b"not a roster")
    state = tmp_path / "new" / "state"
    result = run("seal", *creds("police"), "--roster", tmp_path / "bad.roster",
                 "--anchor", tf / "taskforce.anchor", "--channel", "alerts",
                 "--schema", "tf.alert/1", "--in", ALERT, "--out", tmp_path / "a.tfenv",
                 "--state", state)  # fmt: skip
    assert result.returncode == 6, result.stderr
    assert not (tmp_path / "new").exists()


def test_seal_of_an_invalid_body_leaves_no_state_database(
    run: Run, creds: Creds, trust: list[str], tmp_path: Path
) -> None:
    (tmp_path / "body.json").write_text('{"severity": "apocalyptic"}')
    state = tmp_path / "state"
    result = run("seal", *creds("police"), *trust, "--channel", "alerts",
                 "--schema", "tf.alert/1", "--in", tmp_path / "body.json",
                 "--out", tmp_path / "a.tfenv", "--state", state)  # fmt: skip
    assert result.returncode == 5, result.stderr
    assert not state.exists()


def test_open_with_a_roster_of_another_task_force_leaves_no_state_database(
    run: Run, creds: Creds, trust: list[str], tf: Path, tmp_path: Path
) -> None:
    ok(run("seal", *creds("police"), *trust, "--channel", "alerts", "--schema", "tf.alert/1",
           "--in", ALERT, "--out", tmp_path / "a.tfenv",
           "--state", tmp_path / "s-police"))  # fmt: skip
    other = tmp_path / "other"
    (other / "keys").mkdir(parents=True)
    (other / "keys" / "c.pass").write_text("another coordinator's passphrase\n")
    ok(run("keys", "init", "other", "--dir", other / "keys",
           "--passphrase-file", other / "keys" / "c.pass"))  # fmt: skip
    ok(run("roster", "init", "--taskforce", "tf-other", "--coordinator",
           other / "keys" / "other.card", "--threshold", "1", "--out", other / "r"))  # fmt: skip
    ok(run("roster", "sign", other / "r", "--key", other / "keys" / "other.key",
           "--passphrase-file", other / "keys" / "c.pass"))  # fmt: skip
    state = tmp_path / "s-ngo"
    result = run("open", tmp_path / "a.tfenv", *creds("ngo"), "--roster", other / "r",
                 "--anchor", tf / "taskforce.anchor", "--state", state)  # fmt: skip
    assert result.returncode == 6, result.stderr
    assert not state.exists()


def test_a_failed_command_keeps_an_existing_state_database(
    run: Run, creds: Creds, trust: list[str], tf: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    ok(run("seal", *creds("police"), *trust, "--channel", "alerts", "--schema", "tf.alert/1",
           "--in", ALERT, "--out", tmp_path / "a.tfenv", "--state", state))  # fmt: skip
    before = (state / "state.db").read_bytes()
    (tmp_path / "bad.roster").write_bytes(b"not a roster")
    result = run("seal", *creds("police"), "--roster", tmp_path / "bad.roster",
                 "--anchor", tf / "taskforce.anchor", "--channel", "alerts",
                 "--schema", "tf.alert/1", "--in", ALERT, "--out", tmp_path / "b.tfenv",
                 "--state", state)  # fmt: skip
    assert result.returncode == 6
    assert (state / "state.db").read_bytes() == before


def test_broker_config_with_a_bad_roster_leaves_no_state_database(
    run: Run, tf: Path, tmp_path: Path
) -> None:
    (tmp_path / "bad.roster").write_bytes(b"not a roster")
    result = run("broker", "config", "--roster", tmp_path / "bad.roster",
                 "--anchor", tf / "taskforce.anchor", "--dir", tmp_path / "b",
                 "--state", tmp_path / "bstate")  # fmt: skip
    assert result.returncode == 6, result.stderr
    assert not (tmp_path / "bstate").exists()


# -- the passphrase before "listening" --------------------------------------------------------


def test_audit_serve_with_a_wrong_passphrase_never_says_it_is_consuming(
    run: Run, tf: Path, trust: list[str], tmp_path: Path
) -> None:
    (tmp_path / "wrong.pass").write_text("not the coordinator's passphrase\n")
    result = run("audit", "serve", "--server", "nats://127.0.0.1:9", "--key",
                 tf / "keys" / "coord.key", "--passphrase-file", tmp_path / "wrong.pass",
                 *trust, "--state", tmp_path / "state")  # fmt: skip
    assert result.returncode == 6, result.stderr
    assert "wrong passphrase" in result.stderr
    assert "consuming" not in result.stderr


# -- the agency's commands: the key is unlocked before any state is created ------------------


def test_inbox_list_with_a_wrong_passphrase_exits_6_and_leaves_no_state_database(
    run: Run, tf: Path, trust: list[str], tmp_path: Path
) -> None:
    """Before: exit 0 (the key was never unlocked) and a new state.db in --state."""
    (tmp_path / "wrong.pass").write_text("not the police passphrase\n")
    state = tmp_path / "new"
    result = run("inbox", "list", "--key", tf / "keys" / "police.key", "--passphrase-file",
                 tmp_path / "wrong.pass", *trust, "--state", state)  # fmt: skip
    assert result.returncode == 6, result.stderr
    assert "wrong passphrase" in result.stderr
    assert not state.exists()


def test_inbox_list_with_a_bad_roster_leaves_no_state_database(
    run: Run, creds: Creds, tf: Path, tmp_path: Path
) -> None:
    (tmp_path / "bad.roster").write_bytes(b"not a roster")
    state = tmp_path / "new"
    result = run("inbox", "list", *creds("police"), "--roster", tmp_path / "bad.roster",
                 "--anchor", tf / "taskforce.anchor", "--state", state)  # fmt: skip
    assert result.returncode == 6, result.stderr
    assert not state.exists()


def test_listen_with_a_wrong_passphrase_never_says_it_is_listening(
    tf: Path, trust: list[str], tmp_path: Path
) -> None:
    """Read until listen exits or says it listens (then it is stopped): no timing involved."""
    (tmp_path / "wrong.pass").write_text("not the police passphrase\n")
    home = tmp_path / "home"
    home.mkdir()
    proc = subprocess.Popen(
        [str(TFSHARE), "listen", "--key", str(tf / "keys" / "police.key"), "--passphrase-file",
         str(tmp_path / "wrong.pass"), *trust, "--state", str(tmp_path / "state")],
        env=clean_env(home), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if "listening" in line:
            proc.kill()
            break
    proc.wait(timeout=60)
    stderr = "".join(lines)
    assert not any("listening" in line for line in lines), stderr
    assert proc.returncode == 6, stderr
    assert "wrong passphrase" in stderr


def test_a_malformed_tfshare_server_is_a_usage_error_naming_it(
    run: Run, creds: Creds, trust: list[str]
) -> None:
    """Before: a connection attempt that timed out (exit 4, 'broker unavailable')."""
    result = run("audit", "witness", *creds("police"), *trust,
                 env={"TFSHARE_SERVER": "http://127.0.0.1:4222"})  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "TFSHARE_SERVER 'http://127.0.0.1:4222' is not a broker URL" in result.stderr
