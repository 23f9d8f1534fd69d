"""One registry of attribution methods by name, and one call shape for all of them.

A method is registered under a name and a *kind*:

* ``"map"`` -- an input-space map per image: the method returns ``[B, C, H, W]`` (``C`` the input's
  colour channels, or 1 for a CAM), and :func:`attribute` reduces it over ``C`` to ``[B, H, W]``;
* ``"channel"`` -- a score per channel of a layer ``[B, K]`` for each image's target class;
* ``"concept"`` -- a score per concept ``[B, P]`` (the ``P`` concept sets passed as an option) for each
  image's target class; global methods (AfI, TCAV) give every image of a class its class's scores.

A method that needs a fitted object (a MACE unit, a distilled explainer) or concept sets names those options
in ``requires``; :func:`attribute` refuses a call without them, with the method's own hint on how to get them.

Every method is called the same way (captum's shape)::

    attribute(model, images, target, method="Gradient")                      # [B, H, W]
    attribute(model, images, target, method="Conductance", layer="features.stage4")   # [B, K]

The methods of the library's method folders register themselves when their package is imported;
:data:`METHOD_PACKAGES` lists those packages, and a name not found is looked up again after
importing them (once), so that ``method="gAP"`` works without importing :mod:`xailib.gap` first.
This module never imports a method folder at module level (a method folder imports from the floor,
never the reverse).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from xailib.checks import check_images, check_layer, check_model, check_targets

__all__ = [
    "KINDS",
    "REDUCTIONS",
    "METHOD_PACKAGES",
    "Method",
    "register",
    "available",
    "get_method",
    "method_options",
    "attribute",
    "reduce_maps",
    "check_options",
    "split_options",
    "resolve_layer",
    "run_method",
]

#: The kinds of method: input-space maps, per-channel scores of a layer, per-concept scores.
KINDS: tuple[str, ...] = ("map", "channel", "concept")
#: How :func:`attribute` reduces a map over its colour channels: ``sum_c |a_c|``, ``sum_c a_c``, or not at all.
REDUCTIONS: tuple = ("abs", "signed", None)
#: Packages whose import registers more methods (looked up once, on the first name not found).
METHOD_PACKAGES: tuple[str, ...] = ("xailib.gap", "xailib.baselines.tcav", "xailib.afi.registry", "xailib.mace.registry",
                                     "xailib.explainer.registry")
#: Whether a method of each kind takes a layer: never, optionally (with a default), or always.
LAYER_USES: tuple[str, ...] = ("none", "optional", "required")

_UNSET = object()


@dataclass(frozen=True)
class Method:
    """A registered attribution method.

    Attributes
    ----------
    name : str
    kind : {"map", "channel"}
    fn : callable
        ``fn(model, images, targets, layer, **options)`` with ``images: [B, C, H, W]`` (validated, on any
        device), ``targets: LongTensor [B]`` (validated class indices, on the CPU) and ``layer`` a valid
        dotted name or None. Returns ``[B, C', H, W]`` for a map method, ``[B, K]`` for a channel method,
        on the CPU. It must leave the model as it found it (state dict, modes, flags, no hook).
    layer : {"none", "optional", "required"}
        Whether it takes a layer.
    default_layer : callable or None
        ``default_layer(model) -> str`` for ``layer="optional"``: the layer used when none is given (it
        may raise a ``ValueError`` that says how to choose one).
    options : tuple of str
        The keyword options ``fn`` accepts (read from its signature).
    summary : str
        The first line of ``fn``'s docstring.
    requires : tuple of str
        Options a call must give (a fitted unit, concept sets): their defaults are placeholders.
    hint : str
        How to get what ``requires`` names (shown when it is missing).
    """

    name: str
    kind: str
    fn: Callable
    layer: str
    default_layer: Callable | None
    options: tuple[str, ...]
    summary: str
    requires: tuple[str, ...] = ()
    hint: str = ""


_REGISTRY: dict[str, dict[str, Method]] = {kind: {} for kind in KINDS}
_packages_loaded = False


def _check_kind(kind) -> str:
    if kind not in KINDS:
        raise ValueError(f"Unknown kind {kind!r}; use one of {KINDS} ('map': input-space maps [B, H, W], "
                         "'channel': per-channel scores [B, K] of a layer, 'concept': per-concept scores [B, P]).")
    return kind


def _keyword_options(fn: Callable) -> tuple[str, ...]:
    params = list(inspect.signature(fn).parameters.values())
    if len(params) < 4 or any(p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params[:4]):
        raise TypeError(f"A method must be fn(model, images, targets, layer, **options); {fn!r} takes "
                        f"{[p.name for p in params]}.")
    if any(p.kind == p.VAR_KEYWORD for p in params):
        raise TypeError(f"{fn!r} takes **kwargs; name every option as a keyword parameter with a default, so that "
                        "a misspelt option gets an error instead of being ignored.")
    opts = [p for p in params[4:] if p.kind != p.VAR_POSITIONAL]
    missing = [p.name for p in opts if p.default is inspect.Parameter.empty]
    if missing:
        raise TypeError(f"Options of {fn!r} need defaults; {missing} have none.")
    return tuple(p.name for p in opts)


def register(
    name: str,
    fn: Callable,
    kind: str,
    *,
    layer: str | None = None,
    default_layer: Callable[[nn.Module], str] | None = None,
    replace: bool = False,
    requires: tuple[str, ...] = (),
    hint: str = "",
) -> Method:
    """Register ``fn`` as method ``name`` of ``kind``; returns its :class:`Method`.

    Parameters
    ----------
    name : str
        The name callers pass as ``method=``. The same name may be registered once per kind.
    fn : callable
        ``fn(model, images, targets, layer, **options)``; see :class:`Method`. Every option must be a
        keyword parameter with a default.
    kind : {"map", "channel", "concept"}
    layer : {"none", "optional", "required"}, optional
        Default: ``"required"`` for a channel method, ``"none"`` for a map method;
        ``"optional"`` needs ``default_layer``.
    default_layer : callable, optional
        ``default_layer(model) -> str``, the layer of an ``"optional"`` method when none is given.
    replace : bool
        Replace a method already registered under ``name`` and ``kind`` (otherwise that is an error).
    requires : tuple of str
        Options every call must pass (e.g. ``("mace", "point")``); ``hint`` says how to get them.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty str, got {name!r}.")
    if not callable(fn):
        raise TypeError(f"fn must be callable fn(model, images, targets, layer, **options), got {type(fn).__name__}.")
    _check_kind(kind)
    layer = layer if layer is not None else ("required" if kind == "channel" else "none")
    if layer not in LAYER_USES:
        raise ValueError(f"layer must be one of {LAYER_USES}, got {layer!r}.")
    if kind == "channel" and layer != "required":
        raise ValueError("A channel method scores the channels of a layer: register it with layer='required'.")
    if (layer == "optional") != (default_layer is not None):
        raise ValueError("Give default_layer(model) -> str exactly when layer='optional'.")
    if name in _REGISTRY[kind] and not replace:
        raise ValueError(f"A {kind} method {name!r} is registered already ({_REGISTRY[kind][name].fn!r}); pass "
                         "replace=True to replace it.")
    doc = inspect.getdoc(fn) or ""
    options = _keyword_options(fn)
    requires = tuple(requires)
    unknown = [r for r in requires if r not in options]
    if unknown:
        raise ValueError(f"requires names {unknown}, which are not options of {fn!r} (its options: {list(options)}).")
    method = Method(name, kind, fn, layer, default_layer, options, doc.split("\n")[0], requires, str(hint))
    _REGISTRY[kind][name] = method
    return method


def _load_method_packages() -> None:
    """Import :data:`METHOD_PACKAGES` once (they register their methods when imported)."""
    global _packages_loaded
    if _packages_loaded:
        return
    for package in METHOD_PACKAGES:
        importlib.import_module(package)  # an import error propagates (and the next look-up tries again)
    _packages_loaded = True


def available(kind: str | None = None) -> tuple[str, ...]:
    """Names of the registered methods of ``kind`` (``None``: of any kind), in registration order.

    The method packages (:data:`METHOD_PACKAGES`) are imported first, so the list is complete.
    """
    _load_method_packages()
    if kind is not None:
        return tuple(_REGISTRY[_check_kind(kind)])
    return tuple(dict.fromkeys(n for k in KINDS for n in _REGISTRY[k]))


def _registered() -> str:
    listing = "; ".join(f"{k} methods: {list(_REGISTRY[k])}" for k in KINDS)
    return f"Registered {listing}. Add one with xailib.baselines.register()."


def _unknown_message(name, kind: str | None) -> str:
    what = f"{kind} method" if kind else "method"
    extra = ""
    if kind is not None and isinstance(name, str):
        other = [k for k in KINDS if k != kind and name in _REGISTRY[k]]
        if other:
            extra = f" {name!r} is a {other[0]} method" + (" (pass layer=... for channel scores)."
                                                            if other[0] == "channel" else ".")
    return f"Unknown {what} {name!r}.{extra} {_registered()}"


def get_method(name: str, kind: str | None = None, *, layer_given: bool = False) -> Method:
    """The :class:`Method` registered as ``name``.

    With ``kind=None`` the kind is the only one ``name`` is registered for; a name registered for both
    kinds (gAP, LRP) is the channel method when a layer is given, the map method otherwise.

    Raises
    ------
    ValueError
        For a name not registered (for that kind); the message lists the registered names per kind.
    """
    if kind is not None:
        _check_kind(kind)
    if not isinstance(name, str) or not any(name in _REGISTRY[k] for k in KINDS):
        _load_method_packages()
    if not isinstance(name, str):
        raise TypeError(f"method must be a method name (str), got {type(name).__name__}. {_registered()}")
    kinds = [k for k in KINDS if name in _REGISTRY[k]] if kind is None else [kind] * (name in _REGISTRY[kind])
    if not kinds:
        raise ValueError(_unknown_message(name, kind))
    if len(kinds) > 1:
        kinds = ["channel" if layer_given else "map"]
    return _REGISTRY[kinds[0]][name]


def method_options(name: str, kind: str | None = None) -> tuple[str, ...]:
    """The keyword options that method ``name`` (of ``kind``) accepts in :func:`attribute`."""
    return get_method(name, kind).options


def reduce_maps(attributions: torch.Tensor, reduce: str | None = "abs") -> torch.Tensor:
    """Colour channels -> one map per image: ``[B, C, H, W] -> [B, H, W]``.

    ``reduce="abs"``: ``sum_c |a_c|``; ``"signed"``: ``sum_c a_c`` (Adebayo et al. compare maps both ways);
    ``None``: ``attributions`` unchanged.
    """
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS} ('abs': sum_c |a_c|, 'signed': sum_c a_c, None: the "
                         f"raw [B, C, H, W]), got {reduce!r}.")
    if not isinstance(attributions, torch.Tensor) or attributions.dim() != 4:
        raise ValueError(f"attributions must be a tensor [B, C, H, W], got {getattr(attributions, 'shape', None)}.")
    if reduce is None:
        return attributions
    return (attributions.abs() if reduce == "abs" else attributions).sum(1)


