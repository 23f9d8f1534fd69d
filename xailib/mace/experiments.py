"""The measurements behind the MACE notebooks: the block structure of the concept embeddings (SF13), the
pruning summary (S2, SF1), and the explanations of a data set.

* :func:`embedding_distances` -- SF13's matrix: pairwise Euclidean distances between the embeddings of ``C'``
  concepts of one class over ``N`` images, ordered concept by concept ``[(c1, f1) .. (c1, fN), (c2, f1) ..]``.
* :func:`block_structure` -- what SF13 shows, as numbers: per concept, the mean distance between its own
  embeddings of different images (the diagonal blocks) and the mean distance from them to the other concepts'
  embeddings (the off-diagonal blocks), and their paired difference over concepts with a bootstrap interval. On
  the training images the triplet loss optimises exactly this, so the notebooks measure it on held-out images.
* :func:`training_splits` -- the notebooks' training and held-out images, their labels (model output indices) and
  the classes MACE is trained for: the zoo's splits (a row per output), or the two halves of an image folder on
  the real-scale path (:class:`xailib.models.subjects.Subjects`), where MACE explains only the folder's classes.
"""

from __future__ import annotations

import pandas as pd
import torch
from torch import nn

from xailib.checks import check_positive_int
from xailib.data.sampling import folder_halves, per_class
from xailib.mace.explain import Explanation, explain
from xailib.mace.model import MACE, TapPoint
from xailib.metrics import bootstrap_ci

__all__ = ["block_structure", "embedding_distances", "explain_all", "concept_embeddings", "fit_and_prune", "fit_for_profile",
           "parse_outputs", "pruning_summary", "training_splits"]


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
    """The embeddings ``e_jk`` of class ``k``'s concepts for ``images``: ``[N, C, Q]`` (``k`` a model output index,
    one of ``mace.classes``)."""
    from xailib.mace.model import tap

    row = int(mace.rows([k], "class")[0])
    with torch.no_grad():
        out = mace(tap(model, point, images).x)
    return out["embeddings"][:, row]


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
    the test set), fine-tune the kept concepts on ``train``. ``train_kwargs`` go to
    :func:`xailib.mace.training.train_mace` (``classes=``: the model outputs MACE is trained for, as
    :func:`training_splits` gives them).

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
        keep = {k: v for k, v in train_kwargs.items() if k not in ("n_concepts", "embedding_dim", "hidden", "classes")}
        mace, point, fine = train_mace(model, *train, mace=mace, layer=point.layer, tail=point.tail,
                                       epochs=finetune_epochs, seed=seed + 1, progress=False, **keep)
        passes.append(fine.assign(phase="finetune"))
    return mace, point, pd.concat(passes, ignore_index=True), table


