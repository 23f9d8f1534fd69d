"""Tests for xailib.results: file layout, exact table text, byte-identical outputs, provenance sidecars."""

from __future__ import annotations

import json
import subprocess

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from xailib import results  # noqa: E402
from xailib.results import Run, markdown_table  # noqa: E402


def make_run(out, **params):
    params = {"profile": "smoke", "device": "cpu", "seed": 0, **params}
    return Run(paper="toy", notebook="01_toy", params=params, output_dir=out)


def small_table(seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"method": ["gap", "afi"], "pcc": rng.random(2), "n": [3, 4]})


def small_figure():
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1, 2], [1, 0, 2], label="a")
    ax.set_title("toy")
    ax.legend()
    return fig


def test_save_table_writes_exact_csv_and_markdown(tmp_path):
    run = make_run(tmp_path)
    df = pd.DataFrame({"method": ["gap", "a|b"], "pcc": [0.123456, np.nan], "n": [3, 4]})
    paths = run.save_table(df, "table1_pcc", float_format="%.3f")
    assert set(paths) == {"csv", "md", "json"}
    assert paths["csv"] == tmp_path.resolve() / "toy" / "table1_pcc.csv"
    assert paths["csv"].read_bytes() == b"method,pcc,n\ngap,0.123,3\na|b,,4\n"
    assert paths["md"].read_bytes() == (
        b"| method | pcc | n |\n"
        b"|:---|---:|---:|\n"
        b"| gap | 0.123 | 3 |\n"
        b"| a\\|b |  | 4 |\n"
    )
    assert run.written == [paths["csv"], paths["md"], paths["json"]]


def test_save_table_writes_a_meaningful_index_only():
    df = pd.DataFrame({"pcc": [0.5, 0.25]}, index=pd.Index(["gap", "afi"], name="method"))
    assert markdown_table(df, "%.2f", index=True) == (
        "| method | pcc |\n|:---|---:|\n| gap | 0.50 |\n| afi | 0.25 |\n"
    )


def test_save_table_index_default(tmp_path):
    run = make_run(tmp_path)
    named = pd.DataFrame({"pcc": [0.5]}, index=pd.Index(["gap"], name="method"))
    plain = pd.DataFrame({"pcc": [0.5]})
    assert run.save_table(named, "named")["csv"].read_text() == "method,pcc\ngap,0.5000\n"
    assert run.save_table(plain, "plain")["csv"].read_text() == "pcc\n0.5000\n"


def test_same_seed_gives_byte_identical_files(tmp_path):
    written = []
    for i in range(2):
        run = make_run(tmp_path / str(i))
        table = run.save_table(small_table(seed=0), "table1")
        fig = small_figure()
        figure = run.save_figure(fig, "fig1")
        plt.close(fig)
        written.append({**{k: v.read_bytes() for k, v in table.items()},
                        **{k: v.read_bytes() for k, v in figure.items() if k != "json"}})
    for kind in ("csv", "md", "png", "pdf"):
        assert written[0][kind] == written[1][kind], kind
    # The data of another seed differs, so the identity above is not vacuous.
    other = make_run(tmp_path / "other").save_table(small_table(seed=1), "table1")
    assert other["csv"].read_bytes() != written[0]["csv"]


def test_figures_carry_no_dates_or_software_tags(tmp_path):
    fig = small_figure()
    paths = make_run(tmp_path).save_figure(fig, "fig1")
    plt.close(fig)
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"Software" not in paths["png"].read_bytes()
    pdf = paths["pdf"].read_bytes()
    assert pdf.startswith(b"%PDF") and b"CreationDate" not in pdf


