"""Benchmark: what a weight push into a running rollout engine costs, against a reload and a restart.

One run, one model, one local Ray:

(a) ``push_weights([ray.put(state_dict)], version)``: the trainer's path, a full transformers state dict
    through the object store into the running engine (median of ``--repeats``; the caller's round trip
    and the seconds the actor reports, which include the fetch from the object store);
(b) ``reload_from_checkpoint(model_dir, version)``: the running engine re-reads an HF directory's weights
    (median of ``--repeats``);
(c) a restart: a new rollout actor, i.e. a new process and a vLLM engine built from scratch, until it
    answers (once; the first actor is killed before, so both do not compete for the CPUs).

Prints seconds and the ratio (c) / (a): how much a sync costs less than restarting the engine.

Usage::

    .venv/bin/python bench/weight_sync.py                # builds the tiny model in a temporary directory
    .venv/bin/python bench/weight_sync.py --model DIR    # any Qwen2.5-VL HF directory
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny-cpu.yaml"


def _parse_args() -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", type=Path, default=None, help="HF model directory (default: build the tiny model)"
    )
    parser.add_argument("--config", type=Path, default=CONFIG, help="config whose rollout_engine is used")
    parser.add_argument("--repeats", type=int, default=5, help="pushes and reloads to time (median)")
    parser.add_argument("--num-cpus", type=int, default=4, help="logical CPUs of the local Ray")
    return parser.parse_args()


def _median_seconds(samples: list[float]) -> str:
    """'median s (min, max, n)' of timing samples, for the report."""
    return f"{statistics.median(samples):8.3f} s  (min {min(samples):.3f}, max {max(samples):.3f}, n={len(samples)})"


def run(model: Path, config: Path, repeats: int, num_cpus: int) -> dict[str, float]:
    """Time (a) pushes, (b) checkpoint reloads and (c) an engine restart; print and return the medians."""
    import ray
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    from visplay.checkpoints import model_version
    from visplay.config import load_config
    from visplay.engine.rollout import start_rollout_actors

    engine = load_config(config).rollout_engine
    version = model_version(model)
    state = Qwen2_5_VLForConditionalGeneration.from_pretrained(model, dtype=torch.float32).state_dict()
    megabytes = sum(t.numel() * t.element_size() for t in state.values()) / 1e6
    print(f"model {model}: {len(state)} tensors, {megabytes:.1f} MB fp32; engine dtype {engine.dtype}")

    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    try:
        started = time.perf_counter()
        (actor,) = start_rollout_actors(model, version, engine, seed=0, count=1)
        first_start = time.perf_counter() - started
        print(f"first actor + engine start: {first_start:.1f} s")

        put_s, push_round_trip, push_in_actor = [], [], []
        for i in range(repeats):
            t0 = time.perf_counter()
            ref = ray.put(state)
            t1 = time.perf_counter()
            push_in_actor.append(ray.get(actor.push_weights.remote([ref], f"push-{i}")))
            push_round_trip.append(time.perf_counter() - t1)
            put_s.append(t1 - t0)
            del ref

        reload_round_trip, reload_in_actor = [], []
        for i in range(repeats):
            t0 = time.perf_counter()
            reload_in_actor.append(ray.get(actor.reload_from_checkpoint.remote(str(model), f"reload-{i}")))
            reload_round_trip.append(time.perf_counter() - t0)

        ray.kill(actor)
        time.sleep(2.0)  # let the old engine's processes exit before timing the restart
        started = time.perf_counter()
        (actor,) = start_rollout_actors(model, version, engine, seed=0, count=1)
        restart = time.perf_counter() - started
        ray.kill(actor)
    finally:
        ray.shutdown()

    push = statistics.median(push_round_trip)
    print()
    print(f"ray.put(state_dict)                      {_median_seconds(put_s)}")
    print(f"(a) push_weights, caller round trip      {_median_seconds(push_round_trip)}")
    print(f"    push_weights, inside the actor       {_median_seconds(push_in_actor)}")
    print(f"(b) reload_from_checkpoint, round trip   {_median_seconds(reload_round_trip)}")
    print(f"    reload_from_checkpoint, in actor     {_median_seconds(reload_in_actor)}")
    print(f"(c) restart: new actor + engine          {restart:8.3f} s")
    print(f"ratio (c) / (a)                          {restart / push:8.0f} x")
    return {
        "put": statistics.median(put_s),
        "push": push,
        "reload": statistics.median(reload_round_trip),
        "restart": restart,
    }


def main() -> None:
    """Parse the arguments, build the tiny model if no --model is given, run the benchmark."""
    args = _parse_args()
    if args.model is not None:
        run(args.model, args.config, args.repeats, args.num_cpus)
        return
    from visplay.world.tiny_model import build_tiny_model

    with tempfile.TemporaryDirectory(prefix="visplay-bench-") as tmp:
        started = time.perf_counter()
        model = build_tiny_model(Path(tmp) / "tiny")
        print(f"built the tiny model in {time.perf_counter() - started:.1f} s")
        run(model, args.config, args.repeats, args.num_cpus)


if __name__ == "__main__":
    main()
