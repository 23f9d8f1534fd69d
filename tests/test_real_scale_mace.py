"""The real-scale path of MACE 01-05 on a stand-in: an ImageNet-layout folder of random JPEGs made here and
torchvision's resnet18 with random weights at 64 x 64 (layer4 is 2 x 2 x 512 there, fc the first dense layer and the
output), through the same runner and notebooks as the default path (smoke profile), as tests/test_real_scale_afi.py
does for AfI.

MACE is trained for the folder's classes only, not for resnet18's 1000 outputs. The stand-in's wnids are the first
three of ImageNet, outputs 0, 1 and 2, which the notebooks' ``outputs`` parameter says: then MACE has K = 3 rows.
Without it the folder's 3 classes are not the model's outputs and the predictions stand in for the labels; an
untrained resnet18 predicts one output for every image, so MACE then explains that one output. Faithfulness (MACE 02)
removes the maps of the most probable of MACE's classes, which here is never the model's own prediction.
"""

import json

import numpy as np
import pytest
from PIL import Image

from tests.real_scale_helpers import check_paper_table, run_notebook, scene, table


WNIDS = ["n01440764", "n01443537", "n01484850"]  # ImageNet's outputs 0, 1, 2 (tench, goldfish, great white shark)
#: Images per class folder: the smoke profile takes 4 training and 3 held-out images of each class.
PER_CLASS = 8
REAL_SCALE = {"model": "resnet18", "weights": "", "image_size": 64}
C = 10  # the notebooks' n_concepts


def _run(notebook: str, folder, tmp_path, **extra):
    """Run mace/<notebook> on the smoke profile on the real-scale path; the figures folder, and its printed text."""
    return run_notebook("mace", notebook, {**REAL_SCALE, "data_root": str(folder), **extra}, tmp_path)


@pytest.fixture(scope="module")
def standin_folder(tmp_path_factory):
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("mace_standin") / "val"
    for wnid in WNIDS:
        (root / wnid).mkdir(parents=True)
        for i in range(PER_CLASS):
            Image.fromarray(scene(rng)).save(root / wnid / f"ILSVRC2012_val_{i:08d}.JPEG", quality=90)
    return root





def _check_parameters(folder, stem: str, standin_folder, outputs: str) -> None:
    params = json.loads((folder / f"{stem}.json").read_text())["parameters"]
    assert params["model"] == "resnet18" and params["weights"] == "" and params["image_size"] == 64
    assert params["data_root"] == str(standin_folder) and params["outputs"] == outputs


@pytest.mark.slow
def test_concepts_notebook_trains_mace_for_the_folders_classes(standin_folder, tmp_path):
    folder, printed = _run("01_concepts", standin_folder, tmp_path, outputs="0,1,2")
    assert "real scale: MACE explains 3 classes, outputs [0, 1, 2]" in printed
    assert "on 12 training and 9 held-out images" in printed              # 4 + 3 of each class
    history = table(folder, "training_history")
    assert set(history["model"]) == {"resnet18"} and set(history["phase"]) == {"train", "finetune"}
    assert history["loss_total"].notna().all()
    pruning = table(folder, "sf1_pruning")
    assert set(pruning["model"]) == {"resnet18"} and len(pruning) == 3 * C       # K = 3 rows of C concepts
    assert sorted(set(pruning["class"])) == [0, 1, 2]
    summary = table(folder, "sf1_pruning_summary")
    assert summary["class"].tolist() == [0, 1, 2] and ((summary["kept"] + summary["pruned"]) == C).all()
    assert (summary["kept"] >= 2).all()                                   # min_keep
    blocks = table(folder, "sf13_block_structure")
    assert set(blocks["model"]) == {"resnet18"} and sorted(set(blocks["class"])) == [0, 1, 2]
    kept = pruning[~pruning["pruned"]].groupby("class")["concept"].apply(sorted).to_dict()
    assert blocks.groupby("class")["concept"].apply(sorted).to_dict() == kept   # SF13 on the kept concepts
    assert (folder / "fig2_concepts_output0.png").exists() and (folder / "sf13_embedding_distances.png").exists()
    assert "SF15-SF16: skipped on the real-scale path" in printed
    assert not list(folder.glob("sf15_16_concepts_*"))
    paper = check_paper_table(folder, "paper_vs_ours_concepts")
    named = paper[paper["artifact"].isin(["SF13", "S2 / S7"])]
    assert len(named) == 2 and named["quantity"].str.contains(r"\(resnet18\)", regex=True).all()
    assert paper.loc[paper["artifact"] == "S2 / S7", "ours"].str.endswith("of 10").all()
    _check_parameters(folder, "training_history", standin_folder, "0,1,2")


