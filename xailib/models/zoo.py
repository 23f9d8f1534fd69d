"""Small, CPU-trainable members of the four families the papers explain (VGG-16, ResNet-50, GoogLeNet, AlexNet).

The zoo has two tiers (:data:`TIERS`) of one model per family and dataset: ``"shallow"`` (the original zoo,
``"<arch>-<dataset>"``) and ``"deep"`` (deeper and wider members, ``"<arch>-deep-<dataset>"``).
Every zoo model is a :class:`ZooNet`::

    normalize            Normalize(mean, std)        images in [0, 1] -> standardised
    features.stage1      conv stage 1                (analogue of VGG-16 conv1_2 after its ReLU)
    features.pool2       down-sampling, if any       (MaxPool2d 2x2)
    features.stage2      ...
    ...
    features.stage5      conv stage 5                (analogue of conv5_3)
    head.pool            AdaptiveAvgPool2d(2)        (2x2 grid, see HEAD_POOL)
    head.flatten
    head.fc1             Linear(4 * C5, 128)         ``dense_name`` (MACE taps it)
    head.relu
    head.fc2             Linear(128, n_classes)      logits

The output of each ``features.stageK`` is the post-ReLU activation of the last conv of that stage, so
gAP can decompose T -> S5 -> ... -> S1 with :meth:`ZooNet.run_segment`.

Shallow families (every conv is followed by BatchNorm and ReLU(inplace=True), as in ``vgg16_bn``):

* ``vgg``: plain stages of 3x3 convs (1, 1, 2, 2, 2 per stage), max-pooling between stages.
* ``resnet``: a 3x3 stem conv (stage 1, analogue of ResNet-50's ``relu``), then one residual basic block
  per stage (two 3x3 convs, identity or 1x1-conv skip, ReLU after the add, ``out += identity`` in place);
  a max-pool before stage 2, then down-sampling by stride 2 in the first conv of a block.
* ``inception``: a 3x3 stem conv, then one inception block per stage (parallel 1x1 / 1x1->3x3 /
  1x1->5x5 / 3x3-maxpool->1x1 branches, concatenated), max-pooling between stages.
* ``alexnet``: a large first kernel with stride 2 (7x7 on 64x64 inputs, 5x5 on 28x28), a 5x5 conv,
  then three 3x3 convs at the same resolution (AlexNet's conv3-conv5).

Deep families (same skeleton, same rules; :data:`DEEP_CONVS` gives the convs per stage):

* ``vgg``: VGG-16-like, 2, 2, 3, 3, 3 convs per stage (VGG-16's profile, so stage k ends where VGG-16's
  conv k_2 / conv k_3 does, and stage 1 and stage 2 each hold two convs), max-pooling between stages; widths
  double from 12 to 96 over stages 1-4 and stage 5 has 256 channels on 64x64 inputs (16 to 128 on 28x28).
* ``resnet``: ResNet-18-like: a 3x3 stem conv (stage 1), a max-pool, then two basic blocks per stage for stages
  2-5 (ResNet-18's ``layer1`` .. ``layer4``, ``features.stageK.block1`` / ``block2``), stride 2 in the first
  block of stages 3-5 where the schedule halves (on 28x28 inputs stage 3 only: 7x7 is the floor), a 1x1-conv
  skip in the first block of stages 3-5; widths a quarter of ResNet-18's 64, 64, 128, 256, 512. The schedule
  is the shallow one (a stride-1 stem), not ResNet's stride-2 stem, so both tiers' stages line up.
* ``inception``: a 3x3 stem conv, then two inception blocks per stage for stages 2-5 (eight blocks; GoogLeNet
  has nine; ``features.stageK.block1`` / ``block2``), max-pooling between stages; wider than the shallow one
  in stages 3-5.
* ``alexnet``: the shallow layout (AlexNet has five convs: deeper means wider here) with AlexNet's width
  profile, half of its 64, 192, 384, 256, 256: a narrow conv1 and wide conv2-conv5.

Spatial side of the five stage outputs (:data:`SCHEDULES`; the same for both tiers, and conceptworld-hard's are
conceptworld's):

================  ==================================  ======================
arch              conceptworld(-hard) (64x64)         fashion-mnist (28x28)
================  ==================================  ======================
vgg               64, 32, 16, 8, 4                    28, 14, 7, 7, 7
resnet            64, 32, 16, 8, 4                    28, 14, 7, 7, 7
inception         64, 32, 16, 8, 4                    28, 14, 7, 7, 7
alexnet           32, 16, 8, 8, 8                     14, 7, 7, 7, 7
================  ==================================  ======================

Deep tier: widths (:data:`WIDTHS`), parameters, measured seconds of one training step ("step": forward +
backward + AdamW step, batch 128, ``torch.set_num_threads(1)``, deterministic algorithms;
``xailib.models.train.STEP_SECONDS``, beside the shallow member's) and the estimated training time with the
recipes of ``make models TIER=deep`` (ConceptWorld and conceptworld-hard: 10,000 images x 5 epochs = 390 steps
each, Fashion-MNIST: 60,000 x 3 = 1404 steps):

=========  =================  =========  ======  =======  =======  =================  =======  ======  =======  ========
arch       widths 64x64       params     step    shallow  train    widths 28x28       params   step    shallow  train
=========  =================  =========  ======  =======  =======  =================  =======  ======  =======  ========
vgg        12,24,48,96,256    1,804,462  1.05 s  0.28 s   6.8 min  16,32,64,96,128    803,994  0.37 s  0.12 s   8.7 min
resnet     16,16,32,64,128    767,130    0.73 s  0.39 s   4.7 min  16,16,32,64,128    766,842  0.36 s  0.16 s   8.4 min
inception  8,32,64,96,128     159,266    1.25 s  0.50 s   8.1 min  16,48,80,112,160   222,226  0.60 s  0.24 s   14.0 min
alexnet    32,96,192,128,128  684,138    0.52 s  0.13 s   3.4 min  32,96,192,128,128  680,234  0.22 s  0.09 s   5.1 min
=========  =================  =========  ======  =======  =======  =================  =======  ======  =======  ========

Per data set: 23.1 min for each ConceptWorld setting, 36.3 min for Fashion-MNIST, so the deep tier is about 82
core-minutes of training (plus about 3 of data generation and testing), about 43 minutes of wall time with two
processes (``--jobs 2``, the default); the 12 shallow members take about 31 core-minutes. Deep checkpoints
are 0.6-7.3 MB (vgg on 64x64 the largest).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from xailib.checks import check_images

__all__ = [
    "Normalize",
    "ZooNet",
    "BasicBlock",
    "Inception",
    "ARCHS",
    "ZOO_DATASETS",
    "TIERS",
    "ZOO_NAMES",
    "ZooSpec",
    "zoo_name",
    "parse_zoo_name",
    "INPUT_SIDES",
    "SCHEDULES",
    "WIDTHS",
    "DEEP_CONVS",
    "build_model",
]

ARCHS: tuple[str, ...] = ("vgg", "resnet", "inception", "alexnet")
ZOO_DATASETS: tuple[str, ...] = ("conceptworld", "conceptworld-hard", "fashion-mnist")
TIERS: tuple[str, ...] = ("shallow", "deep")


class ZooSpec(NamedTuple):
    """What a zoo name means: ``parse_zoo_name("resnet-deep-fashion-mnist")`` is
    ``ZooSpec(arch="resnet", dataset="fashion-mnist", tier="deep")``."""

    arch: str
    dataset: str
    tier: str


def zoo_name(arch: str, dataset: str, tier: str = "shallow") -> str:
    """``"<arch>-<dataset>"`` for the shallow tier, ``"<arch>-deep-<dataset>"`` for the deep tier."""
    return f"{arch}-{dataset}" if tier == "shallow" else f"{arch}-{tier}-{dataset}"


#: Every zoo model name: the shallow tier (dataset-major, e.g. ``"vgg-conceptworld"``), then the deep tier
#: (e.g. ``"vgg-deep-conceptworld"``).
ZOO_NAMES: tuple[str, ...] = tuple(zoo_name(a, d, t) for t in TIERS for d in ZOO_DATASETS for a in ARCHS)
_SPECS: dict[str, ZooSpec] = {zoo_name(a, d, t): ZooSpec(a, d, t) for t in TIERS for d in ZOO_DATASETS for a in ARCHS}


def parse_zoo_name(name: str) -> ZooSpec:
    """``"resnet-fashion-mnist"`` -> ``ZooSpec("resnet", "fashion-mnist", "shallow")``,
    ``"vgg-deep-conceptworld-hard"`` -> ``ZooSpec("vgg", "conceptworld-hard", "deep")``.

    Raises
    ------
    ValueError
        For a name not in :data:`ZOO_NAMES` (the message lists them).
    """
    spec = _SPECS.get(name) if isinstance(name, str) else None
    if spec is None:
        raise ValueError(f"Unknown zoo model {name!r}; valid zoo names: {', '.join(ZOO_NAMES)}.")
    return spec

#: Side of the (square) input images of each zoo dataset.
INPUT_SIDES: dict[str, int] = {"conceptworld": 64, "conceptworld-hard": 64, "fashion-mnist": 28}

#: Spatial side of the five stage outputs, per (arch, dataset, tier) -- checked by the tests.
SCHEDULES: dict[tuple[str, str, str], tuple[int, ...]] = {
    ("vgg", "conceptworld", "shallow"): (64, 32, 16, 8, 4),
    ("resnet", "conceptworld", "shallow"): (64, 32, 16, 8, 4),
    ("inception", "conceptworld", "shallow"): (64, 32, 16, 8, 4),
    ("alexnet", "conceptworld", "shallow"): (32, 16, 8, 8, 8),
    ("vgg", "fashion-mnist", "shallow"): (28, 14, 7, 7, 7),
    ("resnet", "fashion-mnist", "shallow"): (28, 14, 7, 7, 7),
    ("inception", "fashion-mnist", "shallow"): (28, 14, 7, 7, 7),
    ("alexnet", "fashion-mnist", "shallow"): (14, 7, 7, 7, 7),
    ("vgg", "conceptworld", "deep"): (64, 32, 16, 8, 4),
    ("resnet", "conceptworld", "deep"): (64, 32, 16, 8, 4),
    ("inception", "conceptworld", "deep"): (64, 32, 16, 8, 4),
    ("alexnet", "conceptworld", "deep"): (32, 16, 8, 8, 8),
    ("vgg", "fashion-mnist", "deep"): (28, 14, 7, 7, 7),
    ("resnet", "fashion-mnist", "deep"): (28, 14, 7, 7, 7),
    ("inception", "fashion-mnist", "deep"): (28, 14, 7, 7, 7),
    ("alexnet", "fashion-mnist", "deep"): (14, 7, 7, 7, 7),
}

#: Output channels of the five stages, per (arch, dataset, tier). Shallow: sized so that the shallow tier of
#: ConceptWorld and Fashion-MNIST retrained in about 15 minutes on 2 CPU cores (``xailib/models/checkpoints/zoo.md``
#: has the measured times). Deep: sized by measured step times so that the whole deep tier trains in about
#: 90 core-minutes (the table in the module docstring).
WIDTHS: dict[tuple[str, str, str], tuple[int, ...]] = {
    ("vgg", "conceptworld", "shallow"): (8, 16, 32, 48, 64),
    ("resnet", "conceptworld", "shallow"): (8, 16, 32, 48, 64),
    ("inception", "conceptworld", "shallow"): (8, 32, 48, 64, 96),
    ("alexnet", "conceptworld", "shallow"): (16, 32, 48, 64, 64),
    ("vgg", "fashion-mnist", "shallow"): (16, 32, 48, 48, 64),
    ("resnet", "fashion-mnist", "shallow"): (16, 32, 48, 48, 64),
    ("inception", "fashion-mnist", "shallow"): (16, 48, 64, 96, 128),
    ("alexnet", "fashion-mnist", "shallow"): (32, 48, 64, 64, 96),
    ("vgg", "conceptworld", "deep"): (12, 24, 48, 96, 256),
    ("resnet", "conceptworld", "deep"): (16, 16, 32, 64, 128),
    ("inception", "conceptworld", "deep"): (8, 32, 64, 96, 128),
    ("alexnet", "conceptworld", "deep"): (32, 96, 192, 128, 128),
    ("vgg", "fashion-mnist", "deep"): (16, 32, 64, 96, 128),
    ("resnet", "fashion-mnist", "deep"): (16, 16, 32, 64, 128),
    ("inception", "fashion-mnist", "deep"): (16, 48, 80, 112, 160),
    ("alexnet", "fashion-mnist", "deep"): (32, 96, 192, 128, 128),
}

# ConceptWorld's hard setting has ConceptWorld's 64x64 input: same schedules and widths.
for _key in [k for k in SCHEDULES if k[1] == "conceptworld"]:
    SCHEDULES[(_key[0], "conceptworld-hard", _key[2])] = SCHEDULES[_key]
    WIDTHS[(_key[0], "conceptworld-hard", _key[2])] = WIDTHS[_key]
del _key

#: Convs (vgg), basic blocks (resnet) or inception blocks (inception) of each of the five stages, per tier.
#: Stage 1 of resnet and inception is always one stem conv; alexnet has one conv per stage in both tiers.
DEEP_CONVS: dict[str, tuple[int, ...]] = {
    "vgg": (2, 2, 3, 3, 3),
    "resnet": (1, 2, 2, 2, 2),
    "inception": (1, 2, 2, 2, 2),
    "alexnet": (1, 1, 1, 1, 1),
}
_SHALLOW_CONVS: dict[str, tuple[int, ...]] = {
    "vgg": (1, 1, 2, 2, 2),
    "resnet": (1, 1, 1, 1, 1),
    "inception": (1, 1, 1, 1, 1),
    "alexnet": (1, 1, 1, 1, 1),
}

HIDDEN = 128
#: ``head.pool`` averages stage 5 to a HEAD_POOL x HEAD_POOL grid, keeping a coarse layout as VGG's flatten does
#: (with global average pooling and 3 epochs, vgg-fashion-mnist stopped at 89.6% test accuracy).
HEAD_POOL = 2

# Per-channel mean and std of the training images, for the Normalize layer of zoo models
# (ConceptWorld: measured on 1000 train images, seed 0; Fashion-MNIST: the usual figures for its 60k train set).
_STATS = {
    "conceptworld": ((0.475, 0.513, 0.491), (0.308, 0.264, 0.307)),
    "conceptworld-hard": ((0.481, 0.508, 0.490), (0.231, 0.201, 0.230)),  # 1000 hard-setting train images, seed 0
    "fashion-mnist": ((0.2860,), (0.3530,)),
}


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel; the first layer of every xailib model.

    Parameters
    ----------
    mean, std : sequence of float
        One value per input channel.

    Shapes: ``x [B, C, H, W] -> [B, C, H, W]``. The statistics are non-persistent buffers (they are
    part of the architecture, not of the checkpoint), so torchvision state dicts load unchanged.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std_t = torch.as_tensor(std, dtype=torch.float32).flatten()
        if mean_t.numel() != std_t.numel() or mean_t.numel() == 0:
            raise ValueError(f"mean and std need one value per channel each, got {mean_t.numel()} and {std_t.numel()}.")
        if bool((std_t <= 0).any()):
            raise ValueError(f"std must be positive, got {std_t.tolist()}.")
        self.register_buffer("mean", mean_t.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", std_t.view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.mean.shape[1]:
            raise ValueError(
                f"Normalize expects images [B, {self.mean.shape[1]}, H, W] in [0, 1], got shape {tuple(x.shape)}; "
                "add a batch dimension with x.unsqueeze(0) or check the number of channels."
            )
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


def conv_bn_relu(c_in: int, c_out: int, k: int = 3, stride: int = 1) -> nn.Sequential:
    """``Conv2d(k, stride, padding=k//2, bias=False) -> BatchNorm2d -> ReLU(inplace=True)``."""
    return nn.Sequential(OrderedDict(
        conv=nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, bias=False),
        bn=nn.BatchNorm2d(c_out),
        relu=nn.ReLU(inplace=True),
    ))


