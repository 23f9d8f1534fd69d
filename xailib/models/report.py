"""The zoo's accuracy table, measured anew (notebook 00 shows it beside the accuracy recorded at training), and
the confusion matrices of the ConceptWorld members read against the look-alike class pairs."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from xailib.utils import resolve_device

__all__ = ["zoo_accuracy_table", "folder_accuracy_table", "confusion_report"]

#: Zoo data sets whose test split is generated: always the one of seed 0, the split the models were tested on.
_GENERATED = ("conceptworld", "conceptworld-hard")


def zoo_accuracy_table(
    names: Sequence[str] | None = None,
    n_test: int | None = None,
    device: str = "auto",
    seed: int = 0,
) -> pd.DataFrame:
    """Load each zoo model (sha256-checked) and measure its top-1 accuracy on its data set's test split.

    Parameters
    ----------
    names : sequence of str, optional
        Zoo names (default: every name in :data:`xailib.models.ZOO_NAMES` that has a checkpoint in
        ``manifest.json``; a name given here without one raises the :class:`~xailib.models.CheckpointError`
        that says how to train it).
    n_test : int, optional
        Test images per data set (ConceptWorld and conceptworld-hard generate their test split with this ``n``;
        Fashion-MNIST takes a seeded subset). ``None``: the full test split used at training (ConceptWorld and
        conceptworld-hard: as recorded in the manifest, n=2000; Fashion-MNIST: all 10,000).
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    seed : int
        Seed of the Fashion-MNIST subset (the test split of ConceptWorld and of conceptworld-hard is always the
        one of seed 0, as at training).

    Returns
    -------
    pandas.DataFrame
        One row per model: model, arch, dataset, tier, params, test_images, accuracy (measured now),
        accuracy_at_training (from ``manifest.json``), train_seconds.
    """
    from xailib.data import load_dataset
    from xailib.models import ZOO_NAMES, load_model, parse_zoo_name
    from xailib.models.checkpoints import read_manifest
    from xailib.models.train import evaluate

    manifest = read_manifest().get("models", {})
    names = [n for n in ZOO_NAMES if n in manifest] if names is None else list(names)
    dev = resolve_device(device)
    test_sets: dict[str, tuple] = {}
    rows = []
    for name in names:
        spec = parse_zoo_name(name)
        dataset = spec.dataset
        info = manifest.get(name, {})
        if dataset not in test_sets:
            n = n_test if n_test is not None else info.get("n_test")
            ds_seed = 0 if dataset in _GENERATED else seed
            ds = load_dataset(dataset, "test", n=n, seed=ds_seed)
            test_sets[dataset] = (ds.images, ds.labels)
        images, labels = test_sets[dataset]
        model = load_model(name, device=dev)
        rows.append(
            {
                "model": name,
                "arch": spec.arch,
                "dataset": dataset,
                "tier": spec.tier,
                "params": sum(p.numel() for p in model.parameters()),
                "test_images": int(labels.numel()),
                "accuracy": evaluate(model, images, labels),
                "accuracy_at_training": info.get("test_accuracy", float("nan")),
                "train_seconds": info.get("train_seconds", float("nan")),
            }
        )
    return pd.DataFrame(rows)


def folder_accuracy_table(
    model_name: str,
    weights: str | None,
    folder,
    device: str = "auto",
    batch_size: int = 32,
) -> pd.DataFrame:
    """Top-1 accuracy of a (torchvision) classifier on an ImageNet-layout folder: the real-scale path.

    Parameters
    ----------
    model_name : str
        A name :func:`xailib.models.load_model` accepts, e.g. ``"resnet50"`` or ``"vgg16"``.
    weights : str or None
        A torchvision weights name already in the torch cache (e.g. ``"IMAGENET1K_V2"``); None: random init.
    folder : xailib.data.imagenet.ImageFolderDataset
        From ``load_dataset("imagenet-folder", root=...)``. Labels are the sorted sub-folder indices, which
        match the model's outputs only when the folder holds every class of the model (ImageNet's 1000 wnids);
        the column ``label_space_matches`` says whether it does.
    device : str
    batch_size : int

    Returns
    -------
    pandas.DataFrame
        One row: model, weights, images, folder_classes, model_outputs, label_space_matches, accuracy.
    """
    import torch
    from torch.utils.data import DataLoader

    from xailib.layers import model_state
    from xailib.models import load_model

    dev = resolve_device(device)
    model = load_model(model_name, device=dev, weights=weights)
    correct, seen, n_out = 0, 0, None
    with model_state(model, train=False), torch.no_grad():
        for images, labels in DataLoader(folder, batch_size=batch_size, shuffle=False, num_workers=0):
            logits = model(images.to(dev))  # [B, n_out]
            n_out = logits.shape[1]
            correct += int((logits.argmax(1).cpu() == labels).sum())
            seen += int(labels.numel())
    return pd.DataFrame([{
        "model": model_name,
        "weights": weights or "random init",
        "images": seen,
        "folder_classes": len(folder.class_names),
        "model_outputs": n_out,
        "label_space_matches": len(folder.class_names) == n_out,
        "accuracy": correct / max(seen, 1),
    }])


def confusion_report(names: Sequence[str], n_test: int | None = None, device: str = "auto",
                     seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Confusion matrices of ConceptWorld zoo models on their test split, read against the look-alike pairs.

    Parameters
    ----------
    names : sequence of str
        Zoo names of ConceptWorld models (either setting), e.g. ``["vgg-conceptworld-hard"]``.
    n_test : int, optional
        Test scenes (default: the ``n_test`` recorded at training, 2000). The split is the one of seed 0, as
        at training; ``seed`` is unused for ConceptWorld and kept for symmetry with :func:`zoo_accuracy_table`.

    Returns
    -------
    (summary, pairs, matrices)
        ``summary``: one row per model (model, tier, dataset, test_images, accuracy, errors,
        errors_in_lookalike_pairs, share_in_lookalike_pairs, share_if_uniform, top_pairs);
        ``pairs``: :func:`xailib.metrics.confusion_pairs` per model, with a ``model`` column;
        ``matrices``: model name -> LongTensor ``[C, C]`` (rows: true class).
    """
    import torch

    from xailib.batching import class_scores
    from xailib.data import load_dataset
    from xailib.data.conceptworld import LOOKALIKES
    from xailib.metrics import confusion_matrix, confusion_pairs
    from xailib.models import load_model, parse_zoo_name
    from xailib.models.checkpoints import read_manifest

    manifest = read_manifest().get("models", {})
    dev = resolve_device(device)
    summary, pairs, matrices, test_sets = [], [], {}, {}
    for name in names:
        spec = parse_zoo_name(name)
        if not spec.dataset.startswith("conceptworld"):
            raise ValueError(f"confusion_report reads ConceptWorld models against its look-alike pairs; {name!r} "
                             f"is a {spec.dataset} model.")
        if spec.dataset not in test_sets:
            n = n_test if n_test is not None else manifest.get(name, {}).get("n_test", 2000)
            test_sets[spec.dataset] = load_dataset(spec.dataset, "test", n=n, seed=0)
        test = test_sets[spec.dataset]
        model = load_model(name, device=dev)
        with torch.no_grad():
            pred = class_scores(model, test.images).argmax(1).cpu()
        m = confusion_matrix(pred, test.labels, len(test.class_names))
        lookalikes = [(a, b) for a, b in LOOKALIKES if a in test.class_names and b in test.class_names]
        table, s = confusion_pairs(m, test.class_names, lookalikes)
        matrices[name] = m
        pairs.append(table.assign(model=name))
        top = "; ".join(f"{r.a}/{r.b} {r.errors}" for r in table.head(3).itertuples())
        summary.append(dict(model=name, tier=spec.tier, dataset=spec.dataset, test_images=int(test.labels.numel()),
                            accuracy=float((pred == test.labels).double().mean()), errors=s["errors"],
                            errors_in_lookalike_pairs=s["in_pairs"], share_in_lookalike_pairs=s["share_in_pairs"],
                            share_if_uniform=s["share_if_uniform"], top_pairs=top))
    return pd.DataFrame(summary), pd.concat(pairs, ignore_index=True) if pairs else pd.DataFrame(), matrices
