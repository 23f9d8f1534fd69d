"""Validation at the public boundary, one validator per kind of input.

Every public entry point of xailib checks its inputs with these, so that a mistake gets one clear
error that says what was wrong and how to fix it (``TypeError`` for the wrong kind of object,
``ValueError`` for the right kind with a wrong value), before any hook is set or any model state
is changed.

* :func:`check_model` -- an ``nn.Module``; :func:`check_class_scores` -- what it returned is ``[B, C]``.
* :func:`model_device` -- where a model's parameters live (the device images are moved to).
* :func:`check_images` -- ``[B, C, H, W]`` floats, with the channels and size the model takes.
* :func:`check_targets` -- class indices from an int, a list, a tensor or ``"predicted"``.
* :func:`check_positive_int`, :func:`check_positive_float`, :func:`check_seed`, :func:`check_fraction`,
  :func:`check_choice`.
* :func:`check_layer`, :func:`check_layers` -- dotted layer names; :func:`check_layer_list` -- a list
  of distinct layers, low to high where the model's ``stage_names`` tell the order.

Nothing here imports another xailib module, so every module (``xailib.layers`` included) can use it.
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Iterable, Sequence

import torch
from torch import nn

__all__ = [
    "PREDICTED",
    "check_model",
    "model_device",
    "check_class_scores",
    "check_images",
    "check_targets",
    "n_classes",
    "check_positive_int",
    "check_positive_float",
    "check_seed",
    "check_fraction",
    "check_choice",
    "check_methods",
    "check_layer",
    "check_layers",
    "model_stages",
    "check_layer_list",
    "unknown_layer_message",
    "check_input_range",
    "check_in_range",
]

#: The target that means "the class each image is predicted as".
PREDICTED = "predicted"


# --------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------


def check_model(model, what: str = "model") -> nn.Module:
    """``model`` if it is an ``nn.Module``; else ``TypeError`` saying what to pass."""
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"{what} must be a torch.nn.Module, got {type(model).__name__}; load one with "
            "xailib.models.load_model(name)."
        )
    return model


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (or buffer); the CPU for a model with neither."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def check_class_scores(out, n: int | None = None, what: str = "The model") -> torch.Tensor:
    """``out`` if it is a tensor of class scores ``[B, C]`` (``B = n`` when given); else ``ValueError``."""
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise ValueError(
            f"{what} must return class scores [B, C] (one row of logits per image); got "
            f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}. Wrap a model that "
            "returns a tuple or a dict so that forward() returns the logits tensor."
        )
    if n is not None and out.shape[0] != n:
        raise ValueError(f"{what} returned {out.shape[0]} rows of class scores for {n} images.")
    return out


def _input_shape(model: nn.Module | None) -> tuple[int, ...] | None:
    shape = getattr(model, "input_shape", None) if model is not None else None
    return tuple(int(s) for s in shape) if shape is not None else None


def check_images(
    images,
    model: nn.Module | None = None,
    *,
    one: bool = False,
    what: str = "images",
    move: bool = True,
) -> torch.Tensor:
    """Validate images ``[B, C, H, W]`` (floats, ``B >= 1``) and move them to the model's device.

    Parameters
    ----------
    images : Tensor ``[B, C, H, W]``, or ``[C, H, W]`` with ``one=True``
    model : nn.Module, optional
        When given, and it states ``input_shape = (C, H, W)``, the images must have ``C`` channels, and
        also that ``H, W`` where the model sets ``fixed_input_size = True`` (the zoo does; torchvision's
        models take any size). With ``move=True`` they are moved to :func:`model_device`.
    one : bool
        Explain one image: accept ``[C, H, W]`` and require ``B = 1``.
    what : str
        The argument's name in the error messages.

    Returns
    -------
    Tensor ``[B, C, H, W]``
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor [B, C, H, W] in [0, 1], got {type(images).__name__}.")
    if one and images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4 or not images.is_floating_point():
        raise ValueError(
            f"{what} must be a float tensor [B, C, H, W], got {tuple(images.shape)} {images.dtype}"
            + ("; add the batch dimension with x.unsqueeze(0)." if images.dim() == 3 else
               "; convert with x.float() / 255 for uint8 images." if not images.is_floating_point() else ".")
        )
    if images.shape[0] == 0:
        raise ValueError(f"{what} is an empty batch {tuple(images.shape)}; pass at least one image.")
    if one and images.shape[0] != 1:
        raise ValueError(
            f"{what} must hold one image [1, C, H, W] (this explains one image at a time), got a batch of "
            f"{images.shape[0]}: {tuple(images.shape)}. Pass image[i:i+1], or loop over images."
        )
    shape = _input_shape(model)
    fixed = bool(getattr(model, "fixed_input_size", False))
    if shape is not None and (images.shape[1] != shape[0] or (fixed and tuple(images.shape[1:]) != shape)):
        name = getattr(model, "name", type(model).__name__)
        took = f"[B, {', '.join(map(str, shape))}]" if fixed else f"[B, {shape[0]}, H, W]"
        raise ValueError(
            f"{name} takes images {took}" + (" (its training size)" if fixed else "") +
            f", got {tuple(images.shape)}; resize the images, fix the channel order ([B, C, H, W]) or load the "
            "model of their data set."
        )
    if model is not None and move:
        images = images.to(model_device(model))
    return images


