"""AfI feature attribution (Eqs. 6-9): hand-computed numbers on HandNet, fast paths against the literal references
on VGG-like, residual (BatchNorm, in-place add) and Inception-like models, batching, and the gradient baseline."""

import pytest
import torch
from tiny_models import TinyInception, TinyResNet, TinyVGG, image, make

from tests.afi.afi_models import HandNet, hand_data
from xailib.afi.attribution import (FeatureImportance, channel_importance, channel_importance_reference,
                                    feature_importance, feature_importance_reference, gradient_feature_importance,
                                    gradient_feature_importance_reference, meta_detector, meta_detector_reference,
                                    meta_maps)
from xailib.layers import count_hooks

T = dict(dtype=torch.float64)


# ---- Eq. 6-7 by hand ----------------------------------------------------------------------------


def test_feature_importance_by_hand():
    model, (x, y, delta) = HandNet(), hand_data()
    res = feature_importance(model, x, delta, y, ["conv", "relu", "fc"])
    assert isinstance(res, FeatureImportance) and res.classes.tolist() == [0, 1] and res.counts.tolist() == [2, 2]
    ch0_k0 = torch.tensor([[0.1, 0.25], [-0.15, 0.05]], **T)  # mean of x - clamp(x - delta), class 0
    ch0_k1 = torch.tensor([[0.35, -0.15], [-0.5, 0.25]], **T)  # class 1 (x3 - delta_1 clamps at 0 and 1)
    conv = torch.stack([torch.stack([ch0_k0, -ch0_k0]), torch.stack([ch0_k1, -ch0_k1])])
    assert res.scores["conv"].shape == (2, 2, 2, 2)
    torch.testing.assert_close(res.scores["conv"], conv)  # ch1 = 0.5 - x: its record survives the in-place ReLU
    torch.testing.assert_close(res.fis["conv"], conv.clamp_min(0))
    relu_ch1_k0 = torch.tensor([[-0.1, -0.2], [0.1, -0.025]], **T)
    torch.testing.assert_close(res.scores["relu"][0], torch.stack([ch0_k0, relu_ch1_k0]))
    assert res.scores["fc"].shape == (2, 2)  # a dense layer: [K, C]
    torch.testing.assert_close(res.scores["fc"][0], torch.tensor([0.1, -0.225], **T))
    torch.testing.assert_close(res.fis["fc"][0], torch.tensor([0.1, 0.0], **T))
    assert count_hooks(model) == 0


def test_one_delta_one_class():
    model, (x, y, delta) = HandNet(), hand_data()
    res = feature_importance(model, x[2:], delta[1], 1, "conv")  # [C, H, W] occluder, int label
    assert res.classes.tolist() == [1]
    full = feature_importance(model, x, delta, y, "conv")
    torch.testing.assert_close(res.scores["conv"][0], full.scores["conv"][1])


def test_classes_map_rows_to_model_classes():
    model, (x, y, delta) = HandNet(), hand_data()
    swapped = feature_importance(model, x, delta.flip(0), y, "conv", classes=[1, 0])
    plain = feature_importance(model, x, delta, y, "conv")
    assert swapped.classes.tolist() == [1, 0]
    torch.testing.assert_close(swapped.scores["conv"], plain.scores["conv"].flip(0))


def test_input_range_clamps():
    model, (x, y, delta) = HandNet(), hand_data()
    x2 = x * 2 - 1  # images in [-1, 1]
    res = feature_importance(model, x2, delta, y, "conv", input_range=(-1, 1))
    ref = feature_importance_reference(model, x2, delta, y, "conv", input_range=(-1, 1))
    torch.testing.assert_close(res.scores["conv"], ref.scores["conv"])
    # with delta far beyond the range every occluded pixel is clamped to lo = -1
    big = torch.full_like(delta, 10.0)
    res = feature_importance(model, x2, big, y, "conv", input_range=(-1, 1))
    torch.testing.assert_close(res.scores["conv"][0, 0], (x2[:2, 0] + 1).mean(0))


