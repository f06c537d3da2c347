"""One GRPO phase as every Ray Train worker runs it (:func:`run_phase`), with DeepSpeed.

The workers stay up for the whole job (visplay.train.service); a phase loads its starting weights
in-process, trains, saves, and frees them for the next phase.

One step (rank 0 talks to the rollout actors; every rank trains on its shard):

    gen     rank 0: the task picks the step's prompts; the rollout actors (vLLM, current weights)
            sample group_size completions each
    reward  rank 0: the task scores them; group advantages; zero-variance groups masked (DAPO)
            -> broadcast to all ranks
    update  each rank: forward its shard (vision tower included) -> token log-probs; clipped policy
            loss + kl_coef x KL to the reference (the phase's starting weights); DeepSpeed step
    sync    every sync_every steps: rank 0 gathers the weights and pushes them into the rollout actors
            (object store + file, or a collective broadcast: visplay.train.sync)

Resumable: every save_every steps the DeepSpeed state is saved under ``state/`` and ``state/latest.json``
names it (written last, atomically). A restarted loop loads it, pushes those weights to the rollout
actors and continues at the next step; prompts are a function of (seed, step), so nothing is repeated
or skipped. At the end rank 0 writes an HF checkpoint (loadable by transformers and vLLM) to ``final/``.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from visplay.config import GRPOConfig, SamplingConfig
from visplay.rewards import warm_up
from visplay.rl import agg_loss, group_advantages, kl_penalty, masked_mean, policy_loss, zero_variance_groups
from visplay.rl.ppo import minibatch_count, run_updates, split_even
from visplay.train.policy import Sample, collate, completion_logprobs, load_policy
from visplay.train.sync import TrainerWeightSync, full_weights

METRICS_FILE = "metrics.jsonl"
"""Per-step metrics of a phase, one JSON object per line, in the phase's ``out_dir`` (rank 0 writes it)."""

log = logging.getLogger(__name__)


@dataclass
class GRPOJob:
    """Everything a worker needs; built by the driver (visplay.train.trainer) and pickled to workers."""

    role: str
    checkpoint: str
    version: str
    grpo: GRPOConfig
    sampling: SamplingConfig
    task: Any  # QuestionerTask | ReasonerTask
    rollout_actors: list[Any]
    out_dir: str
    seed: int
    mlflow_uri: str | None = None
    mlflow_run_id: str | None = None
    stop_after_step: int | None = None  # tests: end the loop early, as a kill would
    extra_tags: dict[str, str] = field(default_factory=dict)


def prepare_worker(warm_config: dict):
    """Once per worker process, before any phase: logging, the accelerator choice, DeepSpeed's and the
    model's imports, and one ``deepspeed.initialize`` of a toy module with ``warm_config`` (its first call
    in a process builds the engine's machinery: 3-7 s on 2 cores; later ones take 0.02-0.2 s). Paid once
    per job (:func:`visplay.train.service.serve_phases`); returns ``torch.distributed``."""
    from visplay import console

    started = time.perf_counter()
    console.setup(verbose=True)  # this worker's own process: its lines, with times, go to its log file
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # DeepSpeed's CPU accelerator (gloo, torch AdamW)
    import deepspeed
    import torch.distributed as dist

    plain_gloo_on_cpu()
    from transformers import Qwen2_5_VLForConditionalGeneration  # noqa: F401 - the model code's import, once

    toy = torch.nn.Linear(8, 8)
    engine, *_ = deepspeed.initialize(model=toy, model_parameters=toy.parameters(), config=warm_config)
    engine.destroy()
    if dist.get_rank() == 0:
        warm_up()  # rank 0 scores rollouts: the grader's imports happen here, not inside a timed verdict
    log.info("rank %d ready for phases in %.1fs", dist.get_rank(), time.perf_counter() - started)
    return dist


