"""gAP: "Deeply Explain CNN via Hierarchical Decomposition" (Cheng et al.).

Where each part of the paper lives:

* Sec. 3.1, Eqs. (2)-(5) and Table 1's strategies (AA, MA, AG, MG) -- :mod:`xailib.gap.module`:
  :class:`GAP` (fast, batched) and :func:`gap_reference` (slow, literal).
* Sec. 3.2 hierarchical decomposition, and the NMS of Sec. 4.1 ("Channel-effect overlaps") --
  :mod:`xailib.gap.decomposition`: :func:`decompose` (batched per level), :func:`decompose_nodewise`.
* Sec. 4.1 ground truth (score drop when a channel is set to its average activation) --
  :mod:`xailib.gap.ground_truth`.
* Sec. 4.1 sanity checks, saliency to the data layer -- :mod:`xailib.gap.saliency`.
* Fig. 5 drawing -- :mod:`xailib.gap.plot`.

Examples
--------
>>> from xailib.gap import GAP, Neuron, decompose
>>> res = GAP(model).attribute(x, target=3, layer="stage5")
>>> tree = decompose(model, x[:1], layers=model.stage_names, top_n=3)
>>> [n.channel for n in tree.root.children]
"""

from xailib.gap.decomposition import (
    DecompositionNode,
    DecompositionTree,
    binary_masks,
    decompose,
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
from xailib.gap.plot import plot_decomposition
from xailib.gap.saliency import gap_saliency

__all__ = [
    "GAP",
    "GAPResult",
    "Neuron",
    "STRATEGIES",
    "gap_reference",
    "activation_maps",
    "channel_contributions",
    "peak_positions",
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
]
