"""MACE's teaching explorer: the numbers its state shows equal a direct explanation of that image and class, pruned
concepts are hidden, prototypes equal a literal sort of the pool's relevances, any class can be shown, bad input
is refused with the valid range and leaves the state as it was, and the ipywidgets view moves the state."""

from __future__ import annotations

import copy

import pytest
import torch

from xailib.data import load_dataset
from xailib.layers import count_hooks
from xailib.mace.explain import explain, normalise_maps
from xailib.mace.explorer import (Explorer, ExplorerState, concept_table, explore, explorer_comparison, plot_view,
                                  time_steps)
from xailib.mace.training import train_mace
from xailib.models import load_model
from xailib.results import VERDICTS

NAMES = [f"c{k}" for k in range(10)]


@pytest.fixture(scope="module")
def tiny():
    """A tiny MACE (C = 3, Q = 4, one epoch) on the zoo's trained VGG for ConceptWorld (hard) and 20 of its test
    images, 2 of each class. (The untrained VGG of the conftest maps random images to nearly the same features, so
    every image would get the same relevances and a wrong order or prototype could pass unnoticed.)"""
    net = load_model("vgg-conceptworld-hard", device="cpu")
    data = load_dataset("conceptworld-hard", "test", n=20, seed=0)
    x, y = data.images, data.labels
    assert torch.bincount(y, minlength=10).tolist() == [2] * 10
    mace, point, _ = train_mace(net, x, y, epochs=1, n_concepts=3, embedding_dim=4, per_class=2, seed=0,
                                progress=False)
    return net, mace, point, x, y


@pytest.fixture(scope="module")
def pruned(tiny):
    """A copy of the tiny unit with the concept most relevant on image 0 for its predicted class pruned, and
    concept 0 of class 9 pruned too; returns ``(unit, (k, j) of the first)``."""
    net, mace, point, x, _ = tiny
    d = explain(net, mace, point, x[:1])
    k = int(d.probs[0].argmax())
    j = int(d.relevance[0, k].argmax())
    unit = copy.deepcopy(mace)
    unit.active[k, j] = False
    unit.active[9, 0] = False
    return unit, (k, j)


def _expected_concepts(r, active):
    """Literal: the kept concepts' ``(j, r_j)`` by decreasing relevance."""
    kept = [(j, float(r[j])) for j in range(len(r)) if active[j]]
    return sorted(kept, key=lambda t: -t[1])


def test_what_the_state_shows_equals_a_direct_explain_of_that_image(tiny, pruned):
    net, _, point, x, y = tiny
    mace, (k0, j0) = pruned
    state = ExplorerState(net, mace, point, x, y, class_names=NAMES, top=2, batch_size=7)  # batches of 7, 7, 6
    for i in (0, 5, 19):
        state.select_image(i)
        d = explain(net, mace, point, x[i : i + 1], upsample=True)  # one image alone, every class
        assert state.probs.tolist() == pytest.approx(d.probs[0].tolist(), abs=1e-6)
        assert state.predicted_class == int(d.probs[0].argmax()) == state.target
        assert state.ranking == d.probs[0].argsort(descending=True).tolist()
        assert state.label == int(y[i])
        for k in range(10):
            state.select_class(k)
            expected = _expected_concepts(d.relevance[0, k], d.active[k])
            assert [j for j, _ in state.concepts] == [j for j, _ in expected]
            assert [r for _, r in state.concepts] == pytest.approx([r for _, r in expected], abs=1e-5)
            assert state.estimate == pytest.approx(float(d.estimate[0, k]), abs=1e-6)
            for j, _ in expected:
                assert torch.allclose(state.concept_map(j), d.maps[0, k, j], atol=1e-5)
                assert state.concept_map(j).shape == (64, 64)
    state.select_image(0)
    assert state.target == k0 and j0 in state.pruned and j0 not in [j for j, _ in state.concepts]
    assert len(state.concepts) == 2 and state.active_concepts(9) == [1, 2]
    assert count_hooks(net) == 0 and not net.training


