"""Excitation Backprop from zennit (``zennit.composites.ExcitationBackprop``), registered by name.

Zhang et al., "Top-down Neural Attention by Excitation Backprop" (ECCV 2016). A top-down signal (one-hot on the
target class) is passed down as a probability: a neuron ``a_j`` passes to each of its children ``a_i``

    P(a_i | a_j) = Z_j a_i w_ij^+ ,   Z_j = 1 / sum_i a_i w_ij^+

(``w^+`` the positive part of the weights), and the marginal winning probability is
``P(a_i) = sum_j P(a_i | a_j) P(a_j)``. For non-negative inputs this is LRP's z+ rule, which zennit's
``ExcitationBackprop`` composite applies to every conv and linear layer (``ZPlus``), with the normalised pass
``Norm`` for sum and average pooling and the plain gradient elsewhere (max-pooling: to the winner; ReLU: where
it is active, where the z+ relevance is non-zero anyway). zennit's ``ZPlus`` also passes ``a_i^- w_ij^-`` terms
for negative inputs (only the first layer sees any, the normalised image).

Here, as in the paper's conditional probability above, biases take no share (``zero_params=["bias"]``); BatchNorm is merged into the conv
before it for the call (zennit's ``SequentialMergeBatchNorm`` canonizer, reverted on exit) and the merged
BatchNorm, like the zoo's ``Normalize``, passes the signal through unchanged (``Pass``). A BatchNorm that does not
follow a conv or linear layer directly is passed through unmerged (its scale is ignored).
"""

from __future__ import annotations

import torch.nn.functional as F

from xailib.batching import map_batches
from xailib.baselines.registry import register
from xailib.checks import check_positive_float, check_positive_int
from xailib.layers import model_state

__all__ = ["excitation_backprop"]


def excitation_backprop(model, images, targets, layer, *, stabilizer: float = 1e-6, batch_size: int = 32,
                        progress: bool = False):
    """Excitation Backprop's marginal winning probability of each input pixel (zennit): ``[B, C, H, W]``.

    ``zennit.attribution.Gradient`` with the ``ExcitationBackprop`` composite, entered as a context manager
    (``with Gradient(model, composite) as attributor:``), which registers the rules and the BatchNorm merge
    and removes them on exit; the composite is removed again in ``finally`` in case registering it failed
    half-way. The top-down signal is the one-hot of each image's target class, so each map sums to about 1
    (minus what bias-free ReLUs and ``stabilizer`` lose).
    """
    from zennit.attribution import Gradient
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.composites import ExcitationBackprop
    from zennit.rules import Pass
    from zennit.types import BatchNorm

    from xailib.models import Normalize

    stabilizer = check_positive_float(stabilizer, "stabilizer")
    batch_size = check_positive_int(batch_size, "batch_size")
    composite = ExcitationBackprop(stabilizer=stabilizer, layer_map=[(Normalize, Pass()), (BatchNorm, Pass())],
                                   zero_params=["bias"], canonizers=[SequentialMergeBatchNorm()])
    with model_state(model, train=False, requires_grad=False):
        try:
            with Gradient(model, composite) as attributor:

                def one(x, t):
                    _, relevance = attributor(x, lambda out: F.one_hot(t, out.shape[1]).to(out.dtype))
                    return relevance

                return map_batches(model, images, targets, batch_size, one, progress=progress,
                                   desc="ExcitationBackprop")
        finally:
            composite.remove()


register("ExcitationBackprop", excitation_backprop, kind="map")
