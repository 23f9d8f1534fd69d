"""The runner's promise on the real notebooks: the same seed and profile give byte-identical CSV tables.

Tables saved with ``wall_clock=True`` hold measured times and are the only ones allowed to differ.
Runs every notebook twice on the smoke profile (about a minute on a 2-core CPU).
"""

import json

import pytest

from xailib.reproduce import reproduce
from xailib.utils import repo_root

pytestmark = pytest.mark.slow


def test_same_seed_and_profile_give_byte_identical_tables(tmp_path):
    runs = []
    for i in range(2):
        out = tmp_path / f"run{i}"
        reproduce(profile="smoke", device="cpu", figures_dir=out / "figures", build_dir=out / "build",
                  notebooks_dir=repo_root() / "notebooks", progress=False)
        runs.append(out / "figures")
    tables = sorted(p.relative_to(runs[0]) for p in runs[0].rglob("*.csv"))
    assert len(tables) >= 10, f"expected the notebooks to write tables, found {tables}"
    timed = {t for t in tables if json.loads((runs[0] / t.with_suffix(".json")).read_text())["outputs"]["table"]["wall_clock"]}
    assert timed, "the timing tables should be flagged wall_clock"
    differ = [str(t) for t in tables if t not in timed and (runs[0] / t).read_bytes() != (runs[1] / t).read_bytes()]
    assert not differ, f"tables not byte-identical between two runs with the same seed: {differ}"
