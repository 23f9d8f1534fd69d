"""The gAP module: gradient-based Activation Propagation (Sec. 3.1, Eqs. 2-5).

Paper: "Deeply Explain CNN via Hierarchical Decomposition" (gAP). A *decision of interest* is one
scalar of the network: a class score before softmax, or one neuron ``F^{l+1}_{k',y,x}`` of an upper
layer. For a lower layer ``l`` with features ``F^l: [K, h, w]`` the module computes

* Eq. (2)  gradient maps    ``G^l_k = dF^{l+1}_{k',y,x} / dF^l_k``             (``gradients``)
* Eq. (3)  activation maps  ``A^l_k = G^l_k * F^l_k``                           (``activation_maps``)
* Eq. (4)  contributions    ``alpha^l_k = 1/Z sum_{x,y} A^l_{k,x,y}``, Z = h*w  (strategy ``"AA"``)
* Eq. (5)  peak             ``(y^, x^) = argmax_{x,y} A^l_{k,x,y}``             (``peaks``, as (y, x))

Table 1 of the paper compares four ways to score a channel; all four are here (:data:`STRATEGIES`):
``AA`` average activation (Eq. 4), ``MA`` max activation, ``AG`` average gradient, ``MG`` max gradient.

Implementation: :class:`GAP` is the fast path; its Eq. (2) comes from the batched engine
:func:`xailib.gap.gradients.decision_gradients` (batched over decisions, chunked under a memory cap,
running only the network segment between the two layers when the model has ``run_segment``, and
there, for neuron decisions, only on a crop of the lower map that holds the decision's receptive
field -- exact, see :mod:`xailib.gap.receptive`);
:func:`gap_reference` is the slow literal reference (one full forward, then Python loops over
channels and positions, written equation by equation) that the tests hold the fast path to.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from xailib.checks import check_images, check_layer, check_model, check_targets
from xailib.layers import capture, model_state
from xailib.gap.gradients import (
    DEFAULT_MAX_BATCH_BYTES,
    check_crop,
    check_order,
    decision_gradients,
    select_decisions,
)

__all__ = [
    "STRATEGIES",
    "Neuron",
    "GAPResult",
    "GAP",
    "gap_reference",
    "activation_maps",
    "channel_contributions",
    "peak_positions",
    "check_strategy",
    "parse_targets",
]

STRATEGIES = ("AA", "MA", "AG", "MG")


# --------------------------------------------------------------------------------------------------
# Decisions
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Neuron:
    """A decision of interest inside the network: ``F^{layer}_{channel, y, x}``.

    Parameters
    ----------
    layer : str
        Dotted name of the upper layer (see :func:`xailib.layers.named_layers`).
    channel : int
        Channel ``k'`` of that layer.
    y, x : int or None
        Spatial position (row, column) in the layer's ``[K, h, w]`` output; leave both ``None`` for a
        layer with a flat ``[K]`` output (e.g. a linear layer).
    """

    layer: str
    channel: int
    y: int | None = None
    x: int | None = None

    def __post_init__(self):
        if not isinstance(self.layer, str):
            raise TypeError(f"Neuron.layer must be a dotted layer name (str), got {self.layer!r}.")
        for name in ("channel", "y", "x"):
            v = getattr(self, name)
            if v is None and name != "channel":
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"Neuron.{name} must be a non-negative int, got {v!r}.")
        if (self.y is None) != (self.x is None):
            raise ValueError("Give both Neuron.y and Neuron.x (a position in a [K, h, w] map) or neither.")


@dataclass
class GAPResult:
    """What :meth:`GAP.attribute` returns for ``B`` decisions at a lower layer with ``K`` channels.

    Attributes
    ----------
    gradients : Tensor ``[B, K, h, w]``
        ``G^l`` (Eq. 2): gradient of each decision w.r.t. the lower layer's features.
    features : Tensor ``[B, K, h, w]``
        ``F^l``: the lower layer's features.
    activation_maps : Tensor ``[B, K, h, w]``
        ``A^l = G^l * F^l`` (Eq. 3).
    contributions : Tensor ``[B, K]``
        Channel contributions by ``strategy`` (``"AA"`` is Eq. 4).
    peaks : LongTensor ``[B, K, 2]``
        ``(y, x)`` of the maximum of each activation map (Eq. 5).
    scores : Tensor ``[B]``
        The decision values ``F^{l+1}_{k',y,x}`` (or class scores).
    strategy : str
    layer : str
    """

    gradients: torch.Tensor
    features: torch.Tensor
    activation_maps: torch.Tensor
    contributions: torch.Tensor
    peaks: torch.Tensor
    scores: torch.Tensor
    strategy: str
    layer: str


# --------------------------------------------------------------------------------------------------
# Eqs. 3-5 and the four strategies of Table 1 (tensor ops)
# --------------------------------------------------------------------------------------------------


def activation_maps(gradients: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """Eq. (3): ``A = G * F``; both ``[..., K, h, w]``, same shape out."""
    if gradients.shape != features.shape:
        raise ValueError(f"gradients {tuple(gradients.shape)} and features {tuple(features.shape)} must match.")
    return gradients * features


def channel_contributions(gradients: torch.Tensor, features: torch.Tensor, strategy: str = "AA") -> torch.Tensor:
    """Channel contributions ``[..., K]`` from ``G, F: [..., K, h, w]`` by one strategy of Table 1.

    ``"AA"`` average activation, Eq. (4): ``1/Z sum_{x,y} G*F``; ``"MA"`` max activation
    ``max_{x,y} G*F``; ``"AG"`` average gradient ``1/Z sum_{x,y} G``; ``"MG"`` max gradient
    ``max_{x,y} G``.
    """
    strategy = check_strategy(strategy)
    maps = activation_maps(gradients, features) if strategy in ("AA", "MA") else gradients
    flat = maps.flatten(-2)  # [..., K, Z]
    return flat.mean(-1) if strategy in ("AA", "AG") else flat.amax(-1)


def peak_positions(maps: torch.Tensor) -> torch.Tensor:
    """Eq. (5): ``(y, x)`` of the maximum of each map; ``[..., K, h, w]`` -> LongTensor ``[..., K, 2]``.

    Ties go to the first position in row-major order (``torch.argmax``).
    """
    w = maps.shape[-1]
    idx = maps.flatten(-2).argmax(-1)
    return torch.stack([idx // w, idx % w], dim=-1)


def check_strategy(strategy: str) -> str:
    """``strategy`` upper-cased if it is one of Table 1's :data:`STRATEGIES`; else ``ValueError``."""
    if not isinstance(strategy, str) or strategy.upper() not in STRATEGIES:
        raise ValueError(
            f"Unknown strategy {strategy!r}. Use one of {STRATEGIES}: AA average activation (Eq. 4), "
            "MA max activation, AG average gradient, MG max gradient."
        )
    return strategy.upper()


# --------------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------------


def parse_targets(target, batch: int) -> tuple[str | None, torch.Tensor, torch.Tensor | None]:
    """Turn a user target into ``(upper, channels [B], positions [B, 2] or None)``.

    ``target`` is a class index (int), a sequence / LongTensor of ``B`` class indices, a
    :class:`Neuron`, or a sequence of ``B`` Neurons of one layer.
    """
    if isinstance(target, Neuron):
        target = [target] * batch
    if isinstance(target, Sequence) and not isinstance(target, str) and target and \
            all(isinstance(t, Neuron) for t in target):
        if len(target) != batch:
            raise ValueError(f"Got {len(target)} targets for a batch of {batch} images; give one per image.")
        layers = {t.layer for t in target}
        if len(layers) != 1:
            raise ValueError(f"All Neuron targets of one call must be in one layer; got {sorted(layers)}.")
        has_pos = {t.y is not None for t in target}
        if len(has_pos) != 1:
            raise ValueError("Give y and x for all Neuron targets of one call, or for none.")
        channels = torch.tensor([t.channel for t in target], dtype=torch.long)
        positions = torch.tensor([[t.y, t.x] for t in target], dtype=torch.long) if has_pos.pop() else None
        return layers.pop(), channels, positions
    if isinstance(target, Sequence) and not isinstance(target, str) and any(isinstance(t, Neuron) for t in target):
        raise TypeError("target must be class indices (ints) or Neurons, not a mix; got "
                        f"{[type(t).__name__ for t in target]}.")
    return None, check_targets(target, batch, allow_predicted=False), None


# --------------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------------


class GAP:
    """Gradient-based Activation Propagation (Sec. 3.1, Eqs. 2-5), captum-style.

    Parameters
    ----------
    model : nn.Module
        Any CNN. Runs in eval mode during the call (BatchNorm statistics are not touched) and is
        restored afterwards. If it has ``run_segment(acts, start, stop)`` and ``stage_names``, only the
        segment between the two layers is run.
    use_segment : {"auto", True, False}
        ``False`` forces the full forward from the input.
    max_batch_bytes : int or None
        Memory cap (bytes saved for backward per chunk); ``None``: no chunking.
    progress : bool
        Show a tqdm bar over chunks.
    crop : {"auto", True, False}
        Run the segment only on a crop of the lower map that contains each decision's receptive field
        (exact; :mod:`xailib.gap.receptive`). ``"auto"``: where the model has ``run_segment`` and the
        receptive fields are exact and small; ``True`` raises where they are not available; models
        without ``run_segment`` (e.g. torchvision's) always use the full map.

    Examples
    --------
    >>> res = GAP(model).attribute(x, target=3, layer="stage5")            # class 3 -> stage 5
    >>> res = GAP(model).attribute(x, target=Neuron("stage5", 12, 1, 2), layer="stage4")
    >>> res.contributions.shape, res.peaks.shape                          # [B, K], [B, K, 2]
    """

    def __init__(
        self,
        model: nn.Module,
        use_segment: bool | str = "auto",
        max_batch_bytes: int | None = DEFAULT_MAX_BATCH_BYTES,
        progress: bool = False,
        crop: bool | str = "auto",
    ):
        self.model = check_model(model)
        check_crop(crop)
        self.use_segment = use_segment
        self.max_batch_bytes = max_batch_bytes
        self.progress = progress
        self.crop = crop

    def attribute(self, inputs: torch.Tensor, target, layer: str, strategy: str = "AA") -> GAPResult:
        """Decompose one decision per image onto ``layer``.

        Parameters
        ----------
        inputs : Tensor ``[B, C, H, W]``
        target : int, sequence of int, LongTensor ``[B]``, Neuron or sequence of Neuron
            Class score(s) before softmax, or neuron(s) ``F^{l+1}_{k',y,x}`` of an upper layer.
        layer : str
            The lower layer ``l`` (dotted name); must feed the decision.
        strategy : {"AA", "MA", "AG", "MG"}
            Channel contribution of Table 1; ``"AA"`` is Eq. (4).

        Returns
        -------
        GAPResult
            ``gradients``/``features``/``activation_maps`` ``[B, K, h, w]``, ``contributions`` ``[B, K]``,
            ``peaks`` ``[B, K, 2]`` (y, x), ``scores`` ``[B]``.
        """
        strategy = check_strategy(strategy)
        inputs = check_images(inputs, self.model)
        check_layer(self.model, layer)
        upper, channels, positions = parse_targets(target, inputs.shape[0])
        if upper is not None:
            check_layer(self.model, upper)
        check_order(self.model, layer, upper)
        with model_state(self.model, train=False, requires_grad=False):
            g, f, scores = decision_gradients(
                self.model, inputs, layer, upper, channels, positions,
                torch.arange(inputs.shape[0]), use_segment=self.use_segment,
                max_batch_bytes=self.max_batch_bytes, progress=self.progress, crop=self.crop,
            )
        if g.dim() != 4:
            raise ValueError(f"Layer {layer!r} has per-image shape {tuple(g.shape[1:])}; gAP needs a conv "
                             "feature map [K, h, w].")
        a = activation_maps(g, f)  # Eq. (3)
        return GAPResult(
            gradients=g, features=f, activation_maps=a,
            contributions=channel_contributions(g, f, strategy),  # Eq. (4) for "AA"
            peaks=peak_positions(a),  # Eq. (5)
            scores=scores, strategy=strategy, layer=layer,
        )


def gap_reference(model: nn.Module, image: torch.Tensor, target, layer: str, strategy: str = "AA") -> GAPResult:
    """Slow literal reference of Eqs. (2)-(5) for one image, one channel and one position at a time.

    One full forward from the input (no segments, no batching), the decision picked by plain indexing,
    one backward for Eq. (2), then Python loops over ``k, x, y`` for Eqs. (3)-(5) in float64.
    Only for tests and small layers.

    Parameters
    ----------
    image : Tensor ``[1, C, H, W]``
    target : int or Neuron
    layer : str
    strategy : {"AA", "MA", "AG", "MG"}

    Returns
    -------
    GAPResult with ``B = 1``.
    """
    strategy = check_strategy(strategy)
    check_model(model)
    image = check_images(image, one=True, what="image")
    if isinstance(target, Neuron):
        upper = target.layer
    elif isinstance(target, int) and not isinstance(target, bool):
        upper = None
    else:
        raise TypeError(f"target must be a class index or a Neuron, got {type(target).__name__}.")
    check_order(model, layer, upper)
    names = [layer] + ([upper] if upper is not None else [])
    with model_state(model, train=False), capture(model, names) as rec, torch.enable_grad():
        x = image.detach().clone().requires_grad_(True)
        logits = model(x)
        _, channels, positions = parse_targets(target, 1)
        decision = select_decisions(logits if upper is None else rec[upper], channels, positions, upper)[0]
        feats = rec[layer]
        (grads,) = torch.autograd.grad(decision, feats)  # Eq. (2)
    G, F = grads[0].double(), feats[0].detach().double()
    K, H, W = F.shape
    Z = H * W
    g_list, f_list = G.tolist(), F.tolist()  # plain Python floats for the literal loops
    A = [[[0.0] * W for _ in range(H)] for _ in range(K)]
    alpha, peaks = [], []
    for k in range(K):
        total_a, total_g = 0.0, 0.0
        max_a, max_g, arg = -math.inf, -math.inf, (0, 0)
        for y in range(H):
            for x_ in range(W):
                a = g_list[k][y][x_] * f_list[k][y][x_]  # Eq. (3)
                A[k][y][x_] = a
                total_a += a
                total_g += g_list[k][y][x_]
                if a > max_a:  # Eq. (5), the first maximum wins
                    max_a, arg = a, (y, x_)
                max_g = max(max_g, g_list[k][y][x_])
        alpha.append({"AA": total_a / Z, "MA": max_a, "AG": total_g / Z, "MG": max_g}[strategy])  # Eq. (4)
        peaks.append(arg)
    A = torch.tensor(A, dtype=torch.float64)
    alpha = torch.tensor(alpha, dtype=torch.float64)
    peaks = torch.tensor(peaks, dtype=torch.long)
    return GAPResult(
        gradients=G[None], features=F[None], activation_maps=A[None], contributions=alpha[None],
        peaks=peaks[None], scores=decision.detach().reshape(1).double(), strategy=strategy, layer=layer,
    )
