"""Images in the ImageNet folder layout: ``root/<wnid or class name>/*.JPEG``.

Preprocessing is torchvision's evaluation transform without normalisation: ``Resize(256)``,
``CenterCrop(224)``, ``ToTensor()``, so images are ``[3, 224, 224]`` in [0, 1]. The ImageNet mean/std
normalisation lives in the model (:func:`xailib.models.load_model` puts a ``Normalize`` layer first).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch.utils.data import Dataset

from xailib.data.sampling import subset_indices

__all__ = ["ImageFolderDataset", "IMAGE_EXTENSIONS", "eval_transform", "mask_transform", "image_files",
           "load_image"]

#: File extensions read as images (compared lower-cased, so ``.JPEG`` and ``.Png`` count too).
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".webp")


def eval_transform(resize: int = 256, crop: int = 224):
    """torchvision's ImageNet evaluation transform, without ``Normalize``: PIL image -> ``[3, crop, crop]`` in [0, 1]."""
    from torchvision import transforms

    return transforms.Compose([transforms.Resize(resize), transforms.CenterCrop(crop), transforms.ToTensor()])


def mask_transform(resize: int = 256, crop: int = 224):
    """The geometry of :func:`eval_transform` for masks: PIL image -> ``[1, crop, crop]`` uint8.

    ``Resize(resize)`` with nearest-neighbour interpolation (no grey levels appear on the border), the same
    ``CenterCrop(crop)``, then ``PILToTensor`` (the grey values 0..255 themselves, not divided by 255). A mask
    and its image of the same size, passed through this and :func:`eval_transform`, stay registered pixel for
    pixel. Give it a single-channel (``"L"``) image.
    """
    from torchvision import transforms

    return transforms.Compose([transforms.Resize(resize, interpolation=transforms.InterpolationMode.NEAREST),
                               transforms.CenterCrop(crop), transforms.PILToTensor()])


def image_files(folder: str | os.PathLike) -> list[Path]:
    """The image files directly in ``folder``, sorted by path.

    A file counts when its extension, lower-cased, is in :data:`IMAGE_EXTENSIONS`; other files (a README,
    ``.DS_Store``) and sub-folders are skipped. The folder must exist.
    """
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def load_image(path: str | os.PathLike, transform, mode: str = "RGB"):
    """Open one image file, convert it to PIL ``mode`` (``"RGB"``, or ``"L"`` for grey) and apply ``transform``.

    With :func:`eval_transform` the result is ``[3, crop, crop]`` (``"RGB"``) or ``[1, crop, crop]`` (``"L"``)
    in [0, 1]. PIL's errors (``PIL.UnidentifiedImageError`` for a file that is not an image) pass through.
    """
    from PIL import Image

    with Image.open(path) as img:
        return transform(img.convert(mode))


class ImageFolderDataset(Dataset):
    """Images under ``root/<class>/``, one sub-folder per class (sorted names give labels 0, 1, ...).

    Parameters
    ----------
    root : path-like
        Folder whose sub-folders are the classes (ImageNet wnids such as ``n01440764`` or plain names).
    n : int, optional
        Keep a deterministic random subset of ``n`` images, chosen by ``seed``.
    seed : int
    resize, crop : int
        Shorter side after resizing, and the centre crop (default 256 and 224, as for ImageNet).
    transform : callable, optional
        Replaces the default transform (PIL image -> tensor).

    Attributes
    ----------
    class_names : list of str
        Sub-folder names, sorted; label ``k`` is ``class_names[k]``.
    samples : list of (Path, int)
        Image files and their labels.

    Items are ``(image [3, crop, crop] in [0, 1], label)``.

    Raises
    ------
    FileNotFoundError
        If ``root`` does not exist.
    ValueError
        If ``root`` is not in the class-folder layout or holds no images.
    """

    def __init__(self, root: str | os.PathLike | None, *, n: int | None = None, seed: int = 0,
                 resize: int = 256, crop: int = 224, transform=None):
        layout = "root/<class or wnid>/<image>.JPEG, e.g. root/n01440764/ILSVRC2012_val_00000293.JPEG"
        if root is None:
            raise ValueError(f"load_dataset('imagenet-folder') needs root=, a folder laid out as {layout}.")
        root = Path(root).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"Image folder {root} does not exist; pass root= a folder laid out as {layout}.")
        classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        loose = [p.name for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
        if not classes:
            extra = f" It holds {len(loose)} images directly; move them into one sub-folder per class." if loose else ""
            raise ValueError(f"{root} has no class sub-folders; expected {layout}.{extra}")
        samples = []
        for label, name in enumerate(classes):
            files = image_files(root / name)
            samples += [(p, label) for p in files]
        if not samples:
            raise ValueError(
                f"{root} has class sub-folders ({', '.join(classes[:5])}{', ...' if len(classes) > 5 else ''}) "
                f"but no images with extensions {', '.join(IMAGE_EXTENSIONS)} in them; expected {layout}."
            )
        idx = subset_indices(len(samples), n, seed, of=f"the folder {root}")
        self.root = root
        self.class_names = classes
        self.samples = [samples[i] for i in idx]
        self.labels = torch.tensor([s[1] for s in self.samples], dtype=torch.int64)
        self.transform = transform if transform is not None else eval_transform(resize, crop)
        self.input_shape = (3, crop, crop)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[i]
        return load_image(path, self.transform), label

    def __repr__(self) -> str:
        return f"ImageFolderDataset(root='{self.root}', n={len(self)}, classes={len(self.class_names)})"
