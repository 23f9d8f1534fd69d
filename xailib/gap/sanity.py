"""Sanity checks for gAP (Sec. 4.1): Table 1, Fig. 6, the timing claim and Fig. 8 of the paper.

* Table 1 -- :func:`stage_pair_contributions` decomposes one decision per image down the stages
  (``T -> S5 -> ... -> S1``, following the decomposition: the class score first, then the peak neuron
  (Eq. 5) of the top channel (Eq. 4) found one level up), and measures, for every stage pair, the four
  strategies of Table 1 (AA, MA, AG, MG) and the ground truth: the score drop when one channel is
  replaced by a baseline (the paper: "its average activation"). :meth:`SanityResult.pcc_table` averages
  the PCC of Eq. (12) over images.
* Fig. 6(a) -- :meth:`SanityResult.sorted_contributions`; Fig. 6(b) -- :meth:`SanityResult.channel_counts`
  (activated channels, ``alpha > 0``, and activated channels suppressed by NMS at IoU > 0.9, the
  "Channel-effect overlaps" paragraph).
* The ~200x claim -- :func:`time_gap_vs_ground_truth` (one gAP call vs naive and batched ablation).
* Fig. 8 -- :func:`sparse_surrogate_curve`: the sparse surrogate that keeps only the channels selected by
  a top-k decomposition and fills the others with a baseline.

The figure functions (``plot_*``) draw the results; all heavy work is in the functions above.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from xailib.checks import (
    check_choice,
    check_images,
    check_layer,
    check_layer_list,
    check_model,
    check_positive_int,
    check_targets,
)
from xailib.layers import model_state, replace_output
from xailib.metrics import pcc
from xailib.gap.decomposition import DEFAULT_MASK_THRESHOLD, decompose, select_channels
from xailib.gap.gradients import decision_gradients, layer_outputs, segment_available, select_decisions
from xailib.gap.ground_truth import (
    ablation_baseline,
    dataset_channel_means,
    ground_truth_contributions,
    ground_truth_naive,
)
from xailib.gap.module import (
    GAP,
    STRATEGIES,
    Neuron,
    activation_maps,
    channel_contributions,
    parse_targets,
    peak_positions,
)

__all__ = [
    "GT_BASELINES",
    "single_conv_pairs",
    "StagePair",
    "SanityResult",
    "pcc",
    "pair_names",
    "stage_pair_contributions",
    "ground_truth_batch",
    "pcc_table",
    "time_gap_vs_ground_truth",
    "surrogate_keep_masks",
    "sparse_surrogate_curve",
]

#: Ground-truth baselines: a channel is set to its spatial mean on the image ("mean", the paper's
#: "average activation"), to zero ("zero"), or to its mean over the given images and positions ("dataset").
GT_BASELINES = ("mean", "zero", "dataset")


# --------------------------------------------------------------------------------------------------
# Eq. (12)
# --------------------------------------------------------------------------------------------------


def pair_names(n_stages: int = 5) -> list[str]:
    """Stage-pair labels of Table 1, top first: ``["T->S5", "S5->S4", ..., "S2->S1"]``."""
    return [f"T->S{n_stages}"] + [f"S{k}->S{k - 1}" for k in range(n_stages, 1, -1)]


def single_conv_pairs(model: nn.Module, layers: Sequence[str] | None = None) -> list[str]:
    """The stage pairs (labels of :func:`pair_names`) whose segment from the lower to the upper stage output
    holds exactly one convolution.

    There the zero-ablation drop of a channel equals its contribution ``sum G * F`` exactly (the segment is
    linear in the lower channels while no ReLU switches), so the PCC of AA with that ground truth is 1 by
    algebra and tests nothing (the shallow zoo VGG's S2->S1). Modules are read in registration order:
    those after ``lower`` (and outside it) up to the end of ``upper``.
    """
    check_model(model)
    layers = check_layer_list(model, layers)
    names = [n for n, _ in model.named_modules()]
    modules = dict(model.named_modules())

    def convs_between(lower: str, upper: str) -> int:
        start = names.index(lower)
        end = max(i for i, n in enumerate(names) if n == upper or n.startswith(upper + "."))
        between = [n for n in names[start + 1:end + 1] if not n.startswith(lower + ".")]
        return sum(isinstance(modules[n], nn.modules.conv._ConvNd) for n in between)

    labels = pair_names(len(layers))
    out = []
    for k in range(len(layers) - 1, 0, -1):  # S_{k+1} -> S_k, top first after T
        if convs_between(layers[k - 1], layers[k]) == 1:
            out.append(labels[len(layers) - k])
    return out


# --------------------------------------------------------------------------------------------------
# Table 1 / Fig. 6: contributions and ground truth per stage pair
# --------------------------------------------------------------------------------------------------


@dataclass
class StagePair:
    """One decomposition ``upper -> lower`` for ``N`` images (one decision per image).

    Attributes
    ----------
    name : str
        ``"T->S5"``, ``"S5->S4"``, ...
    upper : str or None
        Decision layer (``None``: class scores).
    lower : str
    channels : LongTensor ``[N]``
        Class index (``upper is None``) or channel of the decision neuron.
    positions : LongTensor ``[N, 2]`` or None
        ``(y, x)`` of the decision neuron.
    contributions : dict str -> Tensor ``[N, K]``
        gAP contributions by strategy (Table 1: AA is Eq. 4, MA, AG, MG).
    ground_truth : dict str -> Tensor ``[N, K]``
        Score drop per channel, by baseline (:data:`GT_BASELINES`).
    activation_maps : Tensor ``[N, K, h, w]``
        ``A = G * F`` (Eq. 3), for the overlap count of Fig. 6(b).
    """

    name: str
    upper: str | None
    lower: str
    channels: torch.Tensor
    positions: torch.Tensor | None
    contributions: dict[str, torch.Tensor]
    ground_truth: dict[str, torch.Tensor]
    activation_maps: torch.Tensor

    def decisions(self) -> list:
        """The decisions as :class:`GAP` targets: class indices or :class:`Neuron` s."""
        if self.upper is None:
            return self.channels.tolist()
        return [Neuron(self.upper, c, y, x) for c, (y, x) in zip(self.channels.tolist(), self.positions.tolist())]


@dataclass
class SanityResult:
    """What :func:`stage_pair_contributions` returns: one :class:`StagePair` per stage pair, top first.

    Attributes
    ----------
    pairs : list of StagePair
    target : {"predicted", "label"}
        Which class score the top decision is.
    labels, predictions : LongTensor ``[N]``
    model_name : str
    """

    pairs: list[StagePair]
    target: str
    labels: torch.Tensor | None
    predictions: torch.Tensor
    model_name: str = ""
    notes: dict = field(default_factory=dict)

    @property
    def n_images(self) -> int:
        return int(self.predictions.shape[0])

    def pcc_table(self, strategies: Sequence[str] = STRATEGIES, baselines: Sequence[str] | None = None) -> pd.DataFrame:
        """Table 1: PCC (Eq. 12) of each strategy with the ground truth, averaged over images.

        Returns
        -------
        DataFrame
            One row per (ground-truth baseline, strategy); columns ``model``, ``ground truth``,
            ``strategy``, then one column per stage pair (``"T->S5"``, ...). Images whose ground truth is
            constant (e.g. all zero) have no PCC and are left out of the mean; a pair where no image has
            one is NaN.
        """
        baselines = list(baselines or self.pairs[0].ground_truth)
        rows = []
        for b in baselines:
            for s in strategies:
                row = {"model": self.model_name, "ground truth": b, "strategy": s}
                for p in self.pairs:
                    if b not in p.ground_truth:
                        raise ValueError(f"Ground truth {b!r} was not computed; computed: {list(p.ground_truth)}.")
                    r = pcc(p.contributions[s].cpu(), p.ground_truth[b].cpu())
                    row[p.name] = float(r.nanmean()) if bool((~r.isnan()).any()) else float("nan")
                rows.append(row)
        return pd.DataFrame(rows)

    def sorted_contributions(self, baseline: str = "zero", strategy: str = "AA") -> pd.DataFrame:
        """Fig. 6(a): each image's contributions sorted in descending order, gAP and ground truth.

        Each image's vector is divided by its largest absolute value (the two methods have different
        units), then averaged over images rank by rank.

        Returns
        -------
        DataFrame
            Long format: ``pair``, ``layer``, ``rank`` (0 = largest), ``method`` ("gAP" / "GT"), ``value``
            (mean over images), ``std`` (over images).
        """
        frames = []
        for p in self.pairs:
            for method, v in (("gAP", p.contributions[strategy]), ("GT", p.ground_truth[baseline])):
                v = v.double().cpu()
                v = v / v.abs().amax(1, keepdim=True).clamp_min(1e-30)
                s = v.sort(1, descending=True).values
                frames.append(pd.DataFrame({
                    "pair": p.name, "layer": p.lower, "rank": np.arange(s.shape[1]), "method": method,
                    "value": s.mean(0).numpy(), "std": s.std(0, unbiased=False).numpy(),
                }))
        return pd.concat(frames, ignore_index=True)

    def channel_counts(self, nms_iou: float = 0.9, mask_threshold: float = DEFAULT_MASK_THRESHOLD) -> pd.DataFrame:
        """Fig. 6(b): all channels, activated channels (``alpha_k > 0``, Eq. 4) and overlapping channels per layer.

        An activated channel *overlaps* when NMS over the activated channels of one decision (sorted by
        Eq. 4, masks ``A > mask_threshold * max A``) suppresses it: its mask has IoU > ``nms_iou`` with
        the mask of a channel of higher contribution (Sec. 4.1, "Channel-effect overlaps").

        Returns
        -------
        DataFrame
            One row per stage pair: ``pair``, ``layer``, ``all``, ``activated`` and ``overlapping`` (means
            over images), ``activated_std``, ``overlapping_std``.
        """
        rows = []
        for p in self.pairs:
            alpha = p.contributions["AA"]
            active = alpha > 0  # [N, K]
            maps = p.activation_maps * active[..., None, None]  # inactive channels get empty masks
            k = alpha.shape[1]
            _, merged_into = select_channels(alpha, maps, top_n=k, nms_iou=nms_iou, mask_threshold=mask_threshold)
            overl = ((merged_into >= 0) & active).sum(1).double()
            act = active.sum(1).double()
            rows.append({"pair": p.name, "layer": p.lower, "all": k, "activated": float(act.mean()),
                         "overlapping": float(overl.mean()), "activated_std": float(act.std(unbiased=False)),
                         "overlapping_std": float(overl.std(unbiased=False))})
        return pd.DataFrame(rows)


def _labels(labels, model: nn.Module, images: torch.Tensor) -> torch.Tensor | None:
    """Optional true labels ``[N]`` of ``images`` (a LongTensor on their device), or ``None``."""
    if labels is None:
        return None
    return check_targets(labels, images.shape[0], model=model, images=images, what="labels",
                         allow_predicted=False).to(images.device)


def ground_truth_batch(
    model: nn.Module,
    images: torch.Tensor,
    target,
    layer: str,
    baseline: str | torch.Tensor = "mean",
    chunk: int = 512,
) -> torch.Tensor:
    """Ground-truth score drops (Sec. 4.1) for ``N`` images at once, one decision per image.

    Same numbers as :func:`xailib.gap.ground_truth_contributions` image by image, but every ablated
    copy of every image goes through ``model.run_segment`` in chunks of about ``chunk`` copies (when
    the model has it and both layers are stages); otherwise it calls that function per image.

    Parameters
    ----------
    images : Tensor ``[N, C, H, W]``
    target : sequence of N class indices, LongTensor ``[N]``, or sequence of N Neurons of one layer
    layer : str
        Layer whose channels are ablated one at a time.
    baseline : {"mean", "zero"} or Tensor ``[K]``
        Value a channel is set to (see :mod:`xailib.gap.ground_truth`).

    Returns
    -------
    Tensor ``[N, K]``
    """
    check_model(model)
    images = check_images(images, model)
    check_layer(model, layer)
    upper, channels, positions = parse_targets(target, images.shape[0])
    check_positive_int(chunk, "chunk", hint=" (ablated copies per forward pass)")
    if not segment_available(model, layer, upper):
        singles = [target] * images.shape[0] if isinstance(target, (int, Neuron)) else list(target)
        return torch.stack([ground_truth_contributions(model, images[i:i + 1], int(t) if isinstance(t, torch.Tensor)
                                                       else t, layer, baseline=baseline)
                            for i, t in enumerate(singles)])
    with model_state(model, train=False, requires_grad=False), torch.no_grad():
        acts = layer_outputs(model, images, [layer], stop=layer)[0][layer]  # [N, K, h, w]
        dev = acts.device
        channels = channels.to(dev)
        positions = None if positions is None else positions.to(dev)
        f = select_decisions(model.run_segment(acts, start=layer, stop=upper), channels, positions, upper)  # [N]
        base = ablation_baseline(acts, baseline)
        n, k = acts.shape[:2]
        eye = torch.eye(k, dtype=torch.bool, device=dev)[None, :, :, None, None]  # [1, K(copy), K, 1, 1]
        per = max(1, chunk // k)
        drops = []
        for s in range(0, n, per):
            a, b = acts[s:s + per], base[s:s + per]
            copies = torch.where(eye, b[:, None], a[:, None]).flatten(0, 1)  # [b*K, K, h, w]: copy j ablates j
            out = model.run_segment(copies, start=layer, stop=upper)
            ch = channels[s:s + per].repeat_interleave(k)
            pos = None if positions is None else positions[s:s + per].repeat_interleave(k, dim=0)
            drops.append(f[s:s + per, None] - select_decisions(out, ch, pos, upper).view(-1, k))
        return torch.cat(drops)


def stage_pair_contributions(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor | None = None,
    target: str = "predicted",
    baselines: Sequence[str] = ("mean", "zero"),
    layers: Sequence[str] | None = None,
    progress: bool = False,
) -> SanityResult:
    """Decompose one decision per image down the stages; gAP contributions and ground truth per pair.

    The decisions follow the decomposition (Sec. 3.2): ``T -> S5`` explains the class score (the
    predicted class, or the true label with ``target="label"``); ``S5 -> S4`` explains the peak neuron
    (Eq. 5) of the channel with the largest AA contribution (Eq. 4) at S5; and so on down to S1.
    All four strategies of Table 1 come from the same gradients.

    Parameters
    ----------
    model : nn.Module
    images : Tensor ``[N, C, H, W]``
    labels : LongTensor ``[N]`` or None
        Needed for ``target="label"``; stored for accuracy otherwise.
    target : {"predicted", "label"}
    baselines : sequence of {"mean", "zero", "dataset"}
        Ground truths to compute. ``"dataset"`` uses channel means over ``images``
        (:func:`xailib.gap.dataset_channel_means`).
    layers : list of str or None
        Stage layers low -> high; ``None``: ``model.stage_names``.

    Returns
    -------
    SanityResult
    """
    check_model(model)
    images = check_images(images, model)
    layers = check_layer_list(model, layers)
    labels = _labels(labels, model, images)
    check_choice(target, ("predicted", "label"), "target")
    if target == "label" and labels is None:
        raise ValueError("target='label' needs labels [N]; pass labels=dataset.labels or use target='predicted'.")
    bad = [b for b in baselines if b not in GT_BASELINES]
    if bad or not baselines:
        raise ValueError(f"baselines must be a non-empty list of {GT_BASELINES}, got {list(baselines)}.")
    with model_state(model, train=False, requires_grad=False), torch.no_grad():
        preds = model(images).argmax(1)
    channels = preds if target == "predicted" else labels
    positions, upper = None, None
    gap = GAP(model)
    names = pair_names(len(layers))
    pairs = []
    for name, lower in tqdm(list(zip(names, reversed(layers))), disable=not progress, desc="stage pairs"):
        pair = StagePair(name, upper, lower, channels, positions, {}, {}, torch.empty(0))
        decisions = pair.decisions()
        res = gap.attribute(images, target=decisions, layer=lower, strategy="AA")
        pair.contributions = {s: channel_contributions(res.gradients, res.features, s) for s in STRATEGIES}
        pair.activation_maps = res.activation_maps
        for b in baselines:
            value = dataset_channel_means(model, images, lower) if b == "dataset" else b
            pair.ground_truth[b] = ground_truth_batch(model, images, decisions, lower, baseline=value)
        pairs.append(pair)
        top = pair.contributions["AA"].argmax(1)  # follow the decomposition: top channel, at its peak (Eq. 5)
        positions = res.peaks[torch.arange(len(top)), top]
        channels, upper = top, lower
    return SanityResult(pairs, target, labels, preds, getattr(model, "name", type(model).__name__))


def pcc_table(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor | None = None,
    strategies: Sequence[str] = STRATEGIES,
    baselines: Sequence[str] = ("mean", "zero"),
    target: str = "predicted",
    layers: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Table 1 in one call: :func:`stage_pair_contributions` then :meth:`SanityResult.pcc_table`."""
    res = stage_pair_contributions(model, images, labels, target=target, baselines=baselines, layers=layers)
    return res.pcc_table(strategies, baselines)