def test_prototypes_are_the_pool_images_of_highest_relevance_by_a_literal_sort(tiny):
    net, mace, point, x, y = tiny
    pool, pool_y = x[10:16], y[10:16]
    state = ExplorerState(net, mace, point, x[:3], y[:3], prototypes_from=(pool, pool_y), top=2)
    # relevance of each pool image alone, then sorted by hand per (class, concept)
    r = torch.stack([explain(net, mace, point, pool[m : m + 1]).relevance[0] for m in range(6)])  # [6, K, C]
    for k in (0, 3, 7):
        state.select_class(k)
        for j in range(3):
            by_hand = sorted(range(6), key=lambda m: -float(r[m, k, j]))[:2]
            assert state.prototype_indices(j) == by_hand
            assert torch.equal(state.prototypes_of(j), pool[by_hand])
            assert state.prototype_relevance(j) == pytest.approx([float(r[m, k, j]) for m in by_hand], abs=1e-5)
            up = explain(net, mace, point, pool[by_hand], classes=k, upsample=True).maps[:, 0, j]
            assert torch.allclose(state.prototype_maps(j), up, atol=1e-5)
    assert state.prototype_index.shape == (10, 3, 2)
    # without a pool the explored images are the pool, explained once
    own = ExplorerState(net, mace, point, x, y, top=3)
    assert own.pool_explanation is own.explanation and own.pool_labels == y.tolist()


def test_any_class_can_be_shown_by_index_or_name_and_an_image_resets_it(tiny):
    net, mace, point, x, y = tiny
    state = ExplorerState(net, mace, point, x, y, class_names=NAMES)
    state.select_image(4)
    second = state.ranking[1]
    state.select_class(second)
    assert state.target == second != state.predicted_class and state.target_rank == 2
    assert state.class_label(second).endswith("rank 2") and state.class_label(second).startswith(NAMES[second])
    state.select_class(NAMES[state.ranking[-1]])
    assert state.target_rank == 10 and state.target_name == NAMES[state.ranking[-1]]
    kept = state.target
    state.select_image(5, keep_class=True)
    assert state.image_index == 5 and state.target == kept
    state.select_image(6)
    assert state.target == state.predicted_class


def _snapshot(state):
    return state.image_index, state.target, list(state.concepts)


def test_bad_input_says_the_valid_range_and_leaves_the_state_unchanged(tiny, pruned):
    net, _, point, x, y = tiny
    mace, (k0, j0) = pruned
    state = ExplorerState(net, mace, point, x, y, class_names=NAMES, top=2)
    before = _snapshot(state)
    for call, err, match in [
        (lambda: state.select_image(20), ValueError, r"0\.\.19"),
        (lambda: state.select_image(-1), ValueError, r"20 images"),
        (lambda: state.select_image(True), TypeError, "int"),
        (lambda: state.select_image(1.0), TypeError, "int"),
        (lambda: state.select_class(10), ValueError, r"0\.\.9"),
        (lambda: state.select_class("fox"), ValueError, "c0"),
        (lambda: state.select_class(None), TypeError, "index"),
        (lambda: state.concept_map(3), ValueError, r"0\.\.2"),
        (lambda: state.concept_map(j0), ValueError, "pruned"),
        (lambda: state.prototypes_of(j0), ValueError, "pruned"),
        (lambda: state.rank_of("fox"), ValueError, "Unknown class"),
        (lambda: state.concept_mask(state.concepts[0][0]), ValueError, "threshold"),
        (lambda: plot_view(state, classes=[11]), ValueError, r"0\.\.9"),
        (lambda: time_steps(state, [0], rank=11), ValueError, "10 classes"),
    ]:
        with pytest.raises(err, match=match):
            call()
        assert _snapshot(state) == before
    assert state.target == k0  # image 0's predicted class, whose top concept j0 is pruned
    with pytest.raises(ValueError, match="pool holds 20 images"):
        ExplorerState(net, mace, point, x, y, top=21)
    with pytest.raises(ValueError, match="3 class names"):
        ExplorerState(net, mace, point, x, y, class_names=["a", "b", "c"])
    with pytest.raises(ValueError, match="19 labels"):
        ExplorerState(net, mace, point, x, y[:19])
    with pytest.raises(TypeError, match="MACE unit"):
        ExplorerState(net, net, point, x, y)
    with pytest.raises(ValueError, match="threshold"):
        ExplorerState(net, mace, point, x, y, threshold=1.0)
    assert count_hooks(net) == 0


