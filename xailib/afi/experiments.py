"""AfI's experiments as functions: the attacking results (Sec. 4.1, Tables 1, S1, S2) and the distillation
test of the feature importance (Sec. 4.2, Table 2).

* :func:`attack_table`, :func:`unmatched_table` -- mean top-1 accuracy over classes, clean and with the
  matched (Tables 1, S1) or unmatched (Table S2) global feature occluders, on the images the occluders
  were learned on and on held-out images.
* :func:`distillation_test` -- Table 2: for each class, a balanced binary task (the class against the
  others, only images the teacher gets right), the flattened outputs of the class's meta-detectors
  (Eq. 9) as features, and a student MLP 32-16-2; its held-out accuracy measures how much of the class
  the feature importance captured.
* :func:`student_mlp`, :func:`train_student` -- the student of Table 2.

The occluders come from :mod:`xailib.afi.occluder`, the feature and channel importance and the
meta-detectors from :mod:`xailib.afi.attribution`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from xailib.afi.attribution import channel_importance, feature_importance, gradient_feature_importance, meta_detector
from xailib.afi.occluder import (OccluderResult, evaluate_occluders, finetune_occluders, learn_occluders,
                                 unmatched_accuracy)
from xailib.batching import predict
from xailib.checks import check_images, check_model, check_positive_float, check_positive_int, check_seed
from xailib.data.sampling import folder_halves as _folder_halves  # noqa: F401  (moved to the floor)
from xailib.data.sampling import per_class

__all__ = ["dominant_texture", "afi_channel_importance", "user_concept_scores", "folder_concept_groups", "parse_classes", "parse_pairs", "context_reliance", "impressions_by_layer", "class_channel_importance", "per_class", "attack_splits", "attack_table", "unmatched_table", "student_mlp", "train_student", "distillation_test"]


def _as_labels(labels, n: int, what: str) -> torch.Tensor:
    y = torch.as_tensor(labels).long().flatten().cpu()
    if y.numel() != n:
        raise ValueError(f"{what}: labels need one entry per image, got {y.numel()} labels for {n} images.")
    return y


def attack_splits(subjects, dataset: str, n_per_class: int):
    """The images occluders are learned on and the held-out ones, ``n_per_class`` of each class each.

    On the zoo path (:class:`xailib.models.subjects.Subjects` without a model) the ``train`` and ``test``
    splits of ``dataset``; on the real-scale path a seeded subset of ``2 n_per_class`` images of every class of
    the folder, split in two halves (the first for learning, the second held out); classes with fewer images
    are named in a printed line.

    Returns
    -------
    (train, test) : two (images, labels) pairs
    """
    n_per_class = check_positive_int(n_per_class, "n_per_class")
    if not subjects.real:
        from xailib.data import dataset_info

        k = len(dataset_info(dataset).class_names)
        pools = [subjects.data(dataset, 3 * n_per_class * k, split=s) for s in ("train", "test")]
        return tuple(per_class(p.images, p.labels, n_per_class) for p in pools)
    return _folder_halves(subjects.folder, n_per_class, subjects.seed)


def attack_table(model: nn.Module, result: OccluderResult, splits: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
                 name: str, batch_size: int = 256) -> pd.DataFrame:
    """Tables 1 and S1: mean top-1 accuracy over classes, clean and under the matched occluders.

    Parameters
    ----------
    model : nn.Module
    result : OccluderResult
        From :func:`xailib.afi.occluder.learn_occluders`.
    splits : dict split name -> (images ``[N, C, H, W]``, labels ``[N]``)
        E.g. ``{"train": (the images the occluders were learned on), "test": (held-out images)}``; only
        images of classes in ``result`` are used.
    name : str
        The model's name, for the ``model`` column.

    Returns
    -------
    DataFrame
        One row per split: ``model``, ``split``, ``clean_accuracy``, ``perturbed_accuracy`` (means over the
        classes of the per-class top-1 accuracy, as the paper averages over its 100 classes), ``n_images``,
        ``n_classes``.
    """
    rows = []
    for split, (images, labels) in splits.items():
        y = _as_labels(labels, len(images), f"split {split!r}")
        keep = torch.isin(y, torch.tensor(result.classes))
        per_class = evaluate_occluders(model, result, images[keep], y[keep], batch_size=batch_size)
        per_class = per_class[per_class["n"] > 0]
        rows.append({"model": name, "split": split, "clean_accuracy": float(per_class["clean_top1"].mean()),
                     "perturbed_accuracy": float(per_class["occluded_top1"].mean()),
                     "n_images": int(per_class["n"].sum()), "n_classes": len(per_class)})
    return pd.DataFrame(rows)


def unmatched_table(model: nn.Module, result: OccluderResult, splits: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
                    name: str, batch_size: int = 256) -> pd.DataFrame:
    """Table S2: mean top-1 accuracy over occluders on the images of the *other* classes.

    Returns
    -------
    DataFrame
        One row per split: ``model``, ``split``, ``clean_accuracy``, ``unmatched_accuracy`` (means over the
        occluders), ``n_images`` (occluder-image pairs), ``n_classes``.
    """
    rows = []
    for split, (images, labels) in splits.items():
        y = _as_labels(labels, len(images), f"split {split!r}")
        keep = torch.isin(y, torch.tensor(result.classes))
        per = unmatched_accuracy(model, result, images[keep], y[keep], batch_size=batch_size)
        rows.append({"model": name, "split": split, "clean_accuracy": float(per["clean_top1"].mean()),
                     "unmatched_accuracy": float(per["unmatched_top1"].mean()), "n_images": int(per["n"].sum()),
                     "n_classes": len(per)})
    return pd.DataFrame(rows)


def class_channel_importance(model: nn.Module, images: torch.Tensor, labels, layers: Sequence[str],
                             result: OccluderResult | None = None, batch_size: int = 64) -> dict[str, torch.Tensor]:
    """Channel importance (Eq. 8) of the classes of ``result`` at ``layers``, from AfI's occluders or from
    gradients.

    With ``result``: the feature importance of Eqs. (6)-(7) over the images each occluder was learned on
    (``result.kept``: the class's images that took part, Eq. 4), then Eq. (8). Without it: the
    gradient-based baseline (:func:`xailib.afi.attribution.gradient_feature_importance` over all
    ``images``), then Eq. (8).

    Returns
    -------
    dict layer -> Tensor ``[K, C_l]``
        Row ``j`` for ``result.classes[j]`` (without ``result``: for the sorted classes of ``labels``).
    """
    y = _as_labels(labels, len(images), "class_channel_importance")
    if result is None:
        classes = torch.unique(y).tolist()
        fi = gradient_feature_importance(model, images, y, layers, classes=classes, batch_size=batch_size)
    else:
        kept = torch.as_tensor(result.kept, dtype=torch.long)
        fi = feature_importance(model, images[kept], result.occluders, y[kept], layers, classes=result.classes,
                                input_range=result.input_range, batch_size=batch_size)
    return channel_importance(fi.fis)


def student_mlp(n_features: int, hidden: Sequence[int] = (32, 16), seed: int = 0) -> nn.Sequential:
    """The student of Table 2: dense layers ``n_features -> 32 -> 16 -> 2`` with ReLUs ("three fully connected
    layers, where there are 32, 16, and 2 neurons"), initialised from ``seed``."""
    n_features = check_positive_int(n_features, "n_features")
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(check_seed(seed))
    try:
        sizes = [n_features, *[check_positive_int(h, "hidden") for h in hidden], 2]
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        return nn.Sequential(*layers[:-1])
    finally:
        torch.random.set_rng_state(gen_state)


def train_student(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor, *,
                  hidden: Sequence[int] = (32, 16), epochs: int = 200, lr: float = 1e-2, weight_decay: float = 1e-4,
                  seed: int = 0) -> float:
    """Train one student MLP (full batch, Adam) on standardised features; its held-out accuracy.

    Parameters
    ----------
    x_train, x_test : Tensor ``[n, D]``
        Features (here the flattened meta-detector outputs); standardised with the training set's mean and
        standard deviation.
    y_train, y_test : LongTensor ``[n]`` in ``{0, 1}``
    """
    epochs = check_positive_int(epochs, "epochs")
    lr = check_positive_float(lr, "lr")
    mu, sd = x_train.mean(0, keepdim=True), x_train.std(0, keepdim=True).clamp(min=1e-6)
    xa, xb = (x_train - mu) / sd, (x_test - mu) / sd
    net = student_mlp(x_train.shape[1], hidden, seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    with torch.enable_grad():
        for _ in range(epochs):
            opt.zero_grad()
            loss_fn(net(xa), y_train).backward()
            opt.step()
    with torch.no_grad():
        return float((net(xb).argmax(1) == y_test).double().mean())


def _balanced(y: torch.Tensor, ok: torch.Tensor, k: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of a balanced binary task: the correctly classified images of class ``k`` and as many
    correctly classified images of the other classes (drawn with ``gen``), with 1/0 targets."""
    pos = torch.nonzero((y == k) & ok)[:, 0]
    neg = torch.nonzero((y != k) & ok)[:, 0]
    n = min(len(pos), len(neg))
    pos = pos[torch.randperm(len(pos), generator=gen)[:n]]
    neg = neg[torch.randperm(len(neg), generator=gen)[:n]]
    idx = torch.cat([pos, neg])
    return idx, torch.cat([torch.ones(n, dtype=torch.long), torch.zeros(n, dtype=torch.long)])


def distillation_test(model: nn.Module, cis: Mapping[str, Mapping[str, torch.Tensor]], classes: Sequence[int],
                      train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor], *,
                      layers: Sequence[str] | None = None, name: str = "model", hidden: Sequence[int] = (32, 16),
                      epochs: int = 200, lr: float = 1e-2, seed: int = 0, batch_size: int = 64) -> pd.DataFrame:
    """Table 2, the distillation test of the feature importance (Sec. 4.2).

    For each class ``k`` of ``classes`` and each method's channel importance: a balanced binary task (the
    teacher's correctly classified images of ``k`` against as many correctly classified images of the other
    classes, drawn with ``seed``) on the ``train`` images, and the same on the ``test`` images (the paper's
    "original training-validation partition"); features are the class's meta-detector outputs (Eq. 9) at
    every layer of ``layers``, flattened and concatenated; a student MLP ``32-16-2`` is trained on the first
    and scored on the second.

    Parameters
    ----------
    model : nn.Module
        The teacher.
    cis : dict method -> (dict layer -> Tensor ``[K, C_l]``)
        Channel importance (Eq. 8) of the ``K`` classes of ``classes`` per method, e.g. ``{"gradient": ...,
        "afi_no_t": ..., "afi": ...}`` (:func:`xailib.afi.attribution.channel_importance`); row ``j`` belongs
        to ``classes[j]``.
    classes : sequence of int
    train, test : (images ``[N, C, H, W]``, labels ``[N]``)
    layers : sequence of str, optional
        Default: the layers of the first method's ``cis``.

    Returns
    -------
    DataFrame
        One row per class and method: ``model``, ``class``, ``method``, ``accuracy`` (student's held-out
        accuracy), ``n_train``, ``n_test`` (images in the balanced tasks), ``n_features``.
    """
    check_model(model)
    if not isinstance(cis, Mapping) or not cis:
        raise ValueError("cis must map each method name to its channel importance {layer: [K, C]}, e.g. "
                         "{'afi': channel_importance(fi.fis)}.")
    classes = [int(k) for k in classes]
    seed = check_seed(seed)
    layers = list(layers) if layers is not None else list(next(iter(cis.values())))
    prepared = {}
    for split, (images, labels) in (("train", train), ("test", test)):
        images = check_images(images, model, move=False)
        y = _as_labels(labels, len(images), f"{split} images")
        ok = predict(model, images, batch_size=256) == y
        prepared[split] = (images, y, ok)
    rows = []
    for method, w in cis.items():
        for j, k in enumerate(classes):
            cis_k = {n: torch.as_tensor(w[n])[j:j + 1] for n in layers}
            feats, targets = {}, {}
            for split, (images, y, ok) in prepared.items():
                gen = torch.Generator().manual_seed(seed * 1000 + k * 2 + (split == "test"))
                idx, t = _balanced(y, ok, k, gen)
                targets[split] = t
                if len(idx):  # no task where the class (or the rest) has no correctly classified image
                    out = meta_detector(model, images[idx], cis_k, layers, flatten=True, batch_size=batch_size)
                    feats[split] = torch.cat([out[n][0] for n in layers], dim=1).float()
            if len(targets["train"]) == 0 or len(targets["test"]) == 0:
                acc = np.nan  # no correctly classified image of the class in a split
            else:
                acc = train_student(feats["train"], targets["train"], feats["test"], targets["test"], hidden=hidden,
                                    epochs=epochs, lr=lr, seed=seed + k)
            rows.append({"model": name, "class": k, "method": method, "accuracy": acc,
                         "n_train": len(targets["train"]), "n_test": len(targets["test"]),
                         "n_features": int(next(iter(feats.values())).shape[1]) if feats else 0})
    return pd.DataFrame(rows)


def impressions_by_layer(model: nn.Module, cis: Mapping[str, torch.Tensor], classes: Sequence[int],
                         layers: Sequence[str], *, emerge: float = 0.5, steps: int = 256, lr: float = 0.05,
                         tv_weight: float = 1.0, seed: int = 0, name: str = "model",
                         image_shape: tuple[int, int, int] | None = None):
    """Class impressions (Sec. 4.4) at every layer of ``layers``, and the layer where class concepts emerge
    (Table 3).

    The paper picks "the first layer where class concepts emerge through visual investigation". We make that
    measurable: a class concept has emerged at a layer when the model itself classifies the impression of
    the class as the class; the chosen layer is the first (in ``layers`` order) where at least ``emerge`` of
    the classes' impressions are so classified.

    Parameters
    ----------
    cis : dict layer -> Tensor ``[K, C_l]``
        Channel importance (Eq. 8) of ``classes`` (row ``j`` for ``classes[j]``).
    layers : sequence of str
        From the input towards the output.
    image_shape : (C, H, W), optional
        The impressions' shape; default the model's ``input_shape``.

    Returns
    -------
    (dict layer -> ClassImpressions, DataFrame, dict)
        The impressions; one row per layer (``model``, ``layer``, ``shape`` of the layer's output ``H x W x
        C``, ``recognised`` = share of impressions classified as their class, ``n_classes``, ``gain`` = mean
        ratio of final to initial meta-detector activation); and Table 3's row (``model``, ``layer``,
        ``shape``; the layer is None when no layer reaches ``emerge``).
    """
    from xailib.afi.impressions import class_impressions
    from xailib.layers import capture

    classes = torch.as_tensor(list(classes), dtype=torch.long)
    out, rows = {}, []
    for layer in layers:
        imp = class_impressions(model, cis, layer, image_shape=image_shape, steps=steps, lr=lr,
                                tv_weight=tv_weight, seed=seed, progress=False)
        out[layer] = imp
        with torch.no_grad(), capture(model, layer) as rec:
            model(imp.images[:1].to(next(model.parameters()).device))
        shape = tuple(rec[layer].shape[1:])
        shape_text = " x ".join(str(v) for v in (shape[1:] + shape[:1] if len(shape) == 3 else (1, 1) + shape))
        pred = predict(model, imp.images)
        rows.append({"model": name, "layer": layer, "shape": shape_text,
                     "recognised": float((pred == classes).double().mean()), "n_classes": len(classes),
                     "gain": float((imp.final / imp.initial.clamp(min=1e-12)).mean())})
    table = pd.DataFrame(rows)
    emerged = table[table["recognised"] >= emerge]
    chosen = {"model": name, "layer": emerged["layer"].iloc[0] if len(emerged) else None,
              "shape": emerged["shape"].iloc[0] if len(emerged) else None}
    return out, table, chosen


def afi_channel_importance(model: nn.Module, images: torch.Tensor, labels, layers: Sequence[str], *,
                           lam: float = 0.05, lr: float = 0.01, max_iter: int = 300, transform: bool = True,
                           min_success: float = 0.9, seed: int = 0) -> tuple[OccluderResult, dict[str, torch.Tensor]]:
    """AfI's first stage end to end: the global feature occluders of every class in ``labels`` (Eqs. 4-5, with
    Sec. 4.1's fine-tuning of classes below ``min_success``), then the channel importance (Eqs. 6-8) at ``layers``.

    Returns
    -------
    (OccluderResult, dict layer -> Tensor ``[K, C_l]``)
    """
    res = learn_occluders(model, images, labels, lam=lam, lr=lr, max_iter=max_iter, transform=transform, seed=seed,
                          progress=False)
    res = finetune_occluders(model, images, labels, res, min_success=min_success, progress=False)
    return res, class_channel_importance(model, images, labels, layers, res)


def user_concept_scores(model: nn.Module, source, cis: Mapping[str, torch.Tensor], classes: Sequence[int],
                        groups: Mapping[str, Sequence[str]], *, layers: Sequence[str], n_probe: int = 60,
                        n_per_draw: int = 30, n_draws: int = 20, n_perm: int = 500, correction: str | None = "holm",
                        seed: int = 0, name: str = "model", size: int = 224, channels: int = 3) -> pd.DataFrame:
    """Fig. 4: AfI's importance of user-defined concepts, group by group (e.g. textures, colours, contexts).

    For each group the concepts' probe sets are scored against one random benchmark set with
    :func:`xailib.afi.concepts.concept_importance`: MMD of each class's meta-detector outputs, summed over
    ``layers``, normalised over the group's concepts; ``n_draws`` draws of ``n_per_draw`` probe and random
    images give the error bars (the paper: 100 runs, standard deviation), the permutation test the p-values
    (``correction``: Holm's, within each group and class, by default).

    Parameters
    ----------
    source : ConceptWorld or path-like
        A **ConceptWorld**: ``n_probe`` probe images per concept (a texture or colour fills the image, a context is
        the background alone) and ``n_probe`` random scenes. A **TCAV-layout folder** (``root/<concept>/``,
        ``root/random_0/``; :meth:`xailib.data.concepts.ConceptSet.from_folder`): every image of each concept
        folder and of ``random_0``, read at ``size`` with ``channels``; ``n_per_draw`` is then capped at the
        smallest of those sets (the table's ``n_per_draw`` column says what was used).
    groups : dict group -> concept names
        E.g. :func:`folder_concept_groups` for a folder.

    Returns
    -------
    DataFrame
        :func:`~xailib.afi.concepts.concept_importance`'s columns with ``group``, ``model`` and ``class_name``.
    """
    import os

    from xailib.afi.concepts import concept_importance
    from xailib.data.concepts import ConceptSet, random_sets

    folder = isinstance(source, (str, os.PathLike))
    if folder:
        random_set = random_sets(source, 1, None, seed, size=size, channels=channels)[0]
        make = lambda c: ConceptSet.from_folder(source, c, size=size, channels=channels)  # noqa: E731
    else:
        random_set = ConceptSet.random_conceptworld(source, n_probe, seed=seed)
        make = lambda c: ConceptSet.from_conceptworld(source, c, n_probe, seed=seed)  # noqa: E731
    tables = []
    for g, concepts in groups.items():
        sets = [make(c) for c in concepts]
        per_draw = min([n_per_draw, len(random_set)] + [len(s) for s in sets]) if folder else n_per_draw
        t = concept_importance(model, sets, random_set, cis, list(layers), classes=list(classes), n_per_draw=per_draw,
                               n_draws=n_draws, n_perm=n_perm, correction=correction, seed=seed)
        tables.append(t.assign(group=g))
    out = pd.concat(tables, ignore_index=True)
    names = getattr(model, "class_names", None)
    out["class_name"] = [names[int(k)] if names else str(k) for k in out["class"]]
    return out.assign(model=name)


def folder_concept_groups(root, spec: str = "") -> dict[str, list[str]]:
    """The concept groups of Fig. 4 on a TCAV-layout folder.

    ``spec`` is ``"group:concept,concept;group:concept"`` (e.g. ``"texture:striped,dotted;colour:red,blue"``);
    empty: every concept folder of ``root`` (:func:`xailib.data.concepts.list_concepts`, random folders left
    out) in one group ``"concepts"``. ValueError naming the folder's concepts for a name it does not hold.
    """
    from xailib.data.concepts import list_concepts

    have = list_concepts(root).concepts
    if not str(spec).strip():
        if not have:
            raise ValueError(f"{root} holds no concept folders (only random ones, or none); put each concept's images "
                             "in root/<concept>/ as TCAV does.")
        return {"concepts": have}
    groups: dict[str, list[str]] = {}
    for part in str(spec).split(";"):
        if not part.strip():
            continue
        if ":" not in part:
            raise ValueError(f"concept group {part!r} has no ':'; write groups as 'group:concept,concept;group:concept' "
                             f"(the folder holds {have}).")
        g, names = part.split(":", 1)
        concepts = [c.strip() for c in names.split(",") if c.strip()]
        missing = [c for c in concepts if c not in have]
        if not concepts or missing:
            raise ValueError(f"concept group {g.strip()!r} names {missing or 'no concept'}, not concept folders of "
                             f"{root}; it holds {have}.")
        groups[g.strip()] = concepts
    return groups


def parse_classes(spec: str, class_names: Sequence[str], learned: Sequence[int], n: int = 3) -> list[int]:
    """Class indices from ``"name,name"`` or ``"index,index"`` (model outputs); empty: the first ``n`` of
    ``learned``. Every class must be among ``learned`` (those with an occluder); ValueError otherwise."""
    items = [c.strip() for c in str(spec).split(",") if c.strip()]
    if not items:
        return list(learned)[:n]
    out = []
    for c in items:
        k = int(c) if c.isdigit() else (list(class_names).index(c) if c in class_names else None)
        if k is None or k not in learned:
            shown = [f"{i} ({class_names[i]})" for i in list(learned)[:10]]
            raise ValueError(f"class {c!r} has no occluder here; pass names or indices of the learned classes: "
                             f"{', '.join(shown)}{', ...' if len(learned) > 10 else ''}.")
        out.append(k)
    return out


def parse_pairs(spec: str) -> dict[str, str]:
    """``"a:b,c:d"`` -> ``{"a": "b", "c": "d"}`` (e.g. each class's own texture); empty: ``{}``."""
    out = {}
    for part in (p.strip() for p in str(spec).split(",") if p.strip()):
        if ":" not in part:
            raise ValueError(f"{part!r} is not 'key:value'; write e.g. 'zebra:striped,apron:dotted'.")
        k, v = part.split(":", 1)
        out[k.strip()] = v.strip()
    return out


def context_reliance(model: nn.Module, world, context: str, target: int, *, n: int = 400, seed: int = 0,
                     batch_size: int = 256) -> dict:
    """How much a model relies on a context for a class, measured on unbiased test scenes by re-rendering.

    The test scenes of the other classes are re-rendered with their background swapped to ``context``; the
    share now predicted as ``target`` is compared with the share before the swap. And the target class's own
    scenes are re-rendered on each other background; their accuracy is compared with the accuracy on
    ``context``. A model trained with ``context`` planted on ``target`` shows both effects; one that ignores the
    context shows neither (the validity check of the planted-bias experiment).

    Returns
    -------
    dict
        ``to_target_before``, ``to_target_after`` (shares of other-class scenes predicted as ``target``),
        ``accuracy_on_context``, ``accuracy_elsewhere`` (the target class's scenes), ``n_other``, ``n_target``.
    """
    rec = world.sample(n, split="test", seed=seed)
    other = rec[torch.nonzero(rec.label != target)[:, 0]]
    before = predict(model, world.render(other).images, batch_size)
    after = predict(model, world.render(world.swap(other, context=context)).images, batch_size)
    own = world.sample(n, split="test", seed=seed + 1)
    own = own[torch.nonzero(own.label == target)[:, 0]] if bool((own.label == target).any()) else own
    own_rec = world.swap(own, context=context)
    acc_on = float((predict(model, world.render(own_rec).images, batch_size) == target).double().mean())
    accs = [float((predict(model, world.render(world.swap(own, context=c)).images, batch_size) == target).double().mean())
            for c in world.context_names if c != context]
    return {"to_target_before": float((before == target).double().mean()),
            "to_target_after": float((after == target).double().mean()),
            "accuracy_on_context": acc_on, "accuracy_elsewhere": float(np.mean(accs)),
            "n_other": len(other), "n_target": len(own)}


def dominant_texture(world, k: int, n: int = 400, seed: int = 0) -> str | None:
    """The texture (other than plain) most often drawn on class ``k``'s parts in ``n`` sampled scenes, or None
    if the class's parts are plain (e.g. the tiger's stripes, the fish's checks)."""
    rec = world.sample(n, seed=seed)
    mask = (rec.label == k)[:, None] & rec.present
    tex = rec.texture[mask]
    counts = torch.bincount(tex, minlength=len(world.texture_names))
    counts[world.texture_names.index("plain")] = 0
    return world.texture_names[int(counts.argmax())] if int(counts.max()) > 0 else None
