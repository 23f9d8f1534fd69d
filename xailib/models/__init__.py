"""The model zoo (small CNNs of the four families the papers explain) and torchvision classifiers by name.

>>> from xailib.models import load_model, stage_layers, dense_layer
>>> model = load_model("vgg-conceptworld")          # trained zoo model, sha256-checked, eval mode
>>> stage_layers(model)
['features.stage1', 'features.stage2', 'features.stage3', 'features.stage4', 'features.stage5']
>>> vgg = load_model("vgg16", weights=None)         # torchvision, random init, ImageNet Normalize first
>>> stage_layers(vgg), dense_layer(vgg)
(['features.3', 'features.8', 'features.15', 'features.22', 'features.29'], 'classifier.0')

Zoo names are ``"<arch>-<dataset>"`` (shallow tier) and ``"<arch>-deep-<dataset>"`` (deep tier) with arch in
:data:`ARCHS`, dataset in :data:`ZOO_DATASETS` and tier in :data:`TIERS` (:data:`ZOO_NAMES`;
:func:`parse_zoo_name` splits one into a :class:`ZooSpec`); the architectures and their stage schedules are
documented in :mod:`xailib.models.zoo`, the torchvision mapping in :mod:`xailib.models.torchvision_models`, the
trained checkpoints with their test accuracies in ``xailib/models/checkpoints/zoo.md`` (``make models``, or one
tier: ``make models TIER=deep``).
"""

from __future__ import annotations

from torch import nn

from xailib.checks import model_stages
from xailib.models.checkpoints import CheckpointError, load_state_dict
from xailib.models.torchvision_models import TorchvisionClassifier, WeightsUnavailableError, load_torchvision
from xailib.models.zoo import (
    ARCHS,
    SCHEDULES,
    TIERS,
    ZOO_DATASETS,
    ZOO_NAMES,
    Normalize,
    ZooNet,
    ZooSpec,
    build_model,
    parse_zoo_name,
)
from xailib.utils import resolve_device

__all__ = [
    "ARCHS",
    "ZOO_DATASETS",
    "TIERS",
    "ZOO_NAMES",
    "ZooSpec",
    "SCHEDULES",
    "Normalize",
    "ZooNet",
    "TorchvisionClassifier",
    "CheckpointError",
    "WeightsUnavailableError",
    "build_model",
    "load_model",
    "parse_zoo_name",
    "stage_layers",
    "dense_layer",
]


def load_model(name: str, *, device: str = "auto", weights: str | None = None, check: bool = True) -> nn.Module:
    """A model by name, in eval mode on ``device``.

    Parameters
    ----------
    name : str
        A zoo name (:data:`ZOO_NAMES`, e.g. ``"inception-fashion-mnist"`` or ``"vgg-deep-conceptworld"``): the
        shipped checkpoint is loaded after its sha256 is checked. Or a torchvision classifier name (``"vgg16"``,
        ``"resnet50"``, ``"googlenet"``, ``"alexnet"``, ...), wrapped with ImageNet normalisation first.
    device : str
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ... (:func:`xailib.utils.resolve_device`).
    weights : str or None
        torchvision only: None (random initialisation) or a weights name such as ``"IMAGENET1K_V1"``,
        which must be in the torch hub cache (nothing is downloaded).
    check : bool
        Zoo only: verify the checkpoint's sha256 against ``manifest.json``.

    Returns
    -------
    nn.Module
        A :class:`ZooNet` or :class:`TorchvisionClassifier`, with ``stage_names``, ``dense_name``,
        ``input_shape``, ``class_names``, ``arch`` and ``dataset`` (zoo models also ``tier``).

    Raises
    ------
    ValueError
        Unknown name (the message lists zoo and torchvision names).
    CheckpointError
        Zoo checkpoint missing (not trained yet, or not committed) or corrupted; the message names the
        ``make models`` command that builds it.
    WeightsUnavailableError
        torchvision weights not in the cache.
    """
    dev = resolve_device(device)
    if not isinstance(name, str):
        raise TypeError(f"name must be a str such as 'vgg-conceptworld' or 'vgg16', got {name!r}.")
    if name in ZOO_NAMES:
        if weights is not None:
            raise ValueError(f"weights= is for torchvision models; zoo model {name!r} loads its shipped checkpoint.")
        spec = parse_zoo_name(name)
        state, entry = load_state_dict(name, check=check)
        model = build_model(spec.arch, spec.dataset, spec.tier, class_names=entry.get("class_names"))
        model.load_state_dict(state)
        return model.to(dev).eval()
    from xailib.models.torchvision_models import torchvision_names

    tv = torchvision_names()
    if name not in tv:
        raise ValueError(
            f"Unknown model {name!r}. Zoo models: {', '.join(ZOO_NAMES)}; torchvision models: "
            f"vgg16, resnet50, googlenet, alexnet and the others of torchvision.models.list_models()."
        )
    return load_torchvision(name, weights).to(dev).eval()


def stage_layers(model: nn.Module) -> list[str]:
    """The five stage layer names of a zoo or wrapped torchvision model, low -> high.

    Raises
    ------
    ValueError
        If the model has no stage mapping (pass layer names explicitly; see ``xailib.layers.named_layers``);
        :func:`xailib.checks.model_stages` says how.
    """
    return model_stages(model)


def dense_layer(model: nn.Module) -> str:
    """The dense layer after the last conv stage (``"head.fc1"`` for zoo models, ``"classifier.0"`` for vgg16).

    Raises
    ------
    ValueError
        If the model has no such mapping.
    """
    name = getattr(model, "dense_name", None)
    if not name:
        raise ValueError(
            f"{type(model).__name__} has no dense layer mapping: load it with xailib.models.load_model or pass "
            "the layer name explicitly (xailib.layers.named_layers(model))."
        )
    return name
