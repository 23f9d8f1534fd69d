"""The zoo's accuracy table, measured anew (notebook 00 shows it beside the accuracy recorded at training)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from xailib.utils import resolve_device

__all__ = ["zoo_accuracy_table"]


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
        Zoo names (default: every name in :data:`xailib.models.ZOO_NAMES`).
    n_test : int, optional
        Test images per data set (ConceptWorld generates its test split with this ``n``; Fashion-MNIST takes a
        seeded subset). ``None``: the full test split used at training (ConceptWorld: as recorded in the
        manifest; Fashion-MNIST: all 10,000).
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    seed : int
        Seed of the Fashion-MNIST subset (ConceptWorld's test split is always the one of seed 0, as at training).

    Returns
    -------
    pandas.DataFrame
        One row per model: model, arch, dataset, params, test_images, accuracy (measured now),
        accuracy_at_training (from ``manifest.json``), train_seconds.
    """
    from xailib.data import load_dataset
    from xailib.models import ZOO_NAMES, load_model, parse_zoo_name
    from xailib.models.checkpoints import read_manifest
    from xailib.models.train import evaluate

    names = list(ZOO_NAMES if names is None else names)
    manifest = read_manifest().get("models", {})
    dev = resolve_device(device)
    test_sets: dict[str, tuple] = {}
    rows = []
    for name in names:
        arch, dataset = parse_zoo_name(name)
        info = manifest.get(name, {})
        if dataset not in test_sets:
            n = n_test if n_test is not None else info.get("n_test")
            ds_seed = 0 if dataset == "conceptworld" else seed
            ds = load_dataset(dataset, "test", n=n, seed=ds_seed)
            test_sets[dataset] = (ds.images, ds.labels)
        images, labels = test_sets[dataset]
        model = load_model(name, device=dev)
        rows.append(
            {
                "model": name,
                "arch": arch,
                "dataset": dataset,
                "params": sum(p.numel() for p in model.parameters()),
                "test_images": int(labels.numel()),
                "accuracy": evaluate(model, images, labels),
                "accuracy_at_training": info.get("test_accuracy", float("nan")),
                "train_seconds": info.get("train_seconds", float("nan")),
            }
        )
    return pd.DataFrame(rows)
