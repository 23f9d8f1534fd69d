"""Tests for xailib.attacks: FGSM and PGD, with answers computed by hand on a linear model."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tiny_models import TinyVGG, image, make

from xailib.attacks import fgsm_attack, pgd_attack
from xailib.batching import class_scores as predict
from xailib.layers import count_hooks


class Linear2(nn.Module):
    """logits = [0, w . x]: a linear model on 1 x 2 x 2 images whose input gradient is known in closed form."""

    def __init__(self, w):
        super().__init__()
        self.fc = nn.Linear(4, 1, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor(w, dtype=torch.float).view(1, 4))

    def forward(self, x):
        s = self.fc(x.flatten(1))
        return torch.cat([torch.zeros_like(s), s], 1)


W = [0.7, -1.3, 0.0, 2.0]


# ---- attacks ---------------------------------------------------------------------------------------------


def test_fgsm_on_a_linear_model_is_eps_sign_w():
    # CE for label 0 is log(1 + exp(w.x)): gradient sigmoid(w.x) * w, so the step is +eps * sign(w);
    # for label 1 it is -(1 - sigmoid(w.x)) * w, so the step is -eps * sign(w). sign(0) = 0: that pixel stays.
    model = Linear2(W)
    x = torch.full((2, 1, 2, 2), 0.5)
    adv = fgsm_attack(model, x, torch.tensor([0, 1]), eps=0.1)
    sign_w = torch.tensor([1.0, -1.0, 0.0, 1.0]).view(1, 2, 2)
    torch.testing.assert_close(adv[0] - x[0], 0.1 * sign_w)
    torch.testing.assert_close(adv[1] - x[1], -0.1 * sign_w)
    assert count_hooks(model) == 0


def test_fgsm_clips_to_the_image_range():
    model = Linear2(W)
    x = torch.tensor([1.0, 0.0, 0.3, 0.95]).view(1, 1, 2, 2)  # label 0 pushes along +sign(w)
    adv = fgsm_attack(model, x, [0], eps=0.1)
    torch.testing.assert_close(adv.flatten(), torch.tensor([1.0, 0.0, 0.3, 1.0]))


def test_pgd_stays_in_the_eps_ball_and_the_image_range_and_raises_the_loss():
    model = make(TinyVGG, double=False)
    x = image(seed=3, double=False, batch=4)
    x[:, :, :2] = 0.0  # pixels at the borders of [0, 1]
    x[:, :, -2:] = 1.0
    y = predict(model, x).argmax(1)
    eps = 0.05
    adv = pgd_attack(model, x, y, eps=eps, steps=5, seed=1)
    assert float((adv - x).abs().max()) <= eps + 1e-6
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    loss = lambda z: F.cross_entropy(predict(model, z), y, reduction="none")  # noqa: E731
    assert bool((loss(adv) > loss(x)).all())
    # deterministic for a seed; targeted steps lower the loss of the target class
    torch.testing.assert_close(adv, pgd_attack(model, x, y, eps=eps, steps=5, seed=1))
    target = (y + 1) % 5
    adv_t = pgd_attack(model, x, target, eps=eps, steps=5, targeted=True, random_start=False)
    lt = lambda z: F.cross_entropy(predict(model, z), target, reduction="none")  # noqa: E731
    assert bool((lt(adv_t) < lt(x)).all())
    assert count_hooks(model) == 0 and not model.training and all(p.requires_grad for p in model.parameters())


def test_pgd_on_a_linear_model_walks_to_the_ball_corner():
    # The loss gradient's sign does not change along the way, so PGD ends at x0 + eps * sign(w) (label 0).
    model = Linear2(W)
    x = torch.full((1, 1, 2, 2), 0.5)
    adv = pgd_attack(model, x, [0], eps=0.2, steps=4, step_size=0.08, random_start=False)
    torch.testing.assert_close(adv[0] - x[0], 0.2 * torch.tensor([1.0, -1.0, 0.0, 1.0]).view(1, 2, 2))


def test_attack_bad_input():
    model = Linear2(W)
    x = torch.full((1, 1, 2, 2), 0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pgd_attack(model, x * 3, [0])
    with pytest.raises(ValueError, match="eps"):
        pgd_attack(model, x, [0], eps=-0.1)
    with pytest.raises(ValueError, match="steps"):
        pgd_attack(model, x, [0], steps=0)
    with pytest.raises(ValueError, match="outside the model's 2 classes"):
        pgd_attack(model, x, [2])
    assert count_hooks(model) == 0
