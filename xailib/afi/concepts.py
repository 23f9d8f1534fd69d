"""AfI quantitative concept attribution: concept importance by the MMD of the meta-detectors (Secs. 3.2, 4.5).

Paper: "Towards Global Explanations of Convolutional Neural Networks with Concept Attribution" (AfI, Wu et al.).
For a class ``k`` with meta-detectors ``f_l = sum_c w_l^c A_l^c`` (Eq. 9, :func:`xailib.afi.attribution.meta_detector`),
each probe image is represented by the flattened output ``f_l(x)`` of each chosen ("middle") layer ``l``. For a
concept ``c`` with probe images ``X_c`` and a random benchmark set ``R``::

    M_{k,c}     = sum_l MMD^2(f_l(X_c), f_l(R))                  (Sec. 3.2: "we sum the MMD values ... in all
                                                                 the middle layers")
    score_{k,c} = max(M_{k,c}, 0) / B_k                          ("the normalized results")

with the MMD of Gretton et al. (2012): a Gaussian RBF kernel, unbiased estimator, bandwidth by the median heuristic
of the pooled sample per (class, layer, concept) -- :func:`xailib.metrics.mmd2` and friends.

Choices the paper leaves open, and ours:

* **Normalisation** ``B_k``: ``"sum"`` (default) divides by the sum over the concepts of the class, so the
  scores of one class sum to 1 and read as each concept's share of what the meta-detector tells apart; a share is
  comparable across classes and draws, whereas ``"max"`` (the top concept gets 1) throws away how far ahead the top
  concept is. Negative estimates (the unbiased ``MMD^2_u`` fluctuates around 0 when a concept is no different from
  the random set) are clipped at 0 first, so a share is never negative; a class whose every estimate is <= 0 gets
  scores 0 (not NaN). The ``mmd2`` column keeps the raw, unclipped ``M_{k,c}``.
* **Draws** (Sec. 4.5: "for each concept we randomly select the same number of images ... then fix a random
  benchmark set of the same size", 100 runs): each of ``n_draws`` draws takes ``n_per_draw`` images of every
  concept and ``n_per_draw`` of the random set (one random subset per draw, shared by the concepts), scores are
  normalised within the draw, and the table reports their mean, standard deviation and a bootstrap CI of the mean
  (:func:`xailib.metrics.bootstrap_ci`). Without ``n_per_draw`` the one draw uses every image, and then every
  concept set and the random set must have the same size (the paper's protocol, and the only way to give each
  concept the same sample size without discarding images silently).
* **Significance**: a permutation test per class and concept on the *whole* concept and random sets (the most
  images, sizes may differ), statistic ``M_{k,c}`` (the same permutation of the images for every layer), bandwidths
  fixed from the pooled sample, ``p = (1 + #{perm >= observed}) / (1 + n_perm)``. ``correction`` ("holm" or
  "bonferroni", default none) adjusts the p-values of each class's concepts as one family (each class is its own
  question, as each panel of Fig. 4); ``significant = p_adjusted <= alpha``.

Everything after the forward passes is batched over classes, layers, concepts, draws and permutations: one
distance matrix per layer (layers differ in width) of each concept's pooled sample, assembled from blocks so that
the random set's own distances are computed once (:func:`_pooled_sq_dists`), from which every draw and permutation
takes its kernel sums (:func:`xailib.metrics.mmd2_from_kernel`). With one draw of every image the draw's statistic is
the test's observed one, computed once. :func:`concept_importance_reference`
is the literal loop version the tests hold it to.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from xailib.afi.attribution import _check_distinct_layers, check_cis, meta_detector, meta_detector_reference
from xailib.checks import (check_choice, check_fraction, check_images, check_model, check_positive_int,
                           check_seed, model_device)
from xailib.data.concepts import ConceptSet
from xailib.data.sampling import mix_seed, subset_indices
from xailib.metrics import (adjust_p_values, bootstrap_ci, gaussian_kernel, median_heuristic, mmd2_from_kernel,
                            mmd2_reference, pairwise_sq_dists, random_partitions)

__all__ = ["COLUMNS", "concept_importance", "concept_importance_reference", "draw_indices"]

#: The columns of :func:`concept_importance`'s table, in order.
COLUMNS = ["class", "concept", "score", "score_std", "ci_low", "ci_high", "mmd2", "p_value", "p_adjusted",
           "significant", "n_concept", "n_random", "n_per_draw", "n_draws"]

_NORMALIZE = ("sum", "max", "none")
_CORRECTIONS = ("holm", "bonferroni")


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------


def _as_set(item, name: str | None) -> ConceptSet:
    if isinstance(item, ConceptSet):
        return item if name is None or name == item.name else item.renamed(name)
    if isinstance(item, torch.Tensor):
        if item.dim() == 4 and item.shape[0] == 0:
            raise ValueError(f"Probe set {name!r} is empty {tuple(item.shape)}; give it at least two images.")
        return ConceptSet.from_tensors(name or "concept", item)
    raise TypeError(f"A probe set must be a ConceptSet or a Tensor [N, C, H, W] in [0, 1], got "
                    f"{type(item).__name__}{f' for {name!r}' if name else ''}.")


def _check_concept_sets(concept_sets) -> list[ConceptSet]:
    if isinstance(concept_sets, ConceptSet):
        sets = [concept_sets]
    elif isinstance(concept_sets, Mapping):
        sets = [_as_set(v, str(k)) for k, v in concept_sets.items()]
    elif isinstance(concept_sets, Sequence) and not isinstance(concept_sets, (str, bytes)):
        if any(isinstance(s, torch.Tensor) for s in concept_sets):
            raise TypeError("concept_sets holds bare tensors; name them: pass a dict {'stripes': images, ...} or "
                            "ConceptSets (ConceptSet.from_tensors('stripes', images)).")
        sets = [_as_set(s, None) for s in concept_sets]
    else:
        raise TypeError(f"concept_sets must be a ConceptSet, a list of them, or a dict name -> images [N, C, H, W]; "
                        f"got {type(concept_sets).__name__}.")
    if not sets:
        raise ValueError("concept_sets is empty; pass at least one probe concept set, e.g. "
                         "[ConceptSet.from_conceptworld(world, 'stripes', n=50, seed=0)].")
    names = [s.name for s in sets]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"Concept names must be distinct, got {dup} more than once; rename with set.renamed(...).")
    return sets


def _check_random_set(random_set) -> ConceptSet:
    if isinstance(random_set, (list, tuple)):
        raise TypeError("random_set must be one random benchmark set (a ConceptSet or a Tensor [M, C, H, W]); for "
                        "random_sets(...) take one of them, e.g. random_sets(world, 1, n=50)[0].")
    return _as_set(random_set, "random" if isinstance(random_set, torch.Tensor) else None)


def _check_bandwidth(bandwidth, layers: list[str]) -> torch.Tensor | None:
    """None (median heuristic) or one ``sigma > 0`` per layer: Tensor ``[L]``."""
    if bandwidth is None:
        return None
    if isinstance(bandwidth, Mapping):
        missing = [n for n in layers if n not in bandwidth]
        if missing:
            raise ValueError(f"bandwidth has no value for layer(s) {missing}; give one per layer or None.")
        values = [bandwidth[n] for n in layers]
    else:
        values = [bandwidth] * len(layers)
    for v in values:
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not np.isfinite(float(v)) or float(v) <= 0:
            raise ValueError(f"bandwidth must be None (median heuristic), a positive number or a dict layer -> "
                             f"positive number; got {bandwidth!r}.")
    return torch.tensor([float(v) for v in values], dtype=torch.float64)


def _sizes(sets: list[ConceptSet], rnd: ConceptSet, n_per_draw, n_draws: int) -> int:
    """The images per draw of every concept and of the random set (see the module docstring)."""
    sizes = {s.name: len(s) for s in sets}
    if n_per_draw is None:
        if len(set(sizes.values()) | {len(rnd)}) > 1:
            listed = ", ".join(f"{k!r} ({v})" for k, v in sizes.items())
            raise ValueError(
                f"Concept sets {listed} and the random set ({len(rnd)}) differ in size. Each concept is compared "
                f"with the random set at one sample size: pass n_per_draw <= {min(min(sizes.values()), len(rnd))} "
                "(the smallest set) to draw that many images of each set, or give sets of one size."
            )
        if n_draws > 1:
            raise ValueError(f"n_draws={n_draws} draws without n_per_draw would all be the same (every image); pass "
                             f"n_per_draw < {len(rnd)} images per draw (e.g. half of them).")
        n = len(rnd)
    else:
        n = check_positive_int(n_per_draw, "n_per_draw", hint=" or None (every image, one draw)")
        small = {k: v for k, v in {**sizes, "<random set>": len(rnd)}.items() if v < n}
        if small:
            raise ValueError(f"n_per_draw={n} is more than the images of {small}; every draw takes n_per_draw images "
                             f"of each concept and of the random set, so use n_per_draw <= {min(small.values())}.")
    if n < 2 or min(sizes.values()) < 2 or len(rnd) < 2:
        raise ValueError("The unbiased MMD needs at least 2 images per sample: give every concept set and the random "
                         "set at least 2 images, and n_per_draw >= 2.")
    return n


# --------------------------------------------------------------------------------------------------
# The pooled samples, draws and permutations
# --------------------------------------------------------------------------------------------------


def _pool_layout(sizes: list[int], n_random: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Each concept's pooled sample: positions ``0..N_max-1`` its images (padded), ``N_max..`` the random ones.

    Returns ``index [C, P]`` into the concatenated images ``[concept_0; ...; concept_{C-1}; random]`` (padding
    points at image 0), ``valid [C, P]``, and ``N_max``.
    """
    n_max = max(sizes)
    starts = np.cumsum([0] + sizes[:-1])
    c = len(sizes)
    index = torch.zeros(c, n_max + n_random, dtype=torch.long)
    valid = torch.zeros(c, n_max + n_random, dtype=torch.bool)
    for i, (s, n) in enumerate(zip(starts, sizes)):  # a loop over concepts to lay out indices, not the MMD
        index[i, :n] = torch.arange(int(s), int(s) + n)
        valid[i, :n] = True
    index[:, n_max:] = sum(sizes) + torch.arange(n_random)
    valid[:, n_max:] = True
    return index, valid, n_max


