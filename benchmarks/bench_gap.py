"""gAP speed ratios, measured side by side in one run (CPU, one thread unless --threads).

(a) full hierarchical decomposition (N = 3, all 5 stages): batched per level (with receptive-field
    crops, ``crop="auto"``) vs node by node (target >= 10x); also batched without crops, and the first
    call with an empty receptive-field cache (NaN probes and checks included);
(b) one gAP decomposition vs ground-truth ablation of the same layer (the paper: ~200x);
(c) batched suffix-only ablation (run_segment) vs naive full-network reruns (target >= 3x);
(d) gAP vs captum's LayerConductance and InternalInfluence on the same decision.

The model is the zoo's ``vgg-conceptworld`` once ``xailib/models`` is committed and its checkpoint
loads; until then a 5-stage VGG-like stand-in with the same interface (``stage_names``,
``run_segment``) and random weights. Input 64 x 64.

Usage: python benchmarks/bench_gap.py [--out benchmarks/results] [--threads 1] [--quick]
Writes ``gap.json`` and ``gap.md`` to the output folder.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from xailib.gap import (  # noqa: E402
    GAP,
    Neuron,
    decompose,
    decompose_nodewise,
    ground_truth_contributions,
    ground_truth_naive,
)
from xailib.gap.receptive import clear_cache  # noqa: E402


class StandInVGG(nn.Module):
    """5 VGG stages (2 convs each; widths 32-64-128-256-256), max-pool between, GAP + 2-layer head."""

    def __init__(self, widths=(32, 64, 128, 256, 256), classes=10, hidden=128):
        super().__init__()
        layers, cin = {}, 3
        for k, w in enumerate(widths, start=1):
            if k > 1:
                layers[f"pool{k}"] = nn.MaxPool2d(2)
            layers[f"stage{k}"] = nn.Sequential(nn.Conv2d(cin, w, 3, padding=1), nn.ReLU(inplace=True),
                                                nn.Conv2d(w, w, 3, padding=1), nn.ReLU(inplace=True))
            cin = w
        self.features = nn.Sequential()
        for name, m in layers.items():
            self.features.add_module(name, m)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, hidden), nn.ReLU(inplace=True),
                                  nn.Linear(hidden, classes))
        self.stage_names = [f"features.stage{k}" for k in range(1, 6)]

    def forward(self, x):
        return self.head(self.features(x))

    def run_segment(self, acts, start, stop=None):
        names = list(self.features._modules)
        lo = names.index(start.split(".")[-1]) + 1
        hi = len(names) if stop is None else names.index(stop.split(".")[-1]) + 1
        if hi <= lo - 1 or (stop is not None and hi <= lo):
            raise ValueError(f"stop={stop!r} must come after start={start!r}.")
        out = acts
        for n in names[lo:hi]:
            out = self.features._modules[n](out)
        return self.head(out) if stop is None else out


def _zoo_committed() -> bool:
    try:
        out = subprocess.run(["git", "ls-files", "xailib/models/__init__.py", "xailib/models/zoo.py"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.split()
        return len(out) == 2
    except (OSError, subprocess.CalledProcessError):
        return False


def load_bench_model() -> tuple[nn.Module, str]:
    """The zoo's vgg-conceptworld when committed and loadable, else the stand-in (with the reason)."""
    if _zoo_committed():
        try:
            from xailib.models import load_model

            return load_model("vgg-conceptworld", device="cpu"), "vgg-conceptworld (zoo checkpoint)"
        except Exception as exc:  # noqa: BLE001 -- report why, then measure the stand-in
            note = f"zoo committed but vgg-conceptworld did not load ({type(exc).__name__}: {exc})"
    else:
        note = "xailib/models not committed yet"
    torch.manual_seed(0)
    model = StandInVGG().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                m.bias.uniform_(0.0, 0.05)
    return model, f"StandInVGG (random weights; {note})"


def _literal_per_node(model: nn.Module, x: torch.Tensor, tree) -> None:
    """Context for (a): every decomposition of ``tree`` done the textbook way -- a full forward from the
    input with parameters requiring grad, then ``autograd.grad`` of the decision w.r.t. the lower layer."""
    from xailib.layers import capture

    layers = {}
    for node in tree.walk():
        if node.children:
            layers.setdefault((node.layer, node.children[0].layer), []).append(node)
    for (upper, lower), nodes in layers.items():
        for node in nodes:
            names = [lower] if upper == "output" else [lower, upper]
            with capture(model, names) as rec:
                logits = model(x)
                out = logits[0, node.channel] if upper == "output" else \
                    rec[upper][0, node.channel, node.position[0], node.position[1]]
                torch.autograd.grad(out, rec[lower])


