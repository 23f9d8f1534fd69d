"""A measurable proxy for MACE's human study (Sec. 4.3, Table 1), on ConceptWorld's part masks.

Table 1 counts the votes of 41 people for the explanation that "helped them better understand the classifier's
prediction"; it cannot be rerun here. **This is a proxy, not that study**: it asks instead whether each method's
map points at, and covers, a *true part* of the object, which ConceptWorld knows pixel by pixel. The paper's
argument for MACE is that it explains "through smaller concepts" (parts) while saliency maps "focus on the
foreground object as a whole"; the proxy measures exactly that difference, not whether people prefer it.

* :func:`localisation_table` -- per method and image, for the map each method shows for the predicted class
  (MACE: the concept with the highest relevance, as Fig. 5a shows it): the pointing game on the object's
  mask (:func:`xailib.metrics.pointing_game`: is the map's maximum on the object? A maximum on the object is
  always on one of its parts, so the part-level number is the next one); the **best part IoU**: the largest
  IoU (:func:`xailib.metrics.mask_iou`) of the map, thresholded at a fraction of its maximum (an all-zero map
  gives an empty region), with any one visible part's mask; and the IoU with the whole object's mask.
* :func:`concept_part_matching` -- how well each kept MACE concept matches one part: over the images of its
  class, the mean IoU of its thresholded map with each part's mask (images where the part is visible), the
  best part and that IoU; :func:`parts_covered` -- how many distinct parts a class's concepts pick as their
  best part (with a best IoU of at least ``min_iou``), out of the parts its images show.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
import torch

from xailib.checks import check_fraction
from xailib.mace.explain import Explanation, normalise_maps
from xailib.metrics import mask_iou, pointing_game

__all__ = ["concept_part_matching", "localisation_table", "part_ious", "parts_covered"]


def part_ious(maps: torch.Tensor, part_masks: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """IoU of each map ``[B, H, W]``, thresholded at ``threshold`` of its maximum, with each part mask
    ``[B, P, H, W]``: ``[B, P]``, NaN where the part is not visible in that image."""
    threshold = check_fraction(threshold, "threshold", low_open=True, hint=" (a fraction of each map's maximum)")
    if part_masks.dim() != 4 or part_masks.shape[0] != maps.shape[0] or part_masks.shape[-2:] != maps.shape[-2:]:
        raise ValueError(f"part_masks must be [B, P, H, W] for maps {tuple(maps.shape)}, got {tuple(part_masks.shape)}.")
    region = normalise_maps(maps.float()) >= threshold                                 # [B, H, W]; empty map: empty
    iou = mask_iou(region[:, None], part_masks.to(region.device))
    return torch.where(part_masks.flatten(2).any(-1).to(iou.device), iou, torch.full_like(iou, float("nan"))).cpu()


def localisation_table(maps: Mapping[str, torch.Tensor], part_masks: torch.Tensor, object_mask: torch.Tensor, *,
                       threshold: float = 0.5, part_names=None) -> pd.DataFrame:
    """One row per method and image: ``pointing`` (1 if the map's maximum is on the object, NaN without an object),
    ``object_iou`` (IoU of the thresholded map with the object), ``best_part_iou`` and ``best_part`` (the visible
    part it overlaps best), ``area`` (share of the image in the thresholded region).

    ``maps``: method -> ``[B, H, W]`` maps of the predicted class (e.g. :func:`xailib.mace.outputs.method_maps`);
    ``part_masks [B, P, H, W]``, ``object_mask [B, H, W]`` bool (ConceptWorld's :class:`SceneBatch`)."""
    rows = []
    for method, m in maps.items():
        m = m.detach().float().cpu()
        hits = pointing_game(m, object_mask.cpu())
        ious = part_ious(m, part_masks.cpu(), threshold)
        region = normalise_maps(m) >= threshold
        obj = mask_iou(region, object_mask.cpu())
        best = torch.nan_to_num(ious, nan=-1.0).max(1)
        area = region.float().flatten(1).mean(1)
        for i in range(len(m)):
            part = int(best.indices[i])
            rows.append({"method": method, "image": i, "pointing": float(hits[i]), "object_iou": float(obj[i]),
                         "best_part_iou": max(float(best.values[i]), 0.0),
                         "best_part": part_names[part] if part_names is not None else part, "area": float(area[i])})
    return pd.DataFrame(rows)


def concept_part_matching(ex: Explanation, labels, part_masks: torch.Tensor, *, threshold: float = 0.5,
                          part_names=None) -> pd.DataFrame:
    """One row per kept concept ``(class, concept)`` and part: ``iou`` (the mean, over the images of that class
    where the part is visible, of the IoU of the concept's thresholded map with the part), ``n_images``, and
    ``best`` (True on the concept's best part). ``labels``: the true classes (model output
    indices); ``part_masks [N, P, H, W]``."""
    labels = torch.as_tensor(labels).long().flatten().cpu()
    maps = ex.upsampled()
    rows = []
    for c in range(maps.shape[1]):
        own = torch.nonzero(labels == ex.classes[c]).flatten()
        if not len(own):
            continue
        for j in torch.nonzero(ex.active.cpu()[c]).flatten().tolist():
            ious = part_ious(maps[own, c, j].cpu(), part_masks[own].cpu(), threshold)   # [n, P]
            mean = ious.nanmean(0)
            n = (~ious.isnan()).sum(0)
            top = int(torch.nan_to_num(mean, nan=-1.0).argmax()) if bool((n > 0).any()) else -1
            for p in range(ious.shape[1]):
                if int(n[p]):
                    rows.append({"class": ex.classes[c], "concept": j,
                                 "part": part_names[p] if part_names is not None else p, "iou": float(mean[p]),
                                 "n_images": int(n[p]), "best": p == top})
    return pd.DataFrame(rows)


def parts_covered(matching: pd.DataFrame, min_iou: float = 0.1) -> pd.DataFrame:
    """Per class: ``concepts`` (kept), ``parts_visible`` (parts its images show), ``distinct_best`` (distinct parts
    among its concepts' best parts with IoU >= ``min_iou``), ``mean_best_iou`` (over its concepts) and the parts."""
    rows = []
    for c, t in matching.groupby("class"):
        best = t[t["best"]]
        good = best[best["iou"] >= min_iou]
        rows.append({"class": c, "concepts": int(best["concept"].nunique()), "parts_visible": int(t["part"].nunique()),
                     "distinct_best": int(good["part"].nunique()), "mean_best_iou": float(best["iou"].mean()),
                     "best_parts": ", ".join(sorted(map(str, good["part"].unique())))})
    return pd.DataFrame(rows)
