"""Run every paper notebook with papermill and publish its figures and tables: the engine of ``make reproduce``.

Command line::

    python -m xailib.reproduce [--only GLOB] [--profile smoke|default|paper] [--device auto|cpu|cuda]
                               [-p NAME VALUE]... [--workers N | --scheduler ADDRESS] [--list]
                               [--prepare-smoke DIR]

What a run does
---------------
1. Finds ``notebooks/**/*.ipynb`` (sorted, ``notebooks/00_data_and_models.ipynb`` first, checkpoints skipped)
   and keeps those whose path relative to ``notebooks/`` matches ``--only`` (``fnmatch``, e.g. ``'gap/*'``).
2. Executes each with papermill (kernel ``python3``, working directory = the notebook's folder), passing the
   parameters its ``parameters`` cell declares: ``profile``, ``device``, ``seed`` (0 unless ``-p seed N``),
   ``output_dir`` (a staging folder) and any ``-p NAME VALUE``. Executed copies go to
   ``build/executed/<same path>``.
3. Only when every notebook succeeded are the staged outputs (``build/staging/<run-id>/<paper>/...``) copied over
   ``figures/<paper>/``. When one fails, the run stops, names the notebook and the failing cell, exits with
   status 1, and ``figures/`` is left as it was.
4. After publishing, ``REPRODUCTION.md`` beside ``figures/`` is rewritten from every table there
   (:mod:`xailib.report`): a row and a verdict for every artifact of the four papers.

Past one process: ``--workers N`` runs the selected notebooks in parallel on a ``dask.distributed``
``LocalCluster`` of ``N`` single-threaded worker processes on this machine, ``--scheduler ADDRESS`` on an existing
cluster (its workers must see this checkout at the same path, a shared filesystem, with xailib installed: the
runner checks that and says so otherwise). Each notebook is one task; every kernel gets the thread and hash-seed
environment a serial run gives it (Dask's workers set ``OMP_NUM_THREADS=1`` for their own process, which would
change torch's thread count and so the last bits of some numbers), so the outputs are the same either way. Staging
still holds: ``figures/`` is replaced only when every notebook succeeded, and the first failure names the notebook
and the cell (the others are cancelled; on a ``LocalCluster`` the running ones are stopped with it).

``--prepare-smoke DIR`` writes parameterised, unexecuted copies (``profile="smoke"``, ``device="cpu"``) for
``pytest --nbval-lax DIR``; ``--list`` shows the notebooks and their parameters. Usage errors exit with status 2.

The same is available from Python: :func:`reproduce`, :func:`prepare_smoke`, :func:`find_notebooks`.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence, TextIO

from xailib.results import PROFILES
from xailib.utils import repo_root

__all__ = [
    "reproduce",
    "prepare_smoke",
    "find_notebooks",
    "notebook_parameters",
    "parse_value",
    "ReproduceError",
    "NotebookFailed",
    "main",
]

FIRST_NOTEBOOK = "00_data_and_models.ipynb"
KERNEL_NAME = "python3"
RUNNER_PARAMETERS = ("profile", "device", "seed", "output_dir")
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
_SMOKE_MARKER = ".xailib-prepare-smoke"
_CELL_LINE_RE = re.compile(r"Cell In\[\d*\], line (\d+)")
_SUFFIX_ORDER = ("png", "pdf", "svg", "csv", "md", "json")


class ReproduceError(ValueError):
    """A usage or setup error (bad option, nothing to run); ``main`` prints it on one line and exits with 2."""


class NotebookFailed(RuntimeError):
    """A notebook raised while it ran. ``main`` prints :meth:`report` and exits with status 1.

    Attributes
    ----------
    notebook : pathlib.Path
        The source notebook.
    executed : pathlib.Path
        The executed copy, with outputs up to the failing cell.
    cell_index : int or None
        0-based index of the failing cell in the source notebook (papermill's injected cells not counted).
    exec_count : int or None
        The ``In [N]`` number of the failing cell.
    first_line : str
        First non-empty line of the failing cell's source.
    error_line : tuple of (int, str) or None
        1-based line number and text of the line in the cell where the error was raised, when the kernel's
        traceback tells it.
    ename, evalue : str
        Exception name and message raised in the cell.
    staging : pathlib.Path or None
        Staging folder with the outputs saved before the failure.
    """

    def __init__(self, notebook: Path, executed: Path, cell_index: int | None, exec_count: int | None,
                 first_line: str, ename: str, evalue: str, staging: Path | None = None,
                 error_line: tuple[int, str] | None = None) -> None:
        self.notebook = notebook
        self.executed = executed
        self.cell_index = cell_index
        self.exec_count = exec_count
        self.first_line = first_line
        self.ename = ename
        self.evalue = evalue
        self.staging = staging
        self.error_line = error_line
        super().__init__(self.report())

    def __reduce__(self):  # picklable, so that a Dask worker's failure reaches the runner whole
        return (type(self), (self.notebook, self.executed, self.cell_index, self.exec_count, self.first_line,
                             self.ename, self.evalue, self.staging, self.error_line))

    def report(self) -> str:
        """A few lines for a human: which notebook, which cell, what error, where to look."""
        where = "cell ?" if self.cell_index is None else f"cell {self.cell_index}"
        if self.exec_count is not None:
            where += f" (In [{self.exec_count}])"
        lines = [
            f"FAILED {_show(self.notebook)}",
            f"  {where}: {self.first_line}" if self.first_line else f"  {where}",
        ]
        if self.error_line and self.error_line[1].strip() != self.first_line:
            lines.append(f"    line {self.error_line[0]}: {self.error_line[1].strip()}")
        lines += [
            f"  {self.ename}: {self.evalue}" if self.evalue else f"  {self.ename}",
            f"  executed copy with the full traceback: {_show(self.executed)}",
            "  figures/ was left untouched"
            + (f"; outputs saved before the failure are in {_show(self.staging)}" if self.staging else ""),
        ]
        return "\n".join(lines)


@dataclass(frozen=True)
class _Notebook:
    path: Path  # absolute
    rel: str  # posix path relative to the notebooks folder
    parameters: dict[str, dict[str, Any]]  # from papermill.inspect_notebook


# -- small helpers ------------------------------------------------------------------------------------------
def _show(path: Path | None) -> str:
    """A path relative to the working directory when it lies below it, else absolute."""
    if path is None:
        return ""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def parse_value(text: str) -> Any:
    """Parse a ``-p NAME VALUE`` value: ``int``, then ``float``, then ``true``/``false``/``none``, else the string.

    >>> parse_value("3"), parse_value("0.5"), parse_value("True"), parse_value("resnet18")
    (3, 0.5, True, 'resnet18')
    """
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    return text


def _check_profile_device(profile: str, device: str) -> None:
    if profile not in PROFILES:
        raise ReproduceError(f"unknown profile {profile!r}; use --profile with one of {', '.join(PROFILES)}.")
    if not isinstance(device, str) or not _DEVICE_RE.match(device):
        raise ReproduceError(f"unknown device {device!r}; use --device auto, cpu or cuda (or cuda:N).")
    if device.startswith("cuda"):
        from xailib.utils import resolve_device

        try:
            resolve_device(device)
        except ValueError as exc:
            raise ReproduceError(str(exc)) from None


def _check_kernel(kernel_name: str) -> None:
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec(kernel_name)
    except NoSuchKernel:
        raise ReproduceError(
            f"no Jupyter kernel named {kernel_name!r}; install it with "
            f"`{sys.executable} -m ipykernel install --sys-prefix --name {kernel_name}` (or run `make install`)."
        ) from None


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    """Set environment variables that are not set yet (kernels inherit them); restore on exit."""
    added = [k for k in values if k not in os.environ]
    for k in added:
        os.environ[k] = values[k]
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


# the variables a kernel's numbers can depend on: torch's and BLAS's thread counts, and the hash seed
_KERNEL_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "PYTHONHASHSEED")


def _kernel_environment() -> dict[str, str | None]:
    """What a serial run's kernels inherit of :data:`_KERNEL_ENV` and of every variable Dask's nannies set for their
    workers (``distributed.nanny.pre-spawn-environ`` and ``.environ``: thread counts, and ``MALLOC_TRIM_THRESHOLD_``,
    which makes torch's allocations slow) (None: unset), ``PYTHONHASHSEED`` 0 by default."""
    keys = list(_KERNEL_ENV)
    try:
        import dask

        for section in ("distributed.nanny.pre-spawn-environ", "distributed.nanny.environ"):
            keys += [k for k in (dask.config.get(section, default=None) or {}) if k not in keys]
    except ImportError:
        pass
    env = {k: os.environ.get(k) for k in keys}
    if env["PYTHONHASHSEED"] is None:
        env["PYTHONHASHSEED"] = "0"
    return env


@contextlib.contextmanager
def _exact_environment(values: Mapping[str, str | None]) -> Iterator[None]:
    """Set (or, for None, unset) these environment variables, whatever they were; restore them on exit."""
    old = {k: os.environ.get(k) for k in values}

    def apply(vals):
        for k, v in vals.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    apply(values)
    try:
        yield
    finally:
        apply(old)


@contextlib.contextmanager
def environment_restored() -> Iterator[None]:
    """Restore the whole environment on exit. Starting a Dask ``LocalCluster`` sets its workers' variables
    (``PYTHONHASHSEED=6640``, ``MKL_NUM_THREADS=1``, ...) in the parent process too and leaves them there; they would
    reach every kernel started later in the same process."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        for k in set(os.environ) - set(saved):
            del os.environ[k]
        for k, v in saved.items():
            if os.environ.get(k) != v:
                os.environ[k] = v


# -- discovery ----------------------------------------------------------------------------------------------
def _default_dirs(notebooks_dir, figures_dir, build_dir) -> tuple[Path, Path, Path]:
    root = repo_root()
    return (
        Path(notebooks_dir) if notebooks_dir is not None else root / "notebooks",
        Path(figures_dir) if figures_dir is not None else root / "figures",
        Path(build_dir) if build_dir is not None else root / "build",
    )


def find_notebooks(notebooks_dir: str | Path | None = None, only: str = "*") -> list[Path]:
    """Notebooks to run, in order: ``00_data_and_models.ipynb`` first, then sorted by relative path.

    Parameters
    ----------
    notebooks_dir : str or Path, optional
        Default ``<repo>/notebooks``.
    only : str
        ``fnmatch`` pattern on the path relative to ``notebooks_dir`` (``'gap/*'``, ``'*/01_*'``); the
        ``.ipynb`` suffix may be left out. Several patterns may be joined with commas.

    Returns
    -------
    list of pathlib.Path
        Absolute paths.

    Raises
    ------
    ReproduceError
        If the folder is missing, holds no notebook, or none matches ``only`` (the message lists them).
    """
    nb_dir = _default_dirs(notebooks_dir, None, None)[0].resolve()
    if not nb_dir.is_dir():
        raise ReproduceError(f"notebooks folder {nb_dir} not found; run from a checkout of xailib "
                             "(or set XAILIB_ROOT to one).")
    found = [p for p in nb_dir.rglob("*.ipynb")
             if ".ipynb_checkpoints" not in p.relative_to(nb_dir).parts
             and not any(part.startswith(".") for part in p.relative_to(nb_dir).parts)]
    if not found:
        raise ReproduceError(f"no notebooks (*.ipynb) under {nb_dir}.")
    found.sort(key=lambda p: (p.relative_to(nb_dir).as_posix() != FIRST_NOTEBOOK, p.relative_to(nb_dir).as_posix()))
    patterns = [pat.strip() for pat in (only or "*").split(",") if pat.strip()] or ["*"]

    def selected(p: Path) -> bool:
        rel = p.relative_to(nb_dir).as_posix()
        return any(fnmatch.fnmatchcase(rel, pat) or fnmatch.fnmatchcase(rel[: -len(".ipynb")], pat)
                   for pat in patterns)

    chosen = [p for p in found if selected(p)]
    if not chosen:
        available = ", ".join(p.relative_to(nb_dir).as_posix() for p in found)
        raise ReproduceError(f"--only {only!r} matches no notebook under {_show(nb_dir)}; available: {available}")
    return chosen


def notebook_parameters(path: str | Path) -> dict[str, dict[str, Any]]:
    """The parameters a notebook's ``parameters`` cell declares, as papermill's ``inspect_notebook`` gives them.

    Returns
    -------
    dict
        Name to ``{"name", "inferred_type_name", "default", "help"}``; empty when there is no parameters cell.
    """
    import papermill as pm

    return dict(pm.inspect_notebook(str(path)))


def _collect(notebooks_dir, only: str) -> list[_Notebook]:
    nb_dir = _default_dirs(notebooks_dir, None, None)[0].resolve()
    paths = find_notebooks(nb_dir, only)
    return [_Notebook(p, p.relative_to(nb_dir).as_posix(), notebook_parameters(p)) for p in paths]


def _check_extra_params(notebooks: Sequence[_Notebook], params: Mapping[str, Any]) -> None:
    for name in params:
        if name in ("profile", "device", "output_dir"):
            hint = "use --" + name if name != "output_dir" else "the runner sets it to its staging folder"
            raise ReproduceError(f"-p {name} is not allowed: {hint}.")
        if not any(name in nb.parameters for nb in notebooks):
            known = sorted({k for nb in notebooks for k in nb.parameters})
            raise ReproduceError(
                f"-p {name}: no selected notebook declares a parameter {name!r}; "
                f"known parameters: {', '.join(known) if known else 'none'} (see --list)."
            )


def _parameters_for(nb: _Notebook, base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = {**base, **extra}
    return {k: v for k, v in merged.items() if k in nb.parameters}


# -- running ------------------------------------------------------------------------------------------------
def _failed_cell(executed: Path) -> tuple[int | None, int | None, str] | None:
    """(index in the source notebook, execution count, source) of the failed cell of an executed copy."""
    import nbformat

    try:
        nb = nbformat.read(str(executed), as_version=4)
    except Exception:  # noqa: BLE001 - the copy may be missing or half-written; the caller falls back
        return None
    index = 0
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if "injected-parameters" in tags or "papermill-error-cell-tag" in tags:
            continue
        pm_meta = cell.get("metadata", {}).get("papermill", {})
        if pm_meta.get("exception") or pm_meta.get("status") == "failed":
            return index, cell.get("execution_count"), cell.get("source", "")
        index += 1
    return None


def _error_line(source: str, traceback: Sequence[str] | None) -> tuple[int, str] | None:
    """The line of ``source`` that IPython's traceback ("Cell In[5], line 2") points at."""
    from papermill.exceptions import strip_color

    match = _CELL_LINE_RE.search(strip_color("\n".join(traceback or [])))
    lines = source.splitlines()
    if match and 1 <= int(match.group(1)) <= len(lines):
        return int(match.group(1)), lines[int(match.group(1)) - 1]
    return None


def _first_line(source: str) -> str:
    for line in source.splitlines():
        if line.strip():
            return line.strip()
    return ""


def _run_one(nb: _Notebook, executed: Path, parameters: dict[str, Any], kernel_name: str,
             staging: Path) -> None:
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    executed.parent.mkdir(parents=True, exist_ok=True)
    try:
        pm.execute_notebook(
            str(nb.path), str(executed), parameters=parameters, kernel_name=kernel_name,
            cwd=str(nb.path.parent), progress_bar=False, log_output=False,
        )
    except PapermillExecutionError as exc:
        index, count, source = _failed_cell(executed) or (exc.cell_index, exc.exec_count, exc.source or "")
        raise NotebookFailed(nb.path, executed, index, count, _first_line(source), exc.ename, exc.evalue, staging,
                             _error_line(source, exc.traceback)) from exc
    except Exception as exc:  # kernel died, timed out, could not start: still say which notebook and cell
        index, count, source = _failed_cell(executed) or (None, None, "")
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise NotebookFailed(nb.path, executed, index, count, _first_line(source), type(exc).__name__, message,
                             staging) from exc


def _run_task(path: str, rel: str, executed: str, parameters: dict[str, Any], kernel_name: str, staging: str,
              env: Mapping[str, str | None]) -> str:
    """One notebook as a Dask task: :func:`_run_one` with the kernel environment of a serial run; returns ``rel``,
    raises :class:`NotebookFailed` (picklable) when the notebook fails."""
    with _exact_environment(env):
        _run_one(_Notebook(Path(path), rel, {}), Path(executed), parameters, kernel_name, Path(staging))
    return rel


def _check_cluster_options(workers, scheduler) -> None:
    if workers is not None and scheduler is not None:
        raise ReproduceError("give --workers N (a cluster on this machine) or --scheduler ADDRESS (an existing "
                             "cluster), not both.")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ReproduceError(f"--workers must be a positive int (worker processes on this machine), got {workers!r}.")
    if scheduler is not None and (not isinstance(scheduler, str) or not scheduler.strip()):
        raise ReproduceError(f"--scheduler must be a scheduler address such as tcp://10.0.0.5:8786, got {scheduler!r}.")
    if workers is not None or scheduler is not None:
        try:
            import distributed  # noqa: F401
        except ImportError:
            raise ReproduceError("--workers and --scheduler need dask.distributed: pip install 'distributed' "
                                 "(make install puts the pinned one in .venv).") from None


def _check_workers_see(client, paths: Sequence[Path]) -> None:
    """Every worker of ``client`` must see ``paths`` (the notebooks, the build folder): a shared filesystem."""
    def missing(names):
        return [n for n in names if not os.path.exists(n)]
    seen = client.run(missing, [str(p) for p in paths])
    blind = {w: m for w, m in seen.items() if m}
    if blind:
        worker, names = next(iter(blind.items()))
        raise ReproduceError(
            f"{len(blind)} of {len(seen)} Dask worker(s) cannot see this checkout (e.g. {worker} lacks {names[0]}); "
            "the workers must share its filesystem at the same path and have xailib installed, or use --workers N "
            "for a cluster on this machine.")


def _run_parallel(jobs: Sequence[tuple[_Notebook, Path, dict[str, Any]]], kernel_name: str, staging: Path,
                  workers: int | None, scheduler: str | None, bar) -> None:
    """Run ``(notebook, executed copy, parameters)`` jobs as Dask tasks; the first failure cancels the rest and is
    raised. A ``LocalCluster`` of ``workers`` processes (one thread each) is started and closed here."""
    env = _kernel_environment()        # before the cluster starts: LocalCluster sets its workers' variables here
    with environment_restored():
        _run_on_cluster(jobs, kernel_name, staging, workers, scheduler, bar, env)


def _run_on_cluster(jobs, kernel_name, staging, workers, scheduler, bar, env) -> None:
    """:func:`_run_parallel`'s work, the environment of each kernel given as ``env``."""
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler is None:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
    else:
        try:
            client = Client(scheduler, timeout="30s")
        except OSError as exc:
            raise ReproduceError(f"cannot reach the Dask scheduler at {scheduler!r} ({exc}); start one "
                                 "(dask scheduler / dask worker) or use --workers N.") from None
    try:
        if scheduler is not None:
            _check_workers_see(client, [jobs[0][0].path, staging])
        futures = [client.submit(_run_task, str(nb.path), nb.rel, str(executed), params, kernel_name, str(staging),
                                 env, key=f"xailib-notebook-{nb.rel}-{staging.name}", pure=False, retries=0)
                   for nb, executed, params in jobs]
        for future in as_completed(futures):
            try:
                rel = future.result()
            except BaseException:
                client.cancel([f for f in futures if not f.done()])
                raise
            bar.set_description(rel)
            bar.update(1)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _publish(staging: Path, figures_dir: Path) -> dict[str, list[Path]]:
    """Copy every staged file over ``figures_dir`` (same relative path); return them grouped by paper."""
    written: dict[str, list[Path]] = {}
    if not staging.is_dir():
        return written
    for src in sorted(p for p in staging.rglob("*") if p.is_file()):
        rel = src.relative_to(staging)
        dst = figures_dir / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
        paper = rel.parts[0] if len(rel.parts) > 1 else "."
        written.setdefault(paper, []).append(dst)
    return written


def reproduce(
    only: str = "*",
    profile: str = "default",
    device: str = "auto",
    params: Mapping[str, Any] | None = None,
    *,
    notebooks_dir: str | Path | None = None,
    figures_dir: str | Path | None = None,
    build_dir: str | Path | None = None,
    kernel_name: str = KERNEL_NAME,
    progress: bool = True,
    stream: TextIO | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
) -> dict[str, list[Path]]:
    """Execute the selected notebooks with papermill; publish their outputs to ``figures_dir`` if all succeed.

    Parameters
    ----------
    only : str
        ``fnmatch`` pattern(s) on the path relative to ``notebooks_dir``, see :func:`find_notebooks`.
    profile : {"smoke", "default", "paper"}
    device : {"auto", "cpu", "cuda", "cuda:N"}
    params : dict, optional
        Further notebook parameters (``seed`` among them, default 0). Each is passed to the notebooks whose
        parameters cell declares it.
    notebooks_dir, figures_dir, build_dir : str or Path, optional
        Defaults ``<repo>/notebooks``, ``<repo>/figures``, ``<repo>/build``. Executed copies go to
        ``build_dir/executed/``, outputs are staged in ``build_dir/staging/<run-id>/``.
    kernel_name : str
        Jupyter kernel to run the notebooks with.
    progress : bool
        Show a tqdm bar over the notebooks.
    stream : file, optional
        Where the summary is printed (default ``sys.stdout``).
    workers : int, optional
        Run the notebooks in parallel on a ``dask.distributed`` ``LocalCluster`` of this many worker processes
        (default: serially, in this process). The outputs are the same either way.
    scheduler : str, optional
        The address of an existing Dask cluster's scheduler to run them on instead (workers sharing this
        checkout's filesystem at the same path).

    Returns
    -------
    dict
        Paper folder name to the list of files written below ``figures_dir``.

    Raises
    ------
    ReproduceError
        Bad profile, device, parameter or cluster option; no notebook selected; kernel missing; a scheduler that
        cannot be reached, or workers that do not see the checkout.
    NotebookFailed
        A notebook raised. Nothing under ``figures_dir`` has been changed.
    """
    from tqdm.auto import tqdm

    stream = stream or sys.stdout
    _check_profile_device(profile, device)
    _check_cluster_options(workers, scheduler)
    extra = dict(params or {})
    notebooks = _collect(notebooks_dir, only)
    _check_extra_params(notebooks, extra)
    _check_kernel(kernel_name)
    _, figures, build = _default_dirs(None, figures_dir, build_dir)
    figures, build = figures.resolve(), build.resolve()

    run_id = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
    staging = build / "staging" / run_id
    staging.mkdir(parents=True, exist_ok=True)
    base = {"profile": profile, "device": device, "seed": extra.pop("seed", 0), "output_dir": str(staging)}
    for nb in notebooks:
        if "output_dir" not in nb.parameters:
            print(f"warning: {nb.rel} declares no output_dir parameter; what it saves is not staged "
                  "and goes straight to its own default folder.", file=sys.stderr)

    t0 = time.perf_counter()
    jobs = [(nb, build / "executed" / nb.rel, _parameters_for(nb, base, extra)) for nb in notebooks]
    if workers is not None or scheduler is not None:
        jobs = longest_first(jobs, last_run_times(figures))
    bar = tqdm(total=len(jobs), unit="notebook", disable=not progress, file=sys.stderr, dynamic_ncols=True)
    with _environment(PYTHONHASHSEED="0"):
        try:
            if workers is None and scheduler is None:
                for nb, executed, parameters in jobs:
                    bar.set_description(nb.rel)
                    _run_one(nb, executed, parameters, kernel_name, staging)
                    bar.update(1)
            else:
                _run_parallel(jobs, kernel_name, staging, workers, scheduler, bar)
        finally:
            bar.close()

    written = _publish(staging, figures)
    shutil.rmtree(staging, ignore_errors=True)
    report = _write_report(figures, profile, run=_run_line(len(notebooks), time.perf_counter() - t0, workers,
                                                            scheduler))
    _print_summary(stream, notebooks, written, figures, build / "executed", time.perf_counter() - t0,
                   profile, device, base["seed"])
    if report is not None:
        print(f"Reproduction report: {_show(report)}", file=stream)
    return written


def last_run_times(figures: Path) -> dict[str, float]:
    """Each notebook's run time in seconds (``paper/notebook`` -> the largest ``wall_time_s`` of its sidecars
    under ``figures``), as the last run recorded it; notebooks never run are absent."""
    times: dict[str, float] = {}
    for side in Path(figures).glob("*/*.json"):
        try:
            meta = json.loads(side.read_text())
            seconds = float(meta.get("wall_time_s") or 0.0)
        except (OSError, ValueError, TypeError, AttributeError):
            continue
        key = f"{meta.get('paper', side.parent.name)}/{meta.get('notebook', '')}"
        times[key] = max(times.get(key, 0.0), seconds)
    return times


def longest_first(jobs: Sequence[tuple[_Notebook, Path, dict[str, Any]]], times: Mapping[str, float]) -> list:
    """The jobs ordered for a cluster: the longest last run first (a notebook never run counts as the longest,
    its cost being unknown), ties in the given order. Dask hands out the queued tasks in submission order, so
    this is the longest-processing-time rule, which keeps the last worker from starting a long notebook late."""
    stems: dict[str, list[float]] = {}
    for key, seconds in times.items():
        stems.setdefault(key.rsplit("/", 1)[-1], []).append(seconds)

    def cost(job):
        rel = job[0].rel.removesuffix(".ipynb")
        if rel in times:
            return times[rel]
        same = stems.get(rel.rsplit("/", 1)[-1], [])    # a top-level notebook records its paper in its sidecars
        return same[0] if len(same) == 1 else float("inf")
    return sorted(jobs, key=lambda job: -cost(job))


def _run_line(n: int, seconds: float, workers: int | None, scheduler: str | None) -> str:
    threads = os.environ.get("OMP_NUM_THREADS") or "torch's default number of"
    where = (f"on {workers} local worker process(es)" if workers is not None else
             "on the Dask cluster at the given scheduler" if scheduler is not None else "in one process, serially")
    return (f"- wall clock: the last run of `xailib.reproduce` took {seconds / 60:.1f} min end to end for {n} "
            f"notebook(s), {where}, {threads} thread(s) per kernel")


def _write_report(figures: Path, profile: str, run: str = "") -> Path | None:
    """REPRODUCTION.md beside ``figures/`` (:mod:`xailib.report`), from every table there, after publishing."""
    from xailib.report import write_report
    from xailib.results import git_info

    if not figures.is_dir():
        return None
    return write_report(figures, figures.parent / "REPRODUCTION.md", commit=str(git_info().get("commit", "")),
                        profile=profile, run=run)


def _print_summary(stream: TextIO, notebooks: Sequence[_Notebook], written: Mapping[str, list[Path]],
                   figures: Path, executed: Path, seconds: float, profile: str, device: str, seed: Any) -> None:
    print(f"Ran {len(notebooks)} notebook(s) in {seconds:.1f} s (profile={profile}, device={device}, "
          f"seed={seed}). Executed copies: {_show(executed)}/", file=stream)
    if not written:
        print("No figures or tables were saved.", file=stream)
        return
    for paper, files in written.items():
        folder = figures / paper if paper != "." else figures
        by_stem: dict[str, list[str]] = {}
        for f in files:
            by_stem.setdefault(f.stem, []).append(f.suffix.lstrip("."))
        print(f"{_show(folder)}/  ({len(files)} files)", file=stream)
        for stem, suffixes in by_stem.items():
            suffixes.sort(key=lambda s: (_SUFFIX_ORDER.index(s) if s in _SUFFIX_ORDER else len(_SUFFIX_ORDER), s))
            print(f"  {stem}: {', '.join(suffixes)}", file=stream)


# -- smoke copies for nbval ------------------------------------------------------------------------------------
def prepare_smoke(
    dest: str | Path,
    only: str = "*",
    params: Mapping[str, Any] | None = None,
    *,
    profile: str = "smoke",
    device: str = "cpu",
    notebooks_dir: str | Path | None = None,
    kernel_name: str = KERNEL_NAME,
) -> list[Path]:
    """Write parameterised, unexecuted copies of the notebooks for ``pytest --nbval-lax dest``.

    Each copy gets ``profile``, ``device``, ``seed`` (0 unless in ``params``), ``output_dir=<dest>/_figures``
    and any ``params``, as far as its parameters cell declares them (papermill ``prepare_only=True``), at
    the same relative path below ``dest``. Copies left by an earlier call are removed first.

    Returns
    -------
    list of pathlib.Path
        The copies written.

    Raises
    ------
    ReproduceError
        ``dest`` is a non-empty folder not made by this function; see also :func:`reproduce`.
    """
    import papermill as pm

    _check_profile_device(profile, device)
    extra = dict(params or {})
    notebooks = _collect(notebooks_dir, only)
    _check_extra_params(notebooks, extra)
    dest = Path(dest).resolve()
    if dest.exists():
        if not dest.is_dir():
            raise ReproduceError(f"--prepare-smoke {dest}: exists and is not a folder.")
        if any(dest.iterdir()) and not (dest / _SMOKE_MARKER).exists():
            raise ReproduceError(f"--prepare-smoke {dest}: folder is not empty and was not made by "
                                 "--prepare-smoke; choose an empty or new folder (e.g. build/nbval).")
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    (dest / _SMOKE_MARKER).write_text("made by python -m xailib.reproduce --prepare-smoke; safe to delete\n")
    base = {"profile": profile, "device": device, "seed": extra.pop("seed", 0),
            "output_dir": str(dest / "_figures")}
    out = []
    for nb in notebooks:
        target = dest / nb.rel
        target.parent.mkdir(parents=True, exist_ok=True)
        pm.execute_notebook(str(nb.path), str(target), parameters=_parameters_for(nb, base, extra),
                            prepare_only=True, kernel_name=kernel_name, progress_bar=False)
        out.append(target)
    return out


# -- command line -------------------------------------------------------------------------------------------
def _format_listing(notebooks: Sequence[_Notebook]) -> str:
    lines = []
    for nb in notebooks:
        lines.append(_show(nb.path))
        if not nb.parameters:
            lines.append("    (no parameters cell)")
        for name, info in nb.parameters.items():
            typ = info.get("inferred_type_name")
            decl = f"{name}: {typ}" if typ and typ != "None" else name
            line = f"    {decl} = {info.get('default')}"
            if info.get("help"):
                line += f"  # {info['help']}"
            lines.append(line)
    return "\n".join(lines)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m xailib.reproduce",
        description="Execute the paper notebooks with papermill; publish figures and tables to figures/ "
                    "only when all of them succeed.",
    )
    parser.add_argument("--only", default="*", metavar="GLOB",
                        help="fnmatch pattern on the path below notebooks/, e.g. 'gap/*' (comma-separate several)")
    parser.add_argument("--profile", default=None, metavar="{smoke,default,paper}",
                        help="problem sizes: smoke (seconds), default (minutes), paper (the paper's sizes); "
                             "default: default, or smoke with --prepare-smoke")
    parser.add_argument("--device", default=None, metavar="{auto,cpu,cuda}",
                        help="default: auto, or cpu with --prepare-smoke")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="extra notebook parameter (int/float/bool/str parsed), e.g. -p seed 1")
    parser.add_argument("--list", action="store_true", help="list the notebooks and their parameters, then exit")
    parser.add_argument("--prepare-smoke", metavar="DIR", default=None,
                        help="write smoke-profile copies (not executed) into DIR for pytest --nbval-lax DIR")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    cluster = parser.add_mutually_exclusive_group()
    cluster.add_argument("--workers", type=int, default=None, metavar="N",
                         help="run the notebooks in parallel on a dask.distributed LocalCluster of N worker processes")
    cluster.add_argument("--scheduler", default=None, metavar="ADDRESS",
                         help="run them on an existing Dask cluster (workers sharing this checkout's filesystem)")
    return parser


