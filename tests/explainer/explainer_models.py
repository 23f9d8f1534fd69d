"""Tiny models whose concepts, priors and removal effects can be computed by hand."""

import torch
from torch import nn


class OneConvMeanHead(nn.Module):
    """``x = conv(image)`` with a 1x1 conv of weights ``[1, 2]`` (channel 1 is the image, channel 2 twice it),
    then ``out_k = sum_i V[k, i] * mean_hw(relu(x_i))``.

    For an image ``a [1, H, W]`` with ``a >= 0``: ``y_i = sum_hw x_hwi = (1, 2) * sum(a)``, and
    ``sum_hw d out_k / d x_hwi = V[k, i]``."""

    V = torch.tensor([[3.0, -1.0], [0.5, 2.0]])

    def __init__(self, inplace: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1, bias=False)
        self.relu = nn.ReLU(inplace=inplace)
        self.fc = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, 2.0]).view(2, 1, 1, 1))
            self.fc.weight.copy_(self.V)

    def forward(self, x):
        return self.fc(self.relu(self.conv(x)).mean(dim=(2, 3)))


class LinearShared(nn.Module):
    """``image [B, 1, 1, 3] -> flatten -> shared (identity Linear) -> head W``: ``out = W x``, so
    ``d out_k / d x = W[k]`` and Case 2's ``w_i = (W_t . W_i) / ||W_i||^2``."""

    W = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 2.0, 0.0], [3.0, 0.0, 4.0]])

    def __init__(self):
        super().__init__()
        self.shared = nn.Linear(3, 3, bias=False)
        self.head = nn.Linear(3, 4, bias=False)
        with torch.no_grad():
            self.shared.weight.copy_(torch.eye(3))
            self.head.weight.copy_(self.W)

    def forward(self, x):
        return self.head(self.shared(x.flatten(1)))


class SmallMultiLabel(nn.Module):
    """A random non-linear multi-output conv net (tanh, in-place ReLU) for batched-vs-literal checks."""

    def __init__(self, seed: int = 0, outputs: int = 5):
        super().__init__()
        torch.manual_seed(seed)
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(6, 8, 3, padding=1))
        self.fc1 = nn.Linear(8, 16)
        self.act = nn.Tanh()
        self.fc2 = nn.Linear(16, outputs)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(torch.relu(self.features(x)).mean(dim=(2, 3)))))
