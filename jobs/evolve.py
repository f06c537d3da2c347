"""The VisPlay self-evolution loop: Questioner and Reasoner improve each other from unlabeled images.

Algorithm, for each iteration i = 1..iterations (Q_0 = R_0 = the base model):
  1. train_questioner  GRPO on Q_{i-1}: questions about unlabeled images, rewarded by the frozen R_{i-1}'s
                       uncertainty (p near 1/2) minus a BLEU-cluster diversity penalty          -> Q_i
  2. generate          Q_i writes k questions per image, R_{i-1} answers each m times; majority = silver
                       label, p = agreement; keep p in [p_low, p_high], dedup                  -> question set
  3. train_reasoner    GRPO on R_{i-1} against the silver labels of that set                    -> R_i
  4. evaluate          R_i answers the held-out benchmarks greedily (its engines); rule/judge scores
                       (the base model R_0 is evaluated once first, as iteration 0)
The phases are in visplay/loop.py. The job holds vLLM rollout engines (rollout_engine.per_role per role:
questioner, reasoner) and one GRPO worker group (Ray Train + DeepSpeed, visplay/train/service.py) from
start to end: each phase loads its weights into them in-process instead of starting processes; with
generation.reuse_rollout_engines the generation pass uses them too, otherwise it starts autoscaling
engine pools. Before any of it starts, the job's resource plan is compared with the cluster
(visplay/resource_plan.py). Each phase writes a
completion marker (visplay/phases.py) only when its outputs are complete; a restarted job skips finished
phases and GRPO phases resume from their last saved step. A rerun whose settings differ from those a
started phase recorded stops before any work and names the fields (visplay/loop.py READS says which
fields each phase reads); --rerun-changed removes that phase and every phase after it and runs them
again. MLflow: one parent run for the job, a nested run
per iteration and per phase. After each iteration a one-screen summary is printed and
<run_dir>/history.json and <run_dir>/curves.png are rewritten (and logged to MLflow).

The embedded default builds a tiny Qwen2.5-VL offline, warms it up on a *labeled* synthetic split (the
stand-in for an instruction-tuned checkpoint; no labels are used after that), and generates an
unlabeled synthetic corpus.

Launch:
  python jobs/evolve.py --config configs/tiny-cpu.yaml [--rerun-changed] [section.field=value ...]
  ray job submit --working-dir . -- python jobs/evolve.py --config configs/qwen2.5-vl-7b-gpu.yaml
"""

from __future__ import annotations

import argparse
import sys

import ray

from visplay import runtime, tracking
from visplay.checkpoints import Checkpoint
from visplay.engine.rollout import start_rollout_actors
from visplay.loop import check_phases, run_iterations, run_phases
from visplay.resource_plan import evolve_plan
from visplay.train.service import TrainerService
from visplay.train.tasks import QuestionerTask
from visplay.world.embedded import ensure_base_model, ensure_corpus


def main(argv: list[str] | None = None) -> int:
    # --- setup -------------------------------------------------------------------------------------
    flags = argparse.ArgumentParser(add_help=False)
    flags.add_argument("--rerun-changed", action="store_true", help="redo phases whose settings changed")
    known, rest = flags.parse_known_args(sys.argv[1:] if argv is None else argv)
    # Started phases are checked against this config before anything is written or started; also:
    # SIGTERM (ray job stop) raises KeyboardInterrupt.
    cfg = runtime.start_job(
        "evolve", rest, check=lambda c: check_phases(c, rerun_changed=known.rerun_changed)
    )
    try:
        # Before anything starts: a plan the cluster can never hold stops here, naming the phase, the actor
        # and the missing resource, instead of waiting (visplay/resource_plan.py; `visplay plan`).
        runtime.stop_unless_fits(cfg, evolve_plan(cfg))
        # The GRPO workers start now (imports, process group) while the driver prepares the model and data;
        # not at all when every GRPO phase of the run has finished (a finished run submitted again).
        left = [p for p in run_phases(cfg) if p.done() is None]
        if not left:
            print(f"every phase of {cfg.run_dir} has finished: no engines or trainers start", flush=True)
        grpo_left = any(p.name.startswith("train_") for p in left)
        trainer = TrainerService(cfg, cfg.run_dir / "ray_train") if grpo_left else None
        base_path, base_version = ensure_base_model(cfg)
        ensure_corpus(cfg)
        tracking.setup(cfg)
        # rollout_engine.per_role engines per role for the whole job; every phase loads the weights it needs
        # into them (a push: milliseconds on the tiny model) instead of starting engines (a minute each on CPU).
        # None when every phase has finished: the loop then only reads the markers and writes the report.
        n = cfg.rollout_engine.per_role
        engines = (
            start_rollout_actors(base_path, base_version, cfg.rollout_engine, cfg.seed, count=2 * n)
            if left
            else []
        )
        questioner = Checkpoint(base_path, base_version, engines=tuple(engines[:n]))
        reasoner = Checkpoint(base_path, base_version, engines=tuple(engines[n:]))
        grpo_q = cfg.questioner_grpo
        images = QuestionerTask.load_images(cfg.corpus, limit=grpo_q.steps * grpo_q.prompts_per_step)

        # --- loop ----------------------------------------------------------------------------------
        questioner, reasoner = run_iterations(cfg, questioner, reasoner, images, trainer)
        if trainer is not None:
            trainer.close()  # the workers leave; an interrupt or an error skips this and ray.shutdown ends them
    except KeyboardInterrupt:  # finished phases keep their markers; the phase in progress resumes on rerun
        print(f"interrupted: finished phases are kept under {cfg.run_dir}; rerun the same command to resume")
        return 130
    finally:
        ray.shutdown()  # stops the rollout engines and the trainer workers

    # --- cleanup -----------------------------------------------------------------------------------
    print(f"questioner {questioner.path} ({questioner.version[:12]})")
    print(f"reasoner   {reasoner.path} ({reasoner.version[:12]})")
    print(f"history    {cfg.run_dir / 'history.json'}, curves {cfg.run_dir / 'curves.png'}")
    if cfg.eval.during_evolve:
        print(f"evaluation {cfg.run_dir / 'eval_comparison.txt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