class BasicBlock(nn.Module):
    """Residual basic block: ``relu(bn2(conv2(relu(bn1(conv1(x))))) + skip(x))``.

    ``skip`` is the identity, or a 1x1 conv + BN when the stride or the channel count changes.
    Shapes: ``[B, c_in, H, W] -> [B, c_out, H / stride, W / stride]``.
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu2 = nn.ReLU(inplace=True)
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(OrderedDict(
                conv=nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), bn=nn.BatchNorm2d(c_out)))
        else:
            self.downsample = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity  # in place, as in torchvision's ResNet
        return self.relu2(out)


class Inception(nn.Module):
    """GoogLeNet-style inception block: four parallel branches concatenated along channels.

    Branches: ``1x1``; ``1x1 -> 3x3``; ``1x1 -> 5x5``; ``3x3 max-pool (stride 1) -> 1x1``; every conv
    with BN and ReLU. The output channels split as 1/4, 3/8, 1/8, 1/4 of ``c_out`` (GoogLeNet's 3a uses
    1/4, 1/2, 1/8, 1/8). Shapes: ``[B, c_in, H, W] -> [B, c_out, H, W]``.
    """

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        c1, c3, c5 = c_out // 4, 3 * c_out // 8, c_out // 8
        cp = c_out - c1 - c3 - c5
        self.branch1 = conv_bn_relu(c_in, c1, 1)
        self.branch3 = nn.Sequential(OrderedDict(reduce=conv_bn_relu(c_in, max(c3 // 2, 8), 1),
                                                 conv=conv_bn_relu(max(c3 // 2, 8), c3, 3)))
        self.branch5 = nn.Sequential(OrderedDict(reduce=conv_bn_relu(c_in, max(c5 // 2, 4), 1),
                                                 conv=conv_bn_relu(max(c5 // 2, 4), c5, 5)))
        self.branch_pool = nn.Sequential(OrderedDict(pool=nn.MaxPool2d(3, stride=1, padding=1),
                                                     proj=conv_bn_relu(c_in, cp, 1)))
        self.out_channels = c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch3(x), self.branch5(x), self.branch_pool(x)], dim=1)


class ZooNet(nn.Module):
    """A five-stage CNN with a Normalize layer first and a two-layer dense head (see the module docstring).

    Parameters
    ----------
    arch, dataset : str
    stages : sequence of 5 nn.Module
        Each maps the previous stage's output (after its pool) to a post-ReLU activation.
    pools : sequence of 5 (nn.Module or None)
        ``pools[k]`` runs before ``stages[k]``; ``pools[0]`` must be None.
    c_last : int
        Channels of stage 5.
    n_classes : int
    mean, std : sequence of float
        Input statistics for :class:`Normalize`.
    input_shape : tuple of int
        ``(C, H, W)``.
    class_names : sequence of str
    hidden : int
        Width of ``head.fc1``.
    tier : {"shallow", "deep"}
        Which tier of the zoo the architecture belongs to (part of :attr:`name`).

    Attributes
    ----------
    stage_names : list of str
        ``["features.stage1", ..., "features.stage5"]``, low to high.
    dense_name : str
        ``"head.fc1"``.
    """

    def __init__(self, arch: str, dataset: str, stages: Sequence[nn.Module], pools: Sequence[nn.Module | None],
                 c_last: int, n_classes: int, mean: Sequence[float], std: Sequence[float],
                 input_shape: tuple[int, int, int], class_names: Sequence[str], hidden: int = HIDDEN,
                 tier: str = "shallow"):
        super().__init__()
        if len(stages) != 5 or len(pools) != 5 or pools[0] is not None:
            raise ValueError("A ZooNet has exactly 5 stages and 5 pools, the first pool None.")
        if tier not in TIERS:
            raise ValueError(f"Unknown tier {tier!r}; valid tiers: {', '.join(TIERS)}.")
        self.arch = arch
        self.dataset = dataset
        self.tier = tier
        self.input_shape = tuple(input_shape)
        self.class_names = list(class_names)
        self.normalize = Normalize(mean, std)
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        for k, (pool, stage) in enumerate(zip(pools, stages), start=1):
            if pool is not None:
                layers[f"pool{k}"] = pool
            layers[f"stage{k}"] = stage
        self.features = nn.Sequential(layers)
        self.head = nn.Sequential(OrderedDict(
            pool=nn.AdaptiveAvgPool2d(HEAD_POOL),
            flatten=nn.Flatten(),
            fc1=nn.Linear(c_last * HEAD_POOL * HEAD_POOL, hidden),
            relu=nn.ReLU(inplace=True),
            fc2=nn.Linear(hidden, n_classes),
        ))
        self.stage_names = [f"features.stage{k}" for k in range(1, 6)]
        self.dense_name = "head.fc1"

    #: The zoo nets take images of their training size only (:func:`xailib.checks.check_images`).
    fixed_input_size = True

    @property
    def name(self) -> str:
        """The zoo name: ``"<arch>-<dataset>"`` (shallow tier) or ``"<arch>-deep-<dataset>"`` (deep tier)."""
        return zoo_name(self.arch, self.dataset, self.tier)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``[B, C, H, W]`` in [0, 1] -> logits ``[B, n_classes]``; ``(C, H, W)`` must be ``input_shape``."""
        if x.dim() == 4:
            check_images(x, self, move=False)
        return self.head(self.features(self.normalize(x)))

    def _stage_index(self, name: str, what: str) -> int:
        if name not in self.stage_names:
            raise ValueError(f"{what}={name!r} is not a stage of {self.name}; use one of {self.stage_names}.")
        return self.stage_names.index(name)

    def run_segment(self, acts: torch.Tensor, start: str, stop: str | None = None) -> torch.Tensor:
        """Run the network from the output of stage ``start`` to the output of stage ``stop`` (or the logits).

        Parameters
        ----------
        acts : torch.Tensor
            Output of stage ``start``, ``[B, C_start, H_start, W_start]``.
        start : str
            A name in :attr:`stage_names`.
        stop : str or None
            A later name in :attr:`stage_names`, or None for the logits ``[B, n_classes]``.

        Returns
        -------
        torch.Tensor
            Output of ``stop`` ``[B, C_stop, H_stop, W_stop]``, or logits. Modules are called normally,
            so hooks (``xailib.layers.capture``) on them fire.

        Raises
        ------
        ValueError
            If ``start``/``stop`` are not stage names or ``stop`` is not after ``start``.
        """
        i = self._stage_index(start, "start")
        j = len(self.stage_names) if stop is None else self._stage_index(stop, "stop")
        if j <= i:
            raise ValueError(f"stop={stop!r} must be a stage after start={start!r}; stage order: {self.stage_names}.")
        names = list(self.features._modules)
        lo = names.index(start.split(".")[-1]) + 1
        hi = len(names) if stop is None else names.index(stop.split(".")[-1]) + 1
        out = acts
        for n in names[lo:hi]:
            out = self.features._modules[n](out)
        if stop is None:
            out = self.head(out)
        return out


