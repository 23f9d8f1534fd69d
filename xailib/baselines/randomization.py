"""Adebayo et al.'s sanity checks for saliency maps (NeurIPS 2018), for any registered map method.

* :func:`randomized_copy` / :func:`cascading_randomization` -- re-initialise the layers of a *deep copy* of the
  model from the top down, cumulatively, and correlate each method's maps with those of the original model
  (the model-parameter randomisation test).
* :func:`train_random_label_model` / :func:`data_randomization` -- the same architecture trained on permuted
  labels, and the correlation of its maps with those of the normally trained model (the data randomisation
  test).

Maps come from :func:`~xailib.baselines.attribute` (any ``"map"`` method of the registry) and are compared by
Spearman rank correlation (:func:`xailib.metrics.spearman_rank`), both with the absolute value (``sum_c |a_c|``)
and without (``sum_c a_c``), as Adebayo et al. do. A method passes when the correlation is low.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from xailib.baselines._common import seeded
from xailib.baselines.registry import available, get_method, reduce_maps, resolve_layer, run_method, split_options
from xailib.batching import predict
from xailib.checks import check_images, check_layers, check_methods, check_model, check_positive_int, check_targets
from xailib.checks import model_device
from xailib.layers import get_layer, named_layers
from xailib.metrics import spearman_rank

__all__ = [
    "DEFAULT_MAP_METHODS",
    "randomization_layers",
    "reinitialize",
    "randomized_copy",
    "cascading_copy",
    "cascading_randomization",
    "train_random_label_model",
    "data_randomization",
]

#: The methods Adebayo et al. test that captum provides (the default of the tests here).
DEFAULT_MAP_METHODS: tuple[str, ...] = ("Gradient", "SmoothGrad", "GuidedBackprop", "IntegratedGradients")


def _has_own_state(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False))


def randomization_layers(model: nn.Module) -> list[str]:
    """Default groups of the cascade, top (logits) first.

    For a model with ``stage_names`` (zoo and wrapped torchvision models): every parametrised module after the
    last stage, one by one from the output down (``head.fc2``, ``head.fc1``), then the five stages from the top
    down (a stage is re-initialised as a whole, like Adebayo et al.'s Inception blocks). Otherwise: every module
    with parameters of its own, in reverse registration order.
    """
    check_model(model)
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
    with seeded(seed, model_device(module)):
        for m in module.modules():
            if hasattr(m, "reset_parameters") and _has_own_state(m):
                m.reset_parameters()
                if hasattr(m, "reset_running_stats"):
                    m.reset_running_stats()
                n += 1
    return n


@contextmanager
def randomized_copy(model: nn.Module, layers: str | Sequence[str], seed: int = 0) -> Iterator[nn.Module]:
    """A deep copy of ``model`` with ``layers`` re-initialised (:func:`reinitialize`, layer ``i`` with ``seed + i``).

    The model is untouched.

    Examples
    --------
    >>> with randomized_copy(model, ["head.fc2", "head.fc1"]) as rnd:
    ...     maps = attribute(rnd, x, targets, method="Gradient")
    """
    check_model(model)
    layers = check_layers(model, layers)
    work = copy.deepcopy(model)
    try:
        for i, name in enumerate(layers):
            reinitialize(get_layer(work, name), seed + i)
        yield work.eval()
    finally:
        del work


@contextmanager
def cascading_copy(model: nn.Module, layers: Sequence[str], seed: int = 0):
    """Yield an iterator over ``(name, copy)``: one deep copy whose layers are re-initialised one more per step.

    Step ``s`` (1-based) has re-initialised ``layers[:s]`` (layer ``i`` with ``seed + i``); the copy is the same
    object at every step. The model is untouched.
    """
    layers = check_layers(model, layers)
    work = copy.deepcopy(model).eval()

    def steps():
        for i, name in enumerate(layers):
            reinitialize(get_layer(work, name), seed + i)
            yield name, work

    try:
        yield steps()
    finally:
        del work


def _map_pairs(ref: torch.Tensor, other: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"spearman_abs": spearman_rank(reduce_maps(ref, "abs"), reduce_maps(other, "abs")),
            "spearman_signed": spearman_rank(reduce_maps(ref, "signed"), reduce_maps(other, "signed"))}


def _prepare(model, images, targets, methods, options):
    """Checked images, targets, method entries with their layers, and per-method options."""
    images = check_images(images, model, move=False)
    methods = check_methods(methods, available("map"), "map method")
    per_method = split_options(methods, "map", options)
    entries = {m: get_method(m, "map") for m in methods}
    layers = {m: resolve_layer(e, model, None) for m, e in entries.items()}
    targets = check_targets(targets, images.shape[0], model=model, images=images)
    return images, targets, methods, entries, layers, per_method


def cascading_randomization(
    model: nn.Module,
    images: torch.Tensor,
    targets="predicted",
    methods: Sequence[str] = DEFAULT_MAP_METHODS,
    layers: Sequence[str] | None = None,
    seed: int = 0,
    progress: bool = False,
    **options,
) -> pd.DataFrame:
    """Cascading model-parameter randomisation test (Adebayo et al.; the gAP paper's Fig. 7a).

    A deep copy of ``model`` has its layers re-initialised from the top down, cumulatively: step ``s``
    (1-based) re-initialises ``layers[:s]``. At each step, each method's map of each image is compared with the
    map of the original model by Spearman rank correlation, with and without absolute values. The targets stay
    those of the original model. A low correlation means the method depends on the parameters (it passes).

    Parameters
    ----------
    model : nn.Module
        Never modified (state dict and hooks unchanged).
    images : Tensor ``[B, C, H, W]``
    targets : class indices ``[B]``, an int, or ``"predicted"``/None
        ``"predicted"`` = the original model's predictions.
    methods : sequence of str
        Registered map methods (:func:`~xailib.baselines.available` ``("map")``), e.g. ``"gAP"``. The CAMs run at
        their default layer (the model's last stage).
    layers : sequence of str or None
        The cascade, top first; ``None`` = :func:`randomization_layers`.
    seed : int
        Seeds the re-initialisation (layer ``i`` with ``seed + i``) and the methods that take a seed
        (SmoothGrad's noise).
    **options
        Options of the methods (``top_n``, ``sg_samples``, ``ig_steps``, ``batch_size``, ...); each goes to the
        methods that take it (:func:`~xailib.baselines.split_options`).

    Returns
    -------
    DataFrame
        One row per (step, method, image): ``step`` (0 = original), ``randomized`` (the last group re-initialised,
        ``"none"`` at step 0), ``method``, ``image``, ``spearman_abs``, ``spearman_signed``, ``seconds`` (time of
        that step's maps for the method, per image).
    """
    check_model(model)
    images, targets, methods, entries, method_layers, per_method = _prepare(
        model, images, targets, methods, dict(options, seed=seed))
    layers = randomization_layers(model) if layers is None else check_layers(model, layers)
    rows = []

    def maps_of(m: nn.Module) -> dict[str, tuple[torch.Tensor, float]]:
        res = {}
        for meth in methods:
            t0 = time.perf_counter()
            a = run_method(entries[meth], m, images, targets, method_layers[meth], per_method[meth])
            res[meth] = (a, (time.perf_counter() - t0) / len(images))
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
    with cascading_copy(model, layers, seed) as steps:
        for s, (name, rnd) in enumerate(tqdm(steps, total=len(layers), disable=not progress, desc="cascade"), 1):
            add(s, name, maps_of(rnd))
    return pd.DataFrame(rows)


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

    n_train = check_positive_int(n_train, "n_train")
    epochs = check_positive_int(epochs, "epochs")
    batch_size = check_positive_int(batch_size, "batch_size")
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
    pred = predict(model, x)
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
    targets="predicted",
    methods: Sequence[str] = DEFAULT_MAP_METHODS,
    seed: int = 0,
    **options,
) -> pd.DataFrame:
    """Data randomisation test (Adebayo et al.; the gAP paper's Fig. 7b): maps of a normally trained model vs. the
    same architecture trained on permuted labels (:func:`train_random_label_model`), same images and targets.

    Parameters
    ----------
    model, random_model : nn.Module
        Same input format; neither is modified.
    images : Tensor ``[B, C, H, W]``
    targets : class indices ``[B]``, an int, or ``"predicted"``/None (= ``model``'s predictions; used for both)
    methods : sequence of str
        Registered map methods.
    seed : int
        Seed of the methods that take one (SmoothGrad), the same for both models.
    **options
        Options of the methods, each to the methods that take it.

    Returns
    -------
    DataFrame
        One row per (method, image): ``method``, ``image``, ``spearman_abs``, ``spearman_signed``.
    """
    check_model(model)
    check_model(random_model, "random_model")
    images, targets, methods, entries, method_layers, per_method = _prepare(
        model, images, targets, methods, dict(options, seed=seed))
    for meth, layer in method_layers.items():
        if layer is not None:
            check_layers(random_model, layer)
    rows = []
    for meth in methods:
        a = run_method(entries[meth], model, images, targets, method_layers[meth], per_method[meth])
        b = run_method(entries[meth], random_model, images, targets, method_layers[meth], per_method[meth])
        corr = _map_pairs(a, b)
        rows += [{"method": meth, "image": i, "spearman_abs": float(corr["spearman_abs"][i]),
                  "spearman_signed": float(corr["spearman_signed"][i])} for i in range(images.shape[0])]
    return pd.DataFrame(rows)
