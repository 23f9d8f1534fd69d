"""Small shared helpers: device resolution, seeding, repository paths."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from xailib.checks import check_seed

__all__ = ["resolve_device", "seed_everything", "repo_root", "make_generator"]

_VALID_DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Resolve a device specification to a :class:`torch.device`.

    Parameters
    ----------
    device : str, torch.device or None
        ``"auto"`` (or ``None``) picks CUDA when available and the CPU otherwise;
        ``"cpu"``, ``"cuda"``, ``"cuda:1"`` are taken literally.

    Returns
    -------
    torch.device

    Raises
    ------
    ValueError
        If the string is not a device name, or CUDA is asked for on a machine without it.
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, torch.device):
        dev = device
    elif isinstance(device, str):
        try:
            dev = torch.device(device)
        except RuntimeError as exc:
            raise ValueError(
                f"Unknown device {device!r}. Use one of {', '.join(_VALID_DEVICES)}."
            ) from exc
    else:
        raise TypeError(f"device must be a str or torch.device, got {type(device).__name__}.")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} was asked for but CUDA is not available on this machine. "
            "Use device='auto' or device='cpu'."
        )
    return dev


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a CPU ``torch.Generator`` seeded with ``seed``."""
    seed = check_seed(seed)
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return make_generator(seed)


def make_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A fresh ``torch.Generator`` on ``device`` seeded with ``seed``."""
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen


def repo_root() -> Path:
    """The repository root (the folder holding ``pyproject.toml``), or ``$XAILIB_ROOT``.

    Falls back to the current working directory when xailib is installed outside a checkout.
    """
    env = os.environ.get("XAILIB_ROOT")
    if env:
        return Path(env).resolve()
    here = Path(__file__).resolve().parent.parent
    if (here / "pyproject.toml").exists():
        return here
    return Path.cwd().resolve()