def _pooled_sq_dists(f: torch.Tensor, concept_index: torch.Tensor, n_concept_rows: int) -> torch.Tensor:
    """Squared distances within each concept's pooled sample (:func:`_pool_layout`), ``[K, C, P, P]``, from blocks.

    ``f: [K, N_total, d]`` holds the features of ``[concept_0; ...; concept_{C-1}; random]`` and ``concept_index
    [C, N_max]`` each concept's rows (padded), the first ``n_concept_rows`` of ``f``. Gathering every pooled sample and taking its distances would copy
    the random set into every concept and compute its distances ``C`` times; here the concept-concept blocks come
    from each concept's own rows, the concept-random block from one product of all concept rows with the random
    ones, and the random-random block once, broadcast.
    """
    f = f.double()
    f_sq = f.square().sum(-1)                                        # [K, N_total], each row's norm once
    fc, fr, c_sq, r_sq = f[:, :n_concept_rows], f[:, n_concept_rows:], f_sq[:, :n_concept_rows], f_sq[:, n_concept_rows:]
    k, (c, n_max), n_r = f.shape[0], concept_index.shape, fr.shape[1]
    out = torch.empty(k, c, n_max + n_r, n_max + n_r, dtype=torch.float64, device=f.device)
    out[:, :, :n_max, :n_max] = pairwise_sq_dists(f[:, concept_index], x_sq=f_sq[:, concept_index])  # [K, C, N, N]
    cr = pairwise_sq_dists(fc, fr, c_sq, r_sq)[:, concept_index]                                      # [K, C, N, N_r]
    out[:, :, :n_max, n_max:] = cr
    out[:, :, n_max:, :n_max] = cr.transpose(-1, -2)
    out[:, :, n_max:, n_max:] = pairwise_sq_dists(fr, x_sq=r_sq)[:, None]
    return out


