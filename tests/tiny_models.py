"""Tiny models for the gAP tests: hand-checkable, VGG-like, residual with BatchNorm, Inception-like.

The staged models expose ``stage_names`` and ``run_segment(acts, start, stop=None)`` like the zoo's
models; every ReLU is in-place.
"""

from __future__ import annotations

import torch
from torch import nn


class OneConvLinear(nn.Module):
    """conv 1x1 (1 -> 2 channels, weights [1, 2], no bias) -> in-place ReLU -> flatten -> linear (8 -> 2).

    Class 0 reads channel 0 with weights [[1, 0], [0, 1]] and channel 1 with [[0, 0], [1, -1]];
    class 1 reads everything with weight 1. All answers of the tests can be computed by hand.
    """

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(8, 2, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, 2.0]).view(2, 1, 1, 1))
            self.fc.weight.copy_(torch.tensor([[1, 0, 0, 1, 0, 0, 1, -1], [1, 1, 1, 1, 1, 1, 1, 1]], dtype=torch.float))

    def forward(self, x):
        return self.fc(self.relu(self.conv(x)).flatten(1))


class Staged(nn.Module):
    """Base class: ``self.stages`` (ModuleDict, in order) then ``self.head``; provides run_segment."""

    stage_names: list[str]

    def run_segment(self, acts, start, stop=None):
        names = list(self.stages.keys())
        if start not in names or (stop is not None and stop not in names):
            raise ValueError(f"run_segment: unknown stage {start!r} or {stop!r}; stages are {names}.")
        i, j = names.index(start), (names.index(stop) if stop is not None else len(names) - 1)
        if j < i or (stop is not None and j == i):
            raise ValueError(f"run_segment: stop {stop!r} must come after start {start!r}.")
        x = acts
        for n in names[i + 1 : j + 1]:
            x = self.stages[n](x)
        return self.head(x) if stop is None else x

    def forward(self, x):
        for stage in self.stages.values():
            x = stage(x)
        return self.head(x)


def _conv(cin, cout):
    return [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True)]


class TinyVGG(Staged):
    """Three VGG stages (2 convs each, max-pool between) on 3 x 16 x 16 input; max-pool + linear head."""

    def __init__(self, widths=(4, 6, 8), classes=5):
        super().__init__()
        a, b, c = widths
        self.stages = nn.ModuleDict(
            {
                "stage1": nn.Sequential(*_conv(3, a), *_conv(a, a)),
                "stage2": nn.Sequential(nn.MaxPool2d(2), *_conv(a, b), *_conv(b, b)),
                "stage3": nn.Sequential(nn.MaxPool2d(2), *_conv(b, c), *_conv(c, c)),
            }
        )
        self.head = nn.Sequential(nn.MaxPool2d(2), nn.Flatten(), nn.Linear(c * 4, classes))
        self.stage_names = ["stages.stage1", "stages.stage2", "stages.stage3"]

    def run_segment(self, acts, start, stop=None):
        strip = lambda s: None if s is None else s.removeprefix("stages.")  # noqa: E731
        return super().run_segment(acts, strip(start), strip(stop))


class Block(nn.Module):
    """ResNet basic block: conv-BN-ReLU-conv-BN, ``out += identity`` in place, in-place ReLU."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.out_relu = nn.ReLU(inplace=True)

    def forward(self, x):
        identity = x if self.down is None else self.down(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.out_relu(out)


class TinyResNet(Staged):
    """Stem + three residual stages with BatchNorm; global-average-pool + linear head."""

    def __init__(self, classes=5):
        super().__init__()
        self.stages = nn.ModuleDict(
            {
                "s1": nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(inplace=True),
                                    Block(4, 4)),
                "s2": Block(4, 6, stride=2),
                "s3": Block(6, 8, stride=2),
            }
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, classes))
        self.stage_names = ["stages.s1", "stages.s2", "stages.s3"]

    def run_segment(self, acts, start, stop=None):
        strip = lambda s: None if s is None else s.removeprefix("stages.")  # noqa: E731
        return super().run_segment(acts, strip(start), strip(stop))


class Inception(nn.Module):
    """Inception-style block: 1x1, 3x3 and pool->1x1 branches concatenated (in-place ReLUs)."""

    def __init__(self, cin, c1, c3, cp):
        super().__init__()
        self.b1 = nn.Sequential(nn.Conv2d(cin, c1, 1), nn.ReLU(inplace=True))
        self.b3 = nn.Sequential(nn.Conv2d(cin, c3, 1), nn.ReLU(inplace=True), nn.Conv2d(c3, c3, 3, padding=1),
                                nn.ReLU(inplace=True))
        self.bp = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(cin, cp, 1), nn.ReLU(inplace=True))

    def forward(self, x):
        return torch.cat([self.b1(x), self.b3(x), self.bp(x)], dim=1)


class TinyInception(nn.Module):
    """Stem conv, two Inception blocks with a max-pool between, GAP + linear. No run_segment."""

    def __init__(self, classes=5):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(inplace=True))
        self.inc1 = Inception(6, 2, 3, 2)
        self.pool = nn.MaxPool2d(2)
        self.inc2 = Inception(7, 3, 3, 2)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, classes))

    layers = ["stem", "inc1", "inc2"]

    def forward(self, x):
        return self.head(self.inc2(self.pool(self.inc1(self.stem(x)))))


class Boom(nn.Module):
    """Identity that raises ``RuntimeError('boom')`` while ``armed`` (for the no-leftover-hooks tests)."""

    def __init__(self):
        super().__init__()
        self.armed = False

    def forward(self, x):
        if self.armed:
            raise RuntimeError("boom")
        return x


def make(cls, seed=0, double=True, **kw):
    """A seeded model in eval mode (float64 by default, so near-ties in rankings do not flip)."""
    torch.manual_seed(seed)
    model = cls(**kw)
    with torch.no_grad():  # lively ReLUs (He init, small positive biases) and non-trivial BatchNorm statistics
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)) and not isinstance(model, OneConvLinear):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    m.bias.uniform_(0.0, 0.1)
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    model.eval()
    return model.double() if double else model


def image(seed=1, size=16, double=True, batch=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, size, size, generator=g)
    return x.double() if double else x


def same_state(model, saved) -> bool:
    """Whether ``model``'s state dict equals ``saved`` (a copy taken before a call), tensor by tensor."""
    now = model.state_dict()
    return now.keys() == saved.keys() and all(torch.equal(now[k], saved[k]) for k in saved)
