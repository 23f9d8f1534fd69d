"""Tests for xailib.metrics: answers by hand, agreement with scipy, literal references, clear errors."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import pearsonr, rankdata, spearmanr
from torch import nn

from xailib.metrics import (
    BootstrapCI,
    auc,
    average_ranks,
    bootstrap_ci,
    deletion_curve,
    insertion_curve,
    mask_iou,
    mean_ci_table,
    pcc,
    pearson,
    pointing_game,
    spearman,
    spearman_rank,
    threshold_iou,
)


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)


def sigmoid(s: float) -> float:
    return 1.0 / (1.0 + math.exp(-s))


# ---- rank and linear correlation ------------------------------------------------------------------------------


def test_average_ranks_match_scipy_with_ties():
    v = torch.tensor([[3.0, 1.0, 3.0, 2.0, 3.0], [0.0, 0.0, 0.0, 0.0, 0.0], [5.0, 4.0, 3.0, 2.0, 1.0]])
    # by hand, row 0: 1 -> 1, 2 -> 2, the three 3s share ranks 3, 4, 5 -> 4
    assert average_ranks(v)[0].tolist() == [4.0, 1.0, 4.0, 2.0, 4.0]
    assert average_ranks(v)[1].tolist() == [3.0] * 5
    for row, got in zip(v, average_ranks(v)):
        np.testing.assert_array_equal(got.numpy(), rankdata(row.numpy(), method="average"))
    assert average_ranks(v).dtype == torch.float64


def test_spearman_by_hand_scipy_batched_and_nan():
    # ranks are the values + 1: centred (-1, 0, 1) and (0, 1, -1), sum of products -1, norms 2 -> -1/2 exactly
    assert spearman(torch.tensor([[0.0, 1.0, 2.0]]), torch.tensor([[1.0, 2.0, 0.0]])).item() == -0.5
    # any monotone map of a gives rank correlation 1
    a = torch.randn(2, 10)
    assert torch.equal(spearman(a, a.exp() * 3), torch.ones(2, dtype=torch.float64))
    a = torch.randint(0, 4, (6, 3, 4)).float()  # many ties
    b = torch.randint(0, 3, (6, 3, 4)).float()
    a[0] = 2.0  # a constant map
    got = spearman(a, b)
    assert got.shape == (6,) and got.dtype == torch.float64
    assert torch.isnan(got[0])
    for i in range(1, 6):  # batched == one by one == scipy
        want = spearmanr(a[i].flatten().numpy(), b[i].flatten().numpy())[0]
        assert got[i].item() == pytest.approx(want, abs=1e-12)
        assert got[i].item() == spearman(a[i:i + 1], b[i:i + 1]).item()
    assert spearman_rank is spearman


def test_pearson_by_hand_scipy_last_dim_and_nan():
    # a - mean = (-1, 0, 1), b - mean = (0, 1, -1): cov = -1/3, var_a = var_b = 2/3 -> rho = -1/2
    rho = pearson(torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 2.0, 0.0]))
    assert rho.item() == pytest.approx(-0.5, abs=1e-15) and rho.dtype == torch.float64
    a, b = torch.randn(2, 3, 7, dtype=torch.float64), torch.randn(2, 3, 7, dtype=torch.float64)
    got = pearson(a, b)
    assert got.shape == (2, 3)  # along the last dimension, not per flattened row
    for i in range(2):
        for j in range(3):
            assert got[i, j].item() == pytest.approx(pearsonr(a[i, j].numpy(), b[i, j].numpy())[0], abs=1e-12)
    assert pearson(a, -3 * a + 1).sub(-1).abs().max() < 1e-12
    assert torch.isnan(pearson(torch.zeros(4), torch.arange(4.0)))  # undefined for a constant vector
    assert torch.isnan(pearson(torch.full((4,), 1e6), torch.arange(4.0)))
    assert pcc is pearson


def test_correlation_errors():
    a = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="same shape"):
        spearman(a, torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"x\[None\]"):
        spearman(torch.zeros(3), torch.zeros(3))  # one vector: needs the batch dimension
    with pytest.raises(TypeError, match="torch.Tensor"):
        spearman([[0, 1]], a)
    with pytest.raises(ValueError, match="one shape"):
        pearson(a, a[:, :2])
    with pytest.raises(TypeError, match="torch.Tensor"):
        pearson(np.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match=r"\[B, P\]"):
        average_ranks(torch.zeros(2, 2, 2))


# ---- IoU and the pointing game -----------------------------------------------------------------------------------


def test_mask_iou_by_hand():
    a = torch.zeros(4, 4, dtype=torch.bool)
    a[:2, :2] = True  # 4 pixels
    b = torch.zeros(4, 4, dtype=torch.bool)
    b[0] = True  # 4 pixels, 2 shared -> 2 / (4 + 4 - 2)
    assert mask_iou(a, b).item() == pytest.approx(2 / 6)
    assert mask_iou(a, a).item() == 1.0
    empty = torch.zeros(4, 4, dtype=torch.bool)
    assert mask_iou(empty, empty).item() == 0.0
    assert mask_iou(a, ~a).item() == 0.0
    torch.testing.assert_close(mask_iou(a[None], torch.stack([a, b, empty])), torch.tensor([1.0, 1 / 3, 0.0]))
    with pytest.raises(ValueError, match="same H, W"):
        mask_iou(a, torch.zeros(3, 3, dtype=torch.bool))
    with pytest.raises(TypeError):
        mask_iou(a, np.zeros((4, 4), bool))


def test_threshold_iou_by_hand():
    m = torch.tensor([[4.0, 3.0, 1.0, 0.0], [2.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[False, True, True, False], [True, True, False, False]])
    maps = torch.stack([m, 10 * m])
    masks = torch.stack([mask, mask])
    # relative 0.5: pixels >= 2 (resp. 20): {(0,0), (0,1), (1,0)}; shared with the mask: (0,1), (1,0) -> 2 / 5
    torch.testing.assert_close(threshold_iou(maps, masks, 0.5), torch.tensor([2 / 5, 2 / 5]))
    # absolute 3: m keeps {(0,0), (0,1)}: shared (0,1), union 2 + 4 - 1 -> 1 / 5;
    # 10 m keeps (0,0), (0,1), (0,2), (1,0): shared (0,1), (0,2), (1,0), union 4 + 4 - 3 -> 3 / 5
    torch.testing.assert_close(threshold_iou(maps, masks, 3.0, relative=False), torch.tensor([1 / 5, 3 / 5]))
    # relative 1: only the maximum (0,0), not in the mask -> 0; batched == one by one
    assert threshold_iou(maps, masks, 1.0).tolist() == [0.0, 0.0]
    assert threshold_iou(maps[1:], masks[1:], 0.5).item() == threshold_iou(maps, masks, 0.5)[1].item()


def test_threshold_iou_errors():
    maps, masks = torch.rand(2, 3, 3), torch.ones(2, 3, 3, dtype=torch.bool)
    with pytest.raises(TypeError, match="BoolTensor"):
        threshold_iou(maps, masks.float())
    with pytest.raises(ValueError, match="shape of maps"):
        threshold_iou(maps, masks[:1])
    with pytest.raises(ValueError, match=r"\[B, H, W\]"):
        threshold_iou(maps[None], masks[None])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        threshold_iou(maps, masks, 1.5)
    with pytest.raises(ValueError, match="NaN"):
        threshold_iou(torch.full((2, 3, 3), float("nan")), masks)


def _mask(*pixels, size=5):
    m = torch.zeros(size, size, dtype=torch.bool)
    for r, c in pixels:
        m[r, c] = True
    return m


def test_pointing_game_by_hand_tolerance_and_empty_mask():
    peak = torch.zeros(5, 5)
    peak[2, 2] = 9.0  # the maximum at (2, 2)
    maps = peak.expand(5, 5, 5)
    masks = torch.stack([
        _mask((2, 2), (0, 0)),  # on the maximum
        _mask((2, 3)),  # 1 px away
        _mask((3, 3)),  # sqrt(2) px away
        _mask((2, 4), (4, 4)),  # 2 px away
        _mask(),  # empty: no game
    ])
    hits = pointing_game(maps, masks, tolerance=0)
    assert hits[:4].tolist() == [1.0, 0.0, 0.0, 0.0] and torch.isnan(hits[4]) and hits.dtype == torch.float32
    assert pointing_game(maps, masks, tolerance=1)[:4].tolist() == [1.0, 1.0, 0.0, 0.0]
    assert pointing_game(maps, masks, tolerance=1.5)[:4].tolist() == [1.0, 1.0, 1.0, 0.0]
    assert pointing_game(maps, masks, tolerance=2)[:4].tolist() == [1.0, 1.0, 1.0, 1.0]
    # ties: two maxima at (0, 4) and (4, 0); the first in row-major order, (0, 4), points
    tie = torch.zeros(1, 5, 5)
    tie[0, 0, 4] = tie[0, 4, 0] = 1.0
    assert pointing_game(tie, _mask((0, 4))[None]).item() == 1.0
    assert pointing_game(tie, _mask((4, 0))[None]).item() == 0.0
    with pytest.raises(ValueError, match="tolerance"):
        pointing_game(maps, masks, tolerance=-1)
    with pytest.raises(TypeError, match="BoolTensor"):
        pointing_game(maps, masks.long())


def pointing_game_reference(maps, masks, tolerance):
    """Literal: scan for the first maximum, then the nearest mask pixel, one image at a time."""
    out = []
    for m, k in zip(maps.tolist(), masks.tolist()):
        h, w = len(m), len(m[0])
        best, at = -math.inf, None
        for r in range(h):
            for c in range(w):
                if m[r][c] > best:
                    best, at = m[r][c], (r, c)
        inside = [(r, c) for r in range(h) for c in range(w) if k[r][c]]
        if not inside:
            out.append(math.nan)
            continue
        near = min(math.hypot(r - at[0], c - at[1]) for r, c in inside)
        out.append(1.0 if near <= tolerance else 0.0)
    return torch.tensor(out)


@pytest.mark.parametrize("tolerance", [0, 1, 2.5, 15])
def test_pointing_game_matches_literal_reference(tolerance):
    maps = torch.randint(0, 6, (40, 7, 9)).float()  # integer values: many tied maxima
    masks = torch.rand(40, 7, 9) < 0.08
    masks[:3] = False
    torch.testing.assert_close(pointing_game(maps, masks, tolerance), pointing_game_reference(maps, masks, tolerance),
                               equal_nan=True)


# ---- deletion and insertion ---------------------------------------------------------------------------------------


class SumModel(nn.Module):
    """Logits ``[sum of all input values, 0]``: the softmax of class 0 is ``sigmoid(sum)``.

    Records its mode and whether gradients were on at each call; names its classes, so that checking a
    target needs no forward pass.
    """

    class_names = ["sum", "zero"]

    def __init__(self):
        super().__init__()
        self.seen: list[tuple[bool, bool]] = []

    def forward(self, x):
        self.seen.append((self.training, torch.is_grad_enabled()))
        s = x.sum((1, 2, 3))
        return torch.stack([s, torch.zeros_like(s)], 1)


# one 2 x 2 image, the map equal to the image: pixels leave in the order 4, 3, 2, 1
IMAGE = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]], dtype=torch.float64)
MAP = IMAGE[:, 0]


def _sig(sums):
    return torch.tensor([[sigmoid(s) for s in sums]], dtype=torch.float64)


def test_deletion_and_insertion_by_hand():
    model = SumModel()
    close = dict(rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(deletion_curve(model, IMAGE, MAP, 0, steps=4), _sig([10, 6, 3, 1, 0]), **close)
    torch.testing.assert_close(insertion_curve(model, IMAGE, MAP, 0, steps=4), _sig([0, 4, 7, 9, 10]), **close)
    # steps = 3: floor(k * 4 / 3) = 0, 1, 2, 4 pixels
    torch.testing.assert_close(deletion_curve(model, IMAGE, MAP, 0, steps=3), _sig([10, 6, 3, 0]), **close)
    torch.testing.assert_close(deletion_curve(model, IMAGE, MAP, 0, steps=2), _sig([10, 3, 0]), **close)
    # class 1: 1 - sigmoid(sum)
    torch.testing.assert_close(deletion_curve(model, IMAGE, MAP, 1, steps=4), 1 - _sig([10, 6, 3, 1, 0]), **close)
    # removed pixels take the baseline value 1: 10, 4 -> 1, 3 -> 1, 2 -> 1, 1 -> 1
    torch.testing.assert_close(deletion_curve(model, IMAGE, MAP, 0, steps=4, baseline=1.0), _sig([10, 7, 5, 4, 4]),
                               **close)
    ones = torch.ones_like(IMAGE)
    assert torch.equal(deletion_curve(model, IMAGE, MAP, 0, 4, baseline=ones),
                       deletion_curve(model, IMAGE, MAP, 0, 4, baseline=1.0))
    torch.testing.assert_close(insertion_curve(model, IMAGE, MAP, 0, 4, baseline=ones), _sig([4, 7, 9, 10, 10]),
                               **close)


def test_curve_ties_are_stable_and_channels_move_together():
    model = SumModel()
    flat = torch.ones(1, 2, 2, dtype=torch.float64)  # all tied: pixel 0, 1, 2, 3 in that order
    torch.testing.assert_close(deletion_curve(model, IMAGE, flat, 0, steps=4), _sig([10, 9, 7, 4, 0]))
    torch.testing.assert_close(insertion_curve(model, IMAGE, flat, 0, steps=4), _sig([0, 1, 3, 6, 10]))
    two = torch.cat([IMAGE, 0.1 * IMAGE], 1)  # [1, 2, 2, 2]: removing a pixel removes 1.1 x its value
    torch.testing.assert_close(deletion_curve(model, two, MAP, 0, steps=4), _sig([11, 6.6, 3.3, 1.1, 0]))


def test_curves_eval_mode_no_grad_and_mode_restored():
    model = SumModel().train()
    with torch.enable_grad():
        deletion_curve(model, IMAGE, MAP, 0, steps=4, batch_size=2)
    assert model.training  # restored
    assert len(model.seen) == 3 and all(s == (False, False) for s in model.seen)  # 5 images in batches of 2


def test_curves_batched_equal_one_by_one_and_batch_size_free():
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 5, 3))
    images, maps = torch.rand(3, 2, 4, 5), torch.rand(3, 4, 5)
    target = torch.tensor([0, 2, 1])
    for curve in (deletion_curve, insertion_curve):
        full = curve(model, images, maps, target, steps=7, baseline=0.5, batch_size=5)
        assert full.shape == (3, 8) and torch.isfinite(full).all()
        assert torch.allclose(full, curve(model, images, maps, target, steps=7, baseline=0.5, batch_size=100),
                              atol=1e-6)
        for i in range(3):
            one = curve(model, images[i:i + 1], maps[i:i + 1], int(target[i]), steps=7, baseline=0.5)
            torch.testing.assert_close(one[0], full[i], atol=1e-6, rtol=1e-5)
    # the ends: deletion starts at the image, insertion ends at it
    p = model(images).softmax(1)[torch.arange(3), target].detach()
    torch.testing.assert_close(deletion_curve(model, images, maps, target, steps=7)[:, 0], p)
    torch.testing.assert_close(insertion_curve(model, images, maps, target, steps=7)[:, -1], p)
    pred = deletion_curve(model, images, maps, "predicted", steps=2)[:, 0]
    torch.testing.assert_close(pred, model(images).softmax(1).amax(1).detach())


def test_curve_errors():
    model = SumModel()
    with pytest.raises(ValueError, match="steps"):
        deletion_curve(model, IMAGE, MAP, 0, steps=0)
    with pytest.raises(ValueError, match="steps"):
        insertion_curve(model, IMAGE, MAP, 0, steps=2.5)
    with pytest.raises(ValueError, match="batch_size"):
        deletion_curve(model, IMAGE, MAP, 0, batch_size=0)
    with pytest.raises(ValueError, match=r"maps must be \[B, H, W\] = \(1, 2, 2\)"):
        deletion_curve(model, IMAGE, torch.zeros(1, 3, 3), 0)
    with pytest.raises(ValueError, match="float tensor"):
        deletion_curve(model, IMAGE, MAP.long(), 0)
    with pytest.raises(ValueError, match="images' shape"):
        deletion_curve(model, IMAGE, MAP, 0, baseline=torch.zeros(1, 1, 3, 3))
    with pytest.raises(TypeError, match="blurred copy"):
        insertion_curve(model, IMAGE, MAP, 0, baseline="blur")
    with pytest.raises(TypeError, match="nn.Module"):
        deletion_curve(lambda x: x, IMAGE, MAP, 0)
    with pytest.raises(ValueError, match="unsqueeze"):
        deletion_curve(model, IMAGE[0], MAP, 0)
    with pytest.raises(ValueError, match=r"outside the model.s 2 classes \(0..1\)"):
        deletion_curve(model, IMAGE, MAP, 2)
    with pytest.raises(TypeError, match="class index"):
        deletion_curve(model, IMAGE, MAP, 0.5)


def test_auc_known_curves():
    assert auc(torch.linspace(1, 0, 11, dtype=torch.float64)).item() == pytest.approx(0.5, abs=1e-15)
    curves = torch.tensor([[1.0, 1.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    torch.testing.assert_close(auc(curves), torch.tensor([1.0, 0.5, 0.25]))
    torch.testing.assert_close(auc(curves, dx=1.0), torch.tensor([2.0, 1.0, 0.5]))
    # the deletion curve of the sum model: trapezoids of sigmoid(10, 6, 3, 1, 0) at dx = 1/4
    s = [sigmoid(v) for v in (10, 6, 3, 1, 0)]
    want = 0.25 * (sum(s) - (s[0] + s[-1]) / 2)
    assert auc(deletion_curve(SumModel(), IMAGE, MAP, 0, steps=4)).item() == pytest.approx(want, rel=1e-12)
    with pytest.raises(ValueError, match="T >= 2"):
        auc(torch.ones(3, 1))
    with pytest.raises(ValueError, match="dx"):
        auc(curves, dx=0)


# ---- bootstrap confidence intervals --------------------------------------------------------------------------------


def test_bootstrap_matches_hand_rolled_numpy_and_is_deterministic():
    v = np.random.default_rng(5).normal(size=30)
    ci = bootstrap_ci(v, n_boot=2000, confidence=0.9, seed=3)
    rng = np.random.default_rng(3)
    means = v[rng.integers(0, 30, size=(2000, 30))].mean(1)
    low, high = np.percentile(means, [5, 95])
    assert (ci.low, ci.high, ci.mean, ci.n) == (low, high, v.mean(), 30)
    assert isinstance(ci, BootstrapCI) and ci.as_dict()["n"] == 30
    assert bootstrap_ci(v, 2000, 0.9, seed=3) == ci
    assert bootstrap_ci(torch.tensor(v), 2000, 0.9, seed=3) == ci  # a tensor gives the same numbers
    assert bootstrap_ci(v, 2000, 0.9, seed=4) != ci
    assert ci.low < ci.mean < ci.high


def test_bootstrap_width_shrinks_and_agrees_with_normal_theory():
    rng = np.random.default_rng(0)
    small = bootstrap_ci(rng.normal(size=20), n_boot=4000)
    big_values = rng.normal(size=5000)
    big = bootstrap_ci(big_values, n_boot=2000)  # 5000 x 2000 > 2**22: drawn in blocks
    assert big.high - big.low < (small.high - small.low) / 5
    half = 1.959964 * big_values.std() / math.sqrt(5000)  # the normal-theory half width
    assert big.high - big.low == pytest.approx(2 * half, rel=0.1)
    assert big.low < big.mean < big.high
    assert bootstrap_ci(big_values, n_boot=2000) == big


def test_bootstrap_nan_constant_and_errors():
    ci = bootstrap_ci([1.0, float("nan"), 3.0, float("nan")], n_boot=500)
    assert ci.n == 2 and ci.mean == 2.0 and 1.0 <= ci.low <= ci.high <= 3.0
    nothing = bootstrap_ci([float("nan")] * 3)
    assert nothing.n == 0 and math.isnan(nothing.mean) and math.isnan(nothing.low)
    same = bootstrap_ci([0.25] * 7, n_boot=100)
    assert (same.mean, same.low, same.high) == (0.25, 0.25, 0.25)
    with pytest.raises(ValueError, match="1-D"):
        bootstrap_ci(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci([1.0, 2.0], confidence=1.0)
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_ci([1.0, 2.0], n_boot=0)
    with pytest.raises(ValueError, match="inf"):
        bootstrap_ci([1.0, float("inf")])
    with pytest.raises(TypeError, match="numbers"):
        bootstrap_ci(["a", "b"])


def test_mean_ci_table():
    df = pd.DataFrame({"method": ["b", "a", "a", "b", "a", "b"], "layer": [1, 1, 1, 1, 1, 2],
                       "iou": [5.0, 1.0, 2.0, float("nan"), 3.0, 7.0]})
    table = mean_ci_table(df, "method", "iou", n_boot=500)
    assert list(table.columns) == ["method", "mean", "ci_low", "ci_high", "n"]
    assert table["method"].tolist() == ["a", "b"] and table["n"].tolist() == [3, 2]
    assert table["mean"].tolist() == [2.0, 6.0]
    a = bootstrap_ci([1.0, 2.0, 3.0], n_boot=500)
    assert (table.loc[0, "ci_low"], table.loc[0, "ci_high"]) == (a.low, a.high)
    two = mean_ci_table(df, ["method", "layer"], "iou", n_boot=200)
    assert two[["method", "layer", "n"]].values.tolist() == [["a", 1, 3], ["b", 1, 1], ["b", 2, 1]]
    assert two.loc[1, ["mean", "ci_low", "ci_high"]].tolist() == [5.0, 5.0, 5.0]
    with pytest.raises(ValueError, match="Unknown column"):
        mean_ci_table(df, "model", "iou")
    with pytest.raises(TypeError, match="DataFrame"):
        mean_ci_table(df.to_dict(), "method", "iou")


def test_confusion_matrix_and_pairs_by_hand():
    from xailib.metrics import confusion_matrix, confusion_pairs

    # true:  0 0 0 1 1 2 2 2 ; predicted: 0 1 1 1 0 2 0 2
    m = confusion_matrix([0, 1, 1, 1, 0, 2, 0, 2], [0, 0, 0, 1, 1, 2, 2, 2], 3)
    assert m.tolist() == [[1, 2, 0], [1, 1, 0], [1, 0, 2]]
    table, summary = confusion_pairs(m, ["a", "b", "c"], pairs=[("b", "a")])
    # pair (a, b): 2 + 1 = 3 errors, (a, c): 0 + 1 = 1; 4 errors in all, 3 of them in the intended pair
    assert table[["a", "b", "errors"]].values.tolist() == [["a", "b", 3], ["a", "c", 1]]
    assert table.intended.tolist() == [True, False] and table.share.tolist() == [0.75, 0.25]
    assert summary["errors"] == 4 and summary["in_pairs"] == 3 and summary["share_in_pairs"] == 0.75
    # chance: a's 2 errors and b's 1 error have 1 partner out of 2 wrong classes, c's 1 error has none:
    # (2 * 1/2 + 1 * 1/2 + 1 * 0) / 4 = 0.375
    assert summary["share_if_uniform"] == pytest.approx(0.375)
    with pytest.raises(ValueError, match=r"class indices in \[0, 2\]"):
        confusion_matrix([3], [0], 3)
    with pytest.raises(ValueError, match="Unknown class 'z'"):
        confusion_pairs(m, ["a", "b", "c"], pairs=[("a", "z")])
