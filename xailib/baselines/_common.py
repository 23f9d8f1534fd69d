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

__all__ = ["seeded", "quiet_captum", "kept_grads", "channel_sum", "class_concept_rows", "concept_names"]


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


def concept_names(concept_sets, what: str = "concept_sets") -> list[str]:
    """The names of a concept method's probe sets (ConceptSets), checked: a non-empty list of distinct names."""
    if concept_sets is None or isinstance(concept_sets, (str, bytes)) or not len(concept_sets):
        raise ValueError(f"{what} must be a non-empty list of ConceptSet (e.g. xailib.afi.evaluation."
                         f"part_probe_sets(world, parts, n)), got {concept_sets!r}.")
    names = [getattr(s, "name", None) for s in concept_sets]
    if any(not isinstance(n, str) for n in names) or len(set(names)) != len(names):
        raise ValueError(f"{what} must be ConceptSets with distinct names, got {names}.")
    return names


def class_concept_rows(table, targets: torch.Tensor, concepts, value: str = "score") -> torch.Tensor:
    """A global method's scores per (class, concept) as one row per image: ``[B, P]``, row ``b`` holding the
    scores of class ``targets[b]`` for ``concepts`` (NaN where the table has no such pair).

    ``table`` is a DataFrame with ``class``, ``concept`` and ``value`` columns."""
    lookup = {(int(k), str(c)): float(v) for k, c, v in zip(table["class"], table["concept"], table[value])}
    rows = [[lookup.get((int(k), c), float("nan")) for c in concepts] for k in targets.tolist()]
    return torch.tensor(rows, dtype=torch.float32).reshape(len(targets), len(concepts))
