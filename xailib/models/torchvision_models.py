"""torchvision classifiers by name, with ImageNet normalisation as their first layer and stage names.

:func:`load_torchvision` returns a :class:`TorchvisionClassifier`: its sub-modules are ``normalize``
followed by the torchvision model's own children under their own names, so layer names are torchvision's
(``"features.29"``, ``"layer4"``) and torchvision state dicts load unchanged.

Stages (outputs after the ReLU of the last conv at each resolution, the analogues of VGG-16's conv1_2 ...
conv5_3) and the dense layer MACE taps:

=========  ===============================================================  ==================
model      stage names                                                      dense name
=========  ===============================================================  ==================
vgg16      features.3, features.8, features.15, features.22, features.29   classifier.0
alexnet    features.1, features.4, features.7, features.9, features.11     classifier.1
resnet50   relu, layer1, layer2, layer3, layer4                             fc (see below)
googlenet  conv1, conv3, inception3b, inception4e, inception5b              fc (see below)
=========  ===============================================================  ==================

AlexNet has five convs at three resolutions: its stages are conv1, conv2 and conv3-conv5, each after its
ReLU. GoogLeNet's ``conv1``/``conv3`` (``BasicConv2d``) already apply their ReLU inside, and an inception
block's output is a concatenation of post-ReLU branches. ResNet-50 and GoogLeNet have no hidden dense layer
between the last conv stage and the logits: their ``dense_name`` is the output layer ``"fc"`` (MACE then taps
the logits layer; the zoo models have a real hidden ``head.fc1``). Other VGG variants (vgg11 ... vgg19_bn)
use the ReLU before each max-pool; other ResNets (resnet18 ... resnext, wide_resnet) the same names as
resnet50. Any other torchvision classifier loads, but has no stage names: pass layer names explicitly.
"""

from __future__ import annotations

import urllib.error
from pathlib import Path

import torch
from torch import nn

from xailib.models.zoo import Normalize

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "TorchvisionClassifier",
    "TORCHVISION_STAGES",
    "TORCHVISION_DENSE",
    "torchvision_names",
    "load_torchvision",
    "torchvision_blocks",
    "WeightsUnavailableError",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

TORCHVISION_STAGES: dict[str, list[str]] = {
    "vgg16": ["features.3", "features.8", "features.15", "features.22", "features.29"],
    "alexnet": ["features.1", "features.4", "features.7", "features.9", "features.11"],
    "resnet50": ["relu", "layer1", "layer2", "layer3", "layer4"],
    "googlenet": ["conv1", "conv3", "inception3b", "inception4e", "inception5b"],
}
TORCHVISION_DENSE: dict[str, str] = {"vgg16": "classifier.0", "alexnet": "classifier.1", "resnet50": "fc",
                                     "googlenet": "fc"}
_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
            "resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2")


class WeightsUnavailableError(FileNotFoundError):
    """Pretrained weights are neither in the torch hub cache nor downloadable here."""


def torchvision_names() -> list[str]:
    """Names of torchvision's ImageNet classifiers (``torchvision.models.list_models``)."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def _stage_names(name: str, model: nn.Module) -> tuple[list[str] | None, str | None]:
    if name in TORCHVISION_STAGES:
        return list(TORCHVISION_STAGES[name]), TORCHVISION_DENSE[name]
    if name.startswith("vgg"):
        feats = list(model.features)
        ends = [f"features.{i - 1}" for i, m in enumerate(feats) if isinstance(m, nn.MaxPool2d)]
        return ends, "classifier.0"
    if name in _RESNETS:
        return ["relu", "layer1", "layer2", "layer3", "layer4"], "fc"
    return None, None


class TorchvisionClassifier(nn.Module):
    """A torchvision classifier with ``Normalize(ImageNet mean, std)`` as its first step.

    The torchvision model's children are registered directly on this module after ``normalize``, so
    layer names are torchvision's and ``state_dict()`` keys are torchvision's. ``forward`` normalises and
    then calls the torchvision model's own ``forward`` (which uses the same child modules).

    Attributes
    ----------
    arch : str
        torchvision name, e.g. ``"vgg16"``.
    stage_names : list of str or None
        Five stage names low -> high (None for models without a mapping).
    dense_name : str or None
    input_shape : tuple
        ``(3, 224, 224)``.
    class_names : list of str
        ImageNet categories when weights were loaded, else ``["class0", ...]``.
    """

    def __init__(self, name: str, net: nn.Module, class_names: list[str], weights: str | None):
        super().__init__()
        self.normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD)
        for child_name, child in net.named_children():
            self.add_module(child_name, child)
        object.__setattr__(self, "_net", net)  # not registered: its children are already ours
        self.arch = name
        self.dataset = "imagenet"
        self.weights = weights
        self.class_names = list(class_names)
        self.input_shape = (3, 224, 224)
        self.stage_names, self.dense_name = _stage_names(name, net)

    @property
    def name(self) -> str:
        """``"<arch>"`` or ``"<arch>:<weights>"``, as zoo models have ``"<arch>-<dataset>"``."""
        return f"{self.arch}:{self.weights}" if self.weights else self.arch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``[B, 3, H, W]`` in [0, 1] -> logits ``[B, 1000]`` (auxiliary outputs dropped)."""
        self._net.training = self.training  # model_state may have set flags module by module
        out = self._net(self.normalize(x))
        return out.logits if hasattr(out, "logits") else out


