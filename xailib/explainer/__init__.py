"""The additive explainer of Chen et al., "Explaining Neural Networks Semantically and Quantitatively", on the
shared floor.

- :mod:`xailib.explainer.additive` -- Eqs. 1-4: the explainer ``g``, the distillation and prior losses, training.
- :mod:`xailib.explainer.priors` -- Sec. 3.1: the concepts and prior weights of Case 1 and Case 2.
- :mod:`xailib.explainer.evaluation` -- Sec. 4.1: entropy, accuracy at the best threshold, relative deviation, the
  part-contribution error.
- :mod:`xailib.explainer.interpretable` -- the interpretable CNN of Zhang et al., CVPR 2018: part templates, the
  mask layer and its filter loss, the filters' part selectivity.
- :mod:`xailib.explainer.performers` and :mod:`xailib.explainer.attributes` -- the performers of Experiments 1 and
  2 (``make performers``), ConceptWorld's binary tasks and attributes.
- :mod:`xailib.explainer.experiments` -- Experiment 1's study; :mod:`xailib.explainer.attributes` holds
  Experiment 2's.
- :mod:`xailib.explainer.explorer` -- the teaching view; :mod:`xailib.explainer.paper` -- the paper's numbers and
  the paper-vs-ours tables; :mod:`xailib.explainer.plot` -- the figures.
"""
