"""The peer of bench/grpo_step.py's update step: TRL's ``GRPOTrainer`` on the same work.

``bench/grpo_step.py --peer trl`` runs this file in a subprocess (a clean process: TRL's Accelerate state
must not meet the DeepSpeed process group of our step) and prints both figures side by side.

The same work as our step: the same model directory and dtype, the same prompts, images and completions
(``grpo_step.make_samples``, seeded; every sample has the same length, so nothing is padded), the same
advantages; the reference model's forward for the KL term (k3, coefficient ``kl_coef``, TRL's
``use_bias_correction_kl`` off so the term is plain k3 as ours), the clipped surrogate with a token-mean over
the batch (TRL ``loss_type="bnpo"``; ours ``policy_loss`` + ``agg_loss``), backward, gradient clipping at
``max_grad_norm`` and an AdamW step with the same lr and weight decay (torch's unfused AdamW in both).
Generation is excluded: ``_prepare_inputs`` returns the prepared batch instead of sampling. What TRL
adds of its own is kept (its chunked log-prob head, the entropy it computes, its metrics).

Needs the bench extra (TRL and what it pulls: accelerate, datasets):
  uv sync --locked --extra cpu --extra dev --extra bench
  .venv/bin/python bench/grpo_step.py --peer trl
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from visplay.config import GRPOConfig as OurGRPOConfig
from visplay.train.policy import load_policy


def trl_update_steps(model_dir: str, batch_size: int, completion: int, steps: int, device: str) -> dict:
    """Median seconds of one TRL GRPO update over ``steps`` steps after one warm-up; tokens/s."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no telemetry ping from the trainer's constructor
    import trl
    from datasets import Dataset
    from grpo_step import make_batch
    from trl import GRPOConfig, GRPOTrainer

    class OneUpdate(GRPOTrainer):
        """GRPOTrainer whose inputs are the prepared batch (no generation, no reward calls)."""

        prepared: dict | None = None

        def _prepare_inputs(self, generation_batch):
            return self.prepared

    ours = OurGRPOConfig(bf16=device == "cuda")
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model, processor = load_policy(model_dir, dtype=dtype)
    args = GRPOConfig(
        output_dir=os.path.join(os.environ.get("TMPDIR", "/tmp"), "visplay-trl-bench"),
        report_to="none", save_strategy="no", use_cpu=device == "cpu", bf16=device == "cuda",
        per_device_train_batch_size=batch_size, gradient_accumulation_steps=1, num_generations=2,
        max_completion_length=completion, num_iterations=1, loss_type="bnpo", beta=ours.kl_coef,
        epsilon=ours.clip_low, epsilon_high=ours.clip_high, use_bias_correction_kl=False, use_vllm=False,
        top_entropy_quantile=1.0, mask_truncated_completions=False, temperature=1.0, gradient_checkpointing=False,
        optim="adamw_torch", learning_rate=ours.lr, weight_decay=ours.weight_decay,
        max_grad_norm=ours.max_grad_norm,
    )  # fmt: skip
    dataset = Dataset.from_dict({"prompt": [[{"role": "user", "content": "x"}]] * 2})
    trainer = OneUpdate(
        model=model, reward_funcs=lambda completions, **_: [0.0] * len(completions), args=args,
        train_dataset=dataset, processing_class=processor,
    )  # fmt: skip
    trainer.create_optimizer()
    trainer.current_gradient_accumulation_steps = 1  # set by TRL's training loop, which is not used here

    batch = make_batch(processor, batch_size, completion)
    start = int(batch.completion_start[0])
    assert bool((batch.completion_start == start).all()) and bool(batch.attention_mask.all()), "equal lengths"
    to = dict(device=trainer.accelerator.device)
    mask = batch.completion_mask.to(**to)
    base = {
        "prompt_ids": batch.input_ids[:, :start].to(**to),
        "prompt_mask": batch.attention_mask[:, :start].to(**to),
        "completion_ids": batch.input_ids[:, start:].to(**to),
        "completion_mask": mask.long(),
        "advantages": batch.advantages.to(**to),
        "num_items_in_batch": mask.sum(),
        "pixel_values": batch.pixel_values.to(**to),
        "image_grid_thw": batch.image_grid_thw.to(**to),
        "mm_token_type_ids": batch.mm_token_type_ids.to(**to),
        "num_images": [1] * batch_size,
    }
    ids = batch.input_ids.to(**to)
    attention = batch.attention_mask.to(**to)
    policy = trainer.model
    times = []
    for _ in range(steps + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.no_grad():  # the reference forward, as TRL runs it after generation
            ref, _, _ = trainer._get_per_token_logps_and_entropies(
                trainer.ref_model, ids, attention, completion, batch_size=batch_size,
                num_images=base["num_images"], pixel_values=base["pixel_values"],
                image_grid_thw=base["image_grid_thw"], mm_token_type_ids=base["mm_token_type_ids"],
            )  # fmt: skip
        trainer.prepared = {**base, "ref_per_token_logps": ref}
        trainer.training_step(policy, {}, None)  # policy forward, loss, backward
        torch.nn.utils.clip_grad_norm_(policy.parameters(), args.max_grad_norm)
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    step = statistics.median(times[1:])
    total, completion_tokens = int(batch.attention_mask.sum()), int(mask.sum())
    return {
        "step_s": step,
        "tokens_per_s": total / step,
        "completion_tokens_per_s": completion_tokens / step,
        "trl": trl.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--completion", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = parser.parse_args()
    result = trl_update_steps(args.model, args.batch, args.completion, args.steps, args.device)
    print("TRL_RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
