"""What the real-scale stand-in tests share: a photo-like stand-in scene, running a paper's notebook on the smoke
profile through the runner, and the checks of its closing paper-vs-ours table."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from xailib.reproduce import reproduce
from xailib.results import PAPER_TABLE_COLUMNS, VERDICTS
from xailib.utils import repo_root


def scene(rng) -> np.ndarray:
    """A 90 x 110 photo stand-in (not square: resize + crop apply): a plain background with 3-5 coloured
    rectangles and mild noise, so that SLIC finds coherent segments."""
    pixels = np.broadcast_to(rng.integers(0, 256, size=3), (90, 110, 3)).astype(np.int64)
    for _ in range(rng.integers(3, 6)):
        y0, x0 = rng.integers(0, 60), rng.integers(0, 80)
        pixels[y0:y0 + rng.integers(15, 40), x0:x0 + rng.integers(15, 40)] = rng.integers(0, 256, size=3)
    return np.clip(pixels + rng.integers(-12, 13, size=pixels.shape), 0, 255).astype(np.uint8)


def run_notebook(paper: str, notebook: str, params: dict, tmp_path):
    """Run ``<paper>/<notebook>`` on the smoke profile with ``params``; its figures folder and its printed text."""
    out = tmp_path / "out"
    reproduce(only=f"{paper}/{notebook}", profile="smoke", device="cpu", progress=False, params=params,
              notebooks_dir=repo_root() / "notebooks", figures_dir=out / "figures", build_dir=out / "build")
    cells = json.loads((out / "build" / "executed" / paper / f"{notebook}.ipynb").read_text())["cells"]
    printed = "".join("".join(o.get("text", "")) for c in cells for o in c.get("outputs", [])
                      if o.get("name") == "stdout")
    return out / "figures" / paper, printed


def table(folder, stem: str) -> pd.DataFrame:
    return pd.read_csv(folder / f"{stem}.csv")


def check_paper_table(folder, stem: str) -> pd.DataFrame:
    """The closing paper-vs-ours table: its columns, at least one row, only the four verdicts, and a row whose value
    of ours could not be measured here (n/a, NaN) is never judged against the paper: it is "not comparable"."""
    t = table(folder, stem)
    assert tuple(t.columns) == PAPER_TABLE_COLUMNS and len(t) > 0
    assert set(t["verdict"]) <= set(VERDICTS), set(t["verdict"]) - set(VERDICTS)
    unmeasured = t["ours"].astype(str).str.lower().str.contains("nan")  # pandas reads "n/a" as NaN
    judged = t[unmeasured & (t["verdict"] != "not comparable")]
    assert judged.empty, judged[["quantity", "ours", "verdict"]].to_string()
    return t
