"""The real-scale path of MACE 01 and 02 on a stand-in: an ImageNet-layout folder of random JPEGs made here and
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
import pandas as pd
import pytest
from PIL import Image

from xailib.reproduce import reproduce
from xailib.results import PAPER_TABLE_COLUMNS, VERDICTS
from xailib.utils import repo_root

WNIDS = ["n01440764", "n01443537", "n01484850"]  # ImageNet's outputs 0, 1, 2 (tench, goldfish, great white shark)
#: Images per class folder: the smoke profile takes 4 training and 3 held-out images of each class.
PER_CLASS = 8
REAL_SCALE = {"model": "resnet18", "weights": "", "image_size": 64}
C = 10  # the notebooks' n_concepts


@pytest.fixture(scope="module")
def standin_folder(tmp_path_factory):
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("mace_standin") / "val"
    for wnid in WNIDS:
        (root / wnid).mkdir(parents=True)
        for i in range(PER_CLASS):
            Image.fromarray(_scene(rng)).save(root / wnid / f"ILSVRC2012_val_{i:08d}.JPEG", quality=90)
    return root


def _scene(rng) -> np.ndarray:
    """A 90 x 110 photo stand-in (not square: resize + crop apply): a plain background, 3-5 coloured rectangles."""
    pixels = np.broadcast_to(rng.integers(0, 256, size=3), (90, 110, 3)).astype(np.int64)
    for _ in range(rng.integers(3, 6)):
        y0, x0 = rng.integers(0, 60), rng.integers(0, 80)
        pixels[y0:y0 + rng.integers(15, 40), x0:x0 + rng.integers(15, 40)] = rng.integers(0, 256, size=3)
    return np.clip(pixels + rng.integers(-12, 13, size=pixels.shape), 0, 255).astype(np.uint8)


def _run(notebook: str, folder, tmp_path, **extra):
    """Run mace/<notebook> on the smoke profile on the real-scale path; the figures folder, and its printed text."""
    out = tmp_path / "out"
    reproduce(only=f"mace/{notebook}", profile="smoke", device="cpu", progress=False,
              params={**REAL_SCALE, "data_root": str(folder), **extra},
              notebooks_dir=repo_root() / "notebooks", figures_dir=out / "figures", build_dir=out / "build")
    cells = json.loads((out / "build" / "executed" / "mace" / f"{notebook}.ipynb").read_text())["cells"]
    printed = "".join("".join(o.get("text", "")) for c in cells for o in c.get("outputs", [])
                      if o.get("name") == "stdout")
    return out / "figures" / "mace", printed


def _table(folder, stem: str) -> pd.DataFrame:
    return pd.read_csv(folder / f"{stem}.csv")


def _check_paper_table(folder, stem: str) -> pd.DataFrame:
    """The closing paper-vs-ours table: its columns, rows, only the four verdicts, and a row whose value of ours
    could not be measured (n/a, NaN) is "not comparable"."""
    table = _table(folder, stem)
    assert tuple(table.columns) == PAPER_TABLE_COLUMNS and len(table) > 0
    assert set(table["verdict"]) <= set(VERDICTS), set(table["verdict"]) - set(VERDICTS)
    unmeasured = table["ours"].astype(str).str.lower().str.contains("nan")
    judged = table[unmeasured & (table["verdict"] != "not comparable")]
    assert judged.empty, judged[["quantity", "ours", "verdict"]].to_string()
    return table


def _check_parameters(folder, stem: str, standin_folder, outputs: str) -> None:
    params = json.loads((folder / f"{stem}.json").read_text())["parameters"]
    assert params["model"] == "resnet18" and params["weights"] == "" and params["image_size"] == 64
    assert params["data_root"] == str(standin_folder) and params["outputs"] == outputs


@pytest.mark.slow
def test_concepts_notebook_trains_mace_for_the_folders_classes(standin_folder, tmp_path):
    folder, printed = _run("01_concepts", standin_folder, tmp_path, outputs="0,1,2")
    assert "real scale: MACE explains 3 classes, outputs [0, 1, 2]" in printed
    assert "on 12 training and 9 held-out images" in printed              # 4 + 3 of each class
    history = _table(folder, "training_history")
    assert set(history["model"]) == {"resnet18"} and set(history["phase"]) == {"train", "finetune"}
    assert history["loss_total"].notna().all()
    pruning = _table(folder, "sf1_pruning")
    assert set(pruning["model"]) == {"resnet18"} and len(pruning) == 3 * C       # K = 3 rows of C concepts
    assert sorted(set(pruning["class"])) == [0, 1, 2]
    summary = _table(folder, "sf1_pruning_summary")
    assert summary["class"].tolist() == [0, 1, 2] and ((summary["kept"] + summary["pruned"]) == C).all()
    assert (summary["kept"] >= 2).all()                                   # min_keep
    blocks = _table(folder, "sf13_block_structure")
    assert set(blocks["model"]) == {"resnet18"} and sorted(set(blocks["class"])) == [0, 1, 2]
    kept = pruning[~pruning["pruned"]].groupby("class")["concept"].apply(sorted).to_dict()
    assert blocks.groupby("class")["concept"].apply(sorted).to_dict() == kept   # SF13 on the kept concepts
    assert (folder / "fig2_concepts_output0.png").exists() and (folder / "sf13_embedding_distances.png").exists()
    assert "SF15-SF16: skipped on the real-scale path" in printed
    assert not list(folder.glob("sf15_16_concepts_*"))
    paper = _check_paper_table(folder, "paper_vs_ours_concepts")
    named = paper[paper["artifact"].isin(["SF13", "S2 / S7"])]
    assert len(named) == 2 and named["quantity"].str.contains(r"\(resnet18\)", regex=True).all()
    assert paper.loc[paper["artifact"] == "S2 / S7", "ours"].str.endswith("of 10").all()
    _check_parameters(folder, "training_history", standin_folder, "0,1,2")


@pytest.mark.slow
def test_concepts_notebook_without_outputs_lets_the_predictions_stand_in(standin_folder, tmp_path):
    folder, printed = _run("01_concepts", standin_folder, tmp_path)
    for part in ("training", "held-out"):
        assert f"MACE's {part} labels: the folder's 3 classes are not the model's 1000 outputs" in printed
    pruning = _table(folder, "sf1_pruning")
    classes = sorted(set(pruning["class"]))
    assert classes and all(0 <= k < 1000 for k in classes) and len(pruning) == len(classes) * C
    assert f"real scale: MACE explains {len(classes)} classes, outputs {classes}" in printed
    assert sorted(set(_table(folder, "sf13_block_structure")["class"])) == classes
    _check_paper_table(folder, "paper_vs_ours_concepts")


@pytest.mark.slow
def test_faithfulness_notebook_removes_the_maps_of_the_most_probable_of_maces_classes(standin_folder, tmp_path):
    folder, printed = _run("02_faithfulness", standin_folder, tmp_path, outputs="0,1,2")
    assert "real scale: MACE explains 3 classes, outputs [0, 1, 2]" in printed
    table = _table(folder, "fig4b_faithfulness")
    assert set(table["method"]) == {"MACE", "GradCAM", "GradCAM++", "ExcitationBackprop", "Gradient", "random"}
    assert sorted(set(table["label"])) == [0, 1, 2] and sorted(set(table["threshold"])) == [0.3, 0.7]
    per_cell = table.groupby(["method", "protocol", "threshold"])["image"].nunique()
    assert (per_cell == 6).all()                                          # 2 held-out images of each class
    assert table["drop"].between(-1, 1).all() and table["area"].between(0, 1).all()
    single = _table(folder, "fig4a_single_concepts")
    assert (single["concept"] == -1).sum() == 6 and single["concept"].between(-1, C - 1).all()
    ablation = _table(folder, "sf17_ablation")
    assert set(ablation["variant"]) == {"full", "without L^O"} and set(ablation["method"]) == {"MACE"}
    history = _table(folder, "training_history")
    assert (history["kept"] <= 3 * C).all() and (history["kept"] >= 3 * 2).all()
    paper = _check_paper_table(folder, "paper_vs_ours_faithfulness")
    assert {"Fig. 4b", "Fig. 4a", "SF17"} <= set(paper["artifact"])
    assert paper["quantity"].str.contains(r"\(resnet18\)", regex=True).all()
    _check_parameters(folder, "fig4b_faithfulness", standin_folder, "0,1,2")
