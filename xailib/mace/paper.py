"""What the MACE paper reports, and the paper-vs-ours tables of the MACE notebooks.

The paper's claims about concepts are figures without numbers (Fig. 2, SF11-SF13, SF15-SF16); they are read as
the stated claims, measured here where a number can be had, and judged by the rule written in each row.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from xailib.metrics import bootstrap_ci
from xailib.results import paper_row, paper_table

__all__ = ["concepts_comparison", "faithfulness_comparison"]


def concepts_comparison(blocks: pd.DataFrame, pruning: pd.DataFrame) -> pd.DataFrame:
    """Notebook mace/01 beside the paper.

    Parameters
    ----------
    blocks : DataFrame
        One row per model, class and concept: ``model``, ``class``, ``difference`` (mean distance to other
        concepts minus mean distance within the concept, :func:`xailib.mace.experiments.block_structure`), on
        held-out images.
    pruning : DataFrame
        :func:`xailib.mace.experiments.pruning_summary` with a ``model`` column.

    Rules: SF13's block structure is reproduced when the 95% bootstrap interval of the mean difference over all
    (class, concept) pairs lies above 0, else not reproduced; S7's count of useful concepts is about another data
    set (Places365), and Fig. 2's stability is a visual claim: not comparable.
    """
    rows = []
    for name, t in blocks.groupby("model", sort=False):
        ci = bootstrap_ci(t["difference"].to_numpy(), n_boot=5000)
        rows.append(paper_row(
            "SF13", f"embeddings of one concept lie closer together than to other concepts' ({name})",
            "yes (box-diagonal matrix: fox, 5 concepts, 10 images)", f"{ci.mean:+.3f} [{ci.low:+.3f}, {ci.high:+.3f}]",
            "reproduced" if ci.low > 0 else "not reproduced",
            f"mean over {len(t)} (class, concept) pairs of the distance to other concepts minus the distance within "
            "the concept, 95% bootstrap CI, on held-out images (the triplet loss optimises it on training images); "
            "rule: reproduced if the interval lies above 0"))
    for name, t in pruning.groupby("model", sort=False):
        rows.append(paper_row(
            "S2 / S7", f"concepts kept after pruning, per class ({name})", "2-3 useful concepts a class (Places365)",
            f"{t['kept'].mean():.1f} (range {int(t['kept'].min())}-{int(t['kept'].max())}) of "
            f"{int(t['kept'].iloc[0] + t['pruned'].iloc[0])}", "not comparable",
            "the paper's count is for Places365, where it says most concepts were pruned; rules fired: "
            + ", ".join(f"{r} {int(t[r].sum())}" for r in ("top_t", "positive_everywhere", "masks_everything",
                                                             "negative_on_class"))))
    rows.append(paper_row("Fig. 2 / SF11-SF12", "a concept's maps look alike across images of its class",
                          "yes (visual)", "see the figures", "not comparable", "a visual claim about AWA2 photos"))
    return paper_table(rows)


def _paired(a, b):
    """Mean of ``a - b`` with its 95% bootstrap interval."""
    return bootstrap_ci(np.asarray(a, dtype=float) - np.asarray(b, dtype=float), n_boot=5000)


def faithfulness_comparison(table: pd.DataFrame, single: pd.DataFrame | None = None,
                            ablation: pd.DataFrame | None = None, name: str = "MACE", model: str = "") -> pd.DataFrame:
    """Notebook mace/02 beside the paper.

    Parameters
    ----------
    table : DataFrame
        :func:`xailib.mace.faithfulness.faithfulness_table` (``method``, ``protocol``, ``threshold``, ``image``,
        ``drop``, ``area``).
    single : DataFrame, optional
        :func:`xailib.mace.faithfulness.single_concept_drops` (Fig. 4a).
    ablation : DataFrame, optional
        ``faithfulness_table`` rows of MACE trained without a loss, with a ``variant`` column (``"full"``,
        ``"without L^O"``, ``"without L^D"``; SF17), same-threshold protocol.

    Rules: Fig. 4b ("the highest drop ... for every threshold") is reproduced against a baseline when the 95%
    bootstrap interval of the paired per-image difference (MACE minus baseline) lies above 0 at every threshold,
    partly at some, else not reproduced; the paper's protocol thresholds every map alike, so a union of C masks
    covers more of the image than one map, and the same comparison at equal area is given beside it. Fig. 4a
    ("masking the ear concept does not alter the classification probabilities significantly"): reproduced when
    the mean drop of one concept alone is below 0.05 (its interval's upper end), partly when it is below half the
    union's. SF17: reproduced when the full model's drop exceeds each ablation's (paired interval above 0) at
    the middle threshold.
    """
    rows = []
    tag = f" ({model})" if model else ""
    ours = table[table.method == name].set_index(["threshold", "image"])["drop"]
    thresholds = sorted(set(table["threshold"]))
    for protocol in ("same threshold", "same area"):
        for m in [x for x in dict.fromkeys(table["method"]) if x != name]:
            other = table[(table.method == m) & (table.protocol == protocol)].set_index(["threshold", "image"])["drop"]
            cis = [_paired(ours.loc[t], other.loc[t]) for t in thresholds]
            above = sum(ci.low > 0 for ci in cis)
            verdict = "reproduced" if above == len(cis) else "partly" if above else "not reproduced"
            per_t = "; ".join(f"t={t:.1f}: {ci.mean:+.3f} [{ci.low:+.3f}, {ci.high:+.3f}]" for t, ci in zip(thresholds, cis))
            label = "the paper's protocol" if protocol == "same threshold" else "ours: the baseline's top pixels, as many as MACE's union covers"
            rows.append(paper_row("Fig. 4b", f"MACE's masks lower the predicted class's probability more than {m}'s, "
                                  f"at every threshold, {protocol}{tag}", "yes, at every threshold",
                                  f"{above} of {len(cis)} thresholds", verdict,
                                  f"{label}; paired difference in drop over {ours.loc[thresholds[0]].size} images: "
                                  f"{per_t}"))
    if single is not None and len(single):
        one = single[single.concept >= 0].groupby("image")["drop"].mean()
        union = single[single.concept == -1].set_index("image")["drop"]
        ci_one = _paired(one.to_numpy(), 0 * one.to_numpy())
        ci_union = _paired(union.to_numpy(), 0 * union.to_numpy())
        verdict = ("reproduced" if ci_one.high < 0.05 else "partly" if ci_one.mean < ci_union.mean / 2
                   else "not reproduced")
        rows.append(paper_row("Fig. 4a", f"removing one concept alone barely changes the predicted class's "
                              f"probability{tag}", "no significant change (the ear of a fox)",
                              f"{ci_one.mean:.3f} [{ci_one.low:.3f}, {ci_one.high:.3f}]", verdict,
                              f"mean over {one.size} images of the mean drop of each kept concept alone; the union of "
                              f"all: {ci_union.mean:.3f} [{ci_union.low:.3f}, {ci_union.high:.3f}]; rule: reproduced "
                              "below 0.05, partly below half the union's"))
    if ablation is not None and len(ablation):
        mid = thresholds[len(thresholds) // 2]
        full = ablation[(ablation.variant == "full") & (ablation.threshold == mid)].set_index("image")["drop"]
        for v in [x for x in dict.fromkeys(ablation["variant"]) if x != "full"]:
            other = ablation[(ablation.variant == v) & (ablation.threshold == mid)].set_index("image")["drop"]
            ci = _paired(full.to_numpy(), other.loc[full.index].to_numpy())
            rows.append(paper_row("SF17", f"the full loss gives a larger drop than training {v}{tag}",
                                  "yes (both losses are necessary)", f"{ci.mean:+.3f} [{ci.low:+.3f}, {ci.high:+.3f}]",
                                  "reproduced" if ci.low > 0 else "not reproduced",
                                  f"paired difference over {full.size} images at threshold {mid:.1f}, the paper's "
                                  "protocol; rule: reproduced if the interval lies above 0"))
    return paper_table(rows)
