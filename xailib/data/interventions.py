"""Ground-truth concept importance from ConceptWorld's interventions, and the SSC/SDC curves of ACE and AfI.

ConceptWorld renders a scene from its recipe, so it can re-render the *same* scene with a concept taken away
(:meth:`~xailib.data.conceptworld.ConceptWorld.remove`). What the model loses then is a causal, per-scene measure
of how much it uses the concept -- the ground truth that concept-attribution methods (AfI's MMD scores, TCAV) are
scored against.

* :func:`intervention_effects` -- per scene and concept: the class score (logit and softmax probability)
  before and after the concept is removed; :func:`intervention_importance` -- per class and concept: the mean
  drop with a bootstrap CI (:func:`xailib.metrics.bootstrap_ci`) and its ``n``.
* :func:`concept_curves` -- accuracy while the top-1, top-2, ... concepts of an importance order are added to a
  blank image (``"ssc"``, smallest sufficient concepts) or removed from the scene (``"sdc"``, smallest destroying
  concepts): ACE's test (Ghorbani et al., 2019, Sec. 4.2), which AfI uses for Fig. 2 (Sec. 4.3);
  :func:`random_order` gives the random-order control.

**What "removing a concept" means** (``world.remove(recipes, concepts=[c])``, the world's own semantics):

* a **part** (``"legs"``): not drawn; what it covered (other parts, the background) shows;
* a **texture** (``"stripes"``): the parts drawn with it become plain (same colour). ``"plain"`` is the absence of
  a texture and cannot be removed, so it is refused (remove parts, or swap a texture in with ``world.swap``);
* a **colour** (``"red"``): the parts drawn in it become neutral grey, keeping their pattern;
* a **context** (``"water"``): the background becomes the world's blank grey.

Removal rather than a swap to another value: a swap puts *another* concept in (a dotted leopard with stripes is
also a striped thing), so its effect mixes losing one concept with gaining another; removal changes one thing.

**Presence**: a concept counts in a scene when it has visible pixels there (its concept mask, in
:attr:`SceneBatch.concept_masks`, is not empty): a part the scene does not have, or one fully hidden behind
another part or the hard setting's occluder, has no effect to measure (its rows have ``present = False`` and NaN
drops) and is left out of ``n``. The distractor of the hard setting is not the scene's object: removing a concept
never touches it (it is another class's object, with its own masks).

**SSC and the blank image**: ACE pastes the top segments of an image onto a blank image. Here step ``k`` shows
only the scene's top-``k`` concepts of ``order`` on the world's blank background (``world.blank``), without the
hard setting's distractor and occluder (as :meth:`~xailib.data.conceptworld.ConceptWorld.isolate`); a context in
the top ``k`` is a segment too: scenes with that background keep it. Textures and colours are properties of
parts, not segments, so ``"ssc"`` refuses them (``"sdc"`` takes every removable concept). ``k = 0`` is the blank
image itself; in ``"sdc"``, ``k = 0`` is the scene unchanged.

Every function renders the scenes of one concept (or one step ``k``) in one batch on the model's device and scores
them in batches of ``batch_size``. :func:`intervention_effects_reference` and :func:`concept_curves_reference` are
the literal per-scene loops the tests hold them to.

>>> world = ConceptWorld(size=64)
>>> recipes = world.sample(500, split="test", seed=0)
>>> gt = intervention_importance(model, world, recipes, ["legs", "head", "stripes", "orange", "grass"])
>>> tigers = recipes[recipes.label == world.class_index("tiger")]
>>> curve = concept_curves(model, world, tigers, ["body", "head", "legs", "tail"], mode="sdc")
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from xailib.checks import check_choice, check_model, check_positive_int, check_seed, check_targets, model_device
from xailib.data.conceptworld import ConceptWorld, Recipe, SceneBatch
from xailib.layers import model_state

if TYPE_CHECKING:  # pandas and xailib.metrics are imported where a table is made: `import xailib.data` stays light
    import pandas as pd

__all__ = [
    "EFFECT_COLUMNS",
    "IMPORTANCE_COLUMNS",
    "CURVE_COLUMNS",
    "MODES",
    "intervention_effects",
    "intervention_importance",
    "intervention_effects_reference",
    "concept_curves",
    "concept_curves_reference",
    "random_order",
]

#: Columns of :func:`intervention_effects`.
EFFECT_COLUMNS = ["scene", "label", "class", "concept", "kind", "present", "n_pixels", "logit", "logit_after",
                  "drop_logit", "prob", "prob_after", "drop_prob"]
#: Columns of :func:`intervention_importance`.
IMPORTANCE_COLUMNS = ["class", "class_name", "concept", "kind", "n", "n_scenes", "drop_logit", "drop_logit_low",
                      "drop_logit_high", "drop_prob", "drop_prob_low", "drop_prob_high", "rank"]
#: Columns of :func:`concept_curves`.
#: (the columns of :func:`xailib.data.superpixels.segment_curves`, ACE's pixel-mask version, then ``mean_prob``).
CURVE_COLUMNS = ["mode", "k", "concept", "concepts_edited", "accuracy", "n", "original_accuracy", "mean_prob"]
#: The modes of :func:`concept_curves`.
MODES = ("ssc", "sdc")

_MASK_CHUNK = 256  # scenes per concept-mask computation ([n, 34, H, W] bools)


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------


def _check_world(world) -> ConceptWorld:
    if not isinstance(world, ConceptWorld):
        raise TypeError(f"world must be a ConceptWorld (xailib.data.conceptworld.ConceptWorld(size=64)), got "
                        f"{type(world).__name__}.")
    return world


def _check_recipes(world: ConceptWorld, recipes) -> Recipe:
    if not isinstance(recipes, Recipe):
        raise TypeError(f"recipes must be a Recipe from world.sample(n, split=..., seed=...), got "
                        f"{type(recipes).__name__}.")
    if len(recipes) == 0:
        raise ValueError("recipes is empty (0 scenes); pass at least one scene, e.g. world.sample(100, split='test').")
    if int(recipes.label.min()) < 0 or int(recipes.label.max()) >= world.n_classes:
        raise ValueError(f"Recipe labels must be in 0..{world.n_classes - 1} for {world!r}; the recipes come from "
                         "another world.")
    return recipes


def _unknown(world: ConceptWorld, concept, valid: Sequence[str], what: str) -> ValueError:
    close = difflib.get_close_matches(str(concept), list(valid), n=3) if isinstance(concept, str) else []
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return ValueError(f"Unknown {what} {concept!r}.{hint} Valid {what}s: {', '.join(valid)}.")


def _removable(world: ConceptWorld) -> list[str]:
    """Every concept :meth:`ConceptWorld.remove` can take away: all but ``"plain"``."""
    return [c for c in world.concept_names if c != "plain"]


def _check_concepts(world: ConceptWorld, concepts, valid: Sequence[str], what: str, *, allow_empty=False) -> list[str]:
    if isinstance(concepts, str):
        concepts = [concepts]
    if not isinstance(concepts, Sequence):
        raise TypeError(f"{what}s must be a list of names (e.g. ['legs', 'stripes']), got {type(concepts).__name__}.")
    concepts = list(concepts)
    if not concepts and not allow_empty:
        raise ValueError(f"Give at least one {what}; valid {what}s: {', '.join(valid)}.")
    for c in concepts:
        if c == "plain" and "plain" in world.concept_names and "plain" not in valid:
            raise ValueError("'plain' is the absence of a texture and cannot be removed; remove the parts drawn plain "
                             "instead (e.g. 'body'), or measure a texture that is drawn (e.g. 'stripes').")
        if not isinstance(c, str) or c not in valid:
            if isinstance(c, str) and c in world.concept_names:  # a texture or colour in "ssc"
                raise ValueError(f"{c!r} is a {world.concept_kind(c)}, a property of parts, not a segment: the SSC "
                                 f"test adds segments (parts or contexts) to a blank image. Use mode='sdc' for it, or "
                                 f"order parts and contexts only: {', '.join(valid)}.")
            raise _unknown(world, c, valid, what)
    dup = sorted({c for c in concepts if concepts.count(c) > 1})
    if dup:
        raise ValueError(f"{what}s must be distinct, got {dup} more than once.")
    return concepts


def _model_dtype(model: nn.Module) -> torch.dtype:
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.float32


# --------------------------------------------------------------------------------------------------
# Shared pieces
# --------------------------------------------------------------------------------------------------


@torch.no_grad()
def _logits(model: nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Class scores ``[N, K]`` float64 on the CPU, in eval mode (restored), images cast to the model's dtype."""
    dev, dtype = model_device(model), _model_dtype(model)
    out = []
    with model_state(model, train=False):
        for i in range(0, images.shape[0], batch_size):
            z = model(images[i:i + batch_size].to(device=dev, dtype=dtype))
            if not isinstance(z, torch.Tensor) or z.dim() != 2:
                raise ValueError("The model must return class scores [B, K]; got "
                                 f"{tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__}.")
            out.append(z.double().cpu())
    return torch.cat(out)


