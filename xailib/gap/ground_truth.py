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
from contextlib import nullcontext

import torch
from torch import nn
from tqdm.auto import tqdm

from xailib.batching import first_supported
from xailib.checks import check_images, check_layer, check_model, check_positive_int
from xailib.layers import capture, map_output, model_state, replace_output, stop_after
from xailib.gap.gradients import check_order, layer_outputs, not_below_error, resolve_segment, select_decisions
from xailib.gap.module import Neuron, parse_targets

__all__ = ["ground_truth_contributions", "ground_truth_naive", "dataset_channel_means", "ablation_baseline", "BASELINES"]

BASELINES = ("mean", "zero")


def ablation_baseline(acts: torch.Tensor, baseline) -> torch.Tensor:
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
    check_model(model)
    image = check_images(image, model, one=True, what="image")
    check_layer(model, layer)
    upper, channels, positions = parse_targets(target, 1)
    if upper is not None:
        check_layer(model, upper)
    check_order(model, layer, upper)
    if not (isinstance(baseline, torch.Tensor) or baseline in BASELINES):
        raise ValueError(f"baseline must be one of {BASELINES} or a tensor [K] of channel means, got {baseline!r}.")
    return image, upper, channels, positions


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
    check_positive_int(chunk, "chunk", hint=" (ablated copies per forward pass)")
    segment = resolve_segment(model, layer, upper, use_segment)
    with model_state(model, train=False, requires_grad=False), torch.no_grad():
        if segment:
            acts = layer_outputs(model, image, [layer], stop=layer)[0][layer]  # [1, K, h, w]
            base = ablation_baseline(acts, baseline)

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

        runner = _AblatedRuns(model, image, layer, upper, channels, positions)
        shape = []
        with torch.enable_grad():  # unablated run from a leaf at the layer: does the decision depend on it?
            f = runner(1, lambda out: shape.append(out.shape) or out.detach().requires_grad_(True).clone())
        if not f.requires_grad:
            raise not_below_error(layer, upper)
        f = f.detach()
        if len(shape[0]) != 4:
            raise ValueError(f"Layer {layer!r} has per-image shape {tuple(shape[0][1:])}; ablation needs [K, h, w].")
        k_total = shape[0][1]
        drops = []
        for start in tqdm(range(0, k_total, chunk), disable=not progress, desc="ablations", leave=False):
            ks = torch.arange(start, min(k_total, start + chunk))
            drops.append(f - runner(len(ks), lambda out, ks=ks: _ablate(out, ablation_baseline(out, baseline), ks)))
        return torch.cat(drops)


class _AblatedRuns:
    """Scores of ``n`` ablated copies of one image: the layer's output replaced by ``fn`` (stops after ``upper``).

    Two ways, fastest first: ``"expand"`` runs the network below the layer once on the image and ``fn``
    makes the ``n`` copies; ``"rows"`` repeats the image ``n`` times. The way is chosen once, on the first
    call with ``n > 1``, by :func:`xailib.batching.first_supported`: only rows that cannot broadcast
    downstream (a concat with a branch from before the layer) move on to ``"rows"``; any other error, an
    out-of-memory error included, reaches the caller.
    """

    def __init__(self, model, image, layer, upper, channels, positions):
        self.model, self.image, self.layer, self.upper = model, image, layer, upper
        self.channels, self.positions = channels, positions
        self.way: str | None = None

    def __call__(self, n: int, fn) -> torch.Tensor:
        if n == 1:
            return self.run(n, fn, "rows")
        if self.way is None:
            self.way, out = first_supported(("expand", "rows"), lambda way: self.run(n, fn, way))
            return out
        return self.run(n, fn, self.way)

    def run(self, n: int, fn, way: str) -> torch.Tensor:
        model, layer, upper = self.model, self.layer, self.upper
        x = self.image if way == "expand" else self.image.expand(n, -1, -1, -1)
        with map_output(model, layer, fn) as mapped, \
                (capture(model, upper) if upper is not None else nullcontext()) as rec, \
                stop_after(model, upper) as stopper:
            logits = stopper.run(x)
        if not mapped.calls:
            raise not_below_error(layer, upper)
        out = logits if upper is None else rec[upper]
        pos = None if self.positions is None else self.positions.expand(n, 2)
        return select_decisions(out, self.channels.expand(n), pos, upper)


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
                (capture(model, upper) if upper is not None else nullcontext()) as rec:
            logits = model(image)
        if not seen:
            raise not_below_error(layer, upper)
        out = logits if upper is None else rec[upper]
        return select_decisions(out, channels, positions, upper)[0], seen[0]

    with model_state(model, train=False, requires_grad=False), torch.no_grad():
        with torch.enable_grad():  # unablated run from a leaf at the layer: does the decision depend on it?
            f, shape = score(lambda out: out.detach().requires_grad_(True).clone())
        if not f.requires_grad:
            raise not_below_error(layer, upper)
        f = f.detach()
        if len(shape) != 4:
            raise ValueError(f"Layer {layer!r} has per-image shape {tuple(shape[1:])}; ablation needs [K, h, w].")
        drops = []
        for k in tqdm(range(shape[1]), disable=not progress, desc="ablations (naive)", leave=False):
            kk = torch.tensor([k])
            drops.append(f - score(lambda out: _ablate(out, ablation_baseline(out, baseline), kk))[0])
        return torch.stack(drops)


def dataset_channel_means(model: nn.Module, images: torch.Tensor | Iterable[torch.Tensor], layer: str) -> torch.Tensor:
    """Mean activation of each channel of ``layer`` over images and positions: ``[K]``.

    ``images`` is a tensor ``[N, C, H, W]`` or an iterable of such batches (e.g. a DataLoader of images).
    Use it as ``baseline=`` for the data-set reading of "the average activation".
    """
    check_layer(model, layer)
    batches = [images] if isinstance(images, torch.Tensor) else images
    total, count = None, 0
    with model_state(model, train=False):
        for batch in batches:
            batch = batch[0] if isinstance(batch, (tuple, list)) else batch
            acts = layer_outputs(model, check_images(batch, model), [layer], stop=layer)[0][layer]
            s = acts.sum(dim=(0, 2, 3))
            total = s if total is None else total + s
            count += acts.shape[0] * acts.shape[2] * acts.shape[3]
    if total is None:
        raise ValueError("images is empty; give at least one batch [N, C, H, W].")
    return total / count
