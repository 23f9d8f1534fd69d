"""ACE-style superpixel concepts and the SSC / SDC curves (xailib.data.superpixels), on hand-built images.

The images are 16 x 16 grey squares made of four uniform 8 x 8 quadrants; SLIC with 4 segments must find the
quadrants exactly. ``RegionModel`` predicts class 1 iff the mean of the top-left quadrant exceeds 0.5, and its
layer ``features`` (an 8 x 8 average pool) embeds a patch by its quadrant means, so that a uniform quadrant's
patch embeds as its intensity: k-means then has planted clusters, one per intensity.
"""

from collections import OrderedDict

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from tiny_models import Boom, TinyResNet, TinyVGG, make, same_state
from xailib.data.concepts import ConceptSet
from xailib.data.superpixels import (SegmentConcepts, SegmentSet, _ace_keeps, cluster_concepts, concept_masks,
                                     embed_patches, segment, segment_curves, segment_curves_reference, segment_patches)
from xailib.layers import count_hooks

TL, TR, BL, BR = "TL", "TR", "BL", "BR"


def quadrant(q: str, size: int = 16) -> torch.Tensor:
    """BoolTensor [size, size]: one quadrant."""
    m = torch.zeros(size, size, dtype=torch.bool)
    h = size // 2
    rows = slice(0, h) if q[0] == "T" else slice(h, size)
    cols = slice(0, h) if q[1] == "L" else slice(h, size)
    m[rows, cols] = True
    return m


def quad_image(tl, tr, bl, br, channels: int = 1) -> torch.Tensor:
    """[channels, 16, 16] with uniform quadrants (a value, or a tuple of one per channel)."""
    x = torch.zeros(channels, 16, 16)
    for q, v in zip((TL, TR, BL, BR), (tl, tr, bl, br)):
        x[:, quadrant(q)] = torch.as_tensor(v, dtype=torch.float32).view(-1, 1)
    return x


#: intensity 0.9 in 5 quadrants of 3 images, 0.2 in 4, 0.5 in 3
PLANTED = torch.stack([quad_image(0.9, 0.2, 0.5, 0.9), quad_image(0.9, 0.5, 0.2, 0.9), quad_image(0.2, 0.9, 0.5, 0.2)])
VALUES = [{TL: 0.9, TR: 0.2, BL: 0.5, BR: 0.9}, {TL: 0.9, TR: 0.5, BL: 0.2, BR: 0.9}, {TL: 0.2, TR: 0.9, BL: 0.5, BR: 0.2}]


class RegionModel(nn.Module):
    """[B, 1, 16, 16] -> logits [B, 2]: class 1 scores the top-left quadrant's mean, class 0 the constant 0.5."""

    def __init__(self):
        super().__init__()
        self.features = nn.AvgPool2d(8)  # [B, 1, 2, 2]: quadrant means
        self.fc = nn.Linear(4, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[0.0, 0, 0, 0], [1, 0, 0, 0]]))
            self.fc.bias.copy_(torch.tensor([0.5, 0.0]))

    def forward(self, x):
        return self.fc(self.features(x).flatten(1))


def segment_id(segs: SegmentSet, image: int, q: str) -> int:
    """The id of the segment of ``image`` whose mask is quadrant ``q``."""
    hits = [s for s in range(len(segs)) if int(segs.image_index[s]) == image and torch.equal(segs.masks[s], quadrant(q))]
    assert len(hits) == 1, f"image {image} has {len(hits)} segments equal to quadrant {q}"
    return hits[0]


@pytest.fixture
def blocky():
    """Three 1 x 28 x 28 images of random 7 x 7 blocks (SLIC merges pure noise into one segment)."""
    g = torch.Generator().manual_seed(1)
    return torch.rand(3, 1, 4, 4, generator=g).repeat_interleave(7, 2).repeat_interleave(7, 3)


@pytest.fixture
def planted():
    segs = segment(PLANTED, n_segments=4)
    return segs, cluster_concepts(RegionModel(), segs, "features", n_clusters=3)


# --------------------------------------------------------------------------------------------------------------
# segment
# --------------------------------------------------------------------------------------------------------------


def test_slic_finds_the_quadrants():
    segs = segment(PLANTED, n_segments=4)
    assert len(segs) == 12 and segs.n_images == 3 and segs.image_shape == (1, 16, 16)
    assert segs.image_index.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert segs.resolution.tolist() == [4] * 12 and segs.counts().tolist() == [4, 4, 4]
    for i in range(3):
        for q in (TL, TR, BL, BR):
            segment_id(segs, i, q)  # exactly one segment is that quadrant
    assert segs.masks.dtype == torch.bool and segs.masks.shape == (12, 16, 16)