def draw_indices(sizes: Sequence[int], n_random: int, n: int, n_draws: int, seed: int) -> torch.Tensor:
    """Positions in each concept's pooled sample (:func:`_pool_layout`) of the images of every draw: ``[D, C, 2n]``.

    Draw ``r`` takes ``subset_indices(N_c, n, mix_seed(seed, r, c))`` of concept ``c`` (first ``n`` entries) and
    ``subset_indices(N_random, n, mix_seed(seed, r, -1))`` of the random set (last ``n``, shared by the concepts);
    with ``n = N`` (every image) the subsets are everything, in order.
    """
    n_max = max(sizes)
    out = torch.empty(n_draws, len(sizes), 2 * n, dtype=torch.long)
    for r in range(n_draws):  # subset draws (randperm each); the MMD itself is batched
        rnd = torch.from_numpy(subset_indices(n_random, n, mix_seed(seed, r, -1))) + n_max
        for c, size in enumerate(sizes):
            out[r, c, :n] = torch.from_numpy(subset_indices(size, n, mix_seed(seed, r, c)))
            out[r, c, n:] = rnd
    return out


def _perm_seed(seed: int) -> int:
    return mix_seed(seed, -2)


def _normalise(m: torch.Tensor, normalize: str) -> torch.Tensor:
    """``max(M, 0) / B`` over the last (concept) axis; zeros where ``B = 0``."""
    clipped = m.clamp_min(0)
    if normalize == "none":
        return clipped
    b = clipped.sum(-1, keepdim=True) if normalize == "sum" else clipped.amax(-1, keepdim=True)
    return torch.where(b > 0, clipped / torch.where(b > 0, b, torch.ones_like(b)), torch.zeros_like(clipped))


