"""The measurements behind the MACE notebooks: the block structure of the concept embeddings (SF13), the
pruning summary (S2, SF1), and the explanations of a data set.

* :func:`embedding_distances` -- SF13's matrix: pairwise Euclidean distances between the embeddings of ``C'``
  concepts of one class over ``N`` images, ordered concept by concept ``[(c1, f1) .. (c1, fN), (c2, f1) ..]``.
* :func:`block_structure` -- what SF13 shows, as numbers: per concept, the mean distance between its own
  embeddings of different images (the diagonal blocks) and the mean distance from them to the other concepts'
  embeddings (the off-diagonal blocks), and their paired difference over concepts with a bootstrap interval. On
  the training images the triplet loss optimises exactly this, so the notebooks measure it on held-out images.
"""

from __future__ import annotations

import pandas as pd
import torch
from torch import nn

from xailib.checks import check_positive_int
from xailib.mace.explain import Explanation, explain
from xailib.mace.model import MACE, TapPoint
from xailib.metrics import bootstrap_ci

__all__ = ["block_structure", "embedding_distances", "explain_all", "concept_embeddings", "fit_and_prune",
           "pruning_summary"]


def explain_all(model: nn.Module, mace: MACE, point: TapPoint, images: torch.Tensor, batch_size: int = 128
                ) -> Explanation:
    """:func:`xailib.mace.explain.explain` of every class over ``images`` in batches, concatenated (maps at the
    tapped resolution)."""
    parts = [explain(model, mace, point, images[s:s + batch_size]) for s in range(0, len(images), batch_size)]
    first = parts[0]
    return Explanation(*(torch.cat([getattr(p, f) for p in parts]) for f in ("maps", "relevance")), first.active,
                       first.classes, torch.cat([p.probs for p in parts]), torch.cat([p.estimate for p in parts]),
                       first.image_size)


def concept_embeddings(model: nn.Module, mace: MACE, point: TapPoint, images: torch.Tensor, k: int) -> torch.Tensor:
    """The embeddings ``e_jk`` of class ``k``'s concepts for ``images``: ``[N, C, Q]``."""
    from xailib.mace.model import tap

    with torch.no_grad():
        out = mace(tap(model, point, images).x)
    return out["embeddings"][:, k]


def embedding_distances(e: torch.Tensor) -> torch.Tensor:
    """SF13: the ``[C' N, C' N]`` Euclidean distances of ``e [N, C', Q]``, rows ordered concept by concept."""
    if e.dim() != 3:
        raise ValueError(f"e must be [N images, C' concepts, Q], got {tuple(e.shape)}.")
    flat = e.transpose(0, 1).reshape(-1, e.shape[-1]).double()            # (c1, f1) .. (c1, fN), (c2, f1) ..
    return torch.cdist(flat, flat)


def block_structure(e: torch.Tensor, n_boot: int = 5000, seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """Per concept of ``e [N, C', Q]`` (``N >= 2``): ``within`` (mean distance between its embeddings of different
    images), ``between`` (mean distance from its embeddings to the other concepts' embeddings, any image); and the
    summary: their means over concepts and the paired difference ``between - within`` with its bootstrap CI."""
    n, c, _ = e.shape
    if n < 2 or c < 2:
        raise ValueError(f"block_structure needs at least 2 images and 2 concepts, got {n} and {c}.")
    d = embedding_distances(e).view(c, n, c, n)
    off = ~torch.eye(n, dtype=torch.bool)
    rows = []
    for j in range(c):
        within = float(d[j, :, j][off].mean())
        between = float(torch.cat([d[j, :, o].flatten() for o in range(c) if o != j]).mean())
        rows.append({"concept": j, "within": within, "between": between, "difference": between - within})
    table = pd.DataFrame(rows)
    ci = bootstrap_ci(table["difference"].to_numpy(), n_boot=n_boot, seed=seed)
    return table, {"within": float(table["within"].mean()), "between": float(table["between"].mean()),
                   "difference": ci.mean, "ci_low": ci.low, "ci_high": ci.high, "n_concepts": c, "n_images": n}


def pruning_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per class: concepts kept, pruned, and how many each rule of S2 flagged (a concept can fire several)."""
    from xailib.mace.pruning import RULES

    check_positive_int(len(table), "rows of the pruning table")
    g = table.groupby("class")
    out = pd.DataFrame({"kept": g["pruned"].apply(lambda s: int((~s).sum())),
                        "pruned": g["pruned"].apply(lambda s: int(s.sum())),
                        **{rule: g[rule].sum().astype(int) for rule in RULES},
                        "kept_minimum": g["kept_minimum"].sum().astype(int)})
    return out.reset_index()


def fit_and_prune(model: nn.Module, train: tuple[torch.Tensor, torch.Tensor], held_out: tuple[torch.Tensor, torch.Tensor],
                  *, epochs: int, finetune_epochs: int, prune: dict | None = None, seed: int = 0, **train_kwargs):
    """The paper's pipeline: train MACE on ``train``, prune by S2's rules measured on ``held_out`` (the paper:
    the test set), fine-tune the kept concepts on ``train``.

    Returns
    -------
    (mace, point, history, pruning)
        ``history``: one row per epoch with a ``phase`` column (``"train"``, ``"finetune"``); ``pruning``: the
        table of :func:`xailib.mace.pruning.prune_concepts`.
    """
    from xailib.mace.pruning import prune_concepts
    from xailib.mace.training import train_mace

    mace, point, hist = train_mace(model, *train, epochs=epochs, seed=seed, progress=False, **train_kwargs)
    table = prune_concepts(model, mace, point, *held_out, **(prune or {}))
    passes = [hist.assign(phase="train")]
    if finetune_epochs:
        keep = {k: v for k, v in train_kwargs.items() if k not in ("n_concepts", "embedding_dim", "hidden")}
        mace, point, fine = train_mace(model, *train, mace=mace, layer=point.layer, tail=point.tail,
                                       epochs=finetune_epochs, seed=seed + 1, progress=False, **keep)
        passes.append(fine.assign(phase="finetune"))
    return mace, point, pd.concat(passes, ignore_index=True), table
