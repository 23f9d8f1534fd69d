"""Tests of xailib.baselines: the registry and its one call shape, every method against a hand computation or the
library it comes from, and the method-agnostic randomisation and removal tests."""

import copy
import os
import subprocess
import sys
from collections import OrderedDict

import numpy as np
import pandas as pd
import pytest
import torch
from tiny_models import same_state
from torch import nn

import xailib.baselines as B
from xailib.baselines import (
    attribute,
    available,
    cascading_randomization,
    channel_removal_curve,
    data_randomization,
    get_method,
    method_options,
    randomization_layers,
    randomized_copy,
    reduce_maps,
    register,
    remove_channels,
    train_random_label_model,
)
from xailib.baselines import registry
from xailib.layers import count_hooks
from xailib.models import Normalize, build_model

FAST = dict(sg_samples=3, ig_steps=4)
FAST_CHANNEL = dict(n_steps=4)


def state_copy(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def snapshot(model):
    """Everything a method could leave changed: state dict, modes, flags, .grad, hooks, attributes captum writes."""
    return {"state": state_copy(model), "modes": [m.training for m in model.modules()],
            "flags": [p.requires_grad for p in model.parameters()],
            "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
            "params": [id(p) for p in model.parameters()],
            "inplace": [m.inplace for m in model.modules() if isinstance(m, nn.ReLU)]}


def assert_untouched(model, snap):
    assert count_hooks(model) == 0
    assert same_state(model, snap["state"])
    assert [m.training for m in model.modules()] == snap["modes"]
    assert [p.requires_grad for p in model.parameters()] == snap["flags"]
    now = [None if p.grad is None else p.grad for p in model.parameters()]
    assert all((a is None and b is None) or (a is not None and b is not None and torch.equal(a, b))
               for a, b in zip(now, snap["grads"]))
    assert [id(p) for p in model.parameters()] == snap["params"]
    assert [m.inplace for m in model.modules() if isinstance(m, nn.ReLU)] == snap["inplace"]
    assert not any(hasattr(m, "rule") or hasattr(m, "activations") for m in model.modules())
    assert all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks for m in model.modules())


# ------------------------------------------------------------------------------------------------
# Hand-built models
# ------------------------------------------------------------------------------------------------


class LinearNet(nn.Module):
    """[B, 1, 2, 2] -> flatten -> Linear(4 -> 2, no bias) with weights W: dS_c/dI = W[c], IG(0) = W[c] * x."""

    W = [[1.0, -2.0, 3.0, 0.5], [-1.0, 0.0, 2.0, 4.0]]

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor(self.W))

    def forward(self, x):
        return self.fc(x.flatten(1))


class TwoChannelLinear(nn.Module):
    """[B, 2, 1, 2] -> Linear(4 -> 1): weights [1, -2 | -3, 1]: colour 0 = [1, -2], colour 1 = [-3, 1] per pixel."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 1, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[1.0, -2.0, -3.0, 1.0]]))

    def forward(self, x):
        return self.fc(x.flatten(1))


class OneConvPool(nn.Module):
    """conv 1x1 (1 -> 2, weights [1, -2], no bias) -> ReLU(inplace) -> global average pool -> Linear(2 -> 2).

    The linear weights are V = [[1, 1], [1, -3]] (no bias). On a 2x2 image the layer maps are 2x2, so no
    upsampling is involved and Grad-CAM / Grad-CAM++ can be computed by hand.
    """

    V = [[1.0, 1.0], [1.0, -3.0]]

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, -2.0]).view(2, 1, 1, 1))
            self.fc.weight.copy_(torch.tensor(self.V))

    def forward(self, x):
        return self.fc(self.flatten(self.pool(self.relu(self.conv(x)))))


class TwoLayerFC(nn.Module):
    """[B, 1, 2, 2] -> flatten -> Linear(4 -> 3, W1, b1) -> ReLU(inplace) -> Linear(3 -> 2, W2, b2)."""

    W1 = [[1.0, 2.0, 0.0, -1.0], [0.5, -1.0, 1.0, 1.0], [-1.0, -1.0, -1.0, -1.0]]
    b1 = [0.1, -0.2, 0.05]
    W2 = [[2.0, -1.0, 1.0], [1.0, 3.0, -2.0]]
    b2 = [0.3, -0.1]

    def __init__(self):
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(4, 3)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(3, 2)
        with torch.no_grad():
            for layer, w, b in ((self.fc1, self.W1, self.b1), (self.fc2, self.W2, self.b2)):
                layer.weight.copy_(torch.tensor(w))
                layer.bias.copy_(torch.tensor(b))

    def forward(self, x):
        return self.fc2(self.relu(self.fc1(self.flatten(x))))


class PoolHead(nn.Module):
    """conv 1x1 (1 -> 2, weights [1, 2], no bias) -> ReLU(inplace) -> global average pool -> Linear(2 -> 3).

    The linear layer has weights [[1, 0], [0, 1], [-1, -1]] and bias [0, 0, 0.5]: with both channels removed
    (zeroed) the logits are the bias, so every image is classified as class 2.
    """

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(2, 3)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, 2.0]).view(2, 1, 1, 1))
            self.fc.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
            self.fc.bias.copy_(torch.tensor([0.0, 0.0, 0.5]))

    def forward(self, x):
        return self.fc(self.flatten(self.pool(self.relu(self.conv(x)))))


class FlatHead(nn.Module):
    """conv 3x3 (no bias) -> ReLU(inplace) -> Flatten -> Linear (no bias): LRP-epsilon at the ReLU output is G * F."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(4 * 5 * 5, 3, bias=False)

    def forward(self, x):
        return self.fc(self.flatten(self.relu(self.conv(x))))


class BoomFlatten(nn.Flatten):
    """A Flatten that raises ``RuntimeError('boom')`` while ``armed`` (a layer that raises inside forward; a
    Flatten, so that LRP has a rule for it)."""

    armed = False

    def forward(self, x):
        if self.armed:
            raise RuntimeError("boom")
        return super().forward(x)