def _concept_pixels(world: ConceptWorld, batch: SceneBatch, concepts: list[str]) -> torch.Tensor:
    """Visible pixels ``[N, C]`` (int64) of each concept in each scene, in chunks of scenes."""
    idx = torch.tensor([world.concept_names.index(c) for c in concepts], device=batch.images.device)
    out = []
    for s in range(0, len(batch), _MASK_CHUNK):
        sl = slice(s, s + _MASK_CHUNK)
        part = SceneBatch(batch.images[sl], batch.part_index[sl], batch.recipes[sl], world, batch.clutter_index[sl])
        out.append(part.concept_masks[:, idx].flatten(2).sum(-1).cpu())
    return torch.cat(out)


def _targets(target, recipes: Recipe, logits: torch.Tensor) -> torch.Tensor:
    """The class scored for each scene ``[N]``: its label, the model's prediction, or one class index."""
    n, k = len(recipes), logits.shape[1]
    if isinstance(target, str) and target == "label":
        t = recipes.label.cpu().long()
    elif target is None or (isinstance(target, str) and target == "predicted"):
        t = logits.argmax(1)
    else:
        return check_targets(target, n, classes=k, what="target", allow_predicted=False)
    if int(t.max()) >= k:
        raise ValueError(f"The model scores {k} classes but the scenes have labels up to {int(t.max())}; use a model "
                         "of this world (as many outputs as world.n_classes).")
    return t


