"""Diagnosing a CNN with the hierarchical decomposition (gAP paper, Sec. 4.2: Figs. 10-14, Eq. 13).

Paper: "Deeply Explain CNN via Hierarchical Decomposition" (gAP). Sec. 4.2 uses the decomposition of
Sec. 3.2 to look into four things; each has its computation here (tensors and DataFrames) and a figure
function:

* Fig. 10, failure analysis -- :func:`occlusion_test`: decompose a wrong decision to the top stage, the
  top channel's peak to the stage below, threshold that channel's activation map, upsample it to the
  image, occlude the region and see whether the prediction changes (against a random region of the same
  area: the same mask shifted by a random offset). Figure: :func:`plot_occlusion`.
* Fig. 11, adversarial attacks -- :func:`pgd_attack` (L-inf PGD of Madry et al. [76] in [0, 1] image
  space; :func:`fgsm_attack` is one step of it) and :func:`adversarial_peak_responses`: the peak
  responses ``max_{x,y} F^l_k`` of the top channels (Eq. 4) of the true class on the clean image and of
  the adversarial class on the adversarial image, both measured on both images. Figure:
  :func:`plot_peak_responses`.
* Figs. 12-13, context -- :func:`context_assignment`: each selected channel's thresholded activation
  map is given the label of the ground-truth region (a visible object part, or the background named by
  its context) with the largest IoU, as the paper does with PASCAL-Context regions; ConceptWorld's masks
  stand in for PASCAL-Context. :func:`context_summary` gives the most frequent labels per class.
  Figure: :func:`plot_context_example`.
* Fig. 14, Eq. (13) -- :func:`discriminative_degree` ``D_k = max_c N_{k,c} / sum_c N_{k,c}`` where
  ``N_{k,c}`` counts how often channel ``k`` ranks in the top 3 of a decision in the decompositions of
  images of class ``c``; :func:`discriminative_degrees` runs the decompositions,
  :func:`degree_summary` averages per layer. Figure: :func:`plot_discriminative_degrees`.

All of it rests on :func:`xailib.gap.decomposition.decompose_images`, the one decomposition engine of
Sec. 3.2 batched over images and over the nodes of a tree level (``xailib.gap.decompose`` is the same
engine for one image, as a tree).

An optional planted-bias model for the context analysis is trained by
:func:`xailib.models.train.train_biased_model`; :func:`bias_reliance` measures whether it learnt the bias
(its accuracy on the same scenes with the context set against the bias), the validity check of running
Fig. 10's test on its errors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from xailib.batching import class_scores
from xailib.checks import (
    check_choice,
    check_fraction,
    check_images,
    check_layer_list,
    check_model,
    check_positive_int,
    check_targets,
    model_device,
)
from xailib.layers import model_state
from xailib.metrics import bootstrap_ci, mask_iou
from xailib.gap.decomposition import DEFAULT_MASK_THRESHOLD, DecisionLevel, decompose_images
from xailib.gap.gradients import DEFAULT_MAX_BATCH_BYTES, decision_gradients, layer_outputs, segment_available
from xailib.gap.module import channel_contributions

__all__ = [
    "region_masks",
    "shifted_masks",
    "occlude",
    "part_removed_scenes",
    "OcclusionResult",
    "occlusion_test",
    "occlusion_summary",
    "adversarial_peak_responses",
    "peak_response_summary",
    "mask_iou",
    "ContextResult",
    "context_assignment",
    "context_summary",
    "channel_class_counts",
    "discriminative_degree",
    "discriminative_degrees",
    "degree_summary",
    "bias_reliance",
]


# --------------------------------------------------------------------------------------------------
# Regions and occlusion (Fig. 10)
# --------------------------------------------------------------------------------------------------


def region_masks(maps: torch.Tensor, size: tuple[int, int], threshold: float = DEFAULT_MASK_THRESHOLD) -> torch.Tensor:
    """Image regions from activation maps: upsample bilinearly, keep ``A > threshold * max(A)``.

    Parameters
    ----------
    maps : Tensor ``[N, h, w]``
        Activation maps (Eq. 3).
    size : (H, W)
        Image size.
    threshold : float in [0, 1)
        Fraction of each upsampled map's maximum (the threshold of :func:`xailib.gap.binary_masks`).

    Returns
    -------
    BoolTensor ``[N, H, W]``; all False where a map has no positive value.
    """
    if not isinstance(maps, torch.Tensor) or maps.dim() != 3:
        raise ValueError(f"maps must be a tensor [N, h, w], got {getattr(maps, 'shape', type(maps).__name__)}.")
    threshold = check_fraction(threshold, "threshold", high_open=True, hint=" (fraction of a map's maximum)")
    if maps.shape[0] == 0:
        return torch.zeros(0, *size, dtype=torch.bool, device=maps.device)
    up = F.interpolate(maps[:, None].float(), size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    peak = up.flatten(1).amax(1)[:, None, None]
    return (up > threshold * peak) & (peak > 0)


def shifted_masks(masks: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Control regions: each mask ``[N, H, W]`` shifted circularly by a random offset (same shape and area).

    The offsets ``(dy, dx)`` are uniform over the image, drawn from a generator seeded with ``seed``.
    """
    if not isinstance(masks, torch.Tensor) or masks.dim() != 3:
        raise ValueError(f"masks must be a tensor [N, H, W], got {getattr(masks, 'shape', type(masks).__name__)}.")
    n, h, w = masks.shape
    gen = torch.Generator().manual_seed(int(seed))
    dy = torch.randint(0, h, (n,), generator=gen)
    dx = torch.randint(0, w, (n,), generator=gen)
    iy = (torch.arange(h)[None, :] - dy[:, None]) % h  # [N, H]: source row of each target row
    ix = (torch.arange(w)[None, :] - dx[:, None]) % w
    rows = torch.arange(n)[:, None, None]
    dev = masks.device
    return masks[rows.to(dev), iy[:, :, None].to(dev), ix[:, None, :].to(dev)]


