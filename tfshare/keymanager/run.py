"""The key manager's commands, on an agency's verified setup (``workflows.live.Agency``).

Owns: ``serve`` (``tfshare keys serve``: run the ``KeyManager`` until SIGINT/SIGTERM) and
``resend`` (``tfshare keys resend``: queue a channel's current key once more for one reader,
in the key manager's own state, and publish what is queued).
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

from tfshare import transport
from tfshare.encoding import MAX_UINT
from tfshare.errors import UsageError
from tfshare.keymanager.plan import is_key_manager
from tfshare.keymanager.service import KeyManager, not_key_manager, queue_resend
from tfshare.keymanager.store import KeyManagerStore
from tfshare.workflows.filekinds import read_kind
from tfshare.workflows.live import Agency


def _now() -> int:
    return time.time_ns() // 1_000_000


def state_dir(agency: Agency) -> Path:
    """The agency's state directory: the key manager's database sits beside state.db."""
    return agency.store.path.parent


def open_store(agency: Agency) -> KeyManagerStore:
    return KeyManagerStore.in_state_dir(state_dir(agency), state_key=agency.identity().state_key)


def key_manager(
    agency: Agency, *, url: str, every_s: float = 2.0, first_epoch: int | None = None
) -> KeyManager:
    """The key manager of ``agency``; refuses (TrustError) an agency without the role,
    before its database is created. ``first_epoch``: the number a channel found delivered
    before by a lost database starts from (``KeyManager.first_epoch``)."""
    if first_epoch is not None and not 2 <= first_epoch <= MAX_UINT:
        raise UsageError(
            f"--first-epoch must be 2 or more (got {first_epoch})",
            hint="give a number above every epoch the channel's readers hold ('tfshare agent "
            "status' lists them)",
        )
    identity = agency.identity()
    if not is_key_manager(agency.roster, identity.agency_id):
        raise not_key_manager(agency.roster, identity.agency_id)
    return KeyManager(
        identity=identity,
        roster=agency.roster,
        roster_bytes=read_kind(agency.roster_path, "roster"),
        store=open_store(agency),
        url=url,
        clock=_now,
        accept_roster=agency.accept_roster,
        every_s=every_s,
        tls=agency.tls,
        js_domain=agency.js_domain,
        first_epoch=first_epoch,
    )


def serve(manager: KeyManager) -> KeyManager:
    """Run ``manager`` until SIGINT/SIGTERM; returns it (for its counts)."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await manager.run(stop)

    try:
        asyncio.run(main())
    finally:
        manager.store.close()
    return manager


def resend(agency: Agency, *, url: str, channel: str, to: str) -> tuple[int, int]:
    """Queue the current key of ``channel`` for ``to`` and publish the key manager's queue
    (a ``keys serve`` running meanwhile may publish it too: the Nats-Msg-Id makes the second
    a duplicate). Returns (epoch, envelopes published)."""
    manager = key_manager(agency, url=url)
    try:
        epoch = queue_resend(
            manager.identity,
            manager.roster,
            manager.store,
            channel,
            to,
            now_ms=_now(),
            rng=manager.rng,
        )

        async def publish() -> int:
            conn = await transport.connect(
                url,
                nkey_seed=manager.identity.nats_seed_encoded(),
                agency=manager.agency,
                name=f"tfshare-keys-resend-{manager.agency}",
                reconnect=False,
                tls=agency.tls,
                js_domain=agency.js_domain,
            )
            try:
                return await manager.flush(conn)
            finally:
                await conn.close()

        return epoch, asyncio.run(publish())
    finally:
        manager.store.close()