# --------------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------------


def n_classes(model: nn.Module, images: torch.Tensor | None = None) -> int:
    """How many classes ``model`` scores: ``len(model.class_names)`` if it names them, else one forward."""
    names = getattr(model, "class_names", None)
    if names:
        return len(names)
    if images is None:
        raise ValueError(f"{type(model).__name__} does not name its classes; pass images to count its outputs.")
    from xailib.layers import model_state  # a model change, owned by xailib.layers

    with model_state(model, train=False), torch.no_grad():
        out = check_class_scores(model(images[:1].to(model_device(model))))
    return int(out.shape[1])


def _as_index_list(targets, what: str) -> list[int] | None:
    if isinstance(targets, bool):
        return None
    if isinstance(targets, numbers.Integral):
        return [int(targets)]
    if isinstance(targets, torch.Tensor):
        if targets.is_floating_point() or targets.dtype == torch.bool or targets.dim() > 1:
            return None
        return [int(t) for t in targets.reshape(-1).tolist()]
    if isinstance(targets, Sequence) and not isinstance(targets, str):
        if all(isinstance(t, numbers.Integral) and not isinstance(t, bool) for t in targets):
            return [int(t) for t in targets]
    return None


def check_targets(
    targets,
    n: int,
    *,
    model: nn.Module | None = None,
    images: torch.Tensor | None = None,
    classes: int | None = None,
    what: str = "target",
    allow_predicted: bool = True,
) -> torch.Tensor:
    """Class indices ``[n]`` (LongTensor on the CPU) from a user's target.

    Parameters
    ----------
    targets : int, sequence of int, integer tensor ``[]`` or ``[n]``, ``"predicted"`` or None
        One class for every image (an int), one per image, or ``"predicted"`` (``None`` means the same)
        for the class the model predicts for each image.
    n : int
        The number of images.
    model, images : optional
        Needed for ``"predicted"``; ``model`` also gives the number of classes to check against.
    classes : int, optional
        The number of classes, when known without a forward pass.

    Raises
    ------
    TypeError
        For a float, a bool, a string other than ``"predicted"``, or a mix of types.
    ValueError
        For a wrong count, or an index outside ``0..classes-1``.
    """
    if targets is None or (isinstance(targets, str) and targets == PREDICTED):
        if not allow_predicted:
            raise TypeError(f"{what} must be class indices here; 'predicted' is not accepted.")
        if model is None or images is None:
            raise ValueError(f"{what}='predicted' needs the model and the images to predict with.")
        from xailib.batching import predict

        return predict(model, images).cpu()
    idx = _as_index_list(targets, what)
    if idx is None:
        raise TypeError(
            f"{what} must be a class index (int), a list of B class indices, an integer tensor [B] or "
            f"'{PREDICTED}'; got {type(targets).__name__}"
            + (f" {tuple(targets.shape)} {targets.dtype}" if isinstance(targets, torch.Tensor) else "") + "."
        )
    if len(idx) == 1 and (isinstance(targets, numbers.Integral) or
                          (isinstance(targets, torch.Tensor) and targets.dim() == 0)):
        idx = idx * n
    if len(idx) != n:
        raise ValueError(f"Got {len(idx)} {what}s for a batch of {n} images; give one per image (or one int).")
    if classes is None and model is not None:
        classes = n_classes(model, images)
    if any(t < 0 for t in idx) or (classes is not None and any(t >= classes for t in idx)):
        bad = [t for t in idx if t < 0 or (classes is not None and t >= classes)]
        valid = f"the model's {classes} classes (0..{classes - 1})" if classes is not None else "0, 1, ..."
        raise ValueError(f"Class index {bad[0]} in {what} is outside {valid}; give class indices in that range "
                         f"(or '{PREDICTED}').")
    return torch.tensor(idx, dtype=torch.long)


