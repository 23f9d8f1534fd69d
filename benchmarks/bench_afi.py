"""AfI speed ratios, measured side by side in one run (CPU, one thread unless --threads).

(a) Occluder learning throughput against the raw model (target >= 80 %). ``learn_occluders`` on ``K = 10``
    classes x ``N_PER_CLASS`` ConceptWorld-hard training images, ``max_iter`` Adam steps, with a learning rate
    so small (``lr = 1e-7``) that no image flips and no class stops early: every step is a full step on every
    kept image (checked: ``result.iterations`` is ``max_iter`` for every class). Each step runs one forward and
    one backward pass on ``2 M`` image copies, ``x - delta`` and ``t(x - delta)`` for the ``M`` kept images,
    so the occluder's throughput is ``2 M * steps / seconds`` image copies per second, the seconds being the
    whole call (image selection, the final evaluation pass and validation included). The baseline runs the
    same model (eval mode, frozen parameters, as ``learn_occluders`` runs it) on a fixed batch of the same
    ``2 M`` copies, ``x`` and ``t(x)`` stacked: per step one forward, the true-class logits summed, and one
    backward to the input (``torch.autograd.grad`` w.r.t. the batch); throughput ``2 M * steps / seconds``.
    The ratio is occluder / baseline: what the occluder's clamp, per-class indexing of ``delta``,
    transformation ``t`` (noise, rotation, both passes), statistics and elementwise Adam cost on top. The
    per-step ratio also takes out the fixed cost of a call, timed as a 1-step call ``T(1)`` in the same round:
    ``2 M (max_iter - 1) / (T(max_iter) - T(1))`` against the baseline; with the default ``max_iter = 300`` the
    fixed cost is a small share of a run, with 30 steps it is not.
(b) All ``K`` classes in one batched ``learn_occluders`` run against one run per class
    (``learn_occluders(classes=[k])`` for each ``k``), at the default ``lam`` and ``lr`` (classes stop when
    they flip, so the batch shrinks as they do), ``max_iter`` steps: the wall-time ratio, and the largest
    absolute difference of the occluders (they are equal up to rounding by construction) and whether
    iterations and stop flags agree.
(c) Concept importance for all (class, concept, layer) at once (``concept_importance``, vectorised) against
    a Python loop over them calling ``xailib.metrics.mmd2`` on the same meta-detector outputs:
    ``N_CONCEPTS`` ConceptWorld concept sets and one random set of ``N_PROBE`` images each, the model's 5
    stages, ``K = 10`` classes (channel importance from the gradient baseline, cheap and real). One draw of
    every image (the paper's protocol); the loop computes ``M_{k,c} = sum_l MMD^2`` and the same
    normalisation (``max(M, 0) / sum_c``). ``concept_importance`` also runs its permutation test, kept to
    ``n_perm = 1`` here (work the loop does not do, counted against the vectorised side), and a bootstrap of
    ``n_boot = 1`` per row. Both sides include the same batched meta-detector forward pass; the ratio
    without it (each side minus that pass, timed on its own) is given too. Equality: the largest absolute
    differences of the raw ``mmd2`` and of the scores.

Models: the zoo's ``vgg-conceptworld-hard`` and ``resnet-conceptworld-hard`` (checkpoints in
``xailib/models/checkpoints``), input 3 x 64 x 64.

Timing: after a warm-up call of each side, the best of :data:`ROUNDS` rounds (a: 5, b: 1, c: 2; ``--quick``: 1 each
and 10 steps), the sides interleaved within a round so that a change in the machine's load hits both alike. About 3
minutes on one thread of a 2-core machine.

Usage: python benchmarks/bench_afi.py [--out benchmarks/results] [--threads 1] [--quick]
Writes ``afi.json`` and ``afi.md`` to the output folder.
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
from xailib.afi.attribution import meta_detector  # noqa: E402
from xailib.afi.concepts import concept_importance  # noqa: E402
from xailib.afi.experiments import class_channel_importance, per_class  # noqa: E402
from xailib.afi.occluder import Transform, learn_occluders  # noqa: E402
from xailib.data import load_dataset  # noqa: E402
from xailib.data.concepts import ConceptSet  # noqa: E402
from xailib.layers import model_state  # noqa: E402
from xailib.metrics import mmd2  # noqa: E402
from xailib.models import load_model  # noqa: E402

MODELS = ("vgg-conceptworld-hard", "resnet-conceptworld-hard")
DATASET = "conceptworld-hard"
N_PER_CLASS = 10        # images per class for (a) and (b); K = 10 classes
MAX_ITER = 30           # Adam steps of (a) and (b)
CONCEPTS = ("head", "wings", "legs", "fins", "stripes", "dots", "red", "yellow", "grass", "water")
N_PROBE = 50            # images per concept set and in the random set, (c)
TINY_LR = 1e-7          # (a): delta stays ~1e-6, nothing flips, no class stops early
ROUNDS = {"a": 5, "b": 1, "c": 2}  # timed rounds per measurement (b, the longest, one)


# -- (a) occluder learning throughput ------------------------------------------------------------------------------


def _raw_forward_backward(model, x2: torch.Tensor, y2: torch.Tensor, steps: int) -> None:
    """The baseline of (a): ``steps`` times one forward of ``x2: [2M, C, H, W]`` and one backward of the summed
    true-class logits to the input, in eval mode with frozen parameters."""
    with model_state(model, train=False, requires_grad=False):
        for _ in range(steps):
            x = x2.detach().requires_grad_(True)
            z = model(x)
            (g,) = torch.autograd.grad(z.gather(1, y2[:, None]).sum(), x)


def bench_throughput(model, images, labels, rep: int, max_iter: int) -> dict:
    learn = lambda n: learn_occluders(model, images, labels, lr=TINY_LR, max_iter=n, seed=0,  # noqa: E731
                                      progress=False)
    kept = torch.as_tensor(learn(1).kept, dtype=torch.long)            # the images that take part (Eq. 4)
    m = len(kept)
    x = images[kept]
    t = Transform(input_range=(0.0, 1.0))
    x2 = torch.cat([x, t(x, torch.Generator().manual_seed(0))])        # the same 2M copies: x and t(x)
    y2 = torch.as_tensor(labels)[kept].repeat(2)
    rounds: list = []
    (t_occ, t_raw, t_one), (res, _, _) = side_by_side(
        [lambda: learn(max_iter), lambda: _raw_forward_backward(model, x2, y2, max_iter), lambda: learn(1)], rep,
        [lambda: learn(2), lambda: _raw_forward_backward(model, x2, y2, 2), lambda: learn(1)], rounds)
    steps = sorted(set(res.iterations))
    copies = 2 * sum(n * it for n, it in zip(res.n_kept, res.iterations))  # image copies x steps actually run
    occ_rate, raw_rate = copies / t_occ, 2 * m * max_iter / t_raw
    # the ratio within each round (the sides back to back): its median and range show the machine's noise
    per_round = sorted((copies / o) / (2 * m * max_iter / r) for o, r, _ in rounds)
    # per step, without the fixed cost of a call (validation, the image selection's two forward passes, the
    # final evaluation): (T(max_iter) - T(1)) / (max_iter - 1), within each round
    marginal = sorted((2 * m * (max_iter - 1) / (o - one)) / (2 * m * max_iter / r) for o, r, one in rounds)
    return {"images": int(len(images)), "kept": m, "classes": len(res.classes), "max_iter": max_iter,
            "iterations_per_class": steps, "all_classes_ran_every_step": steps == [max_iter],
            "stopped_early": int(sum(res.stopped)), "copies_per_step": 2 * m,
            "occluder_s": t_occ, "raw_s": t_raw, "occluder_copies_per_s": occ_rate, "raw_copies_per_s": raw_rate,
            "ratio": occ_rate / raw_rate, "round_ratios": per_round,
            "median_round_ratio": per_round[len(per_round) // 2], "one_step_call_s": t_one,
            "per_step_round_ratios": marginal, "median_per_step_ratio": marginal[len(marginal) // 2], "target": 0.8}


# -- (b) all classes batched vs one at a time ---------------------------------------------------------------------


def bench_batched_vs_single(model, images, labels, rep: int, max_iter: int) -> dict:
    learn = lambda classes=None, n=max_iter: learn_occluders(model, images, labels, classes, max_iter=n,  # noqa
                                                             seed=0, progress=False)
    classes = sorted(set(torch.as_tensor(labels).tolist()))
    (t_batched, t_single), (res, singles) = side_by_side(
        [lambda: learn(), lambda: [learn([k]) for k in classes]], rep,
        [lambda: learn(n=2), lambda: learn([classes[0]], 2)])
    diff = max(float((res.occluder(k) - s.occluders[0]).abs().max()) for k, s in zip(classes, singles))
    scale = float(res.occluders.abs().max())
    return {"classes": len(classes), "max_iter": max_iter, "lam": res.lam, "lr": res.lr,
            "iterations_per_class": res.iterations, "stopped": int(sum(res.stopped)),
            "batched_s": t_batched, "one_at_a_time_s": t_single, "ratio": t_single / t_batched,
            "max_abs_diff_occluders": diff, "max_abs_occluder": scale,
            "iterations_equal": res.iterations == [s.iterations[0] for s in singles],
            "stopped_equal": res.stopped == [s.stopped[0] for s in singles]}


# -- (c) concept importance, vectorised vs a loop of mmd2 ----------------------------------------------------------


def _loop_scores(model, sets, rnd, cis, layers) -> tuple[torch.Tensor, torch.Tensor]:
    """``M [K, C]`` (sum over layers of MMD^2_u, one call of ``mmd2`` per class, concept and layer) and its
    normalised scores, from one batched meta-detector pass (the same as concept_importance's)."""
    images = torch.cat([s.images for s in sets] + [rnd.images])
    feats = meta_detector(model, images, cis, layers, flatten=True)   # {layer: [K, N_total, d_l]}
    k_cls = next(iter(cis.values())).shape[0]
    starts = [sum(len(s) for s in sets[:i]) for i in range(len(sets))]
    r0 = sum(len(s) for s in sets)
    m = torch.zeros(k_cls, len(sets), dtype=torch.float64)
    for k in range(k_cls):
        for c, (s, start) in enumerate(zip(sets, starts)):
            for name in layers:
                f = feats[name][k]
                m[k, c] += mmd2(f[start:start + len(s)], f[r0:r0 + len(rnd)])
    clipped = m.clamp_min(0)
    total = clipped.sum(1, keepdim=True)
    return m, torch.where(total > 0, clipped / torch.where(total > 0, total, torch.ones_like(total)), 0.0)


def bench_concepts(model, images, labels, rep: int, n_probe: int) -> dict:
    world = load_dataset(DATASET, "train", n=1).world
    sets = [ConceptSet.from_conceptworld(world, c, n=n_probe, seed=i) for i, c in enumerate(CONCEPTS)]
    rnd = ConceptSet.random_conceptworld(world, n_probe, seed=100)
    layers = list(model.stage_names)
    cis = class_channel_importance(model, images, labels, layers)    # gradient baseline, {layer: [K, C_l]}
    all_images = torch.cat([s.images for s in sets] + [rnd.images])
    (t_fwd, t_vec, t_loop), (_, table, (m, scores)) = side_by_side(
        [lambda: meta_detector(model, all_images, cis, layers, flatten=True),
         lambda: concept_importance(model, sets, rnd, cis, layers, n_perm=1, n_boot=1, seed=0),
         lambda: _loop_scores(model, sets, rnd, cis, layers)], rep)
    k_cls = m.shape[0]
    vec_m = torch.tensor(table["mmd2"].to_numpy()).view(k_cls, len(sets))
    vec_s = torch.tensor(table["score"].to_numpy()).view(k_cls, len(sets))
    return {"classes": k_cls, "concepts": len(sets), "layers": layers, "images_per_set": n_probe,
            "mmd_pairs": k_cls * len(sets) * len(layers), "n_perm": 1, "n_boot": 1,
            "meta_detector_forward_s": t_fwd, "vectorised_s": t_vec, "loop_s": t_loop, "ratio": t_loop / t_vec,
            "ratio_without_forward": (t_loop - t_fwd) / max(t_vec - t_fwd, 1e-9),
            "max_abs_diff_mmd2": float((vec_m - m).abs().max()), "max_abs_mmd2": float(m.abs().max()),
            "max_abs_diff_score": float((vec_s - scores).abs().max())}


# -- driver ----------------------------------------------------------------------------------------------------------


def main(out_dir: str | Path = HERE / "results", threads: int = 1, quick: bool = False) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _run(out_dir, threads, quick)
    finally:
        torch.set_num_threads(old_threads)


def _run(out_dir: Path, threads: int, quick: bool) -> dict:
    rounds = {k: 1 for k in ROUNDS} if quick else dict(ROUNDS)
    max_iter = 10 if quick else MAX_ITER
    pool = load_dataset(DATASET, "train", n=40 * N_PER_CLASS, seed=0)
    images, labels = per_class(pool.images, pool.labels, N_PER_CLASS)
    results: dict = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "git_commit": git_commit(),
        "threads": threads, "device": "cpu", "cpu": cpu_model(), "cpu_count": os.cpu_count(),
        "platform": platform.platform(), "torch": torch.__version__, "python": platform.python_version(),
        "rounds": rounds, "load_avg_1min_at_start": load_average(), "dataset": DATASET, "input": list(images.shape[1:]),
        "images": int(len(images)), "per_class": N_PER_CLASS, "models": {},
    }
    print(f"AfI benchmark: {len(images)} {DATASET} images, {threads} thread(s), rounds {rounds}", flush=True)
    for name in MODELS:
        model = load_model(name, device="cpu")
        r: dict = {}
        r["a_throughput"] = a = bench_throughput(model, images, labels, rounds["a"], max_iter)
        print(f"(a) {name}: occluder {a['occluder_copies_per_s']:.0f} copies/s, raw fwd+bwd "
              f"{a['raw_copies_per_s']:.0f} copies/s -> {100 * a['ratio']:.0f} %", flush=True)
        r["b_batched"] = b = bench_batched_vs_single(model, images, labels, rounds["b"], max_iter)
        print(f"(b) {name}: batched {b['batched_s']:.2f} s, one at a time {b['one_at_a_time_s']:.2f} s -> "
              f"{b['ratio']:.1f}x; max |diff| {b['max_abs_diff_occluders']:.2e}", flush=True)
        if name == MODELS[0]:
            r["c_concepts"] = c = bench_concepts(model, images, labels, rounds["c"], N_PROBE)
            print(f"(c) {name}: vectorised {c['vectorised_s']:.2f} s, loop {c['loop_s']:.2f} s -> {c['ratio']:.1f}x "
                  f"({c['ratio_without_forward']:.1f}x without the forward); max |diff| mmd2 "
                  f"{c['max_abs_diff_mmd2']:.2e}, score {c['max_abs_diff_score']:.2e}", flush=True)
        results["models"][name] = r
    results["load_avg_1min_at_end"] = load_average()
    (out_dir / "afi.json").write_text(json.dumps(results, indent=2))
    (out_dir / "afi.md").write_text(_markdown(results))
    return results


