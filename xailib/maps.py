"""Resizing explanation maps: bilinear interpolation as two matrix products.

A concept map, a CAM or an activation map is shown on the image by resizing it bilinearly. ``F.interpolate`` does
this one output pixel at a time, which on a CPU dominates an explanation of many small maps (MACE's ``K x C`` concept
maps of all classes: 100 maps of 4 x 4 to 64 x 64 take about 1.3 ms, twice the base model's forward pass).
Bilinear resizing is separable and linear, so it is ``R_y M R_x^T`` with two fixed interpolation matrices;
:func:`resize_bilinear` computes that, with the same sampling rule as ``F.interpolate(mode="bilinear",
align_corners=False, antialias=False)`` (half-pixel centres, sources clamped at the border), equal to it within
float rounding (tested), and 10-25x faster for such maps.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from xailib.checks import check_positive_int

__all__ = ["bilinear_weights", "resize_bilinear"]


@lru_cache(maxsize=64)
def _weights64(n_in: int, n_out: int) -> torch.Tensor:
    scale = n_in / n_out
    src = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * scale - 0.5).clamp_min(0)   # half-pixel centres
    i0 = src.floor().long().clamp(max=n_in - 1)
    i1 = (i0 + 1).clamp(max=n_in - 1)                                                      # the border repeats
    frac = src - i0
    w = torch.zeros(n_out, n_in, dtype=torch.float64)
    rows = torch.arange(n_out)
    w.index_put_((rows, i0), 1 - frac, accumulate=True)
    w.index_put_((rows, i1), frac, accumulate=True)
    return w


def bilinear_weights(n_in: int, n_out: int, dtype=torch.float32, device="cpu") -> torch.Tensor:
    """The ``[n_out, n_in]`` matrix of 1-D linear interpolation from ``n_in`` to ``n_out`` samples, as
    ``F.interpolate(..., align_corners=False)`` samples: output ``i`` reads the input at ``(i + 1/2) n_in / n_out
    - 1/2`` (clamped to ``[0, n_in - 1]``), from its two neighbours. Each row sums to 1."""
    n_in = check_positive_int(n_in, "n_in")
    n_out = check_positive_int(n_out, "n_out")
    cached = _weights64(n_in, n_out)
    out = cached.to(device=device, dtype=dtype)
    return out.clone() if out.data_ptr() == cached.data_ptr() else out   # never hand out the cached tensor itself


def resize_bilinear(maps: torch.Tensor, size) -> torch.Tensor:
    """Maps ``[..., h, w]`` resized bilinearly to ``size = (H, W)``: ``[..., H, W]``, as
    ``F.interpolate(mode="bilinear", align_corners=False)`` gives them (within float rounding), computed as
    ``R_y @ maps @ R_x^T``. Any number of leading dimensions; the maps' dtype and device.

    Raises
    ------
    ValueError
        Maps with fewer than 2 dimensions, a non-floating dtype, or a size that is not two positive ints.
    """
    if not isinstance(maps, torch.Tensor) or maps.dim() < 2:
        raise ValueError(f"maps must be a tensor [..., h, w], got {getattr(maps, 'shape', type(maps).__name__)}.")
    if not maps.is_floating_point():
        raise ValueError(f"maps must be floating point, got {maps.dtype}; convert them with .float().")
    if isinstance(size, int) or len(tuple(size)) != 2:
        raise ValueError(f"size must be (H, W), got {size!r}.")
    big_h, big_w = (check_positive_int(s, "size", hint=" (H, W of the output)") for s in size)
    h, w = maps.shape[-2:]
    if (h, w) == (big_h, big_w):
        return maps.clone()
    ry = bilinear_weights(h, big_h, maps.dtype, maps.device)
    rx = bilinear_weights(w, big_w, maps.dtype, maps.device)
    return torch.matmul(torch.matmul(ry, maps), rx.T)
