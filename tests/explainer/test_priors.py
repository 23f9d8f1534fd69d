import pytest
import torch

from tests.explainer.explainer_models import LinearShared, OneConvMeanHead, SmallMultiLabel
from xailib.explainer.priors import case1_priors, case1_priors_reference, case2_priors, case2_priors_reference
from xailib.layers import count_hooks


def _positive_images(n=3, side=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, side, side, generator=g) + 0.1


@pytest.mark.parametrize("inplace", [False, True])
def test_case1_by_hand(inplace):
    model = OneConvMeanHead(inplace=inplace)
    images = _positive_images()
    got = case1_priors(model, "conv", images, target=0, clip=False)
    total = images.sum(dim=(1, 2, 3))
    # y_i = sum_hw x_hwi: channel 1 is the image, channel 2 twice it
    torch.testing.assert_close(got.concepts, torch.stack([total, 2 * total], 1))
    # w_i = sum_hw d out_0 / d x_hwi = V[0, i] for every image
    torch.testing.assert_close(got.priors, torch.tensor([[3.0, -1.0]]).expand(3, 2))
    torch.testing.assert_close(got.y_hat, 3 * total / 4 - 2 * total / 4)
    assert got.features.shape == (3, 2, 2, 2)
    clipped = case1_priors(model, "conv", images, target=0)
    torch.testing.assert_close(clipped.priors, torch.tensor([[3.0, 0.0]]).expand(3, 2))
    assert count_hooks(model) == 0


def test_case1_batched_equals_literal_reference():
    model = SmallMultiLabel(seed=1)
    images = torch.rand(5, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    got = case1_priors(model, "features.2", images, target=3, clip=False, batch_size=2)
    y, w = case1_priors_reference(model, "features.2", images, target=3, clip=False)
    torch.testing.assert_close(got.concepts.double(), y, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.priors.double(), w, atol=1e-6, rtol=1e-5)


def test_case2_by_hand():
    model = LinearShared()
    images = torch.rand(4, 1, 1, 3)
    got = case2_priors(model, "shared", images, target=0)
    W = LinearShared.W
    expected = torch.tensor([float(W[0] @ W[k]) / float(W[k] @ W[k]) for k in (1, 2, 3)])  # 1/2, 0, 3/25
    torch.testing.assert_close(expected, torch.tensor([0.5, 0.0, 0.12]))
    torch.testing.assert_close(got.priors, expected.expand(4, 3))
    torch.testing.assert_close(got.concepts, images.flatten(1) @ W[1:].T)
    assert got.names == ["output 1", "output 2", "output 3"]


def test_case2_batched_equals_finite_difference_reference():
    torch.set_default_dtype(torch.float64)
    try:
        model = SmallMultiLabel(seed=3)
        images = torch.rand(3, 3, 4, 4, generator=torch.Generator().manual_seed(4))
        got = case2_priors(model, "fc1", images, target=2, concepts=[0, 4, 1], batch_size=2)
        ref = case2_priors_reference(model, "fc1", images, 2, [0, 4, 1], eps=1e-6)
    finally:
        torch.set_default_dtype(torch.float32)
    torch.testing.assert_close(got.priors, ref, atol=1e-4, rtol=1e-4)
    assert count_hooks(model) == 0


def test_bad_input_leaves_no_hook_and_no_state_change():
    model = SmallMultiLabel()
    model.train()
    images = torch.rand(2, 3, 4, 4)
    with pytest.raises(ValueError, match="valid"):
        case1_priors(model, "nope", images, target=0)
    with pytest.raises(ValueError, match="outside the model's 5 outputs"):
        case1_priors(model, "features.2", images, target=7)
    with pytest.raises(ValueError, match="Case 1 needs a conv layer"):
        case1_priors(model, "fc1", images, target=0)
    with pytest.raises(ValueError, match="other than the target"):
        case2_priors(model, "fc1", images, target=0, concepts=[0, 1])
    assert count_hooks(model) == 0
    assert model.training and all(p.requires_grad for p in model.parameters())
