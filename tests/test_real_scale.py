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


# -- gAP notebooks 01 and 02: what they run on (xailib.models.subjects) ------------------------------------------------


def test_subjects_default_path_makes_the_calls_it_replaces(capsys):
    from xailib.models import load_model
    from xailib.models.subjects import Subjects

    zoo = Subjects(device="cpu", seed=3)
    net = zoo.model("vgg-conceptworld")
    ref = load_model("vgg-conceptworld", device="cpu")
    assert net.name == "vgg-conceptworld" and all(torch.equal(a, b) for a, b in
                                                  zip(net.state_dict().values(), ref.state_dict().values()))
    data = zoo.data("conceptworld", 4)
    assert torch.equal(data.images, load_dataset("conceptworld", "test", n=4, seed=3).images)
    assert zoo.names([" vgg-conceptworld", "resnet-conceptworld ", ""]) == ["vgg-conceptworld", "resnet-conceptworld"]
    assert zoo.cascade_layers(net) is None and zoo.label("ConceptWorld") == "ConceptWorld"
    assert zoo.class_names(net, data) == list(data.class_names)
    labels = torch.tensor([1, 2, 3, 0])
    assert zoo.reference_labels(torch.eye(4), labels, "Fig. 11") is labels  # wrong predictions: labels kept
    assert not zoo.skip("Fig. 12", "why", "what") and not zoo.real and zoo.label_space_matches
    assert capsys.readouterr().out == ""  # the default path prints nothing new


def test_subjects_refuse_half_given_real_scale_parameters(standin_folder):
    from xailib.models.subjects import Subjects

    with pytest.raises(ValueError, match=r"needs data_root=.*-p data_root"):
        Subjects("resnet18")
    with pytest.raises(ValueError, match=r"needs model=.*-p model vgg16"):
        Subjects(data_root=standin_folder)
    with pytest.raises(ValueError, match=r"is a zoo model; model= takes a torchvision classifier"):
        Subjects("vgg-conceptworld", data_root=standin_folder)
    with pytest.raises(ValueError, match=r"weights='IMAGENET1K_V1' is for the real-scale path"):
        Subjects(weights="IMAGENET1K_V1")
    with pytest.raises(ValueError, match=r"image_size must be a positive int"):
        Subjects("resnet18", data_root=standin_folder, image_size=0)
    with pytest.raises(FileNotFoundError, match=r"does not exist"):
        Subjects("resnet18", data_root=standin_folder / "missing")
    with pytest.raises(ValueError, match=r"'squeezenet1_0' has no stage names.*use a torchvision classifier with"):
        Subjects("squeezenet1_0", data_root=standin_folder, device="cpu", verbose=False)


def test_subjects_real_scale_gives_the_classifier_and_folder_subsets(standin_folder, capsys):
    from xailib.models.subjects import Subjects

    real = Subjects("resnet18", "", standin_folder, device="cpu", seed=1, image_size=64)
    out = capsys.readouterr().out
    assert "real scale: resnet18 (random init" in out and "not the model's 1000 classes" in out
    net = real.model("vgg-conceptworld")
    assert net is real.model("resnet-conceptworld") and net.name == "resnet18"
    assert real.names(["vgg-conceptworld", "vgg-fashion-mnist"]) == ["resnet18"]
    five = real.data("ignored", 5)
    ref = load_dataset("imagenet-folder", root=standin_folder, n=5, seed=1, resize=73, crop=64)
    assert five.images.shape == (5, 3, 64, 64) and five.labels.tolist() == ref.labels.tolist()
    assert torch.equal(five.images[4], ref[4][0]) and five.class_names == WNIDS
    assert len(real.data("ignored", 50)) == 12 and "holds 12 images, fewer than the 50" in capsys.readouterr().out
    assert not real.label_space_matches and real.class_names(net, five) == [f"class{i}" for i in range(1000)]
    assert real.cascade_layers(net) == ["fc", "layer4", "layer3", "layer2", "layer1", "bn1", "conv1"]
    logits = torch.zeros(3, 1000)
    logits[torch.arange(3), torch.tensor([7, 8, 9])] = 1.0
    assert real.reference_labels(logits, torch.tensor([0, 1, 2]), "Fig. 11").tolist() == [7, 8, 9]
    assert "Fig. 11: the folder's 3 classes are not the model's 1000 outputs" in capsys.readouterr().out
    assert real.skip("Figs. 12-13", "no masks", "masks")
    assert capsys.readouterr().out == "Figs. 12-13: skipped on the real-scale path: no masks. It would need masks.\n"
    assert real.label("ConceptWorld") == f"resnet18, {standin_folder}"


