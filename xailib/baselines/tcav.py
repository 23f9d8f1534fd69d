"""TCAV (Kim et al., 2018), the concept-attribution baseline of AfI (Secs. 4.3 and 4.5, Fig. 2), taken from Captum.

Testing with Concept Activation Vectors. For a layer ``l`` with flattened activations ``f_l(x) in R^F``:

* **CAV** ``v_C^l``: the normal of a linear classifier that separates the activations of a concept's images
  ``X_C`` from those of a random set ``X_R`` (captum ``TCAV.compute_cavs``; the classifier is captum's own
  ``DefaultClassifier`` -- sklearn ``SGDClassifier(alpha=0.01, max_iter=1000, tol=1e-3)`` on a 2/3 : 1/3
  train/test split -- made deterministic: :class:`SeededClassifier`). Captum stores a binary CAV as two rows
  ``[-w, w]``, one per concept of the pair, each pointing towards its concept.
* **Directional derivative** ``S_{C,k,l}(x) = grad_{f_l} h_k(f_l(x)) . v_C^l`` (Kim et al., Eq. 1), with
  ``h_k`` the logit of class ``k``; the layer gradient is captum's ``LayerGradientXActivation`` with
  ``multiply_by_inputs=False``, what ``TCAV.interpret`` uses.
* **TCAV score** ``TCAV_Q = |{x in X_k : S(x) > 0}| / |X_k|`` (Eq. 2, captum's ``sign_count``), and the
  magnitude score ``sum_x max(S(x), 0) / sum_x |S(x)|`` (the form in captum's docstring; captum's own
  ``magnitude`` output is the mean of ``S``, which is not bounded).

**Significance** (Kim et al., Sec. 3.2; the official ``tcav`` code's protocol): the concept is run against each of
``R`` random sets, giving ``R`` TCAV scores; the random sets are run against each other, giving the null scores --
for every pair ``i < j`` one CAV is trained and both of its rows are scored (``random_i`` against ``random_j`` and
``random_j`` against ``random_i``; the official code trains both orders separately, on the same data, which gives
the same two hyperplanes up to SGD noise), so ``R (R - 1)`` null scores. The concept's scores are compared with the
null scores by a two-sided Student t-test (``scipy.stats.ttest_ind``, equal variances, as the official code does);
``significant = p < alpha``, or ``p < alpha / m`` with ``bonferroni=True``, ``m`` the number of (concept, layer)
tests of the class. When both groups are constant the t statistic is undefined: ``p = 1`` if they are equal
(and 0 otherwise, which scipy already gives).

**Ranking concepts** (:func:`tcav_importance`): TCAV has no single score per (class, concept) -- one per layer.
We average over layers, twice: ``importance_raw`` is the mean TCAV score over layers, and ``importance`` the mean
with the score of every layer where the concept is *not* significant set to 0 (the TCAV paper shows only scores
that pass the test; a failed test means the concept is no different from a random direction there). A significantly
*low* score (the concept pushes the class down) keeps its low value, so it ranks low either way. ``importance``
is the column to rank by (AfI's SSC/SDC test, Fig. 2); ``importance_raw`` is kept for comparison.

**Choices**: CAVs are trained once per call and shared by the classes of :func:`tcav_class_table` (a CAV does
not depend on the class); with ``save_path=None`` captum's activations and CAVs live in a temporary folder removed
in ``finally``. With a ``save_path``, they go under ``save_path/<model_id>/`` where ``model_id`` is a hash of the
model's parameters and buffers, every set's images, the seed and the split ratio, so a folder can be reused across
calls without ever reading stale activations of another model or other images. Random sets ``random_sets[:n_random]``
are used. Images are cast to the model's dtype and moved to its device; the model runs in eval mode with
``requires_grad`` off (restored afterwards); every hook captum registers is removed by captum in ``finally``.

:func:`tcav_scores_reference` is the literal version: captum's ``TCAV.interpret`` on all images at once, one
experimental set at a time, the t-test in a loop; the tests hold :func:`tcav_scores` to it.

>>> concepts = [ConceptSet.from_conceptworld(world, c, n=30, seed=0) for c in ("stripes", "dots", "legs")]
>>> randoms = random_sets(world, n_sets=10, n=30, seed=1)
>>> table = tcav_scores(model, concepts, randoms, tiger_images, target=0, layers=model.stage_names[-2:])
>>> tcav_importance(table)                                   # one row per (class, concept), ranked
"""

from __future__ import annotations

