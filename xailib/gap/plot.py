"""Drawing a hierarchical decomposition like Fig. 5 of the gAP paper.

Each node is a thumbnail: the image with the node's activation map ``A^l_k`` (Eq. 3, for its parent's
decision) laid over it and its peak (Eq. 5) as a black dot; the label is ``layer:channel``. Edges run
from a decision to the channels it was decomposed into, labelled with the contribution
``alpha^l_k`` (Eq. 4). Nothing here computes the method.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from xailib.gap.decomposition import OUTPUT, DecompositionNode, DecompositionTree

__all__ = ["plot_decomposition"]


def _rgb(image: torch.Tensor) -> np.ndarray:
    """``[1, C, H, W]`` or ``[C, H, W]`` -> ``[H, W, 3]`` in [0, 1] (min-max scaled per image)."""
    img = image.detach().float().cpu()
    if img.dim() == 4:
        img = img[0]
    if img.dim() != 3 or img.shape[0] not in (1, 3):
        raise ValueError(f"image must be [1, C, H, W] or [C, H, W] with C in (1, 3), got {tuple(image.shape)}.")
    img = (img - img.min()) / (img.max() - img.min()).clamp_min(1e-12)
    return img.expand(3, -1, -1).permute(1, 2, 0).numpy()


def _upsample(amap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    t = torch.as_tensor(np.asarray(amap, dtype=np.float32))[None, None]
    return torch.nn.functional.interpolate(t, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()


def plot_decomposition(
    tree: DecompositionTree,
    image: torch.Tensor,
    max_depth: int | None = None,
    top_n: int | None = None,
    cmap: str = "jet",
    alpha: float = 0.5,
    layer_labels: dict[str, str] | None = None,
    figsize: tuple[float, float] | None = None,
    title: str | None = None,
):
    """Draw ``tree`` over ``image`` as in Fig. 5 (root at the top, stage 1 at the bottom).

    Parameters
    ----------
    tree : DecompositionTree
        From :func:`xailib.gap.decompose` with ``keep_maps=True``.
    image : Tensor ``[1, C, H, W]`` or ``[C, H, W]``
        The explained image.
    max_depth : int or None
        Draw this many levels below the root (``None``: all).
    top_n : int or None
        Draw at most this many children per node.
    layer_labels : dict, optional
        Short names for layers in node labels, e.g. ``{"features.29": "conv5_3"}``.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if not isinstance(tree, DecompositionTree):
        raise TypeError(f"tree must be a DecompositionTree, got {type(tree).__name__}.")
    if max_depth is not None and max_depth < 0:
        raise ValueError(f"max_depth must be >= 0 or None, got {max_depth}.")
    rgb = _rgb(image)
    size = rgb.shape[:2]
    labels = layer_labels or {}

    # Tidy layout: leaves on consecutive slots, each parent centred over its children.
    pos: dict[int, tuple[float, int]] = {}
    nodes: list[tuple[DecompositionNode, DecompositionNode | None]] = []
    next_slot = [0.0]

    def place(node: DecompositionNode, parent, depth: int) -> float:
        kids = node.children[:top_n] if top_n is not None else node.children
        if max_depth is not None and depth >= max_depth:
            kids = []
        nodes.append((node, parent))
        if not kids:
            x = next_slot[0]
            next_slot[0] += 1
        else:
            xs = [place(c, node, depth + 1) for c in kids]
            x = (xs[0] + xs[-1]) / 2
        pos[id(node)] = (x, depth)
        return x

    place(tree.root, None, 0)
    width, depth = max(1.0, next_slot[0]), 1 + max(d for _, d in pos.values())
    fig = plt.figure(figsize=figsize or (max(4.0, 1.1 * width), 1.6 * depth + 0.4))
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(-0.6, width - 0.4)
    ax.set_ylim(depth - 0.35, -0.75)
    ax.axis("off")
    if title:
        ax.set_title(title)
    half = 0.38
    for node, parent in nodes:
        x, d = pos[id(node)]
        if parent is not None:
            px, pd = pos[id(parent)]
            ax.plot([px, x], [pd + half, d - half - 0.12], color="tab:blue", lw=1, zorder=0)
            if node.contribution is not None:
                ax.text((px + x) / 2, (pd + d) / 2 + 0.05, f"{node.contribution:.3g}", fontsize=7, ha="center",
                        va="center", color="tab:blue", bbox=dict(fc="white", ec="none", pad=0.5))
        sub = ax.inset_axes([x - half, d - half, 2 * half, 2 * half], transform=ax.transData)
        sub.imshow(rgb)
        if node.activation_map is not None:
            up = _upsample(node.activation_map, size)
            peak = up.max()
            sub.imshow(np.clip(up / peak, 0, 1) if peak > 0 else np.zeros_like(up), cmap=cmap, alpha=alpha,
                       vmin=0, vmax=1)
        if node.position is not None and node.activation_map is not None:
            h, w = np.asarray(node.activation_map).shape
            sub.plot((node.position[1] + 0.5) * size[1] / w - 0.5, (node.position[0] + 0.5) * size[0] / h - 0.5,
                     "o", color="black", ms=3)
        sub.set_xticks([])
        sub.set_yticks([])
        if node.layer == OUTPUT:
            label = f"class {node.channel} ({node.score:.3g})"
        else:
            label = f"{labels.get(node.layer, node.layer)}:{node.channel}"
            if node.merged:
                label += f" +{len(node.merged)}"
        sub.set_title(label, fontsize=7, pad=2)
    return fig
