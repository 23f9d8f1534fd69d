"""Robustness of explanations to small perturbations of the image (supplement S6, Fig. SF14).

S6, Eq. (1): ``R(x_i) = IoU(f_expl(x_i), f_expl(x~_i))``, "the saliency maps are thresholded to create a binary map
before calculating the IoU", for brightness, contrast, random noise and rotation at several intensities, at
thresholds in ``[0.3, 0.7]``, for MACE, Grad-CAM and Grad-CAM++. S6 also sets the condition: "Explanations of
perturbed inputs should not change significantly if there is no significant change in the corresponding outputs";
so the table keeps, per image, whether the perturbation changed the prediction, and the summaries use only the
images whose prediction it did not change.

Choices the paper leaves open, made here:

* the class explained is the clean image's prediction (the most probable of MACE's classes), on both images;
* MACE's saliency map is the **union** of the predicted class's kept concept masks (the mask of Fig. 4b;
  method ``"MACE"``), and, beside it, its highest-relevance concept alone (``"MACE (top concept)"``);
* **rotation**: an explanation that turns with the image is robust, so the clean map is rotated by the same
  angle before the IoU, and both masks are cut to the pixels that stay inside the rotated frame (``aligned``);
  the unaligned IoU, the literal reading of Eq. (1), is kept as protocol ``"unaligned"``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
import torch
from torch import nn

from xailib.mace.explain import explain
from xailib.mace.faithfulness import predicted_rows, threshold_masks, union_masks
from xailib.mace.model import MACE, TapPoint
from xailib.mace.outputs import top_concept_maps
from xailib.metrics import mask_iou
from xailib.perturbations import PERTURBATIONS, perturb, rotate

__all__ = ["PERTURBATION_AMOUNTS", "ROBUSTNESS_THRESHOLDS", "robustness_table", "saliency_maps"]

#: SF14's sweeps here (amounts as :func:`xailib.perturbations.perturb` reads them: brightness and noise as
#: fractions of the input range, contrast as ``factor - 1``, rotation in degrees).
PERTURBATION_AMOUNTS = {"brightness": (0.05, 0.1, 0.2), "contrast": (-0.2, 0.2, 0.4), "noise": (0.01, 0.03, 0.05),
                        "rotation": (5.0, 10.0, 15.0)}
ROBUSTNESS_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)


def saliency_maps(model: nn.Module, mace: MACE, point: TapPoint, images: torch.Tensor, targets=None,
                  baselines: Sequence[str] = ("GradCAM", "GradCAM++")):
    """Per method, what gets thresholded for ``targets [B]`` (output indices; None: the predictions): ``"MACE"``
    the kept concept maps of the target class ``[B, C, H, W]``, ``"MACE (top concept)"`` and each baseline one map
    ``[B, H, W]``.

    Returns
    -------
    (maps, active, predictions)
        ``maps``: method -> maps (CPU); ``active [B, C]``: the target class's kept concepts; ``predictions [B]``.
    """
    from xailib.baselines import attribute

    ex = explain(model, mace, point, images)
    pred = predicted_rows(ex)[1].cpu()                                       # the most probable of MACE's classes
    targets = pred if targets is None else torch.as_tensor(targets).long().flatten().cpu()
    rows = ex.rows_of(targets)
    b = torch.arange(len(rows))
    maps = {"MACE": ex.upsampled()[b, rows].cpu(), "MACE (top concept)": top_concept_maps(ex, targets)[0]}
    for m in baselines:
        maps[m] = attribute(model, images, targets.to(images.device), method=m).detach().cpu()
    return maps, ex.active.cpu()[rows], pred


def _masks(method: str, maps: torch.Tensor, active: torch.Tensor, thresholds) -> torch.Tensor:
    if method == "MACE":
        return union_masks(maps, active, thresholds)
    return threshold_masks(maps, thresholds)


def _rotate_maps(maps: torch.Tensor, degrees: float) -> torch.Tensor:
    """Maps ``[B, H, W]`` or ``[B, C, H, W]`` rotated like the image (zeros outside), non-negative."""
    flat = maps.reshape(maps.shape[0], -1, *maps.shape[-2:]).float()
    return rotate(flat, degrees, fill=0.0).clamp_min(0).reshape(maps.shape)


def robustness_table(model: nn.Module, mace: MACE, point: TapPoint, images: torch.Tensor, *,
                     perturbations: Mapping[str, Sequence[float]] = PERTURBATION_AMOUNTS,
                     thresholds: Sequence[float] = ROBUSTNESS_THRESHOLDS,
                     baselines: Sequence[str] = ("GradCAM", "GradCAM++"), seed: int = 0,
                     input_range: tuple[float, float] = (0.0, 1.0)) -> pd.DataFrame:
    """SF14: one row per method, perturbation, amount, protocol, threshold and image: ``iou`` of the thresholded
    maps of the image and of its perturbed copy, and ``same_prediction`` (the perturbation left the prediction
    unchanged). See the module docstring for the protocols and the maps compared."""
    unknown = sorted(set(perturbations) - set(PERTURBATIONS))
    if unknown:
        raise ValueError(f"unknown perturbations {unknown}; choose from {sorted(PERTURBATIONS)}.")
    clean, active, pred = saliency_maps(model, mace, point, images, None, baselines)
    h, w = images.shape[-2:]
    rows = []
    for kind, amounts in perturbations.items():
        for a, amount in enumerate(amounts):
            noisy = perturb(images, kind, amount, seed=seed * 1000 + a, input_range=input_range)
            maps, _, pred_p = saliency_maps(model, mace, point, noisy, pred, baselines)
            same = (pred_p == pred).tolist()
            protocols = {"aligned": None, "unaligned": None} if kind == "rotation" else {"same pixels": None}
            for method in maps:
                for protocol in protocols:
                    ref, valid = clean[method], torch.ones(len(images), h, w, dtype=torch.bool)
                    if protocol == "aligned":
                        ref = _rotate_maps(ref, amount)
                        valid = rotate(torch.ones(len(images), 1, h, w), amount, fill=0.0)[:, 0] > 0.999
                    m0 = _masks(method, ref, active, thresholds) & valid
                    m1 = _masks(method, maps[method], active, thresholds) & valid
                    iou = mask_iou(m0, m1)                                             # [T, B]
                    for ti, t in enumerate(thresholds):
                        rows += [{"method": method, "perturbation": kind, "amount": float(amount), "protocol": protocol,
                                  "threshold": float(t), "image": i, "iou": float(iou[ti, i]),
                                  "same_prediction": bool(same[i])} for i in range(len(images))]
    return pd.DataFrame(rows)
