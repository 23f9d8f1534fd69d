"""Evaluating AfI's concept importance: Fig. 2 (smallest sufficient and smallest destroying concepts, after
ACE) and the check against ConceptWorld's ground truth that no paper could make.

* :func:`part_scores` -- AfI's concept importance (Sec. 3.2, MMD) and TCAV's of ConceptWorld's parts, per class.
* :func:`orders_from_scores`, :func:`part_curves` -- Fig. 2 on ConceptWorld: each class's parts added to a
  blank image (SSC) or removed from its scenes (SDC) in order of importance, by exact re-rendering
  (:func:`xailib.data.interventions.concept_curves`), for AfI, TCAV and random orders.
* :func:`superpixel_curves` -- Fig. 2 on Fashion-MNIST with ACE's concepts: superpixel segments clustered
  across the images of a class (:mod:`xailib.data.superpixels`), pasted on a blank image or blanked out.
* :func:`curve_summary` -- the curves as fractions of the original accuracy, per method and ``k``, with the
  spread over classes; :func:`curve_areas` -- one number per class and method (the mean over ``k``), for paired
  comparisons.
* :func:`ground_truth_agreement` -- per class, the Spearman correlation between a method's concept scores and
  the ground truth (the drop in class score when the concept is re-rendered away,
  :func:`xailib.data.interventions.intervention_importance`), with a bootstrap CI over classes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from xailib.afi.concepts import concept_importance
from xailib.checks import check_positive_int, check_seed
from xailib.data.concepts import ConceptSet, random_sets
from xailib.metrics import bootstrap_ci, spearman

__all__ = ["part_probe_sets", "part_scores", "orders_from_scores", "part_curves", "superpixel_curves", "curve_summary", "curve_areas",
           "ground_truth_agreement", "probe_areas", "score_area_correlation"]

METHODS = ("AfI", "TCAV", "random")


def _class_parts(world, classes: Sequence[int]) -> dict[int, list[str]]:
    return {int(k): list(world.parts_of(world.class_names[int(k)])) for k in classes}


def part_probe_sets(world, parts: Sequence[str], n: int, seed: int = 0, zoom: bool = True) -> list[ConceptSet]:
    """ConceptWorld's part probes (the part alone on the blank background), optionally **zoomed**: each probe's part
    cropped to its bounding box and resized to the image, on the world's blank, as ACE makes its patches
    (:func:`xailib.data.superpixels.segment_patches`). A part probe covers 0.1-5% of the image unzoomed, so an
    MMD against random scenes mostly measures its emptiness (:func:`score_area_correlation`); zoomed, every probe
    fills the frame like a TCAV concept image."""
    from xailib.data.superpixels import segment_patches

    sets = [ConceptSet.from_conceptworld(world, p, n, seed=seed) for p in parts]
    if not zoom:
        return sets
    blank = float(world.blank.mean())
    out = []
    for s in sets:
        patches, masks = segment_patches(s.images, s.masks, fill=blank)
        out.append(ConceptSet.from_tensors(s.name, patches, masks, seed=s.seed, source=s.source + " (zoomed)"))
    return out


def part_scores(model: nn.Module, world, cis: Mapping[str, torch.Tensor], classes: Sequence[int],
                images: torch.Tensor, labels, *, layers: Sequence[str], tcav_layers: Sequence[str],
                n_probe: int = 50, n_random_sets: int = 4, n_perm: int = 200, zoom: bool = True,
                seed: int = 0) -> pd.DataFrame:
    """AfI's and TCAV's importance of every part of each class, from ConceptWorld part probes
    (:func:`part_probe_sets`, zoomed by default).

    Parameters
    ----------
    cis : dict layer -> Tensor ``[K, C_l]``
        Channel importance (Eq. 8) of ``classes`` (row ``j`` for ``classes[j]``).
    images, labels : the class images TCAV's directional derivatives are taken on (``[N, 3, H, W]``, ``[N]``).
    layers : the layers whose MMDs AfI sums (the "middle layers"); tcav_layers : TCAV's layers (averaged).
    n_probe : images per part probe and per random set; n_random_sets : TCAV's random sets (AfI uses one more,
        set 0, as its benchmark).

    Returns
    -------
    DataFrame
        ``method`` ("AfI", "TCAV"), ``class``, ``concept``, ``score``, ``significant`` -- only the parts each class
        has (``world.parts_of``).
    """
    from xailib.baselines.tcav import tcav_class_table, tcav_importance

    n_probe = check_positive_int(n_probe, "n_probe")
    seed = check_seed(seed)
    classes = [int(k) for k in classes]
    parts = sorted({p for ps in _class_parts(world, classes).values() for p in ps})
    sets = part_probe_sets(world, parts, n_probe, seed=seed, zoom=zoom)
    rnd = random_sets(world, n_sets=n_random_sets + 1, n=n_probe, seed=seed)
    afi = concept_importance(model, sets, rnd[0], cis, list(layers), classes=classes, n_perm=n_perm, seed=seed)
    tc = tcav_importance(tcav_class_table(model, sets, rnd[1:], images, labels, classes, list(tcav_layers),
                                          seed=seed))
    own = _class_parts(world, classes)
    rows = [{"method": "AfI", "class": int(r["class"]), "concept": r["concept"], "score": float(r["score"]),
             "significant": bool(r["significant"])} for _, r in afi.iterrows()]
    rows += [{"method": "TCAV", "class": int(r["class"]), "concept": r["concept"], "score": float(r["importance"]),
              "significant": int(r["n_significant"]) > 0} for _, r in tc.iterrows()]
    out = pd.DataFrame(rows)
    keep = [c in own.get(k, []) for k, c in zip(out["class"], out["concept"])]
    return out[keep].reset_index(drop=True)


def orders_from_scores(scores: pd.DataFrame) -> dict[str, dict[int, list[str]]]:
    """Per method and class, the concepts by decreasing score (ties by name): ``{method: {class: [concept, ...]}}``."""
    out: dict[str, dict[int, list[str]]] = {}
    for (method, k), t in scores.groupby(["method", "class"], sort=True):
        t = t.sort_values(["score", "concept"], ascending=[False, True], kind="mergesort")
        out.setdefault(method, {})[int(k)] = list(t["concept"])
    return out


def _random_orders(concepts: Sequence, n_orders: int, seed: int) -> list[list]:
    g = torch.Generator().manual_seed(seed)
    return [[concepts[i] for i in torch.randperm(len(concepts), generator=g).tolist()] for _ in range(n_orders)]


def part_curves(model: nn.Module, world, recipes, labels, orders: Mapping[str, Mapping[int, Sequence[str]]], *,
                n_random: int = 5, seed: int = 0, batch_size: int = 256) -> pd.DataFrame:
    """Fig. 2 on ConceptWorld: SSC and SDC accuracy curves of each class's scenes for each method's part order.

    Parameters
    ----------
    recipes : Recipe
        Test scenes of several classes (``world.sample``); ``labels`` their classes (``recipes.label``).
    orders : dict method -> {class: [part, ...]}
        From :func:`orders_from_scores`; a ``"random"`` entry is added: ``n_random`` random orders of each
        class's parts (seeded), whose curves are averaged.

    Returns
    -------
    DataFrame
        ``method``, ``class``, ``mode`` ("ssc"/"sdc"), ``k``, ``accuracy``, ``original_accuracy``, ``n``,
        ``n_concepts`` (the class's parts).
    """
    from xailib.data.interventions import concept_curves

    labels = torch.as_tensor(labels).long().cpu()
    classes = sorted({k for o in orders.values() for k in o})
    orders = {m: dict(o) for m, o in orders.items()}
    parts = _class_parts(world, classes)
    orders["random"] = {k: _random_orders(parts[k], n_random, seed + k) for k in classes}
    rows = []
    for method, per_class in orders.items():
        for k in classes:
            idx = torch.nonzero(labels == k)[:, 0]
            if not len(idx) or k not in per_class:
                continue
            rec = recipes[idx]
            runs = per_class[k] if method == "random" else [per_class[k]]
            for mode in ("ssc", "sdc"):
                curves = [concept_curves(model, world, rec, list(order), mode=mode, batch_size=batch_size)
                          for order in runs]
                acc = np.mean([c["accuracy"].to_numpy() for c in curves], axis=0)
                c0 = curves[0]
                rows += [{"method": method, "class": k, "mode": mode, "k": int(kk), "accuracy": float(a),
                          "original_accuracy": float(c0["original_accuracy"].iloc[0]), "n": int(c0["n"].iloc[0]),
                          "n_concepts": len(parts[k])} for kk, a in zip(c0["k"], acc)]
    return pd.DataFrame(rows)


def superpixel_curves(model: nn.Module, images: torch.Tensor, labels, classes: Sequence[int], layer: str,
                      cis: Mapping[str, torch.Tensor], random_pool: torch.Tensor, *, afi_layers: Sequence[str],
                      n_clusters: int = 25, n_random_sets: int = 4, n_random: int = 5, top: int | None = None,
                      n_perm: int = 200, fill: float = 0.0, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fig. 2 on images without ground-truth parts (Fashion-MNIST), with ACE's concepts.

    For each class ``k`` of ``classes``: its images are segmented (SLIC at three resolutions) and the segments
    clustered at ``layer`` (:func:`xailib.data.superpixels.cluster_concepts`); each cluster is a concept. AfI
    scores the concepts' patches against a random benchmark set drawn from ``random_pool`` (MMD of the class's
    meta-detectors, summed over ``afi_layers``), TCAV against ``n_random_sets`` other random sets at ``layer``;
    then the concepts are pasted on a blank image (SSC) or blanked out (SDC) in each method's order, and in
    ``n_random`` random orders.

    Parameters
    ----------
    cis : dict layer -> Tensor ``[K, C_l]``
        Channel importance of ``classes`` (row ``j`` for ``classes[j]``), at least at ``afi_layers``.
    random_pool : Tensor ``[M, C, H, W]``
        Images of every class, from which the random sets are drawn.
    top : int, optional
        Edit only the ``top`` most important concepts (default all).
    n_clusters : int
        k-means clusters per class (ACE: 25), fewer where a class has fewer segments. A class with fewer than 2
        images is left out (a concept needs segments of two images).

    Returns
    -------
    (curves, scores) : DataFrames
        ``curves`` with the columns of :func:`part_curves`; ``scores`` with ``method``, ``class``, ``concept``,
        ``score``, ``significant``, ``size`` (segments in the cluster).
    """
    from xailib.baselines.tcav import tcav_importance, tcav_scores
    from xailib.data.superpixels import cluster_concepts, concept_masks, segment, segment_curves

    labels = torch.as_tensor(labels).long().cpu()
    seed = check_seed(seed)
    curve_rows, score_rows = [], []
    for j, k in enumerate(int(c) for c in classes):
        x = images[labels == k]
        if len(x) < 2:  # a concept needs segments of two images or more (cluster_concepts' min_images)
            continue
        segments = segment(x, fill=fill)
        concepts = cluster_concepts(model, segments, layer, n_clusters=min(n_clusters, len(segments)), seed=seed)
        if not concepts.concept_sets:
            continue
        sets = concepts.concept_sets
        n = min(min(len(s) for s in sets), len(random_pool))  # a draw of n of each set; the pool may be smaller
        rnd = random_sets(random_pool, n_sets=n_random_sets + 1, n=max(n, 2), seed=seed + k)
        cis_k = {name: w[j:j + 1] for name, w in cis.items()}
        afi = concept_importance(model, sets, rnd[0], cis_k, list(afi_layers), classes=[k], n_per_draw=max(n, 2),
                                 n_perm=n_perm, seed=seed)
        tc = tcav_importance(tcav_scores(model, sets, rnd[1:], x, k, [layer], seed=seed))
        sizes = {s.name: len(s) for s in sets}
        scored = {"AfI": dict(zip(afi["concept"], afi["score"])), "TCAV": dict(zip(tc["concept"], tc["importance"]))}
        sig = {"AfI": dict(zip(afi["concept"], afi["significant"])),
               "TCAV": dict(zip(tc["concept"], tc["n_significant"] > 0))}
        masks = concept_masks(concepts)
        names = concepts.names
        orders = {m: [sorted(names, key=lambda c: (-scored[m][c], c))] for m in scored}
        orders["random"] = _random_orders(names, n_random, seed + k)
        for m in ("AfI", "TCAV"):
            score_rows += [{"method": m, "class": k, "concept": c, "score": float(scored[m][c]),
                            "significant": bool(sig[m][c]), "size": sizes[c]} for c in names]
        for method, runs in orders.items():
            for mode in ("ssc", "sdc"):
                curves = [segment_curves(model, x, k, masks, list(o)[:top], mode=mode, fill=fill, names=names)
                          for o in runs]
                acc = np.mean([c["accuracy"].to_numpy() for c in curves], axis=0)
                c0 = curves[0]
                curve_rows += [{"method": method, "class": k, "mode": mode, "k": int(kk), "accuracy": float(a),
                                "original_accuracy": float(c0["original_accuracy"].iloc[0]), "n": int(c0["n"].iloc[0]),
                                "n_concepts": len(names)} for kk, a in zip(c0["k"], acc)]
    return pd.DataFrame(curve_rows), pd.DataFrame(score_rows)


def curve_summary(curves: pd.DataFrame, max_k: int | None = None) -> pd.DataFrame:
    """Fig. 2's curves averaged over classes: per ``method``, ``mode``, ``k`` the mean ``relative`` accuracy
    (accuracy / original accuracy of the class's unedited images), its 95% bootstrap CI over classes and
    ``n_classes``. A class with fewer concepts than ``k`` keeps its last value (all its concepts edited)."""
    rows = []
    if max_k is None:
        max_k = int(curves["k"].max())
    for (method, mode), t in curves.groupby(["method", "mode"], sort=False):
        per_class = {}
        for k_cls, c in t.groupby("class"):
            c = c.sort_values("k")
            rel = (c["accuracy"] / c["original_accuracy"].replace(0, np.nan)).to_numpy()
            per_class[k_cls] = np.concatenate([rel, np.full(max(0, max_k + 1 - len(rel)), rel[-1])])[: max_k + 1]
        for k in range(max_k + 1):
            vals = np.array([v[k] for v in per_class.values()], dtype=float)
            ci = bootstrap_ci(vals, n_boot=2000)
            rows.append({"method": method, "mode": mode, "k": k, "relative_accuracy": ci.mean, "ci_low": ci.low,
                         "ci_high": ci.high, "n_classes": ci.n})
    return pd.DataFrame(rows)


def curve_areas(curves: pd.DataFrame, max_k: int | None = None) -> pd.DataFrame:
    """Per ``method``, ``mode`` and ``class``: the mean relative accuracy over ``k = 1..max_k`` (an area under
    the curve; high is good for SSC, low for SDC), for paired comparisons of methods over classes."""
    rows = []
    for (method, mode, k_cls), c in curves.groupby(["method", "mode", "class"], sort=False):
        c = c.sort_values("k")
        rel = (c["accuracy"] / c["original_accuracy"].replace(0, np.nan)).to_numpy()[1:]
        if max_k is not None:
            rel = np.concatenate([rel, np.full(max(0, max_k - len(rel)), rel[-1] if len(rel) else np.nan)])[:max_k]
        rows.append({"method": method, "mode": mode, "class": k_cls, "area": float(np.nanmean(rel))})
    return pd.DataFrame(rows)


def ground_truth_agreement(scores: pd.DataFrame, truth: pd.DataFrame, n_boot: int = 5000) -> pd.DataFrame:
    """Per method, the Spearman correlation between its concept scores and the ground truth, per class, and the
    mean over classes with its 95% bootstrap CI.

    Parameters
    ----------
    scores : DataFrame
        ``method``, ``class``, ``concept``, ``score`` (:func:`part_scores`).
    truth : DataFrame
        ``class``, ``concept``, ``drop_logit`` (:func:`xailib.data.interventions.intervention_importance`).

    Returns
    -------
    DataFrame
        Per method and class: ``method``, ``class``, ``spearman``, ``n_concepts``; then one row per method with
        ``class = "mean"`` and ``ci_low``, ``ci_high``, ``n_classes``.
    """
    gt = truth.set_index(["class", "concept"])["drop_logit"]
    rows = []
    for (method, k), t in scores.groupby(["method", "class"], sort=False):
        pairs = [(s, gt.get((k, c), np.nan)) for s, c in zip(t["score"], t["concept"])]
        pairs = [(s, g) for s, g in pairs if np.isfinite(g)]
        rho = np.nan
        if len(pairs) >= 3:
            a = torch.tensor([p[0] for p in pairs], dtype=torch.float64)[None]
            b = torch.tensor([p[1] for p in pairs], dtype=torch.float64)[None]
            rho = float(spearman(a, b)[0])
        rows.append({"method": method, "class": k, "spearman": rho, "n_concepts": len(pairs)})
    out = pd.DataFrame(rows)
    means = []
    for method, t in out.groupby("method", sort=False):
        ci = bootstrap_ci(t["spearman"].to_numpy(dtype=float), n_boot=n_boot)
        means.append({"method": method, "class": "mean", "spearman": ci.mean, "ci_low": ci.low, "ci_high": ci.high,
                      "n_classes": ci.n, "n_concepts": int(t["n_concepts"].sum())})
    return pd.concat([out, pd.DataFrame(means)], ignore_index=True)


def probe_areas(world, parts: Sequence[str], n: int = 40, seed: int = 0, zoom: bool = True) -> pd.DataFrame:
    """The mean share of the image each part probe covers (:func:`part_probe_sets`' masks): ``concept``, ``area``.
    Unzoomed, a part probe is the part alone on the blank background, so a small part's probe is mostly blank."""
    sets = part_probe_sets(world, parts, n, seed=seed, zoom=zoom)
    return pd.DataFrame([{"concept": s.name, "area": float(s.masks.float().mean())} for s in sets])


def score_area_correlation(scores: pd.DataFrame, areas: pd.DataFrame, n_boot: int = 5000) -> pd.DataFrame:
    """A diagnostic of the probe design: per method, the Spearman correlation (per class, over its parts) between
    the concept scores and the probes' areas, and its mean over classes with a 95% bootstrap CI. MMD measures how
    different the meta-detector's outputs on the probes are from those on random scenes, whichever way; probes
    that are mostly blank differ most, so a strongly negative correlation says the score follows the probes'
    emptiness rather than the part's role. Columns as :func:`ground_truth_agreement` (``area`` in place of the
    ground truth)."""
    truth = scores[["class", "concept"]].drop_duplicates().merge(areas, on="concept").rename(columns={"area": "drop_logit"})
    return ground_truth_agreement(scores, truth, n_boot=n_boot)