def test_rgb_quadrants_are_found_in_lab():
    x = quad_image((1.0, 0, 0), (0, 1.0, 0), (0, 0, 1.0), (1.0, 1.0, 0), channels=3)[None]
    segs = segment(x, n_segments=4)
    assert len(segs) == 4 and segs.patches.shape == (4, 3, 16, 16)
    for q, colour in zip((TL, TR, BL, BR), ((1.0, 0, 0), (0, 1.0, 0), (0, 0, 1.0), (1.0, 1.0, 0))):
        s = segment_id(segs, 0, q)
        torch.testing.assert_close(segs.patches[s], torch.tensor(colour).view(3, 1, 1).expand(3, 16, 16),
                                   atol=1e-6, rtol=0)


def test_patch_of_a_uniform_quadrant_is_that_value():
    segs = segment(PLANTED, n_segments=4)
    for i in range(3):
        for q, v in VALUES[i].items():
            s = segment_id(segs, i, q)
            torch.testing.assert_close(segs.patches[s], torch.full((1, 16, 16), v), atol=1e-6, rtol=0)
            assert bool(segs.patch_masks[s].all())  # the box is the segment: it fills its patch


def test_patch_crop_and_resize_by_hand():
    g = torch.Generator().manual_seed(3)
    img = torch.rand(1, 1, 16, 16, generator=g)
    mask = torch.zeros(1, 16, 16, dtype=torch.bool)
    mask[0, 2:10, 4:12] = True  # an 8 x 8 box ...
    mask[0, 2:5, 4:7] = False  # ... holding an L-shaped segment
    masked = torch.where(mask[:, None], img, torch.tensor(0.25))
    # nearest: the 8 x 8 box magnified 2x, each pixel a 2 x 2 block
    p, pm = segment_patches(img, mask, 0.25, interpolation="nearest")
    expected = masked[0, 0, 2:10, 4:12].repeat_interleave(2, 0).repeat_interleave(2, 1)
    assert torch.equal(p[0, 0], expected)
    assert torch.equal(pm[0], mask[0, 2:10, 4:12].repeat_interleave(2, 0).repeat_interleave(2, 1))
    # a tall box (all rows, columns 0..7) is stretched 2x sideways only
    tall = torch.zeros(1, 16, 16, dtype=torch.bool)
    tall[0, :, :8] = True
    p, _ = segment_patches(img, tall, interpolation="nearest")
    assert torch.equal(p[0, 0], img[0, 0, :, :8].repeat_interleave(2, 1))
    # a segment whose box is the whole image: its masked image, unchanged by any interpolation
    ring = torch.ones(1, 16, 16, dtype=torch.bool)
    ring[0, 4:12, 4:12] = False
    for mode in ("bicubic", "bilinear", "nearest"):
        p, pm = segment_patches(img, ring, 0.5, interpolation=mode)
        torch.testing.assert_close(p, torch.where(ring[:, None], img, torch.tensor(0.5)), atol=1e-6, rtol=0)
        assert torch.equal(pm, ring)


def test_duplicates_across_resolutions_are_dropped():
    assert len(segment(PLANTED, n_segments=(4, 4))) == 12  # the second run repeats the first: IoU 1
    assert len(segment(PLANTED, n_segments=(4, 4), dedup_iou=None)) == 24
    segs = segment(PLANTED, n_segments=(4, 16))
    for i in range(3):
        coarse = segs.masks[(segs.image_index == i) & (segs.resolution == 4)].flatten(1).double()
        fine = segs.masks[(segs.image_index == i) & (segs.resolution == 16)].flatten(1).double()
        assert len(coarse) == 4 and len(fine) > 0
        inter = fine @ coarse.T
        union = fine.sum(1)[:, None] + coarse.sum(1)[None] - inter
        assert bool((inter / union <= 0.5).all())  # no kept fine segment duplicates a coarse one
        assert bool((fine.sum(0) <= 1).all())  # a resolution's segments are disjoint


