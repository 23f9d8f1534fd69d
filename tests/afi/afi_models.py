"""A hand-checkable model for the AfI tests.

``HandNet``: conv 1x1 (1 -> 2 channels; channel 0 = x, channel 1 = 0.5 - x) -> in-place ReLU -> flatten ->
linear (8 -> 2) with ``Z0 = relu(ch0)[0, 0]`` and ``Z1 = sum relu(ch1)``, on 1 x 2 x 2 images. The in-place ReLU
right after the captured conv checks that records are not overwritten.
"""

import torch
from torch import nn


class HandNet(nn.Module):
    input_shape = (1, 2, 2)
    fixed_input_size = True

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(8, 2, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
            self.conv.bias.copy_(torch.tensor([0.0, 0.5]))
            self.fc.weight.copy_(torch.tensor([[1, 0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 1, 1, 1, 1]],
                                              dtype=torch.float))
        self.double().eval()

    def forward(self, x):
        return self.fc(self.relu(self.conv(x)).flatten(1))


def hand_data():
    """Images ``[4, 1, 2, 2]`` (two of class 0, two of class 1) and occluders ``[2, 1, 2, 2]``."""
    x = torch.tensor([[[0.5, 0.2], [0.9, 0.1]],
                      [[0.3, 0.6], [0.0, 1.0]],
                      [[1.0, 1.0], [0.0, 0.0]],
                      [[0.2, 0.7], [0.4, 0.9]]], dtype=torch.float64)[:, None]
    delta = torch.tensor([[[0.1, 0.3], [-0.2, 0.05]],
                          [[0.5, -0.5], [-0.5, 0.5]]], dtype=torch.float64)[:, None]
    return x, torch.tensor([0, 0, 1, 1]), delta
