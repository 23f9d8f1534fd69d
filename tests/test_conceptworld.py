"""ConceptWorld: determinism, ground truth, interventions, probes, planted bias, errors.

Small batches only: the whole file runs in a few seconds on one core.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from xailib.data.conceptworld import (
    ALL_CLASS_NAMES, CLASS_NAMES, COLOUR_NAMES, MIN_SIZE, NEUTRAL_GREY, PART_NAMES, TEXTURE_NAMES, BiasSpec,
    SETTINGS, ConceptWorld, ConceptWorldDataset, Recipe, _PALETTE, _Z_ORDER,
)


@pytest.fixture(scope="module")
def world():
    return ConceptWorld(size=64, seed=0)


@pytest.fixture(scope="module")
def scenes(world):
    """60 scenes, six of every class, and their rendering."""
    rec = world.sample(60, split="train", seed=123)
    return rec, world.render(rec)


def _object_transform(world, rec):
    """Literal per-image object coordinates on the full pixel grid (the reference for the windowed renderer)."""
    H = world.size
    coords = (torch.arange(H, dtype=torch.float32) + 0.5) / H * 2 - 1
    out = []
    for i in range(len(rec)):
        xs, ys = coords[None, :], coords[:, None]
        dx, dy = xs - rec.center[i, 0], ys - rec.center[i, 1]
        c, s, sc = torch.cos(rec.rotation[i]), torch.sin(rec.rotation[i]), rec.scale[i]
        sign = -1.0 if bool(rec.flip[i]) else 1.0
        out.append(((c * dx + s * dy) / sc * sign, (-s * dx + c * dy) / sc))
    return out


def _reference_part_index(world, rec):
    """Slow reference: for each image, each part in z-order and each primitive, the shape test on the full
    grid, painted over the previous parts. Returns int64 [N, H, W] (-1 background)."""
    H = world.size
    out = torch.full((len(rec), H, H), -1, dtype=torch.long)
    for i, (u, v) in enumerate(_object_transform(world, rec)):
        for pname in _Z_ORDER:
            p = PART_NAMES.index(pname)
            if not bool(rec.present[i, p]):
                continue
            mask = torch.zeros(H, H, dtype=torch.bool)
            for prim in world._geom[rec.label[i], p]:
                active, shape, cu, cv, a, b, ang = prim.tolist()
                if not active:
                    continue
                a, b = a * rec.part_scale[i, p], b * rec.part_scale[i, p]
                ang = torch.tensor(ang, dtype=torch.float32) + rec.part_angle[i, p]
                du, dv = u - cu, v - cv
                ru = torch.cos(ang) * du + torch.sin(ang) * dv
                rv = -torch.sin(ang) * du + torch.cos(ang) * dv
                if shape == 0:
                    mask |= (ru / a) ** 2 + (rv / b) ** 2 <= 1.0
                elif shape == 1:
                    mask |= (ru.abs() <= a) & (rv.abs() <= b)
                else:
                    mask |= (ru >= -a) & (rv.abs() <= b * (a - ru) / (2 * a))
            out[i][mask] = p
    return out


# ---------------------------------------------------------------------------------------------- vocabulary
def test_vocabulary(world):
    assert world.class_names == list(CLASS_NAMES) == list(ALL_CLASS_NAMES[:10])
    assert len(world.part_names) == 13 and len(world.texture_names) == 5
    assert world.concept_names == world.part_names + world.texture_names + world.colour_names + world.context_names
    assert len(set(world.concept_names)) == len(world.concept_names)
    assert len(world.attribute_names) == 13 + 5 + 10 + 6 >= 20
    assert world.concept_kind("stripes") == "texture" and world.concept_kind("water") == "context"


# ---------------------------------------------------------------------------------------------- determinism
def test_same_seed_same_tensors_different_seed_different(world):
    a = world.render(world.sample(12, seed=5))
    b = world.render(world.sample(12, seed=5))
    c = world.render(world.sample(12, seed=6))
    d = ConceptWorld(size=64, seed=1).render(ConceptWorld(size=64, seed=1).sample(12, seed=5))
    assert a.recipes.equal(b.recipes)
    assert torch.equal(a.images, b.images) and torch.equal(a.part_index, b.part_index)
    assert not torch.equal(a.images, c.images)
    assert not torch.equal(a.images, d.images)  # the world seed is mixed in too


def test_splits_do_not_share_scenes(world):
    train, test = world.sample(300, "train", seed=0), world.sample(300, "test", seed=0)
    key = lambda r: {tuple(x) for x in torch.cat([r.center, r.scale[:, None]], 1).tolist()}  # noqa: E731
    assert not key(train) & key(test)
    dtrain = ConceptWorldDataset("train", n=40, seed=0)
    dtest = ConceptWorldDataset("test", n=40, seed=0)
    same = (dtrain.images[:, None] == dtest.images[None]).flatten(2).all(-1)
    assert not same.any()


def test_classes_are_balanced(world):
    counts = torch.bincount(world.sample(1000, seed=0).label, minlength=10)
    assert counts.tolist() == [100] * 10


# ---------------------------------------------------------------------------------------------- rendering
def test_windowed_renderer_matches_literal_reference(world, scenes):
    rec, batch = scenes
    ref = _reference_part_index(world, rec)
    assert torch.equal(batch.part_index.long(), ref)


def test_windowed_renderer_with_edited_recipes(world):
    """Big parts, big objects near the border and flips: the windows still hold every pixel."""
    rec = world.sample(20, seed=9)
    rec.part_scale[:] = 1.6
    rec.scale[:] = 0.95
    rec.center[:, 0] = torch.linspace(-0.9, 0.9, 20)
    rec.flip[::2] = True
    assert torch.equal(world.render(rec).part_index.long(), _reference_part_index(world, rec))


def test_batched_equals_one_by_one(world, scenes):
    rec, batch = scenes
    for i in (0, 17, 59):
        one = world.render(rec[i])
        assert torch.equal(one.images[0], batch.images[i])
        assert torch.equal(one.part_index[0], batch.part_index[i])


def test_dataset_chunks_equal_one_render():
    a = ConceptWorldDataset("test", n=30, seed=3, chunk_size=7)
    b = ConceptWorldDataset("test", n=30, seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.part_index, b.part_index)
    img, label = a[4]
    assert img.shape == (3, 64, 64) and img.dtype == torch.float32 and isinstance(label, int)
    assert label == int(a.labels[4]) and a.class_names == list(CLASS_NAMES)
    assert a.attributes.shape == (30, len(a.attribute_names))
    assert torch.equal(a.scenes([4]).images[0], img)


def test_hand_built_scene_pixels(world):
    """One red plain fish, unrotated, centred, scale 0.5: pixels checked by hand.

    Pixel j has centre x = (j + 0.5) / 32 - 1; object coordinate u = x / 0.5.
    Body: ellipse centre (0.05, 0), half-axes (0.58, 0.30). Eye: circle (0.40, -0.08), radius 0.06.
    """
    rec = world.sample(1, seed=0)
    P = len(PART_NAMES)
    fish = CLASS_NAMES.index("fish")
    rec.label[:] = fish
    rec.context[:] = -1
    rec.center[:] = 0.0
    rec.scale[:] = 0.5
    rec.rotation[:] = 0.0
    rec.flip[:] = False
    rec.present[:] = False
    rec.present[0, [PART_NAMES.index("body"), PART_NAMES.index("eye")]] = True
    rec.texture[:] = 0
    rec.colour[:] = COLOUR_NAMES.index("red")
    rec.part_scale[:] = 1.0
    rec.part_angle[:] = 0.0
    rec.colour_jitter[:] = 0.0
    out = world.render(rec)
    body, eye = PART_NAMES.index("body"), PART_NAMES.index("eye")
    # u = 0.05 -> x = 0.025 -> j = 32.3: pixel 32 (x = 0.015625, u = 0.03125); v: pixel 32, v = 0.03125
    assert out.part_index[0, 32, 32] == body
    assert torch.allclose(out.images[0, :, 32, 32], torch.tensor([0.86, 0.10, 0.10]))
    # eye centre u = 0.40 -> x = 0.20 -> j = 37.9 (pixel 37, u = 0.40625); v = -0.08 -> y = -0.04 -> pixel 30
    assert out.part_index[0, 30, 37] == eye
    # body tip: u = 0.05 + 0.58 = 0.63 -> x = 0.315 -> j = 41.6: pixel 41 (u = 0.594) body,
    # pixel 42 (u = 0.656) background
    assert out.part_index[0, 32, 41] == body and out.part_index[0, 32, 42] == -1
    # top of the body: v = -0.30 -> y = -0.15 -> pixel 27 (v = -0.28) body, pixel 26 (v = -0.34) not
    assert out.part_index[0, 27, 34] == body and out.part_index[0, 26, 34] == -1
    # the rim of the body is 0.6 x red; the background is blank grey
    assert torch.allclose(out.images[0, :, 27, 34], 0.6 * torch.tensor([0.86, 0.10, 0.10]))
    assert torch.equal(out.images[0, :, 0, 0], torch.full((3,), 0.5))
    assert P == out.part_masks.shape[1]


def test_images_in_range_and_masks_consistent(world, scenes):
    rec, batch = scenes
    assert batch.images.shape == (60, 3, 64, 64) and batch.images.dtype == torch.float32
    assert float(batch.images.min()) >= 0.0 and float(batch.images.max()) <= 1.0
    pm = batch.part_masks
    assert pm.shape == (60, 13, 64, 64)
    assert (pm.sum(1) <= 1).all(), "parts are disjoint (each pixel belongs to the top part)"
    assert torch.equal(pm.any(1), batch.object_mask)
    visible = pm.flatten(2).any(-1)
    assert torch.equal(visible, rec.present), "every present part shows, no absent part does"
    # objects lie inside the frame: the outer 2-pixel border is background in most images
    border = batch.object_mask.clone()
    border[:, 2:-2, 2:-2] = False
    assert (border.flatten(1).sum(1) == 0).float().mean() > 0.9
    cm = batch.concept_masks
    P, T, K = 13, 5, 10
    assert cm.shape == (60, len(world.concept_names), 64, 64)
    assert torch.equal(cm[:, :P], pm)
    assert torch.equal(cm[:, P:P + T].sum(1), batch.object_mask.long())  # one texture per object pixel
    assert torch.equal(cm[:, P + T:P + T + K].sum(1), batch.object_mask.long())  # one colour per object pixel
    assert torch.equal(cm[:, P + T + K:].sum(1), batch.background_mask.long())  # one context per bg pixel
    stripes = world.concept_names.index("stripes")
    has_stripes = batch.attributes[:, world.attribute_names.index("texture_stripes")].bool()
    assert torch.equal(cm[:, stripes].flatten(1).any(1), has_stripes)


def test_attributes_agree_with_recipe(world, scenes):
    rec, batch = scenes
    attrs = batch.attributes
    assert attrs.shape == (60, len(world.attribute_names))
    for i in (0, 1, 2, 33):
        d = rec.to_dict(i)
        on = {name for name, a in zip(world.attribute_names, attrs[i].tolist()) if a == 1.0}
        expected = {f"has_{p}" for p in d["parts"]}
        expected |= {f"texture_{v['texture']}" for v in d["parts"].values()}
        expected |= {f"colour_{v['colour']}" for v in d["parts"].values()}
        expected |= {f"context_{d['context_name']}"}
        assert on == expected


def test_recipe_json_round_trip(world, scenes):
    rec, _ = scenes
    dicts = [json.loads(json.dumps(rec.to_dict(i))) for i in range(5)]
    assert dicts[0]["class_name"] in world.class_names
    back = Recipe.from_dicts(dicts)
    assert back.equal(rec[0:5])


def test_size_is_configurable():
    w = ConceptWorld(size=40, seed=0)
    b = w.render(w.sample(3))
    assert b.images.shape == (3, 3, 40, 40) and b.part_masks.shape == (3, 13, 40, 40)


# ---------------------------------------------------------------------------------------------- interventions
@pytest.mark.parametrize("part", ["head", "legs", "wings", "body"])
def test_remove_part_changes_only_its_pixels(world, scenes, part):
    rec, batch = scenes
    p = PART_NAMES.index(part)
    after = world.render(world.remove(rec, parts=[part]))
    changed = (after.images != batch.images).any(1)
    mask = batch.part_masks[:, p]
    assert not (changed & ~mask).any(), "pixels outside the part's visible mask stay identical"
    has = mask.flatten(1).any(1)
    assert has.sum() > 0
    frac = (changed & mask).flatten(1).sum(1)[has].float() / mask.flatten(1).sum(1)[has]
    assert frac.min() > 0.8, "what the part covered shows through"
    assert not after.part_masks[:, p].any()
    assert not rec.present[has, p].logical_not().any()  # the input recipes are untouched


def test_remove_concepts(world, scenes):
    rec, batch = scenes
    a = world.attributes(world.remove(rec, concepts=["stripes", "red", "water", "tail"]))
    names = world.attribute_names
    for n in ("texture_stripes", "colour_red", "context_water", "has_tail"):
        assert not a[:, names.index(n)].any()
    no_water = world.render(world.remove(rec, concepts="water"))
    water = rec.context == world.context_names.index("water")
    assert water.any()
    bg = batch.background_mask
    assert (no_water.images[water].permute(0, 2, 3, 1)[bg[water]] == 0.5).all()
    assert torch.equal(no_water.images[~water], batch.images[~water])
    grey = world.render(world.remove(rec, concepts="red"))
    red = batch.concept_mask("red")
    assert not torch.equal(grey.images, batch.images)
    assert ((grey.images != batch.images).any(1) & ~red).sum() == 0, "only red pixels change"
    assert torch.isclose(grey.images.permute(0, 2, 3, 1)[red], torch.tensor(NEUTRAL_GREY), atol=0.06).any()


def test_isolate_blank_outside_parts(world, scenes):
    rec, batch = scenes
    iso = world.render(world.isolate(rec, parts=["head", "tail"]))
    keep = batch.part_masks[:, [PART_NAMES.index("head"), PART_NAMES.index("tail")]].any(1)
    inside = iso.object_mask
    assert (iso.images.permute(0, 2, 3, 1)[~inside] == 0.5).all(), "blank background outside the parts"
    assert torch.equal(iso.part_index[inside].unique().sort().values,
                       torch.tensor([PART_NAMES.index("head"), PART_NAMES.index("tail")], dtype=torch.int8))
    # where head or tail was visible in the scene, the isolated image shows the same pixels
    assert torch.equal(iso.images.permute(0, 2, 3, 1)[keep], batch.images.permute(0, 2, 3, 1)[keep])
    assert not world.attributes(world.isolate(rec, "head"))[:, -6:].any(), "no context attribute"


def test_swap_context_changes_only_background(world, scenes):
    rec, batch = scenes
    night = world.render(world.swap(rec, context="night"))
    changed = (night.images != batch.images).any(1)
    assert not (changed & batch.object_mask).any()
    assert changed[rec.context != world.context_names.index("night")].any()
    assert torch.equal(night.part_index, batch.part_index)


def test_swap_texture_changes_only_object(world, scenes):
    rec, batch = scenes
    chk = world.swap(rec, texture="checker", parts=["body"])
    assert (chk.texture[:, 0] == TEXTURE_NAMES.index("checker")).all()
    assert torch.equal(chk.texture[:, 1:], rec.texture[:, 1:])
    out = world.render(chk)
    changed = (out.images != batch.images).any(1)
    assert not (changed & ~batch.part_masks[:, 0]).any()
    assert changed.any()


# ---------------------------------------------------------------------------------------------- probes
def test_every_probe_set_shows_its_concept(world):
    for concept in world.concept_names:
        probe = world.probe_set(concept, 3, seed=0)
        images, masks = probe
        assert images.shape == (3, 3, 64, 64) and masks.shape == (3, 64, 64)
        assert float(images.min()) >= 0 and float(images.max()) <= 1
        assert masks.flatten(1).any(1).all(), concept
        if probe.kind == "part":
            outside = images.permute(0, 2, 3, 1)[~masks]
            assert (outside == 0.5).all(), f"{concept}: the part alone on a blank background"
        if probe.kind == "context":
            assert masks.all()
    a, b = world.probe_set("stripes", 4, seed=1), world.probe_set("stripes", 4, seed=1)
    assert torch.equal(a.images, b.images)


def test_colour_probe_is_its_colour(world):
    images, _ = world.probe_set("blue", 5, seed=0)
    target = _PALETTE[COLOUR_NAMES.index("blue")]
    assert (images[:, :, 0, 0] - target).abs().max() <= 0.06 + 1e-6


def test_random_set(world):
    a, b = world.random_set(8, seed=0), world.random_set(8, seed=0)
    assert a.shape == (8, 3, 64, 64) and torch.equal(a, b)
    assert not torch.equal(a, world.random_set(8, seed=1))


# ---------------------------------------------------------------------------------------------- bias
def test_bias_rate_in_train_and_absent_in_test(world):
    bias = BiasSpec(context="water", target_class="cow", rate=0.9)
    water, cow = world.context_names.index("water"), world.class_index("cow")
    rec = world.sample(2000, "train", seed=0, bias=bias)
    target = rec.label == cow
    rate = (rec.context[target] == water).float().mean().item()
    assert abs(rate - 0.9) < 0.05  # 200 cows: 3 standard deviations are 0.064
    others = (rec.context[~target] == water).float().mean().item()
    assert abs(others - 1 / 6) < 0.03
    test = world.sample(2000, "test", seed=0)
    assert abs((test.context[test.label == cow] == water).float().mean().item() - 1 / 6) < 0.08
    with pytest.raises(ValueError, match="training data only"):
        world.sample(10, "test", bias=bias)
    with pytest.raises(ValueError, match="training data only"):
        ConceptWorldDataset("test", n=10, bias=bias)


def test_bias_changes_only_contexts_and_other_rate(world):
    plain = world.sample(500, seed=2)
    biased = world.sample(500, seed=2, bias=BiasSpec("sand", "fish", rate=1.0, other_rate=0.0))
    sand, fish = world.context_names.index("sand"), world.class_index("fish")
    assert torch.equal(plain.center, biased.center) and torch.equal(plain.texture, biased.texture)
    assert ((biased.context == sand) == (biased.label == fish)).all()


# ---------------------------------------------------------------------------------------------- errors
def test_errors_are_actionable(world, scenes):
    rec, _ = scenes
    with pytest.raises(ValueError, match=f"at least {MIN_SIZE}"):
        ConceptWorld(size=16)
    with pytest.raises(TypeError, match="size must be an int"):
        ConceptWorld(size=64.0)
    with pytest.raises(ValueError, match="n must be >= 1"):
        world.sample(0)
    with pytest.raises(TypeError, match="n must be an int"):
        world.sample("5")
    with pytest.raises(ValueError, match="Valid splits: train, test, val"):
        world.sample(5, split="validation")
    with pytest.raises(ValueError, match="Unknown class 'unicorn'. Valid classes: tiger"):
        world.sample(5, bias=BiasSpec("water", "unicorn"))
    with pytest.raises(ValueError, match="Unknown context 'lava'. Valid contexts: sky"):
        world.sample(5, bias=BiasSpec("lava", "cow"))
    with pytest.raises(ValueError, match=r"rate must be in \[0, 1\]"):
        BiasSpec("water", "cow", rate=1.5)
    with pytest.raises(TypeError, match="BiasSpec"):
        world.sample(5, bias={"context": "water"})
    with pytest.raises(ValueError, match="Unknown part 'tentacle'. Valid parts: body"):
        world.remove(rec, parts=["tentacle"])
    with pytest.raises(ValueError, match="Unknown concept 'glitter'. Valid concepts:"):
        world.remove(rec, concepts=["glitter"])
    with pytest.raises(ValueError, match="'plain' is the absence"):
        world.remove(rec, concepts=["plain"])
    with pytest.raises(ValueError, match="needs parts"):
        world.remove(rec)
    with pytest.raises(ValueError, match="Unknown texture 'velvet'"):
        world.swap(rec, texture="velvet")
    with pytest.raises(ValueError, match="Unknown concept"):
        world.probe_set("unicorn", 3)
    with pytest.raises(ValueError, match="n must be >= 1"):
        world.probe_set("head", 0)
    with pytest.raises(ValueError, match="n_classes must be between 2 and 12"):
        ConceptWorld(n_classes=13)
    with pytest.raises(TypeError, match="Recipe"):
        world.render(torch.zeros(3))
    with pytest.raises(ValueError, match="different world"):
        ConceptWorld(n_classes=3).render(rec)


def test_extra_classes_render():
    w = ConceptWorld(size=64, seed=0, n_classes=12)
    b = w.render(w.sample(24))
    assert set(b.labels.tolist()) == set(range(12))
    assert math.isclose(float(b.images.mean()), float(b.images.mean()))  # finite


# ---------------------------------------------------------------------------------------------- settings
def test_default_setting_renders_as_before():
    """Regression checksums of the default setting, recorded with the renderer of 20016d1 (before the
    settings existed) on x86_64 / torch 2.14.1: images and part indices are byte-identical."""
    import hashlib

    def digest(batch):
        return hashlib.sha256(batch.images.numpy().tobytes() + batch.part_index.numpy().tobytes()).hexdigest()

    w = ConceptWorld(size=64, seed=0)
    assert digest(w.render(w.sample(64, split="train", seed=11))) == \
        "6c1f2f0edfdaa7aa9abfbc57baca60c28a0410a382cb3950b8ac3904a23d0c01"
    w = ConceptWorld(size=48, seed=2, n_classes=12, setting="default")
    assert digest(w.render(w.remove(w.sample(24, split="test", seed=1), parts=["head"]))) == \
        "eda1814b3d81d4f66e95408ad489a9c3f461c1e39038bceceba747d40b1d262c"
    assert w.render(w.sample(3)).recipes.clutter is None


def test_unknown_setting_lists_the_valid_ones():
    with pytest.raises(ValueError, match="Unknown ConceptWorld setting 'extreme'. Valid settings: default, hard"):
        ConceptWorld(setting="extreme")
    with pytest.raises(ValueError, match="Valid settings: default, hard"):
        ConceptWorldDataset("test", n=4, setting="Hard")


@pytest.fixture(scope="module")
def hard():
    return ConceptWorld(size=64, seed=0, setting="hard")


@pytest.fixture(scope="module")
def hard_scenes(hard):
    rec = hard.sample(80, split="train", seed=5)
    return rec, hard.render(rec)


def _reference_occluder(world, cl):
    """Literal occluder masks [N, H, W] on the full grid, image by image."""
    H = world.size
    coords = (torch.arange(H, dtype=torch.float32) + 0.5) / H * 2 - 1
    out = torch.zeros(len(cl), H, H, dtype=torch.bool)
    for i in range(len(cl)):
        if not bool(cl.occluder[i]):
            continue
        dx, dy = coords[None, :] - cl.occluder_center[i, 0], coords[:, None] - cl.occluder_center[i, 1]
        c, s = torch.cos(cl.occluder_angle[i]), torch.sin(cl.occluder_angle[i])
        ru, rv = c * dx + s * dy, -s * dx + c * dy
        a, b = cl.occluder_size[i]
        if int(cl.occluder_shape[i]) == 0:
            out[i] = (ru / a) ** 2 + (rv / b) ** 2 <= 1.0
        else:
            out[i] = (ru.abs() <= a) & (rv.abs() <= b)
    return out


def test_hard_renderer_matches_literal_reference(hard, hard_scenes):
    """The painter's order of the hard setting, literally: distractor, then the object, then the occluder."""
    rec, batch = hard_scenes
    P = len(PART_NAMES)
    own_ref = _reference_part_index(hard, rec)
    dis_ref = _reference_part_index(hard, rec.clutter.distractor)
    occ_ref = _reference_occluder(hard, rec.clutter)
    canvas = torch.where(own_ref >= 0, own_ref, torch.where(dis_ref >= 0, dis_ref + P, -1))
    canvas[occ_ref] = 2 * P
    assert torch.equal(batch.part_index.long(), torch.where(canvas < P, canvas, -1))
    assert torch.equal(batch.clutter_index.long(), torch.where(canvas >= P, canvas - P, -1))
    # the sample really is cluttered: distractors and occluders show, and they hide some of the object
    assert batch.distractor_mask.flatten(1).any(1).float().mean() > 0.3
    assert batch.occluder_mask.flatten(1).any(1).float().mean() > 0.3
    hidden = (own_ref >= 0) & occ_ref
    assert hidden.flatten(1).any(1).sum() > 5


