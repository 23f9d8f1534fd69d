"""Class impressions (Sec. 4.4): the meta-detector's activation grows, images stay in range, RGB and greyscale,
seeds, and the model is left as it was."""

import pytest
import torch
from tiny_models import TinyResNet, make

from tests.afi.afi_models import HandNet
from xailib.afi.impressions import class_impressions, meta_activation, total_variation
from xailib.layers import count_hooks


def test_total_variation_by_hand():
    x = torch.tensor([[[[0.0, 1.0], [1.0, 1.0]]]])
    # vertical pairs |1-0|, |1-1| -> mean 0.5; horizontal |1-0|, |1-1| -> 0.5
    assert total_variation(x).tolist() == [1.0]
    assert total_variation(torch.ones(2, 3, 4, 4)).tolist() == [0.0, 0.0]


def test_rgb_impressions_increase_activation():
    model = make(TinyResNet, seed=0)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    w = torch.rand(2, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    res = class_impressions(model, {"stages.s3": w}, "stages.s3", image_shape=(3, 16, 16), steps=25, lr=0.1,
                            tv_weight=0.1, seed=0, progress=False)
    assert res.images.shape == (2, 3, 16, 16) and res.history.shape == (25, 2)
    assert (res.images > 0).all() and (res.images < 1).all()
    assert (res.final > res.initial * 1.5).all()
    torch.testing.assert_close(res.final, meta_activation(model, res.images, w, "stages.s3"))
    assert count_hooks(model) == 0 and not model.training
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    assert [p.requires_grad for p in model.parameters()] == flags and all(p.grad is None for p in model.parameters())
    again = class_impressions(model, {"stages.s3": w}, "stages.s3", image_shape=(3, 16, 16), steps=25, lr=0.1,
                              tv_weight=0.1, seed=0, progress=False)
    assert torch.equal(again.images, res.images)
    other = class_impressions(model, {"stages.s3": w}, "stages.s3", image_shape=(3, 16, 16), steps=25, lr=0.1,
                              tv_weight=0.1, seed=1, progress=False)
    assert not torch.equal(other.images, res.images)


def test_greyscale_dense_layer_and_input_range():
    model = HandNet()  # 1 x 2 x 2 input, its input_shape gives the image shape
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)  # class 0: Z0, class 1: Z1
    res = class_impressions(model, {"fc": w}, "fc", steps=60, lr=0.2, tv_weight=0.0, jitter=0, progress=False,
                            input_range=(-1, 1))
    assert res.images.shape == (2, 1, 2, 2)
    assert (res.images > -1).all() and (res.images < 1).all()
    assert (res.final > res.initial).all()
    assert res.images[0, 0, 0, 0] > 0.9  # Z0 = relu(x)[0, 0] grows with that pixel
    assert (res.images[1] < -0.9).all()  # Z1 = sum relu(0.5 - x) grows as x falls
    with pytest.raises(ValueError, match="channels"):
        class_impressions(model, w, "fc", image_shape=(3, 2, 2), steps=1, progress=False)


def test_tv_weight_smooths():
    model = make(TinyResNet, seed=0)
    w = torch.rand(1, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    kw = dict(image_shape=(3, 16, 16), steps=30, lr=0.1, jitter=1, progress=False)
    rough = class_impressions(model, w, "stages.s2", tv_weight=0.0, **kw)
    smooth = class_impressions(model, w, "stages.s2", tv_weight=50.0, **kw)
    assert total_variation(smooth.images) < total_variation(rough.images)