def test_sidecar_records_provenance(tmp_path):
    run = make_run(tmp_path, extra_knob=0.5)
    fig = small_figure()
    paths = run.save_figure(fig, "fig06_sorted_contributions", caption="Fig. 6")
    plt.close(fig)
    meta = json.loads(paths["json"].read_text())
    assert meta["name"] == "fig06_sorted_contributions" and list(meta["outputs"]) == ["figure"]
    assert meta["outputs"]["figure"]["files"] == ["fig06_sorted_contributions.png", "fig06_sorted_contributions.pdf"]
    assert meta["outputs"]["figure"]["caption"] == "Fig. 6"
    assert meta["paper"] == "toy" and meta["notebook"] == "01_toy"
    assert meta["profile"] == "smoke" and meta["seed"] == 0
    assert meta["parameters"] == {"profile": "smoke", "device": "cpu", "seed": 0, "extra_knob": 0.5}
    assert meta["device"] == {"requested": "cpu", "resolved": "cpu", "name": None}
    assert set(meta["versions"]) == {"python", "torch", "torchvision", "numpy", "captum", "xailib"}
    assert set(meta["git"]) == {"commit", "dirty"} and meta["git"]["commit"]
    assert meta["wall_time_s"] >= 0
    assert meta["created"].endswith("+00:00")


def test_git_info_outside_a_checkout_is_unknown(tmp_path, monkeypatch):
    results._git_info_cached.cache_clear()
    assert results.git_info(tmp_path) == {"commit": "unknown", "dirty": None}

    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(subprocess, "run", no_git)
    results._git_info_cached.cache_clear()
    try:
        assert results.git_info() == {"commit": "unknown", "dirty": None}
        run = make_run(tmp_path)  # must not crash without git
        meta = json.loads(run.save_table(small_table(), "t")["json"].read_text())
        assert meta["git"]["commit"] == "unknown"
    finally:
        results._git_info_cached.cache_clear()


def test_empty_output_dir_means_repo_figures(tmp_path, monkeypatch):
    monkeypatch.setenv("XAILIB_ROOT", str(tmp_path))
    assert make_run("").out_dir == tmp_path.resolve() / "figures" / "toy"
    assert make_run(None).out_dir == tmp_path.resolve() / "figures" / "toy"


def test_profile_validation_and_profile_value(tmp_path):
    with pytest.raises(ValueError, match="smoke, default, paper"):
        make_run(tmp_path, profile="fast")
    assert Run("toy", "nb", {}, tmp_path).profile == "default"
    for profile, expected in [("smoke", 8), ("default", 256), ("paper", 5000)]:
        assert make_run(tmp_path, profile=profile).profile_value(smoke=8, default=256, paper=5000) == expected


def test_bad_arguments_raise_actionable_errors(tmp_path):
    run = make_run(tmp_path)
    with pytest.raises(ValueError, match="plain file stem"):
        run.save_table(small_table(), "sub/table1")
    with pytest.raises(ValueError, match="plain file stem"):
        run.save_table(small_table(), "table1.csv")
    with pytest.raises(TypeError, match="to_frame"):
        run.save_table(small_table()["pcc"], "t")
    with pytest.raises(ValueError, match="float_format"):
        run.save_table(small_table(), "t", float_format="%d %d")
    with pytest.raises(TypeError, match="matplotlib Figure"):
        run.save_figure(np.zeros((2, 2)), "f")
    fig = small_figure()
    with pytest.raises(ValueError, match="Unsupported figure format"):
        run.save_figure(fig, "f", formats=("jpg",))
    plt.close(fig)
    with pytest.raises(ValueError, match="paper"):
        Run("../gap", "nb", {}, tmp_path)


def test_figure_and_table_of_one_name_share_a_sidecar_without_losing_either(tmp_path):
    run = make_run(tmp_path)
    fig = small_figure()
    run.save_figure(fig, "fig06b_counts", caption="the plot")
    plt.close(fig)
    paths = run.save_table(small_table(), "fig06b_counts", caption="its data", wall_clock=True)
    meta = json.loads(paths["json"].read_text())
    assert meta["outputs"]["figure"]["caption"] == "the plot"
    assert meta["outputs"]["table"]["caption"] == "its data" and meta["outputs"]["table"]["wall_clock"] is True
    assert meta["outputs"]["table"]["files"] == ["fig06b_counts.csv", "fig06b_counts.md"]
    assert run.written.count(paths["json"]) == 1
