"""Experiment 1 of Chen et al. (Sec. 4.1) on ConceptWorld: object parts explain the performer's object score.

For one performer (:mod:`xailib.explainer.performers`):

1. :func:`part_selectivity` -- each top-conv filter's NetDissect IoU with every ConceptWorld part on the
   category's images, and its part, assigned by that IoU (:func:`xailib.explainer.interpretable.assign_parts`),
   where Chen et al. annotated the filters by hand.
2. :func:`performer_concepts` -- Case 1 (Eq. 5) on the masked top map: ``y_i = sum_hw x_hwi`` and
   ``w_i = max(sum_hw d y_hat / d x_hwi, 0)``, with ``y_hat`` the performer's log-odds (:class:`LogOdds`).
3. :func:`explain_performer` -- the distillation baseline (``beta = 0``) and ours (``beta = 10``, cross-entropy
   prior, softplus), each learned on the training images, and evaluated on held-out images: the entropy of the
   contribution distribution (Table 1), accuracy at the best threshold and relative deviation (Table 2), and the
   part-contribution error against ``y*_p`` from removing each part's filters (Table 3).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from xailib.explainer.additive import TrainedExplainer, train_explainer
from xailib.explainer.evaluation import (
    best_threshold,
    contribution_entropy,
    ground_truth_contributions,
    part_contribution_error,
    part_contributions,
    part_removal_effects,
    relative_deviation,
)
from xailib.explainer.interpretable import assign_parts, filter_loss, filter_part_iou
from xailib.explainer.performers import RECIPE, BinaryTask, binary_task, load_performer, mask_inputs, top_layer
from xailib.explainer.priors import Concepts, case1_priors
from tqdm.auto import tqdm

from xailib.layers import capture, model_state

__all__ = ["LogOdds", "PartStudy", "contribution_shares", "explain_performer", "filter_loss_batch_vs_set", "init_ablation",
           "object_parts_study", "part_groups", "part_pies", "part_selectivity", "performer_concepts", "summary_rows"]

#: Chen et al.'s beta for Experiment 1.
BETA_PARTS = 10.0


class LogOdds(nn.Module):
    """``y_hat = z_category - z_other`` of a two-output performer, as one output: the score before the softmax
    whose sign is the performer's decision. Layers keep their names under ``net.``."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.net(x)
        if z.dim() != 2 or z.shape[1] != 2:
            raise ValueError(f"LogOdds wraps a binary performer with 2 outputs, got outputs {tuple(z.shape)}.")
        return (z[:, 1] - z[:, 0])[:, None]


def part_selectivity(performer: nn.Module, layer: str, task: BinaryTask, *, min_iou: float = 0.04,
                     batch_size: int = 100) -> tuple[torch.Tensor, pd.DataFrame]:
    """The IoU ``[C, P]`` of each filter of ``layer`` (its output after the ReLU) with each part, on the task's
    positive images, and :func:`~xailib.explainer.interpretable.assign_parts`'s table of it."""
    pos = task.labels == 1
    images = task.images[pos]
    acts = []
    with model_state(performer, train=False), torch.no_grad():
        for s in range(0, len(images), batch_size):
            with capture(performer, [layer], detach=True) as cap:
                performer(images[s:s + batch_size])
            acts.append(torch.relu(cap[layer]))
    iou = filter_part_iou(torch.cat(acts), task.part_masks[pos])
    return iou, assign_parts(iou, task.part_names, min_iou=min_iou)


def part_groups(assignment: pd.DataFrame) -> dict[str, list[int]]:
    """``Omega_p``: the filters assigned to each part (parts without a filter left out), from :func:`part_selectivity`."""
    kept = assignment[assignment["assigned"]]
    return {p: sorted(int(f) for f in t["filter"]) for p, t in kept.groupby("part", sort=True)}


