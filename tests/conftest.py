"""Shared test set-up: the tiny hand-checkable models of ``tests/tiny_models.py`` are importable from every
test folder, and tests run on one CPU thread with a fixed seed (they are small; threads only contend on
shared machines)."""

import sys
from pathlib import Path

import pytest
import torch

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