def test_hard_masks_hold_only_the_objects_own_visible_pixels(hard, hard_scenes):
    rec, batch = hard_scenes
    pm, dm, om = batch.part_masks, batch.distractor_part_masks, batch.occluder_mask
    own = pm.any(1)
    assert not (own & dm.any(1)).any() and not (own & om).any() and not (dm.any(1) & om).any()
    # object, distractor, occluder and background partition the image
    total = own.long() + batch.distractor_mask.long() + om.long() + batch.background_mask.long()
    assert (total == 1).all()
    assert torch.equal(batch.distractor_mask, dm.any(1))
    cm = batch.concept_masks
    P, T, K = 13, 5, 10
    clutter = ~own & ~batch.background_mask
    assert not cm[:, :, :, :][clutter.unsqueeze(1).expand_as(cm)].any(), "no concept on distractor/occluder pixels"
    assert torch.equal(cm[:, P:P + T].sum(1), own.long())
    assert torch.equal(cm[:, P + T + K:].sum(1), batch.background_mask.long())
    # a part hidden entirely by the occluder has an empty mask although the recipe has it
    visible = pm.flatten(2).any(-1)
    assert not (visible & ~rec.present).any()


def test_hard_contrast_is_pixelwise(hard, hard_scenes):
    rec, batch = hard_scenes
    flat = rec.clone()
    flat.clutter.contrast[:] = 1.0
    full = hard.render(flat)
    c = rec.clutter.contrast[:, None, None, None]
    assert torch.allclose(batch.images, 0.5 + c * (full.images - 0.5), atol=1e-6)
    assert float(rec.clutter.contrast.min()) >= SETTINGS["hard"].contrast[0]
    assert torch.equal(full.part_index, batch.part_index)


