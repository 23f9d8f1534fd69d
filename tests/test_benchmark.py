"""The ground-truth benchmark (xailib.benchmark), the methods it brings into the registry (MACE, the additive
explainer, AfI, TCAV) and the reproduction report (xailib.report)."""

import copy
import json

import pandas as pd
import pytest
import torch
from tiny_models import same_state

from xailib.baselines import attribute, available, get_method
from xailib.benchmark import ground_truth as gt
from xailib.models import load_model
from xailib import report


# ---- the protocol's pieces, by hand ------------------------------------------------------------------------------

def test_part_mass_and_density_by_hand():
    maps = torch.tensor([[[1.0, 3.0], [0.0, 4.0]]])                      # total 8
    parts = torch.tensor([[[[True, True], [False, False]],                 # mass 4 of 8, area 2 of 4
                           [[False, False], [False, True]],                # mass 4 of 8, area 1 of 4
                           [[False, False], [False, False]]]])             # not visible
    assert gt.part_mass(maps, parts).tolist() == [[0.5, 0.5, 0.0]]
    d = gt.part_density(maps, parts)
    assert d[0, :2].tolist() == [1.0, 2.0] and torch.isnan(d[0, 2])
    assert gt.part_mass(torch.zeros(1, 2, 2), parts).tolist() == [[0.0, 0.0, 0.0]]
    uniform = gt.part_density(torch.ones(1, 2, 2), parts)
    assert uniform[0, :2].tolist() == [1.0, 1.0]                          # a uniform map: 1 on every part


def test_paint_parts_by_hand():
    parts = torch.tensor([[[[True, False]], [[False, True]]]])            # [1, 2, 1, 2]
    painted = gt.paint_parts(torch.tensor([[0.25, float("nan")]]), parts)
    assert painted.tolist() == [[[0.25, 0.0]]]


def test_summary_and_finding_read_the_numbers(tmp_path):
    agreement = pd.DataFrame([{"measure": m, "method": meth, "class": k, "spearman": v, "n_concepts": 4}
                              for m in ("mass", "density") for meth, vals in (("GradCAM", [0.8, 0.9, 1.0]),
                                                                              ("Random", [-0.1, 0.0, 0.1]))
                              for k, v in enumerate(vals)])
    per_image = pd.DataFrame([{"method": meth, "image": i, "class": 0, "deletion_auc": d, "insertion_auc": 0.5,
                               "pointing": 1.0, "object_mass": 0.5}
                              for meth, d in (("GradCAM", 0.1), ("Random", 0.4)) for i in range(4)])
    summary = gt.summary_table({"agreement": agreement, "per_image": per_image, "robustness": pd.DataFrame()})
    g = summary.set_index("method")
    assert g.loc["GradCAM", "agreement"] == pytest.approx(0.9) and g.loc["GradCAM", "agreement_n"] == 3
    assert g.loc["Random", "deletion_auc"] == pytest.approx(0.4) and g.loc["Random", "deletion_auc_n"] == 4
    text = gt.finding(summary)
    assert "GradCAM above zero" in text and "lies clear above them" in text
    assert "deletion AUC (lower is better): best GradCAM 0.100" in text


# ---- the methods the benchmark brings into the registry ----------------------------------------------------------

def _untouched(model):
    """A check that ``model`` keeps its state dict, its modes and its grad flags, and has no hook."""
    saved = copy.deepcopy(model.state_dict())
    modes = [m.training for m in model.modules()]
    flags = [p.requires_grad for p in model.parameters()]

    def check(m) -> bool:
        hooks = any(x._forward_hooks or x._forward_pre_hooks or x._backward_hooks for x in m.modules())
        return (same_state(m, saved) and modes == [x.training for x in m.modules()]
                and flags == [p.requires_grad for p in m.parameters()] and not hooks)
    return check


@pytest.fixture(scope="module")
def net():
    return load_model("vgg-conceptworld-hard", device="cpu")


@pytest.fixture(scope="module")
def scenes():
    world = gt._world()
    return world, gt._scenes(world, 1, "test", 0), gt._scenes(world, 2, "train", 0)


