"""Tests for xailib.gap.diagnosis (gAP Sec. 4.2: Figs. 10-14, Eq. 13): hand-computed answers for the attack,
Eq. (13), IoU and occlusion; the image-batched decomposition against xailib.gap.decompose; no hooks left."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from tiny_models import Boom, TinyResNet, TinyVGG, image, make

from xailib.gap import decompose
from xailib.gap.decomposition import DecisionLevel, decompose_images
from xailib.gap.diagnosis import (
    adversarial_peak_responses,
    channel_class_counts,
    context_assignment,
    context_summary,
    degree_summary,
    discriminative_degree,
    discriminative_degrees,
    occlude,
    occlusion_summary,
    occlusion_test,
    part_removed_scenes,
    peak_response_summary,
    region_masks,
    shifted_masks,
)
from xailib.attacks import fgsm_attack, pgd_attack
from xailib.batching import class_scores as predict
from xailib.layers import count_hooks
from xailib.metrics import mask_iou


# ---- Eq. (13) ----------------------------------------------------------------------------------------------


def test_discriminative_degree_by_hand():
    counts = torch.tensor([[3, 1, 0], [2, 2, 2], [0, 0, 0], [0, 5, 0]])
    d = discriminative_degree(counts)
    torch.testing.assert_close(d[[0, 1, 3]], torch.tensor([0.75, 1 / 3, 1.0], dtype=torch.float64))
    assert math.isnan(float(d[2]))
    with pytest.raises(ValueError, match="non-negative"):
        discriminative_degree(torch.tensor([[1, -1]]))
    with pytest.raises(ValueError, match=r"\[K, C\]"):
        discriminative_degree(torch.tensor([1, 2]))


def test_channel_class_counts_by_hand():
    # image 0 is class 1, image 1 is class 0; channel 0 is picked once for each, channel 1 twice for image 0
    lv = DecisionLevel(layer="L", n_channels=3, image_index=torch.tensor([0, 0, 1, 1, 0]),
                       parent=torch.zeros(5, dtype=torch.long), rank=torch.zeros(5, dtype=torch.long),
                       channel=torch.tensor([0, 1, 0, 2, 1]), position=torch.zeros(5, 2, dtype=torch.long),
                       contribution=torch.zeros(5), share=torch.zeros(5), score=torch.zeros(5))
    counts = channel_class_counts([lv], torch.tensor([1, 0]), n_classes=2)["L"]
    assert counts.tolist() == [[1, 1], [0, 2], [1, 0]]
    torch.testing.assert_close(discriminative_degree(counts), torch.tensor([0.5, 1.0, 1.0], dtype=torch.float64))


def test_discriminative_degrees_counts_every_selected_node():
    model = make(TinyVGG)
    x, y = image(seed=2, batch=3), torch.tensor([0, 1, 1])
    per = discriminative_degrees(model, x, y, top_n=2)
    # top-2 per decision: 3 images * 2 nodes at stage 3, * 4 at stage 2, * 8 at stage 1
    sel = per.groupby("stage")["selections"].sum().to_dict()
    assert sel == {3: 6, 2: 12, 1: 24}
    s = degree_summary(per)
    assert list(s["stage"]) == [1, 2, 3] and (s["chance"] == 1 / 5).all()
    assert ((s["mean_D"] >= 1 / 5) & (s["mean_D"] <= 1)).all()
    assert ((s["ci_low"] <= s["mean_D"]) & (s["mean_D"] <= s["ci_high"])).all()
    assert count_hooks(model) == 0


def test_degree_summary_interval_by_hand():
    import pandas as pd

    from xailib.metrics import bootstrap_ci

    # four channels selected (D = 0.2, 0.4, 0.6, 1.0), one never selected (NaN, left out)
    per = pd.DataFrame({"layer": "s1", "stage": 1, "channel": range(5), "selections": [5, 5, 5, 1, 0],
                        "top_class": 0, "D": [0.2, 0.4, 0.6, 1.0, np.nan]})
    s = degree_summary(per, n_classes=5, n_boot=2000, seed=3).iloc[0]
    ci = bootstrap_ci([0.2, 0.4, 0.6, 1.0], n_boot=2000, seed=3)
    assert s["channels_selected"] == 4 and s["mean_D"] == pytest.approx(0.55)
    assert (s["ci_low"], s["ci_high"]) == (ci.low, ci.high) and 0.2 <= s["ci_low"] < 0.55 < s["ci_high"] <= 1.0
    # a constant D has a zero-width interval
    same = degree_summary(per.assign(D=0.5), n_classes=5).iloc[0]
    assert same["ci_low"] == same["ci_high"] == 0.5


def test_bias_reliance_sets_the_context_for_and_against_the_bias():
    from xailib.data.conceptworld import ConceptWorld
    from xailib.gap.diagnosis import bias_reliance

    world = ConceptWorld(size=32, seed=0)
    recipes = world.sample(60, split="test", seed=1)
    cow, water = world.class_names.index("cow"), world.context_names.index("water")

    class CodeWorld:
        """Renders a scene as a 2 x 2 image holding its context and its label (channels 0 and 1)."""
        context_names, class_names = world.context_names, world.class_names

        def render(self, r):
            codes = torch.stack([r.context.float(), r.label.float(), torch.zeros(len(r))], 1)
            return SimpleNamespace(images=codes[:, :, None, None].expand(-1, -1, 2, 2).clone())

    class BiasOnly(torch.nn.Module):
        """Says "cow" for every scene on water, else the true label: a model that learnt the bias and nothing
        else wrong."""

        def __init__(self):
            super().__init__()
            self.dummy = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            pred = torch.where(x[:, 0, 0, 0] == water, torch.full_like(x[:, 1, 0, 0], cow), x[:, 1, 0, 0]).long()
            return torch.nn.functional.one_hot(pred, 10).float() + 0 * self.dummy

    ds = SimpleNamespace(world=CodeWorld(), recipes=recipes, labels=recipes.label)
    r = bias_reliance(BiasOnly(), ds, "water", "cow", n_boot=500).set_index("condition")
    target = recipes.label == cow
    assert r.loc["aligned", "target_in_context"] == 1.0 and r.loc["aligned", "others_in_context"] == 0.0
    assert r.loc["conflicting", "target_in_context"] == 0.0 and r.loc["conflicting", "others_in_context"] == 1.0
    # aligned: cows on water (called cows), nothing else on water: all right
    assert r.loc["aligned", "accuracy"] == 1.0 and r.loc["aligned", "predicted_target"] == 0.0
    # against the bias every other scene is on water and called a cow; the cows, off water, are right
    assert r.loc["conflicting", "predicted_target"] == 1.0
    assert r.loc["conflicting", "accuracy"] == pytest.approx(float(target.double().mean()))
    # clean: wrong exactly on the other classes' scenes that happen to be on water
    assert r.loc["clean", "accuracy"] == pytest.approx(1.0 - float(((recipes.context == water) & ~target).double().mean()))
    assert (r["n"] == 60).all() and (r["ci_low"] <= r["accuracy"]).all() and (r["accuracy"] <= r["ci_high"]).all()
    with pytest.raises(ValueError, match="Unknown context"):
        bias_reliance(BiasOnly(), ds, "lava", "cow")
    with pytest.raises(TypeError, match="ConceptWorldDataset"):
        bias_reliance(BiasOnly(), recipes.label, "water", "cow")


# ---- masks, IoU, occlusion -------------------------------------------------------------------------------------


def test_mask_iou_by_hand():
    a = torch.zeros(4, 4, dtype=torch.bool)
    a[:2, :2] = True  # 4 pixels
    b = torch.zeros(4, 4, dtype=torch.bool)
    b[0] = True  # 4 pixels, 2 shared
    assert float(mask_iou(a, b)) == pytest.approx(2 / 6)
    assert float(mask_iou(a, a)) == 1.0
    empty = torch.zeros(4, 4, dtype=torch.bool)
    assert float(mask_iou(empty, empty)) == 0.0
    assert float(mask_iou(a, ~a)) == 0.0
    torch.testing.assert_close(mask_iou(a[None], torch.stack([a, b, empty])), torch.tensor([1.0, 1 / 3, 0.0]))
    with pytest.raises(ValueError, match="same H, W"):
        mask_iou(a, torch.zeros(3, 3, dtype=torch.bool))


def test_region_masks_threshold_and_upsampling():
    maps = torch.tensor([[[4.0, 1.0], [0.0, -2.0]], [[-1.0, -1.0], [-1.0, -1.0]]])
    same = region_masks(maps, (2, 2), threshold=0.2)  # same size: no interpolation, A > 0.2 * 4
    assert same[0].tolist() == [[True, True], [False, False]]
    assert not same[1].any()  # no positive value: empty region
    up = region_masks(maps[:1], (4, 4), threshold=0.9)  # bilinear (align_corners=False): only the corner keeps 4
    assert up[0].tolist() == [[True, False, False, False]] + [[False] * 4] * 3


def test_occlude_changes_exactly_the_masked_pixels():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 8, 8, generator=g)
    m = torch.rand(3, 8, 8, generator=g) > 0.6
    out = occlude(x, m, fill=[0.1, 0.2, 0.3])
    mm = m[:, None].expand_as(x)
    assert torch.equal(out[~mm], x[~mm])
    assert torch.equal(out.permute(1, 0, 2, 3)[:, m], torch.tensor([0.1, 0.2, 0.3])[:, None].expand(3, int(m.sum())))
    mean = occlude(x, m, fill="mean")
    torch.testing.assert_close(mean.permute(1, 0, 2, 3)[:, m][:, 0], x.mean((0, 2, 3)))
    with pytest.raises(ValueError, match=r"\[B, H, W\]"):
        occlude(x, m[:2])
    with pytest.raises(ValueError, match="fill"):
        occlude(x, m, fill="grey")


def test_shifted_masks_keep_shape_and_area():
    m = torch.zeros(5, 6, 7, dtype=torch.bool)
    m[:, 1:3, 2:5] = True
    s = shifted_masks(m, seed=4)
    assert (s.sum((1, 2)) == 6).all()
    for i in range(5):  # each is a circular shift of the original
        assert any(torch.equal(torch.roll(m[i], (dy, dx), (0, 1)), s[i]) for dy in range(6) for dx in range(7))
    assert torch.equal(s, shifted_masks(m, seed=4))


def test_occlusion_test_follows_the_top_path_and_occludes_its_region():
    model = make(TinyVGG)
    x = image(seed=5, batch=3)
    y = torch.tensor([0, 1, 2])
    r = occlusion_test(model, x, y, only_misclassified=False, mask_threshold=0.3, fill=0.5)
    assert len(r.table) == 3 and r.layers == ["stages.stage2", "stages.stage3"]
    for i in range(3):
        tree = decompose(model, x[i:i + 1], top_n=1, layers=r.layers, keep_maps=True)
        top = tree.root.children[0]
        assert int(r.table["upper_channel"][i]) == top.channel
        assert int(r.table["lower_channel"][i]) == top.children[0].channel
        np.testing.assert_allclose(r.lower_maps[i].numpy(), top.children[0].activation_map, rtol=1e-5, atol=1e-8)
    mm = r.masks[:, None].expand_as(x)
    assert torch.equal(r.occluded[~mm], x[~mm]) and (r.occluded[mm] == 0.5).all()
    torch.testing.assert_close(torch.tensor(r.table["area"].to_numpy()), r.masks.float().mean((1, 2)))
    torch.testing.assert_close(r.masks.sum((1, 2)), r.control_masks.sum((1, 2)))
    torch.testing.assert_close(torch.tensor(r.table["p_pred"].to_numpy()),
                               torch.softmax(predict(model, x), 1).max(1).values)
    s = occlusion_summary(r.table)
    assert list(s["images"]) == [3, 3]
    assert count_hooks(model) == 0


# ---- the image-batched decomposition --------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [TinyVGG, TinyResNet])
def test_decompose_images_equals_decompose_per_image(cls):
    model = make(cls)
    x = image(seed=7, batch=3)
    levels = decompose_images(model, x, targets=[1, 4, 2], top_n=2, image_batch=2, keep_maps=model.stage_names)
    for i, target in enumerate([1, 4, 2]):
        tree = decompose(model, x[i:i + 1], target=target, top_n=2)
        for nodes, lv in zip(tree.levels()[1:], levels):
            sel = lv.image_index == i
            assert [n.channel for n in nodes] == lv.channel[sel].tolist()
            assert [tuple(n.position) for n in nodes] == [tuple(p) for p in lv.position[sel].tolist()]
            torch.testing.assert_close(torch.tensor([n.contribution for n in nodes], dtype=torch.float64),
                                       lv.contribution[sel])
            torch.testing.assert_close(torch.tensor(np.stack([n.activation_map for n in nodes]), dtype=torch.float64),
                                       lv.activation_map[sel].double(), rtol=1e-5, atol=1e-6)
    # parents point at the row above on the same image; shares are fractions of the positive contributions
    for upper, lower in zip(levels[:-1], levels[1:]):
        assert torch.equal(upper.image_index[lower.parent], lower.image_index)
    assert bool((levels[0].share <= 1 + 1e-9).all())
    one = decompose_images(model, x, targets=[1, 4, 2], top_n=2, image_batch=1)
    for a, b in zip(levels, one):
        assert torch.equal(a.channel, b.channel) and torch.equal(a.parent, b.parent)
    assert count_hooks(model) == 0


# ---- Fig. 11 and Figs. 12-13 ------------------------------------------------------------------------------


def test_adversarial_peak_responses_measure_the_top_channels_on_both_images():
    model = make(TinyVGG, double=False)
    x = image(seed=8, double=False, batch=3)
    y = predict(model, x).argmax(1)
    adv = pgd_attack(model, x, y, eps=0.1, steps=5)
    t = adversarial_peak_responses(model, x, adv, y, top_n=3)
    assert len(t) == 3 * 2 * 3 and set(t["kind"]) == {"true class", "adversarial class"}
    with torch.no_grad():
        f = model.stages["stage1"](x)
        f = model.stages["stage3"](model.stages["stage2"](f))
    row = t.iloc[0]
    assert row["peak_clean"] == pytest.approx(float(f[int(row["image"]), int(row["channel"])].max()), rel=1e-5)
    assert t["clean_correct"].all()
    s = peak_response_summary(t, only_fooled=False)
    assert set(s["rank"]) == {1, 2, 3}
    assert count_hooks(model) == 0


def _stand_in_scenes(n=2, size=16):
    """A SceneBatch stand-in: left half background (context 'water' / blank), right half one part."""
    g = torch.Generator().manual_seed(0)
    part_index = torch.full((n, size, size), -1, dtype=torch.int8)
    part_index[:, :, size // 2:] = 1
    parts = torch.arange(3)
    return SimpleNamespace(
        images=torch.rand(n, 3, size, size, generator=g).double(), labels=torch.tensor([0, 3][:n]),
        part_masks=part_index[:, None].long() == parts[None, :, None, None], background_mask=part_index < 0,
        recipes=SimpleNamespace(context=torch.tensor([1, -1][:n])),
        world=SimpleNamespace(part_names=["body", "head", "legs"], context_names=["sky", "water"]),
    )


def test_context_assignment_labels_each_map_with_its_best_region():
    model = make(TinyVGG)
    scenes = _stand_in_scenes()
    r = context_assignment(model, scenes, top_n=2, mask_threshold=0.3)
    t = r.table
    assert len(t) == 2 * 2 + 2 * 4
    for depth, lv in enumerate(r.levels):
        rows = t[t["depth"] == depth]
        masks = region_masks(lv.activation_map, (16, 16), 0.3)
        bg = scenes.background_mask[lv.image_index]
        np.testing.assert_allclose(rows["iou_background"], mask_iou(masks, bg).numpy(), rtol=1e-6)
        np.testing.assert_allclose(rows["iou_object"], mask_iou(masks, ~bg).numpy(), rtol=1e-6)
        head = mask_iou(masks, scenes.part_masks[lv.image_index, 1]).numpy()
        want = np.where(rows["iou_background"].to_numpy() > head,
                        np.where(rows["image"].to_numpy() == 0, "context:water", "context:blank"), "part:head")
        assert list(rows["label"]) == list(want)
    s = context_summary(t, class_names=["a", "b", "c", "d"])
    assert list(s["class"]) == ["a", "d"] and (s["maps"] == 6).all()
    with pytest.raises(TypeError, match="SceneBatch"):
        context_assignment(model, scenes.images)
    assert count_hooks(model) == 0


# ---- no hooks left, also on bad input ------------------------------------------------------------------------


def _boom_model():
    model = make(TinyVGG)
    model.stages["stage3"].add_module("boom", Boom())
    return model


ENTRY_POINTS = {
    "predict": lambda m, x, y, layers: predict(m, x),
    "decompose_images": lambda m, x, y, layers: decompose_images(m, x, y, layers=layers, top_n=2),
    "occlusion_test": lambda m, x, y, layers: occlusion_test(m, x, y, layers=layers, only_misclassified=False),
    "pgd_attack": lambda m, x, y, layers: pgd_attack(m, x, y, steps=2),
    "fgsm_attack": lambda m, x, y, layers: fgsm_attack(m, x, y),
    "adversarial_peak_responses": lambda m, x, y, layers: adversarial_peak_responses(m, x, x, y, layers=layers),
    "context_assignment": lambda m, x, y, layers: context_assignment(
        m, SimpleNamespace(**{**vars(_stand_in_scenes()), "images": x, "labels": y}), layers=layers),
    "discriminative_degrees": lambda m, x, y, layers: discriminative_degrees(m, x, y, layers=layers, top_n=2),
}


@pytest.mark.parametrize("name", list(ENTRY_POINTS))
def test_meta_no_hooks_left_also_on_bad_input(name):
    fn, model, x = ENTRY_POINTS[name], _boom_model(), image(batch=2)
    good = torch.tensor([0, 3])
    layers = ["stages.stage2", "stages.stage3"]
    fn(model, x, good, layers)
    assert count_hooks(model) == 0
    if name != "predict":
        with pytest.raises(ValueError, match="(?i)class"):
            fn(model, x, torch.tensor([0, 99]), layers)
        assert count_hooks(model) == 0
        with pytest.raises(TypeError):
            fn(model, x, "cat", layers)
        assert count_hooks(model) == 0
        if name not in ("pgd_attack", "fgsm_attack"):
            with pytest.raises(ValueError, match="Invalid layer 'stages.stage9'.*Valid names"):
                fn(model, x, good, ["stages.stage2", "stages.stage9"])
            assert count_hooks(model) == 0
    with pytest.raises((ValueError, TypeError)):
        fn(model, x[0], good, layers)  # [C, H, W] instead of [B, C, H, W]
    assert count_hooks(model) == 0
    model.stages["stage3"].boom.armed = True
    with pytest.raises(RuntimeError, match="boom"):
        fn(model, x, good, layers)
    assert count_hooks(model) == 0
    assert all(p.requires_grad for p in model.parameters()) and not model.training


def test_part_removed_scenes_remove_one_present_part_never_the_body():
    from xailib.data.conceptworld import ConceptWorld

    world = ConceptWorld(size=32, seed=0)
    scenes, removed = part_removed_scenes(world, 12, seed=3)
    original = world.sample(12, split="test", seed=3)
    body = world.part_names.index("body")
    assert (removed != body).all() and (removed >= 0).all()
    rows = torch.arange(12)
    assert original.present[rows, removed].all() and not scenes.recipes.present[rows, removed].any()
    assert (original.present.sum(1) - scenes.recipes.present.sum(1) == 1).all()
    assert torch.equal(scenes.labels, original.label)