def performer_concepts(performer: nn.Module, arch: str, images: torch.Tensor, interpretable: bool = True,
                       batch_size: int = 100) -> tuple[nn.Module, str, Concepts]:
    """Case 1 on the performer's top map, for ``y_hat`` the log-odds: ``(wrapped, layer, concepts)``, where
    ``wrapped`` is :class:`LogOdds` of the performer and ``layer`` its Case 1 layer in ``wrapped``."""
    wrapped = LogOdds(performer)
    layer = "net." + top_layer(arch, interpretable)
    concepts = case1_priors(wrapped, layer, images, target=0, clip=True, batch_size=batch_size)
    return wrapped, layer, concepts


@dataclass
class PartStudy:
    """One performer explained two ways (Experiment 1).

    Attributes
    ----------
    explainers : dict
        ``"baseline"`` and ``"ours"``: :class:`~xailib.explainer.additive.TrainedExplainer`.
    test : Concepts
        Case 1 on the held-out images.
    contributions : dict
        ``alpha_i y_i`` ``[N, n]`` on the held-out images, per explainer.
    explained : dict
        ``sum_i alpha_i y_i + b`` ``[N]``, per explainer.
    labels : Tensor ``[N]``
    groups : dict
        ``Omega_p`` (:func:`part_groups`).
    y_star : Tensor ``[N, P]``
        The ground-truth part contributions, parts in the order of ``groups``.
    removal_y : Tensor ``[N]``
        The performer's score in the removal runs (equal to ``test.y_hat``).
    """

    explainers: dict
    test: Concepts
    contributions: dict
    explained: dict
    labels: torch.Tensor
    groups: dict
    y_star: torch.Tensor
    removal_y: torch.Tensor


def explain_performer(performer: nn.Module, arch: str, train: BinaryTask, test: BinaryTask,
                      assignment: pd.DataFrame, *, beta: float = BETA_PARTS, epochs: int = 30,
                      seed: int = 0, device="cpu", progress: bool = False, **options) -> PartStudy:
    """The baseline and our explainer of one interpretable performer; ``options`` go to
    :func:`~xailib.explainer.additive.train_explainer` (``width``, ``depth``, ``lr``, ``batch_size``)."""
    wrapped, layer, fit = performer_concepts(performer, arch, train.images)
    _, _, held = performer_concepts(performer, arch, test.images)
    explainers: dict[str, TrainedExplainer] = {}
    for name, b in (("baseline", 0.0), ("ours", beta)):
        explainers[name] = train_explainer(fit.features, fit.concepts, fit.y_hat, fit.priors if b > 0 else None,
                                           beta=b, positive=True, epochs=epochs, seed=seed, device=device,
                                           progress=progress, **options)
    contributions = {k: e.contributions(held.features, held.concepts) for k, e in explainers.items()}
    explained = {k: e.predict(held.features, held.concepts) for k, e in explainers.items()}
    groups = part_groups(assignment)
    if groups:
        y, delta = part_removal_effects(wrapped, layer, test.images, 0, groups)
        y_star = ground_truth_contributions(y, delta)
    else:
        y, y_star = held.y_hat, torch.empty(len(held), 0)
    return PartStudy(explainers, held, contributions, explained, test.labels, groups, y_star, y)


