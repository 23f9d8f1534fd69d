"""MACE's explanations of any class, as an ipywidgets view for teaching (Secs. 3.1, 3.3, 4.2; SF2-SF10).

    "An important aspect of any explanation model is to explain all the non-zero probabilities in the output of
    the classifier. In our approach, this is explained by looking at the concepts generated for every class, and
    the corresponding concept relevances."  (Sec. 4.2)

Two layers, so that everything the view shows can be driven (and tested) without a browser:

* :class:`ExplorerState` -- plain Python state. An image and a class are selected (any class, not only the
  predicted one). The explanation of every class of every image -- concept maps ``c_jk`` (Sec. 3.1), relevances
  ``r_jk = theta^R_jk . e_jk`` (Eq. 2 of Sec. 3.3) and the base model's probabilities -- is computed once, by
  :func:`xailib.mace.experiments.explain_all` (one pass per batch for all ``K`` classes), and so are each
  concept's prototypes (:func:`xailib.mace.explain.prototypes`: the images of a pool with the highest relevance
  for it, as SF1-SF10 show them). Selecting an image or a class then only reads those tensors; the maps of the
  selection are resized to the image (as Sec. 3.1 visualises a concept) once and cached. ``concepts`` lists the
  class's concepts that pruning kept (S2), most relevant on this image first.
* :class:`Explorer` -- an ipywidgets view that only renders the state and calls its methods: image slider, class
  dropdown (probability and rank of every class), a header (true label, prediction, MACE's estimate of the class's
  probability) and one card per kept concept: its map over the image with ``r_jk`` in the title, beside its
  prototypes with the same concept's map over each.

:func:`plot_view` draws the same cards as a static figure, for notebooks run without a browser;
:func:`concept_table` lists them; :func:`time_steps` times the state's steps and :func:`explorer_comparison`
puts the view beside the paper.
"""

from __future__ import annotations

import html
import io
import time
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from xailib.checks import check_fraction, check_model, check_positive_int
from xailib.mace.experiments import explain_all
from xailib.mace.explain import Explanation, normalise_maps, prototypes
from xailib.mace.model import MACE, TapPoint
from xailib.results import paper_row, paper_table
from xailib.widgets import StateView

__all__ = ["ExplorerState", "Explorer", "explore", "plot_view", "concept_table", "time_steps", "explorer_comparison"]


def _split_data(data, labels, what: str):
    """``(images [N, C, H, W] on the CPU, labels list or None, class names or None)`` from a tensor or a data set
    with ``.images`` (and ``.labels``, ``.class_names``) or an ``(images, labels)`` pair."""
    names = None
    if isinstance(data, tuple) and len(data) == 2:
        data, labels = data[0], data[1] if labels is None else labels
    elif not isinstance(data, torch.Tensor) and hasattr(data, "images"):
        labels = getattr(data, "labels", None) if labels is None else labels
        names = getattr(data, "class_names", None)
        data = data.images
    if not isinstance(data, torch.Tensor):
        raise TypeError(f"{what} must be a tensor [N, C, H, W], an (images, labels) pair or a data set with .images, "
                        f"got {type(data).__name__}.")
    images = data.unsqueeze(0) if data.dim() == 3 else data
    if images.dim() != 4 or not images.is_floating_point() or len(images) == 0:
        raise ValueError(f"{what} must be a non-empty float tensor [N, C, H, W], got {tuple(data.shape)} {data.dtype}.")
    if labels is not None:
        labels = [int(v) for v in (labels.tolist() if isinstance(labels, torch.Tensor) else labels)]
        if len(labels) != len(images):
            raise ValueError(f"Got {len(labels)} labels for {len(images)} {what}; give one label per image.")
    return images.detach().cpu(), labels, names


