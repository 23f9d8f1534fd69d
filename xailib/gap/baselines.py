"""gAP against other attribution methods: the sanity checks of Fig. 7 and the channel removal of Fig. 9 (Sec. 4.1).

The algorithms live on the floor, in :mod:`xailib.baselines` (any registered method, called through
:func:`xailib.baselines.attribute`); this module holds the gAP paper's part: its choice of methods, the summary
tables, :func:`paper_comparison` and the figures. The algorithms' names stay importable from here.

Fig. 7, sanity checks (Adebayo et al., NeurIPS 2018, the paper's ref. [74]):

    "We do the model parameter randomization test on the pretrained ResNet-18 model and randomly initialize
    the model parameters from the top layer to the bottom layer in a cascading manner. We utilize the spearman
    rank correlation metric to compute the difference between the attribution maps from the original model and
    the randomly initialized model. Besides, we do the data randomization test by comparing the saliency maps
    from CNNs trained with true labels and permuted labels, respectively."  (Sec. 4.1)

* :data:`SALIENCY_METHODS` -- gAP (:func:`xailib.gap.gap_saliency`: decompose to the data layer and sum the
  gradients) and captum's Gradient, SmoothGrad, Guided Backprop and Integrated Gradients.
* :func:`cascading_randomization`, :func:`data_randomization` -- :mod:`xailib.baselines.randomization` with these
  methods by default. Maps are compared as Adebayo et al. do, both with the absolute value (``sum_c |a_c|``) and
  without (``sum_c a_c``); the gAP paper does not say which it plots, so we report both.

Fig. 9, channel removal ("Comparison with individual-based methods"):

* :data:`CHANNEL_METHODS` -- gAP (Eq. 4), captum's ``LayerConductance`` (ref. [21]), ``InternalInfluence``
  (ref. [22]), ``LayerLRP`` (ref. [34], epsilon rule) and a random ranking. For a network of ReLUs, convs,
  eval-mode BatchNorm, max/average pooling and linear layers, LRP's channel relevance is ``sum_{x,y} G * F =
  Z * alpha`` (Eq. 4): gAP and LRP rank the channels of such a layer identically (tested on the zoo VGG).
* :func:`channel_removal_curve` -- :func:`xailib.baselines.channel_removal_curve` with these methods by default:
  accuracy after removing each image's top-N channels, a removed channel set to its average activation on that
  image (Sec. 4.1, ``ablation="mean"``) or to zero.

The summaries (:func:`sanity_summary`, :func:`seconds_per_map`, :func:`removal_summary`), :func:`paper_comparison`
and the figures (``plot_*``) read the tables these return.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from xailib import baselines as _floor
from xailib.baselines import (
    ABLATIONS,
    attribute,
    get_method,
    lrp_copy,
    randomization_layers,
    randomized_copy,
    reinitialize,
    remove_channels,
    train_random_label_model,
)
from xailib.checks import check_methods

__all__ = [
    "SALIENCY_METHODS",
    "CHANNEL_METHODS",
    "ABLATIONS",
    "saliency_maps",
    "reduce_maps",
    "randomization_layers",
    "reinitialize",
    "randomized_copy",
    "cascading_randomization",
    "train_random_label_model",
    "data_randomization",
    "lrp_copy",
    "channel_scores",
    "remove_channels",
    "channel_removal_curve",
    "sanity_summary",
    "seconds_per_map",
    "removal_summary",
]

#: Saliency methods of Fig. 7 (gAP, and captum's Gradient, SmoothGrad, Guided Backprop, Integrated Gradients).
SALIENCY_METHODS: tuple[str, ...] = ("gAP", "Gradient", "SmoothGrad", "GuidedBackprop", "IntegratedGradients")
#: Channel-importance methods of Fig. 9.
CHANNEL_METHODS: tuple[str, ...] = ("gAP", "Conductance", "InternalInfluence", "LRP", "Random")


# --------------------------------------------------------------------------------------------------
# The algorithms, with the paper's methods as defaults (they live in xailib.baselines)
# --------------------------------------------------------------------------------------------------


def saliency_maps(
    model: nn.Module,
    images: torch.Tensor,
    targets=None,
    method: str = "gAP",
    *,
    top_n: int = 3,
    sg_samples: int = 16,
    sg_stdev: float = 0.15,
    ig_steps: int = 32,
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = False,
) -> torch.Tensor:
    """Input-space attribution maps ``[B, C, H, W]`` (signed, on the CPU) of one Fig. 7 method.

    :func:`xailib.baselines.attribute` with ``reduce=None``; each method gets the options it takes (``top_n``:
    gAP's N; ``sg_samples``, ``sg_stdev``, ``seed``: SmoothGrad; ``ig_steps``: Integrated Gradients;
    ``batch_size``: images per captum call). ``targets=None`` = the predicted classes. Reduce with
    :func:`reduce_maps`.
    """
    (method,) = check_methods([method], SALIENCY_METHODS)
    if isinstance(images, torch.Tensor) and images.dim() == 3:
        images = images.unsqueeze(0)
    given = dict(top_n=top_n, sg_samples=sg_samples, sg_stdev=sg_stdev, ig_steps=ig_steps, batch_size=batch_size,
                 seed=seed, progress=progress)
    opts = {k: v for k, v in given.items() if k in get_method(method, "map").options}
    return attribute(model, images, targets, method=method, kind="map", reduce=None, **opts)


def reduce_maps(attributions: torch.Tensor, absolute: bool = True) -> torch.Tensor:
    """Colour channels -> one map per image: ``sum_c |a_c|`` (``absolute=True``) or ``sum_c a_c``.

    ``[B, C, H, W] -> [B, H, W]``; :func:`xailib.baselines.reduce_maps` with ``"abs"`` / ``"signed"``.
    """
    return _floor.reduce_maps(attributions, "abs" if absolute else "signed")


def channel_scores(
    model: nn.Module,
    images: torch.Tensor,
    targets,
    layer: str,
    method: str = "gAP",
    *,
    n_steps: int = 16,
    batch_size: int = 64,
    seed: int = 0,
) -> torch.Tensor:
    """Importance ``[B, K]`` of each channel of ``layer`` for each image's target class, by a Fig. 9 method.

    :func:`xailib.baselines.attribute` of the channel method: ``gAP`` (Eq. 4), ``Conductance``,
    ``InternalInfluence`` (``n_steps`` steps from a black image), ``LRP`` (epsilon rule), ``Random`` (seeded by
    ``seed``). ``targets=None`` = the predicted classes.
    """
    (method,) = check_methods([method], CHANNEL_METHODS)
    given = dict(n_steps=n_steps, batch_size=batch_size, seed=seed)
    opts = {k: v for k, v in given.items() if k in get_method(method, "channel").options}
    return attribute(model, images, targets, method=method, layer=layer, kind="channel", **opts)


def cascading_randomization(model: nn.Module, images: torch.Tensor, targets=None,
                            methods: Sequence[str] = SALIENCY_METHODS, layers: Sequence[str] | None = None,
                            seed: int = 0, progress: bool = False, **saliency_kwargs) -> pd.DataFrame:
    """Fig. 7(a): :func:`xailib.baselines.cascading_randomization` with the Fig. 7 methods by default.

    ``saliency_kwargs`` (``top_n``, ``sg_samples``, ``ig_steps``, ...) go to the methods that take them.
    """
    return _floor.cascading_randomization(model, images, targets, methods, layers, seed, progress, **saliency_kwargs)


def data_randomization(model: nn.Module, random_model: nn.Module, images: torch.Tensor, targets=None,
                       methods: Sequence[str] = SALIENCY_METHODS, seed: int = 0, **saliency_kwargs) -> pd.DataFrame:
    """Fig. 7(b): :func:`xailib.baselines.data_randomization` with the Fig. 7 methods by default."""
    return _floor.data_randomization(model, random_model, images, targets, methods, seed, **saliency_kwargs)


def channel_removal_curve(model: nn.Module, images: torch.Tensor, labels, layers: str | Sequence[str],
                          methods: Sequence[str] = CHANNEL_METHODS, n_values: Sequence[int] = (0, 1, 2, 4, 8, 16),
                          ablation: str = "mean", *, n_steps: int = 16, batch_size: int = 64, seed: int = 0,
                          progress: bool = False) -> pd.DataFrame:
    """Fig. 9: :func:`xailib.baselines.channel_removal_curve` with the Fig. 9 methods by default.

    ``n_steps`` goes to Conductance and InternalInfluence, ``seed`` to Random, ``batch_size`` to the removal and
    to every method that batches.
    """
    return _floor.channel_removal_curve(model, images, labels, layers, methods, n_values, ablation,
                                        batch_size=batch_size, progress=progress, n_steps=n_steps, seed=seed)


# --------------------------------------------------------------------------------------------------
# Summary tables
# --------------------------------------------------------------------------------------------------


def sanity_summary(cascade: pd.DataFrame, data: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per method: mean Spearman correlation (over images) after re-initialising the top group only, after the
    whole cascade, and (if ``data`` is given) between the true-label and permuted-label models.

    ``cascade`` from :func:`cascading_randomization`, ``data`` from :func:`data_randomization`.
    """
    last = int(cascade["step"].max())
    g = cascade.groupby(["method", "step"], sort=False)[["spearman_abs", "spearman_signed"]].mean()
    methods = list(dict.fromkeys(cascade["method"]))
    out = pd.DataFrame({
        "method": methods,
        "cascade_top_abs": [g.loc[(m, 1), "spearman_abs"] for m in methods],
        "cascade_all_abs": [g.loc[(m, last), "spearman_abs"] for m in methods],
        "cascade_all_signed": [g.loc[(m, last), "spearman_signed"] for m in methods],
    })
    if data is not None:
        d = data.groupby("method")[["spearman_abs", "spearman_signed"]].mean()
        out["data_abs"] = [d.loc[m, "spearman_abs"] if m in d.index else np.nan for m in methods]
        out["data_signed"] = [d.loc[m, "spearman_signed"] if m in d.index else np.nan for m in methods]
    return out


def seconds_per_map(cascade: pd.DataFrame) -> pd.DataFrame:
    """Mean wall-clock seconds per saliency map and method, from :func:`cascading_randomization`'s table.

    Kept apart from :func:`sanity_summary` because times differ from run to run while correlations do not.
    """
    methods = list(dict.fromkeys(cascade["method"]))
    return pd.DataFrame({"method": methods,
                         "seconds_per_map": [cascade[cascade.method == m]["seconds"].mean() for m in methods]})


def removal_summary(removal: pd.DataFrame) -> pd.DataFrame:
    """Accuracy per (layer, method) and number of channels removed (one column per N), the mean over N > 0, and
    the rank of each method within its layer by that mean (1 = lowest accuracy, i.e. the most important channels).

    ``removal`` from :func:`channel_removal_curve`.
    """
    wide = removal.pivot_table(index=["layer", "method"], columns="n_removed", values="accuracy", sort=False)
    wide.columns = [f"N={n}" for n in wide.columns]
    pos = [c for c in wide.columns if c != "N=0"]
    wide["mean_N>0"] = wide[pos].mean(axis=1) if pos else np.nan
    wide["rank"] = wide.groupby(level="layer")["mean_N>0"].rank(method="min").astype(int)
    return wide.reset_index()
