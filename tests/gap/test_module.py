"""gAP module (Eqs. 2-5, Table 1 strategies): hand-computed answers, fast vs literal reference, batching."""

import pytest
import torch
from tiny_models import OneConvLinear, TinyInception, TinyResNet, TinyVGG, image, make

from xailib.gap import GAP, STRATEGIES, Neuron, channel_contributions, gap_reference, peak_positions
from xailib.layers import count_hooks

# x = [[1, 2], [3, -4]]: conv channel 0 = x, channel 1 = 2x; after the in-place ReLU the -4 and -8 become 0.
X = torch.tensor([[[[1.0, 2.0], [3.0, -4.0]]]])


def test_hand_computed_contributions_all_strategies():
    model = OneConvLinear()
    # Class 0 = sum(V0 * relu(F)); at layer "relu": G0 = [[1,0],[0,1]], G1 = [[0,0],[1,-1]],
    # F0 = [[1,2],[3,0]], F1 = [[2,4],[6,0]] -> A0 = [[1,0],[0,0]], A1 = [[0,0],[6,0]].
    expected = {"AA": [0.25, 1.5], "MA": [1.0, 6.0], "AG": [0.5, 0.0], "MG": [1.0, 1.0]}
    for strategy, alpha in expected.items():
        res = GAP(model).attribute(X, target=0, layer="relu", strategy=strategy)
        assert res.contributions.tolist() == [alpha], strategy
    res = GAP(model).attribute(X, target=0, layer="relu")
    assert res.gradients[0].tolist() == [[[1, 0], [0, 1]], [[0, 0], [1, -1]]]
    assert res.activation_maps[0].tolist() == [[[1, 0], [0, 0]], [[0, 0], [6, 0]]]
    assert res.peaks[0].tolist() == [[0, 0], [1, 0]]  # Eq. (5), (y, x)
    assert res.scores.tolist() == [7.0]
    # Layer before the in-place ReLU: features keep their negative values, gradients are gated by the ReLU.
    res = GAP(model).attribute(X, target=0, layer="conv")
    assert res.features[0].tolist() == [[[1, 2], [3, -4]], [[2, 4], [6, -8]]]
    assert res.gradients[0].tolist() == [[[1, 0], [0, 0]], [[0, 0], [1, 0]]]
    assert res.contributions.tolist() == [[0.25, 1.5]]
    # For a linear read-out of the layer, Z * sum_k alpha_k is the class score (Eq. 11 / CAM).
    res1 = GAP(model).attribute(X, target=1, layer="relu")
    assert res1.contributions.tolist() == [[1.5, 3.0]] and res1.scores.tolist() == [18.0]
    assert count_hooks(model) == 0


def test_hand_computed_neuron_target():
    model = OneConvLinear()
    # Decision: relu output channel 1 at (1, 0) = relu(2 * x[1, 0]) = 6; lower layer conv: G = 1 at that spot only.
    res = GAP(model).attribute(X, target=Neuron("relu", 1, 1, 0), layer="conv")
    assert res.gradients[0].tolist() == [[[0, 0], [0, 0]], [[0, 0], [1, 0]]]
    assert res.contributions.tolist() == [[0.0, 1.5]] and res.scores.tolist() == [6.0]
    # The data layer below the conv: G = weight 2 at that pixel.
    assert GAP(model).attribute(X, target=Neuron("fc", 0), layer="relu").contributions.tolist() == [[0.25, 1.5]]


def test_strategy_helpers():
    g = torch.tensor([[[[1.0, -2.0], [0.5, 3.0]]]])
    f = torch.tensor([[[[2.0, 1.0], [4.0, -1.0]]]])
    assert channel_contributions(g, f, "AA").tolist() == [[(2 - 2 + 2 - 3) / 4]]
    assert channel_contributions(g, f, "ma").tolist() == [[2.0]]
    assert channel_contributions(g, f, "AG").tolist() == [[2.5 / 4]]
    assert channel_contributions(g, f, "MG").tolist() == [[3.0]]
    assert peak_positions(torch.tensor([[[0.0, 1.0, 1.0], [0.0, 0.0, 1.0]]])).tolist() == [[0, 1]]  # first max


CASES = [
    (TinyVGG, "stages.stage3", 2),
    (TinyVGG, "stages.stage1", Neuron("stages.stage2", 1, 0, 6)),
    (TinyVGG, "stages.stage2.4", Neuron("stages.stage3", 4, 1, 3)),  # a conv inside a stage: no segment
    (TinyResNet, "stages.s3", 1),
    (TinyResNet, "stages.s2", Neuron("stages.s3", 2, 2, 0)),
    (TinyResNet, "stages.s2.bn2", Neuron("stages.s3", 7, 3, 2)),  # before the in-place `+=` and ReLU
    (TinyInception, "inc1", Neuron("inc2", 5, 6, 1)),
    (TinyInception, "inc1.b3.2", 3),
]


@pytest.mark.parametrize("cls,layer,target", CASES, ids=lambda v: str(getattr(v, "__name__", v)))
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_fast_equals_literal_reference(cls, layer, target, strategy):
    model, x = make(cls), image()
    ref = gap_reference(model, x, target, layer, strategy)
    for use_segment in ("auto", False):
        res = GAP(model, use_segment=use_segment).attribute(x, target=target, layer=layer, strategy=strategy)
        torch.testing.assert_close(res.gradients, ref.gradients, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(res.activation_maps, ref.activation_maps, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(res.contributions, ref.contributions, rtol=1e-9, atol=1e-12)
        assert torch.equal(res.peaks, ref.peaks)
        assert res.contributions.abs().max() > 0  # not a vacuous comparison
    assert count_hooks(model) == 0


@pytest.mark.parametrize("cls,layer,targets", [
    (TinyVGG, "stages.stage2", [0, 3, 4]),
    (TinyResNet, "stages.s2", [Neuron("stages.s3", 1, 0, 2), Neuron("stages.s3", 5, 0, 3), Neuron("stages.s3", 4, 1, 3)]),
    (TinyInception, "inc1", [2, 2, 0]),
])
def test_batched_equals_one_by_one_and_chunking(cls, layer, targets):
    model, xs = make(cls), image(seed=3, batch=3)
    batched = GAP(model).attribute(xs, target=targets, layer=layer)
    chunked = GAP(model, max_batch_bytes=1).attribute(xs, target=targets, layer=layer)
    for i, t in enumerate(targets):
        one = GAP(model).attribute(xs[i : i + 1], target=t, layer=layer)
        for name in ("gradients", "features", "contributions", "scores"):
            torch.testing.assert_close(getattr(batched, name)[i : i + 1], getattr(one, name), rtol=1e-10, atol=1e-13)
        assert torch.equal(batched.peaks[i], one.peaks[0])
    for name in ("gradients", "contributions", "peaks"):
        torch.testing.assert_close(getattr(batched, name), getattr(chunked, name), rtol=1e-10, atol=1e-13)


def test_float32_and_inplace_relu_do_not_corrupt_features():
    model, x = make(TinyVGG, double=False), image(double=False)
    res = GAP(model, use_segment=False).attribute(x, target=1, layer="stages.stage2.3")  # conv before in-place ReLU
    assert (res.features < 0).any()  # pre-ReLU values survive the in-place ReLU after the layer
    ref = gap_reference(model, x, 1, "stages.stage2.3")
    torch.testing.assert_close(res.contributions.double(), ref.contributions, rtol=1e-4, atol=1e-7)
