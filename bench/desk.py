"""Desk benchmark (issue 13): the agent that holds the key, beside the direct path, in one run.

On a real nats-server, with police's profile (a key file at the REAL default Argon2id cost,
``keyfile.DEFAULT_KDF``), every CLI command a subprocess as an analyst runs it:

1. ``tfshare publish alert --channel alerts --body-file examples/alert.json``, wall time of the
   whole command through the running agent (median after warm-up), beside ``tfshare --version``
   (target <= 2x) and beside the same command without an agent (passphrase file, key
   derivation, NATS connection: the path of today).
2. Stored-to-shown delay of ``tfshare listen --json``: labour publishes alerts (a steady run,
   then a burst all at once) from another process; for each line the bench reads, delay = the
   moment it read the line - the ``received_ms`` police's agent stored for that message (one
   machine, one clock). Through the agent (pushed) beside without it (listen polls the inbox
   that an agent without a desk fills). Target p99 <= 50 ms.
3. The same in the web inbox, measured by the browser: headless Chromium (Selenium) logged in
   with a one-time link keeps the inbox open; a MutationObserver, installed by the driver
   (nothing is injected into the page's code), records ``Date.now()`` when app.js inserts each
   row (``tr.msg[data-msg-id]``) and at the next animation frame (painted). Then the same
   session's ``/events`` read by a plain HTTP client, the browser closed: the server's share.
4. The agent's resident memory: idle without the web inbox, and with it and a page open.

``--quick``: a few messages and runs, to check that the script works.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "integration"))

from livekit import free_port  # noqa: E402
from tfkit import TaskForce, build_taskforce  # noqa: E402

from tfshare import profiles, transport  # noqa: E402
from tfshare.broker import channel_subject  # noqa: E402
from tfshare.encoding import encode  # noqa: E402
from tfshare.keyfile import DEFAULT_KDF, KDF_PROFILES, seal_keyfile  # noqa: E402
from tfshare.logconfig import configure  # noqa: E402
from tfshare.store import StateStore  # noqa: E402
from tfshare.workflows.live import start_broker  # noqa: E402

TFSHARE = Path(sys.executable).parent / "tfshare"
ALERT = REPO / "examples" / "alert.json"
PASSPHRASE = "police desk bench passphrase"
RATE = 20  # msg/s of the steady run: an agency's busy hour, well above a real one

_FORK = multiprocessing.get_context("fork")  # the publisher inherits the keys: nothing pickled


def _now() -> int:
    return time.time_ns() // 1_000_000


def _now_ms_float() -> float:
    return time.time_ns() / 1e6


Runs = tuple[list[float], list[float]]  # (steady, burst) delays, ms


@dataclass
class Sizes:
    runs: int  # timed runs of each command
    warmup: int
    steady: int  # messages of the steady run
    burst: int  # messages published at once


FULL = Sizes(runs=15, warmup=3, steady=200, burst=100)
QUICK = Sizes(runs=3, warmup=1, steady=20, burst=10)


@dataclass
class Setup:
    """The task force, its broker and police's profile on this machine."""

    tf: TaskForce
    url: str
    root: Path
    passphrase_file: Path
    state_dir: Path
    env: dict[str, str]
    seq: int = 0  # labour's last sequence number on "alerts"

    def next_seqs(self, n: int) -> int:
        first = self.seq + 1
        self.seq += n
        return first


