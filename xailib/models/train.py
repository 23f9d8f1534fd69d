"""Retrain the model zoo from scratch, deterministically:
``python -m xailib.models.train [--tier {all,shallow,deep}] [--only GLOB] [--jobs 2]``.

``make models`` trains every zoo model (both tiers: the shallow tier first, then the deep one), ``make models
TIER=deep`` (or ``TIER=shallow``) one tier, ``make models MODELS='vgg-*-conceptworld-hard'`` the models a glob
matches. For every model selected this builds the untrained architecture, trains it with a fixed seed on the
CPU (or ``--device``), evaluates it on the test split, and writes

* ``xailib/models/checkpoints/<name>.pt`` (state dict) and its entry in ``manifest.json`` (sha256, test
  accuracy, n_train, epochs, train seconds, torch version);
* ``zoo.md`` and ``zoo.csv``: the zoo table (model, arch, dataset, tier, params, test accuracy, train time),
  with the wall time of the last full run of each tier (``full_run_<tier>`` in the manifest).

Recipe (:data:`RECIPES`, the same for both tiers): AdamW with a one-cycle learning-rate schedule,
cross-entropy, batch 128. Fashion-MNIST: all 60,000 training images, 3 epochs, random horizontal flips; tested on
all 10,000 test images. ConceptWorld and its hard setting (``conceptworld-hard``): 10,000 generated training
images (seed 0), 5 epochs, no augmentation (flips and shifts could change what a concept means); tested on the
test split with n=2000 (seed 0).

Parallel runs: ``--jobs N`` (default 2) trains the models of a tier in a pool of N worker processes, one model
at a time each, the longest first (estimated from :data:`STEP_SECONDS`), so that two processes finish together;
each worker generates or loads a data set once and keeps it for its next models. Every model is trained by the
same code from its own seed in one process, so the checkpoints do not depend on ``--jobs`` (``--jobs 1`` trains
them one after another in this process).

Determinism: seeds from :func:`xailib.utils.seed_everything`, explicit generators for shuffling and
augmentation, ``torch.use_deterministic_algorithms(True)`` and a fixed thread count (``--threads``, default 1),
so the same command on the same machine and torch build gives the same checkpoints (``make models`` reproduced
the sha256 of every checkpoint trained earlier with the same code). One thread per process and two processes
(``--jobs 2``) keep both cores of a 2-core machine busy without OpenMP threads waiting on each other: on an
idle machine 2 threads make one process 1.4-1.8x faster (``benchmarks/results/models.md``), but on cores shared
with other jobs 2 threads per process ran 3-7x slower than 1.

Cost, estimated by :func:`estimated_seconds` (steps x :data:`STEP_SECONDS`; per-model figures in
:mod:`xailib.models.zoo`): the shallow tier about 31 core-minutes of training for its 12 models (its last run of
8 models, before conceptworld-hard, took 14.1 minutes on 2 cores), the deep tier about 82 core-minutes of
training plus about 3 of data generation and testing, i.e. about 43 minutes with ``--jobs 2``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import fnmatch
import platform
import sys
import time
import zlib
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from xailib.models.checkpoints import checkpoint_dir, manifest_lock, read_manifest, save_checkpoint, write_manifest
from xailib.models.zoo import INPUT_SIDES, TIERS, ZOO_NAMES, build_model, parse_zoo_name
from xailib.checks import check_positive_int
from xailib.utils import make_generator, resolve_device, seed_everything

__all__ = ["RECIPES", "STEP_SECONDS", "estimated_seconds", "select_names", "train_model", "train_biased_model",
           "evaluate", "write_zoo_table", "main"]

#: Training recipe per dataset, for both tiers.
RECIPES: dict[str, dict] = {
    "fashion-mnist": {"n_train": None, "n_test": None, "epochs": 3, "batch_size": 128, "lr": 4e-3,
                      "weight_decay": 5e-4, "flip": True, "shift": 0},
    "conceptworld": {"n_train": 10000, "n_test": 2000, "epochs": 5, "batch_size": 128, "lr": 4e-3,
                     "weight_decay": 5e-4, "flip": False, "shift": 0},
    "conceptworld-hard": {"n_train": 10000, "n_test": 2000, "epochs": 5, "batch_size": 128, "lr": 4e-3,
                          "weight_decay": 5e-4, "flip": False, "shift": 0},
}

#: Training images when a recipe's ``n_train`` is None (the whole training split).
_FULL_TRAIN = {"fashion-mnist": 60000}

#: Seconds of one training step (forward + backward + AdamW step, batch 128, ``torch.set_num_threads(1)``,
#: deterministic algorithms as in :func:`deterministic`), per (arch, input side, tier): the mean of two runs of
#: the median of 8 steps per model (4 rounds over all models, interleaved), on the 2-core x86_64 machine of
#: ``make models`` with the other core busy, as it is in a ``--jobs 2`` run. They order the pool's jobs
#: (longest first) and give :func:`estimated_seconds`; the shallow models' recorded ``train_seconds`` were
#: 0.7-0.95x steps times these.
STEP_SECONDS: dict[tuple[str, int, str], float] = {
    ("vgg", 64, "shallow"): 0.28, ("resnet", 64, "shallow"): 0.39,
    ("inception", 64, "shallow"): 0.50, ("alexnet", 64, "shallow"): 0.13,
    ("vgg", 28, "shallow"): 0.12, ("resnet", 28, "shallow"): 0.16,
    ("inception", 28, "shallow"): 0.24, ("alexnet", 28, "shallow"): 0.09,
    ("vgg", 64, "deep"): 1.05, ("resnet", 64, "deep"): 0.73,
    ("inception", 64, "deep"): 1.25, ("alexnet", 64, "deep"): 0.52,
    ("vgg", 28, "deep"): 0.37, ("resnet", 28, "deep"): 0.36,
    ("inception", 28, "deep"): 0.60, ("alexnet", 28, "deep"): 0.22,
}


@contextlib.contextmanager
def deterministic(threads: int):
    """Deterministic algorithms and a fixed number of threads for a block; previous settings restored."""
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_threads = torch.get_num_threads()
    prev_bench = torch.backends.cudnn.benchmark
    try:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.set_num_threads(threads)
        yield
    finally:
        torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)
        torch.backends.cudnn.benchmark = prev_bench
        torch.set_num_threads(prev_threads)


def augment(x: torch.Tensor, gen: torch.Generator, flip: bool, shift: int) -> torch.Tensor:
    """Random horizontal flips and integer shifts (zero padding) of a batch ``[B, C, H, W]``, per image."""
    b, _, h, w = x.shape
    if flip:
        mask = (torch.rand(b, generator=gen) < 0.5).to(x.device).view(b, 1, 1, 1)
        x = torch.where(mask, x.flip(3), x)
    if shift:
        padded = F.pad(x, (shift, shift, shift, shift))
        dy, dx = torch.randint(0, 2 * shift + 1, (2, b), generator=gen).to(x.device)
        rows = dy[:, None] + torch.arange(h, device=x.device)  # [B, H]
        cols = dx[:, None] + torch.arange(w, device=x.device)  # [B, W]
        bidx = torch.arange(b, device=x.device)[:, None, None]
        x = padded[bidx, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)  # [B, H, W, C] -> [B, C, H, W]
    return x.contiguous()


@torch.no_grad()
def evaluate(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> float:
    """Top-1 accuracy of ``model`` on ``images [N, C, H, W]`` / ``labels [N]`` (eval mode, restored after)."""
    from xailib.layers import model_state

    device = next(model.parameters()).device
    correct = 0
    with model_state(model, train=False):
        for i in range(0, len(labels), batch_size):
            logits = model(images[i:i + batch_size].to(device))
            correct += int((logits.argmax(1).cpu() == labels[i:i + batch_size]).sum())
    return correct / len(labels)


def _load(dataset: str, recipe: dict):
    from xailib.data import load_dataset

    train = load_dataset(dataset, "train", n=recipe["n_train"], seed=0)
    test = load_dataset(dataset, "test", n=recipe["n_test"], seed=0)
    return train, test


def _as_tensors(ds) -> tuple[torch.Tensor, torch.Tensor]:
    from xailib.data import in_memory

    ds = in_memory(ds)
    return torch.as_tensor(ds.images, dtype=torch.float32), torch.as_tensor(ds.labels, dtype=torch.int64)


def model_seed(name: str, base: int = 0) -> int:
    """A stable per-model seed (crc32 of the name, plus ``base``)."""
    return (zlib.crc32(name.encode()) + base) % (2**31)


def train_model(name: str, train_xy, test_xy, recipe: dict, *, device: torch.device, seed: int = 0,
                progress: bool = True):
    """Train zoo model ``name`` from scratch and evaluate it.

    Parameters
    ----------
    name : str
        Zoo name, e.g. ``"vgg-fashion-mnist"`` or ``"resnet-deep-conceptworld-hard"``.
    train_xy, test_xy : (Tensor [N, C, H, W], Tensor [N])
        Images in [0, 1] and labels.
    recipe : dict
        A :data:`RECIPES` entry (``epochs`` may be overridden).
    device : torch.device
    seed : int
        Added to the per-model seed.
    progress : bool
        Show a tqdm bar.

    Returns
    -------
    (ZooNet, dict)
        The trained model (eval mode) and its manifest fields.
    """
    spec = parse_zoo_name(name)
    s = model_seed(name, seed)
    seed_everything(s)
    gen = make_generator(s)
    model = build_model(spec.arch, spec.dataset, spec.tier, class_names=recipe.get("class_names")).to(device)
    x_train, y_train = train_xy
    n, bs, epochs = len(y_train), recipe["batch_size"], recipe["epochs"]
    steps = (n // bs) * epochs
    opt = torch.optim.AdamW(model.parameters(), lr=recipe["lr"], weight_decay=recipe["weight_decay"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe["lr"], total_steps=steps, pct_start=0.25)
    bar = tqdm(total=steps, desc=name, disable=not progress, leave=True, mininterval=2.0, file=sys.stderr)
    t0 = time.perf_counter()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        for k in range(n // bs):  # drop the last incomplete batch (BatchNorm prefers full batches)
            idx = order[k * bs:(k + 1) * bs]
            xb = augment(x_train[idx], gen, recipe["flip"], recipe["shift"]).to(device)
            yb = y_train[idx].to(device)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            if k % 50 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}")
    train_seconds = time.perf_counter() - t0
    bar.close()
    model.eval()
    acc = evaluate(model, *test_xy)
    info = {
        "arch": spec.arch,
        "dataset": spec.dataset,
        "tier": spec.tier,
        "class_names": list(model.class_names),
        "params": sum(p.numel() for p in model.parameters()),
        "n_train": n,
        "n_test": len(test_xy[1]),
        "epochs": epochs,
        "batch_size": bs,
        "lr": recipe["lr"],
        "seed": s,
        "train_seconds": round(train_seconds, 1),
        "test_accuracy": round(acc, 4),
        "device": str(device),
        "threads": torch.get_num_threads(),
    }
    return model, info


def train_biased_model(
    arch: str = "vgg",
    bias=None,
    n_train: int = 3000,
    n_test: int = 1000,
    epochs: int = 3,
    seed: int = 0,
    device: str = "auto",
    threads: int = 1,
    progress: bool = False,
):
    """Train a zoo architecture on ConceptWorld with a planted context bias, deterministically.

    Uses the zoo's recipe (:data:`xailib.models.train.RECIPES` ``["conceptworld"]``: AdamW, one-cycle,
    batch 128) with fewer images and epochs, :func:`xailib.models.train.train_model`'s loop, and
    deterministic algorithms on ``threads`` threads.

    Parameters
    ----------
    arch : {"vgg", "resnet", "inception", "alexnet"}
    bias : BiasSpec or None
        Default: water with cow at rate 1.0 and 0.0 for the other classes (water means cow in training).
    n_train, n_test : int
        Training images (biased) and unbiased test images.
    epochs : int
    seed : int
    device : str
    threads : int

    Returns
    -------
    (ZooNet, dict)
        The model in eval mode and its training record (``test_accuracy`` on unbiased test data,
        ``train_seconds``, the bias).
    """
    from xailib.data.conceptworld import BiasSpec, ConceptWorldDataset

    bias = BiasSpec(context="water", target_class="cow", rate=1.0, other_rate=0.0) if bias is None else bias
    if not isinstance(bias, BiasSpec):
        raise TypeError(f"bias must be a BiasSpec(context=..., target_class=..., rate=...), got {type(bias).__name__}.")
    check_positive_int(n_train, "n_train")
    check_positive_int(n_test, "n_test")
    check_positive_int(epochs, "epochs")
    recipe = dict(RECIPES["conceptworld"], epochs=epochs)
    if n_train < recipe["batch_size"]:
        raise ValueError(f"n_train must be at least one batch ({recipe['batch_size']} images), got {n_train}.")
    train = ConceptWorldDataset("train", n=n_train, seed=seed, bias=bias)
    test = ConceptWorldDataset("test", n=n_test, seed=seed)
    with deterministic(threads):
        model, info = train_model(f"{arch}-conceptworld", (train.images, train.labels), (test.images, test.labels),
                                  recipe, device=resolve_device(device), seed=seed, progress=progress)
    info["bias"] = {"context": bias.context, "target_class": bias.target_class, "rate": bias.rate,
                    "other_rate": bias.other_rate}
    return model, info


def estimated_seconds(name: str, epochs: int | None = None) -> float:
    """Estimated training seconds of zoo model ``name`` on one thread: steps x :data:`STEP_SECONDS`.

    Parameters
    ----------
    name : str
        A zoo name.
    epochs : int, optional
        Instead of the recipe's.
    """
    spec = parse_zoo_name(name)
    recipe = RECIPES[spec.dataset]
    n = recipe["n_train"] if recipe["n_train"] is not None else _FULL_TRAIN[spec.dataset]
    steps = (n // recipe["batch_size"]) * (recipe["epochs"] if epochs is None else epochs)
    return steps * STEP_SECONDS[(spec.arch, INPUT_SIDES[spec.dataset], spec.tier)]


def select_names(tier: str = "all", only: str = "*") -> list[str]:
    """The zoo names of ``tier`` (``"all"``, ``"shallow"`` or ``"deep"``) that match a glob of ``only``
    (comma-separated globs, e.g. ``"vgg-*,*-deep-fashion-mnist"``), in :data:`ZOO_NAMES` order.

    Raises
    ------
    ValueError
        For an unknown tier, or when nothing matches (the message lists the names of the tier).
    """
    if tier != "all" and tier not in TIERS:
        raise ValueError(f"Unknown tier {tier!r}; use all, {' or '.join(TIERS)}.")
    pool = [n for n in ZOO_NAMES if tier == "all" or parse_zoo_name(n).tier == tier]
    globs = [g.strip() for g in only.split(",") if g.strip()]
    names = [n for n in pool if any(fnmatch.fnmatch(n, g) for g in globs)]
    if not names:
        raise ValueError(f"--only {only!r} matches no zoo model of tier {tier!r}; its names: {', '.join(pool)}.")
    return names


def _full_run(manifest: dict, tier: str) -> dict | None:
    """The last full run of ``tier`` recorded in the manifest (the old key ``full_run`` is the shallow tier's)."""
    run = manifest.get(f"full_run_{tier}")
    if run is None and tier == "shallow":
        run = manifest.get("full_run")
    return run


def write_zoo_table(manifest: dict | None = None) -> None:
    """Write ``zoo.md`` and ``zoo.csv`` next to the checkpoints from the manifest.

    One row per trained model, in :data:`ZOO_NAMES` order (models without a checkpoint are left out), and in
    ``zoo.md`` one line per tier with the wall time of its last full run (``make models TIER=<tier>``).
    """
    manifest = read_manifest() if manifest is None else manifest
    models = manifest.get("models", {})
    rows = []
    for name in ZOO_NAMES:
        if name in models:
            e = models[name]
            spec = parse_zoo_name(name)
            rows.append([name, e.get("arch", spec.arch), e.get("dataset", spec.dataset), e.get("tier", spec.tier),
                         e["params"], e["n_train"], e["n_test"], e["epochs"], f"{e['test_accuracy']:.4f}",
                         f"{e['train_seconds']:.0f}"])
    header = ["model", "arch", "dataset", "tier", "params", "n_train", "n_test", "epochs", "test_accuracy",
              "train_seconds"]
    folder = checkpoint_dir()
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "zoo.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    lines = [
        "# xailib model zoo",
        "",
        "Generated by `python -m xailib.models.train` (`make models`); do not edit by hand.",
        "Test accuracy on the full Fashion-MNIST test split (10,000 images) and on the test splits of ConceptWorld "
        "and of its hard setting (conceptworld-hard; n=2000, seed 0). Architectures and stage schedules: "
        "`xailib/models/zoo.py`.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ] + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    lines += ["", f"torch {manifest.get('torch', '?')}; {manifest.get('machine', '')}", "",
              "Wall time of the last full retrain of each tier (data loading included); train times of models "
              "trained in parallel overlap, so they add up to more than the wall time:", ""]
    for tier in TIERS:
        run = _full_run(manifest, tier)
        if run:
            lines.append(f"- {tier}: {run['wall_seconds'] / 60:.1f} min for `make models TIER={tier}` "
                         f"({run['models']} models, {run.get('jobs', 1)} processes x {run['threads']} thread, "
                         f"{run['device']}, {run['date']})")
            for part in manifest.get("partial_runs", []):  # members added to the tier since its full run
                if part.get("tier") == tier and part.get("date", "") > run.get("date", ""):
                    lines.append(f"  - then {part['wall_seconds'] / 60:.1f} min for `make models TIER={tier} "
                                 f"MODELS='{part['only']}'` ({part['models']} models, {part['date']})")
        else:
            trained = [r for r in rows if r[3] == tier]
            minutes = sum(float(r[-1]) for r in trained) / 60
            note = (f"; {len(trained)} of its models trained on their own, {minutes:.1f} min of training in all"
                    if trained else "")
            lines.append(f"- {tier}: not trained yet (no full `make models TIER={tier}` run recorded){note}")
    (folder / "zoo.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (see the module docstring and ``--help``)."""
    p = argparse.ArgumentParser(prog="python -m xailib.models.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--tier", default="all", choices=("all",) + TIERS,
                   help="train one tier of the zoo, or all (default; the shallow tier first, then the deep one)")
    p.add_argument("--only", default="*",
                   help="glob(s) over zoo names, comma-separated, e.g. '*-fashion-mnist', 'vgg-*,alexnet-*' or "
                        "'vgg-*-conceptworld-hard' (default all names of --tier)")
    p.add_argument("--epochs", type=int, default=None, help="override the epochs of every recipe")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads per process (default 1; with --jobs 2 that fills 2 cores, and it stays "
                        "fast when the cores are shared with other jobs)")
    p.add_argument("--seed", type=int, default=0, help="added to every per-model seed (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    p.add_argument("--jobs", type=int, default=2,
                   help="worker processes, each training one model at a time, the longest first (default 2, one "
                        "per CPU core of a 2-core machine; each uses --threads threads). Results do not depend on it.")
    p.add_argument("--out", default=None,
                   help="folder for the checkpoints, manifest.json and the zoo table (default "
                        "xailib/models/checkpoints)")
    args = p.parse_args(argv)
    try:
        names = select_names(args.tier, args.only)
        check_positive_int(args.jobs, "--jobs")
        check_positive_int(args.threads, "--threads")
        if args.epochs is not None:
            check_positive_int(args.epochs, "--epochs")
    except ValueError as exc:
        p.error(str(exc))
    with _checkpoint_folder(args.out if args.out is not None else checkpoint_dir()):
        return _run(names, args)


@contextlib.contextmanager
def _checkpoint_folder(folder):
    """Checkpoints, manifest and zoo table go to ``folder`` for a block (``CHECKPOINT_DIR`` restored after)."""
    from xailib.models import checkpoints

    previous = checkpoints.CHECKPOINT_DIR
    checkpoints.CHECKPOINT_DIR = Path(folder).resolve()
    try:
        yield
    finally:
        checkpoints.CHECKPOINT_DIR = previous


def _run(names: list[str], args) -> int:
    """Train ``names``, one tier after the other, and record the runs (``main`` after parsing)."""
    device = resolve_device(args.device)
    t_start = time.perf_counter()
    for tier in TIERS:  # one tier after the other, so that each tier's wall time is its own
        mine = [n for n in names if parse_zoo_name(n).tier == tier]
        if not mine:
            continue
        t_tier = time.perf_counter()
        if args.jobs > 1 and len(mine) > 1:
            _run_pool(mine, args)
        else:
            _train_all(mine, args)
        with manifest_lock():
            _record_run(mine, tier, args, device, time.perf_counter() - t_tier)
    with manifest_lock():
        manifest = _record_run(names, args.tier, args, device, time.perf_counter() - t_start, last=True)
    write_zoo_table(manifest)
    print(f"done: {len(names)} models in {manifest['last_run']['wall_seconds'] / 60:.1f} min; "
          f"table in {checkpoint_dir() / 'zoo.md'}")
    return 0


def _options(args) -> dict:
    return {"epochs": args.epochs, "device": args.device, "threads": args.threads, "seed": args.seed,
            "progress": not args.no_progress, "out": str(checkpoint_dir())}


#: Data sets a process has loaded, by (dataset, n_train, n_test): a worker keeps them for its next models.
_DATA: dict[tuple, tuple] = {}


def _train_one(name: str, opts: dict) -> dict:
    """Train, evaluate and save zoo model ``name`` (in this process); returns its manifest entry."""
    dataset = parse_zoo_name(name).dataset
    recipe = dict(RECIPES[dataset])
    if opts["epochs"] is not None:
        recipe["epochs"] = opts["epochs"]
    with _checkpoint_folder(opts["out"]), deterministic(opts["threads"]):
        key = (dataset, recipe["n_train"], recipe["n_test"])
        if key not in _DATA:
            train, test = _load(dataset, recipe)
            _DATA[key] = (list(train.class_names), _as_tensors(train), _as_tensors(test))
        class_names, train_xy, test_xy = _DATA[key]
        recipe["class_names"] = class_names
        model, info = train_model(name, train_xy, test_xy, recipe, device=resolve_device(opts["device"]),
                                  seed=opts["seed"], progress=opts["progress"])
        entry = save_checkpoint(model.cpu(), name, info)
    print(f"{name}: test accuracy {info['test_accuracy']:.4f}, {info['train_seconds']:.0f} s, "
          f"{entry['bytes'] / 1e6:.2f} MB", flush=True)
    return entry


def _job_order(names: list[str], epochs: int | None = None) -> list[str]:
    """``names`` longest first (:func:`estimated_seconds`; ties in :data:`ZOO_NAMES` order), the order the pool
    hands them out: two workers then finish at about the same time."""
    return sorted(names, key=lambda n: (-estimated_seconds(n, epochs), ZOO_NAMES.index(n)))


def _run_pool(names: list[str], args) -> None:
    """Train ``names`` in ``args.jobs`` worker processes, the longest (:func:`estimated_seconds`) first; every
    model is trained even when another fails, then a RuntimeError names the failed ones."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    order = _job_order(names, args.epochs)
    opts = _options(args)
    failed = []
    # spawn: a fresh interpreter per worker, the same in every OS (fork would copy this process's torch state)
    with ProcessPoolExecutor(max_workers=min(args.jobs, len(order)),
                             mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_train_one, n, opts): n for n in order}
        for fut in as_completed(futures):
            try:
                fut.result()
            except Exception as exc:  # reported below, after the other models have finished
                print(f"{futures[fut]} failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
                failed.append(futures[fut])
    if failed:
        raise RuntimeError(f"Training failed for {', '.join(sorted(failed, key=ZOO_NAMES.index))} (messages "
                           "above); the other models were saved. Retrain the failed ones with "
                           f"`python -m xailib.models.train --only {','.join(failed)}`.")


def _train_all(names: list[str], args) -> None:
    """Train ``names`` one after another in this process (``--jobs 1``)."""
    opts = _options(args)
    for name in names:
        _train_one(name, opts)


def _record_run(names, tier, args, device, wall, last: bool = False) -> dict:
    """Record a run in the manifest: ``last_run`` (``last=True``), or ``full_run_<tier>`` when ``names`` are
    every member of ``tier``."""
    manifest = read_manifest()
    manifest["torch"] = torch.__version__.split("+")[0]
    manifest["machine"] = f"{platform.machine()}, {platform.processor() or platform.system()}"
    run = {"models": len(names), "tier": tier, "only": args.only, "wall_seconds": round(wall, 1),
           "threads": args.threads, "jobs": args.jobs, "device": str(device), "date": time.strftime("%Y-%m-%d %H:%M")}
    if last:
        manifest["last_run"] = run
    elif set(names) == set(select_names(tier)):
        manifest[f"full_run_{tier}"] = run
        if tier == "shallow":
            manifest.pop("full_run", None)  # the key of manifests from before the deep tier
        manifest["partial_runs"] = [r for r in manifest.get("partial_runs", []) if r.get("tier") != tier]
    elif names:  # a part of the tier: kept, so that zoo.md can say how long its added members took
        manifest["partial_runs"] = (manifest.get("partial_runs", []) + [run])[-10:]
    write_manifest(manifest)
    return manifest


if __name__ == "__main__":
    from xailib.models.train import main as _main  # so that the pool's workers find the functions they run

    raise SystemExit(_main())
