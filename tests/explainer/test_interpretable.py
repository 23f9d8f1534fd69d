import math

import pytest
import torch
from torch import nn

from xailib.explainer.interpretable import (
    MASK_SUFFIX,
    MaskLayer,
    add_mask_layer,
    assign_parts,
    filter_loss,
    filter_loss_reference,
    filter_part_iou,
    mask_off,
    part_templates,
)
from xailib.layers import get_layer


def test_templates_by_hand():
    t = part_templates(4)                        # n = 4: tau = 0.5 / 16, beta = 4, so 1 - ||d||_1 per unit step
    tau = 0.5 / 16
    assert t.shape == (17, 4, 4)
    mu00 = t[0]
    assert mu00[0, 0] == pytest.approx(tau)      # 1 - 0
    assert mu00[0, 1] == pytest.approx(0.0)      # 1 - 4 * 1 / 4
    assert mu00[1, 1] == pytest.approx(-tau)     # 1 - 4 * 2 / 4 = -1
    assert mu00[3, 3] == pytest.approx(-tau)     # 1 - 6 = -5, clamped at -1
    mu12 = t[1 * 4 + 2]
    assert mu12[1, 2] == pytest.approx(tau) and mu12[0, 2] == pytest.approx(0.0)
    torch.testing.assert_close(t[-1], torch.full((4, 4), -tau))
    t8 = part_templates(8)                       # n = 8: one step away is 1 - 4/8 = 0.5
    assert t8[0, 0, 1] == pytest.approx(0.5 * 0.5 / 64)


def test_filter_loss_by_hand():
    # n = 1: T+ = 0.5, T- = -0.5. With x = (2 ln 3, 0): p(x|T+) = (3/4, 1/4), p(x|T-) = (1/4, 3/4); alpha = 1/2 so
    # p(x) = (1/2, 1/2) and MI = 3/4 ln(3/2) + 1/4 ln(1/2).
    x = torch.tensor([2 * math.log(3), 0.0], dtype=torch.float64).view(2, 1, 1, 1)
    expected = -(0.75 * math.log(1.5) + 0.25 * math.log(0.5))
    assert filter_loss(x, alpha=0.5).item() == pytest.approx(expected, rel=1e-6)
    assert filter_loss_reference(x, alpha=0.5) == [pytest.approx(expected, rel=1e-12)]
    # maps that are all the same carry no information: MI = 0
    assert filter_loss(torch.ones(3, 2, 2, 2), alpha=0.3).abs().max() < 1e-6


def test_filter_loss_matches_reference_and_is_differentiable():
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(5, 3, 3, 3, generator=g) * 6).double().requires_grad_(True)
    got = filter_loss(x, alpha=0.4, reduction="none")
    torch.testing.assert_close(got.detach(), torch.tensor(filter_loss_reference(x.detach(), alpha=0.4),
                                                         dtype=torch.float64), rtol=1e-10, atol=1e-12)
    assert (got <= 1e-12).all()                  # -MI <= 0
    assert filter_loss(x, 0.4, reduction="sum").item() == pytest.approx(got.sum().item())
    got.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert torch.autograd.gradcheck(lambda v: filter_loss(v, 0.4), (x.detach().clone().requires_grad_(True),))


def test_filter_loss_rewards_a_localised_filter():
    # a filter that fires at one place on positives and not on negatives shares more information with T than one
    # that fires everywhere on everything
    pos = torch.zeros(4, 1, 4, 4)
    pos[:, 0, 1, 2] = 100.0
    neg = torch.zeros(4, 1, 4, 4)
    focused = torch.cat([pos, neg])
    diffuse = torch.full((8, 1, 4, 4), 100.0 / 16)
    assert filter_loss(focused, 0.5) < filter_loss(diffuse, 0.5) - 0.1


def test_filter_loss_bad_input():
    with pytest.raises(ValueError, match=r"\[N, C, h, w\]"):
        filter_loss(torch.ones(2, 3), 0.5)
    with pytest.raises(ValueError, match="at least 2"):
        filter_loss(torch.ones(1, 1, 2, 2), 0.5)
    with pytest.raises(ValueError, match="alpha"):
        filter_loss(torch.ones(2, 1, 2, 2), 0.0)
    with pytest.raises(ValueError, match="reduction"):
        filter_loss(torch.ones(2, 1, 2, 2), 0.5, reduction="max")


