"""Eq. (2) of gAP for many decisions at once: the batched gradient engine under :class:`xailib.gap.GAP`.

Paper: "Deeply Explain CNN via Hierarchical Decomposition" (gAP), Sec. 3.1. Eq. (2) is the gradient
map ``G^l_k = dF^{l+1}_{k',y,x} / dF^l_k`` of a decision with respect to a lower layer. This module
computes it for ``D`` decisions in one go (:func:`decision_gradients`):

* running only the network segment between the two layers when the model has ``run_segment``;
* there, for neuron decisions, only on a crop of the lower map that holds the decision's receptive
  field (exact, :mod:`xailib.gap.receptive`; :func:`crop_field`, :func:`cropped_gradients`);
* elsewhere, a forward from the input whose lower layer is replaced by a leaf (no graph below it),
  stopped right after the decision layer (:class:`xailib.layers.leaf_at`, :class:`~xailib.layers.stop_after`);
* in chunks under a memory cap (:func:`xailib.batching.chunked`), each chunk computed the fastest way
  the model supports, chosen once (:class:`_DecisionBatches`).

:func:`select_decisions` picks the decisions out of a layer's output; :func:`check_order`,
:func:`segment_available` and :func:`resolve_segment` decide what can run.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack

import torch
from torch import nn

from xailib.batching import DEFAULT_MAX_BATCH_BYTES, chunked, first_supported
from xailib.layers import capture, check_layers, leaf_at, stop_after
from xailib.gap.receptive import (
    DEFAULT_MAX_AREA_FRACTION,
    SegmentRF,
    crop_windows,
    segment_receptive_field,
    uncrop,
)

__all__ = [
    "DEFAULT_MAX_BATCH_BYTES",
    "segment_available",
    "resolve_segment",
    "check_order",
    "not_below_error",
    "select_decisions",
    "layer_outputs",
    "check_crop",
    "crop_field",
    "cropped_gradients",
    "decision_gradients",
]


def _stage_names(model: nn.Module) -> list[str] | None:
    names = getattr(model, "stage_names", None)
    return list(names) if names is not None else None


def segment_available(model: nn.Module, lower: str | None, upper: str | None) -> bool:
    """Whether ``model.run_segment`` can map ``lower`` to ``upper`` (``None`` upper = logits)."""
    stages = _stage_names(model)
    if not hasattr(model, "run_segment") or stages is None or lower is None:
        return False
    return lower in stages and (upper is None or upper in stages)


def resolve_segment(model: nn.Module, lower: str | None, upper: str | None, use_segment: bool | str) -> bool:
    """Whether to run ``model.run_segment`` for ``lower -> upper`` under ``use_segment`` ("auto", True, False)."""
    if use_segment not in ("auto", True, False):  # a bool or a string: check_choice takes strings only
        raise ValueError(f"use_segment must be 'auto', True or False, got {use_segment!r}.")
    ok = segment_available(model, lower, upper)
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


def not_below_error(lower: str | None, upper: str | None) -> ValueError:
    """The error for a lower layer that does not feed the decision (it runs after it, or in another branch)."""
    what = "the class scores" if upper is None else f"the decision layer {upper!r}"
    return ValueError(
        f"Layer {lower!r} is not below {what}: the decision does not depend on it in the forward pass "
        "(it runs after it, or in a branch that does not feed it). Choose a layer that feeds the decision."
    )


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

    ``stop`` ends the forward pass after that layer (see :class:`xailib.layers.stop_after`). Call inside
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


def _batched_vjp(
    out: torch.Tensor, leaf: torch.Tensor, channels: torch.Tensor, positions: torch.Tensor | None, upper: str | None,
    lower: str | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients ``[D, K, h, w]`` of ``D`` decisions in ``out: [1, ...]`` w.r.t. ``leaf: [1, K, h, w]``.

    One backward with a batch of one-hot ``grad_outputs`` (``is_grads_batched``, i.e. vmap over the
    backward pass). Also returns the decision values ``[D]``. Raises :func:`not_below_error` if ``out`` does
    not depend on ``leaf``.
    """
    n = int(channels.shape[0])
    scores = select_decisions(out.expand(n, *out.shape[1:]), channels, positions, upper).detach()
    if not out.requires_grad:
        raise not_below_error(lower, upper)
    onehot = torch.zeros((n,) + tuple(out.shape), dtype=out.dtype, device=out.device)
    rows = torch.arange(n, device=out.device)
    index = (rows, torch.zeros_like(rows), channels.to(out.device))
    if positions is not None:
        index += (positions[:, 0].to(out.device), positions[:, 1].to(out.device))
    onehot[index] = 1.0
    (g,) = torch.autograd.grad(out, leaf, grad_outputs=onehot, is_grads_batched=True, allow_unused=True)
    if g is None:
        raise not_below_error(lower, upper)
    return g[:, 0], scores


