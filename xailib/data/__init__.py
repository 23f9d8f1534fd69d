"""Datasets by name: ConceptWorld (procedural, with ground-truth concepts), Fashion-MNIST, ImageNet folders;
and concept sets for the concept-based methods.

Every dataset yields ``(image, label)`` with images as float tensors in [0, 1]; normalisation lives in the
models (their first layer is :class:`xailib.models.Normalize`).

>>> from xailib.data import load_dataset, dataset_info
>>> test = load_dataset("fashion-mnist", "test", n=500)
>>> dataset_info("fashion-mnist").input_shape
(1, 28, 28)

Concept sets (:mod:`xailib.data.concepts`): images that show one concept, with its masks where known, from
ConceptWorld, a folder in TCAV's layout, or tensors; and random benchmark sets:

>>> from xailib.data import ConceptSet, random_sets
>>> stripes = ConceptSet.from_folder("concepts/", "stripes", n=50, seed=0, size=224)  # doctest: +SKIP
>>> randoms = random_sets("concepts/", n_sets=10, n=50, seed=0)  # doctest: +SKIP

Deterministic subsets everywhere come from :func:`xailib.data.sampling.subset_indices`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from xailib.data.concepts import ConceptFolders, ConceptSet, list_concepts, random_sets
from xailib.data.interventions import concept_curves, intervention_effects, intervention_importance, random_order
from xailib.data.sampling import subset_indices
from xailib.data.superpixels import (SegmentConcepts, SegmentSet, cluster_concepts, concept_masks, segment,
                                     segment_curves)

__all__ = ["DATASETS", "load_dataset", "dataset_info", "DatasetInfo", "InMemory", "in_memory",
           "ConceptSet", "ConceptFolders", "random_sets", "list_concepts", "subset_indices",
           "SegmentSet", "SegmentConcepts", "segment", "cluster_concepts", "concept_masks", "segment_curves",
           "intervention_effects", "intervention_importance", "concept_curves", "random_order"]

#: Names accepted by :func:`load_dataset`.
#: ``"conceptworld-hard"`` is ConceptWorld's hard setting (``ConceptWorld(setting="hard")``: clutter, occlusion,
#: small objects, low contrast), the same as ``load_dataset("conceptworld", setting="hard")``.
DATASETS: tuple[str, ...] = ("conceptworld", "conceptworld-hard", "fashion-mnist", "imagenet-folder")


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset.

    Attributes
    ----------
    name : str
    input_shape : tuple of int
        ``(C, H, W)`` of one image.
    class_names : tuple of str or None
        Indexed by label; ``None`` for an image folder whose root was not given.
    n_classes : int or None
    """

    name: str
    input_shape: tuple[int, int, int]
    class_names: tuple[str, ...] | None
    n_classes: int | None


def _check_name(name: object) -> str:
    if not isinstance(name, str) or name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; valid names: {', '.join(DATASETS)}.")
    return name


