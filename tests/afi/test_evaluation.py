"""AfI's Fig. 2 / Fig. 4 evaluation helpers and their verdict rules, on hand-made tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from xailib.afi import evaluation as ev
from xailib.afi import experiments as ex
from xailib.afi import paper
from xailib.data.conceptworld import ConceptWorld


def _curve(method, k_cls, mode, accs, n_concepts=None):
    return [{"method": method, "class": k_cls, "mode": mode, "k": k, "accuracy": a, "original_accuracy": accs[0]
             if mode == "sdc" else 0.8, "n": 10, "n_concepts": n_concepts or len(accs) - 1} for k, a in enumerate(accs)]


def test_orders_from_scores_sorts_by_score_then_name():
    s = pd.DataFrame({"method": "AfI", "class": 0, "concept": ["legs", "head", "body", "tail"],
                      "score": [0.1, 0.4, 0.4, 0.1]})
    assert ev.orders_from_scores(s) == {"AfI": {0: ["body", "head", "legs", "tail"]}}


def test_curve_summary_pads_short_classes_and_areas_by_hand():
    rows = _curve("AfI", 0, "ssc", [0.0, 0.4, 0.8]) + _curve("AfI", 1, "ssc", [0.0, 0.8])
    curves = pd.DataFrame(rows)
    s = ev.curve_summary(curves, max_k=2).set_index("k")
    # class 0: 0, 0.5, 1.0 of 0.8; class 1: 0, 1.0, then padded with 1.0
    assert s.loc[1, "relative_accuracy"] == pytest.approx(0.75) and s.loc[2, "relative_accuracy"] == pytest.approx(1.0)
    assert int(s.loc[2, "n_classes"]) == 2
    a = ev.curve_areas(curves, max_k=2).set_index("class")["area"]
    assert a[0] == pytest.approx(0.75) and a[1] == pytest.approx(1.0)


def test_ground_truth_agreement_by_hand():
    concepts = ["a", "b", "c", "d"]
    scores = pd.DataFrame({"method": ["AfI"] * 8 + ["TCAV"] * 8, "class": ([0] * 4 + [1] * 4) * 2,
                           "concept": concepts * 4,
                           "score": [4, 3, 2, 1, 1, 2, 3, 4] + [1, 2, 3, 4, 4, 3, 2, 1]})
    truth = pd.DataFrame({"class": [0] * 4 + [1] * 4, "concept": concepts * 2,
                          "drop_logit": [9.0, 5.0, 2.0, 1.0, 0.1, 0.2, 0.3, 0.4]})
    g = ev.ground_truth_agreement(scores, truth)
    per = g[g["class"] != "mean"].set_index(["method", "class"])["spearman"]
    assert per[("AfI", 0)] == pytest.approx(1.0) and per[("AfI", 1)] == pytest.approx(1.0)
    assert per[("TCAV", 0)] == pytest.approx(-1.0)
    mean = g[g["class"] == "mean"].set_index("method")
    assert mean.loc["AfI", "spearman"] == pytest.approx(1.0) and int(mean.loc["AfI", "n_classes"]) == 2


def _fig2(afi_ssc, tcav_ssc, n_classes=4, n_concepts=25):
    rows = []
    for k in range(n_classes):
        rows += _curve("AfI", k, "ssc", [0.0] + list(afi_ssc), n_concepts)
        rows += _curve("TCAV", k, "ssc", [0.0] + list(tcav_ssc), n_concepts)
        rows += _curve("random", k, "ssc", [0.0] + list(tcav_ssc), n_concepts)
        rows += _curve("AfI", k, "sdc", [0.8, 0.5, 0.4, 0.3, 0.2, 0.1], n_concepts)
        rows += _curve("TCAV", k, "sdc", [0.8, 0.7, 0.7, 0.6, 0.6, 0.6], n_concepts)
        rows += _curve("random", k, "sdc", [0.8, 0.7, 0.7, 0.7, 0.7, 0.7], n_concepts)
    return pd.DataFrame(rows)


def test_concept_attribution_comparison_thresholds_only_on_superpixels():
    sp = _fig2([0.3, 0.5, 0.6, 0.62, 0.64], [0.1, 0.1, 0.2, 0.2, 0.2])  # classes alike: each interval is a point
    t = paper.concept_attribution_comparison({"vgg-x": _fig2([0.7] * 5, [0.1] * 5, n_concepts=6)}, sp, None, "fm")
    rows = t.set_index("quantity")["verdict"]
    ssc = [q for q in rows.index if "recovered" in q]
    assert rows[[q for q in ssc if "ConceptWorld" in q][0]] == "not comparable"
    # superpixels: 0.64 / 0.8 = 0.8 >= 0.74
    assert rows[[q for q in ssc if "Fashion" in q][0]] == "reproduced"
    sdc = [q for q in rows.index if "lost" in q and "Fashion" in q][0]
    assert rows[sdc] == "reproduced"  # 1 - 0.1 / 0.8 = 0.875 >= 0.45
    steeper = [q for q in rows.index if q.startswith("AfI's SSC rises faster than TCAV") and "Fashion" in q][0]
    assert rows[steeper] == "reproduced"


def test_user_concepts_comparison_rules():
    def s(cls, concept, score, sig, group="texture"):
        return {"group": group, "class_name": cls, "concept": concept, "score": score, "ci_low": score - 0.01,
                "ci_high": score + 0.01, "significant": sig, "p_value": 0.001 if sig else 0.5,
                "p_adjusted": 0.002 if sig else 0.6, "n_draws": 5, "n_per_draw": 10}
    scores = pd.DataFrame([s("tiger", "stripes", 0.5, True), s("tiger", "dots", 0.3, True),
                           s("fish", "checker", 0.2, True), s("fish", "dots", 0.6, False)])
    t = paper.user_concepts_comparison(scores, None, None, {"tiger": "stripes", "fish": "checker"}, "water")
    v = t.set_index("quantity")["verdict"]
    assert v["the class's own texture (stripes) ranks first among the textures (tiger)"] == "reproduced"
    assert v["the class's own texture (checker) ranks first among the textures (fish)"] == "not reproduced"
    bias = pd.DataFrame([{"model": "biased", "to_target_before": 0.0, "to_target_after": 0.5,
                          "accuracy_on_context": 1.0, "accuracy_elsewhere": 0.4},
                         {"model": "control", "to_target_before": 0.0, "to_target_after": 0.05,
                          "accuracy_on_context": 0.9, "accuracy_elsewhere": 0.9}])
    ctx = pd.DataFrame([s("cow", "water", 0.6, True, "context") | {"model": "biased"},
                        s("cow", "grass", 0.2, True, "context") | {"model": "biased"},
                        s("cow", "water", 0.2, True, "context") | {"model": "control"},
                        s("cow", "grass", 0.2, True, "context") | {"model": "control"}])
    row = paper.user_concepts_comparison(None, bias, ctx, {}, "water").iloc[0]
    assert row["verdict"] == "reproduced"
    invalid = bias.assign(to_target_after=[0.05, 0.05])
    assert paper.user_concepts_comparison(None, invalid, ctx, {}, "water").iloc[0]["verdict"] == "not comparable"


def test_dominant_texture_of_conceptworld_classes():
    world = ConceptWorld(size=32, seed=0)
    assert ex.dominant_texture(world, world.class_index("tiger")) == "stripes"
    assert ex.dominant_texture(world, world.class_index("fish")) == "checker"
    assert ex.dominant_texture(world, world.class_index("goat")) is None


class _Always(nn.Module):
    """Predicts class ``k`` for every image."""

    def __init__(self, k, n=10):
        super().__init__()
        self.k, self.n = k, n
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        out = torch.zeros(x.shape[0], self.n) + self.w
        out[:, self.k] = 1.0
        return out


def test_context_reliance_of_a_model_that_ignores_the_image():
    world = ConceptWorld(size=32, seed=0)
    cow = world.class_index("cow")
    r = ex.context_reliance(_Always(cow), world, "water", cow, n=40, seed=0)
    assert r["to_target_before"] == r["to_target_after"] == 1.0
    assert r["accuracy_on_context"] == r["accuracy_elsewhere"] == 1.0 and r["n_other"] + r["n_target"] > 0
    r = ex.context_reliance(_Always(0), world, "water", cow, n=40, seed=0)
    assert r["to_target_after"] == 0.0 and np.isclose(r["accuracy_elsewhere"], 0.0)
