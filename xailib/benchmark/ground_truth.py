"""A ground-truth benchmark of the methods of the four papers and their baselines, on ConceptWorld.

Every method is called through the registry of :mod:`xailib.baselines` (``attribute(..., method=name)``), with
one seed. ConceptWorld renders each scene from its recipe, so the truth is an intervention, not an annotation:

* **agreement with ground truth** -- per class, the Spearman correlation between a method's part scores and the
  drop in the class's logit when that part is re-rendered away (:func:`xailib.data.interventions.
  intervention_importance`): the single-deletion protocol of FunnyBirds (Hesse et al., ICCV 2023), which scores
  explanations by re-rendering parts. A map method's part score is the share of its map's mass inside the part's
  visible pixels, averaged over the class's test scenes; a concept method (AfI, TCAV) scores the parts' probe
  sets directly (:func:`xailib.afi.evaluation.part_probe_sets`). Mean over classes, 95% bootstrap CI.
* **faithfulness** -- the area under RISE's deletion curve (low is good) and insertion curve (high is good),
  :func:`xailib.metrics.deletion_curve`, removed pixels set to 0 (ConceptWorld's black), ``steps`` steps.
* **localisation** -- the pointing game on the object's visible pixels and the share of the map's mass on them.
* **robustness** -- SF14's IoU of the map thresholded at ``t * max`` on the clean and on the perturbed image
  (Gaussian noise, brightness), over the images whose prediction the perturbation left unchanged.
* **cost** -- seconds per explanation, and the seconds a method spends fitting before it can explain (MACE's
  unit, the explainers, AfI's occluders and CAVs), in a wall-clock table of its own.

A concept method is global: its scores describe a class, not an image. For deletion and insertion its map is its
part scores painted on each scene's true part masks (so it ranks parts, not pixels within a part); its
localisation is then true by construction and is not reported, and its robustness is not defined (NaN).

Methods and what they need:

=====================  =======  =====================================================================
method                 kind     fitted / given
=====================  =======  =====================================================================
AfI                    concept  occluders learned on the fit scenes; part probes, one random set
TCAV                   concept  CAVs on the part probes against random sets (captum)
gAP                    map      --
GradCAM, GradCAM++     map      -- (the last stage)
ExcitationBackprop     map      -- (zennit)
MACE                   map      a unit trained and pruned on the fit scenes (S2)
AdditiveExplainer      map      one explainer per class, distilled on the fit scenes (Case 1 at the last stage)
=====================  =======  =====================================================================

A ``Random`` row (uniform random maps, seeded) is the control every number is read against.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from xailib.checks import check_choice, check_positive_int
from xailib.metrics import auc, bootstrap_ci, deletion_curve, insertion_curve, pointing_game, threshold_iou

__all__ = ["METHODS", "CONTROL", "Setting", "benchmark_task", "run_benchmark", "part_mass", "paint_parts",
           "agreement_table", "summary_table", "finding", "plot_ranking", "paper_rows"]

#: The methods benchmarked, in the order of the tables (each a registered name of xailib.baselines).
METHODS: tuple[str, ...] = ("AfI", "TCAV", "gAP", "GradCAM", "GradCAM++", "ExcitationBackprop", "MACE",
                            "AdditiveExplainer")
#: The control: uniform random maps.
CONTROL = "Random"
#: Concept methods: global part scores, no per-image map.
CONCEPT_METHODS = ("AfI", "TCAV")


@dataclass(frozen=True)
class Setting:
    """What one benchmark run uses (a worker rebuilds everything from it: the model from the checksummed zoo,
    the scenes from the world's seed).

    Attributes
    ----------
    model : str
        A ConceptWorld (hard) zoo model.
    n_test, n_fit : int
        Test scenes per class (the metrics), fit scenes per class (MACE, the explainers, AfI, TCAV).
    n_probe : int
        Images per part probe and per random set (AfI, TCAV).
    afi_iter, n_perm : AfI's occluder iterations and permutations.
    mace_epochs, mace_finetune : MACE's epochs before and after pruning.
    explainer_epochs : the additive explainers' epochs.
    steps : deletion and insertion steps.
    n_robust : the test scenes of the robustness test (evenly spaced over the correctly classified ones).
    noise, brightness : the perturbations of the robustness test.
    thresholds : the fractions of the map's maximum that the robustness IoU thresholds at.
    seed : int
    device : str
    """

    model: str = "vgg-conceptworld-hard"
    n_test: int = 20
    n_fit: int = 20
    n_probe: int = 40
    afi_iter: int = 300
    n_perm: int = 200
    mace_epochs: int = 30
    mace_finetune: int = 10
    explainer_epochs: int = 30
    steps: int = 32
    n_robust: int = 50
    noise: float = 0.03
    brightness: float = 0.1
    thresholds: tuple[float, ...] = (0.3, 0.5, 0.7)
    seed: int = 0
    device: str = "cpu"


def _world():
    from xailib.data.conceptworld import ConceptWorld

    return ConceptWorld(size=64, seed=0, setting="hard")


def _scenes(world, n_per_class: int, split: str, seed: int):
    return world.render(world.sample(n_per_class * len(world.class_names), split=split, seed=seed))


def part_mass(maps: torch.Tensor, part_masks: torch.Tensor) -> torch.Tensor:
    """The share of each map's mass inside each part: ``maps [B, H, W]`` (non-negative), ``part_masks [B, P, H, W]``
    -> ``[B, P]`` (0 where the map is all zero)."""
    m = maps.clamp_min(0).double()
    total = m.sum(dim=(-2, -1))
    inside = (m[:, None] * part_masks.double()).sum(dim=(-2, -1))
    return torch.where(total[:, None] > 0, inside / total.clamp_min(1e-300)[:, None], torch.zeros_like(inside)).float()


def paint_parts(scores: torch.Tensor, part_masks: torch.Tensor) -> torch.Tensor:
    """A concept method's part scores ``[B, P]`` painted on the scenes' part masks ``[B, P, H, W]``: ``[B, H, W]``
    (a part without a score, NaN, paints 0; pixels outside every part are 0)."""
    s = torch.nan_to_num(scores.float(), nan=0.0)
    return (s[..., None, None] * part_masks.float()).sum(1)


def part_density(maps: torch.Tensor, part_masks: torch.Tensor) -> torch.Tensor:
    """:func:`part_mass` divided by each part's share of the image: ``[B, P]``, 1 for a part that holds as much of
    the map as of the pixels (a uniform map gives 1 everywhere), NaN for a part not visible in the scene."""
    area = part_masks.double().mean(dim=(-2, -1))
    mass = part_mass(maps, part_masks).double()
    return torch.where(area > 0, mass / area.clamp_min(1e-300), torch.full_like(mass, float("nan"))).float()


#: How a map method's part score is read from its map: the mass inside the part (FunnyBirds' sum), or that mass
#: per pixel of the part (free of the part's size; the random control scores about 1 on every part).
MEASURES = ("mass", "density")


def _class_part_scores(method: str, world, labels: torch.Tensor, per_image: dict[str, torch.Tensor]) -> pd.DataFrame:
    """Per measure and class, the mean over its scenes (where the part is visible) of each of its parts' scores."""
    rows = []
    for measure, values in per_image.items():
        for k in sorted(set(labels.tolist())):
            sel = labels == k
            for p in world.parts_of(world.class_names[k]):
                v = values[sel, world.part_names.index(p)].float()
                v = v[torch.isfinite(v)]
                rows.append({"method": method, "measure": measure, "class": int(k), "concept": p,
                             "score": float(v.mean()) if len(v) else float("nan")})
    return pd.DataFrame(rows)


def _fit(method: str, model: nn.Module, world, fit, held, setting: Setting) -> dict:
    """The options a method needs (fitted on the fit scenes); ``{}`` for the map methods that need none."""
    labels = fit.labels
    if method in CONCEPT_METHODS:
        from xailib.afi.evaluation import part_probe_sets
        from xailib.data.concepts import random_sets

        sets = part_probe_sets(world, list(world.part_names), setting.n_probe, seed=setting.seed)
        rnd = random_sets(world, n_sets=5, n=setting.n_probe, seed=setting.seed)
        if method == "AfI":
            return dict(concept_sets=sets, random_set=rnd[0], layers=list(model.stage_names), max_iter=setting.afi_iter,
                        n_perm=setting.n_perm, seed=setting.seed, device=setting.device)
        return dict(concept_sets=sets, random_sets=rnd[1:], layers=list(model.stage_names[-2:]), seed=setting.seed)
    if method == "MACE":
        from xailib.mace.experiments import fit_and_prune

        mace, point, _, _ = fit_and_prune(model, (fit.images, labels), (held.images, held.labels),
                                          epochs=setting.mace_epochs, finetune_epochs=setting.mace_finetune,
                                          n_concepts=10, embedding_dim=32, per_class=6, seed=setting.seed,
                                          prune=dict(T=10, S=5), classes=list(range(len(world.class_names))))
        return dict(mace=mace, point=point)
    if method == "AdditiveExplainer":
        from xailib.explainer.registry import fit_class_explainers

        return dict(explainer=fit_class_explainers(model, model.stage_names[-1], fit.images,
                                                   epochs=setting.explainer_epochs, seed=setting.seed,
                                                   device=setting.device))
    return {}


def _random_maps(n: int, size, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, *size, generator=g)


def _explain(method: str, model, images, labels, options: dict, fit, seed: int) -> torch.Tensor:
    """Maps ``[B, H, W]`` of a map method, or ``[B, P]`` part scores of a concept method (scored on the fit scenes
    of each class, then given to every test scene of that class)."""
    from xailib.baselines import attribute
    from xailib.baselines._common import class_concept_rows

    if method == CONTROL:
        return _random_maps(len(images), images.shape[-2:], seed)
    if method in CONCEPT_METHODS:
        scores = attribute(model, fit.images, fit.labels, method=method, **options)           # [N_fit, P]
        table = pd.DataFrame([{"class": int(k), "concept": p, "score": float(scores[i, j])}
                              for i, k in enumerate(fit.labels.tolist())
                              for j, p in enumerate(s.name for s in options["concept_sets"])]).drop_duplicates(
            ["class", "concept"])
        return class_concept_rows(table, labels, [s.name for s in options["concept_sets"]])
    return attribute(model, images, labels, method=method, **options).float()


def _robustness(method: str, model, world, test, labels, maps, options, fit, setting: Setting) -> pd.DataFrame:
    from xailib.batching import class_scores
    from xailib.perturbations import perturb

    if method in CONCEPT_METHODS:
        return pd.DataFrame()
    keep = torch.linspace(0, len(labels) - 1, min(setting.n_robust, len(labels))).round().long().unique()
    images, labels, maps = test.images[keep], labels[keep], maps[keep]
    pred0 = class_scores(model, images).argmax(1)
    rows = []
    for a, (kind, amount) in enumerate((("noise", setting.noise), ("brightness", setting.brightness))):
        noisy = perturb(images, kind, amount, seed=setting.seed * 1000 + a)
        same = class_scores(model, noisy).argmax(1) == pred0
        maps1 = _explain(method, model, noisy, labels, options, fit, setting.seed + 1 + a)
        for t in setting.thresholds:
            ref = maps >= t * maps.amax(dim=(-2, -1), keepdim=True)
            iou = threshold_iou(maps1.clamp_min(0), ref, t)
            rows += [{"method": method, "perturbation": kind, "amount": float(amount), "threshold": float(t),
                      "image": int(keep[i]), "iou": float(iou[i]), "same_prediction": bool(same[i])}
                     for i in range(len(iou))]
    return pd.DataFrame(rows)


def benchmark_task(method: str, setting: Setting) -> dict[str, pd.DataFrame]:
    """One method's whole benchmark run: fit what it needs, explain the correctly classified test scenes, measure.

    A module-level function of picklable arguments, so that :func:`xailib.parallel.map_tasks` can run it on a Dask
    worker, which loads the model from the checksummed zoo and renders the scenes from their seed.

    Returns
    -------
    dict
        ``"part_scores"`` (``method``, ``class``, ``concept``, ``score``), ``"per_image"`` (``method``, ``image``,
        ``class``, ``deletion_auc``, ``insertion_auc``, ``pointing``, ``object_mass``), ``"robustness"`` (one row per
        perturbation, threshold and image), ``"cost"`` (``method``, ``explains``, ``fit_s``, ``explain_s``,
        ``n_images``, ``s_per_image``). For AfI and TCAV ``fit_s`` is the probe sets' rendering and ``explain_s``
        holds the occluders' learning (AfI) or the CAVs' training (TCAV) on the fit scenes, per fit scene.
    """
    from xailib.batching import class_scores
    from xailib.models import load_model

    check_choice(method, list(METHODS) + [CONTROL], "method")
    check_setting(setting)
    torch.manual_seed(setting.seed)
    model = load_model(setting.model, device=setting.device)
    world = _world()
    test = _scenes(world, setting.n_test, "test", setting.seed)
    fit = _scenes(world, setting.n_fit, "train", setting.seed)
    held = _scenes(world, max(setting.n_fit // 2, 2), "train", setting.seed + 1)
    correct = class_scores(model, test.images).argmax(1) == test.labels
    idx = correct.nonzero().flatten()
    test = world.render(test.recipes[idx])                          # the correctly classified scenes
    labels = test.labels
    t0 = time.perf_counter()
    options = _fit(method, model, world, fit, held, setting)
    t1 = time.perf_counter()
    out = _explain(method, model, test.images, labels, options, fit, setting.seed)
    t2 = time.perf_counter()
    parts = test.part_masks                                                            # [B, P, H, W]
    if method in CONCEPT_METHODS:      # one score per part and class: both measures are that score
        maps = paint_parts(out, parts)
        per_part = {m: out for m in MEASURES}
    else:
        maps = out.clamp_min(0)
        per_part = {"mass": part_mass(maps, parts), "density": part_density(maps, parts)}
    scores = _class_part_scores(method, world, labels, per_part)
    del_auc = auc(deletion_curve(model, test.images, maps, labels, steps=setting.steps, baseline=0.0))
    ins_auc = auc(insertion_curve(model, test.images, maps, labels, steps=setting.steps, baseline=0.0))
    obj = test.object_mask
    local = method not in CONCEPT_METHODS
    point = pointing_game(maps, obj) if local else torch.full((len(maps),), float("nan"))
    mass = part_mass(maps, obj[:, None])[:, 0] if local else torch.full((len(maps),), float("nan"))
    per_image = pd.DataFrame({"method": method, "image": np.arange(len(labels)), "class": labels.numpy(),
                              "deletion_auc": del_auc.double().numpy(), "insertion_auc": ins_auc.double().numpy(),
                              "pointing": point.double().numpy(), "object_mass": mass.double().numpy()})
    robust = _robustness(method, model, world, test, labels, maps, options, fit, setting)
    concept = method in CONCEPT_METHODS
    n_explained = len(fit.labels) if concept else len(labels)
    cost = pd.DataFrame([{"method": method, "explains": "classes, from their fit scenes" if concept else "images",
                          "fit_s": t1 - t0, "explain_s": t2 - t1, "n_images": n_explained,
                          "s_per_image": (t2 - t1) / max(n_explained, 1)}])
    return {"part_scores": scores, "per_image": per_image, "robustness": robust, "cost": cost}


def run_benchmark(setting: Setting, methods: Sequence[str] = METHODS, *, control: bool = True, client=None,
                  progress: bool = False) -> dict[str, pd.DataFrame]:
    """:func:`benchmark_task` for every method (and the random control), serially here or as Dask tasks on
    ``client`` (:func:`xailib.parallel.map_tasks`): the same tables either way, the cost table aside.

    Returns
    -------
    dict
        The tables of :func:`benchmark_task` concatenated over methods, plus ``"truth"`` (the intervention
        importance of every part for every class on the same test scenes) and ``"agreement"``
        (:func:`agreement_table`).
    """
    from xailib.data.interventions import intervention_importance
    from xailib.models import load_model
    from xailib.parallel import map_tasks

    check_setting(setting)
    names = [check_choice(m, list(METHODS), "method") for m in methods] + ([CONTROL] if control else [])
    if not names:
        raise ValueError("methods is empty; pass some of " + ", ".join(METHODS) + ".")
    results = map_tasks(benchmark_task, [(m,) for m in names], client, shared=dict(setting=setting),
                        progress=progress, desc="methods")
    out = {k: pd.concat([r[k] for r in results if not r[k].empty], ignore_index=True)
           for k in ("part_scores", "per_image", "robustness", "cost")}
    world = _world()
    model = load_model(setting.model, device=setting.device)
    rec = world.sample(setting.n_test * len(world.class_names), split="test", seed=setting.seed)
    out["truth"] = intervention_importance(model, world, rec, list(world.part_names), seed=setting.seed)
    out["agreement"] = agreement_table(out["part_scores"], out["truth"])
    return out


def agreement_table(scores: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """Per measure, method and class, the Spearman correlation of its part scores with the intervention drops, and
    per measure and method the mean over classes with its 95% bootstrap CI
    (:func:`xailib.afi.evaluation.ground_truth_agreement`)."""
    from xailib.afi.evaluation import ground_truth_agreement

    order = {m: i for i, m in enumerate(list(METHODS) + [CONTROL])}
    parts = [ground_truth_agreement(t.drop(columns="measure"), truth).assign(measure=m)
             for m, t in scores.groupby("measure", sort=False)]
    out = pd.concat(parts, ignore_index=True)
    out = out[["measure"] + [c for c in out.columns if c != "measure"]]
    return out.sort_values(["measure", "method"], key=lambda c: c.map(order) if c.name == "method" else c,
                           kind="mergesort").reset_index(drop=True)


def _ci(values) -> tuple[float, float, float, int]:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return float("nan"), float("nan"), float("nan"), 0
    ci = bootstrap_ci(v, n_boot=5000)
    return ci.mean, ci.low, ci.high, ci.n


def summary_table(results: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per method: each quantity's mean, its 95% bootstrap CI and its sample size.

    ``agreement`` (part mass) and ``agreement_density`` (mass per part pixel) over classes; ``deletion_auc``, ``insertion_auc``, ``pointing``, ``object_mass`` over test scenes;
    ``robustness`` (the IoU averaged over the perturbations and thresholds of each scene) over the scenes whose
    prediction no perturbation changed."""
    agree = results["agreement"]
    per_image, robust = results["per_image"], results["robustness"]
    rows = []
    for method in dict.fromkeys(per_image["method"]):
        row = {"method": method}
        per_class = agree[(agree["method"] == method) & (agree["class"] != "mean")]
        a = per_class[per_class["measure"] == "mass"]["spearman"]
        d = per_class[per_class["measure"] == "density"]["spearman"]
        for name, values in (("agreement", a), ("agreement_density", d),
                             *((q, per_image[per_image["method"] == method][q]) for q in
                               ("deletion_auc", "insertion_auc", "pointing", "object_mass"))):
            row[name], row[f"{name}_low"], row[f"{name}_high"], row[f"{name}_n"] = _ci(values)
        r = robust[robust["method"] == method] if len(robust) else robust
        if len(r):
            ok = r.groupby("image")["same_prediction"].all()
            per = r[r["image"].isin(ok[ok].index)].groupby("image")["iou"].mean()
            row["robustness"], row["robustness_low"], row["robustness_high"], row["robustness_n"] = _ci(per)
        else:
            row.update(robustness=np.nan, robustness_low=np.nan, robustness_high=np.nan, robustness_n=0)
        rows.append(row)
    return pd.DataFrame(rows)


#: Quantities of the summary, whether higher is better, and their labels.
QUANTITIES: dict[str, tuple[bool, str]] = {
    "agreement": (True, "agreement with ground truth, part mass (Spearman per class)"),
    "agreement_density": (True, "agreement with ground truth, mass per part pixel (Spearman per class)"),
    "deletion_auc": (False, "deletion AUC (lower is better)"),
    "insertion_auc": (True, "insertion AUC (higher is better)"),
    "pointing": (True, "pointing game on the object"),
    "object_mass": (True, "share of the map's mass on the object"),
    "robustness": (True, "SF14 IoU under noise and brightness"),
}


def _separated(summary: pd.DataFrame, q: str, higher: bool) -> tuple[list[str], list[str]]:
    """The methods (not the control) whose interval is best, and those whose interval overlaps the best one's."""
    s = summary[(summary["method"] != CONTROL) & np.isfinite(summary[q].astype(float))]
    if s.empty:
        return [], []
    best = s.sort_values(q, ascending=not higher).iloc[0]
    if higher:
        tied = s[s[f"{q}_high"] >= best[f"{q}_low"]]
    else:
        tied = s[s[f"{q}_low"] <= best[f"{q}_high"]]
    return [best["method"]], [m for m in tied["method"] if m != best["method"]]


def finding(summary: pd.DataFrame) -> str:
    """The written finding: for each quantity, the best method and whether it is distinguishable from the others
    (an ordering is claimed only where the 95% intervals do not overlap), and which methods beat the random
    control. Every number is read from ``summary``."""
    ctrl = summary[summary["method"] == CONTROL]
    lines = []
    a = summary[summary["method"] != CONTROL]
    for q, what in (("agreement", "the mass of the map inside each part"),
                    ("agreement_density", "the mass per pixel of each part")):
        above = [m for m, lo in zip(a["method"], a[f"{q}_low"]) if np.isfinite(lo) and lo > 0]
        below = [m for m, hi in zip(a["method"], a[f"{q}_high"]) if np.isfinite(hi) and hi < 0]
        n_classes = int(a[f"{q}_n"].max()) if len(a) else 0
        text = (f"Agreement with ground truth, parts scored by {what} (Spearman over each class's parts, mean over "
                f"up to {n_classes} classes): {', '.join(above) if above else 'no method'} above zero with 95% "
                "confidence" + (f"; {', '.join(below)} below zero (anti-correlated with the interventions)"
                                if below else ""))
        if len(ctrl) and np.isfinite(float(ctrl.iloc[0][q])):
            c = ctrl.iloc[0]
            beat = [m for m, lo in zip(a["method"], a[f"{q}_low"]) if np.isfinite(lo) and lo > c[f"{q}_high"]]
            text += (f"; the random maps score {c[q]:+.3f} [{c[f'{q}_low']:+.3f}, {c[f'{q}_high']:+.3f}]"
                     + (" (a part's size alone predicts its drop)" if c[f"{q}_low"] > 0 else "")
                     + f", and {', '.join(beat) if beat else 'no method'} "
                     + ("lie" if len(beat) > 1 else "lies") + " clear above them")
        lines.append(text + ".")
    for q, (higher, label) in QUANTITIES.items():
        if q.startswith("agreement"):
            continue
        best, tied = _separated(summary, q, higher)
        if not best:
            continue
        b = summary[summary["method"] == best[0]].iloc[0]
        text = (f"{label}: best {best[0]} {b[q]:.3f} [{b[f'{q}_low']:.3f}, {b[f'{q}_high']:.3f}] "
                f"(n = {int(b[f'{q}_n'])})")
        text += (f", indistinguishable from {', '.join(tied)} (overlapping intervals)" if tied
                 else ", its interval clear of every other method's")
        if len(ctrl) and np.isfinite(float(ctrl.iloc[0][q])):
            c = ctrl.iloc[0]
            worse = [m for m, lo, hi in zip(a["method"], a[f"{q}_low"], a[f"{q}_high"])
                     if np.isfinite(lo) and ((hi < c[f"{q}_low"]) if higher else (lo > c[f"{q}_high"]))]
            text += f"; random maps {c[q]:.3f} [{c[f'{q}_low']:.3f}, {c[f'{q}_high']:.3f}]"
            if worse:
                text += f", which {', '.join(worse)} {'does' if len(worse) == 1 else 'do'} worse than"
        lines.append(text + ".")
    return "\n".join(f"- {line}" for line in lines)


def plot_ranking(summary: pd.DataFrame, title: str = ""):
    """One figure that ranks the methods: a panel per quantity, the mean and its 95% CI per method, methods in the
    order of their agreement with ground truth, the random control dashed."""
    import matplotlib.pyplot as plt

    qs = [q for q in QUANTITIES if np.isfinite(summary[q].astype(float)).any()]
    order = summary.sort_values("agreement", ascending=True, na_position="first")["method"].tolist()
    fig, axes = plt.subplots(1, len(qs), figsize=(2.3 * len(qs), 0.4 * len(order) + 2.0), sharey=True)
    axes = np.atleast_1d(axes)
    y = {m: i for i, m in enumerate(order)}
    for ax, q in zip(axes, qs):
        for _, r in summary.iterrows():
            if not np.isfinite(float(r[q])):
                continue
            colour = "0.5" if r["method"] == CONTROL else "C0"
            ax.errorbar(r[q], y[r["method"]], xerr=[[r[q] - r[f"{q}_low"]], [r[f"{q}_high"] - r[q]]], fmt="o",
                        color=colour, capsize=3)
        ctrl = summary[summary["method"] == CONTROL]
        if len(ctrl) and np.isfinite(float(ctrl.iloc[0][q])):
            ax.axvline(float(ctrl.iloc[0][q]), color="0.5", ls="--", lw=1)
        if q == "agreement":
            ax.axvline(0.0, color="k", lw=0.8)
        ax.set_title(textwrap.fill(QUANTITIES[q][1], 24), fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(order)), order)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def paper_rows(summary: pd.DataFrame, results: dict[str, pd.DataFrame], model: str) -> list[dict]:
    """The papers' claims this benchmark can test, as paper-vs-ours rows (:func:`xailib.results.paper_row`)."""
    from xailib.results import paper_row

    rows = []
    s = summary.set_index("method")

    def agreement_row(method: str, artifact: str, claim: str):
        if method not in s.index:
            return
        r = s.loc[method]
        q = "agreement_density"            # free of the parts' sizes (the same as the mass for a concept method)
        lo, hi = r[f"{q}_low"], r[f"{q}_high"]
        verdict = "reproduced" if lo > 0 else "not reproduced"
        ctrl = (f"; random maps {s.loc[CONTROL, q]:+.3f} [{s.loc[CONTROL, f'{q}_low']:+.3f}, "
                f"{s.loc[CONTROL, f'{q}_high']:+.3f}]") if CONTROL in s.index else ""
        rows.append(paper_row(artifact, f"{method}'s scores follow what the model uses: Spearman of its part scores "
                              f"(per part pixel) with the intervention drops ({model})", claim,
                              f"{r[q]:+.3f} [{lo:+.3f}, {hi:+.3f}]", verdict,
                              f"mean over {int(r[f'{q}_n'])} classes, 95% bootstrap CI{ctrl}; with the part mass "
                              f"instead: {r['agreement']:+.3f} [{r['agreement_low']:+.3f}, {r['agreement_high']:+.3f}]; "
                              "the benchmark's protocol (FunnyBirds' single deletion), not the paper's, so a test "
                              "of the method rather than of the paper's numbers; rule: reproduced if the interval "
                              "lies above zero"))

    agreement_row("AfI", "AfI Sec. 3.2 / Fig. 2", "yes (concept importance reflects the concepts the model uses)")
    agreement_row("AdditiveExplainer", "Additive explainer Sec. 3", "yes (contributions quantify each concept)")
    agreement_row("MACE", "MACE Sec. 3.1", "yes (relevance r_jk measures a concept's contribution)")
    per = results["per_image"]
    for base in ("GradCAM", "GradCAM++"):
        a = per[per["method"] == "MACE"].set_index("image")["deletion_auc"]
        b = per[per["method"] == base].set_index("image")["deletion_auc"]
        if a.empty or b.empty:
            continue
        mean, lo, hi, n = _ci((b - a).dropna())
        verdict = "reproduced" if lo > 0 else "not reproduced"
        rows.append(paper_row("MACE Fig. 4b", f"MACE's maps are more faithful than {base}'s: deletion AUC, {base} "
                              f"minus MACE ({model})", "yes (MACE lowers the probability more)",
                              f"{mean:+.3f} [{lo:+.3f}, {hi:+.3f}]", verdict,
                              f"paired over {n} test scenes, 95% bootstrap CI; RISE's deletion curve on the whole "
                              "map, not the paper's thresholded masks; rule: reproduced if the interval lies above 0"))
    return rows


def setting_dict(setting: Setting) -> dict:
    """The setting as a flat dict (for the sidecar and the tables' captions)."""
    d = asdict(setting)
    d["thresholds"] = ",".join(str(t) for t in setting.thresholds)
    return d


def check_setting(setting: Setting) -> Setting:
    """A clear error for a setting the benchmark cannot run."""
    if not isinstance(setting, Setting):
        raise TypeError(f"setting must be a xailib.benchmark.Setting, got {type(setting).__name__}.")
    for name in ("n_test", "n_fit", "n_probe", "afi_iter", "n_perm", "mace_epochs", "explainer_epochs", "steps",
                 "n_robust"):
        check_positive_int(getattr(setting, name), name)
    if "conceptworld-hard" not in setting.model:
        raise ValueError(f"the benchmark needs a ConceptWorld (hard) model, whose parts it re-renders; got "
                         f"{setting.model!r} (e.g. 'vgg-conceptworld-hard').")
    return setting
