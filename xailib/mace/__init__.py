"""MACE: Model Agnostic Concept Extractor (Kumar et al.), on the shared floor.

:mod:`xailib.mace.model` (the four modules and the tap point), :mod:`xailib.mace.losses` (Eqs. 1-2, L^D, L^O),
:mod:`xailib.mace.training` (the total loss, Adam, class-balanced batches), :mod:`xailib.mace.explain` (concept
maps, relevances, prototypes for any class), :mod:`xailib.mace.pruning` (the rules of S2).
"""