def make_setup(root: Path, url: str, tf: TaskForce) -> Setup:
    """police's profile: its key file sealed at the default KDF cost, roster, anchor."""
    keys = root / "keys"
    keys.mkdir()
    key = keys / "police.key"
    key.write_bytes(
        seal_keyfile(
            tf.ids["police"],
            PASSPHRASE.encode(),
            limits=KDF_PROFILES[DEFAULT_KDF],
            rng=os.urandom,
        )
    )
    os.chmod(key, 0o600)
    (keys / "r.tfroster").write_bytes(tf.roster_bytes)
    (keys / "a.tfanchor").write_bytes(encode(tf.anchor))
    passphrase_file = keys / "police.pass"
    passphrase_file.write_text(PASSPHRASE + "\n")
    os.chmod(passphrase_file, 0o600)
    home = root / "home"
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(home),
        "TFSHARE_HOME": str(home),
        "TFSHARE_PROFILE": "police",
        "LC_ALL": "C.UTF-8",
        "PYTHONIOENCODING": "utf-8",
    }
    previous = os.environ.get("TFSHARE_HOME")
    os.environ["TFSHARE_HOME"] = str(home)
    try:
        profile = profiles.create(
            "police",
            agency="police",
            server=url,
            roster=keys / "r.tfroster",
            anchor=keys / "a.tfanchor",
            key=key,
            passphrase=PASSPHRASE.encode(),
            kdf=DEFAULT_KDF,
            now_ms=_now(),
        )
    finally:
        if previous is None:
            del os.environ["TFSHARE_HOME"]
        else:
            os.environ["TFSHARE_HOME"] = previous
    return Setup(tf, url, root, passphrase_file, profile.state, env)


# -- figures -------------------------------------------------------------------------------


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    kib = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
    return kib / 1024


def wall_ms(setup: Setup, args: list[str], sizes: Sizes) -> float:
    """Median wall time (ms) of the whole command, after warm-up runs; each must exit 0."""
    samples = []
    for i in range(sizes.warmup + sizes.runs):
        start = time.perf_counter()
        result = subprocess.run(
            [str(TFSHARE), *args],
            cwd=REPO,
            env=setup.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
        )
        elapsed = (time.perf_counter() - start) * 1e3
        if result.returncode != 0:
            said = result.stderr.decode(errors="replace")
            raise RuntimeError(f"tfshare {' '.join(args)}: exit {result.returncode}\n{said}")
        if i >= sizes.warmup:
            samples.append(elapsed)
    return statistics.median(samples)


PUBLISH = ["publish", "alert", "--channel", "alerts", "--body-file", str(ALERT)]


# -- labour, another agency, publishing from its own process --------------------------------


def alert_body(severity: str) -> bytes:
    """examples/alert.json (critical) with another severity, encoded as sealed."""
    from tfshare.registry.book import shipped  # noqa: PLC0415

    schema = shipped().lookup("tf.alert/1")
    assert schema is not None
    document = json.loads(ALERT.read_bytes())
    document["severity"] = severity
    return schema.to_body(schema.from_json(json.dumps(document).encode()))


def _publish_child(
    tf: TaskForce, url: str, first_seq: int, n: int, rate: float, severity: str, out: Any
) -> None:
    """Publish n alerts as labour: paced at ``rate`` msg/s, or (rate 0) sealed first and then
    all in flight at once. Sends back the msg_ids."""
    body = alert_body(severity)

    def sealed(i: int) -> Any:
        return tf.seal(
            "labour", body=body, now_ms=_now(), seq=first_seq + i, rng_seed=os.urandom(8).hex()
        )  # fmt: skip

    async def run() -> list[str]:
        subject = channel_subject(tf.trusted().taskforce, "alerts", "labour")
        conn = await transport.connect(
            url, nkey_seed=tf.ids["labour"].nats_seed_encoded(), agency="labour", name="bench"
        )
        ids: list[str] = []
        try:
            if rate:
                start = time.perf_counter()
                for i in range(n):
                    await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
                    s = sealed(i)
                    await transport.publish(conn, subject, s.data, msg_id=s.msg_id.hex())
                    ids.append(s.msg_id.hex())
            else:
                batch = [sealed(i) for i in range(n)]
                results = await transport.publish_many(
                    conn, [(subject, s.data, s.msg_id.hex()) for s in batch], timeout=30
                )
                if not all(isinstance(r, tuple) for r in results):
                    raise RuntimeError(f"burst refused: {results}")
                ids = [s.msg_id.hex() for s in batch]
        finally:
            await conn.close()
        return ids

    out.send(asyncio.run(run()))
    out.close()