import contextlib
import hashlib
import numbers
import os
import tempfile
import warnings
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from xailib.baselines._common import quiet_captum
from xailib.checks import (check_fraction, check_images, check_layers, check_model, check_positive_int, check_seed,
                           check_targets, model_device)
from xailib.data.concepts import ConceptSet
from xailib.data.sampling import mix_seed
from xailib.layers import get_layer, model_state

__all__ = [
    "COLUMNS",
    "IMPORTANCE_COLUMNS",
    "SeededClassifier",
    "tcav_scores",
    "tcav_class_table",
    "tcav_importance",
    "tcav_scores_reference",
]

#: Columns of :func:`tcav_scores` and :func:`tcav_class_table`, in order.
COLUMNS = ["class", "layer", "concept", "tcav_score", "tcav_score_std", "magnitude", "magnitude_std",
           "random_score", "random_score_std", "p_value", "p_threshold", "significant", "cav_accuracy",
           "n_runs", "n_null", "n_images"]
#: Columns of :func:`tcav_importance`, in order.
IMPORTANCE_COLUMNS = ["class", "concept", "importance", "importance_raw", "n_layers", "n_significant", "rank"]

_MODEL_ID = "xailib"


# --------------------------------------------------------------------------------------------------
# The classifier: captum's DefaultClassifier, seeded
# --------------------------------------------------------------------------------------------------


def _captum_classifier_base():
    from captum.concept import DefaultClassifier

    return DefaultClassifier


class SeededClassifier(_captum_classifier_base()):
    """Captum's ``DefaultClassifier`` made deterministic: the same seed gives the same CAV.

    Captum's default splits with Python's global ``random.shuffle`` and fits ``SGDClassifier`` without a
    ``random_state``, so two runs give different CAVs. This one keeps its model (captum's
    ``SkLearnSGDClassifier(alpha=0.01, max_iter=1000, tol=1e-3)``), its ``weights()`` (``[-w, w]`` for two
    concepts) and ``classes()``, and draws the split from a ``torch.Generator`` and the SGD's ``random_state``
    from :attr:`seed`, which :func:`tcav_scores` sets before each experimental set. Its held-out accuracy
    reads the sign of the one decision function of a two-concept classifier (captum's default takes the argmax
    of that single column, so it always predicts the first concept and reports about 1/2).

    Parameters
    ----------
    seed : int
    test_split : float
        Fraction of the examples held out to measure the CAV's accuracy (captum's ``test_split_ratio``), in
        ``[0, 1)``. The test split can be empty for tiny sets; the accuracy is then NaN.
    """

    def __init__(self, seed: int = 0, test_split: float = 0.33):  # no super().__init__: it warns about memory
        self.test_split = check_fraction(test_split, "test_split", high_open=True)
        self.reset(seed)

    def reset(self, seed: int) -> None:
        """Start over with ``seed``: a fresh, untrained SGD model and split generator."""
        from captum._utils.models.linear_model.model import SkLearnSGDClassifier

        self.seed = int(seed) % (2 ** 32)
        self.lm = SkLearnSGDClassifier(alpha=0.01, max_iter=1000, tol=1e-3, random_state=self.seed)
        self._calls = 0

    def train_and_eval(self, dataloader, test_split_ratio: float | None = None, **kwargs):
        """Fit on the activations ``[n, F]`` and concept ids ``[n]`` of ``dataloader``; return ``{"accs": ...}``."""
        ratio = self.test_split if test_split_ratio is None else test_split_ratio
        xs, ys = zip(*[(x, y) for x, y in dataloader])
        x, y = torch.cat(xs).float(), torch.cat(ys)  # float32, as captum's linear model (a double model's AVs)
        gen = torch.Generator().manual_seed(mix_seed(self.seed, self._calls))  # one split per layer of a set
        self._calls += 1
        # stratified: each concept keeps int((1 - ratio) * n_c) >= 1 examples for training, so that a tiny set
        # never leaves the classifier a single class to fit
        tests, trains = [], []
        for c in torch.unique(y).tolist():
            idx = torch.nonzero(y == c)[:, 0]
            idx = idx[torch.randperm(len(idx), generator=gen).to(idx.device)]
            n_c = int(ratio * len(idx))
            tests.append(idx[:n_c])
            trains.append(idx[n_c:])
        test, train = torch.cat(tests), torch.cat(trains)
        n_test = len(test)
        self.lm.device = x.device
        self.lm.fit(DataLoader(TensorDataset(x[train], y[train])))
        if n_test == 0:
            return {"accs": torch.tensor(float("nan"))}
        out = self.lm(x[test]).detach().cpu()  # [n, 1] for two concepts (sklearn's one decision function)
        idx = (out[:, 0] > 0).long() if out.shape[1] == 1 else out.argmax(1)
        pred = self.lm.classes()[idx]
        return {"accs": (pred.long() == y[test].long().cpu()).float().mean()}


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------


