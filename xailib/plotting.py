"""Plotting helpers shared by every method: images, heat-map overlays, image grids and mask overlays.

All functions take tensors on any device; nothing here computes a method.

* :func:`to_numpy_image` -- one image ``[C, H, W]`` (or ``[1, C, H, W]``) as an ``[H, W, 3]`` array.
* :func:`upsample_map`, :func:`normalized_heat` -- a map ``[h, w]`` (an activation map, a saliency map)
  upsampled bilinearly to the image, and scaled to [0, 1] by its positive maximum.
* :func:`heatmap_overlay` -- the one heat-map overlay: the image with a map laid over it (and a peak
  marked), as an array; :func:`show_overlay` draws it, with a mask contour, on matplotlib axes.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from xailib.maps import resize_bilinear

__all__ = [
    "to_numpy_image",
    "upsample_map",
    "normalized_heat",
    "map_cell_centre",
    "heatmap_overlay",
    "show_overlay",
    "image_grid",
    "overlay_masks",
    "part_colours",
]

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


def to_numpy_image(image: torch.Tensor, scale: str = "clip") -> np.ndarray:
    """``image: [C, H, W]`` or ``[1, C, H, W]`` (C = 1 or 3) -> ``[H, W, 3]`` float array for ``imshow``.

    ``scale="clip"`` clips to [0, 1] (images in [0, 1]); ``"minmax"`` scales each image to [0, 1] (images
    of any range, e.g. normalised ones).
    """
    if isinstance(image, torch.Tensor) and image.dim() == 4 and image.shape[0] == 1:
        image = image[0]
    if not isinstance(image, torch.Tensor) or image.dim() != 3 or image.shape[0] not in (1, 3):
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"Expected one image as a tensor [C, H, W] with C in (1, 3), got {shape}.")
    if scale not in ("clip", "minmax"):
        raise ValueError(f"scale must be 'clip' or 'minmax', got {scale!r}.")
    arr = image.detach().float().cpu()
    arr = arr.clamp(0, 1) if scale == "clip" else (arr - arr.min()) / (arr.max() - arr.min()).clamp_min(1e-12)
    if arr.shape[0] == 1:
        arr = arr.expand(3, -1, -1)
    return arr.permute(1, 2, 0).numpy()


def upsample_map(amap, size: tuple[int, int]) -> np.ndarray:
    """A map ``[h, w]`` (array or tensor) upsampled bilinearly to ``size = (H, W)``: ``[H, W]`` float32."""
    t = torch.as_tensor(np.asarray(amap.detach().cpu() if isinstance(amap, torch.Tensor) else amap,
                                   dtype=np.float32))
    if t.dim() != 2:
        raise ValueError(f"amap must be one map [h, w], got shape {tuple(t.shape)}.")
    return resize_bilinear(t, size).numpy()


def normalized_heat(amap, size: tuple[int, int]) -> np.ndarray:
    """:func:`upsample_map`, divided by its positive maximum and clipped to [0, 1] (all 0 if max <= 0)."""
    up = upsample_map(amap, size)
    peak = float(up.max())
    return np.clip(up / peak, 0, 1) if peak > 0 else np.zeros_like(up)


def map_cell_centre(position: tuple[int, int], map_shape: tuple[int, int], size: tuple[int, int]):
    """Centre of map cell ``(y, x)`` of an ``[h, w]`` map in image pixel coordinates ``(col, row)``."""
    (y, x), (h, w) = position, map_shape
    return (x + 0.5) * size[1] / w - 0.5, (y + 0.5) * size[0] / h - 0.5


def heatmap_overlay(image: torch.Tensor, amap, position: tuple[int, int] | None = None, alpha: float = 0.5,
                    cmap: str = "jet", scale: str = "clip") -> np.ndarray:
    """The image with a map laid over it and, optionally, a peak marked as a black dot.

    Parameters
    ----------
    image : Tensor ``[1, C, H, W]`` or ``[C, H, W]``
    amap : array ``[h, w]``
        Upsampled bilinearly to ``H x W`` and scaled by its positive maximum (:func:`normalized_heat`;
        negative parts are shown as 0).
    position : (y, x) in map cells, optional
        E.g. gAP's peak (Eq. 5); drawn as a black dot of radius ~ H/40 at the centre of that cell.
    alpha : float
        Weight of the heat map in the blend.

    Returns
    -------
    np.ndarray ``[H, W, 3]`` in [0, 1]
    """
    import matplotlib

    rgb = to_numpy_image(image, scale)
    size = rgb.shape[:2]
    heat = matplotlib.colormaps[cmap](normalized_heat(amap, size))[..., :3]
    out = (1 - alpha) * rgb + alpha * heat
    if position is not None:
        cx, cy = map_cell_centre(position, np.asarray(amap).shape[-2:], size)
        rr, cc = np.mgrid[: size[0], : size[1]]
        out[(rr - cy) ** 2 + (cc - cx) ** 2 <= max(1.0, size[0] / 40) ** 2] = 0.0
    return out


def show_overlay(ax, image: torch.Tensor, heat=None, mask: torch.Tensor | None = None, alpha: float = 0.5,
                 cmap: str = "jet") -> None:
    """Draw ``image`` on ``ax`` with ``heat`` (a map ``[h, w]``, :func:`heatmap_overlay`) over it and the
    outline of ``mask`` (``[H, W]``) in white; no ticks."""
    if heat is None:
        ax.imshow(to_numpy_image(image), interpolation="nearest")
    else:
        ax.imshow(heatmap_overlay(image, heat, alpha=alpha, cmap=cmap), interpolation="bilinear")
    if mask is not None:
        ax.contour(mask.float().cpu().numpy(), levels=[0.5], colors="white", linewidths=1.0)
    ax.set_xticks([])
    ax.set_yticks([])


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


def overlay_masks(image: torch.Tensor, masks: torch.Tensor, alpha: float = 0.55, colours=None) -> torch.Tensor:
    """Colour each mask of ``masks: [M, H, W]`` (bool) over ``image: [C, H, W]``; returns ``[3, H, W]``.

    Mask ``m`` gets colour ``m`` of ``colours`` (an ``[K, 3]`` array of RGB in [0, 1]; default a fixed palette
    of 9), cycled, blended with weight ``alpha``.
    """
    rgb = torch.from_numpy(to_numpy_image(image)).permute(2, 0, 1).clone()
    if masks.dim() != 3 or masks.shape[-2:] != rgb.shape[-2:]:
        raise ValueError(f"masks must be [M, H, W] with H, W = {tuple(rgb.shape[-2:])}, got {tuple(masks.shape)}.")
    palette = torch.as_tensor(np.asarray(_MASK_COLOURS if colours is None else colours, dtype=np.float64)).float()
    if palette.dim() != 2 or palette.shape[1] != 3 or not len(palette):
        raise ValueError(f"colours must be an [K, 3] array of RGB values in [0, 1], got shape {tuple(palette.shape)}.")
    for m in range(masks.shape[0]):
        sel = masks[m].bool().cpu()
        colour = palette[m % len(palette)].view(3, 1)
        rgb[:, sel] = (1 - alpha) * rgb[:, sel] + alpha * colour
    return rgb


# ---- notebook 00: the embedded data ------------------------------------------------------------------------


def _first_per_class(labels: torch.Tensor, n_classes: int, per_class: int) -> torch.Tensor:
    """Indices of the first ``per_class`` samples of each class, class by class: LongTensor [n_classes*per_class].

    Raises ValueError if a class has fewer than ``per_class`` samples.
    """
    counts = torch.bincount(labels, minlength=n_classes)
    if (counts < per_class).any():
        short = torch.nonzero(counts < per_class).flatten().tolist()
        raise ValueError(f"Classes {short} have fewer than {per_class} samples; draw more samples.")
    order = torch.argsort(labels * labels.numel() + torch.arange(labels.numel()), stable=True)
    starts = torch.cumsum(counts, 0) - counts
    return order[(starts[:, None] + torch.arange(per_class)[None, :]).flatten()]


def class_gallery(images: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str], per_class: int = 6):
    """One row per class: the first ``per_class`` images of each class (``images: [N, C, H, W]``)."""
    idx = _first_per_class(labels.cpu(), len(class_names), per_class)
    return image_grid(images[idx], ncols=per_class, row_labels=list(class_names))


def part_colours(n: int) -> np.ndarray:
    """``n`` distinct RGB colours ``[n, 3]`` in [0, 1], one per part: tab20 without its greys, its dark shades
    first and then its light ones (so the first 9 differ in hue), cycled."""
    tab = np.asarray(plt.get_cmap("tab20").colors)
    tab = np.concatenate([np.delete(tab[0::2], 7, axis=0), np.delete(tab[1::2], 7, axis=0)])  # grey is pair 7
    return tab[np.arange(n) % len(tab)]


def part_mask_figure(batch, indices: Sequence[int]):
    """Each scene of a ConceptWorld ``SceneBatch`` beside its visible-part masks, parts named in the title.

    Part ``p`` of ``world.part_names`` has the same colour (:func:`part_colours`) in every scene, and a key
    below the grid names the colour of each part shown.
    """
    world = batch.world
    colours = part_colours(len(world.part_names))
    tiles, titles, shown = [], [], set()
    for i in indices:
        masks = batch.part_masks[i]  # [P, H, W]
        present = [p for p in range(masks.shape[0]) if masks[p].any()]
        shown.update(present)
        tiles += [batch.images[i], overlay_masks(batch.images[i], masks[present], colours=colours[present])]
        titles += [world.class_names[int(batch.labels[i])], ", ".join(world.part_names[p] for p in present)]
    fig = image_grid(torch.stack(tiles), ncols=4, size=2.2)
    for ax, title in zip(fig.axes, titles):
        ax.set_title(title, fontsize=6, wrap=True)
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=colours[p], edgecolor="black", linewidth=0.3, label=world.part_names[p])
               for p in sorted(shown)]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 7), fontsize=7, frameon=False,
                   title="part masks (colour key)", title_fontsize=7, bbox_to_anchor=(0.5, 0.0))
        fig.subplots_adjust(bottom=0.04 + 0.03 * -(-len(handles) // 7))
    return fig


def intervention_figure(world, recipes, remove_part: str, keep_parts: Sequence[str], texture: str, context: str):
    """Rows of scenes; columns: original, ``remove_part`` removed, ``keep_parts`` alone, texture swapped, context swapped.

    All columns are re-rendered from the same recipes (``world.remove/isolate/swap``).
    """
    columns = {
        "original": recipes,
        f"without {remove_part}": world.remove(recipes, parts=[remove_part]),
        f"only {'+'.join(keep_parts)}": world.isolate(recipes, keep_parts),
        f"texture -> {texture}": world.swap(recipes, texture=texture),
        f"context -> {context}": world.swap(recipes, context=context),
    }
    rendered = [world.render(r).images for r in columns.values()]  # each [N, 3, H, W]
    n = len(recipes)
    tiles = torch.stack(rendered, dim=1).reshape(n * len(columns), *rendered[0].shape[1:])
    fig = image_grid(tiles, ncols=len(columns), size=1.8)
    for ax, title in zip(fig.axes[: len(columns)], columns):
        ax.set_title(title, fontsize=7)
    return fig


def clutter_mask_figure(batch, indices: Sequence[int]):
    """Hard-setting scenes of a ConceptWorld ``SceneBatch``: the image, its own visible parts, and its clutter
    (the distractor's visible parts in one colour, the occluder in another), one scene per row."""
    world = batch.world
    tiles, titles = [], []
    for i in indices:
        own = batch.part_masks[i]
        present = [p for p in range(own.shape[0]) if own[p].any()]
        clutter = torch.stack([batch.distractor_mask[i], batch.occluder_mask[i]])
        tiles += [batch.images[i], overlay_masks(batch.images[i], own[present]),
                  overlay_masks(batch.images[i], clutter, alpha=0.7)]
        titles += [world.class_names[int(batch.labels[i])], "own parts: " + ", ".join(world.part_names[p] for p in present),
                   "distractor (blue), occluder (orange)"]
    fig = image_grid(torch.stack(tiles), ncols=3, size=2.2)
    for ax, title in zip(fig.axes, titles):
        ax.set_title(title, fontsize=6, wrap=True)
    return fig


def plot_confusion(matrices: dict, class_names: Sequence[str], normalize: bool = True):
    """One panel per confusion matrix (``{title: LongTensor [C, C]}``, rows = true class), row-normalised."""
    titles = list(matrices)
    fig, axes = plt.subplots(1, len(titles), figsize=(4.2 * len(titles), 4.0), squeeze=False)
    for ax, title in zip(axes[0], titles):
        m = torch.as_tensor(matrices[title]).double()
        shown = m / m.sum(1, keepdim=True).clamp(min=1) if normalize else m
        im = ax.imshow(shown.numpy(), cmap="Blues", vmin=0, vmax=1 if normalize else None)
        ax.set_xticks(range(len(class_names)), class_names, rotation=90, fontsize=6)
        ax.set_yticks(range(len(class_names)), class_names, fontsize=6)
        ax.set_xlabel("predicted", fontsize=7)
        ax.set_ylabel("true", fontsize=7)
        ax.set_title(title, fontsize=8)
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                if i != j and m[i, j] > 0:
                    ax.text(j, i, str(int(m[i, j])), ha="center", va="center", fontsize=5, color="black")
    fig.colorbar(im, ax=list(axes[0]), shrink=0.8, label="share of the true class" if normalize else "images")
    return fig