def publish_from_labour(
    setup: Setup, n: int, *, rate: float, severity: str = "critical"
) -> list[str]:
    """Run labour's publisher in a forked process (its sealing never shares a GIL with the
    bench's reading); its msg_ids, once all are acknowledged by the broker."""
    first = setup.next_seqs(n)
    reader, writer = _FORK.Pipe(duplex=False)
    child = _FORK.Process(
        target=_publish_child,
        args=(setup.tf, setup.url, first, n, rate, severity, writer),
        daemon=True,
    )
    child.start()
    try:
        if not reader.poll(120):
            raise RuntimeError("labour's publisher sent nothing back")
        ids: list[str] = reader.recv()
    finally:
        child.join(timeout=10)
        if child.is_alive():
            child.kill()
    return ids


def received_ms(setup: Setup) -> dict[str, int]:
    """msg_id -> received_ms of police's inbox, from its state database."""
    store = StateStore(setup.state_dir / "state.db")
    try:
        return {i.msg_id.hex(): i.received_ms for i in store.inbox(limit=1_000_000)}
    finally:
        store.close()


def delays(setup: Setup, shown: dict[str, float], ids: list[str]) -> list[float]:
    stored = received_ms(setup)
    missing = [i for i in ids if i not in stored or i not in shown]
    if missing:
        raise RuntimeError(f"{len(missing)} of {len(ids)} messages not stored or not shown")
    return [shown[i] - stored[i] for i in ids]


# -- processes ------------------------------------------------------------------------------


@dataclass
class Background:
    process: subprocess.Popen[bytes]
    err: Path

    def stderr(self) -> str:
        return self.err.read_text(encoding="utf-8", errors="replace")

    def wait_stderr(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.stderr():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"waiting for {text!r}: exit {self.process.poll()}\n"
                                   f"{self.stderr()}")  # fmt: skip
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def spawn(
    setup: Setup, name: str, args: list[str], *, stdout: Any = subprocess.DEVNULL
) -> Background:
    err = setup.root / f"{name}.err"
    with err.open("wb") as stderr:
        process = subprocess.Popen(
            args, cwd=REPO, env=setup.env, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr
        )
    return Background(process, err)


def start_desk_agent(setup: Setup, *, web_port: int | None) -> Background:
    """``tfshare agent run`` (the desk), passphrase from the file, once."""
    args = [str(TFSHARE), "agent", "run", "--passphrase-file", str(setup.passphrase_file)]
    if web_port is not None:
        args += ["--web", "--web-port", str(web_port)]
    agent = spawn(setup, "agent-web" if web_port is not None else "agent", args)
    agent.wait_stderr("consuming from")
    return agent


def start_plain_agent(setup: Setup) -> Background:
    """An agent without a desk (no socket): what filled the inbox before issue 13, so that
    ``listen`` works directly, polling the inbox."""
    args = [sys.executable, str(Path(__file__).resolve()), "--plain-agent", setup.url]
    agent = spawn(setup, "plain-agent", args)
    agent.wait_stderr("plain agent running")
    return agent


def plain_agent(url: str) -> None:
    """Child process of ``start_plain_agent``: police's agent, as ``agent run`` ran it."""
    from tfshare.workflows import live  # noqa: PLC0415
    from tfshare.workflows.exchange import Credentials  # noqa: PLC0415

    profile = profiles.load("police")
    agency = live.Agency.load(
        Credentials(profile.key, PASSPHRASE.encode()),
        roster_path=profile.roster,
        anchor_path=profile.anchor,
        state_dir=profile.state,
        registry_dir=None,
    )
    agent = live.make_agent(agency, url=url, clock=_now)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        print("plain agent running", file=sys.stderr, flush=True)
        await agent.run(stop)

    asyncio.run(run())


# -- listen ---------------------------------------------------------------------------------


@dataclass
class Listener:
    """``tfshare listen --json`` and the moment (ms, wall clock) each line was read."""

    background: Background
    lines: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def read(self) -> None:
        stdout = self.background.process.stdout
        assert stdout is not None
        for line in stdout:
            at = _now_ms_float()
            msg_id = json.loads(line).get("msg_id")
            with self.lock:
                self.lines.setdefault(str(msg_id), at)

    def has(self, ids: list[str]) -> bool:
        with self.lock:
            return all(i in self.lines for i in ids)

    def wait(self, ids: list[str], timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not self.has(ids):
            if self.background.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"listen showed {sum(i in self.lines for i in ids)} of {len(ids)}\n"
                    f"{self.background.stderr()}"
                )
            time.sleep(0.02)


