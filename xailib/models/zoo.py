"""Small, CPU-trainable members of the four families the papers explain (VGG-16, ResNet-50, GoogLeNet, AlexNet).

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

Families (every conv is followed by BatchNorm and ReLU(inplace=True), as in ``vgg16_bn``):

* ``vgg``: plain stages of 3x3 convs, max-pooling between stages.
* ``resnet``: a 3x3 stem conv (stage 1, analogue of ResNet-50's ``relu``), then one residual basic block
  per stage (two 3x3 convs, identity or 1x1-conv skip, ReLU after the add, ``out += identity`` in place);
  a max-pool before stage 2, then down-sampling by stride 2 in the first conv of a block.
* ``inception``: a 3x3 stem conv, then one inception block per stage (parallel 1x1 / 1x1->3x3 /
  1x1->5x5 / 3x3-maxpool->1x1 branches, concatenated), max-pooling between stages.
* ``alexnet``: a large first kernel with stride 2 (7x7 on 64x64 inputs, 5x5 on 28x28), a 5x5 conv,
  then three 3x3 convs at the same resolution (AlexNet's conv3-conv5).

Spatial side of the five stage outputs (:data:`SCHEDULES`):

================  ====================  ======================
arch              conceptworld (64x64)  fashion-mnist (28x28)
================  ====================  ======================
vgg               64, 32, 16, 8, 4      28, 14, 7, 7, 7
resnet            64, 32, 16, 8, 4      28, 14, 7, 7, 7
inception         64, 32, 16, 8, 4      28, 14, 7, 7, 7
alexnet           32, 16, 8, 8, 8       14, 7, 7, 7, 7
================  ====================  ======================
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

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
    "SCHEDULES",
    "WIDTHS",
    "build_model",
]

ARCHS: tuple[str, ...] = ("vgg", "resnet", "inception", "alexnet")
ZOO_DATASETS: tuple[str, ...] = ("conceptworld", "fashion-mnist")

#: Spatial side of the five stage outputs, per (arch, dataset) -- checked by the tests.
SCHEDULES: dict[tuple[str, str], tuple[int, ...]] = {
    ("vgg", "conceptworld"): (64, 32, 16, 8, 4),
    ("resnet", "conceptworld"): (64, 32, 16, 8, 4),
    ("inception", "conceptworld"): (64, 32, 16, 8, 4),
    ("alexnet", "conceptworld"): (32, 16, 8, 8, 8),
    ("vgg", "fashion-mnist"): (28, 14, 7, 7, 7),
    ("resnet", "fashion-mnist"): (28, 14, 7, 7, 7),
    ("inception", "fashion-mnist"): (28, 14, 7, 7, 7),
    ("alexnet", "fashion-mnist"): (14, 7, 7, 7, 7),
}

#: Output channels of the five stages, per (arch, dataset): sized so that the whole zoo retrains in about
#: 20 minutes on 2 CPU cores (see ``xailib/models/checkpoints/zoo.md`` for the measured times).
WIDTHS: dict[tuple[str, str], tuple[int, ...]] = {
    ("vgg", "conceptworld"): (8, 16, 32, 48, 64),
    ("resnet", "conceptworld"): (8, 16, 32, 48, 64),
    ("inception", "conceptworld"): (8, 32, 48, 64, 96),
    ("alexnet", "conceptworld"): (16, 32, 48, 64, 64),
    ("vgg", "fashion-mnist"): (16, 32, 48, 48, 64),
    ("resnet", "fashion-mnist"): (16, 32, 48, 48, 64),
    ("inception", "fashion-mnist"): (16, 48, 64, 96, 128),
    ("alexnet", "fashion-mnist"): (32, 48, 64, 64, 96),
}

HIDDEN = 128
#: ``head.pool`` averages stage 5 to a HEAD_POOL x HEAD_POOL grid, keeping a coarse layout as VGG's flatten does
#: (with global average pooling and 3 epochs, vgg-fashion-mnist stopped at 89.6% test accuracy).
HEAD_POOL = 2

# Per-channel mean and std of the training images, for the Normalize layer of zoo models
# (ConceptWorld: measured on 1000 train images, seed 0; Fashion-MNIST: the usual figures for its 60k train set).
_STATS = {
    "conceptworld": ((0.475, 0.513, 0.491), (0.308, 0.264, 0.307)),
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

    Attributes
    ----------
    stage_names : list of str
        ``["features.stage1", ..., "features.stage5"]``, low to high.
    dense_name : str
        ``"head.fc1"``.
    """

    def __init__(self, arch: str, dataset: str, stages: Sequence[nn.Module], pools: Sequence[nn.Module | None],
                 c_last: int, n_classes: int, mean: Sequence[float], std: Sequence[float],
                 input_shape: tuple[int, int, int], class_names: Sequence[str], hidden: int = HIDDEN):
        super().__init__()
        if len(stages) != 5 or len(pools) != 5 or pools[0] is not None:
            raise ValueError("A ZooNet has exactly 5 stages and 5 pools, the first pool None.")
        self.arch = arch
        self.dataset = dataset
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
        """The zoo name, ``"<arch>-<dataset>"``."""
        return f"{self.arch}-{self.dataset}"

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


