"""GRPO learns a verifiable reward on Ray Train + DeepSpeed (2 CPU workers, gloo, ZeRO-3, as the GPU config)
with a real vLLM rollout actor, and everything it does is visible: weights, the rollout engine, MLflow.

The toy task: a multiple-choice Reasoner prompt about an image; reward 1 when the ``\\boxed{}`` answer is the
letter "B", else 0. The bootstrapped model answers multiple-choice prompts with a letter (its warm-up data
has them), "B" among others but far from always, so groups carry reward variance to learn from. One phase of
STEPS steps (AdamW lr 3e-4, KL 0.05 to the starting weights; measured: without the KL anchor, at lr 1e-3 to
2e-3, the reward rose within 7-10 steps and then collapsed), then:
  * the mean reward of the last WINDOW steps is at least 0.25 above that of the first WINDOW steps;
  * the parameters changed and the final HF checkpoint has a new version id; it is gathered from the ZeRO-3
    partitions (each rank holds a slice of every weight) and a transformers forward of it gives the engine's
    log-probs within 1e-5 (both fp32), the engine holding the trainer's last push;
  * the rollout engine's process is SIGKILLed after step KILL_AFTER: Ray restarts it with its constructor's
    (base) weights, the trainer sees the stale version on the rollouts (or the broadcast that fails on
    the dead member), pushes its current weights again and the phase finishes, with ``engine_restarts``
    counting it; afterwards the engine holds the trainer's last push (its version names the last step) and
    computes with exactly the saved weights (the log-prob check above). Pushes go by collective broadcast
    (gloo) from the trainer's rank 0 until the restart, through the object store after it;
  * MLflow holds every per-step metric for every step, and the checkpoint as an artifact.

The Questioner's and Reasoner's own rewards in the loop (frozen reasoner votes, silver labels), and a phase
killed mid-way and resumed, are covered end to end by tests/test_evolve_job.py.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
import ray.cloudpickle
import torch
from safetensors.torch import load_file

from visplay import prompts, tracking
from visplay.checkpoints import model_version
from visplay.config import BroadcastWeightSync, load_config
from visplay.engine.rollout import Rollout, RolloutRequest
from visplay.rewards import extract_boxed
from visplay.train.tasks import StepScore, step_indices
from visplay.train.trainer import train_phase

pytestmark = pytest.mark.slow
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny-cpu.yaml"
TARGET = "b"
STEPS, WINDOW, KILL_AFTER = 24, 4, 4
QUESTION = "What colour is the largest shape? A. red, B. blue, C. green, D. yellow"
# The task below travels to the Ray Train workers by value: they cannot import a test module.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@dataclass
class TargetLetterTask:
    """Prompts: one fixed question per image; reward 1.0 when the boxed answer is TARGET (case-insensitive)."""

    images: list[bytes]
    seed: int = 0

    def requests(self, step: int, per_step: int) -> list[RolloutRequest]:
        prompt = prompts.reasoner_prompt(QUESTION)
        return [
            RolloutRequest(prompt=prompt, image=self.images[i], seed=self.seed * 1_000_003 + step * 1000 + j)
            for j, i in enumerate(step_indices(len(self.images), per_step, step, self.seed))
        ]

    def score(self, step: int, requests: list[RolloutRequest], rollouts: list[Rollout]) -> StepScore:
        rewards = [
            [float((extract_boxed(t) or "").strip().lower() == TARGET) for t in r.texts] for r in rollouts
        ]
        flat = [x for row in rewards for x in row]
        return StepScore(rewards, {"reward_target": sum(flat) / len(flat)})


@pytest.fixture()
def policy_actor(bootstrapped_engine, bootstrapped_model):
    """The shared warm engine, holding the bootstrapped weights (pushed back if a test changed them)."""
    from visplay.engine.rollout import load_checkpoint_into

    load_checkpoint_into([bootstrapped_engine], bootstrapped_model, model_version(bootstrapped_model))
    return bootstrapped_engine


def _kill_after_step(actor, out_dir: Path, killed: list[int]) -> None:
    """SIGKILL the rollout actor's process once the phase has logged KILL_AFTER steps (a crashed engine)."""
    import ray

    pid = ray.get(actor.pids.remote()).actor
    metrics = out_dir / "metrics.jsonl"
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= KILL_AFTER:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            return
        time.sleep(0.2)


def _weights_differ(a: Path, b: Path) -> float:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return max((wa[k] - wb[k]).abs().max().item() for k in wa if k in wb)


