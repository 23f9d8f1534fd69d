"""Hierarchical decomposition (Sec. 3.2): a tree of gAP decompositions from the class score to stage 1.

Starting from the class decision ``F^{L+1}_c`` (the score before softmax), gAP (Eqs. 2-5) decomposes
it onto the last conv layer of the top stage; the top-N channels by Eq. (4) become children, each
decided at its peak (Eq. 5), and each child is decomposed onto the stage below, down to stage 1:

    "We use Eqn. (4) to select the top N (e.g., N=3) important activation maps ... We utilize
    Eqn. (5) to find the feature F^l_{k,x^,y^} corresponding to the maximum activation. Then we
    decompose it to layer l-1 using gAP."  (Sec. 3.2)

Optionally, channels with overlapping effects are merged by non-maximum suppression (Sec. 4.1,
"Channel-effect overlaps"): activation maps are thresholded to binary masks, and a channel whose
mask has IoU > 0.9 with that of a channel of higher contribution is suppressed (merged into it).

:func:`decompose` decomposes all decisions of one tree level together (one batched backward per
level, chunked under a memory cap, on the network segment between the two stages when the model has
``run_segment``, and there on one crop per decision that holds its receptive field, see
:mod:`xailib.gap.receptive`); :func:`decompose_nodewise` is the slow node-by-node version with full
forwards, which the tests hold the batched one to.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from xailib.checks import (
    check_class_scores,
    check_fraction,
    check_images,
    check_layer_list,
    check_model,
    check_positive_int,
    check_targets,
)
from xailib.layers import model_state
from xailib.gap.gradients import (
    DEFAULT_MAX_BATCH_BYTES,
    check_crop,
    crop_field,
    cropped_gradients,
    decision_gradients,
    layer_outputs,
    resolve_segment,
    segment_available,
)
from xailib.gap.module import (
    GAP,
    Neuron,
    activation_maps,
    channel_contributions,
    check_strategy,
    peak_positions,
)
from xailib.batching import class_scores
from xailib.gap.receptive import crop_statistics, uncrop

__all__ = [
    "DecisionLevel",
    "decompose_images",
    "DecompositionNode",
    "DecompositionTree",
    "decompose",
    "decompose_nodewise",
    "select_channels",
    "binary_masks",
    "OUTPUT",
]

OUTPUT = "output"  # layer name of the root node: the model's class scores
DEFAULT_MASK_THRESHOLD = 0.2  # fraction of a map's maximum; the paper gives no value (we follow CAM's 20%)


# --------------------------------------------------------------------------------------------------
# The tree
# --------------------------------------------------------------------------------------------------


@dataclass
class DecompositionNode:
    """One decision in the tree: ``F^{layer}_{channel, y, x}`` (the root: class score ``channel``).

    Attributes
    ----------
    layer : str
        Dotted layer name, or ``"output"`` for the root.
    channel : int
        Channel ``k`` (class index for the root).
    position : tuple (y, x) or None
        The peak of this channel's activation map for its parent's decision (Eq. 5); ``None`` at the root.
    contribution : float or None
        ``alpha^l_k`` for the parent's decision (Eq. 4 with strategy "AA"); ``None`` at the root.
    score : float
        The decision's value ``F^l_{k,y,x}`` (the class score at the root).
    children : list of DecompositionNode
        The top-N channels of the layer below, best first.
    merged : list of int
        Channels merged into this one by NMS (their maps overlap with IoU above the threshold).
    activation_map : np.ndarray ``[h, w]`` or None
        ``A^l_k`` for the parent's decision (Eq. 3), kept when ``keep_maps=True``.
    """

    layer: str
    channel: int
    position: tuple[int, int] | None = None
    contribution: float | None = None
    score: float = 0.0
    children: list[DecompositionNode] = field(default_factory=list)
    merged: list[int] = field(default_factory=list)
    activation_map: np.ndarray | None = None

    def walk(self) -> Iterator[DecompositionNode]:
        """This node and all below it, depth first, parents before children."""
        stack = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children))

    def to_dict(self) -> dict:
        return {
            "layer": self.layer,
            "channel": self.channel,
            "position": None if self.position is None else list(self.position),
            "contribution": self.contribution,
            "score": self.score,
            "merged": list(self.merged),
            "activation_map": None if self.activation_map is None else np.asarray(self.activation_map).tolist(),
            "children": [c.to_dict() for c in self.children],
        }

    @classmethod
    def from_dict(cls, d: dict) -> DecompositionNode:
        return cls(
            layer=d["layer"],
            channel=int(d["channel"]),
            position=None if d.get("position") is None else (int(d["position"][0]), int(d["position"][1])),
            contribution=d.get("contribution"),
            score=float(d["score"]),
            merged=[int(m) for m in d.get("merged", [])],
            activation_map=None if d.get("activation_map") is None
            else np.asarray(d["activation_map"], dtype=np.float32),
            children=[cls.from_dict(c) for c in d.get("children", [])],
        )

    def _same(self, other: DecompositionNode, atol: float) -> bool:
        def close(a, b):
            return (a is None and b is None) or (a is not None and b is not None and abs(a - b) <= atol * max(1, abs(a)))

        return (
            self.layer == other.layer and self.channel == other.channel and self.position == other.position
            and close(self.contribution, other.contribution) and close(self.score, other.score)
            and self.merged == other.merged and len(self.children) == len(other.children)
            and all(a._same(b, atol) for a, b in zip(self.children, other.children))
        )


@dataclass
class DecompositionTree:
    """The result of :func:`decompose`: a root node plus how it was made.

    Attributes
    ----------
    root : DecompositionNode
        The class decision (``layer="output"``).
    layers : list of str
        The decomposed layers, low -> high (stage 1 first).
    target : int
        The explained class.
    top_n : int
    strategy : str
    nms_iou : float or None
    mask_threshold : float
    image_size : tuple (H, W)
    """

    root: DecompositionNode
    layers: list[str]
    target: int
    top_n: int
    strategy: str = "AA"
    nms_iou: float | None = None
    mask_threshold: float = DEFAULT_MASK_THRESHOLD
    image_size: tuple[int, int] | None = None

    def walk(self) -> Iterator[DecompositionNode]:
        """Every node, depth first from the root."""
        return self.root.walk()

    def __len__(self) -> int:
        return sum(1 for _ in self.walk())

    def levels(self) -> list[list[DecompositionNode]]:
        """Nodes by depth: ``[[root], [top-stage nodes], ..., [stage-1 nodes]]``."""
        out, level = [], [self.root]
        while level:
            out.append(level)
            level = [c for n in level for c in n.children]
        return out

    def prune(self, top_n: int | None = None, min_contribution: float | None = None) -> DecompositionTree:
        """A pruned copy: keep at most ``top_n`` children per node and those with contribution >= the minimum."""
        if top_n is not None and (not isinstance(top_n, int) or top_n <= 0):
            raise ValueError(f"top_n must be a positive int, got {top_n!r}.")

        def cut(node: DecompositionNode) -> DecompositionNode:
            kids = node.children[:top_n] if top_n is not None else list(node.children)
            if min_contribution is not None:
                kids = [c for c in kids if c.contribution is not None and c.contribution >= min_contribution]
            return DecompositionNode(node.layer, node.channel, node.position, node.contribution, node.score,
                                     [cut(c) for c in kids], list(node.merged), node.activation_map)

        return DecompositionTree(cut(self.root), list(self.layers), self.target,
                                 min(self.top_n, top_n) if top_n else self.top_n, self.strategy, self.nms_iou,
                                 self.mask_threshold, self.image_size)

    def to_dict(self) -> dict:
        return {
            "method": "gAP hierarchical decomposition",
            "layers": list(self.layers), "target": self.target, "top_n": self.top_n, "strategy": self.strategy,
            "nms_iou": self.nms_iou, "mask_threshold": self.mask_threshold,
            "image_size": None if self.image_size is None else list(self.image_size),
            "root": self.root.to_dict(),
        }

    def to_json(self, path: str | Path | None = None, indent: int | None = None) -> str:
        """The tree as a JSON string; also written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=indent)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_json(cls, source: str | Path) -> DecompositionTree:
        """Load a tree from a JSON string or a file written by :meth:`to_json`."""
        if isinstance(source, Path) or (isinstance(source, str) and not source.lstrip().startswith("{")):
            source = Path(source).read_text()
        d = json.loads(source)
        return cls(
            root=DecompositionNode.from_dict(d["root"]), layers=list(d["layers"]), target=int(d["target"]),
            top_n=int(d["top_n"]), strategy=d.get("strategy", "AA"), nms_iou=d.get("nms_iou"),
            mask_threshold=d.get("mask_threshold", DEFAULT_MASK_THRESHOLD),
            image_size=None if d.get("image_size") is None else tuple(d["image_size"]),
        )

    def same_as(self, other: DecompositionTree, atol: float = 1e-5) -> bool:
        """Same structure, channels, positions and merges; contributions and scores within ``atol`` (relative)."""
        return self.layers == other.layers and self.target == other.target and self.root._same(other.root, atol)