# --------------------------------------------------------------------------------------------------
# Timing: gAP vs ablation
# --------------------------------------------------------------------------------------------------


def _best_time(fn, repeat: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def time_gap_vs_ground_truth(
    model: nn.Module,
    image: torch.Tensor,
    layers: Sequence[str] | None = None,
    repeat: int = 3,
    pairs: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One gAP decomposition vs the ground-truth ablation of the same layer, timed side by side.

    For each stage pair the decision follows the decomposition of ``image`` (top-1 chain of
    :func:`xailib.gap.decompose`). Three timings (best of ``repeat`` after a warm-up):
    ``gap_ms`` -- one :meth:`GAP.attribute` (forward + one backward); ``gt_naive_ms`` -- the paper's way,
    ``K + 1`` full forward passes (:func:`xailib.gap.ground_truth_naive`); ``gt_batched_ms`` -- all ``K``
    ablated copies in one batch through the suffix only (:func:`xailib.gap.ground_truth_contributions`).

    Parameters
    ----------
    image : Tensor ``[1, C, H, W]``
    pairs : list of str or None
        Stage-pair names to time (``"T->S5"``, ...); ``None``: all.

    Returns
    -------
    DataFrame
        One row per pair: ``pair``, ``layer``, ``channels``, ``gap_ms``, ``gt_batched_ms``, ``gt_naive_ms``,
        ``naive_over_gap``, ``batched_over_gap``, ``naive_over_batched``, ``runs`` and ``runs_naive`` (the
        timed runs of which each time is the best; one image).
    """
    check_model(model)
    image = check_images(image, model, one=True, what="image")
    layers = check_layer_list(model, layers)
    check_positive_int(repeat, "repeat")
    names = pair_names(len(layers))
    if pairs is not None and not set(pairs) <= set(names):
        raise ValueError(f"Unknown stage pairs {sorted(set(pairs) - set(names))}; valid: {names}.")
    tree = decompose(model, image, layers=layers, top_n=1, keep_maps=False)
    gap = GAP(model)
    rows, node, decision = [], tree.root, tree.target
    for name, lower in zip(names, reversed(layers)):
        child = node.children[0]
        if pairs is None or name in pairs:
            base = "zero" if node is tree.root else "mean"
            k = int(gap.attribute(image, decision, lower).contributions.shape[1])
            t_gap = _best_time(lambda: gap.attribute(image, decision, lower), repeat)
            t_b = _best_time(lambda: ground_truth_contributions(model, image, decision, lower, base, chunk=k), repeat)
            t_n = _best_time(lambda: ground_truth_naive(model, image, decision, lower, base), max(1, repeat // 2))
            rows.append({"pair": name, "layer": lower, "channels": k, "gap_ms": 1e3 * t_gap,
                         "gt_batched_ms": 1e3 * t_b, "gt_naive_ms": 1e3 * t_n, "naive_over_gap": t_n / t_gap,
                         "batched_over_gap": t_b / t_gap, "naive_over_batched": t_n / t_b,
                         "runs": repeat, "runs_naive": max(1, repeat // 2)})
        decision = Neuron(child.layer, child.channel, *child.position)
        node = child
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------------
# Fig. 8: the top-k sparse surrogate
# --------------------------------------------------------------------------------------------------


def surrogate_keep_masks(
    model: nn.Module,
    images: torch.Tensor,
    k: int,
    layers: Sequence[str] | None = None,
    classes: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Channels kept by a top-k hierarchical decomposition of each image's class decision (Fig. 8).

    At the top layer: the ``k`` channels with the largest contribution (Eq. 4) to the class score.
    At each lower layer: the union over the kept channels one level up, each decided at its peak
    (Eq. 5; for a channel kept by several parents, the peak for the parent it contributes most to),
    of their top-``k`` channels. All decisions of one level are decomposed in one batched call.

    Parameters
    ----------
    images : Tensor ``[N, C, H, W]``
    k : int
        ``k >= K`` keeps every channel; ``k = 0`` keeps none.
    layers : list of str or None
        Layers low -> high (``None``: ``model.stage_names``). With one layer this is the class score
        decomposed onto that layer only.
    classes : LongTensor ``[N]`` or None
        Class decisions; ``None``: the predicted classes.

    Returns
    -------
    dict layer -> BoolTensor ``[N, K_layer]``
    """
    check_model(model)
    images = check_images(images, model)
    layers = check_layer_list(model, layers)
    check_positive_int(k, "k", zero=True, hint=" (channels kept per decision)")
    n, dev = images.shape[0], images.device
    masks = {}
    classes = check_targets(classes, n, model=model, images=images, what="classes")  # None: the predicted ones
    with model_state(model, train=False, requires_grad=False):
        # decisions of the current level: image index, channel, position; parent slot for the union
        img, ch, pos, upper, n_upper = torch.arange(n, device=dev), classes.to(dev), None, None, 1
        for lower in reversed(layers):
            if img.numel() == 0:
                k_low = layer_outputs(model, images[:1], [lower], stop=lower)[0][lower].shape[1]
                masks[lower] = torch.zeros(n, k_low, dtype=torch.bool, device=dev)
                continue
            g, f, _ = decision_gradients(model, images, lower, upper, ch, pos, img)
            a = activation_maps(g, f)  # Eq. (3), [D, K, h, w]
            alpha = channel_contributions(g, f, "AA")  # Eq. (4), [D, K]
            peaks = peak_positions(a)  # Eq. (5), [D, K, 2]
            d, k_low = alpha.shape
            top = alpha.topk(min(k, k_low), dim=1).indices
            chosen = torch.zeros(d, k_low, dtype=torch.bool, device=dev).scatter_(1, top, True)
            slot = torch.zeros(d, dtype=torch.long, device=dev) if upper is None else ch
            score = torch.full((n, n_upper, k_low), -torch.inf, device=dev, dtype=alpha.dtype)
            score[img, slot] = torch.where(chosen, alpha, torch.full_like(alpha, -torch.inf))
            full_peaks = torch.zeros(n, n_upper, k_low, 2, dtype=torch.long, device=dev)
            full_peaks[img, slot] = peaks
            keep = torch.isfinite(score).any(1)  # [N, K]
            parent = score.argmax(1)  # [N, K]: the parent each channel contributes most to
            masks[lower] = keep
            img, ch = torch.nonzero(keep, as_tuple=True)
            pos = full_peaks[img, parent[img, ch], ch]
            upper, n_upper = lower, k_low
    return masks


def _masked_logits(model, images, masks: dict, fills: dict) -> torch.Tensor:
    """Logits with ``layer``'s output replaced by ``fills[layer]: [K]`` where ``masks[layer]: [N, K]`` is False."""
    with ExitStack() as stack, torch.no_grad():
        for layer, m in masks.items():
            fill = fills[layer]
            stack.enter_context(replace_output(
                model, layer, lambda out, m=m, fill=fill: torch.where(m[:, :, None, None], out,
                                                                      fill.to(out).view(1, -1, 1, 1))))
        return model(images)


def sparse_surrogate_curve(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    ks: Sequence[int],
    layers: Sequence[str] | None = None,
    fill: str = "zero",
    random_control: bool = True,
    seed: int = 0,
    batch_size: int = 16,
    progress: bool = False,
) -> pd.DataFrame:
    """Fig. 8: accuracy and match rate of the sparse surrogate of a top-k decomposition, against k.

    "we decompose from the decision of the predicted category to the bottom layers and select the
    top-k important features in each decomposition to make predictions" (Sec. 4.1). The surrogate is
    the model with, at every layer of ``layers`` at once, the channels not kept by
    :func:`surrogate_keep_masks` replaced by ``fill``. Its accuracy is measured against ``labels`` and
    its match rate against the full model's predictions. The control keeps, per image and layer, the
    same number of channels chosen at random.

    Parameters
    ----------
    images : Tensor ``[N, C, H, W]``
    labels : LongTensor ``[N]``
    ks : sequence of int
    layers : list of str or None
        ``None``: all stages (the paper's reading); one layer: top-k of the class score at that layer.
    fill : {"zero", "dataset"}
        Value of the removed channels: zero, or the channel's mean over ``images`` and positions.
    random_control : bool
    seed : int
        Seed of the random control.
    batch_size : int
        Images per batched decomposition (memory).

    Returns
    -------
    DataFrame
        One row per (k, method): ``k``, ``method`` ("gAP top-k", "random", "full model"), ``accuracy``,
        ``match_rate``, ``kept_fraction`` (kept channels / all channels over the layers, mean over images).
    """
    check_model(model)
    images = check_images(images, model)
    layers = check_layer_list(model, layers)
    labels = _labels(labels, model, images)
    if labels is None:
        raise ValueError("labels [N] are needed for the accuracy; pass dataset.labels.")
    check_choice(fill, ("zero", "dataset"), "fill")
    check_positive_int(batch_size, "batch_size")
    ks = [int(k) for k in ks]
    gen = torch.Generator().manual_seed(seed)
    n = images.shape[0]
    with model_state(model, train=False, requires_grad=False):
        with torch.no_grad():
            full = model(images).argmax(1)
        fills = {}
        for layer in layers:
            means = dataset_channel_means(model, images, layer)
            fills[layer] = means if fill == "dataset" else torch.zeros_like(means)
        rows = [{"k": None, "method": "full model", "accuracy": float((full == labels).double().mean()),
                 "match_rate": 1.0, "kept_fraction": 1.0}]
        for k in tqdm(ks, disable=not progress, desc="top-k surrogate"):
            preds = {"gAP top-k": [], "random": []}
            kept = []
            for s in range(0, n, batch_size):
                x = images[s:s + batch_size]
                masks = surrogate_keep_masks(model, x, k, layers, classes=full[s:s + batch_size])
                kept.append(sum(m.sum(1) for m in masks.values()).double()
                            / sum(m.shape[1] for m in masks.values()))
                preds["gAP top-k"].append(_masked_logits(model, x, masks, fills).argmax(1))
                if random_control:
                    rnd = {}
                    for layer, m in masks.items():
                        rank = torch.rand(m.shape, generator=gen).argsort(1).argsort(1).to(m.device)
                        rnd[layer] = rank < m.sum(1, keepdim=True)
                    preds["random"].append(_masked_logits(model, x, rnd, fills).argmax(1))
            frac = float(torch.cat(kept).mean())
            for method, p in preds.items():
                if p:
                    p = torch.cat(p)
                    rows.append({"k": k, "method": method, "accuracy": float((p == labels).double().mean()),
                                 "match_rate": float((p == full).double().mean()), "kept_fraction": frac})
    out = pd.DataFrame(rows)
    out["k"] = out["k"].astype("Int64")
    return out
