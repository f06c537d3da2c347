"""Evaluation: benchmark releases read as users download them, each benchmark's own scoring rule, reports,
and a cached LLM judge.

    loaded = load_benchmark("mmstar", "MMStar/mmstar.parquet", limit=200)  # examples + rejected rows
    ...inference writes one Prediction per example...
    bench = BENCHMARKS["mmstar"]
    rows = score_rows(bench, loaded.examples, predictions)                 # joined by example_id
    report = make_report(bench, rows)
    print(comparison_table(reports))

:mod:`visplay.eval.benchmarks` holds one class per benchmark (layouts, scoring rule, extra figures);
:mod:`visplay.eval.scoring` the shared rules and reports; :mod:`visplay.eval.judge` the judge (HTTP and its
cache file); :mod:`visplay.eval.run` the evaluation of one checkpoint through the engine stage.
"""

from visplay.eval.benchmarks import BENCHMARKS, Benchmark, Loaded, load_benchmark
from visplay.eval.schema import ANSWER_TYPES, EvalExample, Prediction, Reject
from visplay.eval.scoring import (
    BenchmarkReport,
    ScoredRow,
    comparison_table,
    extract_answer,
    join_predictions,
    make_report,
    per_category,
    score_rows,
    score_rule,
)
from visplay.eval.tables import BenchmarkFormatError

__all__ = [
    "ANSWER_TYPES",
    "BENCHMARKS",
    "Benchmark",
    "BenchmarkFormatError",
    "BenchmarkReport",
    "EvalExample",
    "Loaded",
    "Prediction",
    "Reject",
    "ScoredRow",
    "comparison_table",
    "extract_answer",
    "join_predictions",
    "load_benchmark",
    "make_report",
    "per_category",
    "score_rows",
    "score_rule",
]
