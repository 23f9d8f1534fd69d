"""The comparison methods taken from Captum, registered by name.

Map methods (input space, ``[B, C, H, W]`` before :func:`~xailib.baselines.attribute` reduces them):

* ``Gradient`` -- ``dS_c / dI``, captum ``Saliency`` with ``abs=False`` (Simonyan et al., 2014).
* ``SmoothGrad`` -- mean gradient over noisy copies, captum ``NoiseTunnel(Saliency)`` (Smilkov et al., 2017).
* ``IntegratedGradients`` -- captum, black-image (zero) baseline (Sundararajan et al., 2017).
* ``GuidedBackprop`` -- captum ``GuidedBackprop`` (Springenberg et al., 2015).
* ``GradCAM`` -- captum ``LayerGradCam`` at a layer (default: the model's last stage), upsampled to the
  input with ``LayerAttribution.interpolate`` (Selvaraju et al., 2017): ``[B, 1, H, W]``.
* ``LRP`` -- captum ``LRP``, epsilon rule, on a copy (:class:`lrp_copy`) (Bach et al., 2015).

Channel methods (``[B, K]``, the channels of ``layer``):

* ``Conductance`` -- captum ``LayerConductance`` (Dhamdhere et al., 2019), summed over positions.
* ``InternalInfluence`` -- captum ``InternalInfluence`` (Leino et al., 2018), summed over positions.
* ``LRP`` -- captum ``LayerLRP``, epsilon rule, relevance of the layer's output summed over positions.

In-place ReLUs: captum's Guided Backprop hooks ReLU modules; on the zoo models (``ReLU(inplace=True)``) it gives
the same maps as on a copy with ``inplace=False`` (checked in the tests), so it runs on the model itself. captum's
LRP runs on a deep copy (:class:`lrp_copy`) because it writes ``rule``/``activations`` attributes onto modules and
has no rule for ``Normalize`` and ``Flatten``. Note: for a network of ReLUs, convs, eval-mode BatchNorm, max/average
pooling and linear layers, LRP with captum's epsilon rule (epsilon = 1e-9) is gradient x input at every layer, so
its channel relevance is ``sum_{x,y} G * F`` -- it ranks the channels of such a layer as gAP's Eq. (4) does.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from xailib.batching import map_batches
from xailib.baselines._common import channel_sum, quiet_captum, seeded
from xailib.baselines.registry import register
from xailib.checks import check_layer, check_model, check_positive_float, check_positive_int, model_device
from xailib.layers import get_layer, model_state, named_layers

__all__ = ["last_stage", "lrp_copy"]


def last_stage(model: nn.Module) -> str:
    """The default layer of the CAMs: the model's last stage ``model.stage_names[-1]``."""
    stages = getattr(model, "stage_names", None)
    if not stages:
        raise ValueError(f"{type(model).__name__} has no `stage_names`, so there is no default layer for a CAM; pass "
                         "layer='...', the last conv layer or block (e.g. 'features.29' for torchvision's vgg16, "
                         "'layer4' for a resnet; see xailib.layers.named_layers(model)).")
    return stages[-1]


# --------------------------------------------------------------------------------------------------
# Input-space maps
# --------------------------------------------------------------------------------------------------


def gradient(model, images, targets, layer, *, batch_size: int = 32, progress: bool = False):
    """Gradient of the target score with respect to the input, ``dS_c / dI`` (captum ``Saliency``, abs=False)."""
    from captum.attr import Saliency

    batch_size = check_positive_int(batch_size, "batch_size")
    with model_state(model, train=False, requires_grad=False), quiet_captum():
        algo = Saliency(model)
        return map_batches(model, images, targets, batch_size, lambda x, t: algo.attribute(x, target=t, abs=False),
                           progress=progress, desc="Gradient")


