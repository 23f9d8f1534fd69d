"""Hierarchical decomposition (Sec. 3.2): batched == node-by-node, tree API, NMS, saliency, torchvision archs."""

import json

import matplotlib

matplotlib.use("Agg")

import pytest
import torch
import torchvision
from tiny_models import TinyInception, TinyResNet, TinyVGG, image, make
from torch import nn

from xailib.gap import (
    GAP,
    DecompositionTree,
    Neuron,
    decompose,
    decompose_nodewise,
    gap_reference,
    gap_saliency,
    plot_decomposition,
    select_channels,
)
from xailib.layers import capture, count_hooks


@pytest.mark.parametrize("cls", [TinyVGG, TinyResNet, TinyInception])
@pytest.mark.parametrize("nms_iou", [None, 0.5])
def test_batched_tree_equals_nodewise_tree(cls, nms_iou):
    model, x = make(cls), image()
    layers = getattr(model, "stage_names", None) or cls.layers
    batched = decompose(model, x, layers=layers, top_n=3, nms_iou=nms_iou)
    chunked = decompose(model, x, layers=layers, top_n=3, nms_iou=nms_iou, max_batch_bytes=1)
    nodewise = decompose_nodewise(model, x, layers=layers, top_n=3, nms_iou=nms_iou)
    assert batched.same_as(nodewise, atol=1e-9) and chunked.same_as(nodewise, atol=1e-9)
    full = decompose(model, x, layers=layers, top_n=3, nms_iou=nms_iou, use_segment=False)
    assert full.same_as(nodewise, atol=1e-9)
    if nms_iou is None:
        assert [len(level) for level in batched.levels()] == [1, 3, 9, 27]
    assert count_hooks(model) == 0


def test_tree_nodes_follow_the_equations():
    model, x = make(TinyVGG), image()
    tree = decompose(model, x)
    logits = model(x)
    assert tree.target == int(logits.argmax()) and tree.root.score == pytest.approx(float(logits.detach().max()))
    assert tree.layers == model.stage_names
    gap = GAP(model, use_segment=False)
    for node in tree.walk():
        if not node.children:
            continue
        decision = node.channel if node.layer == "output" else Neuron(node.layer, node.channel, *node.position)
        res = gap.attribute(x, target=decision, layer=node.children[0].layer)
        top = torch.sort(res.contributions[0], descending=True, stable=True).indices[:3].tolist()
        assert [c.channel for c in node.children] == top  # Eq. (4): top-N by contribution
        for c in node.children:
            assert c.contribution == pytest.approx(float(res.contributions[0, c.channel]), rel=1e-12)
            assert c.position == tuple(res.peaks[0, c.channel].tolist())  # Eq. (5): decomposed at the peak
            assert c.score == pytest.approx(float(res.features[0, c.channel, c.position[0], c.position[1]]))
            assert c.activation_map.shape == res.activation_maps.shape[-2:]


def test_json_roundtrip_walk_prune(tmp_path):
    model, x = make(TinyResNet), image()
    tree = decompose(model, x, target=2, top_n=3)
    text = tree.to_json()
    back = DecompositionTree.from_json(text)
    assert back.same_as(tree, atol=0) and back.to_json() == text
    assert DecompositionTree.from_json(tree.to_json(tmp_path / "t.json")).same_as(tree, atol=0)
    assert json.loads(text)["root"]["channel"] == 2
    assert len(tree) == 1 + 3 + 9 + 27 == len(list(tree.walk()))
    small = tree.prune(top_n=2)
    assert [len(level) for level in small.levels()] == [1, 2, 4, 8] and len(tree) == 40  # the original is kept
    positive = tree.prune(min_contribution=0.0)
    assert all(n.contribution >= 0 for n in positive.walk() if n.contribution is not None)
    with pytest.raises(ValueError, match="top_n"):
        tree.prune(top_n=0)


def test_nms_merges_identical_channels():
    # Two identical maps with the best contributions: the second is merged into the first.
    maps = torch.zeros(1, 4, 3, 3)
    maps[0, 0, 0, :] = 1.0
    maps[0, 1] = maps[0, 0]
    maps[0, 2, 2, 2] = 0.5
    maps[0, 3, 1, 1] = 0.2
    contrib = torch.tensor([[1.0, 1.0, 0.5, 0.2]])
    kept, merged = select_channels(contrib, maps, top_n=2, nms_iou=0.9)
    assert kept.tolist() == [[0, 2]] and merged.tolist() == [[-1, 0, -1, -1]]
    assert select_channels(contrib, maps, top_n=2)[0].tolist() == [[0, 1]]
    # End to end: duplicate stage-2 channel 0 into channel 1 (same filter, same outgoing weights).
    model, x = make(TinyVGG), image()
    with torch.no_grad():
        last = model.stages["stage2"][3]
        last.weight[1], last.bias[1] = last.weight[0] * 3, last.bias[0] * 3
        last.weight[0], last.bias[0] = last.weight[1], last.bias[1]
        nxt = model.stages["stage3"][1]
        nxt.weight[:, 0] = nxt.weight[:, 0].abs() * 3
        nxt.weight[:, 1] = nxt.weight[:, 0]
    plain = decompose(model, x)
    stage2 = [n for n in plain.walk() if n.layer == "stages.stage2"]
    assert any(n.channel == 1 for n in stage2) and any(n.channel == 0 for n in stage2)
    merged_tree = decompose(model, x, nms_iou=0.9)
    stage2 = [n for n in merged_tree.walk() if n.layer == "stages.stage2"]
    assert not any(n.channel == 1 for n in stage2)
    assert all(1 in n.merged for n in stage2 if n.channel == 0) and any(n.channel == 0 for n in stage2)
    assert merged_tree.same_as(decompose_nodewise(model, x, nms_iou=0.9), atol=1e-9)


