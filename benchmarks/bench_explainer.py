"""Additive-explainer speed ratios, measured side by side in one run (CPU, one thread unless --threads).

(a) Prior weights for a batch. Case 2 (Experiment 2's 37 concepts): :func:`xailib.explainer.priors.case2_priors`
    gets the target's and every concept's Jacobian row in one batched backward pass per batch
    (``is_grads_batched``), against one backward pass per concept (and one for the target) over the same forward
    pass, each a vector-Jacobian product for the whole batch; the weights of both are checked equal. Case 1
    (Experiment 1's 64 filters) needs one backward pass per batch whatever the number of concepts
    (``sum_hw d y_hat / d x_hwi`` for every ``i`` at once); it is timed against one backward per image.
(b) Explainer inference per image: the explainer's ``sum_i alpha_i y_i + b`` (``g`` on the performer's top map,
    concepts given) against one forward pass of the performer on the same image; also the whole pipeline
    (the performer's forward pass with its top map kept, then the explainer), for one image and for a batch of 64.

Models: Experiment 1's ``vgg-m-parrot-icnn`` and Experiment 2's ``attributes-vgg-16``, with an untrained default
``AlphaNet`` (speed does not depend on weights). Input 3 x 64 x 64.

Timing: the best of :data:`ROUNDS` rounds of :data:`REPEAT` calls each, the sides interleaved within a round.

Usage: python benchmarks/bench_explainer.py [--out benchmarks/results] [--threads 1] [--quick]
Writes ``explainer.json`` and ``explainer.md`` to the output folder.
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
from xailib.explainer import attributes as xa  # noqa: E402
from xailib.explainer.additive import AdditiveExplainer, AlphaNet  # noqa: E402
from xailib.explainer.experiments import LogOdds  # noqa: E402
from xailib.explainer.performers import binary_task, load_performer, top_layer  # noqa: E402
from xailib.explainer.priors import _case2_weights, case1_priors, case2_priors  # noqa: E402
from xailib.layers import capture, leaf_at, model_state  # noqa: E402

ROUNDS, REPEAT = 5, 3
BATCH = 64


def _case2_per_concept(model, layer, images, target, idx):
    """One backward pass per concept (and one for the target) over one forward pass: the unbatched way."""
    with model_state(model, train=False, requires_grad=False), torch.enable_grad():
        with leaf_at(model, layer) as leaves:
            out = model(images)
        rows = []
        for k in [target] + list(idx):
            g, = torch.autograd.grad(out[:, k].sum(), leaves[0], retain_graph=True)
            rows.append(g.flatten(1))
        jac = torch.stack(rows)
    return _case2_weights(jac[0], jac[1:])


def _case1_per_image(model, layer, images, target):
    with model_state(model, train=False, requires_grad=False), torch.enable_grad():
        out = []
        for i in range(len(images)):
            with leaf_at(model, layer) as leaves:
                score = model(images[i:i + 1])[0, target]
            g, = torch.autograd.grad(score, leaves[0])
            out.append(g.sum((2, 3)).clamp(min=0))
    return torch.cat(out)


def bench_priors(rounds: int, repeat: int) -> dict:
    model = xa.load_attribute_performer()
    images = xa.attribute_data(7, "test", seed=3).images[:BATCH]
    names = xa.attribute_names()
    t = names.index("warm")
    idx = [k for k in range(len(names)) if k != t]

    case2 = {}
    for layer in (xa.SHARED_LAYER, "features.stage4.relu3"):
        def batched(layer=layer):
            return case2_priors(model, layer, images, t, idx, batch_size=BATCH).priors

        def looped(layer=layer):
            return _case2_per_concept(model, layer, images, t, idx)

        (tb, tl), (wb, wl) = side_by_side([lambda: [batched() for _ in range(repeat)][-1],
                                           lambda: [looped() for _ in range(repeat)][-1]], rounds)
        case2[layer] = {"batched_s": tb / repeat, "per_concept_s": tl / repeat, "ratio": tl / tb,
                        "concepts": len(idx), "images": len(images), "max_abs_diff": float((wb - wl).abs().max())}
    performer = LogOdds(load_performer("vgg-m", "parrot"))
    layer = "net." + top_layer("vgg-m")
    x1 = binary_task("parrot", BATCH // 2, "test").images

    def c1_batched():
        return case1_priors(performer, layer, x1, 0, batch_size=BATCH).priors

    def c1_images():
        return _case1_per_image(performer, layer, x1, 0)

    (t1b, t1i), (w1b, w1i) = side_by_side([lambda: [c1_batched() for _ in range(repeat)][-1],
                                           lambda: [c1_images() for _ in range(repeat)][-1]], rounds)
    return {"case2": case2,
            "case1": {"batched_s": t1b / repeat, "per_image_s": t1i / repeat, "ratio": t1i / t1b,
                      "concepts": int(w1b.shape[1]), "images": len(x1),
                      "max_abs_diff": float((w1b - w1i.cpu()).abs().max())}}


def bench_inference(rounds: int, repeat: int) -> dict:
    performer = load_performer("vgg-m", "parrot").eval()
    layer = top_layer("vgg-m")
    images = binary_task("parrot", BATCH // 2, "test").images
    torch.manual_seed(0)
    explainer = AdditiveExplainer(AlphaNet(64, 64)).eval()
    out = {}
    for label, x in (("one image", images[:1]), (f"batch of {BATCH}", images)):
        with torch.no_grad(), capture(performer, [layer], detach=True) as cap:
            performer(x)
        maps = cap[layer]
        concepts = torch.relu(maps).sum((2, 3))

        def forward():
            with torch.no_grad():
                return performer(x)

        def explain():
            with torch.no_grad():
                return explainer(maps, concepts)

        def pipeline():
            with torch.no_grad(), capture(performer, [layer], detach=True) as c:
                performer(x)
                m = c[layer]
                return explainer(m, torch.relu(m).sum((2, 3)))

        (tf, te, tp), _ = side_by_side([lambda: [forward() for _ in range(repeat * 10)][-1],
                                        lambda: [explain() for _ in range(repeat * 10)][-1],
                                        lambda: [pipeline() for _ in range(repeat * 10)][-1]], rounds)
        n = repeat * 10
        out[label] = {"forward_s": tf / n, "explain_s": te / n, "pipeline_s": tp / n, "ratio": te / tf,
                      "pipeline_ratio": tp / tf, "images": len(x)}
    return out


def main(out_dir: str | Path = HERE / "results", threads: int = 1, quick: bool = False) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        rounds, repeat = (1, 1) if quick else (ROUNDS, REPEAT)
        r: dict = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "git_commit": git_commit(),
                   "threads": threads, "cpu": cpu_model(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
                   "python": platform.python_version(), "rounds": rounds, "repeat": repeat,
                   "load_avg_1min_at_start": load_average()}
        r["a_priors"] = bench_priors(rounds, repeat)
        r["b_inference"] = bench_inference(rounds, repeat)
        r["load_avg_1min_at_end"] = load_average()
        print(f"Case 2 priors: per concept / batched = {r['a_priors']['case2'][xa.SHARED_LAYER]['ratio']:.2f}x; "
              "explainer / forward "
              f"(one image) = {r['b_inference']['one image']['ratio']:.2f}x", flush=True)
        (out_dir / "explainer.json").write_text(json.dumps(r, indent=2))
        (out_dir / "explainer.md").write_text(_markdown(r))
        return r
    finally:
        torch.set_num_threads(old)


def _markdown(r: dict) -> str:
    a1 = r["a_priors"]["case1"]
    lines = ["# Additive explainer benchmark", "",
             f"{r['date']}, commit {r['git_commit']}; CPU {r['cpu']} ({r['cpu_count']} cores), {r['threads']} torch "
             f"thread(s); torch {r['torch']}, Python {r['python']}. Best of {r['rounds']} rounds, the sides "
             f"interleaved; 1-min load average {r['load_avg_1min_at_start']} at start, "
             f"{r['load_avg_1min_at_end']} at the end. How each side is counted: the docstring of "
             "`benchmarks/bench_explainer.py`.", "",
             "| measurement | time | ratio |", "|---|---|---|"]
    for layer, a2 in r["a_priors"]["case2"].items():
        lines.append(f"| (a) Case 2 priors at `{layer}`, {a2['images']} images x {a2['concepts']} concepts "
                     f"(attributes-vgg-16): one backward per concept vs one batched backward | "
                     f"{1e3 * a2['per_concept_s']:.1f} vs {1e3 * a2['batched_s']:.1f} ms | {a2['ratio']:.2f}x |")
    lines += [
             f"| (a) Case 1 priors, {a1['images']} images x {a1['concepts']} filters (vgg-m-parrot-icnn): one backward "
             f"per image vs one per batch | {1e3 * a1['per_image_s']:.1f} vs {1e3 * a1['batched_s']:.1f} ms | "
             f"{a1['ratio']:.2f}x |"]
    for label, b in r["b_inference"].items():
        lines.append(f"| (b) explainer (g and the sum) vs one performer forward pass, {label} | "
                     f"{1e3 * b['explain_s']:.2f} vs {1e3 * b['forward_s']:.2f} ms | {b['ratio']:.2f}x |")
        lines.append(f"| (b) performer forward with its top map, then the explainer, vs the forward alone, {label} | "
                     f"{1e3 * b['pipeline_s']:.2f} vs {1e3 * b['forward_s']:.2f} ms | {b['pipeline_ratio']:.2f}x |")
    worst = max(a["max_abs_diff"] for a in r["a_priors"]["case2"].values())
    lines += ["", f"Checks: the batched and per-concept Case 2 weights differ by at most {worst:.2e}; the Case 1 "
                  f"weights by at most {a1['max_abs_diff']:.2e}.", "",
              "Reading: on one CPU thread the batched Case 2 pass (autograd's `is_grads_batched`, a vmapped backward) "
              "buys nothing at the notebooks' shared feature (`head.relu`, fc1's output: each per-concept backward "
              "is one small matrix product) and costs time deeper down (the second row): one forward pass with a "
              "retained graph and one backward per concept does fewer operations, and the batched pass only pays "
              "where it fills a device (a GPU; not measured here). Running the layers above on one copy of the batch "
              "per Jacobian row, the other batched way, was slower still at stage 4 (167 vs 113 ms, tried on top of "
              "3534bf4 and not kept). "
              "Ratios within about 10% of 1 are within this machine's noise: the forward-then-explainer pipeline "
              "cannot be faster than its own forward pass."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    main(args.out, args.threads, args.quick)
