"""Receptive fields between two stages, and gAP on crops of the lower feature map.

A decision ``F^{l+1}_{k',y,x}`` (Sec. 3.1) depends only on its receptive field (RF) in the lower layer
``l``: its gradient map ``G^l`` (Eq. 2) is zero outside the RF. So the segment ``l -> l+1`` may be run
(forward and backward) on a crop of ``F^l`` that contains the RF, one crop per decision, batched; the
crop gradients are exact, and Eqs. (3)-(5) over the full ``h x w`` map follow from the crop alone,
because the map is zero outside it (:func:`crop_statistics`).

How the RF is found, generically (no per-architecture tables):

* **NaN probe** (:func:`nan_probe_intervals`). Probe ``i`` is a zero map with NaN in input row ``i``
  (all channels and columns); the segment runs in eval mode on the batch of probes, and output row
  ``o`` depends on input row ``i`` iff it turns NaN. Convolutions (even a zero weight: ``0 * NaN = NaN``),
  ReLU, max/avg pooling, BatchNorm in eval mode, residual additions and concatenation all propagate NaN
  (``tests/gap/test_receptive.py`` checks this). Same for columns. An output at ``(o_y, o_x)`` then
  depends on inputs in ``rows[o_y] x cols[o_x]`` only (each interval is the hull of the NaN rows).
* **Crops** (:class:`SegmentRF`). With total stride ``s = H / h`` between the stages, crop offsets are
  multiples of ``s`` (pooling grids line up) and crop sides are multiples of ``s``, one size for all
  output positions; a crop is clamped to the map, so where an RF reaches a real border the crop starts
  (or ends) exactly there and the model's own padding applies as in the full map. The decision at
  ``(y, x)`` sits at ``(y - off_y / s, x - off_x / s)`` in the cropped output.
* **Check**. Once per RF the segment is run on random features, in full and on the crops of a set of
  output positions (corners, borders, centre, a seeded sample); an RF is marked ``exact`` only if the
  two agree. Ops that swallow NaN (e.g. ``torch.where(x > 0, x, 0)``) could hide a dependency from the
  probe; the check then fails and the caller falls back to the full map.

RFs are cached per model (weakly: the cache goes with the model), per (lower, upper, K, H, W). The RF
is a property of the architecture, not of the weights; a model whose modules are swapped afterwards
needs :func:`clear_cache`.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from xailib.layers import model_state

__all__ = [
    "SegmentRF",
    "segment_receptive_field",
    "nan_probe_intervals",
    "crop_windows",
    "uncrop",
    "crop_statistics",
    "clear_cache",
    "DEFAULT_MAX_AREA_FRACTION",
]

#: Use crops only when one crop covers at most this fraction of the lower map; above it the batched
#: vector-Jacobian product on the full map (one forward for all decisions) is as fast.
DEFAULT_MAX_AREA_FRACTION = 0.5

_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_PROBE_CHUNK = 64  # probes per forward of the NaN probe
_CHECK_POSITIONS = 256  # output positions checked against the full map (all of them when fewer)


def clear_cache(model: nn.Module | None = None) -> None:
    """Forget cached receptive fields of ``model`` (of every model when ``None``)."""
    if model is None:
        _CACHE.clear()
    else:
        _CACHE.pop(model, None)


@dataclass(frozen=True)
class SegmentRF:
    """Receptive fields of the outputs of the segment ``lower -> upper`` in the lower map, and crops.

    Attributes
    ----------
    lower, upper : str
        The stages (``upper`` is the decision layer).
    in_size : (H, W)
        Side of the lower map.
    out_size : (h, w)
        Side of the upper map.
    stride : (s_y, s_x)
        Total stride ``H / h``, ``W / w`` (``0`` when not an integer: then ``exact`` is False).
    rows : LongTensor ``[h, 2]``
        Inclusive interval ``[lo, hi]`` of lower rows that output row ``o`` depends on.
    cols : LongTensor ``[w, 2]``
        The same for columns.
    crop_size : (c_h, c_w)
        Side of every crop: multiples of the stride, at most ``(H, W)``.
    row_offsets : LongTensor ``[h]``
        First lower row of the crop for a decision in output row ``o`` (a multiple of ``s_y``).
    col_offsets : LongTensor ``[w]``
        The same for columns.
    exact : bool
        True when the crops reproduce the full segment (probe consistent and the check passed).
    reason : str
        Why ``exact`` is False (empty otherwise).
    """

    lower: str
    upper: str
    in_size: tuple[int, int]
    out_size: tuple[int, int]
    stride: tuple[int, int]
    rows: torch.Tensor
    cols: torch.Tensor
    crop_size: tuple[int, int]
    row_offsets: torch.Tensor
    col_offsets: torch.Tensor
    exact: bool
    reason: str = ""

    @property
    def area_fraction(self) -> float:
        """Area of one crop over the area of the lower map."""
        return self.crop_size[0] * self.crop_size[1] / (self.in_size[0] * self.in_size[1])

    def offsets(self, positions: torch.Tensor) -> torch.Tensor:
        """Crop offsets ``[D, 2]`` (first lower row, column) for decisions at ``positions [D, 2]`` (y, x)."""
        pos = positions.to(self.row_offsets.device)
        return torch.stack([self.row_offsets[pos[:, 0]], self.col_offsets[pos[:, 1]]], dim=1)

    def local_positions(self, positions: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """Where the decisions sit in the cropped output: ``(y - off_y / s_y, x - off_x / s_x)``, ``[D, 2]``."""
        s = torch.tensor(self.stride, dtype=torch.long, device=offsets.device)
        return positions.to(offsets.device) - offsets // s


# --------------------------------------------------------------------------------------------------
# NaN probe
# --------------------------------------------------------------------------------------------------


def nan_probe_intervals(
    segment: Callable[[torch.Tensor], torch.Tensor],
    shape: tuple[int, int, int],
    dim: int,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each output row (``dim=2``) or column (``dim=3``) of ``segment``, the input rows/columns it depends on.

    Probe ``i`` is a zero map ``[K, H, W]`` with NaN in row (column) ``i``, all channels; output line
    ``o`` depends on input line ``i`` iff any of its entries is NaN on probe ``i``.

    Parameters
    ----------
    segment : callable
        ``[B, K, H, W] -> [B, K', h, w]``; must not mix batch rows (eval mode).
    shape : (K, H, W)
    dim : {2, 3}
    dtype, device
        Of the probes.

    Returns
    -------
    intervals : LongTensor ``[n_out, 2]``
        Inclusive ``[lo, hi]`` hull of the input lines each output line depends on (``[-1, -1]`` if none).
    contiguous : BoolTensor ``[n_out]``
        Whether the dependent lines fill the hull (False flags a dependency with gaps).
    """
    if dim not in (2, 3):
        raise ValueError(f"dim must be 2 (rows) or 3 (columns), got {dim!r}.")
    k, h, w = shape
    n_in = (h, w)[dim - 2]
    deps = []
    with torch.no_grad():
        for start in range(0, n_in, _PROBE_CHUNK):
            idx = torch.arange(start, min(n_in, start + _PROBE_CHUNK), device=device)
            x = torch.zeros(len(idx), k, h, w, dtype=dtype, device=device)
            if dim == 2:
                x[torch.arange(len(idx), device=device), :, idx, :] = torch.nan
            else:
                x[torch.arange(len(idx), device=device), :, :, idx] = torch.nan
            out = segment(x)
            if not isinstance(out, torch.Tensor) or out.dim() != 4:
                raise ValueError(f"The segment must return a feature map [B, K', h, w] for a receptive field; got "
                                 f"{getattr(out, 'shape', type(out).__name__)}.")
            nan = torch.isnan(out)
            other = 3 if dim == 2 else 2
            deps.append(nan.any(dim=1).any(dim=other - 1))  # [probes, n_out]
    dep = torch.cat(deps, dim=0).T  # [n_out, n_in]
    n_out = dep.shape[0]
    lines = torch.arange(n_in, device=dep.device)
    any_dep = dep.any(dim=1)
    lo = torch.where(dep, lines, n_in).amin(dim=1)
    hi = torch.where(dep, lines, -1).amax(dim=1)
    lo = torch.where(any_dep, lo, torch.full_like(lo, -1))
    contiguous = any_dep & (dep.sum(dim=1) == (hi - lo + 1))
    return torch.stack([lo, hi], dim=1).reshape(n_out, 2).cpu(), contiguous.cpu()


