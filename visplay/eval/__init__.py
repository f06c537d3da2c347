"""Evaluation: benchmark adapters, rule scorers, HallusionBench metrics, reports and a cached LLM judge.

    examples = load_benchmark("mmstar", "data/mmstar.parquet", limit=200)   # -> list[EvalExample]
    ...inference writes one Prediction per example...
    rows = score_rows(examples, predictions)                                 # joined by example_id
    report = make_report(rows, judge_rows=judge.judge_pairs(join_predictions(examples, predictions)))
    print(comparison_table(reports))

Everything here is pure except reading benchmark files (:mod:`visplay.eval.adapters`) and the judge's HTTP
requests and cache file (:mod:`visplay.eval.judge`); :mod:`visplay.eval.fixtures` writes small files in each
benchmark's schema for tests.
"""

from visplay.eval.adapters import ADAPTERS, VISION_SR1_FILE_NAMES, load_benchmark
from visplay.eval.judge import Judge, JudgeError, JudgeResult, judge_prompt, parse_verdict
from visplay.eval.schema import ANSWER_TYPES, EvalExample, Prediction
from visplay.eval.scoring import (
    BenchmarkReport,
    ScoredRow,
    choice_from_text,
    comparison_table,
    extract_answer,
    hallusion_metrics,
    join_predictions,
    make_report,
    per_category,
    score_rows,
    score_rule,
)
from visplay.eval.tables import BenchmarkFormatError

__all__ = [
    "ADAPTERS",
    "ANSWER_TYPES",
    "VISION_SR1_FILE_NAMES",
    "BenchmarkFormatError",
    "BenchmarkReport",
    "EvalExample",
    "Judge",
    "JudgeError",
    "JudgeResult",
    "Prediction",
    "ScoredRow",
    "choice_from_text",
    "comparison_table",
    "extract_answer",
    "hallusion_metrics",
    "join_predictions",
    "judge_prompt",
    "load_benchmark",
    "make_report",
    "parse_verdict",
    "per_category",
    "score_rows",
    "score_rule",
]
