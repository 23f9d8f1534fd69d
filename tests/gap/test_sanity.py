"""Sanity checks of Sec. 4.1 (xailib.gap.sanity): PCC (Eq. 12), batched ground truth, the stage-pair chain
behind Table 1, the channel counts of Fig. 6(b), the timing table and the top-k sparse surrogate of Fig. 8."""

import pytest
import torch
from tiny_models import Boom, OneConvLinear, TinyInception, TinyVGG, image, make
from scipy.stats import pearsonr

from xailib.gap import GAP, Neuron, ground_truth_contributions
from xailib.gap.sanity import (
    SanityResult,
    StagePair,
    ground_truth_batch,
    pair_names,
    pcc,
    pcc_table,
    sparse_surrogate_curve,
    stage_pair_contributions,
    surrogate_keep_masks,
    time_gap_vs_ground_truth,
)
from xailib.layers import count_hooks

STAGES = ["stages.stage1", "stages.stage2", "stages.stage3"]


def test_pcc_matches_scipy_and_by_hand():
    a = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    b = torch.tensor([2.0, 4.0, 6.0, 8.5], dtype=torch.float64)
    assert float(pcc(a, b)) == pytest.approx(pearsonr(a.numpy(), b.numpy())[0], abs=1e-12)
    assert float(pcc(a, -3 * a + 1)) == pytest.approx(-1.0, abs=1e-12)
    # by hand: a - mean = (-1, 0, 1), b - mean = (0, 1, -1): cov = -1/3, var_a = var_b = 2/3 -> rho = -1/2
    assert float(pcc(torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 2.0, 0.0]))) == pytest.approx(-0.5)
    rows = torch.randn(5, 7, dtype=torch.float64), torch.randn(5, 7, dtype=torch.float64)
    want = [pearsonr(x.numpy(), y.numpy())[0] for x, y in zip(*rows)]
    assert torch.allclose(pcc(*rows), torch.tensor(want, dtype=torch.float64), atol=1e-12)  # batched == one by one
    assert torch.isnan(pcc(torch.zeros(4), a))  # undefined for a constant vector
    with pytest.raises(ValueError, match="one shape"):
        pcc(a, a[:3])


def test_pair_names():
    assert pair_names(5) == ["T->S5", "S5->S4", "S4->S3", "S3->S2", "S2->S1"]


@pytest.mark.parametrize("baseline", ["mean", "zero", "tensor"])
def test_ground_truth_batch_equals_library_image_by_image(baseline):
    model, x = make(TinyVGG), image(batch=3)
    base = torch.linspace(0.0, 0.7, 6, dtype=torch.float64) if baseline == "tensor" else baseline
    for target, layer in (([1, 3, 0], "stages.stage3"),
                          ([Neuron("stages.stage3", c, 1, 2) for c in (0, 5, 7)], "stages.stage2")):
        got = ground_truth_batch(model, x, target, layer, baseline=base if layer == "stages.stage2" else "zero",
                                 chunk=7)  # chunk not a multiple of K: copies of one image stay together
        b = base if layer == "stages.stage2" else "zero"
        want = torch.stack([ground_truth_contributions(model, x[i:i + 1], t, layer, baseline=b)
                            for i, t in enumerate(target)])
        assert torch.allclose(got, want, atol=1e-10)
    assert count_hooks(model) == 0


def test_ground_truth_batch_without_run_segment_falls_back():
    model, x = make(TinyInception), image(batch=2)
    got = ground_truth_batch(model, x, [1, 2], "inc2", baseline="zero")
    want = torch.stack([ground_truth_contributions(model, x[i:i + 1], t, "inc2", baseline="zero")
                        for i, t in enumerate([1, 2])])
    assert torch.allclose(got, want, atol=1e-10) and count_hooks(model) == 0


def test_ground_truth_batch_one_conv_by_hand():
    # x = 1 everywhere: channel 0 = 1, channel 1 = 2 at all four positions (see OneConvLinear);
    # class 0 = c0(0,0) + c0(1,1) + c1(1,0) - c1(1,1) = 1 + 1 + 2 - 2 = 2. Zeroing c0 drops 2, zeroing c1 drops 0.
    model = make(OneConvLinear)
    x = torch.ones(1, 1, 2, 2, dtype=torch.float64)
    got = ground_truth_batch(model, x, [0], "relu", baseline="zero")
    assert got.tolist() == [[2.0, 0.0]]