# --------------------------------------------------------------------------------------------------
# Numbers and choices
# --------------------------------------------------------------------------------------------------


def check_positive_int(value, name: str, *, zero: bool = False, hint: str = "") -> int:
    """``value`` as an int if it is an integer ``> 0`` (``>= 0`` with ``zero=True``); bools are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < (0 if zero else 1):
        raise ValueError(f"{name} must be a {'non-negative' if zero else 'positive'} int{hint}, got {value!r}.")
    return int(value)


def check_positive_float(value, name: str, *, zero: bool = False, hint: str = "") -> float:
    """``value`` as a float if it is a finite real ``> 0`` (``>= 0`` with ``zero=True``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)) \
            or float(value) < 0 or (float(value) == 0 and not zero):
        raise ValueError(f"{name} must be a {'non-negative' if zero else 'positive'} finite number{hint}, "
                         f"got {value!r}.")
    return float(value)


def check_seed(seed, name: str = "seed", *, optional: bool = False) -> int | None:
    """``seed`` as an int (any sign; ``None`` too with ``optional=True``); bools and floats are refused.

    Raises
    ------
    TypeError
        For anything but an int (or None where allowed).
    """
    if seed is None and optional:
        return None
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"{name} must be an int{' or None' if optional else ''}, got {type(seed).__name__} "
                        f"{seed!r}; pass e.g. {name}=0.")
    return int(seed)


