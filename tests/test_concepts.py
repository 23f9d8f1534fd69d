"""Tests of concept sets (xailib.data.concepts) and the shared subset rule (xailib.data.sampling).

The TCAV folders are written here with PIL, pixel by pixel, so every loaded value can be checked by hand:
images are loaded at ``size=8, resize=8`` from 12x8 files, which is no resampling and a centre crop of
columns 2..9 (torchvision's ``CenterCrop``: left = round((12 - 8) / 2) = 2).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from xailib.data import ConceptSet, list_concepts, random_sets, subset_indices
from xailib.data.conceptworld import ConceptWorld
from xailib.checks import check_seed
from xailib.data.sampling import mix_seed

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def _save(path, pixels) -> None:
    """``pixels``: uint8 array [H, W, 3] (RGB) or [H, W] (a grey mask)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(path)


def _solid(value, w=8, h=8):
    return np.full((h, w, 3), value, dtype=np.uint8)


def _stripes_a():
    """12x8: columns 0-1 red, 10-11 blue; in the centre, rows 0-3 green and rows 4-7 white."""
    a = np.zeros((8, 12, 3), dtype=np.uint8)
    a[:, :2] = RED
    a[:, 10:] = BLUE
    a[:4, 2:10] = GREEN
    a[4:, 2:10] = WHITE
    return a


@pytest.fixture
def tcav(tmp_path):
    """A TCAV folder: stripes (3 images + masks + a README), dots (6 grey images), random_0, random_1."""
    root = tmp_path / "concepts"
    _save(root / "stripes" / "a.png", _stripes_a())
    _save(root / "stripes" / "b.PNG", _solid(RED, 12, 8))
    _save(root / "stripes" / "c.jpeg", _solid(128, 12, 8))  # uniform grey 128: JPEG's DC term is 0, exact
    (root / "stripes" / "notes.txt").write_text("not an image: skipped")
    mask_a = np.zeros((8, 12), dtype=np.uint8)
    mask_a[:, 2:6] = 255  # columns 2..5 -> columns 0..3 after the crop
    mask_c = np.zeros((8, 12), dtype=np.uint8)
    mask_c[:2] = 1  # a 0/1 mask: non-zero counts
    _save(root / "stripes_masks" / "a.png", mask_a)
    _save(root / "stripes_masks" / "b.png", np.zeros((8, 12)))
    _save(root / "stripes_masks" / "c.png", mask_c)
    for k in range(6):  # image k is grey 10 * k: the loaded value tells which file it was
        _save(root / "dots" / f"{k}.png", _solid(10 * k))
    for i, base in enumerate((100, 200)):
        for k in range(3):
            _save(root / f"random_{i}" / f"img{k}.png", _solid(base + k))
    return root


def _grey_index(images, step=10):
    """The file index k of grey images 10 * k (read off pixel (0, 0))."""
    return (images[:, 0, 0, 0] * 255 / step).round().long().tolist()


def _reference_subset(n_total, n, seed):
    """The subset rule written out: first n of torch.randperm with a generator seeded by seed, sorted."""
    gen = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(n_total, generator=gen)[:n].tolist())


# --------------------------------------------------------------------------------------------------------------
# The shared subset rule
# --------------------------------------------------------------------------------------------------------------


def test_subset_indices_are_the_numbers_of_before():
    # the values the former private fashion_mnist._subset gave, recorded before the move
    assert subset_indices(25, 10, 3).tolist() == [0, 5, 6, 9, 10, 11, 12, 16, 18, 21]
    assert subset_indices(100, 5, 0).tolist() == [19, 44, 71, 90, 93]
    assert subset_indices(7, 7, 11).tolist() == list(range(7))
    assert subset_indices(4, None, 0).tolist() == [0, 1, 2, 3]
    assert subset_indices(30, 6, 9).tolist() == _reference_subset(30, 6, 9)
    with pytest.raises(ValueError, match="n=26 is more than the 25 images of this split"):
        subset_indices(25, 26, 0)
    with pytest.raises(ValueError, match="positive int or None"):
        subset_indices(25, 0, 0)