def main(argv: Sequence[str] | None = None, *, notebooks_dir: str | Path | None = None,
         figures_dir: str | Path | None = None, build_dir: str | Path | None = None) -> int:
    """Command-line entry point; returns the exit status (0 ok, 1 a notebook failed, 2 usage error).

    The keyword arguments override the folders below the repository root (used by the tests).
    """
    args = _build_parser().parse_args(argv)
    params: dict[str, Any] = {}
    for name, value in args.parameter:
        if not name.isidentifier():
            return _usage_error(f"-p {name}: a parameter name must be a Python identifier.")
        params[name] = parse_value(value)
    try:
        if args.list:
            print(_format_listing(_collect(notebooks_dir, args.only)))
            return 0
        if args.prepare_smoke is not None:
            copies = prepare_smoke(args.prepare_smoke, args.only, params, profile=args.profile or "smoke",
                                   device=args.device or "cpu", notebooks_dir=notebooks_dir)
            print(f"Prepared {len(copies)} notebook(s) under {_show(Path(args.prepare_smoke))}/ "
                  f"(profile={args.profile or 'smoke'}); run: pytest --nbval-lax {args.prepare_smoke}")
            return 0
        reproduce(args.only, args.profile or "default", args.device or "auto", params,
                  notebooks_dir=notebooks_dir, figures_dir=figures_dir, build_dir=build_dir,
                  progress=not args.no_progress, workers=args.workers, scheduler=args.scheduler)
    except ReproduceError as exc:
        return _usage_error(str(exc))
    except NotebookFailed as exc:
        print(exc.report(), file=sys.stderr)
        return 1
    return 0


def _usage_error(message: str) -> int:
    print(f"xailib.reproduce: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