def _table(class_labels, sets, n_random, n, n_draws, scores, raw, p, p_adj, alpha, n_boot, confidence, seed):
    """``scores, raw: [K, D, C]``, ``p, p_adj: [K, C]`` -> the tidy table."""
    rows = []
    for k, label in enumerate(class_labels):
        for c, s in enumerate(sets):  # bootstrap of each row's draws (numpy); not the MMD
            v = scores[k, :, c].double().cpu().numpy()
            ci = bootstrap_ci(v, n_boot=n_boot, confidence=confidence, seed=seed)
            rows.append({
                "class": label, "concept": s.name, "score": float(v.mean()),
                "score_std": float(v.std(ddof=1)) if v.size > 1 else float("nan"),
                "ci_low": ci.low, "ci_high": ci.high, "mmd2": float(raw[k, :, c].double().mean()),
                "p_value": float(p[k, c]), "p_adjusted": float(p_adj[k, c]), "significant": bool(p_adj[k, c] <= alpha),
                "n_concept": len(s), "n_random": n_random, "n_per_draw": n, "n_draws": n_draws,
            })
    return pd.DataFrame(rows, columns=COLUMNS)


def _check_common(model, concept_sets, random_set, cis, layers, classes, n_per_draw, n_draws, n_perm, alpha,
                  correction, normalize, bandwidth, n_boot, confidence, seed):
    check_model(model)
    sets = _check_concept_sets(concept_sets)
    rnd = _check_random_set(random_set)
    shape = rnd.image_shape
    for s in sets:
        if s.image_shape != shape:
            raise ValueError(f"Concept set {s.name!r} holds images {s.image_shape} but the random set {shape}; "
                             "load every probe set at one size and channel count.")
    check_images(rnd.images[:1], model, move=False, what="images of the random set")
    if layers is None:
        if not isinstance(cis, Mapping):
            raise TypeError(f"cis must be a dict layer -> Tensor [K, C] (from channel_importance), got "
                            f"{type(cis).__name__}.")
        layers = list(cis)
    layers = _check_distinct_layers(model, layers)
    cis = check_cis(cis, layers)
    k = int(next(iter(cis.values())).shape[0])
    if classes is None:
        labels = list(range(k))
    else:
        labels = list(classes) if not isinstance(classes, (str, torch.Tensor)) else (
            classes.tolist() if isinstance(classes, torch.Tensor) else [classes])
        if len(labels) != k:
            raise ValueError(f"classes names {len(labels)} classes but cis holds K = {k}; give one label per row.")
    n_draws = check_positive_int(n_draws, "n_draws")
    n = _sizes(sets, rnd, n_per_draw, n_draws)
    n_perm = check_positive_int(n_perm, "n_perm", hint=" (permutations of the significance test, e.g. 1000)")
    alpha = check_fraction(alpha, "alpha", low_open=True, high_open=True, hint=" (e.g. 0.05)")
    if correction is not None:
        correction = check_choice(correction, _CORRECTIONS, "correction")
    normalize = check_choice(normalize, _NORMALIZE, "normalize")
    sigma = _check_bandwidth(bandwidth, layers)
    n_boot = check_positive_int(n_boot, "n_boot")
    confidence = check_fraction(confidence, "confidence", low_open=True, high_open=True)
    seed = check_seed(seed)
    return sets, rnd, layers, cis, labels, n, n_draws, n_perm, alpha, correction, normalize, sigma, n_boot, \
        confidence, seed


