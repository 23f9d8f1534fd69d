"""The interpretable CNN of Zhang, Wu and Zhu (CVPR 2018), the additive explainer's Case 1 performer.

Chen et al. build Experiment 1 on it (their ref. [40]): each filter of the top conv layer is pushed, by the *filter
loss*, to fire on one object part at one place, and a *mask layer* keeps only the activations near the filter's
strongest unit. Then ``y_i = sum_hw x_hwi`` (Eq. 5) is the confidence that the filter's part is present.

Names follow Zhang et al.:

* :func:`part_templates` -- the ``n^2`` positive templates ``T_mu`` and the negative template ``T^-``:
  ``T_mu(i, j) = tau * max(1 - beta * ||(i, j) - mu||_1 / n, -1)``, ``T^-(i, j) = -tau``, with
  ``tau = 0.5 / n^2`` and ``beta = 4``.
* :class:`MaskLayer` -- ``mu_hat = argmax_{i,j} x(i, j)`` per filter and image (no gradient through the argmax),
  then ``x * max(T_mu_hat, 0)``. Chen et al.'s supplement puts the mask layer *between the top conv and its
  ReLU*; because the kept part of the template is non-negative, ``relu(x * max(T, 0)) = max(relu(x) * T, 0)``, so
  mask-then-ReLU here equals Zhang et al.'s ReLU-then-``max(x * T, 0)`` (no simplification), up to the constant
  ``1 / tau`` by which we rescale the template so that its peak is 1 (the next layer absorbs a constant).
  ``MaskLayer.enabled = False`` (or :func:`mask_off`) lets the map through unchanged.
* :func:`filter_loss` -- ``Loss_f = -MI(X; T) = -sum_T p(T) sum_x p(x | T) log(p(x | T) / p(x))`` with
  ``p(x | T) = exp(tr(x . T)) / Z_T``, ``Z_T = sum_{x in X} exp(tr(x . T))``, ``p(T_mu) = alpha / n^2``,
  ``p(T^-) = 1 - alpha`` and ``p(x) = sum_T p(T) p(x | T)``; an explicit differentiable loss, vectorised over
  filters and templates with ``logsumexp``, whose value is returned (the public ports hide it in a hand-written
  backward pass). :func:`filter_loss_reference` is the literal double loop.
* :func:`filter_part_iou` and :func:`assign_parts` -- how part-selective each filter is: the dataset-level IoU of
  its activation region (upsampled, thresholded at the top 0.5% of its activations over the data set, as Network
  Dissection does) with each ConceptWorld part mask, and each filter's part chosen by that IoU, not by hand.

What is simplified, and what it costs (measured in ``notebooks/explainer/01_object_parts``):

* ``X``, the set of feature maps in ``Z_T`` and ``p(x)``, is the mini-batch, not the whole training set. The
  notebook compares the batch-averaged loss with the loss over the whole training set.
* The loss's gradient is autograd's exact one; Zhang et al. approximate it in their backward pass.
"""

from __future__ import annotations

import contextlib
import copy
import math

import pandas as pd
import torch
from torch import nn

from xailib.checks import check_fraction, check_positive_int
from xailib.layers import get_layer
from xailib.maps import resize_bilinear

__all__ = [
    "MASK_SUFFIX",
    "MaskLayer",
    "add_mask_layer",
    "assign_parts",
    "filter_loss",
    "filter_loss_reference",
    "filter_part_iou",
    "mask_layers",
    "mask_off",
    "part_templates",
    "template_priors",
]

#: :func:`add_mask_layer` replaces the ReLU ``name`` by ``Sequential(MaskLayer, ReLU)``: the mask layer is
#: ``name + MASK_SUFFIX``.
MASK_SUFFIX = ".0"

#: Zhang et al.'s template constants: ``tau = TAU_SCALE / n^2`` and ``beta``.
TAU_SCALE = 0.5
BETA = 4.0