def test_saliency_sums_input_gradients_of_the_decompositions():
    model, x = make(TinyVGG), image()
    tree = decompose(model, x, top_n=2)
    sal = gap_saliency(model, x, top_n=2)
    assert sal.shape == x.shape
    # One by one: gradient of each stage-1 decision w.r.t. the input image, summed.
    expected = torch.zeros_like(x)
    xr = x.clone().requires_grad_(True)
    leaves = [n for n in tree.walk() if n.layer == "stages.stage1"]
    assert len(leaves) == 8
    for n in leaves:
        with capture(model, "stages.stage1") as rec:
            model(xr)
            expected += torch.autograd.grad(rec["stages.stage1"][0, n.channel, n.position[0], n.position[1]], xr)[0]
    torch.testing.assert_close(sal, expected, rtol=1e-10, atol=1e-12)
    # nodes="all" adds every decision's input gradient, the root's being the plain class-score gradient.
    (root_grad,) = torch.autograd.grad(model(xr)[0, tree.target], xr)
    assert torch.linalg.vector_norm(root_grad) > 0
    all_nodes = gap_saliency(model, x, tree=tree, nodes="all")
    assert not torch.allclose(all_nodes, sal)
    assert count_hooks(model) == 0


def test_plot_has_one_thumbnail_per_node():
    model, x = make(TinyVGG), image()
    tree = decompose(model, x, top_n=2)
    fig = plot_decomposition(tree, x, layer_labels={"stages.stage3": "s3"})
    assert len(fig.axes[0].child_axes) == len(tree)
    fig2 = plot_decomposition(tree, x, max_depth=1)
    assert len(fig2.axes[0].child_axes) == 1 + 2
    import matplotlib.pyplot as plt

    plt.close("all")


# ---------------------------------------------------------------- torchvision architectures (random weights)

TORCHVISION = {
    "vgg16": (lambda: torchvision.models.vgg16(weights=None), ["features.15", "features.22", "features.29"]),
    "resnet50": (lambda: torchvision.models.resnet50(weights=None), ["layer2", "layer3", "layer4"]),
    "googlenet": (lambda: torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True),
                  ["conv3", "inception3b", "inception4e", "inception5b"]),
    "alexnet": (lambda: torchvision.models.alexnet(weights=None), ["features.1", "features.4", "features.11"]),
}


@pytest.mark.parametrize("arch", list(TORCHVISION))
def test_torchvision_architectures(arch):
    build, layers = TORCHVISION[arch]
    torch.manual_seed(0)
    model = build().eval()
    if arch != "googlenet":  # googlenet calls F.relu(x, inplace=True) inside BasicConv2d
        assert any(isinstance(m, nn.ReLU) and m.inplace for m in model.modules())
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    batched = decompose(model, x, layers=layers, top_n=2)
    assert batched.same_as(decompose_nodewise(model, x, layers=layers, top_n=2), atol=1e-4)
    assert [len(level) for level in batched.levels()] == [1, 2, 4, 8, 16][: len(layers) + 1]
    node = batched.root.children[0]
    decision = Neuron(node.layer, node.channel, *node.position)
    fast = GAP(model).attribute(x, target=decision, layer=layers[-2])
    ref = gap_reference(model, x, decision, layers[-2])
    torch.testing.assert_close(fast.contributions.double(), ref.contributions, rtol=1e-4, atol=1e-6 * ref.contributions.abs().max())
    assert count_hooks(model) == 0


@pytest.mark.parametrize("cls", [TinyVGG, TinyResNet, TinyInception])
@pytest.mark.parametrize("nms_iou", [None, 0.3])
def test_one_engine_batched_over_images_and_nodes_equals_node_by_node(cls, nms_iou):
    """decompose_images (the engine, several images at once) gives each image's tree as decompose_nodewise
    (one full forward and backward per node) does, with and without NMS."""
    from xailib.gap.decomposition import decompose_images

    model = make(cls)
    layers = getattr(model, "stage_names", None) or cls.layers
    x = image(seed=11, batch=3)
    levels = decompose_images(model, x, targets=[0, 3, 1], layers=layers, top_n=2, image_batch=2, nms_iou=nms_iou,
                              mask_threshold=0.2)
    for i, target in enumerate([0, 3, 1]):
        ref = decompose_nodewise(model, x[i:i + 1], target=target, layers=layers, top_n=2, nms_iou=nms_iou,
                                 mask_threshold=0.2, keep_maps=False)
        for nodes, lv in zip(ref.levels()[1:], levels):
            sel = (lv.image_index == i).nonzero()[:, 0]
            assert [n.channel for n in nodes] == lv.channel[sel].tolist()
            assert [tuple(n.position) for n in nodes] == [tuple(p) for p in lv.position[sel].tolist()]
            torch.testing.assert_close(lv.contribution[sel], torch.tensor([n.contribution for n in nodes],
                                                                           dtype=lv.contribution.dtype))
            if nms_iou is not None:
                assert [n.merged for n in nodes] == [lv.merged[j] for j in sel.tolist()]
    assert count_hooks(model) == 0
