"""Throughput of the zoo models: images per second for a forward pass and for forward + backward.

``python benchmarks/bench_models.py [out_dir]`` writes ``models.json`` and ``models.md`` under
``benchmarks/results/`` (or ``out_dir``), for every architecture of the zoo, both tiers (:data:`NAMES`: the
conceptworld-hard members are left out, their architectures are the conceptworld ones). Batch 64, untrained
models (throughput does not depend on the weights), eval mode for the forward pass and train mode for forward +
backward, on the CPU with 1 and with 2 torch threads. Each figure is the median over ``repeats`` timed runs
after a warm-up. The machine may be shared: compare figures from one run with each other, not across runs.
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from xailib.layers import model_state
from xailib.models import ZOO_NAMES, build_model, parse_zoo_name
from xailib.utils import repo_root

BATCH = 64
#: One zoo name per architecture: conceptworld-hard's members are conceptworld's architectures.
NAMES: tuple[str, ...] = tuple(n for n in ZOO_NAMES if parse_zoo_name(n).dataset != "conceptworld-hard")


def _median_seconds(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_model(name: str, batch: int = BATCH, repeats: int = 5) -> dict:
    """Forward and forward+backward images/s of zoo model ``name`` at batch ``batch`` on the CPU."""
    spec = parse_zoo_name(name)
    torch.manual_seed(0)
    model = build_model(spec.arch, spec.dataset, spec.tier, class_names=[f"c{i}" for i in range(10)])
    x = torch.rand(batch, *model.input_shape, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 10, (batch,), generator=torch.Generator().manual_seed(1))

    def forward():
        with torch.no_grad():
            model(x)

    def forward_backward():
        model.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()

    with model_state(model, train=False):
        t_fwd = _median_seconds(forward, repeats)
    with model_state(model, train=True):
        t_fb = _median_seconds(forward_backward, repeats)
    return {
        "model": name,
        "tier": spec.tier,
        "params": sum(p.numel() for p in model.parameters()),
        "input_shape": list(model.input_shape),
        "batch": batch,
        "forward_img_per_s": round(batch / t_fwd, 1),
        "forward_backward_img_per_s": round(batch / t_fb, 1),
        "forward_ms": round(1000 * t_fwd, 2),
        "forward_backward_ms": round(1000 * t_fb, 2),
    }


def main(out_dir: str | Path | None = None, repeats: int = 5, threads: tuple[int, ...] = (1, 2)) -> list[dict]:
    """Benchmark every zoo architecture (:data:`NAMES`) at each thread count; write ``models.json`` and
    ``models.md`` to ``out_dir``.

    Returns the rows (one per model and thread count).
    """
    out = Path(out_dir) if out_dir is not None else repo_root() / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    previous = torch.get_num_threads()
    rows = []
    try:
        for t in threads:
            torch.set_num_threads(t)
            rows += [dict(bench_model(n, repeats=repeats), threads=t) for n in NAMES]
    finally:
        torch.set_num_threads(previous)
    meta = {"torch": torch.__version__, "threads": list(threads), "device": "cpu",
            "machine": f"{platform.machine()} {platform.processor()}".strip(), "batch": BATCH,
            "date": time.strftime("%Y-%m-%d %H:%M")}
    (out / "models.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")
    lines = [
        "# Zoo model throughput (CPU)",
        "",
        f"Batch {BATCH}, torch {meta['torch']}, {meta['machine']}, {meta['date']}. "
        "Median of timed runs after warm-up; the machine may be shared, so compare rows of one run.",
        "",
        "| model | tier | params | threads | forward img/s | forward+backward img/s |",
        "|---|---|---|---|---|---|",
    ] + [f"| {r['model']} | {r['tier']} | {r['params']} | {r['threads']} | {r['forward_img_per_s']:.0f} | "
         f"{r['forward_backward_img_per_s']:.0f} |" for r in rows]
    (out / "models.md").write_text("\n".join(lines) + "\n")
    return rows


if __name__ == "__main__":
    for row in main(sys.argv[1] if len(sys.argv) > 1 else None):
        print(f"{row['model']:>28} ({row['threads']} thr): forward {row['forward_img_per_s']:8.0f} img/s, "
              f"forward+backward {row['forward_backward_img_per_s']:8.0f} img/s")
