"""TCAV from captum (xailib.baselines.tcav): a planted concept, the literal reference, significance, hygiene."""

import os

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from tiny_models import Boom, TinyResNet, make
from xailib.baselines.tcav import (COLUMNS, IMPORTANCE_COLUMNS, SeededClassifier, tcav_class_table, tcav_importance,
                                   tcav_scores, tcav_scores_reference)
from xailib.data.concepts import ConceptSet
from xailib.layers import count_hooks

S = 16  # image side


class RedNet(nn.Module):
    """conv 1x1 (identity, bias -0.5) -> in-place ReLU -> mean over positions -> linear.

    ``h_0 = mean_xy relu(red - 0.5)``, ``h_1 = mean_xy relu(blue - 0.5)``. At ``conv`` the class-0 gradient is
    ``1[red > 0.5] / (H W)`` on the red channel and 0 elsewhere, so ``S(x) = sum_{red(x) > 0.5} v_red / (H W)``:
    positive for every image when the CAV points to more red, and of either sign for a random direction.
    """

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(3, 2, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            self.conv.bias.fill_(-0.5)
            self.fc.weight.copy_(torch.tensor([[1.0, 0, 0], [0, 0, 1.0]]))
        self.eval()

    def forward(self, x):
        return self.fc(self.pool(self.relu(self.conv(x))).flatten(1))


def _data(n=20, n_random=6, n_images=30):
    """Red and blue concept sets, ``n_random`` uniform-noise random sets and class images (seed 0)."""
    g = torch.Generator().manual_seed(0)

    def noise(k):
        return torch.rand(k, 3, S, S, generator=g)

    red = noise(n)
    red[:, 0] = 0.7 + 0.3 * red[:, 0]
    red[:, 1:] *= 0.3
    blue = noise(n)  # red channel distributed as in the random sets: irrelevant to class 0
    blue[:, 2] = 0.7 + 0.3 * blue[:, 2]
    concepts = [ConceptSet.from_tensors("red", red), ConceptSet.from_tensors("blue", blue)]
    randoms = [ConceptSet.from_tensors(f"random_{i}", noise(n)) for i in range(n_random)]
    return concepts, randoms, noise(n_images)


@pytest.fixture(scope="module")
def data():
    return _data()


@pytest.fixture(scope="module")
def red_table(data):
    concepts, randoms, images = data
    return tcav_scores(RedNet(), concepts, randoms, images, 0, ["conv", "pool"], seed=0)


def _row(table, concept, layer="conv", k=None):
    sel = (table.concept == concept) & (table.layer == layer)
    if k is not None:
        sel &= table["class"] == k
    (i,) = np.flatnonzero(sel.to_numpy())
    return table.iloc[i]


def test_planted_concept_is_found_and_irrelevant_one_is_not(red_table):
    t = red_table
    assert list(t.columns) == COLUMNS and len(t) == 4
    red, blue = _row(t, "red"), _row(t, "blue")
    # every image's class-0 logit rises towards red, in every random run
    assert red.tcav_score == 1.0 and red.tcav_score_std == 0.0 and red.magnitude == 1.0
    assert red.significant and red.p_value < 1e-3
    assert not blue.significant and blue.p_value > 0.05
    assert 0.0 < blue.tcav_score < 1.0
    # the null: both rows of every random pair, so its mean is exactly 1/2 (no derivative is exactly 0 here)
    assert red.random_score == pytest.approx(0.5, abs=1e-12) and red.n_null == 6 * 5 and red.n_runs == 6
    assert red.n_images == 30 and red["class"] == 0 and red.p_threshold == 0.05
    assert red.cav_accuracy == 1.0  # red vs noise is linearly separable
    # at the pooled layer the gradient is (1, 0, 0) for every image: red still scores 1
    assert _row(t, "red", "pool").tcav_score == 1.0


def test_matches_captum_interpret_reference(data, red_table):
    concepts, randoms, images = data
    ref = tcav_scores_reference(RedNet(), concepts, randoms, images, 0, ["conv", "pool"], seed=0)
    merged = red_table.merge(ref, on=["class", "layer", "concept"], suffixes=("", "_ref"))
    assert len(merged) == 4
    for col in ("tcav_score", "tcav_score_std", "random_score", "p_value"):
        np.testing.assert_allclose(merged[col], merged[f"{col}_ref"], rtol=1e-6, atol=1e-7, err_msg=col)  # captum: float32
    assert (merged.significant == merged.significant_ref).all()


def test_reference_on_a_residual_model_with_inplace_relus():
    """Residual blocks with ``out += identity`` and in-place ReLUs, a double model fed float images."""
    concepts, randoms, images = _data(n=8, n_random=3, n_images=10)
    model = make(TinyResNet)
    layers = ["stages.s1", "stages.s2.relu"]
    fast = tcav_scores(model, concepts, randoms, images, 2, layers, batch_size=4, seed=3)
    ref = tcav_scores_reference(model, concepts, randoms, images, 2, layers, batch_size=4, seed=3)
    np.testing.assert_allclose(fast.tcav_score.to_numpy(), ref.tcav_score.to_numpy(), atol=1e-7)  # captum: float32
    np.testing.assert_allclose(fast.p_value.to_numpy(), ref.p_value.to_numpy(), rtol=1e-5, atol=1e-7)


def test_batched_gradients_equal_one_batch(data):
    concepts, randoms, images = data
    a = tcav_scores(RedNet(), concepts, randoms[:3], images, 0, "conv", batch_size=64, seed=1)
    b = tcav_scores(RedNet(), concepts, randoms[:3], images, 0, "conv", batch_size=7, seed=1)
    pd.testing.assert_frame_equal(a, b)


def test_same_seed_same_table_and_seed_matters(data):
    concepts, randoms, images = data
    a = tcav_scores(RedNet(), concepts, randoms[:3], images, 0, "conv", seed=5)
    b = tcav_scores(RedNet(), concepts, randoms[:3], images, 0, "conv", seed=5)
    c = tcav_scores(RedNet(), concepts, randoms[:3], images, 0, "conv", seed=6)
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a.random_score_std, c.random_score_std) or not np.allclose(a.tcav_score, c.tcav_score)


