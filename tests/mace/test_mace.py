"""MACE (Kumar et al.): the losses by hand and against literal loops, the tap point, training that leaves the base
model untouched, explanations for any class from one pass, pruning by S2's rules, and the errors of bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from xailib.layers import count_hooks
from xailib.mace.explain import explain, prototypes
from xailib.mace.losses import dense_loss, output_loss, relevance_loss, triplet_loss, triplet_loss_reference
from xailib.mace.model import MACE, Tapped, find_tap_point, tap
from xailib.mace.pruning import RULES, prune_concepts
from xailib.mace.training import balanced_batches, mace_loss, train_mace


@pytest.fixture(scope="module")
def zoo(vgg):
    """The conftest's untrained zoo VGG for Fashion-MNIST (non-trivial BatchNorm statistics, eval mode)."""
    return vgg


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(30, 1, 28, 28, generator=g)
    y = torch.arange(10).repeat(3)            # 3 images of each of the 10 classes
    return x, y


def _state(m):
    return {k: v.clone() for k, v in m.state_dict().items()}, [p.requires_grad for p in m.parameters()], m.training


# ---- losses ---------------------------------------------------------------------------------------------------


def test_triplet_loss_by_hand():
    # B = 2 images, C = 2 concepts, Q = 2; see the derivation in each line
    e = torch.tensor([[[1.0, 0.0], [0.0, 1.0]],      # image 0: concept 0 = (1,0), concept 1 = (0,1)
                      [[0.0, 1.0], [0.0, 1.0]]], dtype=torch.float64)  # image 1: both (0,1)
    # anchor (0,0): d_ap = 2, its negative (0,1) at 2 is not farther -> the farthest, 2: 2 - 2 + 1 = 1
    # anchor (1,0): d_ap = 2, negative at 0: 2 - 0 + 1 = 3
    # anchor (0,1): d_ap = 0, negative at 2 is farther: max(0 - 2 + 1, 0) = 0
    # anchor (1,1): d_ap = 0, negative at 0 is not farther -> 0: 0 - 0 + 1 = 1
    assert float(triplet_loss(e)) == pytest.approx(5.0, abs=1e-12)
    assert triplet_loss_reference(e) == pytest.approx(5.0, abs=1e-12)


def test_triplet_loss_equals_the_literal_loops_with_pruned_concepts():
    g = torch.Generator().manual_seed(0)
    e = torch.nn.functional.normalize(torch.randn(5, 4, 3, generator=g, dtype=torch.float64), dim=-1)
    assert float(triplet_loss(e)) == pytest.approx(triplet_loss_reference(e), abs=1e-10)
    active = torch.tensor([True, False, True, True])
    assert float(triplet_loss(e, active)) == pytest.approx(triplet_loss_reference(e, active), abs=1e-10)


def test_triplet_loss_explains_what_it_needs():
    with pytest.raises(ValueError, match="at least 2 images"):
        triplet_loss(torch.randn(1, 3, 4))
    with pytest.raises(ValueError, match="2 active concepts"):
        triplet_loss(torch.randn(3, 2, 4), torch.tensor([True, False]))


def test_relevance_dense_and_output_losses_by_hand():
    logit, f = torch.zeros(1, 1), torch.tensor([[0.2]])
    assert float(relevance_loss(logit, f)) == pytest.approx(math.log(2), abs=1e-6)          # bce at sigma = 0.5
    assert float(relevance_loss(logit, f, "eq2")) == pytest.approx(0.2 * math.log(2), abs=1e-6)
    with pytest.raises(ValueError, match="bce"):
        relevance_loss(logit, f, "kl")
    assert float(dense_loss(torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 0.0]]))) == 5.0
    # KL((.5, .5) || (.75, .25)) = .5 log(.5/.75) + .5 log(.5/.25)
    kl = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(2)
    assert float(output_loss(torch.zeros(1, 2), torch.tensor([[math.log(3), 0.0]]))) == pytest.approx(kl, abs=1e-6)
    assert float(output_loss(torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0, 2.0]]))) == pytest.approx(0, abs=1e-7)


# ---- tap point and the unit -------------------------------------------------------------------------------------


