"""Saving the figures and tables of a notebook, each with a JSON sidecar that says how it was made.

A notebook builds one :class:`Run` right after its parameters cell and saves every output through it::

    from xailib.results import Run
    run = Run(paper="gap", notebook="01_sanity_check",
              params=dict(profile=profile, device=device, seed=seed), output_dir=output_dir)
    n_images = run.profile_value(smoke=8, default=256, paper=5000)
    ...
    run.save_figure(fig, "fig06_sorted_contributions")   # figures/gap/fig06_sorted_contributions.{png,pdf,json}
    run.save_table(df, "table1_pcc", float_format="%.4f")  # figures/gap/table1_pcc.{csv,md,json}

Determinism: the CSV and Markdown files hold only the table (no time stamps, no paths), with a fixed float
format and ``\\n`` line endings, so the same seed and profile give byte-identical files. PNG and PDF files are
written without creation dates or software tags. Everything that varies between runs (time, git commit, wall
time) lives in the ``.json`` sidecar only.
"""

from __future__ import annotations

import datetime as _dt
import functools
import importlib.metadata
import json
import math
import numbers
import platform
import re
import subprocess
import time
from pathlib import Path
from typing import Any, Mapping

from xailib.utils import repo_root, resolve_device

__all__ = ["Run", "PROFILES", "git_info", "package_versions", "markdown_table", "VERDICTS", "PAPER_TABLE_COLUMNS",
           "paper_row", "paper_table", "NUMBER_TOLERANCE", "number_verdict", "format_number"]

PROFILES = ("smoke", "default", "paper")
"""Valid values of the ``profile`` notebook parameter: a few seconds, a few minutes, the paper's sizes."""

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_VERSIONED_PACKAGES = ("torch", "torchvision", "numpy", "captum", "xailib")


def _check_profile(profile: Any) -> str:
    if profile not in PROFILES:
        raise ValueError(
            f"Unknown profile {profile!r}. Use one of {', '.join(PROFILES)} "
            "(e.g. `python -m xailib.reproduce --profile smoke`, or set `profile = \"smoke\"` "
            "in the notebook's parameters cell)."
        )
    return profile


def _check_name(name: Any, what: str) -> str:
    if (not isinstance(name, str) or not _NAME_RE.match(name)
            or name.lower().endswith((".png", ".pdf", ".svg", ".csv", ".md", ".json"))):
        raise ValueError(
            f"{what} must be a plain file stem of letters, digits, '_', '-' or '.', without a folder "
            f"or an extension, e.g. 'fig06_sorted_contributions'; got {name!r}."
        )
    return name


@functools.lru_cache(maxsize=None)
def _git_info_cached(root: str) -> tuple[str, bool | None]:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=root, check=True, capture_output=True, text=True, timeout=20
        ).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
    except (OSError, subprocess.SubprocessError):
        return "unknown", None
    try:
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        dirty = None
    return commit or "unknown", dirty


def git_info(root: str | Path | None = None) -> dict[str, Any]:
    """The git commit of the checkout at ``root`` (default: the repository root).

    Returns
    -------
    dict
        ``{"commit": "<short hash>" or "unknown", "dirty": bool or None}``. ``dirty`` is True when tracked
        files differ from the commit; outside a checkout, or without git, the commit is ``"unknown"``
        and ``dirty`` is None. Never raises.
    """
    commit, dirty = _git_info_cached(str(root if root is not None else repo_root()))
    return {"commit": commit, "dirty": dirty}


def package_versions() -> dict[str, str]:
    """Versions of Python and of the packages a result depends on (``"not installed"`` when missing)."""
    versions = {"python": platform.python_version()}
    for pkg in _VERSIONED_PACKAGES:
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = "not installed"
    return versions


