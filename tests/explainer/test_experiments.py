import pandas as pd
import pytest
import torch

from xailib.data.conceptworld import DERIVED_ATTRIBUTES, ConceptWorld
from xailib.explainer import attributes as xa
from xailib.explainer import experiments as ex
from xailib.explainer import paper
from xailib.explainer.explorer import Explorer, ExplorerState, plot_view
from xailib.explainer.performers import binary_task, load_performer
from xailib.layers import count_hooks


@pytest.fixture(scope="module")
def study():
    performer = load_performer("vgg-m", "parrot")
    train, test = binary_task("parrot", 30, "train"), binary_task("parrot", 10, "test")
    _, assignment = ex.part_selectivity(performer, "features.stage5.relu2.0", train)
    return ex.explain_performer(performer, "vgg-m", train, test, assignment, epochs=2, init="floor"), test, performer


def test_log_odds_by_hand():
    net = torch.nn.Linear(1, 2, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[1.0], [3.0]]))
    assert ex.LogOdds(net)(torch.tensor([[2.0]])).item() == pytest.approx(4.0)   # 3*2 - 1*2
    with pytest.raises(ValueError, match="2 outputs"):
        ex.LogOdds(torch.nn.Linear(1, 3))(torch.ones(1, 1))


def test_part_groups_and_pies_by_hand():
    table = pd.DataFrame({"filter": [0, 1, 2, 3], "part": ["head", None, "head", "legs"],
                          "assigned": [True, False, True, True]})
    assert ex.part_groups(table) == {"head": [0, 2], "legs": [3]}
    fake = ex.PartStudy({}, None, {"ours": torch.tensor([[1.0, 2.0, 3.0, 4.0]])}, {}, torch.tensor([1]),
                        {"head": [0, 2], "legs": [3]}, torch.zeros(1, 2), torch.zeros(1))
    pies, parts = ex.part_pies(fake, [0])
    assert parts == ["head", "legs"]
    torch.testing.assert_close(pies["ours"], torch.tensor([[4.0, 4.0, 2.0]]))     # head 1+3, legs 4, other 2
    shares = ex.contribution_shares(fake)["ours"]
    torch.testing.assert_close(shares, torch.tensor([[0.1, 0.2, 0.3, 0.4]]))


def test_study_rows_and_explorer(study):
    st, test, performer = study
    rows = ex.summary_rows(st, arch="vgg-m", category="parrot")
    assert [r["explainer"] for r in rows] == ["baseline", "ours"]
    assert all(0 <= r["entropy"] <= torch.log(torch.tensor(64.0)).item() + 1e-6 for r in rows)
    assert count_hooks(performer) == 0 and not performer.training
    state = ExplorerState(st, test)
    state.select_image(3)
    contri = state.contributions()
    assert set(contri) == set(st.groups) | {"other"}
    # the parts and "other" add up to the explainer's output minus b
    b = st.explainers["ours"].explainer.b.item()
    assert sum(contri.values()) == pytest.approx(state.explainer_score - b, abs=1e-4)
    with pytest.raises(ValueError, match="out of range"):
        state.select_image(99)
    with pytest.raises(ValueError, match="Unknown part 'tail'"):
        state.select_part("tail")
    with pytest.raises(ValueError, match="Unknown explainer"):
        state.select_explainer("gAP")
    assert state.image_index == 3
    view = Explorer(state)
    view.image_slider.value = 5
    assert state.image_index == 5 and "image 5" in view.header.value and view.view.value[:4] == b"\x89PNG"
    view.explainer_toggle.value = "baseline"
    assert state.explainer == "baseline"
    plot_view(state)


def test_derived_attributes_by_hand():
    world = ConceptWorld(size=32, seed=0)
    r = world.sample(20, "train", seed=0)
    base = world.attributes(r)
    got = world.derived_attributes(r)
    col = {n: i for i, n in enumerate(world.attribute_names)}
    kind, weights = DERIVED_ATTRIBUTES["part_score"]
    expected = sum(v * base[:, col[a]] for a, v in weights.items())
    torch.testing.assert_close(got[:, 0], expected)
    warm = base[:, [col[c] for c in ("colour_red", "colour_orange", "colour_yellow", "colour_pink")]].amax(1)
    torch.testing.assert_close(got[:, world.derived_attribute_names.index("warm")], warm)


def test_truth_errors_by_hand():
    # two images, concepts (has_horns, colour_red): truth 2 * has_horns, 0 for colour_red
    base = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    perfect = torch.tensor([[2.0, 0.0], [0.0, 0.0]]) + 5.0          # a constant per concept is free
    out = xa.truth_errors(perfect, ["has_horns", "colour_red"], base, ["has_horns", "colour_red"])
    assert out["error"] == pytest.approx(0.0) and out["off_share"] == pytest.approx(0.0)
    wrong = torch.tensor([[0.0, 2.0], [0.0, 0.0]])                 # all on the wrong concept
    out = xa.truth_errors(wrong, ["has_horns", "colour_red"], base, ["has_horns", "colour_red"])
    # centred truth (+1, -1) on horns; centred wrong (+1, -1) on red: |c - t| sums to 2 per image over 1 -> 2
    assert out["error"] == pytest.approx(2.0) and out["off_share"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="not a weighted sum"):
        xa.truth_errors(wrong, ["a", "b"], base, ["a", "b"], target="warm")


def test_attribute_concepts_are_case2_of_the_other_outputs():
    model = xa.load_attribute_performer()
    data = xa.attribute_data(1, "test", seed=5)
    found, maps = xa.attribute_concepts(model, data.images[:4], "warm")
    names = xa.attribute_names()
    assert found.names == [n for n in names if n != "warm"] and found.concepts.shape == (4, len(names) - 1)
    torch.testing.assert_close(found.y_hat, model(data.images[:4])[:, names.index("warm")].detach())
    assert maps.shape == (4, 64, 4, 4) and found.features.shape == (4, 128)   # top conv map; fc1 output
    with pytest.raises(ValueError, match="target"):
        xa.attribute_concepts(model, data.images[:2], "beauty")
    assert count_hooks(model) == 0


def test_verdict_rules():
    assert paper._sign_verdict(paper.paired_difference([0.5, 0.6, 0.7], [0.1, 0.1, 0.1]), True, 3) == "reproduced"
    # an interval above 0 but a difference in the fourth decimal is no ordering
    tiny = paper.paired_difference([1e-4, 2e-4, 3e-4], [0, 0, 0])
    assert paper._sign_verdict(tiny, True, 3) == "not reproduced"
    assert paper._sign_verdict(paper.paired_difference([1.0, 2.0], [0.0, 0.0]), True, 2) == "not comparable"
