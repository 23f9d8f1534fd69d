"""xailib.parallel.map_tasks: the same results, in order, serially and on a two-worker LocalCluster."""

import pytest
import torch

from xailib.parallel import check_client, map_tasks


def affine(a, b, *, scale, shift):
    return scale * a + b + shift


def threads_and_sum(x, *, weights):
    return torch.get_num_threads(), float((x * weights).sum())


def fails_on(k, *, bad):
    if k == bad:
        raise ValueError(f"task {k} fails on purpose")
    return k


def test_serial_in_order_with_shared_arguments():
    assert map_tasks(affine, [(1, 2), (3, 4), (5, 6)], shared={"scale": 10, "shift": 0.5}) == [12.5, 34.5, 56.5]
    assert map_tasks(affine, [], shared={"scale": 1, "shift": 0}) == []


def test_bad_client():
    with pytest.raises(TypeError, match="dask.distributed Client"):
        check_client("tcp://127.0.0.1:8786")
    with pytest.raises(TypeError, match="or None to run in this process"):
        map_tasks(affine, [(1, 2)], client=object(), shared={"scale": 1, "shift": 0})


@pytest.mark.slow
def test_cluster_gives_the_serial_results_with_the_callers_threads(dask_client):
    weights = torch.arange(6.0)
    tasks = [(torch.full((6,), float(k)),) for k in range(5)]
    torch.set_num_threads(2)                          # the workers run 1 thread (OMP_NUM_THREADS=1) by themselves
    serial = map_tasks(threads_and_sum, tasks, shared={"weights": weights})
    parallel = map_tasks(threads_and_sum, tasks, dask_client, shared={"weights": weights})
    assert parallel == serial == [(2, 15.0 * k) for k in range(5)]
    assert map_tasks(affine, [(1, 2), (3, 4)], dask_client, shared={"scale": 10, "shift": 0}) == [12, 34]


@pytest.mark.slow
def test_cluster_raises_the_failure(dask_client):
    with pytest.raises(ValueError, match="task 3 fails on purpose"):
        map_tasks(fails_on, [(k,) for k in range(6)], dask_client, shared={"bad": 3})


def test_connect_by_address():
    from xailib.parallel import connect

    assert connect("") is None and connect("   ") is None
    with pytest.raises(ValueError, match="address string"):
        connect(8786)
    with pytest.raises(ValueError, match="No dask scheduler answered.*dask scheduler"):
        connect("tcp://127.0.0.1:1", timeout="1s")


@pytest.mark.slow
def test_afi_notebook_on_a_scheduler_gives_the_serial_tables(dask_client, tmp_path):
    """afi/01 on the smoke profile with ``-p scheduler ADDRESS``: the occluders are learned as Dask tasks (one class
    per task) on the cluster, and the tables equal those of the run in this process (one batched run) within the
    1e-6 that learn_occluders promises, at the tables' four decimals."""
    import pandas as pd
    import papermill as pm

    from xailib.utils import repo_root

    src = repo_root() / "notebooks" / "afi" / "01_attacking.ipynb"
    tables = {}
    for label, extra in (("serial", {}), ("cluster", {"scheduler": dask_client.scheduler.address})):
        out = tmp_path / label
        pm.execute_notebook(str(src), str(tmp_path / f"{label}.ipynb"), kernel_name="python3", progress_bar=False,
                            cwd=str(src.parent), parameters={"profile": "smoke", "output_dir": str(out), **extra})
        tables[label] = pd.read_csv(out / "afi" / "tableS1_attacking.csv")
    pd.testing.assert_frame_equal(tables["serial"], tables["cluster"], atol=1e-4, rtol=0)


@pytest.mark.slow
def test_benchmark_methods_on_a_cluster_give_the_serial_tables(dask_client):
    """The ground-truth benchmark's methods as Dask tasks (one per method): every table but the wall-clock one equals
    the serial run's, bit for bit (each task rebuilds the model from the zoo and the scenes from the seed)."""
    import pandas as pd

    from xailib.benchmark.ground_truth import Setting, run_benchmark

    setting = Setting(n_test=1, n_fit=3, n_probe=6, afi_iter=5, n_perm=10, steps=4, n_robust=3)
    serial = run_benchmark(setting, ["GradCAM", "AfI"])
    cluster = run_benchmark(setting, ["GradCAM", "AfI"], client=dask_client)
    for key in ("part_scores", "per_image", "robustness", "truth", "agreement"):
        pd.testing.assert_frame_equal(serial[key], cluster[key], check_exact=True)
    assert list(cluster["cost"]["method"]) == ["GradCAM", "AfI", "Random"]
