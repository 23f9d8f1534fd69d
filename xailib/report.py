"""REPRODUCTION.md: one report of every table and figure of the four papers, generated from figures/.

``make reproduce`` (:func:`xailib.reproduce.reproduce`) calls :func:`write_report` after it has published the
notebooks' outputs. The report is built from what the notebooks wrote -- their paper-vs-ours tables
(``*paper_vs_ours*`` and ``*vs_paper*``) and the JSON sidecars -- and from :data:`INVENTORY`, the list of every
artifact of the four papers (main texts and supplements), so that an artifact no notebook reproduces still has a
row that says why. Nothing in it is typed by hand except the inventory's descriptions and the reasons an artifact
cannot be made here.

Per row: the artifact and the quantity, the paper's number or claim and ours, the sample size and the 95%
confidence interval (read from the row: ``n = ...``, ``over N images``, ``[low, high]``; the notebooks state them
there), the data and model (the zoo names in the row, else the notebook's parameters), the verdict and its reason
(the row's note), and links to the table and figure files. A fresh run leaves the file unchanged except the lines
marked as wall-clock (the notebooks' run times).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import NamedTuple

import pandas as pd

__all__ = ["INVENTORY", "Artifact", "collect_rows", "sample_size", "confidence_interval", "data_and_model",
           "render_report", "write_report"]


class Artifact(NamedTuple):
    """One table or figure of a paper: ``key`` (as the paper names it), what it shows, the regular expression that
    finds its rows in our paper-vs-ours tables, and why it is not reproduced here when no row matches."""

    key: str
    shows: str
    pattern: str
    absent: str = ""


#: The papers, in the report's order: folder under figures/, title, file under ../shared/papers/.
PAPERS: dict[str, tuple[str, str]] = {
    "gap": ("gAP: Deeply Explain CNN via Hierarchical Decomposition", "gap_hierarchical_decomposition.txt"),
    "afi": ("AfI: Towards Global Explanations of CNNs with Concept Attribution (and its supplement)",
            "afi_global_concept_attribution.txt, afi_supplementary.txt"),
    "explainer": ("The additive explainer: Explaining Neural Networks Semantically and Quantitatively",
                  "additive_explainer.txt"),
    "mace": ("MACE: Model Agnostic Concept Extractor (and its supplementary figures SF1-SF17)",
             "mace_concept_extractor.txt"),
}

_DIAGRAM = "a diagram of the method, with no measured quantity"

#: Every artifact of the four papers.
INVENTORY: dict[str, list[Artifact]] = {
    "gap": [
        Artifact("Fig. 1", "overview: the evidence pyramid of one decision", r"^Fig\. 1\b|Fig\. 4-5",
                 "an illustration; the pyramid is built interactively in gap/03 (its rows under Fig. 4-5)"),
        Artifact("Fig. 2", "kinds of interpretative methods", r"^Fig\. 2\b", _DIAGRAM),
        Artifact("Fig. 3", "the gAP step from one decision to the layer below", r"^Fig\. 3\b", _DIAGRAM),
        Artifact("Fig. 4", "the most significant activation maps of conv4_3 and their visualisations",
                 r"Fig\. 4\b|Fig\. 4-5"),
        Artifact("Fig. 5", "the hierarchical decomposition, stage by stage", r"Fig\. 4-5|^Fig\. 5\b"),
        Artifact("Fig. 6", "(a) sorted channel contributions; (b) channels needed per layer", r"^Fig\. 6"),
        Artifact("Fig. 7", "sanity checks: cascading model and data randomisation", r"^Fig\. 7"),
        Artifact("Fig. 8", "accuracy and match rate of the sparse surrogate", r"^Fig\. 8"),
        Artifact("Fig. 9", "accuracy after removing the top channels, per method", r"^Fig\. 9"),
        Artifact("Fig. 10", "diagnosis of a failure by decomposition and occlusion", r"^Fig\. 10"),
        Artifact("Fig. 11", "adversarial images decomposed", r"^Fig\. 11"),
        Artifact("Fig. 12", "context information in the activation maps", r"^Fig\. 12",
                 "a qualitative example (figures/gap/fig12_context_example.png shows ours); no number to compare"),
        Artifact("Fig. 13", "context per category of PASCAL VOC", r"^Fig\. 13"),
        Artifact("Fig. 14", "discriminative degree of the disentangled channels per layer and CNN", r"^Fig\. 14"),
        Artifact("Table 1", "PCC of the four strategies with the ablation ground truth", r"^Table 1"),
        Artifact("Sec. 4.1 timing", "seconds per decomposition against the naive ground truth", r"timing"),
    ],
    "afi": [
        Artifact("Fig. 1", "the AfI workflow", r"^Fig\. 1\b", _DIAGRAM),
        Artifact("Table 1", "clean and perturbed top-1 accuracy, matched occluders", r"^Table 1"),
        Artifact("Table 2", "student accuracy of the distillation test", r"^Table 2"),
        Artifact("Fig. 2", "SSC and SDC curves: accuracy as concepts are added or removed", r"^Fig\. 2"),
        Artifact("Fig. 3", "class impressions of the meta-detector", r"^Fig\. 3"),
        Artifact("Table 3", "the layer chosen for class impressions and its shape", r"^Table 3"),
        Artifact("Fig. 4", "importance of user-defined concepts with error bars", r"^Fig\. 4"),
        Artifact("Table S1", "Table 1 on held-out images", r"Table S1|Table 1 / S1"),
        Artifact("Table S2", "accuracy under unmatched occluders (specificity)", r"Table S2"),
        Artifact("Fig. S1", "occluders, clean and perturbed images with their predictions", r"Fig\. S1",
                 "a gallery (figures/afi/figS1_occluders_*.png shows ours); the numbers behind it are Table S1's"),
    ],
    "explainer": [
        Artifact("Fig. 1", "kinds of explanations", r"^Fig\. 1\b", _DIAGRAM),
        Artifact("Fig. 2", "the task: distilling a performer into an explainer", r"^Fig\. 2\b", _DIAGRAM),
        Artifact("Fig. 3", "two types of performer", r"^Fig\. 3\b", _DIAGRAM),
        Artifact("Fig. 4", "interpretable filters of the top conv layer", r"^Fig\. 4\b|\[40\]"),
        Artifact("Fig. 5", "per-image pies of part contributions", r"^Fig\. 5"),
        Artifact("Fig. 6", "contributions to face-attribute predictions", r"^Fig\. 6"),
        Artifact("Fig. 7", "contribution distributions, ours against the baseline", r"Fig\. 7"),
        Artifact("Fig. 8", "explanation capacity against the number of concepts", r"^Fig\. 8"),
        Artifact("Table 1", "entropy of the contribution distributions", r"^Table 1"),
        Artifact("Table 2", "accuracy and relative deviation of explainer and performer", r"^Table 2"),
        Artifact("Table 3", "errors of the estimated part contributions", r"^Table 3"),
    ],
    "mace": [
        Artifact("Fig. 1", "explanations of the predicted and another class", r"Fig\. 1\b"),
        Artifact("Fig. 2", "concepts across images of one class", r"^Fig\. 2"),
        Artifact("Fig. 3", "the MACE architecture", r"^Fig\. 3\b", _DIAGRAM),
        Artifact("Fig. 4", "faithfulness: (a) masking a concept, (b) masking the thresholded maps", r"^Fig\. 4"),
        Artifact("Fig. 5", "(a) explanations of an incorrect class; (b), (c) relevance by class rank", r"Fig\. 5"),
        Artifact("Table 1", "preferences of human subjects", r"^Table 1"),
        Artifact("SF1-SF10", "prototypes and explanations of further images", r"SF1-SF10|SF2-SF10"),
        Artifact("SF11-SF12", "stability of the concepts across images", r"SF11"),
        Artifact("SF13", "concept embeddings: the box-diagonal distance matrix", r"SF13"),
        Artifact("SF14", "robustness of the maps to small perturbations", r"SF14"),
        Artifact("SF15-SF16", "further qualitative examples", r"SF15|SF16",
                 "qualitative galleries without a measured quantity (the explorer, mace/05, shows ours)"),
        Artifact("SF17", "faithfulness per concept", r"SF17"),
    ],
}

_N_PATTERNS = (
    r"\bpaired over (\d[\d,]*) ((?:held-out |test )?(?:images|scenes|classes|pairs))",
    r"\bn\s*=\s*(\d[\d,]*\s*-\s*\d[\d,]*)\s+([A-Za-z]+)",
    r"\bn\s*=\s*(\d[\d,]*)\s*([A-Za-z-]+)?",
    r"\bover (\d[\d,]*) ((?:held-out |test |training )?(?:images|classes|scenes|pairs|concepts|\(class, concept\) "
    r"pairs|draws|seeds|categories|channels|performers|performer pairs|random draws of k concepts))",
    r"\bover up to (\d[\d,]*) (random draws of k concepts)",
    r"\b(\d[\d,]*) ((?:held-out|test) (?:images|scenes))",
    r"\b(\d[\d,]*) ((?:held-out |test )?(?:images|classes|scenes)) (?:of|per|whose)",
    r"\b(\d+) draws of (\d+) images",
    r"\b(?:of|over|on|from|for) the (\d[\d,]*) ((?:held-out |test )?(?:images|classes|scenes|impressions|pairs))",
    r"\b(\d[\d,]*) ((?:held-out |test )?(?:images|scenes)) (?:whose|that|where|with)",
)
_CI = re.compile(r"\[\s*([-+]?\d*\.?\d+(?:e-?\d+)?)\s*,\s*([-+]?\d*\.?\d+(?:e-?\d+)?)\s*\]")
_ZOO = re.compile(r"\b(?:vgg|resnet|inception|alexnet)(?:-deep)?-(?:conceptworld-hard|conceptworld|fashion-mnist)\b"
                  r"|\b(?:AlexNet|VGG-16|VGG-M)-like\b")


def sample_size(*texts: str) -> str:
    """The sample size a row states (``"n = 200 images"``, ``"over 10 classes"``), or ``""``."""
    for text in texts:
        text = str(text)
        for pat in _N_PATTERNS:
            m = re.search(pat, text)
            if m:
                if pat.startswith(r"\b(\d+) draws"):
                    return f"{m.group(1)} draws of {m.group(2)} images"
                unit = (m.group(2) or "").strip() if m.lastindex and m.lastindex >= 2 else ""
                return f"{m.group(1)} {unit}".strip()
    return ""


def confidence_interval(*texts: str) -> str:
    """The first ``[low, high]`` interval a row states (in ``ours``, then in the note), or ``""``."""
    for text in texts:
        m = _CI.search(str(text))
        if m:
            return f"[{m.group(1)}, {m.group(2)}]"
    return ""


def data_and_model(row: pd.Series, params: dict) -> str:
    """The zoo models a row names, else the notebook's model parameters."""
    found = list(dict.fromkeys(_ZOO.findall(f"{row.get('quantity', '')} {row.get('note', '')}")))
    if found:
        return ", ".join(found)
    for key in ("models", "model_name", "model", "arch", "performer"):
        v = params.get(key)
        if v:
            return str(v).replace(",", ", ")
    return ""