class TinyNet(nn.Module):
    """Normalize -> two conv/BN/in-place-ReLU stages (max-pool between) -> avg-pool, flatten (can raise), linear."""

    def __init__(self):
        super().__init__()
        self.normalize = Normalize([0.5, 0.4, 0.3], [0.2, 0.3, 0.25])
        self.features = nn.Sequential(OrderedDict(
            stage1=nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(inplace=True)),
            pool=nn.MaxPool2d(2),
            stage2=nn.Sequential(nn.Conv2d(4, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU(inplace=True)),
        ))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(2), BoomFlatten(), nn.Linear(24, 5))
        self.stage_names = ["features.stage1", "features.stage2"]
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.2, 0.2)
                    m.running_var.uniform_(0.5, 1.5)
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.1, 0.2)

    def forward(self, x):
        return self.head(self.features(self.normalize(x)))


def fast_options(name, kind):
    opts = {"map": FAST, "channel": FAST_CHANNEL}[kind]
    return {k: v for k, v in dict(opts, top_n=2).items() if k in method_options(name, kind)}


# the methods that need nothing fitted or given (MACE, the additive explainer, AfI and TCAV require options, and
# are tested in tests/test_benchmark.py)
ALL_METHODS = [(kind, name) for kind in ("map", "channel") for name in available(kind)
               if not get_method(name, kind).requires]


# ------------------------------------------------------------------------------------------------
# The registry
# ------------------------------------------------------------------------------------------------


def test_every_method_is_registered_with_its_kind():
    assert set(available("map")) >= {"Gradient", "SmoothGrad", "IntegratedGradients", "GuidedBackprop", "GradCAM",
                                      "GradCAM++", "ExcitationBackprop", "LRP", "gAP"}
    assert set(available("channel")) >= {"Conductance", "InternalInfluence", "LRP", "Random", "gAP"}
    assert set(available("concept")) >= {"AfI", "TCAV"}
    assert {"MACE", "AdditiveExplainer"} <= set(available("map"))
    assert set(available()) == set(available("map")) | set(available("channel")) | set(available("concept"))
    assert get_method("LRP").kind == "map" and get_method("LRP", layer_given=True).kind == "channel"
    assert get_method("Conductance").kind == "channel" and get_method("GradCAM", layer_given=True).kind == "map"
    assert method_options("SmoothGrad") == ("sg_samples", "sg_stdev", "batch_size", "seed", "progress")
    assert "xailib.gap" in B.METHOD_PACKAGES


