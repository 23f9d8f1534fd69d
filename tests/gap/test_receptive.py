"""Receptive-field crops for gAP: NaN propagation, a hand-computed RF, crop statistics == full-map
statistics, and cropped == uncropped == node-by-node on the test models and the zoo architectures."""

import pytest
import torch
from tiny_models import TinyInception, TinyResNet, TinyVGG, image, make
from torch import nn

from xailib.gap import (
    GAP,
    Neuron,
    channel_contributions,
    decompose,
    decompose_nodewise,
    peak_positions,
)
from xailib.gap.gradients import crop_field, layer_outputs
from xailib.gap.receptive import (
    clear_cache,
    crop_statistics,
    crop_windows,
    nan_probe_intervals,
    segment_receptive_field,
    uncrop,
)
from xailib.layers import count_hooks, model_state
from xailib.models import build_model

NAN = float("nan")


# --------------------------------------------------------------------------------------------------
# NaN propagation, op by op
# --------------------------------------------------------------------------------------------------


def _nan_at(h=6, w=6, k=2, y=2, x=3):
    t = torch.zeros(1, k, h, w)
    t[0, 0, y, x] = NAN
    return t


def _nan_mask(out):
    return torch.isnan(out).any(dim=1)[0]


def test_every_op_of_the_zoo_propagates_nan():
    conv = nn.Conv2d(2, 3, 3, padding=1)
    nn.init.zeros_(conv.weight)  # 0 * NaN is still NaN
    out = _nan_mask(conv(_nan_at()))
    want = torch.zeros(6, 6, dtype=torch.bool)
    want[1:4, 2:5] = True
    assert torch.equal(out, want)
    assert torch.equal(_nan_mask(nn.ReLU(inplace=True)(_nan_at())), _nan_mask(_nan_at()))
    pooled = torch.zeros(3, 3, dtype=torch.bool)
    pooled[1, 1] = True  # (2, 3) lies in the 2x2 window (1, 1)
    assert torch.equal(_nan_mask(nn.MaxPool2d(2)(_nan_at())), pooled)
    assert torch.equal(_nan_mask(nn.AvgPool2d(2)(_nan_at())), pooled)
    p3 = torch.zeros(6, 6, dtype=torch.bool)
    p3[1:4, 2:5] = True
    assert torch.equal(_nan_mask(nn.MaxPool2d(3, 1, 1)(_nan_at())), p3)
    bn = nn.BatchNorm2d(2).eval()
    assert torch.equal(_nan_mask(bn(_nan_at())), _nan_mask(_nan_at()))
    a, b = _nan_at(), torch.zeros(1, 2, 6, 6)
    b += a  # the in-place residual add
    assert torch.equal(_nan_mask(b), _nan_mask(a))
    cat = torch.cat([torch.zeros(1, 3, 6, 6), _nan_at()], dim=1)
    assert torch.equal(_nan_mask(cat), _nan_mask(_nan_at()))
    assert bool(torch.isnan(nn.AdaptiveAvgPool2d(1)(_nan_at())).any())


# --------------------------------------------------------------------------------------------------
# NaN probe against a hand-computed RF
# --------------------------------------------------------------------------------------------------


class ConvPoolConv(nn.Module):
    """Segment ``a -> b``: conv 3x3 (pad 1) -> ReLU -> max-pool 2 -> conv 3x3 (pad 1) -> ReLU."""

    stage_names = ["a", "b"]

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                                  nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True))
        self.a = nn.Identity()

    def forward(self, x):
        return self.body(self.a(x)).mean((2, 3))

    def run_segment(self, acts, start, stop=None):
        return self.body(acts)


