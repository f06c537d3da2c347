"""Evaluate one checkpoint: greedy Reasoner answers through the vLLM engine stage, rule (and judge) scores.

    reports = evaluate(cfg, Checkpoint(path, version), out_dir)   # one BenchmarkReport per benchmark

Steps:
  1. load the configured benchmark files (:func:`visplay.eval.adapters.load_benchmark`) and the labeled
     held-out synthetic split (generated once under ``eval.synthetic_path``; split ``heldout``, whose image
     seeds are disjoint from the ``bootstrap`` and ``train`` splits by construction);
  2. one Ray Data pass over every example: the Reasoner prompt (question, options when the benchmark keeps
     them apart, the ``\\boxed{}`` instruction) through the same engine stage as generation, greedy
     (temperature 0, one completion, per-example seed); text-only examples have no image for the VLM
     prompt and are counted, not answered;
  3. per benchmark: predictions joined to examples by ``example_id`` (never by position), rule scores,
     the LLM judge when ``eval.judge`` is set, HallusionBench's aAcc/fAcc/qAcc, per-category accuracy;
  4. ``<out_dir>/report.json`` (every report), ``<out_dir>/predictions.jsonl`` (every answer with its
     example id, benchmark and model version), the table in the log, ``eval_<benchmark>`` metrics in the
     active MLflow run.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import ray

from visplay import prompts
from visplay.checkpoints import Checkpoint
from visplay.config import Config, SamplingConfig
from visplay.eval.adapters import load_benchmark
from visplay.eval.judge import Judge
from visplay.eval.schema import LETTERS, EvalExample, Prediction
from visplay.eval.scoring import BenchmarkReport, comparison_table, join_predictions, make_report, score_rows
from visplay.generation.pipeline import engine_stage
from visplay.rewards import reset_grade_timeout_count, warm_up
from visplay.seeds import derive_seed
from visplay.world.corpus import GROUND_TRUTH_FILENAME, make_corpus

log = logging.getLogger(__name__)

SYNTHETIC = "synthetic"
"""The benchmark name of the labeled held-out synthetic split."""


VISION_ONLY_QUESTION = "Answer the question shown in the image."
"""The text question of an example whose question is only in its image."""


@dataclass(frozen=True)
class Suite:
    """One benchmark's examples, as loaded."""

    name: str
    examples: list[EvalExample]


def load_suites(cfg: Config, only: list[str] | None = None) -> list[Suite]:
    """The configured benchmarks (and the synthetic split when ``eval.synthetic_n`` > 0), filtered by `only`.

    Raises ValueError naming a requested benchmark that the config does not list.
    """
    available = [b.name for b in cfg.eval.benchmarks] + ([SYNTHETIC] if cfg.eval.synthetic_n > 0 else [])
    unknown = sorted(set(only or []) - set(available))
    if unknown:
        raise ValueError(f"benchmarks {unknown} are not configured; eval.benchmarks has {available}")
    suites = []
    if SYNTHETIC in available and (only is None or SYNTHETIC in only):
        suites.append(Suite(SYNTHETIC, load_benchmark(SYNTHETIC, ensure_heldout_split(cfg))))
    for bench in cfg.eval.benchmarks:
        if only is None or bench.name in only:
            suites.append(Suite(bench.name, load_benchmark(bench.name, bench.path, limit=bench.limit)))
    return suites


