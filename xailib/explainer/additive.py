"""The additive explainer of Chen et al., "Explaining Neural Networks Semantically and Quantitatively" (Sec. 3).

A *performer* ``f`` gives a score ``y_hat`` (before any softmax) for an image ``I``; ``n`` *visual concepts* give
scores ``y_i`` (interpretable filters of the performer, Case 1, or other outputs of a network that shares
features with the target, Case 2: :mod:`xailib.explainer.priors`). The explainer is the additive model

    y_hat ~ alpha_1(I) y_1 + ... + alpha_n(I) y_n + b,      alpha = g(I)                             (Eq. 1)

where ``g`` is a conv net (:class:`AlphaNet`) on the performer's feature map (the paper's footnote 5) or on the
image, and ``alpha_i(I) y_i`` is the *quantitative contribution* of concept ``i``. It is learned by
distillation, without labels:

* :func:`distillation_loss` -- ``L = ||y_hat - sum_i alpha_i y_i - b||^2``, the mean over images       (Eq. 2)
* :func:`prior_loss` -- the loss of ``alpha`` against the prior weights ``w``                        (Eq. 4):
  the cross-entropy of the L1-normalised vectors when every ``alpha_i, w_i >= 0``, the squared L2 distance of
  the L2-normalised vectors otherwise;
* :func:`prior_weight` -- ``lambda(t) = beta / sqrt(t)`` for epoch ``t = 1, 2, ...``                (Eq. 3)
* :func:`train_explainer` -- ``Loss = L + lambda(t) * prior_loss`` with Adam                      (Eq. 3).
  ``beta = 0`` (or no priors) is the paper's *baseline*, distillation alone.

The performer is frozen and deterministic, so its scores, the concepts and the priors are computed once
(:func:`xailib.explainer.priors.case1_priors`, :func:`~xailib.explainer.priors.case2_priors`) and the explainer
trains on those tensors; it never calls the performer.
"""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from xailib.checks import check_choice, check_positive_float, check_positive_int, check_seed
from xailib.layers import model_state
from xailib.utils import resolve_device

__all__ = [
    "AlphaNet",
    "AdditiveExplainer",
    "TrainedExplainer",
    "distillation_loss",
    "prior_loss",
    "prior_loss_reference",
    "prior_weight",
    "train_explainer",
]

#: Added inside the logarithm of the cross-entropy prior loss, so that an ``alpha_i = 0`` gives a large,
#: finite loss rather than ``inf``.
LOG_EPS = 1e-12


# ---- g: the network that estimates the weights alpha ------------------------------------------------------------


class _Residual(nn.Module):
    """``x + conv-bn-relu-conv-bn(x)``, then ReLU: a ResNet basic block at constant width and resolution."""

    def __init__(self, width: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


class AlphaNet(nn.Module):
    """``g``: input ``[B, C, H, W]`` (the performer's feature map, or the image) -> weights ``alpha [B, n]``.

    The paper's ``g`` is a ResNet-152 whose first max-pool and last average-pool are removed, because its input
    is the small top-conv map of the performer (Sec. 4.1, footnotes 4-5). Ours is the same shape at the size
    of our performers: a 3x3 stem conv, ``depth`` residual blocks at the input's resolution (no pooling inside),
    a global average over positions (the only pooling, so any ``H, W`` works), and a linear layer to ``n``.
    With ``positive=True`` the output goes through softplus, ``alpha = log(1 + exp(.))`` (Sec. 3), so every
    ``alpha_i > 0``.

    Parameters
    ----------
    in_channels : int
        ``C`` of the input.
    n_concepts : int
        ``n``.
    width : int
        Channels of the stem and the residual blocks.
    depth : int
        Residual blocks (0 allowed: stem, pool, linear).
    positive : bool
        Softplus on the output (the cross-entropy prior loss of Eq. 4 needs ``alpha >= 0``).
    """

    def __init__(self, in_channels: int, n_concepts: int, width: int = 64, depth: int = 2, positive: bool = True):
        super().__init__()
        in_channels = check_positive_int(in_channels, "in_channels")
        n_concepts = check_positive_int(n_concepts, "n_concepts")
        width = check_positive_int(width, "width")
        depth = check_positive_int(depth, "depth", zero=True)
        self.positive = bool(positive)
        self.n_concepts = n_concepts
        self.in_channels = in_channels
        layers: OrderedDict[str, nn.Module] = OrderedDict(
            stem=nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                               nn.ReLU()))
        for k in range(depth):
            layers[f"block{k + 1}"] = _Residual(width)
        self.features = nn.Sequential(layers)
        self.fc = nn.Linear(width, n_concepts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``alpha [B, n]`` (softplus-ed when ``positive``)."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"g takes inputs [B, {self.in_channels}, H, W], got {tuple(x.shape)}; give the feature "
                             "maps (or images) this AlphaNet was built for.")
        out = self.fc(self.features(x).mean(dim=(2, 3)))
        return F.softplus(out) if self.positive else out