def _fill_values(fill, images: torch.Tensor) -> torch.Tensor:
    c = images.shape[1]
    if isinstance(fill, str):
        if fill != "mean":
            raise ValueError(f"fill must be a float in [0, 1], a colour of {c} floats, or 'mean' (the images' mean "
                             f"colour); got {fill!r}.")
        return images.mean(dim=(0, 2, 3))
    value = torch.as_tensor(fill, dtype=images.dtype, device=images.device).flatten()
    if value.numel() == 1:
        value = value.expand(c)
    if value.numel() != c:
        raise ValueError(f"fill must be one value or {c} values (one per channel), got {value.numel()}.")
    return value


def occlude(images: torch.Tensor, masks: torch.Tensor, fill=0.5) -> torch.Tensor:
    """Occlude: ``x' = where(mask, fill, x)``; only the masked pixels change.

    Parameters
    ----------
    images : Tensor ``[B, C, H, W]``
    masks : BoolTensor ``[B, H, W]``
    fill : float, sequence of C floats, Tensor ``[C]``, or "mean"
        Colour of the occluder; "mean" is the mean colour of ``images``. ConceptWorld's blank
        background is 0.5 grey.

    Returns
    -------
    Tensor ``[B, C, H, W]``
    """
    images = check_images(images, what="images")
    if not isinstance(masks, torch.Tensor) or masks.shape != (images.shape[0],) + tuple(images.shape[-2:]):
        raise ValueError(f"masks must be a tensor [B, H, W] = {(images.shape[0],) + tuple(images.shape[-2:])}, "
                         f"got {getattr(masks, 'shape', type(masks).__name__)}.")
    value = _fill_values(fill, images)[None, :, None, None]
    return torch.where(masks.bool().to(images.device)[:, None], value, images)


def part_removed_scenes(world, n: int, seed: int = 0, split: str = "test", keep: Sequence[str] = ("body",)):
    """Scenes with one random visible part removed: a pool of hard images where a model that makes no
    error on clean scenes does make some (failure cases for Fig. 10).

    Parameters
    ----------
    world : ConceptWorld
    n : int
        Scenes drawn by ``world.sample(n, split, seed)``.
    seed : int
        Seed of the scenes and of the part removed from each.
    keep : sequence of str
        Parts never removed (the body by default: a body-less animal is hardly an animal).

    Returns
    -------
    (SceneBatch, LongTensor ``[n]``)
        The rendered scenes (labels unchanged) and the index (into ``world.part_names``) of the part
        removed from each scene (-1 where no removable part was present).
    """
    check_positive_int(n, "n")
    recipes = world.sample(n, split=split, seed=seed)
    keep_idx = [world.part_names.index(p) for p in keep]
    removable = recipes.present.clone()
    removable[:, keep_idx] = False
    gen = torch.Generator().manual_seed(int(seed))
    score = torch.rand(removable.shape, generator=gen).masked_fill(~removable, -1.0)
    chosen = torch.where(removable.any(1), score.argmax(1), torch.full((n,), -1))
    edited = recipes.clone()
    rows = torch.nonzero(chosen >= 0)[:, 0]
    edited.present[rows, chosen[rows]] = False
    return world.render(edited), chosen


@dataclass
class OcclusionResult:
    """What :func:`occlusion_test` returns for ``M`` (misclassified) images.

    Attributes
    ----------
    table : DataFrame
        One row per image (columns documented in :func:`occlusion_test`).
    index : LongTensor ``[M]``
        Indices of the tested images in the images passed.
    masks, control_masks : BoolTensor ``[M, H, W]``
        The occluded region and the control region (same mask, randomly shifted).
    upper_maps, lower_maps : Tensor ``[M, h, w]``
        Activation maps of the top channel at the upper layer (for the class decision) and of the top
        channel at the lower layer (for the upper channel's peak).
    occluded, control : Tensor ``[M, C, H, W]``
    layers : list of str
        ``[lower, upper]``.
    """

    table: pd.DataFrame
    index: torch.Tensor
    masks: torch.Tensor
    control_masks: torch.Tensor
    upper_maps: torch.Tensor
    lower_maps: torch.Tensor
    occluded: torch.Tensor
    control: torch.Tensor
    layers: list[str]