def summary_rows(study: PartStudy, **keys) -> list[dict]:
    """One row per explainer of the study's Tables 1-3 quantities on the held-out images, with ``keys``
    (``arch``, ``category``, ...) in front: ``entropy`` (mean over images, nats), ``performer_accuracy``
    (``y_hat > 0``), ``performer_best_accuracy`` (at its own best threshold, as the explainer is judged),
    ``explainer_accuracy`` and ``tau`` (the best threshold), ``relative_deviation`` (mean),
    ``error_<part>`` per assigned part (positive images, where ``y*`` is defined), ``n`` the images, and what the
    prior asks for: ``prior_zero_share`` (the share of clipped ``w_i = 0``) and ``prior_entropy`` (the entropy of
    ``|w_i y_i|``, the contribution distribution the prior loss pulls towards, over the images where some
    ``w_i y_i`` is not 0)."""
    labels = study.labels
    perf_acc = float(((study.test.y_hat > 0).long() == labels).float().mean())
    perf_best = best_threshold(study.test.y_hat, labels)[1]
    pos = labels == 1
    rows = []
    for name, contri in study.contributions.items():
        tau, acc = best_threshold(study.explained[name], labels)
        row = dict(keys, explainer=name, n=len(labels), entropy=float(contribution_entropy(contri).mean()),
                   performer_accuracy=perf_acc, performer_best_accuracy=perf_best, explainer_accuracy=acc, tau=tau,
                   relative_deviation=float(relative_deviation(study.test.y_hat, study.explained[name]).mean()),
                   n_parts=len(study.groups), n_filters_assigned=sum(len(v) for v in study.groups.values()),
                   prior_zero_share=float((study.test.priors == 0).float().mean()),
                   prior_entropy=float(torch.nanmean(contribution_entropy(study.test.priors * study.test.concepts))))
        if study.groups and bool(pos.any()):
            per_part = part_contributions(contri, study.groups)
            err = part_contribution_error(per_part[pos], study.y_star[pos], study.removal_y[pos])
            row.update({f"error_{p}": float(e) for p, e in zip(study.groups, err)})
            row["error_mean"] = float(err.mean())
        rows.append(row)
    return rows


def _mask_inputs(performer: nn.Module, arch: str, images: torch.Tensor, batch_size: int = 100) -> torch.Tensor:
    """The ReLU of the mask layer's input (the map the filter loss sees in training), eval mode."""
    layer = top_layer(arch, True)
    out = []
    with model_state(performer, train=False), torch.no_grad():
        for s in range(0, len(images), batch_size):
            with mask_inputs(performer, layer) as store:
                performer(images[s:s + batch_size])
            out.append(torch.relu(store[0]))
    return torch.cat(out)


def filter_loss_batch_vs_set(performer: nn.Module, arch: str, task: BinaryTask, batch_size: int | None = None) -> dict:
    """What taking ``X`` as the mini-batch costs: the filter loss over the whole set against its mean over
    batches of ``batch_size`` (the recipe's), same images, eval mode, ``alpha`` the share of positives."""
    batch_size = RECIPE["batch_size"] if batch_size is None else batch_size
    maps = _mask_inputs(performer, arch, task.images)
    labels = task.labels.float()
    order = torch.randperm(len(maps), generator=torch.Generator().manual_seed(0))
    batches = [order[s:s + batch_size] for s in range(0, len(order) - batch_size + 1, batch_size)]
    per_batch = [float(filter_loss(maps[b], alpha=float(labels[b].mean().clamp(min=1e-3)))) for b in batches]
    whole = float(filter_loss(maps, alpha=float(labels.mean())))
    return {"filter_loss_set": whole, "filter_loss_batches": sum(per_batch) / len(per_batch),
            "n_batches": len(per_batch), "batch_size": batch_size, "n_images": len(maps)}


