"""xailib.checks: one validator per kind of input, with the answers and messages worked out by hand."""

import pytest
import torch
from torch import nn

from xailib import checks
from xailib.checks import (
    check_choice,
    check_class_scores,
    check_fraction,
    check_images,
    check_layer,
    check_layer_list,
    check_layers,
    check_methods,
    check_model,
    check_positive_float,
    check_positive_int,
    check_targets,
    model_device,
    n_classes,
)


class Pick(nn.Module):
    """logits = [x[0,0,0], x[0,0,1], x[0,1,0]] of each 1 x 2 x 2 image: the predicted class is known by hand."""

    input_shape = (1, 2, 2)
    fixed_input_size = True

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return self.scale * x.flatten(1)[:, :3]


class Staged(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(1, 1, 1), nn.ReLU(), nn.Conv2d(1, 1, 1)
        self.stage_names = ["a", "b", "c"]


def test_model_and_class_scores():
    m = Pick()
    assert check_model(m) is m
    with pytest.raises(TypeError, match="must be a torch.nn.Module, got str.*load_model"):
        check_model("vgg")
    out = torch.zeros(4, 3)
    assert check_class_scores(out, 4) is out
    with pytest.raises(ValueError, match=r"class scores \[B, C\].*got \(4, 3, 1\)"):
        check_class_scores(torch.zeros(4, 3, 1))
    with pytest.raises(ValueError, match="returned 4 rows of class scores for 2 images"):
        check_class_scores(out, 2)
    with pytest.raises(ValueError, match="got tuple"):
        check_class_scores((out,))
    assert model_device(m) == torch.device("cpu") and model_device(nn.ReLU()) == torch.device("cpu")


def test_images():
    m = Pick()
    x = torch.rand(2, 1, 2, 2)
    assert check_images(x, m) is x  # already on the model's device
    assert check_images(x[0], one=True).shape == (1, 1, 2, 2)
    with pytest.raises(TypeError, match=r"torch.Tensor \[B, C, H, W\].*got list"):
        check_images([1, 2])
    with pytest.raises(ValueError, match="add the batch dimension"):
        check_images(x[0])
    with pytest.raises(ValueError, match=r"x.float\(\) / 255"):
        check_images((x * 255).to(torch.uint8))
    with pytest.raises(ValueError, match="empty batch"):
        check_images(x[:0])
    with pytest.raises(ValueError, match="one image .* got a batch of 2"):
        check_images(x, one=True)
    with pytest.raises(ValueError, match=r"takes images \[B, 1, 2, 2\] \(its training size\), got \(2, 1, 3, 3\)"):
        check_images(torch.rand(2, 1, 3, 3), m)
    with pytest.raises(ValueError, match=r"takes images \[B, 1, 2, 2\].*got \(2, 3, 2, 2\).*channel order"):
        check_images(torch.rand(2, 3, 2, 2), m)
    m.fixed_input_size = False  # a model that takes any size still needs its number of channels
    assert check_images(torch.rand(2, 1, 5, 5), m).shape == (2, 1, 5, 5)
    with pytest.raises(ValueError, match=r"takes images \[B, 1, H, W\]"):
        check_images(torch.rand(2, 3, 5, 5), m)


def test_targets_by_hand():
    m = Pick()
    x = torch.tensor([[[[0.0, 5.0], [1.0, 0.0]]], [[[9.0, 0.0], [1.0, 0.0]]], [[[0.0, 0.0], [7.0, 0.0]]]])
    assert check_targets("predicted", 3, model=m, images=x).tolist() == [1, 0, 2]
    assert check_targets(None, 3, model=m, images=x).tolist() == [1, 0, 2]
    assert check_targets(2, 3).tolist() == [2, 2, 2]
    assert check_targets(torch.tensor(1), 2).tolist() == [1, 1]
    assert check_targets([0, 2, 1], 3, classes=3).tolist() == [0, 2, 1]
    t = check_targets(torch.tensor([2, 0]), 2)
    assert t.dtype == torch.long and t.device == torch.device("cpu")
    with pytest.raises(ValueError, match="Got 1 targets for a batch of 2 images"):
        check_targets(torch.tensor([1]), 2)  # a 1-D tensor is one target per image, not broadcast
    with pytest.raises(ValueError, match=r"Class index 3 in target is outside the model's 3 classes \(0..2\)"):
        check_targets([0, 3], 2, model=m, images=x[:2])  # the model names no classes: one forward counts them
    with pytest.raises(ValueError, match="outside"):
        check_targets(-1, 2)
    for bad in (True, 1.0, "cat", torch.tensor([0.5]), [1, "a"]):
        with pytest.raises(TypeError, match="class index"):
            check_targets(bad, 1)
    with pytest.raises(TypeError, match="'predicted' is not accepted"):
        check_targets("predicted", 1, allow_predicted=False)
    with pytest.raises(ValueError, match="needs the model and the images"):
        check_targets("predicted", 1)


def test_n_classes():
    m = Pick()
    assert n_classes(m, torch.rand(1, 1, 2, 2)) == 3  # one forward
    m.class_names = ["a", "b", "c", "d"]
    assert n_classes(m) == 4  # named classes: no forward
    with pytest.raises(ValueError, match="pass images"):
        n_classes(Staged())


def test_numbers_and_choices():
    assert check_positive_int(3, "n") == 3 and check_positive_int(0, "n", zero=True) == 0
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="n must be a positive int"):
            check_positive_int(bad, "n")
    assert check_positive_float(0.5, "eps") == 0.5 and check_positive_float(0, "eps", zero=True) == 0.0
    for bad in (0, -0.1, float("nan"), float("inf"), True):
        with pytest.raises(ValueError, match="eps must be a positive finite number"):
            check_positive_float(bad, "eps")
    assert check_fraction(1, "p") == 1.0 and check_fraction(0, "p") == 0.0
    with pytest.raises(ValueError, match=r"p must be a number in \[0, 1\)"):
        check_fraction(1.0, "p", high_open=True)
    with pytest.raises(ValueError, match=r"p must be a number in \(0, 1\]"):
        check_fraction(0.0, "p", low_open=True)
    assert check_choice("aa", ("AA", "MA"), "strategy", upper=True) == "AA"
    with pytest.raises(ValueError, match=r"Unknown fill 'blur'; use one of \('zero', 'dataset'\)"):
        check_choice("blur", ("zero", "dataset"), "fill")
    assert check_methods("a", ["a", "b"]) == ["a"] and check_methods(("b", "a"), ["a", "b"]) == ["b", "a"]
    with pytest.raises(ValueError, match=r"Unknown method\(s\) \['c'\]; choose from \['a', 'b'\]"):
        check_methods(["a", "c"], ["a", "b"])
    with pytest.raises(ValueError, match="Unknown method"):
        check_methods([], ["a"])


def test_layers():
    m = Staged()
    assert check_layer(m, "b") == "b" and check_layers(m, "c") == ["c"]
    for bad in (3, None, "", "d", nn.ReLU()):
        with pytest.raises(ValueError, match=r"Invalid layer .*Valid names .*: a, b, c"):
            check_layer(m, bad)
    with pytest.raises(ValueError, match=r"Invalid layer None \(a NoneType; layers are dotted strings such as 'a'\)"):
        check_layers(m, None)
    with pytest.raises(ValueError, match="Did you mean 'a'"):
        check_layer(m, "aa")
    assert check_layer_list(m) == ["a", "b", "c"] and check_layer_list(m, default_last=2) == ["b", "c"]
    with pytest.raises(ValueError, match=r"low -> high \(as in model.stage_names"):
        check_layer_list(m, ["c", "a"])
    with pytest.raises(ValueError, match="distinct"):
        check_layer_list(m, ["a", "a"])
    with pytest.raises(ValueError, match="has no `stage_names`; pass layers"):
        check_layer_list(Pick())
    assert checks.model_stages(m) == ["a", "b", "c"]