def run_phase(job: GRPOJob) -> None:
    """One GRPO phase on this worker (every rank of the group runs it): set up, loop, save, free."""
    import deepspeed
    import torch.distributed as dist

    torch.manual_seed(job.seed + dist.get_rank())
    started = time.perf_counter()

    # --- setup: policy under DeepSpeed, frozen reference, resume --------------------------------------
    setup_timings: dict[str, float] = {}
    t0 = time.perf_counter()
    model, processor = load_policy(job.checkpoint)
    if job.grpo.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    setup_timings["load"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    engine, *_ = deepspeed.initialize(
        model=model, model_parameters=model.parameters(), config=deepspeed_config(job.grpo)
    )
    setup_timings["deepspeed_init"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = load_policy(job.checkpoint)[0].eval().requires_grad_(False) if job.grpo.kl_coef > 0 else None
    setup_timings["load_ref"] = time.perf_counter() - t0
    try:
        _train(job, engine, ref, processor, started, setup_timings)
    finally:  # the next phase's policy (maybe the other role) gets the memory: one policy resident at a time
        engine.destroy()
        del engine, model, ref
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _train(job: GRPOJob, engine, ref, processor, started: float, setup_timings: dict[str, float]) -> None:
    """Resume, the step loop, the final HF checkpoint."""
    import ray.train
    import torch.distributed as dist

    rank, world = dist.get_rank(), dist.get_world_size()
    out = Path(job.out_dir)
    state_dir = out / "state"
    tokenizer = processor.tokenizer
    image_token_id = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    sync = TrainerWeightSync(job.rollout_actors, job.grpo, rank, job.version)
    start = 0
    marker = state_dir / "latest.json"
    if rank == 0:
        drop_torn_metrics_line(out / METRICS_FILE)
    if marker.is_file():
        saved = json.loads(marker.read_text())
        engine.load_checkpoint(str(state_dir), tag=saved["tag"])
        start = saved["step"]
        log.info("rank %d resumed %s from step %d", rank, job.role, start)
        if start < job.grpo.steps:
            sync.push(engine, f"{job.version}+{job.role}-step{start}")
    setup_s = time.perf_counter() - started
    log.info("rank %d %s setup: %s", rank, job.role, _fmt({**setup_timings, "total": setup_s}))

    # --- loop -------------------------------------------------------------------------------------
    for step in range(start, job.grpo.steps):
        # setup: the seconds from the phase's command to this step (its first after a start, else 0)
        timings: dict[str, float] = {"setup": setup_s if step == start else 0.0}
        failed_before = sync.failed_broadcasts
        for attempt in range(MAX_REPUSHES + 1):
            payload = [_rollout_and_score(job, step, timings, sync.version)] if rank == 0 else [None]
            dist.broadcast_object_list(payload, src=0)
            if not isinstance(payload[0], StaleEngines):
                break
            if attempt == MAX_REPUSHES:
                raise RuntimeError(f"{job.role} step {step + 1}: {payload[0]} after {MAX_REPUSHES} pushes")
            # An engine came back with its constructor's weights (Ray restarted it): every rank joins the
            # push of the current weights (a collective under ZeRO-3), then the step's rollouts are redone.
            log.warning("rank %d %s step %d: %s; pushing the current weights again", rank, job.role, step + 1,
                        payload[0])  # fmt: skip
            sync.push(engine, sync.version, after_restart=True)
        samples, metrics, timings_0 = payload[0]
        timings |= timings_0

        t0 = time.perf_counter()
        # PPO: this rank's share in mini-batches (the same count on every rank; an idle slot trains on a
        # zero-weight copy), old log-probs before any update, then ppo_epochs x mini-batches of updates.
        idle = Sample(samples[0].prompt_ids, samples[0].completion_ids, samples[0].image, 0.0, 0.0)
        parts = minibatch_count(len(samples), world, job.grpo.mini_batch_size)
        batches = [
            collate(chunk or [idle], processor.image_processor, image_token_id, pad_id)
            for chunk in split_even(samples[rank::world], parts)
        ]
        # Every group tied and no KL term: the loss has no gradient, and an AdamW step on a zero gradient
        # would still move the weights (momentum, weight decay). Such a step is measured, not applied.
        skip = metrics["update_skipped"] > 0
        with torch.no_grad() if skip else contextlib.nullcontext():
            figures = run_updates(
                batches, 1 if skip else job.grpo.ppo_epochs, lambda b: completion_logprobs(engine, b),
                lambda b, current, old: _loss(ref, b, current, old, job.grpo),
                (lambda loss: None) if skip else lambda loss: _apply(engine, loss),
            )  # fmt: skip
        timings["update"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        if (step + 1) % job.grpo.sync_every == 0 or step + 1 == job.grpo.steps:
            sync.push(engine, f"{job.version}+{job.role}-step{step + 1}")
        timings["sync"] = time.perf_counter() - t0

        # Restarted engines seen this step: stale rollouts, pushes that failed on a dead member, and (from the
        # task's components) the frozen judge's.
        restarts = attempt + sync.failed_broadcasts - failed_before
        metrics["engine_restarts"] = metrics.get("engine_restarts", 0.0) + restarts
        local = torch.tensor(figures).mean(0)  # over this rank's updates
        dist.all_reduce(local)
        local /= world
        metrics |= dict(zip(["loss", "kl", "clip_frac", "approx_kl", "entropy"], local.tolist(), strict=True))
        metrics |= {f"time_{k}": v for k, v in timings.items()}
        if (step + 1) % job.grpo.save_every == 0 or step + 1 == job.grpo.steps:
            _save_state(engine, state_dir, step + 1, rank, job.grpo.keep_checkpoints)
        if rank == 0:
            _log_metrics(job, metrics, step + 1)
            log.info("%s step %d/%d %s", job.role, step + 1, job.grpo.steps, _fmt(metrics))
        ray.train.report({"step": step + 1, **metrics})
        if job.stop_after_step is not None and step + 1 >= job.stop_after_step:
            return

    # --- cleanup: the phase's HF checkpoint -------------------------------------------------------------
    _save_hf(engine, processor, out / "final", job, rank)
    dist.barrier()


def _apply(engine, loss: torch.Tensor) -> None:
    """One optimizer update under DeepSpeed."""
    engine.backward(loss)
    engine.step()


def _loss(ref, batch, current, old_logp: torch.Tensor, grpo: GRPOConfig):
    """(loss, [loss, KL term, clip_frac, approx_kl, token entropy]) of one mini-batch: the clipped policy loss
    of the current log-probs against those of the policy that sampled, + kl_coef x KL to the reference."""
    logp, entropy = current
    mask = batch.completion_mask
    loss, pg = policy_loss(
        logp, old_logp, batch.advantages, mask, clip_low=grpo.clip_low, clip_high=grpo.clip_high,
        dual_clip=grpo.dual_clip, agg=grpo.loss_agg,
    )  # fmt: skip
    kl = torch.zeros(())
    if ref is not None:
        with torch.no_grad():
            ref_logp, _ = completion_logprobs(ref, batch)
        kl = agg_loss(kl_penalty(logp, ref_logp, grpo.kl_kind), mask, grpo.loss_agg)
        loss = loss + grpo.kl_coef * kl
    figures = [loss.item(), kl.item(), pg.clip_frac.item(), pg.approx_kl.item()]
    return loss, [*figures, masked_mean(entropy, (mask > 0).float()).item()]


MAX_REPUSHES = 3
"""Times one step pushes the current weights again into engines that came back restarted before it fails."""


@dataclass(frozen=True)
class StaleEngines:
    """Rank 0's answer when a step's rollouts came from other weights than the trainer's last push."""

    engines: list[str]

    def __str__(self) -> str:
        return "; ".join(self.engines)


def _rollout_and_score(job: GRPOJob, step: int, timings: dict[str, float], expected: str):
    """Rank 0: sample the step's rollouts, reward them, build the samples with their advantages; or
    :class:`StaleEngines` when an engine's rollouts carry another version than ``expected``."""
    import ray

    t0 = time.perf_counter()
    requests = job.task.requests(step, job.grpo.prompts_per_step)
    shards = [requests[i :: len(job.rollout_actors)] for i in range(len(job.rollout_actors))]
    busy = [(i, a, s) for i, (a, s) in enumerate(zip(job.rollout_actors, shards, strict=True)) if s]
    parts = ray.get([a.generate.remote(s, job.sampling, job.grpo.group_size) for _, a, s in busy])
    stale = [
        f"rollout engine {i} ({a}) holds {sorted({r.version for r in part} - {expected})}, expected {expected}"
        for (i, a, _), part in zip(busy, parts, strict=True)
        if any(r.version != expected for r in part)
    ]
    if stale:
        return StaleEngines(stale)
    rollouts = [None] * len(requests)
    for i, part in enumerate(parts):
        rollouts[i :: len(job.rollout_actors)] = part
    timings["gen"] = timings.get("gen", 0.0) + time.perf_counter() - t0  # a redone step adds up

    t0 = time.perf_counter()
    score = job.task.score(step, requests, rollouts)
    rewards = torch.tensor([r for row in score.rewards for r in row], dtype=torch.float32)
    groups = torch.tensor([i for i, row in enumerate(score.rewards) for _ in row])
    adv = group_advantages(rewards, groups, scale=job.grpo.advantage_scale)
    zero_var, n_zero, n_groups = zero_variance_groups(rewards, groups)
    keep_all = not job.grpo.filter_zero_variance_groups or n_zero == n_groups  # never an empty update
    skip_update = n_zero == n_groups and job.grpo.kl_coef == 0  # no advantage, no KL: no gradient at all
    samples = []
    k = 0
    for req, rollout in zip(requests, rollouts, strict=True):
        for ids in rollout.token_ids:
            weight = 1.0 if keep_all or not zero_var[k] else 0.0
            samples.append(
                Sample(list(rollout.prompt_token_ids), list(ids), req.image, float(adv[k]), weight)
            )
            k += 1
    timings["reward"] = time.perf_counter() - t0
    lengths = [len(s.completion_ids) for s in samples]
    metrics = {
        "reward_mean": rewards.mean().item(),
        "reward_std": rewards.std().item() if len(rewards) > 1 else 0.0,
        "advantage_abs_mean": adv.abs().mean().item(),
        "zero_variance_group_share": n_zero / max(n_groups, 1),
        "update_skipped": float(skip_update),
        "response_length": sum(lengths) / len(lengths),
        **score.components,
    }
    return samples, metrics, timings


def plain_gloo_on_cpu() -> None:
    """On a machine without CUDA, keep DeepSpeed from building its shared-memory allreduce kernel.

    DeepSpeed's CPU accelerator JIT-compiles that kernel in ``init_distributed``/``initialize``, and its build
    is not reused across processes here (45-80 s per phase on 2 cores, docs/stack.md; a build killed midway
    leaves a lock every later build waits on for ever). DeepSpeed keeps its op-compatibility table in a
    module-level dict; marking the op unavailable makes it use plain gloo collectives, all a CPU run needs.
    """
    if torch.cuda.is_available():
        return
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def deepspeed_config(grpo: GRPOConfig) -> dict:
    """DeepSpeed config from the GRPO section (ZeRO stage, offload, AdamW, clipping, bf16)."""
    zero: dict[str, Any] = {"stage": grpo.zero_stage}
    if grpo.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu"}
    return {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,
        "zero_optimization": zero,
        "optimizer": {
            "type": "AdamW",
            "params": {"lr": grpo.lr, "weight_decay": grpo.weight_decay, "torch_adam": True},
        },
        "gradient_clipping": grpo.max_grad_norm,
        "bf16": {"enabled": grpo.bf16},
        "steps_per_print": 10**9,
    }


def _save_state(engine, state_dir: Path, step: int, rank: int, keep: int) -> None:
    """DeepSpeed state of `step` (all ranks), then the marker naming it (rank 0, atomic rename), then the
    states beyond the ``keep`` newest removed (:func:`prune_states`)."""
    import torch.distributed as dist

    tag = f"step_{step}"
    engine.save_checkpoint(str(state_dir), tag=tag, save_latest=False)
    dist.barrier()
    if rank == 0:
        tmp = state_dir / "latest.json.tmp"
        tmp.write_text(json.dumps({"step": step, "tag": tag}))
        tmp.replace(state_dir / "latest.json")
        prune_states(state_dir, keep)
    dist.barrier()


def prune_states(state_dir: Path, keep: int) -> list[str]:
    """Remove all but the ``keep`` newest ``step_*`` states, never the one ``latest.json`` names; returns the
    removed tags. Called after the marker naming the newest state was atomically replaced, so a kill at any
    point leaves ``latest.json`` naming a complete state."""
    import shutil

    latest = json.loads((state_dir / "latest.json").read_text())["tag"]
    states = sorted(
        (p for p in state_dir.glob("step_*") if p.is_dir() and p.name[5:].isdigit()),
        key=lambda p: int(p.name[5:]),
    )
    removed = [p.name for p in states[:-keep] if p.name != latest]
    for name in removed:
        shutil.rmtree(state_dir / name)
    if removed:
        log.info("removed old training states %s (keep_checkpoints=%d)", removed, keep)
    return removed


def drop_torn_metrics_line(path: Path) -> bool:
    """Cut a last line of ``metrics.jsonl`` that a kill or a full disk left without its newline (it would make
    every later read fail once the next step appends after it); True if one was dropped, with a warning."""
    if not path.is_file():
        return False
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return False
    keep = data[: data.rfind(b"\n") + 1]
    log.warning(
        "%s: dropped a torn last line (%d bytes) left by an interrupted write", path, len(data) - len(keep)
    )
    with open(path, "r+b") as f:
        f.truncate(len(keep))
    return True


def _save_hf(engine, processor, final: Path, job: GRPOJob, rank: int) -> None:
    """HF checkpoint of the trained policy, written by rank 0 to a temp dir and renamed (never half-written).

    Every rank calls this: under ZeRO-3 each rank holds a partition of every parameter (rank 0's module
    alone has empty tensors), so all ranks join the gather of the full weights, as for a weight push.
    """
    import shutil

    from visplay.checkpoints import model_version

    with full_weights(engine):
        if rank != 0:
            return
        tmp = final.with_name(final.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        engine.module.save_pretrained(tmp, safe_serialization=True)  # inside the gather: full tensors
    processor.save_pretrained(tmp)
    version = model_version(tmp)
    (tmp / "visplay_train.json").write_text(
        json.dumps(
            {
                "role": job.role,
                "base": job.checkpoint,
                "base_version": job.version,
                "version": version,
                "steps": job.grpo.steps,
            }
        )
    )
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)


def _log_metrics(job: GRPOJob, metrics: dict[str, float], step: int) -> None:
    """Append the step's metrics to ``<out_dir>/metrics.jsonl`` (read back by visplay.report) and MLflow."""
    with open(Path(job.out_dir) / METRICS_FILE, "a") as f:
        f.write(json.dumps({"step": step, **{k: float(v) for k, v in metrics.items()}}) + "\n")
    if job.mlflow_run_id is None:
        return
    import mlflow

    if job.mlflow_uri:
        mlflow.set_tracking_uri(job.mlflow_uri)
    mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step, run_id=job.mlflow_run_id)


def _fmt(metrics: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()))
