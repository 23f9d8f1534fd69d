"""Tests of xailib.gap.baselines: the sanity checks (Fig. 7) and channel removal (Fig. 9) against captum baselines."""

import copy

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import torch
from torch import nn

from xailib.gap import gap_saliency
from xailib.gap.baselines import (
    CHANNEL_METHODS,
    SALIENCY_METHODS,
    average_ranks,
    cascading_randomization,
    channel_removal_curve,
    channel_scores,
    data_randomization,
    plot_cascading_examples,
    plot_cascading_randomization,
    plot_channel_removal,
    plot_data_randomization,
    randomization_layers,
    randomized_copy,
    reduce_maps,
    remove_channels,
    saliency_maps,
    spearman_rank,
    train_random_label_model,
)
from xailib.layers import count_hooks
from xailib.models import build_model

FAST = dict(sg_samples=3, ig_steps=4)


def state_copy(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same_state(model, saved):
    now = model.state_dict()
    return now.keys() == saved.keys() and all(torch.equal(now[k], saved[k]) for k in saved)


@pytest.fixture(scope="module")
def vgg():
    torch.manual_seed(0)
    m = build_model("vgg", "fashion-mnist")
    with torch.no_grad():  # non-trivial BatchNorm statistics, so that eval mode matters
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.2, 0.2)
    return m.eval()


@pytest.fixture(scope="module")
def images():
    return torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))


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


# ------------------------------------------------------------------------------------------------
# Spearman rank correlation
# ------------------------------------------------------------------------------------------------


def test_spearman_matches_scipy_on_hand_maps():
    a = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 1.0, 5.0], [3.0, 1.0, 2.0, 2.0]])
    b = torch.tensor([[4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 1.0, 2.0]])
    rho = spearman_rank(a, b)
    assert rho[0].item() == pytest.approx(-1.0)  # reversed order, by hand
    # row 1: ranks of a with a tie: [1.5, 1.5, 3, 4] vs [1, 2, 3, 4] -> rho = 4.5 / sqrt(4.5 * 5)
    assert rho[1].item() == pytest.approx(4.5 / np.sqrt(4.5 * 5.0))
    for i in range(3):
        assert rho[i].item() == pytest.approx(scipy.stats.spearmanr(a[i], b[i]).statistic, abs=1e-12)


def test_spearman_batched_equals_scipy_on_random_maps_with_ties():
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 5, (6, 8, 8), generator=g).float()  # many ties
    b = torch.randn(6, 8, 8, generator=g).relu()  # ties at zero, like gradients through ReLU
    rho = spearman_rank(a, b)
    for i in range(6):
        assert rho[i].item() == pytest.approx(scipy.stats.spearmanr(a[i].flatten(), b[i].flatten()).statistic,
                                              abs=1e-12)
    ranks = average_ranks(a.flatten(1))
    assert np.allclose(ranks.numpy(), np.stack([scipy.stats.rankdata(r) for r in a.flatten(1).numpy()]))


def test_spearman_constant_map_is_nan_and_shape_errors():
    assert torch.isnan(spearman_rank(torch.ones(1, 4), torch.arange(4.0)[None]))[0]
    with pytest.raises(ValueError, match="same shape"):
        spearman_rank(torch.ones(2, 4), torch.ones(2, 5))


def test_reduce_maps_by_hand():
    a = torch.tensor([[[[1.0, -2.0]], [[-3.0, 1.0]]]])  # [1, 2, 1, 2]
    assert reduce_maps(a, True).tolist() == [[[4.0, 3.0]]]
    assert reduce_maps(a, False).tolist() == [[[-2.0, -1.0]]]


# ------------------------------------------------------------------------------------------------
# Saliency maps
# ------------------------------------------------------------------------------------------------


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
    gb = saliency_maps(model, images, t, "GuidedBackprop")
    assert count_hooks(model) == 0
    assert torch.allclose(gb, guided_backprop_reference(model, images, t), atol=1e-7, rtol=1e-4)
    grad = saliency_maps(model, images, t, "Gradient")
    assert not torch.allclose(gb, grad)  # the hooks did fire


def test_saliency_gap_is_gap_saliency_and_smoothgrad_is_seeded(vgg, images):
    t = torch.tensor([0, 1, 2])
    a = saliency_maps(vgg, images, t, "gAP")
    for i in range(3):
        assert torch.equal(a[i:i + 1], gap_saliency(vgg, images[i:i + 1], target=int(t[i])))
    state = torch.get_rng_state()
    s1 = saliency_maps(vgg, images, t, "SmoothGrad", sg_samples=3, seed=5)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random stream is untouched
    assert torch.equal(s1, saliency_maps(vgg, images, t, "SmoothGrad", sg_samples=3, seed=5))
    assert not torch.equal(s1, saliency_maps(vgg, images, t, "SmoothGrad", sg_samples=3, seed=6))
    assert count_hooks(vgg) == 0


