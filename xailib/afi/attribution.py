"""AfI feature attribution and the class meta-detectors (Sec. 3.1.2 and the first step of Sec. 3.2, Eqs. 6-9).

Paper: "Towards Global Explanations of Convolutional Neural Networks with Concept Attribution" (AfI, Wu et al.).
Given the global feature occluder ``delta*_k`` of each class ``k`` (learned by :mod:`xailib.afi.occluder`; here
it is an input, ``occluders: [K, C, H, W]``), for every neuron ``j`` of a layer ``l`` with activations
``f_l(x): [C_l, h, w]`` (or ``[C_l]`` for a dense layer):

* Eq. (6)  feature importance  ``s_l^j = 1/N sum_i (f_l(x_i)[j] - f_l(x_i - delta*)[j])``  over the N images of
  the class (:func:`feature_importance`, ``.scores``);
* Eq. (7)  FIS                 ``s_l^j <- max(s_l^j, 0)``                                   (``.fis``);
* Eq. (8)  channel importance  ``w_l^c = 1/B sum_{j in P_l^c} s_l^j``, ``B = max_c`` of the sums, so that the
  top channel of each class and layer gets 1 (:func:`channel_importance`);
* Eq. (9)  meta-detector       ``f_l = sum_c w_l^c A_l^c``                                   (:func:`meta_detector`).

The occluded image is ``(x - delta).clamp(lo, hi)`` with ``(lo, hi) = input_range`` (the last condition of
Eq. 4 asks ``x - delta`` to stay a valid input; the occluder module uses the same convention). Our models take
images in ``[0, 1]`` (they normalise internally), so ``input_range=(0, 1)`` by default, where the paper writes
``[-1, 1]``.

For the distillation test of Sec. 4.2 (Table 2, "Gradient-based"), :func:`gradient_feature_importance` is the
TCAV-style baseline: the class mean of ``dZ[y]/df_l(x)``, clipped at 0 like Eq. (7).

Fast paths run every layer in one forward pass per batch (two for Eq. 6: clean and occluded images), with the
hooks of :class:`xailib.layers.capture`; the ``*_reference`` functions are literal loops over images and neurons
that the tests hold the fast paths to.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from xailib.checks import (PREDICTED, check_choice, check_class_scores, check_images, check_in_range,
                           check_input_range, check_layers, check_model, check_positive_int, check_targets,
                           model_device)
from xailib.layers import capture, model_state

__all__ = [
    "FeatureImportance",
    "feature_importance",
    "feature_importance_reference",
    "gradient_feature_importance",
    "gradient_feature_importance_reference",
    "channel_importance",
    "channel_importance_reference",
    "meta_maps",
    "meta_detector",
    "meta_detector_reference",
    "check_occluders",
    "check_cis",
    "occlude",
]


# --------------------------------------------------------------------------------------------------
# Results and validation
# --------------------------------------------------------------------------------------------------


@dataclass
class FeatureImportance:
    """Per-class, per-neuron importance of ``K`` classes at several layers.

    Attributes
    ----------
    scores : dict str -> Tensor ``[K, *shape]``
        The raw signed scores: ``s_l`` of Eq. (6) for ``method="afi"``, the class-mean gradient for
        ``method="gradient"``. ``shape`` is the layer's activation without the batch axis: ``[C, h, w]`` for a
        conv layer, ``[C]`` for a dense one.
    fis : dict str -> Tensor ``[K, *shape]``
        ``max(scores, 0)``, Eq. (7): the input of :func:`channel_importance`.
    classes : LongTensor ``[K]``
        The model's class index of each row.
    counts : LongTensor ``[K]``
        How many images each row averages.
    layers : list of str
    method : str
        ``"afi"`` or ``"gradient"``.
    """

    scores: dict[str, torch.Tensor]
    fis: dict[str, torch.Tensor]
    classes: torch.Tensor
    counts: torch.Tensor
    layers: list[str]
    method: str = "afi"


def check_occluders(occluders, images: torch.Tensor) -> torch.Tensor:
    """Occluders ``[K, C, H, W]`` (a single ``[C, H, W]`` becomes ``[1, C, H, W]``) matching ``images [N, C, H, W]``.

    Raises
    ------
    TypeError
        For anything but a float tensor.
    ValueError
        For a shape that does not match the images, or non-finite values.
    """
    if not isinstance(occluders, torch.Tensor) or not occluders.is_floating_point():
        got = f"{occluders.dtype} tensor" if isinstance(occluders, torch.Tensor) else type(occluders).__name__
        raise TypeError(f"occluders must be a float tensor [K, C, H, W] (one global feature occluder per class, "
                        f"from xailib.afi.occluder), got a {got}.")
    if occluders.dim() == 3:
        occluders = occluders[None]
    if occluders.dim() != 4 or tuple(occluders.shape[1:]) != tuple(images.shape[1:]):
        raise ValueError(
            f"occluders must be [K, C, H, W] with (C, H, W) = {tuple(images.shape[1:])} of the images "
            f"{tuple(images.shape)}, got {tuple(occluders.shape)}. Learn the occluders on images of this size "
            "and channel count (or resize the images)."
        )
    if occluders.shape[0] == 0:
        raise ValueError("occluders is empty [0, C, H, W]; give one occluder per class.")
    if not bool(torch.isfinite(occluders).all()):
        raise ValueError("occluders hold NaN or inf; re-learn them.")
    return occluders


def occlude(images: torch.Tensor, occluders: torch.Tensor, rows: torch.Tensor,
            input_range: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
    """Feature occlusion from the input space: ``(x_i - delta_{rows[i]}).clamp(lo, hi)``, ``[N, C, H, W]``.

    ``images [N, C, H, W]``, ``occluders [K, C, H, W]``, ``rows [N]`` (which occluder each image gets).
    """
    lo, hi = input_range
    return (images - occluders[rows]).clamp(lo, hi)


def _check_distinct_layers(model: nn.Module, layers) -> list[str]:
    layers = check_layers(model, layers)
    if len(set(layers)) != len(layers):
        raise ValueError(f"layers must be distinct, got {layers}.")
    return layers


def _class_rows(labels: torch.Tensor, classes, k: int | None, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``classes [K]`` and, per image, the row ``[N]`` of its class; each class must have an image."""
    if classes is None:
        if k is None:
            classes = torch.unique(labels)
        elif k == 1:
            present = torch.unique(labels)
            if present.numel() != 1:
                raise ValueError(f"One occluder was given, but the labels hold {present.numel()} classes "
                                 f"({present.tolist()}); pass one occluder per class ([K, C, H, W]) with "
                                 "classes=[...] naming the class of each.")
            classes = present
        else:
            classes = torch.arange(k)
    else:
        classes = check_targets(classes, len(classes) if isinstance(classes, Sequence) else
                                torch.as_tensor(classes).numel(), what="classes", allow_predicted=False)
    classes = torch.as_tensor(classes, dtype=torch.long).reshape(-1).cpu()
    if k is not None and classes.numel() != k:
        raise ValueError(f"classes names {classes.numel()} classes but there are {k} occluders; give the class of "
                         "each occluder row.")
    if torch.unique(classes).numel() != classes.numel():
        raise ValueError(f"classes must be distinct, got {classes.tolist()}.")
    match = labels[:, None] == classes[None, :]  # [N, K]
    missing = labels[~match.any(1)]
    if missing.numel():
        raise ValueError(f"Images of class {int(missing[0])} have no {what} row: classes = {classes.tolist()}. "
                         "Drop those images, or add the class to classes= (with its occluder).")
    counts = match.sum(0)
    if bool((counts == 0).any()):
        empty = classes[counts == 0].tolist()
        raise ValueError(f"No image of class(es) {empty}: every class needs at least one image to average over "
                         "(Eq. 6). Add images of them or drop them from classes/occluders.")
    return classes, match.long().argmax(1)


