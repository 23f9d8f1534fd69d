"""The MMD of the floor (xailib.metrics, Gretton et al. 2012): hand-computed values, the literal double-loop
reference, batching, the median heuristic, permutation tests and p-value corrections."""

import math

import pytest
import torch

from xailib.metrics import (adjust_p_values, gaussian_kernel, median_heuristic, mmd2, mmd2_batched,
                            mmd2_from_kernel, mmd2_permutation_test, mmd2_reference, pairwise_sq_dists,
                            random_partitions)


def test_mmd_by_hand():
    x, y = torch.tensor([[0.0], [1.0]]), torch.tensor([[0.0], [2.0]])
    # k(a, b) = exp(-(a - b)^2 / 2): k_xx(0,1) = e^-.5, k_yy(0,2) = e^-2, k_xy = 1, e^-2, e^-.5, e^-.5
    e5, e2 = math.exp(-0.5), math.exp(-2.0)
    unbiased = e5 + e2 - 2 / 4 * (1 + e2 + 2 * e5)
    biased = (2 + 2 * e5) / 4 + (2 + 2 * e2) / 4 - 2 / 4 * (1 + e2 + 2 * e5)
    assert mmd2(x, y, 1.0).item() == pytest.approx(unbiased, abs=1e-12)
    assert mmd2(x, y, 1.0, unbiased=False).item() == pytest.approx(biased, abs=1e-12)
    assert mmd2_reference(x, y, 1.0) == pytest.approx(unbiased, abs=1e-12)
    # pooled {0, 1, 0, 2}: distances 1, 0, 2, 1, 1, 2 -> median 1
    assert median_heuristic(pairwise_sq_dists(torch.cat([x, y]))).item() == 1.0
    assert mmd2(x, y).item() == pytest.approx(unbiased, abs=1e-12)


def test_mmd_three_points_and_identical_samples():
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    y = torch.tensor([[0.0, 0.0], [0.0, 0.0], [3.0, 4.0]])
    # sigma = 5: k(0, (3,4)) = exp(-25 / 50) = e^-.5
    e = math.exp(-0.5)
    kxx = e  # one off-diagonal pair (twice, / 2)
    kyy = (2 * 1 + 4 * e) / 6
    kxy = (2 * 1 + 2 * e + 1 * 1 + e) / 6  # rows x=0: (1, 1, e), x=(3,4): (e, e, 1)
    assert mmd2(x, y, 5.0).item() == pytest.approx(kxx + kyy - 2 * kxy, abs=1e-12)
    same = torch.randn(6, 3)
    assert mmd2(same, same.clone(), unbiased=False).item() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("unbiased", [True, False])
@pytest.mark.parametrize("bandwidth", [None, 0.7])
def test_mmd_matches_double_loop(unbiased, bandwidth):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(7, 3, generator=g), torch.randn(9, 3, generator=g) + 0.5
    fast = mmd2(x, y, bandwidth, unbiased=unbiased).item()
    assert fast == pytest.approx(mmd2_reference(x, y, bandwidth, unbiased=unbiased), abs=1e-12)


def test_batched_equals_one_by_one():
    g = torch.Generator().manual_seed(1)
    xs, ys = torch.randn(5, 6, 4, generator=g), torch.randn(5, 8, 4, generator=g) * 2
    batched = mmd2_batched(xs, ys)
    assert batched.shape == (5,)
    for i in range(5):
        assert batched[i].item() == pytest.approx(mmd2(xs[i], ys[i]).item(), abs=1e-12)
    sigma = torch.linspace(0.5, 2, 5)
    batched = mmd2_batched(xs, ys, sigma, unbiased=False)
    for i in range(5):
        assert batched[i].item() == pytest.approx(mmd2_reference(xs[i], ys[i], sigma[i], unbiased=False), abs=1e-12)


def test_median_heuristic_fallbacks_and_padding():
    z = torch.zeros(5, 2)
    z[4] = 1.0  # 6 of 10 pairs are duplicates: median 0 -> mean of the positive distances, sqrt(2)
    assert median_heuristic(pairwise_sq_dists(z)).item() == pytest.approx(math.sqrt(2))
    assert median_heuristic(pairwise_sq_dists(torch.zeros(3, 2))).item() == 1.0
    pts = torch.tensor([[0.0], [1.0], [3.0], [100.0]])
    valid = torch.tensor([True, True, True, False])  # the last point is padding
    assert median_heuristic(pairwise_sq_dists(pts), valid).item() == 2.0  # distances 1, 3, 2


