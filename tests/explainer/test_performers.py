import pytest
import torch

from xailib.explainer import experiments as ex
from xailib.explainer.interpretable import MaskLayer, mask_layers
from xailib.explainer.performers import (
    ARCHS,
    ATTRIBUTE_PERFORMER,
    CHECKPOINTS,
    binary_task,
    build_performer,
    load_performer,
    main,
    performer_name,
    select,
    top_layer,
)
from xailib.layers import count_hooks, get_layer
from xailib.models.checkpoints import CheckpointError, read_manifest


def test_binary_task_is_balanced_positives_first():
    task = binary_task("tiger", 9, "test", seed=3)
    assert task.labels.tolist() == [1] * 9 + [0] * 9
    assert (task.classes[:9] == task.classes[0]).all() and not (task.classes[9:] == task.classes[0]).any()
    assert task.images.shape[0] == task.part_masks.shape[0] == 18
    with pytest.raises(ValueError, match="Unknown category 'dragon'.*tiger"):
        binary_task("dragon", 3)


@pytest.mark.parametrize("arch", list(ARCHS))
def test_mask_layer_sits_before_the_top_relu(arch):
    icnn, plain = build_performer(arch, "cow"), build_performer(arch, "cow", interpretable=False)
    assert isinstance(get_layer(icnn, top_layer(arch)), MaskLayer)
    assert isinstance(get_layer(plain, top_layer(arch, False)), torch.nn.ReLU)
    assert len(mask_layers(icnn)) == 1 and not mask_layers(plain)
    assert set(icnn.state_dict()) == set(plain.state_dict())


def test_cli_trains_saves_and_loads(tmp_path):
    assert main(["--only", "vgg-m-cow-icnn", "--epochs", "1", "--n-train", "25", "--out", str(tmp_path)]) == 0
    manifest = read_manifest(tmp_path)
    entry = manifest["models"]["vgg-m-cow-icnn"]
    assert entry["epochs"] == 1 and len(entry["history"]["filter_loss"]) == 1
    assert (tmp_path / "performers.md").read_text().count("vgg-m-cow-icnn") == 1
    model = load_performer("vgg-m", "cow", folder=tmp_path)
    again = load_performer("vgg-m", "cow", folder=tmp_path)
    for (k, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)
    (tmp_path / "vgg-m-cow-icnn.pt").write_bytes(b"corrupt")
    with pytest.raises(CheckpointError, match="make performers ONLY=vgg-m-cow-icnn"):
        load_performer("vgg-m", "cow", folder=tmp_path)
    with pytest.raises(CheckpointError, match="make performers ONLY=alexnet-cow-plain"):
        load_performer("alexnet", "cow", interpretable=False, folder=tmp_path)


def test_select_and_names():
    assert performer_name("vgg-16", "cow", False) == "vgg-16-cow-plain"
    assert len(select("*")) == 2 * len(ARCHS) * 10
    with pytest.raises(ValueError, match="matches no performer"):
        select("resnet-*")
    with pytest.raises(ValueError, match="arch"):
        performer_name("resnet", "cow")


def test_shipped_performers_are_all_listed_and_load():
    listed = read_manifest(CHECKPOINTS).get("models", {})
    assert sorted(listed) == sorted([performer_name(*t) for t in select("*")] + [ATTRIBUTE_PERFORMER])
    model = load_performer("alexnet", "tiger")
    assert not model.training


def test_case1_on_a_performer_without_the_interpretable_layer():
    plain = build_performer("vgg-m", "cow", interpretable=False).eval()
    images = binary_task("cow", 2, "test").images
    with pytest.raises(ValueError, match=r"features\.stage5\.relu2\.0"):
        ex.performer_concepts(plain, "vgg-m", images, interpretable=True)
    assert count_hooks(plain) == 0 and not plain.training
    wrapped, layer, concepts = ex.performer_concepts(plain, "vgg-m", images, interpretable=False)
    assert layer == "net.features.stage5.relu2" and concepts.concepts.shape == (4, 64)
    torch.testing.assert_close(concepts.y_hat, (plain(images)[:, 1] - plain(images)[:, 0]).detach())