def _tables(figures: Path) -> list[Path]:
    return sorted(p for p in figures.glob("*/*.csv") if "paper_vs_ours" in p.name or "vs_paper" in p.name)


def _sidecar(path: Path) -> dict:
    side = path.with_suffix(".json")
    try:
        return json.loads(side.read_text())
    except (OSError, ValueError):
        return {}


def collect_rows(figures: str | Path) -> pd.DataFrame:
    """Every row of every paper-vs-ours table under ``figures``, with ``paper``-folder, notebook, the table's file,
    ``n``, ``ci`` and ``data_model`` columns added."""
    figures = Path(figures)
    parts = []
    for path in _tables(figures):
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
        if "artifact" not in df.columns:
            continue
        side = _sidecar(path)
        params = side.get("parameters", {})
        df = df.assign(folder=path.parent.name, notebook=side.get("notebook", ""),
                       table=str(path.relative_to(figures.parent)).replace(".csv", ".md"))
        df["n"] = [sample_size(q, o, n) for q, o, n in zip(df["quantity"], df["ours"], df["note"])]
        df["ci"] = [confidence_interval(o, n) for o, n in zip(df["ours"], df["note"])]
        df["data_model"] = [data_and_model(r, params) for _, r in df.iterrows()]
        df["wall_clock"] = _saved_as_wall_clock(side)
        parts.append(df)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _saved_as_wall_clock(meta) -> bool:
    """Whether a table's sidecar says it holds times (``save_table(..., wall_clock=True)``), at any depth."""
    if isinstance(meta, dict):
        return bool(meta.get("wall_clock")) or any(_saved_as_wall_clock(v) for v in meta.values())
    return False