def test_masks_give_the_same_estimate():
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(4, 2, generator=g), torch.randn(5, 2, generator=g)
    z = torch.cat([x, y])
    k = gaussian_kernel(pairwise_sq_dists(z), 1.3)
    mask = torch.tensor([True] * 4 + [False] * 5)
    perm = torch.randperm(9, generator=g)
    est = mmd2_from_kernel(k[perm][:, perm], mask[perm][None])  # same partition, points shuffled
    assert est.item() == pytest.approx(mmd2(x, y, 1.3).item(), abs=1e-12)


def test_random_partitions():
    valid = torch.tensor([[True] * 6 + [False] * 2, [True] * 8])
    parts = random_partitions(torch.tensor([2, 5]), valid, 50, seed=3)
    assert parts.shape == (2, 50, 8)
    assert (parts.sum(-1) == torch.tensor([[2], [5]])).all() and not parts[0, :, 6:].any()
    assert torch.equal(parts, random_partitions(torch.tensor([2, 5]), valid, 50, seed=3))
    assert not torch.equal(parts, random_partitions(torch.tensor([2, 5]), valid, 50, seed=4))


def test_permutation_test_same_and_shifted():
    g = torch.Generator().manual_seed(1)  # this draw's p under H0 is 0.49; the uniformity test below covers chance
    x, y = torch.randn(30, 3, generator=g), torch.randn(30, 3, generator=g)
    same = mmd2_permutation_test(x, y, n_perm=500, seed=0)
    shifted = mmd2_permutation_test(x, y + 1.5, n_perm=500, seed=0)
    assert same.p_value.item() > 0.2
    assert shifted.p_value.item() == pytest.approx(1 / 501)  # no permutation reaches it
    assert same.mmd2.item() == pytest.approx(mmd2(x, y).item(), abs=1e-12)
    batched = mmd2_permutation_test(torch.stack([x, x]), torch.stack([y, y + 1.5]), n_perm=500, seed=0,
                                    max_bytes=10_000)  # many permutation chunks
    torch.testing.assert_close(batched.p_value, torch.stack([same.p_value, shifted.p_value]))


def test_permutation_p_values_are_uniform_under_h0():
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(200, 10, 2, generator=g), torch.randn(200, 10, 2, generator=g)
    p = mmd2_permutation_test(x, y, n_perm=99, seed=1).p_value
    assert 0.02 <= (p <= 0.1).double().mean().item() <= 0.2  # about 10 % of 200 groups under H0
    assert (p > 0).all() and (p <= 1).all()


def test_adjust_p_values():
    p = torch.tensor([[0.01, 0.04, 0.03, 0.5]])
    torch.testing.assert_close(adjust_p_values(p, "holm"), torch.tensor([[0.04, 0.09, 0.09, 0.5]], dtype=torch.float64))
    torch.testing.assert_close(adjust_p_values(p, "bonferroni"),
                               torch.tensor([[0.04, 0.16, 0.12, 1.0]], dtype=torch.float64))
    torch.testing.assert_close(adjust_p_values(p, None), p.double())
    with pytest.raises(ValueError, match="holm"):
        adjust_p_values(p, "fdr")


def test_mmd_bad_input():
    with pytest.raises(ValueError, match=r"\[n, d\]"):
        mmd2(torch.randn(5), torch.randn(5))
    with pytest.raises(ValueError, match="same G and d"):
        mmd2_batched(torch.randn(2, 4, 3), torch.randn(2, 4, 2))
    with pytest.raises(ValueError, match="at least 2"):
        mmd2(torch.randn(1, 2), torch.randn(3, 2), 1.0)
    with pytest.raises(ValueError, match="positive"):
        mmd2(torch.randn(3, 2), torch.randn(3, 2), -1.0)
    with pytest.raises(TypeError):
        mmd2([[0.0]], torch.randn(3, 1))