def wait_live(setup: Setup, shown: Any, what: str, timeout: float = 60) -> None:
    """Publish a primer every half second until one is shown: from then on the reader is
    live (its agent consuming, its feed subscribed or its inbox snapshot taken)."""
    deadline = time.monotonic() + timeout
    primers: list[str] = []
    while time.monotonic() < deadline:
        primers += publish_from_labour(setup, 1, rate=0)
        pause = time.monotonic() + 0.5
        while time.monotonic() < pause:
            if any(p in shown() for p in primers):
                return
            time.sleep(0.02)
    raise RuntimeError(f"{what} showed none of {len(primers)} primers")


def listen_delays(setup: Setup, sizes: Sizes, *, direct: bool) -> Runs:
    """(steady, burst) stored-to-shown delays (ms) of ``tfshare listen --json``."""
    args = [str(TFSHARE), "listen", "--json"]
    if direct:
        args += ["--passphrase-file", str(setup.passphrase_file)]
    background = spawn(setup, "listen-direct" if direct else "listen", args, stdout=subprocess.PIPE)
    listener = Listener(background)
    thread = threading.Thread(target=listener.read, daemon=True)
    thread.start()
    try:
        wait_live(setup, lambda: listener.lines, "listen")
        steady = publish_from_labour(setup, sizes.steady, rate=RATE)
        listener.wait(steady)
        burst = publish_from_labour(setup, sizes.burst, rate=0)
        listener.wait(burst)
    finally:
        background.stop()
        thread.join(timeout=5)
    with listener.lock:
        shown = dict(listener.lines)
    return delays(setup, shown, steady), delays(setup, shown, burst)


# -- the web inbox in a browser ---------------------------------------------------------------

# Installed through the driver (the page's CSP forbids inline script; the driver's script is
# not the page's): for each row app.js inserts, Date.now() at insertion and at the next frame.
OBSERVER = """
window.__benchInserted = {};
window.__benchPainted = {};
new MutationObserver(function (mutations) {
  var now = Date.now();
  mutations.forEach(function (m) {
    m.addedNodes.forEach(function (node) {
      if (node.nodeType !== 1 || !node.matches("tr.msg") || !node.dataset.msgId) { return; }
      var id = node.dataset.msgId;
      if (id in window.__benchInserted) { return; }
      window.__benchInserted[id] = now;
      requestAnimationFrame(function () { window.__benchPainted[id] = Date.now(); });
    });
  });
}).observe(document.getElementById("inbox-rows"), {childList: true});
"""


def chrome() -> Any:
    from selenium import webdriver  # noqa: PLC0415
    from selenium.webdriver.chrome.service import Service  # noqa: PLC0415

    for needed in ("/usr/bin/chromium", "/usr/bin/chromedriver"):
        if not Path(needed).exists():
            raise RuntimeError(
                f"{needed} is missing: the web inbox is measured in Debian's chromium "
                "(apt-get install chromium chromium-driver)"
            )
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        "--autoplay-policy=no-user-gesture-required",  # the high-severity cue sounds
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(30)
    return driver


@dataclass
class WebFigures:
    steady_inserted: list[float]
    steady_painted: list[float]
    burst_inserted: list[float]
    burst_painted: list[float]
    rss_open_mib: float
    rss_after_mib: float
    rows_at_open: int  # rows the inbox page listed when it was opened