def test_nan_probe_matches_the_hand_computed_rf():
    # output row o reads pooled rows o-1..o+1 = conv rows 2o-2..2o+3 = input rows 2o-3..2o+4 (clipped to 0..23)
    model = ConvPoolConv().eval()
    rf = segment_receptive_field(model, "a", "b", (2, 24, 24), cache=False)
    o = torch.arange(12)
    hand = torch.stack([(2 * o - 3).clamp_min(0), (2 * o + 4).clamp_max(23)], dim=1)
    assert torch.equal(rf.rows, hand) and torch.equal(rf.cols, hand)
    assert rf.stride == (2, 2) and rf.out_size == (12, 12) and rf.exact, rf.reason
    # interior crops: aligned down to 2o-4, 10 rows; at the top they start at the border (0), at the
    # bottom they end at it (24 - 10 = 14)
    assert rf.crop_size == (10, 10)
    assert rf.row_offsets.tolist() == [0, 0, 0, 2, 4, 6, 8, 10, 12, 14, 14, 14]
    assert rf.local_positions(torch.tensor([[5, 0], [11, 11]]), rf.offsets(torch.tensor([[5, 0], [11, 11]]))).tolist() \
        == [[2, 0], [4, 4]]
    intervals, contiguous = nan_probe_intervals(lambda t: model.run_segment(t, "a"), (2, 24, 24), dim=3)
    assert torch.equal(intervals, hand) and bool(contiguous.all())


class SwallowsNaN(nn.Module):
    """A segment whose global term hides from the NaN probe: ``where(x > 0, x, 0)`` turns NaN into 0."""

    stage_names = ["a", "b"]

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)

    def forward(self, x):
        return self.run_segment(x, "a").mean((2, 3))

    def run_segment(self, acts, start, stop=None):
        clean = torch.where(acts > 0, acts, torch.zeros_like(acts))
        return self.conv(acts) + clean.mean((1, 2, 3), keepdim=True)


def test_a_dependency_the_probe_misses_is_caught_by_the_check():
    model = SwallowsNaN().eval()
    rf = segment_receptive_field(model, "a", "b", (2, 16, 16), cache=False)
    assert rf.crop_size == (3, 3)  # the probe sees only the 3x3 conv ...
    assert not rf.exact and "differ" in rf.reason  # ... the check sees the global mean


def test_cache_is_per_model_and_clearable():
    model = ConvPoolConv().eval()
    a = segment_receptive_field(model, "a", "b", (2, 24, 24))
    assert segment_receptive_field(model, "a", "b", (2, 24, 24)) is a
    assert segment_receptive_field(model, "a", "b", (2, 16, 16)) is not a
    clear_cache(model)
    assert segment_receptive_field(model, "a", "b", (2, 24, 24)) is not a
    assert count_hooks(model) == 0


# --------------------------------------------------------------------------------------------------
# Crops in and out; statistics from crops == statistics of the full maps
# --------------------------------------------------------------------------------------------------


def test_crop_windows_and_uncrop_are_inverse_on_the_crop():
    acts = torch.arange(2 * 3 * 6 * 8, dtype=torch.float64).view(2, 3, 6, 8)
    offsets = torch.tensor([[0, 0], [2, 4], [4, 6]])
    crops = crop_windows(acts, torch.tensor([0, 1, 1]), offsets, (2, 2))
    assert torch.equal(crops[1], acts[1, :, 2:4, 4:6]) and torch.equal(crops[2], acts[1, :, 4:6, 6:8])
    full = uncrop(crops, offsets, (6, 8))
    assert torch.equal(full[1, :, 2:4, 4:6], crops[1]) and float(full[1].abs().sum()) == float(crops[1].abs().sum())


def _full_stats(g, f, offsets, size, strategy):
    G, F = uncrop(g, offsets, size), uncrop(f, offsets, size)
    return channel_contributions(G, F, strategy), peak_positions(G * F)


