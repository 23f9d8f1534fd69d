"""The performers of Experiment 1 (Chen et al., Sec. 4.1): one binary CNN per ConceptWorld category.

The paper follows Zhang et al. (CVPR 2018): for each of six Pascal-Part animals, a CNN classifies the animal
against random images, and its top conv layer is made *interpretable* (a mask layer with part templates and the
filter loss, :mod:`xailib.explainer.interpretable`). We do the same for every ConceptWorld category (the class
against images of the other classes, an equal number), with three architectures of the zoo
(:mod:`xailib.models.zoo`) standing in for the paper's four:

=============  ==================  =================================================================
key            stands in for       zoo build
=============  ==================  =================================================================
``alexnet``    AlexNet             ``alexnet`` shallow: 5 convs, the first 7x7 stride 2; top map 8x8
``vgg-m``      VGG-M / VGG-S       ``vgg`` shallow: 8 convs; top map 4x4
``vgg-16``     VGG-16              ``vgg`` deep: 13 convs in 2-2-3-3-3 stages, as VGG-16; top map 4x4
=============  ==================  =================================================================

VGG-M and VGG-S differ from each other in strides and filter sizes only; one shallow VGG stands in for both. All
three have the shallow zoo's widths (64 filters in the top conv, the paper's nets 256 or 512), so that every
checkpoint stays small enough to ship.

Each performer is trained twice, deterministically (the zoo's rules, :func:`xailib.models.train.deterministic`):
*interpretable* (the mask layer between the top conv's BatchNorm and its ReLU, as the supplement says, and
cross-entropy plus the filter loss, whose value is logged per epoch) and *ordinary* (the same net without mask or
filter loss), so that the part selectivity of the filters can be compared. ``python -m
xailib.explainer.performers`` (``make performers``) trains them and writes checksummed checkpoints with a
manifest into :data:`CHECKPOINTS` and the table ``performers.md`` with each one's accuracy and training time.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from xailib.checks import check_choice, check_positive_int
from xailib.data.conceptworld import ConceptWorld
from xailib.layers import get_layer
from xailib.models.checkpoints import load_state_dict, read_manifest, save_checkpoint, write_manifest
from xailib.models.train import deterministic, evaluate, model_seed
from xailib.models.zoo import WIDTHS, build_model
from xailib.utils import make_generator, resolve_device, seed_everything

__all__ = [
    "ARCHS",
    "CHECKPOINTS",
    "RECIPE",
    "Arch",
    "BinaryTask",
    "binary_task",
    "build_performer",
    "load_performer",
    "mask_inputs",
    "performer_name",
    "top_layer",
    "train_performer",
    "main",
]

#: Where the performers' checkpoints, their manifest and ``performers.md`` live.
CHECKPOINTS = Path(__file__).resolve().parent / "checkpoints"


class Arch(NamedTuple):
    """A performer architecture: what it stands in for, its zoo build, and the ReLU of its top conv."""

    label: str
    zoo_arch: str
    tier: str
    top_relu: str


ARCHS: dict[str, Arch] = {
    "alexnet": Arch("AlexNet-like", "alexnet", "shallow", "features.stage5.relu"),
    "vgg-m": Arch("VGG-M/S-like", "vgg", "shallow", "features.stage5.relu2"),
    "vgg-16": Arch("VGG-16-like", "vgg", "deep", "features.stage5.relu3"),
}

#: The training recipe, the same for every performer: positives per category (and as many negatives), epochs,
#: Adam with weight decay, and the filter loss's weight (interpretable performers only).
RECIPE: dict = {"n_train": 300, "n_test": 200, "epochs": 10, "batch_size": 50, "lr": 2e-3, "weight_decay": 5e-4,
                "filter_weight": 1.0, "world_seed": 0, "size": 64}


def _check_arch(arch) -> str:
    return check_choice(arch, list(ARCHS), "arch")


def performer_name(arch: str, category: str, interpretable: bool = True) -> str:
    """``"<arch>-<category>-icnn"`` (interpretable) or ``"<arch>-<category>-plain"`` (ordinary)."""
    return f"{_check_arch(arch)}-{category}-{'icnn' if interpretable else 'plain'}"


def _world(recipe: dict) -> ConceptWorld:
    return ConceptWorld(size=recipe["size"], seed=recipe["world_seed"])


@dataclass
class BinaryTask:
    """Images of one category (label 1) and as many of the other categories (label 0), with their scenes.

    Attributes
    ----------
    images : Tensor ``[N, 3, S, S]``
    labels : Tensor ``[N]`` (0/1)
    classes : Tensor ``[N]``
        The ConceptWorld class of each image.
    part_masks : BoolTensor ``[N, P, S, S]``
        ConceptWorld's part masks (:attr:`xailib.data.conceptworld.SceneBatch.part_masks`).
    category : str
    part_names : list of str
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: torch.Tensor
    part_masks: torch.Tensor
    category: str
    part_names: list[str]


