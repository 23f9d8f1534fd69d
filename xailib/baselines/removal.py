"""Channel removal: accuracy after removing each image's most important channels, for any channel method.

* :func:`channel_removal_curve` -- rank the channels of a layer per image with a registered channel method
  (:func:`~xailib.baselines.attribute`, for the class the unmodified model predicts), remove the top ``N``
  and classify again, for several ``N`` (the gAP paper's Fig. 9, "Comparison with individual-based methods").
* :func:`remove_channels` -- "removing" a channel sets it to its average activation on that image (its
  spatial mean; ``ablation="mean"``), the definition the gAP paper gives in its Sec. 4.1, or to zero.
* ``Random`` -- a registered channel method: uniform random scores (seeded), i.e. a random ranking, the
  control of the test.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from xailib.baselines.registry import available, get_method, register, run_method, split_options
from xailib.batching import predict
from xailib.checks import (
    check_choice,
    check_images,
    check_layers,
    check_methods,
    check_model,
    check_positive_int,
    check_seed,
    check_targets,
    model_device,
)
from xailib.layers import model_state, replace_output

__all__ = ["ABLATIONS", "remove_channels", "channel_removal_curve", "random_scores"]

#: How a removed channel is replaced: its spatial mean on the image (the gAP paper's Sec. 4.1), or zero.
ABLATIONS: tuple[str, ...] = ("mean", "zero")


def _layer_channels(model: nn.Module, layer: str, image: torch.Tensor) -> int:
    shapes = []
    with replace_output(model, layer, lambda o: shapes.append(o.shape) or o):
        model(image)
    if not shapes or len(shapes[0]) != 4:
        raise ValueError(f"Layer {layer!r} must output a conv feature map [B, K, h, w]; got {shapes[:1]}. Choose a "
                         "conv layer or block, e.g. one of model.stage_names.")
    return int(shapes[0][1])


def random_scores(model, images, targets, layer, *, seed: int = 0):
    """Uniform random scores ``[B, K]`` in [0, 1) (a random ranking of the channels), from a generator seeded with ``seed``.

    The same seed gives the same scores for every layer of the same width; the targets are not used.
    """
    seed = check_seed(seed)
    with torch.no_grad(), model_state(model, train=False):
        k = _layer_channels(model, layer, images[:1].to(model_device(model)))
    return torch.rand(images.shape[0], k, generator=torch.Generator().manual_seed(seed))


register("Random", random_scores, kind="channel")


def remove_channels(acts: torch.Tensor, scores: torch.Tensor, n: int, ablation: str = "mean") -> torch.Tensor:
    """Remove each image's top-``n`` channels by ``scores``: ``acts: [B, K, h, w]``, ``scores: [B, K]`` -> same shape.

    ``ablation="mean"`` sets a removed channel to its spatial mean on that image (the gAP paper's Sec. 4.1
    "average activation"), ``"zero"`` to 0. Ties in score go to the lower channel index.
    """
    check_choice(ablation, ABLATIONS, "ablation")
    if acts.dim() != 4 or scores.shape != acts.shape[:2]:
        raise ValueError(f"acts must be [B, K, h, w] and scores [B, K]; got {tuple(acts.shape)}, {tuple(scores.shape)}"
                         ". Remove channels of a conv layer or block.")
    n = min(check_positive_int(n, "n", zero=True), acts.shape[1])
    order = torch.sort(scores.to(acts.device), dim=1, descending=True, stable=True).indices[:, :n]
    mask = torch.zeros(acts.shape[:2], dtype=torch.bool, device=acts.device)
    mask.scatter_(1, order, True)
    base = acts.mean(dim=(2, 3), keepdim=True) if ablation == "mean" else torch.zeros_like(acts[:, :, :1, :1])
    return torch.where(mask[:, :, None, None], base.expand_as(acts), acts)


def channel_removal_curve(
    model: nn.Module,
    images: torch.Tensor,
    labels,
    layers: str | Sequence[str],
    methods: Sequence[str] = ("Conductance", "InternalInfluence", "LRP", "Random"),
    n_values: Sequence[int] = (0, 1, 2, 4, 8, 16),
    ablation: str = "mean",
    *,
    batch_size: int = 64,
    progress: bool = False,
    **options,
) -> pd.DataFrame:
    """Accuracy after removing the top-N channels of a layer, per channel method (the gAP paper's Fig. 9).

    For each image, the channels of ``layer`` are ranked by the method's scores for the class the unmodified
    model predicts; the top ``N`` are removed (:func:`remove_channels`) and the images are classified again.

    Parameters
    ----------
    model : nn.Module
        Never modified; no hook is left on it.
    images : Tensor ``[B, C, H, W]``
    labels : LongTensor ``[B]``
        True classes (accuracy is measured against them).
    layers : str or sequence of str
        Conv layers (e.g. ``model.stage_names[2:]``).
    methods : sequence of str
        Registered channel methods (:func:`~xailib.baselines.available` ``("channel")``), e.g. ``"gAP"``.
    n_values : sequence of int
        Numbers of channels removed (0 = the unmodified model).
    ablation : {"mean", "zero"}
    batch_size : int
        Images per forward pass of the removal, and per call of each method that batches.
    **options
        Options of the methods (``n_steps`` of Conductance and InternalInfluence, ``seed`` of Random, ...);
        each goes to the methods that take it (:func:`split_options`).

    Returns
    -------
    DataFrame
        One row per (layer, method, N): ``layer``, ``method``, ``n_removed``, ``accuracy``, ``kept_prediction``
        (fraction of images whose prediction is unchanged), ``score_seconds`` (time to score the channels of all
        images with the method).
    """
    check_model(model)
    images = check_images(images, model, move=False)
    layers = check_layers(model, layers)
    methods = check_methods(methods, available("channel"), "channel method")
    check_choice(ablation, ABLATIONS, "ablation")
    n_values = [check_positive_int(n, "each of n_values", zero=True) for n in n_values]
    if not n_values:
        raise ValueError("n_values must hold at least one number of channels to remove, e.g. (0, 1, 2, 4).")
    batch_size = check_positive_int(batch_size, "batch_size")
    per_method = split_options(methods, "channel", dict(options, batch_size=batch_size))
    labels = check_targets(labels, images.shape[0], model=model, images=images, what="label", allow_predicted=False)
    dev = model_device(model)
    pred = predict(model, images)
    rows = []
    bar = tqdm(total=len(layers) * len(methods), disable=not progress, desc="channel removal")
    for layer in layers:
        for meth in methods:
            t0 = time.perf_counter()
            scores = run_method(get_method(meth, "channel"), model, images, pred, layer, per_method[meth])
            secs = time.perf_counter() - t0
            for n in n_values:
                new = _predict_removed(model, images, layer, scores, n, ablation, batch_size, dev)
                rows.append({"layer": layer, "method": meth, "n_removed": n,
                             "accuracy": float((new == labels).float().mean()),
                             "kept_prediction": float((new == pred).float().mean()), "score_seconds": secs})
            bar.update(1)
    bar.close()
    return pd.DataFrame(rows)


@torch.no_grad()
def _predict_removed(model, images, layer, scores, n, ablation, batch_size, dev) -> torch.Tensor:
    preds = []
    with model_state(model, train=False):
        for i in range(0, images.shape[0], batch_size):
            s = scores[i:i + batch_size]
            with replace_output(model, layer, lambda a, s=s: remove_channels(a, s, n, ablation)):
                preds.append(model(images[i:i + batch_size].to(dev)).argmax(1).cpu())
    return torch.cat(preds)