def test_n_random_uses_the_first_sets(data):
    concepts, randoms, images = data
    a = tcav_scores(RedNet(), concepts, randoms, images, 0, "conv", n_random=3, seed=0)
    b = tcav_scores(RedNet(), concepts, randoms[:3], images, 0, "conv", seed=0)
    pd.testing.assert_frame_equal(a, b)
    assert (a.n_runs == 3).all() and (a.n_null == 6).all()


def test_bonferroni_divides_alpha(data, red_table):
    concepts, randoms, images = data
    t = tcav_scores(RedNet(), concepts, randoms, images, 0, ["conv", "pool"], bonferroni=True, alpha=0.04)
    assert (t.p_threshold == 0.01).all()  # 2 concepts x 2 layers
    np.testing.assert_array_equal(t.p_value, red_table.p_value)
    assert (t.significant == (t.p_value < 0.01)).all()


def test_class_table_rows_equal_per_class_calls(data, red_table):
    concepts, randoms, images = data
    x = torch.cat([images, images.flip(0)])
    labels = torch.tensor([0] * 30 + [1] * 30)
    table = tcav_class_table(RedNet(), concepts, randoms, x, labels, [1, 0], ["conv", "pool"], seed=0)
    assert list(table["class"].unique()) == [1, 0] and len(table) == 8
    pd.testing.assert_frame_equal(table[table["class"] == 0].reset_index(drop=True), red_table)
    # class 1 reads blue: blue is its concept; red images are *less* blue than noise, so red scores 0
    assert _row(table, "blue", k=1).tcav_score == 1.0 and _row(table, "blue", k=1).significant
    assert _row(table, "red", k=1).tcav_score == 0.0 and _row(table, "red", k=1).significant
    ranks = tcav_importance(table)
    assert list(ranks.columns) == IMPORTANCE_COLUMNS
    top = ranks[ranks["rank"] == 1].set_index("class").concept
    assert top[0] == "red" and top[1] == "blue"


def test_importance_by_hand():
    table = pd.DataFrame({
        "class": [3, 3, 3, 3, 4, 4],
        "layer": ["a", "b", "a", "b", "a", "b"],
        "concept": ["x", "x", "y", "y", "x", "x"],
        "tcav_score": [0.9, 0.7, 0.8, 0.6, 0.2, 0.4],
        "significant": [True, False, True, True, False, False],
    })
    out = tcav_importance(table)
    assert list(out.columns) == IMPORTANCE_COLUMNS
    rows = {(r["class"], r.concept): r for _, r in out.iterrows()}
    assert rows[(3, "x")].importance == pytest.approx(0.45) and rows[(3, "x")].importance_raw == pytest.approx(0.8)
    assert rows[(3, "y")].importance == pytest.approx(0.7) and rows[(3, "y")].n_significant == 2
    assert rows[(3, "y")]["rank"] == 1 and rows[(3, "x")]["rank"] == 2  # the masked mean ranks, not the raw one
    assert rows[(4, "x")].importance == 0.0 and rows[(4, "x")].importance_raw == pytest.approx(0.3)
    assert rows[(4, "x")].n_layers == 2 and rows[(4, "x")]["rank"] == 1
    with pytest.raises(ValueError, match="lacks column"):
        tcav_importance(table.drop(columns="significant"))


