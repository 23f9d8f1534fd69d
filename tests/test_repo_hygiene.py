"""The project's own promises about its notebooks: thin, parameterised, committed without outputs."""

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted(p for p in (ROOT / "notebooks").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
REQUIRED_PARAMETERS = ("profile", "device", "seed", "output_dir")


def test_there_are_notebooks_and_00_is_first():
    assert NOTEBOOKS, "notebooks/ holds no notebook"
    assert (ROOT / "notebooks" / "00_data_and_models.ipynb").exists()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT / "notebooks")))
def test_notebook_shape(path):
    nb = json.loads(path.read_text())
    assert "kernelspec" in nb["metadata"], "papermill needs a kernelspec"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert not any(c.get("outputs") or c.get("execution_count") for c in code), "strip outputs before committing"
    tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "exactly one cell must be tagged 'parameters'"
    source = "".join(tagged[0]["source"])
    for name in REQUIRED_PARAMETERS:
        assert f"{name}:" in source, f"the parameters cell must declare `{name}: <type> = ...`"
    assert code.index(tagged[0]) == 1, "cell 1 imports, cell 2 is the parameters cell"
    long = [i for i, c in enumerate(code) if len("".join(c["source"]).splitlines()) > 25]
    assert not long, f"code cells {long} are over 25 lines: move that code into xailib"
    assert any(c["cell_type"] == "markdown" for c in nb["cells"]), "say in markdown what this reproduces"


def test_no_large_files_tracked():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    big = [f for f in files if (ROOT / f).is_file() and (ROOT / f).stat().st_size > 8_000_000]
    assert not big, f"files over 8 MB tracked in git: {big}"