def occlusion_test(
    model: nn.Module,
    images: torch.Tensor,
    labels,
    layers: Sequence[str] | None = None,
    mask_threshold: float = 0.5,
    fill=0.5,
    only_misclassified: bool = True,
    seed: int = 0,
    max_batch_bytes: int | None = DEFAULT_MAX_BATCH_BYTES,
) -> OcclusionResult:
    """Fig. 10: occlude the region found by the decomposition of a (wrong) decision; does it change?

    For every image (by default only the misclassified ones): decompose the predicted class's score onto
    the upper layer, take the top channel (Eq. 4) at its peak (Eq. 5), decompose that neuron onto the
    lower layer and take its top channel -- the top path of :func:`xailib.gap.decompose` with N = 1,
    as in the paper's conv5_3 -> conv4_3 walk. That channel's activation map is upsampled and
    thresholded (:func:`region_masks`), the region is filled with ``fill`` (:func:`occlude`), and the
    prediction is taken again. Control: the same region shifted by a random offset (:func:`shifted_masks`).

    Parameters
    ----------
    model : nn.Module
    images : Tensor ``[B, C, H, W]`` in [0, 1]
    labels : LongTensor ``[B]`` or sequence of int
        True classes.
    layers : (lower, upper) or None
        ``None`` = the last two of ``model.stage_names``.
    mask_threshold : float in [0, 1)
        Region = upsampled map above this fraction of its maximum.
    fill : float, colour or "mean"
        Occluder colour (see :func:`occlude`).
    only_misclassified : bool
        Test only the images the model gets wrong (the paper's failure cases).
    seed : int
        Seed of the control offsets.

    Returns
    -------
    OcclusionResult
        ``table`` columns: ``index``, ``label``, ``pred``, ``p_pred``, ``p_label`` (softmax before),
        ``upper_channel``, ``upper_share``, ``lower_channel``, ``lower_share``, ``area`` (fraction of
        the image occluded), ``pred_occluded``, ``p_pred_occluded`` (of the old prediction),
        ``p_label_occluded``, ``changed``, ``corrected``, ``pred_control``, ``p_pred_control``,
        ``changed_control``, ``corrected_control``.
    """
    check_model(model)
    images = check_images(images, what="images")
    layers = check_layer_list(model, layers, default_last=2)
    if len(layers) != 2:
        raise ValueError(f"occlusion_test needs two layers (lower, upper), e.g. the last two stages; got {layers}.")
    mask_threshold = check_fraction(mask_threshold, "mask_threshold", high_open=True, hint=" (fraction of a map's maximum)")
    images = images.to(model_device(model))
    logits = class_scores(model, images)
    labels = check_targets(labels, images.shape[0], classes=logits.shape[1], what="labels", allow_predicted=False)
    pred = logits.argmax(1).cpu()
    index = torch.nonzero(pred != labels)[:, 0] if only_misclassified else torch.arange(images.shape[0])
    size = tuple(images.shape[-2:])
    if index.numel() == 0:
        empty = torch.zeros(0, *size, dtype=torch.bool)
        return OcclusionResult(pd.DataFrame(columns=_OCCLUSION_COLUMNS), index, empty, empty,
                               torch.zeros(0, 1, 1), torch.zeros(0, 1, 1), images[:0], images[:0], layers)
    x, y, p = images[index.to(images.device)], labels[index], pred[index]
    levels = decompose_images(model, x, p, layers, top_n=1, keep_maps=layers, max_batch_bytes=max_batch_bytes)
    upper, lower = levels
    masks = region_masks(lower.activation_map, size, mask_threshold)
    control_masks = shifted_masks(masks, seed)
    occluded, control = occlude(x, masks, fill), occlude(x, control_masks, fill)
    probs = [torch.softmax(class_scores(model, t).cpu(), 1) for t in (x, occluded, control)]
    rows = torch.arange(len(index))
    before, after, ctrl = probs
    table = pd.DataFrame({
        "index": index.numpy(), "label": y.numpy(), "pred": p.numpy(),
        "p_pred": before[rows, p].numpy(), "p_label": before[rows, y].numpy(),
        "upper_channel": upper.channel.numpy(), "upper_share": upper.share.numpy(),
        "lower_channel": lower.channel.numpy(), "lower_share": lower.share.numpy(),
        "area": masks.float().mean((1, 2)).cpu().numpy(),
        "pred_occluded": after.argmax(1).numpy(), "p_pred_occluded": after[rows, p].numpy(),
        "p_label_occluded": after[rows, y].numpy(),
        "changed": (after.argmax(1) != p).numpy(), "corrected": (after.argmax(1) == y).numpy(),
        "pred_control": ctrl.argmax(1).numpy(), "p_pred_control": ctrl[rows, p].numpy(),
        "changed_control": (ctrl.argmax(1) != p).numpy(), "corrected_control": (ctrl.argmax(1) == y).numpy(),
    })
    return OcclusionResult(table, index, masks.cpu(), control_masks.cpu(), upper.activation_map,
                           lower.activation_map, occluded.cpu(), control.cpu(), layers)


