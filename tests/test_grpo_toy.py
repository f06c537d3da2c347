"""GRPO learns: a verifiable toy reward rises on the tiny model (real vLLM rollouts, Ray Train + DeepSpeed).

The task: a multiple-choice Reasoner prompt about an image; reward 1 when the \\boxed{} answer is the
letter "B", else 0. The bootstrapped model answers multiple-choice questions with a letter (its warm-up
data has them), "B" among others but far from always, so groups have reward variance to learn from. The
test compares the mean reward of the first and last steps of one phase.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from visplay import prompts
from visplay.config import load_config
from visplay.rewards import extract_boxed
from visplay.train.rollout import Rollout, RolloutRequest
from visplay.train.tasks import StepScore, step_indices
from visplay.train.trainer import train_phase
from visplay.world.tiny_model import model_version

pytestmark = pytest.mark.slow
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny-cpu.yaml"
TARGET = "b"
STEPS, WINDOW = 24, 4


@dataclass
class TargetWordTask:
    """Prompts: one question per image; reward: 1.0 when the boxed answer is TARGET (case-insensitive)."""

    images: list[bytes]
    seed: int = 0

    def requests(self, step: int, per_step: int) -> list[RolloutRequest]:
        prompt = prompts.reasoner_prompt(
            "What colour is the largest shape? A. red, B. blue, C. green, D. yellow"
        )
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


def test_toy_reward_rises_over_a_few_dozen_steps(
    policy_actor, bootstrapped_model, unlabeled_corpus, tmp_path
):
    cfg = load_config(CONFIG, [f"out_dir={tmp_path}", "ray.train_workers=1", "ray.cpus_per_train_worker=1"])
    images = [p.read_bytes() for p in sorted(Path(unlabeled_corpus).rglob("*.png"))]
    grpo = cfg.reasoner_grpo.model_copy(
        update={
            "steps": STEPS,
            "prompts_per_step": 4,
            "group_size": 8,
            "lr": 2e-3,
            "kl_coef": 0.0,
            "save_every": 1000,
        }
    )
    result = train_phase(
        cfg, role="toy", task=TargetWordTask(images), checkpoint=str(bootstrapped_model),
        version=model_version(bootstrapped_model), grpo=grpo, sampling=cfg.generation.reasoner_sampling,
        out_dir=tmp_path / "toy", rollout_actors=[policy_actor],
    )  # fmt: skip
    curve = [m["reward_target"] for m in result.step_metrics]
    assert len(curve) == STEPS
    first, last = sum(curve[:WINDOW]) / WINDOW, sum(curve[-WINDOW:]) / WINDOW
    print(
        f"\ntoy reward: first {WINDOW} steps {first:.3f}, last {WINDOW} steps {last:.3f}; curve {[round(c, 2) for c in curve]}"
    )
    assert last >= first + 0.25, curve
