"""Generation-plane throughput: the Ray Data pipeline against a bare vLLM loop, in one run.

Prints, for the same images, prompts and sampling parameters:
  (a) bare engine: one in-process vLLM engine; questioner pass then reasoner pass; tokens/s over the
      generate() calls only (engine start excluded), each role's prompts in one generate() call, and again
      in calls of each --batch-sizes size (the pipeline's engine calls), to separate vLLM's batching gain
      from the pipeline's overhead; it runs with as many torch threads as the pipeline's
      engine actor gets (Ray sets an actor's OMP_NUM_THREADS to its num_cpus), so (b)/(a) compares the
      same engine with and without the pipeline around it;
  (b) full pipeline with a warm engine: the same Ray Data pipeline (decode, prompts, questioner, parse,
      reasoner, votes, rewards, filter) served by one already-started rollout engine for both roles, as
      the loop job runs it; tokens/s over the pipeline's whole wall time (from the first pull to the last
      scored row, so every Ray Data overhead counts) and the ratio (b)/(a) (goal: >= 0.8). Both sides are
      warm: the bare engine makes one untimed pass first, and the pipeline's first pass (b0) is printed
      apart, since it pays the job's one-time costs (task worker processes start, the grader's first
      math_verify call, the engine's first calls and image cache);
  (c) images/s end to end (engine starts included) for the streaming pipeline vs the same stages run one
      after another (the questioner's output materialized before the reasoner stage starts).

Usage:
  python bench/generation.py [--model DIR] [--images N] [--k K] [--m M] [--batch-sizes 8,32,64]
                             [--engine-cpus 1] [--repeats 3]
(b) is repeated for each engine-stage batch size in --batch-sizes (rows handed to the engine per call);
(a) and (b) figures are the best of --repeats runs, the two taking turns (outside load varies);
(c) uses the config's batch size. Without --model it builds the tiny model and warms it up on a labeled split (so questions parse).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import ray

from visplay import prompts
from visplay.checkpoints import Checkpoint, model_version
from visplay.config import load_config
from visplay.data.images import read_images, to_pil
from visplay.engine.llm import build_llm, sampling_params
from visplay.engine.rollout import start_rollout_actors
from visplay.generation.pipeline import ask_questions, build_scored_dataset, score_questions
from visplay.rewards import parse_questioner_output
from visplay.seeds import derive_seed
from visplay.world.bootstrap import warm_up
from visplay.world.corpus import make_corpus
from visplay.world.tiny_model import build_tiny_model

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny-cpu.yaml"


class BareEngine:
    """One in-process vLLM engine with both roles' inputs prepared, using the torch thread count an engine
    actor with the config's ``num_cpus`` gets. :meth:`run` with batch ``None`` hands each role's prompts to
    one ``generate`` call; batch ``b`` calls ``generate`` on ``b`` prompts at a time (what one engine-stage
    call sees), so the pipeline's overhead and vLLM's batching gain can be told apart."""

    def __init__(self, cfg, model: Checkpoint, rows: list[dict]) -> None:
        import torch

        gen = cfg.generation
        torch.set_num_threads(max(1, round(gen.questioner_engine.num_cpus)))
        self.cfg, self.rows = cfg, rows
        self.llm = build_llm(model.path, gen.questioner_engine, seed=cfg.seed)
        q_prompt = prompts.render_prompt(prompts.questioner_messages())
        self.images = [to_pil(r["image"]) for r in rows]
        self.q_inputs = [{"prompt": q_prompt, "multi_modal_data": {"image": im}} for im in self.images]
        self.q_params = [
            sampling_params(
                gen.questioner_sampling, gen.questions_per_image, derive_seed(cfg.seed, "q", r["image_id"])
            )
            for r in rows
        ]
        self.run(None)  # untimed: the engine's first calls, its image cache

    def run(self, batch: int | None) -> tuple[int, float]:
        """(tokens, seconds inside generate) of one questioner pass, parse, reasoner pass."""
        gen = self.cfg.generation
        q_out, seconds = _generate(self.llm, self.q_inputs, self.q_params, batch)
        tokens = sum(len(c.token_ids) for o in q_out for c in o.outputs)
        r_prompts, r_params = [], []
        for r, im, out in zip(self.rows, self.images, q_out, strict=True):
            for c in out.outputs:
                parsed = parse_questioner_output(c.text)
                if parsed.ok:
                    r_prompts.append(
                        {
                            "prompt": prompts.render_prompt(prompts.reasoner_messages(parsed.question)),
                            "multi_modal_data": {"image": im},
                        }
                    )
                    r_params.append(
                        sampling_params(
                            gen.reasoner_sampling,
                            gen.answers_per_question,
                            derive_seed(self.cfg.seed, "r", r["image_id"], c.index),
                        )
                    )
        r_out, r_seconds = _generate(self.llm, r_prompts, r_params, batch)
        tokens += sum(len(c.token_ids) for o in r_out for c in o.outputs)
        return tokens, seconds + r_seconds


def _generate(llm, inputs: list, params: list, batch: int | None) -> tuple[list, float]:
    """(outputs, seconds) of ``llm.generate`` over ``inputs`` in chunks of ``batch`` (None: one call)."""
    step = batch or max(1, len(inputs))
    outputs, seconds = [], 0.0
    for i in range(0, len(inputs), step):
        t0 = time.perf_counter()
        outputs += llm.generate(inputs[i : i + step], params[i : i + step], use_tqdm=False)
        seconds += time.perf_counter() - t0
    return outputs, seconds


def pipeline_warm(
    cfg, warm: Checkpoint, images: ray.data.Dataset, batch_size: int, stats: bool = False
) -> tuple[int, float]:
    """(tokens, wall seconds) of the streaming pipeline served by ``warm``'s one rollout engine for both
    roles, with `batch_size` rows per engine call (`stats`: print Ray Data's per-operator statistics)."""
    cfg = load_config(
        CONFIG,
        [
            *_overrides(cfg),
            f"generation.questioner_engine.batch_size={batch_size}",
            f"generation.reasoner_engine.batch_size={batch_size}",
        ],
    )
    tokens, first, started = 0, None, time.perf_counter()
    ds = build_scored_dataset(images, cfg, warm, warm)
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        first = first or time.perf_counter() - started
        tokens += sum(batch["questioner_tokens"].to_pylist()) + sum(batch["reasoner_tokens"].to_pylist())
    wall = time.perf_counter() - started
    if stats:
        print(f"--- Ray Data stats, batch {batch_size} ---\n{ds.stats()}")
    print(f"    batch {batch_size}: first scored rows after {first:.2f}s, last after {wall:.2f}s", flush=True)
    return tokens, wall


def _overrides(cfg) -> list[str]:
    """The overrides main() applied, so a per-batch-size config starts from the same settings."""
    gen = cfg.generation
    return [
        f"generation.questions_per_image={gen.questions_per_image}",
        f"generation.answers_per_question={gen.answers_per_question}",
        f"generation.questioner_engine.num_cpus={gen.questioner_engine.num_cpus}",
        f"generation.reasoner_engine.num_cpus={gen.reasoner_engine.num_cpus}",
        f"out_dir={cfg.out_dir}",
    ]


def pipeline_cold(cfg, model: Checkpoint, images: ray.data.Dataset) -> float:
    """Wall seconds of the streaming pipeline with its own engine pools (engine starts included)."""
    started = time.perf_counter()
    build_scored_dataset(images, cfg, model, model).materialize()
    return time.perf_counter() - started


def sequential(cfg, model: Checkpoint, images: ray.data.Dataset) -> float:
    """Wall seconds when the questioner stage's output is materialized before the reasoner stage starts."""
    started = time.perf_counter()
    questions = ask_questions(images, cfg, model).materialize()
    score_questions(questions, cfg, model).materialize()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default=None, help="HF checkpoint (default: build and warm up the tiny model)"
    )
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--k", type=int, default=None, help="questions per image (default: the config's)")
    parser.add_argument("--m", type=int, default=None, help="answers per question (default: the config's)")
    parser.add_argument("--batch-sizes", default="8,32,64", help="engine-stage batch sizes for (b)")
    parser.add_argument(
        "--engine-cpus", type=float, default=1.0, help="num_cpus of each engine (= torch threads of (a))"
    )
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs per figure")
    parser.add_argument("--stats", action="store_true", help="Ray Data per-operator stats of each (b) run")
    parser.add_argument("--skip-streaming", action="store_true", help="leave out (c)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="visplay-bench-"))
    if args.model is None:
        tiny = build_tiny_model(work / "tiny")
        labeled = make_corpus(work / "labeled", 96, seed=7, split="bootstrap")
        warm_up(tiny, labeled.out_dir, work / "model", seed=7)
        args.model = str(work / "model")
    corpus = make_corpus(work / "corpus", args.images, seed=1, split="train")
    shipped = load_config(CONFIG).generation
    args.k = args.k or shipped.questions_per_image
    args.m = args.m or shipped.answers_per_question
    cfg = load_config(
        CONFIG,
        [
            f"generation.questions_per_image={args.k}",
            f"generation.answers_per_question={args.m}",
            f"generation.questioner_engine.num_cpus={args.engine_cpus}",
            f"generation.reasoner_engine.num_cpus={args.engine_cpus}",
            f"out_dir={work / 'runs'}",
        ],
    )
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    model = Checkpoint(args.model, model_version(args.model))
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    read = read_images(
        corpus.images_dir, max_pixels=cfg.corpus.max_pixels, max_file_bytes=cfg.corpus.max_file_bytes
    )
    rows = pa.concat_tables(ray.get(read.images.to_arrow_refs())).to_pylist()

    bare_engine = BareEngine(cfg, model, rows)
    # One engine serves every (b) pass. A first pass over the same images runs before them, as the bare
    # engine's untimed one does: it pays the job's one-time costs (task worker processes start, the grader's
    # first math_verify call, the engine's first calls and image cache), which would otherwise land on
    # whichever (b) ran first. It is timed and printed apart as (b0).
    (actor,) = start_rollout_actors(model.path, model.version, cfg.generation.questioner_engine, cfg.seed, 1)
    engine = Checkpoint(model.path, model.version, engines=(actor,))
    _, first_wall = pipeline_warm(cfg, engine, read.images, batch_sizes[0])
    # Outside load moves single timings by +-20% on a shared machine: each figure is the best of --repeats
    # runs, bare and pipeline taking turns so that both see the same load.
    bare, warm = {}, {}
    for _ in range(args.repeats):
        for b in [None, *batch_sizes]:
            bare[b] = min(bare.get(b, (0, float("inf"))), bare_engine.run(b), key=lambda r: r[1])
        for b in batch_sizes:
            run = pipeline_warm(cfg, engine, read.images, b, args.stats)
            warm[b] = min(warm.get(b, (0, float("inf"))), run, key=lambda r: r[1])
    ray.kill(actor)
    bare_tokens, bare_seconds = bare[None]
    if not args.skip_streaming:
        stream_wall = pipeline_cold(cfg, model, read.images)
        seq_wall = sequential(cfg, model, read.images)

    bare_tps = bare_tokens / bare_seconds
    print(
        f"images={len(rows)} k={args.k} m={args.m} model={model.version[:12]} "
        f"engine num_cpus={args.engine_cpus} (bare: {max(1, round(args.engine_cpus))} torch threads)"
    )
    print(
        f"(a) bare vLLM generate:        {bare_tokens:7d} tokens in {bare_seconds:7.2f}s = {bare_tps:8.1f} tokens/s"
    )
    print(
        f"(b0) first pass of the job, batch {batch_sizes[0]}: {first_wall:.2f}s (one-time: Ray task workers "
        "start, the grader's first call, the engine's first calls); not counted in (b)"
    )
    for b, (pipe_tokens, pipe_seconds) in warm.items():
        pipe_tps = pipe_tokens / pipe_seconds
        print(
            f"(b) pipeline, warm engine, batch {b:3d}: {pipe_tokens:7d} tokens in {pipe_seconds:7.2f}s = "
            f"{pipe_tps:8.1f} tokens/s  ratio (b)/(a) = {pipe_tps / bare_tps:.2f}  (goal >= 0.8)"
        )
        b_tokens, b_seconds = bare[b]
        print(
            f"    bare vLLM, {b:3d} prompts per generate call: {b_tokens / b_seconds:8.1f} tokens/s "
            f"({b_tokens} tokens in {b_seconds:.2f}s); pipeline / bare at the same batch = "
            f"{pipe_tps / (b_tokens / b_seconds):.2f}"
        )
    if args.skip_streaming:
        ray.shutdown()
        return
    print(
        f"(c) streaming:  {len(rows) / stream_wall:6.3f} images/s ({stream_wall:.1f}s wall, engine starts included)"
    )
    print(
        f"    sequential: {len(rows) / seq_wall:6.3f} images/s ({seq_wall:.1f}s wall)  ratio {seq_wall / stream_wall:.2f}x"
    )
    ray.shutdown()


if __name__ == "__main__":
    main()
