"""Generate a scored, filtered question set from unlabeled images (one VisPlay generation pass).

Algorithm (a streaming Ray Data pipeline over shards of the corpus, see visplay/generation/pipeline.py):
  0. list the corpus into a plan cut into shards (generation.shard_size); nothing is read yet;
  1. read and decode the images; unusable files go to rejects/ with a reason, copies of an image already
     offered under another path to duplicates/;
  2. the Questioner engine writes k questions per image (<type>/<question>/<answer>);
  3. the Reasoner engine answers each parsed question m times; the majority \\boxed{} answer is the
     silver label and p = share of answers that agree with it;
  4. questioner reward = uncertainty(p) - BLEU-cluster diversity penalty (-1 if unparseable);
  5. keep questions with p in [p_low, p_high] and a silver label;
  steps 1-5 stream and write per-shard part files as they go (a killed pass, rerun, redoes only the
  unfinished shards); then, over the finished shards: dedup across the corpus, cap per image.
Outputs land in <out_dir>/<name>/generate/ as parquet dataset folders: questions/, dropped/, rejects/,
duplicates/, plus summary.json and the resolved config at <out_dir>/<name>/config.yaml. MLflow gets the
summary, the config and the location of the tables (not copies).

Launch:
  python jobs/generate_questions.py --config configs/tiny-cpu.yaml [section.field=value ...]
  ray job submit --working-dir . -- python jobs/generate_questions.py --config configs/qwen2.5-vl-7b-gpu.yaml
"""

from __future__ import annotations

import sys

import ray

from visplay import runtime, tracking
from visplay.checkpoints import Checkpoint
from visplay.generation.pipeline import run_generation
from visplay.resource_plan import generate_plan
from visplay.world.embedded import ensure_base_model, ensure_corpus


def main(argv: list[str] | None = None) -> int:
    # --- setup -------------------------------------------------------------------------------------
    cfg = runtime.start_job("generate questions", argv)
    runtime.stop_unless_fits(
        cfg, generate_plan(cfg)
    )  # a plan the cluster can never hold: a message, not a wait
    base_path, base_version = ensure_base_model(cfg)
    ensure_corpus(cfg)
    model = Checkpoint(base_path, base_version)
    out_dir = cfg.run_dir / "generate"
    tracking.setup(cfg)

    # --- the pass ----------------------------------------------------------------------------------
    with tracking.run(f"{cfg.name}-generate", params=tracking.flat_params(cfg), tags={"phase": "generate"}):
        summary = run_generation(cfg, out_dir, questioner=model, reasoner=model)
        tracking.log_metrics(summary.metrics())
        tracking.log_artifact(out_dir / "summary.json", "generate")
        tracking.log_dataset_location(out_dir)
        tracking.log_artifact(cfg.run_dir / "config.yaml")

    # --- cleanup -----------------------------------------------------------------------------------
    print(f"images {summary.images_read} read + {summary.rejected} rejected {summary.rejects_by_reason}")
    print(
        f"questions {summary.questions} = {summary.kept} kept + {summary.dropped} dropped {summary.drops_by_reason}"
    )
    print(
        f"duplicate images {summary.duplicate_image}; shards {summary.shards} ({summary.shards_run} run now)"
    )
    print(f"parse rate {summary.parse_rate:.2f}  p histogram {summary.p_histogram}  outputs in {out_dir}")
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
