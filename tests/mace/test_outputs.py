"""MACE's Sec. 4.2 (all outputs), the Table 1 proxy on part masks and S6's robustness: answers by hand on
explanations built by hand, and the whole pipeline on a tiny MACE of the conftest's zoo VGG."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from xailib.layers import count_hooks
from xailib.mace import localisation as ml
from xailib.mace import outputs as mo
from xailib.mace import paper
from xailib.mace import robustness as mr
from xailib.mace.explain import Explanation
from xailib.mace.training import train_mace
from xailib.results import VERDICTS


def _explanation(relevance, active, probs, maps=None):
    relevance, probs = torch.as_tensor(relevance, dtype=torch.float32), torch.as_tensor(probs, dtype=torch.float32)
    n, k, c = relevance.shape
    maps = torch.rand(n, k, c, 4, 4, generator=torch.Generator().manual_seed(0)) if maps is None else maps
    return Explanation(maps, relevance, torch.as_tensor(active), list(range(k)), probs, torch.zeros(n, k), (4, 4))


def test_class_ranks_by_hand():
    probs = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.25, 0.25]])
    assert mo.class_ranks(probs).tolist() == [[3, 1, 2], [1, 2, 3]]        # a tie goes to the lower index


def test_top_concept_maps_skips_pruned_concepts():
    rel = torch.tensor([[[0.9, 0.1], [0.2, -0.5]]])                        # 1 image, 2 classes, 2 concepts
    active = torch.tensor([[False, True], [False, False]])                 # class 0 keeps concept 1; class 1 none
    ex = _explanation(rel, active, [[0.6, 0.4]])
    maps, j, r = mo.top_concept_maps(ex, [0])
    assert j.tolist() == [1] and r.tolist() == pytest.approx([0.1])
    assert torch.equal(maps[0], ex.maps[0, 0, 1])
    maps, j, r = mo.top_concept_maps(ex, [1])
    assert j.tolist() == [-1] and math.isnan(float(r[0])) and float(maps.abs().sum()) == 0
    with pytest.raises(ValueError, match="not among the explained classes"):
        mo.top_concept_maps(ex, [2])


def test_below_average_by_rank_by_hand():
    # 2 classes, 1 concept each (kept). Class 0's images: 0 and 1 with r_00 = 1 and 3 -> average 2 (> 0, counted).
    # Image 2 (class 1) ranks class 0 second with r_00 = 1 < 2: share 1. Image 0 ranks class 0 first: 1 < 2 -> 1;
    # image 1 first: 3 > 2 -> 0; so at rank 1 class 0's share is 0.5, at rank 2 it is 1.
    rel = torch.tensor([[[1.0], [0.0]], [[3.0], [0.0]], [[1.0], [-1.0]]])
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7]])
    ex = _explanation(rel, torch.ones(2, 1, dtype=torch.bool), probs)
    t = mo.below_average_by_rank(ex, [0, 0, 1])
    c0 = t[t["class"] == 0].set_index("rank")
    assert c0.loc[1, "share_below"] == pytest.approx(0.5) and c0.loc[2, "share_below"] == pytest.approx(1.0)
    assert c0.loc[1, "n_images"] == 2 and c0.loc[2, "n_images"] == 1
    # class 1's only concept has average -1 over its own image: not counted, so its shares are NaN
    assert t[t["class"] == 1]["share_below"].isna().all()


def test_relevance_true_vs_others_by_hand():
    rel = torch.tensor([[[2.0]], [[4.0]], [[1.0]], [[-1.0]]])             # 1 class row, labels 0 0 1 1
    ex = _explanation(rel, torch.ones(1, 1, dtype=torch.bool), torch.ones(4, 1))
    t = mo.relevance_true_vs_others(ex, [0, 0, 1, 1]).iloc[0]
    assert (t["avg_true"], t["avg_others"], t["difference"]) == pytest.approx((3.0, 0.0, 3.0))
    se = math.sqrt(2.0 / 2 + 2.0 / 2)                                      # sample variances 2 and 2, n = 2 and 2
    assert t["diff_low"] == pytest.approx(3.0 - 1.96 * se)


def test_part_ious_and_localisation_by_hand():
    m = torch.zeros(1, 4, 4)
    m[0, 0, 0:2] = 1.0                                                     # region: the two top-left pixels
    parts = torch.zeros(1, 2, 4, 4, dtype=torch.bool)
    parts[0, 0, 0, 0] = True                                               # part 0: one of them -> IoU 1/2
    parts[0, 1, 3, 3] = True                                               # part 1: elsewhere -> IoU 0
    assert ml.part_ious(m, parts).tolist() == [[0.5, 0.0]]
    none = torch.zeros(1, 2, 4, 4, dtype=torch.bool)
    assert torch.isnan(ml.part_ious(m, none)).all()                        # parts not visible: NaN
    t = ml.localisation_table({"A": m}, parts, parts.any(1), part_names=["head", "tail"]).iloc[0]
    assert t["pointing"] == 1.0 and t["best_part"] == "head" and t["best_part_iou"] == pytest.approx(0.5)
    assert t["object_iou"] == pytest.approx(1 / 3) and t["area"] == pytest.approx(2 / 16)


def test_concept_part_matching_and_coverage_by_hand():
    maps = torch.zeros(2, 1, 2, 4, 4)
    maps[:, 0, 0, 0, 0] = 1.0                                              # concept 0 on pixel (0, 0)
    maps[:, 0, 1, 3, 3] = 1.0                                              # concept 1 on pixel (3, 3)
    parts = torch.zeros(2, 2, 4, 4, dtype=torch.bool)
    parts[:, 0, 0, 0] = True
    parts[0, 1, 3, 3] = True                                               # part 1 visible in image 0 only
    ex = _explanation(torch.zeros(2, 1, 2), torch.ones(1, 2, dtype=torch.bool), torch.ones(2, 1), maps)
    m = ml.concept_part_matching(ex, [0, 0], parts, part_names=["head", "tail"])
    best = m[m.best].set_index("concept")
    assert best.loc[0, "part"] == "head" and best.loc[0, "iou"] == pytest.approx(1.0)
    assert best.loc[1, "part"] == "tail" and best.loc[1, "n_images"] == 1
    cov = ml.parts_covered(m, min_iou=0.5).iloc[0]
    assert (cov["concepts"], cov["parts_visible"], cov["distinct_best"]) == (2, 2, 2)


@pytest.fixture(scope="module")
def tiny(vgg):
    g = torch.Generator().manual_seed(5)
    x = torch.rand(20, 1, 28, 28, generator=g)
    y = torch.arange(10).repeat(2)
    mace, point, _ = train_mace(vgg, x, y, epochs=1, n_concepts=3, embedding_dim=4, seed=0, progress=False)
    return vgg, mace, point, x, y


def _state(m):
    return {k: v.clone() for k, v in m.state_dict().items()}, m.training


def test_class_specificity_and_method_maps_leave_the_model_as_it_was(tiny):
    net, mace, point, x, _ = tiny
    before = _state(net)
    iou, neg = mo.class_specificity(net, mace, point, x[:4], baselines=("GradCAM",))
    assert set(iou["method"]) == {"MACE", "GradCAM"} and iou["iou"].between(0, 1).all()
    assert (iou["class_1"] != iou["class_2"]).all() and set(neg["rank"]) == {1, 2}
    assert count_hooks(net) == 0 and net.training == before[1]
    assert all(torch.equal(v, before[0][k]) for k, v in net.state_dict().items())


def test_robustness_is_one_without_a_perturbation(tiny):
    net, mace, point, x, _ = tiny
    t = mr.robustness_table(net, mace, point, x[:3], perturbations={"brightness": (0.0,), "rotation": (0.0,)},
                            thresholds=(0.5,))
    assert set(t["protocol"]) == {"same pixels", "aligned", "unaligned"}
    assert t["same_prediction"].all()
    assert t["iou"].tolist() == pytest.approx([1.0] * len(t), abs=1e-6)
    with pytest.raises(ValueError, match="unknown perturbations"):
        mr.robustness_table(net, mace, point, x[:3], perturbations={"blur": (1.0,)})
    assert count_hooks(net) == 0


def test_robustness_comparison_rule():
    rows = []
    for i in range(20):
        for m, v in (("MACE", 0.9), ("GradCAM", 0.5 + 0.01 * i), ("GradCAM++", 0.95)):
            rows.append({"method": m, "perturbation": "noise", "amount": 0.01, "protocol": "same pixels",
                         "threshold": 0.5, "image": i, "iou": v, "same_prediction": True})
    t = paper.robustness_comparison(pd.DataFrame(rows))
    # ahead of GradCAM, behind GradCAM++: partly for noise; no perturbation fully reproduced: not reproduced overall
    assert t["verdict"].tolist() == ["partly", "not reproduced"]
    assert set(t["verdict"]) <= set(VERDICTS)


def test_outputs_comparison_rules():
    spec = pd.DataFrame([{"method": m, "image": i, "iou": v} for i in range(10)
                         for m, v in (("MACE", 0.1), ("GradCAM", 0.9))])
    neg = pd.DataFrame([{"image": i, "rank": r, "share_negative": 0.8 if r == 2 else 0.2} for i in range(10)
                        for r in (1, 2)])
    ranks = pd.DataFrame({"rank": [1, 2], "share_below": [0.3, 0.6], "ci_low": [0.2, 0.5], "ci_high": [0.4, 0.7],
                          "n_classes": [5, 5], "n_images": [50, 50]})
    ranks.attrs["trend"] = {"spearman": 0.5, "ci_low": -0.1, "ci_high": 0.9, "n_classes": 5}
    tvo = pd.DataFrame({"avg_true": [1.0, 1.0], "avg_others": [0.0, 0.9], "diff_low": [0.5, -0.1]})
    t = paper.outputs_comparison(spec, neg, ranks, tvo).set_index("artifact")["verdict"]
    assert t["Fig. 1 / Fig. 5a"] == "reproduced" and t["Sec. 4.2 / Fig. 1"] == "reproduced"
    assert t["Fig. 5b"] == "not reproduced" and t["Fig. 5c"] == "not reproduced"   # 1 of 2 is not more than half


def test_a_unit_for_some_outputs_reads_labels_as_output_indices():
    # rows stand for outputs 3 and 7; image 3 is of output 1, which MACE does not explain: it is an "other" image
    rel = torch.tensor([[[2.0], [0.0]], [[4.0], [0.0]], [[1.0], [5.0]], [[-1.0], [1.0]]])
    ex = _explanation(rel, torch.ones(2, 1, dtype=torch.bool), torch.rand(4, 10, generator=torch.Generator().manual_seed(1)))
    ex.classes = [3, 7]
    t = mo.relevance_true_vs_others(ex, [3, 3, 7, 1]).set_index("class")
    assert t.loc[3, "avg_true"] == pytest.approx(3.0) and t.loc[3, "avg_others"] == pytest.approx(0.0)
    assert t.loc[7, "avg_true"] == pytest.approx(5.0) and t.loc[7, "n_others"] == 3
    assert ex.rows_of([7, 3]).tolist() == [1, 0]
    with pytest.raises(ValueError, match="not among the explained classes"):
        ex.rows_of([1])
    ranks = mo.below_average_by_rank(ex, [3, 3, 7, 1])
    assert set(ranks["class"]) == {3, 7} and set(ranks["rank"]) == {1, 2}
