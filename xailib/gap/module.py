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

Implementation: :class:`GAP` is the fast path (batched over decisions, chunked under a memory cap,
running only the network segment between the two layers when the model has ``run_segment``, and
there, for neuron decisions, only on a crop of the lower map that holds the decision's receptive
field -- exact, see :mod:`xailib.gap.receptive`);
:func:`gap_reference` is the slow literal reference (one full forward, then Python loops over
channels and positions, written equation by equation) that the tests hold the fast path to.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from xailib.layers import capture, check_layers, get_layer, model_state, replace_output
from xailib.gap.receptive import (
    DEFAULT_MAX_AREA_FRACTION,
    SegmentRF,
    crop_windows,
    segment_receptive_field,
    uncrop,
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
    "stop_after",
    "crop_field",
    "cropped_gradients",
]

STRATEGIES = ("AA", "MA", "AG", "MG")
DEFAULT_MAX_BATCH_BYTES = 1 << 30  # 1 GiB of saved activations per chunk


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
    strategy = _check_strategy(strategy)
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


def _check_strategy(strategy: str) -> str:
    if not isinstance(strategy, str) or strategy.upper() not in STRATEGIES:
        raise ValueError(
            f"Unknown strategy {strategy!r}. Use one of {STRATEGIES}: AA average activation (Eq. 4), "
            "MA max activation, AG average gradient, MG max gradient."
        )
    return strategy.upper()


# --------------------------------------------------------------------------------------------------
# Model plumbing: early stop, segments, chunking under a memory cap
# --------------------------------------------------------------------------------------------------


class _StopForward(Exception):
    """Raised by :class:`stop_after` to end a forward pass once the needed layer has run."""


class stop_after:
    """End the forward pass right after ``layer`` has run, for the duration of a block.

    Wrap the model call in :meth:`run`; the layers after ``layer`` are then never computed. With
    ``layer=None`` nothing is changed. Hooks registered earlier on the same module (e.g. by
    :class:`xailib.layers.capture`) run before the stop.

    Examples
    --------
    >>> with capture(model, "stage2", detach=True) as rec, stop_after(model, "stage2") as stop:
    ...     stop.run(x)
    """

    def __init__(self, model: nn.Module, layer: str | None):
        self.model = model
        self.module = None if layer is None else get_layer(model, layer)
        self._handle = None

    @staticmethod
    def _hook(module, inputs, output):
        raise _StopForward

    def __enter__(self) -> stop_after:
        if self.module is not None:
            self._handle = self.module.register_forward_hook(self._hook)
        return self

    def run(self, *args, **kwargs):
        """``model(*args, **kwargs)``; returns its output, or ``None`` when stopped early."""
        try:
            return self.model(*args, **kwargs)
        except _StopForward:
            return None

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


def _stage_names(model: nn.Module) -> list[str] | None:
    names = getattr(model, "stage_names", None)
    return list(names) if names is not None else None


def _segment_available(model: nn.Module, lower: str | None, upper: str | None) -> bool:
    """Whether ``model.run_segment`` can map ``lower`` to ``upper`` (``None`` upper = logits)."""
    stages = _stage_names(model)
    if not hasattr(model, "run_segment") or stages is None or lower is None:
        return False
    return lower in stages and (upper is None or upper in stages)


def _use_segment(model: nn.Module, lower: str | None, upper: str | None, use_segment: bool | str) -> bool:
    if use_segment not in ("auto", True, False):
        raise ValueError(f"use_segment must be 'auto', True or False, got {use_segment!r}.")
    ok = _segment_available(model, lower, upper)
    if use_segment is True and not ok:
        raise ValueError(
            f"use_segment=True needs model.run_segment and both layers in model.stage_names "
            f"(got lower={lower!r}, upper={upper!r}, stage_names={_stage_names(model)}). Use use_segment='auto'."
        )
    return ok if use_segment == "auto" else bool(use_segment)