class AdditiveExplainer(nn.Module):
    """The additive model of Eq. (1): ``y_explainer = sum_i alpha_i(I) y_i + b`` with ``alpha = g(I)``.

    Parameters
    ----------
    g : nn.Module
        Maps the explainer's input ``[B, ...]`` to ``alpha [B, n]`` (e.g. :class:`AlphaNet`).
    positive : bool
        Whether ``g``'s weights are non-negative (selects the cross-entropy form of Eq. 4 in training).
    """

    def __init__(self, g: nn.Module, positive: bool = True):
        super().__init__()
        if not isinstance(g, nn.Module):
            raise TypeError(f"g must be an nn.Module mapping inputs to alpha [B, n], got {type(g).__name__}.")
        self.g = g
        self.positive = bool(positive)
        self.b = nn.Parameter(torch.zeros(()))

    def alpha(self, inputs: torch.Tensor) -> torch.Tensor:
        """``alpha = g(I)``: ``[B, n]``."""
        return self.g(inputs)

    def forward(self, inputs: torch.Tensor, concepts: torch.Tensor) -> torch.Tensor:
        """Eq. (1): ``inputs [B, ...]``, ``concepts y [B, n]`` -> ``sum_i alpha_i y_i + b``, ``[B]``."""
        a = self.alpha(inputs)
        _check_pair(a, concepts)
        return (a * concepts).sum(1) + self.b

    def contributions(self, inputs: torch.Tensor, concepts: torch.Tensor) -> torch.Tensor:
        """The quantitative contributions ``alpha_i(I) y_i``: ``[B, n]`` (their sum plus ``b`` is the output)."""
        a = self.alpha(inputs)
        _check_pair(a, concepts)
        return a * concepts


def _check_pair(alpha: torch.Tensor, concepts: torch.Tensor) -> None:
    if not isinstance(concepts, torch.Tensor) or concepts.dim() != 2 or concepts.shape != alpha.shape:
        raise ValueError(f"concepts must be y [B, n] = {tuple(alpha.shape)} (one score per image and concept, "
                         f"as g's alpha), got {tuple(getattr(concepts, 'shape', ()))}.")


# ---- the losses -----------------------------------------------------------------------------------------------