def test_mix_seed_and_check_seed():
    from xailib.data.conceptworld import _mix_seed  # the world's own mixer: the two must stay the same numbers

    for parts in [(0,), (0, 1), (7, 3, 2), (-1, 2**40), ()]:
        assert mix_seed(*parts) == _mix_seed(*parts)
    assert 0 <= mix_seed(-5, 3) < 2**63 and mix_seed(0, 0) != mix_seed(0, 1) != mix_seed(1, 0)
    assert check_seed(np.int64(3)) == 3 and check_seed(None, optional=True) is None
    for bad in (1.5, True, "0", None):
        with pytest.raises(TypeError, match="seed must be an int"):
            check_seed(bad)


# --------------------------------------------------------------------------------------------------------------
# From a TCAV folder
# --------------------------------------------------------------------------------------------------------------


def test_from_folder_exact_pixels_crop_and_masks(tcav):
    s = ConceptSet.from_folder(tcav, "stripes", size=8, resize=8)
    assert len(s) == 3 and s.images.shape == (3, 3, 8, 8) and s.images.dtype == torch.float32
    assert s.image_shape == (3, 8, 8) and s.name == "stripes" and s.seed is None
    assert s.source == str(tcav / "stripes")
    a, b, c = s.images  # sorted: a.png, b.PNG, c.jpeg; notes.txt skipped
    assert torch.equal(a[:, :4], torch.tensor([0.0, 1.0, 0.0])[:, None, None].expand(3, 4, 8))  # green rows
    assert torch.equal(a[:, 4:], torch.ones(3, 4, 8))  # white rows; the red and blue columns are cropped off
    assert torch.equal(b, torch.tensor([1.0, 0.0, 0.0])[:, None, None].expand(3, 8, 8))
    assert torch.equal(c, torch.full((3, 8, 8), 128 / 255))
    expected = torch.zeros(3, 8, 8, dtype=torch.bool)
    expected[0, :, :4] = True  # mask columns 2..5, cropped to 0..3
    expected[2, :2] = True  # a 0/1 mask
    assert s.masks.dtype == torch.bool and torch.equal(s.masks, expected)


def test_from_folder_default_size_and_grey(tcav):
    s = ConceptSet.from_folder(tcav, "stripes")  # ImageNet: resize 256, crop 224
    assert s.images.shape == (3, 3, 224, 224) and s.masks.shape == (3, 224, 224)
    assert torch.equal(s.images[1], torch.tensor([1.0, 0.0, 0.0])[:, None, None].expand(3, 224, 224))
    grey = ConceptSet.from_folder(tcav, "stripes", size=8, resize=8, channels=1)
    assert grey.images.shape == (3, 1, 8, 8)
    assert torch.equal(grey.images[0, 0, 4:], torch.ones(4, 8))  # white stays 255
    assert torch.equal(grey.images[2], torch.full((1, 8, 8), 128 / 255))  # grey stays 128
    # green: ITU-R 601 luma 0.587 * 255 = 149.7, PIL rounds to 150
    assert torch.allclose(grey.images[0, 0, :4], torch.full((4, 8), 150 / 255), atol=1 / 255)
    fmnist = ConceptSet.from_folder(tcav, "dots", size=28, channels=1)  # Fashion-MNIST sized: resize 32, crop 28
    assert fmnist.images.shape == (6, 1, 28, 28) and fmnist.masks is None
    assert _grey_index(fmnist.images) == [0, 1, 2, 3, 4, 5]


def test_from_folder_subset_is_deterministic(tcav):
    a = ConceptSet.from_folder(tcav, "dots", n=3, seed=0, size=8)
    b = ConceptSet.from_folder(tcav, "dots", n=3, seed=0, size=8)
    c = ConceptSet.from_folder(tcav, "dots", n=3, seed=2, size=8)
    assert a.equal(b) and a.seed == 0
    assert _grey_index(a.images) == _reference_subset(6, 3, 0) == [2, 3, 5]
    assert _grey_index(c.images) == _reference_subset(6, 3, 2) == [0, 1, 3]
    assert not torch.equal(a.images, c.images)
    whole = ConceptSet.from_folder(tcav, "dots", size=8)
    assert whole.subset(3, seed=2).equal(c)  # drawing at load time == drawing from the whole folder
    masked = ConceptSet.from_folder(tcav, "stripes", n=2, seed=1, size=8, resize=8)
    full = ConceptSet.from_folder(tcav, "stripes", size=8, resize=8)
    idx = _reference_subset(3, 2, 1)
    assert torch.equal(masked.masks, full.masks[idx]) and torch.equal(masked.images, full.images[idx])


