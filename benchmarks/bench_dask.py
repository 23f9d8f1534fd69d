"""What two local Dask workers give against one, measured side by side in one run.

(a) The runner: ``xailib.reproduce.reproduce`` on the smoke profile of :data:`NOTEBOOKS` (independent notebooks,
    one Dask task each), serially in this process, then with ``workers=1`` and ``workers=2`` (a ``LocalCluster`` of
    single-threaded worker processes; each notebook's kernel keeps the thread count a serial run gives it, so on a
    2-core machine two kernels share the cores). Wall time of the whole call, cluster start and stop included, into
    throw-away figures/build folders; and whether the tables are byte-identical to the serial run's.
(b) AfI's per-class occluders: ``learn_occluders`` on ``K = 10`` ConceptWorld-hard classes x :data:`N_PER_CLASS`
    images, :data:`MAX_ITER` steps at the default ``lam`` and ``lr``, in :data:`GROUPS` groups of classes
    (``classes_per_task``): serially in this process with one torch thread, and as Dask tasks on one and on two
    workers (each task with the caller's one thread; the clusters are started before the clock starts, the model
    and images scattered within it). Also the one batched run (all classes at once) with one and with two threads.
    Whether the occluders are bit for bit those of the serial groups.

Usage: python benchmarks/bench_dask.py [--out benchmarks/results]
Writes ``dask.json`` and ``dask.md``. About 5 minutes on a 2-core machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._common import cpu_model, git_commit, load_average  # noqa: E402
from xailib.afi.experiments import per_class  # noqa: E402
from xailib.afi.occluder import learn_occluders  # noqa: E402
from xailib.data import load_dataset  # noqa: E402
from xailib.models import load_model  # noqa: E402
from xailib.reproduce import environment_restored, reproduce  # noqa: E402

NOTEBOOKS = "gap/*,mace/01_*,mace/02_*,mace/03_*"
N_PER_CLASS, MAX_ITER, PER_TASK = 20, 60, 5
GROUPS = 10 // PER_TASK


def _tables(folder: Path) -> dict[str, str]:
    """Digests of the CSV tables, leaving out those of measured wall-clock times (their sidecar says so)."""
    def wall_clock(p: Path) -> bool:
        side = p.with_suffix(".json")
        return side.is_file() and bool(json.loads(side.read_text())["outputs"]["table"]["wall_clock"])
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.csv")) if not wall_clock(p)}


def bench_runner() -> dict:
    runs, tables = {}, {}
    for label, workers in (("serial", None), ("1 worker", 1), ("2 workers", 2)):
        tmp = Path(tempfile.mkdtemp(prefix="bench-dask-"))
        try:
            t0 = time.perf_counter()
            reproduce(NOTEBOOKS, "smoke", "cpu", progress=False, figures_dir=tmp / "figures", build_dir=tmp / "build",
                      stream=open(os.devnull, "w"), workers=workers)
            runs[label] = time.perf_counter() - t0
            tables[label] = _tables(tmp / "figures")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    same = {label: tables[label] == tables["serial"] for label in tables}
    return {"notebooks": NOTEBOOKS, "n_tables": len(tables["serial"]), "seconds": runs,
            "speedup_2_vs_1": runs["1 worker"] / runs["2 workers"], "speedup_2_vs_serial": runs["serial"] / runs["2 workers"],
            "tables_identical_to_serial": same}


def bench_occluders() -> dict:
    from distributed import Client, LocalCluster

    pool = load_dataset("conceptworld-hard", "train", n=600, seed=0)
    images, labels = per_class(pool.images, pool.labels, N_PER_CLASS)
    model = load_model("vgg-conceptworld-hard", device="cpu")
    kw = dict(max_iter=MAX_ITER, seed=0, progress=False)
    out, results = {}, {}
    old = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            t0 = time.perf_counter()
            results[f"batched, {threads} thread(s)"] = learn_occluders(model, images, labels, **kw)
            out[f"batched, {threads} thread(s)"] = time.perf_counter() - t0
        torch.set_num_threads(1)
        t0 = time.perf_counter()
        results["groups, serial"] = learn_occluders(model, images, labels, classes_per_task=PER_TASK, **kw)
        out["groups, serial"] = time.perf_counter() - t0
        for n in (1, 2):
            with environment_restored(), LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                                      dashboard_address=None) as cluster, Client(cluster) as client:
                t0 = time.perf_counter()
                results[f"groups, {n} worker(s)"] = learn_occluders(model, images, labels, client=client,
                                                                     classes_per_task=PER_TASK, **kw)
                out[f"groups, {n} worker(s)"] = time.perf_counter() - t0
    finally:
        torch.set_num_threads(old)
    ref = results["groups, serial"]
    return {"classes": 10, "images_per_class": N_PER_CLASS, "max_iter": MAX_ITER, "classes_per_task": PER_TASK,
            "groups": GROUPS, "iterations": ref.iterations, "seconds": out,
            "speedup_2_vs_1_worker": out["groups, 1 worker(s)"] / out["groups, 2 worker(s)"],
            "equal_to_serial_groups": {k: bool(torch.equal(r.occluders, ref.occluders)) for k, r in results.items()
                                       if k.startswith("groups")},
            "max_abs_diff_batched_vs_groups": float((results["batched, 1 thread(s)"].occluders
                                                     - ref.occluders).abs().max())}


def main(out_dir: str | Path = HERE / "results") -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    r = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "git_commit": git_commit(),
         "cpu": cpu_model(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
         "python": platform.python_version(), "load_avg_1min_at_start": load_average()}
    r["a_runner"] = bench_runner()
    r["b_occluders"] = bench_occluders()
    r["load_avg_1min_at_end"] = load_average()
    (out_dir / "dask.json").write_text(json.dumps(r, indent=2))
    (out_dir / "dask.md").write_text(_markdown(r))
    print(_markdown(r))
    return r


def _markdown(r: dict) -> str:
    a, b = r["a_runner"], r["b_occluders"]
    lines = ["# Dask benchmark: two local workers against one", "",
             f"{r['date']}, commit {r['git_commit']}; CPU {r['cpu']} ({r['cpu_count']} cores); torch {r['torch']}, "
             f"Python {r['python']}; 1-min load average {r['load_avg_1min_at_start']} at start, "
             f"{r['load_avg_1min_at_end']} at the end. One timed run of each side (minutes long, so one run each); "
             "how each side is counted: see the docstring of `benchmarks/bench_dask.py`.", "",
             f"## (a) The runner, smoke profile of `{a['notebooks']}`", "",
             "| run | wall time | tables byte-identical to the serial run's |", "|---|---|---|"]
    for label, s in a["seconds"].items():
        lines.append(f"| {label} | {s:.1f} s | {a['tables_identical_to_serial'][label]} ({a['n_tables']} tables; "
                     "those of measured wall-clock times left out) |")
    lines += ["", f"Two workers against one: {a['speedup_2_vs_1']:.2f}x; against the serial run: "
              f"{a['speedup_2_vs_serial']:.2f}x.", "",
              f"## (b) AfI's occluders, 10 classes x {b['images_per_class']} images, {b['max_iter']} steps, "
              f"{b['groups']} groups of {b['classes_per_task']} classes", "",
              "| run | wall time | occluders equal to the serial groups' |", "|---|---|---|"]
    for label, s in b["seconds"].items():
        eq = b["equal_to_serial_groups"].get(label)
        lines.append(f"| {label} | {s:.1f} s | {'bit for bit' if eq else ('no' if eq is False else '(batched: max |diff| ' + format(b['max_abs_diff_batched_vs_groups'], '.1e') + ')')} |")
    lines += ["", f"Two workers against one: {b['speedup_2_vs_1_worker']:.2f}x. Iterations per class: "
              f"{b['iterations']}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args()
    main(args.out)
