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
    "deletion_curve", "insertion_curve", "auc",
    "BootstrapCI", "bootstrap_ci", "mean_ci_table",
    "confusion_matrix", "confusion_pairs",
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