def _check_sets(sets, what: str, minimum: int, hint: str) -> list[ConceptSet]:
    if isinstance(sets, ConceptSet):
        sets = [sets]
    if not isinstance(sets, Sequence) or isinstance(sets, (str, bytes)):
        raise TypeError(f"{what} must be a list of ConceptSet, got {type(sets).__name__}; {hint}")
    sets = list(sets)
    bad = [type(s).__name__ for s in sets if not isinstance(s, ConceptSet)]
    if bad:
        raise TypeError(f"{what} must hold ConceptSets, got {bad[0]}; wrap tensors with "
                        f"ConceptSet.from_tensors(name, images). {hint}")
    if len(sets) < minimum:
        raise ValueError(f"{what} holds {len(sets)} set(s); TCAV needs at least {minimum}. {hint}")
    small = [s.name for s in sets if len(s) < 2]
    if small:
        raise ValueError(f"Set(s) {small} of {what} hold fewer than 2 images; a CAV needs at least 2 per set "
                         "(TCAV uses 50 or more).")
    return sets


def _model_dtype(model: nn.Module) -> torch.dtype:
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def _check_common(model, concept_sets, random_sets, layers, n_random, alpha, bonferroni, batch_size, seed,
                  save_path, test_split):
    check_model(model)
    sets = _check_sets(concept_sets, "concept_sets", 1,
                       "Pass e.g. [ConceptSet.from_conceptworld(world, 'stripes', n=50, seed=0)].")
    rnds = _check_sets(random_sets, "random_sets", 2,
                       "The significance test compares the concept with random-vs-random scores, so give at least "
                       "2 random sets (TCAV uses 10 or more): random_sets(world, n_sets=10, n=50, seed=1).")
    if n_random is not None:
        n_random = check_positive_int(n_random, "n_random", hint=" (how many of random_sets to use) or None")
        if not 2 <= n_random <= len(rnds):
            raise ValueError(f"n_random must be between 2 and len(random_sets) = {len(rnds)}, got {n_random}.")
        rnds = rnds[:n_random]
    names = [s.name for s in sets + rnds]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"Set names must be distinct across concept_sets and random_sets, got {dup} more than once; "
                         "rename with set.renamed(...).")
    shapes = {s.image_shape for s in sets + rnds}
    if len(shapes) != 1:
        raise ValueError(f"Every concept and random set must hold images of one shape (their activations are "
                         f"compared), got {sorted(shapes)}.")
    layers = check_layers(model, layers)
    if len(set(layers)) != len(layers):
        raise ValueError(f"layers must be distinct, got {layers}.")
    alpha = check_fraction(alpha, "alpha", low_open=True, high_open=True, hint=" (e.g. 0.05)")
    if not isinstance(bonferroni, bool):
        raise TypeError(f"bonferroni must be True or False, got {bonferroni!r}.")
    batch_size = check_positive_int(batch_size, "batch_size")
    seed = check_seed(seed)
    if save_path is not None and not isinstance(save_path, (str, os.PathLike)):
        raise TypeError(f"save_path must be a folder path or None (a temporary folder), got {type(save_path).__name__}.")
    test_split = check_fraction(test_split, "test_split", high_open=True, hint=" (captum's default 0.33)")
    return sets, rnds, layers, alpha, batch_size, seed, test_split


def _check_group_images(images, model, shape, what: str) -> torch.Tensor:
    images = check_images(images, model, what=what, move=False)
    if tuple(images.shape[1:]) != tuple(shape):
        raise ValueError(f"{what} are {tuple(images.shape)} but the concept sets hold images {tuple(shape)}; TCAV "
                         "compares their activations, so give images of one shape.")
    return images


def _check_target(target, model, images) -> int:
    if isinstance(target, torch.Tensor) and target.numel() == 1:
        target = int(target.reshape(()))
    if isinstance(target, bool) or not isinstance(target, numbers.Integral):
        raise TypeError(f"target must be one class index (an int): the class whose images are given; got "
                        f"{type(target).__name__} {target!r}. For several classes use tcav_class_table.")
    probe = images[:1].to(_model_dtype(model))  # counts the model's classes by one forward if it does not name them
    return int(check_targets(int(target), 1, model=model, images=probe, allow_predicted=False)[0])


