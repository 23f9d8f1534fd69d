"""Ground-truth contributions (Sec. 4.1): score drop when a channel is set to its average activation."""

import pytest
import torch
from tiny_models import OneConvLinear, TinyInception, TinyResNet, TinyVGG, image, make

from xailib.gap import GAP, Neuron, dataset_channel_means, ground_truth_contributions, ground_truth_naive
from xailib.layers import count_hooks

X = torch.tensor([[[[1.0, 2.0], [3.0, -4.0]]]])


def test_hand_computed_drops():
    model = OneConvLinear()
    # After ReLU: F0 = [[1,2],[3,0]] (mean 1.5), F1 = [[2,4],[6,0]] (mean 3); class 0 score = 1 + 6 = 7.
    # Channel 0 at its mean: class-0 read-out of channel 0 = (1 + 1) * 1.5 = 3 -> score 9, drop -2.
    # Channel 1 at its mean: (1 - 1) * 3 = 0 -> score 1, drop 6.
    for fn in (ground_truth_contributions, ground_truth_naive):
        assert fn(model, X, 0, "relu").tolist() == [-2.0, 6.0]
        assert fn(model, X, 0, "relu", baseline="zero").tolist() == [1.0, 6.0]
        assert fn(model, X, 0, "relu", baseline=torch.tensor([1.0, 0.0])).tolist() == [-1.0, 6.0]
    # With a linear read-out and zero baseline, the drop is exactly Z * alpha_k (Eq. 4, Z = 4).
    alpha = GAP(model).attribute(X, target=0, layer="relu").contributions[0]
    assert (4 * alpha).tolist() == ground_truth_contributions(model, X, 0, "relu", baseline="zero").tolist()
    assert count_hooks(model) == 0


@pytest.mark.parametrize("cls,layer,target", [
    (TinyVGG, "stages.stage3", 3),
    (TinyVGG, "stages.stage2", Neuron("stages.stage3", 4, 1, 3)),
    (TinyResNet, "stages.s2", 0),
    (TinyResNet, "stages.s1", Neuron("stages.s2", 4, 6, 1)),
    (TinyInception, "inc1", Neuron("inc2", 5, 6, 1)),
    (TinyInception, "inc1.b3.2", 2),  # inside a branch: rows cannot broadcast through the concat -> repeats
])
@pytest.mark.parametrize("baseline", ["mean", "zero"])
def test_batched_segment_and_full_equal_naive(cls, layer, target, baseline):
    model, x = make(cls), image()
    naive = ground_truth_naive(model, x, target, layer, baseline=baseline)
    assert naive.abs().max() > 0
    for kw in ({}, {"chunk": 1}, {"chunk": 3, "use_segment": False}, {"use_segment": False}):
        torch.testing.assert_close(ground_truth_contributions(model, x, target, layer, baseline=baseline, **kw), naive,
                                   rtol=1e-9, atol=1e-12)
    assert count_hooks(model) == 0


def test_gap_correlates_with_ground_truth_on_the_top_stage():
    model, x = make(TinyVGG), image()
    gt = ground_truth_contributions(model, x, 3, "stages.stage3", baseline="zero")
    alpha = GAP(model).attribute(x, target=3, layer="stages.stage3").contributions[0]
    pcc = torch.corrcoef(torch.stack([gt, alpha]))[0, 1]  # Eq. (12)
    assert pcc > 0.9


def test_mean_baseline_is_degenerate_before_global_average_pooling():
    # Documented caveat: ResNet's last stage reaches the logits through GAP + linear only.
    model, x = make(TinyResNet), image()
    drops = ground_truth_contributions(model, x, 1, "stages.s3", baseline="mean")
    assert drops.abs().max() < 1e-12
    assert ground_truth_contributions(model, x, 1, "stages.s3", baseline="zero").abs().max() > 1e-3


def test_dataset_channel_means():
    model, xs = make(TinyVGG), image(batch=4)
    means = dataset_channel_means(model, [xs[:2], xs[2:]], "stages.stage2")
    acts = model.stages["stage1"](xs)
    expected = model.stages["stage2"](acts).mean(dim=(0, 2, 3))
    torch.testing.assert_close(means, expected)
    drops = ground_truth_contributions(model, xs[:1], 0, "stages.stage2", baseline=means)
    torch.testing.assert_close(drops, ground_truth_naive(model, xs[:1], 0, "stages.stage2", baseline=means))