def _effects_table(recipes, concepts, kinds, target, pixels, logit0, prob0, logit1, prob1) -> pd.DataFrame:
    """The long table of :func:`intervention_effects` from arrays ``[N]`` and ``[N, C]``."""
    import pandas as pd

    n, c = pixels.shape
    present = pixels > 0
    logit0, prob0 = np.repeat(logit0[:, None], c, 1), np.repeat(prob0[:, None], c, 1)
    df = pd.DataFrame({
        "scene": np.repeat(np.arange(n), c),
        "label": np.repeat(recipes.label.cpu().numpy(), c),
        "class": np.repeat(target.numpy(), c),
        "concept": np.tile(concepts, n),
        "kind": np.tile(kinds, n),
        "present": present.reshape(-1),
        "n_pixels": pixels.reshape(-1),
        "logit": logit0.reshape(-1),
        "logit_after": logit1.reshape(-1),
        "drop_logit": (logit0 - logit1).reshape(-1),
        "prob": prob0.reshape(-1),
        "prob_after": prob1.reshape(-1),
        "drop_prob": (prob0 - prob1).reshape(-1),
    })
    return df[EFFECT_COLUMNS]


# --------------------------------------------------------------------------------------------------
# Intervention importance
# --------------------------------------------------------------------------------------------------


