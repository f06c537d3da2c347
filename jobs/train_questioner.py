"""Train the Questioner with GRPO against a frozen Reasoner (one VisPlay questioner phase).

Algorithm, per step (visplay/train/grpo.py):
  1. pick prompts_per_step unlabeled images (a seeded order: resumes neither repeat nor skip data);
  2. the rollout actor (vLLM, current Questioner weights) writes group_size questions per image;
  3. the frozen Reasoner (its own vLLM actor) answers every parsed question m times; p = majority share;
  4. reward = uncertainty(p) - BLEU-cluster diversity penalty (invalid output: invalid_penalty);
  5. group-normalised advantages; clipped policy loss + KL to the starting weights; DeepSpeed step on
     Ray Train workers; the new weights are pushed into the rollout actor without restarting it.
Writes <out_dir>/<name>/train_questioner/final (HF checkpoint) and logs everything to MLflow.
Re-running the same command resumes from the last saved step.

Launch:
  python jobs/train_questioner.py --config configs/tiny-cpu.yaml [section.field=value ...]
  ray job submit --working-dir . -- python jobs/train_questioner.py --config configs/qwen2.5-vl-7b-gpu.yaml
"""

from __future__ import annotations

import sys

import ray

from visplay import runtime, tracking
from visplay.checkpoints import model_version
from visplay.engine.rollout import start_rollout_actors
from visplay.resource_plan import train_plan
from visplay.train.tasks import QuestionerTask
from visplay.train.trainer import train_phase
from visplay.world.embedded import ensure_base_model, ensure_corpus


def main(argv: list[str] | None = None) -> int:
    # --- setup -------------------------------------------------------------------------------------
    cfg = runtime.start_job("train questioner", argv)
    runtime.stop_unless_fits(
        cfg, train_plan(cfg, "questioner")
    )  # a plan the cluster can never hold: a message, not a wait
    base, base_version = ensure_base_model(cfg)
    ensure_corpus(cfg)
    questioner = cfg.models.questioner or base
    reasoner = cfg.models.reasoner or base
    grpo = cfg.questioner_grpo
    images = QuestionerTask.load_images(cfg.corpus, limit=grpo.steps * grpo.prompts_per_step)
    reasoner_version = model_version(reasoner)
    frozen_reasoner = start_rollout_actors(
        reasoner, reasoner_version, cfg.rollout_engine, cfg.seed, count=cfg.rollout_engine.per_role
    )
    task = QuestionerTask(
        images=images, reasoner=frozen_reasoner, reasoner_checkpoint=str(reasoner), reasoner_version=reasoner_version,
        reasoner_sampling=cfg.generation.reasoner_sampling,
        answers_per_question=cfg.generation.answers_per_question, rewards=cfg.rewards, seed=cfg.seed,
    )  # fmt: skip
    tracking.setup(cfg)

    # --- the phase ---------------------------------------------------------------------------------
    with tracking.run(
        f"{cfg.name}-train_questioner", params=tracking.flat_params(cfg), tags={"phase": "train_questioner"}
    ) as run_id:
        result = train_phase(
            cfg, role="questioner", task=task, checkpoint=questioner, version=model_version(questioner), grpo=grpo,
            sampling=cfg.generation.questioner_sampling, out_dir=cfg.run_dir / "train_questioner",
            mlflow_uri=tracking.tracking_uri(cfg), mlflow_run_id=run_id,
        )  # fmt: skip

    # --- cleanup -----------------------------------------------------------------------------------
    print(
        f"questioner checkpoint {result.checkpoint} (version {result.version[:12]}, base {base_version[:12]})"
    )
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
