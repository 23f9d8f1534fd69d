"""AfI's global feature occluders: Sec. 3.1.1, Eqs. (4)-(5), with the set-up of Sec. 4 and Sec. 4.1.

Paper: "Attacking for Interpretability: global concept attribution via adversarial feature
occlusion" (AfI, Wu et al.). For the ``N`` images ``x_i`` of one class ``y`` the *global feature
occluder* is the smallest perturbation that flips the model on all of them at once:

* Eq. (4)  ``delta* = argmin D(delta)`` such that, for ``i = 1..N``,
  ``f(x_i - delta) != y``, ``f(t(x_i - delta)) != y``, ``f(t(x_i)) = f(x_i) = y`` and ``x_i - delta`` is a
  valid image;
* Eq. (5)  its relaxation, minimised with Adam::

      (1/N) sum_i ( Z(x_i - delta)[y] + Z(t(x_i - delta))[y] ) + lambda * D(delta),

  ``Z`` the logits, ``D(delta) = ||delta||_1`` (the sum of ``|delta|`` over all ``C*H*W`` entries,
  "we implement D via l1 distance"); it stops once every constraint of (4) holds, or after a preset
  number of iterations.

How each constraint of (4) is met here:

* the third (``f(t(x)) = f(x) = y``) selects the images: only those the model gets right on ``x`` *and*
  on one draw of ``t(x)`` (made with the seed) take part; :attr:`OccluderResult.n_kept` says how many;
* the fourth (a valid input; the paper's ``[-1, 1]^n``) is kept by clamping ``x - delta`` to
  ``input_range`` in the forward pass (``delta`` itself is free; where the clamp is active its gradient
  is zero);
* the first two are the stop rule: a class stops once every kept image is flipped on ``x - delta`` and
  on ``t(x - delta)``, with ``t`` redrawn at every iteration.

``t`` (Sec. 4) is uniform noise in ``[-0.04, 0.04]^n`` followed by a random rotation in ``[-5, 5]``
degrees, on the paper's ``[-1, 1]`` input scale. Our models take images in ``[0, 1]`` (the zoo models
normalise inside), so the default noise is ``0.04 * (hi - lo) / 2`` for ``input_range = (lo, hi)``
(0.02 for ``[0, 1]``): the same fraction of the valid range. See :class:`Transform`.

Implementation: :func:`learn_occluders` learns the occluders of all ``K`` classes in one batched run (one
parameter ``delta: [K, C, H, W]``, each image reading its own class's row, per-class loss means, Adam
written out elementwise with per-class step counts so that a class that has stopped is frozen exactly),
and gives the same occluders as learning one class at a time; :func:`learn_occluder_reference` is the
slow literal reference for one class, with ``torch.optim.Adam``, that the tests hold it to.
:func:`finetune_occluders` is Sec. 4.1's class-specific fine-tuning; :func:`evaluate_occluders` gives
Table 1's top-1 accuracy on occluded images, :func:`unmatched_accuracy` Table S2's unmatched occluders.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from xailib.batching import predict
from xailib.checks import (
    check_class_scores,
    check_in_range,
    check_input_range,
    check_fraction,
    check_images,
    check_model,
    check_positive_float,
    check_positive_int,
    check_seed,
    check_targets,
    model_device,
)
from xailib.layers import model_state
from xailib.parallel import check_client, map_tasks
from xailib.perturbations import rotate
from xailib.utils import resolve_device

__all__ = [
    "PAPER_NOISE",
    "PAPER_MAX_DEGREES",
    "ADAM_BETAS",
    "ADAM_EPS",
    "DEFAULT_LAM",
    "DEFAULT_LR",
    "DEFAULT_MAX_ITER",
    "Transform",
    "random_transform",
    "OccluderResult",
    "learn_occluders",
    "learn_occluder_reference",
    "finetune_occluders",
    "evaluate_occluders",
    "unmatched_accuracy",
]

#: Sec. 4: the noise of ``t`` is uniform in [-0.04, 0.04] on the paper's [-1, 1] input scale.
PAPER_NOISE = 0.04
#: Sec. 4: the rotation of ``t`` is uniform in [-5, 5] degrees.
PAPER_MAX_DEGREES = 5.0
#: Adam's moment decays and epsilon: ``torch.optim.Adam``'s defaults (the reference uses that optimiser).
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
#: Defaults of :func:`learn_occluders` (see its docstring for why).
DEFAULT_LAM = 0.05
DEFAULT_LR = 0.01
DEFAULT_MAX_ITER = 300


# --------------------------------------------------------------------------------------------------
# The transformation t of Eq. (4)-(5) (Sec. 4)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Transform:
    """The random transformation ``t`` of Eqs. (4)-(5): uniform noise, then a random rotation (Sec. 4).

    ``t(x) = clamp(R_theta(x + u))`` with ``u ~ U[-noise, noise]^{C x H x W}`` and one angle
    ``theta ~ U[-max_degrees, max_degrees]`` per image. ``R_theta`` rotates about the image centre with
    bilinear interpolation (``affine_grid`` / ``grid_sample``, aspect ratio respected); pixels that come
    from outside the image are filled with the middle of ``input_range`` (the paper's 0 on its
    ``[-1, 1]`` scale). The result is clamped to ``input_range`` so that ``t`` gives valid images too.

    Parameters
    ----------
    noise : float or None
        Half-width of the uniform noise, in image units. ``None``: the paper's 0.04 on a ``[-1, 1]``
        scale rescaled to ``input_range``, ``0.04 * (hi - lo) / 2`` (0.02 for ``[0, 1]``).
    max_degrees : float
        Largest rotation, degrees (paper: 5).
    input_range : (float, float)
        ``(lo, hi)``, the valid pixel values.

    Examples
    --------
    >>> t = Transform(input_range=(0.0, 1.0))
    >>> u, angles = t.draw(x.shape, torch.Generator().manual_seed(0))
    >>> tx = t.apply(x, u, angles)            # the same as t(x, torch.Generator().manual_seed(0))
    """

    noise: float | None = None
    max_degrees: float = PAPER_MAX_DEGREES
    input_range: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self):
        lo, hi = check_input_range(self.input_range)
        object.__setattr__(self, "input_range", (lo, hi))
        noise = PAPER_NOISE * (hi - lo) / 2 if self.noise is None else self.noise
        object.__setattr__(self, "noise", check_positive_float(noise, "noise", zero=True,
                                                               hint=" (half-width of t's uniform noise, image units)"))
        object.__setattr__(self, "max_degrees", check_positive_float(self.max_degrees, "max_degrees", zero=True,
                                                                     hint=" (t's largest rotation, degrees)"))

    def draw(self, shape: Sequence[int], generator: torch.Generator,
             dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``t``'s randomness for ``shape = (B, C, H, W)`` images from ``generator`` (noise first, then angles).

        The noise is drawn in ``dtype``, the images' own (``__call__`` passes ``x.dtype``): drawing it in
        float64 and converting cost more than the rotation on our small nets. The angles are float64.

        Returns
        -------
        u : Tensor ``[B, C, H, W]`` of ``dtype`` in ``[-noise, noise]``
        angles : Tensor ``[B]`` float64, degrees in ``[-max_degrees, max_degrees]``
        """
        b = int(shape[0])
        u = torch.rand(tuple(shape), generator=generator, dtype=dtype).mul_(2 * self.noise).sub_(self.noise)
        angles = (torch.rand(b, generator=generator, dtype=torch.float64) * 2 - 1) * self.max_degrees
        return u, angles

    def apply(self, x: torch.Tensor, u: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
        """``clamp(R_angles(x + u))`` for drawn ``u: [B, C, H, W]`` and ``angles: [B]`` (degrees); differentiable in ``x``."""
        lo, hi = self.input_range
        u = u.to(x.device, x.dtype)
        rotated = rotate(x + u, angles, fill=(lo + hi) / 2)
        return clamp_valid(rotated, lo, hi)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``t(x)`` for ``x: [B, C, H, W]``, drawing the randomness from ``generator``."""
        u, angles = self.draw(x.shape, generator, x.dtype)
        return self.apply(x, u, angles)


class _ClampValid(torch.autograd.Function):
    """``x.clamp(lo, hi)`` whose gradient passes inside ``[lo, hi]``, bounds included (see :func:`clamp_valid`)."""

    @staticmethod
    def forward(ctx, x, lo, hi):
        out = x.clamp(lo, hi)
        ctx.save_for_backward(out != x)                 # the clamped elements (and NaN)
        return out

    @staticmethod
    def backward(ctx, grad):
        (clamped,) = ctx.saved_tensors
        return torch.where(clamped, 0.0, grad), None, None


def clamp_valid(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """``x.clamp(lo, hi)``, Eq. (4)'s "x - delta is a valid image", with the gradient passing at the bounds.

    The gradient is 1 where ``lo <= x <= hi`` and 0 where ``x`` was clamped (or is NaN). Autograd's
    ``torch.clamp`` with number bounds gives 0 *at* the bounds too, and the occluder starts at
    ``delta = 0``: a pixel that sits exactly at ``lo`` or ``hi`` would then never get a gradient, on
    ``x - delta`` or through ``t``, and its ``delta`` would stay 0 for good. On Fashion-MNIST that is
    half the pixels (49.5 % of 200 training images are exactly 0, the background), so the occluder could
    never draw on the background. This subgradient lets it, and only moves that stay in range keep
    their gradient (a pixel pushed past a bound is clamped and gets 0 on the next step). It is also
    cheaper: one comparison saved in the forward pass instead of two and a ``where`` in the backward.
    Without gradients it is ``torch.clamp``.
    """
    if torch.is_grad_enabled() and x.requires_grad:
        return _ClampValid.apply(x, lo, hi)
    return x.clamp(lo, hi)


def random_transform(
    x: torch.Tensor,
    noise: float | None = None,
    max_degrees: float = PAPER_MAX_DEGREES,
    generator: torch.Generator | None = None,
    input_range: tuple[float, float] = (0.0, 1.0),
) -> torch.Tensor:
    """``t(x)`` of Eqs. (4)-(5) (Sec. 4): uniform noise within ``+-noise``, then a rotation within ``+-max_degrees``.

    One angle per image; all randomness comes from ``generator`` (a CPU ``torch.Generator``; seeded 0 when
    None). ``noise=None`` is the paper's 0.04 on ``[-1, 1]`` rescaled to ``input_range``
    (``0.04 * (hi - lo) / 2``, 0.02 for ``[0, 1]``). See :class:`Transform`.

    Parameters
    ----------
    x : Tensor ``[B, C, H, W]``

    Returns
    -------
    Tensor ``[B, C, H, W]`` in ``input_range``
    """
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    if not isinstance(gen, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(gen).__name__}; pass "
                        "torch.Generator().manual_seed(0).")
    x = check_images(x, what="x")
    return Transform(noise, max_degrees, input_range)(x, gen)


# --------------------------------------------------------------------------------------------------
# The result
# --------------------------------------------------------------------------------------------------


@dataclass
class OccluderResult:
    """Global feature occluders of ``K`` classes (Eq. 4), as :func:`learn_occluders` returns them.

    Attributes
    ----------
    occluders : Tensor ``[K, C, H, W]`` (CPU)
        ``delta_y`` for each class in :attr:`classes`; the occluded image is ``clamp(x - delta_y)``.
    classes : list of int
        The class index of each row.
    n_images : list of int
        Images of each class given.
    n_kept : list of int
        Of those, the ones the model classifies right on ``x`` and on one draw of ``t(x)`` (Eq. 4's third
        constraint): the ``N`` of Eq. (5).
    kept : list of int
        Which images those are: their positions in the ``images`` given, grouped by class (order of
        :attr:`classes`).
    iterations : list of int
        Adam steps taken per class (fine-tuning included).
    stopped : list of bool
        Whether the class met the stop rule (every kept image flipped on ``x - delta`` and on
        ``t(x - delta)``) before ``max_iter``.
    success_rate : list of float
        Final fraction of kept images flipped on both ``x - delta`` and ``t(x - delta)`` (on ``x - delta``
        alone without ``t``).
    success_plain, success_transformed : list of float
        Final fractions flipped on ``x - delta``, and on ``t(x - delta)`` (NaN without ``t``).
    loss_history : list of list of float
        Eq. (5) per class at every evaluation (``iterations + 1`` values a run, the last at the final
        ``delta``; fine-tuning appends its runs).
    finetuned : list of int
        Classes that :func:`finetune_occluders` reran.
    finetune_rounds : list of dict
        One entry per fine-tuning round: ``round``, ``classes``, ``lam``, ``max_iter``,
        ``success_before``, ``success_after``, ``adopted``.
    lam, lr, max_iter, transform, noise, max_degrees, input_range, seed
        The hyper-parameters (``noise`` as resolved).
    class_names : list of str or None
        The model's names of :attr:`classes`, when it has ``class_names``.
    seconds : float
        Wall time of learning (fine-tuning added).
    """

    occluders: torch.Tensor
    classes: list[int]
    n_images: list[int]
    n_kept: list[int]
    kept: list[int]
    iterations: list[int]
    stopped: list[bool]
    success_rate: list[float]
    success_plain: list[float]
    success_transformed: list[float]
    loss_history: list[list[float]]
    lam: float
    lr: float
    max_iter: int
    transform: bool
    noise: float
    max_degrees: float
    input_range: tuple[float, float]
    seed: int
    finetuned: list[int] = field(default_factory=list)
    finetune_rounds: list[dict] = field(default_factory=list)
    class_names: list[str] | None = None
    seconds: float = 0.0

    # ---- access ----------------------------------------------------------------------------------

    def index(self, k: int) -> int:
        """The row of class ``k`` in :attr:`occluders`; ValueError naming the learned classes otherwise."""
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or int(k) not in self.classes:
            raise ValueError(f"No occluder for class {k!r}; this result has occluders for classes {self.classes}.")
        return self.classes.index(int(k))

    def occluder(self, k: int) -> torch.Tensor:
        """``delta_k: [C, H, W]``."""
        return self.occluders[self.index(k)]

    def apply(self, images: torch.Tensor, labels) -> torch.Tensor:
        """Occlude each image with its own class's occluder: ``clamp(x_i - delta_{y_i}, lo, hi)``.

        For Table 1 on held-out images: an image of class ``y`` gets ``delta_y``.

        Parameters
        ----------
        images : Tensor ``[B, C, H, W]``
        labels : LongTensor ``[B]`` or sequence of int
            Every label must be one of :attr:`classes`.

        Returns
        -------
        Tensor ``[B, C, H, W]`` on ``images``' device
        """
        images = self._check_images(images)
        y = check_targets(labels, images.shape[0], what="label", allow_predicted=False)
        missing = sorted(set(y.tolist()) - set(self.classes))
        if missing:
            raise ValueError(f"labels hold classes {missing} that have no occluder (this result has {self.classes}); "
                             "select those images first, e.g. images[torch.isin(labels, torch.tensor(result.classes))].")
        pos = torch.tensor(_positions(y, self.classes), dtype=torch.long)
        delta = self.occluders.to(images.device, images.dtype)[pos]  # [B, C, H, W]
        return (images - delta).clamp(*self.input_range)

    def apply_class(self, images: torch.Tensor, k: int) -> torch.Tensor:
        """Occlude every image with class ``k``'s occluder: ``clamp(x_i - delta_k, lo, hi)``.

        For Table S2's "unmatched occluders" (``delta_k`` on images of the other classes).

        Returns
        -------
        Tensor ``[B, C, H, W]`` on ``images``' device
        """
        images = self._check_images(images)
        delta = self.occluder(k).to(images.device, images.dtype)
        return (images - delta.unsqueeze(0)).clamp(*self.input_range)

    def _check_images(self, images: torch.Tensor) -> torch.Tensor:
        images = check_images(images)
        if tuple(images.shape[1:]) != tuple(self.occluders.shape[1:]):
            raise ValueError(f"The occluders are {tuple(self.occluders.shape[1:])} [C, H, W]; got images "
                             f"{tuple(images.shape)}. Pass images of the size they were learned on.")
        return images

    def summary(self):
        """A pandas DataFrame with one row per class: its counts, iterations, stop flag and success rates."""
        import pandas as pd

        return pd.DataFrame({
            "class": self.classes,
            **({"name": self.class_names} if self.class_names else {}),
            "n_images": self.n_images, "n_kept": self.n_kept, "iterations": self.iterations,
            "stopped": self.stopped, "success_rate": self.success_rate, "success_plain": self.success_plain,
            "success_transformed": self.success_transformed,
            "finetuned": [c in self.finetuned for c in self.classes],
        })

    # ---- round trip ------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """Everything but :attr:`occluders` as JSON-ready Python values (NaN written as None)."""
        d = asdict(self)
        d.pop("occluders")
        d["input_range"] = list(self.input_range)
        d["success_transformed"] = [None if math.isnan(v) else v for v in self.success_transformed]
        return d

    @classmethod
    def from_dict(cls, d: dict, occluders: torch.Tensor) -> OccluderResult:
        """Inverse of :meth:`to_dict`, given the occluders ``[K, C, H, W]``."""
        d = dict(d)
        d["input_range"] = tuple(d["input_range"])
        d["success_transformed"] = [math.nan if v is None else v for v in d["success_transformed"]]
        return cls(occluders=occluders, **d)

    def save(self, path: str | Path) -> tuple[Path, Path]:
        """Write ``<path>.pt`` (the occluders tensor, ``torch.save``) and ``<path>.json`` (the rest).

        Returns the two paths; :meth:`load` reads them back.
        """
        base = Path(path).with_suffix("")
        base.parent.mkdir(parents=True, exist_ok=True)
        pt, js = base.with_suffix(".pt"), base.with_suffix(".json")
        torch.save(self.occluders.detach().cpu().clone(), pt)
        js.write_text(json.dumps(self.to_dict(), indent=1))
        return pt, js

    @classmethod
    def load(cls, path: str | Path) -> OccluderResult:
        """Read a result written by :meth:`save` (either file's path, or the common stem)."""
        base = Path(path).with_suffix("")
        occ = torch.load(base.with_suffix(".pt"), map_location="cpu", weights_only=True)
        return cls.from_dict(json.loads(base.with_suffix(".json").read_text()), occ)


# --------------------------------------------------------------------------------------------------
# Validation and small helpers
# --------------------------------------------------------------------------------------------------


def _resolve_device(model: nn.Module, device) -> torch.device:
    """``"auto"``: the model's device. Otherwise the device asked for, which must be the model's."""
    here = model_device(model)
    if isinstance(device, str) and device == "auto":
        return here
    dev = resolve_device(device)
    if dev.type != here.type or (dev.index is not None and here.index is not None and dev.index != here.index):
        raise ValueError(f"device={device!r} but the model's parameters are on {here}; move the model with "
                         f"model.to({str(dev)!r}) (the occluders are learned where the model is), or pass device='auto'.")
    return here


def _class_seed(seed: int, k: int, tag: str) -> int:
    """A 63-bit seed for class ``k``'s generator, from ``(seed, k, tag)``; the same whatever else is learned."""
    digest = hashlib.sha256(f"xailib.afi.occluder/{int(seed)}/{int(k)}/{tag}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _generator(seed: int, k: int, tag: str) -> torch.Generator:
    return torch.Generator().manual_seed(_class_seed(seed, k, tag))


def _positions(y: torch.Tensor, classes: Sequence[int]) -> list[int]:
    lookup = {c: i for i, c in enumerate(classes)}
    return [lookup[int(c)] for c in y.tolist()]


def _class_label(model: nn.Module, k: int) -> str:
    names = getattr(model, "class_names", None)
    return f"Class {k} ({names[k]!r})" if names and 0 <= k < len(names) else f"Class {k}"


def _check_classes(classes, labels: torch.Tensor) -> list[int]:
    present = sorted(set(labels.tolist()))
    if classes is None:
        return present
    if isinstance(classes, numbers.Integral) and not isinstance(classes, bool):
        classes = [int(classes)]
    elif isinstance(classes, torch.Tensor) and not classes.is_floating_point() and classes.dim() <= 1:
        classes = [int(c) for c in classes.reshape(-1).tolist()]
    if not isinstance(classes, Sequence) or isinstance(classes, str) or not all(
            isinstance(c, numbers.Integral) and not isinstance(c, bool) for c in classes):
        raise TypeError(f"classes must be None (every class in labels), an int or a list of class indices, got "
                        f"{type(classes).__name__} {classes!r}.")
    classes = [int(c) for c in classes]
    if not classes:
        raise ValueError(f"classes is empty; pass None for every class in labels ({present}) or a list of them.")
    if len(set(classes)) != len(classes):
        raise ValueError(f"classes lists a class twice: {classes}; give each class once.")
    missing = [c for c in classes if c not in present]
    if missing:
        raise ValueError(f"classes {missing} have no images in labels (the classes present are {present}); an "
                         "occluder is learned from images of its class, so add images of those classes or drop them.")
    return classes


def _check_init(init, n_classes: int, shape: Sequence[int]) -> torch.Tensor | None:
    if init is None:
        return None
    want = (n_classes, *shape)
    if not isinstance(init, torch.Tensor) or not init.is_floating_point() or tuple(init.shape) != want:
        got = tuple(init.shape) if isinstance(init, torch.Tensor) else type(init).__name__
        raise ValueError(f"init must be a float tensor {want} [K, C, H, W] (one starting occluder per class), got {got}.")
    return init


def _check_bool(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}.")
    return value


@dataclass
class _Problem:
    """The validated set-up of one learning run, shared by learning and fine-tuning."""

    x: torch.Tensor            # [M, C, H, W] kept images, grouped by class (order of `classes`), on the device
    row_pos: torch.Tensor      # [M] position in `classes` of each row's class (device)
    row_y: torch.Tensor        # [M] the class index of each row (device)
    n_kept: list[int]
    n_images: list[int]
    classes: list[int]
    t: Transform | None
    input_range: tuple[float, float]
    kept: list[int]            # positions in the images given of the rows of x


def _forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return check_class_scores(model(x), x.shape[0])


def _draw(t: Transform, gens: Sequence[torch.Generator], counts: Sequence[int], shape: Sequence[int],
          dtype: torch.dtype):
    """Each class's draw of ``t`` from its own generator, concatenated in class order: ``u [M, C, H, W]``, ``angles [M]``.

    The only per-class Python loop of the fast path: it keeps each class's random stream its own, so an
    occluder does not depend on which other classes are learned with it.
    """
    draws = [t.draw((n, *shape), g, dtype) for g, n in zip(gens, counts)]
    return torch.cat([d[0] for d in draws]), torch.cat([d[1] for d in draws])


def _prepare(model, images, labels, classes, transform, noise, max_degrees, input_range, batch_size, seed,
             device) -> _Problem:
    """Validate, then keep the images of Eq. (4)'s third constraint (right on ``x`` and on one draw of ``t(x)``)."""
    lo, hi = check_input_range(input_range)
    transform = _check_bool(transform, "transform")
    t = Transform(noise, max_degrees, (lo, hi)) if transform else None
    dev = _resolve_device(model, device)
    images = check_images(images, model, move=False)
    check_in_range(images, lo, hi)
    y = check_targets(labels, images.shape[0], model=model, images=images, what="label", allow_predicted=False)
    classes = _check_classes(classes, y)
    lookup = torch.full((max(max(classes), int(y.max())) + 1,), -1, dtype=torch.long)
    lookup[torch.tensor(classes)] = torch.arange(len(classes))
    pos = lookup[y]                                                # [B] position in classes, -1: not learned
    rows = torch.nonzero(pos >= 0).squeeze(1)
    rows = rows[torch.argsort(pos[rows], stable=True)]             # grouped by class, images in given order
    x = images[rows].to(dev)
    row_pos, row_y = pos[rows].to(dev), y[rows].to(dev)
    n_images = torch.bincount(pos[rows], minlength=len(classes)).tolist()

    # Eq. (4), third constraint: f(t(x_i)) = f(x_i) = y, with one draw of t per class (its "filter" stream)
    keep = torch.empty(x.shape[0], dtype=torch.bool, device=dev)
    draw = _draw(t, [_generator(seed, c, "filter") for c in classes], n_images, x.shape[1:], x.dtype) if t else None
    step = batch_size or x.shape[0]
    with torch.no_grad():
        for s in range(0, x.shape[0], step):
            sl = slice(s, s + step)
            ok = _forward(model, x[sl]).argmax(1) == row_y[sl]
            if t is not None:
                ok &= _forward(model, t.apply(x[sl], draw[0][sl], draw[1][sl])).argmax(1) == row_y[sl]
            keep[sl] = ok
    n_kept = torch.bincount(row_pos[keep].cpu(), minlength=len(classes)).tolist()
    for c, n, nk in zip(classes, n_images, n_kept):
        if nk == 0:
            raise ValueError(
                f"{_class_label(model, c)} has {n} image(s), but the model misclassifies every one of "
                f"them on x" + (" or on t(x)" if t is not None else "") + ", so none satisfies Eq. (4)'s third "
                "constraint and there is nothing to learn its occluder from. Pass more images of this class"
                + (", or transform=False to select on x alone" if t is not None else "")
                + f", or leave it out with classes=[...] (e.g. {[k for k in classes if k != c][:5]}).")
    return _Problem(x[keep], row_pos[keep], row_y[keep], n_kept, n_images, classes, t, (lo, hi),
                    rows[keep.cpu()].tolist())


def _check_hyper(lam, lr, max_iter, batch_size, seed, progress):
    lam = check_positive_float(lam, "lam", zero=True, hint=" (the weight of D(delta) = ||delta||_1 in Eq. 5; "
                               "0 turns the L1 term off)")
    lr = check_positive_float(lr, "lr", hint=" (Adam's step size in image units, e.g. 0.01)")
    max_iter = check_positive_int(max_iter, "max_iter", hint=" (Adam steps per class, at least 1)")
    if batch_size is not None:
        batch_size = check_positive_int(batch_size, "batch_size", hint=" or None (all kept images in one batch)")
    seed = check_seed(seed)
    _check_bool(progress, "progress")
    return lam, lr, max_iter, batch_size, seed


# --------------------------------------------------------------------------------------------------
# The fast path: all classes in one batched run
# --------------------------------------------------------------------------------------------------


def _learn(model, prob: _Problem, init, lam, lr, max_iter, batch_size, seed, tag, progress, desc) -> dict:
    """Minimise Eq. (5) for every class of ``prob`` at once, with elementwise Adam and per-class stopping.

    Returns per-class lists (``iterations``, ``stopped``, ``success_*``, ``loss_history``) and the
    occluders ``[K, C, H, W]`` on the CPU. Must run inside ``model_state(model, train=False, requires_grad=False)``.
    """
    x, row_pos, row_y, t = prob.x, prob.row_pos, prob.row_y, prob.t
    K, shape, dev = len(prob.classes), x.shape[1:], x.device
    lo, hi = prob.input_range
    n_kept = torch.tensor(prob.n_kept, dtype=x.dtype, device=dev)            # N of Eq. (5), per class
    n_kept64 = n_kept.double()
    delta = torch.zeros((K, *shape), dtype=x.dtype, device=dev) if init is None else \
        init.detach().to(dev, x.dtype).clone()                                # [K, C, H, W]
    m, v = torch.zeros_like(delta), torch.zeros_like(delta)                  # Adam's moments, per element
    steps = torch.zeros(K, dtype=torch.long, device=dev)                     # Adam's step count, per class
    b1, b2 = ADAM_BETAS
    gens = [_generator(seed, c, tag) for c in prob.classes]
    active = torch.ones(K, dtype=torch.bool, device=dev)
    out = {"iterations": [0] * K, "stopped": [False] * K, "success_rate": [0.0] * K, "success_plain": [0.0] * K,
           "success_transformed": [math.nan] * K, "loss_history": [[] for _ in range(K)]}
    bar = tqdm(total=max_iter, desc=desc, leave=False, disable=not progress)
    try:
        for it in range(max_iter + 1):
            act = torch.nonzero(active).squeeze(1).tolist()                  # classes still learning
            if len(act) == K:                                                # every row takes part: no copy
                xa, pa, ya = x, row_pos, row_y
            else:
                rows = torch.nonzero(active[row_pos]).squeeze(1)
                xa, pa, ya = x[rows], row_pos[rows], row_y[rows]
            draw = _draw(t, [gens[k] for k in act], [prob.n_kept[k] for k in act], shape, x.dtype) if t else None
            last = it == max_iter                                            # evaluate only, no step after this
            grad = torch.zeros_like(delta)
            data = torch.zeros(K, dtype=x.dtype, device=dev)                 # (1/N) sum_i (Z(x-d)[y] + Z(t(x-d))[y])
            flip_x, flip_t, flip_both = (torch.zeros(K, dtype=torch.float64, device=dev) for _ in range(3))
            step = batch_size or xa.shape[0]
            for s in range(0, xa.shape[0], step):
                sl = slice(s, s + step)
                d = delta.detach().requires_grad_(not last)
                with torch.set_grad_enabled(not last):
                    xo = clamp_valid(xa[sl] - d[pa[sl]], lo, hi)             # Eq. (4) 4th constraint: valid x - delta
                    xs = torch.cat([xo, t.apply(xo, draw[0][sl], draw[1][sl])]) if t else xo
                    z = _forward(model, xs)
                    zy = z.gather(1, ya[sl].repeat(2 if t else 1).unsqueeze(1)).squeeze(1)
                    zy = zy.view(2 if t else 1, -1).sum(0)                   # Z(x-d)[y] + Z(t(x-d))[y], per image
                    per_image = zy / n_kept[pa[sl]]                          # Eq. (5): a mean per class
                    if not last:
                        (g,) = torch.autograd.grad(per_image.sum(), d)
                        grad += g
                wrong = (z.argmax(1) != ya[sl].repeat(2 if t else 1)).view(2 if t else 1, -1)
                data.index_add_(0, pa[sl], per_image.detach())
                flip_x.index_add_(0, pa[sl], wrong[0].double())             # counts of flipped images
                flip_both.index_add_(0, pa[sl], wrong.all(0).double())
                if t:
                    flip_t.index_add_(0, pa[sl], wrong[1].double())
            l1 = delta.abs().flatten(1).sum(1)                               # D(delta) = ||delta||_1, per class
            loss = (data + lam * l1).tolist()
            done = (flip_both == n_kept64).tolist()                          # the stop rule: Eq. (4)'s first two
            fb, fx, ft = ((f / n_kept64).tolist() for f in (flip_both, flip_x, flip_t))
            for k in act:
                out["loss_history"][k].append(loss[k])
                out["success_rate"][k], out["success_plain"][k] = fb[k], fx[k]
                out["success_transformed"][k] = ft[k] if t else math.nan
                if done[k]:
                    out["stopped"][k] = True
                    active[k] = False
            if last or not bool(active.any()):
                break
            # Adam (torch.optim.Adam's update, written per element) on the classes still active only: the
            # others keep delta, moments and step count exactly.
            ia = torch.nonzero(active).squeeze(1)
            g = grad[ia] + lam * delta[ia].sign()                            # d/d delta of lambda * ||delta||_1
            steps[ia] += 1
            m[ia] = m[ia].lerp(g, 1 - b1)
            v[ia] = (v[ia] * b2).addcmul(g, g, value=1 - b2)
            n_steps = steps[ia].to(torch.float64)
            bc1 = (1 - b1 ** n_steps).to(x.dtype).view(-1, 1, 1, 1)
            bc2 = (1 - b2 ** n_steps).to(x.dtype).view(-1, 1, 1, 1)
            denom = v[ia].sqrt() / bc2.sqrt() + ADAM_EPS
            delta[ia] = delta[ia] - (lr / bc1) * m[ia] / denom
            bar.update(1)
            bar.set_postfix(active=int(ia.numel()))
    finally:
        bar.close()
    out["occluders"] = delta.detach().cpu()
    out["iterations"] = steps.tolist()
    return out


def learn_occluders(
    model: nn.Module,
    images: torch.Tensor,
    labels,
    classes=None,
    *,
    lam: float = DEFAULT_LAM,
    lr: float = DEFAULT_LR,
    max_iter: int = DEFAULT_MAX_ITER,
    transform: bool = True,
    noise: float | None = None,
    max_degrees: float = PAPER_MAX_DEGREES,
    input_range: tuple[float, float] = (0.0, 1.0),
    init: torch.Tensor | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    progress: bool = True,
    device: str = "auto",
    client=None,
    classes_per_task: int | None = None,
) -> OccluderResult:
    """Learn one global feature occluder per class (AfI, Sec. 3.1.1, Eqs. 4-5), all classes in one batched run.

    For each class ``y`` Adam minimises Eq. (5),
    ``(1/N_y) sum_i (Z(x_i - delta_y)[y] + Z(t(x_i - delta_y))[y]) + lam * ||delta_y||_1``, over the
    ``N_y`` kept images of the class (those the model gets right on ``x`` and on one seeded draw of
    ``t(x)``: Eq. 4's third constraint), with ``x - delta`` clamped to ``input_range`` in the forward pass
    (Eq. 4's fourth constraint). A class stops once every kept image is flipped on ``x - delta`` and on
    ``t(x - delta)`` (``t`` redrawn at every iteration), or after ``max_iter`` steps.

    All classes share one parameter ``delta: [K, C, H, W]``; each image reads its own class's row, the
    loss is a mean per class so that classes do not weigh on each other, and Adam is applied elementwise
    with a step count per class, so that a class that has stopped is frozen exactly (no gradient, no
    moment update, no step). ``t``'s randomness is drawn from one generator per class, seeded from
    ``(seed, class)``. Hence learning all classes together gives the occluders that
    ``learn_occluders(..., classes=[k])`` gives for each ``k`` (up to rounding).

    Parameters
    ----------
    model : nn.Module
        A classifier returning logits ``[B, classes]``. It runs in eval mode with frozen parameters; mode
        and ``requires_grad`` flags are restored afterwards, and nothing of it is changed.
    images : Tensor ``[B, C, H, W]`` in ``input_range``
    labels : LongTensor ``[B]`` or sequence of int
        The class of each image (its ground truth; images the model gets wrong are left out).
    classes : int, sequence of int or None
        The classes to learn occluders for (each must occur in ``labels``); None: every class in labels,
        in increasing order. Images of other classes are ignored.
    lam : float
        ``lambda`` of Eq. (5), the weight of ``D(delta) = ||delta||_1``, the *sum* of ``|delta|`` over the
        ``C*H*W`` entries (the paper's l1 distance), so ``lam`` is the pull towards 0 on each entry, to be
        weighed against that entry's gradient of the (mean) logit term (Adam normalises per element). The
        default 0.05 was chosen on ConceptWorld (3 x 64 x 64) with the zoo's VGG and ResNet: there
        ``lam * ||delta||_1`` ends up about as large as the logit term ("lambda is set to balance the
        contribution of each term"), every class of both succeeded within 45 steps (20 images a class), and
        ``delta`` is about half the size it has with ``lam = 0.01``; with ``lam = 0.3`` half the VGG's classes
        no longer flip within 300 steps. For images of another size, retune it (a mean-|delta| ``lam``
        is ``lam * C*H*W`` here). ``lam = 0`` drops the L1 term.
    lr : float
        Adam's step size, in image units: each entry of ``delta`` moves by at most about ``lr`` a step.
        The default 0.01 (1 % of the ``[0, 1]`` range) flips the zoo models on ConceptWorld within tens
        of steps.
    max_iter : int
        The most Adam steps per class (default 300).
    transform : bool
        Use ``t`` (Eqs. 4-5). ``False`` is the paper's ablation "AfI without t" (Table 2): Eq. (5) keeps only
        the ``Z(x - delta)[y]`` term, images are selected and the stop rule checked on ``x`` alone.
    noise, max_degrees : float
        ``t``'s noise half-width (None: ``0.04 * (hi - lo) / 2``, the paper's 0.04 on ``[-1, 1]`` rescaled;
        0.02 for ``[0, 1]``) and largest rotation in degrees (paper: 5). See :class:`Transform`.
    input_range : (float, float)
        ``(lo, hi)``, the valid pixel values (the paper's ``[-1, 1]``; ``[0, 1]`` for our models).
    init : Tensor ``[K, C, H, W]``, optional
        Starting occluders (default zeros), one per class of ``classes``, with a fresh Adam state;
        :func:`finetune_occluders` uses it.
    batch_size : int or None
        Images per forward pass (gradients are accumulated over batches; the result is the same). None:
        all kept images at once.
    seed : int
        Seeds ``t``'s draws (per class).
    progress : bool
        A tqdm bar over iterations.
    client : distributed.Client, optional
        Learn the classes in groups of ``classes_per_task`` as Dask tasks on this client's cluster (the paper
        profile's 100 classes), each group on its own images; the result is merged in class order. None: here.
    classes_per_task : int, optional
        Classes per group (default 1 with a client; without one, giving it runs the same groups one after another
        in this process, which gives the client's result bit for bit). Each class's occluder does not depend on
        the others learned with it, so the groups give the one batched run's occluders up to rounding (tested
        within 1e-6).
    device : str
        ``"auto"``: where the model is. Any other device must be the model's (the model is not moved).

    Returns
    -------
    OccluderResult
        ``occluders [K, C, H, W]`` and, per class, the counts (``n_images``, ``n_kept``; ``kept`` lists the
        images that took part), iterations, stop flags, success rates and loss histories.

    Raises
    ------
    ValueError
        For a class none of whose images the model classifies right (on ``x`` and ``t(x)``), ``lam < 0``,
        ``max_iter < 1``, images outside ``input_range``, labels of the wrong length, classes not in labels.
    TypeError
        For a model that is not an ``nn.Module``, non-tensor images, float labels.

    Examples
    --------
    >>> res = learn_occluders(model, ds.images[:200], ds.labels[:200], progress=False)
    >>> res.summary()[["class", "n_kept", "iterations", "success_rate"]]
    >>> occluded = res.apply(test_images, test_labels)        # Table 1: top-1 on occluded images
    """
    check_model(model)
    lam, lr, max_iter, batch_size, seed = _check_hyper(lam, lr, max_iter, batch_size, seed, progress)
    if client is not None or classes_per_task is not None:
        settings = dict(lam=lam, lr=lr, max_iter=max_iter, transform=transform, noise=noise, max_degrees=max_degrees,
                        input_range=input_range, init=init, batch_size=batch_size, seed=seed, device=device)
        return _learn_in_groups(model, images, labels, classes, client, classes_per_task, settings, progress)
    start = time.perf_counter()
    with model_state(model, train=False, requires_grad=False):
        prob = _prepare(model, images, labels, classes, transform, noise, max_degrees, input_range, batch_size,
                        seed, device)
        init = _check_init(init, len(prob.classes), prob.x.shape[1:])
        out = _learn(model, prob, init, lam, lr, max_iter, batch_size, seed, "round0", progress, "AfI occluders")
    names = getattr(model, "class_names", None)
    return OccluderResult(
        occluders=out["occluders"], classes=prob.classes, n_images=prob.n_images, n_kept=prob.n_kept,
        kept=prob.kept, iterations=out["iterations"], stopped=out["stopped"], success_rate=out["success_rate"],
        success_plain=out["success_plain"], success_transformed=out["success_transformed"],
        loss_history=out["loss_history"], lam=lam, lr=lr, max_iter=max_iter, transform=prob.t is not None,
        noise=prob.t.noise if prob.t is not None else Transform(noise, max_degrees, input_range).noise,
        max_degrees=float(max_degrees), input_range=check_input_range(input_range), seed=seed,
        class_names=[names[c] for c in prob.classes] if names else None, seconds=time.perf_counter() - start,
    )


def _learn_group(images: torch.Tensor, labels: torch.Tensor, group: list[int], positions: list[int], init,
                 model: nn.Module, settings: Mapping) -> OccluderResult:
    """One task of :func:`_learn_in_groups`: the occluders of ``group`` from its own images (``positions`` in the
    images the caller gave), ``kept`` mapped back to those positions."""
    res = learn_occluders(model, images, labels, group, **{**settings, "init": init}, progress=False)
    res.kept = [positions[i] for i in res.kept]
    return res


def _learn_in_groups(model, images, labels, classes, client, classes_per_task, settings, progress) -> OccluderResult:
    """:func:`learn_occluders` in groups of classes, serially or as Dask tasks (:func:`xailib.parallel.map_tasks`)."""
    check_client(client)
    per = 1 if classes_per_task is None else check_positive_int(classes_per_task, "classes_per_task",
                                                                hint=" (classes learned together in one task)")
    start = time.perf_counter()
    images = check_images(images, model, move=False)
    check_in_range(images, *check_input_range(settings["input_range"]))
    y = check_targets(labels, images.shape[0], model=model, images=images, what="label", allow_predicted=False)
    chosen = _check_classes(classes, y)
    init = _check_init(settings["init"], len(chosen), images.shape[1:])
    tasks = []
    for g in range(0, len(chosen), per):
        group = chosen[g:g + per]
        rows = torch.nonzero(torch.isin(y, torch.tensor(group))).squeeze(1)
        tasks.append((images[rows], y[rows], group, rows.tolist(), None if init is None else init[g:g + per]))
    parts = map_tasks(_learn_group, tasks, client, shared={"model": model, "settings": settings}, progress=progress,
                      desc="AfI occluders (tasks)")
    first = parts[0]
    cat = lambda name: [v for p in parts for v in getattr(p, name)]  # noqa: E731
    return OccluderResult(
        occluders=torch.cat([p.occluders for p in parts]), classes=cat("classes"), n_images=cat("n_images"),
        n_kept=cat("n_kept"), kept=cat("kept"), iterations=cat("iterations"), stopped=cat("stopped"),
        success_rate=cat("success_rate"), success_plain=cat("success_plain"),
        success_transformed=cat("success_transformed"), loss_history=cat("loss_history"), lam=first.lam, lr=first.lr,
        max_iter=first.max_iter, transform=first.transform, noise=first.noise, max_degrees=first.max_degrees,
        input_range=first.input_range, seed=first.seed,
        class_names=cat("class_names") if first.class_names is not None else None,
        seconds=time.perf_counter() - start)


# --------------------------------------------------------------------------------------------------
# The slow literal reference: one class, torch.optim.Adam
# --------------------------------------------------------------------------------------------------


def learn_occluder_reference(
    model: nn.Module,
    images: torch.Tensor,
    label: int,
    *,
    lam: float = DEFAULT_LAM,
    lr: float = DEFAULT_LR,
    max_iter: int = DEFAULT_MAX_ITER,
    transform: bool = True,
    noise: float | None = None,
    max_degrees: float = PAPER_MAX_DEGREES,
    input_range: tuple[float, float] = (0.0, 1.0),
    seed: int = 0,
) -> dict:
    """The global feature occluder of one class, written as plainly as Eq. (5), with ``torch.optim.Adam``.

    The test oracle of :func:`learn_occluders`: same selection of images, same draws of ``t`` (class
    ``label``'s generators), same stop rule, but one class, one image batch, and PyTorch's optimiser.

    Parameters
    ----------
    images : Tensor ``[N, C, H, W]``
        Images of class ``label``.
    label : int
    Other parameters as in :func:`learn_occluders`.

    Returns
    -------
    dict
        ``occluder [C, H, W]``, ``n_kept``, ``iterations``, ``stopped``, ``success_rate``, ``loss_history``.
    """
    check_model(model)
    lo, hi = check_input_range(input_range)
    t = Transform(noise, max_degrees, (lo, hi)) if transform else None
    x = check_images(images, model)
    y = int(label)
    with model_state(model, train=False, requires_grad=False):
        # Eq. (4), third constraint: keep the images with f(x) = y and f(t(x)) = y
        with torch.no_grad():
            keep = model(x).argmax(1) == y
            if t is not None:
                keep &= model(t(x, _generator(seed, y, "filter"))).argmax(1) == y
        x = x[keep]
        if x.shape[0] == 0:
            raise ValueError(f"No image of class {y} is classified as {y} on x and t(x).")
        delta = torch.zeros(x.shape[1:], dtype=x.dtype, device=x.device, requires_grad=True)
        opt = torch.optim.Adam([delta], lr=lr, betas=ADAM_BETAS, eps=ADAM_EPS)
        gen = _generator(seed, y, "round0")
        history, iterations, stopped, success = [], 0, False, 0.0
        for it in range(max_iter + 1):
            occluded = clamp_valid(x - delta, lo, hi)                  # x - delta, a valid image (gradient at the bounds)
            z1 = model(occluded)                                       # Z(x - delta)
            loss = z1[:, y].mean()
            flipped = z1.argmax(1) != y
            if t is not None:
                z2 = model(t(occluded, gen))                           # Z(t(x - delta))
                loss = (z1[:, y] + z2[:, y]).mean()
                flipped = flipped & (z2.argmax(1) != y)
            loss = loss + lam * delta.abs().sum()                      # Eq. (5), D = ||delta||_1
            history.append(float(loss.detach()))
            success = float(flipped.double().mean())
            if bool(flipped.all()):                                    # every constraint of (4) holds
                stopped = True
                break
            if it == max_iter:
                break
            opt.zero_grad()
            loss.backward()
            opt.step()
            iterations += 1
    return {"occluder": delta.detach().cpu(), "n_kept": int(x.shape[0]), "iterations": iterations,
            "stopped": stopped, "success_rate": success, "loss_history": history}


# --------------------------------------------------------------------------------------------------
# Sec. 4.1: class-specific fine-tuning
# --------------------------------------------------------------------------------------------------


def finetune_occluders(
    model: nn.Module,
    images: torch.Tensor,
    labels,
    result: OccluderResult,
    *,
    min_success: float = 0.9,
    rounds: int = 3,
    lam_factor: float = 0.5,
    max_iter: int | None = None,
    batch_size: int | None = None,
    progress: bool = True,
    device: str = "auto",
) -> OccluderResult:
    """Class-specific fine-tuning (Sec. 4.1): rerun the classes whose occluders flip too few images.

    "If occluders fail to achieve high success rates ... we mitigate it by class-specific fine-tuning."
    The paper gives no schedule; ours: in round ``r = 1..rounds``, every class whose success rate (the
    fraction of kept images flipped on both ``x - delta`` and ``t(x - delta)``) is below ``min_success``
    is learned again with :func:`learn_occluders`, starting from its current ``delta`` (Adam restarted),
    for ``max_iter`` more steps, with ``lambda_r = lam * lam_factor**r`` (halved each round by default)
    and fresh draws of ``t`` (seeded from ``(seed, class, r)``). The new occluder is adopted when its
    success rate is not lower than the old one's (the steps of a round count in ``iterations`` either
    way). The images must be the ones ``result`` was learned on
    (the same kept images are selected again with the same seed).

    Parameters
    ----------
    model, images, labels
        As given to :func:`learn_occluders`.
    result : OccluderResult
        Its hyper-parameters are reused.
    min_success : float
        Success rate in ``[0, 1]`` below which a class is fine-tuned.
    rounds : int
    lam_factor : float
        ``lambda`` is multiplied by this each round (in ``[0, 1]``).
    max_iter : int or None
        Steps per round; None: ``result.max_iter``.

    Returns
    -------
    OccluderResult
        A new result: fine-tuned classes have their new occluders, their iterations and loss histories
        extended, and are listed in ``finetuned``; ``finetune_rounds`` logs each round.
    """
    check_model(model)
    if not isinstance(result, OccluderResult):
        raise TypeError(f"result must be an OccluderResult from learn_occluders, got {type(result).__name__}.")
    min_success = check_fraction(min_success, "min_success")
    rounds = check_positive_int(rounds, "rounds")
    lam_factor = check_fraction(lam_factor, "lam_factor", hint=" (lambda is multiplied by it each round)")
    max_iter = result.max_iter if max_iter is None else max_iter
    lam, lr, max_iter, batch_size, seed = _check_hyper(result.lam, result.lr, max_iter, batch_size, result.seed,
                                                       progress)
    start = time.perf_counter()
    res = OccluderResult.from_dict(result.to_dict(), result.occluders.clone())
    with model_state(model, train=False, requires_grad=False):
        prob = _prepare(model, images, labels, res.classes, res.transform, res.noise, res.max_degrees,
                        res.input_range, batch_size, seed, device)
        if prob.kept != res.kept:
            raise ValueError(f"These images keep {prob.n_kept} images per class (of {prob.n_images}), not the ones "
                             f"result was learned on ({res.n_kept}); pass the images and labels that result was "
                             "learned from.")
        for r in range(1, rounds + 1):
            todo = [i for i, s in enumerate(res.success_rate) if s < min_success]
            if not todo:
                break
            before = [res.success_rate[i] for i in todo]
            sub = _subproblem(prob, todo)
            lam_r = lam * lam_factor ** r
            out = _learn(model, sub, res.occluders[todo], lam_r, lr, max_iter, batch_size, seed, f"round{r}",
                         progress, f"AfI fine-tuning round {r}")
            adopted = []
            for j, i in enumerate(todo):
                res.iterations[i] += out["iterations"][j]
                res.loss_history[i] = res.loss_history[i] + out["loss_history"][j]
                if out["success_rate"][j] >= res.success_rate[i]:
                    adopted.append(res.classes[i])
                    res.occluders[i] = out["occluders"][j]
                    for key in ("stopped", "success_rate", "success_plain", "success_transformed"):
                        getattr(res, key)[i] = out[key][j]
                if res.classes[i] not in res.finetuned:
                    res.finetuned.append(res.classes[i])
            res.finetune_rounds.append({
                "round": r, "classes": [res.classes[i] for i in todo], "lam": lam_r, "max_iter": max_iter,
                "success_before": before,
                "success_after": out["success_rate"], "adopted": adopted})
    res.seconds += time.perf_counter() - start
    return res


def _subproblem(prob: _Problem, todo: list[int]) -> _Problem:
    """The rows of ``prob`` of the classes at positions ``todo``, renumbered ``0..len(todo)-1``."""
    lookup = torch.full((len(prob.classes),), -1, dtype=torch.long, device=prob.row_pos.device)
    lookup[torch.tensor(todo, device=prob.row_pos.device)] = torch.arange(len(todo), device=prob.row_pos.device)
    pos = lookup[prob.row_pos]
    rows = torch.nonzero(pos >= 0).squeeze(1)
    return _Problem(prob.x[rows], pos[rows], prob.row_y[rows], [prob.n_kept[i] for i in todo],
                    [prob.n_images[i] for i in todo], [prob.classes[i] for i in todo], prob.t, prob.input_range,
                    [prob.kept[i] for i in rows.tolist()])


# --------------------------------------------------------------------------------------------------
# Sec. 4.1 Table 1 and Table S2: top-1 accuracy on occluded images
# --------------------------------------------------------------------------------------------------


def _check_eval(model, result, images, labels):
    check_model(model)
    if not isinstance(result, OccluderResult):
        raise TypeError(f"result must be an OccluderResult from learn_occluders, got {type(result).__name__}.")
    images = check_images(images, model, move=False)
    check_in_range(images, *result.input_range)
    y = check_targets(labels, images.shape[0], model=model, images=images, what="label", allow_predicted=False)
    return images, y


def evaluate_occluders(model: nn.Module, result: OccluderResult, images: torch.Tensor, labels,
                       batch_size: int = 256):
    """Top-1 accuracy per class on clean images and on images occluded with their class's occluder (Table 1).

    Parameters
    ----------
    images : Tensor ``[B, C, H, W]``
        E.g. held-out images; every label must have an occluder in ``result``.
    labels : LongTensor ``[B]`` or sequence of int

    Returns
    -------
    pandas.DataFrame
        One row per class of ``result``: ``class`` (``name`` too where the model names classes), ``n``,
        ``clean_top1``, ``occluded_top1`` (``clamp(x - delta_y)``; NaN for a class without images here).
    """
    import pandas as pd

    images, y = _check_eval(model, result, images, labels)
    batch_size = check_positive_int(batch_size, "batch_size")
    occluded = result.apply(images, y)
    clean_ok = (predict(model, images, batch_size) == y).double()
    occ_ok = (predict(model, occluded, batch_size) == y).double()
    pos = torch.tensor(_positions(y, result.classes), dtype=torch.long)
    K = len(result.classes)
    n = torch.bincount(pos, minlength=K).double()
    clean = torch.zeros(K, dtype=torch.float64).index_add_(0, pos, clean_ok) / n  # per-class means
    occ = torch.zeros(K, dtype=torch.float64).index_add_(0, pos, occ_ok) / n
    return pd.DataFrame({"class": result.classes, **({"name": result.class_names} if result.class_names else {}),
                         "n": n.long().tolist(), "clean_top1": clean.tolist(), "occluded_top1": occ.tolist()})


def unmatched_accuracy(model: nn.Module, result: OccluderResult, images: torch.Tensor, labels,
                       batch_size: int = 256):
    """Top-1 accuracy on images of the *other* classes under each class's occluder (Table S2, unmatched occluders).

    For occluder ``delta_k``: the images whose label is not ``k`` (of any class), occluded with
    ``clamp(x - delta_k)``, scored against their own labels. An occluder specific to its class leaves
    this near the clean accuracy.

    Returns
    -------
    pandas.DataFrame
        One row per class ``k`` of ``result``: ``class`` (``name``), ``n`` (images of classes != k),
        ``clean_top1`` and ``unmatched_top1`` on those images.
    """
    import pandas as pd

    images, y = _check_eval(model, result, images, labels)
    batch_size = check_positive_int(batch_size, "batch_size")
    clean_ok = predict(model, images, batch_size) == y
    rows = []
    for k in result.classes:  # one batched evaluation per occluder
        other = y != k
        xo = result.apply_class(images[other], k) if bool(other.any()) else None
        acc = float((predict(model, xo, batch_size) == y[other]).double().mean()) if xo is not None else math.nan
        rows.append({"class": k, "n": int(other.sum()),
                     "clean_top1": float(clean_ok[other].double().mean()) if bool(other.any()) else math.nan,
                     "unmatched_top1": acc})
    df = pd.DataFrame(rows)
    if result.class_names:
        df.insert(1, "name", result.class_names)
    return df