def test_stage_pairs_follow_the_decomposition_and_table_shape():
    model, x = make(TinyVGG), image(batch=3)
    labels = torch.tensor([0, 1, 2])
    res = stage_pair_contributions(model, x, labels, baselines=("mean", "zero", "dataset"))
    assert [p.name for p in res.pairs] == ["T->S3", "S3->S2", "S2->S1"]
    assert [p.lower for p in res.pairs] == STAGES[::-1]
    with torch.no_grad():
        assert torch.equal(res.pairs[0].channels, model(x).argmax(1))  # T->S3: the predicted class
    gap = GAP(model)
    for upper, lower in zip(res.pairs[:-1], res.pairs[1:]):
        r = gap.attribute(x, target=upper.decisions(), layer=upper.lower)
        top = r.contributions.argmax(1)
        assert torch.equal(lower.channels, top)  # the top channel one level up ...
        assert torch.equal(lower.positions, r.peaks[torch.arange(3), top])  # ... at its peak (Eq. 5)
        assert torch.allclose(upper.contributions["AA"], r.contributions)
    assert torch.allclose(res.pairs[1].ground_truth["zero"][2],
                          ground_truth_contributions(model, x[2:], res.pairs[1].decisions()[2], "stages.stage2",
                                                     baseline="zero"))
    table = res.pcc_table()
    assert list(table.columns) == ["model", "ground truth", "strategy", "T->S3", "S3->S2", "S2->S1"]
    assert len(table) == 12 and list(table["strategy"][:4]) == ["AA", "MA", "AG", "MG"]
    assert table.loc[0, "T->S3"] == pytest.approx(
        float(pcc(res.pairs[0].contributions["AA"], res.pairs[0].ground_truth["mean"]).nanmean()))
    assert count_hooks(model) == 0
    label_res = stage_pair_contributions(model, x, labels, target="label", baselines=("zero",))
    assert torch.equal(label_res.pairs[0].channels, labels)
    assert len(pcc_table(model, x, labels, strategies=("AA",), baselines=("zero",))) == 1
    assert count_hooks(model) == 0


def test_sorted_contributions_by_hand():
    pair = StagePair("T->S1", None, "l", torch.tensor([0]), None,
                     {"AA": torch.tensor([[1.0, -2.0, 4.0]])}, {"zero": torch.tensor([[0.5, 1.0, 0.0]])},
                     torch.zeros(1, 3, 2, 2))
    df = SanityResult([pair], "predicted", None, torch.tensor([0])).sorted_contributions("zero")
    assert df[df.method == "gAP"]["value"].tolist() == [1.0, 0.25, -0.5]  # sorted, divided by max |.| = 4
    assert df[df.method == "GT"]["value"].tolist() == [1.0, 0.5, 0.0]


def test_channel_counts_by_hand():
    maps = torch.zeros(1, 4, 4, 4)
    maps[0, 0, :2, :2] = 1.0  # channel 0: top-left block
    maps[0, 1, :2, :2] = 0.5  # channel 1: the same block, lower contribution -> overlaps with 0
    maps[0, 2, 2:, 2:] = 1.0  # channel 2: another block
    maps[0, 3, :2, :2] = -1.0  # channel 3: not activated (alpha < 0)
    alpha = maps.mean((2, 3))
    pair = StagePair("T->S1", None, "l", torch.tensor([0]), None, {"AA": alpha}, {}, maps)
    df = SanityResult([pair], "predicted", None, torch.tensor([0])).channel_counts()
    assert df.loc[0, ["all", "activated", "overlapping"]].tolist() == [4, 3.0, 1.0]


def test_timing_table():
    model, x = make(TinyVGG), image()
    df = time_gap_vs_ground_truth(model, x, repeat=1, pairs=["T->S3", "S2->S1"])
    assert df["pair"].tolist() == ["T->S3", "S2->S1"] and df["channels"].tolist() == [8, 4]
    assert (df[["gap_ms", "gt_batched_ms", "gt_naive_ms"]] > 0).all().all()
    assert count_hooks(model) == 0
    with pytest.raises(ValueError, match="Unknown stage pairs"):
        time_gap_vs_ground_truth(model, x, repeat=1, pairs=["T->S9"])


