"""Plotting helpers shared by the notebooks: image grids and mask overlays.

All functions take tensors on any device and return matplotlib figures; nothing here computes a method.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

__all__ = ["to_numpy_image", "image_grid", "overlay_masks"]

# Distinct colours for mask overlays (tab10 without grey).
_MASK_COLOURS = np.array(
    [
        [0.12, 0.47, 0.71],
        [1.00, 0.50, 0.05],
        [0.17, 0.63, 0.17],
        [0.84, 0.15, 0.16],
        [0.58, 0.40, 0.74],
        [0.55, 0.34, 0.29],
        [0.89, 0.47, 0.76],
        [0.74, 0.74, 0.13],
        [0.09, 0.75, 0.81],
    ]
)


def to_numpy_image(image: torch.Tensor) -> np.ndarray:
    """``image: [C, H, W]`` (C = 1 or 3, values in [0, 1]) -> ``[H, W, 3]`` float array for ``imshow``."""
    if not isinstance(image, torch.Tensor) or image.dim() != 3 or image.shape[0] not in (1, 3):
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"Expected one image as a tensor [C, H, W] with C in (1, 3), got {shape}.")
    arr = image.detach().float().cpu().clamp(0, 1)
    if arr.shape[0] == 1:
        arr = arr.expand(3, -1, -1)
    return arr.permute(1, 2, 0).numpy()


def image_grid(
    images: torch.Tensor,
    titles: Sequence[str] | None = None,
    ncols: int = 8,
    size: float = 1.4,
    row_labels: Sequence[str] | None = None,
):
    """A grid of images ``[N, C, H, W]`` with optional titles (one per image) and row labels.

    Returns
    -------
    matplotlib.figure.Figure
    """
    n = images.shape[0]
    if n == 0:
        raise ValueError("image_grid needs at least one image.")
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + 0.3), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        if i < n:
            ax.imshow(to_numpy_image(images[i]), interpolation="nearest")
            if titles is not None:
                ax.set_title(str(titles[i]), fontsize=7)
    if row_labels is not None:
        for r, label in enumerate(row_labels[:nrows]):
            axes[r, 0].set_ylabel(str(label), fontsize=7)
    fig.tight_layout()
    return fig


def overlay_masks(image: torch.Tensor, masks: torch.Tensor, alpha: float = 0.55) -> torch.Tensor:
    """Colour each mask of ``masks: [M, H, W]`` (bool) over ``image: [C, H, W]``; returns ``[3, H, W]``.

    Mask ``m`` gets colour ``m`` of a fixed palette (cycled), blended with weight ``alpha``.
    """
    rgb = torch.from_numpy(to_numpy_image(image)).permute(2, 0, 1).clone()
    if masks.dim() != 3 or masks.shape[-2:] != rgb.shape[-2:]:
        raise ValueError(f"masks must be [M, H, W] with H, W = {tuple(rgb.shape[-2:])}, got {tuple(masks.shape)}.")
    palette = torch.from_numpy(_MASK_COLOURS).float()
    for m in range(masks.shape[0]):
        sel = masks[m].bool().cpu()
        colour = palette[m % len(palette)].view(3, 1)
        rgb[:, sel] = (1 - alpha) * rgb[:, sel] + alpha * colour
    return rgb