def test_toy_reward_rises_and_the_phase_is_synced_and_logged(
    policy_actor, bootstrapped_model, unlabeled_corpus, tmp_path, ray_local
):
    cfg = load_config(CONFIG, [f"out_dir={tmp_path}", "ray.train_workers=2"])
    images = [p.read_bytes() for p in sorted(Path(unlabeled_corpus).rglob("*.png"))]
    grpo = cfg.reasoner_grpo.model_copy(
        update={
            "steps": STEPS,
            "prompts_per_step": 4,
            "group_size": 8,
            "lr": 3e-4,
            "kl_coef": 0.05,
            "weight_sync": BroadcastWeightSync(timeout_s=60),  # a broadcast to a killed engine fails in 60 s
            "mini_batch_size": 16,  # 32 rollouts a step: two updates, the second off-policy
            "zero_stage": 3,  # the loop job test runs the default, ZeRO-2
        }
    )
    killed: list[int] = []
    killer = threading.Thread(
        target=_kill_after_step, args=(policy_actor, tmp_path / "toy", killed), daemon=True
    )
    killer.start()
    tracking.setup(cfg)
    with tracking.run("toy-grpo") as run_id:
        result = train_phase(
            cfg, role="toy", task=TargetLetterTask(images), checkpoint=str(bootstrapped_model),
            version=model_version(bootstrapped_model), grpo=grpo, sampling=cfg.generation.reasoner_sampling,
            out_dir=tmp_path / "toy", rollout_actors=[policy_actor], mlflow_uri=tracking.tracking_uri(cfg),
            mlflow_run_id=run_id,
        )  # fmt: skip
    assert result is not None and result.steps == STEPS
    killer.join(timeout=1)
    assert killed, "the rollout engine was not killed"
    restarts = [m["engine_restarts"] for m in result.step_metrics]
    assert sum(restarts) >= 1 and all(r == 0 for r in restarts[: KILL_AFTER - 1]), restarts
    assert ray_local.get(policy_actor.pids.remote()).actor != killed[0]  # a restarted process serves now

    # It learned: reward of the last WINDOW steps vs the first WINDOW steps (the figure is printed with -s).
    curve = [m["reward_target"] for m in result.step_metrics]
    assert len(curve) == STEPS
    first, last = sum(curve[:WINDOW]) / WINDOW, sum(curve[-WINDOW:]) / WINDOW
    print(f"\ntoy reward: first {WINDOW} steps {first:.3f}, last {WINDOW} steps {last:.3f}; curve {curve}")
    assert last >= first + 0.25, curve
    # The PPO ratio is real: each step's second update sees a policy the first one moved.
    clip = [m["clip_frac"] for m in result.step_metrics]
    assert max(clip) > 0, clip

    # Parameters changed, and the final checkpoint is a loadable HF directory with a new version.
    assert _weights_differ(Path(result.checkpoint), Path(bootstrapped_model)) > 0
    assert result.version != model_version(bootstrapped_model)
    # The rollout engine received the trained weights (the last push names the last step).
    assert ray_local.get(policy_actor.version.remote()).endswith(f"toy-step{STEPS}")
    # The saved weights are the trained ones in full (not rank 0's empty ZeRO-3 partitions): the engine,
    # which holds the last push, and a transformers forward of final/ agree on a boxed answer's log-probs.
    from hf_logprobs import hf_sequence_logprobs, max_abs_diff
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    processor = AutoProcessor.from_pretrained(result.checkpoint)
    trained = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        result.checkpoint, dtype=torch.float32
    ).eval()
    prompt, tokens = (
        prompts.reasoner_prompt(QUESTION),
        processor.tokenizer.encode("\\boxed{B}", add_special_tokens=False),
    )
    engine_logp = ray_local.get(policy_actor.sequence_logprobs.remote(prompt, images[0], tokens))
    assert (
        max_abs_diff(engine_logp, hf_sequence_logprobs(processor, trained, prompt, images[0], tokens)) < 1e-5
    )
    # MLflow holds per-step metrics of every kind and the checkpoint artifact.
    client = mlflow.MlflowClient()
    for key in ["reward_mean", "reward_target", "kl", "clip_frac", "approx_kl", "entropy", "response_length",
                "zero_variance_group_share", "update_skipped", "engine_restarts", "time_gen", "time_reward", "time_update", "time_sync"]:  # fmt: skip
        history = client.get_metric_history(run_id, key)
        assert sorted(m.step for m in history) == list(range(1, STEPS + 1)), key
    # ... and where the checkpoint is, not a copy of its weights (15 GB at 7B).
    artifacts = [a.path for a in client.list_artifacts(run_id, "checkpoint")]
    assert artifacts == ["checkpoint/config.json"], artifacts
    assert client.get_run(run_id).data.tags["location.checkpoint"] == str(Path(result.checkpoint).resolve())