def distillation_loss(y_hat: torch.Tensor, alpha: torch.Tensor, concepts: torch.Tensor,
                      b: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Eq. (2): ``L = ||y_hat - sum_i alpha_i y_i - b||^2``, averaged over the batch.

    Parameters
    ----------
    y_hat : Tensor ``[B]``
        The performer's scores (before the softmax).
    alpha, concepts : Tensor ``[B, n]``
        ``g``'s weights and the concept scores ``y_i``.
    b : Tensor ``[]`` or float
        The explainer's bias.

    Returns
    -------
    Tensor ``[]``
    """
    _check_pair(alpha, concepts)
    if y_hat.shape != alpha.shape[:1]:
        raise ValueError(f"y_hat must be [B] = [{alpha.shape[0]}], got {tuple(y_hat.shape)}.")
    return (y_hat - (alpha * concepts).sum(1) - b).pow(2).mean()


def _valid_rows(w: torch.Tensor) -> torch.Tensor:
    """Images whose prior ``w`` is not all zero: ``[B]`` bool (a zero vector cannot be normalised)."""
    return w.abs().sum(1) > 0


def prior_loss(alpha: torch.Tensor, w: torch.Tensor, positive: bool | None = None) -> torch.Tensor:
    """Eq. (4), the loss for the prior weights, averaged over the images of the batch.

    * ``positive`` (every ``alpha_i, w_i >= 0``): ``crossEntropy(alpha / ||alpha||_1, w / ||w||_1)``. We read the
      paper's ``crossEntropy(prediction, target)`` as ``-sum_i wbar_i log abar_i``, the prior ``wbar`` being the
      target distribution and ``abar`` the explainer's (the order of PyTorch's ``cross_entropy``).
    * otherwise: ``|| alpha / ||alpha||_2 - w / ||w||_2 ||_2^2``.

    An image whose prior is all zero (e.g. every gradient clipped to 0 in Case 1) has no direction to pull
    towards and is left out of the mean; a batch where every prior is zero gives 0.

    Parameters
    ----------
    alpha, w : Tensor ``[B, n]``
    positive : bool, optional
        Which form; by default the cross-entropy exactly when ``alpha`` and ``w`` are both non-negative, as the
        case split of Eq. (4) reads.

    Returns
    -------
    Tensor ``[]``
    """
    if not isinstance(w, torch.Tensor) or w.shape != alpha.shape or alpha.dim() != 2:
        raise ValueError(f"w must be prior weights [B, n] shaped like alpha {tuple(alpha.shape)}, got "
                         f"{tuple(getattr(w, 'shape', ()))}.")
    w = w.to(alpha)
    if positive is None:
        positive = bool((alpha >= 0).all()) and bool((w >= 0).all())
    valid = _valid_rows(w)
    if not bool(valid.any()):
        return alpha.sum() * 0.0
    a, w = alpha[valid], w[valid]
    if positive:
        if bool((w < 0).any()) or bool((a < 0).any()):
            raise ValueError("The cross-entropy prior loss of Eq. (4) needs alpha >= 0 and w >= 0; clip the priors "
                             "(w.clamp(min=0)) and use a softplus g (positive=True), or pass positive=False for the "
                             "L2 form.")
        a_bar = a / a.sum(1, keepdim=True).clamp_min(LOG_EPS)
        w_bar = w / w.sum(1, keepdim=True)
        return -(w_bar * torch.log(a_bar + LOG_EPS)).sum(1).mean()
    a_hat = a / a.norm(dim=1, keepdim=True).clamp_min(LOG_EPS)
    w_hat = w / w.norm(dim=1, keepdim=True)
    return (a_hat - w_hat).pow(2).sum(1).mean()


def prior_loss_reference(alpha, w, positive: bool) -> float:
    """Eq. (4) image by image and concept by concept, in Python floats: the literal reading of
    :func:`prior_loss` for tests."""
    total, count = 0.0, 0
    for a_row, w_row in zip(alpha.tolist(), w.tolist()):
        if sum(abs(v) for v in w_row) == 0:
            continue
        count += 1
        if positive:
            sa, sw = sum(a_row), sum(w_row)
            total += -sum((wi / sw) * math.log(ai / sa + LOG_EPS) for ai, wi in zip(a_row, w_row))
        else:
            na = math.sqrt(sum(v * v for v in a_row))
            nw = math.sqrt(sum(v * v for v in w_row))
            total += sum((ai / na - wi / nw) ** 2 for ai, wi in zip(a_row, w_row))
    return total / count if count else 0.0


def prior_weight(epoch: int, beta: float) -> float:
    """``lambda(t) = beta / sqrt(t)`` (Sec. 3, below Eq. 3) for epoch ``t = 1, 2, ...``; tends to 0."""
    epoch = check_positive_int(epoch, "epoch", hint=" (epochs count from 1)")
    beta = check_positive_float(beta, "beta", zero=True)
    return beta / math.sqrt(epoch)


# ---- training ---------------------------------------------------------------------------------------------------


@dataclass
class TrainedExplainer:
    """An explainer learned by :func:`train_explainer`, with its training log.

    Attributes
    ----------
    explainer : AdditiveExplainer
        In eval mode.
    history : pandas.DataFrame
        One row per epoch: ``epoch``, ``lambda`` (``lambda(t)``), ``distillation`` and ``prior`` (the means of
        Eq. 2 and Eq. 4 over the epoch's batches, before each step), ``loss`` (Eq. 3).
    beta : float
        0 for the distillation baseline.
    config : dict
        The arguments of the run.
    """

    explainer: AdditiveExplainer
    history: pd.DataFrame
    beta: float
    config: dict = field(default_factory=dict)

    @torch.no_grad()
    def predict(self, inputs: torch.Tensor, concepts: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """``sum_i alpha_i y_i + b`` for every image: ``[N]`` on the CPU."""
        return torch.cat([self.explainer(*batch) for batch in self._batches(inputs, concepts, batch_size)]).cpu()

    @torch.no_grad()
    def contributions(self, inputs: torch.Tensor, concepts: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """``alpha_i y_i`` for every image and concept: ``[N, n]`` on the CPU."""
        return torch.cat([self.explainer.contributions(*batch)
                          for batch in self._batches(inputs, concepts, batch_size)]).cpu()

    def _batches(self, inputs, concepts, batch_size):
        dev = self.explainer.b.device
        self.explainer.eval()
        for s in range(0, len(inputs), batch_size):
            yield inputs[s:s + batch_size].to(dev), concepts[s:s + batch_size].to(dev)


def _check_training_tensors(inputs, concepts, y_hat, priors):
    for name, t in (("inputs", inputs), ("concepts", concepts), ("y_hat", y_hat)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise TypeError(f"{name} must be a float tensor, got {type(t).__name__}"
                            + (f" {t.dtype}" if isinstance(t, torch.Tensor) else "") + ".")
    n = len(inputs)
    if n < 2:
        raise ValueError(f"train_explainer needs at least 2 images, got {n}.")
    if concepts.dim() != 2 or len(concepts) != n:
        raise ValueError(f"concepts must be y [N, n] with N = {n} (the images of inputs), got {tuple(concepts.shape)}.")
    if y_hat.shape != (n,):
        raise ValueError(f"y_hat must be the performer's scores [N] = [{n}], got {tuple(y_hat.shape)}; take one "
                         "output (e.g. logits[:, k]) before the softmax.")
    if priors is not None and (not isinstance(priors, torch.Tensor) or priors.shape != concepts.shape):
        raise ValueError(f"priors must be w [N, n] = {tuple(concepts.shape)} like concepts, got "
                         f"{tuple(getattr(priors, 'shape', ()))}; or None for the baseline.")
    for name, t in (("inputs", inputs), ("concepts", concepts), ("y_hat", y_hat), ("priors", priors)):
        if t is not None and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contains NaN or inf; the explainer cannot distil from them.")
    if bool(((y_hat >= 0) & (y_hat <= 1)).all()) and float(y_hat.max() - y_hat.min()) > 0:
        warnings.warn("y_hat lies within [0, 1] like probabilities after a softmax or sigmoid; the paper explains "
                      "the score before it (a logit, or the log-odds of a binary performer). Pass that score, or "
                      "ignore this warning if [0, 1] is its true range.", UserWarning, stacklevel=3)


def _check_g_width(g: nn.Module, inputs: torch.Tensor, n: int) -> None:
    """``g``'s output width must be the number of concepts: one forward of two inputs, in eval mode, no grad."""
    with model_state(g, train=False), torch.no_grad():
        out = g(inputs[:2].to(next(iter(g.parameters()), inputs).device))
    if out.dim() != 2 or out.shape[1] != n:
        raise ValueError(f"g gives alpha of shape {tuple(out.shape)} for 2 images, but there are {n} concepts: g's "
                         f"output width must equal the number of concepts (build it with n_concepts={n}).")


def _floor_init(explainer: AdditiveExplainer, concepts: torch.Tensor, y_hat: torch.Tensor) -> None:
    """``b = min(y_hat)``; ``alpha`` near ``a = max(sum (y_hat - b) s / sum s^2, 1e-3)``, ``s = sum_i y_i``."""
    y_hat = y_hat.double()
    b = float(y_hat.min())
    total = concepts.double().sum(1)
    denom = float((total * total).sum())
    a = max(float(((y_hat - b) * total).sum()) / denom, 1e-3) if denom > 0 else 1e-3
    explainer.b.fill_(b)
    fc = getattr(explainer.g, "fc", None)
    if isinstance(explainer.g, AlphaNet) and isinstance(fc, nn.Linear) and fc.bias is not None:
        fc.bias.fill_(math.log(math.expm1(a)))                           # softplus(bias) = a


def train_explainer(inputs: torch.Tensor, concepts: torch.Tensor, y_hat: torch.Tensor,
                    priors: torch.Tensor | None = None, *, beta: float = 10.0, positive: bool = True,
                    g: nn.Module | None = None, width: int = 64, depth: int = 2, epochs: int = 30,
                    batch_size: int = 64, lr: float = 1e-3, weight_decay: float = 0.0, seed: int = 0,
                    init: str = "zero", device="auto", progress: bool = True) -> TrainedExplainer:
    """Learn an additive explainer by distillation with prior losses (Eq. 3), or the baseline (``beta = 0``).

    Each epoch ``t`` minimises ``L + lambda(t) * prior_loss(alpha, w)`` with Adam over shuffled batches;
    ``lambda(t) = beta / sqrt(t)`` (:func:`prior_weight`). The explainer's bias ``b`` starts at 0, so that
    at the start the concepts, not the bias, carry the score (starting ``b`` at the mean of ``y_hat`` left the
    weights small and the fit ten times worse in the same epochs on the tests' planted task).

    Parameters
    ----------
    inputs : Tensor ``[N, C, H, W]``
        ``g``'s input per image: the performer's feature map (footnote 5) or the image.
    concepts : Tensor ``[N, n]``
        ``y_i`` per image.
    y_hat : Tensor ``[N]``
        The performer's score per image, before the softmax.
    priors : Tensor ``[N, n]``, optional
        ``w`` per image (:mod:`xailib.explainer.priors`); None (or ``beta = 0``) trains the baseline.
    beta : float
        ``beta`` of ``lambda(t)``: 10 in Experiment 1, 0.2 in Experiment 2.
    positive : bool
        Softplus ``g`` and the cross-entropy prior loss (Experiment 1), else the L2 form (Experiment 2).
    g : nn.Module, optional
        Defaults to ``AlphaNet(C, n, width, depth, positive)`` (initialised from ``seed``).
    epochs, batch_size, lr, weight_decay : optimisation settings.
    seed : int
        Initialisation and batch order; the same seed gives the same explainer.
    init : {"zero", "floor"}
        Where the explainer starts (the paper does not say). ``"zero"``: ``b = 0`` and ``g`` as built.
        ``"floor"`` (positive explainers): ``b = min(y_hat)``, the score left when no concept contributes (with
        ``alpha, y >= 0`` the explainer cannot go below ``b``), and the default ``AlphaNet``'s output bias set so
        that every ``alpha_i`` starts near the constant ``a`` that fits ``y_hat - b ~ a * sum_i y_i`` by least
        squares. Adam moves ``b`` by about ``lr`` a step, so from 0 it needs hundreds of steps to reach a log-odds
        floor of -10; this start saves them.
    device : str
        ``"auto"``: CUDA when available.
    progress : bool
        A tqdm bar over epochs.

    Returns
    -------
    TrainedExplainer
    """
    _check_training_tensors(inputs, concepts, y_hat, priors)
    beta = check_positive_float(beta, "beta", zero=True)
    epochs = check_positive_int(epochs, "epochs")
    batch_size = check_positive_int(batch_size, "batch_size")
    lr = check_positive_float(lr, "lr")
    weight_decay = check_positive_float(weight_decay, "weight_decay", zero=True)
    seed = check_seed(seed)
    init = check_choice(init, ["zero", "floor"], "init")
    if init == "floor" and not positive:
        raise ValueError("init='floor' starts a positive explainer (alpha, y >= 0) at its floor; use init='zero' "
                         "with positive=False.")
    if inputs.dim() != 4 and g is None:
        raise ValueError(f"inputs must be [N, C, H, W] for the default AlphaNet, got {tuple(inputs.shape)}; pass "
                         "your own g for other inputs.")
    use_priors = priors is not None and beta > 0
    if use_priors and positive and bool((priors < 0).any()):
        raise ValueError("positive=True uses the cross-entropy prior loss, which needs w >= 0: clip the priors "
                         "first (case1_priors(..., clip=True) or w.clamp(min=0)), or pass positive=False.")
    dev = resolve_device(device)
    torch.manual_seed(seed)
    if g is None:
        g = AlphaNet(inputs.shape[1], concepts.shape[1], width=width, depth=depth, positive=positive)
    else:
        _check_g_width(g.to(dev), inputs, concepts.shape[1])
    explainer = AdditiveExplainer(g, positive=positive).to(dev)
    with torch.no_grad():
        explainer.b.fill_(0.0)
        if init == "floor":
            _floor_init(explainer, concepts, y_hat)
    opt = torch.optim.Adam(explainer.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    n = len(inputs)
    rows = []
    explainer.train()
    for epoch in tqdm(range(1, epochs + 1), desc="explainer", disable=not progress, leave=False):
        lam = prior_weight(epoch, beta) if use_priors else 0.0
        order = torch.randperm(n, generator=gen)
        sums = {"distillation": 0.0, "prior": 0.0, "loss": 0.0}
        batches = 0
        for s in range(0, n, batch_size):
            idx = order[s:s + batch_size]
            if len(idx) < 2:  # BatchNorm needs two samples; the image is seen in the next epoch's order
                continue
            x, y, target = inputs[idx].to(dev), concepts[idx].to(dev), y_hat[idx].to(dev)
            alpha = explainer.alpha(x)
            dist = distillation_loss(target, alpha, y, explainer.b)
            prior = prior_loss(alpha, priors[idx].to(dev), positive=positive) if use_priors else dist * 0.0
            loss = dist + lam * prior
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sums["distillation"] += dist.item()
            sums["prior"] += prior.item()
            sums["loss"] += loss.item()
            batches += 1
        rows.append({"epoch": epoch, "lambda": lam, **{k: v / max(batches, 1) for k, v in sums.items()}})
    explainer.eval()
    config = {"beta": beta, "positive": positive, "epochs": epochs, "batch_size": batch_size, "lr": lr,
              "weight_decay": weight_decay, "seed": seed, "init": init, "priors": use_priors, "width": width, "depth": depth}
    return TrainedExplainer(explainer, pd.DataFrame(rows), beta if use_priors else 0.0, config)