def test_gap_is_found_without_importing_xailib_gap():
    """The floor never imports xailib.gap itself; a look-up of "gAP" imports the method packages once."""
    code = (
        "import sys, torch\n"
        "import xailib.baselines as b\n"
        "assert 'xailib.gap' not in sys.modules, 'the floor imported a method folder'\n"
        "from xailib.models import build_model\n"
        "torch.manual_seed(0); m = build_model('vgg', 'fashion-mnist').eval()\n"
        "x = torch.rand(1, 1, 28, 28)\n"
        "maps = b.attribute(m, x, 0, method='gAP', top_n=2)\n"
        "assert 'xailib.gap' in sys.modules and maps.shape == (1, 28, 28)\n"
        "s = b.attribute(m, x, 0, method='gAP', layer='features.stage5')\n"
        "assert s.shape == (1, 64)\n"
        "print('ok')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]


def test_register_a_custom_method_and_its_errors(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", {k: dict(v) for k, v in registry._REGISTRY.items()})
    monkeypatch.setattr(registry, "_packages_loaded", True)

    def doubled(model, images, targets, layer, *, factor: float = 2.0):
        """Doubled images (a stand-in map method)."""
        return factor * images.cpu()

    method = register("Doubled", doubled, kind="map")
    assert method.options == ("factor",) and method.summary == "Doubled images (a stand-in map method)."
    x = torch.tensor([[[[1.0, -2.0]], [[3.0, 0.5]]]])
    model = TwoChannelLinear()
    assert attribute(model, x, 0, method="Doubled").tolist() == [[[8.0, 5.0]]]
    assert attribute(model, x, 0, method="Doubled", reduce="signed", factor=1.0).tolist() == [[[4.0, -1.5]]]
    with pytest.raises(ValueError, match="registered already"):
        register("Doubled", doubled, kind="map")
    register("Doubled", doubled, kind="map", replace=True)
    with pytest.raises(TypeError, match="kwargs"):
        register("Bad", lambda model, images, targets, layer, **kw: images, kind="map")
    with pytest.raises(TypeError, match="defaults"):
        register("Bad", lambda model, images, targets, layer, *, k: images, kind="map")
    with pytest.raises(TypeError, match=r"fn\(model, images, targets, layer"):
        register("Bad", lambda model, images: images, kind="map")
    with pytest.raises(ValueError, match="Unknown kind"):
        register("Bad", doubled, kind="pixel")
    with pytest.raises(ValueError, match="layer='required'"):
        register("Bad", doubled, kind="channel", layer="none")
    with pytest.raises(ValueError, match="default_layer"):
        register("Bad", doubled, kind="map", layer="optional")
    with pytest.raises(RuntimeError, match="returned"):
        register("Wrong", lambda model, images, targets, layer: images[..., :1], kind="map")
        attribute(model, x, 0, method="Wrong")


def test_unknown_method_lists_the_registered_names_per_kind():
    x = torch.rand(1, 1, 2, 2)
    with pytest.raises(ValueError, match=r"Unknown method 'Occlusion'.*map methods: \[.*'Gradient'.*channel methods: "
                                         r"\[.*'Conductance'"):
        attribute(LinearNet(), x, 0, method="Occlusion")
    with pytest.raises(ValueError, match=r"Unknown map method 'Conductance'.*is a channel method.*layer="):
        attribute(LinearNet(), x, 0, method="Conductance", kind="map")
    with pytest.raises(ValueError, match=r"Pass method=.*map methods"):
        attribute(LinearNet(), x, 0)
    with pytest.raises(TypeError, match="method name"):
        attribute(LinearNet(), x, 0, method=3)
    with pytest.raises(ValueError, match="Unknown kind"):
        attribute(LinearNet(), x, 0, method="Gradient", kind="pixels")


def test_layer_errors(vgg, images):
    with pytest.raises(ValueError, match=r"'Conductance' needs a layer.*model.stage_names"):
        attribute(vgg, images, 0, method="Conductance")
    with pytest.raises(ValueError, match=r"'Random' needs a layer.*named_layers"):
        attribute(PoolHead(), torch.rand(1, 1, 3, 3), 0, method="Random")
    with pytest.raises(ValueError, match=r"'Gradient' explains the input and takes no layer"):
        attribute(vgg, images, 0, method="Gradient", layer="features.stage5")
    with pytest.raises(ValueError, match="Invalid layer 'features.stage9'.*Valid names"):
        attribute(vgg, images, 0, method="Conductance", layer="features.stage9")
    with pytest.raises(ValueError, match="Invalid layer"):
        attribute(vgg, images, 0, method="GradCAM", layer="features.stage9")
    with pytest.raises(ValueError, match="no `stage_names`.*pass layer="):
        attribute(OneConvPool(), torch.rand(1, 1, 2, 2), 0, method="GradCAM++")
    with pytest.raises(ValueError, match="conv layer"):
        attribute(vgg, images, 0, method="Conductance", layer="head.fc1")
    with pytest.raises(ValueError, match="conv"):
        attribute(vgg, images, 0, method="Random", layer="head.fc1")
    assert count_hooks(vgg) == 0


@pytest.mark.parametrize("target, error, match", [
    (99, ValueError, "class"),
    (-1, ValueError, "class"),
    ([0, 1], ValueError, "one per image"),
    (1.5, TypeError, "target"),
    (torch.tensor([0.0, 1.0, 2.0]), TypeError, "target"),
    ("label", TypeError, "target"),
    (True, TypeError, "target"),
])
def test_bad_targets(vgg, images, target, error, match):
    saved = state_copy(vgg)
    for method, layer in (("Gradient", None), ("GradCAM++", None), ("ExcitationBackprop", None),
                          ("Conductance", "features.stage5")):
        with pytest.raises(error, match=match):
            attribute(vgg, images, target, method=method, layer=layer)
    assert count_hooks(vgg) == 0 and same_state(vgg, saved)


def test_bad_images_options_and_reduce(vgg, images):
    with pytest.raises(TypeError, match="torch.Tensor"):
        attribute(vgg, images.numpy(), 0, method="Gradient")
    with pytest.raises(ValueError, match=r"takes images \[B, 1, 28, 28\]"):
        attribute(vgg, torch.rand(2, 3, 28, 28), 0, method="Gradient")
    with pytest.raises(ValueError, match="unsqueeze"):
        attribute(vgg, images[0], 0, method="Gradient")
    with pytest.raises(TypeError, match=r"takes no option 'sg_samples'; its options are \['batch_size', 'progress'\]"):
        attribute(vgg, images, 0, method="Gradient", sg_samples=3)
    with pytest.raises(ValueError, match="batch_size"):
        attribute(vgg, images, 0, method="Gradient", batch_size=0)
    with pytest.raises(ValueError, match="reduce must be one of"):
        attribute(vgg, images, 0, method="Gradient", reduce="max")
    with pytest.raises(ValueError, match="reduce applies to map methods"):
        attribute(vgg, images, 0, method="Conductance", layer="features.stage5", reduce="abs")
    with pytest.raises(ValueError, match="interpolate_mode"):
        attribute(vgg, images, 0, method="GradCAM", interpolate_mode="linear")
    with pytest.raises(TypeError, match="torch.nn.Module"):
        attribute("vgg", images, 0, method="Gradient")
    assert count_hooks(vgg) == 0


# ------------------------------------------------------------------------------------------------
# Maps, by hand
# ------------------------------------------------------------------------------------------------


def test_gradient_smoothgrad_guided_ig_of_a_linear_model_by_hand():
    model = LinearNet().eval()
    x = torch.tensor([[[[0.5, 1.0], [2.0, -1.0]]], [[[1.0, 1.0], [0.0, 3.0]]]])
    W = torch.tensor(LinearNet.W).view(2, 1, 2, 2)
    t = [0, 1]
    for method in ("Gradient", "GuidedBackprop"):
        a = attribute(model, x, t, method=method, reduce=None)
        assert torch.equal(a, W[t])  # dS_c/dI = W[c] (no ReLU: Guided Backprop is the gradient)
    sg = attribute(model, x, t, method="SmoothGrad", reduce=None, sg_samples=5)
    assert torch.allclose(sg, W[t])  # the gradient of a linear model does not depend on the noise
    ig = attribute(model, x, t, method="IntegratedGradients", reduce=None, ig_steps=3)
    assert torch.allclose(ig, W[t] * x, atol=1e-6)  # (x - 0) * mean gradient = W[c] * x
    assert attribute(model, x, t, method="Gradient").tolist() == [[[1.0, 2.0], [3.0, 0.5]], [[1.0, 0.0], [2.0, 4.0]]]
    assert attribute(model, x, t, method="Gradient", reduce="signed").tolist() == [[[1.0, -2.0], [3.0, 0.5]],
                                                                                    [[-1.0, 0.0], [2.0, 4.0]]]


def test_reduce_by_hand():
    a = torch.tensor([[[[1.0, -2.0]], [[-3.0, 1.0]]]])  # [1, 2, 1, 2]
    assert reduce_maps(a, "abs").tolist() == [[[4.0, 3.0]]]
    assert reduce_maps(a, "signed").tolist() == [[[-2.0, -1.0]]]
    assert reduce_maps(a, None) is a
    with pytest.raises(ValueError, match="reduce"):
        reduce_maps(a, "max")
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        reduce_maps(a[0], "abs")
    model, x = TwoChannelLinear().eval(), torch.ones(1, 2, 1, 2)
    assert attribute(model, x, 0, method="Gradient").tolist() == [[[4.0, 3.0]]]  # sum_c |a_c| (default)
    assert attribute(model, x, 0, method="Gradient", reduce="signed").tolist() == [[[-2.0, -1.0]]]
    assert attribute(model, x, 0, method="Gradient", reduce=None).tolist() == [[[[1.0, -2.0]], [[-3.0, 1.0]]]]


X22 = torch.tensor([[[[1.0, -1.0], [2.0, 0.5]]]], dtype=torch.float64)  # [1, 1, 2, 2]


@pytest.mark.parametrize("layer, target, expected", [
    # at the ReLU: A0 = relu(x) = [[1, 0], [2, .5]], A1 = relu(-2x) = [[0, 2], [0, 0]]; dS_c/dA_k = V[c, k] / 4
    ("relu", 0, [[0.25, 0.5], [0.5, 0.125]]),         # relu(A0/4 + A1/4)
    ("relu", 1, [[0.25, 0.0], [0.5, 0.125]]),         # relu(A0/4 - 3 A1/4)
    # at the conv (before the in-place ReLU): z0 = x, z1 = -2x; dS_c/dz_k = V[c, k] / 4 where z_k > 0
    ("conv", 0, [[0.0625, 0.0], [0.125, 0.03125]]),   # alphas 3/16, 1/16: relu(3/16 x - 2/16 x)
    ("conv", 1, [[0.5625, 0.0], [1.125, 0.28125]]),   # alphas 3/16, -3/16: relu(3/16 x + 6/16 x)
])
def test_grad_cam_on_one_conv_by_hand(layer, target, expected):
    model = OneConvPool().double().eval()
    cam = attribute(model, X22, target, method="GradCAM", layer=layer)
    assert torch.allclose(cam, torch.tensor([expected], dtype=torch.float64), atol=1e-12)
    assert count_hooks(model) == 0 and model.relu.inplace


def gradcam_pp_reference(A: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Literal Grad-CAM++ with the exponential-output form (Eq. 19) and the package's scaling, for one image.

    ``A, g: [K, h, w]`` activations and dY^c/dA. alpha = g^2 / (2 g^2 + sum_ab A g^3) (0 where g = 0),
    w_k = sum_ij alpha relu(g), cam = relu(sum_k w_k A_k), scaled to [0, 1] twice as the package does.
    """
    s = A.sum(dim=(1, 2), keepdim=True)
    alpha = torch.where(g != 0, g ** 2 / (2 * g ** 2 + s * g ** 3 + 1e-6), torch.zeros_like(g))
    w = (alpha * g.clamp(min=0)).sum(dim=(1, 2))
    cam = (w[:, None, None] * A).sum(0).clamp(min=0)
    for _ in range(2):  # scale_cam_image per layer, then again after averaging the (one) layer
        cam = cam - cam.min()
        cam = cam / (1e-7 + cam.max())
    return cam


@pytest.mark.parametrize("layer", ["relu", "conv"])
@pytest.mark.parametrize("target", [0, 1])
def test_grad_cam_plus_plus_is_the_exponential_form_by_hand(layer, target):
    model = OneConvPool().double().eval()
    x = X22[0, 0]
    z = torch.stack([x, -2 * x])  # conv output, [2, 2, 2]
    V = torch.tensor(OneConvPool.V, dtype=torch.float64)
    if layer == "relu":
        A, g = z.clamp(min=0), V[target][:, None, None].expand(2, 2, 2) / 4
    else:  # pre-ReLU maps; the gradient passes where the ReLU is active
        A, g = z, V[target][:, None, None] / 4 * (z > 0)
    expected = gradcam_pp_reference(A, g)
    cam = attribute(model, X22, target, method="GradCAM++", layer=layer)
    assert torch.allclose(cam[0], expected, atol=1e-6)
    if layer == "relu" and target == 1:  # w_1 = 0 (negative gradient): the map is A0 / max A0
        assert torch.allclose(cam[0], torch.tensor([[0.5, 0.0], [1.0, 0.25]], dtype=torch.float64), atol=1e-6)
    grad_cam = attribute(model, X22, target, method="GradCAM", layer=layer)
    if target == 0:  # the two CAMs weigh the channels differently
        assert not torch.allclose(cam[0] / cam.max(), grad_cam[0] / grad_cam.max(), atol=1e-3)
    assert count_hooks(model) == 0


def test_excitation_backprop_of_a_two_layer_net_by_hand():
    """P(h_j) = h_j W2[c, j]^+ / sum_j' h_j' W2[c, j']^+ and P(x_i) = sum_j x_i W1[j, i]^+ / (sum_i' ...) P(h_j).

    x = [.5, 1, 2, .25]; h = relu(W1 x + b1) = [2.35, 1.3, 0] (the biases change h but take no share).
    Class 0: W2+ = [2, 0, 1] -> P(h) = [1, 0, 0]; x * W1[0]+ = [.5, 2, 0, 0] / 2.5 -> [.2, .8, 0, 0].
    Class 1: W2+ = [1, 3, 0] -> P(h) = [2.35, 3.9, 0] / 6.25 = [.376, .624, 0]; x * W1[1]+ = [.25, 0, 2, .25] / 2.5
    -> .376 [.2, .8, 0, 0] + .624 [.1, 0, .8, .1] = [.1376, .3008, .4992, .0624].
    """
    model = TwoLayerFC().double().eval()
    x = torch.tensor([[[[0.5, 1.0], [2.0, 0.25]]]], dtype=torch.float64).expand(2, 1, 2, 2)
    eb = attribute(model, x, [0, 1], method="ExcitationBackprop", reduce=None)
    expected = torch.tensor([[[[0.2, 0.8], [0.0, 0.0]]], [[[0.1376, 0.3008], [0.4992, 0.0624]]]], dtype=torch.float64)
    assert torch.allclose(eb, expected, atol=1e-5)
    assert torch.allclose(eb.sum((1, 2, 3)), torch.ones(2, dtype=torch.float64), atol=1e-5)  # a probability
    assert count_hooks(model) == 0 and model.relu.inplace


class ConvBN(nn.Module):
    def __init__(self, bn=True):
        super().__init__()
        layers = [nn.Conv2d(1, 3, 3, padding=1, bias=not bn)] + ([nn.BatchNorm2d(3)] if bn else [])
        self.body = nn.Sequential(*layers, nn.ReLU(inplace=True), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(3 * 4 * 4, 4))

    def forward(self, x):
        return self.body(x)


def test_excitation_backprop_merges_batchnorm_for_the_call_and_reverts_it():
    """EB on conv -> BN equals EB on the same net with the BN folded into the conv by hand; the model is restored.

    (The z+ rule is blind to a positive scale per output channel, so one BatchNorm scale is negative: passing the
    relevance through an unmerged BatchNorm would then use the wrong weights.)"""
    torch.manual_seed(0)
    model = ConvBN().double().eval()
    with torch.no_grad():
        bn = model.body[1]
        bn.running_mean.uniform_(-0.3, 0.3)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.copy_(torch.tensor([1.3, -0.7, 0.6]))  # a negative scale flips which weights are positive
        bn.bias.uniform_(-0.2, 0.2)
    folded = ConvBN(bn=False).double().eval()
    with torch.no_grad():
        scale = bn.weight / (bn.running_var + bn.eps).sqrt()
        folded.body[0].weight.copy_(model.body[0].weight * scale[:, None, None, None])
        folded.body[0].bias.copy_(bn.bias - bn.running_mean * scale)
        folded.body[4].load_state_dict(model.body[5].state_dict())
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64)
    assert torch.allclose(model(x), folded(x))
    snap = snapshot(model)
    a = attribute(model, x, [0, 1, 3], method="ExcitationBackprop", reduce=None)
    assert_untouched(model, snap)
    assert model.body[0].bias is None
    b = attribute(folded, x, [0, 1, 3], method="ExcitationBackprop", reduce=None)
    assert torch.allclose(a, b, atol=1e-4 * float(b.abs().max()))
    assert (a >= -1e-12).all()  # x >= 0 and z+ weights: probabilities are non-negative


# ------------------------------------------------------------------------------------------------
# The registry against direct calls of the libraries
# ------------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:.*(did not already require gradients|Setting backward hooks on ReLU).*")
def test_map_methods_equal_direct_captum_calls(vgg, images):
    from captum.attr import (
        LRP,
        GuidedBackprop,
        IntegratedGradients,
        LayerAttribution,
        LayerGradCam,
        NoiseTunnel,
        Saliency,
    )
    from captum.attr._utils.lrp_rules import EpsilonRule, IdentityRule

    t = torch.tensor([1, 4, 7])
    x = images.clone().requires_grad_(True)
    direct = {
        "Gradient": Saliency(vgg).attribute(x, target=t, abs=False),
        "GuidedBackprop": GuidedBackprop(vgg).attribute(x, target=t),
        "IntegratedGradients": IntegratedGradients(vgg).attribute(x, baselines=torch.zeros_like(x), target=t,
                                                                  n_steps=5, internal_batch_size=3),
        "GradCAM": LayerAttribution.interpolate(
            LayerGradCam(vgg, vgg.features.stage5).attribute(x, target=t, relu_attributions=True), (28, 28),
            interpolate_mode="bilinear"),
    }
    torch.manual_seed(7)
    direct["SmoothGrad"] = NoiseTunnel(Saliency(vgg)).attribute(x, nt_type="smoothgrad", nt_samples=4,
                                                                nt_samples_batch_size=3, stdevs=0.15, target=t,
                                                                abs=False)
    work = copy.deepcopy(vgg)
    for m in work.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
        if isinstance(m, nn.Flatten):
            m.rule = EpsilonRule()
        if isinstance(m, Normalize):
            m.rule = IdentityRule()
    direct["LRP"] = LRP(work).attribute(images.clone(), target=t)
    opts = {"IntegratedGradients": dict(ig_steps=5), "SmoothGrad": dict(sg_samples=4, seed=7)}
    for name, ref in direct.items():
        ours = attribute(vgg, images, t, method=name, reduce=None, batch_size=3, **opts.get(name, {}))
        assert torch.allclose(ours, ref.detach(), rtol=1e-5, atol=1e-7), name
    assert count_hooks(vgg) == 0


def test_grad_cam_plus_plus_equals_a_direct_pytorch_grad_cam_call(vgg, images):
    from pytorch_grad_cam import GradCAMPlusPlus
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    t = [2, 0, 5]
    ours = attribute(vgg, images, t, method="GradCAM++", reduce=None)  # default layer: the last stage
    model = copy.deepcopy(vgg)
    with GradCAMPlusPlus(model=model, target_layers=[model.features.stage5]) as cam:
        ref = cam(input_tensor=images, targets=[ClassifierOutputTarget(c) for c in t])
    assert ours.shape == (3, 1, 28, 28)
    assert torch.allclose(ours[:, 0], torch.from_numpy(ref), atol=1e-6)
    assert ours.min() >= 0 and torch.allclose(ours.flatten(1).amax(1), torch.ones(3), atol=1e-5)
    assert count_hooks(vgg) == 0


def test_channel_methods_equal_direct_captum_calls(vgg, images):
    from captum.attr import InternalInfluence, LayerConductance

    t = torch.tensor([3, 3, 8])
    layer = vgg.features.stage4
    x = images.clone()
    for name, cls in (("Conductance", LayerConductance), ("InternalInfluence", InternalInfluence)):
        ref = cls(vgg, layer).attribute(x, baselines=torch.zeros_like(x), target=t, n_steps=4,
                                        internal_batch_size=12).sum((2, 3))
        ours = attribute(vgg, images, t, method=name, layer="features.stage4", n_steps=4)
        assert torch.allclose(ours, ref.detach(), rtol=1e-5, atol=1e-8), name
    assert count_hooks(vgg) == 0


# ------------------------------------------------------------------------------------------------
# Targets, shapes, batches
# ------------------------------------------------------------------------------------------------


def test_predicted_targets_and_target_forms(vgg, images):
    with torch.no_grad():
        pred = vgg(images).argmax(1)
    ref = attribute(vgg, images, pred, method="Gradient")
    for target in ("predicted", None, pred.tolist(), pred.numpy().tolist()):
        assert torch.equal(attribute(vgg, images, target, method="Gradient"), ref)
    assert torch.equal(attribute(vgg, images, method="Gradient"), ref)  # the default target is the prediction
    assert torch.equal(attribute(vgg, images, 4, method="Gradient"), attribute(vgg, images, [4, 4, 4],
                                                                               method="Gradient"))
    assert torch.equal(attribute(vgg, images, torch.tensor(4), method="Gradient"),
                       attribute(vgg, images, torch.tensor([4, 4, 4]), method="Gradient"))


@pytest.mark.parametrize("kind, name", ALL_METHODS)
def test_shapes_batches_and_the_model_left_alone(vgg, images, kind, name):
    layer = "features.stage5" if kind == "channel" else None
    opts = fast_options(name, kind)
    snap = snapshot(vgg)
    out = attribute(vgg, images, [1, 2, 3], method=name, layer=layer, kind=kind, **opts)
    assert_untouched(vgg, snap)
    assert out.shape == ((3, 28, 28) if kind == "map" else (3, 64)) and out.device.type == "cpu"
    assert torch.isfinite(out).all()
    if "batch_size" in method_options(name, kind) and name != "SmoothGrad":  # SmoothGrad's noise follows the batches
        one = attribute(vgg, images, [1, 2, 3], method=name, layer=layer, kind=kind, batch_size=1, **opts)
        assert torch.allclose(one, out, rtol=1e-5, atol=1e-6 * float(out.abs().max())), name
    if kind == "map":
        raw = attribute(vgg, images, [1, 2, 3], method=name, kind=kind, reduce=None, **opts)
        assert raw.shape == (3, 1, 28, 28)  # one colour channel (and one for the CAMs)
        assert torch.allclose(reduce_maps(raw, "abs"), out)


def test_smoothgrad_is_seeded_and_leaves_the_callers_rng(vgg, images):
    t = torch.tensor([0, 1, 2])
    state = torch.get_rng_state()
    s1 = attribute(vgg, images, t, method="SmoothGrad", reduce=None, sg_samples=3, seed=5)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random stream is untouched
    assert torch.equal(s1, attribute(vgg, images, t, method="SmoothGrad", reduce=None, sg_samples=3, seed=5))
    assert not torch.equal(s1, attribute(vgg, images, t, method="SmoothGrad", reduce=None, sg_samples=3, seed=6))
    assert count_hooks(vgg) == 0


def test_integrated_gradients_completeness(vgg, images):
    """IG's attributions sum to S(x) - S(0) (up to the Riemann error)."""
    t = torch.tensor([0, 1, 2])
    ig = attribute(vgg, images, t, method="IntegratedGradients", reduce=None, ig_steps=64)
    with torch.no_grad():
        diff = vgg(images)[torch.arange(3), t] - vgg(torch.zeros_like(images))[torch.arange(3), t]
    assert torch.allclose(ig.sum((1, 2, 3)), diff, rtol=0.05, atol=1e-3)


class _GuidedReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g.clamp_min(0) * (x > 0)


class _GuidedReLUModule(nn.Module):
    def forward(self, x):
        return _GuidedReLU.apply(x)


def guided_backprop_reference(model, x, target):
    """Literal Guided Backprop (Springenberg et al.): every ReLU passes only positive gradients where x > 0."""
    ref = copy.deepcopy(model)
    for name, mod in list(ref.named_modules()):
        for child_name, child in list(mod.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(mod, child_name, _GuidedReLUModule())
    x = x.clone().requires_grad_(True)
    out = ref(x)
    (g,) = torch.autograd.grad(out[torch.arange(len(x)), target].sum(), x)
    return g


@pytest.mark.parametrize("arch", ["vgg", "resnet"])
def test_guided_backprop_runs_with_inplace_relus_and_matches_literal_reference(arch, images):
    torch.manual_seed(0)
    model = build_model(arch, "fashion-mnist").eval()
    assert any(isinstance(m, nn.ReLU) and m.inplace for m in model.modules())
    t = torch.tensor([1, 2, 3])
    gb = attribute(model, images, t, method="GuidedBackprop", reduce=None)
    assert count_hooks(model) == 0
    assert torch.allclose(gb, guided_backprop_reference(model, images, t), atol=1e-7, rtol=1e-4)
    grad = attribute(model, images, t, method="Gradient", reduce=None)
    assert not torch.allclose(gb, grad)  # the hooks did fire


@pytest.mark.parametrize("kind, name", ALL_METHODS)
def test_every_method_on_a_residual_model(kind, name, images):
    torch.manual_seed(0)
    model = build_model("resnet", "fashion-mnist").eval()
    layer = model.stage_names[-2] if kind == "channel" else None
    snap = snapshot(model)
    out = attribute(model, images[:2], [0, 1], method=name, layer=layer, kind=kind, **fast_options(name, kind))
    assert_untouched(model, snap)
    assert out.shape[0] == 2 and torch.isfinite(out).all()


@pytest.mark.parametrize("kind, name", ALL_METHODS)
def test_meta_no_hook_and_model_unchanged_after_success_a_raising_layer_and_a_bad_target(kind, name):
    """captum's meta-test: every method, also when a layer raises inside forward or the target is bad."""
    torch.manual_seed(0)
    model = TinyNet().train()  # a model in train mode, with .grad set and a frozen parameter: all must survive
    model.features.stage1[0].weight.requires_grad_(False)
    model.head[2].weight.grad = torch.ones_like(model.head[2].weight)
    x = torch.rand(2, 3, 8, 8)
    layer = "features.stage2" if kind == "channel" else None
    snap = snapshot(model)
    out = attribute(model, x, [1, 3], method=name, layer=layer, kind=kind, **fast_options(name, kind))
    assert out.shape == ((2, 8, 8) if kind == "map" else (2, 6)) and torch.isfinite(out).all()
    assert_untouched(model, snap)
    model.head[1].armed = True
    try:
        with pytest.raises(RuntimeError, match="boom"):
            attribute(model, x, [1, 3], method=name, layer=layer, kind=kind, **fast_options(name, kind))
    finally:
        model.head[1].armed = False
    assert_untouched(model, snap)
    with pytest.raises(ValueError, match="class"):
        attribute(model, x, 7, method=name, layer=layer, kind=kind)
    assert_untouched(model, snap)


# ------------------------------------------------------------------------------------------------
# Cascading and data randomisation
# ------------------------------------------------------------------------------------------------


def test_randomization_layers_of_zoo_model(vgg):
    assert randomization_layers(vgg) == ["head.fc2", "head.fc1"] + [f"features.stage{k}" for k in range(5, 0, -1)]


METHODS_7 = ("gAP", "Gradient", "SmoothGrad", "GuidedBackprop", "IntegratedGradients")


def test_cascading_randomization_leaves_model_identical_and_hook_free(vgg, images):
    saved = state_copy(vgg)
    layers = ["head.fc2", "head.fc1", "features.stage5"]
    df = cascading_randomization(vgg, images, methods=METHODS_7, layers=layers, **FAST)
    assert same_state(vgg, saved) and count_hooks(vgg) == 0 and not vgg.training
    assert len(df) == (len(layers) + 1) * len(METHODS_7) * len(images)
    first = df[df.step == 0]
    assert np.allclose(first.spearman_abs, 1.0) and np.allclose(first.spearman_signed, 1.0)
    last = df[(df.step == 3) & (df.method == "Gradient")]
    assert (last.spearman_abs < 0.99).all()  # re-initialising changes the maps
    assert list(df[df.image == 0].drop_duplicates("step").randomized) == ["none"] + layers
    df2 = cascading_randomization(vgg, images, methods=METHODS_7, layers=layers, **FAST)
    pd.testing.assert_frame_equal(df.drop(columns="seconds"), df2.drop(columns="seconds"))  # seeded


def test_cascading_randomization_of_the_cams_and_excitation_backprop(vgg, images):
    layers = ["head.fc2", "features.stage5"]
    df = cascading_randomization(vgg, images, methods=["GradCAM", "GradCAM++", "ExcitationBackprop"], layers=layers)
    assert len(df) == 3 * 3 * 3 and count_hooks(vgg) == 0
    assert np.allclose(df[df.step == 0].spearman_abs, 1.0)
    assert (df[(df.step == 2) & (df.method == "GradCAM")].spearman_abs < 0.99).all()


def test_randomization_options_go_to_the_methods_that_take_them(vgg, images):
    df = cascading_randomization(vgg, images[:1], methods=["Gradient"], layers=["head.fc2"], sg_samples=3)
    assert len(df) == 2  # sg_samples is SmoothGrad's; Gradient does not get it
    with pytest.raises(TypeError, match="No map method takes the option"):
        cascading_randomization(vgg, images[:1], methods=["Gradient"], layers=["head.fc2"], sg_sample=3)
    with pytest.raises(ValueError, match="Unknown map method"):
        cascading_randomization(vgg, images[:1], methods=["Conductance"], layers=["head.fc2"])


def test_randomized_copy_changes_only_the_copy(vgg):
    saved = state_copy(vgg)
    with randomized_copy(vgg, ["head.fc2", "features.stage5"], seed=3) as rnd:
        assert rnd is not vgg
        new = rnd.state_dict()
        assert not torch.equal(new["head.fc2.weight"], saved["head.fc2.weight"])
        assert torch.equal(new["head.fc1.weight"], saved["head.fc1.weight"])  # not in the list
        assert torch.equal(new["features.stage5.bn1.running_mean"],
                           torch.zeros_like(saved["features.stage5.bn1.running_mean"]))
    assert same_state(vgg, saved) and count_hooks(vgg) == 0


def test_data_randomization_of_a_model_with_itself_is_one(vgg, images):
    df = data_randomization(vgg, vgg, images, methods=["Gradient", "GuidedBackprop", "gAP", "GradCAM++"])
    assert np.allclose(df.spearman_abs, 1.0) and np.allclose(df.spearman_signed, 1.0)
    assert count_hooks(vgg) == 0


def test_train_random_label_model_is_deterministic():
    m1, info = train_random_label_model("vgg", "conceptworld", n_train=16, epochs=2, batch_size=8, device="cpu")
    m2, _ = train_random_label_model("vgg", "conceptworld", n_train=16, epochs=2, batch_size=8, device="cpu")
    assert same_state(m2, state_copy(m1))
    assert not m1.training and count_hooks(m1) == 0
    assert info["n_train"] == 16 and info["chance"] == pytest.approx(0.1)
    assert 0.0 <= info["train_accuracy"] <= 1.0
    with pytest.raises(ValueError, match="epochs"):
        train_random_label_model("vgg", "conceptworld", n_train=16, epochs=0)


# ------------------------------------------------------------------------------------------------
# Channel scores and removal
# ------------------------------------------------------------------------------------------------


def test_remove_channels_by_hand():
    acts = torch.tensor([[[[1.0, 3.0]], [[2.0, 2.0]], [[5.0, 7.0]]]])  # [1, 3, 1, 2]
    scores = torch.tensor([[0.5, 0.9, 0.9]])  # tie between channels 1 and 2 -> channel 1 first
    assert remove_channels(acts, scores, 1, "zero").tolist() == [[[[1.0, 3.0]], [[0.0, 0.0]], [[5.0, 7.0]]]]
    assert remove_channels(acts, scores, 2, "mean").tolist() == [[[[1.0, 3.0]], [[2.0, 2.0]], [[6.0, 6.0]]]]
    assert torch.equal(remove_channels(acts, scores, 0), acts)
    assert torch.equal(remove_channels(acts, scores, 99, "zero"), torch.zeros_like(acts))


def test_random_scores_are_seeded_uniform(vgg, images):
    a = attribute(vgg, images, 0, method="Random", layer="features.stage4", seed=4)
    assert torch.equal(a, torch.rand(3, 48, generator=torch.Generator().manual_seed(4)))
    assert torch.equal(a, attribute(vgg, images, 5, method="Random", layer="features.stage4", seed=4))
    assert not torch.equal(a, attribute(vgg, images, 0, method="Random", layer="features.stage4", seed=5))


def test_random_removal_of_zero_channels_gives_the_unmodified_accuracy(vgg, images):
    labels = torch.tensor([0, 5, 9])
    with torch.no_grad():
        acc = float((vgg(images).argmax(1) == labels).float().mean())
    df = channel_removal_curve(vgg, images, labels, "features.stage4", methods=["Random"], n_values=[0, 3])
    assert df[df.n_removed == 0].accuracy.item() == acc
    assert df[df.n_removed == 0].kept_prediction.item() == 1.0
    assert count_hooks(vgg) == 0


def test_removing_all_channels_of_hand_model():
    model = PoolHead().eval()
    x = torch.rand(8, 1, 3, 3, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([2, 2, 2, 0, 1, 1, 0, 2])
    with torch.no_grad():
        base = float((model(x).argmax(1) == labels).float().mean())
    for method in ["gAP", "Random", "LRP", "Conductance"]:
        df = channel_removal_curve(model, x, labels, "relu", methods=[method], n_values=[0, 2], ablation="zero")
        # zeroing both channels leaves the bias [0, 0, 0.5]: every image -> class 2; 4 of 8 labels are 2
        assert df[df.n_removed == 2].accuracy.item() == 0.5
        assert df[df.n_removed == 0].accuracy.item() == base
        # a global average pool cannot see a channel replaced by its own mean: nothing changes
        df = channel_removal_curve(model, x, labels, "relu", methods=[method], n_values=[2], ablation="mean")
        assert df.accuracy.item() == base and df.kept_prediction.item() == 1.0
    assert count_hooks(model) == 0


def test_lrp_equals_gradient_times_activation_on_a_linear_head():
    """With no biases after the layer, LRP-epsilon relevance of a channel is sum_{x,y} G*F = Z * alpha (Eq. 4)."""
    torch.manual_seed(0)
    model = FlatHead().eval()
    x = torch.rand(4, 1, 5, 5)
    t = torch.tensor([0, 1, 2, 0])
    lrp = attribute(model, x, t, method="LRP", layer="relu", batch_size=3)  # two batches: rules re-attached per call
    gap = attribute(model, x, t, method="gAP", layer="relu", batch_size=3)
    assert torch.allclose(lrp, 25 * gap, atol=1e-5, rtol=1e-4)
    assert count_hooks(model) == 0
    assert not any(hasattr(m, "rule") or hasattr(m, "activations") for m in model.modules())
    assert all(m.inplace for m in model.modules() if isinstance(m, nn.ReLU))


def test_lrp_is_z_times_gap_on_zoo_vgg(vgg, images):
    """ReLU + conv + eval BatchNorm + max-pool + linear: LRP-epsilon is gradient x input, so LRP = h * w * alpha."""
    lrp = attribute(vgg, images, None, method="LRP", layer="features.stage4")
    gap = attribute(vgg, images, None, method="gAP", layer="features.stage4")
    assert torch.allclose(lrp, 7 * 7 * gap, rtol=1e-3, atol=1e-6 * float(lrp.abs().max()))
    assert count_hooks(vgg) == 0


def test_lrp_map_is_gradient_times_input_on_zoo_vgg(vgg, images):
    """The same identity at the input (Normalize passes relevance): LRP map = x * dS/dx summed the same way."""
    t = torch.tensor([1, 2, 3])
    lrp = attribute(vgg, images, t, method="LRP", reduce=None)
    grad = attribute(vgg, images, t, method="Gradient", reduce=None)
    mean = vgg.normalize.mean.cpu()
    z = images - mean  # the first conv's input times std: relevance x_norm * dS/dx_norm = (x - mean) * dS/dx
    ref = z * grad
    assert float((lrp - ref).abs().max()) <= 1e-3 * float(ref.abs().max())
    assert not torch.allclose(lrp, grad, atol=0.1 * float(grad.abs().max()))


def test_channel_scores_of_every_method_on_zoo_vgg(vgg, images):
    saved = state_copy(vgg)
    for method in available("channel"):
        s = attribute(vgg, images, None, method=method, layer="features.stage5", **fast_options(method, "channel"))
        assert s.shape == (3, 64) and torch.isfinite(s).all()
    assert same_state(vgg, saved) and count_hooks(vgg) == 0
    assert not any(hasattr(m, "rule") or hasattr(m, "activations") for m in vgg.modules())


@pytest.mark.parametrize("call, match", [
    (lambda m, x: cascading_randomization(m, x, layers=["head.fc9"]), "Invalid layer"),
    (lambda m, x: cascading_randomization(m, x, [0, 1], layers=["head.fc2"]), "one per image"),
    (lambda m, x: data_randomization(m, "model", x), "torch.nn.Module"),
    (lambda m, x: channel_removal_curve(m, x, torch.tensor([0, 1, 2]), "features.stage5", ablation="max"),
     "ablation"),
    (lambda m, x: channel_removal_curve(m, x, torch.tensor([0, 1, 2]), "features.stage5", n_values=[-1]),
     "n_values"),
    (lambda m, x: channel_removal_curve(m, x, torch.tensor([0, 1, 2]), "features.stage5", n_values=[]),
     "n_values"),
    (lambda m, x: channel_removal_curve(m, x, torch.tensor([0, 1, 2]), "head.fc1", methods=["gAP"]), "conv"),
    (lambda m, x: channel_removal_curve(m, x, torch.tensor([0, 1, 2]), "features.stage5", methods=["Gradient"]),
     "Unknown channel method"),
    (lambda m, x: channel_removal_curve(m, x, torch.tensor([0, 1, 2]), "features.stage5", n_step=3),
     "No channel method takes"),
    (lambda m, x: channel_removal_curve(m, x, torch.tensor([0, 1, 99]), "features.stage5"), "class"),
])
def test_bad_input_raises_and_leaves_no_hooks(vgg, images, call, match):
    saved = state_copy(vgg)
    with pytest.raises((ValueError, TypeError), match=match):
        call(vgg, images)
    assert count_hooks(vgg) == 0 and same_state(vgg, saved)
    assert not any(hasattr(m, "rule") or hasattr(m, "activations") for m in vgg.modules())
