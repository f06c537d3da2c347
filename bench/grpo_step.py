"""GRPO update-step throughput and weight-sync cost, in one run.

Prints:
  * update step: tokens/s of one GRPO optimizer step (policy forward with images + backward + DeepSpeed
    AdamW step + the reference model's forward for the KL term), over prompt+completion tokens and over
    completion tokens, median of --steps steps after one warm-up step; peak memory;
  * with --peer trl: TRL's GRPOTrainer on the same work in a subprocess (bench/grpo_trl.py: same model,
    dtype, prompts, images and completions, KL term, optimizer; generation excluded), both tokens/s and
    their ratio;
  * weight sync (--sync): seconds to push the trained weights into a running vLLM rollout actor through
    the object store (``file``), by collective broadcast from this process (``broadcast``, gloo on CPU, NCCL
    with --device cuda), and reloading that engine from an HF checkpoint directory; ratios to the reload.

Usage:
  python bench/grpo_step.py [--model DIR] [--batch 8] [--completion 64] [--steps 5] [--sync]
  python bench/grpo_step.py --size 3b --device cuda     # GPU: random-weight Qwen2.5-VL-3B-size model, bf16
  python bench/grpo_step.py --peer trl                  # needs: uv sync --locked --extra cpu --extra dev --extra bench
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from visplay import prompts
from visplay.config import GRPOConfig
from visplay.engine.broadcast import free_port
from visplay.rl import agg_loss, kl_penalty, policy_loss
from visplay.train.grpo import deepspeed_config, plain_gloo_on_cpu
from visplay.train.policy import Sample, collate, completion_logprobs, load_policy

QWEN25_VL_3B_TEXT = dict(
    vocab_size=151_936,  # the real vocabulary (embeddings and lm_head), not the tiny tokenizer's 2,048
    hidden_size=2048,
    intermediate_size=11008,
    num_hidden_layers=36,
    num_attention_heads=16,
    num_key_value_heads=2,
    max_window_layers=70,
    layer_types=["full_attention"] * 36,  # one per layer (the tiny config lists its 2)
    rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [16, 24, 24]},
)
"""Qwen2.5-VL-3B-Instruct's config.json (text part; mrope_section for its head_dim 128); its embeddings
are tied to the output layer."""
QWEN25_VL_3B_VISION = dict(
    depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=2048,
    fullatt_block_indexes=[7, 15, 23, 31],
)  # fmt: skip


def config_3b(like: Path):
    """`like`'s config with Qwen2.5-VL-3B's shapes: its vocabulary size (the tiny tokenizer's ids all lie
    below it, so `like`'s tokenizer and processor still work), layers, widths, rotary sections and tied
    embeddings."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(like)
    for key, value in QWEN25_VL_3B_TEXT.items():
        setattr(config.text_config, key, value)
    for key, value in QWEN25_VL_3B_VISION.items():
        setattr(config.vision_config, key, value)
    config.tie_word_embeddings = config.text_config.tie_word_embeddings = True
    return config


def random_3b(out: Path, like: Path) -> Path:
    """A random-weight model with Qwen2.5-VL-3B's shapes, reusing `like`'s tokenizer and processor."""
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration(config_3b(like)).to(torch.bfloat16)
    model.save_pretrained(out)
    AutoProcessor.from_pretrained(like).save_pretrained(out)
    return out


def make_samples(processor, batch: int, completion: int) -> list[Sample]:
    """`batch` questioner-prompt samples on distinct images, each with `completion` random tokens."""
    text = prompts.render_prompt(prompts.questioner_messages())
    vocab = processor.tokenizer.vocab_size
    samples = []
    for i in range(batch):
        image = Image.new("RGB", (112, 112), (40 * i % 255, 90, 160))
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        ids = processor(text=[text], images=[image], return_tensors="pt")["input_ids"][0].tolist()
        completion_ids = torch.randint(
            0, vocab - 16, (completion,), generator=torch.Generator().manual_seed(i)
        ).tolist()
        samples.append(Sample(ids, completion_ids, buf.getvalue(), advantage=1.0 if i % 2 else -1.0))
    return samples


def make_batch(processor, batch: int, completion: int):
    """:func:`make_samples` collated into one ModelBatch, as the trainer collates (ours and TRL's input)."""
    tok = processor.tokenizer
    return collate(
        make_samples(processor, batch, completion),
        processor.image_processor,
        tok.convert_tokens_to_ids("<|image_pad|>"),
        tok.pad_token_id or 0,
    )


def update_steps(model_dir: str, args) -> float:
    """Prints our update step's figures; returns its tokens/s (prompt + completion)."""
    import deepspeed

    for key, value in {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
    }.items():
        os.environ.setdefault(key, value)
    plain_gloo_on_cpu()
    deepspeed.init_distributed(dist_backend="nccl" if args.device == "cuda" else "gloo")
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    model, processor = load_policy(model_dir, dtype=dtype)
    ref, _ = load_policy(model_dir, dtype=dtype)
    ref = ref.to(args.device).eval().requires_grad_(False)
    grpo = GRPOConfig(bf16=args.device == "cuda", gradient_checkpointing=args.device == "cuda")
    if grpo.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    engine, *_ = deepspeed.initialize(
        model=model, model_parameters=model.parameters(), config=deepspeed_config(grpo)
    )
    batch = make_batch(processor, args.batch, args.completion)
    for name in (
        "input_ids",
        "attention_mask",
        "mm_token_type_ids",
        "pixel_values",
        "image_grid_thw",
        "completion_ids",
        "completion_mask",
        "completion_start",
        "advantages",
    ):
        setattr(batch, name, getattr(batch, name).to(args.device))
    total_tokens = int(batch.attention_mask.sum())
    completion_tokens = int(batch.completion_mask.sum())
    times = []
    for _ in range(args.steps + 1):
        if args.device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        logp, _ = completion_logprobs(engine, batch)
        with torch.no_grad():
            ref_logp, _ = completion_logprobs(ref, batch)
        loss, _ = policy_loss(logp, logp.detach(), batch.advantages, batch.completion_mask)
        loss = loss + grpo.kl_coef * agg_loss(kl_penalty(logp, ref_logp, "k3"), batch.completion_mask)
        engine.backward(loss)
        engine.step()
        if args.device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    step = statistics.median(times[1:])
    params = sum(p.numel() for p in model.parameters())
    print(f"model {model_dir}: {params / 1e6:.1f}M parameters, device {args.device}, dtype {dtype}")
    print(f"update step: batch {args.batch} x ({total_tokens // args.batch} tokens, {args.completion} completion) "
          f"median {step:.3f}s -> {total_tokens / step:,.0f} tokens/s ({completion_tokens / step:,.0f} completion tokens/s)")  # fmt: skip
    if args.device == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    else:
        import resource

        print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
    return total_tokens / step


def trl_peer(model_dir: str, args, ours_tokens_s: float) -> None:
    """TRL's GRPOTrainer on the same work, in a clean subprocess (bench/grpo_trl.py); both figures."""
    cmd = [sys.executable, str(Path(__file__).with_name("grpo_trl.py")), "--model", model_dir,
           "--batch", str(args.batch), "--completion", str(args.completion), "--steps", str(args.steps),
           "--device", args.device]  # fmt: skip
    rendezvous = {"MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE"}  # our group's, not TRL's
    env = {k: v for k, v in os.environ.items() if k not in rendezvous}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [line for line in out.stdout.splitlines() if line.startswith("TRL_RESULT ")]
    if out.returncode or not lines:
        raise SystemExit(f"the TRL peer failed (rc {out.returncode}):\n{out.stderr[-4000:]}")
    trl = json.loads(lines[-1].removeprefix("TRL_RESULT "))
    print(f"TRL {trl['trl']} GRPOTrainer, same work: median {trl['step_s']:.3f}s -> "
          f"{trl['tokens_per_s']:,.0f} tokens/s ({trl['completion_tokens_per_s']:,.0f} completion tokens/s)")  # fmt: skip
    print(f"update tokens/s, ours / TRL: {ours_tokens_s / trl['tokens_per_s']:.2f}x")


def sync_costs(model_dir: str, device: str) -> None:
    """Median of 5: object-store push, broadcast push, reload from the checkpoint, into one rollout actor."""
    import ray
    from safetensors.torch import load_file

    from visplay.checkpoints import model_version
    from visplay.config import load_config
    from visplay.engine.broadcast import BroadcastSender
    from visplay.engine.rollout import start_rollout_actors

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "tiny-cpu.yaml")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    actor = start_rollout_actors(model_dir, model_version(model_dir), cfg.rollout_engine, 0, count=1)[0]
    state = load_file(str(Path(model_dir) / "model.safetensors"))
    t0 = time.perf_counter()
    sender = BroadcastSender([actor], "nccl" if device == "cuda" else "gloo", timeout_s=120)
    group_s = time.perf_counter() - t0
    push, broadcast, reload = [], [], []
    for i in range(5):
        t0 = time.perf_counter()
        ray.get(actor.push_weights.remote([ray.put(state)], f"v{i}"))
        push.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        sender.push(state, f"b{i}")
        broadcast.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ray.get(actor.reload_from_checkpoint.remote(model_dir, f"r{i}"))
        reload.append(time.perf_counter() - t0)
    p, b, r = statistics.median(push), statistics.median(broadcast), statistics.median(reload)
    megabytes = sum(t.numel() * t.element_size() for t in state.values()) / 1e6
    print(f"weight sync ({len(state)} tensors, {megabytes:.1f} MB, median of 5):")
    print(f"  push through the object store + file {p:.3f}s   (reload/push {r / p:.2f}x)")
    print(f"  broadcast from this process          {b:.3f}s   (reload/broadcast {r / b:.2f}x; group formed once in {group_s:.2f}s)")  # fmt: skip
    print(f"  reload from the checkpoint directory {r:.3f}s")
    print("(an engine restart instead costs 40-170 s on 2 CPU cores: see bench/weight_sync.py)")
    ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="HF checkpoint (default: build the tiny model)")
    parser.add_argument("--size", choices=["tiny", "3b"], default="tiny")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--completion", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--sync", action="store_true", help="also time weight sync into a vLLM rollout actor")
    parser.add_argument(
        "--peer", choices=["trl"], default=None, help="also run TRL's GRPOTrainer on the same work"
    )
    args = parser.parse_args()
    if args.device == "cpu":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    work = Path(tempfile.mkdtemp(prefix="visplay-grpo-bench-"))
    if args.model is None:
        from visplay.world.tiny_model import build_tiny_model

        args.model = str(build_tiny_model(work / "tiny"))
        if args.size == "3b":
            args.model = str(random_3b(work / "3b", Path(args.model)))
    ours = update_steps(args.model, args)
    if args.peer == "trl":
        trl_peer(args.model, args, ours)
    if args.sync:
        sync_costs(args.model, args.device)


if __name__ == "__main__":
    main()
