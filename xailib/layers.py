"""Layer access and hook discipline shared by every method in xailib.

Every temporary change to a model lives in a context manager that restores it in ``finally``
(the zennit pattern), and every hook is registered for one ``with`` block and removed on exit,
also when the block raises (the captum pattern).

* :func:`named_layers`, :func:`get_layer` -- dotted layer names, with errors that list valid names.
* :class:`model_state` -- train/eval mode and ``requires_grad`` flags set for a block, then restored.
* :class:`capture` -- records the outputs of named layers with forward hooks, and their gradients
  with *tensor* hooks. The hook hands the rest of the network a clone of the output, so that an
  in-place ReLU after the layer cannot overwrite the recorded tensor, while gradients still flow
  through the recorded tensor. Reused modules are recorded once per call.
* :class:`replace_output` -- substitutes a layer's output by ``fn(output)`` for a block (ablations).
* :func:`count_hooks` -- how many hooks are registered on a model (tests use it: zero after any call).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

__all__ = [
    "named_layers",
    "get_layer",
    "check_layers",
    "model_state",
    "capture",
    "replace_output",
    "count_hooks",
]


def named_layers(model: nn.Module) -> dict[str, nn.Module]:
    """All sub-modules of ``model`` by dotted name (``"features.stage3.conv2"``), the root excluded."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    return {name: module for name, module in model.named_modules() if name}