# --------------------------------------------------------------------------------------------------
# Selecting the top-N channels, with optional NMS
# --------------------------------------------------------------------------------------------------


def binary_masks(maps: torch.Tensor, threshold: float = DEFAULT_MASK_THRESHOLD) -> torch.Tensor:
    """Threshold activation maps ``[..., K, h, w]`` to masks: ``A > threshold * max(A)`` (all False if max <= 0)."""
    peak = maps.flatten(-2).amax(-1)[..., None, None]
    return (maps > threshold * peak) & (peak > 0)


def select_channels(
    contributions: torch.Tensor,
    maps: torch.Tensor,
    top_n: int,
    nms_iou: float | None = None,
    mask_threshold: float = DEFAULT_MASK_THRESHOLD,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-N channels per decision by contribution, optionally with NMS on thresholded maps.

    Parameters
    ----------
    contributions : Tensor ``[D, K]``
    maps : Tensor ``[D, K, h, w]``
        Activation maps (Eq. 3), only used for NMS.
    top_n : int
    nms_iou : float or None
        Suppress a channel whose mask has IoU > ``nms_iou`` with a kept channel (the paper: 0.9).
    mask_threshold : float
        Masks are ``A > mask_threshold * max(A)``.

    Returns
    -------
    kept : LongTensor ``[D, n]``
        Channel indices, best first; ``-1`` where fewer than ``n`` channels remain after NMS.
    merged_into : LongTensor ``[D, K]``
        For each channel the slot ``0..n-1`` of the kept channel it was merged into, else ``-1``.

    Ties in contribution go to the lower channel index.
    """
    d, k = contributions.shape
    n = min(top_n, k)
    merged_into = torch.full((d, k), -1, dtype=torch.long, device=contributions.device)
    if nms_iou is None:
        order = torch.sort(contributions, dim=1, descending=True, stable=True).indices
        return order[:, :n], merged_into
    masks = binary_masks(maps, mask_threshold).flatten(-2).float()  # [D, K, P]
    area = masks.sum(-1)  # [D, K]
    rows = torch.arange(d, device=contributions.device)
    available = torch.ones(d, k, dtype=torch.bool, device=contributions.device)
    kept = []
    for slot in range(n):  # greedy NMS, vectorised over decisions and channels
        score = contributions.masked_fill(~available, -torch.inf)
        best = score.argmax(1)  # first maximum: ties go to the lower channel
        valid = available[rows, best]
        inter = torch.einsum("dkp,dp->dk", masks, masks[rows, best])
        union = area + area[rows, best][:, None] - inter
        iou = torch.where(union > 0, inter / union.clamp_min(1), torch.zeros_like(inter))
        suppress = (iou > nms_iou) & available & valid[:, None]
        suppress[rows, best] = False
        merged_into[suppress] = slot
        available &= ~suppress
        available[rows, best] = False
        kept.append(torch.where(valid, best, torch.full_like(best, -1)))
    return torch.stack(kept, dim=1), merged_into


def _check_common(model, image, layers, top_n, strategy, nms_iou, mask_threshold):
    check_model(model)
    image = check_images(image, model, one=True, what="image")
    layers = check_layer_list(model, layers)
    check_positive_int(top_n, "top_n", hint=" (the paper uses N = 3)")
    strategy = check_strategy(strategy)
    if nms_iou is not None:
        check_fraction(nms_iou, "nms_iou", hint=" (the paper uses 0.9; None = no NMS)")
    check_fraction(mask_threshold, "mask_threshold", high_open=True)
    return image, layers, strategy


def _class_target(target, logits: torch.Tensor) -> int:
    """The class to decompose: the predicted one for ``None``, else a checked class index."""
    if target is None:
        return int(logits[0].argmax())
    return int(check_targets(target, 1, classes=logits.shape[1], allow_predicted=False)[0])


# --------------------------------------------------------------------------------------------------
# The engine: all decisions of a tree level, of a batch of images, at once
# --------------------------------------------------------------------------------------------------


@dataclass
class DecisionLevel:
    """The nodes of one level of the hierarchical decomposition of ``B`` images: ``D`` selected channels.

    Row ``d`` is channel ``channel[d]`` of ``layer`` at position ``position[d]`` (Eq. 5), selected among
    the top-N (Eq. 4) for the decision ``parent[d]`` of the level above (a class score at the first level).

    Attributes
    ----------
    layer : str
    n_channels : int
        ``K``, channels of the layer.
    image_index : LongTensor ``[D]``
        Image of each node (index into the images passed).
    parent : LongTensor ``[D]``
        Row of the parent decision in the level above; at the first level, the image index.
    rank : LongTensor ``[D]``
        0 for the parent's most important channel, 1 for the next, ...
    channel : LongTensor ``[D]``
    position : LongTensor ``[D, 2]``
        ``(y, x)`` of the activation map's peak (Eq. 5).
    contribution : Tensor ``[D]``
        ``alpha^l_k`` (Eq. 4 for strategy "AA").
    share : Tensor ``[D]``
        ``alpha^l_k / sum_k' max(alpha^l_k', 0)``: the channel's share of the positive contributions to
        its parent's decision (the paper's "with a 32.3% contribution").
    score : Tensor ``[D]``
        The feature value ``F^l_{k, y^, x^}`` at the peak: the decision decomposed at the next level.
    activation_map : Tensor ``[D, h, w]`` or None
        ``A^l_k`` for the parent's decision (Eq. 3), kept for the layers in ``keep_maps``.
    merged : list of list of int, or None
        With NMS: for each node, the channels merged into it (their masks overlap with IoU above the
        threshold); ``None`` without NMS.
    """

    layer: str
    n_channels: int
    image_index: torch.Tensor
    parent: torch.Tensor
    rank: torch.Tensor
    channel: torch.Tensor
    position: torch.Tensor
    contribution: torch.Tensor
    share: torch.Tensor
    score: torch.Tensor
    activation_map: torch.Tensor | None = None
    merged: list[list[int]] | None = None

    def __len__(self) -> int:
        return int(self.channel.shape[0])


def _decompose_levels(model, images, targets, layers, top_n, strategy, nms_iou, mask_threshold, keep_maps, acts,
                      segment, crop, max_batch_bytes, progress) -> list[DecisionLevel]:
    """The hierarchical decomposition of ``images: [B, C, H, W]``, one level at a time (Sec. 3.2).

    Level ``j`` decomposes all decisions of level ``j - 1`` of all images together: Eq. (2) by the batched
    engine (on crops of the lower map where the receptive fields are exact, Eqs. 3-5 over the full map
    computed from the crops; else on full maps), then Eqs. (3)-(5), the top-N (with optional NMS).
    ``acts`` holds the stage outputs of ``images`` on the segment path (``{}`` otherwise).
    """
    channels, positions, upper = targets, None, None
    image_index = torch.arange(images.shape[0])
    levels: list[DecisionLevel] = []
    for lower in tqdm(list(reversed(layers)), disable=not progress, desc="gAP levels", leave=False):
        rf = crop_field(model, lower, upper, positions, acts.get(lower), crop, segment) if segment else None
        if rf is not None:  # Eq. (2) on crops, Eqs. (3)-(5) over the full map from the crops
            g, f, _, offsets = cropped_gradients(model, acts[lower], lower, upper, channels, positions,
                                                 image_index, rf, max_batch_bytes, progress)
            a, alpha, peaks = crop_statistics(g, f, offsets, rf.in_size, strategy)

            def maps_of(d_idx, ch, a=a, offsets=offsets, size=rf.in_size):  # the full maps, zero outside the crops
                return uncrop(a[d_idx, ch], offsets[d_idx], size)

            def feature_at(d_idx, ch, pos, lower=lower):
                return acts[lower][image_index.to(acts[lower].device)[d_idx], ch, pos[:, 0], pos[:, 1]]
        else:
            g, f, _ = decision_gradients(
                model, images, lower, upper, channels, positions, image_index, lower_acts=acts.get(lower),
                use_segment=segment, max_batch_bytes=max_batch_bytes, progress=progress, crop=False,
            )
            if g.dim() != 4:
                raise ValueError(f"Layer {lower!r} has per-image shape {tuple(g.shape[1:])}; gAP needs a conv "
                                 "feature map [K, h, w].")
            a = activation_maps(g, f)  # Eq. (3), [D, K, h, w]
            alpha = channel_contributions(g, f, strategy)  # Eq. (4), [D, K]
            peaks = peak_positions(a)  # Eq. (5), [D, K, 2]

            def maps_of(d_idx, ch, a=a):
                return a[d_idx, ch]

            def feature_at(d_idx, ch, pos, f=f):
                return f[d_idx, ch, pos[:, 0], pos[:, 1]]
        kept, merged_into = select_channels(alpha, a, top_n, nms_iou, mask_threshold)  # best first
        d_idx, slot = torch.nonzero(kept >= 0, as_tuple=True)  # rows in (decision, rank) order
        ch = kept[d_idx, slot]
        pos = peaks[d_idx, ch]
        contrib = alpha[d_idx, ch]
        positive = alpha.clamp_min(0).sum(1)[d_idx]  # [D']
        share = torch.where(positive > 0, contrib / positive.clamp_min(1e-30), torch.zeros_like(contrib))
        keep = lower in keep_maps
        merged = None
        if nms_iou is not None:
            merged_l, d_l, s_l = merged_into.tolist(), d_idx.tolist(), slot.tolist()
            merged = [[c for c, s in enumerate(merged_l[d]) if s == sl] for d, sl in zip(d_l, s_l)]
        level = DecisionLevel(
            layer=lower, n_channels=int(alpha.shape[1]), image_index=image_index[d_idx.cpu()], parent=d_idx.cpu(),
            rank=slot.cpu(), channel=ch.cpu(), position=pos.cpu(), contribution=contrib.detach().cpu(),
            share=share.detach().cpu(), score=feature_at(d_idx, ch, pos).detach().cpu(),
            activation_map=maps_of(d_idx, ch).detach().cpu() if keep else None,
            merged=merged,
        )
        levels.append(level)
        channels, positions, image_index, upper = level.channel, level.position, level.image_index, lower
        del g, f, a
    return levels


def _merge_levels(chunks: list[list[DecisionLevel]], offsets: list[int]) -> list[DecisionLevel]:
    """Concatenate per-image-chunk levels, shifting image indices and parent rows."""
    merged = []
    for depth in range(len(chunks[0])):
        parts = [c[depth] for c in chunks]
        if depth > 0:
            sizes = [len(c[depth - 1]) for c in chunks]
            row_offsets = list(np.cumsum([0] + sizes[:-1]))
        else:
            row_offsets = offsets
        maps = [p.activation_map for p in parts]
        merged.append(DecisionLevel(
            layer=parts[0].layer, n_channels=parts[0].n_channels,
            image_index=torch.cat([p.image_index + o for p, o in zip(parts, offsets)]),
            parent=torch.cat([p.parent + int(o) for p, o in zip(parts, row_offsets)]),
            rank=torch.cat([p.rank for p in parts]), channel=torch.cat([p.channel for p in parts]),
            position=torch.cat([p.position for p in parts]), contribution=torch.cat([p.contribution for p in parts]),
            share=torch.cat([p.share for p in parts]), score=torch.cat([p.score for p in parts]),
            activation_map=None if maps[0] is None else torch.cat(maps),
            merged=None if parts[0].merged is None else [m for p in parts for m in p.merged],
        ))
    return merged


def _segment_for(model: nn.Module, layers: list[str], use_segment) -> bool:
    """Whether every level can run ``model.run_segment`` (``use_segment``: "auto", True or False)."""
    return resolve_segment(model, layers[-1], None, use_segment) and all(
        segment_available(model, lo, None) for lo in layers)


def _tree_from_levels(root: DecompositionNode, levels: list[DecisionLevel], keep_maps: bool) -> None:
    """Attach the nodes of ``levels`` (one image) below ``root``."""
    parents = [root]
    for level in levels:
        maps = level.activation_map.float().numpy() if keep_maps and level.activation_map is not None else None
        rows = zip(level.parent.tolist(), level.channel.tolist(), level.position.tolist(), level.contribution.tolist(),
                   level.score.tolist())
        new = []
        for i, (p, ch, pos, contrib, score) in enumerate(rows):  # building Python objects, one per node
            node = DecompositionNode(layer=level.layer, channel=ch, position=(pos[0], pos[1]), contribution=contrib,
                                     score=score, merged=[] if level.merged is None else level.merged[i],
                                     activation_map=None if maps is None else maps[i])
            parents[p].children.append(node)
            new.append(node)
        parents = new


# --------------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------------


def decompose(
    model: nn.Module,
    image: torch.Tensor,
    target: int | None = None,
    layers: Sequence[str] | None = None,
    top_n: int = 3,
    strategy: str = "AA",
    nms_iou: float | None = None,
    mask_threshold: float = DEFAULT_MASK_THRESHOLD,
    keep_maps: bool = True,
    max_batch_bytes: int | None = DEFAULT_MAX_BATCH_BYTES,
    use_segment: bool | str = "auto",
    progress: bool = False,
    crop: bool | str = "auto",
) -> DecompositionTree:
    """Hierarchical decomposition (Sec. 3.2) of one image's class decision, batched per tree level.

    Parameters
    ----------
    model : nn.Module
        Runs in eval mode for the call (BatchNorm statistics untouched; the mode is restored).
    image : Tensor ``[1, C, H, W]`` (or ``[C, H, W]``)
    target : int or None
        Class to explain; ``None`` = the predicted class.
    layers : list of str or None
        The last conv layer (or block) of each stage, low -> high; ``None`` = ``model.stage_names``.
    top_n : int
        N, channels kept per decision (the paper: 3).
    strategy : {"AA", "MA", "AG", "MG"}
        How channels are ranked (Table 1); "AA" is Eq. (4).
    nms_iou : float or None
        Merge channels whose binary maps overlap with IoU > ``nms_iou`` (the paper: 0.9); None = no NMS.
    mask_threshold : float
        Binary mask of a map: ``A > mask_threshold * max(A)``. The paper does not give its threshold.
    keep_maps : bool
        Store each node's activation map (needed by :func:`xailib.gap.plot_decomposition`).
    max_batch_bytes : int or None
        Memory cap per chunk of decisions (bytes autograd saves); ``None`` = one chunk per level.
    use_segment : {"auto", True, False}
        Run only the segment between two stages with ``model.run_segment`` when available.
    progress : bool
        tqdm bars over levels and chunks.
    crop : {"auto", True, False}
        Run each level's segment on crops of the lower map that contain each decision's receptive
        field (:mod:`xailib.gap.receptive`); exact. ``"auto"``: on the segment path wherever the
        receptive fields are exact and cover at most half the map; ``True`` raises where exact
        receptive fields are not available (no ``run_segment``); the root (class score) always uses
        the full map.

    Returns
    -------
    DecompositionTree
        Levels: root (class score) -> top stage (N nodes) -> ... -> stage 1 (N^L nodes).

    Notes
    -----
    All decisions of one level are decomposed together: their lower features are stacked into a
    ``[D, K, h, w]`` batch and one backward of the summed decision scores gives all ``D`` gradient
    maps (Eq. 2). With crops, each decision gets its own crop ``[K, c_h, c_w]`` of the lower map and
    Eqs. (3)-(5) over the full map are computed from the crops (the maps are zero outside them;
    :func:`xailib.gap.receptive.crop_statistics`). The result equals :func:`decompose_nodewise`.
    """
    image, layers, strategy = _check_common(model, image, layers, top_n, strategy, nms_iou, mask_threshold)
    check_crop(crop)
    segment = _segment_for(model, layers, use_segment)
    if not segment and len(layers) > 1:
        crop_field(model, layers[0], layers[1], None, None, crop, segment)  # raises for crop=True
    with model_state(model, train=False, requires_grad=False):
        if segment:
            acts, logits = layer_outputs(model, image, layers)
        else:
            with torch.no_grad():
                logits = model(image)
            acts = {}
        check_class_scores(logits)
        target = _class_target(target, logits)
        root = DecompositionNode(layer=OUTPUT, channel=target, score=float(logits[0, target]))
        levels = _decompose_levels(model, image, torch.tensor([target]), layers, top_n, strategy, nms_iou,
                                   mask_threshold, set(layers) if keep_maps else set(), acts, segment, crop,
                                   max_batch_bytes, progress)
    _tree_from_levels(root, levels, keep_maps)
    return DecompositionTree(root, layers, target, top_n, strategy, nms_iou, float(mask_threshold),
                             tuple(image.shape[-2:]))


def decompose_images(
    model: nn.Module,
    images: torch.Tensor,
    targets=None,
    layers: Sequence[str] | None = None,
    top_n: int = 3,
    strategy: str = "AA",
    keep_maps: Sequence[str] = (),
    image_batch: int = 16,
    max_batch_bytes: int | None = DEFAULT_MAX_BATCH_BYTES,
    progress: bool = False,
    nms_iou: float | None = None,
    mask_threshold: float = DEFAULT_MASK_THRESHOLD,
    use_segment: bool | str = "auto",
    crop: bool | str = "auto",
) -> list[DecisionLevel]:
    """Hierarchical decomposition (Sec. 3.2) of one class decision per image, batched over images and nodes.

    The engine of :func:`decompose` for ``B`` images at once, as flat tensors per level instead of a tree:
    the class score is decomposed onto the top layer by gAP (Eqs. 2-5), its top-N channels (Eq. 4) are
    decided at their peaks (Eq. 5) and decomposed onto the layer below, down to ``layers[0]``. All
    decisions of one level, of all images of a chunk, go in one batched backward.

    Parameters
    ----------
    model : nn.Module
        Runs in eval mode with frozen parameters for the call; both are restored.
    images : Tensor ``[B, C, H, W]``
    targets : None, "predicted", int, sequence of int or LongTensor ``[B]``
        Class decision per image; ``None`` or ``"predicted"`` = the predicted class.
    layers : sequence of str or None
        Layers low -> high; ``None`` = ``model.stage_names``.
    top_n : int
        N, channels kept per decision (the paper: 3).
    strategy : {"AA", "MA", "AG", "MG"}
        Channel ranking of Table 1; "AA" is Eq. (4).
    keep_maps : sequence of str
        Layers whose nodes keep their activation map ``[h, w]``.
    image_batch : int
        Images decomposed together (memory: level ``j`` holds ``image_batch * N^j`` decisions).
    max_batch_bytes : int or None
        Memory cap per chunk of decisions inside a level (see :class:`xailib.gap.GAP`).
    nms_iou, mask_threshold, use_segment, crop
        As in :func:`decompose`.

    Returns
    -------
    list of DecisionLevel
        From the top layer (``B * N`` nodes) down to ``layers[0]`` (``B * N^L`` nodes).
    """
    check_model(model)
    images = check_images(images, model, what="images")
    layers = check_layer_list(model, layers)
    check_positive_int(top_n, "top_n", hint=" (the paper uses N = 3)")
    check_positive_int(image_batch, "image_batch")
    strategy = check_strategy(strategy)
    if nms_iou is not None:
        check_fraction(nms_iou, "nms_iou", hint=" (the paper uses 0.9; None = no NMS)")
    check_fraction(mask_threshold, "mask_threshold", high_open=True)
    check_crop(crop)
    keep_maps = [keep_maps] if isinstance(keep_maps, str) else list(keep_maps)
    bad = [n for n in keep_maps if n not in layers]
    if bad:
        raise ValueError(f"keep_maps names {bad} are not among the decomposed layers {layers}.")
    segment = _segment_for(model, layers, use_segment)
    with model_state(model, train=False, requires_grad=False):
        logits = class_scores(model, images)
        targets = logits.argmax(1).cpu() if targets is None or targets == "predicted" else check_targets(
            targets, images.shape[0], classes=logits.shape[1], what="targets", allow_predicted=False)
        chunks, offsets = [], []
        for s in tqdm(range(0, images.shape[0], image_batch), disable=not progress, desc="gAP images", leave=False):
            x = images[s:s + image_batch]
            acts = layer_outputs(model, x, layers)[0] if segment else {}
            chunks.append(_decompose_levels(model, x, targets[s:s + image_batch], layers, top_n, strategy, nms_iou,
                                            mask_threshold, set(keep_maps), acts, segment, crop, max_batch_bytes,
                                            False))
            offsets.append(s)
    return _merge_levels(chunks, offsets)


def decompose_nodewise(
    model: nn.Module,
    image: torch.Tensor,
    target: int | None = None,
    layers: Sequence[str] | None = None,
    top_n: int = 3,
    strategy: str = "AA",
    nms_iou: float | None = None,
    mask_threshold: float = DEFAULT_MASK_THRESHOLD,
    keep_maps: bool = True,
    use_segment: bool | str = False,
    progress: bool = False,
) -> DecompositionTree:
    """The slow node-by-node hierarchical decomposition: one :class:`GAP` call (a full forward and
    backward by default) per decomposed node, recursively. Same arguments and result as
    :func:`decompose`; for tests and benchmarks.
    """
    image, layers, strategy = _check_common(model, image, layers, top_n, strategy, nms_iou, mask_threshold)
    gap = GAP(model, use_segment=use_segment, max_batch_bytes=None, crop=False)
    with model_state(model, train=False, requires_grad=False):
        with torch.no_grad():
            logits = model(image)
        check_class_scores(logits)
        target = _class_target(target, logits)
        root = DecompositionNode(layer=OUTPUT, channel=target, score=float(logits[0, target]))
        stack = [(root, len(layers) - 1)]
        bar = tqdm(disable=not progress, desc="gAP nodes", leave=False)
        while stack:
            node, i = stack.pop()
            if i < 0:
                continue
            decision = node.channel if node.layer == OUTPUT else Neuron(node.layer, node.channel, *node.position)
            r = gap.attribute(image, target=decision, layer=layers[i], strategy=strategy)
            bar.update(1)
            kept, merged_into = select_channels(r.contributions, r.activation_maps, top_n, nms_iou, mask_threshold)
            for slot, ch in enumerate(kept[0].tolist()):
                if ch < 0:  # fewer channels than N left after NMS
                    continue
                y, x = r.peaks[0, ch].tolist()
                kid = DecompositionNode(
                    layer=layers[i], channel=ch, position=(y, x), contribution=float(r.contributions[0, ch]),
                    score=float(r.features[0, ch, y, x]),
                    merged=[] if nms_iou is None else [c for c, s in enumerate(merged_into[0].tolist()) if s == slot],
                    activation_map=r.activation_maps[0, ch].float().cpu().numpy() if keep_maps else None,
                )
                node.children.append(kid)
                stack.append((kid, i - 1))
        bar.close()
    return DecompositionTree(root, layers, target, top_n, strategy, nms_iou, float(mask_threshold),
                             tuple(image.shape[-2:]))