#: Ends the rows of tables saved with ``wall_clock=True`` (an HTML comment: not shown), so that
#: :func:`wall_clock_lines` knows them: their times change from run to run.
WALL_CLOCK_MARK = "<!-- wall clock -->"


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ").strip()


def _figures_of(figures: Path, folder: str, notebook: str) -> list[str]:
    out = []
    for side in sorted((figures / folder).glob("*.json")):
        try:
            meta = json.loads(side.read_text())
        except (OSError, ValueError):
            continue
        if meta.get("notebook") == notebook and side.with_suffix(".png").exists():
            out.append(str(side.with_suffix(".png").relative_to(figures.parent)))
    return out


def _wall_clock(figures: Path) -> list[str]:
    from xailib.reproduce import last_run_times

    times = last_run_times(figures)
    total = sum(times.values())
    return [f"- wall clock: the notebooks' run times (each notebook's last sidecar: from its Run to its last output, "
            f"so imports and start-up not counted) sum to {total / 60:.1f} min over "
            f"{len(times)} notebooks; longest: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in
                                                          sorted(times.items(), key=lambda kv: -kv[1])[:3])]


def render_report(figures: str | Path, *, commit: str = "", profile: str = "", run: str = "") -> str:
    """The text of REPRODUCTION.md from the tables under ``figures``; ``run``, a line on how the run that made
    them was run (it must start with ``- wall clock:``, so that :func:`stable_lines` leaves it out)."""
    if run and not run.startswith("- wall clock:"):
        raise ValueError(f"run must be a '- wall clock: ...' line, got {run!r}")
    figures = Path(figures)
    rows = collect_rows(figures)
    out = ["# Reproduction report", "",
           "Generated by `make reproduce` (`xailib.report`) from the tables under `figures/`; do not edit by hand. "
           "Every artifact of the four papers has a row: the artifact table of each paper lists them all, with the "
           "verdicts of our rows, or the reason there is none; the detailed table lists every compared quantity. "
           "Verdicts are judged against the paper's own definition (the rule is in each reason); a result true by "
           "construction on our small nets is `not comparable`, never `reproduced`.", ""]
    if commit or profile:
        out += [f"Figures made at commit `{commit}` on the `{profile}` profile." if commit else
                f"Profile: `{profile}`.", ""]
    out += _wall_clock(figures) + ([run] if run else []) + [""]
    if not rows.empty:
        tally = rows.groupby(["folder", "verdict"]).size().unstack(fill_value=0)
        out += ["## Verdicts", "", "| paper | " + " | ".join(tally.columns) + " |",
                "|---|" + "---:|" * len(tally.columns)]
        out += [f"| {f} | " + " | ".join(str(int(v)) for v in tally.loc[f]) + " |" for f in tally.index]
        out.append("")
    out += _benchmark_section(figures)
    bench = rows[rows["folder"] == "benchmark"] if not rows.empty else rows
    if len(bench):
        out += ["The papers' claims the benchmark tests ([table](figures/benchmark/paper_vs_ours_benchmark.md)):", ""]
        out += _detail(bench)
    for folder, (title, source) in PAPERS.items():
        out += [f"## {title}", "", f"Paper: `../shared/papers/{source}`. Notebooks: `notebooks/{folder}/`.", ""]
        mine = rows[rows["folder"] == folder] if not rows.empty else rows
        out += ["| artifact | what it shows | our rows | verdicts | files |", "|---|---|---:|---|---|"]
        for art in INVENTORY[folder]:
            hit = mine[mine["artifact"].str.contains(art.pattern, regex=True)] if not mine.empty else mine
            if len(hit):
                counts = hit["verdict"].value_counts()
                verdicts = ", ".join(f"{v}: {int(counts[v])}" for v in
                                     ("reproduced", "partly", "not reproduced", "not comparable") if v in counts)
                files = sorted(set(hit["table"]))
                out.append(f"| {art.key} | {_cell(art.shows)} | {len(hit)} | {verdicts} | "
                           + ", ".join(f"[{Path(t).stem}]({t})" for t in files) + " |")
            else:
                reason = art.absent or "no notebook reproduces it yet"
                out.append(f"| {art.key} | {_cell(art.shows)} | 0 | not comparable: {_cell(reason)} | |")
        out.append("")
        if mine.empty:
            continue
        for nb in dict.fromkeys(mine["notebook"]):
            figs = _figures_of(figures, folder, nb)
            if figs:
                out.append(f"Figures of `{folder}/{nb}`: " + ", ".join(f"[{Path(f).stem}]({f})" for f in figs))
                out.append("")
        out += _detail(mine)
    return "\n".join(out) + "\n"