def smoothgrad(model, images, targets, layer, *, sg_samples: int = 16, sg_stdev: float = 0.15, batch_size: int = 32,
               seed: int = 0, progress: bool = False):
    """SmoothGrad: the mean gradient over ``sg_samples`` noisy copies, noise std ``sg_stdev`` (captum ``NoiseTunnel``).

    Inputs span [0, 1], so ``sg_stdev=0.15`` is Smilkov et al.'s 15 %. The noise comes from the global RNG,
    forked and seeded with ``seed`` once per call (the caller's random stream is untouched); batches of
    ``batch_size`` images draw their noise one after another from that stream.
    """
    from captum.attr import NoiseTunnel, Saliency

    sg_samples = check_positive_int(sg_samples, "sg_samples")
    sg_stdev = check_positive_float(sg_stdev, "sg_stdev", zero=True)
    batch_size = check_positive_int(batch_size, "batch_size")
    with model_state(model, train=False, requires_grad=False), seeded(seed, model_device(model)), quiet_captum():
        algo = NoiseTunnel(Saliency(model))
        return map_batches(model, images, targets, batch_size,
                           lambda x, t: algo.attribute(x, nt_type="smoothgrad", nt_samples=sg_samples,
                                                       nt_samples_batch_size=batch_size, stdevs=sg_stdev, target=t,
                                                       abs=False),
                           progress=progress, desc="SmoothGrad")


def guided_backprop(model, images, targets, layer, *, batch_size: int = 32, progress: bool = False):
    """Guided Backprop: ReLUs pass only positive gradients where their input is positive (captum ``GuidedBackprop``)."""
    from captum.attr import GuidedBackprop

    batch_size = check_positive_int(batch_size, "batch_size")
    with model_state(model, train=False, requires_grad=False), quiet_captum():
        algo = GuidedBackprop(model)
        return map_batches(model, images, targets, batch_size, lambda x, t: algo.attribute(x, target=t),
                           progress=progress, desc="GuidedBackprop")


def integrated_gradients(model, images, targets, layer, *, ig_steps: int = 32, batch_size: int = 32,
                         progress: bool = False):
    """Integrated Gradients from a black image: ``(x - 0) * mean_k dS_c/dI (k/m x)`` (captum, ``ig_steps`` = m steps)."""
    from captum.attr import IntegratedGradients

    ig_steps = check_positive_int(ig_steps, "ig_steps")
    batch_size = check_positive_int(batch_size, "batch_size")
    with model_state(model, train=False, requires_grad=False), quiet_captum():
        algo = IntegratedGradients(model)
        return map_batches(model, images, targets, batch_size,
                           lambda x, t: algo.attribute(x, baselines=torch.zeros_like(x), target=t, n_steps=ig_steps,
                                                       internal_batch_size=batch_size),
                           progress=progress, desc="IntegratedGradients")


def grad_cam(model, images, targets, layer, *, relu: bool = True, interpolate_mode: str = "bilinear",
             batch_size: int = 32, progress: bool = False):
    """Grad-CAM at ``layer``: ``ReLU(sum_k mean_{x,y}(dS_c/dA_k) A_k)``, upsampled to the input (``[B, 1, H, W]``).

    captum ``LayerGradCam`` (Selvaraju et al., Eqs. 1-2) with ``relu_attributions=relu``, then
    ``LayerAttribution.interpolate`` to the input's size with ``interpolate_mode`` (bilinear, as the
    paper; ``"nearest"`` is captum's default). captum's layer hook hands the layers above a clone of the
    layer's output, so an in-place ReLU after the layer cannot change what Grad-CAM reads.
    """
    from captum.attr import LayerAttribution, LayerGradCam

    if interpolate_mode not in ("nearest", "bilinear", "bicubic", "area"):
        raise ValueError(f"interpolate_mode must be 'nearest', 'bilinear', 'bicubic' or 'area', got "
                         f"{interpolate_mode!r}.")
    batch_size = check_positive_int(batch_size, "batch_size")
    size = tuple(images.shape[2:])
    with model_state(model, train=False, requires_grad=False), quiet_captum():
        algo = LayerGradCam(model, get_layer(model, layer))

        def one(x, t):
            a = algo.attribute(x, target=t, relu_attributions=bool(relu))
            if a.dim() != 4:
                raise ValueError(f"Grad-CAM needs a conv layer with output [B, K, h, w]; {layer!r} gives "
                                 f"{tuple(a.shape)}. Choose a conv layer or block, e.g. one of model.stage_names.")
            return LayerAttribution.interpolate(a, size, interpolate_mode=interpolate_mode)

        return map_batches(model, images, targets, batch_size, one, progress=progress, desc="GradCAM")


