"""ConceptWorld generation speed: images per second of sampling + rendering, and the time to build a dataset,
for every setting (``default``, ``hard``) side by side in one run.

Writes ``conceptworld.json`` and ``conceptworld.md`` to the output folder. Usage::

    python benchmarks/bench_conceptworld.py [OUT_DIR]

Timings are medians of a few repeats on a CPU with ``torch.set_num_threads(threads)`` (default 1, so the
numbers are comparable across machines with busy neighbours); ratios between rows matter more than absolutes.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(HERE.parent))

from xailib.data.conceptworld import SETTINGS, ConceptWorld, ConceptWorldDataset  # noqa: E402


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(out_dir: str | os.PathLike = HERE / "results", *, threads: int = 1, size: int = 64,
         batch_sizes: tuple[int, ...] = (256, 1024), dataset_n: int = 10000, repeats: int = 3,
         settings: tuple[str, ...] = tuple(SETTINGS)) -> dict:
    """Run the benchmark and write ``conceptworld.json`` / ``conceptworld.md`` into ``out_dir``.

    Parameters
    ----------
    out_dir : path-like
    threads : int
        ``torch.set_num_threads`` during the measurement (restored afterwards).
    size : int
        Image side.
    batch_sizes : tuple of int
        Batch sizes for the throughput rows.
    dataset_n : int
        Images in the timed :class:`ConceptWorldDataset` build.
    repeats : int
        Repeats per throughput row (median reported).
    settings : tuple of str
        World settings measured (default: all of :data:`xailib.data.conceptworld.SETTINGS`).

    Returns
    -------
    dict
        The JSON record.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    rows, builds = [], {}
    try:
        for setting in settings:
            world = ConceptWorld(size=size, seed=0, setting=setting)
            world.render(world.sample(16, seed=0))  # warm-up
            for bs in batch_sizes:
                rec = world.sample(bs, seed=1)
                t_sample = _median_time(lambda: world.sample(bs, seed=1), repeats)
                t_render = _median_time(lambda: world.render(rec), repeats)
                batch = world.render(rec)
                t_masks = _median_time(lambda: world._concept_masks(batch.part_index, batch.recipes,
                                                                    batch.clutter_index), repeats)
                rows.append({
                    "setting": setting,
                    "batch_size": bs,
                    "sample_s": t_sample,
                    "render_s": t_render,
                    "images_per_s": bs / (t_sample + t_render),
                    "concept_masks_s": t_masks,
                })
            t0 = time.perf_counter()
            ds = ConceptWorldDataset("train", n=dataset_n, seed=0, size=size, world=world)
            t_build = time.perf_counter() - t0
            assert len(ds) == dataset_n
            del ds
            builds[setting] = {"n": dataset_n, "seconds": t_build, "images_per_s": dataset_n / t_build}
    finally:
        torch.set_num_threads(old_threads)

    record = {
        "benchmark": "conceptworld",
        "size": size,
        "threads": threads,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "throughput": rows,
        "dataset_build": builds,
    }
    (out / "conceptworld.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [
        f"# ConceptWorld generation ({size}x{size})",
        "",
        f"torch {record['torch']}, {threads} thread(s), {record['cpu_count']} CPUs, {record['machine']}, "
        f"Python {record['python']}. Medians of {repeats} runs.",
        "",
        "| setting | batch | sample (s) | render (s) | images/s | concept masks (s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['setting']} | {r['batch_size']} | {r['sample_s']:.3f} | {r['render_s']:.3f} | "
                     f"{r['images_per_s']:.0f} | {r['concept_masks_s']:.3f} |")
    lines += [""]
    for setting, b in builds.items():
        lines.append(f"Dataset build, {setting} setting, {b['n']} train images: {b['seconds']:.1f} s "
                     f"({b['images_per_s']:.0f} images/s).")
    if "default" in builds and "hard" in builds:
        lines.append(f"The hard setting builds at {builds['hard']['images_per_s'] / builds['default']['images_per_s']:.2f}x "
                     "the default's rate (same run, same thread count).")
    lines += [""]
    (out / "conceptworld.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return record


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else HERE / "results")
