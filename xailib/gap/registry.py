"""gAP in the shared registry of :mod:`xailib.baselines`: a map method and a channel method named ``"gAP"``.

Imported by :mod:`xailib.gap` (so ``import xailib.gap`` registers both), and imported by the registry on the first
look-up of a name it does not know (``xailib.baselines.METHOD_PACKAGES``), so that
``xailib.baselines.attribute(..., method="gAP")`` works without importing :mod:`xailib.gap` first.

* map: :func:`xailib.gap.saliency.gap_saliency` -- decompose each image's decision (top ``top_n`` channels per
  decision, down to stage 1) and sum ``dF^1_{k,y^,x^} / dI`` of the decompositions onto the data layer (Sec. 4.1;
  Eq. 2 with the image as layer 0). One image at a time (the decomposition is per image).
* channel: Eq. (4), ``alpha^l_k = 1/Z sum_{x,y} G^l_k * F^l_k`` (:class:`xailib.gap.module.GAP`, strategy "AA").
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from xailib.baselines import register
from xailib.batching import map_batches
from xailib.checks import check_positive_int, model_device
from xailib.gap.module import GAP
from xailib.gap.saliency import gap_saliency

__all__ = ["gap_map", "gap_channels"]


def gap_map(model, images, targets, layer, *, top_n: int = 3, progress: bool = False) -> torch.Tensor:
    """gAP saliency of each image (:func:`~xailib.gap.saliency.gap_saliency`, ``top_n`` = the paper's N): ``[B, C, H, W]``."""
    dev = model_device(model)
    out = []
    for i in tqdm(range(images.shape[0]), disable=not progress, desc="gAP saliency", leave=False):
        out.append(gap_saliency(model, images[i:i + 1].to(dev), target=int(targets[i]), top_n=top_n).cpu())
    return torch.cat(out)


def gap_channels(model, images, targets, layer, *, batch_size: int = 64) -> torch.Tensor:
    """gAP channel contributions, Eq. (4) (:meth:`~xailib.gap.module.GAP.attribute`): ``[B, K]``."""
    batch_size = check_positive_int(batch_size, "batch_size")
    gap = GAP(model)
    return map_batches(model, images, targets, batch_size, lambda x, t: gap.attribute(x, t, layer).contributions,
                       requires_grad=False)


register("gAP", gap_map, kind="map")
register("gAP", gap_channels, kind="channel")