def lrp_map(model, images, targets, layer, *, batch_size: int = 32, progress: bool = False):
    """LRP (epsilon rule, captum ``LRP``) relevance of each input pixel, on a copy of the model (:class:`lrp_copy`).

    ``Normalize`` passes relevance through unchanged (captum's ``IdentityRule``), ``Flatten`` gets the epsilon
    rule. The in-place residual add of the zoo ResNet is not a module, so LRP treats it as a plain gradient --
    use it on the VGG and AlexNet models.
    """
    from captum.attr import LRP

    batch_size = check_positive_int(batch_size, "batch_size")
    ctx = lrp_copy(model, None, images, normalize_rule="identity")
    with ctx as (work, _), quiet_captum():
        algo = LRP(work)

        def one(x, t):
            ctx.attach_rules()
            return algo.attribute(x, target=t)

        return map_batches(work, images, targets, batch_size, one, progress=progress, desc="LRP")


# --------------------------------------------------------------------------------------------------
# Channel scores
# --------------------------------------------------------------------------------------------------


def _integrated_channel_scores(cls, model, images, targets, layer, n_steps, batch_size) -> torch.Tensor:
    """A captum layer method integrated from a black image (``cls(model, layer).attribute(x, baselines=0, ...)``),
    summed over positions, in batches: ``[B, K]``."""
    n_steps = check_positive_int(n_steps, "n_steps")
    batch_size = check_positive_int(batch_size, "batch_size")
    with model_state(model, train=False, requires_grad=False), quiet_captum():
        algo = cls(model, get_layer(model, layer))
        return map_batches(model, images, targets, batch_size,
                           lambda x, t: channel_sum(algo.attribute(x, baselines=torch.zeros_like(x), target=t,
                                                                   n_steps=n_steps,
                                                                   internal_batch_size=batch_size * n_steps)),
                           requires_grad=False)


def conductance(model, images, targets, layer, *, n_steps: int = 16, batch_size: int = 64):
    """Layer Conductance of each channel (captum ``LayerConductance``), summed over positions: ``[B, K]``.

    Integrated from a black image (zeros) in ``n_steps`` steps (Dhamdhere et al., 2019).
    """
    from captum.attr import LayerConductance

    return _integrated_channel_scores(LayerConductance, model, images, targets, layer, n_steps, batch_size)


def internal_influence(model, images, targets, layer, *, n_steps: int = 16, batch_size: int = 64):
    """Internal Influence of each channel (captum ``InternalInfluence``), summed over positions: ``[B, K]``.

    The layer gradient integrated along the path from a black image in ``n_steps`` steps (Leino et al., 2018).
    """
    from captum.attr import InternalInfluence

    return _integrated_channel_scores(InternalInfluence, model, images, targets, layer, n_steps, batch_size)


def lrp_channels(model, images, targets, layer, *, batch_size: int = 64):
    """LRP (epsilon rule, captum ``LayerLRP``) relevance of the layer's output, summed over positions: ``[B, K]``.

    Runs on a copy (:class:`lrp_copy`); the relevance of ``layer``'s output is the input relevance of the
    module the forward pass runs next.
    """
    from captum.attr import LayerLRP

    batch_size = check_positive_int(batch_size, "batch_size")
    ctx = lrp_copy(model, layer, images)
    with ctx as (work, next_leaf), quiet_captum():
        lrp = LayerLRP(work, get_layer(work, next_leaf))

        def one(x, t):
            ctx.attach_rules()
            return channel_sum(lrp.attribute(x, target=t, attribute_to_layer_input=True))

        return map_batches(work, images, targets, batch_size, one, requires_grad=False)


# --------------------------------------------------------------------------------------------------
# LRP on a copy
# --------------------------------------------------------------------------------------------------