def test_tap_point_of_the_zoo_and_of_torchvision_resnet(zoo, data):
    point = find_tap_point(zoo)
    assert (point.layer, point.dense) == ("features.stage5", "head.fc1")
    t = tap(zoo, point, data[0][:4], check_tail=True)          # the tail turns z into the model's scores
    assert t.x.dim() == 4 and t.z.shape == (4, 128) and t.logits.shape == (4, 10)
    from torchvision.models import resnet18
    r = resnet18(num_classes=5).eval()
    p = find_tap_point(r, "layer4")
    assert p.dense == "fc" and isinstance(p.tail, nn.Identity)
    tap(r, p, torch.rand(2, 3, 64, 64), check_tail=True)
    from torchvision.models import vgg11
    v = vgg11(num_classes=5).eval()                              # dense layers in the classifier Sequential
    p = find_tap_point(v, "features")
    assert p.dense == "classifier.0" and len(p.tail) == 6
    t = tap(v, p, torch.rand(2, 3, 64, 64), check_tail=True)
    assert t.x.shape == (2, 512, 2, 2) and t.z.shape == (2, 4096)


def test_bad_tap_points_and_sizes_get_clear_errors(zoo, data):
    no_dense = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(ValueError, match="no dense"):
        find_tap_point(no_dense, "0")
    with pytest.raises(ValueError, match="4-D"):
        tap(zoo, find_tap_point(zoo, "head.flatten"), data[0][:2])
    with pytest.raises(ValueError, match="C"):
        MACE(8, (2, 2), 10, 16, n_concepts=0)
    with pytest.raises(ValueError, match="Q"):
        MACE(8, (2, 2), 10, 16, embedding_dim=-1)
    assert count_hooks(zoo) == 0


def test_mace_shapes_and_relevance_definition(zoo, data):
    point = find_tap_point(zoo)
    mace = MACE.for_model(zoo, point, data[0], n_concepts=3, embedding_dim=4)
    out = mace(tap(zoo, point, data[0][:2]).x)
    assert out["maps"].shape[:3] == (2, 10, 3) and (out["maps"] >= 0).all()
    e = out["embeddings"]
    torch.testing.assert_close(e.norm(dim=-1), torch.ones(2, 10, 3))
    # r_jk = theta^R_jk . e_jk, and the sigmoid's argument is their sum plus the bias
    torch.testing.assert_close(out["relevance"][1, 4, 2], (mace.rel_weight[4, 2] * e[1, 4, 2]).sum())
    torch.testing.assert_close(out["logit"][0, 7], out["relevance"][0, 7].sum() + mace.rel_bias[7])
    assert out["z_tilde"].shape == (2, 128)


# ---- training ---------------------------------------------------------------------------------------------------


def test_training_lowers_the_loss_and_leaves_the_base_model_untouched(zoo, data):
    before = _state(zoo)
    mace, point, hist = train_mace(zoo, *data, n_concepts=3, embedding_dim=4, epochs=6, lr=1e-2, per_class=2,
                                   progress=False)
    after = _state(zoo)
    assert all(torch.equal(before[0][k], after[0][k]) for k in before[0])       # parameters and BN statistics
    assert before[1] == after[1] and before[2] == after[2] and count_hooks(zoo) == 0
    assert hist["loss_total"].notna().all() and hist["loss_total"].iloc[-1] < hist["loss_total"].iloc[0]
    assert list(hist.columns) == ["epoch", "loss_E", "loss_R", "loss_D", "loss_O", "loss_total"]


def test_ablation_leaves_terms_out_and_a_missing_class_is_explained(zoo, data):
    point = find_tap_point(zoo)
    mace = MACE.for_model(zoo, point, data[0], n_concepts=3, embedding_dim=4)
    t = tap(zoo, point, data[0])
    terms = mace_loss(mace, point, t, data[1], losses=("E", "R", "D"))
    assert float(terms["O"].detach()) == 0 and float(terms["D"].detach()) > 0
    keep = data[1] != 3                                          # no image of class 3
    with pytest.raises(ValueError, match=r"classes \[3\]"):
        mace_loss(mace, point, Tapped(t.x[keep], t.z[keep], t.logits[keep]), data[1][keep])
    with pytest.raises(ValueError, match="fewer than 2"):
        balanced_batches(torch.tensor([0, 0, 1]), 2, 2, 0)
    batches = balanced_batches(data[1], 10, 2, 0)
    assert all(torch.bincount(data[1][b], minlength=10).tolist() == [2] * 10 for b in batches)


# ---- explanations and pruning -------------------------------------------------------------------------------------