def load_dataset(name: str, split: str = "train", *, n: int | None = None, seed: int = 0,
                 root: str | os.PathLike | None = None, **kw) -> Dataset:
    """Load a dataset by name.

    Parameters
    ----------
    name : {"conceptworld", "conceptworld-hard", "fashion-mnist", "imagenet-folder"}
    split : str
        ``"train"`` or ``"test"`` (ConceptWorld and Fashion-MNIST); ignored for an image folder (the
        folder is the split).
    n : int, optional
        Number of images: ConceptWorld generates ``n`` images; the others keep a deterministic random
        subset of ``n`` (all when None).
    seed : int
        Seed of the generation (ConceptWorld) or of the subset.
    root : path-like, optional
        Fashion-MNIST: a folder to look in first; image folder: the folder itself (required).
    **kw
        Passed on: ConceptWorld ``size=64, bias=None, setting="default"`` (or ``"hard"``); Fashion-MNIST ``download=False``; image folder
        ``resize=256, crop=224, transform=None``.

    Returns
    -------
    torch.utils.data.Dataset
        Items ``(image [C, H, W] float in [0, 1], label int)``; ``.images``/``.labels`` tensors for the
        in-memory datasets and ``.class_names`` for all.

    Raises
    ------
    ValueError
        For an unknown name (the message lists the valid ones) or bad arguments.
    """
    name = _check_name(name)
    if name in ("conceptworld", "conceptworld-hard"):
        from xailib.data.conceptworld import ConceptWorldDataset  # lazy: written alongside this module

        if name == "conceptworld-hard":
            if kw.get("setting", "hard") != "hard":
                raise ValueError(f"'conceptworld-hard' is the hard setting; got setting={kw['setting']!r}. Use "
                                 "load_dataset('conceptworld', setting=...) for another setting.")
            kw["setting"] = "hard"
        if root is not None:
            raise ValueError("ConceptWorld is generated, not read from disk; leave root=None.")
        kw.setdefault("size", 64)
        kw.setdefault("bias", None)
        return ConceptWorldDataset(split=split, n=n, seed=seed, **kw)
    if name == "fashion-mnist":
        from xailib.data.fashion_mnist import FashionMNIST

        return FashionMNIST(split, n=n, seed=seed, root=root, **kw)
    from xailib.data.imagenet import ImageFolderDataset

    return ImageFolderDataset(root, n=n, seed=seed, **kw)


def dataset_info(name: str, *, root: str | os.PathLike | None = None, size: int = 64) -> DatasetInfo:
    """Input shape and class names of a dataset, without loading its images.

    Parameters
    ----------
    name : str
        One of :data:`DATASETS`.
    root : path-like, optional
        For ``"imagenet-folder"``: the folder whose sub-folder names are the classes.
    size : int
        ConceptWorld image side.
    """
    name = _check_name(name)
    if name == "fashion-mnist":
        from xailib.data.fashion_mnist import CLASS_NAMES

        return DatasetInfo(name, (1, 28, 28), tuple(CLASS_NAMES), len(CLASS_NAMES))
    if name in ("conceptworld", "conceptworld-hard"):
        from xailib.data import conceptworld

        names = getattr(conceptworld, "CLASS_NAMES", None)
        if names is None:
            names = conceptworld.ConceptWorldDataset(split="test", n=1, seed=0, size=size).class_names
        return DatasetInfo(name, (3, size, size), tuple(names), len(names))
    if root is None:
        return DatasetInfo(name, (3, 224, 224), None, None)
    from pathlib import Path

    classes = tuple(sorted(d.name for d in Path(root).iterdir() if d.is_dir() and not d.name.startswith(".")))
    return DatasetInfo(name, (3, 224, 224), classes, len(classes))


class InMemory(Dataset):
    """A dataset held as tensors: ``images [N, C, H, W]`` (float in [0, 1]), ``labels [N]``, ``class_names``.

    Made by :func:`in_memory` from a dataset that reads its images lazily (an image folder), for code that
    needs the ``.images``/``.labels`` tensors the in-memory datasets have.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, class_names):
        if images.dim() != 4 or labels.shape != (images.shape[0],):
            raise ValueError(f"images must be [N, C, H, W] and labels [N]; got {tuple(images.shape)} and "
                             f"{tuple(labels.shape)}.")
        self.images, self.labels, self.class_names = images, labels, list(class_names)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i: int):
        return self.images[i], int(self.labels[i])


def in_memory(dataset) -> Dataset:
    """``dataset`` itself when it already holds ``.images``/``.labels`` tensors, else an :class:`InMemory` copy.

    Loads every image of a lazy dataset: take a subset first (``load_dataset(..., n=...)``) for large folders.
    """
    images, labels = getattr(dataset, "images", None), getattr(dataset, "labels", None)
    if isinstance(images, torch.Tensor) and isinstance(labels, torch.Tensor):
        return dataset
    if len(dataset) == 0:
        raise ValueError("The dataset is empty; nothing to load into memory.")
    items = [dataset[i] for i in range(len(dataset))]
    return InMemory(torch.stack([torch.as_tensor(x, dtype=torch.float32) for x, _ in items]),
                    torch.tensor([int(y) for _, y in items], dtype=torch.int64),
                    getattr(dataset, "class_names", []))
