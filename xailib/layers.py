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
* :func:`map_output` -- the same, letting the batch size change (one image's map -> ``n`` ablated copies).
* :class:`stop_after` -- end the forward pass right after a layer (the layers above are never run).
* :class:`leaf_at` -- replace a layer's output by a fresh leaf tensor, so no graph is built below it and
  gradients with respect to that layer are ``torch.autograd.grad(score, leaf)``.
* :class:`SavedBytes` -- count the bytes autograd saves for backward inside a block (chunk sizing).
* :func:`count_hooks` -- how many hooks are registered on a model (tests use it: zero after any call).

Validation of layer names lives in :mod:`xailib.checks` (:func:`~xailib.checks.check_layer`); it is
re-exported here as :func:`check_layers` for callers of the hooks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from xailib.checks import check_layer, check_layers, check_model

__all__ = [
    "named_layers",
    "get_layer",
    "check_layers",
    "model_state",
    "capture",
    "replace_output",
    "map_output",
    "stop_after",
    "leaf_at",
    "SavedBytes",
    "count_hooks",
]


def named_layers(model: nn.Module) -> dict[str, nn.Module]:
    """All sub-modules of ``model`` by dotted name (``"features.stage3.conv2"``), the root excluded."""
    check_model(model)
    return {name: module for name, module in model.named_modules() if name}


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """The sub-module of ``model`` with dotted name ``name``.

    Raises
    ------
    ValueError
        If no sub-module has that name, or ``name`` is not a string; the message lists the valid names
        (:func:`xailib.checks.check_layer`).
    """
    return dict(model.named_modules())[check_layer(model, name)]


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
        self.model = check_model(model)
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
            if self.detach:  # a copy: an in-place op after the layer (ReLU(inplace=True)) would overwrite a view
                self.outputs[name].append(output.detach().clone())
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


def map_output(model: nn.Module, layer: str, fn: Callable[[torch.Tensor], torch.Tensor]) -> replace_output:
    """Replace ``layer``'s output by ``fn(output)`` for a block, letting the batch size change.

    :class:`replace_output` with ``same_shape=False``: ``fn`` may map ``[1, ...]`` to ``[n, ...]`` (one
    image's activations to ``n`` ablated copies for the layers above). Its ``calls`` counts how often the
    layer ran (0 means the forward never reached it).
    """
    return replace_output(model, layer, fn, same_shape=False)


class StopForward(Exception):
    """Raised by :class:`stop_after` to end a forward pass once the needed layer has run."""


class stop_after:
    """End the forward pass right after ``layer`` has run, for the duration of a block.

    Wrap the model call in :meth:`run`; the layers after ``layer`` are then never computed. With
    ``layer=None`` nothing is changed. Hooks registered earlier on the same module (e.g. by
    :class:`capture`) run before the stop.

    Examples
    --------
    >>> with capture(model, "stage2", detach=True) as rec, stop_after(model, "stage2") as stop:
    ...     stop.run(x)
    """

    def __init__(self, model: nn.Module, layer: str | None):
        self.model = model
        self.module = None if layer is None else get_layer(model, layer)
        self._handle = None

    @staticmethod
    def _hook(module, inputs, output):
        raise StopForward

    def __enter__(self) -> stop_after:
        if self.module is not None:
            self._handle = self.module.register_forward_hook(self._hook)
        return self

    def run(self, *args, **kwargs):
        """``model(*args, **kwargs)``; returns its output, or ``None`` when stopped early."""
        try:
            return self.model(*args, **kwargs)
        except StopForward:
            return None

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


class leaf_at:
    """Replace ``layer``'s output by a fresh leaf tensor (optionally expanded to ``rows`` rows) for a block.

    Entering yields the list of leaves made, one per call of the layer (``[B, ...]``, or
    ``[rows, ...]`` when ``rows`` is given and the layer ran on one image). Downstream modules get a
    clone, so in-place operations after the layer leave the leaf intact; no graph is built below the
    layer.

    Examples
    --------
    >>> with leaf_at(model, "features.stage4") as leaves:
    ...     score = model(x)[0, 3]
    >>> g, = torch.autograd.grad(score, leaves[0])        # d score / d stage-4 features
    """

    def __init__(self, model: nn.Module, layer: str, rows: int | None = None):
        self.module = get_layer(model, layer)
        self.rows = rows
        self.leaves: list[torch.Tensor] = []
        self._handle = None

    def _hook(self, module, inputs, output):
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"{type(module).__name__} returns {type(output).__name__}, not a tensor; choose a "
                            "layer whose output is one tensor (a conv, a ReLU, a block).")
        src = output.detach()
        if self.rows is not None:
            src = src.expand(self.rows, *src.shape[1:])
        leaf = src.clone().requires_grad_(True)
        self.leaves.append(leaf)
        return leaf.clone()

    def __enter__(self) -> list[torch.Tensor]:
        self._handle = self.module.register_forward_hook(self._hook)
        return self.leaves

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


class SavedBytes:
    """Count the bytes autograd saves for backward (parameters excluded) inside a block.

    Attributes
    ----------
    bytes : int
        Bytes of the tensors saved for backward so far.

    Examples
    --------
    >>> with SavedBytes(model) as meter:
    ...     loss = model(x).sum()
    >>> meter.bytes
    """

    def __init__(self, model: nn.Module):
        self.param_ptrs = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self.bytes = 0
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def _pack(self, t: torch.Tensor):
        if t.untyped_storage().data_ptr() not in self.param_ptrs:
            self.bytes += t.numel() * t.element_size()
        return t

    def __enter__(self) -> SavedBytes:
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._ctx.__exit__(*exc)
