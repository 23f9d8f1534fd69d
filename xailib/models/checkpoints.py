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


def checkpoint_dir() -> Path:
    """The folder holding the checkpoints and ``manifest.json`` (:data:`CHECKPOINT_DIR`)."""
    return Path(CHECKPOINT_DIR)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_manifest() -> dict:
    """The manifest as a dict (``{"models": {}}`` when there is none yet)."""
    path = checkpoint_dir() / MANIFEST
    if not path.is_file():
        return {"models": {}}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(
            f"{path} is not valid JSON ({exc}); restore it with `git checkout {path}` or rebuild with `make models`."
        ) from None


def write_manifest(manifest: dict) -> Path:
    """Write ``manifest.json`` (sorted keys, indented, so diffs stay readable)."""
    path = checkpoint_dir() / MANIFEST
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return path


@contextlib.contextmanager
def manifest_lock():
    """Hold an exclusive lock (POSIX ``flock`` on a file in the temp folder, named after the checkpoint folder)
    so that two training runs never lose each other's manifest entries; a no-op where ``fcntl`` does not exist."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    import tempfile

    key = hashlib.sha256(str(checkpoint_dir().resolve()).encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"xailib-manifest-{key}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def save_checkpoint(model: torch.nn.Module, name: str, info: dict) -> dict:
    """Save ``model.state_dict()`` as ``<name>.pt`` and record it with its sha256 in the manifest.

    Parameters
    ----------
    model : nn.Module
    name : str
        Zoo name, e.g. ``"vgg-conceptworld"``.
    info : dict
        Extra fields for the manifest entry (accuracy, timings, ...).

    Returns
    -------
    dict
        The manifest entry.
    """
    folder = checkpoint_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.pt"
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    torch.save(state, path)
    entry = dict(info, file=path.name, sha256=sha256_file(path), bytes=path.stat().st_size,
                 torch=torch.__version__.split("+")[0])
    with manifest_lock():
        manifest = read_manifest()
        manifest.setdefault("models", {})[name] = entry
        write_manifest(manifest)
    return entry


def load_state_dict(name: str, check: bool = True) -> tuple[dict, dict]:
    """The state dict of zoo model ``name`` and its manifest entry, after checking the file's sha256.

    Parameters
    ----------
    name : str
        Zoo name, e.g. ``"resnet-fashion-mnist"``.
    check : bool
        Verify the sha256 against the manifest (default). Turn off only for a file you just trained.

    Raises
    ------
    CheckpointError
        If the file or its manifest entry is missing (not trained yet, or not committed), or its hash does not
        match (corrupted); the message names the ``make models`` command that builds it
        (:func:`build_command`) and, where it helps, the ``git checkout`` that restores it.
    """
    folder = checkpoint_dir()
    path = folder / f"{name}.pt"
    entry = read_manifest().get("models", {}).get(name)
    if not path.is_file() and entry is None:
        raise CheckpointError(
            f"The checkpoint of {name!r} is missing: it is not trained yet (no {path.name} and no entry in "
            f"{folder / MANIFEST}). Build it with {build_command(name)}."
        )
    if not path.is_file():
        raise CheckpointError(
            f"The checkpoint file of {name!r} is missing ({path}) although {MANIFEST} lists it: it was not "
            f"committed or was deleted. Restore it with `git checkout -- {path}`, or retrain it with "
            f"{build_command(name)}."
        )
    if entry is None:
        raise CheckpointError(
            f"The manifest entry of {name!r} is missing: {path} exists but {folder / MANIFEST} does not list it "
            f"(its sha256 cannot be checked). Retrain it with {build_command(name)}, or restore the manifest "
            f"with `git checkout -- {folder / MANIFEST}`."
        )
    if check:
        digest = sha256_file(path)
        if digest != entry.get("sha256"):
            raise CheckpointError(
                f"Checkpoint {path} is corrupted: its sha256 {digest[:12]}... does not match the manifest's "
                f"{str(entry.get('sha256'))[:12]}.... Retrain it with {build_command(name)}, or "
                f"`git checkout -- {path}` to restore the shipped file."
            )
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state, entry
