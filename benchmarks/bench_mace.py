"""MACE speed ratios, measured side by side in one run (CPU, one thread unless --threads).

(a) Explaining one image for every class (target: at most 2x one forward pass of the base model).
    ``xailib.mace.explain.explain(model, mace, point, x)`` for one image and all ``K`` classes (one tapped forward
    pass of the base model, then the MACE unit on the tapped map: every class's concept maps, at the tapped layer's
    resolution, and relevances) against ``model(x)`` on the same image, in eval mode without gradients. Also with
    ``upsample=True`` (all ``K x C`` maps resized to the image as well, :func:`xailib.maps.resize_bilinear`), and
    for a batch of 64 images.
(b) Training throughput: one MACE training step (the total loss of Sec. 3.4 on a class-balanced batch of the
    cached tapped maps, backward, Adam) against one forward pass of the base model on the same batch of images;
    the ratio is step time / forward time. The base model runs once per image for a whole training run (its
    outputs are cached, :func:`xailib.mace.training.tap_all`), not once per batch and class: the forward passes of
    a ``train_mace`` run are counted.

MACE as in the paper: ``C = 10`` concepts per class, ``Q = 32``; untrained weights (speed does not depend on them).
Models: the zoo's ``vgg-conceptworld-hard`` and ``resnet-conceptworld-hard``, input 3 x 64 x 64.

Timing: the best of :data:`ROUNDS` rounds of :data:`REPEAT` calls each, the sides interleaved within a round.

Usage: python benchmarks/bench_mace.py [--out benchmarks/results] [--threads 1] [--quick]
Writes ``mace.json`` and ``mace.md`` to the output folder.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._common import cpu_model, git_commit, load_average, side_by_side  # noqa: E402
from xailib.afi.experiments import per_class  # noqa: E402
from xailib.data import load_dataset  # noqa: E402
from xailib.layers import model_state  # noqa: E402
from xailib.mace.explain import explain  # noqa: E402
from xailib.mace.model import MACE, Tapped, find_tap_point  # noqa: E402
from xailib.mace.training import balanced_batches, mace_loss, tap_all, train_mace  # noqa: E402
from xailib.models import load_model  # noqa: E402

MODELS = ("vgg-conceptworld-hard", "resnet-conceptworld-hard")
DATASET = "conceptworld-hard"
ROUNDS, REPEAT = 5, 20
PER_CLASS = 4           # (b): a batch of 10 classes x 4 images


def _repeat(fn, n):
    def run():
        for _ in range(n):
            out = fn()
        return out
    return run


def bench_explain(model, mace, point, images, rounds, repeat) -> dict:
    out = {}
    for label, x, up in (("one image", images[:1], False), ("one image, its maps upsampled,", images[:1], True),
                         ("64 images", images[:64], False)):
        with model_state(model, train=False, requires_grad=False), torch.no_grad():
            (t_exp, t_fwd), _ = side_by_side([_repeat(lambda: explain(model, mace, point, x, upsample=up), repeat),
                                              _repeat(lambda: model(x), repeat)], rounds)
        out[label] = {"images": len(x), "upsample": up, "explain_s": t_exp / repeat, "forward_s": t_fwd / repeat,
                      "ratio": t_exp / t_fwd, "classes": mace.K}
    return out


def bench_training(model, mace, point, images, labels, rounds, repeat) -> dict:
    tapped = tap_all(model, point, images)
    idx = balanced_batches(labels, mace.K, PER_CLASS, 0)[0]
    batch = Tapped(tapped.x[idx], tapped.z[idx], tapped.logits[idx])
    xb, yb = images[idx], labels[idx]
    opt = torch.optim.Adam(mace.parameters(), lr=1e-4)

    def step():
        terms = mace_loss(mace, point, batch, yb)
        opt.zero_grad()
        terms["total"].backward()
        opt.step()

    with model_state(model, train=False, requires_grad=False):
        def forward():
            with torch.no_grad():
                return model(xb)
        (t_step, t_fwd), _ = side_by_side([_repeat(step, repeat), _repeat(forward, repeat)], rounds)
    calls = []
    hook = model.register_forward_hook(lambda *a: calls.append(1))
    try:
        train_mace(model, images, labels, mace=mace, epochs=2, per_class=PER_CLASS, progress=False)
    finally:
        hook.remove()
    n_batches = len(balanced_batches(labels, mace.K, PER_CLASS, 0))
    return {"batch": len(idx), "step_s": t_step / repeat, "forward_s": t_fwd / repeat, "ratio": t_step / t_fwd,
            "steps_per_s": repeat / t_step, "train_images": len(images), "train_epochs": 2,
            "train_batches": 2 * n_batches, "base_forward_calls": len(calls),
            "base_forward_images": len(images)}


def main(out_dir: str | Path = HERE / "results", threads: int = 1, quick: bool = False) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        rounds, repeat = (1, 3) if quick else (ROUNDS, REPEAT)
        pool = load_dataset(DATASET, "train", n=400, seed=0)
        images, labels = per_class(pool.images, pool.labels, 12)
        r: dict = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "git_commit": git_commit(),
                   "threads": threads, "cpu": cpu_model(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
                   "python": platform.python_version(), "rounds": rounds, "repeat": repeat,
                   "load_avg_1min_at_start": load_average(), "dataset": DATASET, "models": {}}
        for name in MODELS:
            model = load_model(name, device="cpu")
            point = find_tap_point(model)
            mace = MACE.for_model(model, point, images, n_concepts=10, embedding_dim=32)
            m = {"tap": point.layer, "dense": point.dense,
                 "a_explain": bench_explain(model, mace, point, images, rounds, repeat),
                 "b_training": bench_training(model, mace, point, images, labels, rounds, repeat)}
            r["models"][name] = m
            print(f"{name}: explain one image {m['a_explain']['one image']['ratio']:.2f}x a forward pass; "
                  f"training step {m['b_training']['ratio']:.2f}x a forward pass", flush=True)
        r["load_avg_1min_at_end"] = load_average()
        (out_dir / "mace.json").write_text(json.dumps(r, indent=2))
        (out_dir / "mace.md").write_text(_markdown(r))
        return r
    finally:
        torch.set_num_threads(old)


def _markdown(r: dict) -> str:
    lines = ["# MACE benchmark", "",
             f"{r['date']}, commit {r['git_commit']}; CPU {r['cpu']} ({r['cpu_count']} cores), {r['threads']} torch "
             f"thread(s); torch {r['torch']}, Python {r['python']}. MACE with C = 10, Q = 32 on {r['dataset']} "
             f"images (3 x 64 x 64). Best of {r['rounds']} rounds of {r['repeat']} calls, the sides interleaved; "
             f"1-min load average {r['load_avg_1min_at_start']} at start, {r['load_avg_1min_at_end']} at the end. "
             "How each side is counted: see the docstring of `benchmarks/bench_mace.py`.", "",
             "| measurement | model | time | ratio | target |", "|---|---|---|---|---|"]
    for name, m in r["models"].items():
        for label, a in m["a_explain"].items():
            lines.append(f"| (a) explain {label} for all {a['classes']} classes vs one forward pass | {name} | "
                         f"{1e3 * a['explain_s']:.2f} vs {1e3 * a['forward_s']:.2f} ms | {a['ratio']:.2f}x | <= 2x |")
    for name, m in r["models"].items():
        b = m["b_training"]
        lines.append(f"| (b) one training step (batch {b['batch']}) vs one forward pass of the base model on it | "
                     f"{name} | {1e3 * b['step_s']:.2f} vs {1e3 * b['forward_s']:.2f} ms ({b['steps_per_s']:.0f} "
                     f"steps/s) | {b['ratio']:.2f}x | |")
    lines += ["", "Checks:", ""]
    for name, m in r["models"].items():
        b = m["b_training"]
        lines.append(f"- {name}: tapped at `{m['tap']}`, z from `{m['dense']}`. A `train_mace` run of "
                     f"{b['train_epochs']} epochs ({b['train_batches']} batches) on {b['train_images']} images called "
                     f"the base model {b['base_forward_calls']} time(s) for {b['base_forward_images']} images (its "
                     "outputs cached: one call per 128 images for the whole run, never per class, batch or epoch).")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    main(args.out, threads=args.threads, quick=args.quick)
