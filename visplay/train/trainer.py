"""Driver side of a GRPO phase: rollout actors, the worker group that trains, the MLflow run, the result.

    result = train_phase(cfg, role="questioner", task=task, checkpoint=path, version=version, grpo=...,
                         sampling=..., out_dir=..., trainer=service)

The phase runs on ``trainer``, the job's long-lived GRPO worker group (visplay.train.service), whose
workers run :func:`visplay.train.grpo.run_phase` (DeepSpeed; gloo on CPU, NCCL on GPUs). The
rollout actors are started here, hold the *current* policy in vLLM, and receive the trainer's weights
after every ``sync_every`` steps. Re-running the same phase into the same ``out_dir`` resumes it from its
last saved step; a finished phase (``final/`` present) is not trained again.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from visplay.config import Config, GRPOConfig, SamplingConfig
from visplay.report import read_step_metrics
from visplay.train.grpo import METRICS_FILE, GRPOJob
from visplay.train.service import TrainerService

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PhaseResult:
    """Where a finished phase left its HF checkpoint, that checkpoint's version id, and its per-step metrics."""

    checkpoint: str
    version: str
    steps: int
    step_metrics: list[dict]


class StepLines:
    """Driver side: logs each step a phase appends to its ``metrics.jsonl`` as one console line (the
    workers' own, longer lines are in their logs). Call it while the phase runs; it reads only new lines."""

    FIELDS = ("reward_mean", "loss", "kl", "clip_frac")

    def __init__(self, path: Path, role: str, steps: int):
        self.path, self.role, self.steps = path, role, steps
        self._offset = path.stat().st_size if path.is_file() else 0  # a resumed phase's old steps: printed

    def __call__(self) -> None:
        if not self.path.is_file():
            return
        with self.path.open("rb") as f:
            f.seek(self._offset)
            data = f.read()
        complete = data[: data.rfind(b"\n") + 1]  # a line being written is read next time
        self._offset += len(complete)
        for line in complete.decode().splitlines():
            row = json.loads(line)
            seconds = sum(v for k, v in row.items() if k.startswith("time_"))
            values = " ".join(f"{k}={row[k]:.4g}" for k in self.FIELDS if k in row)
            setup = f", setup {row['time_setup']:.1f}s" if row.get("time_setup") else ""
            log.info("%s step %d/%d %s (%.1fs%s)", self.role, row["step"], self.steps, values, seconds, setup)


def train_phase(
    cfg: Config,
    *,
    role: str,
    task,
    checkpoint: str,
    version: str,
    grpo: GRPOConfig,
    sampling: SamplingConfig,
    out_dir: str | Path,
    rollout_actors: list | None = None,  # running RolloutActors holding `checkpoint`; None: start per_role
    mlflow_uri: str | None = None,
    mlflow_run_id: str | None = None,
    stop_after_step: int | None = None,
    trainer: TrainerService | None = None,  # the job's long-lived worker group; None: one for this phase
) -> PhaseResult | None:
    """Train `role` with GRPO on `task`; returns the final checkpoint, or None when stopped early."""
    from visplay.checkpoints import model_version
    from visplay.engine.rollout import start_rollout_actors

    out_dir = Path(out_dir).resolve()
    final = out_dir / "final"
    if (final / "config.json").is_file():
        log.info("%s phase already finished at %s", role, final)
        return PhaseResult(
            str(final), model_version(final), grpo.steps, read_step_metrics(out_dir / METRICS_FILE)
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    own_actors = rollout_actors is None  # started here -> stopped here; passed-in actors are the caller's
    actors = rollout_actors or start_rollout_actors(
        checkpoint, version, cfg.rollout_engine, cfg.seed, count=cfg.rollout_engine.per_role
    )
    job = GRPOJob(
        role=role, checkpoint=str(checkpoint), version=version, grpo=grpo, sampling=sampling, task=task,
        rollout_actors=actors, out_dir=str(out_dir), seed=cfg.seed, mlflow_uri=mlflow_uri,
        mlflow_run_id=mlflow_run_id, stop_after_step=stop_after_step,
    )  # fmt: skip
    try:
        with contextlib.ExitStack() as stack:
            if trainer is None:  # a phase on its own (jobs/train_*.py): a worker group for this phase only
                trainer = stack.enter_context(TrainerService(cfg, out_dir / "ray_train"))
            trainer.run(job, progress=StepLines(out_dir / METRICS_FILE, role, grpo.steps))
    finally:
        if own_actors:
            import ray

            for actor in actors:
                ray.kill(actor)
    if not (final / "config.json").is_file():
        return None
    if mlflow_run_id is not None:  # the run records where the checkpoint is (15 GB at 7B: not copied)
        import mlflow

        client = mlflow.MlflowClient(tracking_uri=mlflow_uri)
        client.set_tag(mlflow_run_id, "location.checkpoint", str(final.resolve()))
        client.log_artifact(mlflow_run_id, str(final / "config.json"), "checkpoint")
    return PhaseResult(
        str(final), model_version(final), grpo.steps, read_step_metrics(out_dir / METRICS_FILE)
    )