@pytest.mark.parametrize("strategy", ["AA", "MA", "AG", "MG"])
def test_crop_statistics_equal_full_map_statistics(strategy):
    gen = torch.Generator().manual_seed(0)
    size, c = (7, 6), (3, 3)
    offsets = torch.tensor([[0, 0], [0, 3], [4, 0], [2, 2], [4, 3], [0, 0]])
    g = torch.randn(6, 5, *c, generator=gen, dtype=torch.float64)
    f = torch.rand(6, 5, *c, generator=gen, dtype=torch.float64)
    g[0, 0] = -1.0  # all negative at the corner (0, 0): the full maximum is the first zero outside, (0, 3)
    g[1, 0] = -1.0  # all negative, crop not at the origin: the full map's (0, 0) wins
    g[2, 1] = 0.0  # all zero: (0, 0) outside
    g[5, 2] = -1.0
    g[5, 2, 1, 1] = 0.0  # a zero inside the crop at (1, 1) vs the first outside zero (0, 3): (0, 3) first
    g[5, 3] = -1.0
    g[5, 3, 0, 2] = 0.0  # a zero inside at (0, 2) comes before the first outside zero (0, 3)
    g[3, 4] = 0.0
    g[3, 4, 0, 0] = 2.0
    g[3, 4, 2, 2] = 2.0  # a tie inside the crop: the first one, (2, 2) in the full map
    f[3, 4] = 1.0
    maps, contrib, peaks = crop_statistics(g, f, offsets, size, strategy)
    want_c, want_p = _full_stats(g, f, offsets, size, strategy)
    assert torch.equal(maps, g * f)
    assert torch.allclose(contrib, want_c, rtol=0, atol=1e-12)
    assert torch.equal(peaks, want_p)
    assert peaks[0, 0].tolist() == [0, 3] and peaks[1, 0].tolist() == [0, 0] and peaks[2, 1].tolist() == [0, 0]
    assert peaks[5, 2].tolist() == [0, 3] and peaks[5, 3].tolist() == [0, 2] and peaks[3, 4].tolist() == [2, 2]


def test_crop_statistics_when_the_crop_spans_the_width_or_the_map():
    g = -torch.ones(2, 1, 2, 4, dtype=torch.float64)
    f = torch.ones_like(g)
    _, _, peaks = crop_statistics(g, f, torch.tensor([[0, 0], [2, 0]]), (4, 4))
    assert peaks[:, 0].tolist() == [[2, 0], [0, 0]]  # full width at the top: the first zero is row 2
    maps, contrib, peaks = crop_statistics(g, f, torch.tensor([[0, 0], [0, 0]]), (2, 4), "MA")
    assert peaks[:, 0].tolist() == [[0, 0], [0, 0]] and contrib.flatten().tolist() == [-1.0, -1.0]  # no outside


# --------------------------------------------------------------------------------------------------
# Cropped == uncropped == node by node
# --------------------------------------------------------------------------------------------------


def _all_positions_gradients(model, x, lower, upper, channel, dtype_tol):
    with model_state(model, train=False):
        acts, _ = layer_outputs(model, x, [upper])
    h, w = acts[upper].shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    targets = [Neuron(upper, channel, int(y), int(x_)) for y, x_ in zip(ys.flatten(), xs.flatten())]
    xs_ = x.expand(len(targets), *x.shape[1:])
    cropped = GAP(model, crop=True).attribute(xs_, target=targets, layer=lower)
    full = GAP(model, crop=False).attribute(xs_, target=targets, layer=lower)
    for name in ("gradients", "activation_maps", "contributions", "scores"):
        assert torch.allclose(getattr(cropped, name), getattr(full, name), rtol=0, atol=dtype_tol), name
    assert torch.equal(cropped.peaks, full.peaks)
    return cropped


@pytest.mark.parametrize("cls,lower,upper,size", [
    (TinyVGG, "stages.stage1", "stages.stage2", 16),
    (TinyResNet, "stages.s1", "stages.s2", 32),
    (TinyResNet, "stages.s2", "stages.s3", 32),
])
def test_gap_on_crops_equals_full_map_at_every_position_float64(cls, lower, upper, size):
    model, x = make(cls), image(size=size)
    _all_positions_gradients(model, x, lower, upper, channel=1, dtype_tol=1e-9)
    with model_state(model, train=False):
        acts, _ = layer_outputs(model, x, [lower])
    rf = segment_receptive_field(model, lower, upper, tuple(acts[lower].shape[1:]))
    assert rf.exact and rf.area_fraction <= 0.5  # crops were used, not the full-map fallback
    assert count_hooks(model) == 0


@pytest.mark.parametrize("cls,size", [(TinyVGG, 16), (TinyResNet, 32), (TinyInception, 16)])
@pytest.mark.parametrize("nms_iou", [None, 0.5])
def test_tree_cropped_equals_uncropped_equals_nodewise_float64(cls, size, nms_iou):
    model, x = make(cls), image(size=size)
    layers = getattr(model, "stage_names", None) or cls.layers
    kw = dict(layers=layers, top_n=3, nms_iou=nms_iou)
    cropped, full = decompose(model, x, crop="auto", **kw), decompose(model, x, crop=False, **kw)
    nodewise = decompose_nodewise(model, x, **kw)
    assert cropped.same_as(full, atol=1e-9) and cropped.same_as(nodewise, atol=1e-9)
    for a, b in zip(cropped.walk(), nodewise.walk()):
        assert (a.activation_map is None) == (b.activation_map is None)
        if a.activation_map is not None:
            assert abs(a.activation_map - b.activation_map).max() <= 1e-9 * max(1.0, abs(b.activation_map).max())
    assert count_hooks(model) == 0