# --------------------------------------------------------------------------------------------------
# The computation
# --------------------------------------------------------------------------------------------------


def _hash_id(model: nn.Module, sets: list[ConceptSet], seed: int, test_split: float) -> str:
    """``xailib-<16 hex>``: the model's state, every set's images, the seed and the split, hashed."""
    h = hashlib.sha1()
    for t in list(model.state_dict().values()) + [s.images for s in sets]:
        if isinstance(t, torch.Tensor):
            t = t.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    h.update(f"{seed}-{test_split}-{[s.name for s in sets]}".encode())
    return f"{_MODEL_ID}-{h.hexdigest()[:16]}"


@contextlib.contextmanager
def _workdir(save_path) -> Iterator[str]:
    if save_path is not None:
        os.makedirs(save_path, exist_ok=True)
        yield os.fspath(save_path)
        return
    tmp = tempfile.TemporaryDirectory(prefix="xailib-tcav-")
    try:
        yield tmp.name
    finally:
        tmp.cleanup()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """captum's notices that are expected here, and scipy's about constant groups."""
    with quiet_captum(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Creating a tensor from a list of numpy.ndarrays.*")
        warnings.filterwarnings("ignore", message=".*Precision loss occurred in moment calculation.*")
        warnings.filterwarnings("ignore", message=".*catastrophic cancellation.*")
        warnings.filterwarnings("ignore", category=FutureWarning, module="captum")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="captum")
        yield


class _Experiment:
    """The captum objects of one call: a ``TCAV`` on ``root``, one ``Concept`` per set, the pairs to run."""

    def __init__(self, model, sets, rnds, layers, root, model_id, batch_size, seed, test_split):
        from captum.concept import TCAV, Concept

        dev, dtype = model_device(model), _model_dtype(model)
        self.classifier = SeededClassifier(seed, test_split)
        self.tcav = TCAV(model, layers, model_id=model_id, classifier=self.classifier, save_path=root)
        self.seed = seed
        self.layers = layers
        # captum names files after Concept.identifier ("<name>-<id>"), so internal names stay path-safe
        self.concepts = [Concept(i, f"c{i}", _loader(s.images, dev, dtype, batch_size)) for i, s in enumerate(sets)]
        self.randoms = [Concept(len(sets) + i, f"r{i}", _loader(s.images, dev, dtype, batch_size))
                        for i, s in enumerate(rnds)]
        R = len(rnds)
        #: (kind, index a, index b) -> [Concept, Concept]; "c": concept a vs random b, "r": random a vs random b
        self.pairs = {("c", c, r): [self.concepts[c], self.randoms[r]] for c in range(len(sets)) for r in range(R)}
        self.pairs.update({("r", i, j): [self.randoms[i], self.randoms[j]] for i in range(R) for j in range(i + 1, R)})

    def train(self, progress: bool = False) -> None:
        """One CAV per pair and layer (captum ``compute_cavs``), each seeded by ``(seed, pair)``."""
        for key in tqdm(self.pairs, desc="CAVs", disable=not progress, leave=False):
            self.classifier.reset(mix_seed(self.seed, {"c": 0, "r": 1}[key[0]], key[1], key[2]))
            self.tcav.compute_cavs([self.pairs[key]])

    def directions(self, layer: str) -> tuple[torch.Tensor, torch.Tensor]:
        """CAV rows ``[E, 2, F]`` (float32) of every pair at ``layer``, in the order of each pair's concepts, and
        the CAV accuracies ``[E]``."""
        from captum.concept._utils.common import concepts_to_str

        rows, accs = [], []
        for pair in self.pairs.values():
            stats = self.tcav.cavs[concepts_to_str(pair)][layer].stats
            classes = [int(c) for c in np.asarray(stats["classes"]).reshape(-1)]
            w = torch.as_tensor(stats["weights"]).detach().float().cpu()  # [2, F], rows in the order of classes
            rows.append(w[[classes.index(c.id) for c in pair]])
            acc = stats.get("accs", float("nan"))
            accs.append(float(acc) if acc is not None else float("nan"))
        return torch.stack(rows), torch.tensor(accs, dtype=torch.float64)

    def gradients(self, images: torch.Tensor, target: int, layer: str, batch_size: int) -> torch.Tensor:
        """``d h_target / d f_layer`` flattened, ``[N, F]`` float32 on the CPU: captum's layer attribution of
        ``TCAV.interpret`` (``LayerGradientXActivation``, ``multiply_by_inputs=False``), in batches."""
        model = self.tcav.model
        dev, dtype = model_device(model), _model_dtype(model)
        method = self.tcav.layer_attr_method
        method.layer = get_layer(model, layer)
        out = []
        for i in range(0, images.shape[0], batch_size):
            x = images[i:i + batch_size].to(device=dev, dtype=dtype)
            g = method.attribute(x, target=target, attribute_to_layer_input=False)
            g = g[0] if isinstance(g, tuple) else g
            out.append(g.detach().reshape(g.shape[0], -1).float().cpu())
        return torch.cat(out)


