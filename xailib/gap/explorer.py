"""The interactive hierarchical decomposition of Sec. 3.2 (Fig. 5) with the views of Fig. 4.

    "we make the hierarchical decomposition interactive, so that the users can choose the features to
    be decomposed ... At each stage, the user can select any decision and decompose it."  (Sec. 3.2)

Two layers, so that everything the widget does can be driven (and tested) without a browser:

* :class:`ExplorerState` -- plain Python state. An image and a class are selected; the *path* runs
  from the class decision ``F^{L+1}_c`` down through one chosen channel per stage, each decided at its
  peak ``F^l_{k,y^,x^}`` (Eq. 5). The *children* of the current decision are the top-N channels of the
  stage below by contribution ``alpha^l_k`` (Eq. 4), each with its activation map ``A^l_k`` (Eq. 3)
  and peak. Every decomposition is one :class:`xailib.gap.GAP` call, cached per decision, so going
  back (or down the same way again) costs nothing. The nodes are the
  :class:`~xailib.gap.DecompositionNode` objects of :func:`xailib.gap.decompose`, with the same
  channels, positions and contributions for the same path.
* :class:`Explorer` -- an ipywidgets view that only renders the state and calls its methods: image
  slider, class dropdown (with scores; default the predicted class), top-N slider, breadcrumb, one
  card per child (activation map over the image with the peak marked, Guided Backpropagation of the
  peak neuron cut to its receptive field, contribution, and a button that decomposes it one stage
  further), back and reset.

:func:`plot_path` draws a walked path as a static figure (one row per stage: the top-N maps and their
guided-backprop images, the chosen channel framed), for notebooks run without a browser.
"""

from __future__ import annotations

import html
import io
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from xailib.checks import (check_class_scores, check_fraction, check_images, check_layer_list, check_model,
                           check_positive_int, check_targets, model_device)
from xailib.gap.decomposition import (DEFAULT_MASK_THRESHOLD, OUTPUT, DecompositionNode,
                                      select_channels)
from xailib.gap.guided import guided_backprop, guided_to_rgb
from xailib.gap.module import GAP, Neuron, check_strategy
from xailib.layers import model_state
from xailib.plotting import heatmap_overlay, to_numpy_image
from xailib.widgets import StateView

__all__ = [
    "ExplorerState",
    "Expansion",
    "LowestStageError",
    "Explorer",
    "explore",
    "plot_path",
    "guided_crop",
    "walk_top_channels",
    "time_walks",
]


class LowestStageError(ValueError):
    """Raised by :meth:`ExplorerState.expand` at the lowest stage: there is no layer below to decompose onto."""


@dataclass
class Expansion:
    """One decision decomposed onto the layer below by gAP (cached by :class:`ExplorerState`).

    Attributes
    ----------
    layer : str
        The lower layer ``l``.
    contributions : Tensor ``[K]``
        ``alpha^l_k`` of every channel (Eq. 4 for strategy "AA").
    peaks : LongTensor ``[K, 2]``
        ``(y, x)`` of each activation map's maximum (Eq. 5).
    peak_values : Tensor ``[K]``
        ``F^l_{k, y^, x^}``: the feature at each peak (the value of the child decision).
    maps : Tensor ``[K, h, w]``
        Activation maps ``A^l_k = G^l_k * F^l_k`` (Eq. 3).
    seconds : float
        Wall time of the gAP call that made it.
    """

    layer: str
    contributions: torch.Tensor
    peaks: torch.Tensor
    peak_values: torch.Tensor
    maps: torch.Tensor
    seconds: float


def _key(node: DecompositionNode) -> tuple:
    return node.layer, node.channel, node.position


