"""``tfshare keys serve`` and ``tfshare keys resend`` as real processes (issue 15, items 2-3).

An agency without the role key-manager is refused before anything connects (exit 6, the
command that gives the role in the hint). The key manager's own agency serves a real broker:
epoch 1 reaches the readers, ``keys resend`` (same key and state, while ``serve`` runs)
delivers the same key once more to one reader, and SIGTERM stops ``serve`` cleanly.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest
from kmkit import KM, km_taskforce, trusted
from test_audit_cli import spawn
from test_bad_input_live import agency_files, failure, ok, tfshare
from test_keymanager_live import Reader, _km_broker, _now, _receive
from tfkit import TaskForce

from tfshare.keymanager.store import DATABASE_NAME


def test_keys_serve_refuses_an_agency_without_the_role(tmp_path: Path) -> None:
    tf = km_taskforce(now_ms=_now())
    police = agency_files(tf, "police", tmp_path / "police")
    result = tfshare(tmp_path / "home", "keys", "serve", *police.args(),
                     "--server", "nats://127.0.0.1:1")  # fmt: skip
    error, hint = failure(result, 6)
    assert "'police' does not hold the role key-manager" in error
    assert "tfshare roster role ROSTER police --roles member,key-manager" in hint
    assert not (police.state / DATABASE_NAME).exists()


@pytest.mark.slow
def test_keys_serve_delivers_and_keys_resend_delivers_again(tmp_path: Path) -> None:
    tf: TaskForce = km_taskforce(now_ms=_now())
    broker = _km_broker(tf, tmp_path / "broker")
    keyman = agency_files(tf, KM, tmp_path / "keyman")
    serve = spawn(keyman, "serve", "keys", "serve", *keyman.args(), "--server", broker.url,
                  "--every", "0.2")  # fmt: skip
    try:
        ngo = Reader("ngo", tf, trusted(tf, now_ms=_now()))
        asyncio.run(_receive(broker.url, [ngo], lambda: len(ngo.deliveries) == 1, 15))
        assert [(d.epoch, d.reason) for d in ngo.deliveries] == [(1, "initial")]

        resend = ["keys", "resend", *keyman.args(), "--server", broker.url, "--channel", "alerts"]
        refused = tfshare(keyman.root / "home", *resend, "--to", "outsider")
        _, hint = failure(refused, 6)
        assert "grant read access" in hint
        again = ok(tfshare(keyman.root / "home", *resend, "--to", "ngo"))
        assert "epoch 1 of alerts delivered again to ngo (1 envelope(s) published)" in again.stderr
        asyncio.run(_receive(broker.url, [ngo], lambda: len(ngo.deliveries) == 2, 15))
        first, second = ngo.deliveries
        assert (second.epoch, second.key, second.starts_ms, second.reason) == (
            1,
            first.key,
            first.starts_ms,
            "resend",
        )
        code, _ = serve.signal_and_wait(signal.SIGTERM, 10)
        assert code == 0, serve.stderr()
        stderr = serve.stderr()
        assert "key manager stopped: 1 epochs made" in stderr and "Traceback" not in stderr
        assert first.key.hex() not in stderr  # logs say channel, epoch, reason: never a key
    finally:
        serve.cleanup()
        broker.stop()