def _load() -> float | None:
    """1-minute load average of the machine (other jobs inflate absolute times; ratios are taken side by side)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def timed(fn, repeat: int) -> tuple[float, object]:
    """Best wall time of ``repeat`` runs after one warm-up run; and the last result."""
    out = fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


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
    model, model_note = load_bench_model()
    shape = getattr(model, "input_shape", (3, 64, 64))
    x = torch.rand(1, *shape, generator=torch.Generator().manual_seed(0))
    stages = list(model.stage_names)
    rep = 1 if quick else 3
    results: dict = {"model": model_note, "input": list(x.shape), "threads": threads, "device": "cpu",
                     "torch": torch.__version__, "python": platform.python_version(), "repeats": rep,
                     "load_avg_1min_at_start": _load()}
    print(f"gAP benchmark on {model_note}, input {tuple(x.shape)}, {threads} thread(s)", flush=True)

    # (a) full tree, batched vs node by node ------------------------------------------------------
    decompose(model, x, top_n=3)  # warm-up (kernel selection for every shape), then empty the RF cache
    clear_cache(model)
    t0 = time.perf_counter()
    decompose(model, x, top_n=3)  # receptive fields probed and checked in this call
    t_cold = time.perf_counter() - t0
    t_batched, tree = timed(lambda: decompose(model, x, top_n=3), rep)
    t_nocrop, tree_nc = timed(lambda: decompose(model, x, top_n=3, crop=False), rep)
    t_nodewise, tree_n = timed(lambda: decompose_nodewise(model, x, top_n=3), max(1, rep - 2))
    t_literal, _ = timed(lambda: _literal_per_node(model, x, tree), max(1, rep - 2))
    results["a_tree"] = {
        "literal_per_node_s": t_literal, "ratio_vs_literal_per_node": t_literal / t_batched,
        "nodes": len(tree), "decompositions": sum(1 for n in tree.walk() if n.children),
        "batched_s": t_batched, "nodewise_s": t_nodewise, "ratio": t_nodewise / t_batched,
        "batched_no_crop_s": t_nocrop, "ratio_no_crop": t_nodewise / t_nocrop,
        "batched_cold_cache_s": t_cold, "ratio_cold_cache": t_nodewise / t_cold,
        "trees_equal": tree.same_as(tree_n, atol=1e-4), "trees_equal_crop_vs_no_crop": tree.same_as(tree_nc, atol=1e-4),
        "target": 10.0,
    }
    print(f"(a) tree: batched {t_batched:.3f}s (no crops {t_nocrop:.3f}s, cold cache {t_cold:.3f}s), "
          f"node-by-node {t_nodewise:.3f}s -> {t_nodewise / t_batched:.1f}x", flush=True)

    # decisions per stage: the class for the top stage, the top child's peak for the others
    decisions = {stages[-1]: tree.target}
    node = tree.root.children[0]
    for lower in reversed(stages[:-1]):
        decisions[lower] = Neuron(node.layer, node.channel, *node.position)
        node = node.children[0]

    # (b) gAP vs ground truth, (c) batched suffix-only ablation vs naive reruns ------------------
    per_stage = []
    gap = GAP(model)
    for layer in reversed(stages):
        target = decisions[layer]
        t_gap, res = timed(lambda: gap.attribute(x, target=target, layer=layer), rep)
        t_gt, gt = timed(lambda: ground_truth_contributions(model, x, target, layer, chunk=64), rep)
        t_naive, gt_naive = timed(lambda: ground_truth_naive(model, x, target, layer), max(1, rep - 2))
        alpha = res.contributions[0]
        gt_zero = ground_truth_contributions(model, x, target, layer, baseline="zero")  # (GT mean is ~0 before GAP)
        pcc = lambda a, b: float(torch.corrcoef(torch.stack([a, b]).double())[0, 1])  # noqa: E731  Eq. (12)
        row = {
            "layer": layer, "decision": str(target), "channels": int(alpha.numel()),
            "gap_s": t_gap, "ground_truth_batched_s": t_gt, "ground_truth_naive_s": t_naive,
            "b_ratio_vs_naive": t_naive / t_gap, "b_ratio_vs_batched": t_gt / t_gap,
            "c_ratio": t_naive / t_gt,
            "max_abs_diff_batched_vs_naive": float((gt - gt_naive).abs().max()),
            "pcc_gap_vs_gt_mean": pcc(alpha, gt) if gt.abs().max() > 1e-4 * gt_zero.abs().max() else None,
            "pcc_gap_vs_gt_zero": pcc(alpha, gt_zero),
        }
        per_stage.append(row)
        print(f"(b,c) {layer}: gAP {t_gap * 1e3:.1f}ms, GT batched {t_gt * 1e3:.1f}ms, GT naive {t_naive * 1e3:.1f}ms"
              f" -> gAP vs naive {row['b_ratio_vs_naive']:.0f}x, batched GT vs naive {row['c_ratio']:.1f}x", flush=True)
    results["b_c_per_stage"] = per_stage
    top = per_stage[0]
    results["b_gap_vs_ground_truth"] = {"layer": top["layer"], "ratio_vs_naive": top["b_ratio_vs_naive"],
                                        "ratio_vs_batched": top["b_ratio_vs_batched"], "target": 200.0}
    results["c_suffix_vs_naive"] = {"layer": top["layer"], "ratio": top["c_ratio"], "target": 3.0,
                                    "all_stages": [r["c_ratio"] for r in per_stage]}

    # (d) captum on the same decision (class -> top stage) ----------------------------------------
    try:
        from captum.attr import InternalInfluence, LayerConductance

        from xailib.layers import get_layer

        layer_mod = get_layer(model, stages[-1])
        cls = tree.target
        steps = 50
        t_gap = per_stage[0]["gap_s"]
        t_cond, _ = timed(lambda: LayerConductance(model, layer_mod).attribute(x, target=cls, n_steps=steps), rep)
        t_inf, _ = timed(lambda: InternalInfluence(model, layer_mod).attribute(x, target=cls, n_steps=steps), rep)
        results["d_captum"] = {"layer": stages[-1], "n_steps": steps, "gap_s": t_gap,
                               "layer_conductance_s": t_cond, "internal_influence_s": t_inf,
                               "conductance_over_gap": t_cond / t_gap, "influence_over_gap": t_inf / t_gap}
        print(f"(d) captum: LayerConductance {t_cond * 1e3:.1f}ms, InternalInfluence {t_inf * 1e3:.1f}ms, "
              f"gAP {t_gap * 1e3:.1f}ms", flush=True)
    except ImportError as exc:
        results["d_captum"] = {"skipped": str(exc)}

    # (b) at the paper's scale: VGG-16's conv5_3 has 512 channels, ours 64; naive ablation costs K + 1 forwards -----
    results["b_vgg16"] = _paper_scale_b(quick)

    (out_dir / "gap.json").write_text(json.dumps(results, indent=2))
    (out_dir / "gap.md").write_text(_markdown(results))
    return results


def _paper_scale_b(quick: bool, size: int = 112) -> dict:
    """(b) on torchvision's VGG-16 architecture (random weights, in-place ReLUs), conv5_3 (512 channels), the class
    score of class 0: one gAP decomposition vs the naive ground truth (K + 1 full forward passes), side by side.

    The input is ``size`` x ``size`` (not 224) to keep the naive ablation to about a minute on one CPU thread; both
    sides scale alike with the input size, and the ratio is governed by K.
    """
    from xailib.models import load_model

    vgg = load_model("vgg16", weights=None, device="cpu")
    layer = vgg.stage_names[-1]
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    gap = GAP(vgg)
    gap.attribute(x, target=0, layer=layer)  # warm-up
    t_gap, res = timed(lambda: gap.attribute(x, target=0, layer=layer), 1 if quick else 3)
    t_naive, _ = timed(lambda: ground_truth_naive(vgg, x, 0, layer), 1)
    out = {"model": "torchvision vgg16 (random weights)", "layer": layer, "input": list(x.shape),
           "channels": int(res.contributions.shape[1]), "gap_s": t_gap, "ground_truth_naive_s": t_naive,
           "ratio_vs_naive": t_naive / t_gap, "target": 200.0}
    print(f"(b) vgg16 {layer}: gAP {t_gap * 1e3:.1f}ms, GT naive {t_naive:.1f}s -> {t_naive / t_gap:.0f}x", flush=True)
    return out


def _markdown(r: dict) -> str:
    a = r["a_tree"]
    lines = [
        "# gAP benchmark",
        "",
        f"Model: {r['model']}; input {r['input']}; CPU, {r['threads']} thread(s); torch {r['torch']}; "
        f"best of {r['repeats']} runs after a warm-up; 1-min load average at start "
        f"{r.get('load_avg_1min_at_start')} (a shared machine: absolute times are inflated, ratios are side by side).",
        "",
        "| measurement | time | ratio | target |",
        "|---|---|---|---|",
        f"| (a) full tree N=3, {a['nodes']} nodes / {a['decompositions']} decompositions: node-by-node vs batched "
        f"| {a['nodewise_s']:.3f} s vs {a['batched_s']:.3f} s | {a['ratio']:.1f}x | >= 10x |",
        f"| (a) same, batched without receptive-field crops (`crop=False`) "
        f"| {a['nodewise_s']:.3f} s vs {a['batched_no_crop_s']:.3f} s | {a['ratio_no_crop']:.1f}x | |",
        f"| (a) same, batched with crops, first call (receptive-field cache emptied: NaN probes + checks) "
        f"| {a['nodewise_s']:.3f} s vs {a['batched_cold_cache_s']:.3f} s | {a['ratio_cold_cache']:.1f}x | |",
        f"| (a') same tree, textbook per-node full forward + backward vs batched "
        f"| {a['literal_per_node_s']:.3f} s vs {a['batched_s']:.3f} s | {a['ratio_vs_literal_per_node']:.1f}x | |",
    ]
    top = r["b_c_per_stage"][0]
    lines.append(f"| (b) gAP vs naive ground truth, {top['layer']} ({top['channels']} channels) "
                 f"| {top['gap_s'] * 1e3:.1f} ms vs {top['ground_truth_naive_s'] * 1e3:.0f} ms "
                 f"| {top['b_ratio_vs_naive']:.0f}x | (K + 1 forwards: scales with K) |")
    v = r.get("b_vgg16")
    if v:
        lines.append(f"| (b) same at the paper's scale: {v['model']}, {v['layer']} ({v['channels']} channels), "
                     f"input {v['input'][-1]}x{v['input'][-1]} | {v['gap_s'] * 1e3:.1f} ms vs "
                     f"{v['ground_truth_naive_s'] * 1e3:.0f} ms | {v['ratio_vs_naive']:.0f}x | >= 200x |")
    lines.append(f"| (b') gAP vs batched ground truth, {top['layer']} "
                 f"| {top['gap_s'] * 1e3:.1f} ms vs {top['ground_truth_batched_s'] * 1e3:.0f} ms "
                 f"| {top['b_ratio_vs_batched']:.0f}x | |")
    lines.append(f"| (c) batched suffix-only ablation vs naive reruns, {top['layer']} "
                 f"| {top['ground_truth_batched_s'] * 1e3:.0f} ms vs {top['ground_truth_naive_s'] * 1e3:.0f} ms "
                 f"| {top['c_ratio']:.1f}x | >= 3x |")
    d = r.get("d_captum", {})
    if "layer_conductance_s" in d:
        lines.append(f"| (d) LayerConductance ({d['n_steps']} steps) vs gAP, {d['layer']} "
                     f"| {d['layer_conductance_s'] * 1e3:.0f} ms vs {d['gap_s'] * 1e3:.1f} ms "
                     f"| {d['conductance_over_gap']:.0f}x | |")
        lines.append(f"| (d) InternalInfluence ({d['n_steps']} steps) vs gAP, {d['layer']} "
                     f"| {d['internal_influence_s'] * 1e3:.0f} ms vs {d['gap_s'] * 1e3:.1f} ms "
                     f"| {d['influence_over_gap']:.0f}x | |")
    lines += ["", f"Batched tree (with crops) equals node-by-node tree: {a['trees_equal']}; equals the batched tree "
              f"without crops: {a['trees_equal_crop_vs_no_crop']}.", "",
              "Per stage (decision: class for the top stage, else the top child's peak neuron):", "",
              "| layer | K | gAP ms | GT batched ms | GT naive ms | gAP vs naive | batched vs naive | "
              "PCC(gAP, GT mean) | PCC(gAP, GT zero) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for s in r["b_c_per_stage"]:
        pm = "n/a (drops ~0: GAP head)" if s["pcc_gap_vs_gt_mean"] is None else f"{s['pcc_gap_vs_gt_mean']:.3f}"
        lines.append(f"| {s['layer']} | {s['channels']} | {s['gap_s'] * 1e3:.1f} | {s['ground_truth_batched_s'] * 1e3:.1f}"
                     f" | {s['ground_truth_naive_s'] * 1e3:.1f} | {s['b_ratio_vs_naive']:.0f}x | {s['c_ratio']:.1f}x"
                     f" | {pm} | {s['pcc_gap_vs_gt_zero']:.3f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="one timed run each (a rough look)")
    args = parser.parse_args()
    main(args.out, threads=args.threads, quick=args.quick)
