"""What a notebook runs on, picked from its parameters: the zoo on its test splits (the default path), or one
torchvision classifier on an ImageNet-layout folder (the real-scale path).

A notebook makes one :class:`Subjects` from its ``model``, ``weights`` and ``data_root`` parameters and asks it
for models and images wherever it used to call :func:`~xailib.models.load_model` and
:func:`~xailib.data.load_dataset` itself. With the three left empty every call is exactly the call it replaces,
so the default path gives the same numbers; with ``model`` and ``data_root`` set, every model asked for is the
torchvision classifier and every image set a subset of the folder::

    subjects = Subjects(model, weights, data_root, device=run.device, seed=seed)
    net = subjects.model("vgg-conceptworld")           # the zoo model, or the torchvision classifier
    test = subjects.data(net.dataset, 200)             # its test split, or 200 images of the folder (in memory)
    if not subjects.skip("Fig. 7(b)", "it trains the zoo architecture on permuted labels", "..."):
        ...                                            # a section that needs what only the zoo has

Labels of a folder are its sorted sub-folder indices. They are the model's class indices only when the folder
holds one sub-folder per output of the model in the model's order: for torchvision's ImageNet classifiers, all
1000 wnids of a real ImageNet val folder (their sorted order is torchvision's class order).
:attr:`Subjects.label_space_matches` says whether the folder has as many classes as the model has outputs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import nn

from xailib.checks import check_positive_int

__all__ = ["Subjects"]

_TORCHVISION_HINT = ("a torchvision classifier with stage names: vgg16, resnet50, googlenet, alexnet "
                     "(or another VGG/ResNet)")
_LAYOUT = "an ImageNet-layout folder, root/<wnid>/*.JPEG (e.g. /data/imagenet/val)"


class Subjects:
    """The models and images of one notebook run: the zoo, or a torchvision classifier on an image folder.

    Parameters
    ----------
    model : str
        ``""`` for the zoo (the default path); else a torchvision classifier name (``"vgg16"``,
        ``"resnet50"``, ``"googlenet"``, ``"alexnet"``, ...), the real-scale path, which needs ``data_root``.
    weights : str
        torchvision weights name in the torch cache (``"IMAGENET1K_V1"``; nothing is downloaded); ``""``: random
        initialisation.
    data_root : str or path-like
        ``""`` for the zoo; else the ImageNet-layout folder the real-scale path reads.
    device : str
        Where models go (``"auto"``, ``"cpu"``, ``"cuda"``).
    seed : int
        Seed of the test subsets (zoo) and of the folder subsets (real scale).
    image_size : int
        Real scale: side of the centre crop of the folder's images, resized first to ``image_size * 256 / 224``
        (224 and 256, torchvision's ImageNet evaluation transform, by default). torchvision's classifiers take
        any size; smaller images are faster (the tests use 64).
    verbose : bool
        On the real-scale path, print what the notebook runs on and each zoo model it stands in for.

    Raises
    ------
    ValueError
        ``model`` without ``data_root`` or the other way round, ``weights`` without ``model``, a zoo name as
        ``model``, a classifier without stage names, or a bad ``image_size``.
    FileNotFoundError, WeightsUnavailableError
        A missing folder, or weights not in the torch cache.
    """

    def __init__(self, model: str = "", weights: str = "", data_root: str | os.PathLike = "", *,
                 device: str = "auto", seed: int = 0, image_size: int = 224, verbose: bool = True):
        from xailib.models import ZOO_NAMES

        model, weights, data_root = model or "", weights or "", str(data_root or "")
        self.device, self.seed, self.verbose = device, seed, verbose
        self.image_size = check_positive_int(image_size, "image_size", hint=" (pixels, e.g. 224)")
        self.real = bool(model or data_root)
        self.net: nn.Module | None = None
        self.folder = None
        if not self.real:
            if weights:
                raise ValueError(f"weights={weights!r} is for the real-scale path: set model= to {_TORCHVISION_HINT} "
                                 f"and data_root= to {_LAYOUT}; leave weights empty for the zoo.")
            return
        if model in ZOO_NAMES:
            raise ValueError(f"model={model!r} is a zoo model; model= takes {_TORCHVISION_HINT} for the real-scale "
                             "path. Zoo models are chosen with the notebook's own parameters (see its parameters "
                             "cell); leave model empty for them.")
        if not model:
            raise ValueError(f"data_root={data_root!r} is the real-scale path and needs model=, {_TORCHVISION_HINT} "
                             "(e.g. -p model vgg16 -p weights IMAGENET1K_V1); leave data_root empty for the zoo.")
        if not data_root:
            raise ValueError(f"model={model!r} is the real-scale path and needs data_root=, {_LAYOUT} "
                             "(e.g. -p data_root /data/imagenet/val); leave model empty for the zoo.")
        from xailib.data import load_dataset
        from xailib.models import load_model

        self.folder = load_dataset("imagenet-folder", root=data_root, **self._crop())  # validates the layout
        self.net = load_model(model, device=device, weights=weights or None)
        if not getattr(self.net, "stage_names", None):
            raise ValueError(f"model={model!r} has no stage names, and these analyses decompose along the five stages "
                             f"of a classifier; use {_TORCHVISION_HINT}.")
        if verbose:
            print(self.describe())

    # -- what runs on what --------------------------------------------------------------------------------
    def _crop(self) -> dict:
        return {"resize": round(self.image_size * 256 / 224), "crop": self.image_size}

    @property
    def label_space_matches(self) -> bool:
        """Real scale: whether the folder has one class per output of the model (True on the zoo path)."""
        return not self.real or len(self.folder.class_names) == len(self.net.class_names)

    def describe(self) -> str:
        """One paragraph: the model, its weights, the folder, and what its labels mean."""
        if not self.real:
            return "zoo models on their test splits"
        classes, outputs = len(self.folder.class_names), len(self.net.class_names)
        labels = ("it has one class per output of the model: its labels are the model's class indices if its "
                  "sub-folders are the model's classes in order (a real ImageNet val folder's wnids are)"
                  if self.label_space_matches else
                  f"its labels (sub-folder indices 0..{classes - 1}) are not the model's {outputs} classes, so "
                  "accuracy, misclassified images and true-class decisions are not meaningful here: they need a real "
                  "ImageNet val folder with all 1000 wnids")
        weights = (f"weights {self.net.weights}" if self.net.weights else
                   "random init: untrained, so the explanations describe no trained model")
        return (f"real scale: {self.net.arch} ({weights}) on {self.folder.root}, {len(self.folder)} images of "
                f"{classes} classes at {self.image_size}x{self.image_size}; {labels}.")

    def label(self, zoo: str) -> str:
        """For captions: ``zoo`` on the zoo path (e.g. ``"ConceptWorld"``), ``"<model>, <folder>"`` on the
        real-scale path."""
        return f"{self.net.name}, {self.folder.root}" if self.real else zoo

    def names(self, zoo_names: Sequence[str]) -> list[str]:
        """The model names to run: ``zoo_names`` (stripped, empty ones dropped) or the one real-scale model."""
        names = [n.strip() for n in zoo_names if n.strip()]
        if not self.real:
            return names
        if self.verbose and names:
            print(f"real scale: {self.net.name} in place of {', '.join(names)}")
        return [self.net.name]

    def model(self, zoo_name: str) -> nn.Module:
        """:func:`~xailib.models.load_model` ``(zoo_name)`` on the zoo path; the torchvision classifier (loaded once)
        on the real-scale path."""
        if not self.real:
            from xailib.models import load_model

            return load_model(zoo_name, device=self.device)
        if self.verbose and zoo_name != self.net.name:
            print(f"real scale: {self.net.name} in place of {zoo_name}")
        return self.net

    def data(self, dataset: str, n: int, split: str = "test"):
        """``n`` images: :func:`~xailib.data.load_dataset` ``(dataset, split, n=n, seed=seed)`` on the zoo path; on
        the real-scale path a seeded subset of ``n`` images of the folder (all of them when it holds fewer), held in
        memory (:func:`xailib.data.in_memory`, ``.images [n, 3, S, S]``, ``.labels [n]``, ``.class_names``)."""
        from xailib.data import in_memory, load_dataset

        if not self.real:
            return load_dataset(dataset, split, n=n, seed=self.seed)
        n = check_positive_int(n, "n", hint=" (images)")
        total = len(self.folder)
        if n > total and self.verbose:
            print(f"real scale: the folder holds {total} images, fewer than the {n} asked for; all are used")
        subset = load_dataset("imagenet-folder", root=self.folder.root, n=None if n >= total else n, seed=self.seed,
                              **self._crop())
        return in_memory(subset)

    def cascade_layers(self, net: nn.Module) -> list[str] | None:
        """Groups of a cascading randomisation, top first: ``None`` on the zoo path (the default of
        :func:`xailib.baselines.randomization_layers`); the classifier's blocks on the real-scale path
        (:func:`~xailib.models.torchvision_models.torchvision_blocks`, reversed)."""
        if not self.real:
            return None
        from xailib.models.torchvision_models import torchvision_blocks

        return torchvision_blocks(net)[::-1]

    def class_names(self, net: nn.Module, data) -> list[str]:
        """Names indexed by class: the data set's on the zoo path, the model's outputs' on the real-scale path
        (predictions index them; folder labels name them only when :attr:`label_space_matches`)."""
        return list(net.class_names if self.real else data.class_names)

    def reference_labels(self, logits: torch.Tensor, labels: torch.Tensor, what: str) -> torch.Tensor:
        """The labels that say which images a model classifies correctly.

        ``labels`` on the zoo path and on a folder with the model's classes where the model gets at least one
        image right; otherwise (real scale only) the predictions ``logits.argmax(1)`` stand in, with a printed
        line that names ``what`` and says why.

        Parameters
        ----------
        logits : Tensor ``[N, C]``
        labels : LongTensor ``[N]``
        what : str
            The analysis that needs correct images, e.g. ``"Fig. 11"``.
        """
        pred = logits.argmax(1).cpu()
        if not self.real:
            return labels
        if not self.label_space_matches:
            why = (f"the folder's {len(self.folder.class_names)} classes are not the model's "
                   f"{len(self.net.class_names)} outputs, so its labels cannot say which images the model gets right")
        elif not bool((pred == labels).any()):
            why = f"the model classifies none of the {len(labels)} images correctly"
        else:
            return labels
        print(f"{what}: {why}; the predictions stand in for the labels (every image counts as correct). "
              "A real ImageNet val folder with all 1000 wnids and trained weights gives the paper's setting.")
        return pred

    def skip(self, what: str, why: str, need: str) -> bool:
        """True on the real-scale path, after printing that ``what`` is skipped, ``why``, and what it would ``need``;
        False on the zoo path (print nothing)."""
        if self.real:
            print(f"{what}: skipped on the real-scale path: {why}. It would need {need}.")
        return self.real

    def __repr__(self) -> str:
        return f"Subjects({self.describe()!r})"