def test_list_concepts(tcav, tmp_path):
    found = list_concepts(tcav)
    assert found.concepts == ["dots", "stripes"]
    assert found.random == ["random_0", "random_1"]
    assert found.with_masks == ["stripes"]
    other = tmp_path / "other"
    for d in ("random_10", "random_2", "random_x", ".git", "cat", "cat_masks", "random500_0"):
        (other / d).mkdir(parents=True)
    found = list_concepts(other)
    assert found.random == ["random_2", "random_10"]  # by number, not by string
    assert found.concepts == ["cat", "random500_0", "random_x"] and found.with_masks == ["cat"]
    assert list_concepts(other, prefix="random500_").random == ["random500_0"]


def test_from_folder_errors(tcav, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist; pass root= a folder laid out as"):
        ConceptSet.from_folder(tmp_path / "missing", "stripes")
    with pytest.raises(ValueError) as info:
        ConceptSet.from_folder(tcav, "strips")
    msg = str(info.value)
    assert "Did you mean 'stripes'" in msg and "Concepts there: dots, stripes" in msg
    assert "random sets: random_0, random_1" in msg and "list_concepts(root)" in msg
    with pytest.raises(ValueError, match="n=4 but .* holds only 3 images; use n <= 3, n=None"):
        ConceptSet.from_folder(tcav, "stripes", n=4)
    with pytest.raises(ValueError, match="positive int or None"):
        ConceptSet.from_folder(tcav, "stripes", n=0)
    (tcav / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no images .* It is empty. Put the concept's images there"):
        ConceptSet.from_folder(tcav, "empty")
    (tcav / "text").mkdir()
    (tcav / "text" / "readme.md").write_text("x")
    with pytest.raises(ValueError, match="other entries, skipped: readme.md"):
        ConceptSet.from_folder(tcav, "text")
    (tcav / "broken").mkdir()
    (tcav / "broken" / "x.png").write_text("this is not a png")
    with pytest.raises(ValueError, match=r"Could not read .*x\.png as an image"):
        ConceptSet.from_folder(tcav, "broken")
    with pytest.raises(ValueError, match="is the mask folder of 'stripes'"):
        ConceptSet.from_folder(tcav, "stripes_masks")
    with pytest.raises(ValueError, match="name of a sub-folder"):
        ConceptSet.from_folder(tcav, "../concepts")
    with pytest.raises(ValueError, match="channels must be 3 .* or 1"):
        ConceptSet.from_folder(tcav, "stripes", channels=2)
    with pytest.raises(ValueError, match="resize=4 is smaller than size=8"):
        ConceptSet.from_folder(tcav, "stripes", size=8, resize=4)
    with pytest.raises(TypeError, match="root must be a folder path"):
        ConceptSet.from_folder(None, "stripes")


def test_mask_errors(tcav):
    (tcav / "stripes_masks" / "c.png").unlink()
    with pytest.raises(ValueError, match=r"no mask for 1 of the 3 images \(c\.jpeg\): add <stem>\.png .* c\.png"):
        ConceptSet.from_folder(tcav, "stripes", size=8, resize=8)
    _save(tcav / "stripes_masks" / "c.png", np.zeros((4, 4)))
    with pytest.raises(ValueError, match="is 4x4 pixels but its image .* is 12x8"):
        ConceptSet.from_folder(tcav, "stripes", size=8, resize=8)


# --------------------------------------------------------------------------------------------------------------
# From tensors: validation and conveniences
# --------------------------------------------------------------------------------------------------------------


def test_from_tensors_and_conveniences():
    images = torch.arange(5.0).div(8).view(5, 1, 1, 1).expand(5, 1, 2, 3).contiguous()  # image k: k / 8
    masks = torch.zeros(5, 2, 3, dtype=torch.bool)
    masks[:, 0, 0] = True
    s = ConceptSet.from_tensors("squares", images, masks, seed=4)
    assert len(s) == 5 and s.image_shape == (1, 2, 3) and s.source == "tensors" and s.seed == 4
    assert s.device == torch.device("cpu")
    assert repr(s) == "ConceptSet(name='squares', images=[5, 1, 2, 3], masks=[5, 2, 3], seed=4, source='tensors')"
    sub = s.subset(2, seed=7)
    idx = _reference_subset(5, 2, 7)
    assert torch.equal(sub.images, images[idx]) and torch.equal(sub.masks, masks[idx]) and sub.seed == 7
    assert sub.name == "squares" and s.subset(2, seed=7).equal(sub) and not s.subset(2, seed=8).equal(sub)
    moved = s.to("cpu")
    assert moved.equal(s) and s.to("auto").device.type in ("cpu", "cuda")
    assert s.renamed("other").name == "other" and not s.renamed("other").equal(s)
    with pytest.raises(ValueError, match="n=6 is more than the 5 images of concept set 'squares'"):
        s.subset(6)
    with pytest.raises(AttributeError):
        s.name = "x"  # frozen: a set is validated once and then stays valid


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(images=[[0.0]]), TypeError, "must be a torch.Tensor"),
        (dict(images=torch.zeros(3, 4, 4)), ValueError, "unsqueeze"),
        (dict(images=torch.zeros(1, 3, 4, 4, dtype=torch.uint8)), ValueError, r"x\.float\(\) / 255"),
        (dict(images=torch.full((1, 3, 4, 4), 1.5)), ValueError, r"must lie in \[0, 1\], got values in \[1.5, 1.5\]"),
        (dict(images=torch.full((1, 3, 4, 4), -0.2)), ValueError, "before normalisation"),
        (dict(images=torch.full((1, 3, 4, 4), float("nan"))), ValueError, r"must lie in \[0, 1\]"),
        (dict(images=torch.zeros(0, 3, 4, 4)), ValueError, "has no images"),
        (dict(masks=torch.zeros(2, 4, 4)), TypeError, "bool tensor .* masks > 0"),
        (dict(masks=torch.zeros(2, 1, 4, 4, dtype=torch.bool)), ValueError,
         r"\[N, H, W\] = \(2, 4, 4\).*masks\[:, 0\]"),
        (dict(masks=torch.zeros(3, 4, 4, dtype=torch.bool)), ValueError, r"\(2, 4, 4\)"),
        (dict(name=""), TypeError, "needs a name"),
        (dict(seed=0.5), TypeError, "seed must be an int or None"),
    ],
)
def test_validation_errors(kwargs, error, message):
    args = dict(name="c", images=torch.zeros(2, 3, 4, 4), masks=None, seed=None)
    args.update(kwargs)
    with pytest.raises(error, match=message):
        ConceptSet.from_tensors(**args)


