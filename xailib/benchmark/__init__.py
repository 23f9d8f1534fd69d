"""The ground-truth benchmark of every method that scores concepts, parts or channels, on ConceptWorld.

- :mod:`xailib.benchmark.ground_truth` -- the protocol (agreement with the world's interventions, deletion and
  insertion, localisation, robustness, cost), one method per task (serially, or on a Dask client), the summary,
  the ranking figure and the written finding.
"""

from xailib.benchmark.ground_truth import (
    METHODS,
    Setting,
    benchmark_task,
    finding,
    plot_ranking,
    run_benchmark,
    summary_table,
)

__all__ = ["METHODS", "Setting", "benchmark_task", "run_benchmark", "summary_table", "finding", "plot_ranking"]