def test_integrated_gradients_completeness(vgg, images):
    """IG's attributions sum to S(x) - S(0) (up to the Riemann error)."""
    t = torch.tensor([0, 1, 2])
    ig = saliency_maps(vgg, images, t, "IntegratedGradients", ig_steps=64)
    with torch.no_grad():
        diff = vgg(images)[torch.arange(3), t] - vgg(torch.zeros_like(images))[torch.arange(3), t]
    assert torch.allclose(ig.sum((1, 2, 3)), diff, rtol=0.05, atol=1e-3)


# ------------------------------------------------------------------------------------------------
# Cascading and data randomisation
# ------------------------------------------------------------------------------------------------


def test_randomization_layers_of_zoo_model(vgg):
    assert randomization_layers(vgg) == ["head.fc2", "head.fc1"] + [f"features.stage{k}" for k in range(5, 0, -1)]


def test_cascading_randomization_leaves_model_identical_and_hook_free(vgg, images):
    saved = state_copy(vgg)
    layers = ["head.fc2", "head.fc1", "features.stage5"]
    df = cascading_randomization(vgg, images, methods=SALIENCY_METHODS, layers=layers, **FAST)
    assert same_state(vgg, saved) and count_hooks(vgg) == 0 and not vgg.training
    assert len(df) == (len(layers) + 1) * len(SALIENCY_METHODS) * len(images)
    first = df[df.step == 0]
    assert np.allclose(first.spearman_abs, 1.0) and np.allclose(first.spearman_signed, 1.0)
    last = df[(df.step == 3) & (df.method == "Gradient")]
    assert (last.spearman_abs < 0.99).all()  # re-initialising changes the maps
    assert list(df[df.image == 0].drop_duplicates("step").randomized) == ["none"] + layers
    df2 = cascading_randomization(vgg, images, methods=SALIENCY_METHODS, layers=layers, **FAST)
    pd.testing.assert_frame_equal(df.drop(columns="seconds"), df2.drop(columns="seconds"))  # seeded


def test_randomized_copy_changes_only_the_copy(vgg):
    saved = state_copy(vgg)
    with randomized_copy(vgg, ["head.fc2", "features.stage5"], seed=3) as rnd:
        assert rnd is not vgg
        new = rnd.state_dict()
        assert not torch.equal(new["head.fc2.weight"], saved["head.fc2.weight"])
        assert torch.equal(new["head.fc1.weight"], saved["head.fc1.weight"])  # not in the list
        assert torch.equal(new["features.stage5.bn1.running_mean"], torch.zeros_like(saved["features.stage5.bn1.running_mean"]))
    assert same_state(vgg, saved) and count_hooks(vgg) == 0


def test_data_randomization_of_a_model_with_itself_is_one(vgg, images):
    df = data_randomization(vgg, vgg, images, methods=["Gradient", "GuidedBackprop", "gAP"])
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
    for method in ["gAP", "Random", "LRP"]:
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
    lrp = channel_scores(model, x, t, "relu", "LRP", batch_size=3)  # two batches: rules re-attached per call
    gap = channel_scores(model, x, t, "relu", "gAP", batch_size=3)
    assert torch.allclose(lrp, 25 * gap, atol=1e-5, rtol=1e-4)
    assert count_hooks(model) == 0
    assert not any(hasattr(m, "rule") or hasattr(m, "activations") for m in model.modules())
    assert all(m.inplace for m in model.modules() if isinstance(m, nn.ReLU))


def test_lrp_is_z_times_gap_on_zoo_vgg(vgg, images):
    """ReLU + conv + eval BatchNorm + max-pool + linear: LRP-epsilon is gradient x input, so LRP = h * w * alpha."""
    lrp = channel_scores(vgg, images, None, "features.stage4", "LRP")
    gap = channel_scores(vgg, images, None, "features.stage4", "gAP")
    assert torch.allclose(lrp, 7 * 7 * gap, rtol=1e-3, atol=1e-6 * float(lrp.abs().max()))
    assert count_hooks(vgg) == 0