def _layer_activations(model: nn.Module, x: torch.Tensor, layers: list[str]
                       ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One forward pass: ``{layer: [b, *shape]}`` for all layers, and the model's output.

    ``capture(detach=False)`` also under ``no_grad``: only then does the network above a layer get a clone, so an
    in-place op there (``ReLU(inplace=True)`` after a conv) cannot overwrite the record (``detach=True`` hands the
    recorded tensor itself downstream).
    """
    with capture(model, layers) as rec:
        out = model(x)
        acts = {name: rec[name] for name in layers}
    return acts, out


def _per_class_mean(sums: dict[str, torch.Tensor], counts: torch.Tensor) -> dict[str, torch.Tensor]:
    return {n: s / counts.to(s).view(-1, *([1] * (s.dim() - 1))) for n, s in sums.items()}


# --------------------------------------------------------------------------------------------------
# Eqs. 6-7: feature importance with global feature occluders
# --------------------------------------------------------------------------------------------------


def _prepare(model, images, labels, layers):
    check_model(model)
    images = check_images(images, model, move=False)
    layers = _check_distinct_layers(model, layers)
    names = getattr(model, "class_names", None)
    # no forward pass to count the classes here (only "predicted" needs the model); the gradient path checks
    # the labels against the logits it gets
    predicted = labels is None or (isinstance(labels, str) and labels == PREDICTED)
    labels = check_targets(labels, images.shape[0], model=model if predicted else None, images=images,
                           classes=len(names) if names else None)
    return images, labels, layers


def feature_importance(
    model: nn.Module,
    images: torch.Tensor,
    occluders: torch.Tensor,
    labels,
    layers: str | Sequence[str],
    *,
    classes=None,
    input_range: tuple[float, float] = (0.0, 1.0),
    batch_size: int = 64,
    progress: bool = False,
) -> FeatureImportance:
    """Feature importance of every neuron of ``layers`` for ``K`` classes at once (Eqs. 6 and 7).

    ``s_l^j = 1/N_k sum_{i: y_i = k} (f_l(x_i)[j] - f_l((x_i - delta*_k).clamp(lo, hi))[j])`` (Eq. 6) and the FIS
    ``max(s_l^j, 0)`` (Eq. 7), where images of class ``k`` are occluded with that class's occluder.

    Parameters
    ----------
    model : nn.Module
        Run in eval mode with gradients off; its mode and flags are restored.
    images : Tensor ``[N, C, H, W]``
        In ``input_range``.
    occluders : Tensor ``[K, C, H, W]`` (or ``[C, H, W]`` for one class)
        The global feature occluders ``delta*`` (Eq. 4), row ``k`` for class ``classes[k]``.
    labels : int, sequence of int, LongTensor ``[N]`` or ``"predicted"``
        The class of each image (one int: all images); the model's class indices.
    layers : str or sequence of str
        Dotted layer names (:func:`xailib.layers.named_layers`), any number, all recorded in one pass.
    classes : sequence of int, optional
        The class of each occluder row. Default ``0..K-1``; with one occluder, the one class of the labels.
    input_range : (float, float)
        ``(lo, hi)``: images must lie in it, and ``x - delta`` is clamped to it.
    batch_size : int
    progress : bool
        A tqdm bar over batches.

    Returns
    -------
    FeatureImportance
        ``scores`` (Eq. 6) and ``fis`` (Eq. 7), ``{layer: [K, *shape]}`` on the CPU in the activations' dtype
        (accumulated in float64).

    Raises
    ------
    TypeError, ValueError
        Unknown layers (the message lists the valid names), occluders whose shape does not match the images,
        images outside ``input_range``, labels without an occluder row, a class without images.
    """
    images, labels, layers = _prepare(model, images, labels, layers)
    occluders = check_occluders(occluders, images)
    lo, hi = check_input_range(input_range)
    check_in_range(images, lo, hi)
    batch_size = check_positive_int(batch_size, "batch_size")
    classes, rows = _class_rows(labels, classes, occluders.shape[0], "occluder")
    k = classes.numel()
    dev = model_device(model)
    occ = occluders.to(dev)
    sums: dict[str, torch.Tensor] = {}
    dtypes: dict[str, torch.dtype] = {}
    with model_state(model, train=False, requires_grad=False), torch.no_grad():
        for s in tqdm(range(0, images.shape[0], batch_size), disable=not progress, desc="feature importance",
                      leave=False):
            x = images[s:s + batch_size].to(dev)
            r = rows[s:s + batch_size].to(dev)
            clean, _ = _layer_activations(model, x, layers)
            occluded, _ = _layer_activations(model, occlude(x, occ.to(x.dtype), r, (lo, hi)), layers)
            for name in layers:
                diff = (clean[name] - occluded[name]).double()  # [b, *shape], Eq. (6) summand
                if name not in sums:
                    sums[name] = torch.zeros(k, *diff.shape[1:], dtype=torch.float64, device=dev)
                    dtypes[name] = clean[name].dtype
                sums[name].index_add_(0, r, diff)
    counts = torch.bincount(rows, minlength=k)
    scores = {n: v.to(dtypes[n]).cpu() for n, v in _per_class_mean(sums, counts).items()}  # Eq. (6)
    fis = {n: v.clamp_min(0) for n, v in scores.items()}  # Eq. (7)
    return FeatureImportance(scores, fis, classes, counts, layers, "afi")


def feature_importance_reference(
    model: nn.Module,
    images: torch.Tensor,
    occluders: torch.Tensor,
    labels,
    layers: str | Sequence[str],
    *,
    classes=None,
    input_range: tuple[float, float] = (0.0, 1.0),
) -> FeatureImportance:
    """Literal Eqs. (6)-(7): a loop over classes, their images one at a time, layers, and neurons.

    One forward pass per image, layer and clean/occluded copy; ``s_l^j`` summed neuron by neuron in float64.
    Slow; for the tests of :func:`feature_importance` (same arguments, same result).
    """
    images, labels, layers = _prepare(model, images, labels, layers)
    occluders = check_occluders(occluders, images)
    lo, hi = check_input_range(input_range)
    check_in_range(images, lo, hi)
    classes, _ = _class_rows(labels, classes, occluders.shape[0], "occluder")
    dev = model_device(model)
    scores: dict[str, list[torch.Tensor]] = {n: [] for n in layers}
    counts = []
    with model_state(model, train=False, requires_grad=False), torch.no_grad():
        for k, y in enumerate(classes.tolist()):
            members = [i for i in range(images.shape[0]) if int(labels[i]) == y]
            counts.append(len(members))
            delta = occluders[k].to(dev)
            for name in layers:
                total = None
                for i in members:
                    x = images[i:i + 1].to(dev)
                    x_occ = (x - delta.to(x.dtype)).clamp(lo, hi)  # x_i - delta*, kept a valid input (Eq. 4)
                    with capture(model, name) as rec:  # no detach: see _layer_activations
                        model(x)
                    f_clean = rec[name][0].reshape(-1)
                    with capture(model, name) as rec:  # no detach: see _layer_activations
                        model(x_occ)
                    f_occ = rec[name][0].reshape(-1)
                    if total is None:
                        total = [0.0] * f_clean.numel()
                        shape, dtype = rec[name].shape[1:], rec[name].dtype
                    for j in range(f_clean.numel()):
                        total[j] += float(f_clean[j]) - float(f_occ[j])
                s = torch.tensor([t / len(members) for t in total], dtype=torch.float64)  # Eq. (6)
                scores[name].append(s.reshape(shape).to(dtype))
    out = {n: torch.stack(v) for n, v in scores.items()}
    return FeatureImportance(out, {n: v.clamp_min(0) for n, v in out.items()}, classes,
                             torch.tensor(counts), layers, "afi")


# --------------------------------------------------------------------------------------------------
# The gradient-based baseline of Table 2 (TCAV's feature attribution, averaged over the class)
# --------------------------------------------------------------------------------------------------


def gradient_feature_importance(
    model: nn.Module,
    images: torch.Tensor,
    labels,
    layers: str | Sequence[str],
    *,
    classes=None,
    batch_size: int = 64,
    progress: bool = False,
) -> FeatureImportance:
    """The "Gradient-based" column of Table 2: TCAV's per-image feature attribution averaged over each class.

    TCAV attributes an image's class logit to a layer through the gradient ``dZ(x)[y] / df_l(x)`` (its directional
    derivatives are this gradient dotted with a concept vector). It gives no global feature importance, so, as
    the paper does (Sec. 4.2), we average it over the images of the class::

        g_l^j = 1/N_k sum_{i: y_i = k} dZ(x_i)[k] / df_l(x_i)[j]           (scores)
        FIS   = max(g_l^j, 0)                                               (fis, as Eq. 7)

    Clipping at 0 mirrors Eq. (7) (neurons whose increase raises the logit on average are the supporting
    features), and makes the result a valid input of :func:`channel_importance` and :func:`meta_detector`, so the
    two columns of Table 2 differ only in how the FIS is obtained. ``Z`` is the logit (before softmax).

    Parameters
    ----------
    model, images, labels, layers, batch_size, progress :
        As in :func:`feature_importance` (no occluders, no input range).
    classes : sequence of int, optional
        The classes of the rows; default: the distinct labels, sorted.

    Returns
    -------
    FeatureImportance
        ``method="gradient"``; ``scores`` the signed class-mean gradient, ``fis`` its positive part,
        ``{layer: [K, *shape]}`` on the CPU.
    """
    images, labels, layers = _prepare(model, images, labels, layers)
    batch_size = check_positive_int(batch_size, "batch_size")
    classes, rows = _class_rows(labels, classes, None, "class")
    k = classes.numel()
    dev = model_device(model)
    sums: dict[str, torch.Tensor] = {}
    dtypes: dict[str, torch.dtype] = {}
    with model_state(model, train=False, requires_grad=False):
        for s in tqdm(range(0, images.shape[0], batch_size), disable=not progress, desc="gradient importance",
                      leave=False):
            x = images[s:s + batch_size].to(dev).detach().requires_grad_(True)
            y = labels[s:s + batch_size].to(dev)
            with torch.enable_grad():
                acts, out = _layer_activations(model, x, layers)
                logits = check_class_scores(out, x.shape[0])
                if int(y.max()) >= logits.shape[1]:
                    raise ValueError(f"Class index {int(y.max())} in labels is outside the model's {logits.shape[1]} "
                                     f"classes (0..{logits.shape[1] - 1}).")
                # images are independent in eval mode: the gradient of the sum is each image's own gradient
                grads = torch.autograd.grad(logits.gather(1, y[:, None]).sum(), [acts[n] for n in layers])
            r = rows[s:s + batch_size].to(dev)
            for name, g in zip(layers, grads):
                if name not in sums:
                    sums[name] = torch.zeros(k, *g.shape[1:], dtype=torch.float64, device=dev)
                    dtypes[name] = g.dtype
                sums[name].index_add_(0, r, g.detach().double())
    counts = torch.bincount(rows, minlength=k)
    scores = {n: v.to(dtypes[n]).cpu() for n, v in _per_class_mean(sums, counts).items()}
    return FeatureImportance(scores, {n: v.clamp_min(0) for n, v in scores.items()}, classes, counts, layers,
                             "gradient")


def gradient_feature_importance_reference(model: nn.Module, images: torch.Tensor, labels,
                                          layers: str | Sequence[str], *, classes=None) -> FeatureImportance:
    """Literal :func:`gradient_feature_importance`: one image and one layer at a time, summed image by image."""
    images, labels, layers = _prepare(model, images, labels, layers)
    classes, _ = _class_rows(labels, classes, None, "class")
    dev = model_device(model)
    out: dict[str, list[torch.Tensor]] = {n: [] for n in layers}
    counts = []
    with model_state(model, train=False, requires_grad=False):
        for y in classes.tolist():
            members = [i for i in range(images.shape[0]) if int(labels[i]) == y]
            counts.append(len(members))
            for name in layers:
                total = None
                for i in members:
                    x = images[i:i + 1].to(dev).detach().requires_grad_(True)
                    with torch.enable_grad(), capture(model, name) as rec:
                        z = model(x)[0, y]
                        g, = torch.autograd.grad(z, rec[name])
                    total = g[0].double() if total is None else total + g[0].double()
                out[name].append((total / len(members)).to(g.dtype).cpu())
    scores = {n: torch.stack(v) for n, v in out.items()}
    return FeatureImportance(scores, {n: v.clamp_min(0) for n, v in scores.items()}, classes,
                             torch.tensor(counts), layers, "gradient")


# --------------------------------------------------------------------------------------------------
# Eq. 8: channel importance
# --------------------------------------------------------------------------------------------------

_NORMALIZE = ("max", "sum", "none")


def _fis_dict(fis) -> dict[str, torch.Tensor]:
    if isinstance(fis, FeatureImportance):
        return dict(fis.fis)
    if isinstance(fis, torch.Tensor):
        return {"": fis}
    if isinstance(fis, Mapping):
        return dict(fis)
    raise TypeError(f"fis must be a FeatureImportance, a dict layer -> Tensor [K, C, ...] or one Tensor "
                    f"[K, C, ...], got {type(fis).__name__}.")


def _check_fis_tensor(name: str, t) -> torch.Tensor:
    where = f" for layer {name!r}" if name else ""
    if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.dim() < 2:
        got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"The FIS{where} must be a float tensor [K, C, h, w] (conv) or [K, C] (dense), with the "
                         f"class axis first (one class: fis[None]); got {got}.")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"The FIS{where} holds NaN or inf.")
    if bool((t < 0).any()):
        raise ValueError(f"The FIS{where} has negative entries: Eq. (8) sums the clipped FIS of Eq. (7). Pass "
                         "FeatureImportance.fis (or the FeatureImportance itself), not .scores.")
    return t


def channel_importance(fis, normalize: str = "max"):
    """Channel importance scores (CIS), Eq. (8): ``w_l^c = 1/B sum_{j in P_l^c} s_l^j``.

    Each channel's FIS map (``[h, w]``; a dense layer's ``C`` neurons count as ``C`` maps of ``1 x 1``) is summed,
    and ``B`` is chosen, per class and layer, so that ``w_l^c in [0, 1]`` (the paper only asks this):

    * ``"max"`` (default): ``B = max_c sum_{j in P_l^c} s_l^j``; the most important channel gets 1 and the
      meta-detector of Eq. (9) keeps the scale of one channel's activations;
    * ``"sum"``: ``B = sum_c sum_{j in P_l^c} s_l^j``; the weights sum to 1 (a convex mix of channels);
    * ``"none"``: ``B = 1`` (raw sums, not in ``[0, 1]``).

    A class whose FIS is zero in a whole layer (the occluder changed nothing there) gets zero weights, not NaN.

    Parameters
    ----------
    fis : FeatureImportance, dict str -> Tensor ``[K, C, *spatial]``, or one Tensor ``[K, C, *spatial]``
        Non-negative FIS (Eq. 7) with the class axis first; ``*spatial`` is ``(h, w)`` or empty.
    normalize : {"max", "sum", "none"}

    Returns
    -------
    dict str -> Tensor ``[K, C]`` (or one Tensor ``[K, C]`` for a tensor input)
    """
    normalize = check_choice(normalize, _NORMALIZE, "normalize")
    one = isinstance(fis, torch.Tensor)
    out = {}
    for name, t in _fis_dict(fis).items():
        t = _check_fis_tensor(name, t)
        total = t.flatten(2).sum(-1) if t.dim() > 2 else t  # [K, C], sum over P_l^c
        if normalize == "none":
            out[name] = total
            continue
        b = total.amax(1, keepdim=True) if normalize == "max" else total.sum(1, keepdim=True)  # [K, 1]
        out[name] = torch.where(b > 0, total / torch.where(b > 0, b, torch.ones_like(b)), torch.zeros_like(total))
    return out[""] if one else out


def channel_importance_reference(fis, normalize: str = "max"):
    """Literal Eq. (8): loops over classes, channels and the neurons of each channel's map."""
    one = isinstance(fis, torch.Tensor)
    out = {}
    for name, t in _fis_dict(fis).items():
        t = _check_fis_tensor(name, t)
        k, c = t.shape[:2]
        w = torch.zeros(k, c, dtype=torch.float64)
        for ki in range(k):
            sums = []
            for ci in range(c):
                neurons = t[ki, ci].reshape(-1)
                sums.append(sum(float(neurons[j]) for j in range(neurons.numel())))
            b = {"max": max(sums), "sum": sum(sums), "none": 1.0}[normalize]
            for ci in range(c):
                w[ki, ci] = sums[ci] / b if b > 0 else 0.0
        out[name] = w.to(t.dtype)
    return out[""] if one else out


