"""Checksummed checkpoints of the model zoo.

Files live in :data:`CHECKPOINT_DIR` (``xailib/models/checkpoints/``): one ``<name>.pt`` per model holding
its ``state_dict`` only, and ``manifest.json``::

    {"torch": "2.14.1", "machine": ..., "last_run": {...}, "full_run_shallow": {...}, "full_run_deep": {...},
     "models": {"vgg-conceptworld": {"file": "vgg-conceptworld.pt", "sha256": "...", "test_accuracy": 0.97,
     "n_train": ..., "n_test": ..., "epochs": ..., "train_seconds": ..., "params": ..., "arch": "vgg",
     "dataset": "conceptworld", "tier": "shallow", "class_names": [...], "seed": ...}, ...}}

``full_run_<tier>`` is the last run of ``python -m xailib.models.train`` that trained every member of that tier
(its wall time); manifests written before the deep tier existed have one ``full_run`` key, the shallow tier's.

Loading verifies the sha256 of the file against the manifest before ``torch.load`` reads it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

import torch

__all__ = [
    "CHECKPOINT_DIR",
    "checkpoint_dir",
    "sha256_file",
    "read_manifest",
    "write_manifest",
    "save_checkpoint",
    "manifest_lock",
    "load_state_dict",
    "build_command",
    "CheckpointError",
]

#: Folder of the shipped checkpoints; tests monkeypatch it.
CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"
MANIFEST = "manifest.json"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unlisted or corrupted; the message says how to get a good one."""


def build_command(name: str) -> str:
    """How to (re)build the checkpoint of zoo model ``name``, for error messages.

    ``"`make models MODELS=vgg-deep-conceptworld` (or its whole tier: `make models TIER=deep`), i.e.
    `python -m xailib.models.train --only vgg-deep-conceptworld`"``; plain ``"`make models`"`` for a name that is
    not a zoo name.
    """
    from xailib.models.zoo import parse_zoo_name

    try:
        tier = parse_zoo_name(name).tier
    except ValueError:
        return "`make models`"
    return (f"`make models MODELS={name}` (or its whole tier: `make models TIER={tier}`), i.e. "
            f"`python -m xailib.models.train --only {name}`")


def checkpoint_dir(folder: str | os.PathLike | None = None) -> Path:
    """The folder holding the checkpoints and ``manifest.json``: :data:`CHECKPOINT_DIR` (the zoo's), or
    ``folder`` for another set of checkpointed models (e.g. the additive explainer's performers)."""
    return Path(CHECKPOINT_DIR if folder is None else folder)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_manifest(folder: str | os.PathLike | None = None) -> dict:
    """The manifest of :func:`checkpoint_dir` ``(folder)`` as a dict (``{"models": {}}`` when there is none yet)."""
    path = checkpoint_dir(folder) / MANIFEST
    if not path.is_file():
        return {"models": {}}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(
            f"{path} is not valid JSON ({exc}); restore it with `git checkout {path}` or rebuild with `make models`."
        ) from None


def write_manifest(manifest: dict, folder: str | os.PathLike | None = None) -> Path:
    """Write ``manifest.json`` into :func:`checkpoint_dir` ``(folder)`` (sorted keys, indented, so diffs stay
    readable)."""
    path = checkpoint_dir(folder) / MANIFEST
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return path


@contextlib.contextmanager
def manifest_lock(folder: str | os.PathLike | None = None):
    """Hold an exclusive lock (POSIX ``flock`` on a file in the temp folder, named after the checkpoint folder)
    so that two training runs never lose each other's manifest entries; a no-op where ``fcntl`` does not exist."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    import tempfile

    key = hashlib.sha256(str(checkpoint_dir(folder).resolve()).encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"xailib-manifest-{key}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def save_checkpoint(model: torch.nn.Module, name: str, info: dict, folder: str | os.PathLike | None = None) -> dict:
    """Save ``model.state_dict()`` as ``<name>.pt`` and record it with its sha256 in the manifest.

    Parameters
    ----------
    model : nn.Module
    name : str
        Zoo name, e.g. ``"vgg-conceptworld"``.
    info : dict
        Extra fields for the manifest entry (accuracy, timings, ...).
    folder : path, optional
        Another checkpoint folder than the zoo's (:func:`checkpoint_dir`).

    Returns
    -------
    dict
        The manifest entry.
    """
    where = checkpoint_dir(folder)
    where.mkdir(parents=True, exist_ok=True)
    path = where / f"{name}.pt"
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    torch.save(state, path)
    entry = dict(info, file=path.name, sha256=sha256_file(path), bytes=path.stat().st_size,
                 torch=torch.__version__.split("+")[0])
    with manifest_lock(folder):
        manifest = read_manifest(folder)
        manifest.setdefault("models", {})[name] = entry
        write_manifest(manifest, folder)
    return entry


def load_state_dict(name: str, check: bool = True, folder: str | os.PathLike | None = None,
                    rebuild: str | None = None) -> tuple[dict, dict]:
    """The state dict of zoo model ``name`` and its manifest entry, after checking the file's sha256.

    Parameters
    ----------
    name : str
        Zoo name, e.g. ``"resnet-fashion-mnist"``.
    check : bool
        Verify the sha256 against the manifest (default). Turn off only for a file you just trained.
    folder : path, optional
        Another checkpoint folder than the zoo's (:func:`checkpoint_dir`).
    rebuild : str, optional
        The command that rebuilds this checkpoint, for the error messages (default: :func:`build_command`).

    Raises
    ------
    CheckpointError
        If the file or its manifest entry is missing (not trained yet, or not committed), or its hash does not
        match (corrupted); the message names the ``make models`` command that builds it
        (:func:`build_command`) and, where it helps, the ``git checkout`` that restores it.
    """
    where = checkpoint_dir(folder)
    path = where / f"{name}.pt"
    entry = read_manifest(folder).get("models", {}).get(name)
    command = build_command(name) if rebuild is None else rebuild
    if not path.is_file() and entry is None:
        raise CheckpointError(
            f"The checkpoint of {name!r} is missing: it is not trained yet (no {path.name} and no entry in "
            f"{where / MANIFEST}). Build it with {command}."
        )
    if not path.is_file():
        raise CheckpointError(
            f"The checkpoint file of {name!r} is missing ({path}) although {MANIFEST} lists it: it was not "
            f"committed or was deleted. Restore it with `git checkout -- {path}`, or retrain it with "
            f"{command}."
        )
    if entry is None:
        raise CheckpointError(
            f"The manifest entry of {name!r} is missing: {path} exists but {where / MANIFEST} does not list it "
            f"(its sha256 cannot be checked). Retrain it with {command}, or restore the manifest "
            f"with `git checkout -- {where / MANIFEST}`."
        )
    if check:
        digest = sha256_file(path)
        if digest != entry.get("sha256"):
            raise CheckpointError(
                f"Checkpoint {path} is corrupted: its sha256 {digest[:12]}... does not match the manifest's "
                f"{str(entry.get('sha256'))[:12]}.... Retrain it with {command}, or "
                f"`git checkout -- {path}` to restore the shipped file."
            )
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state, entry
