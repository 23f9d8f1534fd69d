"""Tests of the dataset registry, the Fashion-MNIST idx reader and the ImageNet-folder loader.

The idx files are written byte by byte here, so every expected number can be checked by hand.
"""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

import xailib.data.fashion_mnist as fm
from xailib.data import DATASETS, dataset_info, load_dataset
from xailib.data.imagenet import ImageFolderDataset


def idx_bytes(array: np.ndarray) -> bytes:
    """Hand-made idx: magic 0x00 0x00 0x08 ndim, big-endian int32 sizes, then uint8 data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">i", s) for s in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_fake_fmnist(folder, n_train=6, n_test=4, gz=True):
    """Four idx files; image i of a split has every pixel equal to 10 * i, label i % 10."""
    folder.mkdir(parents=True, exist_ok=True)
    for stem_img, stem_lab, n in [("train-images-idx3-ubyte", "train-labels-idx1-ubyte", n_train),
                                  ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", n_test)]:
        images = np.stack([np.full((28, 28), 10 * i) for i in range(n)])
        labels = np.arange(n) % 10
        for stem, arr in [(stem_img, images), (stem_lab, labels)]:
            data = idx_bytes(arr)
            if gz:
                with gzip.open(folder / f"{stem}.gz", "wb") as fh:
                    fh.write(data)
            else:
                (folder / stem).write_bytes(data)
    return folder


@pytest.fixture
def nowhere(monkeypatch, tmp_path):
    """No Fashion-MNIST anywhere: no XAILIB_DATA, empty Debian and cache folders."""
    monkeypatch.delenv("XAILIB_DATA", raising=False)
    monkeypatch.setattr(fm, "DEBIAN_DIR", tmp_path / "no-debian")
    monkeypatch.setattr(fm, "CACHE_DIR", tmp_path / "no-cache")
    return tmp_path


def test_registry_names_and_unknown_name():
    assert DATASETS == ("conceptworld", "conceptworld-hard", "fashion-mnist", "imagenet-folder")
    with pytest.raises(ValueError, match="valid names: conceptworld, conceptworld-hard, fashion-mnist, imagenet-folder"):
        load_dataset("cifar10")
    with pytest.raises(ValueError, match="valid names"):
        dataset_info("mnist")


def test_dataset_info_fashion_mnist():
    info = dataset_info("fashion-mnist")
    assert info.input_shape == (1, 28, 28)
    assert info.n_classes == 10 and info.class_names[0] == "T-shirt/top" and info.class_names[9] == "Ankle boot"


def test_read_idx_hand_made_bytes(tmp_path):
    # magic 00 00 08 02, shape (2, 3), data 0..5
    raw = bytes([0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3, 0, 1, 2, 3, 4, 5])
    (tmp_path / "a").write_bytes(raw)
    arr = fm.read_idx(tmp_path / "a")
    assert arr.dtype == np.uint8 and arr.shape == (2, 3)
    assert arr.tolist() == [[0, 1, 2], [3, 4, 5]]


@pytest.mark.parametrize(
    "raw, message",
    [
        (bytes([0, 0, 0x42, 1, 0, 0, 0, 1, 7]), "bad magic number"),
        (bytes([0, 0, 8, 1, 0, 0, 0, 5, 1, 2]), "header says shape"),  # 5 promised, 2 present
        (bytes([0, 0, 8, 2, 0, 0]), "truncated"),
        (b"", "bad magic number"),
    ],
)
def test_read_idx_corrupted(tmp_path, raw, message):
    (tmp_path / "bad").write_bytes(raw)
    with pytest.raises(ValueError, match=message):
        fm.read_idx(tmp_path / "bad")


def test_read_idx_bad_gzip(tmp_path):
    (tmp_path / "x.gz").write_bytes(b"this is not gzip")
    with pytest.raises(ValueError, match="corrupted"):
        fm.read_idx(tmp_path / "x.gz")


def test_read_idx_wrong_ndim(tmp_path):
    (tmp_path / "lab").write_bytes(idx_bytes(np.arange(3)))
    with pytest.raises(ValueError, match="1-d array, expected 3-d"):
        fm.read_idx(tmp_path / "lab", expect_ndim=3)


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_from_root(tmp_path, nowhere, gz):
    write_fake_fmnist(tmp_path / "fm", gz=gz)
    ds = load_dataset("fashion-mnist", "train", root=tmp_path / "fm")
    assert len(ds) == 6 and ds.images.shape == (6, 1, 28, 28) and ds.images.dtype == torch.float32
    image, label = ds[3]
    assert label == 3
    assert torch.all(image == 30 / 255)  # pixel value 10 * 3, scaled to [0, 1]
    test = load_dataset("fashion-mnist", "test", root=tmp_path / "fm")
    assert test.labels.tolist() == [0, 1, 2, 3]


def test_fashion_mnist_env_var_and_subfolder(tmp_path, nowhere, monkeypatch):
    write_fake_fmnist(tmp_path / "data" / "fashion-mnist")
    monkeypatch.setenv("XAILIB_DATA", str(tmp_path / "data"))
    assert len(load_dataset("fashion-mnist", "test")) == 4


def test_fashion_mnist_subset_is_deterministic(tmp_path, nowhere):
    write_fake_fmnist(tmp_path / "fm", n_train=25)
    a = load_dataset("fashion-mnist", n=10, seed=3, root=tmp_path / "fm")
    b = load_dataset("fashion-mnist", n=10, seed=3, root=tmp_path / "fm")
    c = load_dataset("fashion-mnist", n=10, seed=4, root=tmp_path / "fm")
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)
    # image i has pixels 10 * i (<= 240), so the chosen indices can be read from the pixels: kept in file order
    idx = (a.images[:, 0, 0, 0] * 255 / 10).round().long()
    assert idx.tolist() == sorted(idx.tolist()) and len(set(idx.tolist())) == 10
    assert torch.equal(a.labels, idx % 10)
    with pytest.raises(ValueError, match="more than the 25 images"):
        load_dataset("fashion-mnist", n=26, root=tmp_path / "fm")
    with pytest.raises(ValueError, match="positive int"):
        load_dataset("fashion-mnist", n=0, root=tmp_path / "fm")


def test_fashion_mnist_mismatched_counts(tmp_path, nowhere):
    folder = write_fake_fmnist(tmp_path / "fm")
    with gzip.open(folder / "train-labels-idx1-ubyte.gz", "wb") as fh:
        fh.write(idx_bytes(np.arange(5)))
    with pytest.raises(ValueError, match="6 images but 5 labels"):
        load_dataset("fashion-mnist", root=folder)


def test_fashion_mnist_missing_everywhere(nowhere):
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("fashion-mnist")
    msg = str(info.value)
    assert "XAILIB_DATA" in msg and "apt-get install dataset-fashion-mnist" in msg and "download=True" in msg
    assert "\n" not in msg


def test_fashion_mnist_bad_split():
    with pytest.raises(ValueError, match="'train' or 'test'"):
        load_dataset("fashion-mnist", "val")


@pytest.mark.skipif(not fm._has_files(fm.DEBIAN_DIR), reason="dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_subset():
    ds = load_dataset("fashion-mnist", "test", n=100, seed=0)
    assert ds.images.shape == (100, 1, 28, 28)
    assert 0.0 <= float(ds.images.min()) and float(ds.images.max()) <= 1.0
    assert set(ds.labels.tolist()) <= set(range(10)) and len(set(ds.labels.tolist())) == 10


def _write_image_folder(root, classes=("n01", "n02"), per_class=2, size=(300, 260)):
    from PIL import Image

    gen = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            arr = gen.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
            ext = ".JPEG" if i % 2 == 0 else ".png"
            Image.fromarray(arr).save(root / c / f"img{i}{ext}")
    return root


def test_imagenet_folder_standin(tmp_path):
    root = _write_image_folder(tmp_path / "val", classes=("n02", "n01"), per_class=3)
    ds = load_dataset("imagenet-folder", root=root)
    assert ds.class_names == ["n01", "n02"] and len(ds) == 6
    image, label = ds[4]
    assert image.shape == (3, 224, 224) and label == 1
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert dataset_info("imagenet-folder", root=root).class_names == ("n01", "n02")
    sub = load_dataset("imagenet-folder", root=root, n=2, seed=1)
    assert len(sub) == 2


def test_imagenet_folder_uniform_image_is_exact(tmp_path):
    from PIL import Image

    (tmp_path / "cls").mkdir()
    Image.new("RGB", (400, 300), (255, 0, 51)).save(tmp_path / "cls" / "a.png")
    image, _ = load_dataset("imagenet-folder", root=tmp_path)[0]
    assert torch.allclose(image[:, 100, 100], torch.tensor([1.0, 0.0, 0.2]))


def test_imagenet_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="needs root="):
        load_dataset("imagenet-folder")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset("imagenet-folder", root=tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no class sub-folders"):
        load_dataset("imagenet-folder", root=tmp_path / "empty")
    from PIL import Image

    (tmp_path / "flat").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "flat" / "x.jpg")
    with pytest.raises(ValueError, match="move them into one sub-folder per class"):
        ImageFolderDataset(tmp_path / "flat")
    (tmp_path / "noimg" / "a").mkdir(parents=True)
    (tmp_path / "noimg" / "a" / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match="but no images"):
        ImageFolderDataset(tmp_path / "noimg")
