"""Every comparison method by name, with one call shape, and the method-agnostic tests that use them.

The registry (:mod:`xailib.baselines.registry`):

* :func:`attribute` -- ``attribute(model, images, target, method=..., layer=None, **options)``: maps ``[B, H, W]``
  of a ``"map"`` method (``reduce="abs"``: ``sum_c |a_c|``; ``"signed"``; ``None``: ``[B, C, H, W]``), or
  channel scores ``[B, K]`` of a ``"channel"`` method at ``layer``.
* :func:`register`, :func:`available`, :func:`get_method`, :func:`method_options` -- the names and their options.

The methods, each taken from the library made for it:

* Captum (:mod:`~xailib.baselines.captum_methods`): ``Gradient``, ``SmoothGrad``, ``IntegratedGradients``,
  ``GuidedBackprop``, ``GradCAM``, ``LRP`` (maps); ``Conductance``, ``InternalInfluence``, ``LRP`` (channels).
* grad-cam (:mod:`~xailib.baselines.gradcam_methods`): ``GradCAM++``.
* zennit (:mod:`~xailib.baselines.zennit_methods`): ``ExcitationBackprop``.
* ``Random`` channel scores, the control of the removal test (:mod:`~xailib.baselines.removal`).
* ``gAP`` (map and channel), registered by :mod:`xailib.gap` when it is imported; it is imported on the
  first look-up of a name not yet registered (:data:`METHOD_PACKAGES`).

The tests (any registered method of the kind):

* :mod:`~xailib.baselines.randomization` -- Adebayo et al.'s cascading model-parameter and data randomisation
  tests for map methods (:func:`cascading_randomization`, :func:`data_randomization`).
* :mod:`~xailib.baselines.removal` -- accuracy after removing each image's top channels of a layer for channel
  methods (:func:`channel_removal_curve`, :func:`remove_channels`).

Examples
--------
>>> from xailib.baselines import attribute, available
>>> available("map")
>>> maps = attribute(model, x, "predicted", method="SmoothGrad", sg_samples=16)        # [B, H, W]
>>> scores = attribute(model, x, y, method="Conductance", layer="features.stage4")      # [B, K]
"""

from xailib.baselines.registry import (
    KINDS,
    METHOD_PACKAGES,
    REDUCTIONS,
    Method,
    attribute,
    available,
    get_method,
    method_options,
    reduce_maps,
    register,
    split_options,
)

from xailib.baselines import captum_methods, gradcam_methods, zennit_methods  # noqa: E402,F401  (register)
from xailib.baselines.captum_methods import last_stage, lrp_copy  # noqa: E402
from xailib.baselines.randomization import (  # noqa: E402
    DEFAULT_MAP_METHODS,
    cascading_copy,
    cascading_randomization,
    data_randomization,
    randomization_layers,
    randomized_copy,
    reinitialize,
    train_random_label_model,
)
from xailib.baselines.removal import ABLATIONS, channel_removal_curve, random_scores, remove_channels  # noqa: E402

__all__ = [
    "KINDS",
    "REDUCTIONS",
    "METHOD_PACKAGES",
    "Method",
    "register",
    "available",
    "get_method",
    "method_options",
    "split_options",
    "attribute",
    "reduce_maps",
    "last_stage",
    "lrp_copy",
    "DEFAULT_MAP_METHODS",
    "randomization_layers",
    "reinitialize",
    "randomized_copy",
    "cascading_copy",
    "cascading_randomization",
    "train_random_label_model",
    "data_randomization",
    "ABLATIONS",
    "remove_channels",
    "channel_removal_curve",
    "random_scores",
]