def test_explanations_for_any_class_from_one_forward_pass(zoo, data):
    point = find_tap_point(zoo)
    mace = MACE.for_model(zoo, point, data[0], n_concepts=3, embedding_dim=4)
    calls = []
    h = zoo.register_forward_hook(lambda *a: calls.append(1))
    try:
        ex = explain(zoo, mace, point, data[0][:4])
    finally:
        h.remove()
    assert len(calls) == 1                                       # all K classes from one pass of the base model
    assert ex.maps.shape[:3] == (4, 10, 3) and ex.relevance.shape == (4, 10, 3)
    big = ex.upsampled()                                         # resized to the image, as Sec. 3.1 shows them
    assert big.shape == (4, 10, 3, 28, 28) and (big >= 0).all()
    h, w = ex.maps.shape[-2:]                                    # bilinear, as F.interpolate resizes
    ref = F.interpolate(ex.maps.reshape(4, 30, h, w), size=(28, 28), mode="bilinear", align_corners=False)
    torch.testing.assert_close(big, ref.reshape(4, 10, 3, 28, 28), atol=1e-6, rtol=0)
    torch.testing.assert_close(ex.upsampled([6]), big[:, [6]])
    with pytest.raises(ValueError, match="not explained"):
        explain(zoo, mace, point, data[0][:1], classes=[1]).upsampled([2])
    second = explain(zoo, mace, point, data[0][:4], classes=[7, 2])
    torch.testing.assert_close(second.relevance, ex.relevance[:, [7, 2]])
    with pytest.raises(ValueError, match="out of range"):
        explain(zoo, mace, point, data[0][:1], classes=[10])
    idx = prototypes(ex.relevance, top=2)
    assert idx.shape == (10, 3, 2) and int(idx[5, 1, 0]) == int(ex.relevance[:, 5, 1].argmax())
    assert count_hooks(zoo) == 0


def test_pruning_rules_fire_on_their_thresholds(zoo, data):
    point = find_tap_point(zoo)
    mace = MACE.for_model(zoo, point, data[0], n_concepts=3, embedding_dim=4)
    table = prune_concepts(zoo, mace, point, *data, T=3, S=3, positive_share=1.0, mask_share=1.0, own_positive=0.0,
                           apply=False)
    # thresholds only a map covering the whole image can cross (rule 3 at 100%)
    assert not table[["top_t", "positive_everywhere", "negative_on_class"]].any().any()
    assert (table["masks_everything"] == (table["mask_share"] >= 1.0)).all()
    assert set(table.columns) >= {"class", "concept", *RULES, "pruned", "kept_minimum"} and len(table) == 30
    table = prune_concepts(zoo, mace, point, *data, T=3, S=3, positive_share=0.0, mask_share=1.0, own_positive=0.0)
    fired = table["positive_everywhere"] == (table["positive_share"] > 0)
    assert fired.all()
    kept = (~table["pruned"]).groupby(table["class"]).sum()
    assert (kept >= 2).all()                                     # at least min_keep = 2 concepts a class stay
    assert mace.active.sum() == int((~table["pruned"]).sum())


def test_explain_restores_train_mode_and_batchnorm_statistics(zoo, data):
    point = find_tap_point(zoo)
    mace = MACE.for_model(zoo, point, data[0], n_concepts=3, embedding_dim=4)
    zoo.train()
    mace.train()
    try:
        before = _state(zoo)
        ex = explain(zoo, mace, point, data[0][:4])
        assert zoo.training and mace.training                   # modes restored
        after = _state(zoo)
        assert all(torch.equal(before[0][k], after[0][k]) for k in before[0])   # BN statistics not updated
    finally:
        zoo.eval()
    torch.testing.assert_close(ex.relevance, explain(zoo, mace.eval(), point, data[0][:4]).relevance)


def test_block_structure_by_hand():
    from xailib.mace.experiments import block_structure, embedding_distances
    # 2 images x 2 concepts: concept 0 is (1, 0) in both images, concept 1 is (0, 1)
    e = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]]])
    d = embedding_distances(e)
    assert d.shape == (4, 4) and float(d[0, 1]) == 0.0 and float(d[0, 2]) == pytest.approx(math.sqrt(2))
    table, summary = block_structure(e, n_boot=100)
    assert table["within"].tolist() == [0.0, 0.0]
    assert table["between"].tolist() == pytest.approx([math.sqrt(2)] * 2)
    assert summary["difference"] == pytest.approx(math.sqrt(2)) and summary["n_images"] == 2


def test_sizing_and_tapping_a_model_in_train_mode_leave_its_batchnorm_statistics(zoo, data):
    point = find_tap_point(zoo)
    zoo.train()
    try:
        before = _state(zoo)
        MACE.for_model(zoo, point, data[0], n_concepts=2, embedding_dim=3)
        tap(zoo, point, data[0][:4])
        after = _state(zoo)
        assert zoo.training and all(torch.equal(before[0][k], after[0][k]) for k in before[0])
    finally:
        zoo.eval()


