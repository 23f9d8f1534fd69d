"""MACE's losses (Sec. 3): the triplet loss of Eq. (1), the relevance loss of Eq. (2), ``L^D`` and ``L^O``.

* :func:`triplet_loss` -- Eq. (1) for one class: anchors ``e_jk(i)``, positives the same concept's embeddings of
  the class's *other* images in the batch ("all anchor-positive pairs"), negatives the other concepts' embeddings
  of the anchor's own image ("the embeddings for the other concepts (except j) for a specific training image"),
  one semi-hard negative per anchor-positive pair (Schroff et al. 2015, as TensorFlow's semi-hard triplet loss picks
  it: the closest negative farther than the positive; where there is none, the farthest negative), squared
  distances, margin ``alpha = 1``. Eq. (1) has one term per anchor ``(i, j)``; with several positives the term is
  their mean. Summed over anchors, as Eq. (1). :func:`triplet_loss_reference` is the literal loop.
* :func:`relevance_loss` -- Eq. (2) for every class: the cross-entropy between the relevance estimator's
  ``sigma(sum_j r_jk)`` and the base model's probability ``f_k``, summed over the batch. The text calls it "the
  cross-entropy between the output of the sigmoid and the pre-trained model's prediction probability", two
  Bernoulli probabilities; Eq. (2) prints only its first term, ``-f log sigma``, which alone is minimised by
  ``sigma -> 1`` whatever ``f`` is. The default ``form="bce"`` is the full binary cross-entropy
  ``-f log sigma - (1 - f) log (1 - sigma)``; ``form="eq2"`` is Eq. (2) as printed.
* :func:`dense_loss` -- ``L^D = ||z - z~||^2``, summed over the batch.
* :func:`output_loss` -- ``L^O = KL(f(z~) || f(z))``, a real Kullback-Leibler divergence of the two softmax
  distributions (the authors' code computes a binary cross-entropy under that name), summed over the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["triplet_loss", "triplet_loss_reference", "relevance_loss", "dense_loss", "output_loss"]

MARGIN = 1.0


def _sq_dists(e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``ap [B, B, C]``: ``||e[i, j] - e[i', j]||^2``; ``an [B, C, C]``: ``||e[i, j] - e[i, j']||^2``."""
    ap = (e[:, None] - e[None, :]).square().sum(-1)                         # [B, B', C]
    an = (e[:, :, None] - e[:, None, :]).square().sum(-1)                   # [B, C, C']
    return ap, an


def triplet_loss(e: torch.Tensor, active: torch.Tensor | None = None, margin: float = MARGIN) -> torch.Tensor:
    """Eq. (1) for one class from its images' embeddings ``e [B, C, Q]`` (L2-normalised); a scalar.

    ``active [C]`` (bool) leaves pruned concepts out as anchors, positives and negatives. Needs ``B >= 2``
    (a positive is another image of the class) and at least two active concepts (a negative is another concept);
    otherwise ValueError saying so.
    """
    b, c, _ = e.shape
    act = torch.ones(c, dtype=torch.bool, device=e.device) if active is None else active.to(e.device)
    if b < 2:
        raise ValueError(f"The triplet loss of Eq. (1) needs at least 2 images of the class in the batch (a positive "
                         f"is the same concept in another image), got {b}; use class-balanced batches "
                         "(xailib.mace.training.balanced_batches) or larger ones.")
    if int(act.sum()) < 2:
        raise ValueError("The triplet loss needs at least 2 active concepts of the class (a negative is another "
                         "concept of the same image); this class has fewer after pruning.")
    ap, an = _sq_dists(e)
    eye_b = torch.eye(b, dtype=torch.bool, device=e.device)
    neg_ok = (act[:, None] & act[None, :]) & ~torch.eye(c, dtype=torch.bool, device=e.device)   # [C, C']
    d_ap = ap[:, :, :, None]                                                # [B, B', C, 1]
    d_an = an[:, None, :, :]                                                # [B, 1, C, C']
    inf = torch.tensor(float("inf"), dtype=e.dtype, device=e.device)
    outside = (d_an > d_ap) & neg_ok                                        # farther than the positive
    closest_outside = torch.where(outside, d_an, inf).amin(-1)              # [B, B', C]
    farthest = torch.where(neg_ok, d_an, -inf).amax(-1).expand_as(closest_outside)
    chosen = torch.where(torch.isfinite(closest_outside), closest_outside, farthest)
    per_pair = (ap - chosen + margin).clamp_min(0)                          # [B, B', C]
    pos = (~eye_b)[:, :, None] & act[None, None, :]
    per_anchor = (per_pair * pos).sum(1) / (b - 1)                          # mean over the anchor's positives
    return per_anchor[:, act].sum()


def triplet_loss_reference(e: torch.Tensor, active=None, margin: float = MARGIN) -> float:
    """Literal loops of :func:`triplet_loss` (Eq. 1): for each anchor, each positive, pick the negative, average."""
    b, c, _ = e.shape
    act = [True] * c if active is None else [bool(a) for a in active]
    total = 0.0
    for i in range(b):
        for j in range(c):
            if not act[j]:
                continue
            terms = []
            for i2 in range(b):
                if i2 == i:
                    continue
                d_ap = float(((e[i, j] - e[i2, j]) ** 2).sum())
                negs = [float(((e[i, j] - e[i, j2]) ** 2).sum()) for j2 in range(c) if j2 != j and act[j2]]
                farther = [d for d in negs if d > d_ap]
                d_an = min(farther) if farther else max(negs)
                terms.append(max(d_ap - d_an + margin, 0.0))
            total += sum(terms) / len(terms)
    return total


def relevance_loss(logit: torch.Tensor, probs: torch.Tensor, form: str = "bce") -> torch.Tensor:
    """Eq. (2) summed over the classes and the batch: ``logit [B, K]`` (``sum_j r_jk + b_k``), ``probs [B, K]``
    (the base model's ``f_k``). ``form``: ``"bce"`` (the binary cross-entropy the text describes) or ``"eq2"``
    (Eq. 2 as printed, ``-f log sigma``)."""
    if form == "bce":
        return F.binary_cross_entropy_with_logits(logit, probs, reduction="sum")
    if form == "eq2":
        return -(probs * F.logsigmoid(logit)).sum()
    raise ValueError(f"form must be 'bce' (the binary cross-entropy of Sec. 3.3) or 'eq2' (Eq. 2 as printed), "
                     f"got {form!r}.")


def dense_loss(z: torch.Tensor, z_tilde: torch.Tensor) -> torch.Tensor:
    """``L^D = ||z - z~||_2^2`` summed over the batch."""
    return (z - z_tilde).square().sum()


def output_loss(logits_tilde: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """``L^O = KL(f(z~) || f(z)) = sum_k p~_k (log p~_k - log p_k)`` with ``p~ = softmax(logits_tilde)``,
    ``p = softmax(logits)``, summed over the batch."""
    log_pt = F.log_softmax(logits_tilde, dim=1)
    log_p = F.log_softmax(logits, dim=1)
    return (log_pt.exp() * (log_pt - log_p)).sum()