@pytest.mark.parametrize("edit", ["remove_head", "remove_stripes", "swap_context", "declutter", "swap_colour"])
def test_hard_interventions_change_only_their_pixels(hard, hard_scenes, edit):
    rec, batch = hard_scenes
    if edit == "remove_head":
        new, region = hard.remove(rec, parts=["head"]), batch.part_masks[:, PART_NAMES.index("head")]
    elif edit == "remove_stripes":
        new, region = hard.remove(rec, concepts=["stripes"]), batch.concept_mask("stripes")
    elif edit == "swap_context":
        new, region = hard.swap(rec, context="night"), batch.background_mask
    elif edit == "swap_colour":
        new, region = hard.swap(rec, colour="green", parts=["body"]), batch.part_masks[:, 0]
    else:
        new, region = hard.declutter(rec), ~batch.object_mask & ~batch.background_mask
    after = hard.render(new)
    changed = (after.images != batch.images).any(1)
    assert changed.any()
    assert not (changed & ~region).any(), f"{edit}: pixels outside its region changed"
    assert new.clutter is not rec.clutter and rec.clutter.occluder.any(), "the input recipes are untouched"


def test_declutter_reveals_what_was_hidden(hard, hard_scenes):
    rec, batch = hard_scenes
    clean = hard.render(hard.declutter(rec))
    assert not clean.occluder_mask.any() and not clean.distractor_mask.any()
    assert (clean.part_masks.sum((2, 3)) >= batch.part_masks.sum((2, 3))).all(), "parts only gain pixels"
    only_occ = hard.render(hard.declutter(rec, distractor=False))
    assert torch.equal(only_occ.distractor_mask | only_occ.object_mask | only_occ.background_mask,
                       torch.ones_like(only_occ.object_mask))
    iso = hard.render(hard.isolate(rec, ["head"]))
    assert not iso.distractor_mask.any() and not iso.occluder_mask.any()


