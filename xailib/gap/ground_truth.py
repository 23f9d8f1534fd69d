"""Ground-truth channel contributions by ablation (Sec. 4.1), the reference gAP is checked against.

    "given an input image I, let f^{l+1} be a decision score at the (l+1)-th layer. f^^{l+1} denotes
    the decision score when setting the k-th feature channel in the l-th layer to the average
    activation. The score drop alpha^_k = f^{l+1} - f^^{l+1} denotes the k-th channel's ground truth
    contribution to this decision."  (Sec. 4.1)

"The average activation" is, for the given image, the mean of channel ``k``'s map over its ``h*w``
positions (``baseline="mean"``, the default): the definition is per image and the same averaging as
Eq. (4). Other readings are available: ``"zero"`` (remove the channel), or a tensor ``[K]`` of means
over a data set (see :func:`dataset_channel_means`).

Caveat: if layer ``l`` reaches the decision only through global average pooling and linear layers
(e.g. the last stage of a ResNet and the class scores), replacing a channel by its spatial mean
leaves the pooled value unchanged and every drop is exactly 0; use ``"zero"`` or data-set means there.

:func:`ground_truth_contributions` ablates all ``K`` channels batched (``K`` ablated copies, in chunks),
running only the network after layer ``l`` (``model.run_segment``) when the model has it, else full
forwards that stop after the decision layer; :func:`ground_truth_naive` reruns the whole network once
per channel (for the benchmark).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from tqdm.auto import tqdm

from xailib.layers import capture, check_layers, model_state, replace_output
from xailib.gap.module import (
    Neuron,
    _model_device,
    _not_below,
    _use_segment,
    check_images,
    check_order,
    layer_outputs,
    map_output,
    parse_targets,
    select_decisions,
    stop_after,
)

__all__ = ["ground_truth_contributions", "ground_truth_naive", "dataset_channel_means", "BASELINES"]

BASELINES = ("mean", "zero")


def _baseline(acts: torch.Tensor, baseline) -> torch.Tensor:
    """Replacement values ``[B, K, h, w]`` for the channels of ``acts: [B, K, h, w]``."""
    if isinstance(baseline, str):
        if baseline == "mean":
            return acts.mean(dim=(2, 3), keepdim=True).expand_as(acts)
        if baseline == "zero":
            return torch.zeros_like(acts)
    elif isinstance(baseline, torch.Tensor):
        b = baseline.to(acts)
        if b.shape == acts.shape[1:2]:
            return b.view(1, -1, 1, 1).expand_as(acts)
        if b.shape == acts.shape[1:]:
            return b.unsqueeze(0).expand_as(acts)
        raise ValueError(f"A baseline tensor must be [K] or [K, h, w] = {tuple(acts.shape[1:])}, got {tuple(b.shape)}.")
    raise ValueError(f"baseline must be one of {BASELINES} or a tensor [K] of channel means, got {baseline!r}.")


def _ablate(acts: torch.Tensor, base: torch.Tensor, ks: torch.Tensor) -> torch.Tensor:
    """``len(ks)`` copies of ``acts: [1, K, h, w]``; copy i has channel ``ks[i]`` set to ``base``."""
    onehot = torch.nn.functional.one_hot(ks.to(acts.device), acts.shape[1]).bool()[:, :, None, None]  # [c, K, 1, 1]
    return torch.where(onehot, base, acts)


def _prepare(model, image, target, layer, baseline):
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    image = check_images(image, one=True, what="image").to(_model_device(model))
    check_layers(model, layer)
    upper, channels, positions = parse_targets(target, 1)
    if upper is not None:
        check_layers(model, upper)
    check_order(model, layer, upper)
    if not (isinstance(baseline, torch.Tensor) or baseline in BASELINES):
        raise ValueError(f"baseline must be one of {BASELINES} or a tensor [K] of channel means, got {baseline!r}.")
    return image, upper, channels, positions


def _check_chunk(chunk):
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk <= 0:
        raise ValueError(f"chunk must be a positive int (ablated copies per forward pass), got {chunk!r}.")


def ground_truth_contributions(
    model: nn.Module,
    image: torch.Tensor,
    target: int | Neuron,
    layer: str,
    baseline: str | torch.Tensor = "mean",
    chunk: int = 64,
    use_segment: bool | str = "auto",
    progress: bool = False,
) -> torch.Tensor:
    """Score drop ``alpha^_k = f - f^_k`` for every channel ``k`` of ``layer`` (Sec. 4.1), batched.

    Parameters
    ----------
    model : nn.Module
        Runs in eval mode for the call (mode restored).
    image : Tensor ``[1, C, H, W]``
    target : int or Neuron
        The decision: a class score before softmax, or ``Neuron(upper_layer, k', y, x)``.
    layer : str
        The layer ``l`` whose channels are ablated; must lie below the decision.
    baseline : {"mean", "zero"} or Tensor ``[K]`` / ``[K, h, w]``
        Value a channel is set to: its spatial mean on this image (default), zero, or given values.
    chunk : int
        Ablated copies per forward pass.
    use_segment : {"auto", True, False}
        Run only ``model.run_segment(acts, start=layer, stop=upper)`` when available.

    Returns
    -------
    Tensor ``[K]``
        Ground-truth contribution of each channel (float, on the model's device).
    """
    image, upper, channels, positions = _prepare(model, image, target, layer, baseline)
    _check_chunk(chunk)
    segment = _use_segment(model, layer, upper, use_segment)
    with model_state(model, train=False, requires_grad=False), torch.no_grad():
        if segment:
            acts = layer_outputs(model, image, [layer], stop=layer)[0][layer]  # [1, K, h, w]
            base = _baseline(acts, baseline)

            def scores_of(batch: torch.Tensor) -> torch.Tensor:
                out = model.run_segment(batch, start=layer, stop=upper)
                n = batch.shape[0]
                return select_decisions(out, channels.expand(n), None if positions is None else positions.expand(n, 2),
                                        upper)

            f = scores_of(acts)
            k_total = acts.shape[1]
            drops = []
            for start in tqdm(range(0, k_total, chunk), disable=not progress, desc="ablations", leave=False):
                ks = torch.arange(start, min(k_total, start + chunk))
                drops.append(f - scores_of(_ablate(acts, base[:1], ks)))
            return torch.cat(drops)

        state = {"expand": True}

        def run(n: int, fn) -> torch.Tensor:
            """Score of ``n`` ablated copies: layer output replaced by ``fn`` (stops after ``upper``).

            The network below the layer runs once on the image and ``fn`` makes the ``n`` copies; if
            rows cannot broadcast downstream (a concat with a branch from before the layer), the image
            is repeated ``n`` times instead.
            """
            for expand in ([True, False] if state["expand"] and n > 1 else [False]):
                try:
                    with map_output(model, layer, fn) as mapped, \
                            (capture(model, upper) if upper is not None else _nothing()) as rec, \
                            stop_after(model, upper) as stopper:
                        logits = stopper.run(image if expand else image.expand(n, -1, -1, -1))
                    break
                except RuntimeError:
                    if not expand:
                        raise
                    state["expand"] = False
            if not mapped.calls:
                raise _not_below(layer, upper)
            out = logits if upper is None else rec[upper]
            return select_decisions(out, channels.expand(n), None if positions is None else positions.expand(n, 2),
                                    upper)

        shape = []
        with torch.enable_grad():  # unablated run from a leaf at the layer: does the decision depend on it?
            f = run(1, lambda out: shape.append(out.shape) or out.detach().requires_grad_(True).clone())
        if not f.requires_grad:
            raise _not_below(layer, upper)
        f = f.detach()
        if len(shape[0]) != 4:
            raise ValueError(f"Layer {layer!r} has per-image shape {tuple(shape[0][1:])}; ablation needs [K, h, w].")
        k_total = shape[0][1]
        drops = []
        for start in tqdm(range(0, k_total, chunk), disable=not progress, desc="ablations", leave=False):
            ks = torch.arange(start, min(k_total, start + chunk))
            drops.append(f - run(len(ks), lambda out, ks=ks: _ablate(out, _baseline(out, baseline), ks)))
        return torch.cat(drops)


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return None


def ground_truth_naive(
    model: nn.Module,
    image: torch.Tensor,
    target: int | Neuron,
    layer: str,
    baseline: str | torch.Tensor = "mean",
    progress: bool = False,
) -> torch.Tensor:
    """The same score drops as :func:`ground_truth_contributions`, by ``K + 1`` full forward passes of
    one image (one per ablated channel, plus the unablated one). Slow; for tests and the benchmark.

    Returns
    -------
    Tensor ``[K]``
    """
    image, upper, channels, positions = _prepare(model, image, target, layer, baseline)

    def score(fn) -> torch.Tensor:
        seen = []

        def wrapped(out):
            seen.append(out.shape)
            return fn(out)

        with replace_output(model, layer, wrapped), \
                (capture(model, upper) if upper is not None else _nothing()) as rec:
            logits = model(image)
        if not seen:
            raise _not_below(layer, upper)
        out = logits if upper is None else rec[upper]
        return select_decisions(out, channels, positions, upper)[0], seen[0]

    with model_state(model, train=False, requires_grad=False), torch.no_grad():
        with torch.enable_grad():  # unablated run from a leaf at the layer: does the decision depend on it?
            f, shape = score(lambda out: out.detach().requires_grad_(True).clone())
        if not f.requires_grad:
            raise _not_below(layer, upper)
        f = f.detach()
        if len(shape) != 4:
            raise ValueError(f"Layer {layer!r} has per-image shape {tuple(shape[1:])}; ablation needs [K, h, w].")
        drops = []
        for k in tqdm(range(shape[1]), disable=not progress, desc="ablations (naive)", leave=False):
            kk = torch.tensor([k])
            drops.append(f - score(lambda out: _ablate(out, _baseline(out, baseline), kk))[0])
        return torch.stack(drops)


def dataset_channel_means(model: nn.Module, images: torch.Tensor | Iterable[torch.Tensor], layer: str) -> torch.Tensor:
    """Mean activation of each channel of ``layer`` over images and positions: ``[K]``.

    ``images`` is a tensor ``[N, C, H, W]`` or an iterable of such batches (e.g. a DataLoader of images).
    Use it as ``baseline=`` for the data-set reading of "the average activation".
    """
    check_layers(model, layer)
    batches = [images] if isinstance(images, torch.Tensor) else images
    total, count = None, 0
    with model_state(model, train=False):
        for batch in batches:
            batch = batch[0] if isinstance(batch, (tuple, list)) else batch
            acts = layer_outputs(model, check_images(batch).to(_model_device(model)), [layer], stop=layer)[0][layer]
            s = acts.sum(dim=(0, 2, 3))
            total = s if total is None else total + s
            count += acts.shape[0] * acts.shape[2] * acts.shape[3]
    if total is None:
        raise ValueError("images is empty; give at least one batch [N, C, H, W].")
    return total / count
