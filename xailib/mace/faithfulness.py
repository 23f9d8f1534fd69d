"""Faithfulness of MACE's explanations (Sec. 4.1, Fig. 4, SF17): the drop in the predicted class's probability
when the thresholded concept maps are removed from the image, against saliency baselines.

Sec. 4.1: "We generate a binary mask by thresholding each of the concept maps ... we take the union of all binary
masks. The region in the generated mask is removed from the image and the resulting drop in the probability of
the predicted class is measured", across thresholds, against other saliency methods and "a random process
(activation maps combined randomly)".

* :func:`union_masks` -- each kept concept map of the predicted class, resized to the image and scaled by its
  maximum, thresholded; the union over the concepts (``"MACE"``), or one concept alone (Fig. 4a).
* :func:`threshold_masks` -- a baseline's map scaled by its maximum and thresholded (Grad-CAM, Grad-CAM++,
  Excitation Backprop, saliency = Gradient, through :func:`xailib.baselines.attribute`).
* :func:`random_maps` -- the random control: ``ReLU(sum_c w_c A_c)`` of the tapped layer with ``w ~ U(0, 1)``.
* :func:`area_matched_masks` -- the top pixels of a map, as many as another mask covers: the same comparison at
  equal area, since a union of ``C`` masks covers more of the image than one map at the same threshold.
* :func:`faithfulness_table` -- all of it for a batch of images: one row per method, protocol, threshold and image.

**The predicted class** is the most probable of the MACE unit's classes (:func:`predicted_rows`): the model's
prediction when the unit has a row for every output (the default), and, for a unit trained for some outputs only
(e.g. 10 of an ImageNet classifier's 1000), the class among those that the model finds most likely, so that every
image has concept maps to remove. Its probability is the model's softmax over all outputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from xailib.mace.explain import Explanation, explain, normalise_maps
from xailib.mace.model import MACE, TapPoint, tap
from xailib.metrics import masked_probability

__all__ = ["BASELINES", "THRESHOLDS", "area_matched_masks", "faithfulness_table", "predicted_rows", "random_maps",
           "single_concept_drops", "threshold_masks", "union_masks"]

#: The paper's baselines (Fig. 4b): the names registered in xailib.baselines; "Gradient" is VisCNN's saliency.
BASELINES = ("GradCAM", "GradCAM++", "ExcitationBackprop", "Gradient")
THRESHOLDS = (0.1, 0.3, 0.5, 0.7, 0.9)


def threshold_masks(maps: torch.Tensor, thresholds: Sequence[float]) -> torch.Tensor:
    """``maps [B, H, W]`` scaled by their maxima, ``>= t`` for each threshold: ``[T, B, H, W]`` bool."""
    m = normalise_maps(maps.float())
    return torch.stack([m >= float(t) for t in thresholds]) & (m > 0)[None]


def union_masks(maps: torch.Tensor, active: torch.Tensor, thresholds: Sequence[float]) -> torch.Tensor:
    """The union over the active concepts of the thresholded maps: ``maps [B, C, H, W]`` (one class per image,
    at the image's size), ``active [B, C]`` bool -> ``[T, B, H, W]``."""
    m = normalise_maps(maps.float())
    keep = active.to(m.device)[:, :, None, None] & (m > 0)
    return torch.stack([((m >= float(t)) & keep).any(1) for t in thresholds])


def area_matched_masks(maps: torch.Tensor, areas: torch.Tensor) -> torch.Tensor:
    """The ``round(area * H * W)`` highest pixels of each map (ties by position): ``maps [B, H, W]``,
    ``areas [T, B]`` in [0, 1] -> ``[T, B, H, W]``."""
    b, h, w = maps.shape
    order = maps.reshape(b, -1).argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(h * w).expand(b, -1))
    counts = (areas * h * w).round().long()                                  # [T, B]
    return (rank[None] < counts[:, :, None]).view(-1, b, h, w)