# ---- fast path == literal reference --------------------------------------------------------------


MODELS = {
    "vgg": (TinyVGG, ["stages.stage1", "stages.stage2.2", "stages.stage3", "head.2"]),  # stage2.2: conv + in-place ReLU
    "resnet": (TinyResNet, ["stages.s1", "stages.s2.bn2", "stages.s3"]),  # bn2: followed by out += identity
    "inception": (TinyInception, ["stem", "inc1", "inc2.b3"]),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_feature_importance_matches_reference(name):
    cls, layers = MODELS[name]
    model = make(cls, seed=0)
    x = image(seed=1, batch=5)
    y = torch.tensor([0, 2, 0, 2, 2])
    g = torch.Generator().manual_seed(3)
    delta = 0.3 * torch.randn(2, 3, 16, 16, generator=g, dtype=torch.float64)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    fast = feature_importance(model, x, delta, y, layers, classes=[0, 2], batch_size=2)
    ref = feature_importance_reference(model, x, delta, y, layers, classes=[0, 2])
    for n in layers:
        torch.testing.assert_close(fast.scores[n], ref.scores[n])
        torch.testing.assert_close(fast.fis[n], ref.fis[n])
        assert (fast.fis[n] >= 0).all() and (fast.scores[n] < 0).any()  # Eq. 7 clipped something
    one_by_one = feature_importance(model, x, delta, y, layers, classes=[0, 2], batch_size=1)
    all_at_once = feature_importance(model, x, delta, y, layers, classes=[0, 2], batch_size=64)
    for n in layers:
        torch.testing.assert_close(one_by_one.scores[n], all_at_once.scores[n])
    assert count_hooks(model) == 0 and not model.training
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("name", ["vgg", "resnet"])
def test_gradient_importance_matches_reference(name):
    cls, layers = MODELS[name]
    model = make(cls, seed=0)
    x = image(seed=2, batch=4)
    y = torch.tensor([1, 3, 1, 1])
    fast = gradient_feature_importance(model, x, y, layers, batch_size=3)
    ref = gradient_feature_importance_reference(model, x, y, layers)
    assert fast.classes.tolist() == [1, 3] and fast.method == "gradient"
    for n in layers:
        torch.testing.assert_close(fast.scores[n], ref.scores[n])
        torch.testing.assert_close(fast.fis[n], ref.scores[n].clamp_min(0))
    assert count_hooks(model) == 0
    assert all(p.grad is None for p in model.parameters())


def test_gradient_importance_by_hand():
    model, (x, y, _) = HandNet(), hand_data()
    x = x.clone()
    x[0, 0, 0, 0] = 0.45  # keep 0.5 - x away from ReLU's kink
    res = gradient_feature_importance(model, x, y, ["conv", "relu"])
    conv = torch.zeros(2, 2, 2, 2, **T)
    conv[0, 0, 0, 0] = 1.0  # dZ0/dconv: Z0 = relu(x)[0, 0], x[0, 0] > 0 in both images
    conv[1, 1] = torch.tensor([[0.5, 0.0], [1.0, 0.5]])  # dZ1/dconv ch1 = 1[0.5 - x > 0], mean over x3, x4
    torch.testing.assert_close(res.scores["conv"], conv)
    relu = torch.zeros(2, 2, 2, 2, **T)
    relu[0, 0, 0, 0] = 1.0
    relu[1, 1] = 1.0  # Z1 = sum relu(ch1)
    torch.testing.assert_close(res.scores["relu"], relu)


# ---- Eq. 8 ----------------------------------------------------------------------------------------


def test_channel_importance_by_hand():
    model, (x, y, delta) = HandNet(), hand_data()
    res = feature_importance(model, x, delta, y, ["conv", "fc"])
    cis = channel_importance(res)
    # class 0: channel sums 0.1 + 0.25 + 0.05 = 0.4 and 0.15; B = 0.4
    torch.testing.assert_close(cis["conv"][0], torch.tensor([1.0, 0.375], **T))
    # class 1: ch0 0.35 + 0.25 = 0.6, ch1 0.15 + 0.5 = 0.65
    torch.testing.assert_close(cis["conv"][1], torch.tensor([0.6 / 0.65, 1.0], **T))
    torch.testing.assert_close(cis["fc"][0], torch.tensor([1.0, 0.0], **T))  # dense: C maps of 1 x 1
    by_sum = channel_importance(res, normalize="sum")
    torch.testing.assert_close(by_sum["conv"][0], torch.tensor([0.4 / 0.55, 0.15 / 0.55], **T))
    raw = channel_importance(res, normalize="none")
    torch.testing.assert_close(raw["conv"][0], torch.tensor([0.4, 0.15], **T))


def test_channel_importance_matches_reference_and_zero_fis():
    g = torch.Generator().manual_seed(0)
    fis = {"a": torch.rand(3, 5, 4, 4, generator=g), "b": torch.rand(3, 7, generator=g)}
    fis["a"][1] = 0.0  # a class whose occluder changed nothing here
    for norm in ("max", "sum", "none"):
        fast, ref = channel_importance(fis, norm), channel_importance_reference(fis, norm)
        for n in fis:
            torch.testing.assert_close(fast[n], ref[n])
    w = channel_importance(fis)
    assert torch.equal(w["a"][1], torch.zeros(5)) and not torch.isnan(w["a"]).any()
    assert torch.allclose(w["a"][[0, 2]].amax(1), torch.ones(2)) and (w["b"] <= 1).all() and (w["b"] >= 0).all()
    single = channel_importance(fis["a"])  # one tensor in, one tensor out
    torch.testing.assert_close(single, w["a"])


# ---- Eq. 9 ----------------------------------------------------------------------------------------


def test_meta_detector_by_hand():
    model, (x, _, _) = HandNet(), hand_data()
    cis = {"conv": torch.tensor([[1.0, 0.375], [0.0, 1.0]], **T), "fc": torch.tensor([[1.0, 0.0]], **T)}
    out = meta_detector(model, x, cis, ["conv"])
    assert out["conv"].shape == (2, 4, 2, 2)  # [K, N, h, w]
    torch.testing.assert_close(out["conv"][0], 0.625 * x[:, 0] + 0.1875)  # x + 0.375 (0.5 - x)
    torch.testing.assert_close(out["conv"][1], 0.5 - x[:, 0])
    flat = meta_detector(model, x, cis, ["conv", "fc"][:1], flatten=True)
    assert flat["conv"].shape == (2, 4, 4)
    dense = meta_detector(model, x, {"fc": cis["fc"]}, flatten=True)
    assert dense["fc"].shape == (1, 4, 1)
    logits = model(x)
    torch.testing.assert_close(dense["fc"][0, :, 0], logits[:, 0].detach())


@pytest.mark.parametrize("name", ["vgg", "resnet"])
def test_meta_detector_matches_reference(name):
    cls, layers = MODELS[name]
    model = make(cls, seed=0)
    x = image(seed=4, batch=3)
    delta = 0.3 * torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    cis = channel_importance(feature_importance(model, x, delta, torch.tensor([0, 1, 1]), layers))
    fast = meta_detector(model, x, cis, batch_size=2)
    ref = meta_detector_reference(model, x, cis)
    for n in layers:
        torch.testing.assert_close(fast[n], ref[n])
    acts = torch.randn(3, 4, 2, 2, **T)
    w = torch.rand(3, 4, **T)
    torch.testing.assert_close(meta_maps(acts, w, paired=True), meta_maps(acts, w)[torch.arange(3), torch.arange(3)])
