"""Shared test set-up: the tiny hand-checkable models of ``tests/tiny_models.py`` are importable from every
test folder, and tests run on one CPU thread with a fixed seed (they are small; threads only contend on
shared machines)."""

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from xailib.models import build_model

sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(autouse=True)
def one_thread_and_seed():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def vgg():
    """The zoo VGG for Fashion-MNIST, untrained (seed 0), with non-trivial BatchNorm statistics so that eval
    mode matters; in eval mode."""
    torch.manual_seed(0)
    m = build_model("vgg", "fashion-mnist")
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.2, 0.2)
    return m.eval()


@pytest.fixture(scope="module")
def images():
    """Three random 1 x 28 x 28 images in [0, 1] (seed 1), the input of :func:`vgg`."""
    return torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="session")
def dask_client():
    """A dask.distributed Client of a LocalCluster of two single-threaded worker processes on this machine (the
    environment variables the cluster sets in this process are restored after)."""
    from distributed import Client, LocalCluster

    from xailib.reproduce import environment_restored

    with environment_restored():        # the variables leak when the cluster starts: restore them at once, for the
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    try:                                # kernels that other tests start while this session-wide cluster lives
        with Client(cluster) as client:
            yield client
    finally:
        with environment_restored():
            cluster.close()
