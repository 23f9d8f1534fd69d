"""Adversarial attacks in image space: PGD and FGSM, for every method that needs them.

* :func:`pgd_attack` -- L-inf projected gradient descent (Madry et al., ICLR 2018; the gAP paper's
  ref. [76]), untargeted or targeted, with a seeded random start.
* :func:`fgsm_attack` -- the fast gradient sign method (Goodfellow et al., ICLR 2015): one PGD step of
  size ``eps`` from the clean image.

The attacks work on images in [0, 1] (the zoo models normalise inside), run the model in eval mode
with frozen parameters, and restore both afterwards.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from xailib.checks import (
    check_fraction,
    check_images,
    check_model,
    check_positive_float,
    check_positive_int,
    check_targets,
    model_device,
)
from xailib.layers import model_state

__all__ = ["pgd_attack", "fgsm_attack"]


def pgd_attack(
    model: nn.Module,
    images: torch.Tensor,
    labels,
    eps: float = 8 / 255,
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    targeted: bool = False,
    seed: int = 0,
) -> torch.Tensor:
    """Projected gradient descent under an L-inf budget (Madry et al., the paper's ref. [76]).

    ``x_{t+1} = clip_[0,1]( Proj_{||x - x_0||_inf <= eps}( x_t + a * sign(grad_x CE(f(x_t), y)) ) )``
    (``- a * sign(...)`` with ``targeted=True``, where ``labels`` are the target classes). One step of
    size ``eps`` from ``x_0`` without a random start is FGSM (:func:`fgsm_attack`).

    Parameters
    ----------
    model : nn.Module
        Runs in eval mode with frozen parameters; both restored afterwards.
    images : Tensor ``[B, C, H, W]`` in [0, 1]
    labels : LongTensor ``[B]``, sequence of int or int
        True classes (untargeted) or target classes (targeted).
    eps : float
        L-inf radius in [0, 1] image units.
    steps : int
    step_size : float or None
        ``a``; default ``2.5 * eps / steps``.
    random_start : bool
        Start from a uniform point of the eps-ball (seeded by ``seed``).
    targeted : bool
    seed : int

    Returns
    -------
    Tensor ``[B, C, H, W]``: adversarial images with ``|x - x_0| <= eps`` and values in [0, 1].
    """
    check_model(model)
    images = check_images(images, model, what="images", move=False)
    if images.numel() and (float(images.min()) < 0 or float(images.max()) > 1):
        raise ValueError(f"images must lie in [0, 1] (the attack works in image space; the model normalises); got "
                         f"values in [{float(images.min()):.3g}, {float(images.max()):.3g}].")
    eps = check_fraction(eps, "eps", hint=" (L-inf radius in image units, e.g. 8/255)")
    steps = check_positive_int(steps, "steps")
    step_size = 2.5 * eps / steps if step_size is None else step_size
    step_size = check_positive_float(step_size, "step_size", zero=True)
    device = model_device(model)
    x0 = images.detach().to(device)
    with model_state(model, train=False, requires_grad=False):
        y = check_targets(labels, x0.shape[0], model=model, images=x0, what="labels",
                          allow_predicted=False).to(device)
        x = x0.clone()
        if random_start and eps > 0:
            gen = torch.Generator().manual_seed(int(seed))
            noise = (torch.rand(x0.shape, generator=gen) * 2 - 1).to(device, x0.dtype)
            x = (x0 + eps * noise).clamp(0, 1)
        for _ in range(steps):
            x = x.detach().requires_grad_(True)
            with torch.enable_grad():
                loss = F.cross_entropy(model(x), y, reduction="sum")  # sum: each image's step is its own
                (grad,) = torch.autograd.grad(loss, x)
            step = step_size * grad.sign()
            x = x.detach() - step if targeted else x.detach() + step
            x = torch.minimum(torch.maximum(x, x0 - eps), x0 + eps).clamp(0, 1)  # project, then stay an image
    return x.detach()


def fgsm_attack(model: nn.Module, images: torch.Tensor, labels, eps: float = 8 / 255) -> torch.Tensor:
    """FGSM (Goodfellow et al.): ``clip_[0,1](x + eps * sign(grad_x CE(f(x), y)))``; one PGD step, no random start.

    Shapes as in :func:`pgd_attack`.
    """
    return pgd_attack(model, images, labels, eps=eps, steps=1, step_size=eps, random_start=False)
