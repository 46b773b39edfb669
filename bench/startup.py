"""CLI start-up benchmark: ``tfshare --version`` and ``--help`` beside a Python that only
imports typer, in one run.

Each figure is the median wall time of RUNS runs (after WARMUPS unmeasured ones, so the
page cache and .pyc files are warm), in milliseconds, of a whole process as a person runs
it: the venv's ``tfshare`` console script, against ``python -c "import typer"`` (the least a
typer CLI can cost) and, for scale, ``python -c pass``. The commands take turns, round by
round, so a busy moment of the machine falls on all of them alike. Beside the wall time, the
CPU time (user + system) of each process: steadier on a machine other work shares.
Target (issue 13): ``tfshare --version`` <= 1.5x the typer baseline.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
RUNS = 15
WARMUPS = 2
TARGET = 1.5


def _run_ms(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU (user + system) milliseconds of one run of ``argv``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(
        argv,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
        timeout=60,
    )
    wall = (time.perf_counter() - start) * 1e3
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1e3
    return wall, cpu


def main() -> None:
    python = str(BIN / "python")
    commands = {
        "python -c pass": [python, "-c", "pass"],
        "python -c 'import typer'": [python, "-c", "import typer"],
        "tfshare --version": [str(BIN / "tfshare"), "--version"],
        "tfshare --help": [str(BIN / "tfshare"), "--help"],
    }
    baseline_name = "python -c 'import typer'"
    with tempfile.TemporaryDirectory() as home:
        # No profile, no settings of the caller's: the start-up alone.
        env = {
            "PATH": os.environ.get("PATH", os.defpath),
            "HOME": home,
            "TFSHARE_HOME": home,
            "LC_ALL": "C.UTF-8",
        }
        samples: dict[str, list[float]] = {name: [] for name in commands}
        cpu: dict[str, list[float]] = {name: [] for name in commands}
        for round_ in range(WARMUPS + RUNS):
            for name, argv in commands.items():
                wall_ms, cpu_ms = _run_ms(argv, env)
                if round_ >= WARMUPS:
                    samples[name].append(wall_ms)
                    cpu[name].append(cpu_ms)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    cpu_medians = {name: statistics.median(values) for name, values in cpu.items()}
    baseline = medians[baseline_name]
    rows = [
        {
            "command": name,
            "median_ms": round(medians[name], 1),
            "min_ms": round(min(samples[name]), 1),
            "ratio": round(medians[name] / baseline, 3),
            "cpu_median_ms": round(cpu_medians[name], 1),
            "cpu_ratio": round(cpu_medians[name] / cpu_medians[baseline_name], 3),
        }
        for name in commands
    ]
    print(
        f"\nCLI start-up (issue 13): wall time of the whole process, median of {RUNS} runs "
        f"after {WARMUPS} warm-ups, milliseconds"
    )
    head = ("command", "median ms", "min ms", "vs typer", "cpu ms", "vs typer")
    print("{:>26} {:>10} {:>8} {:>9} {:>8} {:>9}".format(*head))
    for r in rows:
        print(
            f"{r['command']!s:>26} {r['median_ms']!s:>10} {r['min_ms']!s:>8} {r['ratio']!s:>8}x "
            f"{r['cpu_median_ms']!s:>8} {r['cpu_ratio']!s:>8}x"
        )
    version_ratio = medians["tfshare --version"] / baseline
    verdict = "met" if version_ratio <= TARGET else "NOT met"
    print(
        f"baseline: {baseline_name} ({baseline:.1f} ms). Target: tfshare --version <= "
        f"{TARGET}x the baseline: {version_ratio:.2f}x, {verdict}."
    )
    out = REPO / "bench-out"
    out.mkdir(exist_ok=True)
    (out / "startup.json").write_text(json.dumps(rows, indent=2))
    print(f"figures written to {out / 'startup.json'}")


if __name__ == "__main__":
    main()
