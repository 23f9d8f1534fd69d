"""MACE's explanations (Secs. 3.1, 3.3, 4.2): concept maps, concept relevances and prototypes, for any class.

:func:`explain` runs the base model once and the MACE unit once on a batch of images and returns every class's
concept maps (upsampled to the image, as Sec. 3.1 visualises them: "resizing the concept map to the original image
dimension") and concept relevances ``r_jk``, so an explanation of the second-ranked class costs nothing more than
one of the predicted class. :func:`prototypes` gives each concept's prototypical images: the images with the
highest relevance for it (the ranking the pruning rules of S2 use).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from xailib.checks import check_images, check_model, check_positive_int
from xailib.maps import resize_bilinear
from xailib.mace.model import MACE, TapPoint, eval_mode, tap

__all__ = ["Explanation", "explain", "prototypes", "normalise_maps"]


@dataclass
class Explanation:
    """MACE's explanation of a batch of images.

    Attributes
    ----------
    maps : Tensor ``[B, K', C, h, w]``
        Concept maps of the classes asked for (non-negative, ReLU'd), at the tapped layer's resolution
        (:meth:`upsampled` gives them at the image's).
    relevance : Tensor ``[B, K', C]``
        Concept relevances ``r_jk`` (0 for pruned concepts).
    active : BoolTensor ``[K', C]``
        The concepts not pruned.
    classes : list of int
        The class of each ``K'`` row, as a model output index (among the unit's :attr:`MACE.classes`).
    probs : Tensor ``[B, n_outputs]``
        The base model's class probabilities, over all its outputs (indexed by output).
    estimate : Tensor ``[B, K']``
        The relevance estimator's ``sigma(sum_j r_jk + b_k)``.
    image_size : (int, int)
        The images' ``(H, W)``.
    """

    maps: torch.Tensor
    relevance: torch.Tensor
    active: torch.Tensor
    classes: list[int]
    probs: torch.Tensor
    estimate: torch.Tensor
    image_size: tuple[int, int] = (0, 0)

    def rows_of(self, classes) -> torch.Tensor:
        """The rows of this explanation (its :attr:`classes`) that hold ``classes`` (model output indices, e.g.
        labels or predicted classes): LongTensor ``[N]`` on the CPU; a clear error for a class not explained."""
        wanted = torch.as_tensor(classes).long().flatten().cpu()
        index = {c: r for r, c in enumerate(self.classes)}
        missing = sorted({int(c) for c in wanted.tolist()} - set(index))
        if missing:
            raise ValueError(f"classes {missing[:10]} are not among the explained classes {self.classes[:10]}"
                             f"{' ...' if len(self.classes) > 10 else ''}; explain them first (explain(..., "
                             "classes=None) explains every class the MACE unit has).")
        return torch.tensor([index[int(c)] for c in wanted.tolist()], dtype=torch.long)

    def upsampled(self, classes=None) -> torch.Tensor:
        """The concept maps of ``classes`` (output indices in :attr:`classes`; default all) bilinearly resized to the
        image, as Sec. 3.1 visualises a concept: ``[B, K'', C, H_img, W_img]``, non-negative."""
        wanted = self.classes if classes is None else ([classes] if isinstance(classes, int) else list(classes))
        missing = [c for c in wanted if c not in self.classes]
        if missing:
            raise ValueError(f"classes {missing} were not explained (this explanation has {self.classes}); pass "
                             "them to explain(..., classes=...).")
        rows = [self.classes.index(c) for c in wanted]
        maps = self.maps[:, rows]
        h, w = maps.shape[-2:]
        if (h, w) == tuple(self.image_size):
            return maps
        return resize_bilinear(maps, self.image_size)      # non-negative: ReLU'd maps, non-negative weights


def _check_classes(classes, mace: MACE) -> list[int]:
    """The output indices asked for (default all of ``mace.classes``), each one a class of the unit."""
    outputs = mace.classes.tolist()
    if classes is None:
        return outputs
    items = [classes] if isinstance(classes, int) else list(classes)
    default = outputs == list(range(mace.K))
    for c in items:
        if isinstance(c, bool) or not isinstance(c, int) or (default and not 0 <= c < mace.K):
            raise ValueError(f"class {c!r} is out of range: the model has {mace.K} classes, 0..{mace.K - 1}.")
        if c not in outputs:
            raise ValueError(f"class {c!r} is not among this MACE unit's classes {outputs} (the model outputs its "
                             "rows stand for); explain one of them.")
    return items


def explain(model: nn.Module, mace: MACE, point: TapPoint, images: torch.Tensor, classes=None,
            upsample: bool = False) -> Explanation:
    """Concept maps and relevances of ``classes`` (model output indices among ``mace.classes``, default all ``K``;
    an int or a list, not only the predicted class) for ``images [B, C, H, W]``: one forward pass of the base model,
    one of MACE. The base model and the unit are left as they were (modes, no hooks; no gradients are computed).

    The maps are at the tapped layer's resolution; :meth:`Explanation.upsampled` resizes those of the classes
    shown to the image (``upsample=True`` does it here for every class asked for: ``B K' C`` maps of the image's
    size, the costly part of an explanation of all classes)."""
    check_model(model)
    images = check_images(images, model)
    chosen = _check_classes(classes, mace)
    with torch.no_grad(), eval_mode(mace):                                  # tap() puts the model in eval mode
        t = tap(model, point, images)
        out = mace(t.x, z_tilde=False)
    if classes is None:                                                      # every row, in order: no copies
        maps, relevance, active, logit = out["maps"], out["relevance"], mace.active.clone(), out["logit"]
    else:
        sel = mace.rows(chosen, "class").to(out["maps"].device)               # the rows of the classes asked for
        maps, relevance, active, logit = out["maps"][:, sel], out["relevance"][:, sel], mace.active[sel], \
            out["logit"][:, sel]
    ex = Explanation(maps, relevance, active, chosen, F.softmax(t.logits, dim=1), torch.sigmoid(logit),
                     tuple(images.shape[-2:]))
    if upsample:
        ex.maps = ex.upsampled()
    return ex


def normalise_maps(maps: torch.Tensor) -> torch.Tensor:
    """Each map divided by its maximum (all-zero maps stay 0): ``[..., H, W]`` in ``[0, 1]``, for thresholds."""
    peak = maps.flatten(-2).amax(-1)[..., None, None]
    return torch.where(peak > 0, maps / torch.where(peak > 0, peak, torch.ones_like(peak)), torch.zeros_like(maps))


def prototypes(relevance: torch.Tensor, top: int = 5) -> torch.Tensor:
    """Each concept's prototypical images: the indices of the ``top`` images with the highest relevance for it,
    from ``relevance [N, K, C]`` (e.g. :func:`explain` over a data set): ``[K, C, top]``."""
    top = check_positive_int(top, "top")
    if relevance.dim() != 3:
        raise ValueError(f"relevance must be [N, K, C], got {tuple(relevance.shape)}.")
    if top > relevance.shape[0]:
        raise ValueError(f"top={top} is more than the {relevance.shape[0]} images given.")
    return relevance.topk(top, dim=0).indices.permute(1, 2, 0)
