"""What the benchmarks share: the machine's facts for the report, and timing of two or more sides side by side."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load_average() -> float | None:
    """1-minute load average of the machine (other jobs inflate absolute times; ratios are taken side by side)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None


def side_by_side(fns, repeat: int, warmups=None, rounds: list | None = None) -> tuple[list[float], list[object]]:
    """Best wall time of each of ``fns`` over ``repeat`` rounds, the functions interleaved within a round (so that a
    change in the machine's load hits both sides alike), after one warm-up call of each (``warmups[i]``, default
    ``fns[i]``); and each one's last result. Every round's times are appended to ``rounds`` when it is given."""
    warmups = warmups or [None] * len(fns)
    for fn, warm in zip(fns, warmups):
        (warm or fn)()
    best, out = [float("inf")] * len(fns), [None] * len(fns)
    for _ in range(repeat):
        times = []
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            out[i] = fn()
            times.append(time.perf_counter() - t0)
            best[i] = min(best[i], times[-1])
        if rounds is not None:
            rounds.append(times)
    return best, out