def test_blank_and_tiny_segments_are_dropped():
    x = quad_image(0.0, 0.3, 0.6, 0.9)[None]
    segs = segment(x, n_segments=4)  # the black quadrant is empty background for fill=0
    assert len(segs) == 3 and not any(torch.equal(m, quadrant(TL)) for m in segs.masks)
    assert len(segment(x, n_segments=4, min_contrast=0.0)) == 4
    assert len(segment(x, n_segments=4, fill=0.3)) == 3  # now TR is the blank one
    with pytest.raises(ValueError, match="No segment .* Lower min_area"):
        segment(x, n_segments=4, min_area=0.3)  # every quadrant is 0.25 of the image


def test_segment_batched_equals_one_by_one_and_is_deterministic():
    g = torch.Generator().manual_seed(5)
    x = torch.rand(3, 1, 4, 4, generator=g).repeat_interleave(4, 2).repeat_interleave(4, 3)
    whole = segment(x, n_segments=(4, 9))
    again = segment(x, n_segments=(4, 9))
    parts = [segment(x[i:i + 1], n_segments=(4, 9)) for i in range(3)]
    assert len(whole) > 20
    for name in ("masks", "patches", "patch_masks", "resolution", "label"):
        assert torch.equal(getattr(whole, name), getattr(again, name))
        assert torch.equal(getattr(whole, name), torch.cat([getattr(p, name) for p in parts]))
    assert torch.equal(whole.image_index, torch.cat([torch.full((len(p),), i) for i, p in enumerate(parts)]))


def test_segment_errors():
    with pytest.raises(ValueError, match="empty batch"):
        segment(torch.zeros(0, 1, 16, 16))
    with pytest.raises(TypeError, match="torch.Tensor"):
        segment(np.zeros((1, 1, 16, 16)))
    with pytest.raises(ValueError, match="unsqueeze"):
        segment(torch.zeros(1, 16, 16))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        segment(PLANTED * 2)
    with pytest.raises(ValueError, match="n_segments"):
        segment(PLANTED, n_segments=())
    with pytest.raises(ValueError, match="n_segments"):
        segment(PLANTED, n_segments=(4, 0))
    with pytest.raises(ValueError, match="fill"):
        segment(PLANTED, fill=1.5)
    with pytest.raises(ValueError, match="interpolation"):
        segment(PLANTED, interpolation="lanczos")
    with pytest.raises(ValueError, match="No segment"):
        segment(torch.zeros(2, 1, 16, 16))  # blank images


# --------------------------------------------------------------------------------------------------------------
# cluster_concepts, concept_masks
# --------------------------------------------------------------------------------------------------------------


def test_planted_clusters_are_found_and_ordered_by_size(planted):
    segs, con = planted
    assert isinstance(con, SegmentConcepts) and len(con) == 3
    assert con.names == ["concept_0", "concept_1", "concept_2"]
    expected = {0.9: [(i, q) for i in range(3) for q, v in VALUES[i].items() if v == 0.9],
                0.2: [(i, q) for i in range(3) for q, v in VALUES[i].items() if v == 0.2],
                0.5: [(i, q) for i in range(3) for q, v in VALUES[i].items() if v == 0.5]}
    for j, value in enumerate((0.9, 0.2, 0.5)):  # sizes 5, 4, 3
        want = sorted((i, segment_id(segs, i, q)) for i, q in expected[value])
        assert sorted(con.members[j]) == want
        assert con.members[j] == sorted(con.members[j], key=lambda m: m[1])  # distance ties: by segment id
        cs = con.concept_sets[j]
        assert isinstance(cs, ConceptSet) and len(cs) == len(want) and cs.name == f"concept_{j}"
        torch.testing.assert_close(cs.images, torch.full((len(want), 1, 16, 16), value), atol=1e-6, rtol=0)
        assert bool(cs.masks.all())
        torch.testing.assert_close(con.centers[j], torch.full((1,), value, dtype=torch.float64), atol=1e-6, rtol=0)
    assert con.n_images() == [3, 3, 3]
    assert torch.allclose(con.distances, torch.zeros(12, dtype=torch.float64), atol=1e-6)


def test_concept_masks_by_hand(planted):
    segs, con = planted
    m = concept_masks(con)
    assert m.shape == (3, 3, 16, 16) and m.dtype == torch.bool
    assert torch.equal(m[0, 0], quadrant(TL) | quadrant(BR))
    assert torch.equal(m[0, 1], quadrant(TL) | quadrant(BR))
    assert torch.equal(m[0, 2], quadrant(TR))
    assert torch.equal(m[1, 2], quadrant(TL) | quadrant(BR))
    assert torch.equal(m[2, 1], quadrant(TR))
    assert torch.equal(concept_masks(con.members, segs), m)
    assert torch.equal(con.masks(), m)
    # an image without a segment of the concept gets an empty mask
    only_first = concept_masks([con.members[2][:1]], segs)
    assert bool(only_first[0, 0].any()) and not bool(only_first[0, 1:].any())


