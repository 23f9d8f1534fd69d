"""The gAP tests run on one CPU thread (they are small; threads only contend on shared machines)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread_and_seed():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