def _markdown(r: dict) -> str:
    lines = [
        "# AfI benchmark",
        "",
        f"{r['date']}, commit {r['git_commit']}; CPU {r['cpu']} ({r['cpu_count']} cores), {r['threads']} torch "
        f"thread(s); torch {r['torch']}, Python {r['python']}, {r['platform']}. {r['images']} {r['dataset']} training "
        f"images ({r['per_class']} per class), input {r['input']}. Best of {r['rounds']['a']}, {r['rounds']['b']} and "
        f"{r['rounds']['c']} timed rounds for (a), (b) and (c) after a warm-up, the sides interleaved in each round; "
        f"1-min load average {r['load_avg_1min_at_start']} at start, {r['load_avg_1min_at_end']} at the end "
        "(absolute times depend on the machine; the ratios are measured side by side). How each side is counted: "
        "see the docstring of `benchmarks/bench_afi.py`.",
        "",
        "| measurement | model | time | ratio | target |",
        "|---|---|---|---|---|",
    ]
    for name, m in r["models"].items():
        a = m["a_throughput"]
        lines.append(
            f"| (a) occluder learning vs raw forward + backward to the input, {a['copies_per_step']} image copies "
            f"(x - delta and t(x - delta)) x {a['max_iter']} steps | {name} | {a['occluder_copies_per_s']:.0f} vs "
            f"{a['raw_copies_per_s']:.0f} copies/s | {100 * a['ratio']:.0f} % (rounds: median "
            f"{100 * a['median_round_ratio']:.0f} %, {100 * a['round_ratios'][0]:.0f}-{100 * a['round_ratios'][-1]:.0f} %)"
            f" | >= 80 % |")
        lines.append(
            f"| (a) same, per step: the whole call's fixed cost (validation, image selection, final evaluation: "
            f"a 1-step call, {a['one_step_call_s']:.2f} s) taken out | {name} | | median "
            f"{100 * a['median_per_step_ratio']:.0f} % ({100 * a['per_step_round_ratios'][0]:.0f}-"
            f"{100 * a['per_step_round_ratios'][-1]:.0f} %) | >= 80 % |")
    for name, m in r["models"].items():
        b = m["b_batched"]
        lines.append(
            f"| (b) {b['classes']} classes in one batched run vs one run per class, {b['max_iter']} steps "
            f"| {name} | {b['batched_s']:.2f} s vs {b['one_at_a_time_s']:.2f} s | {b['ratio']:.1f}x | |")
    for name, m in r["models"].items():
        if "c_concepts" in m:
            c = m["c_concepts"]
            lines.append(
                f"| (c) concept importance, {c['classes']} classes x {c['concepts']} concepts x {len(c['layers'])} "
                f"layers x {c['images_per_set']} images: vectorised vs a loop of `mmd2` | {name} "
                f"| {c['vectorised_s']:.2f} s vs {c['loop_s']:.2f} s | {c['ratio']:.1f}x | |")
            lines.append(
                f"| (c) same, without the shared meta-detector forward ({c['meta_detector_forward_s']:.2f} s) "
                f"| {name} | {c['vectorised_s'] - c['meta_detector_forward_s']:.2f} s vs "
                f"{c['loop_s'] - c['meta_detector_forward_s']:.2f} s | {c['ratio_without_forward']:.1f}x | |")
    lines += ["", "Checks:", ""]
    for name, m in r["models"].items():
        a, b = m["a_throughput"], m["b_batched"]
        lines.append(
            f"- {name}: (a) {a['kept']} of {a['images']} images kept (Eq. 4's third constraint), steps per class "
            f"{a['iterations_per_class']} (every class ran every step: {a['all_classes_ran_every_step']}). (b) at "
            f"lam {b['lam']}, lr {b['lr']}: iterations per class {b['iterations_per_class']} ({b['stopped']} of "
            f"{b['classes']} classes stopped); batched equals one at a time: max |occluder difference| "
            f"{b['max_abs_diff_occluders']:.2e} (largest |delta| {b['max_abs_occluder']:.3f}), iterations equal "
            f"{b['iterations_equal']}, stop flags equal {b['stopped_equal']}.")
        if "c_concepts" in m:
            c = m["c_concepts"]
            lines.append(
                f"- {name}: (c) {c['mmd_pairs']} MMDs; vectorised equals the loop: max |mmd2 difference| "
                f"{c['max_abs_diff_mmd2']:.2e} (largest |mmd2| {c['max_abs_mmd2']:.3f}), max |score difference| "
                f"{c['max_abs_diff_score']:.2e}. The vectorised side also ran its permutation test "
                f"(n_perm {c['n_perm']}) and bootstrap (n_boot {c['n_boot']}).")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="one timed run each, 10 steps (a rough look)")
    args = parser.parse_args()
    main(args.out, threads=args.threads, quick=args.quick)