def test_filter_by_images_and_ace_rule():
    x = torch.cat([PLANTED, quad_image(0.7, 0.7, 0.7, 0.7)[None]])  # 0.7: four segments of one image
    segs = segment(x, n_segments=4)
    model = RegionModel()
    con = cluster_concepts(model, segs, "features", n_clusters=4)
    assert [len(m) for m in con.members] == [5, 4, 3]  # the one-image cluster is dropped
    assert all(i != 3 for m in con.members for i, _ in m)
    kept = cluster_concepts(model, segs, "features", n_clusters=4, min_images=1, ace_rule=False)
    assert [len(m) for m in kept.members] == [5, 4, 4, 3]
    assert {i for i, _ in kept.members[1]} == {0, 1, 2}  # 0.2 before 0.7: a tie of 4, broken by the lower id
    assert {i for i, _ in kept.members[2]} == {3}
    assert len(cluster_concepts(model, segs, "features", n_clusters=4, min_images=1)) == 3  # ACE's rule drops it
    none = cluster_concepts(model, segs, "features", n_clusters=4, min_images=4)
    assert len(none) == 0 and none.names == [] and concept_masks(none).shape == (0, 4, 16, 16)
    capped = cluster_concepts(model, segs, "features", n_clusters=4, max_segments=2)
    assert [len(m) for m in capped.members] == [2, 2, 2]
    assert capped.members[0] == con.members[0][:2]


def test_ace_rule_by_hand():
    # d > n/2
    assert _ace_keeps(size=10, distinct=6, n_images=100)
    assert not _ace_keeps(size=10, distinct=5, n_images=100)
    # d > n/4 and d > N/4
    assert _ace_keeps(size=40, distinct=11, n_images=40)
    assert not _ace_keeps(size=40, distinct=10, n_images=40)
    assert not _ace_keeps(size=40, distinct=11, n_images=44)
    # d > n/10 and d > N/2
    assert _ace_keeps(size=100, distinct=21, n_images=40)
    assert not _ace_keeps(size=210, distinct=21, n_images=40)


def test_clustering_is_deterministic(vgg, blocky):
    segs = segment(blocky, n_segments=(4, 9))
    a = cluster_concepts(vgg, segs, "features.stage3", n_clusters=5, min_images=1, ace_rule=False, seed=3)
    b = cluster_concepts(vgg, segs, "features.stage3", n_clusters=5, min_images=1, ace_rule=False, seed=3)
    assert torch.equal(a.labels, b.labels) and a.members == b.members and torch.equal(a.centers, b.centers)
    assert all(x.equal(y) for x, y in zip(a.concept_sets, b.concept_sets))
    assert sum(len(m) for m in a.members) == len(segs)  # with no filter every segment is in a concept
    # concept_masks against a literal union, member by member
    m = concept_masks(a)
    ref = torch.zeros(len(a), 3, 28, 28, dtype=torch.bool)
    for j, mem in enumerate(a.members):
        for i, s in mem:
            ref[j, i] |= segs.masks[s]
    assert torch.equal(m, ref)


def test_cluster_leaves_the_model_as_it_was(vgg, blocky):
    segs = segment(blocky, n_segments=(4, 9))
    saved = {k: v.clone() for k, v in vgg.state_dict().items()}
    vgg.train()
    try:
        cluster_concepts(vgg, segs, "features.stage3", n_clusters=4, min_images=1)
        assert all(m.training for m in vgg.modules())
    finally:
        vgg.eval()
    assert same_state(vgg, saved) and count_hooks(vgg) == 0  # BatchNorm statistics untouched: it ran in eval mode