class ExplorerState:
    """The state of an interactive gAP decomposition: image, class, path of decisions, cached children.

    Parameters
    ----------
    model : nn.Module
        A CNN returning class scores ``[B, C]``. Runs in eval mode during each call (restored after).
    images : Tensor ``[N, C, H, W]`` (or ``[C, H, W]``), or a dataset with ``.images``
        Images in the model's input range. A dataset also supplies ``.labels`` and ``.class_names``
        when they are not given.
    labels : sequence of int, optional
        True labels, shown beside the image.
    class_names : sequence of str, optional
        Default: ``model.class_names``, then the dataset's, else ``"class <i>"``.
    top_n : int
        N, channels shown per decision (the paper: 3). Can be changed later (``state.top_n = 5``).
    layers : sequence of str, optional
        The last conv layer (or block) of each stage, low -> high; default ``model.stage_names``.
    strategy : {"AA", "MA", "AG", "MG"}
        How channels are ranked (Table 1); "AA" is Eq. (4).
    nms_iou : float or None
        Merge overlapping channels (Sec. 4.1) as in :func:`xailib.gap.decompose`; None: off.
    mask_threshold : float
        Binary masks for NMS: ``A > mask_threshold * max(A)``.
    max_cache : int
        Decompositions kept (least recently used are dropped).

    Attributes
    ----------
    timings : list of dict
        One row per computation: ``{"kind": "gap" | "guided", "decision": label, "layer": lower layer,
        "seconds": wall time}``; cache hits add nothing.

    Examples
    --------
    >>> state = ExplorerState(model, test.images, test.labels, top_n=3)
    >>> state.select_image(4)                 # the class is reset to the predicted one
    >>> [(c.channel, c.contribution) for c in state.children]
    >>> state.expand(0); state.expand(0)      # top channel of stage 5, then of stage 4
    >>> state.breadcrumb
    >>> state.back(); state.reset()
    """

    def __init__(
        self,
        model: nn.Module,
        images,
        labels: Sequence[int] | None = None,
        class_names: Sequence[str] | None = None,
        top_n: int = 3,
        layers: Sequence[str] | None = None,
        strategy: str = "AA",
        nms_iou: float | None = None,
        mask_threshold: float = DEFAULT_MASK_THRESHOLD,
        max_cache: int = 512,
    ):
        check_model(model)
        self.model = model
        dataset = None
        if not isinstance(images, torch.Tensor) and hasattr(images, "images"):
            dataset, images = images, images.images
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"images must be a tensor [N, C, H, W] or a dataset with .images, got "
                            f"{type(images).__name__}.")
        self.images = check_images(images.unsqueeze(0) if images.dim() == 3 else images, model, what="images",
                                   move=False).detach()
        if labels is None and dataset is not None:
            labels = getattr(dataset, "labels", None)
        if labels is not None:
            labels = [int(v) for v in (labels.tolist() if isinstance(labels, torch.Tensor) else labels)]
            if len(labels) != self.n_images:
                raise ValueError(f"Got {len(labels)} labels for {self.n_images} images; give one per image.")
        self.labels = labels
        self.layers = check_layer_list(model, layers)
        self.strategy = check_strategy(strategy)
        if nms_iou is not None:
            check_fraction(nms_iou, "nms_iou", hint=" (the paper uses 0.9; None = no NMS)")
        self.nms_iou = nms_iou
        self.mask_threshold = check_fraction(mask_threshold, "mask_threshold", high_open=True)
        self.max_cache = check_positive_int(max_cache, "max_cache")
        self.top_n = top_n  # validated by the setter
        self._gap = GAP(model)
        self._cache: OrderedDict[tuple, Expansion] = OrderedDict()
        self._guided: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self.timings: list[dict] = []
        self._scores = self._class_scores(0)
        names = class_names if class_names is not None else getattr(model, "class_names", None)
        if names is None and dataset is not None:
            names = getattr(dataset, "class_names", None)
        n_classes = self._scores.shape[0]
        names = [f"class {i}" for i in range(n_classes)] if names is None else [str(n) for n in names]
        if len(names) != n_classes:
            raise ValueError(f"Got {len(names)} class names for a model with {n_classes} classes.")
        self.class_names = names
        self._image = 0
        self._target = int(self._scores.argmax())
        self._path: list[DecompositionNode] = []
        self.reset()

    # -- what is selected ------------------------------------------------------------------------
    @property
    def n_images(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_index(self) -> int:
        """Index of the selected image."""
        return self._image

    @property
    def image(self) -> torch.Tensor:
        """The selected image ``[1, C, H, W]`` (on the images' device)."""
        return self.images[self._image : self._image + 1]

    @property
    def label(self) -> int | None:
        """The selected image's true label (None without labels)."""
        return None if self.labels is None else self.labels[self._image]

    @property
    def class_scores(self) -> np.ndarray:
        """Class scores before softmax ``[n_classes]`` of the selected image."""
        return self._scores.numpy().copy()

    @property
    def predicted_class(self) -> int:
        return int(self._scores.argmax())

    @property
    def target(self) -> int:
        """The class whose decision is decomposed."""
        return self._target

    @property
    def top_n(self) -> int:
        """N: children shown per decision. Setting it needs no new gAP call."""
        return self._top_n

    @top_n.setter
    def top_n(self, value: int) -> None:
        self._top_n = check_positive_int(value, "top_n", hint=" (the paper uses N = 3)")

    # -- the path ----------------------------------------------------------------------------------
    @property
    def path(self) -> list[DecompositionNode]:
        """The decisions from the class score (``path[0]``, layer ``"output"``) down to :attr:`current`."""
        return list(self._path)

    @property
    def current(self) -> DecompositionNode:
        """The decision being decomposed: ``layer``, ``channel``, ``position`` (y, x; None at the root),
        ``contribution`` to its parent, ``score`` (its value) and ``activation_map`` (for its parent)."""
        return self._path[-1]

    @property
    def depth(self) -> int:
        """Number of expand steps below the class decision."""
        return len(self._path) - 1

    @property
    def lower_layer(self) -> str | None:
        """The layer the current decision is decomposed onto; None at the lowest stage."""
        return self._lower(self.current)

    @property
    def can_expand(self) -> bool:
        """Whether :attr:`children` can be decomposed further (False when they lie in the lowest stage)."""
        lower = self.lower_layer
        return lower is not None and lower != self.layers[0]

    @property
    def can_go_back(self) -> bool:
        return len(self._path) > 1

    def label_of(self, node: DecompositionNode) -> str:
        """Short text for a node: ``"class 3 'tiger' (5.21)"`` or ``"features.stage5 #12 @ (1, 2)"``."""
        if node.layer == OUTPUT:
            return f"class {node.channel} '{self.class_names[node.channel]}' ({node.score:.3g})"
        return f"{node.layer} #{node.channel} @ ({node.position[0]}, {node.position[1]})"

    @property
    def breadcrumb(self) -> list[str]:
        """:meth:`label_of` for each node of :attr:`path`."""
        return [self.label_of(n) for n in self._path]

    @property
    def expansion(self) -> Expansion | None:
        """The full decomposition (all ``K`` channels) of :attr:`current`; None at the lowest stage."""
        return None if self.lower_layer is None else self._expand_node(self.current)

    @property
    def children(self) -> list[DecompositionNode]:
        """The top-N channels of :attr:`lower_layer` for :attr:`current`, best first (empty at the lowest stage)."""
        return self.children_of(self.current)

    def children_of(self, node: DecompositionNode) -> list[DecompositionNode]:
        """The top-N children of any decision of the selected image (computed once, then cached).

        Each child is a :class:`~xailib.gap.DecompositionNode` with ``layer``, ``channel``,
        ``position`` (peak, Eq. 5), ``contribution`` (Eq. 4), ``score`` (the feature at the peak),
        ``merged`` (NMS) and ``activation_map`` ``[h, w]`` (Eq. 3).
        """
        if self._lower(node) is None:
            return []
        e = self._expand_node(node)
        kept, merged_into = select_channels(e.contributions[None], e.maps[None], self._top_n, self.nms_iou,
                                            self.mask_threshold)
        out = []
        for slot, ch in enumerate(kept[0].tolist()):
            if ch < 0:  # fewer channels than N left after NMS
                continue
            out.append(self._child(e, ch, merged=[c for c, s in enumerate(merged_into[0].tolist()) if s == slot]))
        return out

    # -- actions -----------------------------------------------------------------------------------
    def select_image(self, index: int) -> None:
        """Select image ``index``; the class is reset to the predicted one and the path to its root."""
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"image index must be an int, got {index!r}.")
        if not 0 <= index < self.n_images:
            raise ValueError(f"Image index {index} is out of range: there are {self.n_images} images "
                             f"(valid indices 0..{self.n_images - 1}).")
        scores = self._class_scores(int(index))
        self._switch(int(index), int(scores.argmax()), scores)

    def select_class(self, c: int | str) -> None:
        """Explain class ``c`` (an index or a name from :attr:`class_names`); the path is reset to its root."""
        if isinstance(c, str):
            if c not in self.class_names:
                raise ValueError(f"Unknown class {c!r}; the classes are {self.class_names}.")
            c = self.class_names.index(c)
        if isinstance(c, bool) or not isinstance(c, (int, np.integer)):
            raise TypeError(f"class must be an index (int) or a name (str), got {c!r}.")
        c = int(check_targets(int(c), 1, classes=len(self.class_names), what="class", allow_predicted=False)[0])
        self._switch(self._image, c, self._scores)

    def expand(self, rank: int | None = None, *, channel: int | None = None) -> DecompositionNode:
        """Decompose one child of :attr:`current` one stage further; it becomes :attr:`current`.

        Parameters
        ----------
        rank : int, optional
            Position of the child in :attr:`children` (0 = largest contribution). Default 0.
        channel : int, optional
            Instead of ``rank``: any channel ``k`` of :attr:`lower_layer` (also one outside the top N),
            decided at its peak (Eq. 5).

        Returns
        -------
        DecompositionNode
            The new current decision (its own children are computed now, so the next view is ready).

        Raises
        ------
        LowestStageError
            If the children lie in the lowest stage (nothing below them to decompose onto).
        """
        if rank is not None and channel is not None:
            raise ValueError("Give rank (position among the shown children) or channel, not both.")
        if not self.can_expand:
            where = self.lower_layer or self.current.layer
            raise LowestStageError(
                f"Cannot expand: the children of {self.label_of(self.current)} lie in {where!r}, the lowest "
                f"stage of {self.layers}; there is no layer below it. Use back() or reset()."
            )
        if channel is None:
            rank = 0 if rank is None else rank
            kids = self.children
            if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)):
                raise TypeError(f"rank must be an int, got {rank!r}.")
            if not 0 <= rank < len(kids):
                raise ValueError(f"rank {rank} is out of range: {len(kids)} children are shown (ranks "
                                 f"0..{len(kids) - 1}); use channel=k for any channel of {self.lower_layer!r}.")
            node = kids[rank]
        else:
            e = self._expand_node(self.current)
            k = e.contributions.shape[0]
            if isinstance(channel, bool) or not isinstance(channel, (int, np.integer)):
                raise TypeError(f"channel must be an int, got {channel!r}.")
            if not 0 <= channel < k:
                raise ValueError(f"channel {channel} is outside {e.layer!r} with {k} channels (0..{k - 1}).")
            node = self._child(e, int(channel))
        self.children_of(node)  # decompose the new decision first: if that raises, the path is unchanged
        self._path.append(node)
        return node

    def back(self) -> DecompositionNode:
        """Go up one stage (cached: no gAP call); returns the new current decision."""
        if not self.can_go_back:
            raise ValueError("Already at the class decision; there is nothing to go back to.")
        self._path.pop()
        return self.current

    def reset(self) -> None:
        """Back to the class decision of the selected image and class."""
        root = self._root()
        self.children_of(root)  # decompose the class decision now, so the first view is ready
        self._path = [root]

    def clear_cache(self) -> None:
        """Forget every cached decomposition and guided-backprop image (e.g. to time cold calls)."""
        self._cache.clear()
        self._guided.clear()

    def guided_backprop(self, nodes: Sequence[DecompositionNode] | None = None) -> torch.Tensor:
        """Guided Backpropagation of each node's peak neuron ``F^l_{k,y^,x^}`` (Fig. 4, bottom row).

        Parameters
        ----------
        nodes : sequence of DecompositionNode, optional
            Default :attr:`children`. The root (layer ``"output"``) gives the class score's.

        Returns
        -------
        Tensor ``[D, C, H, W]`` (on the CPU), one row per node; cached per node.
        """
        nodes = self.children if nodes is None else list(nodes)
        missing = [n for n in nodes if (self._image, *_key(n)) not in self._guided]
        by_layer: dict[str, list[DecompositionNode]] = {}
        for n in missing:
            by_layer.setdefault(n.layer, []).append(n)
        for layer, group in by_layer.items():
            targets = [n.channel if layer == OUTPUT else Neuron(layer, n.channel, *n.position) for n in group]
            t0 = time.perf_counter()
            grads = guided_backprop(self.model, self.image, targets).cpu()
            self.timings.append({"kind": "guided", "decision": f"{len(group)} x {layer}", "layer": layer,
                                 "seconds": time.perf_counter() - t0})
            for n, g in zip(group, grads):
                self._remember(self._guided, (self._image, *_key(n)), g)
        if not nodes:
            return torch.zeros(0, *self.images.shape[1:])
        return torch.stack([self._guided[(self._image, *_key(n))] for n in nodes])

    # -- internals ---------------------------------------------------------------------------------
    def _switch(self, image: int, target: int, scores: torch.Tensor) -> None:
        """Select ``image`` and ``target`` and reset the path; if decomposing the new root raises, nothing changes."""
        old = self._image, self._target, self._scores, self._path
        self._image, self._target, self._scores = image, target, scores
        try:
            self.reset()
        except BaseException:
            self._image, self._target, self._scores, self._path = old
            raise

    def _class_scores(self, index: int) -> torch.Tensor:
        x = self.images[index : index + 1].to(model_device(self.model))
        with model_state(self.model, train=False), torch.no_grad():
            logits = self.model(x)
        check_class_scores(logits)
        return logits[0].detach().float().cpu()

    def _root(self) -> DecompositionNode:
        return DecompositionNode(layer=OUTPUT, channel=self._target, score=float(self._scores[self._target]))

    def _lower(self, node: DecompositionNode) -> str | None:
        if node.layer == OUTPUT:
            return self.layers[-1]
        i = self.layers.index(node.layer)
        return self.layers[i - 1] if i > 0 else None

    def _remember(self, store: OrderedDict, key: tuple, value) -> None:
        store[key] = value
        store.move_to_end(key)
        while len(store) > self.max_cache:
            store.popitem(last=False)

    def _expand_node(self, node: DecompositionNode) -> Expansion:
        key = (self._image, self._target if node.layer == OUTPUT else None, *_key(node))
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        lower = self._lower(node)
        target = node.channel if node.layer == OUTPUT else Neuron(node.layer, node.channel, *node.position)
        t0 = time.perf_counter()
        r = self._gap.attribute(self.image, target=target, layer=lower, strategy=self.strategy)
        seconds = time.perf_counter() - t0
        peaks = r.peaks[0].cpu()
        feats = r.features[0]
        vals = feats[torch.arange(feats.shape[0]), peaks[:, 0].to(feats.device), peaks[:, 1].to(feats.device)]
        e = Expansion(layer=lower, contributions=r.contributions[0].detach().cpu(), peaks=peaks,
                      peak_values=vals.detach().cpu(), maps=r.activation_maps[0].detach().cpu(), seconds=seconds)
        self.timings.append({"kind": "gap", "decision": self.label_of(node), "layer": lower, "seconds": seconds})
        self._remember(self._cache, key, e)
        return e

    @staticmethod
    def _child(e: Expansion, ch: int, merged: list[int] | None = None) -> DecompositionNode:
        y, x = (int(v) for v in e.peaks[ch])
        return DecompositionNode(
            layer=e.layer, channel=ch, position=(y, x), contribution=float(e.contributions[ch]),
            score=float(e.peak_values[ch]), merged=list(merged or []),
            activation_map=e.maps[ch].float().numpy(),
        )


