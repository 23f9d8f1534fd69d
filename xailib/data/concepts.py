"""Concept sets: images that show one concept, and where it is, for TCAV, AfI and MACE.

A :class:`ConceptSet` holds ``images [N, C, H, W]`` in [0, 1], optionally ``masks [N, H, W]`` (the pixels of
the concept), the seed it was drawn with and where it came from. Three sources:

* **ConceptWorld** (:meth:`ConceptSet.from_conceptworld`): the world's probe sets, whose masks are exact;
  random benchmark sets from :meth:`ConceptWorld.random_set`.
* **A folder in TCAV's layout** (:meth:`ConceptSet.from_folder`)::

      root/
        stripes/            the concept's images: *.png, *.jpg, *.jpeg (any case; also .bmp, .webp)
        stripes_masks/      optional: one <stem>.png per image of stripes/, non-zero where the concept is
        dots/
        random_0/           random benchmark sets, numbered from 0 (TCAV's random500_0, ... with
        random_1/           prefix="random500_")

  Files without an image extension (a README, ``.DS_Store``) are **skipped**; a file with an image extension
  that cannot be read as an image **raises** ``ValueError`` naming it. Images are resized and centre-cropped
  with the ImageNet evaluation transform (:func:`xailib.data.imagenet.eval_transform`) to ``size``; masks
  get the same geometry with nearest-neighbour interpolation (:func:`xailib.data.imagenet.mask_transform`).
* **Tensors** (:meth:`ConceptSet.from_tensors`).

:func:`random_sets` draws ``n_sets`` random benchmark sets ``random_0, random_1, ...`` from any of the three
(a ConceptWorld, a TCAV folder, or a pool of images); :func:`list_concepts` lists a TCAV folder.

Every draw is deterministic: the same seed gives the same images. The ``i``-th random set of ``seed`` is drawn
with the seed :func:`xailib.data.sampling.mix_seed` ``(seed, i)``, which the set records in ``.seed``.

>>> from xailib.data.conceptworld import ConceptWorld
>>> world = ConceptWorld(size=32)
>>> heads = ConceptSet.from_conceptworld(world, "head", n=8, seed=0)
>>> heads.images.shape, heads.masks.shape
(torch.Size([8, 3, 32, 32]), torch.Size([8, 32, 32]))
>>> randoms = random_sets(world, n_sets=3, n=8, seed=0)
>>> [r.name for r in randoms]
['random_0', 'random_1', 'random_2']
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from xailib.checks import check_positive_int
from xailib.data.conceptworld import ConceptWorld
from xailib.data.imagenet import IMAGE_EXTENSIONS, eval_transform, image_files, load_image, mask_transform
from xailib.checks import check_seed
from xailib.data.sampling import mix_seed, subset_indices
from xailib.utils import resolve_device

__all__ = ["ConceptSet", "ConceptFolders", "random_sets", "list_concepts", "MASK_SUFFIX", "RANDOM_PREFIX"]

#: A concept's masks live in ``root/<concept><MASK_SUFFIX>/``.
MASK_SUFFIX = "_masks"
#: Random benchmark folders are ``root/<RANDOM_PREFIX><i>/``, ``i = 0, 1, ...`` (TCAV names them ``random500_<i>``).
RANDOM_PREFIX = "random_"
#: Shorter side before the centre crop, as a multiple of the crop: ImageNet's 256 / 224.
_RESIZE_RATIO = 256 / 224

_LAYOUT = ("root/<concept>/<image>.png, TCAV's layout (e.g. root/stripes/img0.png, root/random_0/img0.jpg; "
           f"optional masks in root/stripes{MASK_SUFFIX}/img0.png)")


# --------------------------------------------------------------------------------------------------------------
# The set
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False, repr=False)
class ConceptSet:
    """Images that show one concept, with the pixels of the concept where they are known.

    Validated on construction; use the constructors :meth:`from_conceptworld`, :meth:`random_conceptworld`,
    :meth:`from_folder`, :meth:`from_tensors`, or :func:`random_sets` for random benchmark sets.

    Attributes
    ----------
    name : str
        The concept, e.g. ``"stripes"``, or ``"random_3"`` for a random set.
    images : Tensor [N, C, H, W]
        Floats in [0, 1], ``N >= 1`` (not normalised: the models normalise their input themselves).
    masks : BoolTensor [N, H, W] or None
        True where the concept is in each image; None when unknown (a random set, a folder without masks).
        On the same device as ``images``.
    seed : int or None
        The seed the images were drawn with (None when nothing was drawn, e.g. all images of a folder).
    source : str
        Where they came from: ``"conceptworld(size=64, seed=0, n_classes=10)"``, a folder path, ``"tensors"``.

    Raises
    ------
    TypeError, ValueError
        For images that are not a float tensor ``[N, C, H, W]`` in [0, 1], masks that are not a bool tensor
        ``[N, H, W]`` on the images' device, an empty name, a seed that is not an int.
    """

    name: str
    images: torch.Tensor
    masks: torch.Tensor | None = None
    seed: int | None = None
    source: str = "tensors"

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"A concept set needs a name (a non-empty str such as 'stripes'), got {self.name!r}.")
        if not isinstance(self.source, str):
            raise TypeError(f"source must be a str saying where the images came from, got {self.source!r}.")
        x = self.images
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"images of concept set {self.name!r} must be a torch.Tensor [N, C, H, W] in [0, 1], "
                            f"got {type(x).__name__}.")
        if x.dim() != 4 or not x.is_floating_point():
            hint = ("; add the batch dimension with x.unsqueeze(0) for one image" if x.dim() == 3 else
                    "; convert uint8 images with x.float() / 255" if not x.is_floating_point() else "")
            raise ValueError(f"images of concept set {self.name!r} must be a float tensor [N, C, H, W], got "
                             f"{tuple(x.shape)} {x.dtype}{hint}.")
        if x.shape[0] == 0:
            raise ValueError(f"Concept set {self.name!r} has no images {tuple(x.shape)}; give at least one.")
        if not bool(torch.isfinite(x).all()) or float(x.min()) < 0.0 or float(x.max()) > 1.0:
            raise ValueError(
                f"images of concept set {self.name!r} must lie in [0, 1], got values in [{float(x.min()):.4g}, "
                f"{float(x.max()):.4g}]. Pass images before normalisation (xailib models normalise their input "
                "themselves); divide 0..255 images by 255."
            )
        m = self.masks
        if m is not None:
            n, _, h, w = x.shape
            if not isinstance(m, torch.Tensor) or m.dtype != torch.bool:
                got = f"{m.dtype} tensor" if isinstance(m, torch.Tensor) else type(m).__name__
                raise TypeError(f"masks of concept set {self.name!r} must be a bool tensor [N, H, W] or None, got "
                                f"a {got}; convert with masks > 0.")
            if tuple(m.shape) != (n, h, w):
                hint = "; drop the channel axis with masks[:, 0]" if m.dim() == 4 and m.shape[1] == 1 else ""
                raise ValueError(f"masks of concept set {self.name!r} must be [N, H, W] = {(n, h, w)} to match "
                                 f"images {tuple(x.shape)}, got {tuple(m.shape)}{hint}.")
            if m.device != x.device:
                raise ValueError(f"masks ({m.device}) and images ({x.device}) of concept set {self.name!r} are on "
                                 "different devices; move both with .to(device).")
        object.__setattr__(self, "seed", check_seed(self.seed, optional=True))

    # ---- constructors ------------------------------------------------------------------------------------
    @classmethod
    def from_tensors(cls, name: str, images: torch.Tensor, masks: torch.Tensor | None = None,
                     seed: int | None = None, source: str = "tensors") -> "ConceptSet":
        """A concept set from tensors you already hold.

        Parameters
        ----------
        name : str
        images : Tensor [N, C, H, W]
            Floats in [0, 1].
        masks : BoolTensor [N, H, W], optional
        seed : int, optional
            The seed they were drawn with, if any.
        source : str
            Where they came from (default ``"tensors"``).
        """
        return cls(name, images, masks, seed, source)

    @classmethod
    def from_conceptworld(cls, world: ConceptWorld, concept: str, n: int, seed: int = 0) -> "ConceptSet":
        """``n`` images of one ConceptWorld concept, with its exact masks (:meth:`ConceptWorld.probe_set`).

        A part probe shows the part alone on the blank background, and its mask is the part's pixels; a texture
        or colour probe is filled with it (the mask is every pixel); a context probe is the background alone
        (every pixel).

        Parameters
        ----------
        world : ConceptWorld
        concept : str
            One of ``world.concept_names`` (parts, textures, colours, contexts).
        n : int
            > 0.
        seed : int

        Returns
        -------
        ConceptSet
            ``images [n, 3, S, S]``, ``masks [n, S, S]`` with ``S = world.size``, ``source`` naming the world.

        Raises
        ------
        ValueError
            For an unknown concept (the message lists the valid ones).
        """
        world = _check_world(world)
        if not isinstance(concept, str) or concept not in world.concept_names:
            close = difflib.get_close_matches(str(concept), world.concept_names, n=3)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ValueError(f"Unknown ConceptWorld concept {concept!r}.{hint} Valid concepts (world.concept_names): "
                             f"{', '.join(world.concept_names)}.")
        n = check_positive_int(n, "n", hint=" (the number of probe images)")
        seed = check_seed(seed)
        probe = world.probe_set(concept, n, seed)
        return cls(concept, probe.images, probe.masks, seed, _world_source(world))

    @classmethod
    def random_conceptworld(cls, world: ConceptWorld, n: int, seed: int = 0, name: str = "random") -> "ConceptSet":
        """``n`` random ConceptWorld scenes, any class (:meth:`ConceptWorld.random_set`): a random benchmark set.

        Returns
        -------
        ConceptSet
            ``images [n, 3, S, S]``, ``masks=None`` (a random set has no concept to mask).
        """
        world = _check_world(world)
        n = check_positive_int(n, "n", hint=" (the number of random images)")
        seed = check_seed(seed)
        return cls(name, world.random_set(n, seed), None, seed, _world_source(world))

    @classmethod
    def from_folder(cls, root: str | os.PathLike, concept: str, n: int | None = None, seed: int = 0, *,
                    size: int = 224, resize: int | None = None, channels: int = 3) -> "ConceptSet":
        """The images of ``root/<concept>/`` (TCAV's layout), with masks from ``root/<concept>_masks/`` if present.

        Image files are taken in sorted order; with ``n``, a deterministic subset of ``n`` is kept
        (:func:`xailib.data.sampling.subset_indices`, still in sorted order), so
        ``from_folder(root, c, n, seed)`` equals ``from_folder(root, c).subset(n, seed)``. Files without an
        image extension are skipped.

        Each image goes through :func:`xailib.data.imagenet.eval_transform` ``(resize, size)``: the shorter side
        resized to ``resize``, then the centre ``size x size`` crop. The mask of image ``<stem>.<ext>`` is
        ``root/<concept>_masks/<stem>.png``, of the same pixel size as its image; it gets the same resize (nearest
        neighbour) and crop, and is True wherever its grey value is non-zero (so 0/255 and 0/1 masks both work).

        Parameters
        ----------
        root : path-like
            The folder holding one sub-folder per concept.
        concept : str
            A sub-folder name; see :func:`list_concepts`.
        n : int, optional
            Keep ``n`` images, chosen by ``seed``; default all.
        seed : int
        size : int
            Side of the square images the model takes (224 for ImageNet models, 28 for Fashion-MNIST ones).
        resize : int, optional
            Shorter side before the centre crop, ``>= size``; default ``round(size * 256 / 224)`` (256 for 224,
            ImageNet's evaluation transform). ``resize=size`` keeps the largest centred square.
        channels : {3, 1}
            3: RGB; 1: grey (PIL's ``"L"`` conversion), for single-channel models such as Fashion-MNIST's.

        Returns
        -------
        ConceptSet
            ``images [N, channels, size, size]`` float32 in [0, 1]; ``masks [N, size, size]`` or None;
            ``seed`` (None when all images were taken); ``source`` the concept folder's path.

        Raises
        ------
        FileNotFoundError
            If ``root`` does not exist.
        ValueError
            For an unknown concept (the message lists the concepts and random folders there), a folder without
            images, ``n`` larger than the folder holds (the message says how many it holds), an unreadable
            image, a missing mask or a mask whose size differs from its image's.
        """
        root = _check_root(root)
        folder = _concept_folder(root, concept)
        return cls._from_dir(folder, concept, n, seed, size=size, resize=resize, channels=channels)

    @classmethod
    def _from_dir(cls, folder: Path, name: str, n, seed, *, size, resize, channels) -> "ConceptSet":
        seed = check_seed(seed)
        size = check_positive_int(size, "size", hint=" (the image side the model takes, e.g. 224)")
        resize = round(size * _RESIZE_RATIO) if resize is None else check_positive_int(resize, "resize")
        if resize < size:
            raise ValueError(f"resize={resize} is smaller than size={size}: the centre crop would pad the images "
                             f"with black. Use resize >= size (resize=size keeps the largest centred square).")
        if isinstance(channels, bool) or channels not in (1, 3):
            raise ValueError(f"channels must be 3 (RGB) or 1 (grey, for single-channel models such as "
                             f"Fashion-MNIST's), got {channels!r}.")
        files = image_files(folder)
        if not files:
            others = sorted(p.name for p in folder.iterdir())
            held = (f" It holds only {len(others)} other entries, skipped: {', '.join(others[:5])}"
                    f"{', ...' if len(others) > 5 else ''}." if others else " It is empty.")
            raise ValueError(f"Concept folder {folder} holds no images (files ending in {', '.join(IMAGE_EXTENSIONS)},"
                             f" any case).{held} Put the concept's images there.")
        if n is not None:
            n = check_positive_int(n, "n", hint=" or None (all images of the folder)")
            if n > len(files):
                raise ValueError(f"n={n} but {folder} holds only {len(files)} images; use n <= {len(files)}, "
                                 "n=None for all of them, or add images.")
        chosen = [files[i] for i in subset_indices(len(files), n, seed)]
        mode = "RGB" if channels == 3 else "L"
        transform = eval_transform(resize, size)
        images = torch.stack([_read(p, transform, mode) for p in chosen])  # [N, channels, size, size]
        mask_dir = folder.parent / f"{folder.name}{MASK_SUFFIX}"
        masks = _read_masks(mask_dir, chosen, resize, size) if mask_dir.is_dir() else None
        return cls(name, images, masks, seed if n is not None else None, str(folder))

    # ---- conveniences ------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image (compare with a model's ``input_shape``)."""
        return tuple(int(s) for s in self.images.shape[1:])

    @property
    def device(self) -> torch.device:
        """Where ``images`` (and ``masks``) live."""
        return self.images.device

    def to(self, device: str | torch.device = "auto") -> "ConceptSet":
        """The same set with images and masks on ``device`` (``"auto"``: CUDA when present, else the CPU)."""
        dev = resolve_device(device)
        masks = self.masks.to(dev) if self.masks is not None else None
        return dataclasses.replace(self, images=self.images.to(dev), masks=masks)

    def subset(self, n: int, seed: int = 0) -> "ConceptSet":
        """``n`` of the images (and their masks), chosen deterministically by ``seed``, in their original order.

        The indices are :func:`xailib.data.sampling.subset_indices` ``(len(self), n, seed)``; the result records
        ``seed`` and keeps ``name`` and ``source``.

        Raises
        ------
        ValueError
            If ``n`` is not a positive int or exceeds ``len(self)``.
        """
        seed = check_seed(seed)
        n = check_positive_int(n, "n")
        if n > len(self):
            raise ValueError(f"n={n} is more than the {len(self)} images of concept set {self.name!r}; use "
                             f"n <= {len(self)}.")
        idx = torch.from_numpy(subset_indices(len(self), n, seed)).to(self.device)
        masks = self.masks[idx] if self.masks is not None else None
        return dataclasses.replace(self, images=self.images[idx], masks=masks, seed=seed)

    def renamed(self, name: str) -> "ConceptSet":
        """The same images under another name."""
        return dataclasses.replace(self, name=name)

    def equal(self, other: "ConceptSet") -> bool:
        """True when name, seed, source, images and masks are all identical (``==`` is identity)."""
        if not isinstance(other, ConceptSet):
            return False
        same_masks = (self.masks is None and other.masks is None) or (
            self.masks is not None and other.masks is not None and self.masks.shape == other.masks.shape
            and torch.equal(self.masks, other.masks.to(self.masks.device)))
        return (self.name == other.name and self.seed == other.seed and self.source == other.source
                and self.images.shape == other.images.shape and same_masks
                and torch.equal(self.images, other.images.to(self.device)))

    def __repr__(self) -> str:
        masks = "None" if self.masks is None else f"[{len(self)}, {self.images.shape[2]}, {self.images.shape[3]}]"
        return (f"ConceptSet(name={self.name!r}, images=[{len(self)}, {', '.join(map(str, self.image_shape))}], "
                f"masks={masks}, seed={self.seed}, source={self.source!r})")


# --------------------------------------------------------------------------------------------------------------
# Folders
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConceptFolders:
    """What a TCAV folder holds (:func:`list_concepts`).

    Attributes
    ----------
    concepts : list of str
        Concept folder names, sorted (neither random nor mask folders).
    random : list of str
        Random benchmark folder names ``<prefix><i>``, sorted by ``i``.
    with_masks : list of str
        The concepts (or random folders) that have a ``<name>_masks/`` folder.
    """

    concepts: list[str]
    random: list[str]
    with_masks: list[str]


def list_concepts(root: str | os.PathLike, prefix: str = RANDOM_PREFIX) -> ConceptFolders:
    """The concept folders and the random folders of a TCAV folder ``root``, separately.

    Parameters
    ----------
    root : path-like
    prefix : str
        Random folders are ``<prefix><i>`` with ``i`` a non-negative integer (TCAV: ``"random500_"``).

    Returns
    -------
    ConceptFolders
        ``.concepts``, ``.random`` and ``.with_masks``. Hidden folders (``.git``) and ``<name>_masks`` folders
        are not concepts; folders are listed whether or not they hold images.

    Raises
    ------
    FileNotFoundError
        If ``root`` does not exist.
    """
    root = _check_root(root)
    dirs = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    names = [d for d in dirs if not d.endswith(MASK_SUFFIX)]
    random = sorted((d for d in names if _random_index(d, prefix) is not None), key=lambda d: _random_index(d, prefix))
    concepts = [d for d in names if _random_index(d, prefix) is None]
    with_masks = [d for d in names if f"{d}{MASK_SUFFIX}" in dirs]
    return ConceptFolders(concepts, random, with_masks)


def _random_index(name: str, prefix: str) -> int | None:
    m = re.fullmatch(re.escape(prefix) + r"([0-9]+)", name)
    return int(m.group(1)) if m else None


def _check_root(root) -> Path:
    if root is None or not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a folder path laid out as {_LAYOUT}; got {type(root).__name__}.")
    path = Path(root).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"Concept folder {path} does not exist; pass root= a folder laid out as {_LAYOUT}.")
    if not path.is_dir():
        raise NotADirectoryError(f"{path} is a file; pass root= a folder laid out as {_LAYOUT}.")
    return path


def _concept_folder(root: Path, concept) -> Path:
    if not isinstance(concept, str) or not concept or concept in (".", "..") or "/" in concept or os.sep in concept:
        raise ValueError(f"concept must be the name of a sub-folder of {root} (e.g. 'stripes'), got {concept!r}.")
    folder = root / concept
    if concept.endswith(MASK_SUFFIX) and folder.is_dir():
        raise ValueError(f"{concept!r} is the mask folder of {concept[:-len(MASK_SUFFIX)]!r}; load that concept "
                         "and its masks come with it.")
    if not folder.is_dir():
        listing = list_concepts(root)
        known = listing.concepts + listing.random
        close = difflib.get_close_matches(concept, known, n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(
            f"Unknown concept {concept!r}: {root} has no folder {concept}/.{hint} Concepts there: "
            f"{', '.join(listing.concepts) or 'none'}; random sets: {', '.join(listing.random) or 'none'}. Pick "
            f"one of those (see xailib.data.list_concepts(root)), or make the folder {folder}/ with the "
            "concept's images."
        )
    return folder


def _read(path: Path, transform, mode: str) -> torch.Tensor:
    try:
        return load_image(path, transform, mode)
    except OSError as exc:  # PIL.UnidentifiedImageError and truncated files are OSErrors
        raise ValueError(f"Could not read {path} as an image ({type(exc).__name__}: {exc}). Replace or delete "
                         "the file (only files that are not named like images are skipped).") from exc


def _read_masks(mask_dir: Path, images: list[Path], resize: int, size: int) -> torch.Tensor:
    """BoolTensor [N, size, size]: the mask ``mask_dir/<stem>.png`` of each image, non-zero = concept."""
    from PIL import Image

    pngs = {p.stem: p for p in image_files(mask_dir) if p.suffix.lower() == ".png"}
    missing = [p.name for p in images if p.stem not in pngs]
    if missing:
        raise ValueError(
            f"{mask_dir} has no mask for {len(missing)} of the {len(images)} images ({', '.join(missing[:5])}"
            f"{', ...' if len(missing) > 5 else ''}): add <stem>.png for each image (e.g. "
            f"{Path(missing[0]).stem}.png), or remove the folder to load the concept without masks."
        )
    transform = mask_transform(resize, size)
    out = []
    for p in images:
        mpath = pngs[p.stem]
        with Image.open(p) as img, Image.open(mpath) as mask:
            if img.size != mask.size:
                raise ValueError(f"Mask {mpath} is {mask.size[0]}x{mask.size[1]} pixels but its image {p} is "
                                 f"{img.size[0]}x{img.size[1]}; a mask must have its image's size.")
        out.append(_read(mpath, transform, "L")[0] > 0)  # [size, size]
    return torch.stack(out)


# --------------------------------------------------------------------------------------------------------------
# Random benchmark sets
# --------------------------------------------------------------------------------------------------------------


def random_sets(source, n_sets: int, n: int | None, seed: int = 0, *, size: int = 224, resize: int | None = None,
                channels: int = 3, prefix: str = RANDOM_PREFIX) -> list[ConceptSet]:
    """``n_sets`` random benchmark sets (TCAV's random concepts), drawn deterministically by ``seed``.

    Set ``i`` is drawn with the seed ``s_i = mix_seed(seed, i)`` (:func:`xailib.data.sampling.mix_seed`),
    recorded in its ``.seed``; the first ``k`` sets do not depend on ``n_sets``.

    - a **ConceptWorld**: set ``i`` is ``world.random_set(n, s_i)``, named ``random_<i>``, no masks;
    - a **TCAV folder** (a path): set ``i`` holds ``n`` images (all with ``n=None``) of ``root/<prefix><i>/``,
      chosen by ``s_i`` as in :meth:`ConceptSet.from_folder` (with ``size``, ``resize``, ``channels``); named
      after its folder (``random_<i>`` with the default prefix). Folders ``<prefix>0 .. <prefix><n_sets-1>``
      must exist;
    - a **pool** (a Tensor ``[M, C, H, W]`` in [0, 1], or a ConceptSet, whose masks come along): set ``i`` is
      ``pool.subset(n, s_i)``, named ``random_<i>``. Sets are drawn independently, so two sets may share images.

    Parameters
    ----------
    source : ConceptWorld, path-like, Tensor [M, C, H, W] or ConceptSet
    n_sets : int
        Number of sets, > 0.
    n : int or None
        Images per set; ``None`` (all images of each folder) only for a folder.
    seed : int
    size, resize, channels :
        For a folder, as in :meth:`ConceptSet.from_folder`.
    prefix : str
        For a folder: the random folders' prefix (TCAV's own folders use ``"random500_"``).

    Returns
    -------
    list of ConceptSet
        ``n_sets`` sets; the same arguments give identical images, different ``i`` different sets.

    Raises
    ------
    TypeError
        For another kind of source.
    ValueError
        For a missing random folder (the message lists those there), or ``n`` larger than a folder or the pool.
    """
    n_sets = check_positive_int(n_sets, "n_sets", hint=" (the number of random sets)")
    seed = check_seed(seed)
    seeds = [mix_seed(seed, i) for i in range(n_sets)]
    if isinstance(source, ConceptWorld):
        n = check_positive_int(n, "n", hint=" (images per random set)")
        return [ConceptSet.random_conceptworld(source, n, s, name=f"random_{i}") for i, s in enumerate(seeds)]
    if isinstance(source, (str, os.PathLike)):
        root = _check_root(source)
        have = list_concepts(root, prefix).random
        want = [f"{prefix}{i}" for i in range(n_sets)]
        missing = [w for w in want if w not in have]
        if missing:
            k = _leading(have, prefix)
            lower = f"lower n_sets to {k}, " if k else ""
            raise ValueError(
                f"random_sets takes set i from {root}/{prefix}<i>/ for i = 0..{n_sets - 1}, but "
                f"{', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''} "
                f"{'is' if len(missing) == 1 else 'are'} missing; random folders there: "
                f"{', '.join(have) or 'none'}. Add the folders, {lower}or pass prefix= (TCAV's own folders are "
                "named random500_<i>)."
            )
        return [ConceptSet._from_dir(root / w, w, n, s, size=size, resize=resize, channels=channels)
                for w, s in zip(want, seeds)]
    if isinstance(source, torch.Tensor):
        source = ConceptSet.from_tensors("pool", source)
    if isinstance(source, ConceptSet):
        n = check_positive_int(n, "n", hint=" (images per random set)")
        if n > len(source):
            raise ValueError(f"n={n} is more than the pool's {len(source)} images; draw smaller sets or give a "
                             "larger pool.")
        return [source.subset(n, s).renamed(f"random_{i}") for i, s in enumerate(seeds)]
    raise TypeError(f"random_sets draws from a ConceptWorld, a TCAV folder (a path), or a pool of images (a Tensor "
                    f"[M, C, H, W] or a ConceptSet); got {type(source).__name__}.")


def _leading(have: list[str], prefix: str) -> int:
    """How many random folders ``<prefix>0, <prefix>1, ...`` there are without a gap."""
    k = 0
    while f"{prefix}{k}" in have:
        k += 1
    return k


def _check_world(world) -> ConceptWorld:
    if not isinstance(world, ConceptWorld):
        raise TypeError(f"world must be a ConceptWorld (xailib.data.conceptworld.ConceptWorld(size=64)), got "
                        f"{type(world).__name__}.")
    return world


def _world_source(world: ConceptWorld) -> str:
    return f"conceptworld(size={world.size}, seed={world.seed}, n_classes={world.n_classes})"
