"""AfI concept importance (Sec. 3.2, 4.5): the batched path against the literal loops, a concept that differs from
the random set against one that does not, normalisation, draws, seeds and corrections."""

import pytest
import torch
from tiny_models import TinyVGG, make

from tests.afi.afi_models import HandNet
from xailib.afi.attribution import channel_importance, feature_importance, meta_detector
from xailib.afi.concepts import COLUMNS, concept_importance, concept_importance_reference
from xailib.data.concepts import ConceptSet
from xailib.layers import count_hooks
from xailib.metrics import mmd2


def uniform(n, seed, shape=(1, 2, 2)):
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


HAND_CIS = {"conv": torch.tensor([[1.0, 0.375], [0.2, 1.0]], dtype=torch.float64),
            "relu": torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)}


def hand_sets(n=30):
    bright = ConceptSet.from_tensors("bright", 0.6 + 0.4 * uniform(n, 1))
    plain = ConceptSet.from_tensors("plain", uniform(n, 2))
    return [bright, plain], ConceptSet.from_tensors("random_0", uniform(n, 3))


def test_table_columns_and_significance():
    model = HandNet()
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    sets, rnd = hand_sets()
    df = concept_importance(model, sets, rnd, HAND_CIS, n_perm=200, classes=["k0", "k1"], n_boot=500)
    assert list(df.columns) == COLUMNS and len(df) == 4
    assert df["class"].tolist() == ["k0", "k0", "k1", "k1"] and df["concept"].tolist() == ["bright", "plain"] * 2
    bright, plain = df[df.concept == "bright"], df[df.concept == "plain"]
    assert bright.p_value.to_numpy() == pytest.approx([1 / 201] * 2) and bright.significant.all()
    assert (plain.p_value > 0.05).all() and not plain.significant.any()
    assert (bright.score.to_numpy() > plain.score.to_numpy()).all()
    assert df.groupby("class").score.sum().to_numpy() == pytest.approx([1.0, 1.0])  # "sum": shares of one class
    assert (df.n_concept == 30).all() and (df.n_random == 30).all() and (df.n_draws == 1).all()
    assert df.score_std.isna().all()  # one draw: no spread
    assert count_hooks(model) == 0 and not model.training
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())


def test_mmd_column_is_the_sum_over_layers():
    model = HandNet()
    sets, rnd = hand_sets(12)
    df = concept_importance(model, sets, rnd, HAND_CIS, n_perm=10, n_boot=100)
    out_c = [meta_detector(model, s.images, HAND_CIS, flatten=True) for s in sets]
    out_r = meta_detector(model, rnd.images, HAND_CIS, flatten=True)
    for k in range(2):
        for c in range(2):
            want = sum(mmd2(out_c[c][n][k], out_r[n][k]).item() for n in HAND_CIS)
            assert df.mmd2.iloc[2 * k + c] == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("kw", [dict(n_per_draw=4, n_draws=3, correction="holm"),
                                dict(n_per_draw=3, n_draws=2, normalize="max", bandwidth=2.0, unbiased=False)])
def test_matches_reference_vgg(kw):
    model = make(TinyVGG, seed=0)
    x = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    delta = 0.3 * torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    layers = ["stages.stage2", "stages.stage3"]
    cis = channel_importance(feature_importance(model, x, delta, torch.tensor([0, 1, 0, 1, 0, 1]), layers))
    sets = {"a": torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64),
            "b": 0.5 * torch.rand(7, 3, 16, 16, generator=torch.Generator().manual_seed(3), dtype=torch.float64)}
    rnd = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    fast = concept_importance(model, sets, rnd, cis, layers, n_perm=20, seed=7, n_boot=200, max_bytes=20_000, **kw)
    ref = concept_importance_reference(model, sets, rnd, cis, layers, n_perm=20, seed=7, n_boot=200, **kw)
    for col in ("score", "score_std", "ci_low", "ci_high", "mmd2", "p_value", "p_adjusted"):
        assert fast[col].to_numpy() == pytest.approx(ref[col].to_numpy(), abs=1e-10), col
    assert fast.significant.tolist() == ref.significant.tolist()
    assert fast.n_concept.tolist() == [6, 7, 6, 7] and (fast.n_per_draw == kw["n_per_draw"]).all()
    if kw.get("normalize") == "max":
        # each draw gives its top concept 1; the means over draws stay in [0, 1] and sum to >= 1 per class
        assert (fast.score <= 1).all() and (fast.groupby("class").score.sum() >= 1 - 1e-12).all()
    assert count_hooks(model) == 0