def test_seeded_classifier_is_deterministic():
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(20, 5, generator=g) + 2, torch.randn(20, 5, generator=g) - 2])
    y = torch.tensor([0] * 20 + [1] * 20)

    def fit(seed):
        clf = SeededClassifier(seed)
        stats = clf.train_and_eval(DataLoader(TensorDataset(x, y), batch_size=8))
        return clf.weights(), stats["accs"]

    (w1, a1), (w2, a2) = fit(0), fit(0)
    assert torch.equal(w1, w2) and float(a1) == float(a2) == 1.0
    assert w1.shape == (2, 5) and torch.allclose(w1[0], -w1[1])


# --------------------------------------------------------------------------------------------------
# Validation and hygiene
# --------------------------------------------------------------------------------------------------


def test_errors(data):
    concepts, randoms, images = data
    m = RedNet()
    with pytest.raises(ValueError, match="concept_sets holds 0"):
        tcav_scores(m, [], randoms, images, 0, "conv")
    with pytest.raises(ValueError, match="at least 2"):
        tcav_scores(m, concepts, randoms[:1], images, 0, "conv")
    with pytest.raises(TypeError, match="ConceptSet"):
        tcav_scores(m, [images], randoms, images, 0, "conv")
    with pytest.raises(ValueError, match="Invalid layer 'conv2'.*Did you mean 'conv'.*Valid names"):
        tcav_scores(m, concepts, randoms, images, 0, "conv2")
    with pytest.raises(ValueError, match="outside the model's 2 classes"):
        tcav_scores(m, concepts, randoms, images, 2, "conv")
    with pytest.raises(TypeError, match="one class index"):
        tcav_scores(m, concepts, randoms, images, [0, 1], "conv")
    with pytest.raises(ValueError, match="one shape"):
        tcav_scores(m, concepts, randoms, images[:, :, :8, :8], 0, "conv")
    with pytest.raises(ValueError, match="distinct"):
        tcav_scores(m, concepts + [concepts[0]], randoms, images, 0, "conv")
    with pytest.raises(ValueError, match="n_random must be between 2"):
        tcav_scores(m, concepts, randoms, images, 0, "conv", n_random=7)
    with pytest.raises(ValueError, match="fewer than 2 images"):
        tcav_scores(m, [concepts[0].subset(1)], randoms, images, 0, "conv")
    with pytest.raises(ValueError, match="No image has label 1"):
        tcav_class_table(m, concepts, randoms, images, torch.zeros(30, dtype=torch.long), [0, 1], "conv")
    assert count_hooks(m) == 0


def test_no_hooks_left_and_model_unchanged(tmp_path, monkeypatch):
    """A BatchNorm model in train mode: run in eval mode, state bitwise unchanged, flags restored, no hooks,
    the temporary folder gone."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    concepts, randoms, images = _data(n=6, n_random=2, n_images=5)
    model = make(TinyResNet).train()
    model.head[-1].weight.requires_grad_(False)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    tcav_scores(model, concepts, randoms, images, 1, ["stages.s2", "stages.s3"])
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    assert all(m.training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert count_hooks(model) == 0
    assert os.listdir(tmp_path) == []


def test_a_layer_that_raises_leaves_no_hooks(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    concepts, randoms, images = _data(n=6, n_random=2, n_images=5)
    model = RedNet()
    boom = Boom()
    model.pool = nn.Sequential(boom, nn.AdaptiveAvgPool2d(1))
    boom.armed = True
    model.train()
    with pytest.raises(RuntimeError, match="boom"):
        tcav_scores(model, concepts, randoms, images, 0, ["conv"])
    assert count_hooks(model) == 0 and model.training and os.listdir(tmp_path) == []


def test_save_path_keeps_cavs_per_model_and_data(tmp_path, data):
    concepts, randoms, images = data
    a = tcav_scores(RedNet(), concepts, randoms[:3], images, 0, "conv", save_path=tmp_path)
    (model_dir,) = os.listdir(tmp_path / "av")
    assert model_dir.startswith("xailib-") and os.listdir(tmp_path / model_dir)  # CAVs saved beside the AVs
    b = tcav_scores(RedNet(), concepts, randoms[:3], images, 0, "conv", save_path=tmp_path)  # loaded, not retrained
    pd.testing.assert_frame_equal(a, b)
    other = RedNet()
    with torch.no_grad():
        other.conv.bias.fill_(-0.4)
    tcav_scores(other, concepts, randoms[:3], images, 0, "conv", save_path=tmp_path)
    assert len(os.listdir(tmp_path / "av")) == 2  # another model: another folder, no stale activations