# --------------------------------------------------------------------------------------------------------------
# From ConceptWorld
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world():
    return ConceptWorld(size=32, seed=0)


def test_from_conceptworld_part_masks_cover_the_part(world):
    heads = ConceptSet.from_conceptworld(world, "head", n=4, seed=0)
    probe = world.probe_set("head", 4, seed=0)
    assert torch.equal(heads.images, probe.images) and torch.equal(heads.masks, probe.masks)
    assert heads.name == "head" and heads.seed == 0
    assert heads.source == "conceptworld(size=32, seed=0, n_classes=10)"
    # the probe's own scenes, re-rendered: the mask is the head's visible pixels
    rendered = world.render(probe.recipes)
    assert torch.equal(heads.masks, rendered.part_masks[:, world.part_names.index("head")])
    # the head is alone on the blank background: a pixel differs from the blank grey exactly where the mask is
    differs = (heads.images != world.blank[None, :, None, None]).any(dim=1)
    assert torch.equal(differs, heads.masks) and bool(heads.masks.flatten(1).any(1).all())
    assert ConceptSet.from_conceptworld(world, "head", 4, seed=0).equal(heads)
    assert not torch.equal(ConceptSet.from_conceptworld(world, "head", 4, seed=1).images, heads.images)


def test_from_conceptworld_colour_and_context(world):
    red = ConceptSet.from_conceptworld(world, "red", n=3, seed=0)
    assert bool(red.masks.all())
    palette_red = torch.tensor([0.86, 0.10, 0.10])[None, :, None, None]
    assert bool(((red.images - palette_red).abs() <= 0.06 + 1e-6).all())  # the colour with its +-0.06 jitter
    grass = ConceptSet.from_conceptworld(world, "grass", n=2, seed=0)
    assert bool(grass.masks.all())  # the background alone, no object


def test_from_conceptworld_errors(world):
    with pytest.raises(ValueError, match=r"Unknown ConceptWorld concept 'haed'\. Did you mean 'head'.*body, head"):
        ConceptSet.from_conceptworld(world, "haed", 3)
    with pytest.raises(TypeError, match="world must be a ConceptWorld"):
        ConceptSet.from_conceptworld("world", "head", 3)
    with pytest.raises(ValueError, match="n must be a positive int"):
        ConceptSet.from_conceptworld(world, "head", 0)