def test_embeddings_with_inplace_relu_and_residual():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(5, 3, 16, 16, generator=g, dtype=torch.float64)
    vgg = make(TinyVGG)
    conv = vgg.stages.stage1[0]  # followed by ReLU(inplace=True): the record must keep the negatives
    with torch.no_grad():
        direct = conv(x)
    got = embed_patches(vgg, x, "stages.stage1.0")
    assert float(direct.min()) < 0
    torch.testing.assert_close(got, direct.mean((2, 3)))
    torch.testing.assert_close(embed_patches(vgg, x, "stages.stage1.0", pool="flatten", batch_size=2),
                               direct.flatten(1))
    res = make(TinyResNet)
    b = res.stages.s2  # bn2 is followed by `out += identity` in place
    with torch.no_grad():
        s1 = res.stages.s1(x)
        direct = b.bn2(b.conv2(b.relu(b.bn1(b.conv1(s1)))))
    torch.testing.assert_close(embed_patches(res, x, "stages.s2.bn2", batch_size=3), direct.mean((2, 3)))
    assert count_hooks(vgg) == 0 and count_hooks(res) == 0


def test_cluster_errors_leave_no_hooks(planted):
    segs, _ = planted
    model = RegionModel()
    with pytest.raises(ValueError, match="Invalid layer 'featurez'.*Did you mean 'features'"):
        cluster_concepts(model, segs, "featurez")
    with pytest.raises(ValueError, match="n_clusters=13 is more than the 12 segments"):
        cluster_concepts(model, segs, "features", n_clusters=13)
    with pytest.raises(TypeError, match="SegmentSet"):
        cluster_concepts(model, PLANTED, "features")
    with pytest.raises(ValueError, match="pool"):
        cluster_concepts(model, segs, "features", n_clusters=3, pool="max")
    with pytest.raises(TypeError, match="seed"):
        cluster_concepts(model, segs, "features", n_clusters=3, seed=0.5)
    boom = Boom()
    raising = nn.Sequential(OrderedDict(boom=boom, features=nn.AvgPool2d(8)))
    boom.armed = True
    with pytest.raises(RuntimeError, match="boom"):
        cluster_concepts(raising, segs, "features", n_clusters=3)
    assert count_hooks(model) == 0 and count_hooks(raising) == 0


def test_concept_masks_errors(planted):
    segs, con = planted
    with pytest.raises(TypeError, match="SegmentSet"):
        concept_masks(con.members)
    with pytest.raises(ValueError, match="segment id 12"):
        concept_masks([[(2, 12)]], segs)
    s = con.members[0][0][1]
    with pytest.raises(ValueError, match="another SegmentSet"):
        concept_masks([[(int(segs.image_index[s]) + 1, s)]], segs)
    with pytest.raises(ValueError, match="pairs"):
        concept_masks([[(0, 1, 2)]], segs)


# --------------------------------------------------------------------------------------------------------------
# segment_curves
# --------------------------------------------------------------------------------------------------------------


def test_ssc_and_sdc_by_hand(planted):
    """Concepts 0.9 (5 quadrants), 0.2 (4), 0.5 (3); the model says 1 iff the top-left quadrant is bright, which
    holds for images 0 and 1. Blank (fill 0): nothing is bright."""
    _, con = planted
    model, masks = RegionModel(), concept_masks(con)
    ssc = segment_curves(model, PLANTED, 1, masks, [0, 1, 2], mode="ssc", names=con.names)
    assert list(ssc.columns) == ["mode", "k", "concept", "concepts_edited", "accuracy", "n", "original_accuracy",
                                 "area"]
    assert ssc.k.tolist() == [0, 1, 2, 3] and (ssc["mode"] == "ssc").all() and (ssc.n == 3).all()
    assert ssc.accuracy.tolist() == [0.0, 2 / 3, 2 / 3, 2 / 3]  # pasting 0.9 restores images 0 and 1
    assert (ssc.original_accuracy == 2 / 3).all()
    assert ssc.area.tolist() == [0.0, 320 / 768, 576 / 768, 1.0]
    assert ssc.concept.tolist() == ["", "concept_0", "concept_1", "concept_2"]
    assert ssc.concepts_edited.tolist() == ["", "concept_0", "concept_0+concept_1", "concept_0+concept_1+concept_2"]
    sdc = segment_curves(model, PLANTED, 1, masks, [0, 1, 2], mode="sdc", names=con.names)
    assert sdc.accuracy.tolist() == [2 / 3, 0.0, 0.0, 0.0]  # removing 0.9 destroys both
    assert segment_curves(model, PLANTED, 1, masks, [1], mode="sdc").accuracy.tolist() == [2 / 3, 2 / 3]
    by_name = segment_curves(model, PLANTED, 1, masks, ["concept_2", "concept_0"], mode="ssc", names=con.names)
    assert by_name.accuracy.tolist() == [0.0, 0.0, 2 / 3]
    grey = segment_curves(model, PLANTED, 1, masks, [2], mode="ssc", fill=0.6)  # a bright blank: all say 1
    assert grey.accuracy.tolist() == [1.0, 1.0]
    pred = segment_curves(model, PLANTED, "predicted", masks, [0], mode="sdc")
    assert pred.original_accuracy.tolist() == [1.0, 1.0] and pred.accuracy.tolist() == [1.0, 1 / 3]
    assert segment_curves(model, PLANTED, 1, masks, [], mode="ssc").k.tolist() == [0]
    for curve in (ssc, sdc):
        ref = segment_curves_reference(model, PLANTED, 1, masks, [0, 1, 2], mode=curve["mode"][0], names=con.names)
        pd.testing.assert_frame_equal(curve, ref)


