"""MACE's four modules on a frozen base model (Kumar et al., "MACE: Model Agnostic Concept Extractor", Sec. 3).

The MACE unit taps the output ``x [B, D, H, W]`` of one layer of a frozen classifier ``f`` (by default the last
convolutional block, Sec. 3: "inserted in between the final convolutional layer and the first dense layer") and
the output ``z [B, L]`` of the first dense layer after it:

* **Map generator** (Sec. 3.1): ``c_jk = ReLU(x * theta^M_jk)``, ``K x C`` 1x1 convolution filters, one concept map
  ``[H, W]`` per concept ``j`` of class ``k`` (:attr:`MACE.maps`).
* **Embedding generator** (Sec. 3.2): one dense network per class, shared by that class's ``C`` concepts, on each
  flattened concept map, tanh activations, the output L2-normalised: ``e_jk`` in ``R^Q`` (:meth:`MACE.embed`).
* **Relevance estimator** (Sec. 3.3): one dense layer per class on the concatenated embeddings, a sigmoid, one
  output; ``theta^R_k = [theta^R_1k, ..., theta^R_Ck]`` and the **concept relevance** ``r_jk = theta^R_jk . e_jk``;
  ``sigma(sum_j r_jk + b_k)`` estimates the base model's probability of class ``k`` (:meth:`MACE.relevance`).
* **Output generator** (Sec. 3.4): a dense layer from all ``K C Q`` embeddings to ``z~`` in ``R^L``, which the
  base model's layers after its first dense layer (the *tail*) turn into class scores ``f(z~)``.

The base model runs once per batch (:func:`tap`): ``x``, ``z`` and the logits of all the model's outputs come from
one forward pass; the MACE unit then computes every class's maps, embeddings and relevances from ``x`` at once
(batched over classes and concepts with ``einsum``).

Choices the paper leaves open, and ours: the embedding network's hidden widths (``hidden=(64,)``; the paper's
supplement names the sizes in its code only); a bias ``b_k`` in each relevance layer (a dense layer has one; the
relevance ``r_jk`` excludes it, as the paper defines it); pruned concepts (:mod:`xailib.mace.pruning`) are switched
off by :attr:`MACE.active`: their relevance is left out of the sum, their embedding is zeroed before the output
generator, and the triplet loss skips them.

**Which classes.** By default a unit has one row of ``C`` concepts for every output of the base model (``K`` = the
number of outputs, row ``k`` is output ``k``). A torchvision ImageNet classifier has 1000 outputs, and MACE is
trained for the few classes of a data set (the paper: 10 AWA2 classes), so ``classes`` names the model outputs the
``K`` rows stand for (:attr:`MACE.classes`; :meth:`MACE.rows` maps output indices to rows). Labels, the
``classes`` of :func:`~xailib.mace.explain.explain` and :attr:`~xailib.mace.explain.Explanation.classes` are always
output indices; Eq. (2) takes the base model's probability of the row's output.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from xailib.checks import check_model, check_positive_int
from xailib.layers import check_layer, get_layer, model_state, named_layers

__all__ = ["MACE", "TapPoint", "Tapped", "eval_mode", "find_tap_point", "tap"]


# --------------------------------------------------------------------------------------------------
# Where MACE attaches: the tapped layer, the first dense layer after it, and the tail
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TapPoint:
    """Where a MACE unit attaches to a base model.

    Attributes
    ----------
    layer : str
        The tapped layer, whose output ``x [B, D, H, W]`` feeds the map generator.
    dense : str
        The first ``nn.Linear`` after it; its output is ``z [B, L]`` (Sec. 3.4).
    tail : nn.Module
        The base model's computation from ``z`` to its class scores (``nn.Identity()`` when the dense layer is
        the output layer, as in ResNet-50); its parameters are the base model's own, not copies.
    """

    layer: str
    dense: str
    tail: nn.Module
    layer_module: nn.Module | None = field(default=None, repr=False, compare=False)
    dense_module: nn.Module | None = field(default=None, repr=False, compare=False)


def _last_conv(model: nn.Module, before: str) -> str | None:
    """The dotted name of the last ``nn.Conv2d`` registered before the module ``before``."""
    last = None
    for name, m in model.named_modules():
        if name == before:
            break
        if isinstance(m, nn.Conv2d):
            last = name
    return last


def find_tap_point(model: nn.Module, layer: str | None = None, tail: nn.Module | None = None) -> TapPoint:
    """The tap point of Sec. 3: ``layer`` (default: the model's last stage, else its last convolution), the first ``nn.Linear`` registered after it, and the tail from that layer's output to the
    class scores.

    The tail is found for models whose dense layers sit in an ``nn.Sequential`` that ends the model (the zoo's
    ``head``, torchvision VGG's ``classifier``: the modules after the dense layer in it) or whose dense layer is
    the output layer (torchvision ResNet's ``fc``: the identity). For any other layout pass ``tail``, a module
    computing the class scores from ``z``; :func:`tap` checks it against the model's own scores.

    Raises
    ------
    ValueError
        No dense layer after the tapped layer (then ``z``, ``L^D`` and ``L^O`` cannot be formed), an unknown
        layer, or a tail that cannot be found.
    """
    check_model(model)
    layers = named_layers(model)
    if layer is None:
        stages = getattr(model, "stage_names", None)
        layer = stages[-1] if stages else None
        if layer is None:
            first_linear = next((n for n, m in model.named_modules() if isinstance(m, nn.Linear)), None)
            layer = _last_conv(model, first_linear) if first_linear else None
        if layer is None:
            raise ValueError("The model has no convolution before a dense layer to attach MACE to; pass layer=<the "
                             "name of a layer with a 4-D output>.")
    layer = check_layer(model, layer)
    names = list(layers)
    start = names.index(layer)
    inside = {n for n in names if n.startswith(layer + ".")}
    dense = next((n for n in names[start + 1:] if n not in inside and isinstance(layers[n], nn.Linear)), None)
    if dense is None:
        raise ValueError(
            f"The model has no dense (nn.Linear) layer after {layer!r}, so MACE's output generator has no z to "
            "approximate and L^D and L^O cannot be formed. Attach MACE to a layer followed by a dense layer (e.g. "
            "the last convolutional block before the classifier).")
    if tail is None:
        tail = _find_tail(model, dense)
    elif not isinstance(tail, nn.Module):
        raise TypeError(f"tail must be an nn.Module computing the class scores from {dense!r}'s output, got "
                        f"{type(tail).__name__}.")
    return TapPoint(layer, dense, tail, layers[layer], layers[dense])


def _find_tail(model: nn.Module, dense: str) -> nn.Module:
    parent_name, _, child = dense.rpartition(".")
    parent = get_layer(model, parent_name) if parent_name else model
    top = list(model.named_children())
    if not parent_name:  # a direct child of the model: it must be the last one, the output layer
        if top and top[-1][0] == child:
            return nn.Identity()
    elif isinstance(parent, nn.Sequential) and top and parent_name == top[-1][0]:
        kids = list(parent.named_children())
        i = [n for n, _ in kids].index(child)
        rest = [m for _, m in kids[i + 1:]]
        return nn.Sequential(*rest) if rest else nn.Identity()
    raise ValueError(
        f"Cannot tell what the model computes after its dense layer {dense!r} (it is not in a Sequential that "
        "ends the model, nor the model's last layer). Pass tail=<an nn.Module mapping that layer's output to the "
        "class scores>.")


def eval_mode(module: nn.Module):
    """Eval mode for a block, restored after (:class:`~xailib.layers.model_state`); nothing to do, and no cost,
    when every submodule is in eval mode already (the usual case for a frozen model)."""
    return model_state(module, train=False) if any(m.training for m in module.modules()) else nullcontext()


@dataclass
class Tapped:
    """One forward pass of the base model: ``x [B, D, H, W]`` (tapped), ``z [B, L]`` (first dense layer),
    ``logits [B, n_outputs]`` (all the model's outputs, also when a MACE unit explains only some)."""

    x: torch.Tensor
    z: torch.Tensor
    logits: torch.Tensor


def tap(model: nn.Module, point: TapPoint, images: torch.Tensor, check_tail: bool = False) -> Tapped:
    """Run the base model once on ``images`` and record ``x``, ``z`` and the logits (eval mode, so BatchNorm
    statistics are untouched, and no gradients; the model's modes are restored and the two hooks, on the modules
    the tap point holds, are removed on exit, errors included). With ``check_tail``, also check that the tail turns
    ``z`` into the logits (error otherwise).

    Raises
    ------
    ValueError
        If the tapped output is not 4-D, or the tail does not reproduce the model's scores.
    """
    store: dict[str, torch.Tensor] = {}

    def grab(key: str, name: str):
        def hook(module, inputs, output):
            if not isinstance(output, torch.Tensor):
                raise TypeError(f"Layer {name!r} returns {type(output).__name__}, not a tensor; tap a layer whose "
                                "output is one tensor.")
            store[key] = output.detach().clone()  # a copy: an in-place ReLU after the layer would overwrite it
        return hook

    modules = [point.layer_module or get_layer(model, point.layer), point.dense_module or get_layer(model, point.dense)]
    handles = [m.register_forward_hook(grab(k, n)) for m, k, n in zip(modules, "xz", (point.layer, point.dense))]
    try:
        with torch.no_grad(), eval_mode(model):
            logits = model(images)
    finally:
        for h in handles:
            h.remove()
    if "x" not in store or "z" not in store:
        raise ValueError(f"The forward pass did not run {point.layer!r} and {point.dense!r}; find the tap point of "
                         "this model with find_tap_point(model).")
    x, z = store["x"], store["z"]
    if x.dim() != 4:
        raise ValueError(f"Layer {point.layer!r} gives a {x.dim()}-D output {tuple(x.shape)}; MACE's map generator "
                         "needs a 4-D feature map [B, D, H, W]: tap a convolutional layer.")
    if z.dim() != 2:
        raise ValueError(f"The dense layer {point.dense!r} gives {tuple(z.shape)}, not [B, L].")
    if check_tail:
        with torch.no_grad():
            again = point.tail(z.clone())
        if again.shape != logits.shape or not torch.allclose(again, logits, rtol=1e-4, atol=1e-4):
            raise ValueError(f"The tail after {point.dense!r} does not give the model's class scores (largest "
                             f"difference {float((again - logits).abs().max()) if again.shape == logits.shape else 'shape'}"
                             "); pass tail=<the modules from that layer's output to the scores>.")
    return Tapped(x, z, logits)


# --------------------------------------------------------------------------------------------------
# The MACE unit
# --------------------------------------------------------------------------------------------------


class MACE(nn.Module):
    """The map generator, embedding generators, relevance estimators and output generator of Sec. 3.

    Parameters
    ----------
    in_channels : int
        ``D``, channels of the tapped feature map.
    map_size : (int, int)
        ``(H, W)`` of the tapped feature map.
    n_classes : int
        ``K``, the classes the unit explains (one row of ``C`` concepts each).
    dense_features : int
        ``L``, the first dense layer's width (``z``).
    n_concepts : int
        ``C`` per class (paper: 10).
    embedding_dim : int
        ``Q`` (paper: 32).
    hidden : sequence of int
        Hidden widths of each class's embedding network (tanh).
    seed : int
        Seeds the initial weights.
    classes : sequence of int, optional
        The base model's output index that each of the ``K`` rows stands for (distinct, non-negative, ``K`` of
        them); default ``range(K)``, one row per output. Stored as the buffer :attr:`classes` (LongTensor
        ``[K]``); it does not change the initial weights.
    """

    def __init__(self, in_channels: int, map_size: Sequence[int], n_classes: int, dense_features: int, *,
                 n_concepts: int = 10, embedding_dim: int = 32, hidden: Sequence[int] = (64,), seed: int = 0,
                 classes: Sequence[int] | None = None):
        super().__init__()
        d = check_positive_int(in_channels, "in_channels", hint=" (channels of the tapped feature map)")
        h, w = (check_positive_int(s, "map_size", hint=" (H, W of the tapped map)") for s in map_size)
        k = check_positive_int(n_classes, "n_classes")
        lat = check_positive_int(dense_features, "dense_features")
        c = check_positive_int(n_concepts, "C (n_concepts)", hint=": concepts per class, e.g. 10")
        q = check_positive_int(embedding_dim, "Q (embedding_dim)", hint=": the concept embedding's size, e.g. 32")
        widths = [check_positive_int(x, "hidden") for x in hidden]
        self.K, self.C, self.Q, self.D, self.H, self.W, self.L = k, c, q, d, h, w, lat
        gen = torch.Generator().manual_seed(int(seed))

        def uniform(*shape, fan_in):  # PyTorch's default Linear/Conv init, U(-1/sqrt(fan_in), 1/sqrt(fan_in))
            bound = 1.0 / fan_in ** 0.5
            return nn.Parameter((torch.rand(*shape, generator=gen) * 2 - 1) * bound)

        # map generator: K*C 1x1 filters theta^M_jk [D] and biases
        self.map_weight = uniform(k, c, d, fan_in=d)
        self.map_bias = uniform(k, c, fan_in=d)
        # embedding generator of each class: HW -> hidden (tanh) ... -> Q, shared by its C concepts
        dims = [h * w, *widths, q]
        self.embed_weights = nn.ParameterList([uniform(k, a, b, fan_in=a) for a, b in zip(dims[:-1], dims[1:])])
        self.embed_biases = nn.ParameterList([uniform(k, b, fan_in=a) for a, b in zip(dims[:-1], dims[1:])])
        # relevance estimator of each class: theta^R_k = [theta^R_1k .. theta^R_Ck], one output, and a bias
        self.rel_weight = uniform(k, c, q, fan_in=c * q)
        self.rel_bias = uniform(k, fan_in=c * q)
        # output generator: all K*C*Q embeddings -> z~ [L]
        self.out = nn.Linear(k * c * q, lat)
        with torch.no_grad():
            self.out.weight.copy_(uniform(lat, k * c * q, fan_in=k * c * q))
            self.out.bias.copy_(uniform(lat, fan_in=k * c * q))
        self.register_buffer("active", torch.ones(k, c, dtype=torch.bool))
        self.register_buffer("classes", _check_outputs(classes, k))

    # ---- which model output each row stands for ------------------------------------------------------------

    def rows(self, outputs, what: str = "label") -> torch.Tensor:
        """The rows of model output indices ``outputs [N]`` (labels, predicted classes): LongTensor ``[N]`` on
        :attr:`classes`' device; ``outputs`` itself when the unit has a row per output (the default).

        Raises
        ------
        ValueError
            An output index that is not among :attr:`classes` (the message names ``what``, e.g. ``"label"``).
        """
        y = torch.as_tensor(outputs).long().to(self.classes.device)
        hit = y[..., None] == self.classes                                       # [N, K]
        found = hit.any(-1)
        if not bool(found.all()):
            bad = sorted({int(v) for v in y[~found].tolist()})
            shown = self.classes.tolist()
            raise ValueError(
                f"{what}(s) {bad[:10]}{' ...' if len(bad) > 10 else ''} not among this MACE unit's classes "
                f"{shown[:20]}{' ...' if len(shown) > 20 else ''} (the model outputs its {self.K} rows stand for); "
                "give images of those classes only, or build the unit with classes= listing every output it must "
                "explain.")
        return hit.long().argmax(-1)

    # ---- the four modules -----------------------------------------------------------------------------

    def maps(self, x: torch.Tensor) -> torch.Tensor:
        """Concept maps ``c_jk = ReLU(x * theta^M_jk)`` for every class and concept: ``[B, K, C, H, W]``."""
        self._check_x(x)
        return F.relu(torch.einsum("bdhw,kcd->bkchw", x, self.map_weight) + self.map_bias[None, :, :, None, None])

    def embed(self, maps: torch.Tensor) -> torch.Tensor:
        """L2-normalised concept embeddings ``e_jk`` from concept maps ``[B, K, C, H, W]``: ``[B, K, C, Q]``."""
        e = maps.flatten(3)                                               # [B, K, C, HW]
        n = len(self.embed_weights)
        for i, (w, b) in enumerate(zip(self.embed_weights, self.embed_biases)):
            e = torch.einsum("bkcf,kfg->bkcg", e, w) + b[None, :, None, :]
            if i < n - 1:
                e = torch.tanh(e)
        return F.normalize(e, dim=-1)

    def relevance(self, e: torch.Tensor) -> torch.Tensor:
        """Concept relevances ``r_jk = theta^R_jk . e_jk``: ``[B, K, C]`` (pruned concepts 0)."""
        return torch.einsum("bkcq,kcq->bkc", e, self.rel_weight) * self.active

    def class_probability(self, r: torch.Tensor) -> torch.Tensor:
        """``sigma(sum_j r_jk + b_k)``, the relevance estimator's estimate of ``f_k``: ``[B, K]``."""
        return torch.sigmoid(self.logit(r))

    def logit(self, r: torch.Tensor) -> torch.Tensor:
        """``sum_j r_jk + b_k`` (the sigmoid's argument): ``[B, K]``."""
        return r.sum(-1) + self.rel_bias

    def output(self, e: torch.Tensor) -> torch.Tensor:
        """``z~`` from all embeddings (pruned ones zeroed): ``[B, L]``."""
        return self.out((e * self.active[None, :, :, None]).flatten(1))

    def forward(self, x: torch.Tensor, z_tilde: bool = True) -> dict[str, torch.Tensor]:
        """All of MACE on a tapped map ``x [B, D, H, W]``: ``maps``, ``embeddings``, ``relevance``, ``logit``
        (of the relevance estimators) and ``z_tilde`` (the output generator's, needed by the losses only: an
        explanation skips it with ``z_tilde=False``)."""
        maps = self.maps(x)
        e = self.embed(maps)
        r = self.relevance(e)
        out = {"maps": maps, "embeddings": e, "relevance": r, "logit": self.logit(r)}
        if z_tilde:
            out["z_tilde"] = self.output(e)
        return out

    def _check_x(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or tuple(x.shape[1:]) != (self.D, self.H, self.W):
            raise ValueError(f"MACE was built for tapped maps [B, {self.D}, {self.H}, {self.W}], got "
                             f"{tuple(x.shape)}; build it for this tap point with MACE.for_model(...).")

    @classmethod
    def for_model(cls, model: nn.Module, point: TapPoint, images: torch.Tensor, classes: Sequence[int] | None = None,
                  **kwargs) -> MACE:
        """A MACE unit sized for ``model`` at ``point``, from one forward pass on ``images`` (a few suffice);
        checks that the tail reproduces the model's scores. ``classes``: the model outputs its rows stand for
        (default all outputs, ``K`` = their number); ValueError for an index the model does not have."""
        t = tap(model, point, images[:2], check_tail=True)
        _, d, h, w = t.x.shape
        n_out = t.logits.shape[1]
        if classes is None:
            return cls(d, (h, w), n_out, t.z.shape[1], **kwargs).to(t.x.device)
        chosen = _check_outputs(classes, None)
        if int(chosen.max()) >= n_out:
            raise ValueError(f"classes {[c for c in chosen.tolist() if c >= n_out]} are not outputs of the model, "
                             f"which has {n_out} (indices 0..{n_out - 1}).")
        return cls(d, (h, w), len(chosen), t.z.shape[1], classes=chosen.tolist(), **kwargs).to(t.x.device)

    def extra_repr(self) -> str:
        k = self.classes.tolist()
        which = "" if k == list(range(self.K)) else f" (outputs {k[:10]}{' ...' if len(k) > 10 else ''})"
        return (f"K={self.K}{which}, C={self.C}, Q={self.Q}, tapped [{self.D}, {self.H}, {self.W}], L={self.L}, "
                f"active {int(self.active.sum())}/{self.K * self.C}")


def _check_outputs(classes, k: int | None) -> torch.Tensor:
    """``classes`` as LongTensor ``[K]`` (``arange(k)`` when None): distinct non-negative ints, ``k`` of them."""
    if classes is None:
        return torch.arange(k)
    if isinstance(classes, torch.Tensor):
        classes = classes.flatten().tolist()
    items = [classes] if isinstance(classes, numbers.Integral) else list(classes)
    if not items or any(isinstance(c, bool) or not isinstance(c, numbers.Integral) or c < 0 for c in items):
        raise ValueError(f"classes must be a non-empty list of model output indices (ints >= 0), got {classes!r}.")
    items = [int(c) for c in items]
    if len(set(items)) != len(items):
        twice = sorted({c for c in items if items.count(c) > 1})
        raise ValueError(f"classes must be distinct: {items} repeats {twice}.")
    if k is not None and len(items) != k:
        raise ValueError(f"classes names {len(items)} outputs for n_classes={k} rows; give one output per row.")
    return torch.tensor(items, dtype=torch.long)
