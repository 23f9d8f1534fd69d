"""Bad input to the AfI entry points gets a clear error that says how to fix it, and leaves the model as it was:
no hook, parameters bitwise equal, train/eval flags restored -- also when a layer raises inside forward."""

import pytest
import torch
from tiny_models import Boom, TinyVGG, make

from tests.afi.afi_models import HandNet, hand_data
from xailib.afi.attribution import (channel_importance, feature_importance, gradient_feature_importance,
                                    meta_detector)
from xailib.afi.concepts import concept_importance
from xailib.afi.impressions import class_impressions
from xailib.data.concepts import ConceptSet
from xailib.layers import count_hooks

CIS = {"conv": torch.tensor([[1.0, 0.5]], dtype=torch.float64)}


def sets(n=6, m=6):
    g = torch.Generator().manual_seed(0)
    return ([ConceptSet.from_tensors("a", torch.rand(n, 1, 2, 2, generator=g, dtype=torch.float64))],
            ConceptSet.from_tensors("random_0", torch.rand(m, 1, 2, 2, generator=g, dtype=torch.float64)))


def snapshot(model):
    return ({k: v.clone() for k, v in model.state_dict().items()}, [m.training for m in model.modules()],
            [p.requires_grad for p in model.parameters()])


def untouched(model, snap):
    state, modes, flags = snap
    now = model.state_dict()
    return (count_hooks(model) == 0 and all(torch.equal(now[k], state[k]) for k in state)
            and [m.training for m in model.modules()] == modes and [p.requires_grad for p in model.parameters()] == flags)


def _entry_points():
    x, y, delta = hand_data()
    cs, rnd = sets()
    return {
        "feature_importance": lambda m, **kw: feature_importance(m, kw.get("x", x), kw.get("delta", delta), y,
                                                                 kw.get("layers", ["conv"]),
                                                                 input_range=kw.get("input_range", (0, 1))),
        "gradient_feature_importance": lambda m, **kw: gradient_feature_importance(m, kw.get("x", x), y,
                                                                                   kw.get("layers", ["conv"])),
        "meta_detector": lambda m, **kw: meta_detector(m, kw.get("x", x), kw.get("cis", CIS), kw.get("layers")),
        "concept_importance": lambda m, **kw: concept_importance(m, kw.get("concepts", cs), kw.get("random", rnd),
                                                                 kw.get("cis", CIS), kw.get("layers"), n_perm=5,
                                                                 n_boot=10, **kw.get("extra", {})),
        "class_impressions": lambda m, **kw: class_impressions(m, kw.get("cis", CIS), (kw.get("layers") or
                                                                                        ["conv"])[0], steps=2,
                                                               progress=False),
    }


ENTRY = _entry_points()


@pytest.fixture
def model():
    m = HandNet()
    m.train()  # the calls run in eval mode and must give train mode back
    return m


@pytest.mark.parametrize("name", list(ENTRY))
def test_unknown_layer(model, name):
    snap = snapshot(model)
    with pytest.raises(ValueError, match=r"Invalid layer 'nope'.*Valid names.*conv"):
        ENTRY[name](model, layers=["nope"])
    assert untouched(model, snap)


@pytest.mark.parametrize("name", ["meta_detector", "concept_importance", "class_impressions"])
def test_cis_for_layers_not_passed(model, name):
    snap = snapshot(model)
    with pytest.raises(ValueError, match=r"cis has no channel importance for layer\(s\) \['relu'\].*holds \['conv'\]"):
        ENTRY[name](model, layers=["relu"])
    assert untouched(model, snap)


@pytest.mark.parametrize("name", ["meta_detector", "concept_importance", "class_impressions"])
def test_cis_with_wrong_channel_count(model, name):
    snap = snapshot(model)
    with pytest.raises(ValueError, match="3 channels.*compute the CIS at this layer"):
        ENTRY[name](model, cis={"conv": torch.ones(1, 3, dtype=torch.float64)})  # fails after the forward pass
    assert untouched(model, snap)
    with pytest.raises(ValueError, match=r"\[K, C\]"):
        ENTRY[name](model, cis={"conv": torch.ones(2, dtype=torch.float64)})
    assert untouched(model, snap)