def check_fraction(value, name: str, *, low_open: bool = False, high_open: bool = False, hint: str = "") -> float:
    """``value`` as a float in ``[0, 1]`` (ends open as asked), else ``ValueError``."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))
    v = float(value) if ok else math.nan
    if not ok or v < 0 or v > 1 or (low_open and v == 0) or (high_open and v == 1):
        interval = f"{'(' if low_open else '['}0, 1{')' if high_open else ']'}"
        raise ValueError(f"{name} must be a number in {interval}{hint}, got {value!r}.")
    return v


def check_choice(value, choices: Sequence[str], name: str, *, upper: bool = False) -> str:
    """``value`` if it is one of ``choices`` (compared upper-cased with ``upper=True``)."""
    v = value.upper() if upper and isinstance(value, str) else value
    if not isinstance(v, str) or v not in choices:
        raise ValueError(f"Unknown {name} {value!r}; use one of {tuple(choices)}.")
    return v


def check_methods(methods, valid: Sequence[str], what: str = "method") -> list[str]:
    """One name or a list of names, each in ``valid``; a non-empty list."""
    methods = [methods] if isinstance(methods, str) else list(methods) if isinstance(methods, Iterable) else [methods]
    bad = [m for m in methods if m not in valid]
    if bad or not methods:
        raise ValueError(f"Unknown {what}(s) {bad or methods!r}; choose from {list(valid)}.")
    return methods


# --------------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------------


def _layer_names(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_modules() if name]


def unknown_layer_message(model: nn.Module, name: object) -> str:
    """The fix-it message for a layer that ``model`` does not have: close matches and the valid names."""
    names = _layer_names(model)
    close = difflib.get_close_matches(str(name), names, n=3) if isinstance(name, str) else []
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    article = "an" if type(name).__name__[0] in "aeiouAEIOU" else "a"
    kind = "" if isinstance(name, str) or not names else \
        f" ({article} {type(name).__name__}; layers are dotted strings such as {names[0]!r})"
    shown = ", ".join(names[:60]) + (f", ... ({len(names)} in all)" if len(names) > 60 else "")
    return (
        f"Invalid layer {name!r}{kind} for {type(model).__name__}.{hint} "
        f"Valid names (from xailib.layers.named_layers(model)): {shown}"
    )


def check_layer(model: nn.Module, name) -> str:
    """``name`` if ``model`` has a sub-module of that dotted name; else ``ValueError`` listing valid names.

    Anything but a string (an int, None, a module) gets the same fix-it error as an unknown name.
    """
    check_model(model)
    if not isinstance(name, str) or not name or name not in dict(model.named_modules()):
        raise ValueError(unknown_layer_message(model, name))
    return name


def check_layers(model: nn.Module, names) -> list[str]:
    """One dotted name or a list of them, each checked by :func:`check_layer`; returned as a list."""
    check_model(model)
    if isinstance(names, str):
        names = [names]
    elif isinstance(names, Iterable) and not isinstance(names, (bytes, nn.Module, torch.Tensor)):
        names = list(names)
    else:
        raise ValueError(unknown_layer_message(model, names))
    if not names:
        raise ValueError("Give at least one layer name; see xailib.layers.named_layers(model).")
    return [check_layer(model, n) for n in names]


def model_stages(model: nn.Module) -> list[str]:
    """``model.stage_names`` (the layers of its five stages, low -> high), or ``ValueError`` saying how to name them."""
    names = getattr(check_model(model), "stage_names", None)
    if not names:
        raise ValueError(
            f"{type(model).__name__} has no `stage_names`; pass layers=[...] explicitly: the last conv layer (or "
            "block) of each stage, low -> high, e.g. for torchvision's vgg16 ['features.3', 'features.8', "
            "'features.15', 'features.22', 'features.29'] (see xailib.layers.named_layers(model)), or load the "
            "model with xailib.models.load_model (zoo models, vgg*, resnet*, googlenet, alexnet)."
        )
    return list(names)


def check_layer_list(model: nn.Module, layers=None, *, default_last: int | None = None) -> list[str]:
    """The layers of a multi-layer method, low -> high.

    ``None`` = ``model.stage_names`` (its last ``default_last`` if given; a model without stages gets the
    error that says how to name them); a str = one layer. Raises ``ValueError`` for an unknown name
    (listing the valid ones), a repeated layer, or layers of ``model.stage_names`` out of order.
    """
    check_model(model)
    if layers is None:
        stages = model_stages(model)
        layers = stages[-default_last:] if default_last is not None else stages
    layers = check_layers(model, layers)
    if len(set(layers)) != len(layers):
        raise ValueError(f"layers must be distinct, got {layers}.")
    stages = list(getattr(model, "stage_names", None) or [])
    if stages and all(name in stages for name in layers):
        idx = [stages.index(name) for name in layers]
        if idx != sorted(idx):
            raise ValueError(f"layers must go low -> high (as in model.stage_names {stages}), got {layers}.")
    return layers


# --------------------------------------------------------------------------------------------------
# Input ranges
# --------------------------------------------------------------------------------------------------


def check_input_range(input_range) -> tuple[float, float]:
    """``(lo, hi)`` as floats if ``input_range`` is a pair of finite numbers with ``lo < hi``; else ``ValueError``."""
    ok = isinstance(input_range, Sequence) and not isinstance(input_range, str) and len(input_range) == 2 and all(
        isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v)) for v in input_range)
    if not ok or float(input_range[0]) >= float(input_range[1]):
        raise ValueError(f"input_range must be a pair (lo, hi) of finite numbers with lo < hi, the valid pixel values: "
                         f"e.g. (0, 1) for xailib's models or (-1, 1) for images normalised as in the AfI paper; "
                         f"got {input_range!r}.")
    return float(input_range[0]), float(input_range[1])


def check_in_range(images: torch.Tensor, lo: float, hi: float, what: str = "images") -> None:
    """``ValueError`` unless every value of ``images`` is finite and in ``[lo, hi]`` (the model's valid inputs)."""
    if not bool(torch.isfinite(images).all()):
        raise ValueError(f"{what} hold NaN or inf; pass finite images in input_range ({lo:g}, {hi:g}).")
    mn, mx = float(images.min()), float(images.max())
    if mn < lo or mx > hi:
        raise ValueError(
            f"{what} lie in [{mn:.4g}, {mx:.4g}], outside input_range=({lo:g}, {hi:g}). Pass images in that range "
            "(xailib's models take unnormalised images in [0, 1]; divide 0..255 images by 255), or pass the range "
            "your model's inputs live in with input_range=(lo, hi) (e.g. (-1, 1)).")