def random_maps(model: nn.Module, point: TapPoint, images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """``ReLU(sum_c w_c A_c)`` of the tapped layer, ``w ~ U(0, 1)`` per image (seeded), resized to the image."""
    x = tap(model, point, images).x
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(x.shape[0], x.shape[1], generator=g).to(x.device, x.dtype)
    maps = F.relu(torch.einsum("bdhw,bd->bhw", x, w))
    return F.interpolate(maps[:, None], size=tuple(images.shape[-2:]), mode="bilinear", align_corners=False)[:, 0]


def predicted_rows(ex: Explanation) -> tuple[torch.Tensor, torch.Tensor]:
    """The predicted class of each image of an explanation of all the unit's classes, as ``(rows [B], outputs [B])``:
    the most probable of :attr:`Explanation.classes` (ties: the first), its row in ``ex`` and its output index. With a
    row for every output this is ``ex.probs.argmax(1)`` for both."""
    outputs = torch.as_tensor(ex.classes, device=ex.probs.device)
    rows = ex.probs[:, outputs].argmax(1)                                    # [B], among the unit's classes
    return rows, outputs[rows]


def _rows(method, protocol, thresholds, p_clean, p_masked, masks, labels, single=None):
    rows = []
    area = masks.float().flatten(2).mean(-1)                                 # [T, B]
    for ti, t in enumerate(thresholds):
        for i in range(p_clean.shape[0]):
            rows.append({"method": method, "protocol": protocol, "threshold": float(t), "image": i,
                         "label": int(labels[i]), "drop": float(p_clean[i] - p_masked[ti, i]),
                         "area": float(area[ti, i]), **({"concept": single} if single is not None else {})})
    return rows


def faithfulness_table(model: nn.Module, mace: MACE, point: TapPoint, images: torch.Tensor, labels, *,
                       baselines: Sequence[str] = BASELINES, thresholds: Sequence[float] = THRESHOLDS,
                       fill: float = 0.0, seed: int = 0, name: str = "MACE") -> pd.DataFrame:
    """Fig. 4b for ``images``: the drop in the predicted class's probability (:func:`predicted_rows`) when each
    method's mask is filled with ``fill``. Protocols: ``"same threshold"`` (the paper's: every map thresholded at
    ``t``) and ``"same area"`` (each baseline's top pixels, as many as MACE's union covers on that image at ``t``).
    The rows of method ``name`` are MACE's union; ``"random"`` is :func:`random_maps`.
    """
    from xailib.baselines import attribute

    labels = torch.as_tensor(labels).long()
    ex = explain(model, mace, point, images)
    row, pred = predicted_rows(ex)                                           # the predicted class's row and output
    p_clean = ex.probs.gather(1, pred[:, None])[:, 0].cpu()
    own = ex.upsampled()[torch.arange(len(images)), row]                     # [B, C, H, W], predicted class
    active = ex.active[row]                                                  # [B, C]
    mace_masks = union_masks(own, active, thresholds)
    areas = mace_masks.float().flatten(2).mean(-1).cpu()
    rows = _rows(name, "same threshold", thresholds, p_clean,
                 masked_probability(model, images, mace_masks, pred, baseline=fill).cpu(), mace_masks, labels)
    maps = {m: attribute(model, images, pred, method=m) for m in baselines}
    maps["random"] = random_maps(model, point, images, seed).cpu()
    for m, amap in maps.items():
        for protocol, masks in (("same threshold", threshold_masks(amap, thresholds)),
                                ("same area", area_matched_masks(amap, areas))):
            rows += _rows(m, protocol, thresholds, p_clean,
                          masked_probability(model, images, masks, pred, baseline=fill).cpu(), masks, labels)
    return pd.DataFrame(rows)


def single_concept_drops(model: nn.Module, mace: MACE, point: TapPoint, images: torch.Tensor, *,
                         threshold: float = 0.5, fill: float = 0.0) -> pd.DataFrame:
    """Fig. 4a: the drop when one kept concept of the predicted class is removed alone, for every concept, against
    the union of all of them (``concept = -1``), at one threshold."""
    ex = explain(model, mace, point, images)
    row, pred = predicted_rows(ex)
    p_clean = ex.probs.gather(1, pred[:, None])[:, 0].cpu()
    own = ex.upsampled()[torch.arange(len(images)), row]
    active = ex.active[row]
    rows = []
    for j in range(mace.C):
        only = torch.zeros_like(active)
        only[:, j] = active[:, j]
        masks = union_masks(own, only, [threshold])
        p = masked_probability(model, images, masks, pred, baseline=fill).cpu()
        for i in torch.nonzero(active[:, j].cpu()).squeeze(1).tolist():
            rows.append({"concept": j, "image": i, "drop": float(p_clean[i] - p[0, i]),
                         "area": float(masks[0, i].float().mean())})
    masks = union_masks(own, active, [threshold])
    p = masked_probability(model, images, masks, pred, baseline=fill).cpu()
    rows += [{"concept": -1, "image": i, "drop": float(p_clean[i] - p[0, i]), "area": float(masks[0, i].float().mean())}
             for i in range(len(images))]
    return pd.DataFrame(rows)