def test_mask_layer_by_hand():
    x = torch.zeros(1, 2, 8, 8)
    x[0, 0, 2, 3] = 4.0
    x[0, 0, 2, 4] = 1.0
    x[0, 0, 7, 7] = 3.0                          # far from the peak: masked out
    x[0, 1] = -1.0                               # all equal: argmax is the first unit, (0, 0)
    out = MaskLayer()(x)
    assert out[0, 0, 2, 3] == pytest.approx(4.0)           # the template's peak is 1
    assert out[0, 0, 2, 4] == pytest.approx(0.5)           # one step: 1 - 4/8
    assert out[0, 0, 7, 7] == 0.0
    assert out[0, 1, 0, 0] == pytest.approx(-1.0) and out[0, 1, 0, 1] == pytest.approx(-0.5)
    assert out[0, 1, 4, 4] == 0.0


def test_mask_before_relu_equals_zhang_order():
    # relu(x * max(T, 0)) = max(relu(x) * T, 0): the supplement's order changes nothing
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 4, 5, 5, generator=g)
    ours = torch.relu(MaskLayer()(x))
    t = part_templates(5) * (25 / 0.5)
    mu = x.flatten(2).argmax(-1)
    zhang = torch.clamp(torch.relu(x) * t[mu], min=0)
    torch.testing.assert_close(ours, zhang)


def test_mask_layer_gradient_and_switch():
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    layer = MaskLayer()
    layer(x).sum().backward()
    assert torch.isfinite(x.grad).all()
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.Sequential(MaskLayer(), nn.ReLU()))
    img = torch.randn(2, 1, 4, 4)
    with mask_off(model):
        torch.testing.assert_close(model(img), torch.relu(model[0](img)))
    assert model[1][0].enabled
    with pytest.raises(RuntimeError), mask_off(model):
        raise RuntimeError("inside")
    assert model[1][0].enabled


def _net():
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Sequential(nn.Conv2d(2, 2, 1), nn.ReLU()), nn.Flatten())


def test_add_mask_layer_copies():
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    out = add_mask_layer(net, "2.1")
    assert isinstance(get_layer(out, "2.1" + MASK_SUFFIX), MaskLayer)
    assert isinstance(net[2][1], nn.ReLU)        # the original is untouched
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, before[k])
    assert set(out.state_dict()) == set(net.state_dict())   # the mask layer has no parameters


def test_add_mask_layer_bad_input():
    net = _net()
    with pytest.raises(ValueError, match=r"no layer 'features.top'.*ReLUs: 1, 2.1"):
        add_mask_layer(net, "features.top")
    with pytest.raises(ValueError, match="not the ReLU"):
        add_mask_layer(net, "0")
    with pytest.raises(ValueError, match="already holds"):
        add_mask_layer(add_mask_layer(net, "1"), "1")


def test_filter_part_iou_by_hand():
    acts = torch.zeros(2, 2, 2, 2)
    acts[0, 0, 0, 0] = 5.0
    acts[1, 0, 0, 0] = 4.0                       # filter 0: top 2 of 8 values -> unit (0, 0) in both images
    acts[0, 1, 1, 1] = 3.0
    acts[1, 1, 0, 1] = 2.0                       # filter 1: (1, 1) in image 0, (0, 1) in image 1
    masks = torch.zeros(2, 2, 2, 2, dtype=torch.bool)
    masks[:, 0, 0, 0] = True                     # part 0: unit (0, 0) in both
    masks[0, 1, 1, :] = True                     # part 1: bottom row of image 0 only
    iou = filter_part_iou(acts, masks, quantile=0.75)
    # filter 0: inter 2, union 2 -> 1 with part 0; inter 0 with part 1 (union 2 + 2) -> 0
    # filter 1: part 0: inter 0 -> 0; part 1: inter 1 ((1,1) of image 0), union 2 + 2 - 1 = 3 -> 1/3
    torch.testing.assert_close(iou, torch.tensor([[1.0, 0.0], [0.0, 1 / 3]]))
    table = assign_parts(iou, ["head", "tail"], min_iou=0.5)
    assert table["part"].iloc[0] == "head" and table["part"].isna().iloc[1]
    assert table["assigned"].tolist() == [True, False]
    with pytest.raises(ValueError, match="part_masks must be"):
        filter_part_iou(acts, masks[:1])
    with pytest.raises(ValueError, match="quantile"):
        filter_part_iou(acts, masks, quantile=1.0)
    with pytest.raises(ValueError, match="P = 1 part names"):
        assign_parts(iou, ["head"])


def test_filter_part_iou_upsamples():
    acts = torch.zeros(2, 1, 2, 2)
    acts[:, 0, 0, 0] = 1.0
    masks = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    masks[:, 0, :4, :4] = True
    # the top quarter of the upsampled values is the top-left quadrant: the mask itself
    assert filter_part_iou(acts, masks, quantile=0.75)[0, 0] == pytest.approx(1.0)
