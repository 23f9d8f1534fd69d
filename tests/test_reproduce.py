"""Tests for the papermill runner, on tiny notebooks built here with nbformat.

The notebooks are real (papermill starts the ``python3`` kernel for each), so these tests take a few seconds per
executed notebook; the usage-error tests start no kernel.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import nbformat
import pytest

from xailib import reproduce as rp

PARAMETERS = '''\
profile: str = "default"  # smoke | default | paper
device: str = "auto"  # auto | cpu | cuda
seed: int = 0  # random seed
output_dir: str = ""  # "" means <repo>/figures
'''

SAVE_OUTPUTS = '''\
run = Run(paper="toy", notebook={name!r}, params=dict(profile=profile, device=device, seed=seed, scale=scale),
          output_dir=output_dir)
values = np.random.default_rng(seed).random(3) * scale
run.save_table(pd.DataFrame({{"k": [0, 1, 2], "value": values}}), {table!r}, float_format="%.6f")
fig, ax = plt.subplots(figsize=(2, 2))
ax.plot(values)
run.save_figure(fig, {figure!r})
'''

IMPORTS = '''\
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from xailib.results import Run
'''


def write_notebook(path: Path, *cells: str, parameters: str | None = PARAMETERS) -> Path:
    """A notebook with an imports cell, an optional ``parameters``-tagged cell, then ``cells``."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells.append(nbformat.v4.new_code_cell(IMPORTS))
    if parameters is not None:
        params = nbformat.v4.new_code_cell(parameters)
        params.metadata["tags"] = ["parameters"]
        nb.cells.append(params)
    nb.cells.extend(nbformat.v4.new_code_cell(c) for c in cells)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


@pytest.fixture
def project(tmp_path):
    """notebooks/00_data_and_models, notebooks/toy/01_toy (saves a table and a figure), a checkpoint copy."""
    nbs = tmp_path / "notebooks"
    write_notebook(nbs / "00_data_and_models.ipynb", "print('data ok', profile)")
    write_notebook(nbs / "toy" / "01_toy.ipynb",
                   SAVE_OUTPUTS.format(name="01_toy", table="table1", figure="fig1"),
                   parameters=PARAMETERS + "scale: float = 1.0  # multiplies the values\n")
    write_notebook(nbs / "toy" / ".ipynb_checkpoints" / "01_toy-checkpoint.ipynb", "raise RuntimeError('ran')")
    return tmp_path


def cli(project: Path, *argv: str) -> int:
    return rp.main(["--no-progress", *argv], notebooks_dir=project / "notebooks",
                   figures_dir=project / "figures", build_dir=project / "build")


def digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_find_notebooks_order_filter_and_checkpoints(project):
    nbs = project / "notebooks"
    write_notebook(nbs / "afi" / "01_a.ipynb")
    rel = [p.relative_to(nbs).as_posix() for p in rp.find_notebooks(nbs)]
    assert rel == ["00_data_and_models.ipynb", "afi/01_a.ipynb", "toy/01_toy.ipynb"]
    assert [p.name for p in rp.find_notebooks(nbs, "toy/*")] == ["01_toy.ipynb"]
    assert [p.name for p in rp.find_notebooks(nbs, "toy/01_toy")] == ["01_toy.ipynb"]
    assert len(rp.find_notebooks(nbs, "afi/*, toy/*")) == 2


def test_parse_value():
    assert [rp.parse_value(v) for v in ["3", "-2", "0.5", "1e-3", "True", "false", "None", "resnet18"]] == [
        3, -2, 0.5, 1e-3, True, False, None, "resnet18"]
    assert type(rp.parse_value("3")) is int


