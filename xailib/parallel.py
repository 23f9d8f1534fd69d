"""Mapping independent work over a ``dask.distributed`` cluster, or serially in this process.

The long loops of the methods that split by class or by method (AfI's per-class occluders, a benchmark's
methods) take an optional Dask ``client`` and hand their pieces to :func:`map_tasks`. Without a client, the pieces
run one after another in this process (the default: nothing to start, nothing to install). With one, each piece is
a Dask task; large shared inputs (a model, images) are scattered to the workers once, and each task runs with the
caller's torch thread count (Dask's workers set ``OMP_NUM_THREADS=1`` for themselves), so that a piece computes the
same numbers wherever it runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

__all__ = ["map_tasks", "check_client", "connect"]


def check_client(client) -> Any:
    """``client`` if it is None or looks like a ``distributed.Client`` (``submit``, ``scatter``, ``gather``)."""
    if client is None or all(callable(getattr(client, m, None)) for m in ("submit", "scatter", "gather")):
        return client
    raise TypeError(f"client must be a dask.distributed Client (e.g. Client(LocalCluster(n_workers=2)) or "
                    f"Client('tcp://scheduler:8786')) or None to run in this process, got {type(client).__name__}.")


def connect(scheduler: str = "", timeout: str = "30s"):
    """A ``distributed.Client`` of the cluster whose scheduler listens at ``scheduler`` (``"tcp://HOST:8786"``), or
    None for ``""``: what the notebooks' ``scheduler`` parameter turns into (empty: run in this process).

    Raises
    ------
    ValueError
        When ``scheduler`` is not a string, or no scheduler answers there within ``timeout`` (the message says how
        to start one).
    """
    if not isinstance(scheduler, str):
        raise ValueError(f"scheduler must be an address string such as 'tcp://127.0.0.1:8786', or '' to run in this "
                         f"process, got {scheduler!r}.")
    if not scheduler.strip():
        return None
    from distributed import Client

    try:
        return Client(scheduler.strip(), timeout=timeout)
    except (OSError, TimeoutError) as exc:
        raise ValueError(f"No dask scheduler answered at {scheduler!r} within {timeout} ({exc}); start one with "
                         "`dask scheduler` and workers with `dask worker ADDRESS` on machines that see this checkout, "
                         "or pass scheduler='' to run in this process.") from exc


def _call(fn: Callable, threads: int, args: Sequence, kwargs: Mapping) -> Any:
    """``fn(*args, **kwargs)`` with ``threads`` torch threads (restored after), as the caller computes."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return fn(*args, **kwargs)
    finally:
        torch.set_num_threads(old)


def map_tasks(fn: Callable, tasks: Sequence[Sequence], client=None, *, shared: Mapping[str, Any] | None = None,
              progress: bool = False, desc: str = "tasks") -> list:
    """``[fn(*task, **shared) for task in tasks]``, in order: in this process, or as Dask tasks on ``client``.

    Parameters
    ----------
    fn : callable
        A module-level function (Dask pickles it by name).
    tasks : sequence of tuples
        The positional arguments of each call.
    client : distributed.Client, optional
        Run the calls on its cluster; None (default): serially here.
    shared : dict, optional
        Keyword arguments common to every call; on a cluster they are scattered to every worker once.
    progress : bool
        A tqdm bar over the finished calls.

    Returns
    -------
    list
        The calls' results, in the order of ``tasks``. The first call that raises re-raises here (on a cluster,
        after the others are cancelled).
    """
    client = check_client(client)
    shared = dict(shared or {})
    bar = tqdm(total=len(tasks), desc=desc, leave=False, disable=not progress)
    try:
        if client is None:
            out = []
            for task in tasks:
                out.append(fn(*task, **shared))
                bar.update(1)
            return out
        from distributed import as_completed

        scattered = {k: client.scatter(v, broadcast=True, hash=False) for k, v in shared.items()}
        threads = torch.get_num_threads()
        futures = [client.submit(_call, fn, threads, tuple(task), scattered, pure=False) for task in tasks]
        try:
            for future in as_completed(futures):
                future.result()                                   # raises the first failure
                bar.update(1)
        except BaseException:
            client.cancel(futures)
            raise
        return client.gather(futures)
    finally:
        bar.close()
