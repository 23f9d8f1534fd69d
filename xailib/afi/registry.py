"""AfI in the shared registry of :mod:`xailib.baselines`: a concept method named ``"AfI"``.

``attribute(model, images, y, method="AfI", concept_sets=sets, random_set=rnd)`` learns one global feature
occluder per target class on that class's images (Eqs. 4-5, with Sec. 4.1's fine-tuning), takes the channel
importance of the layers (Eqs. 6-8) and scores every concept set against the random set by MMD (Sec. 3.2):
``[B, P]``, every image of a class holding its class's scores. AfI is a global method: the scores describe the
class, not the image.
"""

from __future__ import annotations

import torch

from xailib.baselines import register
from xailib.baselines._common import class_concept_rows, concept_names

__all__ = ["afi_concepts"]


def afi_concepts(model, images, targets, layer, *, concept_sets=None, random_set=None, layers=None, lam: float = 0.05,
                 max_iter: int = 300, n_perm: int = 200, seed: int = 0, device: str = "auto") -> torch.Tensor:
    """AfI's concept importance (Sec. 3.2) of each concept set for each image's target class: ``[B, P]``."""
    from xailib.afi.concepts import concept_importance
    from xailib.afi.experiments import class_channel_importance
    from xailib.afi.occluder import finetune_occluders, learn_occluders

    names = concept_names(concept_sets)
    layers = list(layers) if layers is not None else list(getattr(model, "stage_names", []))
    if not layers:
        raise ValueError("AfI needs layers=[...] (the middle layers whose MMDs are summed), e.g. model.stage_names.")
    res = learn_occluders(model, images, targets, lam=lam, max_iter=max_iter, seed=seed, progress=False,
                          device=device)
    res = finetune_occluders(model, images, targets, res, progress=False, device=device)
    cis = class_channel_importance(model, images, targets, layers, res)
    table = concept_importance(model, list(concept_sets), random_set, cis, layers, classes=res.classes,
                               n_perm=n_perm, seed=seed)
    return class_concept_rows(table, targets, names)


register("AfI", afi_concepts, kind="concept", requires=("concept_sets", "random_set"),
         hint="pass the probe sets of the concepts (ConceptSet, e.g. xailib.afi.evaluation.part_probe_sets) and a "
              "random benchmark set (xailib.data.concepts.random_sets(...)[0]).")