def _cache_file(url: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name


def load_torchvision(name: str, weights: str | None = None, *, allow_download: bool = False) -> TorchvisionClassifier:
    """A torchvision classifier wrapped with ImageNet normalisation, in eval mode on the CPU.

    Parameters
    ----------
    name : str
        A torchvision classification model, e.g. ``"vgg16"``, ``"resnet50"``, ``"googlenet"``, ``"alexnet"``.
    weights : str or None
        None for a random initialisation, or a weights name such as ``"IMAGENET1K_V1"`` or ``"DEFAULT"``.
    allow_download : bool
        Let torchvision download weights that are not in the torch hub cache (off by default: nothing
        is downloaded on the default path).

    Raises
    ------
    ValueError
        Unknown model or weights name (the message lists valid ones).
    WeightsUnavailableError
        The weights file is not in the torch hub cache and cannot be downloaded.
    """
    import torchvision

    valid = torchvision_names()
    if name not in valid:
        raise ValueError(f"Unknown torchvision model {name!r}; valid names: {', '.join(valid)}.")
    kwargs: dict = {}
    if name == "googlenet":
        kwargs = {"aux_logits": False} if weights is not None else {"aux_logits": False, "init_weights": True}
    if name == "inception_v3":
        kwargs = {"aux_logits": weights is not None, "init_weights": weights is None}
    if weights is None:
        net = torchvision.models.get_model(name, weights=None, **kwargs)
        class_names = [f"class{i}" for i in range(_n_outputs(net))]
    else:
        enum = torchvision.models.get_model_weights(name)
        try:
            w = enum[weights] if weights != "DEFAULT" else enum.DEFAULT
        except KeyError:
            raise ValueError(
                f"Unknown weights {weights!r} for {name}; valid: {', '.join(['DEFAULT'] + [m.name for m in enum])}, "
                "or None for a random initialisation."
            ) from None
        cached = _cache_file(w.url)
        if not cached.is_file() and not allow_download:
            raise WeightsUnavailableError(
                f"weights {w.name} for {name} are not in the torch cache ({cached.parent}) and cannot be downloaded "
                f"here; copy {cached.name} there or use weights=None"
            )
        try:
            net = torchvision.models.get_model(name, weights=w, progress=False, **kwargs)
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            raise WeightsUnavailableError(
                f"weights {w.name} for {name} could not be downloaded ({exc}); copy {cached.name} to "
                f"{cached.parent} or use weights=None"
            ) from None
        class_names = list(w.meta.get("categories", []))
    model = TorchvisionClassifier(name, net, class_names, weights)
    return model.eval()


def torchvision_blocks(model: nn.Module) -> list[str]:
    """The blocks of a (wrapped) torchvision classifier, input -> output: its top-level children with parameters.

    A child that is a flat ``nn.Sequential`` of single layers (VGG's and AlexNet's ``features`` and
    ``classifier``) is split into its layers with parameters; other children (a ResNet ``layer3``, an inception
    block, ``fc``) stay whole. vgg16: ``features.0`` ... ``features.28``, ``classifier.0``, ``classifier.3``,
    ``classifier.6`` (16 blocks); resnet50: ``conv1``, ``bn1``, ``layer1`` ... ``layer4``, ``fc``; googlenet:
    ``conv1`` ... ``inception5b``, ``fc``. These are the groups a cascading randomisation re-initialises one at a
    time (reversed, top first), as Adebayo et al. do block by block for Inception v3.

    Raises
    ------
    TypeError
        If ``model`` is not an ``nn.Module`` with parameters.
    """
    if not isinstance(model, nn.Module) or not any(True for _ in model.parameters()):
        raise TypeError(f"model must be an nn.Module with parameters (a torchvision classifier), got {model!r:.80}.")
    out = []
    for name, child in model.named_children():
        if not any(True for _ in child.parameters()):
            continue
        items = list(child.named_children()) if isinstance(child, nn.Sequential) else []
        if items and all(not any(True for _ in m.children()) for _, m in items):
            out += [f"{name}.{i}" for i, m in items if any(True for _ in m.parameters())]
        else:
            out.append(name)
    return out


def _n_outputs(net: nn.Module) -> int:
    last = [m for m in net.modules() if isinstance(m, (nn.Linear, nn.Conv2d))][-1]
    return last.out_features if isinstance(last, nn.Linear) else last.out_channels