def test_torchvision_blocks_split_flat_sequentials_and_keep_residual_blocks():
    from xailib.models import load_model
    from xailib.models.torchvision_models import torchvision_blocks

    assert torchvision_blocks(load_model("alexnet", device="cpu")) == [
        "features.0", "features.3", "features.6", "features.8", "features.10",  # its five convs
        "classifier.1", "classifier.4", "classifier.6"]  # its three linears (dropout and ReLU hold no parameters)
    assert torchvision_blocks(load_model("resnet18", device="cpu")) == [
        "conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "fc"]
    with pytest.raises(TypeError, match="nn.Module with parameters"):
        torchvision_blocks(torch.nn.ReLU())


def _executed_text(build, notebook):
    cells = json.loads((build / "executed" / "gap" / notebook).read_text())["cells"]
    return "".join("".join(o.get("text", "")) for c in cells for o in c.get("outputs", []) if o.get("name") == "stdout")


REAL_SCALE = {"model": "resnet18", "image_size": 64}  # 64 x 64 crops: layer4 is 2 x 2, every analysis still runs


@pytest.mark.slow
def test_sanity_notebook_runs_a_torchvision_model_on_a_standin_folder(standin_folder, tmp_path):
    out = tmp_path / "out"
    reproduce(only="gap/01_sanity_check", profile="smoke", device="cpu", progress=False,
              params={**REAL_SCALE, "data_root": str(standin_folder), "timing_pairs": "S2->S1"},
              notebooks_dir=repo_root() / "notebooks", figures_dir=out / "figures", build_dir=out / "build")
    folder = out / "figures" / "gap"
    table1 = (folder / "table1_pcc.csv").read_text().splitlines()
    assert table1[0] == "model,ground truth,strategy,T->S5,S5->S4,S4->S3,S3->S2,S2->S1,reading" and len(table1) == 13
    assert all(line.startswith("resnet18,") for line in table1[1:])
    assert table1[1].startswith("resnet18,mean,AA,,")  # a global-average-pool head: mean ablation changes nothing
    timing = (folder / "timing_gap_vs_ground_truth.csv").read_text().splitlines()
    assert len(timing) == 2 and timing[1].startswith("S2->S1,relu,64,")
    for stem in ("fig06a_sorted_contributions", "fig06b_channel_counts", "fig08_sparse_surrogate",
                 "fig07a_cascading_randomization", "fig07_examples", "fig09_channel_removal"):
        assert (folder / f"{stem}.png").exists(), stem
    assert not (folder / "fig07b_data_randomization.png").exists()
    removal = (folder / "fig09_channel_removal.csv").read_text()
    assert all(layer in removal for layer in ("layer2", "layer3", "layer4"))
    assert "AA has the highest PCC" in (folder / "paper_vs_ours_sanity.csv").read_text()
    meta = json.loads((folder / "table1_pcc.json").read_text())
    assert meta["parameters"]["model"] == "resnet18" and meta["parameters"]["data_root"] == str(standin_folder)
    printed = _executed_text(out / "build", "01_sanity_check.ipynb")
    assert "Fig. 7(b), the data randomisation test: skipped on the real-scale path" in printed
    assert "Fashion-MNIST, the stand-in for VOC: skipped" in printed


@pytest.mark.slow
def test_diagnosis_notebook_runs_a_torchvision_model_on_a_standin_folder(standin_folder, tmp_path):
    out = tmp_path / "out"
    reproduce(only="gap/02_diagnosis", profile="smoke", device="cpu", progress=False,
              params={**REAL_SCALE, "data_root": str(standin_folder)},
              notebooks_dir=repo_root() / "notebooks", figures_dir=out / "figures", build_dir=out / "build")
    folder = out / "figures" / "gap"
    per_image = (folder / "fig10_occlusion_per_image.csv").read_text().splitlines()
    assert per_image[0].startswith("index,label,pred,") and 1 < len(per_image) <= 13  # the folder's misclassified
    assert {int(line.split(",")[1]) for line in per_image[1:]} <= {0, 1, 2}  # labels are the sub-folder indices
    assert (folder / "fig10_failure_occlusion.png").exists()
    assert (folder / "fig11_adversarial_layer4.png").exists()
    assert "layer4" in (folder / "fig11_peak_responses.csv").read_text()
    degrees = (folder / "fig14_discriminative_degree.csv").read_text().splitlines()
    assert len(degrees) == 6 and degrees[-1].startswith("layer4,5,512,") and degrees[-1].endswith(",resnet18")
    assert not (folder / "fig13_context_per_class.csv").exists() and not (folder / "fig12_context_example.png").exists()
    assert "Fig. 11" in (folder / "paper_vs_ours.csv").read_text()
    printed = _executed_text(out / "build", "02_diagnosis.ipynb")
    assert "Figs. 12-13: skipped on the real-scale path" in printed
    assert "Fig. 10's hard-setting scenes: skipped" in printed and "The planted-bias model: skipped" in printed
    assert "Fig. 11: the folder's 3 classes are not the model's 1000 outputs" in printed
