"""AfI qualitative concept attribution: class impressions of the meta-detectors (Sec. 3.2, Sec. 4.4, Fig. 3).

Paper: "Towards Global Explanations of Convolutional Neural Networks with Concept Attribution" (AfI, Wu et al.).
A class impression is an image that maximises the total activation of class ``k``'s meta-detector at one layer,
``sum_{h,w} f_l(x)`` with ``f_l = sum_c w_l^c A_l^c`` (Eq. 9), with "the total variation penalization" and "no
other natural image priors" (Sec. 4.4). We minimise, by Adam on the image::

    loss_k(x) = - sum_{h,w} f_l(x)  +  tv_weight * TV(x),     TV(x) = mean_{c,i,j} (|x_{i+1,j} - x_{i,j}| +
                                                                                    |x_{i,j+1} - x_{i,j}|)

(TV is the anisotropic total variation, averaged over the channels and pixel pairs so that ``tv_weight`` does not
depend on the image size). Choices:

* **Input range**: the image is parameterised as ``x = lo + (hi - lo) * sigmoid(theta)`` and Adam updates
  ``theta``, so ``x`` stays strictly inside ``input_range`` without clamping (a clamp would zero the gradients of
  saturated pixels). ``theta`` starts at ``0.1 * N(0, 1)`` (a grey image with faint noise; seeded), so that the
  ReLUs of the first layers are not all in the same state.
* **Jitter**: each step shifts the whole batch by a random ``(dy, dx)`` in ``[-jitter, jitter]`` pixels
  (``torch.roll``, seeded) before the forward pass -- a transformation robustness, not an image prior; it keeps the
  optimisation from building pixel-aligned high-frequency patterns. ``jitter=0`` turns it off.
* The ``K`` classes are optimised together as one batch (image ``k`` scored by meta-detector ``k``); the model is
  in eval mode with its parameters' gradients off, its state restored afterwards.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from xailib.afi.attribution import check_cis, meta_maps
from xailib.checks import check_input_range
from xailib.checks import check_layer, check_model, check_positive_float, check_positive_int, check_seed, model_device
from xailib.layers import capture, model_state

__all__ = ["ClassImpressions", "class_impressions", "total_variation", "meta_activation"]


@dataclass
class ClassImpressions:
    """What :func:`class_impressions` returns for ``K`` classes.

    Attributes
    ----------
    images : Tensor ``[K, C, H, W]``
        The class impressions, in ``input_range``, on the CPU.
    history : Tensor ``[steps, K]``
        The total meta-detector activation ``sum f_l`` of each image at each step (on that step's jittered
        image, before the update).
    initial, final : Tensor ``[K]``
        The total activation of the start and the final images, without jitter.
    layer : str
    seed : int
    """

    images: torch.Tensor
    history: torch.Tensor
    initial: torch.Tensor
    final: torch.Tensor
    layer: str
    seed: int


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation per image, ``[B, C, H, W] -> [B]``: the mean over channels and neighbouring pixel
    pairs of ``|x_{i+1,j} - x_{i,j}|`` plus that of ``|x_{i,j+1} - x_{i,j}|``."""
    dh = (x[:, :, 1:, :] - x[:, :, :-1, :]).abs().flatten(1).mean(1) if x.shape[2] > 1 else x.new_zeros(x.shape[0])
    dw = (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().flatten(1).mean(1) if x.shape[3] > 1 else x.new_zeros(x.shape[0])
    return dh + dw


def meta_activation(model: nn.Module, x: torch.Tensor, w: torch.Tensor, layer: str) -> torch.Tensor:
    """Total activation ``sum_{h,w} f_l(x_k)`` of meta-detector ``k`` on image ``k`` (Eq. 9): ``x [K, C, H, W]``,
    ``w [K, C_l]`` -> ``[K]``. Differentiable in ``x``; call inside a model state of your choice."""
    with capture(model, layer) as rec:
        model(x)
        acts = rec[layer]
    return meta_maps(acts, w, paired=True).reshape(x.shape[0], -1).sum(1)


def _image_shape(model: nn.Module, image_shape) -> tuple[int, int, int]:
    shape = image_shape if image_shape is not None else getattr(model, "input_shape", None)
    if shape is None:
        raise ValueError(f"{type(model).__name__} does not state its input_shape; pass image_shape=(C, H, W), e.g. "
                         "(3, 224, 224) for an ImageNet model or (1, 28, 28) for Fashion-MNIST.")
    shape = tuple(shape)
    if len(shape) != 3 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
        raise ValueError(f"image_shape must be (C, H, W) positive ints, got {image_shape!r}.")
    model_shape = getattr(model, "input_shape", None)
    if model_shape is not None and int(model_shape[0]) != shape[0]:
        raise ValueError(f"The model takes {model_shape[0]}-channel images but image_shape has {shape[0]} channels; "
                         f"use image_shape=({model_shape[0]}, H, W).")
    return shape


def class_impressions(
    model: nn.Module,
    cis,
    layer: str,
    *,
    image_shape: tuple[int, int, int] | None = None,
    input_range: tuple[float, float] = (0.0, 1.0),
    steps: int = 256,
    lr: float = 0.05,
    tv_weight: float = 1.0,
    jitter: int = 2,
    seed: int = 0,
    progress: bool = True,
) -> ClassImpressions:
    """Class impressions (Sec. 4.4): images maximising one layer's meta-detector total activation, one per class.

    See the module docstring for the loss, the sigmoid parameterisation and the jitter.

    Parameters
    ----------
    model : nn.Module
    cis : dict str -> Tensor ``[K, C_l]``, or Tensor ``[K, C_l]``
        Channel importance (Eq. 8) of ``K`` classes; a dict must hold ``layer``.
    layer : str
        The layer whose meta-detector is maximised (Table 3: ResBlock_4c, Mixed_5b, Fc_6).
    image_shape : (C, H, W), optional
        Default: ``model.input_shape``. ``C`` is 1 (greyscale) or 3 (RGB), as the model takes.
    input_range : (float, float)
    steps : int
        Adam steps.
    lr : float
        Adam's learning rate on the sigmoid's argument.
    tv_weight : float
        Weight of the total variation; 0 turns it off. Choose it relative to the activation's scale.
    jitter : int
        Largest random shift in pixels per step; 0: none.
    seed : int
        Seeds the start image and the jitter.
    progress : bool
        A tqdm bar over steps.

    Returns
    -------
    ClassImpressions
        ``images [K, C, H, W]``, ``history [steps, K]``, ``initial [K]``, ``final [K]``.
    """
    check_model(model)
    layer = check_layer(model, layer)
    if isinstance(cis, torch.Tensor):
        cis = {layer: cis}
    if not isinstance(cis, Mapping):
        raise TypeError(f"cis must be a dict layer -> Tensor [K, C] or a Tensor [K, C], got {type(cis).__name__}.")
    w = check_cis(cis, [layer])[layer]
    c, h, wd = _image_shape(model, image_shape)
    lo, hi = check_input_range(input_range)
    steps = check_positive_int(steps, "steps")
    lr = check_positive_float(lr, "lr")
    tv_weight = check_positive_float(tv_weight, "tv_weight", zero=True)
    jitter = check_positive_int(jitter, "jitter", zero=True)
    seed = check_seed(seed)
    dev = model_device(model)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    gen = torch.Generator().manual_seed(seed)
    k = w.shape[0]
    theta = (0.1 * torch.randn(k, c, h, wd, generator=gen, dtype=torch.float64)).to(dev, dtype).requires_grad_(True)
    shifts = torch.randint(-jitter, jitter + 1, (steps, 2), generator=gen).tolist() if jitter else [[0, 0]] * steps
    w = w.to(dev, dtype)

    def image() -> torch.Tensor:
        return lo + (hi - lo) * torch.sigmoid(theta)

    opt = torch.optim.Adam([theta], lr=lr)
    history = torch.zeros(steps, k, dtype=torch.float64)
    with model_state(model, train=False, requires_grad=False), torch.enable_grad():
        with torch.no_grad():
            initial = meta_activation(model, image(), w, layer).double().cpu()
        for t in tqdm(range(steps), disable=not progress, desc="class impressions", leave=False):
            x = image()
            dy, dx = shifts[t]
            xj = torch.roll(x, shifts=(dy, dx), dims=(2, 3)) if (dy or dx) else x
            act = meta_activation(model, xj, w, layer)  # [K], sum over the map of Eq. (9)
            loss = (-act + tv_weight * total_variation(x)).sum()  # images are independent: one sum, K gradients
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            history[t] = act.detach().double().cpu()
        with torch.no_grad():
            final_x = image()
            final = meta_activation(model, final_x, w, layer).double().cpu()
    return ClassImpressions(final_x.detach().cpu(), history, initial, final, layer, seed)