def test_threshold_masks_table_figure_and_timing(tiny):
    import matplotlib.pyplot as plt

    net, mace, point, x, y = tiny
    state = ExplorerState(net, mace, point, x, y, class_names=NAMES, top=2, threshold=0.5)
    state.select_image(2)
    j = state.concepts[0][0]
    assert torch.equal(state.concept_mask(j), normalise_maps(state.concept_map(j)) > 0.5)
    assert torch.equal(state.concept_mask(j, threshold=0.0), state.concept_map(j) > 0)
    table = concept_table(state)
    assert table["concept"].tolist() == [c for c, _ in state.concepts] and table["order"].tolist() == [1, 2, 3]
    assert table["relevance"].tolist() == [r for _, r in state.concepts]
    assert (table["rank"] == 1).all() and table["prototypes"][0] == " ".join(map(str, state.prototype_indices(j)))
    target = state.target
    fig = plot_view(state, classes=[state.ranking[0], state.ranking[1]], max_concepts=2)
    assert len(fig.axes) == 2 * 2 * 3 and state.target == target  # 2 classes x 2 concepts x (map + 2 prototypes)
    plt.close(fig)
    times = time_steps(state, [0, 1])
    assert len(times) == 2 and (times["concepts"] == 3).all() and state.image_index == 2 and state.target == target
    table = explorer_comparison(state, times, model_name="vgg", threads=1)
    assert set(table["verdict"]) <= set(VERDICTS) and "ms" in table["ours"].iloc[4]
    assert explorer_comparison(state)["ours"].iloc[4] == "not measured"


def test_the_widget_only_calls_the_state(tiny, pruned):
    pytest.importorskip("ipywidgets")
    net, _, point, x, y = tiny
    mace, (k0, j0) = pruned
    view = explore(net, mace, point, x, y, class_names=NAMES, top=2)
    state = view.state
    assert isinstance(view, Explorer) and state.target == k0
    assert view.card_concepts == [j for j, _ in state.concepts] and j0 not in view.card_concepts
    assert len(view.cards.children) == 2
    options = view.class_dropdown.options
    assert [k for _, k in options] == state.ranking and options[1][0].endswith("rank 2")
    view.class_dropdown.value = state.ranking[1]
    assert state.target_rank == 2 and len(view.cards.children) == len(state.concepts) == 3
    view.image_slider.value = 7
    assert state.image_index == 7 and state.target == state.predicted_class == view.class_dropdown.value
    before = _snapshot(state)
    view._act(state.select_image, 99)
    assert "out of range" in view.status.value and _snapshot(state) == before
    view._act(state.select_image, 8)
    assert view.status.value == "" and view.image_slider.value == 8
    assert "application/vnd.jupyter.widget-view+json" in view._repr_mimebundle_()
    assert count_hooks(net) == 0


def test_a_unit_for_some_outputs_only_shows_those_classes_and_ranks_among_all_outputs(tiny):
    import inspect

    import matplotlib.pyplot as plt

    if "classes" not in inspect.signature(train_mace).parameters:
        pytest.skip("train_mace has no classes= (a unit for some outputs only)")
    net, _, point, x, y = tiny
    keep = (y == 2) | (y == 5) | (y == 7)
    xs, ys = x[keep], y[keep]
    unit, point, _ = train_mace(net, xs, ys, classes=[2, 5, 7], epochs=1, n_concepts=3, embedding_dim=4,
                                per_class=2, seed=0, progress=False)
    state = ExplorerState(net, unit, point, xs, ys, class_names=NAMES, top=2)
    assert state.classes == [2, 5, 7] and state.n_outputs == 10
    for i in range(len(xs)):
        state.select_image(i)
        p = torch.as_tensor(state.probs)
        assert state.ranking == sorted([2, 5, 7], key=lambda k: -float(p[k])) and state.target == state.ranking[0]
        assert state.rank_of(state.target) == 1 + int((p > p[state.target]).sum())
        for k in (2, 5, 7):
            state.select_class(k)
            d = explain(net, unit, point, xs[i : i + 1], classes=k)
            assert [j for j, _ in state.concepts] == [j for j, _ in _expected_concepts(d.relevance[0, 0], d.active[0])]
    before = _snapshot(state)
    with pytest.raises(ValueError, match=r"unit's classes \[2, 5, 7\]"):
        state.select_class(0)
    with pytest.raises(ValueError, match=r"unit's classes \[2, 5, 7\]"):
        state.select_class("c3")
    assert _snapshot(state) == before
    assert state.class_label(0).startswith("c0: p = ")  # any output can be named, ranked and shown as predicted
    plt.close(plot_view(state, classes=[2, 5, 7], max_concepts=1))
