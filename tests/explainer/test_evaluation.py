import math
import itertools

import pytest
import torch

from tests.explainer.explainer_models import OneConvMeanHead
from xailib.explainer.evaluation import (best_threshold, contribution_entropy, ground_truth_contributions,
                                         part_contribution_error, part_contributions, part_removal_effects,
                                         relative_deviation, threshold_accuracy)
from xailib.layers import count_hooks


def test_contribution_entropy_by_hand():
    h = contribution_entropy(torch.tensor([[1.0, 1.0, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0], [-1.0, 1.0, 1.0, -1.0],
                                           [0.0, 0.0, 0.0, 0.0]]))
    torch.testing.assert_close(h[:3], torch.tensor([math.log(2), 0.0, math.log(4)]))
    assert math.isnan(float(h[3]))
    # c = (1/4, 3/4): H = -(1/4 ln 1/4 + 3/4 ln 3/4)
    expected = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert float(contribution_entropy(torch.tensor([[1.0, -3.0]]))[0]) == pytest.approx(expected, rel=1e-6)


def test_best_threshold_by_hand():
    assert best_threshold(torch.tensor([-2.0, -1.0, 0.5, 3.0]), torch.tensor([0, 0, 1, 1])) == (-0.25, 1.0)
    # no perfect cut: 3/4 at tau = 0 and at tau = 2.5; the one closer to 0 wins
    tau, acc = best_threshold(torch.tensor([-1.0, 1.0, 2.0, 3.0]), torch.tensor([0, 1, 0, 1]))
    assert (tau, acc) == (0.0, 0.75)
    # ties of score cannot be split
    tau, acc = best_threshold(torch.tensor([1.0, 1.0, 1.0]), torch.tensor([0, 1, 1]))
    assert acc == pytest.approx(2 / 3) and tau == 0.0
    assert threshold_accuracy(torch.tensor([1.0, 1.0, 1.0]), torch.tensor([0, 1, 1]), tau) == pytest.approx(2 / 3)


def test_best_threshold_equals_brute_force():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        scores = torch.randint(-4, 5, (9,), generator=g).float() / 2
        labels = torch.randint(0, 2, (9,), generator=g)
        tau, acc = best_threshold(scores, labels)
        brute = max(threshold_accuracy(scores, labels, float(t) - 0.01) for t in itertools.chain(scores, [99.0]))
        assert acc == pytest.approx(brute)
        assert threshold_accuracy(scores, labels, tau) == pytest.approx(acc)


def test_relative_deviation_by_hand():
    got = relative_deviation(torch.tensor([0.0, 2.0, 4.0]), torch.tensor([1.0, 2.0, 3.0]))
    torch.testing.assert_close(got, torch.tensor([0.25, 0.0, 0.25]))
    with pytest.raises(ValueError, match="all equal"):
        relative_deviation(torch.ones(3), torch.zeros(3))


def test_part_contributions_and_errors_by_hand():
    contrib = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, 1.0, 0.0, 1.0]])
    got = part_contributions(contrib, {"head": [0, 2], "legs": [3]})        # filter 1 belongs to no part
    torch.testing.assert_close(got, torch.tensor([[4.0, 4.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="more than one part"):
        part_contributions(contrib, {"head": [0, 2], "legs": [2]})
    y = torch.tensor([6.0, 2.0])
    delta = torch.tensor([[1.0, 2.0], [1.0, -1.0]])                          # image 2: effects sum to 0
    y_star = ground_truth_contributions(y, delta)
    torch.testing.assert_close(y_star[0], torch.tensor([2.0, 4.0]))
    assert bool(y_star[1].isnan().all())
    err = part_contribution_error(got, y_star, y)
    torch.testing.assert_close(err, torch.tensor([2.0 / 6.0, 0.0]))           # only image 1 counts: E[y] = 6


@pytest.mark.parametrize("inplace", [False, True])
def test_part_removal_effects_by_hand_and_batched(inplace):
    model = OneConvMeanHead(inplace=inplace)
    images = torch.rand(5, 1, 2, 2, generator=torch.Generator().manual_seed(1)) + 0.1
    y, delta = part_removal_effects(model, "conv", images, target=0, groups={"a": [0], "b": [1]}, batch_size=2)
    mean = images.mean(dim=(1, 2, 3))
    # out_0 = 3 mean(x_1) - mean(x_2) = 3m - 2m; removing x_1 takes away 3m, removing x_2 takes away -2m
    torch.testing.assert_close(y, mean)
    torch.testing.assert_close(delta, torch.stack([3 * mean, -2 * mean], 1))
    one = torch.cat([part_removal_effects(model, "conv", images[i:i + 1], 0, {"a": [0], "b": [1]})[1]
                     for i in range(5)])
    torch.testing.assert_close(delta, one)
    assert count_hooks(model) == 0
    with pytest.raises(ValueError, match="ints in 0..1"):
        part_removal_effects(model, "conv", images, 0, {"a": [5]})
    assert count_hooks(model) == 0
