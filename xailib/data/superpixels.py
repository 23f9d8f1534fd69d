"""Superpixel concepts as in ACE (Ghorbani et al., NeurIPS 2019, "Towards Automatic Concept-based Explanations"),
and the smallest sufficient / destroying concept curves (SSC / SDC) that AfI's Sec. 4.3 evaluates with.

The pipeline, one function a step:

1. :func:`segment` -- SLIC superpixels of every image at several resolutions (ACE: 15, 50 and 80 segments on
   224 px ImageNet images), tiny and duplicate segments dropped; each segment's *patch* (its pixels on the fill
   value, cropped to its bounding box and resized to the image size) is what the model embeds. A
   :class:`SegmentSet`.
2. :func:`cluster_concepts` -- embed the patches by a layer's activation, k-means them, keep the clusters that
   recur across images (ACE's filter); each kept cluster is one concept. A :class:`SegmentConcepts`: one
   :class:`~xailib.data.concepts.ConceptSet` per concept (its patches, for TCAV/AfI), and which segment of which
   image each patch came from.
3. :func:`concept_masks` -- per concept and image, the union of the concept's segments in that image
   ``[n_concepts, N, H, W]``.
4. :func:`segment_curves` -- ACE's SSC / SDC test: paste the top-1..k concepts of each image onto a blank image
   (``"ssc"``), or blank them out of the image (``"sdc"``), and record top-1 accuracy for ``k = 0..K``.
   :func:`segment_curves_reference` is its literal one-image-at-a-time version.

>>> from xailib.data import load_dataset
>>> from xailib.models import load_model
>>> data = load_dataset("fashion-mnist", "test")
>>> x = data.images[data.labels == 7][:100]                               # 100 sneakers [100, 1, 28, 28]
>>> model = load_model("vgg-fashion-mnist")
>>> segs = segment(x)                                                      # doctest: +SKIP
>>> concepts = cluster_concepts(model, segs, "features.stage3", prefix="sneaker_")  # doctest: +SKIP
>>> masks = concept_masks(concepts)                                        # doctest: +SKIP
>>> segment_curves(model, x, 7, masks, order=[0, 1, 2], mode="ssc")       # doctest: +SKIP

Where we differ from ACE's code (``amiratag/ACE``, ``ace.py``), and why:

* Resolutions: ACE's 15/50/80 segments are for 224 px photos; on 28 px Fashion-MNIST that would give segments of
  10 pixels. We default to 8, 16 and 32 segments (about 4, 8 and 16 on the garment, the rest background), which
  also suits 64 px ConceptWorld images.
* The fill value (ACE: 117/255, the mean pixel of its ImageNet network) defaults to 0.0: Fashion-MNIST's objects
  lie on a black ground, so black is "nothing" there. Pass ``fill=117 / 255`` for ACE's ImageNet setting.
* Segments of pure fill (empty background, ``min_contrast``) are dropped: pasting or removing them changes no
  pixel, and on a black ground they would form a large all-black "concept". ACE has no such step (ImageNet photos
  have no empty background).
* The bounding box is inclusive (ACE's ``patch[h1:h2, w1:w2]`` drops the last row and column) and every SLIC
  label is used (ACE's ``range(segments.max())`` skips the last one).
* Embedding: ``pool="mean"`` averages the activation over space, which is what ACE runs (``channel_mean=True`` in
  ``ace_run.py``; its name notwithstanding, it averages over height and width); ``pool="flatten"`` is ACE's other
  option.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from xailib.batching import predict
from xailib.checks import (check_choice, check_fraction, check_images, check_layer, check_model, check_positive_float,
                           check_positive_int, check_seed, check_targets, model_device)
from xailib.data.concepts import ConceptSet
from xailib.layers import capture, model_state, stop_after

if TYPE_CHECKING:  # pandas is imported where a table is made: `import xailib.data` stays light
    import pandas as pd

__all__ = [
    "DEFAULT_N_SEGMENTS",
    "SegmentSet",
    "SegmentConcepts",
    "segment",
    "segment_patches",
    "embed_patches",
    "cluster_concepts",
    "concept_masks",
    "segment_curves",
    "segment_curves_reference",
]

#: SLIC resolutions (number of segments asked for) of :func:`segment`; ACE uses (15, 50, 80) on 224 px images.
DEFAULT_N_SEGMENTS: tuple[int, ...] = (8, 16, 32)
#: SLIC compactness by image kind when ``compactness=None``: grey images are segmented on intensities in [0, 1],
#: RGB ones in CIELAB (about 100 times that range, so 10 there weighs colour against distance as 0.1 does on grey;
#: 10 is skimage's default, ACE used 20).
_COMPACTNESS = {"grey": 0.1, "lab": 10.0}
_INTERPOLATIONS = ("bicubic", "bilinear", "nearest")
_POOLS = ("mean", "flatten")
_MODES = ("ssc", "sdc")


# --------------------------------------------------------------------------------------------------------------
# Segments
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False, repr=False)
class SegmentSet:
    """The superpixel segments of ``N`` images (:func:`segment`), ``S`` segments in all.

    Segment ``s`` is the pixels ``masks[s]`` of image ``image_index[s]``, found by SLIC with
    ``resolution[s]`` segments asked for, where it had label ``label[s]``. Segments are ordered by image, then
    resolution (in the order given), then label.

    Attributes
    ----------
    images : Tensor [N, C, H, W]
        The segmented images, floats in [0, 1] (on the CPU).
    image_index : LongTensor [S]
    resolution : LongTensor [S]
        The ``n_segments`` of the SLIC run that found the segment.
    label : LongTensor [S]
        Its SLIC label in that run (``start_label=0``).
    masks : BoolTensor [S, H, W]
        The segment's pixels, in image coordinates.
    patches : Tensor [S, C, H, W]
        ACE's patch: the segment's pixels on ``fill``, cropped to the segment's bounding box and resized to
        ``H x W`` (:func:`segment_patches`); in [0, 1]. The model embeds these.
    patch_masks : BoolTensor [S, H, W]
        Where the segment lies in its patch (the mask cropped and resized the same way, nearest neighbour).
    fill : float
        The value outside the segment in its patch.
    params : dict
        The arguments of :func:`segment` that made it.
    """

    images: torch.Tensor
    image_index: torch.Tensor
    resolution: torch.Tensor
    label: torch.Tensor
    masks: torch.Tensor
    patches: torch.Tensor
    patch_masks: torch.Tensor
    fill: float
    params: dict = field(default_factory=dict)

    def __post_init__(self):
        n, c, h, w = self.images.shape
        s = self.masks.shape[0]
        shapes = {"image_index": (s,), "resolution": (s,), "label": (s,), "masks": (s, h, w),
                  "patches": (s, c, h, w), "patch_masks": (s, h, w)}
        for name, shape in shapes.items():
            if tuple(getattr(self, name).shape) != shape:
                raise ValueError(f"SegmentSet.{name} must be {shape} for {s} segments of images "
                                 f"{tuple(self.images.shape)}, got {tuple(getattr(self, name).shape)}.")
        if s and (int(self.image_index.min()) < 0 or int(self.image_index.max()) >= n):
            raise ValueError(f"SegmentSet.image_index must lie in 0..{n - 1} (the images), got "
                             f"{int(self.image_index.min())}..{int(self.image_index.max())}.")

    def __len__(self) -> int:
        return int(self.masks.shape[0])

    @property
    def n_images(self) -> int:
        """``N``, the number of segmented images (some may have no segment)."""
        return int(self.images.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        return tuple(int(v) for v in self.images.shape[1:])

    def counts(self) -> torch.Tensor:
        """LongTensor ``[N]``: segments per image."""
        return torch.bincount(self.image_index, minlength=self.n_images)

    def __repr__(self) -> str:
        return (f"SegmentSet({len(self)} segments of {self.n_images} images "
                f"[{', '.join(map(str, self.image_shape))}], resolutions {self.params.get('n_segments')})")


def _check_unit_images(images, what: str = "images") -> torch.Tensor:
    images = check_images(images, what=what, move=False)
    if not bool(torch.isfinite(images).all()) or float(images.min()) < 0 or float(images.max()) > 1:
        raise ValueError(f"{what} must lie in [0, 1] (before normalisation; xailib models normalise their input "
                         f"themselves), got values in [{float(images.min()):.4g}, {float(images.max()):.4g}].")
    return images


def _check_fill_value(fill, name: str = "fill") -> float:
    if isinstance(fill, bool) or not isinstance(fill, numbers.Real) or not math.isfinite(float(fill)) \
            or not 0 <= float(fill) <= 1:
        raise ValueError(f"{name} must be a number in [0, 1] (the pixel value outside a segment; 0.0 for "
                         f"Fashion-MNIST's black ground, 117 / 255 for ACE's ImageNet grey), got {fill!r}.")
    return float(fill)


def _check_resolutions(n_segments) -> tuple[int, ...]:
    if isinstance(n_segments, numbers.Integral) and not isinstance(n_segments, bool):
        n_segments = (n_segments,)
    if not isinstance(n_segments, Sequence) or isinstance(n_segments, str) or not n_segments:
        raise ValueError(f"n_segments must be a positive int or a non-empty sequence of them (SLIC resolutions, "
                         f"e.g. {DEFAULT_N_SEGMENTS}), got {n_segments!r}.")
    return tuple(check_positive_int(n, "each of n_segments", hint=" (segments asked of SLIC)") for n in n_segments)


def _segment_image(img: np.ndarray, fill: float, resolutions, compactness: float, sigma: float, lab: bool,
                   min_area: float, min_contrast: float, dedup_iou: float | None):
    """SLIC of one image ``img [H, W]`` (grey) or ``[H, W, C]`` at each resolution; the kept segments as
    ``(resolution, label, mask [H*W] bool)`` triples, resolution by resolution."""
    from skimage.segmentation import slic

    h, w = img.shape[:2]
    contrast_px = np.abs(img - fill).reshape(h * w, -1).mean(1)  # [H*W]: mean over channels of |x - fill|
    kept_masks = np.zeros((0, h * w), dtype=bool)
    out = []
    for r in resolutions:
        labels = slic(img, n_segments=r, compactness=compactness, sigma=sigma, start_label=0,
                      channel_axis=-1 if img.ndim == 3 else None, convert2lab=lab if img.ndim == 3 else None)
        ids = np.unique(labels)  # every label (ACE's range(segments.max()) skips the last)
        m = labels.reshape(1, h * w) == ids[:, None]  # [L, H*W]
        area = m.sum(1)
        ok = area >= min_area * h * w
        if min_contrast > 0:
            ok &= (m @ contrast_px) / np.maximum(area, 1) >= min_contrast
        if dedup_iou is not None and len(kept_masks) and ok.any():
            # ACE: a segment whose Jaccard index with one kept at an earlier resolution exceeds the threshold is a
            # duplicate (segments of one resolution are disjoint, so only earlier ones can be).
            cand = m[ok].astype(np.float64)
            inter = cand @ kept_masks.T.astype(np.float64)
            union = cand.sum(1)[:, None] + kept_masks.sum(1)[None, :] - inter
            ok[np.flatnonzero(ok)] = (inter / union).max(1) <= dedup_iou
        for i in np.flatnonzero(ok):
            out.append((r, int(ids[i]), m[i]))
        kept_masks = np.concatenate([kept_masks, m[ok]])
    return out


def segment_patches(images: torch.Tensor, masks: torch.Tensor, fill: float = 0.0, *,
                    interpolation: str = "bicubic", chunk: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """ACE's patches: each segment's pixels on ``fill``, cropped to its bounding box, resized to the image size.

    The crop is the (inclusive) bounding box, rows ``r0..r1`` and columns ``c0..c1``, of the masked image; it is
    resized to ``H x W`` alone (``torch.nn.functional.interpolate``, ``align_corners=False``, the crop's edge
    replicated as PIL's resize does in ACE), so a segment whose box is the whole image gives back its masked image
    exactly, and a box of half the side is magnified by 2 (nearest: each pixel becomes a 2 x 2 block). The box is
    stretched to the image's aspect ratio, as ACE does. Bicubic values are clamped to [0, 1].

    Parameters
    ----------
    images : Tensor [S, C, H, W]
        The image of each segment, floats in [0, 1].
    masks : BoolTensor [S, H, W]
        Each segment's pixels; none may be empty.
    fill : float
        The value outside the segment.
    interpolation : {"bicubic", "bilinear", "nearest"}
        ACE resizes with PIL's bicubic filter.
    chunk : int
        Segments per ``interpolate`` call (memory).

    Returns
    -------
    patches : Tensor [S, C, H, W]
        In [0, 1], the images' dtype.
    patch_masks : BoolTensor [S, H, W]
        The mask cropped and resized the same way, nearest neighbour.
    """
    interpolation = check_choice(interpolation, _INTERPOLATIONS, "interpolation")
    fill = _check_fill_value(fill)
    if not isinstance(masks, torch.Tensor) or masks.dtype != torch.bool or masks.dim() != 3 \
            or not isinstance(images, torch.Tensor) or tuple(masks.shape) != (images.shape[0], *images.shape[2:]):
        raise ValueError(f"segment_patches takes images [S, C, H, W] and bool masks [S, H, W] of the same S, H, W; got "
                         f"{tuple(getattr(images, 'shape', ()))} and {tuple(getattr(masks, 'shape', ()))} "
                         f"{getattr(masks, 'dtype', type(masks).__name__)}.")
    s, c, h, w = images.shape
    if s and not bool(masks.flatten(1).any(1).all()):
        raise ValueError("segment_patches: every mask needs at least one pixel; drop empty masks first.")
    patches = images.new_zeros(s, c, h, w)
    pmasks = torch.zeros(s, h, w, dtype=torch.bool, device=masks.device)
    if s == 0:
        return patches, pmasks
    rows, cols = masks.any(2), masks.any(1)  # [S, H], [S, W]
    r0 = rows.to(torch.uint8).argmax(1)
    r1 = h - 1 - rows.flip(1).to(torch.uint8).argmax(1)
    c0 = cols.to(torch.uint8).argmax(1)
    c1 = w - 1 - cols.flip(1).to(torch.uint8).argmax(1)
    boxes = torch.stack([r1 - r0 + 1, c1 - c0 + 1], 1)  # [S, 2]: box height, width
    # one interpolate per box size (segments of a size share it), in chunks
    for size in torch.unique(boxes, dim=0).tolist():
        group = torch.nonzero((boxes == torch.tensor(size, device=boxes.device)).all(1)).flatten()
        bh, bw = size
        for start in range(0, len(group), chunk):
            g = group[start:start + chunk]
            ri = r0[g, None] + torch.arange(bh, device=g.device)  # [b, bh]
            ci = c0[g, None] + torch.arange(bw, device=g.device)  # [b, bw]
            x, m = images[g], masks[g]
            masked = torch.where(m[:, None], x, torch.full_like(x, fill))  # [b, C, H, W]
            b = torch.arange(len(g), device=g.device)[:, None, None]
            crop = masked.permute(0, 2, 3, 1)[b, ri[:, :, None], ci[:, None, :]].permute(0, 3, 1, 2)  # [b, C, bh, bw]
            mcrop = m[b, ri[:, :, None], ci[:, None, :]]  # [b, bh, bw]
            kw = {} if interpolation == "nearest" else {"align_corners": False}
            patches[g] = F.interpolate(crop, size=(h, w), mode=interpolation, **kw).clamp_(0, 1)
            pmasks[g] = F.interpolate(mcrop[:, None].to(x.dtype), size=(h, w), mode="nearest")[:, 0] > 0.5
    return patches, pmasks


def segment(images: torch.Tensor, *, n_segments: int | Sequence[int] = DEFAULT_N_SEGMENTS,
            compactness: float | None = None, sigma: float = 0.0, min_area: float = 0.01,
            dedup_iou: float | None = 0.5, fill: float = 0.0, min_contrast: float = 0.05,
            interpolation: str = "bicubic", progress: bool = False) -> SegmentSet:
    """SLIC superpixels of every image at several resolutions, and their patches (ACE's ``create_patches``).

    For each image and each resolution ``r`` of ``n_segments`` (in order), ``skimage.segmentation.slic`` with
    ``n_segments=r`` (SLIC returns about that many connected segments), ``start_label=0``; grey images are
    segmented as 2-D intensity images (``channel_axis=None``), RGB ones in CIELAB. A segment is dropped when

    * its area is below ``min_area`` of the image (ACE: 0.001 of a 224 px image, 50 pixels);
    * its mean ``|x - fill|`` (over its pixels and channels) is below ``min_contrast``: empty background, which
      pasting or removing would not change;
    * its Jaccard index (IoU) with a segment kept at an earlier resolution of the same image exceeds
      ``dedup_iou`` (ACE: 0.5), as a duplicate.

    Each kept segment's patch is :func:`segment_patches` of it. SLIC has no randomness: the same images and
    arguments give the same segments.

    Parameters
    ----------
    images : Tensor [N, C, H, W]
        Floats in [0, 1], ``C`` = 1 (grey) or 3 (RGB) or any other (segmented as channels, no colour space).
    n_segments : int or sequence of int
        SLIC resolutions. Default :data:`DEFAULT_N_SEGMENTS` ``= (8, 16, 32)`` for 28-64 px images (ACE's
        (15, 50, 80) is for 224 px photos).
    compactness : float, optional
        SLIC's trade-off of colour against distance (higher: squarer segments). Default 0.1 for grey images
        (intensities in [0, 1]) and 10 for RGB (CIELAB, about 100 times that range; ACE used 20).
    sigma : float
        Gaussian pre-smoothing of SLIC, in pixels (ACE: 1 on 224 px images; 0 keeps 28 px edges sharp).
    min_area : float
        Smallest segment, as a fraction of the image in [0, 1) (0.01: 8 pixels of 28 x 28).
    dedup_iou : float or None
        Duplicate threshold on the IoU with earlier resolutions' segments; None keeps every segment.
    fill : float
        In [0, 1]: the patch background, and the "empty" value of ``min_contrast``.
    min_contrast : float
        In [0, 1]; 0 keeps blank segments.
    interpolation : {"bicubic", "bilinear", "nearest"}
        Of the patch resize (ACE: bicubic).
    progress : bool
        A tqdm bar over images.

    Returns
    -------
    SegmentSet
        Its tensors on the CPU, ``images``' dtype.

    Raises
    ------
    TypeError, ValueError
        For images that are not a non-empty float tensor ``[N, C, H, W]`` in [0, 1], bad parameters, or when no
        image keeps a segment (the message says which threshold to lower).
    """
    images = _check_unit_images(images).detach().cpu()
    resolutions = _check_resolutions(n_segments)
    n, c, h, w = images.shape
    lab = c == 3
    if compactness is None:
        compactness = _COMPACTNESS["lab" if lab else "grey"]
    compactness = check_positive_float(compactness, "compactness", hint=" (SLIC's colour/space trade-off)")
    sigma = check_positive_float(sigma, "sigma", zero=True, hint=" (SLIC's pre-smoothing, pixels)")
    min_area = check_fraction(min_area, "min_area", high_open=True, hint=" (smallest segment, fraction of the image)")
    if dedup_iou is not None:
        dedup_iou = check_fraction(dedup_iou, "dedup_iou", hint=" (or None to keep duplicates)")
    fill = _check_fill_value(fill)
    min_contrast = check_fraction(min_contrast, "min_contrast", hint=" (0 keeps blank segments)")
    interpolation = check_choice(interpolation, _INTERPOLATIONS, "interpolation")
    arr = images.double().numpy()
    index, res, lab_ids, masks = [], [], [], []
    for i in tqdm(range(n), desc="slic", leave=False, disable=not progress):
        img = arr[i, 0] if c == 1 else np.moveaxis(arr[i], 0, -1)
        for r, label, m in _segment_image(img, fill, resolutions, compactness, sigma, lab, min_area, min_contrast,
                                          dedup_iou):
            index.append(i)
            res.append(r)
            lab_ids.append(label)
            masks.append(m)
    if not masks:
        raise ValueError(
            f"No segment of the {n} images was kept (resolutions {resolutions}, min_area={min_area}, "
            f"min_contrast={min_contrast} with fill={fill}). Lower min_area or min_contrast, or check that the "
            "images are not blank (all equal to fill)."
        )
    masks_t = torch.from_numpy(np.stack(masks)).view(-1, h, w)
    image_index = torch.tensor(index, dtype=torch.long)
    patches, patch_masks = segment_patches(images[image_index], masks_t, fill, interpolation=interpolation)
    params = dict(n_segments=resolutions, compactness=compactness, sigma=sigma, min_area=min_area,
                  dedup_iou=dedup_iou, fill=fill, min_contrast=min_contrast, interpolation=interpolation)
    return SegmentSet(images, image_index, torch.tensor(res, dtype=torch.long), torch.tensor(lab_ids, dtype=torch.long),
                      masks_t, patches, patch_masks, fill, params)


# --------------------------------------------------------------------------------------------------------------
# Concepts
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False, repr=False)
class SegmentConcepts:
    """ACE's discovered concepts: clusters of segments, with where each segment came from (:func:`cluster_concepts`).

    Concept ``j`` is ``concept_sets[j]`` (named ``names[j]``); its patch ``t`` is segment
    ``members[j][t] = (image index, segment id)``, a segment id indexing ``segments``. Concepts are ordered by
    size (most segments first); a concept's members by their distance to the cluster centre (nearest first).

    Attributes
    ----------
    concept_sets : list of ConceptSet
        Per concept: ``images`` the members' patches ``[n_j, C, H, W]``, ``masks`` where each segment lies in its
        patch ``[n_j, H, W]`` (a ConceptSet's masks are in its images' coordinates; the segments' masks in the
        source images are ``segments.masks[segment_ids(j)]``), ``seed`` the k-means seed.
    members : list of list of (int, int)
        Per concept, ``(image index, segment id)`` of each patch.
    segments : SegmentSet
        What was clustered.
    layer : str
        The layer whose activations were clustered.
    labels : LongTensor [S]
        The k-means cluster of every segment (kept or not).
    distances : Tensor [S]
        Each segment's Euclidean distance to its cluster centre (float64).
    clusters : list of int
        The k-means cluster of each concept.
    centers : Tensor [n_concepts, D]
        The concepts' cluster centres (float64).
    """

    concept_sets: list[ConceptSet]
    members: list[list[tuple[int, int]]]
    segments: SegmentSet
    layer: str
    labels: torch.Tensor
    distances: torch.Tensor
    clusters: list[int]
    centers: torch.Tensor

    def __len__(self) -> int:
        return len(self.concept_sets)

    @property
    def names(self) -> list[str]:
        """The concepts' names, in order."""
        return [cs.name for cs in self.concept_sets]

    def segment_ids(self, j: int) -> torch.Tensor:
        """LongTensor ``[n_j]``: the segment ids of concept ``j``'s members."""
        return torch.tensor([s for _, s in self.members[j]], dtype=torch.long)

    def n_images(self) -> list[int]:
        """Per concept, how many different images its segments come from."""
        return [len({i for i, _ in m}) for m in self.members]

    def masks(self) -> torch.Tensor:
        """:func:`concept_masks` of these concepts: BoolTensor ``[n_concepts, N, H, W]``."""
        return concept_masks(self)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{n}={len(m)}" for n, m in zip(self.names, self.members))
        return f"SegmentConcepts({len(self)} concepts at {self.layer!r}: {sizes or 'none'})"


def embed_patches(model: nn.Module, patches: torch.Tensor, layer: str, *, pool: str = "mean",
                  batch_size: int = 256) -> torch.Tensor:
    """The activation of ``layer`` for each patch, one vector per patch (ACE's ``_patch_activations``).

    The model runs in eval mode (restored afterwards) without gradients, and stops after ``layer``.

    Parameters
    ----------
    model : nn.Module
    patches : Tensor [S, C, H, W]
        Floats in [0, 1], the size the model takes.
    layer : str
        A dotted layer name (:func:`xailib.layers.named_layers`).
    pool : {"mean", "flatten"}
        ``"mean"``: average a ``[S, K, h, w]`` activation over ``h, w`` -> ``[S, K]`` (ACE's ``channel_mean=True``,
        what ``ace_run.py`` uses); ``"flatten"`` -> ``[S, K * h * w]``. A 2-D activation is taken as it is.
    batch_size : int

    Returns
    -------
    Tensor [S, D]
        On the CPU, float64.
    """
    model = check_model(model)
    layer = check_layer(model, layer)
    pool = check_choice(pool, _POOLS, "pool")
    batch_size = check_positive_int(batch_size, "batch_size", hint=" (patches per forward pass)")
    patches = check_images(patches, model, what="patches", move=False)
    dev = model_device(model)
    out = []
    with model_state(model, train=False), torch.no_grad():
        for start in range(0, patches.shape[0], batch_size):
            # capture without detach: the layers above get a clone, so an in-place op there (ReLU(inplace=True)
            # after a conv) cannot overwrite the record
            with capture(model, layer) as rec, stop_after(model, layer) as stop:
                stop.run(patches[start:start + batch_size].to(dev))
                acts = rec[layer]  # [b, K, h, w] or [b, D]
            if acts.dim() > 2 and pool == "mean":
                acts = acts.flatten(2).mean(2)
            out.append(acts.flatten(1).double().cpu())
    return torch.cat(out)


def _ace_keeps(size: int, distinct: int, n_images: int) -> bool:
    """ACE's test that a cluster is a concept (``discover_concepts``): its ``size`` segments come from ``distinct``
    images, out of ``n_images``; common in its segments, or in the images and fairly common in its segments."""
    highly_common = distinct > 0.5 * size
    mildly = distinct > 0.25 * size and distinct > 0.25 * n_images
    populated = distinct > 0.1 * size and distinct > 0.5 * n_images
    return highly_common or mildly or populated


def cluster_concepts(model: nn.Module, segments: SegmentSet, layer: str, *, n_clusters: int = 25,
                     min_images: int = 2, ace_rule: bool = True, max_segments: int | None = None,
                     pool: str = "mean", n_init: int = 10, prefix: str = "", seed: int = 0,
                     batch_size: int = 256) -> SegmentConcepts:
    """ACE's concept discovery: k-means of the segments' patches in a layer's activation space.

    1. Embed every patch: :func:`embed_patches` ``(model, segments.patches, layer, pool=pool)``.
    2. ``sklearn.cluster.KMeans(n_clusters, n_init=n_init, random_state=seed)``; each segment's cost is its
       Euclidean distance to its centre.
    3. Keep a cluster when its segments come from at least ``min_images`` different images and, with
       ``ace_rule``, ACE's test holds: with ``n`` segments from ``d`` images out of ``N``,
       ``d > n/2``, or ``d > n/4 and d > N/4``, or ``d > n/10 and d > N/2`` (a concept recurs across images
       rather than filling one). ACE also asks for more than ``min_imgs = 40`` segments (with 40 images);
       ``min_images`` plays that part here.
    4. Order the kept clusters by size (most segments first; ties: the one holding the lower segment id first, so
       the order does not depend on k-means' label permutation), name them ``f"{prefix}concept_{j}"``, and order
       each one's members by distance to the centre; ``max_segments`` keeps the nearest (ACE: ``max_imgs = 40``).

    Parameters
    ----------
    model : nn.Module
    segments : SegmentSet
        From :func:`segment`.
    layer : str
        A dotted layer name; the middle stage for the AfI experiments (``"features.stage3"`` of a zoo model).
    n_clusters : int
        k (ACE: 25); at most ``len(segments)``.
    min_images : int
        Least number of different images a concept's segments come from.
    ace_rule : bool
        Also apply ACE's test above.
    max_segments : int or None
        Keep at most this many segments per concept (None: all, so :func:`concept_masks` covers every segment).
    pool : {"mean", "flatten"}
        Spatial mean (ACE's setting) or the flattened activation.
    n_init : int
        k-means restarts (fixed, so results are reproducible).
    prefix : str
        Name prefix, e.g. ``"sneaker_"``.
    seed : int
        k-means' ``random_state``: the same seed gives the same concepts.
    batch_size : int

    Returns
    -------
    SegmentConcepts
        Possibly with no concept, when no cluster passes the filter (lower ``min_images``, set ``ace_rule=False``
        or segment more images).

    Raises
    ------
    TypeError
        For a model that is not an ``nn.Module`` or segments that are not a :class:`SegmentSet`.
    ValueError
        For an unknown layer (the message lists the valid ones), ``n_clusters`` larger than the number of
        segments, or other bad arguments.
    """
    from sklearn.cluster import KMeans

    model = check_model(model)
    layer = check_layer(model, layer)
    if not isinstance(segments, SegmentSet):
        raise TypeError(f"segments must be a SegmentSet from xailib.data.superpixels.segment(images), got "
                        f"{type(segments).__name__}.")
    n_clusters = check_positive_int(n_clusters, "n_clusters", hint=" (k of k-means)")
    if n_clusters > len(segments):
        raise ValueError(f"n_clusters={n_clusters} is more than the {len(segments)} segments; lower n_clusters or "
                         "segment more images (or at more resolutions).")
    min_images = check_positive_int(min_images, "min_images", hint=" (images a concept must span)")
    if max_segments is not None:
        max_segments = check_positive_int(max_segments, "max_segments", hint=" or None (all)")
    n_init = check_positive_int(n_init, "n_init", hint=" (k-means restarts)")
    seed = check_seed(seed)
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a str (e.g. 'sneaker_'), got {type(prefix).__name__}.")
    if not isinstance(ace_rule, bool):
        raise TypeError(f"ace_rule must be a bool, got {ace_rule!r}.")
    acts = embed_patches(model, segments.patches, layer, pool=pool, batch_size=batch_size)  # [S, D]
    km = KMeans(n_clusters=n_clusters, n_init=n_init, random_state=seed).fit(acts.numpy())
    labels = torch.from_numpy(km.labels_.astype(np.int64))
    centers_all = torch.from_numpy(km.cluster_centers_.astype(np.float64))  # [k, D]
    distances = (acts - centers_all[labels]).norm(dim=1)  # [S]
    image_index = segments.image_index
    candidates = []
    for c in range(n_clusters):
        ids = torch.nonzero(labels == c).flatten()
        if len(ids) == 0:
            continue
        distinct = len(torch.unique(image_index[ids]))
        if distinct < min_images or (ace_rule and not _ace_keeps(len(ids), distinct, segments.n_images)):
            continue
        candidates.append((-len(ids), int(ids.min()), c, ids))
    candidates.sort(key=lambda t: t[:2])
    concept_sets, members, clusters, centers = [], [], [], []
    for j, (_, _, c, ids) in enumerate(candidates):
        # nearest to the centre first; ties by segment id (a stable sort of ids, which are ascending)
        ids = ids[torch.sort(distances[ids], stable=True).indices]
        if max_segments is not None:
            ids = ids[:max_segments]
        name = f"{prefix}concept_{j}"
        concept_sets.append(ConceptSet.from_tensors(
            name, segments.patches[ids], segments.patch_masks[ids], seed=seed,
            source=f"segments(layer={layer!r}, n_images={segments.n_images}, "
                   f"n_segments={segments.params.get('n_segments')}, cluster={c})"))
        members.append([(int(image_index[s]), int(s)) for s in ids])
        clusters.append(c)
        centers.append(centers_all[c])
    centers_t = torch.stack(centers) if centers else centers_all.new_zeros(0, centers_all.shape[1])
    return SegmentConcepts(concept_sets, members, segments, layer, labels, distances, clusters, centers_t)


def concept_masks(concepts, segments: SegmentSet | None = None, n_images: int | None = None) -> torch.Tensor:
    """Per concept and image, the union of the concept's segments in that image (empty where it has none).

    Parameters
    ----------
    concepts : SegmentConcepts or sequence of sequences of (int, int)
        The concepts, or their ``members``: per concept, ``(image index, segment id)`` pairs.
    segments : SegmentSet, optional
        Whose segment ids the members index; default ``concepts.segments``.
    n_images : int, optional
        ``N``; default ``segments.n_images``. Every member's image index must be below it.

    Returns
    -------
    BoolTensor [n_concepts, N, H, W]
        ``out[j, i]`` = OR of ``segments.masks[s]`` over the members ``(i, s)`` of concept ``j``.

    Raises
    ------
    TypeError
        Without a SegmentSet to take the masks from.
    ValueError
        For a segment id out of range, or a member whose image index is not its segment's image.
    """
    if isinstance(concepts, SegmentConcepts):
        segments = concepts.segments if segments is None else segments
        members = concepts.members
    else:
        members = concepts
    if not isinstance(segments, SegmentSet):
        raise TypeError("concept_masks needs the SegmentSet whose segment ids the members index: pass a "
                        "SegmentConcepts, or segments=... with a list of members.")
    if not isinstance(members, Sequence):
        raise TypeError(f"concepts must be a SegmentConcepts or a list (one per concept) of lists of "
                        f"(image index, segment id) pairs, got {type(members).__name__}.")
    n = segments.n_images if n_images is None else check_positive_int(n_images, "n_images")
    h, w = segments.masks.shape[1:]
    out = torch.zeros(len(members), n, h, w, dtype=torch.bool)
    for j, mem in enumerate(members):
        pairs = [tuple(p) for p in mem]
        if any(len(p) != 2 for p in pairs):
            raise ValueError(f"Concept {j}: members must be (image index, segment id) pairs, got {list(mem)[:3]}.")
        if not pairs:
            continue
        img = torch.tensor([p[0] for p in pairs], dtype=torch.long)
        seg = torch.tensor([p[1] for p in pairs], dtype=torch.long)
        if int(seg.min()) < 0 or int(seg.max()) >= len(segments):
            raise ValueError(f"Concept {j} names segment id {int(seg.max()) if int(seg.max()) >= len(segments) else int(seg.min())}, "
                             f"but the SegmentSet has {len(segments)} segments (ids 0..{len(segments) - 1}).")
        if not torch.equal(segments.image_index[seg], img):
            bad = int(torch.nonzero(segments.image_index[seg] != img)[0])
            raise ValueError(f"Concept {j}: member {pairs[bad]} says image {pairs[bad][0]}, but segment {pairs[bad][1]} "
                             f"is of image {int(segments.image_index[seg[bad]])}; are these members of another "
                             "SegmentSet?")
        if int(img.max()) >= n:
            raise ValueError(f"Concept {j} has a segment of image {int(img.max())}, but n_images={n}.")
        counts = torch.zeros(n, h * w, dtype=torch.int32)
        counts.index_add_(0, img, segments.masks[seg].view(-1, h * w).to(torch.int32))
        out[j] = (counts > 0).view(n, h, w)
    return out


# --------------------------------------------------------------------------------------------------------------
# Smallest sufficient / destroying concepts
# --------------------------------------------------------------------------------------------------------------


def _check_curve_inputs(model, images, labels, masks, order, mode, fill, names):
    model = check_model(model)
    images = check_images(images, model, move=False)
    n, c, h, w = images.shape
    mode = check_choice(mode, _MODES, "mode")
    if not isinstance(masks, torch.Tensor) or masks.dtype != torch.bool:
        raise TypeError(f"concept_masks must be a bool tensor [K, N, H, W] (from concept_masks(concepts)), got "
                        f"{getattr(masks, 'dtype', type(masks).__name__)}.")
    if masks.dim() != 4 or tuple(masks.shape[1:]) != (n, h, w):
        raise ValueError(f"concept_masks must be [K, N, H, W] = [K, {n}, {h}, {w}] for images {tuple(images.shape)}, "
                         f"got {tuple(masks.shape)}; make them with concept_masks(concepts) of these images' segments.")
    k_all = masks.shape[0]
    if names is None:
        names = [str(j) for j in range(k_all)]
    else:
        names = [str(v) for v in names]
        if len(names) != k_all:
            raise ValueError(f"names must give one name per concept ({k_all}), got {len(names)}.")
    if isinstance(order, torch.Tensor):
        order = order.tolist()
    if isinstance(order, (str, bytes)) or not isinstance(order, Sequence):
        raise TypeError(f"order must be a sequence of concept indices (or names), most important first; got "
                        f"{type(order).__name__}.")
    idx = []
    for o in order:
        if isinstance(o, str):
            if o not in names:
                raise ValueError(f"order names concept {o!r}, which is not one of the {k_all} concepts: {names}.")
            idx.append(names.index(o))
        elif isinstance(o, numbers.Integral) and not isinstance(o, bool):
            if not 0 <= int(o) < k_all:
                raise ValueError(f"order names concept {int(o)}, but concept_masks holds {k_all} concepts "
                                 f"(indices 0..{k_all - 1}).")
            idx.append(int(o))
        else:
            raise TypeError(f"order must hold concept indices (int) or names (str), got {o!r}.")
    if len(set(idx)) != len(idx):
        raise ValueError(f"order must not repeat a concept, got {list(order)}.")
    targets = check_targets(labels, n, model=model, images=images, what="label")
    if isinstance(fill, torch.Tensor):
        if not fill.is_floating_point() or tuple(fill.shape) not in ((c,), (c, h, w)):
            raise ValueError(f"fill must be a float, or a float tensor [C] = [{c}] or [C, H, W] = {[c, h, w]}; got "
                             f"{tuple(fill.shape)} {fill.dtype}.")
        fill_img = (fill.view(c, 1, 1).expand(c, h, w) if fill.dim() == 1 else fill).to(images.device, images.dtype)
    else:
        fill_img = images.new_full((c, h, w), _check_fill_value(fill))
    return model, images, targets, masks.to(images.device), idx, mode, fill_img, names


def _curve_frame(rows, mode, n, original) -> pd.DataFrame:
    import pandas as pd

    df = pd.DataFrame(rows, columns=["k", "concept", "concepts_edited", "accuracy", "area"])
    df.insert(0, "mode", mode)
    df["n"] = n
    df["original_accuracy"] = original
    return df[["mode", "k", "concept", "concepts_edited", "accuracy", "n", "original_accuracy", "area"]]


def segment_curves(model: nn.Module, images: torch.Tensor, labels, concept_masks: torch.Tensor, order, *,
                   mode: str, fill: float | torch.Tensor = 0.0, names: Sequence[str] | None = None,
                   batch_size: int = 256, progress: bool = False) -> pd.DataFrame:
    """ACE's smallest sufficient (SSC) and smallest destroying (SDC) concept curves: accuracy as the top-k concepts
    are added to a blank image or removed from the source images (AfI Sec. 4.3, Fig. 2).

    With ``U_k[i]`` the union of the masks of concepts ``order[0..k-1]`` in image ``i``, the edited image is

    * ``mode="ssc"``: ``x_k[i] = where(U_k[i], x[i], fill)`` -- the image's top-k concepts pasted on a blank image
      (``k = 0`` is the blank image alone);
    * ``mode="sdc"``: ``x_k[i] = where(U_k[i], fill, x[i])`` -- the image with its top-k concepts blanked out
      (``k = 0`` is the image itself),

    and the curve is top-1 accuracy ``mean_i [argmax model(x_k[i]) == labels[i]]`` for ``k = 0..len(order)``.
    One batched forward per ``k`` (in eval mode, restored afterwards).

    Parameters
    ----------
    model : nn.Module
    images : Tensor [N, C, H, W]
        The images whose segments made the concepts, floats in [0, 1].
    labels : int, sequence of int, LongTensor [N] or "predicted"
        The class each image should be recognised as (an int: all of them, e.g. the class the concepts explain;
        ``"predicted"``: agreement with the model's predictions on the unedited images).
    concept_masks : BoolTensor [K, N, H, W]
        :func:`concept_masks` of the concepts.
    order : sequence of int or str
        Concepts by decreasing importance: indices into ``concept_masks`` (or names from ``names``); need not hold
        them all.
    mode : {"ssc", "sdc"}
    fill : float or Tensor [C] or [C, H, W]
        The blank image (default 0.0, Fashion-MNIST's black ground; ACE's ImageNet grey is 117 / 255).
    names : sequence of str, optional
        One per concept, for the ``concept``/``concepts_edited`` columns (default ``"0"``, ``"1"``, ...).
    batch_size : int
    progress : bool
        A tqdm bar over ``k``.

    Returns
    -------
    DataFrame
        One row per ``k = 0..len(order)``: ``mode``, ``k``, ``concept`` (the one added at step k; ``""`` at 0),
        ``concepts_edited`` (those of steps 1..k, joined by ``"+"``), ``accuracy``, ``n`` (images),
        ``original_accuracy`` (on the unedited images), ``area`` (mean fraction of pixels taken from the image in
        "ssc", blanked in "sdc").

    Raises
    ------
    TypeError, ValueError
        For masks that are not a bool tensor ``[K, N, H, W]`` matching the images, an order naming an unknown or
        repeated concept, labels of the wrong count or range, a bad fill or mode.
    """
    model, images, targets, masks, idx, mode, fill_img, names = _check_curve_inputs(
        model, images, labels, concept_masks, order, mode, fill, names)
    batch_size = check_positive_int(batch_size, "batch_size", hint=" (images per forward pass)")
    n, _, h, w = images.shape
    original = float((predict(model, images, batch_size) == targets).double().mean())
    union = torch.zeros(n, h, w, dtype=torch.bool, device=images.device)
    rows = []
    for k in tqdm(range(len(idx) + 1), desc=mode, leave=False, disable=not progress):
        if k:
            union |= masks[idx[k - 1]]
        keep = union[:, None] if mode == "ssc" else ~union[:, None]  # [N, 1, H, W]: pixels taken from the image
        edited = torch.where(keep, images, fill_img.expand_as(images))
        acc = float((predict(model, edited, batch_size) == targets).double().mean())
        rows.append((k, names[idx[k - 1]] if k else "", "+".join(names[j] for j in idx[:k]), acc,
                     float(union.double().mean())))
    return _curve_frame(rows, mode, n, original)


def segment_curves_reference(model: nn.Module, images: torch.Tensor, labels, concept_masks: torch.Tensor, order, *,
                             mode: str, fill: float | torch.Tensor = 0.0,
                             names: Sequence[str] | None = None) -> pd.DataFrame:
    """:func:`segment_curves` written literally: for every ``k`` and every image, start from the blank image (SSC) or
    a copy of the image (SDC), copy in (or blank out) each of the first ``k`` concepts' pixels, one concept after
    the other, and classify that one image. Slow; for tests."""
    model, images, targets, masks, idx, mode, fill_img, names = _check_curve_inputs(
        model, images, labels, concept_masks, order, mode, fill, names)
    n, _, h, w = images.shape
    dev = model_device(model)
    with model_state(model, train=False), torch.no_grad():
        hits = sum(int(model(images[i:i + 1].to(dev)).argmax(1).item() == int(targets[i])) for i in range(n))
        original = hits / n
        rows = []
        for k in range(len(idx) + 1):
            correct, edited_px = 0, 0
            for i in range(n):
                x = fill_img.clone() if mode == "ssc" else images[i].clone()  # [C, H, W]
                touched = torch.zeros(h, w, dtype=torch.bool, device=images.device)
                for j in idx[:k]:
                    m = masks[j, i]
                    if mode == "ssc":
                        x[:, m] = images[i][:, m]
                    else:
                        x[:, m] = fill_img[:, m]
                    touched |= m
                edited_px += int(touched.sum())
                correct += int(model(x[None].to(dev)).argmax(1).item() == int(targets[i]))
            rows.append((k, names[idx[k - 1]] if k else "", "+".join(names[j] for j in idx[:k]), correct / n,
                         edited_px / (n * h * w)))
    return _curve_frame(rows, mode, n, original)