def test_success_publishes_outputs_and_same_seed_is_byte_identical(project, capsys):
    assert cli(project, "--profile", "smoke", "--device", "cpu") == 0
    out = capsys.readouterr().out
    toy = project / "figures" / "toy"
    assert sorted(p.name for p in toy.iterdir()) == [
        "fig1.json", "fig1.pdf", "fig1.png", "table1.csv", "table1.json", "table1.md"]
    assert "Ran 2 notebook(s)" in out and "table1: csv, md, json" in out and "fig1: png, pdf, json" in out
    # Executed copies mirror the layout; staging is cleaned up; the checkpoint copy never ran.
    build = project / "build"
    assert (build / "executed" / "00_data_and_models.ipynb").is_file()
    executed = nbformat.read(str(build / "executed" / "toy" / "01_toy.ipynb"), as_version=4)
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert 'profile = "smoke"' in injected[0].source and "seed = 0" in injected[0].source
    assert not any((build / "staging").iterdir())
    assert not (build / "executed" / "toy" / ".ipynb_checkpoints").exists()
    meta = json.loads((toy / "table1.json").read_text())
    assert meta["profile"] == "smoke" and meta["seed"] == 0 and meta["device"]["resolved"] == "cpu"

    first = digest(toy)
    assert cli(project, "--profile", "smoke", "--device", "cpu", "--only", "toy/*") == 0
    second = digest(toy)
    for name in ("table1.csv", "table1.md", "fig1.png", "fig1.pdf"):
        assert first[name] == second[name], name

    # Another seed and an extra -p parameter reach the notebook and change the numbers.
    assert cli(project, "--profile", "smoke", "--device", "cpu", "--only", "toy/*",
               "-p", "seed", "1", "-p", "scale", "2.5") == 0
    assert digest(toy)["table1.csv"] != first["table1.csv"]
    meta = json.loads((toy / "table1.json").read_text())
    assert meta["seed"] == 1 and meta["parameters"]["scale"] == 2.5


def test_failing_notebook_reports_cell_and_leaves_figures_untouched(project, capsys):
    nbs = project / "notebooks"
    write_notebook(nbs / "toy" / "02_fails.ipynb",
                   SAVE_OUTPUTS.format(name="02_fails", table="table1", figure="fig1"),
                   "ratio = values.sum() / 0.0\nassert ratio < 1, 'the ratio exploded'",
                   parameters=PARAMETERS + "scale: float = 1.0\n")
    write_notebook(nbs / "toy" / "03_after.ipynb", "open('ran.txt', 'w').write('x')")
    figures = project / "figures" / "toy"
    figures.mkdir(parents=True)
    (figures / "table1.csv").write_bytes(b"k,value\n0,old\n")
    (figures / "keep.md").write_bytes(b"| old |\n")
    before = digest(project / "figures")

    assert cli(project, "--profile", "smoke", "--device", "cpu", "--only", "toy/0[23]*") == 1
    err = capsys.readouterr().err
    first_line = err.strip().splitlines()[0]
    assert first_line.startswith("FAILED ") and first_line.endswith("toy/02_fails.ipynb")
    # Cell 3 of the source notebook (imports, parameters, save, failing cell), its first line and the error.
    assert "cell 3 (In [" in err and "ratio = values.sum() / 0.0" in err
    assert "line 2: assert ratio < 1, 'the ratio exploded'" in err
    assert "AssertionError: the ratio exploded" in err
    assert "02_fails.ipynb" in err.split("executed copy")[1]
    assert (project / "build" / "executed" / "toy" / "02_fails.ipynb").is_file()
    # The run stopped, and figures/ is byte-identical although the notebook had saved outputs to staging.
    assert not (project / "build" / "executed" / "toy" / "03_after.ipynb").exists()
    assert digest(project / "figures") == before


def test_only_matching_nothing_exits_2_and_lists_notebooks(project, capsys):
    assert cli(project, "--only", "mace/*") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "'mace/*' matches no notebook" in err and "toy/01_toy.ipynb" in err


