"""The real-scale path of the five AfI notebooks on a stand-in: an ImageNet-layout folder of random JPEGs made here (and,
for afi/05, a concept folder in TCAV's layout) and torchvision's resnet18 with random weights at 64 x 64, through the same runner and notebooks as the default path (smoke profile), as tests/test_real_scale.py
does for notebook 00 and the gAP notebooks.

The folder's 3 classes are not resnet18's 1000 outputs, so the notebooks let the predictions stand in for the labels
(:meth:`xailib.models.subjects.Subjects.reference_labels`); the tables are checked for what must hold whatever the
random weights: the model column, the shapes of resnet18's stages at 64 x 64, accuracies where the predictions are the
labels, and paper-vs-ours tables whose verdicts are the four allowed ones.
"""

import json
import math

import numpy as np
import pytest
from PIL import Image

from tests.real_scale_helpers import check_paper_table, run_notebook, scene, table


WNIDS = ["n01440764", "n01443537", "n01484850"]
#: Images per class folder: AfI 02's smoke profile takes 4 + 4 per class (students' training and held-out halves),
#: 01 and 04 take 3 + 3.
PER_CLASS = 8
REAL_SCALE = {"model": "resnet18", "weights": "", "image_size": 64}  # layer4 is 2 x 2 at 64 x 64
#: resnet18's stages (its ``stage_names``) and their outputs at 64 x 64, H x W x C.
RESNET18_STAGES = {"relu": "32 x 32 x 64", "layer1": "16 x 16 x 64", "layer2": "8 x 8 x 128",
                   "layer3": "4 x 4 x 256", "layer4": "2 x 2 x 512"}


def _run(notebook: str, folder, tmp_path, **extra):
    """Run afi/<notebook> on the smoke profile on the real-scale path; the figures folder, and its printed text."""
    return run_notebook("afi", notebook, {**REAL_SCALE, "data_root": str(folder), **extra}, tmp_path)


@pytest.fixture(scope="module")
def standin_folder(tmp_path_factory):
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("afi_standin") / "val"
    for wnid in WNIDS:
        (root / wnid).mkdir(parents=True)
        for i in range(PER_CLASS):
            Image.fromarray(scene(rng)).save(root / wnid / f"ILSVRC2012_val_{i:08d}.JPEG", quality=90)
    return root