def _loader(images: torch.Tensor, dev, dtype, batch_size: int) -> DataLoader:
    """A DataLoader of image batches ``[b, C, H, W]`` on the model's device and dtype (a captum Concept's data)."""
    return DataLoader(images.to(device=dev, dtype=dtype), batch_size=batch_size, shuffle=False)


def _scores(S: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Sign count ``mean(S > 0)`` and magnitude ``sum(S+) / sum(|S|)`` (NaN when every ``S`` is 0) over images:
    ``S [..., N]`` -> ``[...]``."""
    S = S.double()
    sign = (S > 0).double().mean(-1)
    total = S.abs().sum(-1)
    mag = torch.where(total > 0, S.clamp(min=0).sum(-1) / total.clamp(min=1e-300), torch.full_like(total, np.nan))
    return sign.numpy(), mag.numpy()


def _t_test(concept: np.ndarray, null: np.ndarray) -> float:
    """Two-sided Student t-test of the concept's scores against the null scores (``p = 1`` for equal constants)."""
    from scipy.stats import ttest_ind

    if np.ptp(concept) == 0 and np.ptp(null) == 0:
        return 1.0 if concept[0] == null[0] else 0.0
    return float(ttest_ind(concept, null).pvalue)


def _rows(k, layer, names, sign_c, mag_c, sign_n, mag_n, acc_c, n_images, threshold) -> list[dict]:
    """Table rows of one (class, layer): ``sign_c``, ``mag_c``, ``acc_c`` ``[C, R]``, ``sign_n``, ``mag_n`` ``[R(R-1)]``."""
    rows = []
    for c, name in enumerate(names):
        p = _t_test(sign_c[c], sign_n)
        rows.append({
            "class": k, "layer": layer, "concept": name,
            "tcav_score": float(sign_c[c].mean()), "tcav_score_std": float(sign_c[c].std()),
            "magnitude": float(mag_c[c].mean()), "magnitude_std": float(mag_c[c].std()),
            "random_score": float(sign_n.mean()), "random_score_std": float(sign_n.std()),
            "p_value": p, "p_threshold": threshold, "significant": bool(p < threshold),
            "cav_accuracy": float(np.nanmean(acc_c[c])) if np.isfinite(acc_c[c]).any() else float("nan"),
            "n_runs": int(sign_c.shape[1]), "n_null": int(sign_n.shape[0]), "n_images": int(n_images),
        })
    return rows


def _run(model, sets, rnds, groups, layers, alpha, bonferroni, batch_size, seed, save_path, test_split,
         progress) -> pd.DataFrame:
    """The TCAV table of ``groups`` (a list of ``(class k, images [N_k, C, H, W])``), CAVs trained once."""
    C, R = len(sets), len(rnds)
    threshold = alpha / (C * len(layers)) if bonferroni else alpha
    model_id = _MODEL_ID if save_path is None else _hash_id(model, sets + rnds, seed, test_split)
    rows: list[dict] = []
    with _workdir(save_path) as root, model_state(model, train=False, requires_grad=False), _quiet():
        exp = _Experiment(model, sets, rnds, layers, root, model_id, batch_size, seed, test_split)
        exp.train(progress)
        n_c = C * R  # exp.pairs holds the concept pairs first (concept-major), then the random pairs
        for layer in layers:
            D, acc = exp.directions(layer)  # [E, 2, F], [E]
            for k, images in groups:
                G = exp.gradients(images, k, layer, batch_size)  # [N, F]
                if G.shape[1] != D.shape[2]:
                    raise ValueError(f"Layer {layer!r}: the class gradients have {G.shape[1]} features but the CAVs "
                                     f"{D.shape[2]}; choose a layer whose output is one tensor (a conv, a ReLU, a "
                                     "block), and give images of the concept sets' shape.")
                S = torch.einsum("nf,eaf->ean", G, D)  # [E, 2, N] directional derivatives
                sign, mag = _scores(S)  # [E, 2]
                sign_c, mag_c = sign[:n_c, 0].reshape(C, R), mag[:n_c, 0].reshape(C, R)
                sign_n, mag_n = sign[n_c:].reshape(-1), mag[n_c:].reshape(-1)  # both rows of every random pair
                rows += _rows(k, layer, [s.name for s in sets], sign_c, mag_c, sign_n, mag_n,
                              acc[:n_c].numpy().reshape(C, R), images.shape[0], threshold)
    return pd.DataFrame(rows, columns=COLUMNS)


# --------------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------------


def tcav_scores(
    model: nn.Module,
    concept_sets: Sequence[ConceptSet],
    random_sets: Sequence[ConceptSet],
    images: torch.Tensor,
    target: int,
    layers: str | Sequence[str],
    *,
    n_random: int | None = None,
    alpha: float = 0.05,
    bonferroni: bool = False,
    batch_size: int = 64,
    seed: int = 0,
    save_path: str | os.PathLike | None = None,
    test_split: float = 0.33,
    progress: bool = False,
) -> pd.DataFrame:
    """TCAV scores of concepts for one class, with TCAV's significance test (Kim et al., 2018; captum).

    See the module docstring for the score, the test and the choices.

    Parameters
    ----------
    model : nn.Module
        Returns class logits ``[B, K]``.
    concept_sets : list of ConceptSet
        The concepts' example images ``[N_c, C, H, W]`` in [0, 1] (e.g. ``ConceptSet.from_conceptworld``);
        distinct names, at least 2 images each.
    random_sets : list of ConceptSet
        Random benchmark sets ``random_0, random_1, ...`` (:func:`xailib.data.random_sets`), at least 2.
    images : Tensor ``[N, C, H, W]``
        Images of the class ``target`` (TCAV's ``X_k``), the shape of the concept images.
    target : int
        The class index ``k``.
    layers : str or list of str
        Dotted layer names (:func:`xailib.layers.named_layers`); each must output one tensor.
    n_random : int, optional
        Use the first ``n_random`` random sets (``2 <= n_random <= len(random_sets)``); default all.
    alpha : float
        Significance level of the t-test.
    bonferroni : bool
        Test at ``alpha / (len(concept_sets) * len(layers))``.
    batch_size : int
        Images per forward/backward pass (concept activations and class gradients).
    seed : int
        Seeds every CAV's split and SGD; the same seed gives the same table.
    save_path : path-like, optional
        Keep captum's activations and CAVs under ``save_path/<model_id>/`` (see the module docstring); default a
        temporary folder, removed at the end.
    test_split : float
        Fraction of each pair's examples held out for the CAV accuracy (captum's 0.33).
    progress : bool
        A tqdm bar over the CAV trainings.

    Returns
    -------
    pandas.DataFrame
        One row per (layer, concept), columns :data:`COLUMNS`: ``class`` (= ``target``), ``layer``, ``concept``;
        ``tcav_score`` and ``tcav_score_std`` (mean and std over the ``R`` random runs of the sign count),
        ``magnitude``/``magnitude_std``, ``random_score``/``random_score_std`` (the ``R (R - 1)`` null scores),
        ``p_value``, ``p_threshold`` (``alpha`` or its Bonferroni share), ``significant``, ``cav_accuracy``
        (mean held-out accuracy of the concept's CAVs), ``n_runs`` (``R``), ``n_null``, ``n_images``.

    Raises
    ------
    TypeError, ValueError
        For sets that are not ConceptSets, fewer than 1 concept or 2 random sets, sets of under 2 images, repeated
        names, images of another shape, an unknown layer (the message lists the valid ones), a target that is not
        one class index of the model.
    """
    sets, rnds, layers, alpha, batch_size, seed, test_split = _check_common(
        model, concept_sets, random_sets, layers, n_random, alpha, bonferroni, batch_size, seed, save_path,
        test_split)
    images = _check_group_images(images, model, sets[0].image_shape, "images")
    k = _check_target(target, model, images)
    return _run(model, sets, rnds, [(k, images)], layers, alpha, bonferroni, batch_size, seed, save_path,
                test_split, progress)


def tcav_class_table(
    model: nn.Module,
    concept_sets: Sequence[ConceptSet],
    random_sets: Sequence[ConceptSet],
    images: torch.Tensor,
    labels,
    classes,
    layers: str | Sequence[str],
    *,
    n_random: int | None = None,
    alpha: float = 0.05,
    bonferroni: bool = False,
    batch_size: int = 64,
    seed: int = 0,
    save_path: str | os.PathLike | None = None,
    test_split: float = 0.33,
    progress: bool = False,
) -> pd.DataFrame:
    """:func:`tcav_scores` for several classes: one row per (class, layer, concept), CAVs trained once.

    Parameters
    ----------
    images : Tensor ``[N, C, H, W]``
        Images of any of the classes.
    labels : int tensor or sequence ``[N]``
        The class of each image; class ``k`` is scored on ``images[labels == k]``.
    classes : sequence of int, or None
        The classes to score; ``None``: every class in ``labels``, sorted.
    Other parameters
        As :func:`tcav_scores`; with ``bonferroni=True`` each class is its own family of
        ``len(concept_sets) * len(layers)`` tests.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`COLUMNS`, classes in the order of ``classes``.
    """
    sets, rnds, layers, alpha, batch_size, seed, test_split = _check_common(
        model, concept_sets, random_sets, layers, n_random, alpha, bonferroni, batch_size, seed, save_path,
        test_split)
    images = _check_group_images(images, model, sets[0].image_shape, "images")
    labels = check_targets(labels, images.shape[0], model=model, images=images[:1].to(_model_dtype(model)),
                           what="label", allow_predicted=False)
    if classes is None:
        classes = sorted(set(labels.tolist()))
    if isinstance(classes, numbers.Integral) and not isinstance(classes, bool):
        classes = [int(classes)]
    if isinstance(classes, torch.Tensor):
        classes = classes.reshape(-1).tolist()
    if not isinstance(classes, Sequence) or isinstance(classes, (str, bytes)) or not classes:
        raise ValueError(f"classes must be a non-empty list of class indices or None, got {classes!r}.")
    ks = [_check_target(k, model, images) for k in classes]
    if len(set(ks)) != len(ks):
        raise ValueError(f"classes must be distinct, got {ks}.")
    groups = []
    for k in ks:
        sel = labels == k
        if not bool(sel.any()):
            present = sorted(set(labels.tolist()))
            raise ValueError(f"No image has label {k}; labels hold classes {present}. Drop {k} from classes or add "
                             "its images.")
        groups.append((k, images[sel.to(images.device)]))
    return _run(model, sets, rnds, groups, layers, alpha, bonferroni, batch_size, seed, save_path, test_split,
                progress)


def tcav_importance(table: pd.DataFrame) -> pd.DataFrame:
    """One TCAV importance per (class, concept), for ranking concepts: the layers of ``table`` averaged.

    ``importance_raw`` = mean over layers of ``tcav_score``; ``importance`` = the same mean with every
    non-significant layer's score set to 0 (the column to rank by; see the module docstring); ``n_layers``,
    ``n_significant``; ``rank`` within the class (1 = most important; by ``importance``, ties by
    ``importance_raw``, then by name).

    Parameters
    ----------
    table : DataFrame
        From :func:`tcav_scores` or :func:`tcav_class_table` (columns ``class``, ``layer``, ``concept``,
        ``tcav_score``, ``significant``).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`IMPORTANCE_COLUMNS`, sorted by class and rank.
    """
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"table must be the DataFrame of tcav_scores or tcav_class_table, got {type(table).__name__}.")
    missing = [c for c in ("class", "layer", "concept", "tcav_score", "significant") if c not in table.columns]
    if missing:
        raise ValueError(f"table lacks column(s) {missing}; pass the DataFrame of tcav_scores or tcav_class_table.")
    if table.empty:
        raise ValueError("table is empty; nothing to rank.")
    t = table.assign(masked=table["tcav_score"].where(table["significant"].astype(bool), 0.0),
                     sig=table["significant"].astype(int))
    out = (t.groupby(["class", "concept"], sort=False)
           .agg(importance=("masked", "mean"), importance_raw=("tcav_score", "mean"), n_layers=("layer", "nunique"),
                n_significant=("sig", "sum"))
           .reset_index())
    out = out.sort_values(["class", "importance", "importance_raw", "concept"], ascending=[True, False, False, True],
                          kind="stable").reset_index(drop=True)
    out["rank"] = out.groupby("class").cumcount() + 1
    return out[IMPORTANCE_COLUMNS]


