"""The floor's image perturbations (xailib.perturbations): answers by hand, seeds, clamping, and bad input."""

import pytest
import torch

from xailib.afi.occluder import Transform
from xailib.perturbations import PERTURBATIONS, add_noise, adjust_brightness, adjust_contrast, perturb, rotate


def test_rotate_by_90_degrees_is_a_quarter_turn_counter_clockwise():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    # the top row 0 1 2 3 becomes the left column read upwards: the pixel at (0, 3) goes to (0, 0)
    assert torch.allclose(rotate(x, 90.0), torch.rot90(x, 1, (-2, -1)), atol=1e-4)
    assert torch.allclose(rotate(x, 0.0), x, atol=1e-6)


def test_rotate_fills_the_corners_and_takes_one_angle_per_image():
    x = torch.ones(2, 1, 8, 8)
    out = rotate(x, torch.tensor([0.0, 45.0]), fill=0.25)
    assert torch.allclose(out[0], x[0])
    assert out[1, 0, 0, 0] == pytest.approx(0.25)            # a corner comes from outside the image
    assert out[1, 0, 4, 4] == pytest.approx(1.0)             # the centre stays
    with pytest.raises(ValueError, match="one angle per image"):
        rotate(x, torch.zeros(3))


def test_brightness_contrast_and_noise_by_hand():
    x = torch.tensor([[[[0.2, 0.4], [0.6, 0.8]]]])
    assert torch.allclose(adjust_brightness(x, 0.1), x + 0.1)
    # mean 0.5; factor 2 doubles each deviation: 0.2 -> -0.1, 0.8 -> 1.1 (not clamped here)
    assert torch.allclose(adjust_contrast(x, 2.0), torch.tensor([[[[-0.1, 0.3], [0.7, 1.1]]]]))
    assert torch.equal(add_noise(x, 0.1, seed=3), add_noise(x, 0.1, seed=3))
    assert not torch.equal(add_noise(x, 0.1, seed=3), add_noise(x, 0.1, seed=4))
    assert torch.equal(add_noise(x, 0.0, seed=3), x)


def test_perturb_clamps_scales_to_the_range_and_leaves_the_input():
    x = torch.tensor([[[[0.2, 0.4], [0.6, 0.8]]]])
    before = x.clone()
    assert torch.allclose(perturb(x, "brightness", 0.3), torch.tensor([[[[0.5, 0.7], [0.9, 1.0]]]]))
    # on (-1, 1) the range is 2 wide: +0.1 of it is +0.2
    assert torch.allclose(perturb(x, "brightness", 0.1, input_range=(-1, 1)), x + 0.2)
    assert torch.allclose(perturb(x, "contrast", 1.0), torch.tensor([[[[0.0, 0.3], [0.7, 1.0]]]]))
    assert torch.allclose(perturb(x, "rotation", 0.0), x, atol=1e-6)
    assert torch.equal(x, before)
    assert set(PERTURBATIONS) == {"brightness", "contrast", "noise", "rotation"}


@pytest.mark.parametrize("kind, amount, match", [("blur", 1.0, "unknown perturbation"),
                                                 ("contrast", -2.0, "factor 1 \\+ amount >= 0"),
                                                 ("noise", -0.1, "standard deviation"),
                                                 ("brightness", float("nan"), "finite number")])
def test_perturb_bad_input(kind, amount, match):
    with pytest.raises(ValueError, match=match):
        perturb(torch.rand(1, 3, 4, 4), kind, amount)


def test_bad_images():
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        rotate(torch.rand(3, 4, 4), 5.0)


def test_afi_transform_is_noise_then_the_floor_rotation():
    t = Transform(input_range=(0.0, 1.0))
    x = torch.rand(3, 3, 8, 10, generator=torch.Generator().manual_seed(0))
    u, angles = t.draw(x.shape, torch.Generator().manual_seed(1))
    assert torch.equal(t.apply(x, u, angles), rotate(x + u, angles, fill=0.5).clamp(0, 1))