def object_parts_study(archs, categories, *, n_train: int = 300, n_test: int = 200, epochs: int = 30,
                       beta: float = BETA_PARTS, seed: int = 0, device="cpu", folder=None, keep=(),
                       progress: bool = True, **options):
    """Experiment 1 over performers: for each architecture and category, the part selectivity of the
    interpretable and the ordinary performer, and the baseline and our explainer of the interpretable one.

    Returns
    -------
    dict
        ``summary`` (:func:`summary_rows` of every performer), ``selectivity`` (one row per performer:
        ``arch``, ``category``, ``interpretable``, ``mean_iou``, ``assigned``, ``parts``), ``assignments``
        (every filter's part), ``filter_loss`` (:func:`filter_loss_batch_vs_set` per interpretable performer),
        ``studies`` (the :class:`PartStudy` of each ``(arch, category)`` in ``keep``), ``tasks`` (their test
        tasks) and ``seconds`` (wall time per performer).
    """
    summary, selectivity, assignments, losses, studies, tasks, seconds = [], [], [], [], {}, {}, []
    jobs = [(a, c) for a in archs for c in categories]
    for arch, category in tqdm(jobs, desc="performers", disable=not progress):
        t0 = time.perf_counter()
        train = binary_task(category, n_train, "train", seed=seed)
        test = binary_task(category, n_test, "test", seed=seed)
        for interp in (True, False):
            performer = load_performer(arch, category, interp, device=device, folder=folder)
            _, table = part_selectivity(performer, top_layer(arch, interp), train)
            assignments.append(table.assign(arch=arch, category=category, interpretable=interp))
            selectivity.append({"arch": arch, "category": category, "interpretable": interp,
                                "mean_iou": float(table["iou"].mean()), "assigned": int(table["assigned"].sum()),
                                "parts": int(table.loc[table["assigned"], "part"].nunique())})
            if interp:
                icnn, icnn_table = performer, table
        losses.append(dict(arch=arch, category=category, **filter_loss_batch_vs_set(icnn, arch, train)))
        study = explain_performer(icnn, arch, train, test, icnn_table, beta=beta, epochs=epochs, seed=seed,
                                  device=device, **options)
        summary += summary_rows(study, arch=arch, category=category)
        if (arch, category) in set(keep):
            studies[(arch, category)], tasks[(arch, category)] = study, test
        seconds.append({"arch": arch, "category": category, "seconds": time.perf_counter() - t0})
    return {"summary": pd.DataFrame(summary), "selectivity": pd.DataFrame(selectivity),
            "assignments": pd.concat(assignments, ignore_index=True), "filter_loss": pd.DataFrame(losses),
            "studies": studies, "tasks": tasks, "seconds": pd.DataFrame(seconds)}


def part_pies(study: PartStudy, indices) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Fig. 5's pies for the held-out images ``indices``: per explainer ``[K, P + 1]``, ``Contri_p`` per assigned
    part and, last, the filters assigned to no part (``"other"``); and the part names."""
    idx = torch.as_tensor(list(indices), dtype=torch.long)
    out = {}
    for name, contri in study.contributions.items():
        c = contri[idx]
        per = part_contributions(c, study.groups) if study.groups else c.new_zeros(len(c), 0)
        out[name] = torch.cat([per, (c.sum(1) - per.sum(1))[:, None]], 1)
    return out, list(study.groups)


def contribution_shares(study: PartStudy, positives_only: bool = True) -> dict[str, torch.Tensor]:
    """Fig. 7: ``c_i = |alpha_i y_i| / sum_j |alpha_j y_j|`` per held-out image (positives by default), per
    explainer: ``[N, n]``."""
    keep = study.labels == 1 if positives_only else torch.ones_like(study.labels, dtype=torch.bool)
    out = {}
    for name, contri in study.contributions.items():
        a = contri[keep].abs()
        out[name] = a / a.sum(1, keepdim=True).clamp(min=1e-12)
    return out


def init_ablation(performer: nn.Module, arch: str, train: BinaryTask, test: BinaryTask, *, beta: float = BETA_PARTS,
                  epochs: int = 30, seed: int = 0, device="cpu") -> pd.DataFrame:
    """What our start of the explainer does (the paper gives none): baseline and ours from ``init="zero"`` and
    ``init="floor"`` (:func:`~xailib.explainer.additive.train_explainer`), the same epochs and seed. One row per
    start and explainer: the last epoch's distillation loss, and on the held-out images the relative deviation
    and the entropy."""
    _, _, fit = performer_concepts(performer, arch, train.images)
    _, _, held = performer_concepts(performer, arch, test.images)
    rows = []
    for init in ("zero", "floor"):
        for name, b in (("baseline", 0.0), ("ours", beta)):
            e = train_explainer(fit.features, fit.concepts, fit.y_hat, fit.priors if b > 0 else None, beta=b,
                                positive=True, epochs=epochs, seed=seed, device=device, init=init, progress=False)
            pred = e.predict(held.features, held.concepts)
            rows.append({"init": init, "explainer": name, "epochs": epochs,
                         "distillation": float(e.history["distillation"].iloc[-1]),
                         "relative_deviation": float(relative_deviation(held.y_hat, pred).mean()),
                         "entropy": float(contribution_entropy(e.contributions(held.features, held.concepts)).mean()),
                         "n": len(pred)})
    return pd.DataFrame(rows)