def _detail(rows: pd.DataFrame) -> list[str]:
    out = ["| artifact | quantity | paper | ours | n | 95% CI | data & model | verdict | reason | table |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in rows.iterrows():
        out.append("| " + " | ".join(_cell(r[c]) for c in ("artifact", "quantity", "paper", "ours", "n", "ci",
                                                              "data_model", "verdict", "note"))
                   + f" | [{Path(r['table']).stem}]({r['table']})"
                   + (f" {WALL_CLOCK_MARK}" if bool(r.get("wall_clock", False)) else "") + " |")
    return out + [""]


def _benchmark_section(figures: Path) -> list[str]:
    path = figures / "benchmark" / "benchmark_summary.csv"
    if not path.exists():
        return []
    s = pd.read_csv(path)

    def ci(r, q, digits=3):
        if pd.isna(r[q]):
            return "n/a"
        return f"{r[q]:.{digits}f} [{r[f'{q}_low']:.{digits}f}, {r[f'{q}_high']:.{digits}f}] (n={int(r[f'{q}_n'])})"

    out = ["## The ground-truth benchmark (headline rows)", "",
           "From `notebooks/benchmark/ground_truth.ipynb` ([summary](figures/benchmark/benchmark_summary.md), "
           "[figure](figures/benchmark/benchmark_ranking.png)): mean, 95% bootstrap CI and n.", "",
           "| method | agreement (part mass) | agreement (per part pixel) | deletion AUC | insertion AUC | "
           "pointing | SF14 IoU |", "|---|---|---|---|---|---|---|"]
    for _, r in s.iterrows():
        out.append(f"| {r['method']} | " + " | ".join(ci(r, q) for q in ("agreement", "agreement_density",
                                                                          "deletion_auc", "insertion_auc", "pointing",
                                                                          "robustness")) + " |")
    find = figures / "benchmark" / "benchmark_finding.csv"
    if find.exists():
        out += ["", "Finding:", ""] + [str(t) for t in pd.read_csv(find)["finding"]]
    return out + [""]


def write_report(figures: str | Path, path: str | Path, *, commit: str = "", profile: str = "", run: str = "") -> Path:
    """Write :func:`render_report` to ``path``; returns it."""
    path = Path(path)
    path.write_text(render_report(figures, commit=commit, profile=profile, run=run))
    return path


def wall_clock_lines(text: str) -> list[str]:
    """The lines of a report that may change between two runs with the same seed: run times (the wall-clock
    lines, and the rows of tables saved with ``wall_clock=True``) and the commit."""
    return [line for line in text.splitlines() if line.startswith("- wall clock:") or line.startswith(
        "Figures made at commit") or line.endswith(f"{WALL_CLOCK_MARK} |")]


def stable_lines(text: str) -> list[str]:
    """The lines of a report that a fresh run must leave unchanged."""
    skip = set(wall_clock_lines(text))
    return [line for line in text.splitlines() if line not in skip]

