"""Ground truth from ConceptWorld's interventions (xailib.data.interventions): hand-checked on a colour detector,
fast paths held to the literal per-scene loops, validation."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from tiny_models import TinyResNet, make
from xailib.data.conceptworld import ConceptWorld
from xailib.data.interventions import (CURVE_COLUMNS, EFFECT_COLUMNS, IMPORTANCE_COLUMNS, concept_curves,
                                       concept_curves_reference, intervention_effects,
                                       intervention_effects_reference, intervention_importance, random_order)
from xailib.layers import count_hooks

PARROT, SPARROW = 5, 4
RED = (0.86, 0.10, 0.10)  # the world's palette red; parts get +-0.05 of jitter per channel (default setting)


class RedParrot(nn.Module):
    """Says "parrot" iff some pixel is palette red (within 0.07 in every channel), else "sparrow".

    Logits: parrot ``10 * [red pixel]``, sparrow 5, the other eight classes 0. Rims (0.6 x the colour) and the
    contexts are never within 0.07 of red, so a scene fires iff a red part of it is visible.
    """

    def __init__(self):
        super().__init__()
        self.register_buffer("rgb", torch.tensor(RED).view(1, 3, 1, 1))

    def forward(self, x):
        hit = ((x - self.rgb).abs() <= 0.07).all(1).flatten(1).any(1)
        out = torch.zeros(x.shape[0], 10, dtype=x.dtype, device=x.device)
        out[:, PARROT] = 10.0 * hit
        out[:, SPARROW] = 5.0
        return out


def _p(parrot_logit):
    """Softmax probability of the parrot class with logits (parrot, sparrow 5, eight zeros)."""
    return math.exp(parrot_logit) / (math.exp(parrot_logit) + math.exp(5) + 8)


@pytest.fixture(scope="module")
def world():
    return ConceptWorld(size=32)


@pytest.fixture(scope="module")
def recipes(world):
    return world.sample(200, split="test", seed=0)


@pytest.fixture(scope="module")
def parrots(world, recipes):
    return recipes[recipes.label == PARROT]


def _red_parrots(world, parrots):
    """Which parrots are red: the body (main colour) is red (body, head and tail share the main colour)."""
    return parrots.colour[:, world.part_names.index("body")] == world.colour_names.index("red")


# --------------------------------------------------------------------------------------------------
# Intervention importance
# --------------------------------------------------------------------------------------------------


def test_colour_detector_by_hand(world, recipes, parrots):
    concepts = ["red", "body", "eye", "wings", "grass"]
    table = intervention_importance(RedParrot(), world, recipes, concepts, n_boot=200)
    assert list(table.columns) == IMPORTANCE_COLUMNS and len(table) == 10 * len(concepts)
    t = table[table["class"] == PARROT].set_index("concept")
    n_red = int(_red_parrots(world, parrots).sum())
    assert 0 < n_red < len(parrots)
    # removing red turns every red part grey: the parrot logit falls from 10 to 0, in every red parrot
    assert t.loc["red", "n"] == n_red and t.loc["red", "n_scenes"] == len(parrots)
    assert t.loc["red", "drop_logit"] == 10.0 and t.loc["red", "drop_logit_low"] == t.loc["red", "drop_logit_high"]
    assert t.loc["red", "drop_prob"] == pytest.approx(_p(10) - _p(0), abs=1e-12)
    assert t.loc["red", "rank"] == 1 and t.loc["red", "class_name"] == "parrot" and t.loc["red", "kind"] == "colour"
    # head and tail stay red without the body; the eye is white, the wings blue or yellow
    for c in ("body", "eye", "wings"):
        assert t.loc[c, "drop_logit"] == 0.0 and t.loc[c, "n"] == int(parrots.present[:, world.part_names.index(c)].sum())
    # no red anywhere else: no other class has a scene with the colour
    other = table[(table["class"] != PARROT) & (table.concept == "red")]
    assert (other.n == 0).all() and other.drop_logit.isna().all()
    measured = table[table.n > 0].groupby("class").size()
    assert all(r["rank"] > measured[r["class"]] for _, r in other.iterrows())  # unmeasured rank after measured


def test_effects_rows_by_hand(world, parrots):
    eff = intervention_effects(RedParrot(), world, parrots, ["red", "legs"])
    assert list(eff.columns) == EFFECT_COLUMNS and len(eff) == 2 * len(parrots)
    red = eff[eff.concept == "red"]
    is_red = _red_parrots(world, parrots).numpy()
    np.testing.assert_array_equal(red.present.to_numpy(), is_red)
    assert (red.logit[is_red] == 10).all() and (red.logit[~is_red] == 0).all()
    assert (red.logit_after[is_red] == 0).all() and red.drop_logit[~is_red].isna().all()
    assert (red["class"] == PARROT).all() and (red.label == PARROT).all()
    legs = eff[eff.concept == "legs"]
    assert (legs.present == (legs.n_pixels > 0)).all()
    assert legs.present.sum() <= int(parrots.present[:, world.part_names.index("legs")].sum())


def _small_model():
    return make(TinyResNet, classes=10)  # double, BatchNorm, in-place ReLUs, adaptive pooling (any image size)


@pytest.mark.parametrize("setting", ["default", "hard"])
def test_effects_equal_the_reference(setting):
    world = ConceptWorld(size=32, setting=setting)
    recipes = world.sample(12, split="test", seed=1)
    concepts = ["body", "legs", "eye", "stripes", "dots", "black", "orange", "grass", "water"]
    model = _small_model()
    for target in ("label", "predicted", 3):
        fast = intervention_effects(model, world, recipes, concepts, target=target, batch_size=5)
        ref = intervention_effects_reference(model, world, recipes, concepts, target=target)
        pd.testing.assert_frame_equal(fast, ref, check_exact=False, rtol=1e-9, atol=1e-12)
    assert fast.present.any() and not fast.present.all()


def test_importance_aggregates_the_effects(world, recipes):
    model = _small_model()
    eff = intervention_effects(model, world, recipes[:40], ["head", "stripes", "sky"])
    imp = intervention_importance(None, world, None, effects=eff, n_boot=500, seed=3)
    for _, row in imp.iterrows():
        g = eff[(eff["class"] == row["class"]) & (eff.concept == row.concept) & eff.present]
        assert row.n == len(g)
        if len(g):
            assert row.drop_logit == pytest.approx(g.drop_logit.mean()) and row.drop_prob == pytest.approx(g.drop_prob.mean())
            assert row.drop_logit_low <= row.drop_logit <= row.drop_logit_high
    again = intervention_importance(model, world, recipes[:40], ["head", "stripes", "sky"], n_boot=500, seed=3)
    pd.testing.assert_frame_equal(imp, again)


def test_model_left_as_it_was(world, recipes):
    model = _small_model().train()
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    intervention_effects(model, world, recipes[:6], ["head"])
    concept_curves(model, world, recipes[recipes.label == 0][:4], ["head", "legs"], mode="ssc")
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    assert all(m.training for m in model.modules()) and count_hooks(model) == 0


def test_errors(world, recipes):
    m = RedParrot()
    with pytest.raises(ValueError, match="Unknown concept 'leg'. Did you mean 'legs'.*Valid concepts: body"):
        intervention_effects(m, world, recipes, ["leg"])
    with pytest.raises(ValueError, match="'plain' is the absence of a texture"):
        intervention_effects(m, world, recipes, ["plain"])
    with pytest.raises(ValueError, match="recipes is empty"):
        intervention_effects(m, world, recipes[torch.zeros(0, dtype=torch.long)], ["legs"])
    with pytest.raises(TypeError, match="Recipe"):
        intervention_effects(m, world, torch.zeros(3, 3, 32, 32), ["legs"])
    with pytest.raises(TypeError, match="ConceptWorld"):
        intervention_effects(m, "world", recipes, ["legs"])
    with pytest.raises(ValueError, match="distinct"):
        intervention_effects(m, world, recipes, ["legs", "legs"])
    with pytest.raises(ValueError, match="at least one concept"):
        intervention_effects(m, world, recipes, [])
    with pytest.raises(ValueError, match="outside"):
        intervention_effects(m, world, recipes, ["legs"], target=10)
    with pytest.raises(ValueError, match="scores 4 classes"):
        intervention_effects(make(TinyResNet, classes=4), world, recipes, ["legs"])


# --------------------------------------------------------------------------------------------------
# SSC / SDC
# --------------------------------------------------------------------------------------------------


def test_ssc_by_hand(world, parrots):
    curve = concept_curves(RedParrot(), world, parrots, ["eye", "beak", "body", "head"], mode="ssc")
    assert list(curve.columns) == CURVE_COLUMNS
    f = float(_red_parrots(world, parrots).double().mean())
    # blank, white eye, black beak: no red -> sparrow; the body brings the red of red parrots
    np.testing.assert_array_equal(curve.accuracy, [0, 0, 0, f, f])
    np.testing.assert_array_equal(curve.k, range(5))
    assert list(curve.concept) == ["", "eye", "beak", "body", "head"]
    assert list(curve.concepts_edited) == ["", "eye", "eye+beak", "eye+beak+body", "eye+beak+body+head"]
    assert (curve.original_accuracy == f).all() and (curve.n == len(parrots)).all() and (curve["mode"] == "ssc").all()
    assert curve.mean_prob[0] == pytest.approx(_p(0)) and curve.mean_prob[3] == pytest.approx(f * _p(10) + (1 - f) * _p(0))


def test_sdc_by_hand(world, parrots):
    curve = concept_curves(RedParrot(), world, parrots, ["body", "head", "tail", "wings"], mode="sdc")
    f = float(_red_parrots(world, parrots).double().mean())
    # body, head and tail share the main colour: a red parrot stays red until all three are gone
    np.testing.assert_array_equal(curve.accuracy, [f, f, f, 0, 0])
    red_first = concept_curves(RedParrot(), world, parrots, ["red", "body"], mode="sdc")
    np.testing.assert_array_equal(red_first.accuracy, [f, 0, 0])


def test_ssc_steps_are_isolate(world, parrots):
    """SSC's parts-only steps are world.isolate; a context in the order keeps the scenes that have it."""
    from xailib.data.interventions import _edited

    for top in (["body"], ["body", "legs"]):
        assert _edited(world, parrots, top, "ssc").equal(world.isolate(parrots, top))
    kept = _edited(world, parrots, ["body", "grass"], "ssc")
    grass = world.context_names.index("grass")
    np.testing.assert_array_equal(kept.context, torch.where(parrots.context == grass, grass, -1))