# --------------------------------------------------------------------------------------------------
# Eq. 9: the class meta-detectors
# --------------------------------------------------------------------------------------------------


def check_cis(cis, layers: list[str]) -> dict[str, torch.Tensor]:
    """The CIS ``{layer: [K, C]}`` of ``layers``; ``ValueError`` for a missing layer or a wrong shape.

    Layers of ``cis`` that are not in ``layers`` are ignored. All layers must have the same ``K``.
    """
    if not isinstance(cis, Mapping):
        raise TypeError(f"cis must be a dict layer -> Tensor [K, C] (from channel_importance), got "
                        f"{type(cis).__name__}.")
    missing = [n for n in layers if n not in cis]
    if missing:
        raise ValueError(f"cis has no channel importance for layer(s) {missing}; it holds {list(cis)}. Compute "
                         "channel_importance(feature_importance(..., layers=...)) for those layers, or drop them "
                         "from layers.")
    out = {}
    for n in layers:
        w = cis[n]
        if not isinstance(w, torch.Tensor) or not w.is_floating_point() or w.dim() != 2:
            got = tuple(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__
            raise ValueError(f"cis[{n!r}] must be a float tensor [K, C] (K classes, C channels), got {got}; for "
                             "one class use w[None].")
        if not bool(torch.isfinite(w).all()):
            raise ValueError(f"cis[{n!r}] holds NaN or inf.")
        out[n] = w
    ks = {n: int(w.shape[0]) for n, w in out.items()}
    if len(set(ks.values())) > 1:
        raise ValueError(f"cis must hold the same classes at every layer; got K per layer {ks}.")
    return out


def meta_maps(acts: torch.Tensor, w: torch.Tensor, paired: bool = False) -> torch.Tensor:
    """Eq. (9) on activations: ``f_l = sum_c w^c A^c``.

    Parameters
    ----------
    acts : Tensor ``[N, C, *spatial]``
        A layer's activations (``*spatial`` = ``(h, w)``, or empty for a dense layer).
    w : Tensor ``[K, C]``
        Channel importance of ``K`` classes.
    paired : bool
        ``False``: every class's meta-detector on every image, ``[K, N, *spatial]``. ``True``: image ``k`` seen by
        class ``k``'s meta-detector only (``N = K``), ``[K, *spatial]``.

    Raises
    ------
    ValueError
        If the channel counts differ.
    """
    if acts.dim() < 2 or acts.shape[1] != w.shape[1]:
        raise ValueError(f"The channel importance has {w.shape[1]} channels but the layer's activations are "
                         f"{tuple(acts.shape)} ({acts.shape[1] if acts.dim() > 1 else '?'} channels); compute the "
                         "CIS at this layer of this model.")
    w = w.to(acts)
    if paired:
        if acts.shape[0] != w.shape[0]:
            raise ValueError(f"paired=True needs one image per class: {acts.shape[0]} images, {w.shape[0]} classes.")
        return torch.einsum("kc,kc...->k...", w, acts)
    return torch.einsum("kc,nc...->kn...", w, acts)


def _flat(maps: torch.Tensor) -> torch.Tensor:
    """``[K, N, *spatial] -> [K, N, prod(spatial)]`` (``[K, N] -> [K, N, 1]``)."""
    return maps.reshape(*maps.shape[:2], -1)


def meta_detector(
    model: nn.Module,
    images: torch.Tensor,
    cis: Mapping[str, torch.Tensor],
    layers: str | Sequence[str] | None = None,
    *,
    flatten: bool = False,
    batch_size: int = 64,
    progress: bool = False,
) -> dict[str, torch.Tensor]:
    """The outputs of the class meta-detectors (Eq. 9), ``f_l = sum_c w_l^c A_l^c``, on images.

    Parameters
    ----------
    model : nn.Module
    images : Tensor ``[N, C, H, W]``
    cis : dict str -> Tensor ``[K, C_l]``
        Channel importance (Eq. 8) of ``K`` classes per layer (:func:`channel_importance`).
    layers : str or sequence of str, optional
        Default: the layers of ``cis``. Each must be in ``cis``.
    flatten : bool
        Flatten each output map, as the distillation test of Table 2 and the MMD of Sec. 3.2 use it:
        ``[K, N, h * w]`` for a conv layer, ``[K, N, 1]`` for a dense one.
    batch_size : int
    progress : bool

    Returns
    -------
    dict str -> Tensor
        ``[K, N, h, w]`` (conv) or ``[K, N]`` (dense), or flattened as above; on the CPU.
    """
    check_model(model)
    images = check_images(images, model, move=False)
    layers = _check_distinct_layers(model, list(cis) if layers is None and isinstance(cis, Mapping) else layers)
    cis = check_cis(cis, layers)
    batch_size = check_positive_int(batch_size, "batch_size")
    dev = model_device(model)
    w = {n: cis[n].to(dev) for n in layers}
    parts: dict[str, list[torch.Tensor]] = {n: [] for n in layers}
    with model_state(model, train=False, requires_grad=False), torch.no_grad():
        for s in tqdm(range(0, images.shape[0], batch_size), disable=not progress, desc="meta-detector",
                      leave=False):
            acts, _ = _layer_activations(model, images[s:s + batch_size].to(dev), layers)
            for n in layers:
                parts[n].append(meta_maps(acts[n], w[n]).cpu())  # Eq. (9), [K, b, *spatial]
    out = {n: torch.cat(p, dim=1) for n, p in parts.items()}
    return {n: _flat(v) for n, v in out.items()} if flatten else out


def meta_detector_reference(model: nn.Module, images: torch.Tensor, cis: Mapping[str, torch.Tensor],
                            layers: str | Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """Literal Eq. (9): one image at a time, ``f_l = sum_c w_l^c A_l^c`` as a loop over channels.

    Returns ``{layer: [K, N, *spatial]}`` like :func:`meta_detector` (not flattened).
    """
    check_model(model)
    images = check_images(images, model, move=False)
    layers = _check_distinct_layers(model, list(cis) if layers is None else layers)
    cis = check_cis(cis, layers)
    dev = model_device(model)
    out = {}
    with model_state(model, train=False, requires_grad=False), torch.no_grad():
        for n in layers:
            w = cis[n]
            per_class = []
            for k in range(w.shape[0]):
                per_image = []
                for i in range(images.shape[0]):
                    with capture(model, n) as rec:  # no detach: see _layer_activations
                        model(images[i:i + 1].to(dev))
                    a = rec[n][0].cpu()  # [C, *spatial]
                    f = torch.zeros_like(a[0])
                    for c in range(a.shape[0]):
                        f = f + float(w[k, c]) * a[c]
                    per_image.append(f)
                per_class.append(torch.stack(per_image))
            out[n] = torch.stack(per_class)
    return out
