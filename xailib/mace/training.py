"""Training MACE (Sec. 3.4): ``L = sum_k (L^E_k + L^R_k) + L^D + L^O`` with Adam, the base model frozen.

The base model is frozen (eval mode, so BatchNorm statistics are untouched; parameters without gradients) and
deterministic, so its tapped maps ``x``, dense outputs ``z`` and scores are computed once for the training images
(:func:`tap_all`, one forward pass per batch of images, never one per class) and the epochs train the MACE unit
on them. Batches are class-balanced (:func:`balanced_batches`): the triplet loss needs two images of every class
in each batch.

Labels are the base model's output indices. A unit for some of the outputs only (``classes=``, e.g. 10 of an
ImageNet classifier's 1000) takes images of those classes only; Eq. (2) compares each row's relevance estimate
with the model's probability of that row's output (the softmax over all outputs), and ``L^O`` stays the KL
divergence over all outputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from xailib.checks import check_images, check_model, check_positive_float, check_positive_int, check_seed
from xailib.layers import model_state
from xailib.mace.losses import dense_loss, output_loss, relevance_loss, triplet_loss
from xailib.mace.model import MACE, TapPoint, Tapped, find_tap_point, tap

__all__ = ["LOSSES", "balanced_batches", "mace_loss", "tap_all", "train_mace"]

#: The four terms of the total loss: the triplet loss (Eq. 1), the relevance loss (Eq. 2), L^D and L^O.
LOSSES = ("E", "R", "D", "O")


def tap_all(model: nn.Module, point: TapPoint, images: torch.Tensor, batch_size: int = 128) -> Tapped:
    """:func:`xailib.mace.model.tap` over ``images`` in batches, concatenated (frozen model, eval mode)."""
    parts = []
    with model_state(model, train=False, requires_grad=False):
        for s in range(0, len(images), batch_size):
            parts.append(tap(model, point, images[s:s + batch_size], check_tail=(s == 0)))
    return Tapped(*(torch.cat([getattr(p, f) for p in parts]) for f in ("x", "z", "logits")))


def balanced_batches(labels: torch.Tensor, n_classes: int, per_class: int, seed: int) -> list[torch.Tensor]:
    """One epoch of class-balanced batches: each holds ``per_class`` images of every class (drawn without
    replacement within the epoch, the classes with fewer images recycled), as many batches as the largest class
    fills. Needs at least 2 images of every class (ValueError naming the classes that have fewer)."""
    labels = torch.as_tensor(labels).long().cpu()
    counts = torch.bincount(labels, minlength=n_classes)
    few = [k for k in range(n_classes) if int(counts[k]) < 2]
    if few:
        raise ValueError(f"Classes {few} have fewer than 2 training images ({[int(counts[k]) for k in few]}); the "
                         "triplet loss of Eq. (1) needs two images of each class: give more images of them.")
    gen = torch.Generator().manual_seed(seed)
    n_batches = max(1, -(-int(counts.max()) // per_class))
    pools = []
    for k in range(n_classes):
        idx = torch.nonzero(labels == k).squeeze(1)
        reps = -(-n_batches * per_class // len(idx))
        pools.append(torch.cat([idx[torch.randperm(len(idx), generator=gen)] for _ in range(reps)]))
    return [torch.cat([p[b * per_class:(b + 1) * per_class] for p in pools]) for b in range(n_batches)]


def mace_loss(mace: MACE, point: TapPoint, tapped: Tapped, labels: torch.Tensor, *,
              losses: Sequence[str] = LOSSES, relevance_form: str = "bce") -> dict[str, torch.Tensor]:
    """The total loss of Sec. 3.4 on one batch and its terms: ``{"E", "R", "D", "O", "total"}`` (terms left out of
    ``losses`` are 0, for the ablation of SF17). ``labels [B]``: the images' classes as model output indices,
    among ``mace.classes``.

    Raises
    ------
    ValueError
        If the batch holds fewer than two images of some class (the triplet loss has no positive then), or a label
        is not among ``mace.classes``.
    """
    return _loss(mace, point, tapped, mace.rows(labels), losses, relevance_form)


def _loss(mace: MACE, point: TapPoint, tapped: Tapped, rows: torch.Tensor, losses: Sequence[str],
          relevance_form: str) -> dict[str, torch.Tensor]:
    """:func:`mace_loss` with the labels as rows of ``mace`` (``rows [B]`` in ``0..K-1``)."""
    out = mace(tapped.x)
    zero = out["z_tilde"].new_zeros(())
    terms = dict.fromkeys(LOSSES, zero)
    if "E" in losses:
        counts = torch.bincount(rows, minlength=mace.K)
        few = [k for k in range(mace.K) if int(counts[k]) < 2]
        if few:
            named = mace.classes[few].tolist()
            raise ValueError(f"The batch holds {[int(counts[k]) for k in few]} image(s) of classes {named}; the "
                             "triplet loss of Eq. (1) needs at least 2 of every class. Use class-balanced batches "
                             "(xailib.mace.training.balanced_batches) or leave 'E' out of losses.")
        terms["E"] = sum(triplet_loss(out["embeddings"][rows == k, k], mace.active[k]) for k in range(mace.K))
    if "R" in losses:
        probs = F.softmax(tapped.logits, dim=1)                                  # [B, n_outputs]
        terms["R"] = relevance_loss(out["logit"], probs[:, mace.classes], relevance_form)   # Eq. (2): f of each row
    if "D" in losses:
        terms["D"] = dense_loss(tapped.z, out["z_tilde"])
    if "O" in losses:
        terms["O"] = output_loss(point.tail(out["z_tilde"].clone()), tapped.logits)   # KL over all outputs
    terms["total"] = sum(terms[t] for t in LOSSES)
    return terms


def train_mace(model: nn.Module, images: torch.Tensor, labels, *, layer: str | None = None,
               tail: nn.Module | None = None, mace: MACE | None = None, n_concepts: int = 10, embedding_dim: int = 32,
               hidden: Sequence[int] = (64,), epochs: int = 20, lr: float = 1e-3, per_class: int = 4,
               losses: Sequence[str] = LOSSES, relevance_form: str = "bce", seed: int = 0,
               progress: bool = True, classes: Sequence[int] | None = None) -> tuple[MACE, TapPoint, pd.DataFrame]:
    """Train a MACE unit on ``model``'s ``images`` (labels: their classes, model output indices) with Adam.

    Parameters
    ----------
    layer, tail :
        The tap point (:func:`xailib.mace.model.find_tap_point`; default the last stage).
    mace : MACE, optional
        Continue training this unit (fine-tuning after pruning); default a new one with ``n_concepts`` (C),
        ``embedding_dim`` (Q) and ``hidden``.
    epochs, lr :
        Adam's epochs and step size (the paper: 1e-4 for 64 epochs on VGG16/AWA2, 1e-3 for 128 on ResNet-50).
    per_class : int
        Images of each class per batch (batch size ``K * per_class``), at least 2.
    losses : subset of ``("E", "R", "D", "O")``
        The terms trained (SF17's ablation leaves out "O" or "D").
    classes : sequence of int, optional
        A new unit's classes (:class:`~xailib.mace.model.MACE`): the model outputs its rows stand for, e.g. the
        10 of an ImageNet classifier's 1000 that the images show; default every output. Every label must be one of
        them. With ``mace`` given, its own classes are used (``classes``, if given, must equal them).

    Returns
    -------
    (mace, point, history)
        The trained unit, its tap point, and one row per epoch with the mean of each loss term per image.

    The base model is left exactly as it was (modes, flags, parameters, BatchNorm statistics).
    """
    check_model(model)
    images = check_images(images, model)
    y = torch.as_tensor(labels).long().cpu()
    if y.numel() != len(images):
        raise ValueError(f"labels need one entry per image: {y.numel()} labels for {len(images)} images.")
    epochs = check_positive_int(epochs, "epochs")
    lr = check_positive_float(lr, "lr")
    per_class = check_positive_int(per_class, "per_class")
    if per_class < 2:
        raise ValueError("per_class must be at least 2: the triplet loss needs two images of each class per batch.")
    seed = check_seed(seed)
    bad = [t for t in losses if t not in LOSSES]
    if bad or not losses:
        raise ValueError(f"losses must be a non-empty subset of {LOSSES}, got {tuple(losses)}.")
    point = find_tap_point(model, layer, tail)
    with model_state(model, train=False, requires_grad=False):
        if mace is None:
            mace = MACE.for_model(model, point, images, classes=classes, n_concepts=n_concepts,
                                  embedding_dim=embedding_dim, hidden=hidden, seed=seed)
        elif classes is not None and list(classes) != mace.classes.tolist():
            raise ValueError(f"classes={list(classes)} differ from the given unit's classes {mace.classes.tolist()}; "
                             "leave classes out when continuing to train a unit.")
        tapped = tap_all(model, point, images)
        n_out = tapped.logits.shape[1]
        if int(mace.classes.max()) >= n_out:
            raise ValueError(f"The unit's classes {mace.classes.tolist()} are not all outputs of the model, which has "
                             f"{n_out}.")
        if mace.classes.tolist() == list(range(mace.K)) and (int(y.max()) >= mace.K or int(y.min()) < 0):
            raise ValueError(f"labels must be class indices in 0..{mace.K - 1}, got {int(y.min())}..{int(y.max())}.")
        y_rows = mace.rows(y).cpu()                                              # the labels' rows of the unit
        opt = torch.optim.Adam(mace.parameters(), lr=lr)
        rows = []
        mace.train()
        for epoch in tqdm(range(epochs), desc="MACE", disable=not progress, leave=False):
            sums = dict.fromkeys((*LOSSES, "total"), 0.0)
            batches = balanced_batches(y_rows, mace.K, per_class, seed * 100003 + epoch)
            for idx in batches:
                idx_dev = idx.to(tapped.x.device)
                batch = Tapped(tapped.x[idx_dev], tapped.z[idx_dev], tapped.logits[idx_dev])
                terms = _loss(mace, point, batch, y_rows[idx].to(tapped.x.device), losses, relevance_form)
                opt.zero_grad()
                terms["total"].backward()
                opt.step()
                for key in sums:
                    sums[key] += float(terms[key].detach())
            n_seen = len(batches) * per_class * mace.K
            rows.append({"epoch": epoch + 1, **{f"loss_{k}": v / n_seen for k, v in sums.items()}})
        mace.eval()
    return mace, point, pd.DataFrame(rows)