def intervention_effects(
    model: nn.Module,
    world: ConceptWorld,
    recipes: Recipe,
    concepts: Sequence[str] | None = None,
    *,
    target="label",
    batch_size: int = 256,
    progress: bool = False,
) -> pd.DataFrame:
    """Per scene and concept: the class score before and after the concept is removed (the ground truth).

    Parameters
    ----------
    model : nn.Module
        Takes the world's images ``[B, 3, S, S]`` in [0, 1]; returns class scores ``[B, K]``.
    world : ConceptWorld
    recipes : Recipe
        ``N`` scenes (``world.sample(...)``).
    concepts : list of str, optional
        Names from ``world.concept_names`` except ``"plain"`` (see the module docstring); default all of them.
    target : "label", "predicted" or int or sequence of int
        The class whose score is measured: each scene's true class (default), the class the model predicts for
        the unedited scene, or given class indices.
    batch_size : int
        Images per forward pass.
    progress : bool
        A tqdm bar over concepts.

    Returns
    -------
    pandas.DataFrame
        ``N * len(concepts)`` rows (scene-major), columns :data:`EFFECT_COLUMNS`: ``scene`` (row of ``recipes``),
        ``label``, ``class`` (the target), ``concept``, ``kind``, ``present`` (the concept has visible pixels),
        ``n_pixels``, ``logit``/``logit_after``/``drop_logit = logit - logit_after`` and the same for the softmax
        probability ``prob``; the ``*_after`` and ``drop_*`` are NaN where ``present`` is False.

    Raises
    ------
    TypeError, ValueError
        For a world or recipes of the wrong type, empty recipes, an unknown concept (the message lists the valid
        ones), ``"plain"``, or a model that scores fewer classes than the labels need.
    """
    check_model(model)
    world = _check_world(world)
    recipes = _check_recipes(world, recipes)
    valid = _removable(world)
    concepts = valid if concepts is None else _check_concepts(world, concepts, valid, "concept")
    batch_size = check_positive_int(batch_size, "batch_size")
    dev = model_device(model)
    original = world.render(recipes, device=dev)
    logits = _logits(model, original.images, batch_size)
    t = _targets(target, recipes, logits)
    rows = torch.arange(len(recipes))
    logit0 = logits[rows, t]
    prob0 = logits.softmax(1)[rows, t]
    pixels = _concept_pixels(world, original, concepts)  # [N, C]
    del original
    logit1 = torch.full(pixels.shape, float("nan"), dtype=torch.float64)
    prob1 = logit1.clone()
    for j, c in enumerate(tqdm(concepts, desc="interventions", disable=not progress, leave=False)):
        sel = (pixels[:, j] > 0).nonzero().squeeze(1)
        if sel.numel() == 0:
            continue
        edited = world.render(world.remove(recipes[sel.to(recipes.label.device)], concepts=[c]), device=dev)
        z = _logits(model, edited.images, batch_size)  # every scene with the concept, one render
        logit1[sel, j] = z[torch.arange(sel.numel()), t[sel]]
        prob1[sel, j] = z.softmax(1)[torch.arange(sel.numel()), t[sel]]
    kinds = [world.concept_kind(c) for c in concepts]
    return _effects_table(recipes, concepts, kinds, t, pixels.numpy(), logit0.numpy(), prob0.numpy(), logit1.numpy(),
                          prob1.numpy())


