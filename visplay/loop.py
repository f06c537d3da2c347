"""The self-evolution loop's phases and iterations (jobs/evolve.py runs them; jobs/experiment.py runs arms).

One iteration i (Q_0 = R_0 = the base model; see jobs/evolve.py for the algorithm):
train_questioner -> generate -> train_reasoner -> evaluate. Every phase is a function of (config,
iteration, checkpoints) that writes a completion marker (visplay/phases.py) only when its outputs are
complete, so a rerun skips finished phases, and opens its own nested MLflow run. Checkpoints carry the
job's warm rollout engines (``rollout_engine.per_role`` per role); each phase loads the weights it needs
into them first.

Each phase declares the settings it reads (:data:`READS`); its records store them with the version ids of
its inputs, and :func:`check_phases` runs before any work: a rerun whose settings differ for a phase that
has started stops and names the fields, or (``rerun_changed``) redoes that phase and every phase after it.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from visplay import report, tracking
from visplay.checkpoints import Checkpoint
from visplay.config import Config, GRPOConfig, SamplingConfig
from visplay.engine.rollout import load_checkpoint_into
from visplay.eval.run import evaluate, report_metrics
from visplay.eval.scoring import BenchmarkReport, comparison_table
from visplay.generation.oracle import write_oracle_questions
from visplay.generation.pipeline import run_generation
from visplay.phases import ChangedSettings, Phase, flat_settings
from visplay.report import IterationRecord
from visplay.train.service import TrainerService
from visplay.train.tasks import QuestionerTask, ReasonerTask
from visplay.train.trainer import train_phase

log = logging.getLogger("visplay.loop")

_CORPUS = (
    "corpus.path",
    "corpus.parquet_image_column",
    "corpus.limit",
    "corpus.max_pixels",
    "corpus.max_file_bytes",
)
READS: dict[str, tuple[str, ...]] = {
    "train_questioner": (
        "seed", *_CORPUS, "questioner_grpo", "generation.questioner_sampling", "generation.reasoner_sampling",
        "generation.answers_per_question", "rewards",
    ),
    "generate": (
        "seed", *_CORPUS, "generation.questions_per_image", "generation.answers_per_question",
        "generation.questioner_sampling", "generation.reasoner_sampling", "generation.p_low", "generation.p_high",
        "generation.max_questions_per_image", "generation.dedup_scope", "generation.shard_size", "rewards",
        "generation.oracle",
    ),
    "train_reasoner": ("seed", "corpus.parquet_image_column", "reasoner_grpo", "generation.reasoner_sampling", "rewards"),
    "evaluate": (
        "seed", "eval.benchmarks", "eval.synthetic_n", "eval.synthetic_seed", "eval.synthetic_path", "eval.max_tokens",
        "eval.judge", "eval.samples", "generation.reasoner_sampling",
    ),
}  # fmt: skip
"""The config fields (dotted sections or leaves) each phase's result depends on. Engines, batch sizes, Ray
and MLflow settings change how fast a phase runs, not what it writes, and are left out (so is
:data:`HOW`)."""

HOW = tuple(
    f"{role}_grpo.{name}"
    for role in ("questioner", "reasoner")
    for name in ("weight_sync", "save_every", "keep_checkpoints", "zero_stage", "offload_optimizer",
                 "gradient_checkpointing")
)  # fmt: skip
"""Fields inside the sections of :data:`READS` that change how a phase runs, not what it writes."""

PATHS = ("corpus.path", "eval.synthetic_path")
"""Path settings, recorded relative to ``out_dir`` when they lie inside it (a run moved together with its
``out_dir``, as the embedded default keeps its corpus there, reads the same settings)."""


def phase_settings(cfg: Config, name: str) -> dict:
    """The values of the fields phase ``name`` reads (:data:`READS`, less :data:`HOW`), by dotted name."""
    settings = flat_settings(cfg.model_dump(mode="json"), READS[name])
    settings = {k: v for k, v in settings.items() if not any(k == h or k.startswith(h + ".") for h in HOW)}
    root = Path(cfg.out_dir).absolute()
    for key in PATHS:
        if isinstance(settings.get(key), str) and Path(settings[key]).is_relative_to(root):
            settings[key] = "<out_dir>/" + Path(settings[key]).relative_to(root).as_posix()
    return settings


def run_phases(cfg: Config) -> list[Phase]:
    """Every phase of the run, in the order the loop runs them."""
    phases = [Phase(cfg.run_dir, 0, "evaluate")] if cfg.eval.during_evolve else []
    for it in range(1, cfg.iterations + 1):
        phases += [
            Phase(cfg.run_dir, it, name) for name in ("train_questioner", "generate", "train_reasoner")
        ]
        phases += [Phase(cfg.run_dir, it, "evaluate")] if cfg.eval.during_evolve else []
    return phases


def check_phases(cfg: Config, rerun_changed: bool = False) -> list[Phase]:
    """Before any work: compare every started phase's recorded settings with ``cfg``.

    Raises :class:`ChangedSettings` for the first phase whose settings differ (the message names the fields
    and their old and new values), unless ``rerun_changed``: then that phase's directory and those of every
    phase after it are removed, so they run again, and the removed phases are returned.
    """
    phases = run_phases(cfg)
    for index, phase in enumerate(phases):
        if changed := phase.changes(phase_settings(cfg, phase.name)):
            if not rerun_changed:
                raise ChangedSettings(phase, changed)
            redo = [p for p in phases[index:] if p.dir.exists()]
            for p in redo:
                log.warning(
                    "%s: settings changed (%s); removing it to run it again", p.label, ", ".join(changed)
                )
                shutil.rmtree(p.dir)
            return redo
    return []


def train_questioner(
    cfg: Config, it: int, questioner: Checkpoint, reasoner: Checkpoint, images: list[bytes],
    trainer: TrainerService | None = None,
) -> dict:  # fmt: skip
    """Phase 1: GRPO on the Questioner (its engines) against the frozen Reasoner (its engines)."""

    def task() -> QuestionerTask:
        return QuestionerTask(
            images=images, reasoner=reasoner.engines, reasoner_checkpoint=reasoner.path,
            reasoner_version=reasoner.version, reasoner_sampling=cfg.generation.reasoner_sampling,
            answers_per_question=cfg.generation.answers_per_question, rewards=cfg.rewards, seed=cfg.seed + it,
        )  # fmt: skip

    skip = "" if cfg.questioner_grpo.enabled else "questioner_grpo.enabled is false"
    return _grpo_phase(
        cfg, it, "questioner", questioner, cfg.questioner_grpo, cfg.generation.questioner_sampling, task, skip,
        judge=reasoner, trainer=trainer,
    )  # fmt: skip


def generate(cfg: Config, it: int, questioner: Checkpoint, reasoner: Checkpoint) -> dict:
    """Phase 2: the Ray Data pipeline writes the scored, filtered question set (``generation.oracle``: the
    corpus's labeled questions instead, visplay/generation/oracle.py)."""
    phase = Phase(cfg.run_dir, it, "generate")
    settings, inputs = (
        phase_settings(cfg, phase.name),
        {"questioner": questioner.version, "reasoner": reasoner.version},
    )
    if (out := phase.done(settings, inputs)) is not None:
        return out
    phase.begin(settings, inputs)
    with tracking.run(f"iter{it}-generate", tags={"phase": phase.name}):
        if cfg.generation.oracle:
            out = write_oracle_questions(cfg.corpus.path, phase.dir, cfg.corpus.limit)
            tracking.log_metrics({"kept": out["kept"]})
            return phase.complete(out)
        questioner, reasoner = _serving(cfg, questioner, reasoner)
        summary = run_generation(cfg, phase.dir, questioner=questioner, reasoner=reasoner)
        tracking.log_metrics(summary.metrics())
        tracking.log_artifact(phase.dir / "summary.json")
        tracking.log_dataset_location(phase.dir)
        tables = {name: Path(path).name for name, path in summary.files.items()}  # relative to phase.dir
        return phase.complete({"tables": tables, "kept": summary.kept, "questions": summary.questions})


def train_reasoner(
    cfg: Config, it: int, reasoner: Checkpoint, question_set: dict, trainer: TrainerService | None = None
) -> dict:
    """Phase 3: GRPO on the Reasoner against the silver labels (skipped, and said so, when nothing was kept)."""

    def task() -> ReasonerTask:
        questions = Phase(cfg.run_dir, it, "generate").dir / question_set["tables"]["questions"]
        return ReasonerTask(str(questions), cfg.rewards, cfg.seed + it, cfg.corpus.parquet_image_column)

    skip = "no question was kept" if question_set["kept"] == 0 else ""
    skip = skip or ("" if cfg.reasoner_grpo.enabled else "reasoner_grpo.enabled is false")
    return _grpo_phase(
        cfg, it, "reasoner", reasoner, cfg.reasoner_grpo, cfg.generation.reasoner_sampling, task, skip,
        trainer=trainer,
    )  # fmt: skip


def _grpo_phase(
    cfg: Config,
    it: int,
    role: str,
    policy: Checkpoint,
    grpo: GRPOConfig,
    sampling: SamplingConfig,
    task: Callable[[], QuestionerTask | ReasonerTask],
    skip: str,
    judge: Checkpoint | None = None,
    trainer: TrainerService | None = None,
) -> dict:
    """One role's GRPO phase: ``policy`` trained on ``task()`` (its rollouts on ``policy``'s engine; ``judge``,
    if any, answers on its own engine) by the job's ``trainer`` workers, or, when ``skip`` names a reason,
    the policy passed on unchanged."""
    phase = Phase(cfg.run_dir, it, f"train_{role}")
    settings = phase_settings(cfg, phase.name)
    inputs = {"policy": policy.version} | ({} if judge is None else {"judge": judge.version})
    if (out := phase.done(settings, inputs)) is not None:
        return out | {"checkpoint": phase.resolve(out["checkpoint"])}
    phase.begin(settings, inputs)
    if skip:
        log.warning("iteration %d: %s; the %s keeps its weights", it, skip, role)
        phase.complete(
            {
                "checkpoint": phase.relative(policy.path),
                "version": policy.version,
                "skipped": True,
                "steps": [],
            }
        )
        return phase.done() | {"checkpoint": policy.path}
    with tracking.run(f"iter{it}-{phase.name}", tags={"phase": phase.name}) as run_id:
        for model in (policy,) if judge is None else (policy, judge):
            load_checkpoint_into(model.engines, model.path, model.version)
        result = train_phase(
            cfg, role=role, task=task(), checkpoint=policy.path, version=policy.version, grpo=grpo,
            sampling=sampling, out_dir=phase.dir, rollout_actors=list(policy.engines),
            mlflow_uri=tracking.tracking_uri(cfg), mlflow_run_id=run_id, trainer=trainer,
        )  # fmt: skip
        out = phase.complete(
            {"checkpoint": phase.relative(result.checkpoint), "version": result.version, "from": policy.version,
             "steps": result.step_metrics}
        )  # fmt: skip
        return out | {"checkpoint": result.checkpoint}


def _serving(cfg: Config, *models: Checkpoint) -> tuple[Checkpoint, ...]:
    """``models`` ready to answer: loaded into their warm engines (``generation.reuse_rollout_engines``), or
    without engines, so the pipeline starts its own autoscaling engine pools (as on a cluster)."""
    if not cfg.generation.reuse_rollout_engines:
        return tuple(replace(model, engines=()) for model in models)
    for model in models:
        load_checkpoint_into(model.engines, model.path, model.version)
    return models


def run_iterations(
    cfg: Config, questioner: Checkpoint, reasoner: Checkpoint, images: list[bytes],
    trainer: TrainerService | None,
) -> tuple[Checkpoint, Checkpoint]:  # fmt: skip
    """Iterations 1..cfg.iterations under one MLflow parent run, every GRPO phase on ``trainer``'s workers
    (None: a GRPO phase left to run starts a group of its own); returns the last Questioner and Reasoner."""
    q_engines, r_engines = questioner.engines, reasoner.engines  # rollout_engine.per_role each
    history = [r for r in report.load_history(cfg.run_dir / "history.json") if r.iteration <= cfg.iterations]
    reports: list[tuple[str, list[dict]]] = []  # (base / iter i, its benchmark reports) per evaluated model
    with tracking.run(f"{cfg.name}-evolve", params=tracking.flat_params(cfg), tags={"job": "evolve"}):
        tracking.log_artifact(cfg.run_dir / "config.yaml")
        if cfg.eval.during_evolve:  # iteration 0 = the base model: what every iteration is compared with
            with tracking.run("iter0", tags={"iteration": "0"}), _phase(0, cfg.iterations, "evaluate", {}):
                reports.append(("base", evaluate_reasoner(cfg, 0, reasoner)["reports"]))
        for it in range(1, cfg.iterations + 1):
            with tracking.run(f"iter{it}", tags={"iteration": str(it)}):
                seconds: dict[str, float] = {}
                with _phase(it, cfg.iterations, "train_questioner", seconds):
                    q_out = train_questioner(cfg, it, questioner, reasoner, images, trainer)
                questioner = Checkpoint(q_out["checkpoint"], q_out["version"], engines=q_engines)
                with _phase(it, cfg.iterations, "generate", seconds):
                    question_set = generate(cfg, it, questioner, reasoner)
                with _phase(it, cfg.iterations, "train_reasoner", seconds):
                    r_out = train_reasoner(cfg, it, reasoner, question_set, trainer)
                reasoner = Checkpoint(r_out["checkpoint"], r_out["version"], engines=r_engines)
                scores = {}
                if cfg.eval.during_evolve:
                    with _phase(it, cfg.iterations, "evaluate", seconds):
                        evaluated = evaluate_reasoner(cfg, it, reasoner)
                    scores = {r["benchmark"]: r["rule_score"] for r in evaluated["reports"]}
                    reports.append((f"iter {it}", evaluated["reports"]))
                    _write_comparison(cfg, reports)

                generated = Phase(cfg.run_dir, it, "generate").dir
                record = IterationRecord.collect(
                    it,
                    {name: str(generated / t) for name, t in question_set["tables"].items()},
                    q_out["steps"],
                    r_out["steps"],
                    scores,
                    seconds=seconds,
                )
                history = [r for r in history if r.iteration != it] + [record]
                print(report.summary_text(record), flush=True)
                tracking.log_metrics({"kept": record.kept, "questions": record.questions}, step=it)
                for path in (
                    report.save_history(history, cfg.run_dir / "history.json"),
                    report.plot_history(history, cfg.run_dir / "curves.png"),
                ):
                    tracking.log_artifact(path)
    return questioner, reasoner


def evaluate_reasoner(cfg: Config, it: int, reasoner: Checkpoint) -> dict:
    """Phase 4 (iteration 0: the base model): the evaluation harness on the Reasoner's warm engine."""
    phase = Phase(cfg.run_dir, it, "evaluate")
    settings, inputs = phase_settings(cfg, phase.name), {"reasoner": reasoner.version}
    if (out := phase.done(settings, inputs)) is not None:
        return out
    phase.begin(settings, inputs)
    with tracking.run(f"iter{it}-evaluate", tags={"phase": phase.name}):
        (reasoner,) = _serving(cfg, reasoner)
        reports = evaluate(cfg, reasoner, phase.dir)
        tracking.log_metrics(report_metrics(reports))
        return phase.complete({"version": reasoner.version, "reports": [r.to_dict() for r in reports]})


def _write_comparison(cfg: Config, reports: list[tuple[str, list[dict]]]) -> None:
    """The evaluation table across models so far (base, iteration 1, ...) in the log and eval_comparison.txt."""
    rows = [
        BenchmarkReport(**{**r, "model_version": f"{label} ({r['model_version'][:12]})"})
        for label, model_reports in reports
        for r in model_reports
    ]
    table = comparison_table(rows)
    (cfg.run_dir / "eval_comparison.txt").write_text(table + "\n")
    print(table, flush=True)
    tracking.log_artifact(cfg.run_dir / "eval_comparison.txt")


class _phase:
    """Live line per phase: '[iter 1/3] train_questioner ...' then '... done in 93s' (0s: done earlier)."""

    def __init__(self, it: int, total: int, name: str, seconds: dict[str, float]) -> None:
        self.label, self.name, self.seconds = f"[iter {it}/{total}] {name}", name, seconds

    def __enter__(self) -> None:
        self.started = time.perf_counter()
        print(f"{self.label} ...", flush=True)

    def __exit__(self, *exc) -> None:
        self.seconds[self.name] = time.perf_counter() - self.started
        status = "failed" if exc[0] is not None else "done"
        print(f"{self.label} {status} in {self.seconds[self.name]:.0f}s", flush=True)