def _pool() -> nn.Module:
    return nn.MaxPool2d(2)


def _vgg(w: Sequence[int], c_in: int, down: Sequence[int], convs_per_stage: Sequence[int]):
    stages, pools, c = [], [], c_in
    for k in range(5):
        convs = OrderedDict()
        for j in range(convs_per_stage[k]):
            block = conv_bn_relu(c, w[k])
            convs[f"conv{j + 1}"], convs[f"bn{j + 1}"], convs[f"relu{j + 1}"] = block.conv, block.bn, block.relu
            c = w[k]
        stages.append(nn.Sequential(convs))
        pools.append(_pool() if k > 0 and down[k] == 2 else None)
    return stages, pools


def _repeat(make, n: int) -> nn.Module:
    """One block (``n == 1``, the shallow tier's module layout) or ``Sequential(block1, ..., block<n>)``."""
    if n == 1:
        return make(0)
    return nn.Sequential(OrderedDict((f"block{j + 1}", make(j)) for j in range(n)))


def _resnet(w: Sequence[int], c_in: int, down: Sequence[int], blocks: Sequence[int]):
    stages = [conv_bn_relu(c_in, w[0])]
    pools: list[nn.Module | None] = [None]
    for k in range(1, 5):
        if k == 1:  # like ResNet-50 / ResNet-18: a max-pool after the stem, then layer1 at stride 1
            pools.append(_pool() if down[k] == 2 else None)
            stride = 1
        else:
            pools.append(None)
            stride = down[k]
        # the first block of a stage changes the width and down-samples, the others keep both (ResNet's layers)
        stages.append(_repeat(lambda j, k=k, s=stride: BasicBlock(w[k - 1] if j == 0 else w[k], w[k],
                                                                   stride=s if j == 0 else 1), blocks[k]))
    return stages, pools