def test_hard_recipes_round_trip_index_and_cat(hard, hard_scenes):
    rec, batch = hard_scenes
    dicts = [json.loads(json.dumps(rec.to_dict(i))) for i in range(4)]
    assert "clutter" in dicts[0] and "distractor" in dicts[0]["clutter"]
    assert Recipe.from_dicts(dicts).equal(rec[0:4])
    both = Recipe.cat([rec[0:3], rec[3:6]])
    assert both.equal(rec[0:6]) and not both.equal(rec[1:7])
    one = hard.render(rec[7])
    assert torch.equal(one.images[0], batch.images[7]) and torch.equal(one.clutter_index[0], batch.clutter_index[7])
    plain = ConceptWorld(size=64, seed=0).sample(2)
    with pytest.raises(ValueError, match="one setting"):
        Recipe.cat([plain, rec[0:2]])
    assert not plain.equal(rec[0:2])


def test_hard_sampling_seeded_and_distractors_of_other_classes(hard):
    a, b = hard.sample(200, seed=3), hard.sample(200, seed=3)
    assert a.equal(b) and not a.equal(hard.sample(200, seed=4))
    d = a.clutter.distractor
    shown = d.present.any(1)
    assert (d.label[shown] != a.label[shown]).all(), "a distractor is of another class"
    assert 0.5 < shown.float().mean() < 0.9 and (d.scale < a.scale).all()
    small = ConceptWorld(seed=0).sample(200, seed=3).scale
    assert float(a.scale.min()) < 0.6 < 0.62 <= float(small.min())  # smaller objects than the default's