def test_surrogate_with_all_channels_is_the_full_model():
    model, x = make(TinyVGG), image(batch=6)
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    with torch.no_grad():
        full_acc = float((model(x).argmax(1) == labels).double().mean())
    df = sparse_surrogate_curve(model, x, labels, ks=[8], batch_size=4)  # K <= 8 at every stage
    top = df[df.method == "gAP top-k"].iloc[0]
    assert top["accuracy"] == full_acc and top["match_rate"] == 1.0 and top["kept_fraction"] == 1.0
    rnd = df[df.method == "random"].iloc[0]
    assert rnd["match_rate"] == 1.0  # same counts = all channels
    assert df[df.method == "full model"]["accuracy"].item() == full_acc
    assert count_hooks(model) == 0


def test_surrogate_with_no_channels_predicts_the_head_bias():
    model, x = make(TinyVGG), image(batch=4)
    with torch.no_grad():
        model.head[2].bias.copy_(torch.tensor([0.0, 0.0, 3.0, 1.0, 0.0]))
        full = model(x).argmax(1)
    labels = torch.tensor([2, 0, 2, 1])
    # k = 0: every channel of every stage is zeroed, so the logits are the head's bias and the prediction is 2
    df = sparse_surrogate_curve(model, x, labels, ks=[0], random_control=False)
    row = df[df.method == "gAP top-k"].iloc[0]
    assert row["accuracy"] == 0.5 and row["match_rate"] == float((full == 2).double().mean())
    assert row["kept_fraction"] == 0.0 and count_hooks(model) == 0


def test_surrogate_masks_one_layer_is_top_k_of_the_class_score():
    model, x = make(TinyVGG), image(batch=3)
    masks = surrogate_keep_masks(model, x, 2, layers=["stages.stage3"])
    with torch.no_grad():
        pred = model(x).argmax(1)
    alpha = GAP(model).attribute(x, target=pred, layer="stages.stage3").contributions
    want = torch.zeros_like(masks["stages.stage3"]).scatter_(1, alpha.topk(2, 1).indices, True)
    assert torch.equal(masks["stages.stage3"], want)
    tree = surrogate_keep_masks(model, x, 1, layers=STAGES)  # top-1 chain: one channel per stage
    assert all(m.sum(1).tolist() == [1, 1, 1] for m in tree.values())
    assert count_hooks(model) == 0


def test_bad_input_and_a_raising_layer_leave_no_hooks():
    model, x = make(TinyVGG), image(batch=2)
    model.stages["stage3"].add_module("boom", Boom())
    with pytest.raises(ValueError, match="labels"):
        stage_pair_contributions(model, x, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="target='label' needs labels"):
        stage_pair_contributions(model, x, target="label")
    with pytest.raises(ValueError, match="baselines"):
        stage_pair_contributions(model, x, baselines=("median",))
    with pytest.raises(ValueError, match="Invalid layer"):
        sparse_surrogate_curve(model, x, torch.tensor([0, 1]), ks=[1], layers=["stages.nope"])
    with pytest.raises(ValueError, match="k must be"):
        surrogate_keep_masks(model, x, -1)
    model.stages["stage3"].boom.armed = True
    for fn in (lambda: stage_pair_contributions(model, x),
               lambda: sparse_surrogate_curve(model, x, torch.tensor([0, 1]), ks=[1]),
               lambda: time_gap_vs_ground_truth(model, x[:1], repeat=1),
               lambda: ground_truth_batch(model, x, [0, 1], "stages.stage2")):
        with pytest.raises(RuntimeError, match="boom"):
            fn()
        assert count_hooks(model) == 0
    assert not model.training and all(p.requires_grad for p in model.parameters())


def test_single_conv_pairs_count_the_convs_between_stages():
    from xailib.gap.sanity import single_conv_pairs
    from xailib.models import build_model

    # shallow zoo VGG: stages of 1, 1, 2, 2, 2 convs -> only S2 -> S1 crosses a single conv
    assert single_conv_pairs(build_model("vgg", "conceptworld")) == ["S2->S1"]
    assert single_conv_pairs(build_model("resnet", "conceptworld")) == []  # two convs per block
    assert single_conv_pairs(build_model("inception", "conceptworld")) == []  # parallel branches
    # AlexNet: one conv per stage
    assert single_conv_pairs(build_model("alexnet", "conceptworld")) == ["S5->S4", "S4->S3", "S3->S2", "S2->S1"]
