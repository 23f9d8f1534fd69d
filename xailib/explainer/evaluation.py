"""The evaluation metrics of the additive explainer (Chen et al., Sec. 4.1 and the supplement).

* :func:`contribution_entropy` -- ``H(c)`` of ``c_i = |alpha_i y_i| / sum_j |alpha_j y_j|`` per image, in nats
  (the paper's Table 1; a biased explainer uses few concepts and has a low entropy).
* :func:`best_threshold` / :func:`threshold_accuracy` -- the explainer's classification accuracy with the
  decision ``sum_i alpha_i y_i + b > tau``, ``tau`` chosen to maximise the accuracy (the supplement's
  "Details in Experiment 1"; Table 2).
* :func:`relative_deviation` -- ``|y_hat_I - sum_i alpha_I,i y_I,i - b| / (max_I' y_hat_I' - min_I' y_hat_I')``
  per image (Table 2).
* :func:`part_contributions` -- ``Contri_p = sum_{i in Omega_p} alpha_i y_i``, the contributions of the filters
  assigned to part ``p`` (Sec. 4.1).
* :func:`part_removal_effects` -- ``Delta y_p``: the change of the performer's score when every activation of
  part ``p``'s filters is removed (set to 0), all parts in one batched forward pass.
* :func:`ground_truth_contributions` -- ``y*_p = y Delta y_p / sum_p' Delta y_p'``.
* :func:`part_contribution_error` -- ``E_I[|Contri_p - y*_p|] / E_I[y]`` per part (Table 3).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from xailib.checks import check_images, check_layer, check_model, check_positive_int
from xailib.layers import map_output, model_state

__all__ = [
    "best_threshold",
    "contribution_entropy",
    "ground_truth_contributions",
    "part_contribution_error",
    "part_contributions",
    "part_removal_effects",
    "relative_deviation",
    "threshold_accuracy",
]


def _matrix(x, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or not x.is_floating_point():
        raise ValueError(f"{name} must be a float tensor [N, n] (images x concepts), got "
                         f"{tuple(getattr(x, 'shape', ())) if isinstance(x, torch.Tensor) else type(x).__name__}.")
    return x


def _vector(x, name: str, n: int | None = None) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.dim() != 1 or (n is not None and len(x) != n):
        raise ValueError(f"{name} must be a vector [N]" + (f" with N = {n}" if n is not None else "")
                         + f", got {tuple(x.shape)}.")
    return x


def contribution_entropy(contributions: torch.Tensor) -> torch.Tensor:
    """The entropy (nats) of each image's contribution distribution ``c_i = |alpha_i y_i| / sum_j |alpha_j y_j|``.

    Parameters
    ----------
    contributions : Tensor ``[N, n]``
        ``alpha_i y_i`` per image and concept.

    Returns
    -------
    Tensor ``[N]``
        ``-sum_i c_i log c_i`` (``0 log 0 = 0``); between 0 (one concept) and ``log n`` (all equal). NaN for an
        image whose contributions are all 0 (no distribution).
    """
    a = _matrix(contributions, "contributions").abs().double()
    total = a.sum(1, keepdim=True)
    c = a / torch.where(total > 0, total, torch.ones_like(total))
    h = -(torch.where(c > 0, c * torch.log(torch.where(c > 0, c, torch.ones_like(c))), torch.zeros_like(c))).sum(1)
    return torch.where(total[:, 0] > 0, h, torch.full_like(h, float("nan"))).float()


def _binary_labels(labels, n: int) -> torch.Tensor:
    labels = _vector(labels, "labels", n)
    if labels.dtype == torch.bool:
        return labels
    if not bool(((labels == 0) | (labels == 1)).all()):
        raise ValueError("labels must be binary (0/1 or bool): 1 for the positive class the score stands for.")
    return labels.bool()


def best_threshold(scores, labels) -> tuple[float, float]:
    """The ``tau`` that maximises the accuracy of ``scores > tau`` against binary ``labels``, and that accuracy.

    Every cut between two neighbouring distinct scores is tried (one sort and two cumulative sums); ``tau`` is
    the midpoint of the best gap, or 1 below the lowest score when calling every image positive is best. On ties
    of accuracy the ``tau`` closest to 0 wins (the paper's ``tau ~ 0``).

    Parameters
    ----------
    scores : Tensor ``[N]``
    labels : Tensor ``[N]``, 0/1 or bool

    Returns
    -------
    (tau, accuracy) : (float, float)
    """
    s = _vector(scores, "scores").double().cpu()
    y = _binary_labels(labels, len(s)).cpu()
    if len(s) == 0:
        raise ValueError("best_threshold needs at least one score.")
    order = torch.argsort(s)
    s, y = s[order], y[order]
    n = len(s)
    # cut after k sorted scores (k = 0..n): negatives below the cut right, positives at or above it right
    neg_below = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum((~y).long(), 0)])
    pos_above = y.long().sum() - torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(y.long(), 0)])
    correct = (neg_below + pos_above).double()
    cuts = torch.cat([s[:1] - 1.0, (s[:-1] + s[1:]) / 2, s[-1:] + 1.0])
    allowed = torch.ones(n + 1, dtype=torch.bool)
    allowed[1:n] = s[1:] > s[:-1]                      # only cut between distinct scores
    correct = torch.where(allowed, correct, torch.full_like(correct, -1.0))
    best = correct.max()
    candidates = torch.nonzero(correct == best).flatten()
    k = int(candidates[torch.argmin(cuts[candidates].abs())])
    return float(cuts[k]), float(best) / n


def threshold_accuracy(scores, labels, tau: float) -> float:
    """The accuracy of ``scores > tau`` against binary ``labels``."""
    s = _vector(scores, "scores")
    y = _binary_labels(labels, len(s))
    return float(((s > tau) == y.to(s.device)).float().mean())


def relative_deviation(y_hat, explained) -> torch.Tensor:
    """``|y_hat_I - explained_I| / (max_I' y_hat_I' - min_I' y_hat_I')`` per image: ``[N]``.

    Parameters
    ----------
    y_hat : Tensor ``[N]``
        The performer's scores.
    explained : Tensor ``[N]``
        The explainer's ``sum_i alpha_i y_i + b``.
    """
    y_hat = _vector(y_hat, "y_hat").double()
    explained = _vector(explained, "explained", len(y_hat)).double().to(y_hat.device)
    spread = y_hat.max() - y_hat.min()
    if not bool(spread > 0):
        raise ValueError("The performer's scores are all equal, so the relative deviation (divided by their range) "
                         "is undefined; evaluate on images the performer scores differently.")
    return ((y_hat - explained).abs() / spread).float()


def _check_groups(groups: Mapping[str, Sequence[int]], n: int) -> tuple[list[str], torch.Tensor]:
    if not isinstance(groups, Mapping) or not groups:
        raise TypeError("groups must map each part name to the indices of its filters, e.g. {'head': [0, 4]}.")
    names, member = [], torch.zeros(len(groups), n, dtype=torch.bool)
    for p, (name, idx) in enumerate(groups.items()):
        idx = list(idx)
        if any(isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n for i in idx):
            raise ValueError(f"Part {name!r}: filter indices must be ints in 0..{n - 1}, got {idx}.")
        member[p, idx] = True
        names.append(str(name))
    if bool((member.sum(0) > 1).any()):
        twice = torch.nonzero(member.sum(0) > 1).flatten().tolist()
        raise ValueError(f"Filters {twice} are assigned to more than one part; assign each filter to one part.")
    return names, member


def part_contributions(contributions: torch.Tensor, groups: Mapping[str, Sequence[int]]) -> torch.Tensor:
    """``Contri_p = sum_{i in Omega_p} alpha_i y_i`` (Sec. 4.1): ``[N, P]`` in the order of ``groups``.

    Parameters
    ----------
    contributions : Tensor ``[N, n]``
    groups : mapping part name -> filter indices ``Omega_p`` (disjoint; unassigned filters count for no part)
    """
    c = _matrix(contributions, "contributions")
    _, member = _check_groups(groups, c.shape[1])
    return c @ member.to(c).T


def part_removal_effects(model: nn.Module, layer: str, images: torch.Tensor, target: int,
                         groups: Mapping[str, Sequence[int]], *, batch_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """``Delta y_p = y - y(without part p's filters)`` for every image and part (Sec. 4.1, the ground truth of
    Table 3).

    "Removing all neural activations of the filters of part ``p``" is read as setting those channels of
    ``layer``'s output to 0. Each batch runs the layers below ``layer`` once; its output is expanded to ``P + 1``
    copies (intact, then one per part with that part's channels zeroed) for the layers above.

    Parameters
    ----------
    model : nn.Module
        The performer (eval mode for the call).
    layer : str
        The layer whose channels are the filters (Case 1's interpretable layer).
    images : Tensor ``[N, C, H, W]``
    target : int
        The output whose score is ``y``.
    groups : mapping part name -> filter indices
    batch_size : int

    Returns
    -------
    (y, delta) : Tensor ``[N]``, Tensor ``[N, P]`` on the CPU
    """
    model = check_model(model, "performer")
    layer = check_layer(model, layer)
    images = check_images(images, model)
    batch_size = check_positive_int(batch_size, "batch_size")
    ys, deltas = [], []
    member = None
    with model_state(model, train=False), torch.no_grad():
        for s in range(0, len(images), batch_size):
            x = images[s:s + batch_size]
            b = len(x)

            def expand(acts: torch.Tensor) -> torch.Tensor:
                nonlocal member
                if member is None:
                    member = _check_groups(groups, acts.shape[1])[1].to(acts.device)
                keep = torch.cat([torch.ones(1, acts.shape[1], dtype=torch.bool, device=acts.device), ~member])
                shape = (keep.shape[0], 1, acts.shape[1]) + (1,) * (acts.dim() - 2)
                return (acts[None] * keep.view(shape).to(acts.dtype)).flatten(0, 1)    # [(P+1) B, n, ...]

            with map_output(model, layer, expand) as hook:
                out = model(x)
            if hook.calls != 1:
                raise ValueError(f"Layer {layer!r} ran {hook.calls} times in one forward pass; give a layer that runs "
                                 "once.")
            if not 0 <= target < out.shape[1]:
                raise ValueError(f"target={target} is outside the model's {out.shape[1]} outputs.")
            scores = out[:, target].view(-1, b)                                          # [P+1, B]
            ys.append(scores[0])
            deltas.append((scores[0][None] - scores[1:]).T)
    return torch.cat(ys).cpu(), torch.cat(deltas).cpu()


def ground_truth_contributions(y: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """``y*_p = y Delta y_p / sum_p' Delta y_p'`` (Sec. 4.1): ``[N, P]``; NaN for an image whose removal effects
    sum to 0 (the rule then has no answer)."""
    delta = _matrix(delta, "delta")
    y = _vector(y, "y", len(delta)).to(delta)
    total = delta.sum(1, keepdim=True)
    return torch.where(total != 0, y[:, None] * delta / torch.where(total != 0, total, torch.ones_like(total)),
                       torch.full_like(delta, float("nan")))


def part_contribution_error(contri: torch.Tensor, y_star: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``E_I[|Contri_p - y*_p|] / E_I[y]`` per part (Table 3): ``[P]``, over the images where ``y*`` is defined.

    Parameters
    ----------
    contri : Tensor ``[N, P]``
        :func:`part_contributions` of the explainer.
    y_star : Tensor ``[N, P]``
        :func:`ground_truth_contributions`.
    y : Tensor ``[N]``
        The performer's scores.
    """
    contri = _matrix(contri, "contri")
    y_star = _matrix(y_star, "y_star")
    if contri.shape != y_star.shape:
        raise ValueError(f"contri {tuple(contri.shape)} and y_star {tuple(y_star.shape)} must both be [N, P].")
    y = _vector(y, "y", len(contri)).to(contri)
    ok = ~y_star.isnan().any(1)
    if not bool(ok.any()):
        raise ValueError("No image has a defined ground truth y* (every image's removal effects sum to 0).")
    mean_y = y[ok].mean()
    if not bool(mean_y != 0):
        raise ValueError("The mean performer score is 0, so the error (divided by it) is undefined.")
    return (contri[ok] - y_star[ok].to(contri)).abs().mean(0) / mean_y
