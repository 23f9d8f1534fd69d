"""The additive explainer of Chen et al., "Explaining Neural Networks Semantically and Quantitatively", on the
shared floor.

:mod:`xailib.explainer.additive` (Eqs. 1-4: the explainer ``g``, the distillation and prior losses, training),
:mod:`xailib.explainer.priors` (Sec. 3.1: the concepts and prior weights of Case 1 and Case 2),
:mod:`xailib.explainer.evaluation` (Sec. 4.1: entropy, accuracy at the best threshold, relative deviation, the
part-contribution error), :mod:`xailib.explainer.interpretable` (the interpretable CNN of Zhang et al., CVPR 2018:
part templates, the mask layer and its filter loss, the filters' part selectivity).
"""
