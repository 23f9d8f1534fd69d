"""MACE in the shared registry of :mod:`xailib.baselines`: a map method named ``"MACE"``.

A MACE unit is fitted to one model (:func:`xailib.mace.training.train_mace`, or
:func:`xailib.mace.experiments.fit_and_prune` with S2's pruning), so the method *requires* it:
``attribute(model, images, y, method="MACE", mace=unit, point=point)``.

The map is the concept relevance of Sec. 3.1 laid over the image: for each image and its target class ``k``,
``sum_j max(r_jk, 0) * M_jk`` over the class's kept concepts ``j``, with ``M_jk`` the concept map resized to the
image (:meth:`~xailib.mace.explain.Explanation.upsampled`) and ``r_jk`` its relevance. Concepts with negative
relevance speak against the class, so they are left out of the class's map (a signed variant would subtract
them; the paper draws each concept's map separately and never sums them, so this weighting is ours).
"""

from __future__ import annotations

import torch

from xailib.baselines import register
from xailib.mace.explain import explain

__all__ = ["mace_map"]


def mace_map(model, images, targets, layer, *, mace=None, point=None) -> torch.Tensor:
    """MACE's relevance-weighted concept maps of each image's target class: ``[B, 1, H, W]`` (non-negative)."""
    ex = explain(model, mace, point, images, classes=sorted({int(t) for t in targets.tolist()}))
    rows = ex.rows_of(targets)
    b = torch.arange(len(rows))
    maps = ex.upsampled()[b, rows].cpu()                                   # [B, C, H, W]
    weights = (ex.relevance[b, rows].cpu().clamp_min(0) * ex.active[rows].cpu())   # [B, C]
    return (weights[..., None, None] * maps).sum(1, keepdim=True)


register("MACE", mace_map, kind="map", requires=("mace", "point"),
         hint="fit a unit to the model with xailib.mace.experiments.fit_and_prune(model, train, held_out, ...) "
              "(or xailib.mace.training.train_mace) and pass its (mace, point).")
