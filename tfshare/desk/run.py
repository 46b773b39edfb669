"""Running the agency's desk: the agent, its socket and (optionally) the web inbox, in one
asyncio loop until SIGINT or SIGTERM.

Owns: the order of start and stop - the socket answers only once the agent is built (key
unlocked, roster verified); on the way out the web inbox, the metrics endpoint and the socket
close first, so no call is accepted that the stopping agent could not finish.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from tfshare.agent import Agent
from tfshare.desk.server import serve
from tfshare.desk.service import Desk
from tfshare.protocol import Outcome
from tfshare.workflows.live import Agency

if TYPE_CHECKING:
    from tfshare.metrics import MetricsEndpoint


async def run_desk(
    agency: Agency,
    agent: Agent,
    *,
    state_dir: Path,
    clock: Callable[[], int],
    web: bool = False,
    web_port: int = 0,
    web_host: str = "127.0.0.1",
    metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1",
    metrics_ready: Callable[[str], None] = lambda _url: None,
    ready: Callable[[Desk], None] = lambda _desk: None,
    stop: asyncio.Event | None = None,
) -> Desk:
    """Serve the desk until ``stop`` (or a signal); returns the desk (its agent's stats).
    With ``metrics_port`` (0: any free port), also ``/metrics`` and ``/healthz`` there
    (``metrics_ready`` is told its address)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    desk = Desk(agency, agent, clock)
    server = await serve(desk, state_dir)
    inbox = None
    endpoint: MetricsEndpoint | None = None
    try:
        if metrics_port is not None:
            endpoint = await _start_metrics(desk, host=metrics_host, port=metrics_port)
            metrics_ready(endpoint.url)
        if web:
            from tfshare.web.app import start  # noqa: PLC0415 - aiohttp only when asked for

            inbox = await start(desk, host=web_host, port=web_port)
            desk.web = inbox
        ready(desk)
        await agent.run(stop)
    finally:
        if inbox is not None:
            await inbox.close()
        if endpoint is not None:
            await endpoint.close()
        await server.close()
    return desk


async def _start_metrics(desk: Desk, *, host: str, port: int) -> MetricsEndpoint:
    """The metrics endpoint on the agent's loop; rejections are tallied by code from the
    agent's outcomes (the desk's own handler, the feed, still gets each of them)."""
    from tfshare import metrics  # noqa: PLC0415 - prometheus_client only when asked for

    rejects = metrics.RejectTally()
    feed = desk.agent.on_outcome

    def on_outcome(outcome: Outcome) -> None:
        rejects.observe(outcome)
        if feed is not None:
            feed(outcome)

    desk.agent.on_outcome = on_outcome
    registry = metrics.registry_of(metrics.AgentCollector(desk, rejects))
    return await metrics.start(
        registry,
        lambda: metrics.agent_health(desk),
        host=host,
        port=port,
        before_scrape=desk.refresh_backlog,
    )