# ---- a unit for some of the model's outputs (classes=) ----------------------------------------------------------


def test_a_unit_for_two_outputs_maps_labels_to_rows_and_explains_output_indices(zoo, data):
    from xailib.mace.experiments import concept_embeddings
    from xailib.mace.faithfulness import predicted_rows
    from xailib.mace.training import LOSSES

    x, y = data
    keep = (y == 2) | (y == 5)
    mace, point, hist = train_mace(zoo, x[keep], y[keep], classes=[2, 5], n_concepts=3, embedding_dim=4, epochs=2,
                                   per_class=2, progress=False)
    assert mace.K == 2 and mace.classes.tolist() == [2, 5] and len(hist) == 2 and hist["loss_total"].notna().all()
    assert mace.rows(torch.tensor([5, 2, 5])).tolist() == [1, 0, 1]
    assert mace.maps(tap(zoo, point, x[:1]).x).shape[1] == 2               # K = 2 rows, not the model's 10
    with pytest.raises(ValueError, match=r"\[3\] not among this MACE unit's classes \[2, 5\]"):
        train_mace(zoo, x[keep | (y == 3)], y[keep | (y == 3)], classes=[2, 5], n_concepts=3, embedding_dim=4,
                   epochs=1, per_class=2, progress=False)
    # Eq. (2) against the model's probabilities of outputs 2 and 5 (softmax over all 10); L^O over all 10 outputs
    t = tap(zoo, point, x[keep])
    terms = mace_loss(mace, point, t, y[keep])
    out = mace(t.x)
    probs = torch.softmax(t.logits, dim=1)
    torch.testing.assert_close(terms["R"], relevance_loss(out["logit"], probs[:, [2, 5]]))
    torch.testing.assert_close(terms["O"], output_loss(point.tail(out["z_tilde"]), t.logits))
    rows = torch.tensor([0 if int(v) == 2 else 1 for v in y[keep]])
    e_term = sum(triplet_loss(out["embeddings"][rows == k, k]) for k in range(2))
    torch.testing.assert_close(terms["E"], e_term)
    torch.testing.assert_close(terms["total"], sum(terms[k] for k in LOSSES))
    # explanations name output indices; a row is asked for by its output
    ex = explain(zoo, mace, point, x[:4])
    assert ex.classes == [2, 5] and ex.maps.shape[:3] == (4, 2, 3) and ex.probs.shape == (4, 10)
    only5 = explain(zoo, mace, point, x[:4], classes=[5])
    assert only5.classes == [5]
    torch.testing.assert_close(only5.relevance, ex.relevance[:, [1]])
    torch.testing.assert_close(ex.upsampled([5]), ex.upsampled()[:, [1]])
    with pytest.raises(ValueError, match="not among"):
        explain(zoo, mace, point, x[:1], classes=[3])
    e5 = mace(tap(zoo, point, x[:4]).x)["embeddings"][:, 1]
    torch.testing.assert_close(concept_embeddings(zoo, mace, point, x[:4], 5), e5)
    # the predicted class: the more probable of outputs 2 and 5, by hand
    row, pred = predicted_rows(ex)
    by_hand = (ex.probs[:, 5] > ex.probs[:, 2]).long()
    assert row.tolist() == by_hand.tolist() and pred.tolist() == [[2, 5][int(r)] for r in by_hand]
    table = prune_concepts(zoo, mace, point, x[keep], y[keep], T=3, S=3, apply=False)
    assert table["class"].tolist() == [2, 2, 2, 5, 5, 5]                   # output indices, row by row
    assert count_hooks(zoo) == 0


def test_classes_none_gives_the_old_results(zoo, data):
    """The default (a row per output) equals classes=range(K) and the loss of before the option, term by term."""
    x, y = data
    kw = dict(n_concepts=3, embedding_dim=4, epochs=2, lr=1e-2, per_class=2, progress=False, seed=1)
    a, point, ha = train_mace(zoo, x, y, **kw)
    b, _, hb = train_mace(zoo, x, y, classes=list(range(10)), **kw)
    assert a.classes.tolist() == list(range(10)) and ha.equals(hb)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    t = tap(zoo, point, x)
    terms = mace_loss(a, point, t, y)
    out = a(t.x)                                                         # the loss as it was: rows are outputs
    old_e = sum(triplet_loss(out["embeddings"][y == k, k], a.active[k]) for k in range(10))
    torch.testing.assert_close(terms["E"], old_e)
    torch.testing.assert_close(terms["R"], relevance_loss(out["logit"], torch.softmax(t.logits, dim=1)))
    ex = explain(zoo, a, point, x[:6])
    from xailib.mace.faithfulness import predicted_rows
    row, pred = predicted_rows(ex)
    assert ex.classes == list(range(10)) and torch.equal(row, ex.probs.argmax(1)) and torch.equal(pred, row)
    with pytest.raises(ValueError, match="out of range"):
        explain(zoo, a, point, x[:1], classes=[10])