def ensure_heldout_split(cfg: Config) -> Path:
    """The held-out synthetic split's ground-truth file, generated when missing.

    It is drawn into a hidden sibling folder (``.<name>.partial``, the only thing ever deleted here: an
    interrupted draw) and renamed into place when complete. A folder at ``eval.synthetic_path`` that has
    files but no ground truth is not ours (a mistyped path): it is left alone and named in the error.
    """
    root = Path(cfg.eval.synthetic_path)
    truth = root / GROUND_TRUTH_FILENAME
    if truth.is_file():
        return truth
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(
            f"eval.synthetic_path {root} exists and holds no {GROUND_TRUTH_FILENAME}: it is not a held-out "
            "split this project drew; point eval.synthetic_path at a new folder (nothing was deleted)"
        )
    partial = root.with_name(f".{root.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    log.info("generating the held-out synthetic split: %d scenes under %s", cfg.eval.synthetic_n, root)
    make_corpus(partial, cfg.eval.synthetic_n, cfg.eval.synthetic_seed, split="heldout")
    if root.exists():
        root.rmdir()  # empty (checked above)
    partial.rename(root)
    return truth


def question_text(example: EvalExample) -> str:
    """The question as the model sees it: the options are appended when the question text lacks them; a
    blank question (MathVerse's Vision Only version draws it into the image) asks for the one in the image."""
    question = example.question.strip() or VISION_ONLY_QUESTION
    if example.options and not all(option in question for option in example.options):
        listed = ", ".join(f"{LETTERS[i]}. {option}" for i, option in enumerate(example.options))
        question = f"{question} Options: {listed}."
    return question


def predict(cfg: Config, model: Checkpoint, examples: list[EvalExample]) -> dict[tuple[str, str], Prediction]:
    """Greedy answers of `model` to `examples` that have an image, in one Ray Data pass.

    Returns ``(benchmark, example_id) -> Prediction`` (ids are unique within a benchmark, not across them).
    """
    rows = [
        {
            "benchmark": e.benchmark,
            "example_id": e.example_id,
            "prompt": prompts.reasoner_prompt(question_text(e)),
            "image": e.image,
            "row_seed": derive_seed(cfg.seed, "eval", e.benchmark, e.example_id),
        }
        for e in examples
        if e.image
    ]
    if not rows:
        return {}
    greedy = SamplingConfig(temperature=0.0, top_p=1.0, max_tokens=cfg.eval.max_tokens)
    ds = ray.data.from_arrow(pa.Table.from_pylist(rows))
    ds = engine_stage(ds, model, cfg.eval.engine, greedy, 1, "e_", cfg.seed)
    columns = ["benchmark", "example_id", "e_completions", "e_engine_error"]
    out = pa.concat_tables(ray.get(ds.select_columns(columns).to_arrow_refs()))
    predictions = {}
    for row in out.to_pylist():
        if row["e_engine_error"]:  # the engine stage already retried it alone; it counts as a wrong answer
            log.warning("%s/%s: engine error: %s", row["benchmark"], row["example_id"], row["e_engine_error"])
        text = row["e_completions"][0] if row["e_completions"] else ""
        predictions[(row["benchmark"], row["example_id"])] = Prediction(
            row["example_id"], text, model.version
        )
    if len(predictions) != len(rows):
        raise RuntimeError(f"evaluation lost answers: {len(rows)} prompts, {len(predictions)} answers")
    return predictions


def evaluate(
    cfg: Config, model: Checkpoint, out_dir: str | Path, only: list[str] | None = None
) -> list[BenchmarkReport]:
    """Score `model` on every configured benchmark; writes report.json and predictions.jsonl in `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    suites = load_suites(cfg, only)
    predictions = predict(cfg, model, [e for s in suites for e in s.examples])
    judge = _judge(cfg, out)
    reports = []
    warm_up()  # the grader's imports happen before any verdict is timed
    for suite in suites:
        answered = [e for e in suite.examples if (suite.name, e.example_id) in predictions]
        if not answered:
            log.warning("%s: no example has an image; nothing to evaluate", suite.name)
            continue
        preds = [predictions[(suite.name, e.example_id)] for e in answered]
        judge_rows = judge.judge_pairs(join_predictions(answered, preds)) if judge is not None else None
        reset_grade_timeout_count()
        report = make_report(score_rows(answered, preds), judge_rows=judge_rows)
        report.extra["text_only_not_answered"] = float(len(suite.examples) - len(answered))
        report.extra["grade_timeouts"] = float(reset_grade_timeout_count())  # comparisons scored 0 by timeout
        reports.append(report)
    _write(out, reports, predictions)
    log.info("evaluation of %s:\n%s", model.version[:12], comparison_table(reports))
    if judge is not None:
        log.info("judge: %s", judge.stats())
    return reports


def report_metrics(reports: list[BenchmarkReport]) -> dict[str, float]:
    """Flat MLflow metrics: ``eval_<bench>`` (rule score), ``eval_<bench>_judge``, ``eval_<bench>_<category>``."""
    metrics = {}
    for r in reports:
        metrics[f"eval_{r.benchmark}"] = r.rule_score
        if r.judge_score is not None:
            metrics[f"eval_{r.benchmark}_judge"] = r.judge_score
        for category, score in r.per_category.items():
            metrics[f"eval_{r.benchmark}_{_metric_name(category)}"] = score
        for key, value in r.extra.items():
            metrics[f"eval_{r.benchmark}_{_metric_name(key)}"] = value
    return metrics


def _metric_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "_-." else "_" for c in text)


def _judge(cfg: Config, out: Path) -> Judge | None:
    spec = cfg.eval.judge
    if spec is None:
        return None
    api_key = os.environ.get(spec.api_key_env) if spec.api_key_env else None
    if spec.api_key_env and api_key is None:
        raise ValueError(f"eval.judge.api_key_env: environment variable {spec.api_key_env} is not set")
    cache = Path(spec.cache_path) if spec.cache_path else out / "judge_cache.jsonl"
    return Judge(spec.base_url, spec.model, api_key, cache_path=cache, max_retries=spec.max_retries)


def _write(out: Path, reports: list[BenchmarkReport], predictions: dict[tuple[str, str], Prediction]) -> None:
    (out / "report.json").write_text(json.dumps([r.to_dict() for r in reports], indent=2))
    with open(out / "predictions.jsonl", "w") as f:
        for (benchmark, example_id), p in predictions.items():
            row = {
                "benchmark": benchmark,
                "example_id": example_id,
                "model_version": p.model_version,
                "text": p.text,
            }
            f.write(json.dumps(row) + "\n")