def intervention_importance(
    model: nn.Module,
    world: ConceptWorld,
    recipes: Recipe,
    concepts: Sequence[str] | None = None,
    *,
    target="label",
    batch_size: int = 256,
    n_boot: int = 10000,
    confidence: float = 0.95,
    seed: int = 0,
    effects: pd.DataFrame | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Ground-truth importance of each concept for each class: the mean score drop when it is removed.

    Aggregates :func:`intervention_effects` over the scenes of each class (the ``class`` column: the target)
    in which the concept is present.

    Parameters
    ----------
    model, world, recipes, concepts, target, batch_size, progress :
        As :func:`intervention_effects`.
    n_boot, confidence, seed :
        The percentile bootstrap CI of each mean (:func:`xailib.metrics.bootstrap_ci`, the same seed for every
        group).
    effects : DataFrame, optional
        A table of :func:`intervention_effects` to aggregate instead of computing it (then ``model``, ``recipes``
        and ``concepts`` are not used).

    Returns
    -------
    pandas.DataFrame
        One row per (class, concept), classes sorted, concepts in the given order; columns
        :data:`IMPORTANCE_COLUMNS`: ``class``, ``class_name``, ``concept``, ``kind``, ``n`` (scenes of the class
        with the concept present), ``n_scenes`` (scenes of the class), ``drop_logit`` with ``drop_logit_low`` /
        ``drop_logit_high``, the same for ``drop_prob``, and ``rank`` within the class by ``drop_logit`` (1 = the
        largest drop, ties in the order of ``concepts``; concepts with ``n = 0`` have NaN drops and rank last,
        after every measured one).
    """
    import pandas as pd

    from xailib.metrics import bootstrap_ci

    n_boot = check_positive_int(n_boot, "n_boot")
    seed = check_seed(seed)
    world = _check_world(world)
    if effects is None:
        effects = intervention_effects(model, world, recipes, concepts, target=target, batch_size=batch_size,
                                       progress=progress)
    elif not isinstance(effects, pd.DataFrame) or any(c not in effects.columns for c in EFFECT_COLUMNS):
        raise ValueError(f"effects must be the DataFrame of intervention_effects (columns {EFFECT_COLUMNS}).")
    rows = []
    order = list(dict.fromkeys(effects["concept"]))
    scenes = effects.groupby("class")["scene"].nunique()
    for k in sorted(effects["class"].unique()):
        sub = effects[effects["class"] == k]
        for c in order:
            g = sub[(sub["concept"] == c) & sub["present"]]
            ci_l = bootstrap_ci(g["drop_logit"].to_numpy(), n_boot, confidence, seed)
            ci_p = bootstrap_ci(g["drop_prob"].to_numpy(), n_boot, confidence, seed)
            rows.append({"class": int(k), "class_name": world.class_names[k] if 0 <= k < world.n_classes else str(k),
                         "concept": c, "kind": world.concept_kind(c), "n": int(len(g)), "n_scenes": int(scenes[k]),
                         "drop_logit": ci_l.mean, "drop_logit_low": ci_l.low, "drop_logit_high": ci_l.high,
                         "drop_prob": ci_p.mean, "drop_prob_low": ci_p.low, "drop_prob_high": ci_p.high})
    out = pd.DataFrame(rows)
    out["rank"] = (out.groupby("class")["drop_logit"].rank(ascending=False, method="first", na_option="bottom")
                   .astype(int))
    return out[IMPORTANCE_COLUMNS]


def intervention_effects_reference(model: nn.Module, world: ConceptWorld, recipes: Recipe, concepts: Sequence[str],
                                   *, target="label") -> pd.DataFrame:
    """:func:`intervention_effects` literally: one scene, one concept, one render and one forward at a time."""
    check_model(model)
    world = _check_world(world)
    recipes = _check_recipes(world, recipes)
    concepts = _check_concepts(world, concepts, _removable(world), "concept")
    dev = model_device(model)
    n, c = len(recipes), len(concepts)
    pixels = np.zeros((n, c), dtype=np.int64)
    logit0, prob0 = np.zeros(n), np.zeros(n)
    logit1, prob1 = np.full((n, c), np.nan), np.full((n, c), np.nan)
    targets = []
    for i in range(n):
        scene = recipes[i]
        batch = world.render(scene, device=dev)
        z = _logits(model, batch.images, 1)[0]
        if isinstance(target, str) and target == "label":
            k = int(scene.label[0])
        elif target is None or target == "predicted":
            k = int(z.argmax())
        else:
            k = int(check_targets(target, n, classes=z.shape[0], allow_predicted=False)[i])
        targets.append(k)
        logit0[i], prob0[i] = float(z[k]), float(z.softmax(0)[k])
        for j, name in enumerate(concepts):
            pixels[i, j] = int(batch.concept_mask(name)[0].sum())
            if pixels[i, j] == 0:
                continue
            z1 = _logits(model, world.render(world.remove(scene, concepts=[name]), device=dev).images, 1)[0]
            logit1[i, j], prob1[i, j] = float(z1[k]), float(z1.softmax(0)[k])
    kinds = [world.concept_kind(x) for x in concepts]
    return _effects_table(recipes, concepts, kinds, torch.tensor(targets), pixels, logit0, prob0, logit1, prob1)


# --------------------------------------------------------------------------------------------------
# SSC / SDC curves
# --------------------------------------------------------------------------------------------------


def _valid_order(world: ConceptWorld, mode: str) -> list[str]:
    return world.part_names + world.context_names if mode == "ssc" else _removable(world)


def _edited(world: ConceptWorld, recipes: Recipe, top: list[str], mode: str) -> Recipe:
    """The recipes of step ``k = len(top)``: only ``top`` on the blank (``"ssc"``), or ``top`` removed (``"sdc"``)."""
    if mode == "sdc":
        return recipes.clone() if not top else world.remove(recipes, concepts=top)
    hidden_parts = [p for p in world.part_names if p not in top]
    hidden_contexts = [x for x in world.context_names if x not in top]
    return world.declutter(world.remove(recipes, parts=hidden_parts, concepts=hidden_contexts))


def _check_curve_args(model, world, recipes, order, mode, batch_size):
    check_model(model)
    world = _check_world(world)
    recipes = _check_recipes(world, recipes)
    mode = check_choice(mode, MODES, "mode")
    order = _check_concepts(world, order, _valid_order(world, mode), "concept")
    labels = torch.unique(recipes.label)
    if labels.numel() != 1:
        raise ValueError(f"concept_curves takes scenes of one class (the order is that class's), got labels "
                         f"{labels.tolist()}; select one, e.g. recipes[recipes.label == k].")
    batch_size = check_positive_int(batch_size, "batch_size")
    return world, recipes, order, mode, int(labels[0]), batch_size


def concept_curves(
    model: nn.Module,
    world: ConceptWorld,
    recipes: Recipe,
    order: Sequence[str],
    *,
    mode: str,
    batch_size: int = 256,
    progress: bool = False,
) -> pd.DataFrame:
    """Top-1 accuracy while the top-``k`` concepts of ``order`` are added (SSC) or removed (SDC), ``k = 0..K``.

    ACE's smallest sufficient / destroying concepts test (Ghorbani et al., 2019) as AfI runs it (Sec. 4.3,
    Fig. 2): a good importance order makes the SSC curve rise fast and the SDC curve fall fast.

    Parameters
    ----------
    model : nn.Module
    world : ConceptWorld
    recipes : Recipe
        Scenes of one class (``recipes[recipes.label == k]``).
    order : list of str
        Concepts, most important first. ``"ssc"``: parts and contexts; ``"sdc"``: any removable concept.
    mode : {"ssc", "sdc"}
        ``"ssc"``: step ``k`` shows only the top-``k`` concepts on the blank background (``k = 0``: the blank
        image); ``"sdc"``: step ``k`` is the scene with the top-``k`` concepts removed (``k = 0``: unchanged). See
        the module docstring.
    batch_size : int
    progress : bool
        A tqdm bar over ``k``.

    Returns
    -------
    pandas.DataFrame
        ``K + 1`` rows, columns :data:`CURVE_COLUMNS`: ``mode``, ``k``, ``concept`` (the one added/removed at step
        ``k``; ``""`` at 0), ``concepts_edited`` (the top ``k``, joined by ``"+"``), ``accuracy`` (fraction of
        scenes predicted as their class), ``n`` (scenes), ``original_accuracy`` (on the unedited scenes),
        ``mean_prob`` (mean softmax probability of the class).
    """
    import pandas as pd

    world, recipes, order, mode, label, batch_size = _check_curve_args(model, world, recipes, order, mode, batch_size)
    dev = model_device(model)
    n = len(recipes)

    def score(r: Recipe) -> tuple[float, float]:
        z = _logits(model, world.render(r, device=dev).images, batch_size)
        return float((z.argmax(1) == label).double().mean()), float(z.softmax(1)[:, label].mean())

    original, _ = score(recipes)
    rows = []
    for k in tqdm(range(len(order) + 1), desc=mode, disable=not progress, leave=False):
        acc, prob = score(_edited(world, recipes, order[:k], mode))  # every scene of step k in one render
        rows.append({"mode": mode, "k": k, "concept": order[k - 1] if k else "", "concepts_edited": "+".join(order[:k]),
                     "accuracy": acc, "mean_prob": prob, "n": n, "original_accuracy": original})
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


def concept_curves_reference(model: nn.Module, world: ConceptWorld, recipes: Recipe, order: Sequence[str], *,
                             mode: str) -> pd.DataFrame:
    """:func:`concept_curves` literally: each scene and step edited, rendered and classified on its own."""
    import pandas as pd

    world, recipes, order, mode, label, _ = _check_curve_args(model, world, recipes, order, mode, 1)
    dev = model_device(model)
    n = len(recipes)

    def predict_one(scene: Recipe) -> tuple[bool, float]:
        z = _logits(model, world.render(scene, device=dev).images, 1)[0]
        return int(z.argmax()) == label, float(z.softmax(0)[label])

    original = sum(predict_one(recipes[i])[0] for i in range(n)) / n
    rows = []
    for k in range(len(order) + 1):
        top = order[:k]
        hits, probs = 0, 0.0
        for i in range(n):
            scene = recipes[i]
            if mode == "sdc":
                for c in top:  # one concept at a time
                    scene = world.remove(scene, concepts=[c])
            else:
                scene = scene.clone()
                keep = [world.part_names.index(p) for p in top if p in world.part_names]
                present = torch.zeros_like(scene.present)
                present[:, keep] = scene.present[:, keep]
                scene.present = present
                ctx = int(scene.context[0])
                if ctx < 0 or world.context_names[ctx] not in top:
                    scene.context[:] = -1
                scene = world.declutter(scene)
            hit, prob = predict_one(scene)
            hits, probs = hits + hit, probs + prob
        rows.append({"mode": mode, "k": k, "concept": top[-1] if top else "", "concepts_edited": "+".join(top),
                     "accuracy": hits / n, "mean_prob": probs / n, "n": n, "original_accuracy": original})
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


def random_order(concepts: Sequence[str], n_orders: int, seed: int = 0) -> list[list[str]]:
    """``n_orders`` random permutations of ``concepts``: the random-order control of the SSC/SDC curves.

    Order ``i`` is ``numpy.random.default_rng(seed).permutation`` applied ``i + 1`` times in sequence from one
    generator, so the first orders do not depend on ``n_orders`` and the same seed gives the same orders.

    Returns
    -------
    list of list of str
    """
    if isinstance(concepts, str) or not isinstance(concepts, Sequence) or not concepts:
        raise ValueError(f"concepts must be a non-empty list of names, got {concepts!r}.")
    n_orders = check_positive_int(n_orders, "n_orders")
    seed = check_seed(seed)
    if seed < 0:
        raise ValueError(f"seed must be >= 0 (numpy's generator), got {seed}.")
    rng = np.random.default_rng(seed)
    items = list(concepts)
    return [[items[j] for j in rng.permutation(len(items))] for _ in range(n_orders)]