def test_hard_dataset_and_load_dataset():
    from xailib.data import dataset_info, load_dataset

    ds = load_dataset("conceptworld-hard", "test", n=12, seed=1)
    assert ds.world.setting == "hard" and ds.clutter_index.shape == (12, 64, 64)
    again = ConceptWorldDataset("test", n=12, seed=1, setting="hard", chunk_size=5)
    assert torch.equal(ds.images, again.images) and torch.equal(ds.clutter_index, again.clutter_index)
    sc = ds.scenes([2, 3])
    assert torch.equal(sc.clutter_index, ds.clutter_index[[2, 3]])
    assert torch.equal(sc.images, ds.world.render(ds.recipes[[2, 3]]).images)
    assert dataset_info("conceptworld-hard").input_shape == (3, 64, 64)
    assert not torch.equal(ds.images, load_dataset("conceptworld", "test", n=12, seed=1).images)
    with pytest.raises(ValueError, match="is the hard setting"):
        load_dataset("conceptworld-hard", "test", n=2, setting="default")


def test_hard_probe_sets_show_the_concept_alone(hard):
    """Part and context probes of the hard world carry no distractor or occluder: the part (or background)
    alone, as in the default world."""
    for concept in ("head", "wings", "water"):
        probe = hard.probe_set(concept, 6, seed=0)
        batch = hard.render(probe.recipes)
        assert not batch.distractor_mask.any() and not batch.occluder_mask.any(), concept
        assert torch.equal(batch.images, probe.images)
    water = hard.probe_set("water", 4, seed=0)
    assert water.masks.all()