_OCCLUSION_COLUMNS = ["index", "label", "pred", "p_pred", "p_label", "upper_channel", "upper_share", "lower_channel",
                      "lower_share", "area", "pred_occluded", "p_pred_occluded", "p_label_occluded", "changed",
                      "corrected", "pred_control", "p_pred_control", "changed_control", "corrected_control"]


def occlusion_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Fractions over the images of an :func:`occlusion_test` table: decomposition region vs control region.

    Returns
    -------
    DataFrame with rows ``decomposition region``, ``random region (same area)`` and columns ``images``,
    ``mean_area``, ``prediction_changed``, ``corrected_to_label``, ``mean_p_pred_before``,
    ``mean_p_pred_after``.
    """
    rows = []
    for name, suffix, p_col in (("decomposition region", "", "p_pred_occluded"),
                                ("random region (same area)", "_control", "p_pred_control")):
        rows.append({
            "region": name, "images": len(table), "mean_area": table["area"].mean(),
            "prediction_changed": table[f"changed{suffix}"].astype(float).mean(),
            "corrected_to_label": table[f"corrected{suffix}"].astype(float).mean(),
            "mean_p_pred_before": table["p_pred"].mean(), "mean_p_pred_after": table[p_col].mean(),
        })
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------------
# Adversarial attacks (Fig. 11)
# --------------------------------------------------------------------------------------------------


def adversarial_peak_responses(
    model: nn.Module,
    clean: torch.Tensor,
    adversarial: torch.Tensor,
    labels,
    layers: Sequence[str] | None = None,
    top_n: int = 4,
    max_batch_bytes: int | None = DEFAULT_MAX_BATCH_BYTES,
) -> pd.DataFrame:
    """Fig. 11 (b, c): peak responses of the most important channels, clean vs adversarial image.

    For each layer, the true class's score on the clean image and the adversarial prediction's score on
    the adversarial image are decomposed onto the layer by gAP; the top ``top_n`` channels of each
    (Eq. 4) are taken, and each channel's peak response ``max_{x,y} F^l_k`` is measured on both images.

    Parameters
    ----------
    model : nn.Module
    clean, adversarial : Tensor ``[B, C, H, W]``
    labels : LongTensor ``[B]`` or sequence of int
        True classes.
    layers : sequence of str or None
        ``None`` = the last stage of ``model.stage_names`` (the paper: conv5_3).
    top_n : int
        The paper plots the top 4.

    Returns
    -------
    DataFrame
        One row per image, layer, kind and rank: ``image``, ``layer``, ``kind`` ("true class" or
        "adversarial class"), ``class``, ``rank`` (1 = most important), ``channel``, ``contribution``,
        ``peak_clean``, ``peak_adversarial``, ``change``, plus ``label``, ``pred_clean``,
        ``pred_adversarial``, ``clean_correct`` and ``fooled`` (clean correct, adversarial wrong).
    """
    check_model(model)
    clean = check_images(clean, what="clean")
    adversarial = check_images(adversarial, what="adversarial")
    if clean.shape != adversarial.shape:
        raise ValueError(f"clean {tuple(clean.shape)} and adversarial {tuple(adversarial.shape)} must have one shape.")
    layers = check_layer_list(model, layers, default_last=1)
    check_positive_int(top_n, "top_n", hint=" (the paper plots 4)")
    device = model_device(model)
    clean, adversarial = clean.to(device), adversarial.to(device)
    b = clean.shape[0]
    with model_state(model, train=False, requires_grad=False):
        pred_clean = class_scores(model, clean).argmax(1).cpu()
        pred_adv = class_scores(model, adversarial).argmax(1).cpu()
        n_classes = int(class_scores(model, clean[:1]).shape[1])
        labels = check_targets(labels, b, classes=n_classes, what="labels", allow_predicted=False)
        segment = all(segment_available(model, lo, None) for lo in layers)
        feats_clean = layer_outputs(model, clean, layers)[0] if segment else {}
        feats_adv = layer_outputs(model, adversarial, layers)[0] if segment else {}
        frames = []
        for layer in layers:
            peaks, tops = {}, {}
            for name, x, target, acts in (("clean", clean, labels, feats_clean), ("adv", adversarial, pred_adv,
                                                                                 feats_adv)):
                g, f, _ = decision_gradients(model, x, layer, None, target, None, torch.arange(b),
                                             lower_acts=acts.get(layer), use_segment=segment,
                                             max_batch_bytes=max_batch_bytes)
                alpha = channel_contributions(g, f, "AA")  # Eq. (4), [B, K]
                n = min(top_n, alpha.shape[1])
                tops[name] = (torch.sort(alpha, dim=1, descending=True, stable=True).indices[:, :n].cpu(), alpha.cpu())
                peaks[name] = f.flatten(2).amax(2).cpu()  # peak response max_{x,y} F_k, [B, K]
            for kind, key, cls in (("true class", "clean", labels), ("adversarial class", "adv", pred_adv)):
                ch, alpha = tops[key]
                n = ch.shape[1]
                img = torch.arange(b).repeat_interleave(n)
                flat = ch.flatten()
                frames.append(pd.DataFrame({
                    "image": img.numpy(), "layer": layer, "kind": kind, "class": cls[img].numpy(),
                    "rank": torch.arange(1, n + 1).repeat(b).numpy(), "channel": flat.numpy(),
                    "contribution": alpha[img, flat].numpy(),
                    "peak_clean": peaks["clean"][img, flat].numpy(), "peak_adversarial": peaks["adv"][img, flat].numpy(),
                }))
    table = pd.concat(frames, ignore_index=True)
    table["change"] = table["peak_adversarial"] - table["peak_clean"]
    img = table["image"].to_numpy()
    table["label"] = labels.numpy()[img]
    table["pred_clean"] = pred_clean.numpy()[img]
    table["pred_adversarial"] = pred_adv.numpy()[img]
    table["clean_correct"] = table["pred_clean"] == table["label"]
    table["fooled"] = table["clean_correct"] & (table["pred_adversarial"] != table["label"])
    return table


def peak_response_summary(table: pd.DataFrame, only_fooled: bool = True) -> pd.DataFrame:
    """Fig. 11 (c): mean peak response per layer, kind and rank, clean vs adversarial.

    ``only_fooled`` keeps the images the model got right that the attack fooled (where "true class" and
    "adversarial class" differ). Columns: ``layer``, ``kind``, ``rank``, ``images``, ``peak_clean``,
    ``peak_adversarial``, ``change``, ``fraction_decreased`` / ``fraction_increased`` (per channel).
    """
    t = table[table["fooled"]] if only_fooled else table
    g = t.groupby(["layer", "kind", "rank"], sort=False)
    out = g.agg(images=("image", "nunique"), peak_clean=("peak_clean", "mean"),
                peak_adversarial=("peak_adversarial", "mean"), change=("change", "mean"),
                fraction_decreased=("change", lambda c: float((c < 0).mean())),
                fraction_increased=("change", lambda c: float((c > 0).mean()))).reset_index()
    return out


# --------------------------------------------------------------------------------------------------
# Context (Figs. 12-13)
# --------------------------------------------------------------------------------------------------


@dataclass
class ContextResult:
    """What :func:`context_assignment` returns.

    Attributes
    ----------
    table : DataFrame
        One row per selected channel (columns in :func:`context_assignment`).
    levels : list of DecisionLevel
        The decompositions, top layer first, with activation maps.
    region_names : list of str
        Part names then ``"background"``: the regions of ``iou`` columns.
    iou : list of Tensor ``[D, P + 1]``
        IoU of each level's binary maps with each region.
    mask_threshold : float
    """

    table: pd.DataFrame
    levels: list[DecisionLevel]
    region_names: list[str]
    iou: list[torch.Tensor]
    mask_threshold: float = 0.5


def context_assignment(
    model: nn.Module,
    scenes,
    targets="label",
    layers: Sequence[str] | None = None,
    top_n: int = 3,
    mask_threshold: float = 0.5,
    image_batch: int = 32,
    max_batch_bytes: int | None = DEFAULT_MAX_BATCH_BYTES,
) -> ContextResult:
    """Figs. 12-13: the region each selected channel's thresholded activation map falls on.

    The class decision of each scene is decomposed hierarchically onto ``layers`` (the paper: to
    conv4_3); every selected channel's activation map is upsampled and thresholded
    (:func:`region_masks`) and assigned the label of the ground-truth region with the largest IoU
    (:func:`mask_iou`): a visible object part (``"part:<name>"``) or the background, named by the
    scene's context (``"context:<name>"``; ``"context:blank"`` for a blank background). This is the
    paper's PASCAL-Context assignment with ConceptWorld's masks.

    Parameters
    ----------
    model : nn.Module
    scenes : SceneBatch or ConceptWorldDataset subset
        Needs ``images [N, 3, H, W]``, ``labels [N]``, ``part_masks [N, P, H, W]``, ``background_mask
        [N, H, W]``, ``recipes.context [N]`` and ``world`` (``part_names``, ``context_names``);
        :meth:`ConceptWorldDataset.scenes` gives one.
    targets : "label", "predicted", or class indices ``[N]``
        Which class decision to decompose.
    layers : sequence of str or None
        ``None`` = the last two stages (top stage -> the one below, the paper's conv5_3 -> conv4_3).
    top_n : int
    mask_threshold : float

    Returns
    -------
    ContextResult
        ``table`` columns: ``image``, ``class``, ``context``, ``layer``, ``depth`` (0 = top layer),
        ``rank``, ``channel``, ``contribution``, ``share``, ``area``, ``iou_object``, ``iou_background``,
        ``label`` (region with the largest IoU), ``on_context`` (that region is the background), ``best_iou``.
    """
    check_model(model)
    for attr in ("images", "labels", "part_masks", "background_mask", "recipes", "world"):
        if not hasattr(scenes, attr):
            raise TypeError(f"scenes must be a ConceptWorld SceneBatch (e.g. dataset.scenes(range(n))) with "
                            f".{attr}; got {type(scenes).__name__}.")
    images = check_images(scenes.images, what="scenes.images")
    layers = check_layer_list(model, layers, default_last=2)
    mask_threshold = check_fraction(mask_threshold, "mask_threshold", high_open=True, hint=" (fraction of a map's maximum)")
    if isinstance(targets, str):
        check_choice(targets, ("label", "predicted"), "targets (or class indices [N])")
        targets = scenes.labels if targets == "label" else None
    levels = decompose_images(model, images, targets, layers, top_n=top_n, keep_maps=layers, image_batch=image_batch,
                              max_batch_bytes=max_batch_bytes)
    world = scenes.world
    part_names = list(world.part_names)
    ctx_index = scenes.recipes.context.cpu()
    ctx_names = np.array(list(world.context_names) + ["blank"])[np.where(ctx_index.numpy() < 0, -1, ctx_index.numpy())]
    regions = torch.cat([scenes.part_masks.cpu(), scenes.background_mask.cpu()[:, None]], 1)  # [N, P+1, H, W]
    obj = ~scenes.background_mask.cpu()
    size = tuple(images.shape[-2:])
    frames, ious = [], []
    for depth, level in enumerate(levels):
        masks = region_masks(level.activation_map, size, mask_threshold)  # [D, H, W]
        idx = level.image_index
        chunks = [mask_iou(masks[s:s + 256, None], regions[idx[s:s + 256]]) for s in range(0, len(level), 256)]
        iou = torch.cat(chunks) if chunks else torch.zeros(0, regions.shape[1])
        ious.append(iou)
        best = iou.argmax(1)  # ties: the first region (parts before the background)
        on_ctx = best == len(part_names)
        labels = np.where(on_ctx.numpy(), np.char.add("context:", ctx_names[idx.numpy()].astype(str)),
                          np.char.add("part:", np.array(part_names + ["-"])[best.numpy()].astype(str)))
        frames.append(pd.DataFrame({
            "image": idx.numpy(), "class": scenes.labels.cpu()[idx].numpy(), "context": ctx_names[idx.numpy()],
            "layer": level.layer, "depth": depth, "rank": level.rank.numpy(), "channel": level.channel.numpy(),
            "contribution": level.contribution.numpy(), "share": level.share.numpy(),
            "area": masks.float().mean((1, 2)).numpy(), "iou_object": mask_iou(masks, obj[idx]).numpy(),
            "iou_background": iou[:, -1].numpy(), "label": labels, "on_context": on_ctx.numpy(),
            "best_iou": iou.gather(1, best[:, None])[:, 0].numpy(),
        }))
    return ContextResult(pd.concat(frames, ignore_index=True), levels, part_names + ["background"], ious,
                         mask_threshold)


def context_summary(table: pd.DataFrame, class_names: Sequence[str], layer: str | None = None,
                    top: int = 3, by: Sequence[str] = ("class",)) -> pd.DataFrame:
    """Fig. 13: per class, the most frequent region labels of the selected channels' maps.

    Parameters
    ----------
    table : DataFrame from :func:`context_assignment`
    class_names : sequence of str
    layer : str or None
        Keep one layer (the paper: conv4_3); ``None`` = all rows.
    top : int
        How many labels to list.
    by : sequence of str
        Grouping columns (``("class",)``, or ``("class", "context")`` for a bias study).

    Returns
    -------
    DataFrame with the grouping columns, ``maps``, ``on_context`` (fraction of maps whose best region
    is the background), ``iou_object``, ``iou_background`` (means), ``top_context`` (most frequent
    context label among maps on the background) and ``top_labels`` ("label (fraction), ...").
    """
    t = table if layer is None else table[table["layer"] == layer]
    rows = []
    for key, g in t.groupby(list(by), sort=True):
        key = key if isinstance(key, tuple) else (key,)
        counts = g["label"].value_counts(normalize=True, sort=True)
        counts = counts.sort_values(ascending=False, kind="stable")
        ctx = g.loc[g["on_context"], "label"].value_counts()
        row = dict(zip(by, key))
        if "class" in row:
            row["class"] = class_names[int(row["class"])]
        row.update({
            "maps": len(g), "on_context": float(g["on_context"].mean()), "iou_object": g["iou_object"].mean(),
            "iou_background": g["iou_background"].mean(),
            "top_context": ctx.index[0].split(":", 1)[1] if len(ctx) else "",
            "top_labels": ", ".join(f"{lab.split(':', 1)[1]} ({frac:.2f})" for lab, frac in counts.iloc[:top].items()),
        })
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------------
# Discriminative degree (Fig. 14, Eq. 13)
# --------------------------------------------------------------------------------------------------


def channel_class_counts(levels: Sequence[DecisionLevel], labels: torch.Tensor, n_classes: int) -> dict[str, torch.Tensor]:
    """``N_{k,c}``: how often channel ``k`` of each layer is among the selected (top-N) channels of a
    decision in the decompositions of images of class ``c`` (Sec. 4.2, before Eq. 13).

    Parameters
    ----------
    levels : list of DecisionLevel
        From :func:`decompose_images`.
    labels : LongTensor ``[B]``
        Class of each image.
    n_classes : int

    Returns
    -------
    dict layer -> LongTensor ``[K, C]``
    """
    labels = torch.as_tensor(labels).long().cpu()
    out = {}
    for level in levels:
        counts = torch.zeros(level.n_channels, n_classes, dtype=torch.long)
        cls = labels[level.image_index]
        counts.index_put_((level.channel, cls), torch.ones_like(cls), accumulate=True)
        out[level.layer] = counts
    return out


def discriminative_degree(counts: torch.Tensor) -> torch.Tensor:
    """Eq. (13): ``D_k = max_c N_{k,c} / sum_{c=1}^{C} N_{k,c}``.

    Parameters
    ----------
    counts : Tensor ``[K, C]``
        Non-negative counts ``N_{k,c}``.

    Returns
    -------
    Tensor ``[K]`` float, in ``[1/C, 1]``; NaN for a channel never counted.
    """
    if not isinstance(counts, torch.Tensor) or counts.dim() != 2:
        raise ValueError(f"counts must be a tensor [K, C] of N_(k,c), got {getattr(counts, 'shape', type(counts))}.")
    if counts.numel() and float(counts.min()) < 0:
        raise ValueError("counts must be non-negative (they count selections).")
    c = counts.double()
    total = c.sum(1)
    d = c.amax(1) / total.clamp_min(1e-300)
    return torch.where(total > 0, d, torch.full_like(d, math.nan))  # Eq. (13)


def discriminative_degrees(
    model: nn.Module,
    images: torch.Tensor,
    labels,
    layers: Sequence[str] | None = None,
    top_n: int = 3,
    image_batch: int = 8,
    max_batch_bytes: int | None = DEFAULT_MAX_BATCH_BYTES,
    progress: bool = False,
) -> pd.DataFrame:
    """Fig. 14: per channel of every layer, Eq. (13) from the hierarchical decompositions of ``images``.

    The class decision of each image's label is decomposed to ``layers[0]`` (top-``top_n`` channels per
    decision, as in Sec. 3.2) and ``N_{k,c}`` counts the selections (:func:`channel_class_counts`).

    Returns
    -------
    DataFrame with one row per layer and channel: ``layer``, ``stage`` (1 = lowest), ``channel``,
    ``selections`` (``sum_c N_{k,c}``), ``top_class``, ``D`` (NaN if never selected).
    """
    check_model(model)
    images = check_images(images, what="images")
    layers = check_layer_list(model, layers)
    n_classes = int(class_scores(model, images[:1]).shape[1])
    labels = check_targets(labels, images.shape[0], classes=n_classes, what="labels", allow_predicted=False)
    levels = decompose_images(model, images, labels, layers, top_n=top_n, image_batch=image_batch,
                              max_batch_bytes=max_batch_bytes, progress=progress)
    counts = channel_class_counts(levels, labels, n_classes)
    frames = []
    for layer in layers:
        n = counts[layer]
        frames.append(pd.DataFrame({
            "layer": layer, "stage": layers.index(layer) + 1, "channel": np.arange(n.shape[0]),
            "selections": n.sum(1).numpy(), "top_class": n.argmax(1).numpy(),
            "D": discriminative_degree(n).numpy(),
        }))
    out = pd.concat(frames, ignore_index=True)
    out.attrs["n_classes"] = n_classes
    return out


def degree_summary(per_channel: pd.DataFrame, n_classes: int | None = None, min_selections: int = 1,
                   confidence: float = 0.95, n_boot: int = 10000, seed: int = 0) -> pd.DataFrame:
    """Per layer: the mean of Eq. (13) over channels selected at least ``min_selections`` times, and the
    selection-weighted mean ``sum_k max_c N_{k,c} / sum_k sum_c N_{k,c}`` (robust to rarely selected
    channels, whose D is 1 by construction when selected once).

    ``ci_low``, ``ci_high`` are the percentile bootstrap interval of ``mean_D`` over those channels
    (:func:`xailib.metrics.bootstrap_ci` with ``confidence``, ``n_boot``, ``seed``; ``n`` =
    ``channels_selected``): the spread a reader needs before reading an order of models out of ``mean_D``.

    Returns
    -------
    DataFrame: ``layer``, ``stage``, ``channels``, ``channels_selected``, ``mean_D``, ``ci_low``, ``ci_high``,
    ``median_D``, ``weighted_D``, ``chance`` (``1/C``, the minimum of Eq. 13).
    """
    n_classes = per_channel.attrs.get("n_classes") if n_classes is None else n_classes
    rows = []
    for (layer, stage), g in per_channel.groupby(["layer", "stage"], sort=False):
        sel = g[g["selections"] >= min_selections]
        weighted = float((sel["D"] * sel["selections"]).sum() / max(sel["selections"].sum(), 1))
        ci = bootstrap_ci(sel["D"].to_numpy(dtype=np.float64), n_boot=n_boot, confidence=confidence, seed=seed)
        rows.append({"layer": layer, "stage": stage, "channels": len(g), "channels_selected": len(sel),
                     "mean_D": sel["D"].mean(), "ci_low": ci.low, "ci_high": ci.high,
                     "median_D": sel["D"].median(), "weighted_D": weighted,
                     "chance": 1.0 / n_classes if n_classes else math.nan})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------------
# The planted-bias model: does it rely on its bias? (our addition, the validity check of its Fig. 10 test)
# --------------------------------------------------------------------------------------------------


def _recontext(recipes, context: torch.Tensor, target: torch.Tensor, bias_ctx: int, n_contexts: int, aligned: bool):
    """Recipes with the context set for (``aligned``) or against the bias: target-class scenes get ``bias_ctx``
    (aligned) or, where they show it, the next context (against); the other scenes the reverse."""
    out = recipes.clone()
    other = torch.where(context == bias_ctx, (context + 1) % n_contexts, context)  # never the bias context
    on = torch.full_like(context, bias_ctx)
    out.context[:] = torch.where(target, on, other) if aligned else torch.where(target, other, on)
    return out


@torch.no_grad()
def bias_reliance(model: nn.Module, dataset, context: str, target_class: str, chunk_size: int = 512,
                  confidence: float = 0.95, n_boot: int = 10000, seed: int = 0) -> pd.DataFrame:
    """How much a model relies on a planted context bias: its accuracy on the same test scenes with the context
    set against the bias, compared with the unchanged scenes.

    Three conditions of the same scenes (re-rendered from their recipes, so only the background changes):

    * ``clean`` -- the scenes as drawn (contexts independent of the class);
    * ``aligned`` -- every ``target_class`` scene in ``context``, no other scene in it (a scene of another class
      that showed ``context`` gets the next context);
    * ``conflicting`` -- every other scene in ``context``; a ``target_class`` scene that showed it gets the
      next context.

    A model that learnt the bias is more accurate on ``aligned`` than on ``clean`` and less on ``conflicting``,
    and predicts ``target_class`` for many other scenes in ``context``.

    Parameters
    ----------
    model : nn.Module
        A ConceptWorld classifier (eval mode is set for the call and restored).
    dataset : xailib.data.conceptworld.ConceptWorldDataset
        Test scenes (``recipes``, ``labels`` and ``world``).
    context, target_class : str
        The planted bias (e.g. ``"water"``, ``"cow"``).

    Returns
    -------
    DataFrame
        One row per condition: ``condition``, ``accuracy``, ``ci_low``, ``ci_high`` (bootstrap over scenes,
        :func:`xailib.metrics.bootstrap_ci`), ``n``, ``predicted_target`` (share of the other classes' scenes
        predicted as ``target_class``), ``target_in_context`` (share of ``target_class`` scenes shown in
        ``context``), ``others_in_context``.
    """
    check_model(model)
    for name, value in (("context", context), ("target_class", target_class)):
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a name (str), got {value!r}.")
    world = getattr(dataset, "world", None)
    if world is None or not hasattr(dataset, "recipes"):
        raise TypeError(f"dataset must be a ConceptWorldDataset (with world and recipes), got {type(dataset).__name__}.")
    if context not in world.context_names:
        raise ValueError(f"Unknown context {context!r}; valid: {', '.join(world.context_names)}.")
    if target_class not in world.class_names:
        raise ValueError(f"Unknown class {target_class!r}; valid: {', '.join(world.class_names)}.")
    bias_ctx, cls = world.context_names.index(context), world.class_names.index(target_class)
    recipes, labels = dataset.recipes, dataset.labels.cpu()
    target = labels == cls
    conditions = {"clean": recipes,
                  "aligned": _recontext(recipes, recipes.context, target, bias_ctx, len(world.context_names), True),
                  "conflicting": _recontext(recipes, recipes.context, target, bias_ctx, len(world.context_names), False)}
    rows = []
    with model_state(model, train=False):
        for cond, r in conditions.items():
            pred = torch.cat([class_scores(model, world.render(r[s:s + chunk_size]).images).argmax(1).cpu()
                              for s in range(0, len(labels), chunk_size)])
            correct = (pred == labels).double().numpy()
            ci = bootstrap_ci(correct, n_boot=n_boot, confidence=confidence, seed=seed)
            rows.append({"condition": cond, "accuracy": ci.mean, "ci_low": ci.low, "ci_high": ci.high, "n": ci.n,
                         "predicted_target": float((pred[~target] == cls).double().mean()) if (~target).any()
                         else math.nan,
                         "target_in_context": float((r.context[target] == bias_ctx).double().mean())
                         if target.any() else math.nan,
                         "others_in_context": float((r.context[~target] == bias_ctx).double().mean())
                         if (~target).any() else math.nan})
    return pd.DataFrame(rows)
