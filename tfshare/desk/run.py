"""Running the agency's desk: the agent, its socket and (optionally) the web inbox, in one
asyncio loop until SIGINT or SIGTERM.

Owns: the order of start and stop - the socket answers only once the agent is built (key
unlocked, roster verified); on the way out the web inbox and the socket close first, so no
call is accepted that the stopping agent could not finish.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path

from tfshare.agent import Agent
from tfshare.desk.server import serve
from tfshare.desk.service import Desk
from tfshare.workflows.live import Agency


async def run_desk(
    agency: Agency,
    agent: Agent,
    *,
    state_dir: Path,
    clock: Callable[[], int],
    web: bool = False,
    web_port: int = 0,
    web_host: str = "127.0.0.1",
    ready: Callable[[Desk], None] = lambda _desk: None,
    stop: asyncio.Event | None = None,
) -> Desk:
    """Serve the desk until ``stop`` (or a signal); returns the desk (its agent's stats)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    desk = Desk(agency, agent, clock)
    server = await serve(desk, state_dir)
    inbox = None
    try:
        if web:
            from tfshare.web.app import start  # noqa: PLC0415 - aiohttp only when asked for

            inbox = await start(desk, host=web_host, port=web_port)
            desk.web = inbox
        ready(desk)
        await agent.run(stop)
    finally:
        if inbox is not None:
            await inbox.close()
        await server.close()
    return desk
