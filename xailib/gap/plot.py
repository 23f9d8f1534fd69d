"""The gAP paper's figures: the decomposition of Fig. 5, and Figs. 6, 8, 10-14 from the experiments' tables.

Nothing here computes the method: :func:`plot_decomposition` draws a :class:`~xailib.gap.DecompositionTree`,
the other functions draw the tables of :mod:`xailib.gap.sanity` and :mod:`xailib.gap.diagnosis` (heat maps
over images through :mod:`xailib.plotting`), and Figs. 7 and 9 from those of :mod:`xailib.baselines`.

In :func:`plot_decomposition` each node is a thumbnail: the image with the node's activation map ``A^l_k`` (Eq. 3, for its parent's
decision) laid over it and its peak (Eq. 5) as a black dot; the label is ``layer:channel``. Edges run
from a decision to the channels it was decomposed into, labelled with the contribution
``alpha^l_k`` (Eq. 4). Nothing here computes the method.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Patch
import pandas as pd
import torch
from torch import nn

from xailib.baselines import attribute, available, cascading_copy, randomization_layers, split_options
from xailib.checks import check_images, check_layers, check_methods, check_targets
from xailib.plotting import map_cell_centre, normalized_heat, show_overlay, to_numpy_image
from xailib.gap.baselines import SALIENCY_METHODS
from xailib.gap.decomposition import OUTPUT, DecompositionNode, DecompositionTree
from xailib.gap.diagnosis import ContextResult, OcclusionResult, peak_response_summary, region_masks

__all__ = [
    "plot_decomposition",
    "plot_sorted_contributions",
    "plot_channel_counts",
    "plot_sparse_surrogate",
    "plot_occlusion",
    "plot_peak_responses",
    "plot_context_example",
    "plot_discriminative_degrees",
    "plot_cascading_randomization",
    "plot_data_randomization",
    "plot_cascading_examples",
    "plot_channel_removal",
    "identical_curves",
]


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
    rgb = to_numpy_image(image, scale="minmax")
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
            sub.imshow(normalized_heat(node.activation_map, size), cmap=cmap, alpha=alpha, vmin=0, vmax=1)
        if node.position is not None and node.activation_map is not None:
            sub.plot(*map_cell_centre(node.position, np.asarray(node.activation_map).shape, size), "o",
                     color="black", ms=3)
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


# --------------------------------------------------------------------------------------------------
# Sec. 4.1: Figs. 6 and 8 (the tables come from xailib.gap.sanity)
# --------------------------------------------------------------------------------------------------


def plot_sorted_contributions(frames: dict[str, pd.DataFrame], max_rank: int | None = None):
    """Fig. 6(a): one panel per stage pair (columns) and model (rows); gAP and GT sorted, mean +- std.

    ``frames`` maps a model name to :meth:`SanityResult.sorted_contributions`. Returns the Figure.
    """
    import matplotlib.pyplot as plt

    pairs = list(dict.fromkeys(next(iter(frames.values()))["pair"]))
    fig, axes = plt.subplots(len(frames), len(pairs), figsize=(3.0 * len(pairs), 2.4 * len(frames)), squeeze=False)
    for r, (model_name, df) in enumerate(frames.items()):
        for c, pair in enumerate(pairs):
            ax = axes[r, c]
            for method, color in (("gAP", "C0"), ("GT", "C3")):
                d = df[(df["pair"] == pair) & (df["method"] == method)]
                if max_rank is not None:
                    d = d[d["rank"] < max_rank]
                ax.plot(d["rank"], d["value"], color=color, label=method, lw=1.5)
                ax.fill_between(d["rank"], d["value"] - d["std"], d["value"] + d["std"], color=color, alpha=0.15)
            ax.axhline(0, color="k", lw=0.5)
            ax.set_title(f"{pair} ({df[df['pair'] == pair]['layer'].iloc[0].split('.')[-1]})", fontsize=9)
            if c == 0:
                ax.set_ylabel(f"{model_name}\ncontribution / max", fontsize=8)
            if r == len(frames) - 1:
                ax.set_xlabel("channel rank")
            ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_channel_counts(frames: dict[str, pd.DataFrame]):
    """Fig. 6(b): all, activated and overlapping channels per layer; ``frames``: model -> channel_counts()."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(frames), figsize=(4.5 * len(frames), 3.0), squeeze=False)
    for ax, (model_name, df) in zip(axes[0], frames.items()):
        x = np.arange(len(df))
        w = 0.27
        ax.bar(x - w, df["all"], w, label="all channels", color="0.7")
        ax.bar(x, df["activated"], w, yerr=df["activated_std"], label="activated (alpha > 0)", color="C0")
        ax.bar(x + w, df["overlapping"], w, yerr=df["overlapping_std"], label="overlapping (IoU > 0.9)", color="C3")
        ax.set_xticks(x, [f"{p}\n{lay.split('.')[-1]}" for p, lay in zip(df["pair"], df["layer"])], fontsize=7)
        ax.set_title(model_name, fontsize=9)
        ax.set_ylabel("channels")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_sparse_surrogate(frames: dict[str, pd.DataFrame]):
    """Fig. 8: accuracy and match rate against k; ``frames``: model -> sparse_surrogate_curve()."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2 * len(frames), figsize=(3.6 * 2 * len(frames), 2.8), squeeze=False)
    for i, (model_name, df) in enumerate(frames.items()):
        full = df[df["method"] == "full model"].iloc[0]
        for j, metric in enumerate(("accuracy", "match_rate")):
            ax = axes[0, 2 * i + j]
            for method, style in (("gAP top-k", "o-C0"), ("random", "s--C7")):
                d = df[df["method"] == method]
                if len(d):
                    ax.plot(d["k"], d[metric], style[:-2], color=style[-2:], label=method, ms=4)
            ax.axhline(full[metric], color="C3", lw=1, ls=":", label="full model")
            ax.set_xscale("log", base=2)
            ax.set_xlabel("k (top-k per decomposition)")
            ax.set_ylabel(metric.replace("_", " "))
            ax.set_ylim(-0.02, 1.02)
            ax.set_title(model_name, fontsize=9)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------------
# Sec. 4.2: Figs. 10-14 (the tables come from xailib.gap.diagnosis)
# --------------------------------------------------------------------------------------------------


def plot_occlusion(result: OcclusionResult, images: torch.Tensor, class_names: Sequence[str], rows: int = 4):
    """Fig. 10-style panels for the first ``rows`` images of an :func:`occlusion_test` result.

    Columns: the image (true / predicted class), the upper layer's top channel map for the decision, the
    lower layer's top channel map for that channel's peak with the region outlined, the occluded image
    and the control. Returns a matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    n = min(rows, len(result.table))
    if n == 0:
        raise ValueError("The occlusion result has no images (the model misclassified none); nothing to plot.")
    fig, axes = plt.subplots(n, 5, figsize=(9.5, 2.0 * n + 0.3), squeeze=False)
    lower, upper = result.layers
    for r in range(n):
        t = result.table.iloc[r]
        img = images[int(t["index"])]
        show_overlay(axes[r, 0], img)
        axes[r, 0].set_title(f"{class_names[int(t['label'])]} -> {class_names[int(t['pred'])]}\n"
                             f"p={t['p_pred']:.2f}", fontsize=7)
        show_overlay(axes[r, 1], img, heat=result.upper_maps[r])
        axes[r, 1].set_title(f"{upper.split('.')[-1]} ch {int(t['upper_channel'])}\n"
                             f"share {100 * t['upper_share']:.1f}%", fontsize=7)
        show_overlay(axes[r, 2], img, heat=result.lower_maps[r], mask=result.masks[r])
        axes[r, 2].set_title(f"{lower.split('.')[-1]} ch {int(t['lower_channel'])}\n"
                             f"share {100 * t['lower_share']:.1f}%", fontsize=7)
        show_overlay(axes[r, 3], result.occluded[r])
        axes[r, 3].set_title(f"occluded: {class_names[int(t['pred_occluded'])]}\n"
                             f"p({class_names[int(t['pred'])]})={t['p_pred_occluded']:.2f}", fontsize=7)
        show_overlay(axes[r, 4], result.control[r])
        axes[r, 4].set_title(f"control: {class_names[int(t['pred_control'])]}\n"
                             f"p({class_names[int(t['pred'])]})={t['p_pred_control']:.2f}", fontsize=7)
    fig.tight_layout()
    return fig


