"""Run every benchmarks/bench_*.py (each defines ``main(out_dir)``); results go to benchmarks/results/.

Usage: python benchmarks/run_all.py [--only SUBSTRING]
Benchmarks measure ratios side by side in one run; tests never assert timings.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="run only benchmarks whose file name contains this")
    parser.add_argument("--out", default=str(HERE / "results"), help="output folder")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scripts = sorted(p for p in HERE.glob("bench_*.py") if args.only in p.name)
    if not scripts:
        print(f"No benchmark matches {args.only!r}; available: {[p.name for p in HERE.glob('bench_*.py')]}")
        return 2
    for path in scripts:
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        t0 = time.perf_counter()
        print(f"== {path.name}", flush=True)
        module.main(out)
        print(f"== {path.name} done in {time.perf_counter() - t0:.1f} s", flush=True)
    print(f"Results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
