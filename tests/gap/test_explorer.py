"""The interactive explorer (Sec. 3.2, Fig. 5; Fig. 4 views) driven without a browser, and its guided backprop.

The state must walk the same nodes as :func:`xailib.gap.decompose`; bad input must raise clear errors;
no hook may be left on the model after any call; the ipywidgets view must move the state when its
buttons are clicked.
"""

import copy

import matplotlib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tiny_models import Boom, OneConvLinear, TinyInception, TinyResNet, TinyVGG, image, make
from torch import nn

from xailib.gap import Neuron, decompose
from xailib.gap.explorer import Explorer, ExplorerState, LowestStageError, explore, guided_crop, plot_path
from xailib.gap.guided import guided_backprop, guided_relus, guided_to_rgb
from xailib.layers import capture, count_hooks, get_layer

matplotlib.use("Agg")


def images(n=3, size=16):
    return torch.cat([image(seed=s, size=size) for s in range(1, n + 1)])


def n_gap(state):
    return sum(t["kind"] == "gap" for t in state.timings)


def assert_same_nodes(ours, theirs, rtol=1e-9):
    assert [(c.layer, c.channel, c.position, c.merged) for c in ours] == \
           [(c.layer, c.channel, c.position, c.merged) for c in theirs]
    for a, b in zip(ours, theirs):
        assert a.contribution == pytest.approx(b.contribution, rel=rtol, abs=1e-12)
        assert a.score == pytest.approx(b.score, rel=rtol, abs=1e-12)
        np.testing.assert_allclose(a.activation_map, b.activation_map, rtol=1e-7, atol=1e-12)


# --------------------------------------------------------------------------------------------------
# Hand-computed answers
# --------------------------------------------------------------------------------------------------


def test_hand_computed_children_of_one_conv_model():
    # x = [[1, 2], [3, 4]]: F0 = x, F1 = 2x (after ReLU). Class 0 reads F0 at (0,0), (1,1) with weight 1 and
    # F1 at (1,0) with +1, (1,1) with -1: A0 = [[1,0],[0,4]] -> alpha0 = 5/4, peak (1,1);
    # A1 = [[0,0],[6,-8]] -> alpha1 = -2/4, peak (1,0). Class 1 reads all with weight 1: alpha = (10/4, 20/4).
    model = make(OneConvLinear, double=False)
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    state = ExplorerState(model, x, top_n=2, layers=["relu"], class_names=["zero", "one"])
    assert state.class_scores.tolist() == [3.0, 30.0]
    assert state.target == state.predicted_class == 1
    assert [(c.channel, c.position, c.contribution, c.score) for c in state.children] == [
        (1, (1, 1), 5.0, 8.0), (0, (1, 1), 2.5, 4.0)]
    state.select_class("zero")
    assert [(c.channel, c.position, c.contribution, c.score) for c in state.children] == [
        (0, (1, 1), 1.25, 4.0), (1, (1, 0), -0.5, 6.0)]
    np.testing.assert_array_equal(state.children[1].activation_map, [[0, 0], [6, -8]])
    assert not state.can_expand  # the children lie in the only (lowest) stage
    with pytest.raises(LowestStageError, match="lowest stage"):
        state.expand(0)
    # Guided backprop of F0 at (1,1) and F1 at (1,0) w.r.t. x: the conv weights 1 and 2 at those pixels.
    g = state.guided_backprop()
    assert g[:, 0].tolist() == [[[0, 0], [0, 1]], [[0, 0], [2, 0]]]
    assert count_hooks(model) == 0