def test_registry_lists_the_new_methods_and_requires_their_options(net, scenes):
    _, test, _ = scenes
    assert {"AfI", "TCAV"} <= set(available("concept"))
    for name, kind, needs in (("MACE", "map", "mace="), ("AdditiveExplainer", "map", "explainer="),
                              ("AfI", "concept", "concept_sets="), ("TCAV", "concept", "random_sets=")):
        assert get_method(name, kind).requires
        before = _untouched(net)
        with pytest.raises(ValueError, match=needs):
            attribute(net, test.images[:2], test.labels[:2], method=name)
        assert before(net)


def test_additive_explainer_map_splits_the_explainer_output_over_positions(net, scenes):
    """sum_hw of the map at the layer's resolution = sum_i alpha_i y_i = the explainer's output minus b (Case 1)."""
    from xailib.explainer.priors import case1_priors
    from xailib.explainer.registry import fit_class_explainers

    _, test, fit = scenes
    fitted = fit_class_explainers(net, net.stage_names[-1], fit.images, classes=[0, 1], epochs=2, width=8)
    x, y = test.images[:3], torch.tensor([0, 1, 0])
    before = _untouched(net)
    maps = attribute(net, x, y, method="AdditiveExplainer", explainer=fitted)
    assert before(net) and maps.shape == (3, 64, 64) and bool((maps >= 0).all())
    c = case1_priors(net, fitted.layer, x[:1], target=0)
    e = fitted.explainer_of(0)
    out = e.predict(c.features, c.concepts)[0] - e.explainer.b.detach()
    with torch.no_grad():
        alpha = e.explainer.alpha(c.features)
    spatial = (alpha[..., None, None] * c.features).sum(1)                 # [1, h, w] before resizing
    assert float(spatial.sum()) == pytest.approx(float(out), rel=1e-4)
    with pytest.raises(ValueError, match="class 5 has no explainer"):
        attribute(net, x[:1], 5, method="AdditiveExplainer", explainer=fitted)


def test_mace_map_is_the_relevance_weighted_sum_of_the_kept_concepts(net, scenes):
    from xailib.mace.explain import explain
    from xailib.mace.training import train_mace

    _, test, fit = scenes
    mace, point, _ = train_mace(net, fit.images, fit.labels, epochs=1, n_concepts=3, embedding_dim=4, per_class=2,
                                progress=False)
    x, y = test.images[:2], test.labels[:2]
    maps = attribute(net, x, y, method="MACE", mace=mace, point=point)
    ex = explain(net, mace, point, x)
    rows = ex.rows_of(y)
    want = torch.stack([sum(max(float(ex.relevance[b, rows[b], j]), 0.0) * bool(ex.active[rows[b], j])
                            * ex.upsampled()[b, rows[b], j] for j in range(ex.maps.shape[2])) for b in range(2)])
    torch.testing.assert_close(maps, want.float(), atol=1e-5, rtol=1e-5)


# ---- bad input ---------------------------------------------------------------------------------------------------

def test_benchmark_refuses_bad_settings_and_methods():
    with pytest.raises(ValueError, match="ConceptWorld \\(hard\\) model"):
        gt.run_benchmark(gt.Setting(model="vgg-fashion-mnist"), ["GradCAM"])
    with pytest.raises(ValueError, match="method"):
        gt.run_benchmark(gt.Setting(), ["Grad-CAM"])
    with pytest.raises(ValueError, match="methods is empty"):
        gt.run_benchmark(gt.Setting(), [], control=False)
    with pytest.raises(ValueError, match="n_test"):
        gt.benchmark_task("GradCAM", gt.Setting(n_test=0))


# ---- the reproduction report -------------------------------------------------------------------------------------

