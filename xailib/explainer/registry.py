"""The additive explainer in the shared registry of :mod:`xailib.baselines`: a map method named
``"AdditiveExplainer"``.

The explainer is distilled from a model (Eq. 3), one per explained output, so the method *requires* it:
``attribute(model, images, y, method="AdditiveExplainer", explainer=fit_class_explainers(model, layer, images))``.

The concepts are the filters of one conv layer (Case 1, Eq. 5: ``y_i = sum_hw x_hwi``, priors
``w_i = sum_hw d y_hat / d x_hwi``, clipped at 0; Experiment 1's positive explainer). Because ``y_i`` is a sum over
positions, the explainer's output splits over them exactly:
``sum_i alpha_i(I) y_i = sum_hw (sum_i alpha_i(I) x_hwi)``; the map is ``sum_i alpha_i x_hwi`` at the layer's
resolution, bilinearly resized to the image (non-negative: softplus ``alpha``, ReLU'd ``x``). The paper shows the
contributions as pies per concept, not as maps; the map is ours, for the ground-truth benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from xailib.baselines import register
from xailib.checks import check_layer, check_model
from xailib.explainer.additive import TrainedExplainer, train_explainer
from xailib.explainer.priors import case1_priors
from xailib.maps import resize_bilinear

__all__ = ["ClassExplainers", "fit_class_explainers", "explainer_map"]


@dataclass
class ClassExplainers:
    """One additive explainer per class of a model, all on the filters of ``layer`` (Case 1).

    Attributes
    ----------
    layer : str
    explainers : dict class index -> TrainedExplainer
    config : dict
        The arguments of :func:`fit_class_explainers`.
    """

    layer: str
    explainers: dict[int, TrainedExplainer]
    config: dict = field(default_factory=dict)

    def explainer_of(self, k: int) -> TrainedExplainer:
        if int(k) not in self.explainers:
            raise ValueError(f"class {int(k)} has no explainer (fitted for {sorted(self.explainers)}); fit one with "
                             "fit_class_explainers(..., classes=[...]).")
        return self.explainers[int(k)]


def fit_class_explainers(model: nn.Module, layer: str, images: torch.Tensor, classes=None, *, beta: float = 10.0,
                         epochs: int = 30, width: int = 32, depth: int = 1, batch_size: int = 64, seed: int = 0,
                         device="auto") -> ClassExplainers:
    """Distil one positive explainer per class from ``model`` on ``images`` (Case 1 priors at ``layer``, Eq. 3,
    ``beta`` of ``lambda(t) = beta / sqrt(t)``, the ``"floor"`` start): every image teaches every class's explainer
    (the class's logit on it is ``y_hat``). ``classes`` default: every output of the model."""
    model = check_model(model)
    layer = check_layer(model, layer)
    if classes is None:
        with torch.no_grad():
            n_out = model(images[:1].to(next(model.parameters()).device)).shape[1]
        classes = range(n_out)
    out = {}
    for k in [int(c) for c in classes]:
        c = case1_priors(model, layer, images, target=k, clip=True, batch_size=batch_size)
        out[k] = train_explainer(c.features, c.concepts, c.y_hat, c.priors, beta=beta, positive=True, width=width,
                                 depth=depth, epochs=epochs, batch_size=batch_size, seed=seed + k, init="floor",
                                 device=device, progress=False)
    return ClassExplainers(layer, out, dict(beta=beta, epochs=epochs, width=width, depth=depth, seed=seed,
                                            n_images=len(images)))


def explainer_map(model, images, targets, layer, *, explainer=None, batch_size: int = 64) -> torch.Tensor:
    """The additive explainer's contributions laid over positions, ``sum_i alpha_i x_hwi``, resized to the image:
    ``[B, 1, H, W]``."""
    if not isinstance(explainer, ClassExplainers):
        raise TypeError(f"explainer must be a ClassExplainers (fit_class_explainers), got {type(explainer).__name__}.")
    maps = torch.zeros(len(images), 1, *images.shape[-2:])
    for k in sorted({int(t) for t in targets.tolist()}):
        rows = (targets == k).nonzero().flatten()
        c = case1_priors(model, explainer.layer, images[rows], target=k, clip=True, batch_size=batch_size)
        e = explainer.explainer_of(k).explainer
        with torch.no_grad():
            dev = e.b.device
            alpha = torch.cat([e.alpha(c.features[s:s + batch_size].to(dev)).cpu()
                               for s in range(0, len(rows), batch_size)])
        spatial = (alpha[..., None, None] * c.features).sum(1, keepdim=True)       # [b, 1, h, w]
        maps[rows] = resize_bilinear(spatial, tuple(images.shape[-2:])).clamp_min(0)
    return maps


register("AdditiveExplainer", explainer_map, kind="map", requires=("explainer",),
         hint="distil one with xailib.explainer.registry.fit_class_explainers(model, layer, images) and pass it.")