@pytest.mark.parametrize("mode", ["ssc", "sdc"])
def test_curves_equal_the_literal_reference(mode):
    torch.manual_seed(0)  # a random conv net whose predictions move with the edits (accuracies 1/3 .. 1)
    model = nn.Sequential(nn.Conv2d(1, 4, 5, stride=3), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(256, 3)).eval()
    g = torch.Generator().manual_seed(1)
    images = torch.rand(6, 1, 28, 28, generator=g)
    masks = torch.rand(4, 6, 28, 28, generator=g) < 0.3
    labels = torch.tensor([2, 2, 1, 2, 1, 2])  # the predictions on the unedited images
    accuracies = set()
    for fill in (0.0, torch.tensor([0.4]), torch.rand(1, 28, 28, generator=g)):
        fast = segment_curves(model, images, labels, masks, [3, 0, 2, 1], mode=mode, fill=fill)
        one = segment_curves(model, images, labels, masks, [3, 0, 2, 1], mode=mode, fill=fill, batch_size=1)
        ref = segment_curves_reference(model, images, labels, masks, [3, 0, 2, 1], mode=mode, fill=fill)
        pd.testing.assert_frame_equal(fast, ref)
        pd.testing.assert_frame_equal(fast, one)
        accuracies |= set(fast.accuracy)
    assert len(accuracies) >= 3 and count_hooks(model) == 0


def test_curve_errors(planted):
    _, con = planted
    model, masks = RegionModel(), concept_masks(con)
    with pytest.raises(ValueError, match=r"\[K, N, H, W\] = \[K, 3, 16, 16\]"):
        segment_curves(model, PLANTED, 1, masks[:, :2], [0], mode="ssc")
    with pytest.raises(ValueError, match=r"\[K, N, H, W\]"):
        segment_curves(model, PLANTED, 1, masks[0], [0], mode="ssc")
    with pytest.raises(TypeError, match="bool tensor"):
        segment_curves(model, PLANTED, 1, masks.float(), [0], mode="ssc")
    with pytest.raises(ValueError, match="concept 3, but concept_masks holds 3 concepts"):
        segment_curves(model, PLANTED, 1, masks, [0, 3], mode="ssc")
    with pytest.raises(ValueError, match="'concept_9', which is not one of"):
        segment_curves(model, PLANTED, 1, masks, ["concept_9"], mode="ssc", names=con.names)
    with pytest.raises(ValueError, match="repeat"):
        segment_curves(model, PLANTED, 1, masks, [1, 1], mode="sdc")
    with pytest.raises(TypeError, match="order"):
        segment_curves(model, PLANTED, 1, masks, 0, mode="sdc")
    with pytest.raises(ValueError, match="mode"):
        segment_curves(model, PLANTED, 1, masks, [0], mode="both")
    with pytest.raises(ValueError, match="2 labels for a batch of 3"):
        segment_curves(model, PLANTED, [1, 1], masks, [0], mode="ssc")
    with pytest.raises(ValueError, match="fill"):
        segment_curves(model, PLANTED, 1, masks, [0], mode="ssc", fill=-1.0)
    with pytest.raises(ValueError, match="fill"):
        segment_curves(model, PLANTED, 1, masks, [0], mode="ssc", fill=torch.zeros(2))
    with pytest.raises(ValueError, match="empty batch"):
        segment_curves(model, PLANTED[:0], 1, masks[:, :0], [0], mode="ssc")
    boom = Boom()
    raising = nn.Sequential(OrderedDict(boom=boom, model=RegionModel()))
    boom.armed = True
    with pytest.raises(RuntimeError, match="boom"):
        segment_curves(raising, PLANTED, 1, masks, [0], mode="ssc")
    assert count_hooks(raising) == 0
