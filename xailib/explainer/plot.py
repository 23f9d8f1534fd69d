"""Figures of the explainer notebooks: part-contribution pies beside Grad-CAM (Fig. 5), the contribution
distribution per filter (Fig. 7), and the part selectivity of the performers' filters."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from xailib.plotting import show_overlay

__all__ = ["part_colours", "plot_attribute_bars", "plot_capacity", "plot_contribution_distribution", "plot_part_pies",
           "plot_selectivity"]


def part_colours(parts: Sequence[str]) -> dict[str, tuple]:
    """One fixed colour per part name (tab20, in the order given), and grey for ``"other"``."""
    cmap = plt.get_cmap("tab20")
    out = {p: cmap(i % 20) for i, p in enumerate(p for p in parts if p != "other")}
    out["other"] = (0.75, 0.75, 0.75, 1.0)
    return out


def _pie(ax, values: Mapping[str, float], colours: Mapping[str, tuple], title: str) -> None:
    names = [k for k, v in values.items() if v > 0]
    vals = [values[k] for k in names]
    if not vals:
        ax.text(0.5, 0.5, "no positive\ncontribution", ha="center", va="center", fontsize=6)
        ax.set_axis_off()
    else:
        ax.pie(vals, colors=[colours[k] for k in names], startangle=90, counterclock=False,
               wedgeprops={"linewidth": 0.5, "edgecolor": "white"})
    ax.set_title(title, fontsize=6)


def plot_part_pies(images: torch.Tensor, cams: torch.Tensor, parts: Mapping[str, torch.Tensor], part_names,
                   scores: Mapping[str, torch.Tensor], title: str = ""):
    """Fig. 5: per image (columns) the image, its Grad-CAM, and one pie of part contributions per explainer.

    Parameters
    ----------
    images : Tensor ``[K, 3, H, W]``
    cams : Tensor ``[K, h, w]``
    parts : mapping explainer -> Tensor ``[K, P + 1]``
        ``Contri_p`` per part, the last column the filters of no part (``"other"``).
    part_names : list of P names
    scores : mapping label -> Tensor ``[K]``
        Printed under the image, e.g. the performer's and each explainer's score.
    """
    names = list(part_names) + ["other"]
    colours = part_colours(names)
    k = len(images)
    fig, axes = plt.subplots(2 + len(parts), k, figsize=(1.45 * k, 1.45 * (2 + len(parts)) + 0.6), squeeze=False)
    for i in range(k):
        show_overlay(axes[0, i], images[i])
        axes[0, i].set_title("\n".join(f"{lab} {float(v[i]):+.1f}" for lab, v in scores.items()), fontsize=5.5)
        show_overlay(axes[1, i], images[i], cams[i].numpy())
        for r, (name, contri) in enumerate(parts.items()):
            _pie(axes[2 + r, i], dict(zip(names, contri[i].tolist())), colours, name if i == 0 else "")
    axes[1, 0].set_ylabel("Grad-CAM", fontsize=7)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[n]) for n in names]
    fig.legend(handles, names, loc="lower center", ncol=min(len(names), 7), fontsize=6, frameon=False)
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 0.96))
    return fig


def plot_contribution_distribution(dist: Mapping[str, torch.Tensor], title: str = ""):
    """Fig. 7: the mean share ``c_i`` of each filter (sorted by the share under ours), per explainer.

    ``dist`` maps explainer name -> ``c [N, n]`` (``|alpha_i y_i| / sum_j |alpha_j y_j|``)."""
    fig, ax = plt.subplots(figsize=(5.2, 2.6))
    ref = next(reversed(list(dist.values())))
    order = torch.argsort(ref.mean(0), descending=True)
    for name, c in dist.items():
        ax.bar(np.arange(c.shape[1]), c.mean(0)[order].numpy(), alpha=0.6, label=name, width=1.0)
    ax.set_xlabel("filter (sorted by its mean share under ours)", fontsize=7)
    ax.set_ylabel("mean contribution share $c_i$", fontsize=7)
    ax.tick_params(labelsize=6)
    ax.legend(fontsize=7, frameon=False)
    if title:
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return fig


def plot_selectivity(table: pd.DataFrame, title: str = ""):
    """Each performer's mean best-part IoU, interpretable against ordinary, one point per category and
    architecture (``table``: ``arch``, ``category``, ``interpretable``, ``mean_iou``)."""
    wide = table.pivot_table(index=["arch", "category"], columns="interpretable", values="mean_iou")
    fig, ax = plt.subplots(figsize=(3.4, 3.2))
    for arch, t in wide.groupby(level="arch", sort=False):
        ax.scatter(t[False], t[True], s=14, label=arch)
    hi = float(np.nanmax(wide.to_numpy())) * 1.1 if wide.size else 1.0
    ax.plot([0, hi], [0, hi], color="grey", lw=0.8, ls="--")
    ax.set_xlabel("ordinary performer", fontsize=7)
    ax.set_ylabel("interpretable performer", fontsize=7)
    ax.tick_params(labelsize=6)
    ax.legend(fontsize=6, frameon=False)
    ax.set_title(title or "mean best-part IoU of the top filters", fontsize=8)
    fig.tight_layout()
    return fig


def plot_attribute_bars(images: torch.Tensor, contributions: Mapping[str, torch.Tensor], names, title: str = "",
                        top: int = 10):
    """Fig. 6: per image (rows) the image and the ``top`` concepts by ``|alpha_i y_i|`` under the last explainer,
    with every explainer's ``alpha_i y_i`` as bars side by side (``contributions``: explainer -> ``[K, n]``)."""
    names = list(names)
    k = len(images)
    fig, axes = plt.subplots(k, 2, figsize=(6.2, 1.7 * k + 0.4), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 4]})
    ref = list(contributions.values())[-1]
    width = 0.8 / len(contributions)
    for i in range(k):
        show_overlay(axes[i, 0], images[i])
        order = torch.argsort(ref[i].abs(), descending=True)[:top]
        ax = axes[i, 1]
        for j, (label, c) in enumerate(contributions.items()):
            ax.bar(np.arange(len(order)) + j * width, c[i, order].numpy(), width=width, label=label)
        ax.axhline(0, color="black", lw=0.5)
        ax.set_xticks(np.arange(len(order)) + width * (len(contributions) - 1) / 2)
        ax.set_xticklabels([names[o] for o in order], rotation=35, ha="right", fontsize=5.5)
        ax.tick_params(axis="y", labelsize=6)
        if i == 0:
            ax.legend(fontsize=6, frameon=False)
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    return fig


def plot_capacity(table: pd.DataFrame, title: str = ""):
    """Fig. 8: relative deviation and accuracy drop against the number of concepts, mean over draws, one line per
    target (``table``: :func:`xailib.explainer.attributes.capacity_curve` rows)."""
    cols = [c for c in ("relative_deviation", "accuracy_drop") if c in table]
    fig, axes = plt.subplots(1, len(cols), figsize=(3.2 * len(cols), 2.7), squeeze=False)
    for ax, col in zip(axes[0], cols):
        for target, t in table.dropna(subset=[col]).groupby("target", sort=False):
            m = t.groupby("k")[col].agg(["mean", "std"]).reset_index()
            ax.errorbar(m["k"], m["mean"], yerr=m["std"].fillna(0), marker="o", ms=3, capsize=2, label=target)
        ax.set_xlabel("number of concepts", fontsize=7)
        ax.set_ylabel(col.replace("_", " "), fontsize=7)
        ax.tick_params(labelsize=6)
        ax.legend(fontsize=6, frameon=False)
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    return fig