ZOO = [(arch, ds, tier) for tier in ("shallow", "deep") for ds in ("conceptworld", "fashion-mnist")
       for arch in ("vgg", "resnet", "inception", "alexnet")]


@pytest.mark.parametrize("arch,dataset,tier", ZOO)
def test_zoo_tree_cropped_equals_uncropped_equals_nodewise(arch, dataset, tier):
    torch.manual_seed(0)
    model = build_model(arch, dataset, tier=tier).eval()  # untrained: the RF is a property of the architecture
    c, h, w = model.input_shape
    x = torch.rand(1, c, h, w, generator=torch.Generator().manual_seed(1))
    cropped, full = decompose(model, x, crop=True), decompose(model, x, crop=False)
    nodewise = decompose_nodewise(model, x)
    assert cropped.same_as(full, atol=1e-5) and cropped.same_as(nodewise, atol=1e-5)
    # decisions at the corners, borders and centre of stage 2, decomposed onto stage 1
    with model_state(model, train=False):
        acts, _ = layer_outputs(model, x, model.stage_names[:2])
    s1, s2 = model.stage_names[:2]
    k, hh, ww = acts[s2].shape[1:]
    spots = [(0, 0), (0, ww - 1), (hh - 1, 0), (hh - 1, ww - 1), (0, ww // 2), (hh // 2, 0), (hh - 1, ww // 2),
             (hh // 2, ww - 1), (hh // 2, ww // 2), (1, 1), (hh - 2, ww - 2)]
    targets = [Neuron(s2, i % k, y, x_) for i, (y, x_) in enumerate(spots)]
    xs = x.expand(len(targets), *x.shape[1:])
    a = GAP(model, crop="auto").attribute(xs, target=targets, layer=s1)
    b = GAP(model, crop=False).attribute(xs, target=targets, layer=s1)
    scale = float(b.gradients.abs().max())
    assert torch.allclose(a.gradients, b.gradients, rtol=0, atol=1e-5 * scale)
    assert torch.allclose(a.contributions, b.contributions, rtol=0, atol=1e-5 * float(b.contributions.abs().max()))
    assert torch.equal(a.peaks, b.peaks)
    assert count_hooks(model) == 0


# --------------------------------------------------------------------------------------------------
# Options and fallbacks
# --------------------------------------------------------------------------------------------------


def test_crop_option_errors_and_fallbacks():
    model, x = make(TinyVGG), image()
    with pytest.raises(ValueError, match="crop must be"):
        GAP(model, crop="yes")
    with pytest.raises(ValueError, match="crop must be"):
        decompose(model, x, crop="yes")
    with pytest.raises(ValueError, match="run_segment"):  # no run_segment: crop=True cannot be honoured
        decompose(make(TinyInception), x, layers=TinyInception.layers, crop=True)
    with pytest.raises(ValueError, match="run_segment"):
        GAP(model, use_segment=False, crop=True).attribute(x, target=Neuron("stages.stage2", 0, 1, 1),
                                                          layer="stages.stage1")
    assert count_hooks(model) == 0
    swallow = SwallowsNaN().eval()  # inexact RF: auto falls back to the full map, True raises
    acts = torch.rand(1, 2, 16, 16)
    assert crop_field(swallow, "a", "b", torch.tensor([[0, 0]]), acts, "auto", True) is None
    with pytest.raises(ValueError, match="not exact"):
        crop_field(swallow, "a", "b", torch.tensor([[0, 0]]), acts, True, True)
    # a neuron outside the map still gets the error that lists the valid positions
    with pytest.raises(ValueError, match="outside"):
        GAP(model, crop=True).attribute(x, target=Neuron("stages.stage2", 0, 99, 0), layer="stages.stage1")
    assert count_hooks(model) == 0