@pytest.mark.slow
def test_concepts_notebook_without_outputs_lets_the_predictions_stand_in(standin_folder, tmp_path):
    folder, printed = _run("01_concepts", standin_folder, tmp_path)
    for part in ("training", "held-out"):
        assert f"MACE's {part} labels: the folder's 3 classes are not the model's 1000 outputs" in printed
    pruning = table(folder, "sf1_pruning")
    classes = sorted(set(pruning["class"]))
    assert classes and all(0 <= k < 1000 for k in classes) and len(pruning) == len(classes) * C
    assert f"real scale: MACE explains {len(classes)} classes, outputs {classes}" in printed
    assert sorted(set(table(folder, "sf13_block_structure")["class"])) == classes
    check_paper_table(folder, "paper_vs_ours_concepts")


@pytest.mark.slow
def test_faithfulness_notebook_removes_the_maps_of_the_most_probable_of_maces_classes(standin_folder, tmp_path):
    folder, printed = _run("02_faithfulness", standin_folder, tmp_path, outputs="0,1,2")
    assert "real scale: MACE explains 3 classes, outputs [0, 1, 2]" in printed
    faith = table(folder, "fig4b_faithfulness")
    assert set(faith["method"]) == {"MACE", "GradCAM", "GradCAM++", "ExcitationBackprop", "Gradient", "random"}
    assert sorted(set(faith["label"])) == [0, 1, 2] and sorted(set(faith["threshold"])) == [0.3, 0.7]
    per_cell = faith.groupby(["method", "protocol", "threshold"])["image"].nunique()
    assert (per_cell == 6).all()                                          # 2 held-out images of each class
    assert faith["drop"].between(-1, 1).all() and faith["area"].between(0, 1).all()
    single = table(folder, "fig4a_single_concepts")
    assert (single["concept"] == -1).sum() == 6 and single["concept"].between(-1, C - 1).all()
    ablation = table(folder, "sf17_ablation")
    assert set(ablation["variant"]) == {"full", "without L^O"} and set(ablation["method"]) == {"MACE"}
    history = table(folder, "faithfulness_training_history")
    assert (history["kept"] <= 3 * C).all() and (history["kept"] >= 3 * 2).all()
    paper = check_paper_table(folder, "paper_vs_ours_faithfulness")
    assert {"Fig. 4b", "Fig. 4a", "SF17"} <= set(paper["artifact"])
    assert paper["quantity"].str.contains(r"\(resnet18\)", regex=True).all()
    _check_parameters(folder, "fig4b_faithfulness", standin_folder, "0,1,2")


@pytest.mark.slow
def test_all_outputs_notebook_explains_two_ranks_and_skips_the_part_proxy(standin_folder, tmp_path):
    folder, printed = _run("03_all_outputs", standin_folder, tmp_path, outputs="0,1,2")
    assert "real scale: MACE explains 3 classes, outputs [0, 1, 2]" in printed
    iou = table(folder, "fig5a_rank_iou")
    assert set(iou["method"]) == {"MACE", "GradCAM", "GradCAM++", "ExcitationBackprop", "Gradient"}
    assert set(iou["class_1"]) | set(iou["class_2"]) <= {0, 1, 2} and (iou["class_1"] != iou["class_2"]).all()
    assert iou["iou"].between(0, 1).all() and iou.groupby("method")["image"].nunique().eq(6).all()
    ranks = table(folder, "fig5b_by_rank")
    assert ranks["rank"].tolist() == [1, 2, 3]                            # ranks among MACE's 3 classes
    assert set(table(folder, "fig5c_true_vs_others")["class"]) <= {0, 1, 2}
    assert not (folder / "table1_proxy_localisation.csv").exists()       # a folder has no part masks
    assert "the Table 1 proxy" in printed
    paper = check_paper_table(folder, "paper_vs_ours_all_outputs")
    assert {"Fig. 1 / Fig. 5a", "Fig. 5b", "Fig. 5c", "Table 1"} <= set(paper["artifact"])
    assert "Table 1 (proxy)" not in set(paper["artifact"])
    _check_parameters(folder, "fig5a_rank_iou", standin_folder, "0,1,2")


@pytest.mark.slow
def test_robustness_notebook_perturbs_folder_images(standin_folder, tmp_path):
    folder, printed = _run("04_robustness", standin_folder, tmp_path, outputs="0,1,2")
    rob = table(folder, "sf14_robustness")
    assert set(rob["perturbation"]) == {"brightness", "contrast", "noise", "rotation"}
    assert set(rob["method"]) == {"MACE", "MACE (top concept)", "GradCAM", "GradCAM++"}
    assert rob["iou"].between(0, 1).all() and rob.groupby("method")["image"].nunique().eq(6).all()
    paper = check_paper_table(folder, "paper_vs_ours_robustness")
    assert paper["quantity"].str.contains(r"\(resnet18\)", regex=True).all()
    _check_parameters(folder, "sf14_robustness", standin_folder, "0,1,2")


@pytest.mark.slow
def test_explorer_notebook_explores_a_torchvision_unit(standin_folder, tmp_path):
    folder, printed = _run("05_explore", standin_folder, tmp_path, outputs="0,1,2")
    walk = table(folder, "explorer_walk")
    assert len(walk) > 0
    check_paper_table(folder, "paper_vs_ours_explorer")
    _check_parameters(folder, "explorer_walk", standin_folder, "0,1,2")