def _vgg(w: Sequence[int], c_in: int, down: Sequence[int]):
    convs_per_stage = (1, 1, 2, 2, 2)
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


def _resnet(w: Sequence[int], c_in: int, down: Sequence[int]):
    stages = [conv_bn_relu(c_in, w[0])]
    pools: list[nn.Module | None] = [None]
    for k in range(1, 5):
        if k == 1:  # like ResNet-50: a max-pool after the stem, then layer1 at stride 1
            pools.append(_pool() if down[k] == 2 else None)
            stride = 1
        else:
            pools.append(None)
            stride = down[k]
        stages.append(BasicBlock(w[k - 1], w[k], stride=stride))
    return stages, pools


def _inception(w: Sequence[int], c_in: int, down: Sequence[int]):
    stages: list[nn.Module] = [conv_bn_relu(c_in, w[0])]
    pools: list[nn.Module | None] = [None]
    for k in range(1, 5):
        pools.append(_pool() if down[k] == 2 else None)
        stages.append(Inception(w[k - 1], w[k]))
    return stages, pools


def _alexnet(w: Sequence[int], c_in: int, down: Sequence[int], k1: int):
    stages = [conv_bn_relu(c_in, w[0], k=k1, stride=2), conv_bn_relu(w[0], w[1], k=5)]
    stages += [conv_bn_relu(w[k - 1], w[k], k=3) for k in range(2, 5)]
    pools = [None] + [_pool() if down[k] == 2 else None for k in range(1, 5)]
    return stages, pools


def build_model(arch: str, dataset: str = "conceptworld", *, class_names: Sequence[str] | None = None,
                widths: Sequence[int] | None = None) -> ZooNet:
    """An untrained zoo model (train mode, default PyTorch initialisation).

    Parameters
    ----------
    arch : {"vgg", "resnet", "inception", "alexnet"}
    dataset : {"conceptworld", "fashion-mnist"}
    class_names : sequence of str, optional
        Defaults to the dataset's (``xailib.data.dataset_info``).
    widths : sequence of 5 int, optional
        Stage output channels; defaults to :data:`WIDTHS` ``[(arch, dataset)]``.

    Returns
    -------
    ZooNet
    """
    if arch not in ARCHS:
        raise ValueError(f"Unknown arch {arch!r}; valid archs: {', '.join(ARCHS)}.")
    if dataset not in ZOO_DATASETS:
        raise ValueError(f"Unknown zoo dataset {dataset!r}; valid datasets: {', '.join(ZOO_DATASETS)}.")
    if class_names is None:
        from xailib.data import dataset_info

        class_names = dataset_info(dataset).class_names
    w = tuple(widths) if widths is not None else WIDTHS[(arch, dataset)]
    if len(w) != 5:
        raise ValueError(f"widths needs 5 channel counts, one per stage, got {w}.")
    if arch == "inception" and any(c % 8 for c in w[1:]):
        raise ValueError(f"Inception widths after stage 1 must be multiples of 8, got {w}.")
    mean, std = _STATS[dataset]
    c_in = len(mean)
    side = 64 if dataset == "conceptworld" else 28
    sched = SCHEDULES[(arch, dataset)]
    first = side // sched[0]
    down = (first,) + tuple(a // b for a, b in zip(sched[:-1], sched[1:]))
    if arch == "vgg":
        stages, pools = _vgg(w, c_in, down)
    elif arch == "resnet":
        stages, pools = _resnet(w, c_in, down)
    elif arch == "inception":
        stages, pools = _inception(w, c_in, down)
    else:
        stages, pools = _alexnet(w, c_in, down, k1=7 if dataset == "conceptworld" else 5)
    return ZooNet(arch, dataset, stages, pools, w[4], len(class_names), mean, std, (c_in, side, side), class_names)
