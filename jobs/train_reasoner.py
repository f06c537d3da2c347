"""Train the Reasoner with GRPO on a generated question set and its silver labels (one VisPlay reasoner phase).

Algorithm, per step (visplay/train/grpo.py):
  1. pick prompts_per_step kept questions of a generation pass (p within the band, a silver label);
  2. the rollout actor (vLLM, current Reasoner weights) answers each group_size times, step by step,
     final answer in \\boxed{};
  3. reward = (1 - w) x [boxed answer grades equal to the silver label] + w x [a boxed answer is present];
  4. group-normalised advantages; clipped policy loss + KL to the starting weights; DeepSpeed step on
     Ray Train workers; the new weights are pushed into the rollout actor without restarting it.
Reads <out_dir>/<name>/generate/{questions,images}.parquet (jobs/generate_questions.py writes them);
writes <out_dir>/<name>/train_reasoner/final (HF checkpoint); logs to MLflow. Re-running resumes.

Launch:
  python jobs/train_reasoner.py --config configs/tiny-cpu.yaml [section.field=value ...]
"""

from __future__ import annotations

import sys

import ray

from visplay import runtime, tracking
from visplay.checkpoints import model_version
from visplay.resource_plan import train_plan
from visplay.train.tasks import ReasonerTask
from visplay.train.trainer import train_phase
from visplay.world.embedded import ensure_base_model


def main(argv: list[str] | None = None) -> int:
    # --- setup -------------------------------------------------------------------------------------
    cfg = runtime.start_job("train reasoner", argv)
    runtime.stop_unless_fits(
        cfg, train_plan(cfg, "reasoner")
    )  # a plan the cluster can never hold: a message, not a wait
    base, _ = ensure_base_model(cfg)
    reasoner = cfg.models.reasoner or base
    generated = cfg.run_dir / "generate"
    if not (generated / "final.json").is_file():
        raise SystemExit(
            f"no finished question set at {generated}: run jobs/generate_questions.py with this config first"
        )
    task = ReasonerTask(str(generated / "questions"), cfg.rewards, cfg.seed, cfg.corpus.parquet_image_column)
    if not task.n_questions:
        raise SystemExit(f"{generated / 'questions'} holds no kept questions: nothing to train on")
    tracking.setup(cfg)

    # --- the phase ---------------------------------------------------------------------------------
    with tracking.run(
        f"{cfg.name}-train_reasoner", params=tracking.flat_params(cfg), tags={"phase": "train_reasoner"}
    ) as run_id:
        result = train_phase(
            cfg, role="reasoner", task=task, checkpoint=reasoner, version=model_version(reasoner),
            grpo=cfg.reasoner_grpo, sampling=cfg.generation.reasoner_sampling, out_dir=cfg.run_dir / "train_reasoner",
            mlflow_uri=tracking.tracking_uri(cfg), mlflow_run_id=run_id,
        )  # fmt: skip

    # --- cleanup -----------------------------------------------------------------------------------
    print(
        f"reasoner checkpoint {result.checkpoint} (version {result.version[:12]}), {task.n_questions} questions"
    )
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
