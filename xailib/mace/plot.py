"""Figures of the MACE notebooks: concept maps across images (Fig. 2, SF11-12, SF16), the embedding distances
(SF13), and prototypes (SF1)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import torch

from xailib.plotting import show_overlay, to_numpy_image

__all__ = ["plot_all_outputs", "plot_concept_grid", "plot_distances", "plot_faithfulness", "plot_prototypes",
           "plot_ranks_and_relevance", "plot_robustness"]


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


def plot_all_outputs(images: torch.Tensor, maps: dict, classes: dict, relevance: torch.Tensor, class_names,
                     size: float = 1.25):
    """Fig. 1 / Fig. 5a: per image two rows, its first- and second-ranked class; columns the image and each
    method's map for that class (``maps[rank][method] [B, H, W]``, ``classes[rank] [B]``); MACE's cell is its most
    relevant concept with ``relevance[rank] [B]`` below it."""
    methods = list(maps[1])
    n = len(images)
    fig, axes = plt.subplots(2 * n, len(methods) + 1, figsize=(size * (len(methods) + 1), size * 2 * n + 0.4),
                             squeeze=False)
    for i in range(n):
        for r in (1, 2):
            row = axes[2 * i + r - 1]
            row[0].imshow(to_numpy_image(images[i]), interpolation="nearest")
            row[0].set_ylabel(f"rank {r}: {class_names[int(classes[r][i])]}", fontsize=6)
            for c, m in enumerate(methods, start=1):
                show_overlay(row[c], images[i], maps[r][m][i].numpy())
                if m == methods[0]:
                    row[c].set_xlabel(f"r = {float(relevance[r][i]):+.2f}", fontsize=6)
                if i == 0 and r == 1:
                    row[c].set_title(m, fontsize=7)
            for ax in row:
                ax.set_xticks([])
                ax.set_yticks([])
    fig.tight_layout()
    return fig


def plot_ranks_and_relevance(ranks, true_vs_others, title: str = ""):
    """Fig. 5b (share of positive concepts below their average, by rank, 95% intervals over classes) and Fig. 5c
    (AVG True against AVG Others per kept concept, sorted by AVG True)."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    a.bar(ranks["rank"], ranks["share_below"], color="tab:blue",
          yerr=[ranks["share_below"] - ranks["ci_low"], ranks["ci_high"] - ranks["share_below"]], capsize=2)
    a.set_xlabel("rank of the class in the prediction")
    a.set_ylabel("share of positive concepts below average")
    a.set_xticks(list(ranks["rank"]))
    a.set_title("Fig. 5b", fontsize=9)
    t = true_vs_others.sort_values("avg_true", ascending=False).reset_index(drop=True)
    x = range(len(t))
    b.bar([i - 0.2 for i in x], t["avg_true"], width=0.4, color="tab:blue", label="AVG True")
    b.bar([i + 0.2 for i in x], t["avg_others"], width=0.4, color="tab:green", label="AVG Others")
    b.axhline(0, color="black", lw=0.5)
    b.set_xlabel(f"kept concepts ({len(t)}), sorted by AVG True")
    b.set_ylabel("average relevance")
    b.set_xticks([])
    b.legend(fontsize=7)
    b.set_title("Fig. 5c", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_robustness(table, title: str = ""):
    """SF14: mean IoU of clean and perturbed thresholded maps against the threshold, one panel per perturbation
    (rotation aligned), one line per method, images whose prediction stayed, all amounts pooled (95% normal
    intervals over image-amount pairs)."""
    t = table[table.protocol.isin(["same pixels", "aligned"]) & table.same_prediction]
    kinds = list(dict.fromkeys(t["perturbation"]))
    fig, axes = plt.subplots(1, len(kinds), figsize=(3.3 * len(kinds), 3.1), squeeze=False, sharey=True)
    styles = {"MACE": ("tab:red", "-"), "MACE (top concept)": ("tab:red", ":"), "GradCAM": ("tab:blue", "-"),
              "GradCAM++": ("tab:green", "--")}
    for ax, kind in zip(axes[0], kinds):
        for method, g in t[t.perturbation == kind].groupby("method", sort=False):
            s = g.groupby("threshold")["iou"]
            mean, half = s.mean(), 1.96 * s.std(ddof=1) / s.count() ** 0.5
            colour, ls = styles.get(method, (None, "-"))
            ax.errorbar(mean.index, mean.values, yerr=half.values, marker="o", ms=3, capsize=2, color=colour,
                        ls=ls, label=method)
        ax.set_title(kind, fontsize=9)
        ax.set_xlabel("threshold")
    axes[0, 0].set_ylabel("IoU, clean vs perturbed")
    axes[0, -1].legend(fontsize=7, loc="lower left")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
