"""Guided Backpropagation of single neurons, as the gAP paper uses it to show what a channel's peak detects (Fig. 4).

    "Using Guided Backpropagation [30], we visualize the most contributing feature by generating sharp
    visualizations, which highlight the associated input."  (Sec. 3.1, Fig. 4 bottom row)

Guided Backpropagation (Springenberg et al., 2015) is the input gradient of one neuron
``F^l_{k,y,x}`` in which every ReLU passes back only positive gradients, and only where its output is
positive::

    ReLU forward:   o = max(i, 0)
    guided backward: dL/di = [o > 0] * max(dL/do, 0)

How: :class:`guided_relus` is a context manager (a :class:`torch.overrides.TorchFunctionMode`) that,
for the duration of a block, computes every ``relu`` call -- ``nn.ReLU`` modules, ``F.relu``,
``torch.relu``, ``Tensor.relu`` and their in-place forms -- with an autograd function whose backward
is the guided rule. No module is changed and no hook is registered, so in-place ReLUs (the zoo's
``ReLU(inplace=True)``, torchvision GoogLeNet's ``F.relu(x, inplace=True)``) and residual ``out += x``
work as in the plain forward pass. Other nonlinearities (``relu6``, ``clamp``) keep their gradients.
On models whose ReLUs are all ``nn.ReLU`` modules the result equals captum's ``NeuronGuidedBackprop``
(checked in ``tests/gap/test_explorer.py``); captum hooks ``nn.ReLU`` modules only, so it misses
functional ReLUs, which this mode also catches.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from xailib.checks import check_class_scores, check_images, check_layers, check_model
from xailib.layers import capture, model_state, stop_after
from xailib.gap.gradients import select_decisions
from xailib.gap.module import parse_targets

__all__ = ["guided_relus", "guided_backprop", "guided_to_rgb"]


class _GuidedReLU(torch.autograd.Function):
    """``o = max(i, 0)``; backward ``[o > 0] * max(g, 0)`` (Springenberg et al., Eq. in Fig. 1 of [30])."""

    @staticmethod
    def forward(ctx, i):
        o = i.clamp(min=0)
        ctx.save_for_backward(o)
        return o

    @staticmethod
    def backward(ctx, g):
        (o,) = ctx.saved_tensors
        return g.clamp(min=0) * (o > 0).to(g.dtype)


class _GuidedReLUInplace(torch.autograd.Function):
    """In-place form of :class:`_GuidedReLU` (``relu_``, ``inplace=True``): the input tensor is overwritten."""

    @staticmethod
    def forward(ctx, i):
        i.clamp_(min=0)
        ctx.mark_dirty(i)
        ctx.save_for_backward(i)
        return i

    @staticmethod
    def backward(ctx, g):
        (o,) = ctx.saved_tensors
        return g.clamp(min=0) * (o > 0).to(g.dtype)


_OUT_OF_PLACE = {F.relu, torch.relu, torch.Tensor.relu}
_IN_PLACE = {torch.relu_, torch.Tensor.relu_}


class guided_relus(TorchFunctionMode):
    """Within the block, every ReLU back-propagates by the Guided Backpropagation rule.

    Nothing on the model changes: the mode intercepts ``relu`` calls (from ``nn.ReLU``, ``F.relu``,
    ``torch.relu``, ``Tensor.relu`` and the in-place forms) and computes them with the same values and
    the guided backward. Leaving the block restores plain autograd; graphs built inside keep the guided
    rule.

    Examples
    --------
    >>> with guided_relus():
    ...     g, = torch.autograd.grad(model(x)[0, 3], x)
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _OUT_OF_PLACE or func in _IN_PLACE:
            x = args[0] if args else kwargs["input"]
            inplace = func in _IN_PLACE or bool(kwargs.get("inplace", args[1] if len(args) > 1 else False))
            if isinstance(x, torch.Tensor) and x.is_floating_point():
                return _GuidedReLUInplace.apply(x) if inplace else _GuidedReLU.apply(x)
        return func(*args, **kwargs)


def guided_backprop(model: nn.Module, image: torch.Tensor, targets) -> torch.Tensor:
    """Guided Backpropagation of ``D`` decisions of one image onto the input (Fig. 4, bottom row).

    Parameters
    ----------
    model : nn.Module
        Runs in eval mode for the call (BatchNorm statistics untouched); modes and ``requires_grad``
        flags are restored afterwards.
    image : Tensor ``[1, C, H, W]`` (or ``[C, H, W]``)
    targets : int, Neuron, or sequence of them
        Class scores (before softmax) or neurons ``F^l_{k,y,x}`` (:class:`xailib.gap.Neuron`, all of one
        layer), e.g. the peaks (Eq. 5) of the top channels of a gAP decomposition. One decision gives
        ``D = 1``.

    Returns
    -------
    Tensor ``[D, C, H, W]``
        ``d F / d I`` with guided ReLUs, one row per decision (signed; see :func:`guided_to_rgb`).

    Notes
    -----
    All ``D`` decisions are back-propagated together: the image is repeated ``D`` times and the forward
    stops right after the neurons' layer. With the model in eval mode the rows do not interact.
    """
    check_model(model)
    image = check_images(image, model, one=True, what="image")
    if not isinstance(targets, (Sequence, torch.Tensor)) or isinstance(targets, str):
        targets = [targets]
    targets = list(targets)
    if not targets:
        raise ValueError("Give at least one target: a class index or a Neuron(layer, channel, y, x).")
    upper, channels, positions = parse_targets(targets, len(targets))
    if upper is not None:
        check_layers(model, upper)
    with model_state(model, train=False, requires_grad=False), torch.enable_grad(), guided_relus():
        x = image.detach().expand(len(targets), *image.shape[1:]).clone().requires_grad_(True)
        if upper is None:
            out = model(x)
            check_class_scores(out)
        else:
            with capture(model, upper) as rec, stop_after(model, upper) as stop:
                stop.run(x)
            out = rec[upper]
        scores = select_decisions(out, channels, positions, upper)
        if not scores.requires_grad:
            raise ValueError(f"The decision {'class score' if upper is None else upper!r} does not depend on the "
                             "input image (no gradient path).")
        (grad,) = torch.autograd.grad(scores.sum(), x)
    return grad.detach()


def guided_to_rgb(grad: torch.Tensor) -> np.ndarray:
    """A guided-backprop gradient ``[C, H, W]`` as an image ``[H, W, 3]`` in [0, 1] for display.

    Grey (0.5) is zero; each map is scaled by its largest absolute value, so ``0.5 +/- 0.5`` spans the
    gradient's range (colour channels kept; a one-channel gradient is shown in grey levels).
    """
    if not isinstance(grad, torch.Tensor) or grad.dim() != 3:
        raise ValueError(f"grad must be one gradient [C, H, W], got {getattr(grad, 'shape', type(grad).__name__)}.")
    g = grad.detach().float().cpu()
    g = g / g.abs().max().clamp_min(1e-12) * 0.5 + 0.5
    if g.shape[0] == 1:
        g = g.expand(3, -1, -1)
    return g.permute(1, 2, 0).clamp(0, 1).numpy()