def check_order(model: nn.Module, lower: str | None, upper: str | None) -> None:
    """Raise ``ValueError`` if ``lower`` is known (from ``model.stage_names``) not to lie below ``upper``."""
    if lower is not None and lower == upper:
        raise ValueError(f"The lower layer {lower!r} is the decision's own layer; choose a layer below it.")
    stages = _stage_names(model)
    if stages and lower in stages and upper in stages and stages.index(lower) > stages.index(upper):
        raise ValueError(
            f"Layer {lower!r} is not below the decision layer {upper!r}: in model.stage_names "
            f"{stages} it comes after it. Choose a lower layer."
        )


def _not_below(lower: str | None, upper: str | None) -> ValueError:
    what = "the class scores" if upper is None else f"the decision layer {upper!r}"
    return ValueError(
        f"Layer {lower!r} is not below {what}: the decision does not depend on it in the forward pass "
        "(it runs after it, or in a branch that does not feed it). Choose a layer that feeds the decision."
    )


class _SavedBytes:
    """Count the bytes autograd saves for backward (parameters excluded) inside a block."""

    def __init__(self, model: nn.Module):
        self.param_ptrs = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self.bytes = 0
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def _pack(self, t: torch.Tensor):
        if t.untyped_storage().data_ptr() not in self.param_ptrs:
            self.bytes += t.numel() * t.element_size()
        return t

    def __enter__(self):
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)


def _chunked(
    n: int,
    run: Callable[[slice], list[torch.Tensor]],
    model: nn.Module,
    max_batch_bytes: int | None,
    item_bytes: int = 0,
    progress: bool = False,
    desc: str = "gAP",
) -> list[torch.Tensor]:
    """Run ``run(slice)`` over ``range(n)`` in chunks; concatenate each returned tensor along dim 0.

    With ``max_batch_bytes=None`` everything goes in one chunk. Otherwise the first chunk holds one
    item, the bytes autograd saves for it (plus ``item_bytes``) are measured, and the remaining items
    go in chunks of ``max(1, max_batch_bytes // bytes_per_item)``.
    """
    if max_batch_bytes is not None and (not isinstance(max_batch_bytes, int) or max_batch_bytes <= 0):
        raise ValueError(f"max_batch_bytes must be a positive int (bytes) or None, got {max_batch_bytes!r}.")
    parts: list[list[torch.Tensor]] = []
    start = 0
    size = n if max_batch_bytes is None else 1
    bar = tqdm(total=n, desc=desc, leave=False) if progress else None  # a disabled tqdm still costs ~0.1 ms
    try:
        while start < n:
            sl = slice(start, min(n, start + size))
            if max_batch_bytes is not None and start == 0:
                with _SavedBytes(model) as meter:
                    parts.append(run(sl))
                size = max(1, max_batch_bytes // max(1, meter.bytes + item_bytes))
            else:
                parts.append(run(sl))
            if bar is not None:
                bar.update(sl.stop - sl.start)
            start = sl.stop
    finally:
        if bar is not None:
            bar.close()
    if len(parts) == 1:
        return [t.contiguous() for t in parts[0]]  # as torch.cat would give (expanded views become copies)
    return [torch.cat(p, dim=0) for p in zip(*parts)]


def select_decisions(
    out: torch.Tensor, channels: torch.Tensor, positions: torch.Tensor | None, upper: str | None
) -> torch.Tensor:
    """Pick decision ``d`` from row ``d`` of ``out``: ``out[d, channels[d], y_d, x_d]`` -> ``[D]``.

    ``out`` is ``[D, C]`` (class scores, or a flat layer; ``positions`` must be ``None``) or
    ``[D, K, h, w]`` (``positions: [D, 2]`` as (y, x)). Indices outside the map raise ``ValueError``.
    """
    what = "the model output (class scores)" if upper is None else f"layer {upper!r}"
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"{what} must be a tensor, got {type(out).__name__}.")
    ar = torch.arange(out.shape[0], device=out.device)
    ch = channels.to(out.device)
    if positions is None:
        if out.dim() != 2:
            raise ValueError(
                f"{what} has per-image shape {tuple(out.shape[1:])}; a decision there needs a position: "
                "use Neuron(layer, channel, y, x)."
            )
        if int(ch.max()) >= out.shape[1]:
            kind = "Class" if upper is None else "Neuron channel"
            raise ValueError(f"{kind} index {int(ch.max())} is outside {what} with {out.shape[1]} entries; "
                             f"valid indices are 0..{out.shape[1] - 1}.")
        return out[ar, ch]
    if out.dim() != 4:
        raise ValueError(
            f"{what} has per-image shape {tuple(out.shape[1:])}, not [K, h, w]; use Neuron(layer, channel) "
            "without y and x for a flat layer."
        )
    pos = positions.to(out.device)
    k, h, w = out.shape[1:]
    bad = (ch >= k) | (pos[:, 0] >= h) | (pos[:, 1] >= w)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"Neuron (channel={int(ch[i])}, y={int(pos[i, 0])}, x={int(pos[i, 1])}) is outside {what} "
            f"with output shape [K={k}, h={h}, w={w}]; valid: channel 0..{k - 1}, y 0..{h - 1}, x 0..{w - 1}."
        )
    return out[ar, ch, pos[:, 0], pos[:, 1]]