def web_delays(
    setup: Setup, sizes: Sizes, agent: Background
) -> tuple[WebFigures, WebFigures, Runs]:
    """(critical alerts: the page's cue, a beep and a flash, for each; low ones: no cue;
    the same session's /events read by a plain HTTP client, the browser closed: the server's
    share of the page's delay)."""
    from tfshare.desk import api, client  # noqa: PLC0415

    desk = client.connect(setup.state_dir)
    if desk is None:
        raise RuntimeError("the agent's socket does not answer")
    link = desk.call(api.LoginRequest())
    assert isinstance(link, api.LoginLink)
    driver = chrome()
    try:
        driver.get(link.url)
        inbox_url = link.url.split("login?", 1)[0]
        deadline = time.monotonic() + 30
        while driver.current_url != inbox_url or not driver.execute_script(
            "var s = document.getElementById('live-state');"
            "return !!s && s.dataset.state === 'live';"
        ):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the inbox did not go live (at {driver.current_url})")
            time.sleep(0.05)
        driver.execute_script(OBSERVER)

        def seen(which: str = "__benchPainted") -> dict[str, float]:
            found: dict[str, float] = driver.execute_script(f"return window.{which};")
            return found

        wait_live(setup, seen, "the web inbox")
        time.sleep(2)  # settled, the page open
        rss_open = rss_mib(agent.process.pid)
        rows: int = driver.execute_script(
            "return document.querySelectorAll('#inbox-rows tr.msg').length;"
        )

        def run(n: int, rate: float, severity: str) -> Runs:
            ids = publish_from_labour(setup, n, rate=rate, severity=severity)
            deadline = time.monotonic() + 120
            while not all(i in seen() for i in ids):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the page showed {sum(i in seen() for i in ids)} of {n}")
                time.sleep(0.2)
            return delays(setup, seen("__benchInserted"), ids), delays(setup, seen(), ids)

        figures = []
        for severity in ("critical", "low"):
            steady = run(sizes.steady, RATE, severity)
            burst = run(sizes.burst, 0, severity)
            rss = rss_mib(agent.process.pid)
            figures.append(WebFigures(*steady, *burst, rss_open, rss, rows))
        cookie = "; ".join(f"{c['name']}={c['value']}" for c in driver.get_cookies())
    finally:
        driver.quit()
    return figures[0], figures[1], stream_delays(setup, sizes, inbox_url, cookie)


def stream_delays(setup: Setup, sizes: Sizes, inbox_url: str, cookie: str) -> Runs:
    """Stored-to-received delays of the web inbox's event stream at a plain HTTP client."""
    import http.client  # noqa: PLC0415
    import urllib.parse  # noqa: PLC0415

    where = urllib.parse.urlsplit(inbox_url)
    conn = http.client.HTTPConnection(where.hostname or "127.0.0.1", where.port, timeout=120)
    conn.request("GET", "/events", headers={"Cookie": cookie, "Accept": "text/event-stream"})
    response = conn.getresponse()
    if response.status != 200:
        raise RuntimeError(f"/events answered {response.status}")
    got: dict[str, float] = {}

    def read() -> None:
        # conn.close() at the end stops the loop: http.client then fails as it reads on
        with contextlib.suppress(OSError, ValueError, AttributeError):
            for line in response:
                if line.startswith(b"data: "):
                    got.setdefault(str(json.loads(line[6:])["msg_id"]), _now_ms_float())

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    try:
        wait_live(setup, lambda: got, "the event stream")
        runs = []
        for n, rate in ((sizes.steady, RATE), (sizes.burst, 0)):
            ids = publish_from_labour(setup, n, rate=rate)
            deadline = time.monotonic() + 120
            while not all(i in got for i in ids):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the event stream gave {sum(i in got for i in ids)} of {n}")
                time.sleep(0.05)
            runs.append(delays(setup, got, ids))
    finally:
        conn.close()
    return runs[0], runs[1]