def _as_index(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{what} must be an int, got {value!r}.")
    return int(value)


class ExplorerState:
    """The state of the MACE explorer: a selected image and class, and the explanation of every class, computed once.

    Classes are the base model's output indices, as everywhere in :mod:`xailib.mace`: the unit explains the outputs
    in ``Explanation.classes`` (all of them by default, ``K`` rows).

    Parameters
    ----------
    model : nn.Module
        The frozen base classifier MACE was trained on.
    mace : MACE
        The trained (and pruned) unit; its :attr:`~xailib.mace.model.MACE.active` concepts at construction are
        the ones shown.
    point : TapPoint
        Where ``mace`` taps ``model`` (from :func:`xailib.mace.training.train_mace`).
    images : Tensor ``[N, C, H, W]``, an ``(images, labels)`` pair, or a data set with ``.images``
        The images to explore, in the model's input range (kept on the CPU).
    labels : sequence of int, optional
        Their true labels (output indices), shown beside the image (a data set or pair supplies them).
    class_names : sequence of str, optional
        A name per model output, or one per class of the unit (in ``Explanation.classes`` order); default
        ``model.class_names``, then the data set's, else ``"class <k>"``.
    prototypes_from : Tensor ``[M, C, H, W]``, ``(images, labels)`` pair or data set, optional
        The pool the prototypes are drawn from (the paper: the test set). Default: ``images`` themselves (the
        explanation is then not computed twice).
    top : int
        Prototypes per concept (at most the pool's size).
    threshold : float in [0, 1), optional
        When given, :meth:`concept_mask` (and the view's white outline) marks where a concept's map, divided by
        its maximum, exceeds it (the masks of Fig. 4).
    batch_size : int
        Images per pass of :func:`~xailib.mace.experiments.explain_all`.
    max_cache : int
        Upsampled selections (image, class) kept; the least recently used are dropped.

    Attributes
    ----------
    explanation : Explanation
        Of every class for ``images``: ``maps [N, K, C, h, w]`` at the tapped resolution, ``relevance [N, K, C]``,
        ``active [K, C]``, ``probs [N, n_outputs]``, ``estimate [N, K]`` (on the CPU).
    pool_explanation : Explanation
        The same for the prototype pool (the same object when the pool is ``images``).
    prototype_index : LongTensor ``[K, C, top]``
        :func:`~xailib.mace.explain.prototypes` of the pool: pool indices, highest relevance first.
    classes : list of int
        The output each of the ``K`` rows explains.
    seconds : float
        Wall time of the explanation(s) and prototypes at construction.

    Examples
    --------
    >>> state = ExplorerState(net, mace, point, x_test, y_test, class_names=names, top=5)
    >>> state.select_image(3)                 # the class is reset to the predicted one
    >>> state.concepts                        # [(j, r_jk), ...], most relevant first, pruned ones left out
    >>> state.select_class(state.ranking[1])  # the second-ranked class (Sec. 4.2)
    >>> state.concept_map(state.concepts[0][0]).shape, state.prototypes_of(state.concepts[0][0]).shape
    """

    def __init__(self, model: nn.Module, mace: MACE, point: TapPoint, images, labels: Sequence[int] | None = None,
                 class_names: Sequence[str] | None = None, prototypes_from=None, top: int = 5,
                 threshold: float | None = None, batch_size: int = 128, max_cache: int = 64):
        check_model(model)
        if not isinstance(mace, MACE):
            raise TypeError(f"mace must be a trained MACE unit (from xailib.mace.training.train_mace), got "
                            f"{type(mace).__name__}.")
        if not isinstance(point, TapPoint):
            raise TypeError(f"point must be the TapPoint train_mace returned with the unit, got {type(point).__name__}.")
        self.model, self.mace, self.point = model, mace, point
        self.images, self.labels, data_names = _split_data(images, labels, "images")
        self.top = check_positive_int(top, "top", hint=" (prototypes per concept, e.g. 5)")
        self.threshold = None if threshold is None else check_fraction(threshold, "threshold", high_open=True)
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.max_cache = check_positive_int(max_cache, "max_cache")
        if prototypes_from is None:
            self.pool_images, self.pool_labels = self.images, self.labels
        else:
            self.pool_images, self.pool_labels, _ = _split_data(prototypes_from, None, "prototypes_from")
        if self.top > len(self.pool_images):
            raise ValueError(f"top={self.top} prototypes per concept, but the pool holds {len(self.pool_images)} "
                             "images; lower top or pass a larger prototypes_from.")
        t0 = time.perf_counter()
        self.explanation = self._explain(self.images)
        self.classes = [int(c) for c in self.explanation.classes]
        self._rows = {c: r for r, c in enumerate(self.classes)}
        self.n_outputs = int(self.explanation.probs.shape[1])
        self.class_names = self._names(class_names, getattr(model, "class_names", None) or data_names)
        self.pool_explanation = (self.explanation if prototypes_from is None else self._explain(self.pool_images))
        self.prototype_index = prototypes(self.pool_explanation.relevance, self.top)
        self.seconds = time.perf_counter() - t0
        self._maps: OrderedDict[tuple[int, int], torch.Tensor] = OrderedDict()
        self._image = 0
        self._target = self.ranking[0]

    def _explain(self, images: torch.Tensor) -> Explanation:
        ex = explain_all(self.model, self.mace, self.point, images, batch_size=self.batch_size)
        return Explanation(ex.maps.cpu(), ex.relevance.cpu(), ex.active.cpu(), ex.classes, ex.probs.cpu(),
                           ex.estimate.cpu(), ex.image_size)

    def _names(self, given, default) -> list[str]:
        """A name per model output, from names of every output or of the unit's classes."""
        names = [f"class {k}" for k in range(self.n_outputs)]
        source = given if given is not None else default
        if source is None:
            return names
        source = [str(n) for n in source]
        if len(source) == self.n_outputs:
            return source
        if len(source) == len(self.classes):
            for c, n in zip(self.classes, source):
                names[c] = n
            return names
        if given is None:  # the model's or data set's names do not fit: number the classes
            return names
        raise ValueError(f"Got {len(source)} class names; give one per model output ({self.n_outputs}) or one per "
                         f"class of the MACE unit ({len(self.classes)}).")

    # -- what is selected ------------------------------------------------------------------------
    @property
    def n_images(self) -> int:
        return int(self.images.shape[0])

    @property
    def n_classes(self) -> int:
        """``K``: the classes the unit explains."""
        return len(self.classes)

    @property
    def image_index(self) -> int:
        """Index of the selected image."""
        return self._image

    @property
    def image(self) -> torch.Tensor:
        """The selected image ``[1, C, H, W]`` (CPU)."""
        return self.images[self._image : self._image + 1]

    @property
    def label(self) -> int | None:
        """The selected image's true label (None without labels)."""
        return None if self.labels is None else self.labels[self._image]

    @property
    def probs(self) -> np.ndarray:
        """The base model's probabilities ``[n_outputs]`` for the selected image."""
        return self.explanation.probs[self._image].numpy().copy()

    @property
    def ranking(self) -> list[int]:
        """The unit's classes by the base model's probability for the selected image, highest first (ties: lower
        index)."""
        p = self.explanation.probs[self._image]
        return sorted(self.classes, key=lambda k: (-float(p[k]), k))

    def rank_of(self, c: int | str) -> int:
        """Rank of class ``c`` (any output index or name) among all the model's outputs for the selected image: 1 for the
        predicted class, 2 for the next... (equal to its place in :attr:`ranking` when the unit explains every
        output)."""
        k = self._output_index(c)
        p = self.explanation.probs[self._image]
        return 1 + int((p > p[k]).sum()) + int(((p == p[k]) & (torch.arange(len(p)) < k)).sum())

    @property
    def predicted_class(self) -> int:
        """The base model's predicted output for the selected image."""
        p = self.explanation.probs[self._image]
        return min(range(len(p)), key=lambda k: (-float(p[k]), k))

    @property
    def target(self) -> int:
        """The class whose concepts are shown (an output index)."""
        return self._target

    @property
    def target_name(self) -> str:
        return self.class_names[self._target]

    @property
    def target_rank(self) -> int:
        return self.rank_of(self._target)

    @property
    def estimate(self) -> float:
        """MACE's relevance estimator's ``sigma(sum_j r_jk + b_k)`` for the selected image and class (Sec. 3.3)."""
        return float(self.explanation.estimate[self._image, self._rows[self._target]])

    def class_label(self, c: int | str) -> str:
        """Short text for a class (any model output) of the selected image: ``"fox: p = 0.231, rank 2"``."""
        k = self._output_index(c)
        return f"{self.class_names[k]}: p = {float(self.explanation.probs[self._image, k]):.3f}, rank {self.rank_of(k)}"

    # -- the concepts of the selection ------------------------------------------------------------
    def active_concepts(self, c: int | str | None = None) -> list[int]:
        """The concepts of class ``c`` (default: the target) that pruning kept (S2), by index."""
        k = self._target if c is None else self._class_index(c)
        return self.explanation.active[self._rows[k]].nonzero().flatten().tolist()

    @property
    def pruned(self) -> list[int]:
        """The target class's pruned concepts (hidden by the view)."""
        return (~self.explanation.active[self._rows[self._target]]).nonzero().flatten().tolist()

    @property
    def concepts(self) -> list[tuple[int, float]]:
        """The target class's kept concepts on the selected image, most relevant first (ties: lower index):
        ``[(j, r_jk), ...]`` (Eq. 2)."""
        return self._concepts(self._image, self._target)

    def _concepts(self, i: int, k: int) -> list[tuple[int, float]]:
        row = self._rows[k]
        r = self.explanation.relevance[i, row]
        kept = [(j, float(r[j])) for j in self.explanation.active[row].nonzero().flatten().tolist()]
        return sorted(kept, key=lambda t: (-t[1], t[0]))

    def relevance(self, j: int) -> float:
        """``r_jk`` of concept ``j`` of the target class on the selected image."""
        j = self._check_concept(j)
        return float(self.explanation.relevance[self._image, self._rows[self._target], j])

    def concept_map(self, j: int) -> torch.Tensor:
        """Concept ``j``'s map ``c_jk`` of the target class on the selected image, resized to the image as Sec. 3.1
        shows it (bilinear, non-negative): ``[H, W]`` (CPU). The maps of a selection are resized once, then cached."""
        j = self._check_concept(j)
        return self._upsampled(self._image, self._target)[j]

    def concept_mask(self, j: int, threshold: float | None = None) -> torch.Tensor:
        """Where :meth:`concept_map` divided by its maximum exceeds ``threshold`` (default the state's):
        BoolTensor ``[H, W]``."""
        t = self.threshold if threshold is None else check_fraction(threshold, "threshold", high_open=True)
        if t is None:
            raise ValueError("No threshold: pass concept_mask(j, threshold=0.5) or build the state with threshold=.")
        return normalise_maps(self.concept_map(j)) > t

    def prototype_indices(self, j: int) -> list[int]:
        """Pool indices of concept ``j``'s ``top`` prototypes (of the target class), highest relevance first."""
        j = self._check_concept(j)
        return self.prototype_index[self._rows[self._target], j].tolist()

    def prototypes_of(self, j: int) -> torch.Tensor:
        """Concept ``j``'s prototypes: the pool images with the highest ``r_jk`` (target class),
        ``[top, C, H, W]``."""
        return self.pool_images[self.prototype_indices(j)]

    def prototype_relevance(self, j: int) -> list[float]:
        """``r_jk`` of each prototype of concept ``j`` (target class), in :meth:`prototype_indices` order."""
        idx = self.prototype_indices(j)
        return self.pool_explanation.relevance[idx, self._rows[self._target], j].tolist()

    def prototype_maps(self, j: int) -> torch.Tensor:
        """Concept ``j``'s map on each of its prototypes, resized to the image: ``[top, H, W]``."""
        idx = self.prototype_indices(j)
        return _one_class(self.pool_explanation, idx, self._rows[self._target], self._target).upsampled()[:, 0, j]

    # -- actions -----------------------------------------------------------------------------------
    def select_image(self, index: int, keep_class: bool = False) -> None:
        """Select image ``index``; the class is reset to the image's highest-ranked class (the predicted one when
        the unit explains every output; ``keep_class``: kept)."""
        index = _as_index(index, "image index")
        if not 0 <= index < self.n_images:
            raise ValueError(f"Image index {index} is out of range: there are {self.n_images} images "
                             f"(valid indices 0..{self.n_images - 1}).")
        self._image = index
        if not keep_class:
            self._target = self.ranking[0]

    def select_class(self, c: int | str) -> None:
        """Show the concepts of class ``c``: an output index or a name of :attr:`class_names`; any class the unit
        explains, not only the predicted one (Sec. 4.2)."""
        self._target = self._class_index(c)

    def clear_cache(self) -> None:
        """Forget the resized maps (e.g. to time cold steps); the explanation itself is kept."""
        self._maps.clear()

    # -- internals ---------------------------------------------------------------------------------
    def _valid_classes(self) -> str:
        if self.classes == list(range(self.n_outputs)):
            return f"an index 0..{self.n_outputs - 1} or a name of {self.class_names}"
        return f"one of the unit's classes {self.classes} or their names {[self.class_names[c] for c in self.classes]}"

    def _output_index(self, c) -> int:
        """A model output index from an index or a name."""
        if isinstance(c, str):
            if c not in self.class_names:
                raise ValueError(f"Unknown class {c!r}; give {self._valid_classes()}.")
            return self.class_names.index(c)
        if isinstance(c, bool) or not isinstance(c, (int, np.integer)):
            raise TypeError(f"class must be an index (int) or a name (str), got {c!r}.")
        if not 0 <= c < self.n_outputs:
            raise ValueError(f"Class {int(c)} is out of range: the model has {self.n_outputs} outputs; give "
                             f"{self._valid_classes()}.")
        return int(c)

    def _class_index(self, c) -> int:
        """A model output index among the unit's classes, from an index or a name."""
        k = self._output_index(c)
        if k not in self._rows:
            raise ValueError(f"Class {k} '{self.class_names[k]}' is not one of the {self.n_classes} classes this MACE "
                             f"unit explains; give {self._valid_classes()}.")
        return k

    def _check_concept(self, j, k: int | None = None) -> int:
        k = self._target if k is None else k
        j = _as_index(j, "concept index")
        c = self.mace.C
        if not 0 <= j < c:
            raise ValueError(f"Concept {j} is out of range: each class has {c} concepts (0..{c - 1}); the kept ones "
                             f"of class {k} '{self.class_names[k]}' are {self.active_concepts(k)}.")
        if not bool(self.explanation.active[self._rows[k], j]):
            raise ValueError(f"Concept {j} of class {k} '{self.class_names[k]}' was pruned (S2); the kept concepts "
                             f"are {self.active_concepts(k)} (state.concepts orders them by relevance).")
        return j

    def _upsampled(self, i: int, k: int) -> torch.Tensor:
        """All ``C`` maps of class ``k`` on image ``i``, resized to the image: ``[C, H, W]`` (cached)."""
        key = (i, k)
        if key not in self._maps:
            self._maps[key] = _one_class(self.explanation, [i], self._rows[k], k).upsampled()[0, 0]
            while len(self._maps) > self.max_cache:
                self._maps.popitem(last=False)
        self._maps.move_to_end(key)
        return self._maps[key]


def _one_class(ex: Explanation, images: list[int], row: int, k: int) -> Explanation:
    """The part of ``ex`` for some images and the one class ``k`` of row ``row`` (for :meth:`Explanation.upsampled`)."""
    return Explanation(ex.maps[images][:, [row]], ex.relevance[images][:, [row]], ex.active[[row]], [k],
                       ex.probs[images], ex.estimate[images][:, [row]], ex.image_size)


# --------------------------------------------------------------------------------------------------
# Drawing (shared by the widget's cards and the static figure)
# --------------------------------------------------------------------------------------------------


def _draw_card(axes, state: ExplorerState, j: int, rank: int | None = None) -> None:
    """One concept of the state's selection on ``axes`` (``1 + top`` of them): its map over the image, titled with
    ``r_jk``, then its prototypes with the concept's map over each."""
    from xailib.plotting import show_overlay

    mask = state.concept_mask(j) if state.threshold is not None else None
    show_overlay(axes[0], state.image, state.concept_map(j).numpy(), mask=mask)
    lead = f"#{rank} " if rank is not None else ""
    axes[0].set_title(f"{lead}concept {j}\nr = {state.relevance(j):+.3f}", fontsize=7)
    idx, rel = state.prototype_indices(j), state.prototype_relevance(j)
    for ax, img, heat, p, r in zip(axes[1:], state.prototypes_of(j), state.prototype_maps(j), idx, rel):
        show_overlay(ax, img, heat.numpy())
        name = "" if state.pool_labels is None else f"{state.class_names[state.pool_labels[p]]}\n"
        ax.set_title(f"{name}r = {r:+.3f}", fontsize=6)


def plot_view(state: ExplorerState, classes: Sequence[int | str] | None = None, max_concepts: int | None = None,
              size: float = 1.2):
    """The explorer's cards as a static figure, for the selected image: one row per kept concept of each class.

    Parameters
    ----------
    state : ExplorerState
    classes : sequence of int or str, optional
        Classes shown one block of rows each (default: the state's target). The state's selection is restored.
    max_concepts : int, optional
        The most relevant concepts shown per class (default: all kept).
    size : float
        Inches per picture.

    Returns
    -------
    matplotlib.figure.Figure
        Row: the concept's map ``c_jk`` over the image (Sec. 3.1) with ``r_jk`` (Eq. 2) in its title, and its
        ``top`` prototypes with the same concept's map over each; the row label names the class, its probability
        and its rank.
    """
    import matplotlib.pyplot as plt

    if not isinstance(state, ExplorerState):
        raise TypeError(f"state must be an ExplorerState, got {type(state).__name__}.")
    keep = state.target
    wanted = [keep] if classes is None else [state._class_index(c) for c in classes]
    limit = None if max_concepts is None else check_positive_int(max_concepts, "max_concepts")
    blocks = [(k, [j for j, _ in state._concepts(state.image_index, k)][:limit]) for k in wanted]
    n_rows = max(1, sum(len(js) for _, js in blocks))
    fig, axes = plt.subplots(n_rows, 1 + state.top, figsize=(size * (1 + state.top), size * 1.3 * n_rows + 0.5),
                             squeeze=False)
    row = 0
    try:
        for k, js in blocks:
            state.select_class(k)
            for rank, j in enumerate(js, start=1):
                _draw_card(axes[row], state, j, rank)
                if rank == 1:
                    axes[row, 0].set_ylabel(state.class_label(k).replace(": ", "\n"), fontsize=7)
                row += 1
    finally:
        state.select_class(keep)
    for ax in axes[row:].flat:
        ax.axis("off")
    if row == 0:
        axes[0, 0].text(0.5, 0.5, "no concept kept", ha="center", va="center", fontsize=8)
    truth = "" if state.label is None else f", true class {state.class_names[state.label]}"
    fig.suptitle(f"image {state.image_index}{truth}; predicted {state.class_label(state.predicted_class)}",
                 fontsize=8)
    fig.tight_layout()
    return fig


def concept_table(state: ExplorerState):
    """The state's selection as a table: one row per kept concept of the target class, most relevant first.

    Returns
    -------
    pandas.DataFrame
        ``image``, ``label`` (true, -1 without labels), ``class``, ``class_name``, ``rank`` (1 = predicted),
        ``prob`` (the base model's), ``estimate`` (MACE's ``sigma(sum_j r_jk + b_k)``), ``order`` (1 = most
        relevant), ``concept`` (``j``), ``relevance`` (``r_jk``), ``prototypes`` (pool indices, space-separated).
    """
    import pandas as pd

    rows = []
    for order, (j, r) in enumerate(state.concepts, start=1):
        rows.append({"image": state.image_index, "label": -1 if state.label is None else state.label,
                     "class": state.target, "class_name": state.target_name, "rank": state.target_rank,
                     "prob": float(state.probs[state.target]), "estimate": state.estimate, "order": order,
                     "concept": j, "relevance": r,
                     "prototypes": " ".join(str(p) for p in state.prototype_indices(j))})
    return pd.DataFrame(rows, columns=["image", "label", "class", "class_name", "rank", "prob", "estimate", "order",
                                       "concept", "relevance", "prototypes"])


def time_steps(state: ExplorerState, indices: Sequence[int], rank: int = 2):
    """Wall time of the state's steps: for each image, select it, switch to its ``rank``-ranked class (Sec. 4.2's
    "second-highest" for 2) and resize all its kept concepts' maps and gather their prototypes, cold (cache cleared).

    Returns
    -------
    pandas.DataFrame
        One row per image: ``image``, ``select_image_ms``, ``select_class_ms``, ``maps_ms`` (every kept concept's
        :meth:`~ExplorerState.concept_map`, :meth:`~ExplorerState.prototypes_of` and
        :meth:`~ExplorerState.prototype_maps`), ``concepts`` (how many), and ``explain_s``, the one-off
        explanation of all classes at construction (the same on every row). The selection is restored.
    """
    import pandas as pd

    rank = check_positive_int(rank, "rank")
    if rank > state.n_classes:
        raise ValueError(f"rank {rank} is more than the {state.n_classes} classes.")
    keep = state.image_index, state.target
    rows = []
    try:
        for i in indices:
            state.clear_cache()
            t0 = time.perf_counter()
            state.select_image(int(i))
            t1 = time.perf_counter()
            state.select_class(state.ranking[rank - 1])
            t2 = time.perf_counter()
            js = [j for j, _ in state.concepts]
            for j in js:
                state.concept_map(j), state.prototypes_of(j), state.prototype_maps(j)
            t3 = time.perf_counter()
            rows.append({"image": int(i), "select_image_ms": 1e3 * (t1 - t0), "select_class_ms": 1e3 * (t2 - t1),
                         "maps_ms": 1e3 * (t3 - t2), "concepts": len(js), "explain_s": state.seconds})
    finally:
        state.select_image(keep[0])
        state.select_class(keep[1])
    return pd.DataFrame(rows)


def explorer_comparison(state: ExplorerState, times=None, model_name: str = "", device: str = "cpu",
                        threads: int | None = None):
    """What the paper says about explaining any class (Sec. 4.2, SF2-SF10) beside what the explorer does.

    Parameters
    ----------
    state : ExplorerState
        The explored state (its sizes go into the notes).
    times : DataFrame, optional
        :func:`time_steps` of ``state``; without it the timing rows say "not measured".
    model_name, device : str
    threads : int, optional
        ``torch.get_num_threads()`` during the timing.

    Returns
    -------
    DataFrame, as :func:`xailib.results.paper_table`. The paper describes no interactive view and reports no
    number for one, and what it says MACE can show (any class's concepts and relevances from one explanation;
    prototypes) holds here by construction, so every row is ``not comparable``; the notes say what the view does.
    Save it with ``wall_clock=True`` when it holds times.
    """
    where = device + (f", {threads} thread(s)" if threads else "")
    kept = int(state.explanation.active.sum())
    sizes = (f"{state.n_images} images, {state.n_classes} classes, {kept} of {state.n_classes * state.mace.C} "
             f"concepts kept, prototypes from {len(state.pool_images)} images")

    def ms(col: str) -> str:
        return "not measured" if times is None or not len(times) else f"{times[col].median():.2f} ms"

    timed = "images" if times is None else f"n = {len(times)} images"
    by_construction = "a capability of the method, true here by construction (so not 'reproduced')"
    rows = [
        paper_row("Sec. 4.2, Fig. 1", "explanation of any output, not only the predicted class",
                  "concepts and relevances for every class (Fig. 1: the second-ranked class, fox)",
                  "any class from the dropdown, with its probability and rank; one explanation of all K classes",
                  "not comparable", f"{by_construction}; the relevances shown equal MACE's explain of that image and "
                  f"class (tested); Sec. 4.2's measured claims are in MACE 03; {sizes}"),
        paper_row("Sec. 3.1, SF2-SF10", "concept maps over the image with their relevance r_jk",
                  "concept maps resized to the image, relevance beside each", "a card per kept concept, most relevant "
                  "first, r_jk in its title", "not comparable", f"{by_construction}; pruned concepts (S2) are hidden"),
        paper_row("SF1-SF10", "prototypes of a concept: the images with the highest relevance for it",
                  "rows of prototypical images", f"top {state.top} of the pool per concept, its map over each",
                  "not comparable", f"{by_construction}; the pool is the held-out images (the paper: the test set)"),
        paper_row("(none)", "an interactive view to pick the image and the class", "not in the paper",
                  "ipywidgets view on a plain-Python state", "not comparable", "the paper's figures are static"),
        paper_row("(none)", f"time to switch to the second-ranked class{' (' + model_name + ')' if model_name else ''}",
                  "not reported", ms("select_class_ms"), "not comparable", f"median over {timed}; {where}"),
        paper_row("(none)", "time to resize a class's kept concept maps and gather prototypes (cold)", "not reported",
                  ms("maps_ms"), "not comparable", f"median over {timed}; {where}"),
        paper_row("(none)", "one-off explanation of all classes of the explored images and the pool", "not reported",
                  f"{state.seconds:.2f} s", "not comparable", f"at construction, {sizes}; {where}"),
    ]
    return paper_table(rows)


# --------------------------------------------------------------------------------------------------
# The ipywidgets view
# --------------------------------------------------------------------------------------------------


def _figure_png(draw, ncols: int, size: float, dpi: int = 100) -> bytes:
    """PNG bytes of a one-row matplotlib figure of ``ncols`` axes that ``draw(axes)`` fills (closed after)."""
    from matplotlib.figure import Figure  # not pyplot: nothing is left open in its figure manager

    fig = Figure(figsize=(size * ncols, size * 1.35))
    draw(fig.subplots(1, ncols, squeeze=False)[0])
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


class Explorer(StateView):
    """An ipywidgets view of an :class:`ExplorerState`; it only renders the state and calls its methods.

    Parameters
    ----------
    state : ExplorerState
    size : float
        Inches per picture in the cards (at 100 dpi: 100 pixels per inch).
    columns : int
        Cards per row of the grid (a card is ``1 + top`` pictures wide).

    Attributes
    ----------
    widget : ipywidgets.VBox
        The whole view (displaying the Explorer displays it).
    image_slider, class_dropdown
        The controls; ``class_dropdown`` lists the classes by rank, each as ``"name: p = .., rank r"``.
    header, status : ipywidgets.HTML
        The selection in words; the last error (red), empty after a good step.
    image_view : ipywidgets.Image
        The selected image.
    cards : ipywidgets.GridBox
        One card per kept concept of the target class, most relevant first (``card_concepts`` lists their ``j``).
    """

    def __init__(self, state: ExplorerState, size: float = 1.1, columns: int = 1):
        import ipywidgets as w

        if not isinstance(state, ExplorerState):
            raise TypeError(f"state must be an ExplorerState, got {type(state).__name__}.")
        self.state = state
        self.size = float(size)
        self.columns = check_positive_int(columns, "columns")
        self._syncing = False
        self._png: OrderedDict[tuple, bytes] = OrderedDict()
        self.image_slider = w.IntSlider(value=state.image_index, min=0, max=max(0, state.n_images - 1),
                                        description="image", continuous_update=False, disabled=state.n_images < 2)
        self.class_dropdown = w.Dropdown(description="class", layout=w.Layout(width="360px"))
        self.header = w.HTML()
        self.status = w.HTML()
        self.image_view = w.Image(format="png", layout=w.Layout(width="160px"))
        self.cards = w.GridBox(layout=w.Layout(grid_template_columns=" ".join(["auto"] * self.columns),
                                               grid_gap="6px"))
        self.card_concepts: list[int] = []
        self.image_slider.observe(self._on_image, names="value")
        self.class_dropdown.observe(self._on_class, names="value")
        self.widget = w.VBox([w.HBox([self.image_slider, self.class_dropdown]),
                              w.HBox([self.image_view, self.header]), self.cards, self.status])
        self.render()

    # -- events: call the state, then render ----------------------------------------------------------
    def _on_image(self, change) -> None:
        if not self._syncing:
            self._act(self.state.select_image, int(change["new"]))

    def _on_class(self, change) -> None:
        if not self._syncing and change["new"] is not None and change["new"] != self.state.target:
            self._act(self.state.select_class, int(change["new"]))

    # -- rendering ---------------------------------------------------------------------------------
    def _card_png(self, j: int, rank: int) -> bytes:
        s = self.state
        key = (s.image_index, s.target, j, rank)
        if key not in self._png:
            self._png[key] = _figure_png(lambda axes: _draw_card(axes, s, j, rank), 1 + s.top, self.size)
            while len(self._png) > 256:
                self._png.popitem(last=False)
        return self._png[key]

    def render(self) -> None:
        """Redraw every part of the view from the state."""
        import ipywidgets as w

        from xailib.plotting import show_overlay

        s = self.state
        self._syncing = True
        try:
            self.image_slider.value = s.image_index
            self.class_dropdown.options = [(s.class_label(k), k) for k in s.ranking]
            self.class_dropdown.value = s.target
        finally:
            self._syncing = False
        truth = "" if s.label is None else f"true class <b>{html.escape(s.class_names[s.label])}</b><br>"
        pruned = f", {len(s.pruned)} pruned (hidden)" if s.pruned else ""
        self.header.value = (
            f"<div style='margin-left:12px'>image {s.image_index}<br>{truth}"
            f"predicted <b>{html.escape(s.class_label(s.predicted_class))}</b><br>"
            f"shown <b>{html.escape(s.class_label(s.target))}</b><br>"
            f"MACE's estimate σ(Σ_j r_jk + b_k) = {s.estimate:.3f}<br>"
            f"{len(s.concepts)} kept concepts{pruned}; cards: the concept's map, r_jk, its prototypes</div>")
        self.image_view.value = _figure_png(lambda axes: show_overlay(axes[0], s.image), 1, 1.8)
        self.card_concepts = [j for j, _ in s.concepts]
        cards = [w.Image(value=self._card_png(j, r), format="png")
                 for r, j in enumerate(self.card_concepts, start=1)]
        self.cards.children = cards or [w.HTML("<i>every concept of this class was pruned</i>")]


def explore(model: nn.Module, mace: MACE, point: TapPoint, images, labels=None, class_names=None,
            prototypes_from=None, top: int = 5, threshold: float | None = None, image: int = 0, size: float = 1.1,
            columns: int = 1, **state_kwargs) -> Explorer:
    """Build an :class:`ExplorerState` and its :class:`Explorer` view; display the result in Jupyter.

    Parameters are those of :class:`ExplorerState` and :class:`Explorer`; ``image`` is the index selected first
    (its predicted class is shown). The returned object displays as its ipywidgets box; ``.state`` drives it.

    Examples
    --------
    >>> ex = explore(net, mace, point, x_test, y_test, class_names=names, top=5)
    >>> ex                                   # in a notebook cell: the widget
    >>> ex.state.select_class(ex.state.ranking[1]); ex.render()
    """
    state = ExplorerState(model, mace, point, images, labels=labels, class_names=class_names,
                          prototypes_from=prototypes_from, top=top, threshold=threshold, **state_kwargs)
    if image != 0:
        state.select_image(image)
    return Explorer(state, size=size, columns=columns)
