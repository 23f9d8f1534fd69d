"""The AfI paper's figures, drawn from the results of :mod:`xailib.afi`: Fig. S1 (occluders with clean and
occluded images and their predictions), Table 2's student accuracies as a figure, and Fig. 3's class
impressions. Nothing here computes the method.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from xailib.afi.occluder import OccluderResult
from xailib.plotting import to_numpy_image

__all__ = ["plot_occluders", "plot_student_accuracy", "plot_class_impressions", "plot_concept_curves", "plot_user_concepts"]


def _name(class_names: Sequence[str] | None, k: int) -> str:
    return class_names[k] if class_names is not None and 0 <= k < len(class_names) else str(k)


def plot_occluders(result: OccluderResult, images: torch.Tensor, labels: torch.Tensor, clean_pred: torch.Tensor,
                   occluded_pred: torch.Tensor, class_names: Sequence[str] | None = None,
                   classes: Sequence[int] | None = None, title: str = ""):
    """Fig. S1: per class, the occluder ``delta_y`` (magnified to the full range for visibility, as the
    paper does), one clean image of the class and the same image occluded, with the model's predictions.

    Parameters
    ----------
    result : OccluderResult
    images : Tensor ``[N, C, H, W]``
        Images of the classes; the first image of each class is shown.
    labels, clean_pred, occluded_pred : LongTensor ``[N]``
        True labels and the model's predictions on the clean and on the occluded images.
    classes : sequence of int, optional
        The classes to show (default all of ``result``), one column each.
    """
    classes = list(result.classes if classes is None else classes)
    fig, axes = plt.subplots(3, len(classes), figsize=(1.5 * len(classes), 4.9), squeeze=False)
    labels = torch.as_tensor(labels).cpu()
    for j, k in enumerate(classes):
        idx = torch.nonzero(labels == k)[:, 0]
        d = result.occluder(k)
        scale = float(d.abs().max()) or 1.0
        shown = [(0.5 + 0.5 * d / scale, f"occluder {_name(class_names, k)}\n|d|max {scale:.3f}")]
        if len(idx):
            i = int(idx[0])
            x_occ = (images[i] - d).clamp(*result.input_range)
            shown += [(images[i], f"clean: {_name(class_names, int(clean_pred[i]))}"),
                      (x_occ, f"occluded: {_name(class_names, int(occluded_pred[i]))}")]
        for r in range(3):
            ax = axes[r, j]
            ax.axis("off")
            if r < len(shown):
                img, text = shown[r]
                arr = to_numpy_image(img)
                ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None, vmin=0, vmax=1)
                ax.set_title(text, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_student_accuracy(students: pd.DataFrame, methods: Sequence[str] = ("gradient", "afi_no_t", "afi"),
                          labels: Sequence[str] = ("gradient-based", "AfI without t", "AfI")):
    """Table 2 as a figure: per teacher model, each method's student accuracy per class (dots) and its mean
    over classes (bar), so that the spread over classes is seen beside the means."""
    models = list(dict.fromkeys(students["model"]))
    fig, ax = plt.subplots(figsize=(2.2 + 1.6 * len(models), 3.2))
    width = 0.8 / len(methods)
    colours = plt.get_cmap("tab10").colors
    for m_i, (method, label) in enumerate(zip(methods, labels)):
        for x, model in enumerate(models):
            acc = students[(students["model"] == model) & (students["method"] == method)]["accuracy"].to_numpy()
            if not len(acc):
                continue
            pos = x + (m_i - (len(methods) - 1) / 2) * width
            ax.bar(pos, np.nanmean(acc), width * 0.9, color=colours[m_i], alpha=0.45,
                   label=label if x == 0 else None)
            ax.scatter(np.full(len(acc), pos), acc, s=8, color=colours[m_i], zorder=3)
    ax.set_xticks(range(len(models)), models, rotation=15, fontsize=7)
    ax.set_ylabel("student accuracy (held-out)")
    ax.set_ylim(0.4, 1.02)
    ax.axhline(0.5, color="grey", lw=0.6, ls=":")
    ax.legend(fontsize=7, loc="lower right", framealpha=0.9)
    fig.tight_layout()
    return fig


def plot_class_impressions(impressions: dict[str, torch.Tensor], class_names: Sequence[str],
                           examples: torch.Tensor | None = None):
    """Fig. 3: one row per model (its class impressions), and a first row of example images of the classes.

    Parameters
    ----------
    impressions : dict model name -> Tensor ``[K, C, H, W]``
    class_names : sequence of str
        The ``K`` classes' names.
    examples : Tensor ``[K, C, H, W]``, optional
    """
    rows = ([("example", examples)] if examples is not None else []) + list(impressions.items())
    K = len(class_names)
    fig, axes = plt.subplots(len(rows), K, figsize=(1.3 * K, 1.4 * len(rows)), squeeze=False)
    for r, (label, imgs) in enumerate(rows):
        for k in range(K):
            ax = axes[r, k]
            ax.axis("off")
            arr = to_numpy_image(imgs[k])
            ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None, vmin=0, vmax=1)
            if r == 0:
                ax.set_title(class_names[k], fontsize=7)
        axes[r, 0].text(-0.1, 0.5, label, transform=axes[r, 0].transAxes, ha="right", va="center", fontsize=7)
    fig.tight_layout()
    return fig


def plot_concept_curves(summary: pd.DataFrame, title: str = ""):
    """Fig. 2: relative accuracy (accuracy / the original accuracy) against the number of concepts added to a blank
    image (SSC, left) or removed from the images (SDC, right), one line per method with its 95% band over classes.

    Parameters
    ----------
    summary : DataFrame
        :func:`xailib.afi.evaluation.curve_summary` (``method``, ``mode``, ``k``, ``relative_accuracy``,
        ``ci_low``, ``ci_high``).
    """
    fig, axes = plt.subplots(1, 2, figsize=(7.6, 3.0), sharey=True)
    styles = {"AfI": ("tab:red", "-"), "TCAV": ("tab:blue", "--"), "random": ("grey", ":")}
    for ax, mode, label in ((axes[0], "ssc", "concepts added (SSC)"), (axes[1], "sdc", "concepts removed (SDC)")):
        for method, t in summary[summary["mode"] == mode].groupby("method", sort=False):
            colour, ls = styles.get(method, ("black", "-"))
            t = t.sort_values("k")
            ax.plot(t["k"], t["relative_accuracy"], ls, color=colour, marker="o", ms=3, label=method)
            ax.fill_between(t["k"], t["ci_low"], t["ci_high"], color=colour, alpha=0.12, lw=0)
        ax.set_xlabel(label)
        ax.set_ylim(-0.03, 1.15)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy / original accuracy")
    axes[1].legend(fontsize=7, loc="upper right", framealpha=0.9)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_user_concepts(scores: pd.DataFrame):
    """Fig. 4: one panel per concept group, bars per class and concept with the spread over draws (standard
    deviation, as the paper's error bars); concepts that are not significant are drawn hollow.

    Parameters
    ----------
    scores : DataFrame
        :func:`xailib.afi.experiments.user_concept_scores`.
    """
    groups = list(dict.fromkeys(scores["group"]))
    classes = list(dict.fromkeys(scores["class_name"]))
    fig, axes = plt.subplots(1, len(groups), figsize=(3.4 * len(groups), 3.0), squeeze=False)
    colours = plt.get_cmap("tab10").colors
    width = 0.8 / len(classes)
    for ax, g in zip(axes[0], groups):
        t = scores[scores["group"] == g]
        concepts = list(dict.fromkeys(t["concept"]))
        for i, c in enumerate(classes):
            u = t[t["class_name"] == c].set_index("concept").reindex(concepts)
            pos = np.arange(len(concepts)) + (i - (len(classes) - 1) / 2) * width
            sig = u["significant"].fillna(False).astype(bool).to_numpy()
            ax.bar(pos[sig], u["score"].to_numpy()[sig], width * 0.9, color=colours[i], label=c)
            ax.bar(pos[~sig], u["score"].to_numpy()[~sig], width * 0.9, facecolor="none", edgecolor=colours[i])
            ax.errorbar(pos, u["score"], yerr=u["score_std"].fillna(0), fmt="none", ecolor="black", lw=0.6, capsize=1.5)
        ax.set_xticks(range(len(concepts)), concepts, rotation=40, fontsize=7)
        ax.set_title(g, fontsize=9)
    axes[0, 0].set_ylabel("AfI concept importance")
    axes[0, -1].legend(fontsize=7, framealpha=0.9)
    fig.tight_layout()
    return fig