def _unknown_layer_message(model: nn.Module, name: object) -> str:
    names = list(named_layers(model))
    close = difflib.get_close_matches(str(name), names, n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    shown = ", ".join(names[:60]) + (f", ... ({len(names)} in all)" if len(names) > 60 else "")
    return (
        f"Invalid layer {name!r} for {type(model).__name__}.{hint} "
        f"Valid names (from xailib.layers.named_layers(model)): {shown}"
    )


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """The sub-module of ``model`` with dotted name ``name``.

    Raises
    ------
    ValueError
        If no sub-module has that name; the message lists the valid names.
    """
    if not isinstance(name, str):
        raise TypeError(f"Layer names are dotted strings such as 'features.stage1', got {name!r}.")
    layers = named_layers(model)
    if name not in layers:
        raise ValueError(_unknown_layer_message(model, name))
    return layers[name]


def check_layers(model: nn.Module, names: str | Iterable[str]) -> list[str]:
    """Validate one name or a list of names; return them as a list (raises like :func:`get_layer`)."""
    names = [names] if isinstance(names, str) else list(names)
    if not names:
        raise ValueError("Give at least one layer name; see xailib.layers.named_layers(model).")
    for n in names:
        get_layer(model, n)
    return names


def count_hooks(model: nn.Module) -> int:
    """Number of forward, forward-pre and backward hooks registered on ``model`` and its sub-modules."""
    total = 0
    for module in model.modules():
        total += len(module._forward_hooks) + len(module._forward_pre_hooks)
        total += len(module._backward_hooks) + len(getattr(module, "_backward_pre_hooks", {}))
    return total


class model_state:
    """Set train/eval mode and parameter ``requires_grad`` flags for a block; restore them on exit.

    Parameters
    ----------
    model : nn.Module
    train : bool or None
        ``False`` puts every module in eval mode (BatchNorm statistics are then left untouched),
        ``True`` in train mode, ``None`` leaves modes as they are.
    requires_grad : bool or None
        Set every parameter's ``requires_grad`` flag for the block; ``None`` leaves them.

    Examples
    --------
    >>> with model_state(model, train=False, requires_grad=False):
    ...     logits = model(x)
    """

    def __init__(self, model: nn.Module, train: bool | None = False, requires_grad: bool | None = None):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
        self.model = model
        self.train = train
        self.requires_grad = requires_grad
        self._modes: list[tuple[nn.Module, bool]] = []
        self._flags: list[tuple[nn.Parameter, bool]] = []

    def __enter__(self) -> nn.Module:
        self._modes = [(m, m.training) for m in self.model.modules()]
        self._flags = [(p, p.requires_grad) for p in self.model.parameters()]
        try:
            if self.train is not None:
                self.model.train(self.train)
            if self.requires_grad is not None:
                for p, _ in self._flags:
                    p.requires_grad_(self.requires_grad)
        except BaseException:
            self._restore()
            raise
        return self.model

    def _restore(self) -> None:
        for m, mode in self._modes:
            m.training = mode
        for p, flag in self._flags:
            p.requires_grad_(flag)

    def __exit__(self, *exc) -> None:
        self._restore()  # errors propagate: we never return True


class capture:
    """Record the outputs of named layers during forward passes, and their gradients during backward.

    Inside the block, each forward call of a named layer appends its output ``[B, ...]`` to
    ``outputs[name]``. The network downstream receives ``output.clone()``, so in-place operations
    after the layer (``ReLU(inplace=True)``, ``out += identity``) leave the record intact; gradients
    still reach the recorded tensor through the clone, so ``torch.autograd.grad(score, rec[name])``
    is the gradient of ``score`` with respect to the layer's output.

    With ``grads=True``, a tensor hook on each recorded output stores the gradient that flows into
    it during ``backward()`` in ``gradients[name]``.

    Parameters
    ----------
    model : nn.Module
    layers : str or sequence of str
        Dotted layer names (see :func:`named_layers`).
    grads : bool
        Also record gradients with tensor hooks.
    detach : bool
        Store detached outputs (use when no gradient is wanted; saves memory).

    Examples
    --------
    >>> with capture(model, "features.stage5") as rec:
    ...     logits = model(x)
    ...     g, = torch.autograd.grad(logits[:, 3].sum(), rec["features.stage5"])
    """

    def __init__(self, model: nn.Module, layers: str | Sequence[str], grads: bool = False, detach: bool = False):
        self.model = model
        self.layers = check_layers(model, layers)
        self.grads = grads
        self.detach = detach
        self.outputs: dict[str, list[torch.Tensor]] = {n: [] for n in self.layers}
        self.gradients: dict[str, list[torch.Tensor]] = {n: [] for n in self.layers}
        self._handles: list = []

    def _make_hook(self, name: str) -> Callable:
        def hook(module: nn.Module, inputs, output):
            if not isinstance(output, torch.Tensor):
                raise TypeError(
                    f"Layer {name!r} ({type(module).__name__}) returns {type(output).__name__}, not a tensor; "
                    "choose a layer whose output is a single tensor (e.g. a conv, a ReLU or a stage block)."
                )
            if self.detach:
                self.outputs[name].append(output.detach())
                return None
            self.outputs[name].append(output)
            if self.grads and output.requires_grad:
                self._handles.append(output.register_hook(self._make_grad_hook(name)))
            return output.clone()

        return hook

    def _make_grad_hook(self, name: str) -> Callable:
        def grad_hook(grad: torch.Tensor):
            self.gradients[name].append(grad)

        return grad_hook

    def __enter__(self) -> capture:
        try:
            for n in self.layers:
                self._handles.append(get_layer(self.model, n).register_forward_hook(self._make_hook(n)))
        except BaseException:
            self.remove()
            raise
        return self

    def remove(self) -> None:
        """Remove every hook this object registered (idempotent)."""
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def __exit__(self, *exc) -> None:
        self.remove()

    def _single(self, store: dict[str, list[torch.Tensor]], name: str, what: str) -> torch.Tensor:
        if name not in store:
            raise KeyError(f"Layer {name!r} was not captured; captured layers: {self.layers}.")
        items = store[name]
        if len(items) == 1:
            return items[0]
        if not items:
            raise RuntimeError(
                f"No {what} was recorded for layer {name!r}: run a forward pass"
                + (" and backward()" if what == "gradient" else "")
                + " inside the `with capture(...)` block."
            )
        raise RuntimeError(
            f"Layer {name!r} was called {len(items)} times (a reused module); "
            f"use rec.{'outputs' if what == 'output' else 'gradients'}[{name!r}] for the list."
        )

    def __getitem__(self, name: str) -> torch.Tensor:
        """The output of layer ``name`` (the only call of it)."""
        return self._single(self.outputs, name, "output")

    def grad(self, name: str) -> torch.Tensor:
        """The gradient recorded for layer ``name`` (needs ``grads=True`` and a backward pass)."""
        return self._single(self.gradients, name, "gradient")


class replace_output:
    """Replace a layer's output by ``fn(output)`` for the duration of a block.

    Parameters
    ----------
    model : nn.Module
    layer : str
        Dotted layer name.
    fn : callable
        Maps the layer output ``[B, ...]`` to a tensor of the same shape.
    same_shape : bool
        Check that ``fn`` keeps the shape (default). ``False`` lets the batch grow, e.g. one image's
        activations ``[1, K, h, w]`` expanded into ``[K, K, h, w]`` ablated copies for the layers above.

    Attributes
    ----------
    calls : int
        How often the layer ran inside the block (0: the forward pass never reached it).

    Examples
    --------
    >>> zero_ch3 = lambda a: a * (torch.arange(a.shape[1]) != 3).view(1, -1, 1, 1)
    >>> with replace_output(model, "features.stage4", zero_ch3):
    ...     logits = model(x)
    """

    def __init__(
        self, model: nn.Module, layer: str, fn: Callable[[torch.Tensor], torch.Tensor], same_shape: bool = True
    ):
        self.module = get_layer(model, layer)
        self.layer = layer
        if not callable(fn):
            raise TypeError("fn must be callable: it maps the layer's output tensor to a new tensor.")
        self.fn = fn
        self.same_shape = same_shape
        self.calls = 0
        self._handle = None

    def _hook(self, module, inputs, output):
        self.calls += 1
        new = self.fn(output)
        if not isinstance(new, torch.Tensor):
            raise TypeError(f"replace_output({self.layer!r}): fn must return a tensor, got {type(new).__name__}.")
        if self.same_shape and new.shape != output.shape:
            raise ValueError(
                f"replace_output({self.layer!r}): fn must return a tensor of shape {tuple(output.shape)}, "
                f"got {getattr(new, 'shape', type(new).__name__)}."
            )
        return new

    def __enter__(self) -> replace_output:
        self._handle = self.module.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
