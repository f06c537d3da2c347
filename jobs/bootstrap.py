"""Bootstrap: turn the tiny random Qwen2.5-VL into a weak but real VLM for the synthetic world.

Algorithm (visplay/world/bootstrap.py): build the offline tiny model from ``models.tiny`` (random weights,
a tokenizer trained on the synthetic world's text); draw a *labeled* split (``bootstrap_images`` scenes,
split ``bootstrap``, seed ``models.bootstrap_seed``: disjoint from the unlabeled corpus and the held-out
split); supervised warm-up for ``models.bootstrap_steps`` steps on both roles' targets (the questioner's
``<type>/<question>/<answer>`` tags, the reasoner's ``\\boxed{}`` answers: chat format plus some colour,
count, position and chart skill). This stands in for the instruction-tuned checkpoint a real user starts
from, and it is the only place labels are used. Then, optionally, the model answers the held-out split
(``--evaluate``: greedy, and ``eval.samples`` sampled answers per question) and the preconditions of a
self-evolution experiment are checked and printed (visplay/preconditions.py: does it see? do majority
votes beat single samples?).

The loop and experiment jobs run this step themselves when ``models.base`` is missing; this job runs it
alone (e.g. to inspect the model or to share one bootstrap between runs). ``--ship DIR`` also evaluates
the model and copies it to DIR with a manifest (visplay/world/shipped_base.py): that is how the base the
embedded default starts from, ``models/tiny-base``, is built.

Launch:
  python jobs/bootstrap.py --config configs/tiny-cpu.yaml models.base=runs/boot/model [--evaluate]
  python jobs/bootstrap.py --config configs/tiny-cpu.yaml models.base=runs/boot/model --ship models/tiny-base
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import ray

from visplay import runtime, tracking
from visplay.checkpoints import Checkpoint
from visplay.config import Config
from visplay.eval.run import SYNTHETIC, ensure_heldout_split, evaluate, report_metrics
from visplay.eval.scoring import BenchmarkReport
from visplay.experiment import blind_baseline, heldout_labels
from visplay.preconditions import Preconditions, check_preconditions, render_preconditions
from visplay.world.embedded import ensure_base_model
from visplay.world.shipped_base import ship


def main(argv: list[str] | None = None) -> int:
    # --- setup -------------------------------------------------------------------------------------
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--evaluate", action="store_true", help="score the model on the held-out split")
    parser.add_argument(
        "--ship", type=Path, default=None, help="evaluate, then copy the model here with a manifest"
    )
    args, rest = parser.parse_known_args(argv)
    cfg = runtime.start_job("bootstrap", rest)
    if args.ship is not None and (Path(cfg.models.base) / "config.json").is_file():
        raise SystemExit(
            f"--ship: models.base {cfg.models.base} already holds a checkpoint; name a new folder"
        )
    try:
        # --- the warm-up (skipped when models.base already holds a checkpoint) ----------------------
        t0 = time.perf_counter()
        path, version = ensure_base_model(cfg)
        wall_s = time.perf_counter() - t0
        print(f"bootstrap model {path} ({version[:12]}) in {wall_s:.0f}s", flush=True)
        if args.evaluate or args.ship is not None:
            tracking.setup(cfg)
            with tracking.run(f"{cfg.name}-bootstrap-eval", tags={"job": "bootstrap"}):
                reports = evaluate(
                    cfg, Checkpoint(path, version), cfg.run_dir / "bootstrap_eval"
                )  # prints its table
                tracking.log_metrics(report_metrics(reports))
            pre = base_preconditions(cfg, reports)
            if pre is not None:
                print("\n".join(["preconditions of self-evolution:", *render_preconditions(pre)]), flush=True)
        if args.ship is not None:
            command = ["python", "jobs/bootstrap.py", *(argv if argv is not None else sys.argv[1:])]
            manifest = ship(
                Path(path),
                args.ship,
                command=command,
                cfg=cfg,
                wall_s=wall_s,
                heldout=report_metrics(reports),
                preconditions=None if pre is None else pre.to_dict(),
            )
            print(f"shipped {args.ship} (manifest {manifest})")
    except KeyboardInterrupt:
        print("interrupted: rerun the same command (an unfinished warm-up starts again)")
        return 130
    finally:
        ray.shutdown()
    return 0


def base_preconditions(cfg: Config, reports: list[BenchmarkReport]) -> Preconditions | None:
    """The preconditions from the synthetic held-out report (None when the split was not evaluated)."""
    report = next((r for r in reports if r.benchmark == SYNTHETIC), None)
    if report is None:
        return None
    blind = blind_baseline(*heldout_labels(ensure_heldout_split(cfg)))
    return check_preconditions(report.per_category, blind, report.extra)


if __name__ == "__main__":
    sys.exit(main())