@pytest.mark.parametrize("argv, message", [
    (["-p", "n_images", "4"], "no selected notebook declares a parameter 'n_images'"),
    (["-p", "profile", "smoke"], "use --profile"),
    (["--profile", "fast"], "unknown profile 'fast'"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--workers", "0"], "--workers must be a positive int"),
])
def test_usage_errors_exit_2_with_one_line(project, capsys, argv, message):
    assert cli(project, *argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (project / "figures").exists()


def test_unknown_parameter_for_the_selected_notebooks_only(project, capsys):
    # 'scale' is declared by toy/01_toy only: fine for all notebooks, unknown when only 00 is selected.
    assert cli(project, "--only", "00_*", "-p", "scale", "2", "--list") == 0
    assert cli(project, "--only", "00_*", "-p", "scale", "2") == 2
    assert "known parameters: device, output_dir, profile, seed" in capsys.readouterr().err


def test_missing_notebooks_folder_exits_2(tmp_path, capsys):
    assert rp.main(["--list"], notebooks_dir=tmp_path / "nope") == 2
    assert "notebooks folder" in capsys.readouterr().err


def test_list_prints_notebooks_and_parameters(project, capsys):
    assert cli(project, "--list") == 0
    out = capsys.readouterr().out
    assert out.index("00_data_and_models.ipynb") < out.index("01_toy.ipynb")
    assert 'profile: str = "default"  # smoke | default | paper' in out
    assert "scale: float = 1.0  # multiplies the values" in out


def test_prepare_smoke_injects_smoke_profile_without_executing(project, capsys):
    dest = project / "build" / "nbval"
    assert cli(project, "--prepare-smoke", str(dest), "-p", "scale", "0.5") == 0
    copies = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*.ipynb"))
    assert copies == ["00_data_and_models.ipynb", "toy/01_toy.ipynb"]
    nb = nbformat.read(str(dest / "toy" / "01_toy.ipynb"), as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1
    src = injected[0].source
    assert 'profile = "smoke"' in src and 'device = "cpu"' in src and "scale = 0.5" in src
    assert f'output_dir = "{dest / "_figures"}"' in src
    assert all(c.get("execution_count") is None and not c.get("outputs") for c in nb.cells if c.cell_type == "code")
    assert nb.metadata["kernelspec"]["name"] == "python3"

    # Re-running replaces the copies; a foreign non-empty folder is refused.
    (project / "notebooks" / "toy" / "01_toy.ipynb").unlink()
    assert cli(project, "--prepare-smoke", str(dest)) == 0
    assert not (dest / "toy" / "01_toy.ipynb").exists()
    foreign = project / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert cli(project, "--prepare-smoke", str(foreign)) == 2
    assert (foreign / "notes.txt").read_text() == "keep me"


# -- past one process: Dask ----------------------------------------------------------------------------------------

ENVIRONMENT = """\
import os, torch
run = Run(paper="toy", notebook="02_env", params=dict(profile=profile), output_dir=output_dir)
env = {k: str(os.environ.get(k)) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "PYTHONHASHSEED",
                                         "MALLOC_TRIM_THRESHOLD_")}
env["torch_threads"] = str(torch.get_num_threads())
run.save_table(pd.DataFrame({"name": list(env), "value": list(env.values())}), "environment")
"""


def test_workers_and_scheduler_are_exclusive(project, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli(project, "--workers", "2", "--scheduler", "tcp://127.0.0.1:1")
    assert exit_info.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    with pytest.raises(rp.ReproduceError, match="not both"):
        rp.reproduce(workers=2, scheduler="tcp://127.0.0.1:1", notebooks_dir=project / "notebooks")


@pytest.mark.slow
def test_two_workers_give_the_outputs_of_a_serial_run(project, capsys):
    """The same tables and figures, byte for byte, and the same kernel environment (threads, hash seed): Dask's
    workers set OMP_NUM_THREADS=1 for themselves, which the kernels must not inherit."""
    write_notebook(project / "notebooks" / "toy" / "02_env.ipynb", ENVIRONMENT)
    assert cli(project, "--profile", "smoke", "--device", "cpu") == 0
    serial = digest(project / "figures" / "toy")
    serial_env = (project / "figures" / "toy" / "environment.csv").read_text()
    assert cli(project, "--profile", "smoke", "--device", "cpu", "--workers", "2") == 0
    assert "Ran 3 notebook(s)" in capsys.readouterr().out
    parallel = digest(project / "figures" / "toy")
    assert set(parallel) == set(serial)
    for name in ("table1.csv", "table1.md", "fig1.png", "fig1.pdf", "environment.csv"):
        assert parallel[name] == serial[name], (name, serial_env,
                                                (project / "figures" / "toy" / "environment.csv").read_text())
    assert "PYTHONHASHSEED,0" in serial_env
    assert not any((project / "build" / "staging").iterdir())


@pytest.mark.slow
def test_parallel_failure_names_notebook_and_cell_and_leaves_figures(project, capsys):
    nbs = project / "notebooks"
    write_notebook(nbs / "toy" / "02_fails.ipynb", "x = 1\nraise ValueError('broken on purpose')")
    figures = project / "figures" / "toy"
    figures.mkdir(parents=True)
    (figures / "table1.csv").write_bytes(b"k,value\n0,old\n")
    before = digest(project / "figures")
    assert cli(project, "--profile", "smoke", "--device", "cpu", "--workers", "2") == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines()[0].startswith("FAILED ") and "toy/02_fails.ipynb" in err.splitlines()[0]
    assert "cell 2 (In [" in err and "line 2: raise ValueError('broken on purpose')" in err
    assert "ValueError: broken on purpose" in err
    assert digest(project / "figures") == before           # 01_toy succeeded, but nothing was published


@pytest.mark.slow
def test_an_existing_cluster_by_its_scheduler_address(project, capsys):
    from distributed import LocalCluster

    before = dict(os.environ)
    with rp.environment_restored(), \
            LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        assert cli(project, "--profile", "smoke", "--device", "cpu", "--only", "toy/*",
                   "--scheduler", cluster.scheduler_address) == 0
    assert (project / "figures" / "toy" / "table1.csv").is_file()
    assert "Ran 1 notebook(s)" in capsys.readouterr().out
    assert dict(os.environ) == before


def test_environment_restored_after_a_local_cluster():
    from distributed import LocalCluster

    before = dict(os.environ)
    with rp.environment_restored(), LocalCluster(n_workers=1, processes=True, dashboard_address=None):
        pass
    assert dict(os.environ) == before


def test_cluster_jobs_run_longest_first_by_the_last_recorded_run_times(tmp_path):
    """The longest-processing-time order, from the sidecars' wall_time_s (the largest per notebook); a notebook
    with no record goes first (its cost is unknown); a top-level notebook is found by its stem."""
    figs = tmp_path / "figures"
    for paper, notebook, seconds in [("gap", "01_a", 30.0), ("gap", "01_a", 120.0), ("afi", "02_b", 60.0),
                                     ("data_and_models", "00_c", 90.0)]:
        (figs / paper).mkdir(parents=True, exist_ok=True)
        (figs / paper / f"{notebook}_{seconds:.0f}.json").write_text(
            json.dumps({"paper": paper, "notebook": notebook, "wall_time_s": seconds}))
    (figs / "gap" / "broken.json").write_text("{not json")
    times = rp.last_run_times(figs)
    assert times == {"gap/01_a": 120.0, "afi/02_b": 60.0, "data_and_models/00_c": 90.0}
    jobs = [(rp._Notebook(Path(rel), rel, {}), None, {}) for rel in
            ("00_c.ipynb", "afi/02_b.ipynb", "gap/01_a.ipynb", "mace/09_new.ipynb")]
    order = [job[0].rel for job in rp.longest_first(jobs, times)]
    assert order == ["mace/09_new.ipynb", "gap/01_a.ipynb", "00_c.ipynb", "afi/02_b.ipynb"]


def test_the_report_records_how_the_run_was_run_in_a_wall_clock_line(monkeypatch):
    from xailib import report

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    line = rp._run_line(18, 2520.0, 2, None)
    assert line == ("- wall clock: the last run of `xailib.reproduce` took 42.0 min end to end for 18 notebook(s), "
                    "on 2 local worker process(es), 1 thread(s) per kernel")
    assert report.wall_clock_lines(f"# r\n{line}\nkept") == [line]
    with pytest.raises(ValueError, match="wall clock"):
        report.render_report("/nonexistent", run="took 3 min")