def test_random_conceptworld_and_random_sets(world):
    r = ConceptSet.random_conceptworld(world, 4, seed=3)
    assert torch.equal(r.images, world.random_set(4, 3)) and r.masks is None and r.name == "random"
    sets = random_sets(world, n_sets=3, n=4, seed=0)
    assert [s.name for s in sets] == ["random_0", "random_1", "random_2"]
    for i, s in enumerate(sets):
        assert s.seed == mix_seed(0, i) and torch.equal(s.images, world.random_set(4, mix_seed(0, i)))
    again = random_sets(world, n_sets=2, n=4, seed=0)  # same seed: identical; fewer sets: the same first ones
    assert all(a.equal(b) for a, b in zip(again, sets))
    assert not torch.equal(sets[0].images, sets[1].images)
    assert not torch.equal(random_sets(world, 1, 4, seed=1)[0].images, sets[0].images)


# --------------------------------------------------------------------------------------------------------------
# Random sets from a folder and from a pool
# --------------------------------------------------------------------------------------------------------------


def test_random_sets_from_folder(tcav):
    whole = random_sets(tcav, n_sets=2, n=None, size=8)
    assert [s.name for s in whole] == ["random_0", "random_1"] and all(s.seed is None for s in whole)
    assert _grey_index(whole[0].images, step=1) == [100, 101, 102]  # the i-th set from the i-th folder
    assert _grey_index(whole[1].images, step=1) == [200, 201, 202]
    drawn = random_sets(tcav, n_sets=2, n=2, seed=0, size=8)
    for i, s in enumerate(drawn):
        assert s.seed == mix_seed(0, i)
        assert _grey_index(s.images, step=1) == [100 * (i + 1) + k for k in _reference_subset(3, 2, mix_seed(0, i))]
    assert all(a.equal(b) for a, b in zip(drawn, random_sets(tcav, n_sets=2, n=2, seed=0, size=8)))
    with pytest.raises(ValueError, match="random_2 is missing; random folders there: random_0, random_1. "
                                         "Add the folders, lower n_sets to 2"):
        random_sets(tcav, n_sets=3, n=2)
    with pytest.raises(ValueError, match="random500_0, random500_1 are missing; random folders there: none"):
        random_sets(tcav, n_sets=2, n=2, prefix="random500_")
    with pytest.raises(ValueError, match="n=5 but .*random_0 holds only 3 images"):
        random_sets(tcav, n_sets=2, n=5)


def test_random_sets_from_pool():
    pool = torch.arange(10.0).div(16).view(10, 1, 1, 1).expand(10, 1, 2, 2).contiguous()  # image k: k / 16
    sets = random_sets(pool, n_sets=3, n=4, seed=5)
    for i, s in enumerate(sets):
        assert s.name == f"random_{i}" and s.seed == mix_seed(5, i) and s.masks is None
        assert (s.images[:, 0, 0, 0] * 16).long().tolist() == _reference_subset(10, 4, mix_seed(5, i))
    assert all(a.equal(b) for a, b in zip(sets, random_sets(pool, n_sets=3, n=4, seed=5)))
    assert len({tuple((s.images[:, 0, 0, 0] * 16).long().tolist()) for s in sets}) == 3
    masks = torch.zeros(10, 2, 2, dtype=torch.bool)
    masks[::2] = True  # even images fully masked
    with_masks = random_sets(ConceptSet.from_tensors("pool", pool, masks), n_sets=2, n=4, seed=5)
    for s in with_masks:
        k = (s.images[:, 0, 0, 0] * 16).long()
        assert torch.equal(s.masks[:, 0, 0], k % 2 == 0)
    with pytest.raises(ValueError, match="n=11 is more than the pool's 10 images"):
        random_sets(pool, n_sets=2, n=11)
    with pytest.raises(ValueError, match="n must be a positive int"):
        random_sets(pool, n_sets=2, n=None)
    with pytest.raises(ValueError, match="n_sets must be a positive int"):
        random_sets(pool, n_sets=0, n=2)
    with pytest.raises(TypeError, match="random_sets draws from a ConceptWorld, a TCAV folder"):
        random_sets([pool], n_sets=2, n=2)