@pytest.fixture(scope="module")
def concept_folder(tmp_path_factory):
    """TCAV's layout: root/<concept>/ for three concepts (stripes, dots, plain green) and the random benchmark
    root/random_0/, 6 images each (afi/05's smoke draws take 4), plus one non-image file that must be skipped."""
    rng = np.random.default_rng(1)
    root = tmp_path_factory.mktemp("afi_concepts")
    yy, xx = np.mgrid[0:80, 0:80]
    patterns = {"striped": lambda: ((xx // 8) % 2)[..., None] * np.array([255, 200, 40]),
                "dotted": lambda: ((((xx % 16) - 8) ** 2 + ((yy % 16) - 8) ** 2) < 16)[..., None] * np.array([250] * 3),
                "grass": lambda: np.broadcast_to(np.array([40, 180, 60]), (80, 80, 3)),
                "random_0": lambda: rng.integers(0, 256, size=(80, 80, 3))}
    for name, make in patterns.items():
        (root / name).mkdir()
        for i in range(6):
            noise = rng.integers(-20, 21, size=(80, 80, 3))
            pixels = np.clip(make() + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{name}_{i}.jpg", quality=90)
    (root / "striped" / "README.txt").write_text("not an image")
    return root





def _check_parameters(folder, stem: str, standin_folder) -> None:
    params = json.loads((folder / f"{stem}.json").read_text())["parameters"]
    assert params["model"] == "resnet18" and params["weights"] == "" and params["image_size"] == 64
    assert params["data_root"] == str(standin_folder)


def _stand_in_line(printed: str, what: str) -> bool:
    return f"{what}: the folder's 3 classes are not the model's 1000 outputs" in printed


@pytest.mark.slow
def test_attacking_notebook_runs_a_torchvision_model_on_a_standin_folder(standin_folder, tmp_path):
    folder, printed = _run("01_attacking", standin_folder, tmp_path)
    attack = table(folder, "tableS1_attacking")
    assert list(attack.columns) == ["model", "split", "clean_accuracy", "perturbed_accuracy", "n_images", "n_classes"]
    assert attack["model"].tolist() == ["resnet18", "resnet18"] and attack["split"].tolist() == ["train", "test"]
    assert (attack["n_images"] > 0).all() and attack["n_images"].sum() <= 2 * 3 * len(WNIDS)
    assert attack["clean_accuracy"].tolist() == [1.0, 1.0]  # the predictions stand in for the labels
    assert attack["perturbed_accuracy"].between(0, 1).all()
    unmatched = table(folder, "tableS2_unmatched")
    assert unmatched["model"].tolist() == ["resnet18", "resnet18"] and "unmatched_accuracy" in unmatched
    learning = table(folder, "occluder_learning")
    assert set(learning["model"]) == {"resnet18"} and learning["class"].between(0, 999).all()
    assert learning["n_images"].sum() == attack["n_images"].iloc[0]  # every training image has its class's occluder
    assert (folder / "figS1_occluders_resnet18.png").exists()
    paper = check_paper_table(folder, "paper_vs_ours_attacking")
    assert {"Table 1 / S1", "Table S1", "Table S2"} <= set(paper["artifact"])
    assert paper["quantity"].str.contains(r"\(resnet18", regex=True).all()
    assert paper["quantity"].str.contains("resnet18 for ResNet-50").any()
    _check_parameters(folder, "tableS1_attacking", standin_folder)
    assert _stand_in_line(printed, "Table 1")


@pytest.mark.slow
def test_feature_attribution_notebook_runs_a_torchvision_model_on_a_standin_folder(standin_folder, tmp_path):
    folder, printed = _run("02_feature_attribution", standin_folder, tmp_path)
    students = table(folder, "table2_students")
    assert list(students.columns) == ["model", "class", "method", "accuracy", "n_train", "n_test", "n_features", "design"]
    assert set(students["model"]) == {"resnet18"} and set(students["method"]) == {"gradient", "afi_no_t", "afi"}
    empty = (students["n_train"] == 0) | (students["n_test"] == 0)  # no balanced task: accuracy not defined
    assert students.loc[empty, "accuracy"].isna().all() and students.loc[~empty, "accuracy"].between(0, 1).all()
    designs = ["every stage, 4 training images per class", "every stage, 2 training images per class",
               "last stage, 4 training images per class", "last stage, 2 training images per class"]
    assert sorted(set(students["design"])) == sorted(designs)
    summary = table(folder, "table2_summary")
    assert summary["model"].tolist() == ["resnet18"] * 4 and sorted(summary["design"]) == sorted(designs)
    assert (folder / "table2_students.png").exists()
    paper = check_paper_table(folder, "paper_vs_ours_distillation")
    assert set(paper["artifact"]) == {"Table 2"} and paper["quantity"].str.contains(r"\(resnet18", regex=True).all()
    accuracy = paper["quantity"].str.startswith("student accuracy, ")  # one row per method of the judged design
    assert accuracy.sum() == 3 and paper.loc[accuracy, "quantity"].str.contains("resnet18 for ResNet-50").all()
    assert paper.loc[accuracy, "quantity"].str.contains(designs[0]).all()
    assert paper["quantity"].str.startswith("AfI beats").sum() == 2
    others = paper[paper["quantity"].str.startswith("student accuracy with another design")]
    assert len(others) == 3 and (others["verdict"] == "not comparable").all()
    _check_parameters(folder, "table2_students", standin_folder)
    assert _stand_in_line(printed, "Table 2")


@pytest.mark.slow
def test_class_impressions_notebook_runs_a_torchvision_model_on_a_standin_folder(standin_folder, tmp_path):
    folder, printed = _run("04_class_impressions", standin_folder, tmp_path)
    by_layer = table(folder, "fig3_impressions_by_layer")
    assert list(by_layer.columns) == ["model", "layer", "shape", "recognised", "n_classes", "gain"]
    assert set(by_layer["model"]) == {"resnet18"}
    assert dict(zip(by_layer["layer"], by_layer["shape"])) == RESNET18_STAGES  # in order, input to output
    assert by_layer["layer"].tolist() == list(RESNET18_STAGES)
    assert by_layer["recognised"].between(0, 1).all() and (by_layer["n_classes"] >= 1).all()
    table3 = table(folder, "table3_chosen_layer")
    assert table3["model"].tolist() == ["resnet18"]
    chosen = table3["layer"].iloc[0]
    assert (isinstance(chosen, float) and math.isnan(chosen)) or table3["shape"].iloc[0] == RESNET18_STAGES[chosen]
    assert (folder / "fig3_class_impressions_imagenet-folder.png").exists()
    paper = check_paper_table(folder, "paper_vs_ours_impressions")
    assert paper["artifact"].tolist() == ["Table 3", "Fig. 3", "Fig. 3"]
    assert paper["verdict"].iloc[0] == "not comparable" and "resnet18" in paper["quantity"].iloc[0]
    assert paper["paper"].iloc[0] == "ResBlock_4c 7 x 7 x 2048"  # resnet18 stands in for ResNet-50
    _check_parameters(folder, "table3_chosen_layer", standin_folder)
    assert _stand_in_line(printed, "Fig. 3")


@pytest.mark.slow
def test_concept_attribution_notebook_runs_ace_concepts_on_a_standin_folder(standin_folder, tmp_path):
    folder, printed = _run("03_concept_attribution", standin_folder, tmp_path)
    assert "The ConceptWorld part: skipped on the real-scale path" in printed
    assert not (folder / "fig2_part_scores.csv").exists()              # no ConceptWorld part on a folder
    curves = table(folder, "fig2_superpixel_curves")
    assert set(curves["model"]) == {"resnet18"} and set(curves["method"]) == {"AfI", "TCAV", "random"}
    assert set(curves["mode"]) == {"ssc", "sdc"} and curves["class"].between(0, 999).all()
    scores = table(folder, "fig2_superpixel_scores")
    assert set(scores["method"]) == {"AfI", "TCAV"} and (scores["size"] > 0).all()
    assert (folder / "fig2_superpixels.png").exists()
    paper = check_paper_table(folder, "paper_vs_ours_concept_attribution")
    assert paper["quantity"].str.contains("image-folder superpixel concepts; resnet18").all()
    assert not paper["quantity"].str.contains("ConceptWorld|Fashion-MNIST").any()
    _check_parameters(folder, "fig2_superpixel_curves", standin_folder)
    assert _stand_in_line(printed, "Fig. 2 (occluders)")


@pytest.mark.slow
def test_user_concepts_notebook_runs_a_tcav_concept_folder(standin_folder, concept_folder, tmp_path):
    folder, printed = _run("05_user_concepts", standin_folder, tmp_path, concept_root=str(concept_folder),
                           concept_groups="texture:striped,dotted;context:grass")
    scores = table(folder, "fig4_user_concepts")
    assert set(scores["model"]) == {"resnet18"}
    assert dict(scores.groupby("group")["concept"].unique().apply(sorted)) == {"texture": ["dotted", "striped"],
                                                                              "context": ["grass"]}
    assert (scores["n_concept"] == 6).all() and (scores["n_random"] == 6).all()   # README.txt skipped
    assert (scores["n_per_draw"] == 4).all() and scores["p_value"].between(0, 1).all()
    sums = scores.groupby(["group", "class"])["score"].sum()                    # normalised within each group
    assert ((sums - 1).abs() < 1e-6).all() or (sums == 0).any()
    assert (folder / "fig4_user_concepts.png").exists()
    assert not (folder / "planted_bias_reliance.csv").exists()
    check_paper_table(folder, "paper_vs_ours_user_concepts")
    params = json.loads((folder / "fig4_user_concepts.json").read_text())["parameters"]
    assert params["concept_root"] == str(concept_folder) and params["model"] == "resnet18"
    assert _stand_in_line(printed, "Fig. 4")


@pytest.mark.slow
def test_user_concepts_notebook_without_a_concept_folder_says_what_it_needs(standin_folder, tmp_path):
    folder, printed = _run("05_user_concepts", standin_folder, tmp_path)
    assert "Fig. 4: skipped on the real-scale path: no concept folder was given" in printed
    assert "concept_root=" in printed and not (folder / "fig4_user_concepts.csv").exists()
    check_paper_table(folder, "paper_vs_ours_user_concepts")
