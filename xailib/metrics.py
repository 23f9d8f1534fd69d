"""Metrics shared by every method: correlation, IoU, pointing game, deletion/insertion curves, bootstrap CIs.

* :func:`average_ranks`, :func:`spearman` (alias :func:`spearman_rank`) -- batched Spearman rank correlation
  of rows ``[B, ...]`` (average ranks for ties, as ``scipy.stats.spearmanr``); the gAP paper's ref. [72].
* :func:`pearson` (alias :func:`pcc`) -- Pearson correlation along the last dimension ``[..., K]`` with
  population moments, the gAP paper's Eq. (12).
* :func:`mask_iou` -- IoU of binary masks ``[..., H, W]``; :func:`threshold_iou` -- IoU of thresholded maps.
* :func:`pointing_game` -- Zhang et al., "Top-down neural attention by excitation backprop" (ECCV 2016).
* :func:`deletion_curve`, :func:`insertion_curve`, :func:`auc` -- RISE's causal metrics (Petsiuk et al. 2018).
* :func:`bootstrap_ci`, :func:`mean_ci_table` -- percentile bootstrap CI of a mean, with its sample size.

The first four were written for the gAP reproduction, whose tables must stay byte-identical: their
arithmetic (float64 ranks and moments, the NaN rules) is part of their contract and must not change.
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from xailib.checks import (check_class_scores, check_fraction, check_images, check_model, check_positive_float,
                           check_positive_int, check_targets)
from xailib.layers import model_state

__all__ = [
    "average_ranks", "spearman", "spearman_rank", "pearson", "pcc",
    "mask_iou", "threshold_iou", "pointing_game",
    "deletion_curve", "insertion_curve", "masked_probability", "auc",
    "BootstrapCI", "bootstrap_ci", "mean_ci_table",
    "confusion_matrix", "confusion_pairs",
    "pairwise_sq_dists", "median_heuristic", "gaussian_kernel", "mmd2_from_kernel", "mmd2", "mmd2_batched",
    "mmd2_reference", "random_partitions", "MMDTest", "mmd2_permutation_test", "adjust_p_values",
]


def _check_tensor(x, name: str, shape: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor {shape}, got {type(x).__name__}; wrap it with torch.as_tensor.")
    return x


# ---- Correlation -----------------------------------------------------------------------------


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks ``1..P`` of each row of ``values: [B, P]``, ties sharing their average rank (``[B, P]``, float64).

    Batched equivalent of ``scipy.stats.rankdata(row, method="average")``.
    """
    _check_tensor(values, "values", "[B, P]")
    if values.dim() != 2:
        raise ValueError(f"values must be [B, P], got {tuple(values.shape)}; flatten each row with values.flatten(1).")
    b, p = values.shape
    v = values.double()
    sorted_v, order = torch.sort(v, dim=1, stable=True)
    new_group = torch.ones(b, p, dtype=torch.bool, device=v.device)
    new_group[:, 1:] = sorted_v[:, 1:] != sorted_v[:, :-1]
    group = new_group.long().cumsum(1) - 1 + torch.arange(b, device=v.device)[:, None] * p  # ids unique per row
    pos = torch.arange(p, device=v.device, dtype=torch.float64).expand(b, p).reshape(-1)
    first = torch.full((b * p,), float(p), dtype=torch.float64, device=v.device)
    last = torch.full((b * p,), -1.0, dtype=torch.float64, device=v.device)
    first = first.scatter_reduce(0, group.reshape(-1), pos, reduce="amin")
    last = last.scatter_reduce(0, group.reshape(-1), pos, reduce="amax")
    avg = (first[group] + last[group]) / 2 + 1  # [B, P], in sorted order
    ranks = torch.empty_like(avg)
    ranks.scatter_(1, order, avg)
    return ranks


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of each pair of rows (the gAP paper's ref. [72]).

    ``rho = pearson(rank(a), rank(b))`` with average ranks for ties (:func:`average_ranks`), as
    ``scipy.stats.spearmanr`` computes for one pair of vectors.

    Parameters
    ----------
    a, b : Tensor ``[B, ...]``
        Each row (image) is flattened to ``P`` values: ``[B, P]``. Unlike :func:`pearson`, which
        correlates along the last dimension, this correlates whole rows (e.g. maps ``[B, H, W]``).

    Returns
    -------
    Tensor ``[B]`` (float64)
        In ``[-1, 1]``; NaN for a row where either map is constant (as scipy).
    """
    _check_tensor(a, "a", "[B, ...]")
    _check_tensor(b, "b", "[B, ...]")
    if a.shape != b.shape or a.dim() < 2:
        raise ValueError(f"a and b must have the same shape [B, ...], got {tuple(a.shape)} and {tuple(b.shape)}; "
                         "for two single maps add the batch dimension with x[None].")
    ra, rb = average_ranks(a.flatten(1)), average_ranks(b.flatten(1))
    ra = ra - ra.mean(1, keepdim=True)
    rb = rb - rb.mean(1, keepdim=True)
    den = (ra.square().sum(1) * rb.square().sum(1)).sqrt()
    rho = (ra * rb).sum(1) / den
    return torch.where(den > 0, rho, torch.full_like(rho, float("nan"))).clamp(-1, 1)


#: The gAP folder's name for :func:`spearman`.
spearman_rank = spearman


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation coefficient along the last dimension, the gAP paper's Eq. (12).

    ``rho = E[(a - mu_a)(b - mu_b)] / (sigma_a sigma_b)`` with population moments, in float64.

    Parameters
    ----------
    a, b : Tensor ``[..., K]``
        Correlated along the last dimension (one coefficient per leading index); unlike
        :func:`spearman`, rows are not flattened.

    Returns
    -------
    Tensor ``[...]`` (float64)
        NaN where either vector is constant (``sigma <= 1e-12 * max |x|``): the PCC is undefined there.
    """
    _check_tensor(a, "a", "[..., K]")
    _check_tensor(b, "b", "[..., K]")
    if a.shape != b.shape:
        raise ValueError(f"pearson needs two tensors of one shape [..., K], got {tuple(a.shape)} and {tuple(b.shape)}.")
    a, b = a.double(), b.double()
    da, db = a - a.mean(-1, keepdim=True), b - b.mean(-1, keepdim=True)
    cov = (da * db).mean(-1)
    sa, sb = da.pow(2).mean(-1).sqrt(), db.pow(2).mean(-1).sqrt()
    den = sa * sb
    ok = (sa > 1e-12 * a.abs().amax(-1).clamp_min(1e-300)) & (sb > 1e-12 * b.abs().amax(-1).clamp_min(1e-300))
    return torch.where(ok, cov / torch.where(ok, den, torch.ones_like(den)), torch.full_like(cov, float("nan")))


#: The gAP folder's name for :func:`pearson` (PCC, Eq. 12).
pcc = pearson


# ---- Localisation: IoU and the pointing game -------------------------------------------------


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Intersection over union of binary masks ``[..., H, W]`` (leading dimensions broadcast).

    Non-bool tensors are read as ``x.bool()`` (non-zero = inside).

    Returns
    -------
    Tensor ``[...]`` (float32)
        ``|a & b| / |a | b|``; 0 where both masks are empty.
    """
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        raise TypeError("mask_iou takes two BoolTensors [..., H, W].")
    if a.dim() < 2 or b.dim() < 2 or a.shape[-2:] != b.shape[-2:]:
        raise ValueError(f"masks must be [..., H, W] with the same H, W; got {tuple(a.shape)} and {tuple(b.shape)}.")
    a, b = a.bool(), b.bool()
    inter = (a & b).flatten(-2).sum(-1).float()
    union = (a | b).flatten(-2).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.zeros_like(inter))


def _check_maps(maps, name: str = "maps") -> torch.Tensor:
    _check_tensor(maps, name, "[B, H, W]")
    if maps.dim() != 3 or not maps.is_floating_point():
        raise ValueError(f"{name} must be a float tensor [B, H, W] (one map per image), got {tuple(maps.shape)} "
                         f"{maps.dtype}; sum attributions [B, C, H, W] over channels first (e.g. a.abs().sum(1)).")
    if bool(maps.isnan().any()):
        raise ValueError(f"{name} contains NaN; replace it (e.g. torch.nan_to_num(maps)) so pixels can be ranked.")
    return maps


def _check_masks(masks, maps: torch.Tensor) -> torch.Tensor:
    _check_tensor(masks, "masks", "[B, H, W] bool")
    if masks.dtype != torch.bool:
        raise TypeError(f"masks must be a BoolTensor [B, H, W], got {masks.dtype}; convert with masks > 0.5.")
    if masks.shape != maps.shape:
        raise ValueError(f"masks {tuple(masks.shape)} must have the shape of maps {tuple(maps.shape)}: one [H, W] "
                         "mask per map, at the map's resolution.")
    return masks.to(maps.device)


def threshold_iou(maps: torch.Tensor, masks: torch.Tensor, threshold: float = 0.5,
                  relative: bool = True) -> torch.Tensor:
    """IoU of each thresholded map with its mask.

    A pixel is in the map's region when ``map >= threshold * max(map)`` (``relative=True``; ``max`` over
    that map's pixels) or ``map >= threshold`` (``relative=False``). Relative thresholds are meant for
    non-negative maps (take ``.abs()`` or ``.relu()`` first): a map whose maximum is 0 keeps every pixel
    ``>= 0``, so a constant map keeps all its pixels.

    Parameters
    ----------
    maps : Tensor ``[B, H, W]`` float
    masks : BoolTensor ``[B, H, W]``
    threshold : float
        In ``[0, 1]`` when ``relative``, any finite number otherwise.

    Returns
    -------
    Tensor ``[B]`` (float32)
        :func:`mask_iou` of the region and the mask; 0 where both are empty.
    """
    maps = _check_maps(maps)
    masks = _check_masks(masks, maps)
    if relative:
        threshold = check_fraction(threshold, "threshold", hint=" (a fraction of each map's maximum)")
        cut = threshold * maps.amax(dim=(-2, -1), keepdim=True)  # [B, 1, 1]
    else:
        if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not np.isfinite(threshold):
            raise ValueError(f"threshold must be a finite number, got {threshold!r}.")
        cut = float(threshold)
    return mask_iou(maps >= cut, masks)


def pointing_game(maps: torch.Tensor, masks: torch.Tensor, tolerance: float = 0.0) -> torch.Tensor:
    """Pointing game (Zhang et al., ECCV 2016): does each map's maximum fall on (or near) its mask?

    A hit when some mask pixel lies within Euclidean distance ``tolerance`` (in pixels) of the map's
    maximum; Zhang et al. use 15 px at 224 x 224. With ``tolerance=0`` the maximum must be on the mask.
    Ties: the first maximum in row-major order (lowest ``h * W + w``) is the one that points.

    Parameters
    ----------
    maps : Tensor ``[B, H, W]`` float (no NaN)
    masks : BoolTensor ``[B, H, W]``
    tolerance : float
        Non-negative, in pixels.

    Returns
    -------
    Tensor ``[B]`` (float32)
        1.0 for a hit, 0.0 for a miss, NaN where the mask is empty (the object is absent: no game; as Zhang
        et al., leave such images out, e.g. ``hits.nanmean()`` or :func:`bootstrap_ci`, which drops NaN).
    """
    maps = _check_maps(maps)
    masks = _check_masks(masks, maps)
    tolerance = check_positive_float(tolerance, "tolerance", zero=True, hint=" (pixels)")
    b, h, w = maps.shape
    flat = maps.reshape(b, h * w)
    pos = torch.arange(h * w, device=maps.device)
    is_max = flat == flat.amax(1, keepdim=True)
    top = torch.where(is_max, pos, h * w).amin(1)  # [B], the first maximum in row-major order
    rows = torch.arange(h, device=maps.device)[None, :, None] - (top // w)[:, None, None]
    cols = torch.arange(w, device=maps.device)[None, None, :] - (top % w)[:, None, None]
    near = rows.square() + cols.square() <= tolerance * tolerance  # [B, H, W]
    hit = (masks & near).flatten(1).any(1)
    return torch.where(masks.flatten(1).any(1), hit.float(), torch.full((b,), float("nan"), device=maps.device))


# ---- Deletion and insertion (RISE, Petsiuk et al. 2018) --------------------------------------


def _baseline_images(baseline, images: torch.Tensor) -> torch.Tensor:
    if isinstance(baseline, torch.Tensor):
        if baseline.shape != images.shape or not baseline.is_floating_point():
            raise ValueError(f"A baseline tensor must be a float tensor of the images' shape {tuple(images.shape)}, "
                             f"got {tuple(baseline.shape)} {baseline.dtype}; for one fill value pass a float.")
        return baseline.to(images.device, images.dtype)
    if isinstance(baseline, bool) or not isinstance(baseline, numbers.Real) or not np.isfinite(baseline):
        raise TypeError(f"baseline must be a finite float (a fill value) or a tensor [B, C, H, W] like the images, "
                        f"got {baseline!r}; for RISE's blurred insertion baseline pass a blurred copy of the images.")
    return images.new_full((1, 1, 1, 1), float(baseline)).expand_as(images)


def _causal_curve(model, images, maps, target, steps, baseline, batch_size, progress, insert) -> torch.Tensor:
    model = check_model(model)
    images = check_images(images, model)
    b, _, h, w = images.shape
    maps = _check_maps(maps)
    if maps.shape != (b, h, w):
        raise ValueError(f"maps must be [B, H, W] = {(b, h, w)} for images {tuple(images.shape)}, got "
                         f"{tuple(maps.shape)}; upsample maps to the image size first.")
    steps = check_positive_int(steps, "steps", hint=" (the curve has steps + 1 points)")
    batch_size = check_positive_int(batch_size, "batch_size", hint=" (images per forward pass)")
    targets = check_targets(target, b, model=model, images=images).to(images.device)
    base = _baseline_images(baseline, images)
    p = h * w
    order = torch.sort(maps.to(images.device).reshape(b, p), dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(p, device=images.device).expand(b, p))
    counts = torch.arange(steps + 1, device=images.device) * p // steps  # [T]: pixels changed at step k
    total = b * (steps + 1)
    probs = []
    with tqdm(total=total, desc="insertion" if insert else "deletion", leave=False, disable=not progress) as bar, \
            model_state(model, train=False), torch.no_grad():
        for start in range(0, total, batch_size):
            ids = torch.arange(start, min(total, start + batch_size), device=images.device)
            i, k = ids // (steps + 1), ids % (steps + 1)
            changed = (rank[i] < counts[k, None]).view(-1, 1, h, w)  # [n, 1, H, W], all channels of a pixel
            x = torch.where(changed, images[i], base[i]) if insert else torch.where(changed, base[i], images[i])
            logits = check_class_scores(model(x), len(ids))
            probs.append(logits.softmax(1).gather(1, targets[i, None])[:, 0])
            bar.update(len(ids))
    return torch.cat(probs).view(b, steps + 1)


def masked_probability(model: nn.Module, images: torch.Tensor, masks: torch.Tensor, target="predicted", *,
                       baseline=0.0, batch_size: int = 256) -> torch.Tensor:
    """The target class's probability once the pixels of each mask are replaced by ``baseline``: ``[T, B]``.

    ``masks [T, B, H, W]`` (bool; ``T`` masks per image, e.g. one per threshold) mark the pixels removed, all
    channels of a pixel together; ``baseline`` is a fill value or a tensor like the images (:func:`deletion_curve`'s).
    The target is fixed on the unmasked images (``"predicted"``: the model's prediction there). The model runs in
    eval mode without gradients; its state is left as it was.
    """
    model = check_model(model)
    images = check_images(images, model)
    b, _, h, w = images.shape
    masks = torch.as_tensor(masks)
    if masks.dim() == 3:
        masks = masks[None]
    if masks.dim() != 4 or tuple(masks.shape[1:]) != (b, h, w):
        raise ValueError(f"masks must be [T, B, H, W] = [T, {b}, {h}, {w}] for images {tuple(images.shape)}, got "
                         f"{tuple(masks.shape)}; upsample maps to the image size before thresholding.")
    batch_size = check_positive_int(batch_size, "batch_size", hint=" (images per forward pass)")
    targets = check_targets(target, b, model=model, images=images).to(images.device)
    base = _baseline_images(baseline, images)
    masks = masks.to(images.device, torch.bool)
    t = masks.shape[0]
    probs = []
    with model_state(model, train=False), torch.no_grad():
        for start in range(0, t * b, batch_size):
            ids = torch.arange(start, min(t * b, start + batch_size), device=images.device)
            k, i = ids // b, ids % b
            x = torch.where(masks[k, i][:, None], base[i], images[i])
            logits = check_class_scores(model(x), len(ids))
            probs.append(logits.softmax(1).gather(1, targets[i, None])[:, 0])
    return torch.cat(probs).view(t, b)


def deletion_curve(model: nn.Module, images: torch.Tensor, maps: torch.Tensor, target="predicted",
                   steps: int = 100, baseline=0.0, batch_size: int = 64, progress: bool = False) -> torch.Tensor:
    """Deletion curve of RISE (Petsiuk et al., BMVC 2018): the target's probability as the most salient
    pixels are replaced by the baseline (step 0 is the image itself; a low area under the curve is good).

    Pixels are ranked by decreasing map value (a stable sort: among equal values the lower pixel index
    ``h * W + w`` comes first). At step ``k = 0..steps`` the top ``floor(k * H * W / steps)`` pixels are
    replaced, in all their channels. The model runs in eval mode (restored afterwards) with no gradients,
    ``batch_size`` images per forward pass.

    Parameters
    ----------
    model : nn.Module
        Returns logits ``[B, num_classes]``.
    images : Tensor ``[B, C, H, W]`` float
        Moved to the model's device.
    maps : Tensor ``[B, H, W]`` float
        One saliency map per image, at the image resolution (no NaN).
    target : int, sequence of int, LongTensor ``[B]`` or ``"predicted"``
        The class whose softmax probability is recorded (:func:`xailib.checks.check_targets`).
    steps : int
        Positive; the curve has ``steps + 1`` points.
    baseline : float or Tensor ``[B, C, H, W]``
        The value of a removed pixel: one fill value, or a tensor of the images' shape (e.g. a blurred copy,
        RISE's insertion baseline; RISE's deletion uses 0).
    batch_size : int
    progress : bool
        A tqdm bar over the ``B * (steps + 1)`` forward images.

    Returns
    -------
    Tensor ``[B, steps + 1]`` (the logits' dtype)
        ``softmax(model(x_k))[target]``; pass it to :func:`auc`.
    """
    return _causal_curve(model, images, maps, target, steps, baseline, batch_size, progress, insert=False)


def insertion_curve(model: nn.Module, images: torch.Tensor, maps: torch.Tensor, target="predicted",
                    steps: int = 100, baseline=0.0, batch_size: int = 64, progress: bool = False) -> torch.Tensor:
    """Insertion curve of RISE: the target's probability as the most salient pixels of the image are put
    into the baseline (step 0 is the baseline, step ``steps`` the image; a high area under the curve is good).

    Parameters, pixel order and the number of pixels at each step are those of :func:`deletion_curve`; at
    step ``k`` the top ``floor(k * H * W / steps)`` pixels come from the image, the others from ``baseline``.

    Returns
    -------
    Tensor ``[B, steps + 1]``
    """
    return _causal_curve(model, images, maps, target, steps, baseline, batch_size, progress, insert=True)


def auc(curve: torch.Tensor, dx: float | None = None) -> torch.Tensor:
    """Area under each curve by the trapezoid rule, along the last dimension.

    Parameters
    ----------
    curve : Tensor ``[..., T]`` float, ``T >= 2``
        E.g. :func:`deletion_curve` ``[B, steps + 1]``.
    dx : float, optional
        Spacing of the points; default ``1 / (T - 1)``, so that x spans ``[0, 1]`` (the fraction of pixels).

    Returns
    -------
    Tensor ``[...]``
        ``dx * (sum(curve) - (curve[0] + curve[-1]) / 2)``; a line from 1 to 0 gives 0.5.
    """
    _check_tensor(curve, "curve", "[..., T]")
    if curve.dim() < 1 or curve.shape[-1] < 2 or not curve.is_floating_point():
        raise ValueError(f"curve must be a float tensor [..., T] with T >= 2 points, got {tuple(curve.shape)} "
                         f"{curve.dtype}.")
    dx = 1.0 / (curve.shape[-1] - 1) if dx is None else check_positive_float(dx, "dx")
    return torch.trapezoid(curve, dx=dx, dim=-1)


# ---- Bootstrap confidence intervals ----------------------------------------------------------

_BLOCK = 1 << 22  # resampled values drawn per block (32 MiB of int64 indices)


@dataclass(frozen=True)
class BootstrapCI:
    """A mean with its percentile-bootstrap confidence interval ``[low, high]`` and its sample size.

    ``n`` counts the values used (NaN dropped); ``mean``, ``low`` and ``high`` are NaN when ``n = 0``.
    ``low`` and ``high`` are the ``50 (1 -+ confidence)`` percentiles of the ``n_boot`` bootstrap means.
    """

    mean: float
    low: float
    high: float
    n: int
    confidence: float
    n_boot: int

    def as_dict(self) -> dict:
        return asdict(self)


def _as_1d_float(values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    try:
        v = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"values must be a 1-D array, list or tensor of numbers, got {type(values).__name__}.") from e
    if v.ndim != 1:
        raise ValueError(f"values must be 1-D (one value per image), got shape {v.shape}; flatten with .ravel().")
    if np.isinf(v).any():
        raise ValueError("values contains inf; a mean with a confidence interval needs finite values "
                         "(NaN values are dropped).")
    return v


def bootstrap_ci(values, n_boot: int = 10000, confidence: float = 0.95, seed: int = 0) -> BootstrapCI:
    """Percentile bootstrap confidence interval of the mean (Efron & Tibshirani 1993).

    NaN values (e.g. images without a defined correlation, or an empty mask in :func:`pointing_game`) are
    dropped first; ``n`` says how many were kept. With ``rng = numpy.random.default_rng(seed)``, resamples are
    drawn as ``rng.integers(0, n, size=(rows, n))`` in blocks of ``rows = max(1, 2**22 // n)`` resamples
    (one block when ``n_boot * n <= 2**22``), so a seed gives the same interval every time.

    Parameters
    ----------
    values : 1-D array, list, Series or Tensor ``[N]``
    n_boot : int
        Number of bootstrap resamples.
    confidence : float
        In ``(0, 1)``.
    seed : int

    Returns
    -------
    BootstrapCI
        ``mean``, ``low``, ``high``, ``n``; all three NaN when no value is left.
    """
    v = _as_1d_float(values)
    n_boot = check_positive_int(n_boot, "n_boot", hint=" (number of bootstrap resamples, e.g. 10000)")
    confidence = check_fraction(confidence, "confidence", low_open=True, high_open=True, hint=" (e.g. 0.95)")
    seed = check_positive_int(seed, "seed", zero=True)
    v = v[~np.isnan(v)]
    n = int(v.size)
    if n == 0:
        return BootstrapCI(float("nan"), float("nan"), float("nan"), 0, confidence, n_boot)
    rng = np.random.default_rng(seed)
    rows = max(1, _BLOCK // n)
    means = np.concatenate([v[rng.integers(0, n, size=(min(rows, n_boot - s), n))].mean(1)
                            for s in range(0, n_boot, rows)])
    low, high = np.percentile(means, [50 * (1 - confidence), 50 * (1 + confidence)])
    return BootstrapCI(float(v.mean()), float(low), float(high), n, confidence, n_boot)


def mean_ci_table(df: pd.DataFrame, by, value: str, n_boot: int = 10000, confidence: float = 0.95,
                  seed: int = 0) -> pd.DataFrame:
    """One row per group of ``df``: the mean of ``value``, its bootstrap CI and the sample size.

    Parameters
    ----------
    df : pandas.DataFrame
    by : str or list of str
        Grouping columns (groups sorted as ``df.groupby(by)`` sorts them).
    value : str
        The column of per-image values; NaN are dropped per group (:func:`bootstrap_ci`, same ``seed``
        for every group).

    Returns
    -------
    DataFrame
        The ``by`` columns, then ``mean``, ``ci_low``, ``ci_high``, ``n``.
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"df must be a pandas DataFrame, got {type(df).__name__}.")
    keys = [by] if isinstance(by, str) else list(by)
    missing = [c for c in keys + [value] if c not in df.columns]
    if missing or not keys:
        raise ValueError(f"Unknown column(s) {missing or keys!r}; df has columns {list(df.columns)}.")
    rows = []
    for key, group in df.groupby(keys, sort=True):
        ci = bootstrap_ci(group[value].to_numpy(dtype=np.float64), n_boot, confidence, seed)
        rows.append({**dict(zip(keys, key)), "mean": ci.mean, "ci_low": ci.low, "ci_high": ci.high, "n": ci.n})
    return pd.DataFrame(rows, columns=keys + ["mean", "ci_low", "ci_high", "n"])


def confusion_matrix(predictions, labels, n_classes: int) -> torch.Tensor:
    """Counts ``M[i, j]`` of images of true class ``i`` predicted as ``j``: LongTensor ``[C, C]``.

    Parameters
    ----------
    predictions, labels : int tensors or sequences ``[N]``
        Predicted and true class indices in ``[0, n_classes)``.
    n_classes : int
    """
    n_classes = check_positive_int(n_classes, "n_classes")
    pred = torch.as_tensor(predictions).long().flatten().cpu()
    true = torch.as_tensor(labels).long().flatten().cpu()
    if pred.shape != true.shape:
        raise ValueError(f"predictions and labels need one entry per image each, got {pred.numel()} and "
                         f"{true.numel()}.")
    for name, t in (("predictions", pred), ("labels", true)):
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= n_classes):
            raise ValueError(f"{name} must be class indices in [0, {n_classes - 1}], got values from "
                             f"{int(t.min())} to {int(t.max())}; pass n_classes=len(class_names).")
    return torch.bincount(true * n_classes + pred, minlength=n_classes * n_classes).view(n_classes, n_classes)


def confusion_pairs(matrix: torch.Tensor, class_names, pairs=()) -> tuple[pd.DataFrame, dict]:
    """The confused class pairs of a confusion matrix, most confused first, and how many errors fall in ``pairs``.

    Parameters
    ----------
    matrix : LongTensor [C, C]
        From :func:`confusion_matrix` (rows: true class).
    class_names : sequence of str
    pairs : iterable of (str, str)
        Unordered pairs of classes that are meant to be confused (look-alikes).

    Returns
    -------
    (DataFrame, dict)
        One row per unordered pair with any error: ``a``, ``b``, ``a_as_b``, ``b_as_a``, ``errors`` (their sum),
        ``share`` (of all errors) and ``intended`` (the pair is in ``pairs``); and a summary: ``errors``,
        ``in_pairs`` (errors between intended pairs), ``share_in_pairs`` and ``share_if_uniform``, the share
        expected if each class's errors spread evenly over the other classes (the chance level to compare with).
    """
    m = torch.as_tensor(matrix).long().cpu()
    names = list(class_names)
    C = len(names)
    if m.shape != (C, C):
        raise ValueError(f"matrix must be [C, C] with C = len(class_names) = {C}, got {tuple(m.shape)}.")
    wanted = set()
    for a, b in pairs:
        for x in (a, b):
            if x not in names:
                raise ValueError(f"Unknown class {x!r} in pairs; classes: {', '.join(names)}.")
        wanted.add(frozenset((a, b)))
    errors = int(m.sum() - m.diag().sum())
    rows = []
    for i in range(C):
        for j in range(i + 1, C):
            e = int(m[i, j] + m[j, i])
            if e:
                rows.append(dict(a=names[i], b=names[j], a_as_b=int(m[i, j]), b_as_a=int(m[j, i]), errors=e,
                                 share=e / errors, intended=frozenset((names[i], names[j])) in wanted))
    table = pd.DataFrame(rows, columns=["a", "b", "a_as_b", "b_as_a", "errors", "share", "intended"])
    table = table.sort_values(["errors", "a", "b"], ascending=[False, True, True], ignore_index=True)
    in_pairs = int(table.loc[table.intended, "errors"].sum()) if len(table) else 0
    # chance: class i's errors spread over its C - 1 wrong classes; partners(i) of them are intended
    off = (m.sum(1) - m.diag()).double()
    partners = torch.tensor([sum(frozenset((names[i], names[j])) in wanted for j in range(C) if j != i)
                             for i in range(C)], dtype=torch.float64)
    uniform = float((off * partners / (C - 1)).sum() / off.sum()) if errors else float("nan")
    summary = dict(errors=errors, in_pairs=in_pairs, share_in_pairs=in_pairs / errors if errors else float("nan"),
                   share_if_uniform=uniform)
    return table, summary


# ---- Maximum mean discrepancy (Gretton et al. 2012) and permutation tests --------------------
#
# One kernel matrix of the pooled sample ``z = [x; y]`` per group serves the estimate, the bandwidth (the pooled
# median is the same for every relabelling of ``z``) and every permutation of the test, which only changes which
# rows count as ``x``: with 0/1 membership vectors ``a`` (x) and ``b`` (y) the sums of the estimator are the
# quadratic forms ``a^T K a``, ``b^T K b`` and ``a^T K b``, batched over groups and permutations.


def _check_samples(x, name: str, batched: bool) -> torch.Tensor:
    shape = "[G, n, d]" if batched else "[n, d]"
    _check_tensor(x, name, shape)
    if x.dim() != (3 if batched else 2) or x.dtype.is_complex or x.dtype == torch.bool:
        hint = (" (one row of d features per sample; for scalars use x[:, None])" if not batched else
                " (G groups of n samples of d features; for one group use x[None])")
        raise ValueError(f"{name} must be a real tensor {shape}{hint}, got {tuple(x.shape)}.")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} holds NaN or inf; the MMD needs finite features.")
    return x.double()


def pairwise_sq_dists(x: torch.Tensor, y: torch.Tensor | None = None, x_sq: torch.Tensor | None = None,
                      y_sq: torch.Tensor | None = None) -> torch.Tensor:
    """Squared Euclidean distances ``||x_i - y_j||^2`` between rows, batched: ``[..., n, d], [..., m, d] -> [..., n, m]``.

    Computed in float64 as ``|x|^2 + |y|^2 - 2 x.y`` (one matmul), clamped at 0. With ``y=None`` the distances
    within ``x`` (``[..., n, n]``), whose diagonal is set to exactly 0. ``x_sq`` / ``y_sq`` (``[..., n]`` /
    ``[..., m]``, float64): the rows' squared norms, when the caller has them already (wide rows met in several
    blocks); default computed here.
    """
    _check_tensor(x, "x", "[..., n, d]")
    same = y is None
    x = x.double()
    y = x if same else _check_tensor(y, "y", "[..., m, d]").double()
    if x.dim() < 2 or y.dim() < 2 or x.shape[-1] != y.shape[-1]:
        raise ValueError(f"x and y must be [..., n, d] and [..., m, d] with the same d, got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}.")
    x_sq = x.square().sum(-1) if x_sq is None else x_sq.double()
    y_sq = x_sq if same else (y.square().sum(-1) if y_sq is None else y_sq.double())
    if x_sq.shape != x.shape[:-1] or y_sq.shape != y.shape[:-1]:
        raise ValueError(f"x_sq and y_sq must be the rows' squared norms, {tuple(x.shape[:-1])} and "
                         f"{tuple(y.shape[:-1])}, got {tuple(x_sq.shape)} and {tuple(y_sq.shape)}.")
    sq = x_sq[..., :, None] + y_sq[..., None, :] - 2 * x @ y.transpose(-1, -2)
    sq = sq.clamp_min(0)
    if same:
        sq.diagonal(dim1=-2, dim2=-1).zero_()
    return sq


def median_heuristic(sq_dists: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Kernel bandwidth by the median heuristic (Gretton et al. 2012): the median distance of the pooled sample.

    ``sigma = median_{i < j} ||z_i - z_j||`` over the distinct pairs of points of each group (both points valid),
    the median of an even count being the mean of the two middle values (as ``numpy.median``). Where that median
    is 0 (more than half of the pairs are duplicates) the mean of the positive distances is used instead, and
    where every distance is 0 (all points equal; any bandwidth then gives the same MMD) ``sigma = 1``.

    Parameters
    ----------
    sq_dists : Tensor ``[..., P, P]``
        Squared distances within the pooled sample (:func:`pairwise_sq_dists` of ``z`` with itself).
    valid : BoolTensor ``[..., P]``, optional
        Which points belong to each group's sample (padding excluded); broadcast against ``sq_dists[..., 0]``.
        Default: all.

    Returns
    -------
    Tensor ``[...]`` (float64)
        ``sigma > 0`` per group.

    Raises
    ------
    ValueError
        If a group has fewer than two valid points.
    """
    _check_tensor(sq_dists, "sq_dists", "[..., P, P]")
    if sq_dists.dim() < 2 or sq_dists.shape[-1] != sq_dists.shape[-2]:
        raise ValueError(f"sq_dists must be square [..., P, P], got {tuple(sq_dists.shape)}.")
    p = sq_dists.shape[-1]
    iu, ju = torch.triu_indices(p, p, 1, device=sq_dists.device)
    d = sq_dists[..., iu, ju].double().clamp_min(0).sqrt()  # [..., T], T = P (P - 1) / 2
    if valid is None:
        ok = torch.ones(d.shape[-1], dtype=torch.bool, device=d.device).expand_as(d)
    else:
        valid = torch.as_tensor(valid, device=d.device).bool()
        ok = (valid[..., iu] & valid[..., ju]).expand_as(d)
    cnt = ok.sum(-1)  # [...]
    if bool((cnt == 0).any()):
        raise ValueError("The median heuristic needs at least two points per group; give larger samples.")
    srt = torch.where(ok, d, torch.full_like(d, float("inf"))).sort(-1).values
    lo = srt.gather(-1, ((cnt - 1) // 2)[..., None]).squeeze(-1)
    hi = srt.gather(-1, (cnt // 2)[..., None]).squeeze(-1)
    med = (lo + hi) / 2
    pos = ok & (d > 0)
    mean_pos = torch.where(pos, d, torch.zeros_like(d)).sum(-1) / pos.sum(-1).clamp_min(1)
    return torch.where(med > 0, med, torch.where(mean_pos > 0, mean_pos, torch.ones_like(med)))


def gaussian_kernel(sq_dists: torch.Tensor, bandwidth) -> torch.Tensor:
    """Gaussian RBF kernel ``k(a, b) = exp(-||a - b||^2 / (2 sigma^2))`` from squared distances ``[..., P, Q]``.

    ``bandwidth`` (``sigma``) is a positive number or a tensor ``[...]`` (one per group), float64 out.
    """
    sigma = torch.as_tensor(bandwidth, dtype=torch.float64, device=sq_dists.device)
    if not bool(torch.isfinite(sigma).all()) or bool((sigma <= 0).any()):
        raise ValueError(f"bandwidth must be positive and finite, got {bandwidth!r}.")
    return torch.exp(-sq_dists.double() / (2 * sigma[..., None, None] ** 2))


def mmd2_from_kernel(kernel: torch.Tensor, x_mask: torch.Tensor, y_mask: torch.Tensor | None = None, *,
                     unbiased: bool = True) -> torch.Tensor:
    """Squared MMD of two sub-samples of a pooled sample, given its kernel matrix and 0/1 memberships.

    With ``a = x_mask``, ``b = y_mask`` (``n = sum a``, ``m = sum b``) and ``K`` the kernel matrix, the unbiased
    estimator of Gretton et al. (2012, Eq. 3) is::

        MMD^2_u = (a'Ka - sum_i a_i K_ii) / (n (n-1)) + (b'Kb - sum_i b_i K_ii) / (m (m-1)) - 2 a'Kb / (n m)

    and the biased (V-statistic, always >= 0) one ``a'Ka / n^2 + b'Kb / m^2 - 2 a'Kb / (n m)``.

    Parameters
    ----------
    kernel : Tensor ``[..., P, P]``
        Symmetric kernel matrix of the pooled sample.
    x_mask, y_mask : BoolTensor ``[..., R, P]``
        ``R`` partitions (e.g. permutations) of the points; leading dimensions broadcast against the kernel's.
        ``y_mask`` defaults to ``~x_mask``. For one partition pass ``mask[..., None, :]``.
    unbiased : bool

    Returns
    -------
    Tensor ``[..., R]`` (float64)
    """
    _check_tensor(kernel, "kernel", "[..., P, P]")
    _check_tensor(x_mask, "x_mask", "[..., R, P]")
    if y_mask is None:
        y_mask = ~x_mask.bool()
    k = kernel.double()
    a, b = x_mask.to(k), y_mask.to(k)
    if a.dim() < 2 or a.shape[-1] != k.shape[-1] or b.shape[-1] != k.shape[-1]:
        raise ValueError(f"x_mask and y_mask must be [..., R, P] with P = {k.shape[-1]} (the kernel's size), got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}.")
    ka = a @ k  # [..., R, P]  (K is symmetric: a'K = (K a)')
    kb = b @ k
    aka, bkb, akb = (ka * a).sum(-1), (kb * b).sum(-1), (ka * b).sum(-1)
    n, m = a.sum(-1), b.sum(-1)
    if bool((n < (2 if unbiased else 1)).any()) or bool((m < (2 if unbiased else 1)).any()):
        raise ValueError(f"Each sample needs at least {2 if unbiased else 1} points for the "
                         f"{'unbiased' if unbiased else 'biased'} MMD estimate.")
    if unbiased:
        diag = k.diagonal(dim1=-2, dim2=-1)[..., None, :]  # [..., 1, P]
        return ((aka - (a * diag).sum(-1)) / (n * (n - 1)) + (bkb - (b * diag).sum(-1)) / (m * (m - 1))
                - 2 * akb / (n * m))
    return aka / n**2 + bkb / m**2 - 2 * akb / (n * m)


def _pooled_kernel(x: torch.Tensor, y: torch.Tensor, bandwidth) -> tuple[torch.Tensor, torch.Tensor]:
    """Kernel ``[G, P, P]`` of the pooled ``[x; y]`` and the bandwidths ``[G]`` (median heuristic for None)."""
    sq = pairwise_sq_dists(torch.cat([x, y], dim=1))
    if bandwidth is None:
        sigma = median_heuristic(sq)
    else:
        sigma = torch.as_tensor(bandwidth, dtype=torch.float64, device=sq.device)
        if sigma.dim() > 1 or (sigma.dim() == 1 and sigma.shape[0] not in (1, x.shape[0])):
            raise ValueError(f"bandwidth must be a number or one per group [G = {x.shape[0]}], got shape "
                             f"{tuple(sigma.shape)}.")
        sigma = sigma.expand(x.shape[0]).clone()
    return gaussian_kernel(sq, sigma), sigma


def _first_n_mask(n: int, p: int, device) -> torch.Tensor:
    mask = torch.zeros(1, p, dtype=torch.bool, device=device)
    mask[:, :n] = True
    return mask  # [1, P]


def mmd2_batched(x: torch.Tensor, y: torch.Tensor, bandwidth=None, *, unbiased: bool = True) -> torch.Tensor:
    """Squared MMD with a Gaussian RBF kernel for ``G`` pairs of samples at once (Gretton et al. 2012).

    Parameters
    ----------
    x : Tensor ``[G, n, d]``
    y : Tensor ``[G, m, d]``
        ``G`` groups (e.g. every (concept, layer) pair); within a group the two samples share the feature size ``d``.
    bandwidth : None, float or Tensor ``[G]``
        The kernel's ``sigma`` (:func:`gaussian_kernel`); ``None``: the median heuristic over each group's pooled
        sample ``[x_g; y_g]`` (:func:`median_heuristic`).
    unbiased : bool
        The unbiased U-statistic ``MMD^2_u`` (default; it can be slightly negative when the distributions are
        equal) or the biased V-statistic ``MMD^2_b >= 0`` (:func:`mmd2_from_kernel`).

    Returns
    -------
    Tensor ``[G]`` (float64)
    """
    x, y = _check_samples(x, "x", True), _check_samples(y, "y", True)
    if x.shape[0] != y.shape[0] or x.shape[2] != y.shape[2]:
        raise ValueError(f"x [G, n, d] and y [G, m, d] need the same G and d, got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}.")
    kernel, _ = _pooled_kernel(x, y, bandwidth)
    return mmd2_from_kernel(kernel, _first_n_mask(x.shape[1], kernel.shape[-1], kernel.device)[None],
                            unbiased=unbiased)[:, 0]


def mmd2(x: torch.Tensor, y: torch.Tensor, bandwidth=None, *, unbiased: bool = True) -> torch.Tensor:
    """Squared MMD between samples ``x: [n, d]`` and ``y: [m, d]`` with a Gaussian RBF kernel (Gretton et al. 2012).

    :func:`mmd2_batched` for one group; see there for ``bandwidth`` (default: the pooled median heuristic) and
    ``unbiased``. Returns a float64 scalar tensor.
    """
    x, y = _check_samples(x, "x", False), _check_samples(y, "y", False)
    return mmd2_batched(x[None], y[None], None if bandwidth is None else float(bandwidth), unbiased=unbiased)[0]


def mmd2_reference(x, y, bandwidth=None, *, unbiased: bool = True) -> float:
    """Literal reference of :func:`mmd2`: Python double loops over the samples, the kernel evaluated pair by pair.

    ``bandwidth=None`` takes the median of the distances of all distinct pooled pairs, again by a loop (the
    positive-mean and ``1`` fallbacks of :func:`median_heuristic` included). For tests; ``x: [n, d]``, ``y: [m, d]``.
    """
    xs = [torch.as_tensor(r, dtype=torch.float64) for r in x]
    ys = [torch.as_tensor(r, dtype=torch.float64) for r in y]
    n, m = len(xs), len(ys)
    if bandwidth is None:
        z = xs + ys
        dists = [float(torch.sqrt(((z[i] - z[j]) ** 2).sum())) for i in range(len(z)) for j in range(i + 1, len(z))]
        sigma = float(np.median(dists))
        if sigma == 0:
            positive = [d for d in dists if d > 0]
            sigma = float(np.mean(positive)) if positive else 1.0
    else:
        sigma = float(bandwidth)

    def k(a, b):
        return float(torch.exp(-((a - b) ** 2).sum() / (2 * sigma**2)))

    if unbiased:
        kxx = sum(k(xs[i], xs[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
        kyy = sum(k(ys[i], ys[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    else:
        kxx = sum(k(xs[i], xs[j]) for i in range(n) for j in range(n)) / n**2
        kyy = sum(k(ys[i], ys[j]) for i in range(m) for j in range(m)) / m**2
    kxy = sum(k(xs[i], ys[j]) for i in range(n) for j in range(m)) / (n * m)
    return kxx + kyy - 2 * kxy


def random_partitions(n_x, valid: torch.Tensor, n_perm: int, seed: int = 0) -> torch.Tensor:
    """Uniformly random relabellings of pooled samples for a permutation test: BoolTensor ``[..., n_perm, P]``.

    Row ``r`` of group ``g`` marks ``n_x[g]`` of the group's valid points as the "x" sample, uniformly at random
    (the other valid points are "y"). The draws use a CPU ``torch.Generator`` seeded with ``seed``: keys
    ``torch.rand(*batch, n_perm, P)`` (invalid points get key 2), and the ``n_x`` smallest keys are "x"; so a seed
    gives the same partitions on every device.

    Parameters
    ----------
    n_x : int or LongTensor ``[...]``
        Size of the x sample per group, at most the number of valid points.
    valid : BoolTensor ``[..., P]``
        The points of each group (False for padding).
    n_perm : int
    seed : int
    """
    n_perm = check_positive_int(n_perm, "n_perm", hint=" (number of permutations, e.g. 1000)")
    seed = check_positive_int(seed, "seed", zero=True)
    valid = torch.as_tensor(valid).bool()
    gen = torch.Generator().manual_seed(seed)
    keys = torch.rand(*valid.shape[:-1], n_perm, valid.shape[-1], generator=gen, dtype=torch.float64)
    keys = torch.where(valid.cpu()[..., None, :], keys, torch.full_like(keys, 2.0))
    ranks = keys.argsort(-1).argsort(-1)
    n_x = torch.as_tensor(n_x, dtype=torch.long).cpu()
    if bool((n_x > valid.sum(-1).cpu()).any()):
        raise ValueError("n_x is larger than the number of valid points of a group.")
    return (ranks < n_x[..., None, None]).to(valid.device)


@dataclass(frozen=True)
class MMDTest:
    """What :func:`mmd2_permutation_test` returns (one value per group, or scalars for one pair of samples).

    Attributes
    ----------
    mmd2 : Tensor ``[G]`` or ``[]``
        The observed squared MMD.
    p_value : Tensor ``[G]`` or ``[]``
        ``(1 + #{permutations with MMD^2 >= observed}) / (1 + n_perm)``.
    bandwidth : Tensor ``[G]`` or ``[]``
        The kernel's ``sigma``.
    n_perm : int
    """

    mmd2: torch.Tensor
    p_value: torch.Tensor
    bandwidth: torch.Tensor
    n_perm: int


def mmd2_permutation_test(x: torch.Tensor, y: torch.Tensor, n_perm: int = 1000, seed: int = 0, bandwidth=None, *,
                          unbiased: bool = True, max_bytes: int = 1 << 28) -> MMDTest:
    """Permutation test of ``H0: x and y come from one distribution`` with the squared MMD as statistic.

    The pooled sample ``[x; y]`` is relabelled ``n_perm`` times (:func:`random_partitions`, seeded), the MMD of
    each relabelling computed from the one pooled kernel matrix (:func:`mmd2_from_kernel`, batched over
    permutations in chunks of at most ``max_bytes``), and ``p = (1 + #{perm MMD^2 >= observed}) / (1 + n_perm)``,
    which is never 0 and is a valid p-value (Phipson & Smyth 2010). The bandwidth is fixed from the pooled sample
    (the median heuristic by default), which every relabelling shares.

    Parameters
    ----------
    x : Tensor ``[n, d]`` or ``[G, n, d]``
    y : Tensor ``[m, d]`` or ``[G, m, d]``
    n_perm : int
    seed : int
    bandwidth : None, float or Tensor ``[G]``
    unbiased : bool

    Returns
    -------
    MMDTest
        Scalars for ``[n, d]`` input, ``[G]`` tensors for ``[G, n, d]``.
    """
    one = isinstance(x, torch.Tensor) and x.dim() == 2
    x, y = _check_samples(x, "x", not one), _check_samples(y, "y", not one)
    if one:
        x, y = x[None], y[None]
    if x.shape[0] != y.shape[0] or x.shape[2] != y.shape[2]:
        raise ValueError(f"x [G, n, d] and y [G, m, d] need the same G and d, got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}.")
    n_perm = check_positive_int(n_perm, "n_perm", hint=" (number of permutations, e.g. 1000)")
    kernel, sigma = _pooled_kernel(x, y, bandwidth)  # [G, P, P]
    g, p = kernel.shape[0], kernel.shape[-1]
    observed = mmd2_from_kernel(kernel, _first_n_mask(x.shape[1], p, kernel.device)[None], unbiased=unbiased)[:, 0]
    masks = random_partitions(x.shape[1], torch.ones(p, dtype=torch.bool, device=kernel.device), n_perm, seed)
    chunk = max(1, int(max_bytes) // max(1, 3 * 8 * g * p))
    exceed = torch.zeros(g, dtype=torch.long, device=kernel.device)
    for s in range(0, n_perm, chunk):
        perm = mmd2_from_kernel(kernel, masks[s:s + chunk][None], unbiased=unbiased)  # [G, r]
        exceed += (perm >= observed[:, None]).sum(-1)
    pval = (1 + exceed).double() / (1 + n_perm)
    if one:
        return MMDTest(observed[0], pval[0], sigma[0], n_perm)
    return MMDTest(observed, pval, sigma, n_perm)


def adjust_p_values(p, method: str | None = "holm") -> torch.Tensor:
    """Family-wise error correction of p-values along the last dimension ``[..., m]`` (one family per row).

    ``"bonferroni"``: ``min(1, m p)``. ``"holm"`` (Holm 1979; uniformly more powerful than Bonferroni, same
    guarantee): with the ``m`` p-values sorted ascending, ``p~_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))``,
    returned in the original order. ``None``: ``p`` unchanged. float64 out; NaN entries are not allowed.
    """
    p = torch.as_tensor(p, dtype=torch.float64)
    if p.dim() == 0:
        p = p[None]
    if bool(torch.isnan(p).any()) or bool(((p < 0) | (p > 1)).any()):
        raise ValueError("p-values must lie in [0, 1] (no NaN).")
    if method is None:
        return p.clone()
    if method not in ("holm", "bonferroni"):
        raise ValueError(f"Unknown p-value correction {method!r}; use 'holm', 'bonferroni' or None.")
    m = p.shape[-1]
    if method == "bonferroni":
        return (p * m).clamp_max(1.0)
    srt, order = p.sort(-1)
    factors = torch.arange(m, 0, -1, dtype=torch.float64, device=p.device)  # m - j + 1 for j = 1..m
    adj = (srt * factors).clamp_max(1.0).cummax(-1).values
    return torch.empty_like(adj).scatter_(-1, order, adj)
