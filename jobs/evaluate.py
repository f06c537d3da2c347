"""Evaluate Reasoner checkpoints on the configured benchmarks and compare them side by side.

Algorithm, for each checkpoint given with --model (default: the config's base model):
  1. load the benchmark files of `eval.benchmarks` (local parquet/JSONL exports; one adapter per benchmark
     maps its columns) and the labeled held-out synthetic split (`eval.synthetic_n` scenes);
  2. answer every question greedily with the Reasoner prompt through the vLLM engine stage (Ray Data);
  3. score: rule-based (\\boxed{} extraction, grade(), option letters, yes/no; HallusionBench aAcc/fAcc/qAcc;
     per category) and, with `eval.judge` set, an OpenAI-compatible LLM judge whose verdicts are cached;
  4. write <run_dir>/eval/<model version>/report.json and predictions.jsonl, MLflow metrics per model,
     and a comparison table across the checkpoints (<run_dir>/eval/comparison.txt).

Launch:
  python jobs/evaluate.py --config configs/tiny-cpu.yaml --model runs/tiny-cpu/iter_1/train_reasoner/final \
      [--model OTHER ...] [--benchmarks synthetic,mmstar] [section.field=value ...]
  ray job submit --working-dir . -- python jobs/evaluate.py --config configs/qwen2.5-vl-7b-gpu.yaml --model ...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import ray

from visplay import runtime, tracking
from visplay.checkpoints import Checkpoint, model_version
from visplay.eval.run import evaluate, report_metrics
from visplay.eval.scoring import comparison_table
from visplay.resource_plan import evaluate_plan
from visplay.world.embedded import ensure_base_model


def main(argv: list[str] | None = None) -> int:
    # --- setup -------------------------------------------------------------------------------------
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--model", action="append", default=[], help="HF checkpoint to evaluate (repeatable)")
    parser.add_argument("--benchmarks", default=None, help="comma-separated subset of the configured ones")
    args, rest = parser.parse_known_args(argv)
    cfg = runtime.start_job("evaluate", rest, reads_run=True)
    runtime.stop_unless_fits(
        cfg, evaluate_plan(cfg)
    )  # a plan the cluster can never hold: a message, not a wait
    only = args.benchmarks.split(",") if args.benchmarks else None
    paths = [str(Path(m).resolve()) for m in args.model] or [ensure_base_model(cfg)[0]]
    for path in paths:
        if not (Path(path) / "config.json").is_file():
            raise SystemExit(f"--model {path}: no HF checkpoint there (config.json missing)")
    tracking.setup(cfg)

    # --- one evaluation per checkpoint ---------------------------------------------------------------
    reports = []
    with tracking.run(f"{cfg.name}-evaluate", params=tracking.flat_params(cfg), tags={"job": "evaluate"}):
        for path in paths:
            model = Checkpoint(path, model_version(path))
            out_dir = cfg.run_dir / "eval" / model.version[:12]
            with tracking.run(f"eval-{model.version[:12]}", tags={"checkpoint": path}):
                found = evaluate(cfg, model, out_dir, only)
                tracking.log_metrics(report_metrics(found))
                tracking.log_artifact(out_dir, "eval")
            reports += found

    # --- cleanup -----------------------------------------------------------------------------------
    table = comparison_table(reports)
    (cfg.run_dir / "eval" / "comparison.txt").write_text(table + "\n")
    print(table)
    print(f"reports under {cfg.run_dir / 'eval'}")
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