@pytest.mark.parametrize("setting", ["default", "hard"])
def test_curves_equal_the_reference(setting):
    world = ConceptWorld(size=32, setting=setting)
    recipes = world.sample(60, split="test", seed=2)
    tigers = recipes[recipes.label == 0]
    model = _small_model()
    for mode, order in (("ssc", ["body", "sky", "head", "legs"]), ("sdc", ["stripes", "orange", "legs", "sky"])):
        fast = concept_curves(model, world, tigers, order, mode=mode, batch_size=4)
        ref = concept_curves_reference(model, world, tigers, order, mode=mode)
        pd.testing.assert_frame_equal(fast, ref, check_exact=False, rtol=1e-9)


def test_curve_errors(world, recipes, parrots):
    m = RedParrot()
    with pytest.raises(ValueError, match="one class"):
        concept_curves(m, world, recipes, ["legs"], mode="sdc")
    with pytest.raises(ValueError, match="'stripes' is a texture.*mode='sdc'"):
        concept_curves(m, world, parrots, ["body", "stripes"], mode="ssc")
    with pytest.raises(ValueError, match="Unknown concept 'bodyy'.*Did you mean 'body'"):
        concept_curves(m, world, parrots, ["bodyy"], mode="sdc")
    with pytest.raises(ValueError, match="Unknown mode"):
        concept_curves(m, world, parrots, ["body"], mode="ace")
    with pytest.raises(ValueError, match="recipes is empty"):
        concept_curves(m, world, parrots[torch.zeros(0, dtype=torch.long)], ["body"], mode="ssc")


def test_random_order():
    parts = ["body", "head", "legs", "tail", "eye"]
    a, b = random_order(parts, 4, seed=0), random_order(parts, 4, seed=0)
    assert a == b and len(a) == 4 and all(sorted(o) == sorted(parts) for o in a)
    assert random_order(parts, 2, seed=0) == a[:2]  # the first orders do not depend on n_orders
    assert len({tuple(o) for o in a}) > 1 and random_order(parts, 4, seed=1) != a
    with pytest.raises(ValueError, match="non-empty"):
        random_order([], 3)
