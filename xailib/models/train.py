"""Retrain the model zoo from scratch, deterministically: ``python -m xailib.models.train [--only GLOB]``.

For every zoo model (``make models`` trains all eight, the Fashion-MNIST and the ConceptWorld models in two
parallel processes, ``--jobs 2``) this builds the untrained architecture, trains it with
a fixed seed on the CPU (or ``--device``), evaluates it on the full test split, and writes

* ``xailib/models/checkpoints/<name>.pt`` (state dict) and its entry in ``manifest.json`` (sha256, test
  accuracy, n_train, epochs, train seconds, torch version);
* ``zoo.md`` and ``zoo.csv``: the zoo table (model, arch, dataset, params, test accuracy, train time),
  with the wall time of the last full run.

Recipe (:data:`RECIPES`): AdamW with a one-cycle learning-rate schedule, cross-entropy, batch 128.
Fashion-MNIST: all 60,000 training images, random horizontal flips; tested on
all 10,000 test images. ConceptWorld: 10,000 generated training images (seed 0), no augmentation (flips and
shifts could change what a concept means); tested on the test split with n=2000.

Determinism: seeds from :func:`xailib.utils.seed_everything`, explicit generators for shuffling and
augmentation, ``torch.use_deterministic_algorithms(True)`` and a fixed thread count (``--threads``, default 1),
so the same command on the same machine and torch build gives the same checkpoints (``make models`` reproduced
the sha256 of every checkpoint trained earlier with the same code). One thread per process and two processes
(``--jobs 2``) keep both cores of a 2-core machine busy without OpenMP threads waiting on each other: on an
idle machine 2 threads make one process 1.4-1.8x faster (``benchmarks/results/models.md``), but on cores shared
with other jobs 2 threads per process ran 3-7x slower than 1.
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

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from xailib.models import ZOO_NAMES, build_model, parse_zoo_name
from xailib.models.checkpoints import checkpoint_dir, manifest_lock, read_manifest, save_checkpoint, write_manifest
from xailib.checks import check_positive_int
from xailib.utils import make_generator, resolve_device, seed_everything

__all__ = ["RECIPES", "train_model", "train_biased_model", "evaluate", "write_zoo_table", "main"]

#: Training recipe per dataset.
RECIPES: dict[str, dict] = {
    "fashion-mnist": {"n_train": None, "n_test": None, "epochs": 3, "batch_size": 128, "lr": 4e-3,
                      "weight_decay": 5e-4, "flip": True, "shift": 0},
    "conceptworld": {"n_train": 10000, "n_test": 2000, "epochs": 5, "batch_size": 128, "lr": 4e-3,
                     "weight_decay": 5e-4, "flip": False, "shift": 0},
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
        Zoo name, e.g. ``"vgg-fashion-mnist"``.
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
    arch, dataset = parse_zoo_name(name)
    s = model_seed(name, seed)
    seed_everything(s)
    gen = make_generator(s)
    model = build_model(arch, dataset, class_names=recipe.get("class_names")).to(device)
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
        "arch": arch,
        "dataset": dataset,
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


def write_zoo_table(manifest: dict | None = None) -> None:
    """Write ``zoo.md`` and ``zoo.csv`` next to the checkpoints from the manifest."""
    manifest = read_manifest() if manifest is None else manifest
    models = manifest.get("models", {})
    rows = []
    for name in ZOO_NAMES:
        if name in models:
            e = models[name]
            rows.append([name, e["arch"], e["dataset"], e["params"], e["n_train"], e["n_test"], e["epochs"],
                         f"{e['test_accuracy']:.4f}", f"{e['train_seconds']:.0f}"])
    header = ["model", "arch", "dataset", "params", "n_train", "n_test", "epochs", "test_accuracy", "train_seconds"]
    folder = checkpoint_dir()
    with open(folder / "zoo.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    lines = [
        "# xailib model zoo",
        "",
        "Generated by `python -m xailib.models.train` (`make models`); do not edit by hand.",
        "Test accuracy on the full Fashion-MNIST test split (10,000 images) and on ConceptWorld's test split "
        "(n=2000, seed 0). Architectures and stage schedules: `xailib/models/zoo.py`.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ] + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    full = manifest.get("full_run")
    lines += ["", f"torch {manifest.get('torch', '?')}; {manifest.get('machine', '')}"]
    if full:
        lines += [f"Wall time of the last full retrain (`make models`, all {full['models']} models, data loading "
                  f"included): {full['wall_seconds'] / 60:.1f} min ({full.get('jobs', 1)} processes x "
                  f"{full['threads']} thread, {full['device']}, {full['date']}). Train times of models trained in "
                  "parallel overlap, so they add up to more than the wall time."]
    else:
        total = sum(float(r[-1]) for r in rows)
        lines += [f"No full retrain recorded yet; sum of training times: {total / 60:.1f} min."]
    (folder / "zoo.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (see the module docstring and ``--help``)."""
    p = argparse.ArgumentParser(prog="python -m xailib.models.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default="*",
                   help="glob(s) over zoo names, comma-separated, e.g. '*-fashion-mnist' or 'vgg-*,alexnet-*' (default all)")
    p.add_argument("--epochs", type=int, default=None, help="override the epochs of every recipe")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads per process (default 1; with --jobs 2 that fills 2 cores, and it stays "
                        "fast when the cores are shared with other jobs)")
    p.add_argument("--seed", type=int, default=0, help="added to every per-model seed (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    p.add_argument("--jobs", type=int, default=2,
                   help="train the two datasets' models in this many parallel processes (default 2, one per CPU core "
                        "of a 2-core machine; each process uses --threads threads). Results do not depend on it.")
    args = p.parse_args(argv)
    globs = [g.strip() for g in args.only.split(",") if g.strip()]
    names = [n for n in ZOO_NAMES if any(fnmatch.fnmatch(n, g) for g in globs)]
    if not names:
        p.error(f"--only {args.only!r} matches no zoo model; zoo names: {', '.join(ZOO_NAMES)}")
    device = resolve_device(args.device)
    t_start = time.perf_counter()
    datasets = sorted({parse_zoo_name(n)[1] for n in names})
    if args.jobs > 1 and len(datasets) > 1:
        _run_parallel(names, datasets, args)
    else:
        _train_all(names, args, device)
    with manifest_lock():
        manifest = _record_run(names, args, device, time.perf_counter() - t_start)
    write_zoo_table(manifest)
    print(f"done: {len(names)} models in {manifest['last_run']['wall_seconds'] / 60:.1f} min; "
          f"table in {checkpoint_dir() / 'zoo.md'}")
    return 0


