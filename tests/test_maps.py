"""xailib.maps: bilinear resizing as two matrix products, against hand-computed weights and F.interpolate."""

import pytest
import torch
import torch.nn.functional as F

from xailib.maps import bilinear_weights, resize_bilinear


def test_weights_by_hand_2_to_4():
    # outputs read the input at (i + 1/2) * 2/4 - 1/2 = -1/4 (clamped to 0), 1/4, 3/4, 5/4 (the last neighbour twice)
    expected = torch.tensor([[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 1.0]])
    assert torch.equal(bilinear_weights(2, 4), expected)


def test_weights_by_hand_4_to_2():
    # downsampling without antialiasing: outputs read the input at 1/2 and 5/2
    expected = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5]])
    assert torch.equal(bilinear_weights(4, 2), expected)


def test_weights_rows_sum_to_one():
    for n_in, n_out in [(1, 5), (3, 7), (7, 224), (9, 4)]:
        w = bilinear_weights(n_in, n_out)
        assert w.shape == (n_out, n_in)
        assert torch.allclose(w.sum(1), torch.ones(n_out))


@pytest.mark.parametrize("h,w,big_h,big_w", [(4, 4, 64, 64), (2, 3, 17, 9), (7, 7, 224, 224), (8, 6, 4, 3),
                                              (1, 1, 5, 5), (5, 5, 5, 9)])
def test_matches_interpolate(h, w, big_h, big_w):
    maps = torch.rand(3, 5, h, w, generator=torch.Generator().manual_seed(h * 31 + w))
    ref = F.interpolate(maps, size=(big_h, big_w), mode="bilinear", align_corners=False)
    out = resize_bilinear(maps, (big_h, big_w))
    assert out.shape == ref.shape and out.dtype == maps.dtype
    assert torch.allclose(out, ref, atol=1e-6, rtol=0)


def test_any_leading_dims_and_float64():
    maps = torch.rand(2, 3, 4, 4, 4, dtype=torch.float64)
    out = resize_bilinear(maps, (8, 8))
    ref = F.interpolate(maps.reshape(-1, 1, 4, 4), size=(8, 8), mode="bilinear", align_corners=False)
    assert out.dtype == torch.float64
    assert torch.allclose(out.reshape(-1, 1, 8, 8), ref, atol=1e-12, rtol=0)
    assert torch.equal(resize_bilinear(maps[0, 0, 0], (8, 8)), out[0, 0, 0])


def test_same_size_is_a_copy():
    maps = torch.rand(2, 4, 4)
    out = resize_bilinear(maps, (4, 4))
    assert torch.equal(out, maps) and out.data_ptr() != maps.data_ptr()


@pytest.mark.parametrize("maps,size,match", [(torch.rand(4), (2, 2), r"\[\.\.\., h, w\]"),
                                             (torch.ones(2, 2, dtype=torch.long), (4, 4), "floating point"),
                                             (torch.rand(2, 2), 4, r"\(H, W\)"),
                                             (torch.rand(2, 2), (0, 4), "positive int")])
def test_bad_input(maps, size, match):
    with pytest.raises(ValueError, match=match):
        resize_bilinear(maps, size)


def test_weights_are_a_copy_of_the_cache():
    w = bilinear_weights(2, 4, dtype=torch.float64)
    w.mul_(0)                                             # a caller's in-place change must not reach the cache
    assert torch.equal(bilinear_weights(2, 4, dtype=torch.float64)[1], torch.tensor([0.75, 0.25], dtype=torch.float64))
