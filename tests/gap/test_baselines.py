"""Tests of xailib.gap.baselines, the gAP paper's part of the comparison with other methods (Fig. 7, Fig. 9):
gAP in the shared registry, the names kept importable from here, the summaries and the figures.

The algorithms themselves (the registry, every method, the randomisation and removal tests) are tested in
tests/test_baselines.py."""

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import torch

from tiny_models import same_state

import xailib.baselines as floor
import xailib.metrics
from xailib.gap import gap_saliency
from xailib.gap.baselines import (
    ABLATIONS,
    CHANNEL_METHODS,
    SALIENCY_METHODS,
    cascading_randomization,
    channel_removal_curve,
    channel_scores,
    data_randomization,
    lrp_copy,
    randomization_layers,
    randomized_copy,
    reduce_maps,
    reinitialize,
    remove_channels,
    saliency_maps,
    train_random_label_model,
)
from xailib.gap.plot import (
    plot_cascading_examples,
    plot_cascading_randomization,
    plot_channel_removal,
    plot_data_randomization,
)
from xailib.metrics import average_ranks, spearman_rank
from xailib.gap.module import GAP
from xailib.layers import count_hooks

FAST = dict(sg_samples=3, ig_steps=4)


def state_copy(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ------------------------------------------------------------------------------------------------
# The names of the algorithms stay importable from here
# ------------------------------------------------------------------------------------------------


def test_moved_names_are_the_floors():
    assert spearman_rank is xailib.metrics.spearman_rank and average_ranks is xailib.metrics.average_ranks
    for fn in (randomization_layers, randomized_copy, reinitialize, train_random_label_model, lrp_copy,
               remove_channels):
        assert fn is getattr(floor, fn.__name__)
    assert ABLATIONS == floor.ABLATIONS
    assert set(SALIENCY_METHODS) <= set(floor.available("map"))
    assert set(CHANNEL_METHODS) <= set(floor.available("channel"))


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


def test_saliency_maps_and_channel_scores_are_the_registry(vgg, images):
    t = torch.tensor([0, 1, 2])
    for m in SALIENCY_METHODS:
        opts = {k: v for k, v in dict(FAST, top_n=2, seed=3).items() if k in floor.method_options(m, "map")}
        ours = saliency_maps(vgg, images, t, m, top_n=2, seed=3, **FAST)
        assert torch.equal(ours, floor.attribute(vgg, images, t, method=m, reduce=None, **opts)), m
    for m in CHANNEL_METHODS:
        opts = {k: v for k, v in dict(n_steps=4, seed=3).items() if k in floor.method_options(m, "channel")}
        ours = channel_scores(vgg, images, t, "features.stage4", m, n_steps=4, seed=3)
        assert torch.equal(ours, floor.attribute(vgg, images, t, method=m, layer="features.stage4", **opts)), m
    assert count_hooks(vgg) == 0


# ------------------------------------------------------------------------------------------------
# gAP in the registry (xailib/gap/registry.py)
# ------------------------------------------------------------------------------------------------


def test_gap_map_is_gap_saliency_one_image_at_a_time(vgg, images):
    t = torch.tensor([0, 1, 2])
    a = saliency_maps(vgg, images, t, "gAP")
    for i in range(3):
        assert torch.equal(a[i:i + 1], gap_saliency(vgg, images[i:i + 1], target=int(t[i])))
    assert torch.equal(floor.attribute(vgg, images, t, method="gAP"), a.abs().sum(1))
    assert count_hooks(vgg) == 0


def test_gap_channels_are_eq4_contributions(vgg, images):
    t = torch.tensor([4, 0, 9])
    ref = GAP(vgg).attribute(images, t, "features.stage3").contributions
    one_batch = floor.attribute(vgg, images, t, method="gAP", layer="features.stage3")
    assert torch.equal(one_batch, ref.cpu())  # GAP(model).attribute(...).contributions, as channel_scores did
    two_batches = floor.attribute(vgg, images, t, method="gAP", layer="features.stage3", batch_size=2)
    assert torch.allclose(two_batches, ref.cpu(), rtol=1e-5, atol=1e-8)
    assert floor.method_options("gAP", "map") == ("top_n", "progress")
    assert floor.method_options("gAP", "channel") == ("batch_size",)


def test_lrp_is_z_times_gap_on_zoo_vgg(vgg, images):
    """Fig. 9's note: ReLU + conv + eval BatchNorm + max-pool + linear: LRP-epsilon is gradient x input, so the LRP
    relevance of a channel is h * w * alpha (Eq. 4) and the two rank the channels identically."""
    lrp = channel_scores(vgg, images, None, "features.stage4", "LRP")
    gap = channel_scores(vgg, images, None, "features.stage4", "gAP")
    assert torch.allclose(lrp, 7 * 7 * gap, rtol=1e-3, atol=1e-6 * float(lrp.abs().max()))
    assert count_hooks(vgg) == 0


def test_the_fig7_and_fig9_defaults(vgg, images):
    layers = ["head.fc2"]
    df = cascading_randomization(vgg, images[:1], layers=layers, **FAST)
    assert list(dict.fromkeys(df.method)) == list(SALIENCY_METHODS)
    df = data_randomization(vgg, vgg, images[:1], **FAST)
    assert list(dict.fromkeys(df.method)) == list(SALIENCY_METHODS)
    df = channel_removal_curve(vgg, images, torch.tensor([0, 1, 2]), "features.stage5", n_values=[0, 1], n_steps=2)
    assert list(dict.fromkeys(df.method)) == list(CHANNEL_METHODS)
    assert count_hooks(vgg) == 0


# ------------------------------------------------------------------------------------------------
# Bad input: clear errors and no hooks left
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("call, match", [
    (lambda m, x: saliency_maps(m, x, None, "Occlusion"), "Unknown method"),
    (lambda m, x: saliency_maps(m, x, None, "GradCAM"), "Unknown method"),  # not one of Fig. 7's
    (lambda m, x: saliency_maps(m, x, [0, 1], "Gradient"), "one per image"),
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


# ------------------------------------------------------------------------------------------------
# Figures and summaries
# ------------------------------------------------------------------------------------------------


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
                plot_cascading_examples(vgg, images[0], methods=["Gradient", "gAP"], layers=layers, random_model=vgg),
                plot_cascading_examples(vgg, images[:1], 3, methods=["GradCAM++", "SmoothGrad"], layers=layers[:1],
                                        **FAST)):
        assert fig.axes
        plt.close(fig)
    assert count_hooks(vgg) == 0


def test_summaries_on_hand_tables():
    from xailib.gap.baselines import removal_summary, sanity_summary
    from xailib.gap.paper import randomization_comparison

    removal = pd.DataFrame({"layer": ["s5"] * 6, "method": ["gAP", "gAP", "LRP", "LRP", "Random", "Random"],
                            "n_removed": [0, 2] * 3, "accuracy": [1.0, 0.4, 1.0, 0.6, 1.0, 0.9]})
    summ = removal_summary(removal)
    assert summ["mean_N>0"].tolist() == [0.4, 0.6, 0.9] and summ["rank"].tolist() == [1, 2, 3]
    cascade = pd.DataFrame({"step": [0, 0, 1, 1, 2, 2], "randomized": ["none", "none", "a", "a", "b", "b"],
                            "method": ["gAP", "Gradient"] * 3, "image": 0, "seconds": 0.0,
                            "spearman_abs": [1, 1, 0.5, 0.7, 0.1, 0.3], "spearman_signed": [1, 1, 0.2, 0.1, 0.0, 0.05]})
    s = sanity_summary(cascade).set_index("method")
    assert s.loc["gAP", "cascade_top_abs"] == 0.5 and s.loc["Gradient", "cascade_all_abs"] == 0.3
    comp = randomization_comparison(cascade=cascade, removal=removal).set_index("quantity")
    # one image: no interval of the paired difference, so 0.1 < 0.3 is not read as an ordering
    assert comp.loc["Spearman |map| after the full cascade", "verdict"] == "not reproduced"
    assert "the means are indistinguishable" in comp.loc["Spearman |map| after the full cascade", "note"]
    row = comp.loc["mean accuracy over N > 0 channels removed, s5"]
    # LRP's curve differs from gAP's here, so it is compared; without the number of images, no verdict
    assert row["verdict"] == "not comparable" and "random ranking 0.900" in row["note"]
    assert "LRP 0.600 (compared: its curve differs from gAP's)" in row["note"]