# --------------------------------------------------------------------------------------------------
# Concept importance
# --------------------------------------------------------------------------------------------------


def concept_importance(
    model: nn.Module,
    concept_sets,
    random_set,
    cis: Mapping[str, torch.Tensor],
    layers: str | Sequence[str] | None = None,
    *,
    classes=None,
    n_per_draw: int | None = None,
    n_draws: int = 1,
    n_perm: int = 1000,
    alpha: float = 0.05,
    correction: str | None = None,
    normalize: str = "sum",
    bandwidth=None,
    unbiased: bool = True,
    n_boot: int = 10000,
    confidence: float = 0.95,
    seed: int = 0,
    batch_size: int = 64,
    max_bytes: int = 1 << 28,
    progress: bool = False,
) -> pd.DataFrame:
    """Concept importance scores of ``K`` classes (Sec. 3.2, Fig. 4), with significance and spread over draws.

    See the module docstring for the score, the normalisation, the draws and the test.

    Parameters
    ----------
    model : nn.Module
    concept_sets : ConceptSet, list of ConceptSet, or dict name -> Tensor ``[N_c, C, H, W]``
        The probe concepts (images in [0, 1]); sizes may differ when ``n_per_draw`` is given.
    random_set : ConceptSet or Tensor ``[N_r, C, H, W]``
        The random benchmark set.
    cis : dict str -> Tensor ``[K, C_l]``
        Channel importance (Eq. 8) of ``K`` classes (:func:`xailib.afi.attribution.channel_importance`).
    layers : str or sequence of str, optional
        The "middle layers" whose MMDs are summed; default every layer of ``cis``.
    classes : sequence, optional
        The ``class`` column's label of each row of ``cis`` (names or class indices); default ``0..K-1``.
    n_per_draw : int, optional
        Images of each concept and of the random set per draw, ``2 <= n_per_draw <=`` the smallest set. ``None``:
        every image, one draw, and all sets must have one size.
    n_draws : int
        Number of draws (the paper: 100 runs).
    n_perm : int
        Permutations of the significance test.
    alpha : float
        Significance level.
    correction : {None, "holm", "bonferroni"}
        Family-wise correction over the concepts of each class.
    normalize : {"sum", "max", "none"}
    bandwidth : None, float or dict layer -> float
        The RBF kernel's ``sigma``; ``None``: the median heuristic of each pooled sample
        (:func:`xailib.metrics.median_heuristic`).
    unbiased : bool
        ``MMD^2_u`` (default) or the biased ``MMD^2_b``.
    n_boot, confidence :
        The bootstrap CI of the mean score over draws (:func:`xailib.metrics.bootstrap_ci`, seeded by ``seed``).
    seed : int
        Seeds the draws (:func:`draw_indices`) and the permutations; the same seed gives the same table.
    batch_size : int
        Images per forward pass.
    max_bytes : int
        Memory cap of one chunk of draws or permutations.
    progress : bool

    Returns
    -------
    pandas.DataFrame
        One row per (class, concept), columns :data:`COLUMNS`: ``class``, ``concept``, ``score`` (mean over draws),
        ``score_std`` (std over draws, ddof 1; NaN for one draw), ``ci_low``, ``ci_high``, ``mmd2`` (mean raw
        ``sum_l MMD^2``), ``p_value``, ``p_adjusted``, ``significant``, ``n_concept``, ``n_random`` (the set sizes
        the test uses), ``n_per_draw``, ``n_draws``.

    Raises
    ------
    TypeError, ValueError
        Empty probe sets, sizes that cannot give the asked draws, unknown layers (listing the valid names), cis
        without a layer of ``layers`` or with the wrong channel count.
    """
    (sets, rnd, layers, cis, labels, n, n_draws, n_perm, alpha, correction, normalize, sigma, n_boot, confidence,
     seed) = _check_common(model, concept_sets, random_set, cis, layers, classes, n_per_draw, n_draws, n_perm, alpha,
                           correction, normalize, bandwidth, n_boot, confidence, seed)
    max_bytes = check_positive_int(max_bytes, "max_bytes")
    sizes = [len(s) for s in sets]
    images = torch.cat([s.images.to(rnd.device) for s in sets] + [rnd.images])  # one batched pass for all sets
    outs = meta_detector(model, images, cis, layers, flatten=True, batch_size=batch_size, progress=progress)
    dev = model_device(model)  # the MMD work runs on the model's device too
    outs = {name: v.to(dev) for name, v in outs.items()}
    index, valid, n_max = _pool_layout(sizes, len(rnd))
    index, valid = index.to(dev), valid.to(dev)
    # one distance matrix per layer of each concept's pooled sample: [K, L, C, P, P]
    sq = torch.stack([_pooled_sq_dists(outs[name], index[:, :n_max], sum(sizes)) for name in layers], dim=1)
    k_cls, n_layers, n_con, p = sq.shape[:4]

    def kernel_of(d2: torch.Tensor, ok: torch.Tensor | None) -> torch.Tensor:
        if sigma is None:
            s = median_heuristic(d2, ok)
        else:
            s = sigma.to(d2.device).view(1, -1, *([1] * (d2.dim() - 4)))
        return gaussian_kernel(d2, s)

    # ---- significance: every image of each concept against every random image
    kern = kernel_of(sq, valid)  # [K, L, C, P, P]
    pos = torch.arange(p, device=dev)
    n_c = torch.tensor(sizes, device=dev)
    x_obs = (pos[None, :] < n_c[:, None])[:, None, :]  # [C, 1, P]
    y_obs = (pos >= n_max)[None, None, :].expand(n_con, 1, p)
    observed = mmd2_from_kernel(kern, x_obs, y_obs, unbiased=unbiased)[..., 0].sum(1)  # [K, C]
    perms = random_partitions(n_c.cpu(), valid.cpu(), n_perm, _perm_seed(seed)).to(dev)  # [C, R, P]
    exceed = torch.zeros(k_cls, n_con, dtype=torch.long, device=dev)
    chunk = max(1, max_bytes // max(1, 4 * 8 * k_cls * n_layers * n_con * p))
    for s in tqdm(range(0, n_perm, chunk), disable=not progress, desc="permutations", leave=False):
        a = perms[:, s:s + chunk]
        stat = mmd2_from_kernel(kern, a, valid[:, None, :] & ~a, unbiased=unbiased).sum(1)  # [K, C, r]
        exceed += (stat >= observed[..., None]).sum(-1)
    p_value = ((1 + exceed).double() / (1 + n_perm)).cpu()
    p_adj = adjust_p_values(p_value, correction)
    del kern

    # ---- scores over draws
    if n_per_draw is None:  # the one draw is every image in order: the observed statistic of the test, reused
        raw = observed[:, None, :].cpu()  # [K, 1, C]
        scores = _normalise(raw, normalize)
        return _table(labels, sets, len(rnd), n, n_draws, scores, raw, p_value, p_adj, alpha, n_boot, confidence,
                      seed)
    idx = draw_indices(sizes, len(rnd), n, n_draws, seed).to(dev)  # [D, C, 2n]
    q = 2 * n
    x_draw = (torch.arange(q, device=dev) < n)[None, :]  # [1, 2n]
    conc = torch.arange(n_con, device=dev)[None, :, None, None]
    raw = []
    chunk = max(1, max_bytes // max(1, 4 * 8 * k_cls * n_layers * n_con * q * q))
    for s in tqdm(range(0, n_draws, chunk), disable=not progress, desc="draws", leave=False):
        i = idx[s:s + chunk]
        sub = sq[:, :, conc, i[:, :, :, None], i[:, :, None, :]]  # [K, L, Dc, C, 2n, 2n]
        raw.append(mmd2_from_kernel(kernel_of(sub, None), x_draw, unbiased=unbiased)[..., 0].sum(1))  # [K, Dc, C]
    raw = torch.cat(raw, dim=1).cpu()  # [K, D, C]
    scores = _normalise(raw, normalize)
    return _table(labels, sets, len(rnd), n, n_draws, scores, raw, p_value, p_adj, alpha, n_boot, confidence, seed)


def concept_importance_reference(
    model: nn.Module,
    concept_sets,
    random_set,
    cis: Mapping[str, torch.Tensor],
    layers: str | Sequence[str] | None = None,
    *,
    classes=None,
    n_per_draw: int | None = None,
    n_draws: int = 1,
    n_perm: int = 100,
    alpha: float = 0.05,
    correction: str | None = None,
    normalize: str = "sum",
    bandwidth=None,
    unbiased: bool = True,
    n_boot: int = 10000,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Literal :func:`concept_importance`: loops over classes, concepts, draws, permutations and layers.

    Meta-detector outputs from :func:`~xailib.afi.attribution.meta_detector_reference` (one image at a time), each
    MMD from :func:`xailib.metrics.mmd2_reference` (double loops over the samples), the same draws
    (:func:`draw_indices`) and permutations (:func:`xailib.metrics.random_partitions` with the same seed). Slow;
    for the tests.
    """
    (sets, rnd, layers, cis, labels, n, n_draws, n_perm, alpha, correction, normalize, sigma, n_boot, confidence,
     seed) = _check_common(model, concept_sets, random_set, cis, layers, classes, n_per_draw, n_draws, n_perm, alpha,
                           correction, normalize, bandwidth, n_boot, confidence, seed)
    sizes = [len(s) for s in sets]
    bw = [None] * len(layers) if sigma is None else sigma.tolist()
    feats_c = [{name: v.flatten(2) for name, v in meta_detector_reference(model, s.images, cis, layers).items()}
               for s in sets]
    feats_r = {name: v.flatten(2) for name, v in meta_detector_reference(model, rnd.images, cis, layers).items()}
    k_cls = len(labels)
    _, valid, n_max = _pool_layout(sizes, len(rnd))
    perms = random_partitions(torch.tensor(sizes), valid, n_perm, _perm_seed(seed))  # [C, R, P]
    idx = draw_indices(sizes, len(rnd), n, n_draws, seed)
    raw = torch.zeros(k_cls, n_draws, len(sets), dtype=torch.float64)
    p_value = torch.zeros(k_cls, len(sets), dtype=torch.float64)
    for k in range(k_cls):
        for c in range(len(sets)):
            def pooled(name, positions):  # pooled-sample positions -> feature rows
                return [feats_c[c][name][k, j] if j < n_max else feats_r[name][k, j - n_max] for j in positions]

            def stat(x_pos, y_pos):
                return sum(mmd2_reference(pooled(name, x_pos), pooled(name, y_pos), bw[li], unbiased=unbiased)
                           for li, name in enumerate(layers))

            x_all = list(range(sizes[c]))
            y_all = list(range(n_max, n_max + len(rnd)))
            observed = stat(x_all, y_all)
            exceed = 0
            for r in range(n_perm):
                mask = perms[c, r]
                x_pos = [j for j in range(mask.numel()) if bool(valid[c, j]) and bool(mask[j])]
                y_pos = [j for j in range(mask.numel()) if bool(valid[c, j]) and not bool(mask[j])]
                exceed += int(stat(x_pos, y_pos) >= observed)
            p_value[k, c] = (1 + exceed) / (1 + n_perm)
            for r in range(n_draws):
                positions = idx[r, c].tolist()
                raw[k, r, c] = stat(positions[:n], positions[n:])
    scores = _normalise(raw, normalize)
    p_adj = adjust_p_values(p_value, correction)
    return _table(labels, sets, len(rnd), n, n_draws, scores, raw, p_value, p_adj, alpha, n_boot, confidence, seed)