def _describe_device(device: Any) -> dict[str, Any]:
    try:
        dev = resolve_device(device)
    except (ValueError, TypeError):
        # The notebook will fail on its own, with resolve_device's message, where it uses the device.
        return {"requested": str(device), "resolved": None, "name": None}
    name = None
    if dev.type == "cuda":
        import torch

        name = torch.cuda.get_device_name(dev)
    return {"requested": str(device), "resolved": str(dev), "name": name}


def _jsonable(value: Any) -> Any:
    """Parameters as JSON: numbers, strings, bools, None, lists and dicts as they are; anything else by repr."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        f = float(value)
        return f if math.isfinite(f) else str(f)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return repr(value)


def _format_cell(value: Any, float_format: str | None, na_rep: str) -> str:
    if value is None:
        return na_rep
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, numbers.Integral)):
        f = float(value)
        if math.isnan(f):
            return na_rep
        return float_format % f if float_format else repr(f)
    if isinstance(value, float) and math.isnan(value):
        return na_rep
    text = str(value)
    if text in ("nan", "NaT", "<NA>"):
        return na_rep
    return text.replace("\r", " ").replace("\n", " ").replace("|", "\\|")


def markdown_table(df, float_format: str | None = "%.4f", index: bool = False, na_rep: str = "") -> str:
    """A pandas DataFrame as a GitHub pipe table (no ``tabulate`` needed).

    Parameters
    ----------
    df : pandas.DataFrame
    float_format : str or None
        ``%``-format for every floating-point cell, e.g. ``"%.4f"``; None writes ``repr(float)``.
    index : bool
        Whether to write the index as the first column(s).
    na_rep : str
        Text for missing values.

    Returns
    -------
    str
        The table, one line per row, ending in ``\\n``. Numeric columns are right-aligned.
    """
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"markdown_table expects a pandas DataFrame, got {type(df).__name__}.")
    table = df.reset_index() if index else df

    def header(col: Any) -> str:
        parts = col if isinstance(col, tuple) else (col,)
        text = " / ".join(str(p) for p in parts if str(p) != "")
        return _format_cell(text, None, "")

    numeric = [pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)
               for dtype in table.dtypes]
    lines = [
        "| " + " | ".join(header(c) for c in table.columns) + " |",
        "|" + "|".join("---:" if num else ":---" for num in numeric) + "|",
    ]
    for row in table.itertuples(index=False, name=None):
        lines.append("| " + " | ".join(_format_cell(v, float_format, na_rep) for v in row) + " |")
    return "\n".join(lines) + "\n"


class Run:
    """One notebook's run: where its outputs go, and the provenance written beside each of them.

    Parameters
    ----------
    paper : str
        Paper folder, e.g. ``"gap"``; outputs go to ``<output_dir>/<paper>/``.
    notebook : str
        Notebook name, e.g. ``"01_sanity_check"``, recorded in every sidecar.
    params : dict, optional
        The notebook's parameters. ``profile`` (default ``"default"``), ``device`` (default ``"auto"``)
        and ``seed`` (default None) are read from here; all of them go into the sidecars.
    output_dir : str or Path, optional
        Root folder of the outputs. ``""`` or None (the notebook default) means ``<repo>/figures``;
        ``python -m xailib.reproduce`` passes a staging folder instead.

    Attributes
    ----------
    profile : str
        One of ``"smoke"``, ``"default"``, ``"paper"``.
    seed : int or None
    device : str
        The resolved device (``"cpu"``, ``"cuda"``, ...), or the requested string if it cannot be resolved.
    out_dir : pathlib.Path
        ``<output_dir>/<paper>``; created on the first save.
    written : list of pathlib.Path
        Every file saved so far, in order.

    Raises
    ------
    ValueError
        If ``profile`` is not one of ``smoke``, ``default``, ``paper``, or ``paper`` is not a plain folder name.
    """

    def __init__(
        self,
        paper: str,
        notebook: str,
        params: Mapping[str, Any] | None = None,
        output_dir: str | Path | None = "",
    ) -> None:
        self._t0 = time.perf_counter()
        self.paper = _check_name(paper, "paper")
        if not isinstance(notebook, str) or not notebook:
            raise ValueError(f"notebook must be the notebook's name, e.g. '01_sanity_check'; got {notebook!r}.")
        self.notebook = notebook
        if params is not None and not isinstance(params, Mapping):
            raise TypeError(f"params must be a dict of the notebook's parameters, got {type(params).__name__}.")
        self.params = dict(params or {})
        self.profile = _check_profile(self.params.get("profile", "default"))
        self.seed = self.params.get("seed")
        self._device_info = _describe_device(self.params.get("device", "auto"))
        self.device = self._device_info["resolved"] or self._device_info["requested"]
        root = Path(output_dir) if output_dir not in (None, "") else repo_root() / "figures"
        self.out_dir = root.expanduser().resolve() / self.paper
        self.written: list[Path] = []
        self._git = git_info()
        self._versions = package_versions()

    def __repr__(self) -> str:
        return (f"Run(paper={self.paper!r}, notebook={self.notebook!r}, profile={self.profile!r}, "
                f"seed={self.seed!r}, device={self.device!r}, out_dir='{self.out_dir}')")

    def profile_value(self, *, smoke: Any, default: Any, paper: Any) -> Any:
        """Pick a knob by profile: ``run.profile_value(smoke=8, default=256, paper=5000)``."""
        return {"smoke": smoke, "default": default, "paper": paper}[self.profile]

    # -- saving -------------------------------------------------------------------------------------
    def save_figure(self, fig, name: str, *, formats: tuple[str, ...] = ("png", "pdf"), dpi: int = 150,
                    caption: str | None = None, **savefig_kwargs: Any) -> dict[str, Path]:
        """Save a matplotlib figure as ``<out_dir>/<name>.png`` and ``.pdf`` plus a ``<name>.json`` sidecar.

        Parameters
        ----------
        fig : matplotlib.figure.Figure
        name : str
            File stem, e.g. ``"fig06_sorted_contributions"``.
        formats : tuple of str
            Any of ``"png"``, ``"pdf"``, ``"svg"``.
        dpi : int
            Resolution of raster output.
        caption : str, optional
            Recorded in the sidecar (e.g. which figure of the paper this reproduces).
        **savefig_kwargs
            Passed to :meth:`matplotlib.figure.Figure.savefig` (``bbox_inches`` defaults to ``"tight"``).

        Returns
        -------
        dict
            Format (and ``"json"``) to the path written.
        """
        from matplotlib.figure import Figure

        _check_name(name, "name")
        if not isinstance(fig, Figure):
            raise TypeError(f"save_figure expects a matplotlib Figure (e.g. from plt.subplots()), "
                            f"got {type(fig).__name__}.")
        bad = [f for f in formats if f not in _FIG_METADATA]
        if bad or not formats:
            raise ValueError(f"Unsupported figure format(s) {bad or formats!r}; use any of {sorted(_FIG_METADATA)}.")
        savefig_kwargs.setdefault("bbox_inches", "tight")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        paths: dict[str, Path] = {}
        for fmt in formats:
            path = self.out_dir / f"{name}.{fmt}"
            fig.savefig(path, format=fmt, dpi=dpi, metadata=dict(_FIG_METADATA[fmt]), **savefig_kwargs)
            paths[fmt] = path
        paths["json"] = self._write_sidecar(name, "figure", paths, {"dpi": dpi, "caption": caption})
        return paths

    def save_table(self, df, name: str, *, float_format: str | None = "%.4f", index: bool | None = None,
                   na_rep: str = "", caption: str | None = None, wall_clock: bool = False) -> dict[str, Path]:
        """Save a pandas DataFrame as ``<out_dir>/<name>.csv`` and ``.md`` plus a ``<name>.json`` sidecar.

        Parameters
        ----------
        df : pandas.DataFrame
        name : str
            File stem, e.g. ``"table1_pcc"``.
        float_format : str or None
            ``%``-format of every float in both files, e.g. ``"%.4f"``. Fixed formats make the files
            byte-identical across runs with the same seed.
        index : bool, optional
            Write the index as the first column(s). None (default) writes it unless it is the default
            ``RangeIndex`` ``0..n-1``.
        na_rep : str
            Text for missing values.
        caption : str, optional
            Recorded in the sidecar.
        wall_clock : bool
            The table holds measured wall-clock times, which differ from run to run. Recorded in the sidecar
            (``"wall_clock": true``); every table saved without it is byte-identical for the same seed and
            profile, so keep timings in tables of their own.

        Returns
        -------
        dict
            ``{"csv": path, "md": path, "json": path}``.
        """
        import pandas as pd

        _check_name(name, "name")
        if not isinstance(df, pd.DataFrame):
            hint = " Use series.to_frame() first." if isinstance(df, pd.Series) else ""
            raise TypeError(f"save_table expects a pandas DataFrame, got {type(df).__name__}.{hint}")
        if float_format is not None:
            try:
                float_format % 1.0
            except (TypeError, ValueError) as exc:
                raise ValueError(f"float_format must be a %-format for one float, e.g. '%.4f'; "
                                 f"got {float_format!r}.") from exc
        if index is None:
            index = not (isinstance(df.index, pd.RangeIndex) and df.index.start == 0 and df.index.step == 1
                         and df.index.name is None)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        csv_path = self.out_dir / f"{name}.csv"
        md_path = self.out_dir / f"{name}.md"
        df.to_csv(csv_path, index=index, float_format=float_format, na_rep=na_rep, lineterminator="\n",
                  encoding="utf-8")
        md_path.write_text(markdown_table(df, float_format=float_format, index=index, na_rep=na_rep),
                           encoding="utf-8", newline="\n")
        paths = {"csv": csv_path, "md": md_path}
        paths["json"] = self._write_sidecar(
            name, "table", paths,
            {"float_format": float_format, "shape": list(df.shape), "columns": [str(c) for c in df.columns],
             "caption": caption, "wall_clock": bool(wall_clock)},
        )
        return paths

    def sidecar(self) -> dict[str, Any]:
        """The provenance recorded beside every output of this run (without the per-file fields)."""
        return {
            "paper": self.paper,
            "notebook": self.notebook,
            "profile": self.profile,
            "seed": _jsonable(self.seed),
            "device": self._device_info,
            "parameters": _jsonable(self.params),
            "git": self._git,
            "versions": self._versions,
            "wall_time_s": round(time.perf_counter() - self._t0, 3),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }

    def _write_sidecar(self, name: str, kind: str, paths: Mapping[str, Path], extra: Mapping[str, Any]) -> Path:
        """Write ``<name>.json``: ``{"name", "outputs": {kind: {"files", ...extra}}, ...provenance}``.

        A figure and a table saved under one name in the same run (a plot and its data) share the sidecar:
        each keeps its own entry under ``outputs``.
        """
        path = self.out_dir / f"{name}.json"
        outputs: dict[str, Any] = {}
        if path in self.written:
            outputs = json.loads(path.read_text(encoding="utf-8")).get("outputs", {})
        outputs[kind] = {"files": [p.name for p in paths.values()], **extra}
        record = {"name": name, "outputs": outputs}
        record.update(self.sidecar())
        path.write_text(json.dumps(record, indent=2, sort_keys=False) + "\n", encoding="utf-8", newline="\n")
        self.written.extend([p for p in (*paths.values(), path) if p not in self.written])
        return path


# Metadata that would change between runs (dates, version strings) is left out of the files.
_FIG_METADATA: dict[str, dict[str, Any]] = {
    "png": {"Software": None},
    "pdf": {"CreationDate": None, "ModDate": None, "Producer": None, "Creator": None},
    "svg": {"Date": None, "Creator": None},
}


# --------------------------------------------------------------------------------------------------
# The paper-vs-ours table that closes every notebook
# --------------------------------------------------------------------------------------------------

#: The verdicts a paper-vs-ours row may carry, judged against the paper's own definition of the quantity.
VERDICTS: tuple[str, ...] = ("reproduced", "partly", "not reproduced", "not comparable")
#: The columns of every paper-vs-ours table, in order.
PAPER_TABLE_COLUMNS: tuple[str, ...] = ("artifact", "quantity", "paper", "ours", "verdict", "note")


def paper_row(artifact: str, quantity: str, paper, ours, verdict: str, note: str = "") -> dict[str, Any]:
    """One row of a paper-vs-ours table (see :func:`paper_table`), checked.

    Parameters
    ----------
    artifact : str
        The paper's table or figure, e.g. ``"Table 1"``, ``"Fig. 9"``.
    quantity : str
        What the row compares, precise enough to find it in the paper.
    paper, ours
        The paper's number (or its claim, as text, where it gives none) and our measured value.
    verdict : str
        One of :data:`VERDICTS`. A result that is true by construction on our small nets is
        ``"not comparable"`` and says so in ``note``, never ``"reproduced"``.
    note : str
        Why the verdict is what it is: the rule applied, what differs, sample sizes.
    """
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}.")
    for name, value in (("artifact", artifact), ("quantity", quantity)):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{name} must be a non-empty string, got {value!r}.")
    return {"artifact": artifact, "quantity": quantity, "paper": paper, "ours": ours, "verdict": verdict,
            "note": str(note)}


def paper_table(rows) -> "pd.DataFrame":  # noqa: F821 - pandas is imported lazily
    """The table that closes each notebook: one row per compared quantity, columns :data:`PAPER_TABLE_COLUMNS`.

    ``rows`` are dicts from :func:`paper_row` (or with the same keys; they are checked again here).
    """
    import pandas as pd

    checked = [paper_row(**{k: r.get(k, "") for k in PAPER_TABLE_COLUMNS}) for r in rows]
    out = pd.DataFrame(checked, columns=list(PAPER_TABLE_COLUMNS))
    for col in ("paper", "ours"):
        numeric = [isinstance(v, numbers.Real) and not isinstance(v, bool) for v in out[col]]
        if all(numeric) and len(out):  # a float column: save_table's float_format applies
            out[col] = out[col].astype(float)
        else:  # text and numbers: numbers to three decimals, trailing zeros dropped (0.7436 -> "0.744", 50.0 -> "50")
            out[col] = [_short_number(v) if is_number else v for v, is_number in zip(out[col], numeric)]
            out[col] = out[col].astype(object)
    return out


def _short_number(value) -> str:
    v = float(value)
    if not math.isfinite(v):
        return "n/a" if math.isnan(v) else str(v)
    return f"{v:.3f}".rstrip("0").rstrip(".") if abs(v) >= 5e-4 or v == 0 else f"{v:.3g}"


#: Default tolerances of :func:`number_verdict`: within the first, a paper's number is reproduced; within the
#: second, partly.
NUMBER_TOLERANCE = (0.05, 0.15)


def number_verdict(ours: float, paper: float, tolerance: tuple[float, float] = NUMBER_TOLERANCE) -> str:
    """The verdict on one reported number: ``"reproduced"`` when ``|ours - paper| <= tolerance[0]``,
    ``"partly"`` when ``<= tolerance[1]``, else ``"not reproduced"``; ``"not comparable"`` when ours is not a
    finite number (not measured)."""
    try:
        ours = float(ours)
    except (TypeError, ValueError):
        return "not comparable"
    if not math.isfinite(ours):
        return "not comparable"
    d = abs(ours - float(paper))
    return "reproduced" if d <= tolerance[0] else "partly" if d <= tolerance[1] else "not reproduced"


def format_number(x, spec: str = ".3f") -> str:
    """``format(x, spec)``, or ``"n/a"`` for None and NaN (for the notes of paper-vs-ours rows)."""
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)