def check_options(method: Method, options: dict) -> dict:
    """``options`` if ``method`` accepts every one of them; else ``TypeError`` listing what it accepts."""
    bad = [k for k in options if k not in method.options]
    if bad:
        raise TypeError(f"The {method.kind} method {method.name!r} takes no option {', '.join(map(repr, bad))}; its "
                        f"options are {list(method.options)}.")
    return options


def check_required(method: Method, options: dict) -> dict:
    """``options`` if it gives every option ``method`` requires (not None); else ``ValueError`` with the hint."""
    missing = [k for k in method.requires if options.get(k) is None]
    if missing:
        raise ValueError(f"The {method.kind} method {method.name!r} needs {', '.join(f'{k}=...' for k in missing)}"
                         + (f": {method.hint}" if method.hint else "."))
    return options


def split_options(methods, kind: str, options: dict) -> dict[str, dict]:
    """The options each of several methods of ``kind`` takes, from one dict of options.

    An option goes to every listed method that takes it; an option that no *registered* method of ``kind``
    takes is a ``TypeError`` (a misspelt name), one that only unlisted methods take is left unused.

    Returns
    -------
    dict
        ``{method name: {option: value}}``.
    """
    entries = {m: get_method(m, kind) for m in methods}
    known = {o for name in available(kind) for o in get_method(name, kind).options}
    bad = [k for k in options if k not in known]
    if bad:
        raise TypeError(f"No {kind} method takes the option(s) {bad}; options of the {kind} methods: {sorted(known)}.")
    return {m: check_options(e, {k: v for k, v in options.items() if k in e.options}) for m, e in entries.items()}


