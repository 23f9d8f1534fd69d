"""Batching: chunking under a memory cap, and batched forward passes on the model's device.

* :func:`chunked` -- run a function over ``range(n)`` in chunks whose saved-for-backward memory stays
  under a cap (measured on the first chunk with :class:`xailib.layers.SavedBytes`).
* :func:`first_supported` -- the first of several ways to batch a computation that the model's ops
  support; only an error that says "cannot batch this way" (:func:`is_batching_error`) moves on, so an
  out-of-memory error, or a layer that raises, reaches the caller.
* :func:`map_batches` -- a function of (images, targets) over batches of images on the model's device.
* :func:`class_scores`, :func:`predict` -- logits ``[B, C]`` and predicted classes ``[B]`` in eval mode,
  in batches, on the model's device (the model's mode is restored).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
from torch import nn
from tqdm.auto import tqdm

from xailib.checks import check_class_scores, check_images, check_model, check_positive_int, model_device
from xailib.layers import SavedBytes, model_state

__all__ = [
    "DEFAULT_MAX_BATCH_BYTES",
    "chunked",
    "is_batching_error",
    "first_supported",
    "map_batches",
    "class_scores",
    "predict",
]

T = TypeVar("T")

DEFAULT_MAX_BATCH_BYTES = 1 << 30  # 1 GiB of saved activations per chunk


def chunked(
    n: int,
    run: Callable[[slice], list[torch.Tensor]],
    model: nn.Module,
    max_batch_bytes: int | None,
    item_bytes: int = 0,
    progress: bool = False,
    desc: str = "chunks",
) -> list[torch.Tensor]:
    """Run ``run(slice)`` over ``range(n)`` in chunks; concatenate each returned tensor along dim 0.

    Parameters
    ----------
    n : int
        Number of items.
    run : callable
        Maps a slice of items to a list of tensors ``[len(slice), ...]``.
    model : nn.Module
        Its parameters are not counted as saved memory.
    max_batch_bytes : int or None
        With ``None`` everything goes in one chunk. Otherwise the first chunk holds one item, the bytes
        autograd saves for it (plus ``item_bytes``) are measured, and the remaining items go in chunks of
        ``max(1, max_batch_bytes // bytes_per_item)``.
    progress : bool
        A tqdm bar over items.

    Returns
    -------
    list of Tensor
        The concatenated outputs of ``run``.
    """
    if max_batch_bytes is not None and (not isinstance(max_batch_bytes, int) or max_batch_bytes <= 0):
        raise ValueError(f"max_batch_bytes must be a positive int (bytes) or None, got {max_batch_bytes!r}.")
    parts: list[list[torch.Tensor]] = []
    start = 0
    size = n if max_batch_bytes is None else 1
    bar = tqdm(total=n, desc=desc, leave=False) if progress else None  # a disabled tqdm still costs ~0.1 ms
    try:
        while start < n:
            sl = slice(start, min(n, start + size))
            if max_batch_bytes is not None and start == 0:
                with SavedBytes(model) as meter:
                    parts.append(run(sl))
                size = max(1, max_batch_bytes // max(1, meter.bytes + item_bytes))
            else:
                parts.append(run(sl))
            if bar is not None:
                bar.update(sl.stop - sl.start)
            start = sl.stop
    finally:
        if bar is not None:
            bar.close()
    if len(parts) == 1:
        return [t.contiguous() for t in parts[0]]  # as torch.cat would give (expanded views become copies)
    return [torch.cat(p, dim=0) for p in zip(*parts)]


#: What PyTorch says when a batched way of running a model is not supported by one of its ops: an op
#: without a vmap rule (``is_grads_batched``), or rows that cannot broadcast through a concatenation.
BATCHING_ERROR_MARKERS: tuple[str, ...] = (
    "vmap",
    "Batching rule not implemented",
    "batched gradient",
    "Sizes of tensors must match",
    "must match the size of tensor",
)


def is_batching_error(exc: BaseException) -> bool:
    """Whether ``exc`` says the model cannot be run in a particular batched way (and nothing else).

    True only for a ``RuntimeError`` whose message holds one of :data:`BATCHING_ERROR_MARKERS`; never
    for an out-of-memory error (``torch.OutOfMemoryError``, or the CPU allocator's "can't allocate
    memory"), which must reach the caller instead of silently changing the computation.
    """
    if not isinstance(exc, RuntimeError) or isinstance(exc, torch.OutOfMemoryError):
        return False
    msg = str(exc)
    if "out of memory" in msg.lower() or "can't allocate memory" in msg:
        return False
    return any(marker in msg for marker in BATCHING_ERROR_MARKERS)


def first_supported(ways: Sequence[str], attempt: Callable[[str], T]) -> tuple[str, T]:
    """``(way, attempt(way))`` for the first of ``ways`` that the model supports.

    Each way but the last is tried in order; an error for which :func:`is_batching_error` holds moves
    on to the next way, any other error propagates. The last way is the plain one that always works,
    so its errors propagate too. Call it once and keep the way for the rest of the computation.
    """
    if not ways:
        raise ValueError("first_supported needs at least one way to try.")
    for way in ways[:-1]:
        try:
            return way, attempt(way)
        except RuntimeError as exc:
            if not is_batching_error(exc):
                raise
    return ways[-1], attempt(ways[-1])


def map_batches(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    batch_size: int,
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    requires_grad: bool = True,
    progress: bool = False,
    desc: str = "",
) -> torch.Tensor:
    """``torch.cat`` of ``fn(x, t)`` over batches of ``batch_size`` images, on the CPU.

    ``x: [b, C, H, W]`` is a detached copy of the batch on the model's device (requiring grad when
    ``requires_grad``), ``t: [b]`` the batch's class indices on that device.
    """
    dev = model_device(model)
    out = []
    for i in tqdm(range(0, images.shape[0], batch_size), disable=not progress, desc=desc, leave=False):
        x = images[i:i + batch_size].to(dev).detach().clone()
        if requires_grad:
            x.requires_grad_(True)
        out.append(fn(x, targets[i:i + batch_size].to(dev)).detach().cpu())
    return torch.cat(out)


@torch.no_grad()
def class_scores(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Class scores before softmax ``[B, C]``, in eval mode and batches of ``batch_size``, on the model's device.

    The model's train/eval mode is restored; its output is checked to be ``[B, C]``.
    """
    check_model(model)
    images = check_images(images, move=False)
    batch_size = check_positive_int(batch_size, "batch_size")
    dev = model_device(model)
    with model_state(model, train=False):
        outs = [check_class_scores(model(images[i:i + batch_size].to(dev)), min(batch_size, images.shape[0] - i))
                for i in range(0, images.shape[0], batch_size)]
    return torch.cat(outs)


def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Predicted classes ``[B]`` (argmax of :func:`class_scores`), on the CPU."""
    return class_scores(model, images, batch_size).argmax(1).cpu()