def part_templates(h: int, w: int | None = None, *, beta: float = BETA, tau: float | None = None,
                   dtype=torch.float32, device="cpu") -> torch.Tensor:
    """The ``h * w`` positive templates, then the negative one: ``[h * w + 1, h, w]``.

    Template ``k = i * w + j`` is ``T_mu`` for ``mu = (i, j)``: ``tau * max(1 - beta * ||(a, b) - mu||_1 / n, -1)``
    at ``(a, b)``, with ``n = max(h, w)`` and ``tau = 0.5 / n^2`` unless given. The last is ``T^- = -tau``.
    """
    h = check_positive_int(h, "h")
    w = h if w is None else check_positive_int(w, "w")
    n = max(h, w)
    tau = TAU_SCALE / n ** 2 if tau is None else float(tau)
    a = torch.arange(h, dtype=dtype, device=device)
    b = torch.arange(w, dtype=dtype, device=device)
    dist = ((a[:, None, None, None] - a[None, None, :, None]).abs()
            + (b[None, :, None, None] - b[None, None, None, :]).abs())                   # [mu_i, mu_j, a, b]
    pos = tau * torch.clamp(1 - beta * dist / n, min=-1.0)
    neg = torch.full((1, h, w), -tau, dtype=dtype, device=device)
    return torch.cat([pos.reshape(h * w, h, w), neg])


def template_priors(n_positions: int, alpha: float, dtype=torch.float32, device="cpu") -> torch.Tensor:
    """``p(T)``: ``alpha / n_positions`` for each positive template, ``1 - alpha`` for ``T^-`` (last)."""
    alpha = check_fraction(alpha, "alpha", low_open=True, hint=" (the share of images that hold the part)")
    p = torch.full((n_positions + 1,), alpha / n_positions, dtype=dtype, device=device)
    p[-1] = 1 - alpha
    return p


def _check_maps(x, name: str = "x") -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a float feature map [N, C, h, w] (a conv layer's output), got {got}.")
    if x.shape[0] < 2:
        raise ValueError(f"{name} holds {x.shape[0]} image(s); the filter loss needs a batch of at least 2 "
                         "(Z_T and p(x) are sums over the set of feature maps X).")
    return x


def filter_loss(x: torch.Tensor, alpha: float, *, beta: float = BETA, tau: float | None = None,
                reduction: str = "mean") -> torch.Tensor:
    """``-MI(X; T)`` per filter, vectorised over filters and templates (Zhang et al., Eq. 1).

    Parameters
    ----------
    x : Tensor ``[N, C, h, w]``
        The filters' feature maps over a set ``X`` of ``N`` images (after the ReLU, ``x >= 0``, as Zhang et al.).
    alpha : float in (0, 1]
        The prior probability that an image holds the filter's part (the share of positives in the batch).
    reduction : {"mean", "sum", "none"}
        Over the ``C`` filters; ``"none"`` gives ``[C]``.

    Returns
    -------
    Tensor
        The loss (differentiable; ``-MI``, so ``>= -H(T)`` and ``<= 0``).
    """
    x = _check_maps(x)
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}.")
    n_img, c, h, w = x.shape
    templates = part_templates(h, w, beta=beta, tau=tau, dtype=x.dtype, device=x.device)           # [K, h, w]
    log_pt = template_priors(h * w, alpha, dtype=x.dtype, device=x.device).log()                  # [K]
    score = torch.einsum("nchw,khw->ckn", x, templates)                       # tr(x . T): [C, K, N]
    log_px_t = score - torch.logsumexp(score, dim=2, keepdim=True)           # log p(x | T), normalised over X
    log_px = torch.logsumexp(log_pt[None, :, None] + log_px_t, dim=1, keepdim=True)          # log p(x): [C, 1, N]
    mi = (log_pt.exp()[None, :] * (log_px_t.exp() * (log_px_t - log_px)).sum(2)).sum(1)      # [C]
    loss = -mi
    return loss.mean() if reduction == "mean" else loss.sum() if reduction == "sum" else loss