def test_channel_scores_of_every_method_on_zoo_vgg(vgg, images):
    saved = state_copy(vgg)
    for method in CHANNEL_METHODS:
        s = channel_scores(vgg, images, None, "features.stage5", method, n_steps=4)
        assert s.shape == (3, 64) and torch.isfinite(s).all()
    assert same_state(vgg, saved) and count_hooks(vgg) == 0
    assert not any(hasattr(m, "rule") or hasattr(m, "activations") for m in vgg.modules())


# ------------------------------------------------------------------------------------------------
# Bad input: clear errors and no hooks left
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("call, match", [
    (lambda m, x: saliency_maps(m, x, None, "Occlusion"), "Unknown method"),
    (lambda m, x: saliency_maps(m, x, [0, 1], "Gradient"), "one class index per image"),
    (lambda m, x: saliency_maps(m, x.numpy(), None, "Gradient"), "torch.Tensor"),
    (lambda m, x: cascading_randomization(m, x, layers=["head.fc9"]), "Invalid layer"),
    (lambda m, x: data_randomization(m, "model", x), "torch.nn.Module"),
    (lambda m, x: channel_scores(m, x, None, "features.stage9", "gAP"), "Invalid layer"),
    (lambda m, x: channel_scores(m, x, None, "head.fc1", "Conductance"), "conv layer"),
    (lambda m, x: channel_removal_curve(m, x, torch.tensor([0, 1, 2]), "features.stage5", ablation="max"),
     "ablation"),
    (lambda m, x: channel_removal_curve(m, x, torch.tensor([0, 1, 2]), "features.stage5", n_values=[-1]),
     "n_values"),
    (lambda m, x: channel_removal_curve(m, x, torch.tensor([0, 1, 2]), "head.fc1", methods=["gAP"]), "conv"),
])
def test_bad_input_raises_and_leaves_no_hooks(vgg, images, call, match):
    saved = state_copy(vgg)
    with pytest.raises((ValueError, TypeError), match=match):
        call(vgg, images)
    assert count_hooks(vgg) == 0 and same_state(vgg, saved)
    assert not any(hasattr(m, "rule") or hasattr(m, "activations") for m in vgg.modules())


def test_figures_draw(vgg, images):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = ["head.fc2", "features.stage5"]
    casc = cascading_randomization(vgg, images[:2], methods=["Gradient", "gAP"], layers=layers, **FAST)
    data = data_randomization(vgg, vgg, images[:2], methods=["Gradient", "gAP"])
    rem = channel_removal_curve(vgg, images, torch.tensor([0, 1, 2]), ["features.stage5"], methods=["gAP", "Random"],
                                n_values=[0, 2])
    for fig in (plot_cascading_randomization(casc), plot_data_randomization(data), plot_channel_removal(rem),
                plot_cascading_examples(vgg, images[0], methods=["Gradient", "gAP"], layers=layers, random_model=vgg)):
        assert fig.axes
        plt.close(fig)
    assert count_hooks(vgg) == 0


def test_summaries_on_hand_tables():
    from xailib.gap.baselines import paper_comparison, removal_summary, sanity_summary

    removal = pd.DataFrame({"layer": ["s5"] * 6, "method": ["gAP", "gAP", "LRP", "LRP", "Random", "Random"],
                            "n_removed": [0, 2] * 3, "accuracy": [1.0, 0.4, 1.0, 0.6, 1.0, 0.9]})
    summ = removal_summary(removal)
    assert summ["mean_N>0"].tolist() == [0.4, 0.6, 0.9] and summ["rank"].tolist() == [1, 2, 3]
    cascade = pd.DataFrame({"step": [0, 0, 1, 1, 2, 2], "randomized": ["none", "none", "a", "a", "b", "b"],
                            "method": ["gAP", "Gradient"] * 3, "image": 0, "seconds": 0.0,
                            "spearman_abs": [1, 1, 0.5, 0.7, 0.1, 0.3], "spearman_signed": [1, 1, 0.2, 0.1, 0.0, 0.05]})
    s = sanity_summary(cascade).set_index("method")
    assert s.loc["gAP", "cascade_top_abs"] == 0.5 and s.loc["Gradient", "cascade_all_abs"] == 0.3
    comp = paper_comparison(cascade=cascade, removal=removal)
    ranks = comp.set_index(["quantity", "method"])["rank"]
    assert ranks[("Spearman |map| after full cascade", "gAP")] == 1
    assert ranks[("Spearman signed map after full cascade", "gAP")] == 1  # 0.0 < 0.05
    assert pd.isna(ranks[("mean accuracy over N>0 removed, s5", "Random")])