def test_sample_size_and_interval_are_read_from_the_row():
    assert report.sample_size("mean over 10 classes, 95% CI [0.772, 0.822]") == "10 classes"
    assert report.sample_size("rule ...; n = 200 images of 10 classes") == "200 images"
    assert report.sample_size("top: dots 0.260; 20 draws of 30 images") == "20 draws of 30 images"
    assert report.sample_size("no size here") == ""
    assert report.confidence_interval("+0.006 [+0.005, +0.007]") == "[+0.005, +0.007]"
    assert report.confidence_interval("0.8", "mean, CI [-0.1, 2e-3]") == "[-0.1, 2e-3]"
    assert report.confidence_interval("0.8", "none") == ""


def _table(folder, name, rows, notebook, params):
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(folder / f"{name}.csv", index=False)
    (folder / f"{name}.json").write_text(json.dumps({"notebook": notebook, "parameters": params,
                                                      "wall_time_s": 60.0}))


def test_report_has_a_row_for_every_artifact_and_is_stable(tmp_path):
    figs = tmp_path / "figures"
    _table(figs / "gap", "paper_vs_ours_sanity",
           [{"artifact": "Table 1", "quantity": "PCC (vgg-conceptworld)", "paper": 0.985, "ours": 0.744,
             "verdict": "not reproduced", "note": "n = 50 images"}], "01_sanity_check", {"models": "vgg-conceptworld"})
    text = report.render_report(figs, commit="abc1234", profile="default")
    for paper, artifacts in report.INVENTORY.items():
        for art in artifacts:
            assert f"| {art.key} | {art.shows.replace('|', '|')}" in text.replace("\\|", "|"), (paper, art.key)
    row = [line for line in text.splitlines() if line.startswith("| Table 1 | PCC (vgg")][0]
    assert "| 50 images |" in row and "| vgg-conceptworld |" in row and "not reproduced" in row
    assert "| Fig. 2 | kinds of interpretative methods | 0 | not comparable: a diagram" in text
    assert "sum to 1.0 min over 1 notebooks" in text and "| [paper_vs_ours_sanity](figures/gap/paper_vs_ours_sanity.md) |" in text
    again = report.render_report(figs, commit="def5678", profile="default")
    assert report.stable_lines(text) == report.stable_lines(again) and text != again


def test_sample_size_reads_ranges_runs_and_maps():
    from xailib.report import sample_size

    assert sample_size("0.3 -> 0.9", "rule ...; n = 12-40 channels per stage and model") == "12-40 channels"
    assert sample_size("9.97", "vgg, 64 channels, CPU; one image, best of n = 3 runs (naive: 1)") == "3 runs"
    assert sample_size("0.156 of 3600 maps", "not PASCAL-Context's; n = 3600 maps") == "3600 maps"
    assert sample_size("0 of 6", "permutation test ...") == ""


def test_rows_of_wall_clock_tables_are_marked_and_left_out_of_the_stable_lines(tmp_path):
    figs = tmp_path / "figures"
    _table(figs / "gap", "paper_vs_ours_timing",
           [{"artifact": "Sec. 4.1 timing", "quantity": "gAP time (ms)", "paper": 50, "ours": 9.97,
             "verdict": "not comparable", "note": "best of n = 3 runs"}], "01_sanity_check", {})
    side = figs / "gap" / "paper_vs_ours_timing.json"
    side.write_text(json.dumps({**json.loads(side.read_text()), "table": {"wall_clock": True}}))
    _table(figs / "gap", "paper_vs_ours_sanity",
           [{"artifact": "Table 1", "quantity": "PCC", "paper": 0.985, "ours": 0.744,
             "verdict": "not reproduced", "note": "n = 50 images"}], "01_sanity_check", {})
    text = report.render_report(figs)
    timing = [line for line in text.splitlines() if line.startswith("| Sec. 4.1 timing | gAP time")]
    pcc = [line for line in text.splitlines() if line.startswith("| Table 1 | PCC |")]
    assert len(timing) == 1 and timing[0].endswith(f"{report.WALL_CLOCK_MARK} |")
    assert timing[0] in report.wall_clock_lines(text) and timing[0] not in report.stable_lines(text)
    assert len(pcc) == 1 and pcc[0] in report.stable_lines(text) and report.WALL_CLOCK_MARK not in pcc[0]
