"""Saliency maps from gAP for the sanity checks (Sec. 4.1, Fig. 7).

    "To generate saliency maps from our gAP, we hierarchically decompose the decision until the data
    layer and sum all the gradients from each decomposition."  (Sec. 4.1)

The hierarchical decomposition (:func:`xailib.gap.decompose`) ends at stage 1; one more gAP step
decomposes each stage-1 decision ``F^1_{k,y^,x^}`` onto the data layer, giving its gradient map
``G^0 = dF^1_{k,y^,x^} / dI: [C, H, W]`` (Eq. 2 with the image as layer 0). The saliency map is the
sum of these gradients over all decompositions onto the data layer (``nodes="leaves"``, default).
``nodes="all"`` also adds the input gradients of every decision higher up the tree (the root's is the
plain gradient of the class score). All input gradients of one call come from batched backwards.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from xailib.layers import model_state
from xailib.gap.decomposition import (
    DEFAULT_MASK_THRESHOLD,
    OUTPUT,
    DecompositionTree,
    decompose,
)
from xailib.checks import check_choice, check_images
from xailib.gap.gradients import DEFAULT_MAX_BATCH_BYTES, decision_gradients

__all__ = ["gap_saliency"]


def gap_saliency(
    model: nn.Module,
    image: torch.Tensor,
    target: int | None = None,
    layers: Sequence[str] | None = None,
    top_n: int = 3,
    strategy: str = "AA",
    nms_iou: float | None = None,
    mask_threshold: float = DEFAULT_MASK_THRESHOLD,
    nodes: str = "leaves",
    tree: DecompositionTree | None = None,
    max_batch_bytes: int | None = DEFAULT_MAX_BATCH_BYTES,
    progress: bool = False,
) -> torch.Tensor:
    """gAP saliency: decompose to the data layer and sum the input gradients of the decompositions.

    Parameters
    ----------
    model : nn.Module
    image : Tensor ``[1, C, H, W]`` (or ``[C, H, W]``)
    target, layers, top_n, strategy, nms_iou, mask_threshold
        As in :func:`xailib.gap.decompose` (ignored when ``tree`` is given).
    nodes : {"leaves", "all"}
        Sum the input gradients of the stage-1 decisions only (the decompositions onto the data
        layer), or of every decision in the tree.
    tree : DecompositionTree, optional
        A tree already computed for this image and model (skips the decomposition).

    Returns
    -------
    Tensor ``[1, C, H, W]``
        Sum of ``dF/dI`` over the chosen decisions (signed; reduce over colour, e.g. ``abs().amax(1)``,
        for a map).
    """
    check_choice(nodes, ("leaves", "all"), "nodes")
    image = check_images(image, model, one=True, what="image")
    if tree is None:
        tree = decompose(model, image, target=target, layers=layers, top_n=top_n, strategy=strategy, nms_iou=nms_iou,
                         mask_threshold=mask_threshold, keep_maps=False, max_batch_bytes=max_batch_bytes,
                         progress=progress)
    elif not isinstance(tree, DecompositionTree):
        raise TypeError(f"tree must be a DecompositionTree from xailib.gap.decompose, got {type(tree).__name__}.")
    chosen = [n for n in tree.walk() if nodes == "all" or (n.layer == tree.layers[0])]
    by_layer: dict[str, list] = {}
    for n in chosen:
        by_layer.setdefault(n.layer, []).append(n)
    total = torch.zeros_like(image)
    with model_state(model, train=False, requires_grad=False):
        for layer, group in by_layer.items():
            upper = None if layer == OUTPUT else layer
            channels = torch.tensor([n.channel for n in group], dtype=torch.long)
            positions = None if upper is None else torch.tensor([n.position for n in group], dtype=torch.long)
            g, _, _ = decision_gradients(model, image, None, upper, channels, positions,
                                         torch.zeros(len(group), dtype=torch.long),
                                         max_batch_bytes=max_batch_bytes, progress=progress)  # Eq. (2), l = data
            total += g.sum(dim=0, keepdim=True)
    return total