def walk_top_channels(state: ExplorerState, rank: int = 0) -> list[DecompositionNode]:
    """Scripted walk: from the class decision, expand the child of ``rank`` at every stage until the
    children lie in the lowest stage (as in Fig. 5, which follows one channel down). Returns ``state.path``."""
    state.reset()
    while state.can_expand:
        state.expand(min(rank, len(state.children) - 1))
    return state.path


def time_walks(state: ExplorerState, indices: Sequence[int], guided: bool = True):
    """Wall time of each step of a cold :func:`walk_top_channels`, for each image in ``indices``.

    For each image the caches are cleared, the image is selected (this decomposes the class decision onto
    the top stage), the top channel is expanded down to the lowest stage, and -- with ``guided`` -- the
    Guided Backpropagation images of each shown level are computed. Then one ``back()`` and the same
    ``expand`` again are timed (answered from the cache).

    Returns
    -------
    pandas.DataFrame
        One row per step: ``image``, ``step`` (0 = class decision -> top stage), ``layer`` (lower layer),
        ``gap_ms`` (the gAP call), ``guided_ms`` (guided backprop of the N children, NaN without
        ``guided``), ``step_ms`` (the whole ``select_image``/``expand`` call), and the cached
        ``back_ms``/``reexpand_ms`` (same on every row of an image).
    """
    import pandas as pd

    rows = []
    for i in indices:
        state.clear_cache()
        n0 = len(state.timings)
        t0 = time.perf_counter()
        state.select_image(int(i))
        steps = [time.perf_counter() - t0]
        guided_s = [_timed(state.guided_backprop) if guided else float("nan")]
        while state.can_expand:
            t0 = time.perf_counter()
            state.expand(0)
            steps.append(time.perf_counter() - t0)
            guided_s.append(_timed(state.guided_backprop) if guided else float("nan"))
        gap_s = [t["seconds"] for t in state.timings[n0:] if t["kind"] == "gap"]
        back = _timed(state.back)
        again = _timed(lambda: state.expand(0))
        for step, (lay, g, st, gb) in enumerate(zip(reversed(state.layers), gap_s, steps, guided_s)):
            rows.append({"image": int(i), "step": step, "layer": lay, "gap_ms": 1e3 * g, "guided_ms": 1e3 * gb,
                         "step_ms": 1e3 * st, "back_ms": 1e3 * back, "reexpand_ms": 1e3 * again})
    return pd.DataFrame(rows)


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# --------------------------------------------------------------------------------------------------
# Drawing (shared by the widget and the static figure)
# --------------------------------------------------------------------------------------------------


