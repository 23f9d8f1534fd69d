"""Tests for xailib.layers: names, tensor-hook capture, restoring model state, no leftover hooks."""

import pytest
import torch
from torch import nn

from xailib.layers import capture, check_layers, count_hooks, get_layer, model_state, named_layers, replace_output


class OneConv(nn.Module):
    """conv(1->2, 1x1, weights [1, -1], bias 0) -> in-place ReLU -> sum over channels and space.

    For input x, channel 0 is x and channel 1 is -x; after ReLU the score is sum(|x|).
    """

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.conv(x)).sum(dim=(1, 2, 3))


class Residual(nn.Module):
    """y = relu(bn(conv(x)) + x), then a shared (reused) linear head applied twice."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)
        self.bn = nn.BatchNorm2d(2)
        self.relu = nn.ReLU(inplace=True)
        self.head = nn.Linear(2, 2)

    def forward(self, x):
        out = self.bn(self.conv(x))
        out += x
        out = self.relu(out)
        pooled = out.mean(dim=(2, 3))
        return self.head(self.head(pooled))


class Boom(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(2, 2)
        self.b = nn.Linear(2, 2)

    def forward(self, x):
        self.a(x)
        raise RuntimeError("boom")


X = torch.tensor([[[[1.0, -2.0], [3.0, -4.0]]]])  # [1, 1, 2, 2]


def test_named_layers_and_unknown_name_lists_valid_names():
    model = Residual()
    assert list(named_layers(model)) == ["conv", "bn", "relu", "head"]
    assert get_layer(model, "bn") is model.bn
    with pytest.raises(ValueError, match=r"Invalid layer 'bnn'.*Did you mean 'bn'.*conv, bn, relu, head"):
        get_layer(model, "bnn")
    # anything but a dotted string gets the same fix-it error as an unknown name (an int used to give a bare
    # "'int' object is not iterable")
    for bad in (3, None, [3], ["conv", None]):
        with pytest.raises(ValueError, match=r"Invalid layer .*dotted strings.*Valid names.*conv, bn, relu, head"):
            check_layers(model, bad)
    with pytest.raises(ValueError, match=r"Invalid layer 3 \(an int; layers are dotted strings"):
        get_layer(model, 3)
    with pytest.raises(ValueError, match="at least one layer"):
        check_layers(model, [])


def test_capture_records_pre_relu_output_despite_inplace_relu_and_exact_gradients():
    model = OneConv()
    with capture(model, ["conv", "relu"], grads=True) as rec:
        score = model(X)
        score.sum().backward()
    # conv output by hand: channel 0 = x, channel 1 = -x; the in-place ReLU must not overwrite it.
    assert torch.equal(rec["conv"].detach(), torch.cat([X, -X], dim=1))
    assert torch.equal(rec["relu"].detach(), torch.cat([X, -X], dim=1).clamp(min=0))
    # d score / d conv-output = 1 where the conv output is positive, else 0.
    assert torch.equal(rec.grad("conv"), (torch.cat([X, -X], dim=1) > 0).float())
    assert torch.equal(rec.grad("relu"), torch.ones(1, 2, 2, 2))
    assert count_hooks(model) == 0


def test_autograd_grad_wrt_captured_output():
    model = OneConv()
    with capture(model, "conv") as rec:
        score = model(X)
    (g,) = torch.autograd.grad(score.sum(), rec["conv"])
    assert torch.equal(g, (torch.cat([X, -X], dim=1) > 0).float())


def test_capture_matches_unhooked_forward_on_residual_model():
    torch.manual_seed(0)
    model = Residual().eval()
    x = torch.randn(3, 2, 5, 5)
    ref = model(x)
    with capture(model, ["bn", "relu"]) as rec:
        out = model(x)
    assert torch.allclose(out, ref)
    # The recorded bn output is bn(conv(x)) before the in-place `+= x`.
    assert torch.allclose(rec["bn"], model.bn(model.conv(x)))
    assert count_hooks(model) == 0


def test_reused_module_is_recorded_once_per_call():
    torch.manual_seed(0)
    model = Residual().eval()
    with capture(model, "head", detach=True) as rec:
        model(torch.randn(1, 2, 4, 4))
    assert len(rec.outputs["head"]) == 2
    with pytest.raises(RuntimeError, match="called 2 times"):
        rec["head"]


def test_missing_record_and_uncaptured_layer_messages():
    model = OneConv()
    with capture(model, "conv") as rec:
        pass
    with pytest.raises(RuntimeError, match="run a forward pass"):
        rec["conv"]
    with pytest.raises(KeyError, match="was not captured"):
        rec["relu"]


def test_hooks_removed_when_forward_raises():
    model = Boom()
    with pytest.raises(RuntimeError, match="boom"):
        with capture(model, ["a", "b"], grads=True):
            model(torch.ones(1, 2))
    assert count_hooks(model) == 0
    with pytest.raises(RuntimeError, match="boom"):
        with replace_output(model, "a", lambda t: t * 0):
            model(torch.ones(1, 2))
    assert count_hooks(model) == 0


def test_capture_with_unknown_layer_registers_nothing():
    model = Residual()
    with pytest.raises(ValueError, match="Invalid layer"):
        capture(model, ["conv", "nope"])
    assert count_hooks(model) == 0


def test_replace_output_ablates_a_channel_exactly():
    model = OneConv()
    keep0 = lambda a: a * torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)  # noqa: E731
    with replace_output(model, "conv", keep0):
        score = model(X)
    # Only channel 0 (= x) survives; after ReLU the sum of positives of x: 1 + 3 = 4.
    assert score.item() == 4.0
    assert model(X).item() == 10.0  # restored: sum |x|
    with pytest.raises(ValueError, match="same shape|must return a tensor of shape"):
        with replace_output(model, "conv", lambda a: a[:, :1]):
            model(X)
    assert count_hooks(model) == 0


def test_model_state_restores_mode_flags_and_bn_statistics():
    torch.manual_seed(0)
    model = Residual().train()
    model.head.weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with model_state(model, train=False, requires_grad=True):
        assert not model.training and not model.bn.training
        assert model.head.weight.requires_grad
        model(torch.randn(4, 2, 3, 3))
    assert model.training and model.bn.training
    assert not model.head.weight.requires_grad and model.head.bias.requires_grad
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # eval mode: running stats untouched


def test_model_state_restores_on_exception():
    model = Residual().train()
    with pytest.raises(RuntimeError):
        with model_state(model, train=False, requires_grad=False):
            raise RuntimeError("inside")
    assert model.training and all(p.requires_grad for p in model.parameters())


def test_replace_output_may_grow_the_batch_and_counts_calls():
    model = OneConv()
    # One image in, its conv output expanded into two copies: channel 0 kept in the first, channel 1 in the second.
    masks = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(2, 2, 1, 1)
    with replace_output(model, "conv", lambda a: a.expand(2, -1, -1, -1) * masks, same_shape=False) as rep:
        scores = model(X)
    # Positives of x: 1 + 3 = 4; positives of -x: 2 + 4 = 6.
    assert scores.tolist() == [4.0, 6.0]
    assert rep.calls == 1
    with replace_output(model, "relu", lambda a: a) as rep:
        pass
    assert rep.calls == 0 and count_hooks(model) == 0


@pytest.mark.parametrize("detach", [False, True])
def test_capture_survives_an_inplace_op_after_the_layer(detach):
    """A conv followed by ReLU(inplace=True): the record keeps the conv's negative outputs."""
    conv = nn.Conv2d(1, 1, 1, bias=False)
    with torch.no_grad():
        conv.weight.fill_(-1.0)
    net = nn.Sequential(conv, nn.ReLU(inplace=True))
    x = torch.ones(1, 1, 2, 2)
    with torch.no_grad(), capture(net, "0", detach=detach) as rec:
        out = net(x)
    assert torch.equal(rec["0"], -torch.ones(1, 1, 2, 2)) and torch.equal(out, torch.zeros(1, 1, 2, 2))
