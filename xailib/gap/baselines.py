"""gAP against other attribution methods: the sanity checks of Fig. 7 and the channel removal of Fig. 9 (Sec. 4.1).

Fig. 7, sanity checks (Adebayo et al., NeurIPS 2018, the paper's ref. [74]):

    "We do the model parameter randomization test on the pretrained ResNet-18 model and randomly initialize
    the model parameters from the top layer to the bottom layer in a cascading manner. We utilize the spearman
    rank correlation metric to compute the difference between the attribution maps from the original model and
    the randomly initialized model. Besides, we do the data randomization test by comparing the saliency maps
    from CNNs trained with true labels and permuted labels, respectively."  (Sec. 4.1)

* :func:`saliency_maps` -- one input-space map per image for gAP (:func:`xailib.gap.gap_saliency`: decompose to
  the data layer and sum the gradients) and captum's Gradient (``Saliency``), SmoothGrad (``NoiseTunnel`` over
  ``Saliency``), Guided Backprop and Integrated Gradients.
* :func:`spearman_rank` -- batched Spearman rank correlation (average ranks for ties, as ``scipy.stats.spearmanr``).
  Maps are compared as Adebayo et al. do, both with the absolute value (``sum_c |a_c|``) and without
  (``sum_c a_c``); the gAP paper does not say which it plots, so we report both.
* :func:`randomized_copy` / :func:`cascading_randomization` -- re-initialise the layers of a *deep copy* of the
  model from the top down, cumulatively, and correlate each method's maps with those of the original model.
* :func:`train_random_label_model` / :func:`data_randomization` -- the same architecture trained on permuted
  labels, and the correlation of its maps with those of the normally trained model.

Fig. 9, channel removal ("Comparison with individual-based methods"):

* :func:`channel_scores` -- per-image importance ``[B, K]`` of the channels of one layer for the predicted class,
  by gAP (Eq. 4), captum's ``LayerConductance`` (ref. [21]), ``InternalInfluence`` (ref. [22]), ``LayerLRP``
  (ref. [34], epsilon rule) and a random ranking. Note: for a network of ReLUs, convs, eval-mode BatchNorm,
  max/average pooling and linear layers, LRP with captum's epsilon rule (epsilon = 1e-9) is gradient x input at
  every layer, so its channel relevance is ``sum_{x,y} G * F = Z * alpha`` (Eq. 4): gAP and LRP rank the channels
  of such a layer identically (tested on the zoo VGG).
* :func:`channel_removal_curve` -- accuracy after removing each image's top-N channels, for several N.
  "Removing" a channel sets it to its average activation on that image (its spatial mean), the definition the
  paper gives for removing a channel in Sec. 4.1 (``ablation="mean"``); ``ablation="zero"`` zeroes it.

In-place ReLUs: captum's Guided Backprop hooks ReLU modules; on the zoo models (``ReLU(inplace=True)``) it gives
the same maps as on a copy with ``inplace=False`` (checked in ``tests/gap/test_baselines.py``), so it runs on the
model itself. captum's LRP is run on a deep copy (:class:`lrp_copy`) because it writes ``rule``/``activations``
attributes onto modules and has no rule for ``Normalize`` and ``Flatten``; the copy gets the epsilon rule for
those two (exact for ``Flatten``; ``Normalize`` lies below every layer we score, so its rule does not matter).
No method leaves a hook on the model (tests assert ``count_hooks(model) == 0``).
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from xailib.layers import check_layers, get_layer, model_state, named_layers, replace_output

__all__ = [
    "SALIENCY_METHODS",
    "CHANNEL_METHODS",
    "ABLATIONS",
    "saliency_maps",
    "reduce_maps",
    "average_ranks",
    "spearman_rank",
    "randomization_layers",
    "reinitialize",
    "randomized_copy",
    "cascading_randomization",
    "train_random_label_model",
    "data_randomization",
    "lrp_copy",
    "channel_scores",
    "remove_channels",
    "channel_removal_curve",
    "sanity_summary",
    "seconds_per_map",
    "removal_summary",
    "paper_comparison",
    "plot_cascading_randomization",
    "plot_data_randomization",
    "plot_cascading_examples",
    "plot_channel_removal",
]

#: Saliency methods of Fig. 7 (gAP, and captum's Gradient, SmoothGrad, Guided Backprop, Integrated Gradients).
SALIENCY_METHODS: tuple[str, ...] = ("gAP", "Gradient", "SmoothGrad", "GuidedBackprop", "IntegratedGradients")
#: Channel-importance methods of Fig. 9.
CHANNEL_METHODS: tuple[str, ...] = ("gAP", "Conductance", "InternalInfluence", "LRP", "Random")
#: How a removed channel is replaced: its spatial mean on the image (the paper's Sec. 4.1), or zero.
ABLATIONS: tuple[str, ...] = ("mean", "zero")


# --------------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------------


def _check_model(model) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    return model


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _check_images(images) -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor [B, C, H, W] in [0, 1], got {type(images).__name__}.")
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4 or not images.is_floating_point() or images.shape[0] == 0:
        raise ValueError(f"images must be a non-empty float tensor [B, C, H, W], got {tuple(images.shape)} "
                         f"{images.dtype}.")
    return images


def _check_methods(methods, valid: Sequence[str]) -> list[str]:
    methods = [methods] if isinstance(methods, str) else list(methods)
    bad = [m for m in methods if m not in valid]
    if bad or not methods:
        raise ValueError(f"Unknown method(s) {bad or methods!r}; choose from {list(valid)}.")
    return methods


def _check_positive_int(value, name: str, zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < (0 if zero else 1):
        raise ValueError(f"{name} must be a {'non-negative' if zero else 'positive'} int, got {value!r}.")
    return int(value)


@torch.no_grad()
def _predict(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Predicted classes ``[B]`` (eval mode, restored)."""
    dev = _device(model)
    with model_state(model, train=False):
        return torch.cat([model(images[i:i + batch_size].to(dev)).argmax(1).cpu()
                          for i in range(0, images.shape[0], batch_size)])


