"""Small, seeded image perturbations, shared by the robustness tests of the papers (MACE S6, AfI's ``t``).

* :func:`rotate` -- rotation about the image centre by a per-image angle, bilinear, the corners that come from
  outside the image filled with a constant (AfI's ``t`` and MACE's "rotation").
* :func:`adjust_brightness` -- ``x + delta``; :func:`adjust_contrast` -- ``mean + factor * (x - mean)`` per image
  and channel; :func:`add_noise` -- Gaussian noise of standard deviation ``std``, seeded.
* :func:`perturb` -- one of them by name (:data:`PERTURBATIONS`) and amount, clamped to the valid input range:
  the form MACE's SF14 sweeps ("the standard deviation of the noise ..., delta value to increase the
  brightness/contrast ..., angle of rotation").

All take images ``[B, C, H, W]`` and leave them unchanged (new tensors are returned).
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F

from xailib.checks import check_input_range, check_seed

__all__ = ["PERTURBATIONS", "add_noise", "adjust_brightness", "adjust_contrast", "perturb", "rotate"]

#: The perturbations of :func:`perturb` and what their ``amount`` is.
PERTURBATIONS = {
    "brightness": "delta added to every pixel, as a fraction of the input range",
    "contrast": "factor 1 + amount on each channel's deviation from its mean",
    "noise": "standard deviation of Gaussian noise, as a fraction of the input range",
    "rotation": "angle in degrees, counter-clockwise on screen, about the image centre",
}


def _check_batch(images) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point():
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a float tensor [B, C, H, W], got {got}.")
    return images


def rotate(images: torch.Tensor, degrees, fill: float = 0.0) -> torch.Tensor:
    """``images [B, C, H, W]`` rotated by ``degrees`` (a number, or one angle per image ``[B]``) about the centre.

    Bilinear (``affine_grid`` / ``grid_sample``, ``align_corners=False``, aspect ratio respected); pixels that come
    from outside the image take ``fill``. ``rotate(x, a)`` then ``rotate(., -a)`` is the identity inside the disc
    the rotation keeps, up to interpolation."""
    images = _check_batch(images)
    b = images.shape[0]
    angles = torch.as_tensor(degrees, dtype=torch.float64)
    if angles.dim() == 0:
        angles = angles.expand(b)
    if angles.shape != (b,):
        raise ValueError(f"degrees must be a number or one angle per image [{b}], got shape {tuple(angles.shape)}.")
    rad = angles.to(images.device, torch.float64) * (math.pi / 180)
    h, w = images.shape[-2:]
    cos, sin = torch.cos(rad), torch.sin(rad)
    zero = torch.zeros_like(rad)
    # normalised coordinates scale x by 2/W and y by 2/H, so the off-diagonal terms carry the aspect ratio
    theta = torch.stack([torch.stack([cos, -sin * (h / w), zero], 1),
                         torch.stack([sin * (w / h), cos, zero], 1)], 1).to(images.dtype)  # [B, 2, 3]
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    # grid_sample is linear with zero padding, so rotating x - fill and adding fill back fills with fill
    return F.grid_sample(images - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill


def adjust_brightness(images: torch.Tensor, delta: float) -> torch.Tensor:
    """``images + delta`` (not clamped; :func:`perturb` clamps)."""
    return _check_batch(images) + float(delta)


def adjust_contrast(images: torch.Tensor, factor: float) -> torch.Tensor:
    """``mean + factor * (images - mean)``, the mean per image and channel (not clamped)."""
    images = _check_batch(images)
    mean = images.mean(dim=(-2, -1), keepdim=True)
    return mean + float(factor) * (images - mean)


def add_noise(images: torch.Tensor, std: float, seed: int = 0) -> torch.Tensor:
    """``images + N(0, std^2)``, drawn on the CPU from ``seed`` (the same noise on any device; not clamped)."""
    images = _check_batch(images)
    g = torch.Generator().manual_seed(check_seed(seed))
    noise = torch.randn(tuple(images.shape), generator=g, dtype=images.dtype)
    return images + float(std) * noise.to(images.device)


def perturb(images: torch.Tensor, kind: str, amount: float, *, seed: int = 0,
            input_range: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
    """``images`` perturbed by ``kind`` (see :data:`PERTURBATIONS`) of size ``amount``, clamped to ``input_range``.

    ``brightness``: ``+ amount * (hi - lo)``; ``contrast``: factor ``1 + amount``; ``noise``: std
    ``amount * (hi - lo)``, seeded; ``rotation``: ``amount`` degrees, the corners filled with the middle of the
    range. ``amount = 0`` gives the images back (clamped)."""
    lo, hi = check_input_range(input_range)
    if kind not in PERTURBATIONS:
        raise ValueError(f"unknown perturbation {kind!r}; choose one of {sorted(PERTURBATIONS)}.")
    if isinstance(amount, bool) or not isinstance(amount, numbers.Real) or not math.isfinite(float(amount)):
        raise ValueError(f"amount must be a finite number ({PERTURBATIONS[kind]}), got {amount!r}.")
    if kind == "contrast" and amount < -1:
        raise ValueError(f"contrast amount must be >= -1 (factor 1 + amount >= 0), got {amount}.")
    if kind == "brightness":
        out = adjust_brightness(images, amount * (hi - lo))
    elif kind == "contrast":
        out = adjust_contrast(images, 1.0 + amount)
    elif kind == "noise":
        if amount < 0:
            raise ValueError(f"noise amount is a standard deviation and must be >= 0, got {amount}.")
        out = add_noise(images, amount * (hi - lo), seed)
    else:
        out = rotate(images, amount, fill=(lo + hi) / 2)
    return out.clamp(lo, hi)