def _run_parallel(names: list[str], datasets: list[str], args) -> None:
    """One child process per dataset (``--jobs 1`` each); raises if any child fails."""
    import subprocess

    jobs = []
    for dataset in datasets:
        mine = ",".join(n for n in names if parse_zoo_name(n)[1] == dataset)
        cmd = [sys.executable, "-m", "xailib.models.train", "--only", mine, "--jobs", "1", "--threads",
               str(args.threads), "--device", args.device, "--seed", str(args.seed)]
        if args.epochs is not None:
            cmd += ["--epochs", str(args.epochs)]
        if args.no_progress:
            cmd.append("--no-progress")
        jobs.append((dataset, subprocess.Popen(cmd)))
    failed = [d for d, proc in jobs if proc.wait() != 0]
    if failed:
        raise RuntimeError(f"Training failed for {', '.join(failed)}; see the messages above.")


def _train_all(names: list[str], args, device: torch.device) -> None:
    with deterministic(args.threads):
        for dataset in sorted({parse_zoo_name(n)[1] for n in names}):
            recipe = dict(RECIPES[dataset])
            if args.epochs is not None:
                recipe["epochs"] = args.epochs
            train, test = _load(dataset, recipe)
            recipe["class_names"] = list(train.class_names)
            train_xy, test_xy = _as_tensors(train), _as_tensors(test)
            for name in [n for n in names if parse_zoo_name(n)[1] == dataset]:
                model, info = train_model(name, train_xy, test_xy, recipe, device=device, seed=args.seed,
                                          progress=not args.no_progress)
                entry = save_checkpoint(model.cpu(), name, info)
                print(f"{name}: test accuracy {info['test_accuracy']:.4f}, {info['train_seconds']:.0f} s, "
                      f"{entry['bytes'] / 1e6:.2f} MB", flush=True)


def _record_run(names, args, device, wall) -> dict:
    manifest = read_manifest()
    manifest["torch"] = torch.__version__.split("+")[0]
    manifest["machine"] = f"{platform.machine()}, {platform.processor() or platform.system()}"
    run = {"models": len(names), "only": args.only, "wall_seconds": round(wall, 1), "threads": args.threads,
           "jobs": args.jobs, "device": str(device), "date": time.strftime("%Y-%m-%d %H:%M")}
    manifest["last_run"] = run
    if len(names) == len(ZOO_NAMES):
        manifest["full_run"] = run
    write_manifest(manifest)
    return manifest


if __name__ == "__main__":
    raise SystemExit(main())
