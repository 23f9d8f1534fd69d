"""What the MACE paper reports, and the paper-vs-ours tables of the MACE notebooks.

The paper's claims about concepts are figures without numbers (Fig. 2, SF11-SF13, SF15-SF16); they are read as
the stated claims, measured here where a number can be had, and judged by the rule written in each row.
"""

from __future__ import annotations

import pandas as pd

from xailib.metrics import bootstrap_ci
from xailib.results import paper_row, paper_table

__all__ = ["concepts_comparison"]


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