def test_hand_reference_all_images():
    model = HandNet()
    sets, rnd = hand_sets(6)
    kw = dict(n_perm=15, seed=3, n_boot=100, bandwidth={"conv": 0.5, "relu": 0.8})
    fast = concept_importance(model, sets, rnd, HAND_CIS, **kw)
    ref = concept_importance_reference(model, sets, rnd, HAND_CIS, **kw)
    for col in ("score", "mmd2", "p_value"):
        assert fast[col].to_numpy() == pytest.approx(ref[col].to_numpy(), abs=1e-10)


def test_draws_seeds_and_spread():
    model = HandNet()
    sets, rnd = hand_sets(20)
    kw = dict(n_per_draw=10, n_draws=8, n_perm=50, n_boot=500)
    a = concept_importance(model, sets, rnd, HAND_CIS, seed=1, **kw)
    b = concept_importance(model, sets, rnd, HAND_CIS, seed=1, **kw)
    c = concept_importance(model, sets, rnd, HAND_CIS, seed=2, **kw)
    assert a.equals(b)
    assert not a.score.equals(c.score)
    assert (a.score_std > 0).all() and (a.ci_low <= a.score).all() and (a.score <= a.ci_high).all()
    assert (a.n_draws == 8).all() and (a.n_per_draw == 10).all()
    # sizes may differ once draws are subsets
    sets2 = [sets[0], ConceptSet.from_tensors("plain", sets[1].images[:12])]
    d = concept_importance(model, sets2, rnd, HAND_CIS, seed=1, **kw)
    assert d.n_concept.tolist() == [20, 12, 20, 12]


def test_corrections():
    model = HandNet()
    sets, rnd = hand_sets(10)
    sets = sets + [ConceptSet.from_tensors("plain2", uniform(10, 9))]
    kw = dict(n_perm=40, n_boot=100)
    none = concept_importance(model, sets, rnd, HAND_CIS, **kw)
    bonf = concept_importance(model, sets, rnd, HAND_CIS, correction="bonferroni", **kw)
    holm = concept_importance(model, sets, rnd, HAND_CIS, correction="holm", **kw)
    assert (none.p_adjusted == none.p_value).all()
    assert bonf.p_adjusted.to_numpy() == pytest.approx((3 * none.p_value).clip(upper=1).to_numpy())
    assert (holm.p_adjusted >= holm.p_value).all() and (holm.p_adjusted <= bonf.p_adjusted).all()


def test_all_negative_estimates_give_zero_scores():
    model = HandNet()
    same = uniform(8, 5)
    sets = [ConceptSet.from_tensors("copy", same.clone())]
    df = concept_importance(model, sets, ConceptSet.from_tensors("r", same.clone()), HAND_CIS, n_perm=5, n_boot=50)
    assert (df.mmd2 < 0).all()  # the unbiased estimate of identical samples is negative
    assert (df.score == 0).all() and not df.score.isna().any()


def test_pooled_distances_from_blocks_equal_the_gathered_pooled_samples():
    from xailib.afi.concepts import _pool_layout, _pooled_sq_dists
    from xailib.metrics import pairwise_sq_dists
    sizes, n_random = [3, 5, 2], 4                       # unequal sizes: padded concept rows
    f = torch.randn(2, sum(sizes) + n_random, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    index, valid, n_max = _pool_layout(sizes, n_random)
    fast = _pooled_sq_dists(f, index[:, :n_max], sum(sizes))
    slow = pairwise_sq_dists(f[:, index])                 # every pooled sample gathered, [K, C, P, P]
    assert fast.shape == slow.shape == (2, 3, n_max + n_random, n_max + n_random)
    torch.testing.assert_close(fast, slow, rtol=0, atol=1e-12)
    # by hand: concept 1's second image against the random set's first
    torch.testing.assert_close(fast[1, 1, 1, n_max], ((f[1, 4] - f[1, 10]) ** 2).sum(), rtol=0, atol=1e-12)
