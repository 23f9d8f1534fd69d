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