def _offsets_and_size(intervals: torch.Tensor, n_in: int, s: int) -> tuple[torch.Tensor, int]:
    """Stride-aligned crop offsets ``[n_out]`` and the common crop side for inclusive ``intervals [n_out, 2]``."""
    lo = (intervals[:, 0] // s) * s
    end = ((intervals[:, 1] + 1 + s - 1) // s) * s
    size = min(int((end - lo).max()), n_in)
    off = torch.clamp(lo, max=n_in - size).clamp_min(0)
    return off, size


def _check_positions(h: int, w: int) -> torch.Tensor:
    """Output positions ``[P, 2]`` to check: all when few, else corners, borders, centre and a seeded sample."""
    if h * w <= _CHECK_POSITIONS:
        ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        return torch.stack([ys.flatten(), xs.flatten()], dim=1)
    fixed = {(y, x) for y in (0, h // 2, h - 1) for x in (0, w // 2, w - 1)}
    fixed |= {(y, x) for y in (1, h - 2) for x in (1, w - 2)}
    g = torch.Generator().manual_seed(0)
    extra = torch.randperm(h * w, generator=g)[: _CHECK_POSITIONS - len(fixed)]
    fixed |= {(int(i) // w, int(i) % w) for i in extra}
    return torch.tensor(sorted(fixed), dtype=torch.long)


def segment_receptive_field(
    model: nn.Module,
    lower: str,
    upper: str,
    shape: tuple[int, int, int],
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    check: bool = True,
    cache: bool = True,
) -> SegmentRF:
    """Receptive fields of ``model.run_segment(., lower, upper)`` outputs in the lower map, by NaN probe.

    Parameters
    ----------
    model : nn.Module
        With ``run_segment(acts, start, stop)``. Runs in eval mode (the mode is restored).
    lower, upper : str
        Stage names; ``upper`` must produce a feature map ``[K', h, w]``.
    shape : (K, H, W)
        Lower feature map.
    dtype, device
        Of the probes and of the check.
    check : bool
        Compare the segment on crops with the full segment on random features (see the module docstring).
    cache : bool
        Reuse / store the result per (model, lower, upper, shape).

    Returns
    -------
    SegmentRF
    """
    if not hasattr(model, "run_segment"):
        raise ValueError(f"{type(model).__name__} has no run_segment(acts, start, stop); receptive fields of a segment "
                         "need one. Use crop=False.")
    k, h_in, w_in = (int(v) for v in shape)
    key = (lower, upper, k, h_in, w_in, bool(check))
    if cache:
        hit = _CACHE.get(model, {}).get(key)
        if hit is not None:
            return hit
    def segment(x: torch.Tensor) -> torch.Tensor:
        return model.run_segment(x, start=lower, stop=upper)

    with model_state(model, train=False), torch.no_grad():
        rows, _ = nan_probe_intervals(segment, (k, h_in, w_in), 2, dtype, device)
        cols, _ = nan_probe_intervals(segment, (k, h_in, w_in), 3, dtype, device)
        h, w = rows.shape[0], cols.shape[0]
        reason = ""
        if h_in % h or w_in % w:
            reason = f"the map shrinks from {h_in}x{w_in} to {h}x{w}, not by an integer stride"
        elif bool((rows[:, 0] < 0).any() | (cols[:, 0] < 0).any()):
            reason = "some outputs depend on no input line"
        sy, sx = (h_in // h, w_in // w) if not reason else (0, 0)
        if reason:
            rf = SegmentRF(lower, upper, (h_in, w_in), (h, w), (sy, sx), rows, cols, (h_in, w_in),
                           torch.zeros(h, dtype=torch.long), torch.zeros(w, dtype=torch.long), False, reason)
        else:
            row_off, ch = _offsets_and_size(rows, h_in, sy)
            col_off, cw = _offsets_and_size(cols, w_in, sx)
            rf = SegmentRF(lower, upper, (h_in, w_in), (h, w), (sy, sx), rows, cols, (ch, cw), row_off, col_off, True)
            # a gap inside an RF (contiguous False) is harmless: the hull contains it
            local_y = torch.arange(h) - row_off // sy
            local_x = torch.arange(w) - col_off // sx
            if bool((local_y < 0).any() | (local_y >= ch // sy).any() | (local_x < 0).any()
                    | (local_x >= cw // sx).any()):
                rf = _inexact(rf, "an output lies outside its own crop")
            elif check:
                rf = _check(model, rf, k, dtype, device)
    if cache:
        _CACHE.setdefault(model, {})[key] = rf
    return rf


def _inexact(rf: SegmentRF, reason: str) -> SegmentRF:
    return SegmentRF(rf.lower, rf.upper, rf.in_size, rf.out_size, rf.stride, rf.rows, rf.cols, rf.crop_size,
                     rf.row_offsets, rf.col_offsets, False, reason)


def _check(model: nn.Module, rf: SegmentRF, k: int, dtype: torch.dtype, device) -> SegmentRF:
    """Segment on crops == full segment at the cropped positions, on seeded random features."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, k, *rf.in_size, generator=g, dtype=torch.float64).to(dtype=dtype, device=device)
    full = model.run_segment(x, start=rf.lower, stop=rf.upper)
    pos = _check_positions(*rf.out_size)
    expected_crop_out = (rf.crop_size[0] // rf.stride[0], rf.crop_size[1] // rf.stride[1])
    scale = float(full.abs().max()) or 1.0
    tol = (1e-9 if dtype == torch.float64 else 1e-4) * scale
    for start in range(0, pos.shape[0], _PROBE_CHUNK):
        p = pos[start:start + _PROBE_CHUNK]
        off = rf.offsets(p)
        crops = crop_windows(x, torch.zeros(len(p), dtype=torch.long), off, rf.crop_size)
        out = model.run_segment(crops, start=rf.lower, stop=rf.upper)
        if tuple(out.shape[-2:]) != expected_crop_out:
            return _inexact(rf, f"a {rf.crop_size} crop gives a {tuple(out.shape[-2:])} output, "
                                f"not {expected_crop_out}")
        loc = rf.local_positions(p, off).to(out.device)
        ar = torch.arange(len(p), device=out.device)
        got = out[ar, :, loc[:, 0], loc[:, 1]]  # [P, K']
        want = full[0, :, p[:, 0].to(out.device), p[:, 1].to(out.device)].T  # [P, K']
        err = float((got - want).abs().max())
        if not err <= tol:  # also catches NaN
            return _inexact(rf, f"crops differ from the full segment by {err:.3g} (the NaN probe missed a dependency)")
    return rf


# --------------------------------------------------------------------------------------------------
# Crops in, crops out
# --------------------------------------------------------------------------------------------------


def _grid(offsets: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    dev = offsets.device
    r = offsets[:, 0, None] + torch.arange(size[0], device=dev)  # [D, c_h]
    c = offsets[:, 1, None] + torch.arange(size[1], device=dev)  # [D, c_w]
    return r[:, :, None], c[:, None, :]


def crop_windows(acts: torch.Tensor, image_index: torch.Tensor, offsets: torch.Tensor,
                 size: tuple[int, int]) -> torch.Tensor:
    """Crops ``[D, K, c_h, c_w]`` of ``acts [B, K, H, W]``; crop ``d``: image ``image_index[d]`` at ``offsets[d]``."""
    offsets = offsets.to(acts.device)
    r, c = _grid(offsets, size)
    b = image_index.to(acts.device)[:, None, None]
    return acts.permute(0, 2, 3, 1)[b, r, c].permute(0, 3, 1, 2).contiguous()


def uncrop(crops: torch.Tensor, offsets: torch.Tensor, full_size: tuple[int, int]) -> torch.Tensor:
    """Scatter ``crops [D, ..., c_h, c_w]`` into zero maps ``[D, ..., H, W]`` at ``offsets [D, 2]``."""
    d = crops.shape[0]
    out = crops.new_zeros(*crops.shape[:-2], *full_size)
    offsets = offsets.to(crops.device)
    r, c = _grid(offsets, tuple(crops.shape[-2:]))
    ar = torch.arange(d, device=crops.device)[:, None, None]
    out.movedim((-2, -1), (1, 2))[ar, r, c] = crops.movedim((-2, -1), (1, 2))
    return out


def crop_statistics(gradients: torch.Tensor, features: torch.Tensor, offsets: torch.Tensor,
                    full_size: tuple[int, int], strategy: str = "AA",
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eqs. (3)-(5) over full ``H x W`` maps that are zero outside each decision's crop, from the crops alone.

    Parameters
    ----------
    gradients, features : Tensor ``[D, K, c_h, c_w]``
        ``G^l`` and ``F^l`` on the crops (``G^l`` is zero outside them).
    offsets : LongTensor ``[D, 2]``
        Crop origins (row, column) in the full map.
    full_size : (H, W)
    strategy : {"AA", "MA", "AG", "MG"}

    Returns
    -------
    maps : Tensor ``[D, K, c_h, c_w]``
        ``A = G * F`` on the crops (Eq. 3).
    contributions : Tensor ``[D, K]``
        As :func:`xailib.gap.channel_contributions` on the full maps: averages divide by ``Z = H * W``
        (Eq. 4); maxima include the zeros outside the crop.
    peaks : LongTensor ``[D, K, 2]``
        As :func:`xailib.gap.peak_positions` on the full maps (Eq. 5), in full-map coordinates: the
        first maximum in row-major order, where a crop whose maximum is <= 0 competes with the first
        zero outside it.
    """
    strategy = strategy.upper()
    full_h, full_w = full_size
    ch, cw = gradients.shape[-2:]
    z = full_h * full_w
    maps = gradients * features  # Eq. (3)
    outside = ch * cw < z  # some of the full map lies outside every crop
    src = maps if strategy in ("AA", "MA") else gradients
    flat = src.flatten(-2)
    if strategy in ("AA", "AG"):
        contributions = flat.sum(-1) / z  # Eq. (4): zeros outside the crop add nothing
    else:
        contributions = flat.amax(-1).clamp_min(0) if outside else flat.amax(-1)
    # Eq. (5): first maximum of the full map, row-major
    mflat = maps.flatten(-2)
    idx = mflat.argmax(-1)  # first maximum inside the crop (row-major order is kept by the crop)
    best = mflat.gather(-1, idx[..., None])[..., 0]
    off = offsets.to(maps.device)
    py = off[:, 0, None] + idx // cw
    px = off[:, 1, None] + idx % cw
    if outside:
        # full maximum is 0 where the crop's maximum is <= 0: the first zero of the full map wins, either
        # the first position outside the crop or the first zero inside it, whichever comes first
        oy, ox = off[:, 0], off[:, 1]
        first_out = torch.where((oy > 0) | (ox > 0), torch.zeros_like(oy),
                                torch.where(torch.full_like(ox, cw < full_w, dtype=torch.bool),
                                            torch.full_like(ox, cw), torch.full_like(ox, ch * full_w)))  # [D]
        is_zero = (mflat == 0).to(torch.uint8)
        zero_idx = is_zero.argmax(-1)  # first zero inside the crop, if any  [D, K]
        has_zero = is_zero.gather(-1, zero_idx[..., None])[..., 0].bool()
        zy = off[:, 0, None] + zero_idx // cw
        zx = off[:, 1, None] + zero_idx % cw
        zero_lin = torch.where(has_zero, zy * full_w + zx, torch.full_like(zy, z))
        lin = torch.minimum(zero_lin, first_out[:, None].expand_as(zero_lin))
        use_zero = best <= 0
        py = torch.where(use_zero, lin // full_w, py)
        px = torch.where(use_zero, lin % full_w, px)
    return maps, contributions, torch.stack([py, px], dim=-1)