# --------------------------------------------------------------------------------------------------
# The literal reference
# --------------------------------------------------------------------------------------------------


def tcav_scores_reference(
    model: nn.Module,
    concept_sets: Sequence[ConceptSet],
    random_sets: Sequence[ConceptSet],
    images: torch.Tensor,
    target: int,
    layers: str | Sequence[str],
    *,
    n_random: int | None = None,
    alpha: float = 0.05,
    bonferroni: bool = False,
    batch_size: int = 64,
    seed: int = 0,
    test_split: float = 0.33,
) -> pd.DataFrame:
    """:func:`tcav_scores` the literal way: captum's ``TCAV.interpret`` on all images, one pair at a time.

    The same CAVs (the same seeded classifier, the same pairs); sign counts straight from captum's output, the
    t-test in a loop (``batch_size`` only batches the concept activations, as in :func:`tcav_scores`, so that
    both train on the same numbers). Columns ``class``, ``layer``, ``concept``, ``tcav_score``, ``tcav_score_std``,
    ``random_score``, ``p_value``, ``significant``. Slow; for the tests.
    """
    sets, rnds, layers, alpha, batch_size, seed, test_split = _check_common(
        model, concept_sets, random_sets, layers, n_random, alpha, bonferroni, batch_size, seed, None, test_split)
    images = _check_group_images(images, model, sets[0].image_shape, "images")
    k = _check_target(target, model, images)
    threshold = alpha / (len(sets) * len(layers)) if bonferroni else alpha
    R = len(rnds)
    rows = []
    with _workdir(None) as root, model_state(model, train=False, requires_grad=False), _quiet():
        exp = _Experiment(model, sets, rnds, layers, root, _MODEL_ID, batch_size, seed, test_split)
        x = images.to(device=model_device(model), dtype=_model_dtype(model))
        result = {}
        for key, pair in exp.pairs.items():
            exp.classifier.reset(mix_seed(seed, {"c": 0, "r": 1}[key[0]], key[1], key[2]))
            out = exp.tcav.interpret(x, [pair], target=k)
            (scores,) = out.values()
            result[key] = {layer: scores[layer]["sign_count"].double().cpu().numpy() for layer in layers}
        for layer in layers:
            null = []
            for i in range(R):
                for j in range(i + 1, R):
                    null += list(result[("r", i, j)][layer])  # random_i vs random_j, and random_j vs random_i
            null = np.array(null)
            for c, s in enumerate(sets):
                runs = np.array([result[("c", c, r)][layer][0] for r in range(R)])
                p = _t_test(runs, null)
                rows.append({"class": k, "layer": layer, "concept": s.name, "tcav_score": float(runs.mean()),
                             "tcav_score_std": float(runs.std()), "random_score": float(null.mean()),
                             "p_value": p, "significant": bool(p < threshold)})
    return pd.DataFrame(rows)