def test_bad_classes_get_clear_errors(zoo, data):
    point = find_tap_point(zoo)
    with pytest.raises(ValueError, match="distinct"):
        MACE(8, (2, 2), 2, 16, classes=[3, 3])
    with pytest.raises(ValueError, match="one output per row"):
        MACE(8, (2, 2), 3, 16, classes=[1, 2])
    with pytest.raises(ValueError, match="ints >= 0"):
        MACE(8, (2, 2), 1, 16, classes=[-1])
    with pytest.raises(ValueError, match=r"not outputs of the model, which has 10"):
        MACE.for_model(zoo, point, data[0], classes=[4, 12])
    mace = MACE.for_model(zoo, point, data[0], classes=[4, 7], n_concepts=2, embedding_dim=3)
    assert mace.K == 2 and "outputs [4, 7]" in repr(mace)
    with pytest.raises(ValueError, match="differ from the given unit's classes"):
        train_mace(zoo, data[0][:6], torch.tensor([4, 4, 4, 7, 7, 7]), mace=mace, classes=[4, 8], epochs=1,
                   per_class=2, progress=False)


def test_training_splits_on_a_folder_map_folder_classes_to_outputs_or_let_predictions_stand_in(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from xailib.data.sampling import folder_halves
    from xailib.mace.experiments import training_splits
    from xailib.models.subjects import Subjects

    rng = np.random.default_rng(0)
    for wnid, count in (("n0001", 6), ("n0002", 6), ("n0003", 4)):
        (tmp_path / wnid).mkdir()
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(tmp_path / wnid / f"{i}.JPEG")
    subjects = Subjects("resnet18", "", tmp_path, device="cpu", image_size=32, verbose=False)
    (x1, y1), (x2, y2) = folder_halves(subjects.folder, 3, 0, n_held=2)
    assert y1.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2] and y2.tolist() == [0, 0, 1, 1, 2]   # n0003: 3 + 1
    assert "1 of 3 classes hold fewer than 3 + 2 = 5 images" in capsys.readouterr().out
    train, held, classes, names = training_splits(subjects, subjects.net, "", 2, 2, outputs="7,3,9")
    assert classes == [3, 7, 9] and len(names) == 1000
    assert train[1].tolist() == [7, 7, 3, 3, 9, 9] and held[1].tolist() == [7, 7, 3, 3, 9, 9]
    with pytest.raises(ValueError, match="one distinct output of the model"):
        training_splits(subjects, subjects.net, "", 2, 2, outputs="7,3")
    train, held, classes, _ = training_splits(subjects, subjects.net, "", 2, 2)   # the predictions stand in
    printed = capsys.readouterr().out
    assert "the folder's 3 classes are not the model's 1000 outputs" in printed
    assert set(train[1].tolist()) == set(held[1].tolist()) == set(classes)
    assert all(int((train[1] == c).sum()) >= 2 and int((held[1] == c).sum()) >= 2 for c in classes)


def test_tap_point_of_a_wrapped_torchvision_resnet18_at_64_pixels():
    from xailib.models import load_model

    net = load_model("resnet18", device="cpu", weights=None)               # random weights, the stand-in's model
    point = find_tap_point(net)                                          # its last stage
    assert (point.layer, point.dense) == ("layer4", "fc") and isinstance(point.tail, nn.Identity)
    t = tap(net, point, torch.rand(2, 3, 64, 64), check_tail=True)
    assert t.x.shape == (2, 512, 2, 2) and t.z.shape == (2, 1000) and t.logits.shape == (2, 1000)
    mace = MACE.for_model(net, point, torch.rand(2, 3, 64, 64), classes=[0, 1, 2], n_concepts=2, embedding_dim=3)
    assert (mace.K, mace.D, mace.H, mace.W, mace.L) == (3, 512, 2, 2, 1000)
    assert count_hooks(net) == 0
