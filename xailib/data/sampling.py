"""Deterministic subsets, shared by every loader of :mod:`xailib.data`.

One rule chooses "``n`` of these ``n_total`` items for seed ``s``" everywhere (Fashion-MNIST, ImageNet folders,
concept sets), so the same seed picks the same items whichever loader asks:

>>> subset_indices(25, 10, seed=3).tolist()
[0, 5, 6, 9, 10, 11, 12, 16, 18, 21]

Several draws from one seed (the ``i``-th random benchmark set of ``seed``) use :func:`mix_seed` ``(seed, i)``.
"""

from __future__ import annotations


import numpy as np
import torch

from xailib.checks import check_positive_int
from xailib.utils import make_generator

__all__ = ["subset_indices", "mix_seed", "per_class", "per_class_indices", "folder_halves"]


def subset_indices(n_total: int, n: int | None, seed: int, *, of: str = "this split") -> np.ndarray:
    """Indices of a deterministic random subset of ``n`` out of ``n_total`` items, sorted.

    The subset is the first ``n`` entries of ``torch.randperm(n_total)`` drawn with a CPU generator seeded with
    ``seed`` (:func:`xailib.utils.make_generator`), then sorted, so the items keep their original order.

    Parameters
    ----------
    n_total : int
        Number of items to choose from.
    n : int or None
        Size of the subset, ``1 <= n <= n_total``; ``None`` keeps every item.
    seed : int
        Seed of the generator; the same seed gives the same indices.
    of : str
        What the items are, for the error message ("more than the 25 images of <of>").

    Returns
    -------
    np.ndarray
        ``[n]`` int64 indices in increasing order (``[n_total]``, i.e. ``arange(n_total)``, when ``n`` is None).

    Raises
    ------
    ValueError
        If ``n`` is not a positive int or None, or ``n > n_total``.
    """
    if n is None:
        return np.arange(n_total)
    n = check_positive_int(n, "n", hint=" or None (all images)")
    if n > n_total:
        raise ValueError(f"n={n} is more than the {n_total} images of {of}; use n=None for all of them.")
    perm = torch.randperm(n_total, generator=make_generator(seed))[:n]
    return np.sort(perm.numpy())


def mix_seed(*parts: int) -> int:
    """Combine integers into one seed in ``[0, 2**63)``, so nearby inputs give unrelated generator streams.

    Each part is folded in with one SplitMix64 step (add the golden-ratio increment, then two
    xor-shift-multiply rounds); the same function, with the same constants, as ConceptWorld's internal seed
    mixer. Any sign and size of int is accepted (taken modulo ``2**64``).

    Parameters
    ----------
    *parts : int
        E.g. ``(seed, i)`` for the ``i``-th of several draws made from one user seed.

    Returns
    -------
    int
        A non-negative seed below ``2**63``, valid for ``torch.Generator.manual_seed``.
    """
    mask = 0xFFFFFFFFFFFFFFFF
    h = 0x243F6A8885A308D3
    for p in parts:
        h = (h ^ (int(p) & mask)) & mask
        h = (h + 0x9E3779B97F4A7C15) & mask
        h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & mask
        h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & mask
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


def per_class_indices(labels, n: int, skip: int = 0) -> torch.Tensor:
    """The indices of the images ``skip .. skip + n - 1`` of every class, in their order (classes with fewer give
    what they have), grouped by class: LongTensor ``[M]`` (e.g. for ConceptWorld's ``scenes(index)`` masks)."""
    n = check_positive_int(n, "n", hint=" (images per class)")
    y = torch.as_tensor(labels).long().flatten().cpu()
    return torch.cat([torch.nonzero(y == k)[skip:skip + n, 0] for k in torch.unique(y).tolist()])


def per_class(images: torch.Tensor, labels, n: int, skip: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The images ``skip .. skip + n - 1`` of every class, in their order (classes with fewer give what they
    have): ``(images [M, C, H, W], labels [M])``, grouped by class (:func:`per_class_indices`)."""
    n = check_positive_int(n, "n", hint=" (images per class)")
    y = torch.as_tensor(labels).long().flatten().cpu()
    if y.numel() != len(images):
        raise ValueError(f"per_class: labels need one entry per image, got {y.numel()} labels for {len(images)} "
                         "images.")
    idx = per_class_indices(y, n, skip)
    return images[idx], y[idx]


def folder_halves(folder, n: int, seed: int, n_held: int | None = None):
    """Up to ``n + n_held`` images of every class of an image folder (a seeded subset of each class's files, in file
    order; only those are read), the first ``n`` of each class for learning and the rest held out.

    Parameters
    ----------
    folder :
        An image folder data set (:class:`xailib.data.imagenet.ImageFolderDataset`: ``labels``, ``class_names``,
        ``input_shape``, ``folder[i] -> (image, label)``).
    n : int
        Images per class in the first half.
    seed : int
        Seeds each class's subset (:func:`mix_seed` ``(seed, k)``, :func:`subset_indices`).
    n_held : int, optional
        Images per class in the second half; default ``n``.

    Returns
    -------
    ((images [M, C, H, W], labels [M]), (images [M', C, H, W], labels [M']))
        Grouped by class; labels are the folder's sub-folder indices.

    A line is printed for the classes that hold fewer than ``n + n_held`` images, whose held-out half is smaller
    (or empty).
    """
    n_held = n if n_held is None else check_positive_int(n_held, "n_held", hint=" (held-out images per class)")
    total = n + n_held
    y = folder.labels
    chosen, short = [], []
    for k, name in enumerate(folder.class_names):
        idx = torch.nonzero(y == k).squeeze(1)
        take = min(len(idx), total)
        if take < total:
            short.append(f"{name} ({len(idx)})")
        chosen.append(idx[torch.from_numpy(subset_indices(len(idx), take, mix_seed(seed, k)))])
    if short:
        need = f"2 x {n} = {total}" if n_held == n else f"{n} + {n_held} = {total}"
        print(f"real scale: {len(short)} of {len(folder.class_names)} classes hold fewer than {need} "
              f"images, so their held-out half has fewer than {n_held}: {', '.join(short[:10])}"
              f"{', ...' if len(short) > 10 else ''}. Add images to those folders or ask for fewer per class.")
    halves = []
    for part in (slice(0, n), slice(n, total)):
        idx = torch.cat([c[part] for c in chosen])
        images = torch.stack([torch.as_tensor(folder[int(i)][0], dtype=torch.float32) for i in idx]) if len(idx) \
            else torch.empty(0, *folder.input_shape)
        halves.append((images, y[idx]))
    return tuple(halves)