def test_hard_textures_are_faint_by_hand():
    """The hard setting's second pattern shade lies 30% of the way from the base colour to the default shade."""
    from xailib.data.conceptworld import _shade
    base = torch.tensor([[0.8, 0.6, 0.4], [0.08, 0.08, 0.08]])
    assert torch.allclose(_shade(base), torch.tensor([[0.8 * 0.28, 0.6 * 0.28, 0.4 * 0.28], [0.55, 0.55, 0.55]]), atol=1e-7)
    expected = torch.tensor([[0.8 - 0.3 * 0.576, 0.6 - 0.3 * 0.432, 0.4 - 0.3 * 0.288], [0.221, 0.221, 0.221]])
    assert torch.allclose(_shade(base, 0.3), expected, atol=1e-6)
    assert SETTINGS["hard"].pattern == 0.3 and SETTINGS["default"].pattern == 1.0


def test_hard_lookalikes_share_colours(world, hard):
    """The hard setting's colour overrides: cow white or brown (as the goat), fish also orange, sparrow also green;
    the default world keeps its classes' colours, and the override reaches the drawn scenes."""
    col = COLOUR_NAMES.index
    cow, fish = world.class_names.index("cow"), world.class_names.index("fish")
    assert world._main_col[cow, col("brown")] == 0 and world._main_col[cow, col("white")] == 1
    assert hard._main_col[cow, col("brown")] == 0.5 and hard._main_col[cow, col("white")] == 0.5
    assert hard._main_col[fish, col("orange")] == pytest.approx(0.3) and world._main_col[fish, col("orange")] == 0
    rec = hard.sample(400, seed=2)
    body = PART_NAMES.index("body")
    cows = rec.label == cow
    assert set(rec.colour[cows, body].tolist()) == {col("white"), col("brown")}
