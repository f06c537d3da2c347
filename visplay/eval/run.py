"""Evaluate one checkpoint: greedy Reasoner answers through the vLLM engine stage, rule (and judge) scores.

    reports = evaluate(cfg, Checkpoint(path, version), out_dir)   # one BenchmarkReport per benchmark

Steps:
  1. load the configured benchmark releases (:func:`visplay.eval.benchmarks.load_benchmark`; rows that
     cannot be evaluated are kept as rejects with their reasons) and the labeled held-out synthetic split
     (generated once under ``eval.synthetic_path``; split ``heldout``, whose image seeds are disjoint from
     the ``bootstrap`` and ``train`` splits by construction);
  2. one Ray Data pass over every example: the Reasoner prompt (question, options when the benchmark keeps
     them apart, the ``\\boxed{}`` instruction, one image placeholder per image: none for a text-only
     question) through the same engine stage as generation, greedy (temperature 0, one completion,
     per-example seed). A question with more images than the engine takes
     (``max_images_per_prompt``) is a reject, not an answer;
  3. ``<out_dir>/predictions.jsonl`` (every answer with its example id, benchmark and model version) and
     ``<out_dir>/rejects.jsonl`` (every row not evaluated, with its reason) are written before any judging,
     so a judge failure loses no answer;
  4. per benchmark: predictions joined to examples by ``example_id`` (never by position), scored by the
     benchmark's own rule, its extra figures (HallusionBench's aAcc/fAcc/qAcc), per-category accuracy, the
     LLM judge when ``eval.judge`` is set (the prompt file and its hash go in the report);
  5. ``<out_dir>/report.json`` (every report), the table in the log, ``eval_<benchmark>`` metrics in the
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
from visplay.config import Config, EngineConfig, SamplingConfig
from visplay.eval.benchmarks import BENCHMARKS, Benchmark, Loaded, load_benchmark
from visplay.eval.judge import Judge, JudgePrompt
from visplay.eval.sampled import sampled_scores
from visplay.eval.schema import LETTERS, EvalExample, Prediction, Reject
from visplay.eval.scoring import BenchmarkReport, comparison_table, join_predictions, make_report, score_rows
from visplay.generation.pipeline import engine_stage
from visplay.rewards import reset_grade_timeout_count, warm_up
from visplay.seeds import derive_seed
from visplay.world.corpus import GROUND_TRUTH_FILENAME, check_world, make_corpus

log = logging.getLogger(__name__)

SYNTHETIC = "synthetic"
"""The benchmark name of the labeled held-out synthetic split."""

VISION_ONLY_QUESTION = "Answer the question shown in the image."
"""The text question of an example whose question is only in its image."""


@dataclass(frozen=True)
class Suite:
    """One benchmark's release as loaded, and the judge prompt file configured for it (None: the default)."""

    bench: Benchmark
    loaded: Loaded
    judge_prompt: str | None = None

    @property
    def name(self) -> str:
        """The benchmark's name."""
        return self.bench.name


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
        suites.append(Suite(BENCHMARKS[SYNTHETIC], load_benchmark(SYNTHETIC, ensure_heldout_split(cfg))))
    for spec in cfg.eval.benchmarks:
        if only is None or spec.name in only:
            loaded = load_benchmark(spec.name, spec.path, limit=spec.limit, split=spec.split)
            suites.append(Suite(BENCHMARKS[spec.name], loaded, spec.judge_prompt))
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
        check_world(truth, cfg.corpus.synthetic_kinds, "eval.synthetic_path")
        return truth
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(
            f"eval.synthetic_path {root} exists and holds no {GROUND_TRUTH_FILENAME}: it is not a held-out "
            "split this project drew; point eval.synthetic_path at a new folder (nothing was deleted)"
        )
    partial = root.with_name(f".{root.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    log.info("generating the held-out synthetic split: %d scenes under %s", cfg.eval.synthetic_n, root)
    make_corpus(
        partial,
        cfg.eval.synthetic_n,
        cfg.eval.synthetic_seed,
        split="heldout",
        kinds=cfg.corpus.synthetic_kinds,
    )
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
    """Greedy answers of `model` to `examples`, in one Ray Data pass.

    Returns ``(benchmark, example_id) -> Prediction`` (ids are unique within a benchmark, not across them).
    """
    greedy = SamplingConfig(temperature=0.0, top_p=1.0, max_tokens=cfg.eval.max_tokens)
    return {
        key: Prediction(key[1], texts[0] if texts else "", model.version)
        for key, texts in answers(cfg, model, examples, greedy, 1).items()
    }


def answers(
    cfg: Config, model: Checkpoint, examples: list[EvalExample], sampling: SamplingConfig, n: int
) -> dict[tuple[str, str], list[str]]:
    """``n`` completions of `model` per example at ``sampling`` (per-example seeds), in one Ray Data pass.

    Returns ``(benchmark, example_id) -> completions`` (an engine error, already retried alone by the engine
    stage, gives no completion: it is logged and scores as a wrong answer).
    """
    rows = [
        {
            "benchmark": e.benchmark,
            "example_id": e.example_id,
            "prompt": prompts.reasoner_prompt(question_text(e), len(e.images)),
            "image": list(e.images),
            "row_seed": derive_seed(cfg.seed, "eval", e.benchmark, e.example_id),
        }
        for e in examples
    ]
    if not rows:
        return {}
    schema = pa.schema(
        [("benchmark", pa.string()), ("example_id", pa.string()), ("prompt", pa.string()),
         ("image", pa.list_(pa.binary())), ("row_seed", pa.int64())]
    )  # fmt: skip
    ds = ray.data.from_arrow(pa.Table.from_pylist(rows, schema=schema))
    ds = engine_stage(ds, model, eval_engine(cfg, model), sampling, n, "e_", cfg.seed)
    columns = ["benchmark", "example_id", "e_completions", "e_engine_error"]
    out = pa.concat_tables(ray.get(ds.select_columns(columns).to_arrow_refs()))
    completions = {}
    for row in out.to_pylist():
        if row["e_engine_error"]:
            log.warning("%s/%s: engine error: %s", row["benchmark"], row["example_id"], row["e_engine_error"])
        completions[(row["benchmark"], row["example_id"])] = list(row["e_completions"] or [])
    if len(completions) != len(rows):
        raise RuntimeError(f"evaluation lost answers: {len(rows)} prompts, {len(completions)} answers")
    return completions


def eval_engine(cfg: Config, model: Checkpoint) -> EngineConfig:
    """The engine that answers: the model's running rollout engines (``rollout_engine``), else the
    evaluation's own pool (``eval.engine``)."""
    return cfg.rollout_engine if model.engines else cfg.eval.engine


def askable(cfg: Config, model: Checkpoint, suite: Suite) -> tuple[list[EvalExample], list[Reject]]:
    """The suite's examples the engine can take, and a reject for each with more images than that."""
    limit = eval_engine(cfg, model).max_images_per_prompt
    fits = [e for e in suite.loaded.examples if len(e.images) <= limit]
    too_many = [
        Reject(e.example_id, suite.loaded.path, f"{len(e.images)} images; the engine takes {limit} "
               "(max_images_per_prompt of eval.engine, or of rollout_engine when the loop's engines answer)")
        for e in suite.loaded.examples if len(e.images) > limit
    ]  # fmt: skip
    return fits, too_many


def evaluate(
    cfg: Config, model: Checkpoint, out_dir: str | Path, only: list[str] | None = None
) -> list[BenchmarkReport]:
    """Score `model` on every configured benchmark; writes predictions.jsonl and rejects.jsonl (before any
    judging), then report.json, in `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    suites = load_suites(cfg, only)
    judge = _judge(cfg, out)  # prompt files are read here: a bad path fails before any generation
    judge_prompts = (
        {s.name: JudgePrompt.load(s.bench.judge_kind, s.judge_prompt) for s in suites} if judge else {}
    )
    asked: list[EvalExample] = []
    rejects = [(s.name, r) for s in suites for r in s.loaded.rejects]
    for suite in suites:
        fits, too_many = askable(cfg, model, suite)
        asked += fits
        rejects += [(suite.name, r) for r in too_many]
    predictions = predict(cfg, model, asked)
    sampled = _sample_synthetic(cfg, model, [e for e in asked if e.benchmark == SYNTHETIC])
    if sampled:
        _write_jsonl(out / "sampled.jsonl", [
            {"benchmark": SYNTHETIC, "example_id": i, "model_version": model.version, "texts": texts}
            for i, texts in sampled.items()
        ])  # fmt: skip
    _write_jsonl(out / "predictions.jsonl", [
        {"benchmark": b, "example_id": i, "model_version": p.model_version, "text": p.text}
        for (b, i), p in predictions.items()
    ])  # fmt: skip
    _write_jsonl(out / "rejects.jsonl", [
        {"benchmark": b, "example_id": r.example_id, "file": r.file, "reason": r.reason} for b, r in rejects
    ])  # fmt: skip
    reports = []
    warm_up()  # the grader's imports happen before any verdict is timed
    for suite in suites:
        answered = [e for e in suite.loaded.examples if (suite.name, e.example_id) in predictions]
        if not answered:
            log.warning("%s: no example could be answered; nothing to evaluate", suite.name)
            continue
        preds = [predictions[(suite.name, e.example_id)] for e in answered]
        judge_rows, prompt = None, judge_prompts.get(suite.name)
        if judge is not None and prompt is not None:
            judge_rows = judge.judge_pairs(join_predictions(answered, preds), prompt)
        reset_grade_timeout_count()
        report = make_report(
            suite.bench,
            score_rows(suite.bench, answered, preds),
            judge_rows=judge_rows,
            judge_prompt=prompt.describe() if prompt is not None else None,
            rejected=sum(1 for b, _ in rejects if b == suite.name),
        )
        report.extra["grade_timeouts"] = float(reset_grade_timeout_count())  # comparisons scored 0 by timeout
        if suite.name == SYNTHETIC and sampled:
            report.extra.update(sampled_scores(answered, sampled, suite.bench.score))
        reports.append(report)
    (out / "report.json").write_text(json.dumps([r.to_dict() for r in reports], indent=2))
    log.info("evaluation of %s:\n%s", model.version[:12], comparison_table(reports))
    if rejects:
        log.warning("%d benchmark rows were not evaluated: see %s", len(rejects), out / "rejects.jsonl")
    if judge is not None:
        log.info("judge: %s", judge.stats())
    return reports


def _sample_synthetic(cfg: Config, model: Checkpoint, examples: list[EvalExample]) -> dict[str, list[str]]:
    """``eval.samples`` answers per held-out synthetic question at ``generation.reasoner_sampling`` (example
    id -> completions; {} when ``eval.samples`` is 0), for pass@1 and maj@k (visplay/eval/sampled.py)."""
    if not cfg.eval.samples or not examples:
        return {}
    sampling = cfg.generation.reasoner_sampling.model_copy(update={"max_tokens": cfg.eval.max_tokens})
    return {i: texts for (_, i), texts in answers(cfg, model, examples, sampling, cfg.eval.samples).items()}


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
    return Judge(
        spec.base_url,
        spec.model,
        api_key,
        cache_path=cache,
        max_retries=spec.max_retries,
        max_tokens=spec.max_tokens,
    )


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    """Rows as JSON lines, written whole to a temporary file and renamed into place."""
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    os.replace(tmp, path)
