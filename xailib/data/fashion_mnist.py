"""Fashion-MNIST read straight from its idx ``.gz`` files with NumPy (no torchvision needed).

Where the files are looked for, in this order:

1. ``root=`` if given (a folder holding the four files, or a ``fashion-mnist/`` sub-folder);
2. ``$XAILIB_DATA`` (same layout);
3. Debian's package ``dataset-fashion-mnist`` (:data:`DEBIAN_DIR`, ``make data`` installs it);
4. files torchvision downloaded earlier into :data:`CACHE_DIR`;
5. with ``download=True`` only: torchvision's downloader into :data:`CACHE_DIR` (needs network).

If none of these works, one :class:`FileNotFoundError` names the three ways to get the data.

The idx format (http://yann.lecun.com/exdb/mnist/): a big-endian header ``0x00 0x00 dtype ndim``
(dtype ``0x08`` = unsigned byte), then ``ndim`` big-endian int32 sizes, then the data.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from xailib.data.sampling import subset_indices

__all__ = ["FashionMNIST", "CLASS_NAMES", "read_idx", "find_fashion_mnist", "DEBIAN_DIR", "CACHE_DIR"]

CLASS_NAMES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)

#: Where Debian's ``dataset-fashion-mnist`` package puts the files.
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
#: Where ``download=True`` lets torchvision put them (``CACHE_DIR/FashionMNIST/raw``).
CACHE_DIR = Path(os.path.expanduser("~/.cache/xailib"))

_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}

HOW_TO_GET = (
    "Fashion-MNIST was not found. Get it one of three ways: "
    "(1) set XAILIB_DATA=/path/to/folder holding {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz "
    "(or a fashion-mnist/ sub-folder of it); "
    "(2) `apt-get install dataset-fashion-mnist` (Debian/Ubuntu; or `make data`), which puts them in "
    f"{DEBIAN_DIR}; "
    "(3) allow torchvision to download it with load_dataset('fashion-mnist', download=True) "
    f"(needs network; files go to {CACHE_DIR / 'FashionMNIST' / 'raw'})."
)


def read_idx(path: str | os.PathLike, expect_ndim: int | None = None) -> np.ndarray:
    """Read one idx file (``.gz`` or plain) into a NumPy array.

    Parameters
    ----------
    path : path-like
    expect_ndim : int, optional
        Number of dimensions the file must have (3 for images ``[N, 28, 28]``, 1 for labels ``[N]``).

    Returns
    -------
    np.ndarray
        Shape given by the header, dtype given by the header (uint8 for Fashion-MNIST).

    Raises
    ------
    ValueError
        If the magic number, the number of dimensions or the data length does not match: the file is
        corrupted or not an idx file.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise ValueError(
            f"Could not read {path}: {exc}. The file is corrupted; delete it and get it again ({HOW_TO_GET})"
        ) from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(
            f"{path} is not an idx file (bad magic number {raw[:4].hex() or 'empty'}; expected 0000080N). "
            "The file is corrupted; delete it and get it again."
        )
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    if expect_ndim is not None and ndim != expect_ndim:
        raise ValueError(f"{path} holds a {ndim}-d array, expected {expect_ndim}-d; is it the right file?")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path} is truncated inside its header. The file is corrupted; get it again.")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"{path} has {len(raw) - header} data bytes but its header says shape {shape} "
            f"({expected} bytes). The file is corrupted or truncated; get it again."
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _has_files(folder: Path) -> bool:
    return all(
        (folder / f"{stem}.gz").is_file() or (folder / stem).is_file()
        for stems in _FILES.values()
        for stem in stems
    )


def _candidates(root: str | os.PathLike | None) -> list[Path]:
    bases = []
    if root is not None:
        bases.append(Path(root))
    env = os.environ.get("XAILIB_DATA")
    if env:
        bases.append(Path(env))
    out = []
    for b in bases:
        out += [b, b / "fashion-mnist", b / "FashionMNIST" / "raw"]
    out += [Path(DEBIAN_DIR), Path(CACHE_DIR) / "FashionMNIST" / "raw"]
    return out


def find_fashion_mnist(root: str | os.PathLike | None = None, download: bool = False) -> Path:
    """The folder holding the four Fashion-MNIST idx files (see the module docstring for the search order).

    Raises
    ------
    FileNotFoundError
        If no folder holds them (and ``download=True`` could not fetch them); the message names the three
        ways to get the data.
    """
    for folder in _candidates(root):
        if _has_files(folder):
            return folder
    if download:
        target = Path(CACHE_DIR)
        try:
            from torchvision.datasets import FashionMNIST as _TVFashionMNIST

            for train in (True, False):
                _TVFashionMNIST(str(target), train=train, download=True)
        except Exception as exc:  # no network, proxy errors, missing torchvision: all end in the one message
            raise FileNotFoundError(f"{HOW_TO_GET} (torchvision's download failed: {type(exc).__name__}: {exc})") from None
        folder = target / "FashionMNIST" / "raw"
        if _has_files(folder):
            return folder
    raise FileNotFoundError(HOW_TO_GET)


def _path(folder: Path, stem: str) -> Path:
    gz = folder / f"{stem}.gz"
    return gz if gz.is_file() else folder / stem


class FashionMNIST(Dataset):
    """Fashion-MNIST as float images in [0, 1].

    Parameters
    ----------
    split : {"train", "test"}
        60,000 training or 10,000 test images.
    n : int, optional
        Keep a deterministic random subset of ``n`` images (chosen by ``seed``; kept in file order).
    seed : int
        Seed of the subset.
    root : path-like, optional
        Folder to look in first (see :func:`find_fashion_mnist`).
    download : bool
        Let torchvision download the files if they are nowhere on disk (needs network).

    Attributes
    ----------
    images : torch.Tensor
        ``[N, 1, 28, 28]`` float32 in [0, 1].
    labels : torch.Tensor
        ``[N]`` int64 in 0..9.
    class_names : tuple of str
        The ten class names, indexed by label.

    Items are ``(image [1, 28, 28], label)``.
    """

    class_names = CLASS_NAMES
    input_shape = (1, 28, 28)

    def __init__(self, split: str = "train", *, n: int | None = None, seed: int = 0,
                 root: str | os.PathLike | None = None, download: bool = False):
        if split not in _FILES:
            raise ValueError(f"Unknown split {split!r} for Fashion-MNIST; use 'train' or 'test'.")
        folder = find_fashion_mnist(root, download=download)
        img_stem, lab_stem = _FILES[split]
        images = read_idx(_path(folder, img_stem), expect_ndim=3)
        labels = read_idx(_path(folder, lab_stem), expect_ndim=1)
        if images.shape[1:] != (28, 28):
            raise ValueError(f"{_path(folder, img_stem)} holds images of shape {images.shape[1:]}, expected (28, 28).")
        if len(images) != len(labels):
            raise ValueError(
                f"{folder}: {len(images)} images but {len(labels)} labels in the {split} split; a file is corrupted."
            )
        if labels.size and int(labels.max()) >= len(CLASS_NAMES):
            raise ValueError(f"{_path(folder, lab_stem)} holds label {int(labels.max())}; Fashion-MNIST has 10 classes.")
        self.root = folder
        self.split = split
        idx = subset_indices(len(labels), n, seed)
        self.images = torch.from_numpy(images[idx].astype(np.float32) / 255.0).unsqueeze(1)  # [N, 1, 28, 28]
        self.labels = torch.from_numpy(labels[idx].astype(np.int64))  # [N]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])

    def __repr__(self) -> str:
        return f"FashionMNIST(split={self.split!r}, n={len(self)}, root='{self.root}')"