def _targets(model: nn.Module, images: torch.Tensor, targets) -> torch.Tensor:
    """Class indices ``[B]`` (LongTensor on the CPU); ``None`` = the model's predictions."""
    if targets is None:
        return _predict(model, images)
    if isinstance(targets, (int, np.integer)) and not isinstance(targets, bool):
        targets = [int(targets)] * images.shape[0]
    t = torch.as_tensor(targets)
    if t.dim() != 1 or t.is_floating_point() or t.dtype == torch.bool or t.shape[0] != images.shape[0]:
        raise ValueError(f"targets must be one class index per image ([{images.shape[0]}] ints) or None for the "
                         f"predicted classes; got {tuple(t.shape)} {t.dtype}.")
    n_classes = _n_classes(model, images)
    if bool((t < 0).any()) or bool((t >= n_classes).any()):
        raise ValueError(f"Class indices must be in 0..{n_classes - 1} (the model has {n_classes} classes), "
                         f"got {t.tolist()}.")
    return t.long().cpu()


def _n_classes(model: nn.Module, images: torch.Tensor) -> int:
    """Number of model outputs: ``len(model.class_names)`` when the model names its classes, else one forward."""
    names = getattr(model, "class_names", None)
    if names:
        return len(names)
    with model_state(model, train=False), torch.no_grad():
        return int(model(images[:1].to(_device(model))).shape[1])


# --------------------------------------------------------------------------------------------------
# Saliency maps (Fig. 7)
# --------------------------------------------------------------------------------------------------


