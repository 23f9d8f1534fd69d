"""The concepts ``y_i`` and the prior weights ``w_i`` of the additive explainer (Chen et al., Sec. 3.1).

* **Case 1** (:func:`case1_priors`) -- the filters of an interpretable conv layer are the concepts (Eq. 5):
  ``y_i = sum_hw x_hwi`` over the layer's feature map ``x [n, H, W]``, and the prior weight is the summed Jacobian
  ``w_i = sum_hw d y_hat / d x_hwi`` (the paper's ``1/Z`` drops out of the normalisation in Eq. 4). Where
  contributions must be positive, negative priors are clipped: ``w_i <- max(w_i, 0)`` (Sec. 4.1).
* **Case 2** (:func:`case2_priors`) -- the concepts are other outputs of a network that shares a feature ``x``
  with the target: pushing ``x`` along ``Delta x = eps * d y_i / d x`` changes ``y_i`` by
  ``Delta y_i = eps ||d y_i / d x||_F^2`` and the target by ``Delta y_hat = eps (d y_hat / d x) . (d y_i / d x)``,
  so ``w_i = Delta y_hat / Delta y_i``. The paper's ``(x)`` between the two gradients is their inner product
  over every element of ``x`` (a convolution at zero shift); ``eps`` cancels to first order.
  :func:`case2_priors_reference` applies the step literally, concept by concept, and measures both changes.

Both are batched: one forward and one backward pass per batch of images, never one per concept (Case 2 uses
autograd's batched vector-Jacobian products, ``is_grads_batched=True``). On one CPU thread that buys no time
for Case 2 (``benchmarks/results/explainer.md``): at fc1 each backward pass is one small matrix product, and one
forward pass with a retained graph and one backward pass per concept does fewer operations than any batching; a
GPU, where the batched pass fills the device, is where it would pay (not measured). Case 1's one backward pass
per batch was 3-6x faster than one per image in three runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from xailib.checks import check_images, check_layer, check_model, check_positive_float, check_positive_int
from xailib.layers import leaf_at, model_state, replace_output

__all__ = ["Concepts", "case1_priors", "case1_priors_reference", "case2_priors", "case2_priors_reference"]


@dataclass
class Concepts:
    """What the explainer learns from, for ``N`` images and ``n`` concepts (all on the CPU).

    Attributes
    ----------
    y_hat : Tensor ``[N]``
        The performer's target score (before the softmax).
    concepts : Tensor ``[N, n]``
        ``y_i`` per image.
    priors : Tensor ``[N, n]``
        ``w_i`` per image.
    features : Tensor ``[N, ...]``
        The layer's output ``x`` (Case 1: the interpretable map, the explainer's input in Experiment 1;
        Case 2: the shared feature).
    names : list of str
        One name per concept.
    """

    y_hat: torch.Tensor
    concepts: torch.Tensor
    priors: torch.Tensor
    features: torch.Tensor
    names: list[str]

    def __len__(self) -> int:
        return len(self.y_hat)


def _check_output_index(out: torch.Tensor, index, what: str) -> int:
    if isinstance(index, bool) or not isinstance(index, int):
        raise TypeError(f"{what} must be an output index (int), got {type(index).__name__}.")
    if not 0 <= index < out.shape[1]:
        raise ValueError(f"{what}={index} is outside the model's {out.shape[1]} outputs (0..{out.shape[1] - 1}).")
    return index


def _scores(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    out = model(images)
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise ValueError(f"The performer must return scores [B, K], got {tuple(getattr(out, 'shape', ()))}.")
    return out


def _leaf_batches(model: nn.Module, layer: str, images: torch.Tensor, batch_size: int, hint: str):
    """``(scores [B, K], the layer's output as a leaf [B, ...])`` for every batch of ``images``; the layer must run
    once per forward pass (``hint`` says what to choose instead)."""
    for s in range(0, len(images), batch_size):
        with leaf_at(model, layer) as leaves:
            out = _scores(model, images[s:s + batch_size])
        if len(leaves) != 1:
            raise ValueError(f"Layer {layer!r} ran {len(leaves)} times in one forward pass; {hint}.")
        yield out, leaves[0]


def case1_priors(model: nn.Module, layer: str, images: torch.Tensor, target: int, *, clip: bool = True,
                 batch_size: int = 64) -> Concepts:
    """Case 1 (Eq. 5): concepts ``y_i = sum_hw x_hwi`` and priors ``w_i = sum_hw d y_hat / d x_hwi``.

    Parameters
    ----------
    model : nn.Module
        The performer (frozen for the call: eval mode, no parameter gradients; restored after).
    layer : str
        The interpretable conv layer, e.g. the masked top conv (the paper uses the mask layer's output).
    images : Tensor ``[N, C, H, W]``
    target : int
        The output whose score is ``y_hat`` (e.g. the positive class of a binary performer).
    clip : bool
        ``w_i <- max(w_i, 0)``, for the positive explainer of Experiment 1.
    batch_size : int
        Images per forward/backward pass.

    Returns
    -------
    Concepts
        ``features`` is the layer's map ``x [N, n, h, w]``; ``names`` are ``"filter <i>"``.
    """
    model = check_model(model, "performer")
    layer = check_layer(model, layer)
    images = check_images(images, model)
    batch_size = check_positive_int(batch_size, "batch_size")
    parts = []
    with model_state(model, train=False, requires_grad=False), torch.enable_grad():
        for out, x in _leaf_batches(model, layer, images, batch_size,
                                    "Case 1 needs a layer that runs once (a conv, its mask or its ReLU)"):
            if x.dim() != 4:
                raise ValueError(f"Case 1 needs a conv layer with maps [B, n, H, W]; {layer!r} gives "
                                 f"{tuple(x.shape)}. Use case2_priors for a shared dense feature.")
            t = _check_output_index(out, target, "target")
            y_hat = out[:, t]
            # images are independent (eval mode), so one backward of the batch's sum gives every image's gradient
            grad, = torch.autograd.grad(y_hat.sum(), x)
            parts.append((y_hat.detach(), x.detach().sum(dim=(2, 3)), grad.sum(dim=(2, 3)), x.detach()))
    y_hat, y, w, feats = (torch.cat([p[k] for p in parts]).cpu() for k in range(4))
    if clip:
        w = w.clamp(min=0)
    return Concepts(y_hat, y, w, feats, [f"filter {i}" for i in range(y.shape[1])])


def case1_priors_reference(model: nn.Module, layer: str, images: torch.Tensor, target: int,
                           clip: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. (5) one image and one filter at a time (a backward pass per image, the sums by Python loops over
    positions): ``(y [N, n], w [N, n])``, the literal reading of :func:`case1_priors` for tests."""
    ys, ws = [], []
    with model_state(model, train=False, requires_grad=False), torch.enable_grad():
        for i in range(len(images)):
            with leaf_at(model, layer) as leaves:
                score = model(images[i:i + 1])[0, target]
            x = leaves[0][0].detach()
            grad, = torch.autograd.grad(score, leaves[0])
            n, h, w_ = x.shape
            y_row, w_row = [], []
            for c in range(n):
                y_row.append(sum(float(x[c, a, b]) for a in range(h) for b in range(w_)))
                g = sum(float(grad[0, c, a, b]) for a in range(h) for b in range(w_))
                w_row.append(max(g, 0.0) if clip else g)
            ys.append(y_row)
            ws.append(w_row)
    return torch.tensor(ys, dtype=torch.float64), torch.tensor(ws, dtype=torch.float64)


def _concept_indices(out_dim: int, target: int, concepts) -> list[int]:
    if concepts is None:
        return [k for k in range(out_dim) if k != target]
    idx = list(concepts)
    if not idx or any(isinstance(k, bool) or not isinstance(k, int) for k in idx):
        raise TypeError(f"concepts must be a non-empty list of output indices (ints), got {concepts!r}.")
    bad = [k for k in idx if not 0 <= k < out_dim or k == target]
    if bad:
        raise ValueError(f"concepts {bad} are not valid: give output indices in 0..{out_dim - 1} other than the "
                         f"target {target}.")
    if len(set(idx)) != len(idx):
        raise ValueError(f"concepts {idx} repeat an index; give each concept once.")
    return idx


def _case2_weights(g_target: torch.Tensor, g_concepts: torch.Tensor) -> torch.Tensor:
    """``w_i = (g_t . g_i) / ||g_i||^2`` from ``g_target [B, D]`` and ``g_concepts [n, B, D]``: ``[B, n]``; 0 where
    ``g_i = 0`` (``x`` cannot move ``y_i``)."""
    dot = (g_concepts * g_target[None]).sum(-1)            # [n, B]
    sq = g_concepts.pow(2).sum(-1)                          # [n, B]
    return torch.where(sq > 0, dot / torch.where(sq > 0, sq, torch.ones_like(sq)), torch.zeros_like(dot)).T


def case2_priors(model: nn.Module, layer: str, images: torch.Tensor, target: int, concepts: Sequence[int] | None = None,
                 *, names: Sequence[str] | None = None, batch_size: int = 64) -> Concepts:
    """Case 2 (Sec. 3.1): ``w_i = Delta y_hat / Delta y_i`` for ``Delta x = eps * d y_i / d x`` on a shared feature.

    To first order ``w_i = <d y_hat/dx, d y_i/dx> / ||d y_i/dx||_F^2`` (``eps`` cancels). The Jacobian rows of the
    target and of every concept come from one batched backward pass per batch of images.

    Parameters
    ----------
    model : nn.Module
        A network with several outputs ``[B, K]`` (e.g. multi-label attribute scores), frozen for the call.
    layer : str
        The shared feature ``x`` (the paper: the first fully connected layer of a VGG-16).
    images : Tensor ``[N, C, H, W]``
    target : int
        The output explained, ``y_hat``.
    concepts : sequence of int, optional
        The outputs used as concepts ``y_i``; by default every other output.
    names : sequence of str, optional
        Names of the model's ``K`` outputs, to name the concepts.
    batch_size : int

    Returns
    -------
    Concepts
        ``concepts`` are the chosen outputs' scores, ``features`` the shared feature ``x [N, ...]``.
    """
    model = check_model(model)
    layer = check_layer(model, layer)
    images = check_images(images, model)
    batch_size = check_positive_int(batch_size, "batch_size")
    parts = []
    idx = None
    with model_state(model, train=False, requires_grad=False), torch.enable_grad():
        for out, leaf in _leaf_batches(model, layer, images, batch_size,
                                       "choose a layer that runs once as the shared feature"):
            t = _check_output_index(out, target, "target")
            if idx is None:
                idx = _concept_indices(out.shape[1], t, concepts)
            rows = [t] + idx                                            # the target's Jacobian row, then the concepts'
            picked = out[:, rows]                                       # [B, m]
            m, b = len(rows), len(picked)
            eye = torch.eye(m, dtype=picked.dtype, device=picked.device)[:, None, :].expand(m, b, m)
            jac, = torch.autograd.grad(picked, leaf, grad_outputs=eye, is_grads_batched=True)  # [m, B, ...]
            jac = jac.flatten(2)
            parts.append((out[:, t].detach(), out[:, idx].detach(), _case2_weights(jac[0], jac[1:]),
                          leaf.detach()))
    y_hat, y, w, feats = (torch.cat([p[k] for p in parts]).cpu() for k in range(4))
    label = (lambda k: names[k]) if names is not None else (lambda k: f"output {k}")
    return Concepts(y_hat, y, w, feats, [label(k) for k in idx])


def case2_priors_reference(model: nn.Module, layer: str, images: torch.Tensor, target: int, concepts: Sequence[int],
                           eps: float = 1e-3) -> torch.Tensor:
    """Case 2 literally: for each image and concept, a backward pass for ``d y_i / d x``, then a forward pass with
    ``x + eps * d y_i / d x`` in place of ``x``, and ``w_i = (y_hat' - y_hat) / (y_i' - y_i)``: ``[N, n]``
    (float64 arithmetic on the model's outputs; 0 where ``y_i`` does not move)."""
    eps = check_positive_float(eps, "eps")
    rows = []
    with model_state(model, train=False, requires_grad=False), torch.enable_grad():
        for i in range(len(images)):
            image = images[i:i + 1]
            row = []
            for k in concepts:
                with leaf_at(model, layer) as leaves:
                    out = model(image)
                grad, = torch.autograd.grad(out[0, k], leaves[0])
                step = eps * grad.detach()
                with torch.no_grad(), replace_output(model, layer, lambda a, step=step: a + step):
                    moved = model(image)
                out = out.detach()
                d_concept = float(moved[0, k]) - float(out[0, k])
                d_target = float(moved[0, target]) - float(out[0, target])
                row.append(d_target / d_concept if d_concept != 0 else 0.0)
            rows.append(row)
    return torch.tensor(rows, dtype=torch.float64)