def resolve_layer(method: Method, model: nn.Module, layer) -> str | None:
    """The layer ``method`` runs at: ``layer`` checked, its default, or ``None`` for a method without one."""
    if method.layer == "none":
        if layer is not None:
            raise ValueError(f"The map method {method.name!r} explains the input and takes no layer; drop "
                             f"layer={layer!r}" + (f" (for channel scores of a layer use one of "
                                                   f"{list(_REGISTRY['channel'])})." if _REGISTRY["channel"] else "."))
        return None
    if layer is None:
        if method.layer == "required":
            stages = getattr(model, "stage_names", None)
            eg = f", e.g. one of model.stage_names {list(stages)}" if stages else \
                " (a conv layer or block; see xailib.layers.named_layers(model))"
            raise ValueError(f"The {method.kind} method {method.name!r} needs a layer: pass layer='...'{eg}.")
        layer = method.default_layer(model)
    return check_layer(model, layer)


def run_method(method: Method, model: nn.Module, images: torch.Tensor, targets: torch.Tensor, layer: str | None,
               options: dict) -> torch.Tensor:
    """Call ``method`` on checked arguments and check the shape of what it returns (no reduction)."""
    out = method.fn(model, images, targets, layer, **options)
    b = images.shape[0]
    if not isinstance(out, torch.Tensor) or out.dim() < 1 or out.shape[0] != b or \
            out.dim() != (4 if method.kind == "map" else 2) or (
            method.kind == "map" and tuple(out.shape[2:]) != tuple(images.shape[2:])):
        want = f"[{b}, C, {images.shape[2]}, {images.shape[3]}]" if method.kind == "map" else \
            f"[{b}, {'P' if method.kind == 'concept' else 'K'}]"
        raise RuntimeError(f"The {method.kind} method {method.name!r} returned "
                           f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}, not {want}; "
                           "fix the function registered for it.")
    return out