def guided_crop(grad: torch.Tensor, min_side: int = 16, pad: int = 2, rel: float = 1e-3) -> tuple[np.ndarray, tuple]:
    """A guided-backprop image ``[C, H, W]`` cut to the square around where it is non-zero (its receptive field).

    Low-stage neurons see a few pixels only; the crop shows them large. The square covers every pixel with
    ``|grad| > rel * max|grad|`` plus ``pad`` pixels, at least ``min_side`` pixels (less if the image is smaller).

    Returns
    -------
    rgb : np.ndarray ``[s, s, 3]`` in [0, 1] (see :func:`xailib.gap.guided.guided_to_rgb`)
    box : tuple ``(top, left, side)`` in image pixels
    """
    h, w = grad.shape[-2:]
    mag = grad.detach().abs().amax(0)
    ys, xs = torch.nonzero(mag > rel * float(mag.max()), as_tuple=True) if float(mag.max()) > 0 else ([], [])
    if len(ys) == 0:
        return guided_to_rgb(grad), (0, 0, max(h, w))
    y0, y1, x0, x1 = int(ys.min()) - pad, int(ys.max()) + pad + 1, int(xs.min()) - pad, int(xs.max()) + pad + 1
    side = min(max(y1 - y0, x1 - x0, min_side), h, w)
    top = min(max(0, (y0 + y1 - side) // 2), h - side)
    left = min(max(0, (x0 + x1 - side) // 2), w - side)
    return guided_to_rgb(grad[:, top : top + side, left : left + side]), (top, left, side)


def _png(rgb: np.ndarray, width: int) -> bytes:
    from PIL import Image

    arr = (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)
    img = Image.fromarray(arr)
    if img.width != width:
        img = img.resize((width, round(width * img.height / img.width)),
                         Image.NEAREST if img.width < width else Image.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def plot_path(state: ExplorerState, show_guided: bool = True, layer_labels: dict[str, str] | None = None,
              size: float = 1.5):
    """The path walked in ``state`` as a static figure: one row per decomposed decision.

    Row ``i`` shows the top-N children of ``state.path[i]`` (Fig. 4 for that decision): each activation
    map ``A^l_k`` over the image with its peak (Eq. 5), titled with channel and ``alpha^l_k`` (Eq. 4),
    and, with ``show_guided``, the Guided Backpropagation image of the peak neuron beside it, cut to the
    square where it is non-zero (:func:`guided_crop`; its box is in the title). The child
    the path continues through is framed in red.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    if not isinstance(state, ExplorerState):
        raise TypeError(f"state must be an ExplorerState, got {type(state).__name__}.")
    labels = layer_labels or {}
    path = state.path
    rows = [(i, n) for i, n in enumerate(path) if state.children_of(n)]
    n = max(len(state.children_of(node)) for _, node in rows)
    per = 2 if show_guided else 1
    fig, axes = plt.subplots(len(rows), n * per, figsize=(size * n * per, size * 1.15 * len(rows)), squeeze=False)
    for r, (i, node) in enumerate(rows):
        kids = state.children_of(node)
        guided = state.guided_backprop(kids) if show_guided else None
        chosen = _key(path[i + 1]) if i + 1 < len(path) else None
        for j in range(n):
            ax_map = axes[r, j * per]
            axes_used = [ax_map] + ([axes[r, j * per + 1]] if show_guided else [])
            for ax in axes_used:
                ax.set_xticks([])
                ax.set_yticks([])
            if j >= len(kids):
                for ax in axes_used:
                    ax.axis("off")
                continue
            c = kids[j]
            ax_map.imshow(heatmap_overlay(state.image, c.activation_map, c.position))
            ax_map.set_title(f"{labels.get(c.layer, c.layer)}:{c.channel}\nα={c.contribution:.3g}", fontsize=7)
            if show_guided:
                rgb, (top, left, side) = guided_crop(guided[j])
                axes[r, j * per + 1].imshow(rgb)
                full = side >= 0.75 * min(guided.shape[-2:])  # say where the crop is only when it is one
                axes[r, j * per + 1].set_title("guided BP" + ("" if full else f"\n{side}x{side} at ({top}, {left})"),
                                               fontsize=7)
            if chosen == _key(c):
                for ax in axes_used:
                    for s in ax.spines.values():
                        s.set_edgecolor("red")
                        s.set_linewidth(2.5)
        what = state.label_of(node) if node.layer == OUTPUT else f"{labels.get(node.layer, node.layer)}:{node.channel}"
        axes[r, 0].set_ylabel(f"{what}\n→ {labels.get(kids[0].layer, kids[0].layer)}", fontsize=7)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------------
# The ipywidgets view
# --------------------------------------------------------------------------------------------------


class Explorer(StateView):
    """An ipywidgets view of an :class:`ExplorerState`; it only renders the state and calls its methods.

    Parameters
    ----------
    state : ExplorerState
    show_guided : bool
        Compute and show Guided Backpropagation of each child's peak neuron (toggle in the view).
    thumb : int
        Width in pixels of each picture.
    layer_labels : dict, optional
        Short names for layers, e.g. ``{"features.29": "conv5_3"}``.

    Attributes
    ----------
    widget : ipywidgets.VBox
        The whole view (``display(explorer.widget)``; displaying the Explorer does the same).
    image_slider, class_dropdown, top_n_slider, guided_checkbox, back_button, reset_button
        Controls; ``child_buttons`` holds one "decompose" button per shown child (rebuilt on each render).
    """

    def __init__(self, state: ExplorerState, show_guided: bool = True, thumb: int = 128,
                 layer_labels: dict[str, str] | None = None):
        import ipywidgets as w

        if not isinstance(state, ExplorerState):
            raise TypeError(f"state must be an ExplorerState, got {type(state).__name__}.")
        self.state = state
        self.thumb = int(thumb)
        self.layer_labels = dict(layer_labels or {})
        self._syncing = False
        self.image_slider = w.IntSlider(value=state.image_index, min=0, max=max(0, state.n_images - 1),
                                        description="image", continuous_update=False,
                                        disabled=state.n_images < 2)
        self.class_dropdown = w.Dropdown(description="class", layout=w.Layout(width="320px"))
        max_n = max(1, int(state.expansion.contributions.shape[0])) if state.expansion is not None else 16
        self.top_n_slider = w.IntSlider(value=min(state.top_n, max_n), min=1, max=min(16, max_n),
                                        description="top N", continuous_update=False)
        self.guided_checkbox = w.Checkbox(value=bool(show_guided), description="guided backprop", indent=False)
        self.back_button = w.Button(description="back up", icon="arrow-up", tooltip="go up one stage")
        self.reset_button = w.Button(description="reset", icon="home", tooltip="back to the class decision")
        self.breadcrumb = w.HTML()
        self.status = w.HTML()
        self.current_image = w.Image(format="png")
        self.current_caption = w.HTML()
        self.cards = w.HBox()
        self.child_buttons: list = []
        self.image_slider.observe(self._on_image, names="value")
        self.class_dropdown.observe(self._on_class, names="value")
        self.top_n_slider.observe(self._on_top_n, names="value")
        self.guided_checkbox.observe(lambda change: self.render(), names="value")
        self.back_button.on_click(self._on_back)
        self.reset_button.on_click(self._on_reset)
        left = w.VBox([self.current_image, self.current_caption], layout=w.Layout(margin="0 16px 0 0"))
        self.widget = w.VBox([
            w.HBox([self.image_slider, self.class_dropdown]),
            w.HBox([self.top_n_slider, self.guided_checkbox, self.back_button, self.reset_button]),
            self.breadcrumb,
            w.HBox([left, self.cards]),
            self.status,
        ])
        self.render()

    def _name(self, layer: str) -> str:
        return self.layer_labels.get(layer, layer)

    # -- events: call the state, then render ----------------------------------------------------------
    def _on_image(self, change) -> None:
        if not self._syncing:
            self._act(self.state.select_image, int(change["new"]))

    def _on_class(self, change) -> None:
        if not self._syncing and change["new"] is not None and change["new"] != self.state.target:
            self._act(self.state.select_class, int(change["new"]))

    def _on_top_n(self, change) -> None:
        if not self._syncing:
            self._act(setattr, self.state, "top_n", int(change["new"]))

    def _on_back(self, _button) -> None:
        self._act(self.state.back)

    def _on_reset(self, _button) -> None:
        self._act(self.state.reset)

    def _on_expand(self, rank: int) -> None:
        self._act(self.state.expand, rank)

    # -- rendering ---------------------------------------------------------------------------------
    def render(self) -> None:
        """Redraw every part of the view from the state."""
        import ipywidgets as w

        s = self.state
        self._syncing = True
        try:
            self.image_slider.value = s.image_index
            scores = s.class_scores
            self.class_dropdown.options = [
                (f"{i}: {name} ({scores[i]:+.2f})" + (" ← predicted" if i == s.predicted_class else ""), i)
                for i, name in enumerate(s.class_names)
            ]
            self.class_dropdown.value = s.target
            self.top_n_slider.value = min(max(self.top_n_slider.min, s.top_n), self.top_n_slider.max)
        finally:
            self._syncing = False
        crumbs = [html.escape(s.label_of(n) if n.layer == OUTPUT else
                              f"{self._name(n.layer)} #{n.channel} @ {n.position}") for n in s.path]
        crumbs[-1] = f"<b>{crumbs[-1]}</b>"
        self.breadcrumb.value = "path: " + " › ".join(crumbs)
        self.back_button.disabled = not s.can_go_back
        cur = s.current
        if cur.layer == OUTPUT:
            rgb = to_numpy_image(s.image)
            label = "" if s.label is None else f"<br>true label: {s.label} '{html.escape(s.class_names[s.label])}'"
            caption = f"image {s.image_index}: decision {html.escape(s.label_of(cur))}{label}"
        else:
            rgb = heatmap_overlay(s.image, cur.activation_map, cur.position)
            caption = (f"decision {html.escape(self._name(cur.layer))} #{cur.channel} at {cur.position}, "
                       f"value {cur.score:.3g}, α to parent {cur.contribution:.3g}")
        self.current_image.value = _png(rgb, self.thumb + 32)
        self.current_caption.value = f"<small>{caption}</small>"
        kids = s.children
        guided = s.guided_backprop(kids) if (self.guided_checkbox.value and kids) else None
        cards, self.child_buttons = [], []
        lowest = not s.can_expand
        for r, c in enumerate(kids):
            pics = [w.Image(value=_png(heatmap_overlay(s.image, c.activation_map, c.position), self.thumb), format="png")]
            if guided is not None:
                pics.append(w.Image(value=_png(guided_crop(guided[r])[0], self.thumb), format="png"))
            merged = f" (+{len(c.merged)} merged)" if c.merged else ""
            text = w.HTML(f"<small><b>{html.escape(self._name(c.layer))} #{c.channel}</b>{merged}<br>"
                          f"α = {c.contribution:.4g}, peak (y, x) = {c.position}</small>")
            b = w.Button(description=f"decompose #{c.channel}", disabled=lowest,
                         tooltip=("lowest stage: nothing below to decompose onto" if lowest
                                  else f"decompose {self._name(c.layer)} #{c.channel} onto the stage below"))
            b.on_click(lambda _b, rank=r: self._on_expand(rank))
            self.child_buttons.append(b)
            cards.append(w.VBox([*pics, text, b], layout=w.Layout(margin="0 8px")))
        if not kids:
            cards = [w.HTML(f"<i>{html.escape(self._name(cur.layer))} is the lowest stage; back up or reset.</i>")]
        self.cards.children = cards


def explore(model: nn.Module, images, labels=None, class_names=None, top_n: int = 3, layers=None,
            image: int = 0, show_guided: bool = True, thumb: int = 128, layer_labels: dict[str, str] | None = None,
            **state_kwargs) -> Explorer:
    """Build an :class:`ExplorerState` and its :class:`Explorer` view; display the result in Jupyter.

    Parameters are those of :class:`ExplorerState` and :class:`Explorer`; ``image`` is the index of the
    image selected first. The returned object displays
    as its ipywidgets box (``.widget``); ``.state`` drives it from code.

    Examples
    --------
    >>> ex = explore(load_model("vgg-conceptworld"), load_dataset("conceptworld", "test", n=32))
    >>> ex            # in a notebook cell: the widget
    >>> ex.state.expand(0)
    """
    state = ExplorerState(model, images, labels=labels, class_names=class_names, top_n=top_n, layers=layers,
                          **state_kwargs)
    if image != 0:
        state.select_image(image)
    return Explorer(state, show_guided=show_guided, thumb=thumb, layer_labels=layer_labels)