def _leaf_order(model: nn.Module, image: torch.Tensor) -> list[str]:
    """Names of the leaf modules in the order a forward pass calls them."""
    leaves = {n: m for n, m in named_layers(model).items() if not any(True for _ in m.children())}
    order: list[str] = []
    handles = []
    try:
        for n, m in leaves.items():
            handles.append(m.register_forward_hook(lambda mod, i, o, n=n: order.append(n)))
        with torch.no_grad(), model_state(model, train=False):
            model(image)
    finally:
        for h in handles:
            h.remove()
    return order


class lrp_copy:
    """A deep copy of ``model`` ready for captum's ``LRP`` (``layer=None``) or ``LayerLRP`` at ``layer``'s output.

    The copy's ReLUs are not in-place, ``Normalize`` and ``Flatten`` get a rule, and the module whose input
    relevance gives ``layer``'s output relevance is found by tracing one forward pass (captum attributes to a
    leaf module with a rule; a stage block and its final ReLU have none). Entering yields ``(copy, name)``
    (``name`` is None for ``layer=None``); call :meth:`attach_rules`, then ``LayerLRP(copy, get_layer(copy,
    name)).attribute(x, target, attribute_to_layer_input=True)`` (or ``LRP(copy).attribute(x, target)``).

    Parameters
    ----------
    model : nn.Module
        Never modified.
    layer : str or None
    image : Tensor ``[B, C, H, W]``
        One forward pass on ``image[:1]`` traces the order of the modules.
    normalize_rule : {"epsilon", "identity"}
        The rule of ``Normalize``: the epsilon rule (it lies below every layer whose channels are scored, so it
        does not matter there), or passing relevance through (for input-space maps).

    Supported leaves are captum's: Conv2d, Linear, BatchNorm2d, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, ReLU,
    Dropout (plus ``Normalize``/``Flatten`` here). The in-place residual add of the zoo ResNet is not a module, so
    LRP treats it as a plain gradient -- use LRP on the VGG and AlexNet models only.
    """

    def __init__(self, model: nn.Module, layer: str | None, image: torch.Tensor, normalize_rule: str = "epsilon"):
        self.model = check_model(model)
        self.layer = None if layer is None else check_layer(model, layer)
        if normalize_rule not in ("epsilon", "identity"):
            raise ValueError(f"normalize_rule must be 'epsilon' or 'identity', got {normalize_rule!r}.")
        self.normalize_rule = normalize_rule
        self.image = image
        self.work: nn.Module | None = None

    def __enter__(self) -> tuple[nn.Module, str | None]:
        work = copy.deepcopy(self.model).eval()
        for m in work.modules():
            if isinstance(m, nn.ReLU):
                m.inplace = False
        if self.layer is None:
            self.work = work
            return work, None
        order = _leaf_order(work, self.image[:1].to(model_device(work)))
        inside = [i for i, n in enumerate(order) if n == self.layer or n.startswith(self.layer + ".")]
        if not inside or inside[-1] + 1 >= len(order):
            raise ValueError(f"LRP needs a module after layer {self.layer!r} in the forward pass; choose a layer "
                             "below the output (e.g. one of model.stage_names).")
        self.work = work
        return work, order[inside[-1] + 1]

    def attach_rules(self) -> None:
        """Give ``Normalize`` and ``Flatten`` of the copy their rules; call before every ``attribute``
        (captum deletes every module's ``rule`` at the end of a call)."""
        from captum.attr._utils.lrp_rules import EpsilonRule, IdentityRule

        from xailib.models import Normalize

        for m in self.work.modules():
            if isinstance(m, nn.Flatten):
                m.rule = EpsilonRule()
            elif isinstance(m, Normalize):
                m.rule = EpsilonRule() if self.normalize_rule == "epsilon" else IdentityRule()

    def __exit__(self, *exc) -> None:
        self.work = None


register("Gradient", gradient, kind="map")
register("SmoothGrad", smoothgrad, kind="map")
register("IntegratedGradients", integrated_gradients, kind="map")
register("GuidedBackprop", guided_backprop, kind="map")
register("GradCAM", grad_cam, kind="map", layer="optional", default_layer=last_stage)
register("LRP", lrp_map, kind="map")
register("Conductance", conductance, kind="channel")
register("InternalInfluence", internal_influence, kind="channel")
register("LRP", lrp_channels, kind="channel")
