"""Pruning MACE's concepts by the four rules of the supplement's S2, then fine-tuning.

For a concept ``j`` of class ``k``, on a set of evaluation images (the paper: the test set) with labels ``y`` (model
output indices, each one of the unit's classes; the table's ``class`` is the output index too):

1. **top-T** -- of the ``T`` images with the highest relevance ``r_jk``, more than ``S`` are not of class ``k``
   (paper: ``T = 10``, ``S = 5``);
2. **positive everywhere** -- ``r_jk > 0`` on more than ``positive_share`` of all the images (paper: 50%);
3. **masks everything** -- its thresholded map covers at least ``mask_share`` of the image on average (paper: 95%),
   the map normalised by its maximum and thresholded at ``threshold``, averaged over the class's own images;
4. **negative on its class** -- ``r_jk > 0`` on fewer than ``own_positive`` of class ``k``'s images (paper: 5%).

A concept is pruned when any rule fires. Every threshold is a parameter; the table says, for every concept, the
measured value behind each rule and which rules fired. So that the triplet loss still has a negative, a class
keeps at least ``min_keep = 2`` concepts: if the rules would prune more, the ones that fired the fewest rules
(ties: the highest share of positive relevance on the class's own images) are kept and marked so.
"""

from __future__ import annotations

import pandas as pd
import torch
from torch import nn

from xailib.checks import check_fraction, check_positive_int
from xailib.mace.explain import explain, normalise_maps
from xailib.mace.model import MACE, TapPoint

__all__ = ["RULES", "concept_statistics", "prune_concepts"]

RULES = ("top_t", "positive_everywhere", "masks_everything", "negative_on_class")


def concept_statistics(model: nn.Module, mace: MACE, point: TapPoint, images: torch.Tensor, labels, *,
                       threshold: float = 0.5, batch_size: int = 64) -> dict[str, torch.Tensor]:
    """Relevances ``[N, K, C]`` and mask shares ``[N, K, C]`` (share of the thresholded, max-normalised map, at the
    map's own resolution) of every image, class (the unit's rows) and concept; ``labels [N]`` as given (output
    indices)."""
    threshold = check_fraction(threshold, "threshold")
    rel, share = [], []
    for s in range(0, len(images), batch_size):
        ex = explain(model, mace, point, images[s:s + batch_size])
        rel.append(ex.relevance.cpu())
        share.append((normalise_maps(ex.maps) >= threshold).float().flatten(-2).mean(-1).cpu())
    return {"relevance": torch.cat(rel), "mask_share": torch.cat(share),
            "labels": torch.as_tensor(labels).long().cpu()}


def prune_concepts(model: nn.Module, mace: MACE, point: TapPoint, images: torch.Tensor, labels, *, T: int = 10,
                   S: int = 5, positive_share: float = 0.5, mask_share: float = 0.95, own_positive: float = 0.05,
                   threshold: float = 0.5, min_keep: int = 2, apply: bool = True) -> pd.DataFrame:
    """Apply S2's rules to every concept; with ``apply``, switch the pruned ones off (``mace.active``).

    Returns
    -------
    DataFrame
        One row per (class, concept): ``foreign_in_top_t`` (images of other classes among the top ``T``),
        ``positive_share`` (all images), ``mask_share`` (class ``k``'s images), ``own_positive_share``, one bool
        column per rule of :data:`RULES`, ``pruned``, ``kept_minimum``.
    """
    T, S = check_positive_int(T, "T"), check_positive_int(S, "S", zero=True)
    for v, n in ((positive_share, "positive_share"), (mask_share, "mask_share"), (own_positive, "own_positive")):
        check_fraction(v, n)
    stats = concept_statistics(model, mace, point, images, labels, threshold=threshold)
    r, share = stats["relevance"], stats["mask_share"]
    y = mace.rows(stats["labels"]).cpu()                                      # each image's row of the unit
    outputs = mace.classes.tolist()
    if T > len(y):
        raise ValueError(f"T={T} is more than the {len(y)} evaluation images; lower T or give more images.")
    rows = []
    top = r.topk(T, dim=0).indices                                            # [T, K, C]
    for k in range(mace.K):
        own = y == k
        if not bool(own.any()):
            raise ValueError(f"No evaluation image of class {outputs[k]}: rules 3 and 4 are measured on a class's own "
                             "images; give images of every class.")
        for j in range(mace.C):
            foreign = int((y[top[:, k, j]] != k).sum())
            pos_all = float((r[:, k, j] > 0).float().mean())
            m_share = float(share[own, k, j].mean())
            pos_own = float((r[own, k, j] > 0).float().mean())
            fired = {"top_t": foreign > S, "positive_everywhere": pos_all > positive_share,
                     "masks_everything": m_share >= mask_share, "negative_on_class": pos_own < own_positive}
            rows.append({"class": outputs[k], "concept": j, "foreign_in_top_t": foreign, "positive_share": pos_all,
                         "mask_share": m_share, "own_positive_share": pos_own, **fired,
                         "pruned": any(fired.values()) or not bool(mace.active[k, j]), "kept_minimum": False})
    table = pd.DataFrame(rows)
    min_keep = check_positive_int(min_keep, "min_keep", zero=True)
    for k, t in table.groupby("class"):
        kept = (~t["pruned"]).sum()
        if kept < min_keep:
            n_fired = t[list(RULES)].sum(axis=1)
            order = t.assign(n=n_fired).sort_values(["n", "own_positive_share"], ascending=[True, False])
            for i in order.index[:min_keep]:
                if table.at[i, "pruned"]:
                    table.at[i, "pruned"], table.at[i, "kept_minimum"] = False, True
    if apply:
        active = torch.tensor(~table["pruned"].to_numpy()).view(mace.K, mace.C)
        mace.active.copy_(active.to(mace.active.device))
    return table