class TwoReLU(nn.Module):
    """x -> conv1x1 (1 -> 2, weights [2, 1]) -> ReLU -> conv1x1 (2 -> 1, weights [1, -1]) -> ReLU -> sum.

    For x > 0: h = (2x, x), out = x. Plain gradient d out / dx = 2 - 1 = 1; guided backprop drops the
    negative gradient -1 reaching the second hidden channel: 2 * 1 + 1 * 0 = 2.
    """

    def __init__(self, functional=False):
        super().__init__()
        self.functional = functional
        self.c1 = nn.Conv2d(1, 2, 1, bias=False)
        self.r1 = nn.ReLU(inplace=True)
        self.c2 = nn.Conv2d(2, 1, 1, bias=False)
        self.r2 = nn.ReLU(inplace=True)
        with torch.no_grad():
            self.c1.weight.copy_(torch.tensor([2.0, 1.0]).view(2, 1, 1, 1))
            self.c2.weight.copy_(torch.tensor([1.0, -1.0]).view(1, 2, 1, 1))

    def forward(self, x):
        if self.functional:
            return F.relu(self.c2(F.relu(self.c1(x), inplace=True)), inplace=True).flatten(1)
        return self.r2(self.c2(self.r1(self.c1(x)))).flatten(1)


@pytest.mark.parametrize("functional", [False, True], ids=["nn.ReLU(inplace)", "F.relu(inplace)"])
def test_guided_backprop_hand_computed(functional):
    model = TwoReLU(functional)
    x = torch.full((1, 1, 2, 2), 0.5)
    g = guided_backprop(model, x, [0, 3])  # the "class scores" are the 4 pixels of the output
    assert g[0, 0].tolist() == [[2, 0], [0, 0]] and g[1, 0].tolist() == [[0, 0], [0, 2]]
    xr = x.clone().requires_grad_(True)
    (plain,) = torch.autograd.grad(model(xr)[0, 0], xr)  # outside the block: the plain gradient again
    assert plain[0, 0, 0, 0].item() == 1.0
    if functional:  # why we do not use captum here: it hooks nn.ReLU modules and misses F.relu
        from captum.attr import GuidedBackprop

        with pytest.warns(UserWarning):
            assert GuidedBackprop(model).attribute(x, target=0)[0, 0, 0, 0].item() == 1.0
    assert count_hooks(model) == 0