# -- the run --------------------------------------------------------------------------------


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="few messages and runs")
    parser.add_argument("--plain-agent", metavar="URL", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.plain_agent:
        plain_agent(options.plain_agent)
        return
    sizes = QUICK if options.quick else FULL
    configure("warning")
    load_before = load()
    tf = build_taskforce(now_ms=_now())
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        broker = start_broker(
            tf.trusted(), root / "broker", port=free_port(), roster_bytes=tf.roster_bytes
        )
        try:
            setup = make_setup(root, broker.url, tf)
            version_ms = wall_ms(setup, ["--version"], sizes)
            direct_ms = wall_ms(
                setup, [*PUBLISH, "--passphrase-file", str(setup.passphrase_file)], sizes
            )
            plain = start_plain_agent(setup)
            try:
                direct_steady, direct_burst = listen_delays(setup, sizes, direct=True)
            finally:
                plain.stop()
            agent = start_desk_agent(setup, web_port=None)
            try:
                time.sleep(3)  # start-up settled, nothing asked yet
                rss_idle = rss_mib(agent.process.pid)
                agent_ms = wall_ms(setup, PUBLISH, sizes)
                desk_steady, desk_burst = listen_delays(setup, sizes, direct=False)
            finally:
                agent.stop()
            web_agent = start_desk_agent(setup, web_port=free_port())
            try:
                web = web_delays(setup, sizes, web_agent)
            finally:
                web_agent.stop()
        finally:
            broker.stop()
    report(sizes, load_before, version_ms, direct_ms, agent_ms, rss_idle, web,
           (direct_steady, direct_burst), (desk_steady, desk_burst))  # fmt: skip


def _pair(samples: list[float]) -> str:
    p50, p99 = percentiles(samples)
    return f"p50 {p50:6.1f} p99 {p99:6.1f}"


def report(
    sizes: Sizes,
    load_before: str,
    version_ms: float,
    direct_ms: float,
    agent_ms: float,
    rss_idle: float,
    web: tuple[WebFigures, WebFigures, Runs],
    direct: Runs,
    desk: Runs,
) -> None:
    cost = KDF_PROFILES[DEFAULT_KDF]
    print(
        f"\ndesk (issue 13; real nats-server; police's key at the default KDF "
        f"'{DEFAULT_KDF}': Argon2id {cost.memlimit // 2**20} MiB, ops {cost.opslimit}; "
        f"{os.cpu_count()} cores; load average {load_before} before, {load()} after):"
    )
    print(f"  CLI wall time, median of {sizes.runs} after {sizes.warmup} warm-up runs (ms):")
    print(f"    tfshare --version                          {version_ms:7.0f}")
    print(
        f"    publish alert through the agent            {agent_ms:7.0f}   "
        f"{agent_ms / version_ms:.2f}x --version (target <= 2x)"
    )
    print(
        f"    publish alert directly (no agent)          {direct_ms:7.0f}   "
        f"{direct_ms / version_ms:.2f}x --version; through the agent is "
        f"{direct_ms / agent_ms:.1f}x faster"
    )
    print(
        f"  stored-to-shown delay (ms; received_ms in the inbox -> shown), {sizes.steady} "
        f"alerts at {RATE}/s, then {sizes.burst} at once:"
    )
    loud, quiet, stream = web
    rows = (
        ("listen through the agent", desk),
        ("listen directly (polls)", direct),
        ("web page, row inserted", (loud.steady_inserted, loud.burst_inserted)),
        ("web page, shown (frame)", (loud.steady_painted, loud.burst_painted)),
        ("  low severity (no cue)", (quiet.steady_painted, quiet.burst_painted)),
        ("web /events, HTTP client", stream),
    )
    for name, (steady, burst) in rows:
        print(f"    {name:26s} steady {_pair(steady)}   burst {_pair(burst)}")
    print(
        "    (critical alerts, examples/alert.json: the page cues each one, sound and flash; "
        "'shown' is the first animation frame after app.js inserted the row; the page "
        f"listed {loud.rows_at_open} messages when opened)"
    )

    def worst(*runs: list[float]) -> float:
        return max(percentiles(samples)[1] for samples in runs)

    ratio = percentiles(direct[0])[1] / percentiles(desk[0])[1]
    print(
        f"    worst p99 (target <= 50): listen {worst(*desk):.1f} ({ratio:.0f}x lower than "
        f"directly, steady); web page {worst(loud.steady_painted, loud.burst_painted):.1f}, "
        f"{worst(quiet.steady_painted, quiet.burst_painted):.1f} without the cue, its event "
        f"stream {worst(*stream):.1f}"
    )
    print(
        f"  agent resident memory (MiB): idle, no web {rss_idle:.1f};  web inbox with a page "
        f"open {loud.rss_open_mib:.1f} ({loud.rss_open_mib / rss_idle:.2f}x), after the feed "
        f"runs {quiet.rss_after_mib:.1f} ({quiet.rss_after_mib / rss_idle:.2f}x)"
    )


if __name__ == "__main__":
    main()
