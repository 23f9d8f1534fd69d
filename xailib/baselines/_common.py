"""Helpers shared by the comparison methods: seeded RNG, quiet captum, kept gradients, channel sums.

Each is a context manager that restores what it changed in ``finally`` (the convention of
:mod:`xailib.layers`), or a plain function of tensors.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["seeded", "quiet_captum", "kept_grads", "channel_sum"]


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Fork the global RNG (CPU, and the CUDA device in use), seed it with ``seed``, restore it on exit.

    The caller's random stream is untouched; the same seed gives the same numbers inside the block.
    """
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        yield


@contextmanager
def quiet_captum() -> Iterator[None]:
    """Silence captum's notices that are expected here (inputs made to require grad, ReLU hooks set)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*did not already require gradients.*")
        warnings.filterwarnings("ignore", message=".*Setting backward hooks on ReLU.*")
        yield


@contextmanager
def kept_grads(model: nn.Module) -> Iterator[None]:
    """Keep every parameter's ``.grad`` for the block (a library that calls ``model.zero_grad()`` cannot clear it)."""
    saved = [(p, p.grad) for p in model.parameters()]
    try:
        yield
    finally:
        for p, g in saved:
            p.grad = g


def channel_sum(a) -> torch.Tensor:
    """A layer attribution ``[B, K, h, w]`` (or a 1-tuple of it) summed over positions: ``[B, K]``."""
    a = a[0] if isinstance(a, (tuple, list)) else a
    if a.dim() != 4:
        raise ValueError(f"Channel scores need a conv layer with output [B, K, h, w]; got {tuple(a.shape)}. Choose a "
                         "conv layer or block, e.g. one of model.stage_names.")
    return a.sum(dim=(2, 3))
