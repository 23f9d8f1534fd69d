"""`make performers` retrains the same performers: the same sha256 twice (the zoo's rule, here for the explainer's)."""

from xailib.explainer.performers import main
from xailib.models.checkpoints import read_manifest


def test_retraining_gives_the_same_checkpoint(tmp_path):
    shas = []
    for run in ("a", "b"):
        folder = tmp_path / run
        assert main(["--only", "alexnet-goat-icnn", "--epochs", "1", "--n-train", "25", "--out", str(folder)]) == 0
        entry = read_manifest(folder)["models"]["alexnet-goat-icnn"]
        shas.append((entry["sha256"], entry["history"]["filter_loss"], entry["test_accuracy"]))
    assert shas[0] == shas[1]
