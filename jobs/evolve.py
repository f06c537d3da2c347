"""The VisPlay self-evolution loop: Questioner and Reasoner improve each other from unlabeled images.

Algorithm, for each iteration i = 1..iterations (Q_0 = R_0 = the base model):
  1. train_questioner  GRPO on Q_{i-1}: questions about unlabeled images, rewarded by the frozen R_{i-1}'s
                       uncertainty (p near 1/2) minus a BLEU-cluster diversity penalty          -> Q_i
  2. generate          Q_i writes k questions per image, R_{i-1} answers each m times; majority = silver
                       label, p = agreement; keep p in [p_low, p_high], dedup                  -> question set
  3. train_reasoner    GRPO on R_{i-1} against the silver labels of that set                    -> R_i
  4. evaluate          (not built yet: the evaluation harness is a separate issue)
Each phase writes a completion marker (visplay/phases.py) only when its outputs are complete; a restarted
job skips finished phases and GRPO phases resume from their last saved step. MLflow: one parent run for
the job, a nested run per iteration and per phase.

The embedded default builds a tiny Qwen2.5-VL offline, warms it up on a *labeled* synthetic split (the
stand-in for an instruction-tuned checkpoint; no labels are used after that), and generates an
unlabeled synthetic corpus.

Launch:
  python jobs/evolve.py --config configs/tiny-cpu.yaml [section.field=value ...]
  ray job submit --working-dir . -- python jobs/evolve.py --config configs/qwen2.5-vl-7b-gpu.yaml
"""

from __future__ import annotations

import logging
import sys

import ray

from visplay import runtime, tracking
from visplay.generation.pipeline import Checkpoint, run_generation
from visplay.phases import Phase
from visplay.train.rollout import start_rollout_actors
from visplay.train.tasks import QuestionerTask, ReasonerTask
from visplay.train.trainer import train_phase
from visplay.world.embedded import ensure_base_model, ensure_corpus

log = logging.getLogger("visplay.evolve")


def main(argv: list[str] | None = None) -> int:
    # --- setup -------------------------------------------------------------------------------------
    cfg = runtime.start_job("evolve", argv)
    base_path, base_version = ensure_base_model(cfg)
    ensure_corpus(cfg)
    tracking.setup(cfg)
    uri = tracking.tracking_uri(cfg)
    questioner = reasoner = Checkpoint(base_path, base_version)
    grpo_q = cfg.questioner_grpo
    images = QuestionerTask.load_images(cfg.corpus, limit=grpo_q.steps * grpo_q.prompts_per_step)

    # --- loop --------------------------------------------------------------------------------------
    with tracking.run(f"{cfg.name}-evolve", params=tracking.flat_params(cfg), tags={"job": "evolve"}):
        tracking.log_artifact(cfg.run_dir / "config.yaml")
        for it in range(1, cfg.iterations + 1):
            with tracking.run(f"iter{it}", tags={"iteration": str(it)}):
                # 1. Questioner GRPO against the frozen current Reasoner
                phase = Phase(cfg.run_dir, it, "train_questioner")
                if (out := phase.done()) is None:
                    with tracking.run(f"iter{it}-train_questioner", tags={"phase": phase.name}) as run_id:
                        frozen = start_rollout_actors(
                            reasoner.path, reasoner.version, cfg.rollout_engine, cfg.seed, count=1
                        )[0]
                        task = QuestionerTask(
                            images=images, reasoner=frozen, reasoner_sampling=cfg.generation.reasoner_sampling,
                            answers_per_question=cfg.generation.answers_per_question, rewards=cfg.rewards, seed=cfg.seed + it,
                        )  # fmt: skip
                        result = train_phase(
                            cfg, role="questioner", task=task, checkpoint=questioner.path, version=questioner.version,
                            grpo=grpo_q, sampling=cfg.generation.questioner_sampling, out_dir=phase.dir,
                            mlflow_uri=uri, mlflow_run_id=run_id,
                        )  # fmt: skip
                        ray.kill(frozen)
                        out = phase.complete(
                            {
                                "checkpoint": result.checkpoint,
                                "version": result.version,
                                "from": questioner.version,
                            }
                        )
                questioner = Checkpoint(out["checkpoint"], out["version"])

                # 2. Generate, label and filter a question set
                phase = Phase(cfg.run_dir, it, "generate")
                if (out := phase.done()) is None:
                    with tracking.run(f"iter{it}-generate", tags={"phase": phase.name}):
                        summary = run_generation(cfg, phase.dir, questioner=questioner, reasoner=reasoner)
                        tracking.log_metrics(summary.metrics())
                        out = phase.complete(
                            {"files": summary.files, "kept": summary.kept, "questions": summary.questions}
                        )
                log.info("iteration %d: %d of %d questions kept", it, out["kept"], out["questions"])

                # 3. Reasoner GRPO on the silver labels
                phase = Phase(cfg.run_dir, it, "train_reasoner")
                if (done := phase.done()) is None and out["kept"] == 0:
                    log.warning(
                        "iteration %d: no kept questions, the Reasoner is not trained this iteration", it
                    )
                    done = phase.complete(
                        {"checkpoint": reasoner.path, "version": reasoner.version, "skipped": True}
                    )
                if done is None:
                    with tracking.run(f"iter{it}-train_reasoner", tags={"phase": phase.name}) as run_id:
                        task = ReasonerTask.from_generation(
                            out["files"]["questions"], out["files"]["images"], cfg.rewards, cfg.seed + it
                        )
                        result = train_phase(
                            cfg, role="reasoner", task=task, checkpoint=reasoner.path, version=reasoner.version,
                            grpo=cfg.reasoner_grpo, sampling=cfg.generation.reasoner_sampling, out_dir=phase.dir,
                            mlflow_uri=uri, mlflow_run_id=run_id,
                        )  # fmt: skip
                        done = phase.complete(
                            {
                                "checkpoint": result.checkpoint,
                                "version": result.version,
                                "from": reasoner.version,
                            }
                        )
                reasoner = Checkpoint(done["checkpoint"], done["version"])

                # 4. Evaluate: not built yet; say so rather than pretend
                log.warning("iteration %d: evaluation is not implemented yet (evaluation-harness issue)", it)

    # --- cleanup -----------------------------------------------------------------------------------
    print(f"questioner {questioner.path} ({questioner.version[:12]})")
    print(f"reasoner   {reasoner.path} ({reasoner.version[:12]})")
    print("not run: evaluation (not implemented yet); see README 'Status'")
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