def binary_task(category: str, n: int, split: str = "train", seed: int = 0, world: ConceptWorld | None = None,
                ) -> BinaryTask:
    """``n`` scenes of ``category`` and ``n`` of the other categories (``n // (K - 1)`` or one more of each),
    rendered: the performer's data (positives first).

    Parameters
    ----------
    category : str
        A ConceptWorld class name.
    n : int
        Positives (and negatives).
    split : {"train", "test", "val"}
    seed : int
    world : ConceptWorld, optional
        Default: the recipe's world (64x64, seed 0).
    """
    world = _world(RECIPE) if world is None else world
    names = list(world.class_names)
    if category not in names:
        raise ValueError(f"Unknown category {category!r}; ConceptWorld's categories: {', '.join(names)}.")
    n = check_positive_int(n, "n", hint=" (positive images)")
    k = names.index(category)
    recipes = world.sample(n * len(names), split=split, seed=seed)         # n of every class, in random order
    labels = recipes.label.cpu()
    pos = torch.nonzero(labels == k).flatten()[:n]
    others = [torch.nonzero(labels == j).flatten() for j in range(len(names)) if j != k]
    per = [n // len(others) + (1 if i < n % len(others) else 0) for i in range(len(others))]
    neg = torch.cat([o[:m] for o, m in zip(others, per)]).sort().values
    idx = torch.cat([pos, neg])
    batch = world.render(recipes[idx])
    return BinaryTask(batch.images, (labels[idx] == k).long(), labels[idx], batch.part_masks, category,
                      list(world.part_names))


def build_performer(arch: str, category: str, interpretable: bool = True) -> nn.Module:
    """An untrained performer: the zoo build of ``arch`` with two outputs (``["other", category]``) and, when
    ``interpretable``, the mask layer before the top conv's ReLU (:func:`xailib.explainer.interpretable.add_mask_layer`).
    """
    from xailib.explainer.interpretable import add_mask_layer

    spec = ARCHS[_check_arch(arch)]
    widths = WIDTHS[(spec.zoo_arch, "conceptworld", "shallow")]
    model = build_model(spec.zoo_arch, "conceptworld", spec.tier, class_names=["other", category], widths=widths)
    return add_mask_layer(model, spec.top_relu) if interpretable else model


def top_layer(arch: str, interpretable: bool = True) -> str:
    """The layer whose output is Case 1's ``x``: the mask layer of an interpretable performer (its output, the
    masked map the supplement plugs into Eq. 5), the top conv's ReLU of an ordinary one."""
    from xailib.explainer.interpretable import MASK_SUFFIX

    spec = ARCHS[_check_arch(arch)]
    return spec.top_relu + MASK_SUFFIX if interpretable else spec.top_relu


@contextlib.contextmanager
def mask_inputs(model: nn.Module, layer: str):
    """Record the input of the mask layer at ``layer`` for every forward call inside the block."""
    store: list[torch.Tensor] = []
    handle = get_layer(model, layer).register_forward_hook(lambda m, inp, out: store.append(inp[0]))
    try:
        yield store
    finally:
        handle.remove()


def train_performer(arch: str, category: str, interpretable: bool = True, *, recipe: dict | None = None,
                    seed: int = 0, device="cpu", progress: bool = True):
    """Train one performer from scratch, deterministically, and test it.

    The loss is the cross-entropy of the two outputs, plus ``filter_weight`` times the filter loss of the mask
    layer's input for an interpretable performer (:func:`xailib.explainer.interpretable.filter_loss`, with
    ``alpha`` the share of positives in the batch). Adam, batches drawn from a seeded generator, one thread.

    Returns
    -------
    (model, info, history)
        The performer (eval mode); its manifest fields (test accuracy, training seconds, ...); a DataFrame with one
        row per epoch: ``epoch``, ``cross_entropy``, ``filter_loss`` (NaN for an ordinary performer), ``accuracy``
        (training batches).
    """
    from xailib.explainer.interpretable import filter_loss

    recipe = dict(RECIPE, **(recipe or {}))
    name = performer_name(arch, category, interpretable)
    dev = resolve_device(device)
    s = model_seed(name, seed)
    t_data = time.perf_counter()
    train = binary_task(category, recipe["n_train"], "train", seed=seed, world=_world(recipe))
    test = binary_task(category, recipe["n_test"], "test", seed=seed, world=_world(recipe))
    data_seconds = time.perf_counter() - t_data
    seed_everything(s)
    gen = make_generator(s)
    model = build_performer(arch, category, interpretable).to(dev)
    mask_layer = top_layer(arch, True) if interpretable else None
    opt = torch.optim.Adam(model.parameters(), lr=recipe["lr"], weight_decay=recipe["weight_decay"])
    n, bs = len(train.labels), recipe["batch_size"]
    if n < bs:
        raise ValueError(f"{n} training images (2 x n_train) make no batch of batch_size={bs}; raise n_train to at "
                         f"least {(bs + 1) // 2}.")
    rows = []
    t0 = time.perf_counter()
    model.train()
    for epoch in tqdm(range(1, recipe["epochs"] + 1), desc=name, disable=not progress, leave=False):
        order = torch.randperm(n, generator=gen)
        sums = {"cross_entropy": 0.0, "filter_loss": 0.0, "accuracy": 0.0}
        steps = n // bs
        for k in range(steps):  # drop the last incomplete batch, as the zoo does
            idx = order[k * bs:(k + 1) * bs]
            xb, yb = train.images[idx].to(dev), train.labels[idx].to(dev)
            with contextlib.ExitStack() as stack:
                seen = stack.enter_context(mask_inputs(model, mask_layer)) if interpretable else None
                logits = model(xb)
            ce = F.cross_entropy(logits, yb)
            loss = ce
            if interpretable:
                fl = filter_loss(F.relu(seen[0]), alpha=float(yb.float().mean()))
                loss = ce + recipe["filter_weight"] * fl
                sums["filter_loss"] += fl.item()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sums["cross_entropy"] += ce.item()
            sums["accuracy"] += float((logits.argmax(1) == yb).float().mean())
        rows.append({"epoch": epoch, **{key: v / steps for key, v in sums.items()}})
        if not interpretable:
            rows[-1]["filter_loss"] = float("nan")
    train_seconds = time.perf_counter() - t0
    model.eval()
    acc = evaluate(model, test.images, test.labels)
    info = {"arch": arch, "label": ARCHS[arch].label, "category": category, "interpretable": interpretable,
            "params": sum(p.numel() for p in model.parameters()), "n_train": n, "n_test": len(test.labels),
            "epochs": recipe["epochs"], "seed": s, "train_seconds": round(train_seconds, 1),
            "data_seconds": round(data_seconds, 1), "test_accuracy": round(acc, 4), "device": str(dev),
            "threads": torch.get_num_threads(), "recipe": recipe,
            "final_filter_loss": rows[-1]["filter_loss"] if interpretable else None}
    return model, info, pd.DataFrame(rows)


def _rebuild_command(name: str) -> str:
    return f"`make performers ONLY={name}`, i.e. `python -m xailib.explainer.performers --only {name}`"


def load_performer(arch: str, category: str, interpretable: bool = True, *, device="cpu",
                   folder: str | Path | None = None) -> nn.Module:
    """A trained performer from its checksummed checkpoint (eval mode, on ``device``).

    Raises
    ------
    xailib.models.checkpoints.CheckpointError
        When the checkpoint is missing or does not match its manifest; the message names the command that trains
        it.
    """
    name = performer_name(arch, category, interpretable)
    state, _ = load_state_dict(name, folder=CHECKPOINTS if folder is None else folder, rebuild=_rebuild_command(name))
    model = build_performer(arch, category, interpretable)
    model.load_state_dict(state)
    return model.to(resolve_device(device)).eval()


def performer_table(folder: str | Path | None = None) -> pd.DataFrame:
    """The manifest's performers as a table: name, architecture, category, interpretable, params, test accuracy,
    training seconds, the last epoch's filter loss."""
    models = {k: v for k, v in read_manifest(CHECKPOINTS if folder is None else folder).get("models", {}).items()
              if "category" in v}                               # the binary performers (not the attribute one)
    cols = ["arch", "label", "category", "interpretable", "params", "n_train", "n_test", "epochs", "test_accuracy",
            "train_seconds", "final_filter_loss"]
    return pd.DataFrame([{"performer": k, **{c: v.get(c) for c in cols}} for k, v in sorted(models.items())])


def write_table(folder: str | Path | None = None) -> Path:
    """Write ``performers.md`` (the :func:`performer_table` and the last run's wall time) beside the checkpoints."""
    folder = Path(CHECKPOINTS if folder is None else folder)
    table = performer_table(folder)
    run = read_manifest(folder).get("last_run", {})
    lines = ["# The additive explainer's performers", "",
             "Generated by `python -m xailib.explainer.performers` (`make performers`); do not edit by hand. Binary "
             "ConceptWorld classifiers (the category against as many images of the other categories), test accuracy "
             f"on {int(table['n_test'].max()) if len(table) else 0} + as many held-out images; "
             "`xailib/explainer/performers.py` has the recipe.", "",
             "| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    for _, r in table.iterrows():
        lines.append("| " + " | ".join("" if v is None or (isinstance(v, float) and v != v) else
                                       (f"{v:.4g}" if isinstance(v, float) else str(v)) for v in r) + " |")
    attr = read_manifest(folder).get("models", {}).get("attributes-vgg-16")
    if attr:
        lines += ["", f"Experiment 2's multi-label performer `attributes-vgg-16` ({attr['label']}, "
                      f"{attr['params']} parameters, {attr['n_train']} training scenes, {attr['epochs']} epochs): mean "
                      f"accuracy {attr['mean_accuracy']:.4f} over the 0/1 attributes on {attr['n_test']} held-out "
                      f"scenes, trained in {attr['train_seconds']} s. Its targets:", "",
                  "| attribute | accuracy | r2 | rmse |", "|---|---|---|---|"]
        for t in attr["targets"]:
            lines.append("| " + " | ".join([t["attribute"]] + ["" if t[k] is None or t[k] != t[k] else f"{t[k]:.4f}"
                                                                  for k in ("accuracy", "r2", "rmse")]) + " |")
    if run:
        lines += ["", f"Last run: {run.get('models')} performers in {run.get('wall_minutes')} min "
                      f"({run.get('device')}, {run.get('threads')} thread(s), {run.get('machine')}, {run.get('date')})."]
    path = folder / "performers.md"
    path.write_text("\n".join(lines) + "\n")
    return path


#: The name of Experiment 2's multi-label performer (:mod:`xailib.explainer.attributes`).
ATTRIBUTE_PERFORMER = "attributes-vgg-16"


def select(only: str = "*", attributes: bool = False) -> list[tuple[str, str, bool]]:
    """``(arch, category, interpretable)`` of every binary performer whose name matches the glob ``only``
    (with ``attributes=True`` the match may also be the attribute performer alone)."""
    names = list(_world(RECIPE).class_names)
    out = [(a, c, i) for a in ARCHS for c in names for i in (True, False)]
    chosen = [t for t in out if fnmatch.fnmatch(performer_name(*t), only)]
    if not chosen and not (attributes and fnmatch.fnmatch(ATTRIBUTE_PERFORMER, only)):
        raise ValueError(f"--only {only!r} matches no performer; names look like {performer_name('vgg-m', names[0])}.")
    return chosen


def main(argv: list[str] | None = None) -> int:
    """``python -m xailib.explainer.performers [--only GLOB] [--epochs N] [--out DIR]``; the attribute performer of
    Experiment 2 is trained by ``python -m xailib.explainer.attributes``."""
    p = argparse.ArgumentParser(description="Train the additive explainer's performers (deterministic, 1 thread).")
    p.add_argument("--only", default="*", help="glob over performer names, e.g. 'vgg-m-*-icnn'")
    p.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs (tests)")
    p.add_argument("--n-train", type=int, default=None, help="override the recipe's positives (tests)")
    p.add_argument("--out", default=None, help="checkpoint folder (default: xailib/explainer/checkpoints)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    folder = Path(args.out) if args.out else CHECKPOINTS
    override = {k: v for k, v in (("epochs", args.epochs), ("n_train", args.n_train)) if v is not None}
    chosen = select(args.only, attributes=True)
    t0 = time.perf_counter()
    with deterministic(args.threads):
        for arch, category, interp in tqdm(chosen, desc="performers", file=sys.stderr):
            model, info, history = train_performer(arch, category, interp, recipe=override, progress=False)
            info["history"] = history.round(6).to_dict(orient="list")
            save_checkpoint(model, performer_name(arch, category, interp), info, folder=folder)
    if fnmatch.fnmatch(ATTRIBUTE_PERFORMER, args.only):
        from xailib.explainer import attributes

        attributes.main(["--out", str(folder), "--threads", str(args.threads)]
                        + (["--epochs", str(args.epochs)] if args.epochs else []))
    if not chosen:
        return 0
    manifest = read_manifest(folder)
    manifest["last_run"] = {"models": len(chosen), "only": args.only,
                            "wall_minutes": round((time.perf_counter() - t0) / 60, 1), "device": "cpu",
                            "threads": args.threads, "machine": f"{platform.machine()}, {platform.system()}",
                            "date": time.strftime("%Y-%m-%d %H:%M"), "torch": torch.__version__.split("+")[0]}
    write_manifest(manifest, folder)
    write_table(folder)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