def test_delta_shape_must_match_images(model):
    snap = snapshot(model)
    x, y, delta = hand_data()
    with pytest.raises(ValueError, match=r"occluders must be \[K, C, H, W\] with \(C, H, W\) = \(1, 2, 2\)"):
        ENTRY["feature_importance"](model, delta=torch.zeros(2, 1, 3, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="classes names 3 classes but there are 2"):
        feature_importance(model, x, delta, y, "conv", classes=[0, 1, 2])
    with pytest.raises(TypeError, match="float tensor"):
        ENTRY["feature_importance"](model, delta=[[0.0]])
    assert untouched(model, snap)


def test_labels_without_delta_row_or_images(model):
    snap = snapshot(model)
    x, y, delta = hand_data()
    with pytest.raises(ValueError, match="Images of class 1 have no occluder row"):
        feature_importance(model, x, delta[:1], y, "conv", classes=[0])
    with pytest.raises(ValueError, match=r"No image of class\(es\) \[1\]"):
        feature_importance(model, x[:2], delta, y[:2], "conv")
    with pytest.raises(ValueError, match="labels hold 2 classes"):
        feature_importance(model, x, delta[0], y, "conv")
    assert untouched(model, snap)


def test_images_outside_input_range(model):
    snap = snapshot(model)
    x, _, _ = hand_data()
    with pytest.raises(ValueError, match=r"outside input_range=\(0, 1\).*\(-1, 1\)"):
        ENTRY["feature_importance"](model, x=x * 2 - 1)
    with pytest.raises(ValueError, match="input_range must be a pair"):
        ENTRY["feature_importance"](model, input_range=(1, 0))
    with pytest.raises(ValueError, match="input_range must be a pair"):
        class_impressions(model, CIS, "conv", input_range=(0,), progress=False)
    assert untouched(model, snap)


def test_empty_probe_sets(model):
    snap = snapshot(model)
    with pytest.raises(ValueError, match="concept_sets is empty"):
        ENTRY["concept_importance"](model, concepts=[])
    with pytest.raises(ValueError, match="concept_sets is empty"):
        ENTRY["concept_importance"](model, concepts={})
    with pytest.raises(ValueError, match="'a' is empty"):
        ENTRY["concept_importance"](model, concepts={"a": torch.empty(0, 1, 2, 2, dtype=torch.float64)})
    with pytest.raises(ValueError, match="'random' is empty"):
        ENTRY["concept_importance"](model, random=torch.empty(0, 1, 2, 2, dtype=torch.float64))
    with pytest.raises(TypeError, match="one random benchmark set"):
        ENTRY["concept_importance"](model, random=[sets()[1]])
    with pytest.raises(TypeError, match="name them"):
        ENTRY["concept_importance"](model, concepts=[torch.rand(4, 1, 2, 2, dtype=torch.float64)])
    assert untouched(model, snap)


def test_set_sizes(model):
    snap = snapshot(model)
    cs, rnd = sets(6, 9)
    with pytest.raises(ValueError, match=r"'a' \(6\) and the random set \(9\) differ in size.*n_per_draw <= 6"):
        ENTRY["concept_importance"](model, concepts=cs, random=rnd)
    with pytest.raises(ValueError, match=r"n_per_draw=7 is more than the images of \{'a': 6\}"):
        ENTRY["concept_importance"](model, concepts=cs, random=rnd, extra=dict(n_per_draw=7))
    with pytest.raises(ValueError, match="would all be the same"):
        ENTRY["concept_importance"](model, extra=dict(n_draws=3))
    with pytest.raises(ValueError, match="at least 2 images"):
        ENTRY["concept_importance"](model, extra=dict(n_per_draw=1))
    with pytest.raises(ValueError, match="distinct"):
        ENTRY["concept_importance"](model, concepts=cs + cs, random=rnd, extra=dict(n_per_draw=5))
    ENTRY["concept_importance"](model, concepts=cs, random=rnd, extra=dict(n_per_draw=5, n_draws=2))  # this works
    assert untouched(model, snap)


def test_other_arguments(model):
    snap = snapshot(model)
    with pytest.raises(ValueError, match="Unknown correction"):
        ENTRY["concept_importance"](model, extra=dict(correction="fdr"))
    with pytest.raises(ValueError, match="alpha"):
        ENTRY["concept_importance"](model, extra=dict(alpha=1.5))
    with pytest.raises(ValueError, match="bandwidth"):
        ENTRY["concept_importance"](model, extra=dict(bandwidth=-1.0))
    with pytest.raises(TypeError, match="seed"):
        ENTRY["concept_importance"](model, extra=dict(seed=0.5))
    with pytest.raises(ValueError, match="negative entries.*not .scores"):
        channel_importance({"conv": -torch.ones(1, 2, 2, 2)})
    with pytest.raises(ValueError, match="class axis first"):
        channel_importance({"conv": torch.ones(2)})
    with pytest.raises(ValueError, match="image_shape"):
        class_impressions(make(TinyVGG), {"stages.stage1": torch.ones(1, 4)}, "stages.stage1", progress=False)
    assert untouched(model, snap)


def boom_vgg():
    model = make(TinyVGG)
    model.stages["stage3"].add_module("boom", Boom())
    return model


BOOM_CALLS = {
    "feature_importance": lambda m, x: feature_importance(m, x, torch.zeros_like(x[0]), 0, ["stages.stage2"]),
    "gradient_feature_importance": lambda m, x: gradient_feature_importance(m, x, 0, ["stages.stage2"]),
    "meta_detector": lambda m, x: meta_detector(m, x, {"stages.stage2": torch.ones(1, 6, dtype=torch.float64)}),
    "concept_importance": lambda m, x: concept_importance(m, {"a": x}, x, {"stages.stage2": torch.ones(
        1, 6, dtype=torch.float64)}, n_perm=5),
    "class_impressions": lambda m, x: class_impressions(m, torch.ones(1, 6, dtype=torch.float64), "stages.stage2",
                                                        image_shape=(3, 16, 16), steps=2, progress=False),
}


@pytest.mark.parametrize("name", list(BOOM_CALLS))
def test_layer_that_raises_leaves_no_hook(name):
    model = boom_vgg()
    x = torch.rand(3, 3, 16, 16, dtype=torch.float64)
    model.train()
    snap = snapshot(model)
    model.stages["stage3"].boom.armed = True
    with pytest.raises(RuntimeError, match="boom"):
        BOOM_CALLS[name](model, x)
    model.stages["stage3"].boom.armed = False
    assert untouched(model, snap)


def test_label_outside_the_models_classes():
    model = HandNet()
    x, _, _ = hand_data()
    with pytest.raises(ValueError, match="outside the model's 2 classes"):
        gradient_feature_importance(model, x, 5, "conv")
    assert count_hooks(model) == 0
