"""Grad-CAM++ from the ``grad-cam`` package (``pytorch_grad_cam.GradCAMPlusPlus``), registered by name.

Chattopadhyay et al., "Grad-CAM++: Improved Visual Explanations for Deep Convolutional Networks" (WACV 2018,
arXiv:1710.11063). The paper weighs each gradient of a channel map by

    alpha^{kc}_{ij} = (d^2 S^c / (dA^k_ij)^2) / (2 d^2 S^c / (dA^k_ij)^2 + sum_ab A^k_ab d^3 S^c / (dA^k_ij)^3)

and, for an exponential output ``S^c = exp(Y^c)``, whose higher derivatives are powers of the first one, obtains
the closed form in first derivatives ``g = dY^c / dA^k_ij`` of the class score before softmax

    alpha^{kc}_{ij} = g^2 / (2 g^2 + sum_ab A^k_ab g^3)                                                         (Eq. 19)

which is the one ``pytorch_grad_cam.GradCAMPlusPlus.get_cam_weights`` computes (with ``1e-6`` added to the
denominator, and ``alpha = 0`` where ``g = 0``). The channel weights are ``w^c_k = sum_ij alpha^{kc}_{ij} ReLU(g)``
(Eq. 7 with the exponential's per-image factor dropped), and the map is ``ReLU(sum_k w^c_k A^k)``, which the
package scales per image to [0, 1] (``(m - min) / (max - min + 1e-7)``) and resizes to the input with
``cv2.resize`` (bilinear).
"""

from __future__ import annotations

import torch

from xailib.batching import map_batches
from xailib.baselines._common import kept_grads
from xailib.baselines.captum_methods import last_stage
from xailib.baselines.registry import register
from xailib.checks import check_positive_int
from xailib.layers import get_layer, model_state, replace_output

__all__ = ["grad_cam_plus_plus"]


def grad_cam_plus_plus(model, images, targets, layer, *, batch_size: int = 32, progress: bool = False):
    """Grad-CAM++ at ``layer`` (``pytorch_grad_cam.GradCAMPlusPlus``, Eq. 19): ``[B, 1, H, W]`` in [0, 1] per image.

    The package's target callables are ``ClassifierOutputTarget(class)``, one per image (the class score
    before softmax). Its hooks are released in ``finally`` (its ``__exit__`` would swallow an
    ``IndexError``, so it is not used as a context manager); the model's mode, ``requires_grad`` flags and
    parameter ``.grad`` (the package calls ``model.zero_grad()``) are restored. The layer's output is cloned
    for the layers above, so an in-place ReLU after the layer cannot change the activations the package
    keeps (on the CPU its ``.cpu().detach()`` shares their memory).
    """
    from pytorch_grad_cam import GradCAMPlusPlus
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    batch_size = check_positive_int(batch_size, "batch_size")
    module = get_layer(model, layer)
    with model_state(model, train=False, requires_grad=False), kept_grads(model):
        cam = GradCAMPlusPlus(model=model, target_layers=[module])
        try:
            with replace_output(model, layer, lambda a: a.clone()):  # after the package's hooks: they see the original

                def one(x, t):
                    if x.dim() != 4:
                        raise ValueError("Grad-CAM++ explains images [B, C, H, W].")
                    maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in t.tolist()])
                    return torch.from_numpy(maps)[:, None].to(dtype=images.dtype)  # [b, 1, H, W]

                return map_batches(model, images, targets, batch_size, one, progress=progress, desc="GradCAM++")
        finally:
            cam.activations_and_grads.release()
            cam.outputs = None


register("GradCAM++", grad_cam_plus_plus, kind="map", layer="optional", default_layer=last_stage)