def filter_loss_reference(x, alpha: float, *, beta: float = BETA, tau: float | None = None) -> list[float]:
    """The filter loss by the paper's sums, one filter, template and image at a time (float64): ``[C]`` values."""
    x = _check_maps(torch.as_tensor(x)).double()
    n_img, c, h, w = x.shape
    n = max(h, w)
    tau = TAU_SCALE / n ** 2 if tau is None else float(tau)
    templates = []
    for mi in range(h):
        for mj in range(w):
            templates.append([[tau * max(1 - beta * (abs(a - mi) + abs(b - mj)) / n, -1) for b in range(w)]
                              for a in range(h)])
    templates.append([[-tau] * w for _ in range(h)])
    p_t = [alpha / (h * w)] * (h * w) + [1 - alpha]
    out = []
    for f in range(c):
        maps = x[:, f].tolist()
        p_x_given = []                                                       # [K][N]
        for t in templates:
            e = [math.exp(sum(maps[i][a][b] * t[a][b] for a in range(h) for b in range(w))) for i in range(n_img)]
            z = sum(e)
            p_x_given.append([v / z for v in e])
        p_x = [sum(p_t[k] * p_x_given[k][i] for k in range(len(templates))) for i in range(n_img)]
        mi = sum(p_t[k] * sum(p_x_given[k][i] * math.log(p_x_given[k][i] / p_x[i]) for i in range(n_img))
                 for k in range(len(templates)))
        out.append(-mi)
    return out


class MaskLayer(nn.Module):
    """Zhang et al.'s mask layer: each filter's map times the positive part of the template at its argmax.

    ``forward(x)`` for ``x [N, C, h, w]``: ``mu_hat[n, c] = argmax_{i,j} x[n, c, i, j]`` (the first on ties, no
    gradient), then ``x * max(T_mu_hat, 0)``. Placed before the ReLU (Chen et al.'s supplement); see the module
    docstring for why that equals Zhang et al.'s order. ``enabled = False`` passes ``x`` through.
    """

    def __init__(self, beta: float = BETA):
        super().__init__()
        self.beta = float(beta)
        self.enabled = True

    def extra_repr(self) -> str:
        return f"beta={self.beta}, enabled={self.enabled}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        if x.dim() != 4:
            raise ValueError(f"MaskLayer expects a conv feature map [N, C, h, w], got {tuple(x.shape)}.")
        n_img, c, h, w = x.shape
        templates = part_templates(h, w, beta=self.beta, dtype=x.dtype, device=x.device)[:-1].clamp(min=0)
        mu = x.detach().flatten(2).argmax(-1)                                           # [N, C], k = i * w + j
        return x * templates[mu] * (max(h, w) ** 2 / TAU_SCALE)   # rescaled so that the template's peak is 1


def mask_layers(model: nn.Module) -> list[MaskLayer]:
    """The model's mask layers."""
    return [m for m in model.modules() if isinstance(m, MaskLayer)]


@contextlib.contextmanager
def mask_off(model: nn.Module):
    """Switch every mask layer of ``model`` off inside the block, and back to what it was after, even on error."""
    layers = mask_layers(model)
    before = [m.enabled for m in layers]
    try:
        for m in layers:
            m.enabled = False
        yield model
    finally:
        for m, b in zip(layers, before):
            m.enabled = b


def add_mask_layer(model: nn.Module, relu_name: str, beta: float = BETA) -> nn.Module:
    """A deep copy of ``model`` with the ReLU ``relu_name`` replaced by ``Sequential(MaskLayer, ReLU)``.

    The mask layer is then ``relu_name + MASK_SUFFIX``. ``model`` itself is not changed.

    Raises
    ------
    ValueError
        When ``relu_name`` is not a layer of ``model`` (the message lists its ReLUs), is not a ReLU, or already
        holds a mask layer.
    """
    relus = [n for n, m in model.named_modules() if isinstance(m, nn.ReLU)]
    try:
        layer = get_layer(model, relu_name)
    except (KeyError, ValueError, AttributeError) as e:
        raise ValueError(f"The performer has no layer {relu_name!r} to put the mask layer before; its ReLUs: "
                         f"{', '.join(relus) or 'none'}.") from e
    if isinstance(layer, nn.Sequential) and layer and isinstance(layer[0], MaskLayer):
        raise ValueError(f"{relu_name!r} already holds a mask layer; add_mask_layer once per model.")
    if not isinstance(layer, nn.ReLU):
        raise ValueError(f"{relu_name!r} is a {type(layer).__name__}, not the ReLU after the top conv; the mask "
                         f"layer goes before a ReLU. The model's ReLUs: {', '.join(relus) or 'none'}.")
    out = copy.deepcopy(model)
    parent_name, _, child = relu_name.rpartition(".")
    parent = get_layer(out, parent_name) if parent_name else out
    setattr(parent, child, nn.Sequential(MaskLayer(beta), nn.ReLU(inplace=False)))
    return out


