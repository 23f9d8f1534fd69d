"""gAP: "Deeply Explain CNN via Hierarchical Decomposition" (Cheng et al.).

Where each part of the paper lives:

* Sec. 3.1, Eqs. (2)-(5) and Table 1's strategies (AA, MA, AG, MG) -- :mod:`xailib.gap.module`:
  :class:`GAP` (fast, batched) and :func:`gap_reference` (slow, literal); the batched Eq. (2) engine
  under them -- :mod:`xailib.gap.gradients`.
* Sec. 3.2 hierarchical decomposition, and the NMS of Sec. 4.1 ("Channel-effect overlaps") --
  :mod:`xailib.gap.decomposition`: one engine, batched over images and over the nodes of a level --
  :func:`decompose` (a tree for one image), :func:`decompose_images` (flat levels for many images) --
  and :func:`decompose_nodewise`, the literal node-by-node reference.
* Sec. 4.1 ground truth (score drop when a channel is set to its average activation) --
  :mod:`xailib.gap.ground_truth`.
* Sec. 4.1 sanity checks, saliency to the data layer -- :mod:`xailib.gap.saliency`.
* The figures (Fig. 5's tree, Figs. 6-14 from the experiments' tables) -- :mod:`xailib.gap.plot`.
* Exact receptive fields for the batched, cropped decomposition -- :mod:`xailib.gap.receptive`.
* Sec. 4.1 Table 1, Fig. 6, the timing claim, Fig. 8 -- :mod:`xailib.gap.sanity`;
  Fig. 7 (randomisation tests) and Fig. 9 (channel removal) against other methods -- :mod:`xailib.gap.baselines`
  (the paper's method lists over :mod:`xailib.baselines`, where gAP registers itself: :mod:`xailib.gap.registry`).
* Sec. 4.2 diagnosis, Figs. 10-14 and Eq. (13) -- :mod:`xailib.gap.diagnosis` (attacks from
  :mod:`xailib.attacks`).
* The paper's reported numbers and the paper-vs-ours tables with their verdicts -- :mod:`xailib.gap.paper`.
* The interactive explorer (Sec. 3.2, Fig. 4/5) -- :mod:`xailib.gap.explorer`, guided backprop in
  :mod:`xailib.gap.guided`. ``ExplorerState``, ``Explorer`` and ``explore`` are importable from here
  (loaded on first use, so that ``import xailib.gap`` does not import ipywidgets).

Examples
--------
>>> from xailib.gap import GAP, Neuron, decompose
>>> res = GAP(model).attribute(x, target=3, layer="stage5")
>>> tree = decompose(model, x[:1], layers=model.stage_names, top_n=3)
>>> [n.channel for n in tree.root.children]
"""

from xailib.gap.decomposition import (
    DecisionLevel,
    DecompositionNode,
    DecompositionTree,
    binary_masks,
    decompose,
    decompose_images,
    decompose_nodewise,
    select_channels,
)
from xailib.gap.ground_truth import dataset_channel_means, ground_truth_contributions, ground_truth_naive
from xailib.gap.module import (
    GAP,
    STRATEGIES,
    GAPResult,
    Neuron,
    activation_maps,
    channel_contributions,
    gap_reference,
    peak_positions,
)
from xailib.gap.guided import guided_backprop
from xailib.gap.plot import plot_decomposition
from xailib.gap.saliency import gap_saliency
from xailib.gap import registry as _registry  # noqa: E402,F401  registers "gAP" with xailib.baselines

__all__ = [
    "GAP",
    "GAPResult",
    "Neuron",
    "STRATEGIES",
    "gap_reference",
    "activation_maps",
    "channel_contributions",
    "peak_positions",
    "DecisionLevel",
    "decompose_images",
    "DecompositionNode",
    "DecompositionTree",
    "decompose",
    "decompose_nodewise",
    "select_channels",
    "binary_masks",
    "ground_truth_contributions",
    "ground_truth_naive",
    "dataset_channel_means",
    "gap_saliency",
    "plot_decomposition",
    "guided_backprop",
    "ExplorerState",
    "Explorer",
    "explore",
]

_LAZY = {"ExplorerState": "explorer", "Explorer": "explorer", "explore": "explorer"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"xailib.gap.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'xailib.gap' has no attribute {name!r}")
