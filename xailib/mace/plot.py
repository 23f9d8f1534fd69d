"""Figures of the MACE notebooks: concept maps across images (Fig. 2, SF11-12, SF16), the embedding distances
(SF13), and prototypes (SF1)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import torch

from xailib.plotting import show_overlay, to_numpy_image

__all__ = ["plot_concept_grid", "plot_distances", "plot_faithfulness", "plot_prototypes"]


def plot_concept_grid(images: torch.Tensor, maps: torch.Tensor, concepts: Sequence[int], title: str = "",
                      relevance: torch.Tensor | None = None, size: float = 1.3):
    """Rows: concepts of one class; columns: images of the class; each cell the image with the concept's map
    (``maps [N, C, h, w]``, upsampled by :func:`xailib.plotting.heatmap_overlay`) over it, with ``r_jk`` in the
    title when ``relevance [N, C]`` is given."""
    n, rows = len(images), list(concepts)
    fig, axes = plt.subplots(len(rows), n, figsize=(size * n, size * len(rows) + 0.4), squeeze=False)
    for r, j in enumerate(rows):
        for i in range(n):
            ax = axes[r, i]
            show_overlay(ax, images[i], maps[i, j].cpu().numpy())
            if relevance is not None:
                ax.set_title(f"r = {float(relevance[i, j]):+.2f}", fontsize=6)
        axes[r, 0].set_ylabel(f"concept {j}", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_distances(d: torch.Tensor, n_concepts: int, n_images: int, title: str = ""):
    """SF13: the embedding distance matrix, concept blocks outlined."""
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    im = ax.imshow(d.cpu().numpy(), cmap="viridis")
    for b in range(1, n_concepts):
        ax.axhline(b * n_images - 0.5, color="white", lw=0.6)
        ax.axvline(b * n_images - 0.5, color="white", lw=0.6)
    ticks = [b * n_images + (n_images - 1) / 2 for b in range(n_concepts)]
    ax.set_xticks(ticks, [f"c{b}" for b in range(n_concepts)], fontsize=7)
    ax.set_yticks(ticks, [f"c{b}" for b in range(n_concepts)], fontsize=7)
    fig.colorbar(im, ax=ax, fraction=0.046, label="Euclidean distance")
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return fig


def plot_prototypes(images: torch.Tensor, index: torch.Tensor, rows: Sequence[tuple[int, int]],
                    labels: Sequence[str], size: float = 1.2):
    """One row per ``(class, concept)`` of ``rows``: its prototype images ``images[index[k, j]]``."""
    top = index.shape[-1]
    fig, axes = plt.subplots(len(rows), top, figsize=(size * top, size * len(rows) + 0.3), squeeze=False)
    for r, (k, j) in enumerate(rows):
        for t in range(top):
            ax = axes[r, t]
            ax.imshow(to_numpy_image(images[int(index[k, j, t])]), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(labels[r], fontsize=6)
    fig.tight_layout()
    return fig


def plot_faithfulness(table, title: str = ""):
    """Fig. 4b: mean drop in the predicted class's probability against the threshold, per method (95% normal
    intervals over images), one panel per protocol."""
    protocols = [p for p in ("same threshold", "same area") if p in set(table["protocol"])]
    fig, axes = plt.subplots(1, len(protocols), figsize=(4.6 * len(protocols), 3.4), squeeze=False, sharey=True)
    mace = table[table.method == "MACE"]
    for ax, protocol in zip(axes[0], protocols):
        for method, t in [("MACE", mace)] + [(m, g) for m, g in table[table.protocol == protocol].groupby("method")
                                             if m != "MACE"]:
            g = t.groupby("threshold")["drop"]
            mean, half = g.mean(), 1.96 * g.std(ddof=1) / g.count() ** 0.5
            ax.errorbar(mean.index, mean.values, yerr=half.values, marker="o", ms=3, capsize=2, label=method,
                        lw=2 if method == "MACE" else 1)
        ax.set_xlabel("threshold")
        ax.set_title(protocol, fontsize=9)
    axes[0, 0].set_ylabel("drop in the predicted class's probability")
    axes[0, -1].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