def layer_outputs(
    model: nn.Module, inputs: torch.Tensor, layers: Sequence[str], stop: str | None = None
) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """Detached outputs ``{name: [B, ...]}`` of ``layers`` and the logits (``None`` if stopped early).

    ``stop`` ends the forward pass after that layer (see :class:`stop_after`). Call inside
    ``model_state(model, train=False)``.
    """
    layers = check_layers(model, layers)
    with torch.no_grad(), capture(model, layers, detach=True) as rec, stop_after(model, stop) as stopper:
        logits = stopper.run(inputs)
    missing = [n for n in layers if not rec.outputs[n]]
    if missing:
        raise ValueError(
            f"Layers {missing} did not run before {stop!r} in the forward pass; a lower layer must run "
            "before the decision layer."
        )
    return {n: rec[n] for n in layers}, logits


def map_output(model: nn.Module, layer: str, fn: Callable[[torch.Tensor], torch.Tensor]) -> replace_output:
    """Replace ``layer``'s output by ``fn(output)`` for a block, letting the batch size change
    (``[1, ...]`` -> ``[n, ...]``): :class:`xailib.layers.replace_output` with ``same_shape=False``.
    Its ``calls`` counts how often the layer ran (0 means the forward never reached it).
    """
    return replace_output(model, layer, fn, same_shape=False)


class _leaf_at:
    """Replace ``layer``'s output by a fresh leaf tensor (optionally expanded to ``rows`` rows) for a block.

    Yields the list of leaves made (one per call of the layer). Downstream modules get a clone, so
    in-place operations after the layer leave the leaf intact; no graph is built below the layer.
    """

    def __init__(self, model: nn.Module, layer: str, rows: int | None = None):
        self.module = get_layer(model, layer)
        self.rows = rows
        self.leaves: list[torch.Tensor] = []
        self._handle = None

    def _hook(self, module, inputs, output):
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"{type(module).__name__} returns {type(output).__name__}, not a tensor; choose a "
                            "layer whose output is one tensor (a conv, a ReLU, a block).")
        src = output.detach()
        if self.rows is not None:
            src = src.expand(self.rows, *src.shape[1:])
        leaf = src.clone().requires_grad_(True)
        self.leaves.append(leaf)
        return leaf.clone()

    def __enter__(self) -> list[torch.Tensor]:
        self._handle = self.module.register_forward_hook(self._hook)
        return self.leaves

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