def parse_outputs(text) -> list[int] | None:
    """A notebook's ``"0,1,2"`` (the model output of each folder class) as ``[0, 1, 2]``; ``""`` or None: None."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    items = [t.strip() for t in text.split(",")] if isinstance(text, str) else list(text)
    try:
        return [int(t) for t in items if str(t) != ""]
    except ValueError:
        raise ValueError(f"outputs={text!r} must be model output indices separated by commas, e.g. 0,1,2 (one per "
                         "folder class, in the folder's sorted order).") from None


def training_splits(subjects, model: nn.Module, dataset: str, n_train: int, n_held: int, outputs=None,
                    min_images: int = 2):
    """The images MACE is trained on, the held-out ones (pruning, SF13, Fig. 4), and the classes it explains.

    Zoo path (``subjects.real`` false): the first ``n_train`` images of every class of a seeded draw of
    ``12 n_train 10`` images of ``dataset``'s train split and ``n_held`` of its test split, the data set's labels,
    and ``classes = None`` (a row for every output of the model).

    Real-scale path: :func:`xailib.data.sampling.folder_halves` of the folder, ``n_train`` and ``n_held`` images a
    class. Labels must be model output indices: with ``outputs`` (the output of each folder class, in the folder's
    sorted order, e.g. the indices of its ImageNet wnids) folder class ``k`` is output ``outputs[k]``; without it,
    :meth:`~xailib.models.subjects.Subjects.reference_labels` (the folder's labels if they are the model's classes,
    else the predictions stand in, with a printed line). MACE's classes are the outputs with at least
    ``min_images`` images in each half (the triplet loss needs two images of a class, SF13 two held-out ones);
    images of other outputs are left out, and a printed line says how many.

    Returns
    -------
    (train, held, classes, class_names)
        ``train``, ``held``: (images ``[M, C, H, W]``, labels ``[M]``); ``classes``: a list of output indices or
        None; ``class_names``: names indexed by output (the data set's, or the model's on the real-scale path).

    Raises
    ------
    ValueError
        ``outputs`` that do not give one distinct output of the model per folder class, or no output with enough
        images in both halves.
    """
    from xailib.batching import class_scores

    n_train = check_positive_int(n_train, "n_train", hint=" (training images per class)")
    n_held = check_positive_int(n_held, "n_held", hint=" (held-out images per class)")
    if not subjects.real:
        pools = [subjects.data(dataset, 12 * n * 10, split=s) for s, n in (("train", n_train), ("test", n_held))]
        return (per_class(pools[0].images, pools[0].labels, n_train), per_class(pools[1].images, pools[1].labels,
                n_held), None, list(pools[0].class_names))
    train, held = folder_halves(subjects.folder, n_train, subjects.seed, n_held=n_held)
    names = list(getattr(model, "class_names", None) or subjects.folder.class_names)
    outputs = parse_outputs(outputs)
    if outputs is not None:
        folder_names = subjects.folder.class_names
        if len(outputs) != len(folder_names) or len(set(outputs)) != len(outputs) or \
                any(not 0 <= o < len(names) for o in outputs):
            raise ValueError(f"outputs={outputs} must give one distinct output of the model (0..{len(names) - 1}) "
                             f"to each of the folder's {len(folder_names)} classes, in order: {folder_names[:10]}.")
        to_output = torch.tensor(outputs)
        labelled = [(x, to_output[y]) for x, y in (train, held)]
    else:
        labelled = [(x, subjects.reference_labels(class_scores(model, x), y, f"MACE's {part} labels"))
                    for (x, y), part in ((train, "training"), (held, "held-out"))]
    (x_tr, y_tr), (x_te, y_te) = labelled
    found = sorted(set(y_tr.tolist()) | set(y_te.tolist()))
    classes = [c for c in found if int((y_tr == c).sum()) >= min_images and int((y_te == c).sum()) >= min_images]
    if not classes:
        raise ValueError(f"No class has {min_images} training and {min_images} held-out images (labels found: "
                         f"{found[:10]}); add images to the folder or give outputs=.")
    keep_tr, keep_te = torch.isin(y_tr, torch.tensor(classes)), torch.isin(y_te, torch.tensor(classes))
    dropped = int((~keep_tr).sum()) + int((~keep_te).sum())
    more = " ..." if len(classes) > 10 else ""
    named = ", ".join(names[c] for c in classes[:5]) + (", ..." if len(classes) > 5 else "")
    print(f"real scale: MACE explains {len(classes)} classes, outputs {classes[:10]}{more} ({named}), on "
          f"{int(keep_tr.sum())} training and {int(keep_te.sum())} held-out images"
          + (f"; {dropped} images of outputs with fewer than {min_images} images in a half are left out" if dropped
             else ""))
    return (x_tr[keep_tr], y_tr[keep_tr]), (x_te[keep_te], y_te[keep_te]), classes, names


def fit_for_profile(run, model: nn.Module, train, held_out, *, n_concepts: int, embedding_dim: int, lr: float,
                    epochs: int, finetune_epochs: int, seed: int = 0, classes=None, **train_kwargs):
    """:func:`fit_and_prune` with the sizes every MACE notebook uses for ``run``'s profile: ``epochs`` and
    ``finetune_epochs`` on the default profile (the paper profile: 64 and 16; smoke: 2 and 1), class-balanced
    batches of 6 images a class (smoke: 2), S2's ``T = 10, S = 5`` (smoke: 3 and 1). Returns what
    :func:`fit_and_prune` returns."""
    return fit_and_prune(model, train, held_out,
                         epochs=run.profile_value(smoke=2, default=epochs, paper=64),
                         finetune_epochs=run.profile_value(smoke=1, default=finetune_epochs, paper=16),
                         n_concepts=n_concepts, embedding_dim=embedding_dim, lr=lr,
                         per_class=run.profile_value(smoke=2, default=6, paper=6), seed=seed,
                         prune=dict(T=run.profile_value(smoke=3, default=10, paper=10),
                                    S=run.profile_value(smoke=1, default=5, paper=5)),
                         classes=classes, **train_kwargs)