def attribute(
    model: nn.Module,
    images: torch.Tensor,
    target="predicted",
    method: str | None = None,
    layer: str | None = None,
    *,
    kind: str | None = None,
    reduce=_UNSET,
    **options,
) -> torch.Tensor:
    """Attributions of one registered method for a batch of images: one call shape for every method.

    Parameters
    ----------
    model : nn.Module
        Any CNN classifier returning class scores ``[B, classes]``. Runs in eval mode for the call; its
        state dict, modes and ``requires_grad`` flags are unchanged afterwards and no hook is left on it.
    images : Tensor ``[B, C, H, W]``
        In the model's input format (the zoo takes [0, 1] images); on any device.
    target : int, sequence of int, LongTensor ``[B]``, ``"predicted"`` or None
        The class explained in each image; ``"predicted"`` (or ``None``) = the model's prediction.
    method : str
        A registered name, see :func:`available`. Map methods: ``Gradient``, ``SmoothGrad``,
        ``IntegratedGradients``, ``GuidedBackprop``, ``GradCAM``, ``GradCAM++``, ``ExcitationBackprop``,
        ``LRP``, ``gAP``. Channel methods: ``Conductance``, ``InternalInfluence``, ``LRP``, ``Random``,
        ``gAP``.
    layer : str, optional
        Dotted layer name. Required by channel methods (the layer whose channels are scored); optional
        for the CAMs (default: the model's last stage, ``model.stage_names[-1]``); refused by the others.
    kind : {"map", "channel", "concept"}, optional
        Only needed for a name registered for both kinds when the default is not wanted: by default a
        name of both kinds gives channel scores when ``layer`` is given and a map otherwise.
    reduce : {"abs", "signed", None}
        Map methods only: ``"abs"`` (default) ``sum_c |a_c|``, ``"signed"`` ``sum_c a_c``, ``None`` the raw
        ``[B, C, H, W]``.
    **options
        The method's own options (see :func:`method_options`), e.g. ``batch_size``, ``sg_samples``,
        ``ig_steps``, ``n_steps``, ``seed``, ``top_n``. An option the method does not take is an error, and so
        is a call without an option the method requires (``Method.requires``: MACE's unit, the explainer, the
        concept sets of a concept method).

    Returns
    -------
    Tensor on the CPU
        ``[B, H, W]`` for a map method (``[B, C, H, W]`` with ``reduce=None``); ``[B, K]`` for a channel
        method (``K`` channels of ``layer``, higher = more important for the target); ``[B, P]`` for a concept
        method (the ``P`` concept sets, each image's target class).

    Examples
    --------
    >>> maps = attribute(model, x, "predicted", method="IntegratedGradients", ig_steps=32)     # [B, H, W]
    >>> cam = attribute(model, x, 3, method="GradCAM")                                         # last stage
    >>> scores = attribute(model, x, y, method="gAP", layer="features.stage4")                 # [B, K]
    """
    check_model(model)
    if method is None:
        _load_method_packages()
        raise ValueError(f"Pass method='...', the name of a registered method. {_registered()}")
    entry = get_method(method, kind, layer_given=layer is not None)
    if entry.kind == "map":
        reduce = "abs" if reduce is _UNSET else reduce
        if reduce not in REDUCTIONS:
            raise ValueError(f"reduce must be one of {REDUCTIONS} ('abs': sum_c |a_c|, 'signed': sum_c a_c, None: "
                             f"the raw [B, C, H, W]), got {reduce!r}.")
    elif reduce is not _UNSET:
        raise ValueError(f"reduce applies to map methods; the channel method {entry.name!r} returns scores [B, K]. "
                         "Drop reduce=.")
    check_options(entry, options)
    check_required(entry, options)
    images = check_images(images, model, move=False)
    layer = resolve_layer(entry, model, layer)
    targets = check_targets(target, images.shape[0], model=model, images=images)
    out = run_method(entry, model, images, targets, layer, options)
    return reduce_maps(out, reduce) if entry.kind == "map" else out