def _check_part_masks(part_masks, acts: torch.Tensor) -> torch.Tensor:
    if (not isinstance(part_masks, torch.Tensor) or part_masks.dim() != 4
            or part_masks.shape[0] != acts.shape[0]):
        got = tuple(part_masks.shape) if isinstance(part_masks, torch.Tensor) else type(part_masks).__name__
        raise ValueError(f"part_masks must be [N, P, H, W] with N = {acts.shape[0]} (one per activation map), "
                         f"got {got}.")
    return part_masks.bool()


def filter_part_iou(acts: torch.Tensor, part_masks: torch.Tensor, quantile: float = 0.995,
                    chunk: int = 8) -> torch.Tensor:
    """Network-Dissection IoU of every filter with every part: ``[C, P]``.

    Each filter's maps ``acts[:, c]`` are upsampled bilinearly to the masks' size; its region is where the
    upsampled map exceeds ``T_c``, the ``quantile`` of all its upsampled values over the data set (0.995: the top
    0.5%, as Bau et al.); the IoU is ``sum_n |region & mask_p| / sum_n |region | mask_p|`` over the data set.

    Parameters
    ----------
    acts : Tensor ``[N, C, h, w]``
    part_masks : BoolTensor ``[N, P, H, W]``
    quantile : float in (0, 1)
    chunk : int
        Filters upsampled at a time (memory).
    """
    acts = _check_maps(acts, "acts")
    masks = _check_part_masks(part_masks, acts)
    quantile = check_fraction(quantile, "quantile", low_open=True, high_open=True, hint=" (0.995 keeps each filter's top 0.5%)")
    n_img, c = acts.shape[:2]
    size = masks.shape[-2:]
    masks_f = masks.float().to(acts.device)
    out = torch.empty(c, masks.shape[1])
    for s in range(0, c, chunk):
        up = resize_bilinear(acts[:, s:s + chunk].float(), size)                         # [N, c', H, W]
        flat = up.transpose(0, 1).reshape(up.shape[1], -1)
        k = max(1, min(flat.shape[1], int(math.ceil(quantile * flat.shape[1]))))
        thr = flat.kthvalue(k, dim=1).values                                              # [c']
        region = (up > thr[None, :, None, None]).float()
        inter = torch.einsum("nchw,nphw->cp", region, masks_f)
        union = region.sum((0, 2, 3))[:, None] + masks_f.sum((0, 2, 3))[None, :] - inter
        out[s:s + chunk] = (inter / union.clamp(min=1)).cpu()
    return out


def assign_parts(iou: torch.Tensor, part_names, min_iou: float = 0.04) -> pd.DataFrame:
    """Each filter's part: the part of largest IoU (:func:`filter_part_iou`), or ``None`` below ``min_iou``.

    Returns a DataFrame with one row per filter: ``filter``, ``part``, ``iou`` (its best), ``second`` (the runner
    up's IoU) and ``assigned`` (``iou >= min_iou``). NetDissect's usual cut is 0.04.
    """
    part_names = list(part_names)
    if iou.dim() != 2 or iou.shape[1] != len(part_names):
        raise ValueError(f"iou must be [C, P] with P = {len(part_names)} part names, got {tuple(iou.shape)}.")
    top = iou.topk(min(2, iou.shape[1]), dim=1)
    rows = []
    for f in range(iou.shape[0]):
        best = float(top.values[f, 0])
        ok = best >= min_iou
        rows.append({"filter": f, "part": part_names[int(top.indices[f, 0])] if ok else None, "iou": best,
                     "second": float(top.values[f, 1]) if iou.shape[1] > 1 else float("nan"), "assigned": ok})
    return pd.DataFrame(rows)