# ---- TCAV in the shared registry: a concept method ---------------------------------------------------------------

def tcav_concepts(model, images, targets, layer, *, concept_sets=None, random_sets=None, layers=None,
                  alpha: float = 0.05, batch_size: int = 64, seed: int = 0) -> torch.Tensor:
    """TCAV importance (:func:`tcav_importance`, layers averaged) of each concept set for each image's target class,
    scored on the images of that class: ``[B, P]`` (every image of a class gets the class's scores)."""
    from xailib.baselines._common import class_concept_rows, concept_names

    names = concept_names(concept_sets)
    layers = list(layers) if layers is not None else list(getattr(model, "stage_names", [])[-2:])
    if not layers:
        raise ValueError("TCAV needs layers=[...] (the layers whose CAVs are averaged), e.g. the last two stages.")
    classes = sorted({int(t) for t in targets.tolist()})
    table = tcav_importance(tcav_class_table(model, list(concept_sets), list(random_sets), images, targets, classes,
                                             layers, alpha=alpha, batch_size=batch_size, seed=seed))
    return class_concept_rows(table, targets, names, value="importance")


def _register() -> None:
    from xailib.baselines.registry import register

    register("TCAV", tcav_concepts, kind="concept", requires=("concept_sets", "random_sets"),
             hint="pass the probe sets of the concepts (ConceptSet, e.g. xailib.afi.evaluation.part_probe_sets) and "
                  "at least two random sets (xailib.data.concepts.random_sets).")


_register()
