"""Tests of the model zoo, the torchvision wrappers and the checksummed checkpoints."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import xailib.models.checkpoints as ckpt
from xailib.layers import capture, count_hooks, named_layers
from xailib.models import (
    ARCHS,
    SCHEDULES,
    ZOO_DATASETS,
    ZOO_NAMES,
    CheckpointError,
    Normalize,
    WeightsUnavailableError,
    build_model,
    dense_layer,
    load_model,
    stage_layers,
)
from xailib.models.torchvision_models import TORCHVISION_STAGES
from xailib.models.train import RECIPES, augment, evaluate, train_model

CLASSES = [f"c{i}" for i in range(5)]
ZOO = [(a, d) for d in ZOO_DATASETS for a in ARCHS]


@pytest.fixture(scope="module")
def models():
    """One untrained model per (arch, dataset), eval mode, seeded; BatchNorm statistics made non-trivial."""
    out = {}
    for k, (arch, dataset) in enumerate(ZOO):
        torch.manual_seed(k)
        m = build_model(arch, dataset, class_names=CLASSES)
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
        out[(arch, dataset)] = m.eval()
    return out


def test_normalize_exact_numbers():
    norm = Normalize([0.5, 0.25, 0.0], [0.25, 0.5, 2.0])
    x = torch.ones(2, 3, 4, 4)  # a constant white image
    y = norm(x)
    assert torch.equal(y[:, 0], torch.full((2, 4, 4), 2.0))  # (1 - 0.5) / 0.25
    assert torch.equal(y[:, 1], torch.full((2, 4, 4), 1.5))  # (1 - 0.25) / 0.5
    assert torch.equal(y[:, 2], torch.full((2, 4, 4), 0.5))  # (1 - 0) / 2
    assert norm.state_dict() == {}  # statistics are architecture, not checkpoint
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        norm(torch.ones(3, 4, 4))
    with pytest.raises(ValueError, match="positive"):
        Normalize([0.0], [0.0])


@pytest.mark.parametrize("arch, dataset", ZOO)
def test_zoo_structure_and_schedule(models, arch, dataset):
    m = models[(arch, dataset)]
    first = next(iter(m.children()))
    assert isinstance(first, Normalize) and list(named_layers(m))[0] == "normalize"
    assert m.stage_names == [f"features.stage{k}" for k in range(1, 6)] == stage_layers(m)
    assert m.dense_name == dense_layer(m) == "head.fc1"
    assert isinstance(named_layers(m)["head.fc1"], torch.nn.Linear)
    assert m.arch == arch and m.dataset == dataset and m.class_names == CLASSES
    relus = [mod for mod in m.modules() if isinstance(mod, torch.nn.ReLU)]
    assert relus and all(r.inplace for r in relus)
    x = torch.rand(2, *m.input_shape)
    with capture(m, m.stage_names + [m.dense_name], detach=True) as rec:
        logits = m(x)
    assert logits.shape == (2, len(CLASSES))
    sides = tuple(rec[n].shape[-1] for n in m.stage_names)
    assert sides == SCHEDULES[(arch, dataset)]
    assert all(rec[n].shape[-2] == rec[n].shape[-1] for n in m.stage_names)
    assert all(float(rec[n].min()) >= 0 for n in m.stage_names)  # post-ReLU
    assert rec["head.fc1"].shape == (2, 128)
    assert count_hooks(m) == 0


@pytest.mark.parametrize("arch, dataset", ZOO)
def test_run_segment_equals_full_forward(models, arch, dataset):
    m = models[(arch, dataset)]
    x = torch.rand(3, *m.input_shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), capture(m, m.stage_names, detach=True) as rec:
        logits = m(x)
    names = m.stage_names
    with torch.no_grad():
        for i, start in enumerate(names):
            out = m.run_segment(rec[start].clone(), start)
            torch.testing.assert_close(out, logits, rtol=1e-5, atol=1e-5)
            for stop in names[i + 1:]:
                out = m.run_segment(rec[start].clone(), start, stop)
                torch.testing.assert_close(out, rec[stop], rtol=1e-5, atol=1e-5)


def test_run_segment_errors(models):
    m = models[("vgg", "conceptworld")]
    a = torch.zeros(1, 32, 16, 16)
    with pytest.raises(ValueError, match="not a stage"):
        m.run_segment(a, "features.pool2")
    with pytest.raises(ValueError, match="must be a stage after"):
        m.run_segment(a, "features.stage3", "features.stage3")
    with pytest.raises(ValueError, match="must be a stage after"):
        m.run_segment(a, "features.stage3", "features.stage1")
    with pytest.raises(ValueError, match="not a stage"):
        m.run_segment(a, "features.stage3", "head.fc1")


def test_run_segment_gradients_reach_acts(models):
    m = models[("resnet", "conceptworld")]
    c3 = m.features.stage3.conv2.out_channels
    acts = torch.rand(2, c3, 16, 16, requires_grad=True)
    m.run_segment(acts, "features.stage3")[:, 1].sum().backward()
    assert acts.grad is not None and acts.grad.shape == acts.shape


def test_build_model_errors():
    with pytest.raises(ValueError, match="valid archs: vgg, resnet, inception, alexnet"):
        build_model("densenet", "conceptworld", class_names=CLASSES)
    with pytest.raises(ValueError, match="valid datasets: conceptworld, fashion-mnist"):
        build_model("vgg", "cifar", class_names=CLASSES)
    with pytest.raises(ValueError, match="5 channel counts"):
        build_model("vgg", "fashion-mnist", class_names=CLASSES, widths=(8, 8))


def test_unknown_model_names():
    with pytest.raises(ValueError) as info:
        load_model("vgg-imagenet")
    assert "vgg-conceptworld" in str(info.value) and "resnet50" in str(info.value)
    with pytest.raises(ValueError, match="Unknown weights"):
        load_model("alexnet", weights="NOPE")


@pytest.mark.parametrize("name", sorted(TORCHVISION_STAGES))
def test_torchvision_stage_names_exist(name):
    torch.manual_seed(0)
    m = load_model(name, weights=None, device="cpu")
    assert not m.training
    layers = named_layers(m)
    assert list(layers)[0] == "normalize"
    assert stage_layers(m) == TORCHVISION_STAGES[name]
    assert all(n in layers for n in stage_layers(m)) and dense_layer(m) in layers
    assert set(m.state_dict()) == set(m._net.state_dict())  # torchvision's keys, unchanged
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad(), capture(m, stage_layers(m), detach=True) as rec:
        out = m(x)
    assert out.shape == (1, 1000)
    sides = [rec[n].shape[-1] for n in stage_layers(m)]
    assert sides == sorted(sides, reverse=True) and sides[0] > sides[-1]  # resolution falls stage by stage


def test_torchvision_normalizes_first():
    m = load_model("alexnet", weights=None, device="cpu")
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        torch.testing.assert_close(m(x), m._net((x - mean) / std))


def test_torchvision_weights_not_cached(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(WeightsUnavailableError) as info:
        load_model("vgg16", weights="IMAGENET1K_V1")
    msg = str(info.value)
    assert "IMAGENET1K_V1" in msg and "vgg16" in msg and "weights=None" in msg and "\n" not in msg


def test_stage_layers_without_mapping():
    with pytest.raises(ValueError, match=r"no `stage_names`; pass layers=\[...\] explicitly"):
        stage_layers(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="pass the layer name explicitly"):
        dense_layer(torch.nn.Linear(2, 2))


def test_augment_shift_and_flip_by_hand():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(augment(x, gen, flip=False, shift=0), x)
    shifted = augment(x.repeat(64, 1, 1, 1), gen, flip=False, shift=1)
    # every output is the image moved by (dy, dx) in {-1, 0, 1}^2 with zeros shifted in
    for img in shifted[:, 0]:
        ok = False
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                ref = torch.nn.functional.pad(x[0, 0], (1, 1, 1, 1))[1 + dy:5 + dy, 1 + dx:5 + dx]
                ok |= torch.equal(img, ref)
        assert ok
    flipped = augment(x.repeat(64, 1, 1, 1), gen, flip=True, shift=0)
    assert all(torch.equal(f[0], x[0, 0]) or torch.equal(f[0], x[0, 0].flip(1)) for f in flipped)


def test_training_is_deterministic():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(128, 1, 28, 28, generator=gen)
    y = (x.mean((1, 2, 3)) > 0.5).long()  # a learnable toy label
    recipe = dict(RECIPES["fashion-mnist"], epochs=1, batch_size=8, class_names=CLASSES[:2] * 5)
    runs = [train_model("alexnet-fashion-mnist", (x, y), (x[:64], y[:64]), recipe, device=torch.device("cpu"),
                        progress=False) for _ in range(2)]
    (m1, info1), (m2, info2) = runs
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(a, b), k
    assert info1["test_accuracy"] == info2["test_accuracy"] and info1["n_train"] == 128 and not m1.training


# --------------------------------------------------------------------------------------------- checkpoints


@pytest.fixture
def tmp_ckpt(monkeypatch, tmp_path):
    monkeypatch.setattr(ckpt, "CHECKPOINT_DIR", tmp_path)
    return tmp_path


def test_checkpoint_roundtrip(tmp_ckpt):
    torch.manual_seed(0)
    m = build_model("alexnet", "fashion-mnist", class_names=CLASSES)
    entry = ckpt.save_checkpoint(m, "alexnet-fashion-mnist", {"arch": "alexnet", "dataset": "fashion-mnist",
                                                               "class_names": CLASSES, "test_accuracy": 0.5})
    manifest = json.loads((tmp_ckpt / "manifest.json").read_text())
    assert manifest["models"]["alexnet-fashion-mnist"]["sha256"] == entry["sha256"] == ckpt.sha256_file(
        tmp_ckpt / "alexnet-fashion-mnist.pt")
    loaded = load_model("alexnet-fashion-mnist", device="cpu")
    assert not loaded.training and loaded.class_names == CLASSES
    m.eval()
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(x), m(x))


def test_checkpoint_corrupted_and_missing(tmp_ckpt):
    with pytest.raises(CheckpointError, match="make models"):
        load_model("vgg-fashion-mnist")
    m = build_model("vgg", "fashion-mnist", class_names=CLASSES)
    ckpt.save_checkpoint(m, "vgg-fashion-mnist", {"class_names": CLASSES})
    path = tmp_ckpt / "vgg-fashion-mnist.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # flip one byte
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as info:
        load_model("vgg-fashion-mnist")
    msg = str(info.value)
    assert "corrupted" in msg and "make models" in msg and "git checkout" in msg
    path.unlink()
    with pytest.raises(CheckpointError, match="missing.*make models"):
        load_model("vgg-fashion-mnist")


# ------------------------------------------------------------------------------------- shipped checkpoints


def _shipped(name):
    entry = ckpt.read_manifest().get("models", {}).get(name)
    return entry is not None and (ckpt.CHECKPOINT_DIR / f"{name}.pt").is_file()


def test_shipped_checkpoints_are_small_and_listed():
    manifest = ckpt.read_manifest()
    for name, entry in manifest.get("models", {}).items():
        assert name in ZOO_NAMES
        path = ckpt.CHECKPOINT_DIR / entry["file"]
        assert path.stat().st_size < 2_000_000
        assert ckpt.sha256_file(path) == entry["sha256"]


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_shipped_checkpoint_accuracy(name, tmp_path):
    if not _shipped(name):
        pytest.skip(f"{name} has no shipped checkpoint yet (make models)")
    model = load_model(name, device="cpu")
    from xailib.data import load_dataset

    dataset = model.dataset
    try:
        test = load_dataset(dataset, "test", n=500, seed=0)
    except (FileNotFoundError, ImportError) as exc:
        pytest.skip(f"{dataset} data not available: {exc}")
    acc = evaluate(model, test.images, torch.as_tensor(test.labels))
    assert acc >= 0.85, f"{name}: accuracy {acc:.3f} on 500 test images"
    # the copy is byte-identical, so the hash check passes on it too
    shutil.copy(ckpt.CHECKPOINT_DIR / f"{name}.pt", tmp_path / "copy.pt")
    assert ckpt.sha256_file(tmp_path / "copy.pt") == ckpt.read_manifest()["models"][name]["sha256"]


@pytest.mark.parametrize("shape", [(1, 1, 28, 28), (3, 64, 64), (1, 3, 32, 32)])
def test_wrong_image_shape_is_one_actionable_line(shape):
    model = build_model("vgg", "conceptworld")
    with pytest.raises(ValueError) as info:
        model(torch.rand(*shape))
    message = str(info.value)
    assert "\n" not in message and str(shape) in message
    assert "x.unsqueeze(0)" in message or "resize the images" in message


def test_train_biased_model_bad_input_and_a_short_run():
    """The planted-bias trainer (used by gap/02's Figs. 12-13 study): clear errors, and a short deterministic run
    that records its bias and leaves the model in eval mode."""
    from xailib.data.conceptworld import BiasSpec
    from xailib.models.train import RECIPES, train_biased_model

    with pytest.raises(TypeError, match="BiasSpec"):
        train_biased_model(bias={"context": "water"})
    with pytest.raises(ValueError, match="at least one batch"):
        train_biased_model(n_train=RECIPES["conceptworld"]["batch_size"] - 1)
    with pytest.raises(ValueError, match="epochs must be a positive int"):
        train_biased_model(epochs=0)
    bias = BiasSpec(context="water", target_class="cow", rate=1.0, other_rate=0.0)
    n = RECIPES["conceptworld"]["batch_size"]
    model, info = train_biased_model("alexnet", bias=bias, n_train=n, n_test=32, epochs=1, seed=3)
    assert not model.training and model.name == "alexnet-conceptworld"
    assert info["bias"] == {"context": "water", "target_class": "cow", "rate": 1.0, "other_rate": 0.0}
    assert 0.0 <= info["test_accuracy"] <= 1.0
