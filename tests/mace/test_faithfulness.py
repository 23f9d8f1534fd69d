"""MACE's faithfulness test (Fig. 4): masks by hand, the removal's probability by hand, and the table's protocols."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from xailib.layers import count_hooks
from xailib.mace.faithfulness import (area_matched_masks, faithfulness_table, single_concept_drops, threshold_masks,
                                      union_masks)
from xailib.mace.model import MACE, find_tap_point
from xailib.metrics import masked_probability
from xailib.models import build_model


def test_masks_by_hand():
    maps = torch.tensor([[[0.0, 1.0], [2.0, 4.0]]])                       # scaled: 0, .25, .5, 1
    m = threshold_masks(maps, [0.5, 0.2])
    assert m[0, 0].tolist() == [[False, False], [True, True]] and m[1, 0].tolist() == [[False, True], [True, True]]
    two = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 3.0]]]])   # [B=1, C=2, 2, 2]
    both = union_masks(two, torch.tensor([[True, True]]), [0.5])
    assert both[0, 0].tolist() == [[True, False], [False, True]]
    first = union_masks(two, torch.tensor([[True, False]]), [0.5])          # a pruned concept adds nothing
    assert first[0, 0].tolist() == [[True, False], [False, False]]
    top = area_matched_masks(torch.tensor([[[1.0, 3.0], [2.0, 0.0]]]), torch.tensor([[0.5]]))
    assert top[0, 0].tolist() == [[False, True], [True, False]]             # the 2 highest of 4 pixels


def test_masked_probability_by_hand():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]))
    x = torch.tensor([[[[1.0, 0.5], [0.5, 0.5]]]])                         # logits (1, 0)
    masks = torch.tensor([[[[False, False], [False, False]]], [[[True, False], [False, False]]]])
    p = masked_probability(model, x, masks, 0)
    assert float(p[0, 0]) == pytest.approx(math.e / (math.e + 1), abs=1e-6)  # nothing removed
    assert float(p[1, 0]) == pytest.approx(0.5, abs=1e-6)                    # pixel 0 filled with 0: logits (0, 0)
    with pytest.raises(ValueError, match="masks must be"):
        masked_probability(model, x, torch.zeros(1, 1, 3, 3, dtype=torch.bool), 0)


@pytest.fixture(scope="module")
def fitted():
    torch.manual_seed(0)
    model = build_model("vgg", "conceptworld").eval()
    x = torch.rand(6, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    point = find_tap_point(model)
    return model, MACE.for_model(model, point, x, n_concepts=3, embedding_dim=4), point, x


def test_faithfulness_table_protocols(fitted):
    model, mace, point, x = fitted
    t = faithfulness_table(model, mace, point, x, torch.zeros(6), baselines=("GradCAM", "Gradient"),
                           thresholds=(0.3, 0.7))
    assert set(t["method"]) == {"MACE", "GradCAM", "Gradient", "random"}
    assert len(t) == 2 * 6 + 3 * 2 * 2 * 6                                   # MACE once, the others twice
    mace_area = t[t.method == "MACE"].set_index(["threshold", "image"])["area"]
    for m in ("GradCAM", "Gradient", "random"):
        same = t[(t.method == m) & (t.protocol == "same area")].set_index(["threshold", "image"])["area"]
        assert ((same - mace_area).abs() <= 1 / (64 * 64) + 1e-9).all()     # equal areas, to a pixel
    assert t["drop"].between(-1, 1).all() and count_hooks(model) == 0


def test_single_concept_drops(fitted):
    model, mace, point, x = fitted
    t = single_concept_drops(model, mace, point, x)
    assert set(t["concept"]) <= {-1, 0, 1, 2} and (t["concept"] == -1).sum() == 6
    union = t[t.concept == -1].set_index("image")["area"]
    single = t[t.concept >= 0].groupby("image")["area"].max()
    assert (single <= union[single.index] + 1e-9).all()                     # a concept covers no more than the union