def check_crop(crop) -> None:
    """Validate the ``crop`` option: "auto", True or False."""
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
    check_crop(crop)
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
    g, f, s = chunked(int(channels.shape[0]), run, model, max_batch_bytes, item, progress,
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
    check_crop(crop)
    segment = resolve_segment(model, lower, upper, use_segment)
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
        item = lower_acts[:1].numel() * lower_acts.element_size() * 2
    else:
        item = inputs[:1].numel() * inputs.element_size() * 2
    batches = _DecisionBatches(model, inputs, lower, upper, channels, positions, image_index, lower_acts, segment)
    g, f, s = chunked(n, batches, model, max_batch_bytes, item, progress, desc=f"gAP {upper or 'output'}->{lower}")
    return g, f, s


class _DecisionBatches:
    """Eq. (2) for a slice of decisions, by the fastest way this model supports (see :data:`PATHS`).

    The ways, fastest first:

    * ``"vjp"`` (one image): run the network once on the image, then one batched vector-Jacobian
      product gives the gradients of all decisions of the chunk (``is_grads_batched``, vmap).
    * ``"expand"`` (one image, full forward only): run the prefix once and expand the lower layer's
      output to the chunk's rows; tensors from before the layer broadcast, which is exact since every
      row is the same image.
    * ``"rows"``: one row per decision (the lower features, or the input image, repeated).

    The way is chosen once, on the first chunk of more than one decision, by
    :func:`xailib.batching.first_supported`: only an error that says the model's ops cannot be batched
    that way (an op without a vmap rule, rows that cannot broadcast through a concat) moves on to the
    next way; any other error, an out-of-memory error included, reaches the caller. A chunk of one
    decision always uses ``"rows"``.
    """

    def __init__(self, model, inputs, lower, upper, channels, positions, image_index, lower_acts, segment):
        self.model, self.inputs, self.lower, self.upper = model, inputs, lower, upper
        self.channels, self.positions, self.image_index = channels, positions, image_index
        self.lower_acts, self.segment = lower_acts, segment
        one = (lower_acts.shape[0] if segment else inputs.shape[0]) == 1
        ways = (["vjp"] if one else []) + (["expand"] if one and not segment and lower is not None else [])
        self.ways = ways + ["rows"]
        self.way: str | None = None if len(self.ways) > 1 else "rows"

    def __call__(self, sl: slice) -> list[torch.Tensor]:
        if sl.stop - sl.start == 1:
            return self.run(sl, "rows")
        if self.way is None:
            self.way, out = first_supported(self.ways, lambda way: self.run(sl, way))
            return out
        return self.run(sl, self.way)

    def run(self, sl: slice, way: str) -> list[torch.Tensor]:
        """Gradients, features and scores of decisions ``sl`` computed the way ``way``."""
        pos = None if self.positions is None else self.positions[sl]
        if self.segment:
            return self._segment(sl, pos, way)
        return self._forward(sl, pos, way)

    def _segment(self, sl: slice, pos, way: str) -> list[torch.Tensor]:
        lower, upper = self.lower, self.upper
        if way == "vjp":
            x = self.lower_acts[:1].detach().clone().requires_grad_(True)
            with torch.enable_grad():
                out = self.model.run_segment(x, start=lower, stop=upper)
                g, scores = _batched_vjp(out, x, self.channels[sl], pos, upper, lower)
            return [g, x.detach().expand_as(g), scores]
        x = self.lower_acts[self.image_index[sl]].detach().clone().requires_grad_(True)
        with torch.enable_grad():
            out = self.model.run_segment(x, start=lower, stop=upper)
            scores = select_decisions(out, self.channels[sl], pos, upper)
            (g,) = torch.autograd.grad(scores.sum(), x)
        return [g, x.detach(), scores.detach()]

    def _forward(self, sl: slice, pos, way: str) -> list[torch.Tensor]:
        model, lower, upper = self.model, self.lower, self.upper
        rows = sl.stop - sl.start
        one_image = way in ("vjp", "expand")
        x = self.inputs if one_image else self.inputs[self.image_index[sl]]
        with ExitStack() as stack, torch.enable_grad():
            if lower is None:
                x = x.detach().clone().requires_grad_(True)
                leaves = [x]
            else:
                leaves = stack.enter_context(leaf_at(model, lower, rows if way == "expand" else None))
            rec = stack.enter_context(capture(model, upper)) if upper is not None else None
            logits = stack.enter_context(stop_after(model, upper)).run(x)
            if not leaves:
                raise not_below_error(lower, upper)
            if len(leaves) > 1:
                raise ValueError(
                    f"Layer {lower!r} ran {len(leaves)} times in one forward pass (a reused module); "
                    "choose a module that runs once, e.g. the block that contains it."
                )
            out = logits if upper is None else rec[upper]
            if way == "vjp":
                g, scores = _batched_vjp(out, leaves[0], self.channels[sl], pos, upper, lower)
                return [g, leaves[0].detach().expand_as(g), scores]
            scores = select_decisions(out, self.channels[sl], pos, upper)
            if not scores.requires_grad:
                raise not_below_error(lower, upper)
            (g,) = torch.autograd.grad(scores.sum(), leaves[0], allow_unused=True)
            if g is None:
                raise not_below_error(lower, upper)
        return [g, leaves[0].detach(), scores.detach()]
