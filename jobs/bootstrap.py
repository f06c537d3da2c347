"""Bootstrap: turn the tiny random Qwen2.5-VL into a weak but real VLM for the synthetic world.

Algorithm (visplay/world/bootstrap.py): build the offline tiny model from ``models.tiny`` (random weights,
a tokenizer trained on the synthetic world's text); draw a *labeled* split (``bootstrap_images`` scenes,
split ``bootstrap``, seed ``models.bootstrap_seed``: disjoint from the unlabeled corpus and the held-out
split); supervised warm-up for ``models.bootstrap_steps`` steps on both roles' targets (the questioner's
``<type>/<question>/<answer>`` tags, the reasoner's ``\\boxed{}`` answers: chat format plus some colour,
count, position and chart skill). This stands in for the instruction-tuned checkpoint a real user starts
from, and it is the only place labels are used. Then, optionally, the model answers the held-out split
(``--evaluate``) so its starting accuracy is known.

The loop and experiment jobs run this step themselves when ``models.base`` is missing; this job runs it
alone (e.g. to inspect the model or to share one bootstrap between runs).

Launch:
  python jobs/bootstrap.py --config configs/tiny-cpu.yaml models.base=runs/boot/model [--evaluate]
"""

from __future__ import annotations

import argparse
import sys

import ray

from visplay import runtime, tracking
from visplay.checkpoints import Checkpoint
from visplay.eval.run import evaluate, report_metrics
from visplay.world.embedded import ensure_base_model


def main(argv: list[str] | None = None) -> int:
    # --- setup -------------------------------------------------------------------------------------
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--evaluate", action="store_true", help="score the model on the held-out split")
    args, rest = parser.parse_known_args(argv)
    cfg = runtime.start_job("bootstrap", rest)
    try:
        # --- the warm-up (skipped when models.base already holds a checkpoint) ----------------------
        path, version = ensure_base_model(cfg)
        print(f"bootstrap model {path} ({version[:12]})", flush=True)
        if args.evaluate:
            tracking.setup(cfg)
            with tracking.run(f"{cfg.name}-bootstrap-eval", tags={"job": "bootstrap"}):
                reports = evaluate(
                    cfg, Checkpoint(path, version), cfg.run_dir / "bootstrap_eval"
                )  # prints its table
                tracking.log_metrics(report_metrics(reports))
    except KeyboardInterrupt:
        print("interrupted: rerun the same command (an unfinished warm-up starts again)")
        return 130
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