@pytest.mark.parametrize("cls,layer", [(TinyVGG, "stages.stage2"), (TinyResNet, "stages.s2"), (TinyInception, "inc1")])
def test_guided_backprop_matches_captum_on_a_copy_without_inplace_relus(cls, layer):
    from captum.attr import NeuronGuidedBackprop

    model, x = make(cls), image()
    with capture(model, layer, detach=True) as rec:
        model(x)
    acts = rec[layer][0]  # neurons at each channel's maximum, so that they are active
    w = acts.shape[-1]
    neurons = [Neuron(layer, k, int(acts[k].argmax()) // w, int(acts[k].argmax()) % w) for k in range(3)]
    ours = guided_backprop(model, x, neurons)
    ref_model = copy.deepcopy(model)
    for m in ref_model.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False  # an independent reference: captum's ReLU-module hooks on plain ReLUs
    for net in (ref_model, model):
        with pytest.warns(UserWarning):
            ref = torch.cat([NeuronGuidedBackprop(net, get_layer(net, layer)).attribute(
                x.clone(), neuron_selector=(n.channel, n.y, n.x)) for n in neurons])
        assert ref.abs().sum() > 0
        torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
    assert count_hooks(model) == 0


def test_guided_relus_keeps_values_and_restores_autograd():
    model, x = make(TinyResNet), image()
    with torch.no_grad():
        plain = model(x)
        with guided_relus():
            guided = model(x)
    torch.testing.assert_close(plain, guided, rtol=0, atol=0)
    rgb = guided_to_rgb(torch.tensor([[[-2.0, 0.0], [1.0, 2.0]]]))
    assert rgb.shape == (2, 2, 3) and rgb[..., 0].tolist() == [[0.0, 0.5], [0.75, 1.0]]


# --------------------------------------------------------------------------------------------------
# The state walks the nodes of decompose
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [TinyVGG, TinyResNet, TinyInception])
def test_walk_reproduces_decompose(cls):
    model, xs = make(cls), images()
    layers = getattr(model, "stage_names", None) or cls.layers
    state = ExplorerState(model, xs, top_n=3, layers=layers)
    state.select_image(1)
    tree = decompose(model, xs[1:2], top_n=3, layers=layers)
    assert state.target == tree.target and state.current.score == pytest.approx(tree.root.score)
    node, seen = tree.root, []
    assert_same_nodes(state.children, node.children)
    for rank in (1, 0):  # the second channel of the top stage, then the first of the stage below
        state.expand(rank)
        node = node.children[rank]
        assert_same_nodes([state.current], [node])
        assert_same_nodes(state.children, node.children)
        seen.append((state.path, state.children))
    assert [n.layer for n in state.path] == ["output", layers[-1], layers[-2]]
    calls = n_gap(state)
    state.back()
    assert state.path == seen[0][0] and state.depth == 1
    assert_same_nodes(state.children, tree.root.children[1].children)
    state.back()
    assert state.depth == 0 and state.current is state.path[0]
    assert_same_nodes(state.children, tree.root.children)
    state.expand(1)
    state.expand(0)  # the same way down again: all cached
    assert n_gap(state) == calls
    assert count_hooks(model) == 0


def test_walk_to_the_lowest_stage_and_nms_like_decompose():
    model, xs = make(TinyVGG), images(2)
    state = ExplorerState(model, xs, top_n=2, nms_iou=0.5)
    tree = decompose(model, xs[:1], top_n=2, nms_iou=0.5)
    node = tree.root
    while state.can_expand:
        state.expand(0)
        node = node.children[0]
    assert state.lower_layer == model.stage_names[0] and state.depth == len(model.stage_names) - 1
    assert_same_nodes(state.children, node.children)
    with pytest.raises(LowestStageError, match="lowest stage.*back\\(\\) or reset\\(\\)"):
        state.expand(0)
    assert state.depth == 2  # unchanged
    state.reset()
    assert state.depth == 0 and state.breadcrumb[0].startswith(f"class {tree.target} ")


def test_expand_any_channel_and_top_n():
    model, xs = make(TinyVGG), images(2)
    state = ExplorerState(model, xs, top_n=2)
    k = state.expansion.contributions.shape[0]
    worst = int(state.expansion.contributions.argmin())
    calls = n_gap(state)
    state.top_n = k
    assert len(state.children) == k and n_gap(state) == calls  # no new gAP call
    assert state.children[-1].channel == worst
    state.top_n = 2
    e = state.expansion
    node = state.expand(channel=worst)  # outside the top 2: decided at its own peak (Eq. 5)
    assert state.current is node and node.channel == worst
    assert node.position == tuple(e.peaks[worst].tolist()) and node.contribution == float(e.contributions[worst])
    assert node.score == float(e.peak_values[worst])


def test_class_switch_and_image_switch_reset_the_path():
    model, xs = make(TinyVGG), images(3)
    state = ExplorerState(model, xs, labels=[0, 1, 2], class_names=list("abcde"))
    state.expand(0)
    state.select_class(4)
    assert state.depth == 0 and state.target == 4 and state.current.channel == 4
    assert state.current.score == pytest.approx(float(state.class_scores[4]))
    state.expand(1)
    state.select_class("c")
    assert state.depth == 0 and state.target == 2
    state.expand(0)
    state.select_image(2)
    assert state.depth == 0 and state.image_index == 2 and state.label == 2
    assert state.target == state.predicted_class == int(np.argmax(state.class_scores))
    with torch.no_grad():
        torch.testing.assert_close(torch.as_tensor(state.class_scores), model(xs[2:3])[0].float())


def test_dataset_and_torchvision_model():
    from types import SimpleNamespace

    from xailib.models import load_model

    model = load_model("resnet18", device="cpu")  # random weights; stage names relu, layer1..layer4
    torch.manual_seed(0)
    data = SimpleNamespace(images=torch.rand(2, 3, 64, 64), labels=torch.tensor([3, 7]))
    state = ExplorerState(model, data, top_n=2)
    assert state.label == 3 and state.class_names[0] == "class0" and state.layers == model.stage_names
    state.expand(0)
    state.expand(1)
    tree = decompose(model, data.images[:1], top_n=2)
    assert_same_nodes(state.children, tree.root.children[0].children[1].children, rtol=1e-4)
    assert state.guided_backprop().shape == (2, 3, 64, 64)
    assert count_hooks(model) == 0


# --------------------------------------------------------------------------------------------------
# Bad input, hooks, caching
# --------------------------------------------------------------------------------------------------


def test_bad_input_raises_clear_errors_and_leaves_no_hooks():
    model, xs = make(TinyVGG), images(2)
    with pytest.raises(ValueError, match="top_n must be a positive int"):
        ExplorerState(model, xs, top_n=0)
    with pytest.raises(ValueError, match="top_n must be a positive int"):
        ExplorerState(model, xs, top_n=-2)
    with pytest.raises(ValueError, match="no `stage_names`; pass layers"):
        ExplorerState(make(TinyInception), xs)
    with pytest.raises(ValueError, match="Invalid layer 'stages.stage9'"):
        ExplorerState(model, xs, layers=["stages.stage1", "stages.stage9"])
    with pytest.raises(ValueError, match="2 labels for 2 images|3 labels for 2 images"):
        ExplorerState(model, xs, labels=[0, 1, 2])
    with pytest.raises(ValueError, match="3 class names for a model with 5 classes"):
        ExplorerState(model, xs, class_names=["a", "b", "c"])
    with pytest.raises(TypeError, match="images must be a tensor"):
        ExplorerState(model, [[0.0]])
    state = ExplorerState(model, xs)
    checks = [
        (lambda: state.select_image(2), ValueError, "out of range.*2 images.*0..1"),
        (lambda: state.select_image(-1), ValueError, "out of range"),
        (lambda: state.select_image(1.0), TypeError, "image index must be an int"),
        (lambda: state.select_class(5), ValueError, "outside the model's 5 classes"),
        (lambda: state.select_class("zebra"), ValueError, "Unknown class 'zebra'"),
        (lambda: state.expand(3), ValueError, "rank 3 is out of range: 3 children"),
        (lambda: state.expand(channel=99), ValueError, "channel 99 is outside"),
        (lambda: state.expand(0, channel=1), ValueError, "not both"),
        (lambda: state.back(), ValueError, "Already at the class decision"),
        (lambda: setattr(state, "top_n", 0), ValueError, "top_n must be a positive int"),
    ]
    for fn, exc, msg in checks:
        with pytest.raises(exc, match=msg):
            fn()
        assert count_hooks(model) == 0 and state.depth == 0 and state.image_index == 0
    state.expand(0)
    state.expand(0)
    with pytest.raises(LowestStageError):
        state.expand(0)
    assert count_hooks(model) == 0


def test_a_layer_that_raises_leaves_no_hooks_and_the_state_unchanged():
    model, xs = make(TinyVGG), images(2)
    model.stages["stage2"].add_module("boom", Boom())
    state = ExplorerState(model, xs)
    model.stages["stage2"].boom.armed = True
    before = (state.image_index, state.target, state.path)
    for fn in (lambda: state.expand(0), lambda: state.select_image(1), lambda: state.guided_backprop(),
               lambda: state.select_class((state.target + 1) % 5)):
        with pytest.raises(RuntimeError, match="boom"):
            fn()
        assert count_hooks(model) == 0
        assert (state.image_index, state.target, state.path) == before
    model.stages["stage2"].boom.armed = False
    state.expand(0)
    assert state.depth == 1 and count_hooks(model) == 0


def test_guided_backprop_is_cached_and_batched_rows_equal_single_calls():
    model, xs = make(TinyResNet), images(1)
    state = ExplorerState(model, xs, top_n=3)
    state.expand(0)
    g = state.guided_backprop()
    n = sum(t["kind"] == "guided" for t in state.timings)
    torch.testing.assert_close(state.guided_backprop(), g)
    assert sum(t["kind"] == "guided" for t in state.timings) == n
    for row, c in zip(g, state.children):
        torch.testing.assert_close(row, guided_backprop(model, xs, Neuron(c.layer, c.channel, *c.position))[0])
    assert count_hooks(model) == 0


# --------------------------------------------------------------------------------------------------
# The widget view, headless
# --------------------------------------------------------------------------------------------------


def test_widget_buttons_move_the_state():
    model, xs = make(TinyVGG, double=False), images(3, size=16).float()
    view = explore(model, xs, top_n=2, thumb=48, class_names=list("abcde"))
    state = view.state
    assert isinstance(view, Explorer) and len(view.child_buttons) == 2
    assert view.back_button.disabled
    assert view.class_dropdown.value == state.predicted_class
    assert "predicted" in dict((v, k) for k, v in view.class_dropdown.options)[state.predicted_class]
    second = state.children[1].channel
    view.child_buttons[1].click()
    assert state.depth == 1 and state.current.channel == second
    assert f"#{second}" in view.breadcrumb.value and not view.back_button.disabled
    view.child_buttons[0].click()
    assert state.depth == 2 and all(b.disabled for b in view.child_buttons)  # children in the lowest stage
    view.back_button.click()
    assert state.depth == 1
    view.reset_button.click()
    assert state.depth == 0
    view.child_buttons[0].click()
    view.image_slider.value = 2
    assert state.image_index == 2 and state.depth == 0 and view.class_dropdown.value == state.predicted_class
    other = (state.target + 1) % 5
    view.child_buttons[0].click()
    view.class_dropdown.value = other
    assert state.target == other and state.depth == 0
    view.top_n_slider.value = 3
    assert state.top_n == 3 and len(view.child_buttons) == 3
    assert all(len(card.children) == 4 for card in view.cards.children)  # map, guided BP, text, button
    view.guided_checkbox.value = False
    assert all(len(card.children) == 3 for card in view.cards.children)
    assert view.status.value == "" and count_hooks(model) == 0
    assert "application/vnd.jupyter.widget-view+json" in view._repr_mimebundle_()


def test_guided_crop_is_the_square_around_the_support():
    g = torch.zeros(3, 64, 64)
    g[1, 10, 10], g[0, 12, 11] = 1.0, -0.5
    # support rows 10..12, cols 10..11; padded by 2: rows [8, 15), cols [8, 14); side 16 centred:
    # top (8 + 15 - 16) // 2 = 3, left (8 + 14 - 16) // 2 = 3
    rgb, box = guided_crop(g)
    assert box == (3, 3, 16) and rgb.shape == (16, 16, 3)
    assert rgb[10 - 3, 10 - 3, 1] == 1.0 and rgb[12 - 3, 11 - 3, 0] == 0.25
    assert guided_crop(torch.zeros(1, 8, 8))[1] == (0, 0, 8)
    assert guided_crop(torch.ones(1, 8, 8))[1] == (0, 0, 8)


def test_plot_path_draws_one_row_per_stage():
    import matplotlib.pyplot as plt

    model, xs = make(TinyVGG, double=False), images(1).float()
    state = ExplorerState(model, xs, top_n=2)
    while state.can_expand:
        state.expand(0)
    fig = plot_path(state)
    assert len(fig.axes) == 3 * 2 * 2  # 3 decomposed decisions x 2 children x (map, guided BP)
    plt.close(fig)
    with pytest.raises(TypeError, match="ExplorerState"):
        plot_path(model)