def plot_peak_responses(table: pd.DataFrame, image: int | None = None, clean: torch.Tensor | None = None,
                        adversarial: torch.Tensor | None = None, class_names: Sequence[str] | None = None,
                        layer: str | None = None):
    """Fig. 11: (a) clean / adversarial / perturbation of one image (when given), (b) its peak responses,
    (c) the mean peak responses over the fooled images, per rank, for the true- and adversarial-class channels.

    ``table`` is from :func:`adversarial_peak_responses`; ``image`` an image index in it (default: the
    first fooled image); ``layer`` the layer to plot (default: the last in the table).
    """
    import matplotlib.pyplot as plt

    layer = table["layer"].iloc[-1] if layer is None else layer
    t = table[table["layer"] == layer]
    fooled = t[t["fooled"]]
    if fooled.empty:
        raise ValueError("No image was fooled by the attack (clean correct, adversarial wrong); nothing to plot.")
    image = int(fooled["image"].iloc[0]) if image is None else int(image)
    show = clean is not None and adversarial is not None
    ncols = 5 if show else 2
    fig, axes = plt.subplots(1, ncols, figsize=(3.0 * ncols + 2.2, 2.8),
                             gridspec_kw={"width_ratios": ([1, 1, 1] if show else []) + [2, 2]})
    name = (lambda c: class_names[int(c)]) if class_names is not None else (lambda c: str(int(c)))
    one = t[t["image"] == image]
    if show:
        x, xa = clean[image].cpu(), adversarial[image].cpu()
        eps = float((xa - x).abs().max())
        pert = (xa - x) / (2 * max(eps, 1e-12)) + 0.5
        for ax, im, title in zip(axes[:3], (x, xa, pert), (f"clean: {name(one['pred_clean'].iloc[0])}",
                                                            f"adversarial: {name(one['pred_adversarial'].iloc[0])}",
                                                            f"perturbation (eps={eps * 255:.1f}/255)")):
            show_overlay(ax, im)
            ax.set_title(title, fontsize=8)
    for ax, data, title in ((axes[-2], one, f"(b) image {image}, {layer.split('.')[-1]}"),
                            (axes[-1], peak_response_summary(t), f"(c) mean over {fooled['image'].nunique()} "
                                                                  "fooled images")):
        labels, clean_v, adv_v, colours = [], [], [], []
        for kind, colour in (("true class", "tab:blue"), ("adversarial class", "tab:red")):
            d = data[data["kind"] == kind]
            for _, row in d.iterrows():
                labels.append(f"ch{int(row['channel'])}" if "channel" in d else f"#{int(row['rank'])}")
                clean_v.append(row["peak_clean"])
                adv_v.append(row["peak_adversarial"])
                colours.append(colour)
        pos = np.arange(len(labels))
        ax.bar(pos - 0.2, clean_v, 0.4, color=colours, alpha=0.45, label="clean image")
        ax.bar(pos + 0.2, adv_v, 0.4, color=colours, alpha=1.0, label="adversarial image")
        ax.set_xticks(pos)
        ax.set_xticklabels(labels, rotation=60, fontsize=6)
        ax.set_ylabel("peak response max F", fontsize=7)
        ax.set_title(title, fontsize=7)
        ax.tick_params(labelsize=6)
    handles = [Patch(facecolor=c, alpha=a, label=f"{kind} channels, {img} image")
               for kind, c in (("true-class", "tab:blue"), ("adversarial-class", "tab:red"))
               for img, a in (("clean", 0.45), ("adversarial", 1.0))]
    axes[-1].legend(handles=handles, fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    return fig


def plot_context_example(result: ContextResult, scenes, image: int, class_names: Sequence[str]):
    """Fig. 12: one scene, its top channel at the top layer, and that channel's top channels one layer down,
    each map with its region outlined and its assigned label.

    ``result`` from :func:`context_assignment` with two layers; ``image`` an index into ``scenes``.
    """
    import matplotlib.pyplot as plt

    if len(result.levels) < 2:
        raise ValueError("plot_context_example needs a decomposition over two layers (top -> the one below).")
    top, low = result.levels[0], result.levels[1]
    first = int(torch.nonzero((top.image_index == image) & (top.rank == 0))[0, 0])
    kids = torch.nonzero(low.parent == first)[:, 0]
    t = result.table
    n = 2 + len(kids)
    fig, axes = plt.subplots(1, n, figsize=(2.1 * n, 2.5), squeeze=False)
    axes = axes[0]
    img = scenes.images[image].cpu()
    size = tuple(img.shape[-2:])
    bg = scenes.background_mask[image].cpu()
    show_overlay(axes[0], img, mask=bg)
    rows_top = t[(t["depth"] == 0) & (t["image"] == image)]
    context = rows_top["context"].iloc[0]
    axes[0].set_title(f"{class_names[int(scenes.labels[image])]} on {context}\n(background outlined)", fontsize=7)
    panels = [(axes[1], 0, first, top)] + [(axes[2 + i], 1, int(k), low) for i, k in enumerate(kids)]
    for ax, depth, row, level in panels:
        mask = region_masks(level.activation_map[row:row + 1], size, result.mask_threshold)[0]
        show_overlay(ax, img, heat=level.activation_map[row], mask=mask)
        rows = t[t["depth"] == depth]
        r = rows.iloc[row]
        arrow = "" if depth == 0 else "-> "
        ax.set_title(f"{arrow}{level.layer.split('.')[-1]} ch {int(r['channel'])}\n{r['label']} "
                     f"(IoU {r['best_iou']:.2f})", fontsize=7)
    fig.tight_layout()
    return fig


def plot_discriminative_degrees(summaries: dict[str, pd.DataFrame], column: str = "mean_D"):
    """Fig. 14: ``column`` of :func:`degree_summary` per stage, one line per model (``{name: summary}``);
    the zoo's deep tier (``<arch>-deep-<dataset>``) dashed, in the colour of its family's shallow member."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.4, 3.6))
    chance = None
    families: dict[str, str] = {}
    for name, s in summaries.items():
        family = name.split("-")[0]
        colour = families.setdefault(family, f"C{len(families)}")
        ax.plot(s["stage"], s[column], marker="o", label=name, color=colour,
                ls="--" if "-deep-" in name else "-")
        if column == "mean_D" and {"ci_low", "ci_high"} <= set(s.columns):  # 95% bootstrap CI over channels
            ax.errorbar(s["stage"], s[column], yerr=[s[column] - s["ci_low"], s["ci_high"] - s[column]],
                        fmt="none", ecolor=colour, elinewidth=0.8, capsize=2)
        chance = s["chance"].iloc[0]
    if chance is not None:
        ax.axhline(chance, color="grey", ls="--", lw=1, label="1/C (minimum)")
    ax.set_xlabel("stage (1 = lowest)")
    ax.set_ylabel(f"discriminative degree D ({column})")
    ax.set_ylim(0, 1.05)
    ax.set_xticks(sorted(next(iter(summaries.values()))["stage"]))
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------------
# Sec. 4.1: Figs. 7 and 9 (the tables come from xailib.baselines, through xailib.gap.baselines)
# --------------------------------------------------------------------------------------------------

_COLORS = {"gAP": "C3", "Gradient": "C0", "SmoothGrad": "C1", "GuidedBackprop": "C2", "IntegratedGradients": "C4",
           "Conductance": "C0", "InternalInfluence": "C1", "LRP": "C2", "Random": "0.5"}


def _short(name: str) -> str:
    return name.split(".")[-1]


def plot_cascading_randomization(df: pd.DataFrame, title: str | None = None):
    """Fig. 7(a): mean Spearman correlation (band: +-1 std over images) vs. cascade step, per method.

    Two panels: with absolute values and without. ``df`` from :func:`cascading_randomization`.
    """
    steps = df.drop_duplicates("step").sort_values("step")
    labels = ["original" if s == 0 else _short(r) for s, r in zip(steps["step"], steps["randomized"])]
    fig, axes = plt.subplots(1, 2, figsize=(12.8, 3.8), sharey=True)
    for ax, col, what in zip(axes, ("spearman_abs", "spearman_signed"), ("absolute value", "no absolute value")):
        for meth, g in df.groupby("method", sort=False):
            st = g.groupby("step")[col].agg(["mean", "std"]).reindex(steps["step"])
            ax.plot(range(len(st)), st["mean"], "o-", color=_COLORS.get(meth), label=meth, lw=2 if meth == "gAP" else 1)
            ax.fill_between(range(len(st)), st["mean"] - st["std"].fillna(0), st["mean"] + st["std"].fillna(0),
                            color=_COLORS.get(meth), alpha=0.12)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
        ax.set_xlabel("re-initialised from the top down to")
        ax.set_title(f"Spearman rank correlation ({what})")
    axes[0].set_ylabel("rank correlation with original map")
    axes[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)  # off the curves
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_data_randomization(df: pd.DataFrame, title: str | None = None):
    """Fig. 7(b): mean Spearman correlation (error bar: std over images) per method, with and without abs.

    ``df`` from :func:`data_randomization`.
    """
    stats = df.groupby("method", sort=False)[["spearman_abs", "spearman_signed"]].agg(["mean", "std"])
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    x = np.arange(len(stats))
    for j, (col, what) in enumerate((("spearman_abs", "absolute value"), ("spearman_signed", "no absolute value"))):
        ax.bar(x + (j - 0.5) * 0.38, stats[(col, "mean")], 0.38, yerr=stats[(col, "std")].fillna(0), capsize=3,
               label=what, color=[_COLORS.get(m) for m in stats.index], alpha=1.0 if j == 0 else 0.45)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xticks(x, stats.index, rotation=20)
    ax.set_ylabel("rank correlation\n(true vs. permuted labels)")
    # the bars take each method's colour; the key says which bar of a pair is which, in neutral shades
    handles = [Patch(facecolor="0.25", label="absolute value (left bar, full colour)"),
               Patch(facecolor="0.25", alpha=0.45, label="no absolute value (right bar, pale)")]
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title(title or "Data randomisation test")
    fig.tight_layout()
    return fig


def plot_cascading_examples(
    model: nn.Module,
    image: torch.Tensor,
    target: int | None = None,
    methods: Sequence[str] = SALIENCY_METHODS,
    layers: Sequence[str] | None = None,
    show_steps: Sequence[int] | None = None,
    random_model: nn.Module | None = None,
    seed: int = 0,
    **saliency_kwargs,
):
    """Visual comparison for one image: rows are methods, columns the original model and cascade steps
    (``sum_c |a_c|``, each map scaled to its own maximum), plus the permuted-label model if given.

    ``methods``: any registered map methods (:func:`xailib.baselines.available` ``("map")``); ``saliency_kwargs``
    go to the methods that take them."""

    if isinstance(image, torch.Tensor) and image.dim() == 3:
        image = image.unsqueeze(0)
    image = check_images(image, model, move=False)[:1]
    methods = check_methods(methods, available("map"), "map method")
    per_method = split_options(methods, "map", dict(saliency_kwargs, seed=seed))
    layers = randomization_layers(model) if layers is None else check_layers(model, layers)
    show = list(range(1, len(layers) + 1)) if show_steps is None else [int(s) for s in show_steps]
    t = check_targets("predicted" if target is None else [target], 1, model=model, images=image)

    def maps_of(m: nn.Module) -> dict[str, torch.Tensor]:
        return {meth: attribute(m, image, t, method=meth, kind="map", **per_method[meth]) for meth in methods}

    cols = [("original", maps_of(model))]
    with cascading_copy(model, layers, seed) as steps:
        for s, (name, rnd) in enumerate(steps, 1):
            if s in show:
                cols.append((f"-> {_short(name)}", maps_of(rnd)))
            if s >= max(show, default=0):
                break
    if random_model is not None:
        cols.append(("permuted labels", maps_of(random_model)))
    fig, axes = plt.subplots(len(methods), len(cols) + 1, figsize=(1.5 * (len(cols) + 1), 1.5 * len(methods)),
                             squeeze=False)
    for r, m in enumerate(methods):
        axes[r, 0].imshow(to_numpy_image(image[0]))
        axes[r, 0].set_ylabel(m, fontsize=8)
        for c, (name, maps) in enumerate(cols, 1):
            v = maps[m][0]  # sum_c |a_c|
            axes[r, c].imshow(v.numpy(), cmap="gray", vmin=0, vmax=float(v.max()) or 1.0)
            if r == 0:
                axes[r, c].set_title(name, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def plot_channel_removal(df: pd.DataFrame, title: str | None = None):
    """Fig. 9: accuracy vs. number of channels removed, one panel per layer, one line per method.

    ``df`` from :func:`channel_removal_curve`. Lower is better (the removed channels mattered more).
    """
    layers = list(dict.fromkeys(df["layer"]))
    fig, axes = plt.subplots(1, len(layers), figsize=(3.6 * len(layers) + 1.8, 3.3), sharey=True, squeeze=False)
    same = identical_curves(df, "LRP", "gAP")
    for ax, layer in zip(axes[0], layers):
        for meth, g in df[df["layer"] == layer].groupby("method", sort=False):
            label = "LRP = gAP (identical curve)" if meth == "LRP" and same.get(layer) else meth
            ax.plot(g["n_removed"], g["accuracy"], marker="x" if meth == "LRP" else "o", color=_COLORS.get(meth),
                    label=label, lw=3 if meth == "gAP" else 1, ls={"Random": ":", "LRP": "--"}.get(meth, "-"),
                    ms=7 if meth == "gAP" else 5, zorder=1 if meth == "gAP" else 2)  # LRP drawn over gAP
        if same.get(layer):
            ax.text(0.03, 0.03, "LRP = gAP\n(identical curve)", transform=ax.transAxes, ha="left", va="bottom",
                    fontsize=7, color=_COLORS["LRP"])  # the curves fall from the top left: this corner stays clear
        ax.set_title(_short(layer))
        ax.set_xlabel("top-N channels removed")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("accuracy")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    for ax in axes[0, 1:]:  # every method once, whichever panel drew it
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    axes[0, -1].legend(handles, labels, fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def identical_curves(df: pd.DataFrame, method: str, reference: str = "gAP", atol: float = 1e-9) -> dict[str, bool]:
    """Per layer of a :func:`channel_removal_curve` table: whether ``method``'s accuracy curve equals
    ``reference``'s at every N, within ``atol`` (False where either is missing or their N differ)."""
    out = {}
    for layer, g in df.groupby("layer", sort=False):
        a = g[g["method"] == method].sort_values("n_removed")
        b = g[g["method"] == reference].sort_values("n_removed")
        out[layer] = bool(len(a) and len(a) == len(b) and np.array_equal(a["n_removed"].to_numpy(), b["n_removed"].to_numpy())
                          and np.allclose(a["accuracy"].to_numpy(float), b["accuracy"].to_numpy(float), rtol=0, atol=atol))
    return out
