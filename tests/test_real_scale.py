"""The real-scale path of notebook 00 on a stand-in: an ImageNet-layout folder made here and a torchvision
architecture with random weights, through the same runner and notebook as the default path."""

import json

import numpy as np
import torch
import pytest
from PIL import Image

from xailib.data import load_dataset
from xailib.models.report import folder_accuracy_table
from xailib.reproduce import reproduce
from xailib.utils import repo_root

WNIDS = ["n01440764", "n01443537", "n01484850"]


@pytest.fixture
def standin_folder(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "val"
    for wnid in WNIDS:
        (root / wnid).mkdir(parents=True)
        for i in range(4):
            pixels = rng.integers(0, 256, size=(240, 300, 3), dtype=np.uint8)  # not square: resize + crop apply
            Image.fromarray(pixels).save(root / wnid / f"ILSVRC2012_val_{i:08d}.JPEG", quality=90)
    return root


def test_folder_accuracy_table_counts_by_hand(standin_folder):
    folder = load_dataset("imagenet-folder", root=standin_folder)
    assert folder.class_names == WNIDS and folder[0][0].shape == (3, 224, 224)
    table = folder_accuracy_table("resnet18", None, folder, device="cpu", batch_size=5)
    row = table.iloc[0]
    assert row["images"] == 12 and row["folder_classes"] == 3 and row["model_outputs"] == 1000
    assert not row["label_space_matches"]  # 3 folders cannot stand for ImageNet's 1000 classes
    assert 0.0 <= row["accuracy"] <= 1.0 and row["weights"] == "random init"


@pytest.mark.slow
def test_notebook_00_runs_on_a_standin_imagenet_folder(standin_folder, tmp_path):
    out = tmp_path / "out"
    written = reproduce(only="00_data_and_models", profile="smoke", device="cpu", progress=False,
                        params={"imagenet_root": str(standin_folder), "imagenet_model": "resnet18", "imagenet_n": 12},
                        notebooks_dir=repo_root() / "notebooks", figures_dir=out / "figures", build_dir=out / "build")
    folder = out / "figures" / "data_and_models"
    assert (folder / "imagenet_folder_samples.png").exists()
    lines = (folder / "imagenet_accuracy.csv").read_text().splitlines()
    assert lines[0] == "model,weights,images,folder_classes,model_outputs,label_space_matches,accuracy"
    assert lines[1].startswith("resnet18,random init,12,3,1000,False,")
    meta = json.loads((folder / "imagenet_accuracy.json").read_text())
    assert meta["parameters"]["imagenet_root"] == str(standin_folder)
    assert any(str(p).endswith("imagenet_accuracy.csv") for p in written["data_and_models"])


def test_torchvision_models_are_named_like_zoo_models():
    from xailib.models import load_model

    assert load_model("resnet18", device="cpu").name == "resnet18"
    assert load_model("vgg-conceptworld", device="cpu").name == "vgg-conceptworld"


def test_in_memory_loads_a_lazy_folder_and_keeps_tensor_datasets(standin_folder):
    from xailib.data import in_memory

    folder = load_dataset("imagenet-folder", root=standin_folder, n=5, seed=1)
    held = in_memory(folder)
    assert held.images.shape == (5, 3, 224, 224) and held.labels.tolist() == folder.labels.tolist()
    assert torch.equal(held.images[2], folder[2][0]) and held.class_names == WNIDS
    cw = load_dataset("conceptworld", "test", n=4)
    assert in_memory(cw) is cw


@pytest.mark.slow
def test_explorer_notebook_runs_a_torchvision_model_on_a_standin_folder(standin_folder, tmp_path):
    out = tmp_path / "out"
    reproduce(only="gap/03_explorer", profile="smoke", device="cpu", progress=False,
              params={"model": "resnet18", "data_root": str(standin_folder)},
              notebooks_dir=repo_root() / "notebooks", figures_dir=out / "figures", build_dir=out / "build")
    folder = out / "figures" / "gap"
    assert (folder / "fig05_explorer_walk.png").exists()
    meta = json.loads((folder / "fig05_explorer_walk.json").read_text())
    assert meta["parameters"]["model"] == "resnet18" and meta["parameters"]["data_root"] == str(standin_folder)