def _batched_vjp(
    out: torch.Tensor, leaf: torch.Tensor, channels: torch.Tensor, positions: torch.Tensor | None, upper: str | None,
    lower: str | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients ``[D, K, h, w]`` of ``D`` decisions in ``out: [1, ...]`` w.r.t. ``leaf: [1, K, h, w]``.

    One backward with a batch of one-hot ``grad_outputs`` (``is_grads_batched``, i.e. vmap over the
    backward pass). Also returns the decision values ``[D]``. Raises ``_not_below`` if ``out`` does
    not depend on ``leaf``.
    """
    n = int(channels.shape[0])
    scores = select_decisions(out.expand(n, *out.shape[1:]), channels, positions, upper).detach()
    if not out.requires_grad:
        raise _not_below(lower, upper)
    onehot = torch.zeros((n,) + tuple(out.shape), dtype=out.dtype, device=out.device)
    rows = torch.arange(n, device=out.device)
    index = (rows, torch.zeros_like(rows), channels.to(out.device))
    if positions is not None:
        index += (positions[:, 0].to(out.device), positions[:, 1].to(out.device))
    onehot[index] = 1.0
    (g,) = torch.autograd.grad(out, leaf, grad_outputs=onehot, is_grads_batched=True, allow_unused=True)
    if g is None:
        raise _not_below(lower, upper)
    return g[:, 0], scores


def _check_crop(crop) -> None:
    if crop not in ("auto", True, False):
        raise ValueError(f"crop must be 'auto', True or False, got {crop!r}.")


def crop_field(
    model: nn.Module, lower: str | None, upper: str | None, positions: torch.Tensor | None,
    lower_acts: torch.Tensor | None, crop: bool | str, segment: bool,
) -> SegmentRF | None:
    """The receptive field to crop with for decisions at ``positions`` of ``upper``, or ``None`` for the full map.

    ``crop="auto"`` crops when the segment path is used, the decisions are neurons of a feature map,
    their receptive fields in ``lower`` are known exactly (:func:`xailib.gap.receptive.segment_receptive_field`)
    and one crop covers at most :data:`~xailib.gap.receptive.DEFAULT_MAX_AREA_FRACTION` of the map.
    ``crop=True`` is the same but raises ``ValueError`` where exact receptive fields are not available
    (no ``run_segment`` for the two layers, or the probe/check failed); decisions whose receptive field
    is (nearly) the whole map, such as class scores, use the full map under both settings.
    """
    _check_crop(crop)
    if crop is False:
        return None
    why = ""
    if not segment or lower_acts is None:
        why = (f"crops need model.run_segment and both layers in model.stage_names (lower={lower!r}, "
               f"upper={upper!r}) and use_segment not False")
    elif upper is None or positions is None or lower_acts.dim() != 4:
        return None  # a class score or a flat layer: its receptive field is the whole map
    else:
        try:
            rf = segment_receptive_field(model, lower, upper, tuple(lower_acts.shape[1:]),
                                         dtype=lower_acts.dtype, device=lower_acts.device)
        except ValueError as exc:
            rf, why = None, str(exc)
        if rf is not None:
            if not rf.exact:
                why = f"the receptive fields of {upper!r} in {lower!r} are not exact: {rf.reason}"
            else:
                h, w = rf.out_size
                if bool((positions[:, 0] >= h).any() | (positions[:, 1] >= w).any()):
                    return None  # the full path raises the error that lists the valid positions
                return rf if rf.area_fraction <= DEFAULT_MAX_AREA_FRACTION else None
    if crop is True:
        raise ValueError(f"crop=True: {why}. Use crop='auto' (crops where exact) or crop=False.")
    return None


def cropped_gradients(
    model: nn.Module,
    lower_acts: torch.Tensor,
    lower: str,
    upper: str,
    channels: torch.Tensor,
    positions: torch.Tensor,
    image_index: torch.Tensor,
    rf: SegmentRF,
    max_batch_bytes: int | None = DEFAULT_MAX_BATCH_BYTES,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eq. (2) on crops: the segment ``lower -> upper`` runs on one crop of the lower map per decision.

    Decision ``d`` is ``F^{upper}[image_index[d], channels[d], positions[d]]``; its crop (size
    ``rf.crop_size``, origin ``offsets[d]``) contains its receptive field, so its gradient is zero
    outside the crop and equal to the full-map gradient inside.

    Parameters
    ----------
    lower_acts : Tensor ``[B, K, H, W]``
    channels : LongTensor ``[D]``
    positions : LongTensor ``[D, 2]``
        (y, x) in the ``upper`` map.
    image_index : LongTensor ``[D]``
    rf : SegmentRF
        From :func:`crop_field`.

    Returns
    -------
    gradients : Tensor ``[D, K, c_h, c_w]``
    features : Tensor ``[D, K, c_h, c_w]``
    scores : Tensor ``[D]``
    offsets : LongTensor ``[D, 2]``
        Crop origins in the lower map (:func:`xailib.gap.receptive.uncrop` puts the crops back).

    Must run inside ``model_state(model, train=False, requires_grad=False)``.
    """
    offsets = rf.offsets(positions)
    local = rf.local_positions(positions, offsets)

    def run(sl: slice) -> list[torch.Tensor]:
        x = crop_windows(lower_acts, image_index[sl], offsets[sl], rf.crop_size).requires_grad_(True)
        with torch.enable_grad():
            out = model.run_segment(x, start=lower, stop=upper)
            scores = select_decisions(out, channels[sl], local[sl], upper)
            (g,) = torch.autograd.grad(scores.sum(), x)
        return [g, x.detach(), scores.detach()]

    item = lower_acts.shape[1] * rf.crop_size[0] * rf.crop_size[1] * lower_acts.element_size() * 2
    g, f, s = _chunked(int(channels.shape[0]), run, model, max_batch_bytes, item, progress,
                       desc=f"gAP {upper}->{lower} (crops)")
    return g, f, s, offsets.to(g.device)


def decision_gradients(
    model: nn.Module,
    inputs: torch.Tensor,
    lower: str | None,
    upper: str | None,
    channels: torch.Tensor,
    positions: torch.Tensor | None,
    image_index: torch.Tensor,
    lower_acts: torch.Tensor | None = None,
    use_segment: bool | str = "auto",
    max_batch_bytes: int | None = DEFAULT_MAX_BATCH_BYTES,
    progress: bool = False,
    crop: bool | str = "auto",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eq. (2) for ``D`` decisions at once: gradients of each decision w.r.t. the lower layer.

    Decision ``d`` is ``F^{upper}[image_index[d], channels[d], positions[d]]`` (class score
    ``channels[d]`` when ``upper is None``). The decisions are batched: the lower features of each
    decision's image are stacked into ``[D, K, h, w]``, the segment up to ``upper`` is run once on the
    stack, and one backward of ``sum_d score_d`` gives all ``D`` gradient maps (rows are independent
    because the model runs in eval mode). Chunks respect ``max_batch_bytes``.

    The segment is ``model.run_segment(acts, start=lower, stop=upper)`` when available (and
    ``use_segment`` allows), else a forward from the input that substitutes the lower layer's output
    by a leaf tensor (so no graph is built below it) and stops after ``upper``.

    Parameters
    ----------
    inputs : Tensor ``[B, C, H, W]``
    lower : str or None
        Lower layer; ``None`` means the data layer (the input itself).
    upper : str or None
        Decision layer; ``None`` means the model output (class scores).
    channels : LongTensor ``[D]``
    positions : LongTensor ``[D, 2]`` or None
    image_index : LongTensor ``[D]``
        Which image of ``inputs`` each decision belongs to.
    lower_acts : Tensor ``[B, K, h, w]``, optional
        Precomputed lower features (saves a forward on the segment path).
    crop : {"auto", True, False}
        Run the segment on crops that contain each decision's receptive field (see :func:`crop_field`,
        :func:`cropped_gradients`); the crop gradients are put back into zero maps, so the result is
        the same.

    Returns
    -------
    gradients : Tensor ``[D, K, h, w]``
    features : Tensor ``[D, K, h, w]``
    scores : Tensor ``[D]``

    Must run inside ``model_state(model, train=False, requires_grad=False)``.
    """
    n = int(channels.shape[0])
    _check_crop(crop)
    segment = _use_segment(model, lower, upper, use_segment)
    if not segment:
        crop_field(model, lower, upper, positions, None, crop, segment)  # raises for crop=True
    if segment:
        if lower_acts is None:
            acts, _ = layer_outputs(model, inputs, [lower], stop=lower)
            lower_acts = acts[lower]
        rf = crop_field(model, lower, upper, positions, lower_acts, crop, segment)
        if rf is not None:
            g, _, scores, offsets = cropped_gradients(model, lower_acts, lower, upper, channels, positions,
                                                      image_index, rf, max_batch_bytes, progress)
            return uncrop(g, offsets, rf.in_size), lower_acts[image_index.to(lower_acts.device)], scores

        state = {"vjp": lower_acts.shape[0] == 1}

        def run(sl: slice) -> list[torch.Tensor]:
            rows = sl.stop - sl.start
            pos = None if positions is None else positions[sl]
            if state["vjp"] and rows > 1:
                # One image: run the segment once, then one batched vector-Jacobian product.
                x = lower_acts[:1].detach().clone().requires_grad_(True)
                with torch.enable_grad():
                    out = model.run_segment(x, start=lower, stop=upper)
                    try:
                        g, scores = _batched_vjp(out, x, channels[sl], pos, upper, lower)
                    except RuntimeError:  # an op without a vmap rule: repeat the features instead
                        state["vjp"] = False
                    else:
                        return [g, x.detach().expand_as(g), scores]
            x = lower_acts[image_index[sl]].detach().clone().requires_grad_(True)
            with torch.enable_grad():
                out = model.run_segment(x, start=lower, stop=upper)
                scores = select_decisions(out, channels[sl], pos, upper)
                (g,) = torch.autograd.grad(scores.sum(), x)
            return [g, x.detach(), scores.detach()]

        item = lower_acts[:1].numel() * lower_acts.element_size() * 2
    else:
        # One image: run the prefix once per chunk and expand the lower layer's output to the chunk's
        # rows (tensors from before the layer broadcast, which is exact since every row is the same
        # image). If the network mixes rows in a way that cannot broadcast (e.g. torch.cat of a
        # branch before the layer with one after it), fall back to repeating the input image.
        state = {"expand": inputs.shape[0] == 1 and lower is not None, "vjp": inputs.shape[0] == 1}

        def attempt_vjp(sl: slice) -> list[torch.Tensor]:
            """One image: forward once (batch 1), then one batched vector-Jacobian product for the chunk."""
            with ExitStack() as stack, torch.enable_grad():
                if lower is None:
                    x = inputs.detach().clone().requires_grad_(True)
                    leaves = [x]
                else:
                    x = inputs
                    leaves = stack.enter_context(_leaf_at(model, lower, None))
                rec = stack.enter_context(capture(model, upper)) if upper is not None else None
                logits = stack.enter_context(stop_after(model, upper)).run(x)
                if len(leaves) != 1:
                    raise _not_below(lower, upper) if not leaves else ValueError(
                        f"Layer {lower!r} ran {len(leaves)} times in one forward pass (a reused module); "
                        "choose a module that runs once, e.g. the block that contains it.")
                out = logits if upper is None else rec[upper]
                g, scores = _batched_vjp(out, leaves[0], channels[sl], None if positions is None else positions[sl],
                                         upper, lower)
            return [g, leaves[0].detach().expand_as(g), scores]

        def attempt(sl: slice, expand: bool) -> list[torch.Tensor]:
            rows = sl.stop - sl.start
            x = inputs if expand else inputs[image_index[sl]]
            with ExitStack() as stack, torch.enable_grad():
                if lower is None:
                    x = x.detach().clone().requires_grad_(True)
                    leaves = [x]
                else:
                    leaves = stack.enter_context(_leaf_at(model, lower, rows if expand else None))
                rec = stack.enter_context(capture(model, upper)) if upper is not None else None
                stopper = stack.enter_context(stop_after(model, upper))
                logits = stopper.run(x)
                if not leaves:
                    raise _not_below(lower, upper)
                if len(leaves) > 1:
                    raise ValueError(
                        f"Layer {lower!r} ran {len(leaves)} times in one forward pass (a reused module); "
                        "choose a module that runs once, e.g. the block that contains it."
                    )
                out = logits if upper is None else rec[upper]
                scores = select_decisions(out, channels[sl], None if positions is None else positions[sl], upper)
                if not scores.requires_grad:
                    raise _not_below(lower, upper)
                (g,) = torch.autograd.grad(scores.sum(), leaves[0], allow_unused=True)
                if g is None:
                    raise _not_below(lower, upper)
            return [g, leaves[0].detach(), scores.detach()]

        def run(sl: slice) -> list[torch.Tensor]:
            if state["vjp"] and sl.stop - sl.start > 1:
                try:
                    return attempt_vjp(sl)
                except RuntimeError:  # no vmap rule for some op: fall back to expanded rows
                    state["vjp"] = False
            if state["expand"] and sl.stop - sl.start > 1:
                try:
                    return attempt(sl, expand=True)
                except RuntimeError:  # rows could not broadcast; a layer that raises will raise again below
                    state["expand"] = False
            return attempt(sl, expand=False)

        item = inputs[:1].numel() * inputs.element_size() * 2
    g, f, s = _chunked(n, run, model, max_batch_bytes, item, progress, desc=f"gAP {upper or 'output'}->{lower}")
    return g, f, s


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
    if isinstance(target, torch.Tensor):
        if target.dim() == 0:
            target = int(target)
        elif target.dim() == 1 and not target.is_floating_point():
            target = [int(t) for t in target]
        else:
            raise TypeError(f"A tensor target must hold integer class indices [B], got {tuple(target.shape)} "
                            f"{target.dtype}.")
    if isinstance(target, bool):
        raise TypeError("target must be a class index, a Neuron, or a list of them; got a bool.")
    if isinstance(target, int):
        target = [target] * batch
    if not isinstance(target, Sequence) or isinstance(target, str):
        raise TypeError(
            f"target must be a class index (int), a list of B class indices, a Neuron(layer, channel, y, x) "
            f"or a list of B Neurons; got {type(target).__name__}."
        )
    if len(target) != batch:
        raise ValueError(f"Got {len(target)} targets for a batch of {batch} images; give one per image.")
    if all(isinstance(t, Neuron) for t in target):
        layers = {t.layer for t in target}
        if len(layers) != 1:
            raise ValueError(f"All Neuron targets of one call must be in one layer; got {sorted(layers)}.")
        has_pos = {t.y is not None for t in target}
        if len(has_pos) != 1:
            raise ValueError("Give y and x for all Neuron targets of one call, or for none.")
        channels = torch.tensor([t.channel for t in target], dtype=torch.long)
        positions = torch.tensor([[t.y, t.x] for t in target], dtype=torch.long) if has_pos.pop() else None
        return layers.pop(), channels, positions
    if all(isinstance(t, int) and not isinstance(t, bool) for t in target):
        if any(t < 0 for t in target):
            raise ValueError(f"Class indices must be non-negative, got {list(target)}.")
        return None, torch.tensor(list(target), dtype=torch.long), None
    raise TypeError("target must be class indices (ints) or Neurons, not a mix; got "
                    f"{[type(t).__name__ for t in target]}.")


def check_images(inputs, one: bool = False, what: str = "inputs") -> torch.Tensor:
    """Validate an image tensor ``[B, C, H, W]``; with ``one=True`` also accept ``[C, H, W]`` and require B = 1."""
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor [B, C, H, W], got {type(inputs).__name__}.")
    if one and inputs.dim() == 3:
        inputs = inputs.unsqueeze(0)
    if inputs.dim() != 4 or not inputs.is_floating_point():
        raise ValueError(f"{what} must be a float tensor [B, C, H, W], got {tuple(inputs.shape)} {inputs.dtype}.")
    if one and inputs.shape[0] != 1:
        raise ValueError(
            f"{what} must hold one image [1, C, H, W] (this explains one image at a time), got a batch of "
            f"{inputs.shape[0]}: {tuple(inputs.shape)}. Pass image[i:i+1], or loop over images."
        )
    return inputs


def _model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


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
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
        _check_crop(crop)
        self.model = model
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
        strategy = _check_strategy(strategy)
        inputs = check_images(inputs)
        check_layers(self.model, layer)
        upper, channels, positions = parse_targets(target, inputs.shape[0])
        if upper is not None:
            check_layers(self.model, upper)
        check_order(self.model, layer, upper)
        inputs = inputs.to(_model_device(self.model))
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
    strategy = _check_strategy(strategy)
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