def _inception(w: Sequence[int], c_in: int, down: Sequence[int], blocks: Sequence[int]):
    stages: list[nn.Module] = [conv_bn_relu(c_in, w[0])]
    pools: list[nn.Module | None] = [None]
    for k in range(1, 5):
        pools.append(_pool() if down[k] == 2 else None)
        stages.append(_repeat(lambda j, k=k: Inception(w[k - 1] if j == 0 else w[k], w[k]), blocks[k]))
    return stages, pools


def _alexnet(w: Sequence[int], c_in: int, down: Sequence[int], k1: int):
    stages = [conv_bn_relu(c_in, w[0], k=k1, stride=2), conv_bn_relu(w[0], w[1], k=5)]
    stages += [conv_bn_relu(w[k - 1], w[k], k=3) for k in range(2, 5)]
    pools = [None] + [_pool() if down[k] == 2 else None for k in range(1, 5)]
    return stages, pools


def build_model(arch: str, dataset: str = "conceptworld", tier: str = "shallow", *,
                class_names: Sequence[str] | None = None, widths: Sequence[int] | None = None) -> ZooNet:
    """An untrained zoo model (train mode, default PyTorch initialisation).

    Parameters
    ----------
    arch : {"vgg", "resnet", "inception", "alexnet"}
    dataset : {"conceptworld", "conceptworld-hard", "fashion-mnist"}
    tier : {"shallow", "deep"}
        The zoo tier (module docstring): ``"shallow"``, the original members, or ``"deep"``.
    class_names : sequence of str, optional
        Defaults to the dataset's (``xailib.data.dataset_info``).
    widths : sequence of 5 int, optional
        Stage output channels; defaults to :data:`WIDTHS` ``[(arch, dataset, tier)]``.

    Returns
    -------
    ZooNet
        Input ``[B, C, S, S]`` with ``S = INPUT_SIDES[dataset]``, stage outputs of side
        :data:`SCHEDULES` ``[(arch, dataset, tier)]``, logits ``[B, len(class_names)]``.
    """
    if arch not in ARCHS:
        raise ValueError(f"Unknown arch {arch!r}; valid archs: {', '.join(ARCHS)}.")
    if dataset not in ZOO_DATASETS:
        raise ValueError(f"Unknown zoo dataset {dataset!r}; valid datasets: {', '.join(ZOO_DATASETS)}.")
    if tier not in TIERS:
        raise ValueError(f"Unknown tier {tier!r}; valid tiers: {', '.join(TIERS)}.")
    if class_names is None:
        from xailib.data import dataset_info

        class_names = dataset_info(dataset).class_names
    w = tuple(widths) if widths is not None else WIDTHS[(arch, dataset, tier)]
    if len(w) != 5:
        raise ValueError(f"widths needs 5 channel counts, one per stage, got {w}.")
    if arch == "inception" and any(c % 8 for c in w[1:]):
        raise ValueError(f"Inception widths after stage 1 must be multiples of 8, got {w}.")
    mean, std = _STATS[dataset]
    c_in = len(mean)
    side = INPUT_SIDES[dataset]
    sched = SCHEDULES[(arch, dataset, tier)]
    first = side // sched[0]
    down = (first,) + tuple(a // b for a, b in zip(sched[:-1], sched[1:]))
    convs = DEEP_CONVS[arch] if tier == "deep" else _SHALLOW_CONVS[arch]
    if arch == "vgg":
        stages, pools = _vgg(w, c_in, down, convs)
    elif arch == "resnet":
        stages, pools = _resnet(w, c_in, down, convs)
    elif arch == "inception":
        stages, pools = _inception(w, c_in, down, convs)
    else:
        stages, pools = _alexnet(w, c_in, down, k1=7 if side == 64 else 5)
    return ZooNet(arch, dataset, stages, pools, w[4], len(class_names), mean, std, (c_in, side, side), class_names,
                  tier=tier)
