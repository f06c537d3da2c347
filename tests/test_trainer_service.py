"""The job's long-lived GRPO worker group (visplay.train.service) on Ray Train + DeepSpeed, 2 CPU workers.

One TrainerService takes four one-step phases in a row, as the loop job gives it phases:
  * phases 1 and 2 run in the same worker processes (rank 0's pid, written by the task, is the same), and
    phase 2 starts fast: its ``time_setup`` (command to first step: load, DeepSpeed init, reference) is
    under SETUP_LIMIT_S, where a new TorchTrainer per phase took about 55 s on these machines;
  * phase 3's task raises in ``score`` on rank 0 on its first try: Ray Train fails the group, the service
    starts a new one, which gets the same phase again and finishes it (a new pid);
  * phase 4 runs on that new group.
A phase that fails on every try (``PhaseFailed``) is tested on the queue alone, in tests/test_phase_queue.py.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import ray.cloudpickle

from visplay import prompts
from visplay.checkpoints import model_version
from visplay.config import load_config
from visplay.engine.rollout import Rollout, RolloutRequest
from visplay.train.service import TrainerService
from visplay.train.tasks import StepScore, step_indices
from visplay.train.trainer import train_phase

pytestmark = pytest.mark.slow
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny-cpu.yaml"
SETUP_LIMIT_S = 5.0
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the tasks travel to the workers by value


@dataclass
class PidTask:
    """One question per image; appends rank 0's pid to ``pid_file`` when asked for prompts (once or more a
    step); with ``fail``, ``score`` raises on the phase's first try (and records its pid); reward: the
    answer's length parity (any reward with variance will do)."""

    images: list[bytes]
    pid_file: str
    fail: bool = False

    def requests(self, step: int, per_step: int) -> list[RolloutRequest]:
        with open(self.pid_file, "a") as f:
            f.write(f"{os.getpid()}\n")
        prompt = prompts.reasoner_prompt("How many shapes are there?")
        return [
            RolloutRequest(prompt=prompt, image=self.images[i], seed=step * 1000 + j)
            for j, i in enumerate(step_indices(len(self.images), per_step, step, 0))
        ]

    def score(self, step: int, requests: list[RolloutRequest], rollouts: list[Rollout]) -> StepScore:
        failed = Path(self.pid_file + ".failed")
        if self.fail and not failed.exists():  # the first try only, as a worker that crashes once
            failed.write_text(f"{os.getpid()}\n")
            raise ValueError("the task's scorer broke on purpose")
        rewards = [[float(len(t) % 2) for t in r.texts] for r in rollouts]
        return StepScore(rewards, {})


def _pids(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()]


def test_phases_share_one_worker_group_and_a_failed_try_is_retried_in_a_new_one(
    bootstrapped_engine, bootstrapped_model, unlabeled_corpus, tmp_path, ray_local
):
    from visplay.engine.rollout import load_checkpoint_into

    cfg = load_config(CONFIG, [f"out_dir={tmp_path}", "ray.train_workers=2"])
    grpo = cfg.reasoner_grpo.model_copy(update={"steps": 1, "prompts_per_step": 2, "group_size": 2})
    images = [p.read_bytes() for p in sorted(Path(unlabeled_corpus).rglob("*.png"))][:4]

    def phase(name: str, trainer: TrainerService, fail: bool = False):
        return train_phase(
            cfg, role=name, task=PidTask(images, str(tmp_path / f"{name}.pids"), fail),
            checkpoint=str(bootstrapped_model), version=model_version(bootstrapped_model), grpo=grpo,
            sampling=cfg.generation.reasoner_sampling, out_dir=tmp_path / name,
            rollout_actors=[bootstrapped_engine], trainer=trainer,
        )  # fmt: skip

    try:
        with TrainerService(cfg, tmp_path / "ray_train", attempts=2) as trainer:
            for name in ("one", "two"):
                result = phase(name, trainer)
                assert result is not None and result.steps == 1
            [pid_one], [pid_two] = set(_pids(tmp_path / "one.pids")), set(_pids(tmp_path / "two.pids"))
            assert pid_one == pid_two, "phase two ran in a new worker process"
            [step] = [
                json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
            ]
            print(f"phase two: {step['time_setup']:.2f} s from command to first step")
            assert 0 < step["time_setup"] < SETUP_LIMIT_S, step

            result = phase("three", trainer, fail=True)  # fails once, then resumes in a new group
            assert result is not None and result.steps == 1
            [failed_in] = _pids(tmp_path / "three.pids.failed")
            assert failed_in == pid_one, "the first try ran in the group of phases one and two"
            retried_in = set(_pids(tmp_path / "three.pids")) - {pid_one}
            assert len(retried_in) == 1, "the second try ran in one new group"

            assert phase("four", trainer).steps == 1
            assert set(_pids(tmp_path / "four.pids")) == retried_in, "phase four ran in the new group"
    finally:  # the shared engine gets the bootstrapped weights back for the tests after this one
        load_checkpoint_into([bootstrapped_engine], bootstrapped_model, model_version(bootstrapped_model))