@contextmanager
def _quiet_captum() -> Iterator[None]:
    """Silence captum's notices that are expected here (inputs made to require grad, ReLU hooks set)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*did not already require gradients.*")
        warnings.filterwarnings("ignore", message=".*Setting backward hooks on ReLU.*")
        yield


@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Fork the global RNG (CPU, and the CUDA device in use), seed it, restore it on exit."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        yield


def saliency_maps(
    model: nn.Module,
    images: torch.Tensor,
    targets=None,
    method: str = "gAP",
    *,
    top_n: int = 3,
    sg_samples: int = 16,
    sg_stdev: float = 0.15,
    ig_steps: int = 32,
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = False,
) -> torch.Tensor:
    """Input-space attribution maps of one method for a batch of images.

    Parameters
    ----------
    model : nn.Module
        Runs in eval mode for the call (restored); never modified, no hook left on it.
    images : Tensor ``[B, C, H, W]`` in [0, 1]
    targets : int, sequence of int, LongTensor ``[B]`` or None
        Class explained in each image; ``None`` = the predicted class.
    method : {"gAP", "Gradient", "SmoothGrad", "GuidedBackprop", "IntegratedGradients"}
        * ``gAP``: :func:`xailib.gap.gap_saliency` -- decompose the decision (top ``top_n`` channels per
          decision, down to stage 1) and sum ``dF^1_{k,y^,x^} / dI`` of the decompositions onto the data layer
          (Sec. 4.1; Eq. 2 with the image as layer 0). One image at a time (the decomposition is per image).
        * ``Gradient``: ``dS_c / dI`` (captum ``Saliency`` with ``abs=False``; Simonyan et al.).
        * ``SmoothGrad``: mean gradient over ``sg_samples`` noisy copies, noise std ``sg_stdev`` (inputs span
          [0, 1], so 0.15 is Smilkov et al.'s 15 %); captum ``NoiseTunnel(Saliency)``. Seeded by ``seed``.
        * ``GuidedBackprop``: captum ``GuidedBackprop`` (runs with the model's in-place ReLUs).
        * ``IntegratedGradients``: captum, black-image baseline (zeros), ``ig_steps`` Riemann steps.
    top_n : int
        gAP's N (the paper: 3).
    batch_size : int
        Images per captum call.
    seed : int
        Seed of SmoothGrad's noise (the global RNG is forked, so the caller's stream is untouched).

    Returns
    -------
    Tensor ``[B, C, H, W]``
        Signed attributions on the CPU; reduce with :func:`reduce_maps`.
    """
    _check_model(model)
    images = _check_images(images)
    (method,) = _check_methods([method], SALIENCY_METHODS)
    batch_size = _check_positive_int(batch_size, "batch_size")
    targets = _targets(model, images, targets)
    dev = _device(model)
    out = []
    if method == "gAP":
        from xailib.gap.saliency import gap_saliency

        for i in tqdm(range(images.shape[0]), disable=not progress, desc="gAP saliency", leave=False):
            out.append(gap_saliency(model, images[i:i + 1].to(dev), target=int(targets[i]), top_n=top_n).cpu())
        return torch.cat(out)
    from captum.attr import GuidedBackprop, IntegratedGradients, NoiseTunnel, Saliency

    with model_state(model, train=False, requires_grad=False), _seeded(seed, dev), _quiet_captum():
        for i in tqdm(range(0, images.shape[0], batch_size), disable=not progress, desc=method, leave=False):
            x = images[i:i + batch_size].to(dev).detach().clone().requires_grad_(True)
            t = targets[i:i + batch_size].to(dev)
            if method == "Gradient":
                a = Saliency(model).attribute(x, target=t, abs=False)
            elif method == "SmoothGrad":
                a = NoiseTunnel(Saliency(model)).attribute(x, nt_type="smoothgrad", nt_samples=sg_samples,
                                                           nt_samples_batch_size=batch_size, stdevs=float(sg_stdev),
                                                           target=t, abs=False)
            elif method == "GuidedBackprop":
                a = GuidedBackprop(model).attribute(x, target=t)
            else:
                a = IntegratedGradients(model).attribute(x, baselines=torch.zeros_like(x), target=t,
                                                         n_steps=ig_steps, internal_batch_size=batch_size)
            out.append(a.detach().cpu())
    return torch.cat(out)


def reduce_maps(attributions: torch.Tensor, absolute: bool = True) -> torch.Tensor:
    """Colour channels -> one map per image: ``sum_c |a_c|`` (``absolute=True``) or ``sum_c a_c``.

    ``[B, C, H, W] -> [B, H, W]``.
    """
    if not isinstance(attributions, torch.Tensor) or attributions.dim() != 4:
        raise ValueError(f"attributions must be a tensor [B, C, H, W], got {getattr(attributions, 'shape', None)}.")
    return (attributions.abs() if absolute else attributions).sum(1)


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks ``1..P`` of each row of ``values: [B, P]``, ties sharing their average rank (``[B, P]``, float64).

    Batched equivalent of ``scipy.stats.rankdata(row, method="average")``.
    """
    if values.dim() != 2:
        raise ValueError(f"values must be [B, P], got {tuple(values.shape)}.")
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


def spearman_rank(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of each pair of rows (the paper's ref. [72]).

    ``rho = pearson(rank(a), rank(b))`` with average ranks for ties, as ``scipy.stats.spearmanr``.

    Parameters
    ----------
    a, b : Tensor ``[B, ...]``
        Flattened per row to ``[B, P]``.

    Returns
    -------
    Tensor ``[B]`` (float64)
        NaN for a row where either map is constant (as scipy).
    """
    if a.shape != b.shape or a.dim() < 2:
        raise ValueError(f"a and b must have the same shape [B, ...], got {tuple(a.shape)} and {tuple(b.shape)}.")
    ra, rb = average_ranks(a.flatten(1)), average_ranks(b.flatten(1))
    ra = ra - ra.mean(1, keepdim=True)
    rb = rb - rb.mean(1, keepdim=True)
    den = (ra.square().sum(1) * rb.square().sum(1)).sqrt()
    rho = (ra * rb).sum(1) / den
    return torch.where(den > 0, rho, torch.full_like(rho, float("nan"))).clamp(-1, 1)


# --------------------------------------------------------------------------------------------------
# Cascading model-parameter randomisation (Fig. 7a)
# --------------------------------------------------------------------------------------------------


def _has_own_state(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False))


def randomization_layers(model: nn.Module) -> list[str]:
    """Default groups of the cascade, top (logits) first.

    For a model with ``stage_names`` (zoo and wrapped torchvision models): every parametrised module after the
    last stage, one by one from the output down (``head.fc2``, ``head.fc1``), then the five stages from the top
    down (a stage is re-initialised as a whole, like Adebayo et al.'s Inception blocks). Otherwise: every module
    with parameters of its own, in reverse registration order.
    """
    _check_model(model)
    leaves = [n for n, m in named_layers(model).items() if _has_own_state(m) and any(True for _ in m.parameters())]
    stages = getattr(model, "stage_names", None)
    if not stages or any(not any(True for _ in get_layer(model, s).parameters()) for s in stages):
        return leaves[::-1]  # no stages, or stages that are single parameter-free layers (torchvision ReLUs)
    stages = list(stages)
    last = stages[-1] + "."
    names = list(named_layers(model))
    after = names.index(stages[-1])
    head = [n for n in leaves if names.index(n) > after and not n.startswith(last)]
    return head[::-1] + stages[::-1]


def reinitialize(module: nn.Module, seed: int) -> int:
    """Re-initialise every sub-module of ``module`` that has ``reset_parameters`` (in place), seeded.

    PyTorch's default initialisation: Kaiming-uniform weights for convs and linears; BatchNorm back to weight 1,
    bias 0, running mean 0, running variance 1. Returns the number of modules re-initialised.
    """
    n = 0
    with _seeded(seed, _device(module)):
        for m in module.modules():
            if hasattr(m, "reset_parameters") and _has_own_state(m):
                m.reset_parameters()
                if hasattr(m, "reset_running_stats"):
                    m.reset_running_stats()
                n += 1
    return n


@contextmanager
def randomized_copy(model: nn.Module, layers: str | Sequence[str], seed: int = 0) -> Iterator[nn.Module]:
    """A deep copy of ``model`` with ``layers`` re-initialised (:func:`reinitialize`); the model is untouched.

    Examples
    --------
    >>> with randomized_copy(model, ["head.fc2", "head.fc1"]) as rnd:
    ...     maps = saliency_maps(rnd, x, targets, "Gradient")
    """
    _check_model(model)
    layers = check_layers(model, layers)
    work = copy.deepcopy(model)
    try:
        for i, name in enumerate(layers):
            reinitialize(get_layer(work, name), seed + i)
        yield work.eval()
    finally:
        del work


def _map_pairs(ref: torch.Tensor, other: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"spearman_abs": spearman_rank(reduce_maps(ref, True), reduce_maps(other, True)),
            "spearman_signed": spearman_rank(reduce_maps(ref, False), reduce_maps(other, False))}


def cascading_randomization(
    model: nn.Module,
    images: torch.Tensor,
    targets=None,
    methods: Sequence[str] = SALIENCY_METHODS,
    layers: Sequence[str] | None = None,
    seed: int = 0,
    progress: bool = False,
    **saliency_kwargs,
) -> pd.DataFrame:
    """Cascading model-parameter randomisation test (Adebayo et al.; Fig. 7a).

    A deep copy of ``model`` has its layers re-initialised from the top down, cumulatively: step ``s``
    (1-based) re-initialises ``layers[:s]``. At each step, each method's map of each image is compared with the
    map of the original model by Spearman rank correlation, with and without absolute values. The targets stay
    those of the original model. A low correlation means the method depends on the parameters (it passes).

    Parameters
    ----------
    model : nn.Module
        Never modified (state dict and hooks unchanged).
    images : Tensor ``[B, C, H, W]``
    targets : class indices ``[B]`` or None
        ``None`` = the original model's predictions.
    methods : sequence of str
        From :data:`SALIENCY_METHODS`.
    layers : sequence of str or None
        The cascade, top first; ``None`` = :func:`randomization_layers`.
    seed : int
        Seeds the re-initialisation (layer ``i`` with ``seed + i``) and SmoothGrad's noise.
    **saliency_kwargs
        Passed to :func:`saliency_maps` (``top_n``, ``sg_samples``, ``ig_steps``, ...).

    Returns
    -------
    DataFrame
        One row per (step, method, image): ``step`` (0 = original), ``randomized`` (the last group re-initialised,
        ``"none"`` at step 0), ``method``, ``image``, ``spearman_abs``, ``spearman_signed``, ``seconds`` (time of
        that step's maps for the method, per image).
    """
    _check_model(model)
    images = _check_images(images)
    methods = _check_methods(methods, SALIENCY_METHODS)
    layers = randomization_layers(model) if layers is None else check_layers(model, layers)
    targets = _targets(model, images, targets)
    kw = dict(saliency_kwargs, seed=seed)
    rows = []

    def maps_of(m: nn.Module) -> dict[str, tuple[torch.Tensor, float]]:
        res = {}
        for meth in methods:
            t0 = time.perf_counter()
            res[meth] = (saliency_maps(m, images, targets, meth, **kw), (time.perf_counter() - t0) / len(images))
        return res

    def add(step: int, name: str, maps: dict) -> None:
        for meth, (a, secs) in maps.items():
            corr = _map_pairs(ref[meth][0], a)
            for i in range(images.shape[0]):
                rows.append({"step": step, "randomized": name, "method": meth, "image": i,
                             "spearman_abs": float(corr["spearman_abs"][i]),
                             "spearman_signed": float(corr["spearman_signed"][i]), "seconds": secs})

    ref = maps_of(model)
    add(0, "none", ref)
    with _cascade(model, layers, seed) as steps:
        for s, (name, rnd) in enumerate(tqdm(steps, total=len(layers), disable=not progress, desc="cascade"), 1):
            add(s, name, maps_of(rnd))
    return pd.DataFrame(rows)


@contextmanager
def _cascade(model: nn.Module, layers: Sequence[str], seed: int):
    """Yield an iterator over ``(name, copy)``: one deep copy whose layers are re-initialised one more per step."""
    work = copy.deepcopy(model).eval()

    def steps():
        for i, name in enumerate(layers):
            reinitialize(get_layer(work, name), seed + i)
            yield name, work

    try:
        yield steps()
    finally:
        del work


# --------------------------------------------------------------------------------------------------
# Data randomisation (Fig. 7b)
# --------------------------------------------------------------------------------------------------


def train_random_label_model(
    arch: str,
    dataset: str,
    n_train: int = 512,
    epochs: int = 25,
    seed: int = 0,
    *,
    batch_size: int = 64,
    lr: float = 3e-3,
    device: str = "auto",
    progress: bool = False,
) -> tuple[nn.Module, dict]:
    """Train a zoo architecture on randomly permuted labels (Adebayo et al.'s data randomisation test).

    The same architecture as the zoo model (:func:`xailib.models.build_model`) is trained from scratch on
    ``n_train`` training images whose labels are permuted at random (seed ``seed``), so that labels carry no
    information about the images; the network can only memorise them. Deterministic: fixed seeds, explicit
    generators, deterministic algorithms, AdamW with a one-cycle schedule, no augmentation.

    Parameters
    ----------
    arch : {"vgg", "resnet", "inception", "alexnet"}
    dataset : {"conceptworld", "fashion-mnist"}
    n_train : int
        Training images (ConceptWorld generates them with ``seed``; Fashion-MNIST takes a random subset).
    epochs : int
        Passes over the images (on ConceptWorld, 512 images memorise to 100 % in about 25 epochs).
    seed : int
    batch_size, lr : training recipe.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"``.

    Returns
    -------
    model : nn.Module
        In eval mode.
    info : dict
        ``train_accuracy`` (on the permuted labels it was trained on -- how well it memorised them),
        ``true_label_agreement`` (fraction of training images whose prediction is the true label),
        ``chance`` (1 / classes), ``n_train``, ``epochs``, ``seed``, ``final_loss``, ``seconds``.
    """
    from xailib.data import load_dataset
    from xailib.models import build_model
    from xailib.models.train import deterministic
    from xailib.utils import make_generator, resolve_device

    n_train = _check_positive_int(n_train, "n_train")
    epochs = _check_positive_int(epochs, "epochs")
    batch_size = _check_positive_int(batch_size, "batch_size")
    dev = resolve_device(device)
    ds = load_dataset(dataset, "train", n=n_train, seed=seed)
    x = torch.as_tensor(ds.images, dtype=torch.float32)
    y_true = torch.as_tensor(ds.labels, dtype=torch.int64)
    gen = make_generator(seed)
    y = y_true[torch.randperm(len(y_true), generator=gen)]  # permuted labels: same label histogram, no signal
    bs = min(batch_size, len(y))
    per_epoch = len(y) // bs
    t0 = time.perf_counter()
    with deterministic(torch.get_num_threads()), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(arch, dataset, class_names=getattr(ds, "class_names", None)).to(dev)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=per_epoch * epochs, pct_start=0.2)
        model.train()
        loss = torch.tensor(float("nan"))
        for _ in tqdm(range(epochs), disable=not progress, desc=f"{arch}-{dataset} random labels", leave=False):
            order = torch.randperm(len(y), generator=gen)
            for k in range(per_epoch):  # drop the incomplete batch (BatchNorm prefers full ones)
                idx = order[k * bs:(k + 1) * bs]
                loss = F.cross_entropy(model(x[idx].to(dev)), y[idx].to(dev))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
    model.eval()
    pred = _predict(model, x)
    info = {"arch": arch, "dataset": dataset, "n_train": len(y), "epochs": epochs, "seed": seed,
            "train_accuracy": float((pred == y).float().mean()),
            "true_label_agreement": float((pred == y_true).float().mean()),
            "chance": 1.0 / len(model.class_names), "final_loss": float(loss.detach()),
            "seconds": round(time.perf_counter() - t0, 2)}
    return model, info


def data_randomization(
    model: nn.Module,
    random_model: nn.Module,
    images: torch.Tensor,
    targets=None,
    methods: Sequence[str] = SALIENCY_METHODS,
    seed: int = 0,
    **saliency_kwargs,
) -> pd.DataFrame:
    """Data randomisation test (Adebayo et al.; Fig. 7b): maps of a normally trained model vs. the same
    architecture trained on permuted labels (:func:`train_random_label_model`), same images and targets.

    Parameters
    ----------
    model, random_model : nn.Module
        Same input format; neither is modified.
    images : Tensor ``[B, C, H, W]``
    targets : class indices ``[B]`` or None (= ``model``'s predictions; used for both models)
    methods : sequence of str
    **saliency_kwargs
        Passed to :func:`saliency_maps`.

    Returns
    -------
    DataFrame
        One row per (method, image): ``method``, ``image``, ``spearman_abs``, ``spearman_signed``.
    """
    _check_model(model)
    _check_model(random_model)
    images = _check_images(images)
    methods = _check_methods(methods, SALIENCY_METHODS)
    targets = _targets(model, images, targets)
    rows = []
    for meth in methods:
        a = saliency_maps(model, images, targets, meth, seed=seed, **saliency_kwargs)
        b = saliency_maps(random_model, images, targets, meth, seed=seed, **saliency_kwargs)
        corr = _map_pairs(a, b)
        rows += [{"method": meth, "image": i, "spearman_abs": float(corr["spearman_abs"][i]),
                  "spearman_signed": float(corr["spearman_signed"][i])} for i in range(images.shape[0])]
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------------
# Channel importance and removal (Fig. 9)
# --------------------------------------------------------------------------------------------------


def _leaf_order(model: nn.Module, image: torch.Tensor) -> list[str]:
    """Names of the leaf modules in the order a forward pass calls them."""
    leaves = {n: m for n, m in named_layers(model).items() if not any(True for _ in m.children())}
    order: list[str] = []
    handles = []
    try:
        for n, m in leaves.items():
            handles.append(m.register_forward_hook(lambda mod, i, o, n=n: order.append(n)))
        with torch.no_grad(), model_state(model, train=False):
            model(image)
    finally:
        for h in handles:
            h.remove()
    return order


class lrp_copy:
    """A deep copy of ``model`` ready for captum's ``LayerLRP`` at ``layer``'s output.

    The copy's ReLUs are not in-place, ``Normalize`` and ``Flatten`` get captum's epsilon rule, and the module
    whose input relevance gives ``layer``'s output relevance is found by tracing one forward pass (captum
    attributes to a leaf module with a rule; a stage block and its final ReLU have none). Entering yields
    ``(copy, name)``; call :meth:`attach_rules`, then ``LayerLRP(copy, get_layer(copy, name)).attribute(x,
    target, attribute_to_layer_input=True)``.

    Supported leaves are captum's: Conv2d, Linear, BatchNorm2d, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, ReLU,
    Dropout (plus ``Normalize``/``Flatten`` here). The in-place residual add of the zoo ResNet is not a module, so
    LRP treats it as a plain gradient -- use LRP on the VGG and AlexNet models only.
    """

    def __init__(self, model: nn.Module, layer: str, image: torch.Tensor):
        self.model = _check_model(model)
        self.layer = check_layers(model, layer)[0]
        self.image = image
        self.work: nn.Module | None = None

    def __enter__(self) -> tuple[nn.Module, str]:
        work = copy.deepcopy(self.model).eval()
        for m in work.modules():
            if isinstance(m, nn.ReLU):
                m.inplace = False
        order = _leaf_order(work, self.image[:1].to(_device(work)))
        inside = [i for i, n in enumerate(order) if n == self.layer or n.startswith(self.layer + ".")]
        if not inside or inside[-1] + 1 >= len(order):
            raise ValueError(f"LRP needs a module after layer {self.layer!r} in the forward pass; choose a layer "
                             "below the output (e.g. one of model.stage_names).")
        self.work = work
        return work, order[inside[-1] + 1]

    def attach_rules(self) -> None:
        """Give ``Normalize`` and ``Flatten`` of the copy the epsilon rule; call before every ``attribute``
        (captum deletes every module's ``rule`` at the end of a call)."""
        from captum.attr._utils.lrp_rules import EpsilonRule

        from xailib.models import Normalize

        for m in self.work.modules():
            if isinstance(m, (Normalize, nn.Flatten)):
                m.rule = EpsilonRule()

    def __exit__(self, *exc) -> None:
        self.work = None


def channel_scores(
    model: nn.Module,
    images: torch.Tensor,
    targets,
    layer: str,
    method: str = "gAP",
    *,
    n_steps: int = 16,
    batch_size: int = 64,
    seed: int = 0,
) -> torch.Tensor:
    """Importance of each channel of ``layer`` for each image's target class: ``[B, K]``, higher = more important.

    * ``gAP``: Eq. (4), ``alpha^l_k = 1/Z sum_{x,y} G^l_k * F^l_k`` (:class:`xailib.gap.GAP`, strategy "AA").
    * ``Conductance``: captum ``LayerConductance`` (Dhamdhere et al., ref. [21]), summed over positions.
    * ``InternalInfluence``: captum ``InternalInfluence`` (Leino et al., ref. [22]), summed over positions.
    * ``LRP``: captum ``LayerLRP``, epsilon rule, relevance of the layer's output summed over positions
      (on a copy, see :class:`lrp_copy`).
    * ``Random``: uniform random scores (seeded), i.e. a random ranking.

    Conductance and InternalInfluence integrate from a black image (zeros) in ``n_steps`` steps.

    Returns
    -------
    Tensor ``[B, K]`` on the CPU.
    """
    _check_model(model)
    images = _check_images(images)
    (method,) = _check_methods([method], CHANNEL_METHODS)
    layer = check_layers(model, layer)[0]
    targets = _targets(model, images, targets)
    batch_size = _check_positive_int(batch_size, "batch_size")
    dev = _device(model)
    if method == "Random":
        with torch.no_grad(), model_state(model, train=False):
            k = _layer_channels(model, layer, images[:1].to(dev))
        return torch.rand(images.shape[0], k, generator=torch.Generator().manual_seed(int(seed)))
    if method == "gAP":
        from xailib.gap.module import GAP

        gap = GAP(model)
        return torch.cat([gap.attribute(images[i:i + batch_size].to(dev), targets[i:i + batch_size],
                                        layer).contributions.cpu() for i in range(0, images.shape[0], batch_size)])
    from captum.attr import InternalInfluence, LayerConductance, LayerLRP

    out = []
    if method == "LRP":
        ctx = lrp_copy(model, layer, images)
        with ctx as (work, next_leaf), _quiet_captum():
            lrp = LayerLRP(work, get_layer(work, next_leaf))
            for i in range(0, images.shape[0], batch_size):
                x = images[i:i + batch_size].to(dev).detach().clone()
                ctx.attach_rules()
                r = lrp.attribute(x, target=targets[i:i + batch_size].to(dev), attribute_to_layer_input=True)
                out.append(_channel_sum(r).detach().cpu())
        return torch.cat(out)
    cls = LayerConductance if method == "Conductance" else InternalInfluence
    with model_state(model, train=False, requires_grad=False), _quiet_captum():
        algo = cls(model, get_layer(model, layer))
        for i in range(0, images.shape[0], batch_size):
            x = images[i:i + batch_size].to(dev).detach().clone()
            a = algo.attribute(x, baselines=torch.zeros_like(x), target=targets[i:i + batch_size].to(dev),
                               n_steps=n_steps, internal_batch_size=batch_size * n_steps)
            out.append(_channel_sum(a).detach().cpu())
    return torch.cat(out)


def _channel_sum(a) -> torch.Tensor:
    a = a[0] if isinstance(a, (tuple, list)) else a
    if a.dim() != 4:
        raise ValueError(f"Channel scores need a conv layer with output [B, K, h, w]; got {tuple(a.shape)}.")
    return a.sum(dim=(2, 3))


def _layer_channels(model: nn.Module, layer: str, image: torch.Tensor) -> int:
    shapes = []
    with replace_output(model, layer, lambda o: shapes.append(o.shape) or o):
        model(image)
    if not shapes or len(shapes[0]) != 4:
        raise ValueError(f"Layer {layer!r} must output a conv feature map [B, K, h, w]; got {shapes[:1]}.")
    return int(shapes[0][1])


def remove_channels(acts: torch.Tensor, scores: torch.Tensor, n: int, ablation: str = "mean") -> torch.Tensor:
    """Remove each image's top-``n`` channels by ``scores``: ``acts: [B, K, h, w]``, ``scores: [B, K]`` -> same shape.

    ``ablation="mean"`` sets a removed channel to its spatial mean on that image (Sec. 4.1's "average
    activation"), ``"zero"`` to 0. Ties in score go to the lower channel index.
    """
    if ablation not in ABLATIONS:
        raise ValueError(f"ablation must be one of {ABLATIONS}, got {ablation!r}.")
    if acts.dim() != 4 or scores.shape != acts.shape[:2]:
        raise ValueError(f"acts must be [B, K, h, w] and scores [B, K]; got {tuple(acts.shape)}, {tuple(scores.shape)}.")
    n = min(_check_positive_int(n, "n", zero=True), acts.shape[1])
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
    methods: Sequence[str] = CHANNEL_METHODS,
    n_values: Sequence[int] = (0, 1, 2, 4, 8, 16),
    ablation: str = "mean",
    *,
    n_steps: int = 16,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = False,
) -> pd.DataFrame:
    """Accuracy after removing the top-N channels of a layer, per method (Fig. 9).

    For each image, the channels of ``layer`` are ranked by :func:`channel_scores` for the class the unmodified
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
        From :data:`CHANNEL_METHODS`.
    n_values : sequence of int
        Numbers of channels removed (0 = the unmodified model).
    ablation : {"mean", "zero"}

    Returns
    -------
    DataFrame
        One row per (layer, method, N): ``layer``, ``method``, ``n_removed``, ``accuracy``, ``kept_prediction``
        (fraction of images whose prediction is unchanged), ``score_seconds`` (time to score the channels of all
        images with the method).
    """
    _check_model(model)
    images = _check_images(images)
    layers = check_layers(model, layers)
    methods = _check_methods(methods, CHANNEL_METHODS)
    if ablation not in ABLATIONS:
        raise ValueError(f"ablation must be one of {ABLATIONS}, got {ablation!r}.")
    n_values = [_check_positive_int(n, "each of n_values", zero=True) for n in n_values]
    if not n_values:
        raise ValueError("n_values must hold at least one number of channels to remove, e.g. (0, 1, 2, 4).")
    labels = _targets(model, images, labels)
    dev = _device(model)
    pred = _predict(model, images)
    rows = []
    bar = tqdm(total=len(layers) * len(methods), disable=not progress, desc="channel removal")
    for layer in layers:
        for meth in methods:
            t0 = time.perf_counter()
            scores = channel_scores(model, images, pred, layer, meth, n_steps=n_steps, batch_size=batch_size,
                                    seed=seed)
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


# --------------------------------------------------------------------------------------------------
# Summary tables
# --------------------------------------------------------------------------------------------------


def sanity_summary(cascade: pd.DataFrame, data: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per method: mean Spearman correlation (over images) after re-initialising the top group only, after the
    whole cascade, and (if ``data`` is given) between the true-label and permuted-label models.

    ``cascade`` from :func:`cascading_randomization`, ``data`` from :func:`data_randomization`.
    """
    last = int(cascade["step"].max())
    g = cascade.groupby(["method", "step"], sort=False)[["spearman_abs", "spearman_signed"]].mean()
    methods = list(dict.fromkeys(cascade["method"]))
    out = pd.DataFrame({
        "method": methods,
        "cascade_top_abs": [g.loc[(m, 1), "spearman_abs"] for m in methods],
        "cascade_all_abs": [g.loc[(m, last), "spearman_abs"] for m in methods],
        "cascade_all_signed": [g.loc[(m, last), "spearman_signed"] for m in methods],
    })
    if data is not None:
        d = data.groupby("method")[["spearman_abs", "spearman_signed"]].mean()
        out["data_abs"] = [d.loc[m, "spearman_abs"] if m in d.index else np.nan for m in methods]
        out["data_signed"] = [d.loc[m, "spearman_signed"] if m in d.index else np.nan for m in methods]
    return out


def seconds_per_map(cascade: pd.DataFrame) -> pd.DataFrame:
    """Mean wall-clock seconds per saliency map and method, from :func:`cascading_randomization`'s table.

    Kept apart from :func:`sanity_summary` because times differ from run to run while correlations do not.
    """
    methods = list(dict.fromkeys(cascade["method"]))
    return pd.DataFrame({"method": methods,
                         "seconds_per_map": [cascade[cascade.method == m]["seconds"].mean() for m in methods]})


def removal_summary(removal: pd.DataFrame) -> pd.DataFrame:
    """Accuracy per (layer, method) and number of channels removed (one column per N), the mean over N > 0, and
    the rank of each method within its layer by that mean (1 = lowest accuracy, i.e. the most important channels).

    ``removal`` from :func:`channel_removal_curve`.
    """
    wide = removal.pivot_table(index=["layer", "method"], columns="n_removed", values="accuracy", sort=False)
    wide.columns = [f"N={n}" for n in wide.columns]
    pos = [c for c in wide.columns if c != "N=0"]
    wide["mean_N>0"] = wide[pos].mean(axis=1) if pos else np.nan
    wide["rank"] = wide.groupby(level="layer")["mean_N>0"].rank(method="min").astype(int)
    return wide.reset_index()


def paper_comparison(cascade: pd.DataFrame | None = None, data: pd.DataFrame | None = None,
                     removal: pd.DataFrame | None = None) -> pd.DataFrame:
    """The paper's claims about Fig. 7 and Fig. 9 beside our measured numbers, one row per (quantity, method).

    The paper gives these results only as plots (no numbers in the text), so the ``paper`` column quotes its
    claim. ``rank`` is each method's rank for that quantity (1 = lowest value, ties share the best rank; for
    Fig. 9 the random ranking is not ranked, as in the paper). Data and models differ from the paper's
    (ResNet-18 / VGG-16 on ImageNet there; zoo models on ConceptWorld or Fashion-MNIST here).
    """
    rows = []

    def block(figure: str, quantity: str, paper: str, values: dict[str, float], exclude=("Random",)):
        comp = {m: v for m, v in values.items() if m not in exclude and np.isfinite(v)}
        for m, v in values.items():
            rank = 1 + sum(w < v for w in comp.values()) if m in comp else None
            rows.append({"figure": figure, "quantity": quantity, "method": m, "ours": float(v), "rank": rank,
                         "paper": paper if m == "gAP" else "plotted only"})

    if cascade is not None:
        summ = sanity_summary(cascade, data).set_index("method")
        claim = "low (plotted only); 'gAP obtains low correlation values'"
        block("7a", "Spearman |map| after top group re-initialised", claim, summ["cascade_top_abs"].to_dict())
        block("7a", "Spearman |map| after full cascade", claim, summ["cascade_all_abs"].to_dict())
        block("7a", "Spearman signed map after full cascade", claim, summ["cascade_all_signed"].to_dict())
    if data is not None:
        d = data.groupby("method", sort=False)[["spearman_abs", "spearman_signed"]].mean()
        claim = "low (plotted only); 'gAP is sensitive to the labeling of the data'"
        block("7b", "Spearman |map|, true vs permuted labels", claim, d["spearman_abs"].to_dict())
        block("7b", "Spearman signed map, true vs permuted labels", claim, d["spearman_signed"].to_dict())
    if removal is not None:
        summ = removal_summary(removal)
        claim = "lower accuracy than Conductance, InternalInfluence, LRP (plotted only)"
        for layer, g in summ.groupby("layer", sort=False):
            block("9", f"mean accuracy over N>0 removed, {layer}", claim, dict(zip(g["method"], g["mean_N>0"])))
    out = pd.DataFrame(rows, columns=["figure", "quantity", "method", "ours", "rank", "paper"])
    out["rank"] = out["rank"].astype("Int64")  # missing for the random ranking
    return out


# --------------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------------

_COLORS = {"gAP": "C3", "Gradient": "C0", "SmoothGrad": "C1", "GuidedBackprop": "C2", "IntegratedGradients": "C4",
           "Conductance": "C0", "InternalInfluence": "C1", "LRP": "C2", "Random": "0.5"}


def _short(name: str) -> str:
    return name.split(".")[-1]


def plot_cascading_randomization(df: pd.DataFrame, title: str | None = None):
    """Fig. 7(a): mean Spearman correlation (band: +-1 std over images) vs. cascade step, per method.

    Two panels: with absolute values and without. ``df`` from :func:`cascading_randomization`.
    """
    import matplotlib.pyplot as plt

    steps = df.drop_duplicates("step").sort_values("step")
    labels = ["original" if s == 0 else _short(r) for s, r in zip(steps["step"], steps["randomized"])]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    for ax, col, what in zip(axes, ("spearman_abs", "spearman_signed"), ("absolute value", "no absolute value")):
        for meth, g in df.groupby("method", sort=False):
            st = g.groupby("step")[col].agg(["mean", "std"]).reindex(steps["step"])
            ax.plot(range(len(st)), st["mean"], "o-", color=_COLORS.get(meth), label=meth, lw=2 if meth == "gAP" else 1)
            ax.fill_between(range(len(st)), st["mean"] - st["std"].fillna(0), st["mean"] + st["std"].fillna(0),
                            color=_COLORS.get(meth), alpha=0.12)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
        ax.set_xlabel("re-initialised from the top down to")
        ax.set_title(f"Spearman rank correlation ({what})")
    axes[0].set_ylabel("rank correlation with original map")
    axes[1].legend(fontsize=8, loc="lower left")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_data_randomization(df: pd.DataFrame, title: str | None = None):
    """Fig. 7(b): mean Spearman correlation (error bar: std over images) per method, with and without abs.

    ``df`` from :func:`data_randomization`.
    """
    import matplotlib.pyplot as plt

    stats = df.groupby("method", sort=False)[["spearman_abs", "spearman_signed"]].agg(["mean", "std"])
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    x = np.arange(len(stats))
    for j, (col, what) in enumerate((("spearman_abs", "absolute value"), ("spearman_signed", "no absolute value"))):
        ax.bar(x + (j - 0.5) * 0.38, stats[(col, "mean")], 0.38, yerr=stats[(col, "std")].fillna(0), capsize=3,
               label=what, color=[_COLORS.get(m) for m in stats.index], alpha=1.0 if j == 0 else 0.45)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xticks(x, stats.index, rotation=20)
    ax.set_ylabel("rank correlation\n(true vs. permuted labels)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title(title or "Data randomisation test")
    fig.tight_layout()
    return fig


def plot_cascading_examples(
    model: nn.Module,
    image: torch.Tensor,
    target: int | None = None,
    methods: Sequence[str] = SALIENCY_METHODS,
    layers: Sequence[str] | None = None,
    show_steps: Sequence[int] | None = None,
    random_model: nn.Module | None = None,
    seed: int = 0,
    **saliency_kwargs,
):
    """Visual comparison for one image: rows are methods, columns the original model and cascade steps
    (``sum_c |a_c|``, each map scaled to its own maximum), plus the permuted-label model if given."""
    import matplotlib.pyplot as plt

    from xailib.plotting import to_numpy_image

    image = _check_images(image)[:1]
    methods = _check_methods(methods, SALIENCY_METHODS)
    layers = randomization_layers(model) if layers is None else check_layers(model, layers)
    show = list(range(1, len(layers) + 1)) if show_steps is None else [int(s) for s in show_steps]
    t = _targets(model, image, None if target is None else [target])
    kw = dict(saliency_kwargs, seed=seed)
    cols = [("original", {m: saliency_maps(model, image, t, m, **kw) for m in methods})]
    with _cascade(model, layers, seed) as steps:
        for s, (name, rnd) in enumerate(steps, 1):
            if s in show:
                cols.append((f"-> {_short(name)}", {m: saliency_maps(rnd, image, t, m, **kw) for m in methods}))
            if s >= max(show, default=0):
                break
    if random_model is not None:
        cols.append(("permuted labels", {m: saliency_maps(random_model, image, t, m, **kw) for m in methods}))
    fig, axes = plt.subplots(len(methods), len(cols) + 1, figsize=(1.5 * (len(cols) + 1), 1.5 * len(methods)),
                             squeeze=False)
    for r, m in enumerate(methods):
        axes[r, 0].imshow(to_numpy_image(image[0]))
        axes[r, 0].set_ylabel(m, fontsize=8)
        for c, (name, maps) in enumerate(cols, 1):
            v = reduce_maps(maps[m], True)[0]
            axes[r, c].imshow(v.numpy(), cmap="gray", vmin=0, vmax=float(v.max()) or 1.0)
            if r == 0:
                axes[r, c].set_title(name, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def plot_channel_removal(df: pd.DataFrame, title: str | None = None):
    """Fig. 9: accuracy vs. number of channels removed, one panel per layer, one line per method.

    ``df`` from :func:`channel_removal_curve`. Lower is better (the removed channels mattered more).
    """
    import matplotlib.pyplot as plt

    layers = list(dict.fromkeys(df["layer"]))
    fig, axes = plt.subplots(1, len(layers), figsize=(3.6 * len(layers), 3.3), sharey=True, squeeze=False)
    for ax, layer in zip(axes[0], layers):
        for meth, g in df[df["layer"] == layer].groupby("method", sort=False):
            ax.plot(g["n_removed"], g["accuracy"], marker="o", color=_COLORS.get(meth), label=meth,
                    lw=3 if meth == "gAP" else 1, ls={"Random": "--", "LRP": ":"}.get(meth, "-"),
                    ms=7 if meth == "gAP" else 4, zorder=1 if meth == "gAP" else 2)  # gAP and LRP may coincide
        ax.set_title(_short(layer))
        ax.set_xlabel("top-N channels removed")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("accuracy")
    axes[0, -1].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
