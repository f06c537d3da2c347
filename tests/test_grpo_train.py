"""GRPO for both roles on Ray Train + DeepSpeed (2 CPU workers, gloo, ZeRO-2), with real vLLM rollout actors.

One policy rollout actor and one frozen-reasoner actor (conftest's ``rollout_actors``) serve every GRPO test:
between tests the policy actor gets the starting weights pushed back (a push costs milliseconds; an engine
start a minute).

  * questioner: 2 steps; parameters change, the rollout engine holds the trained weights, MLflow has the
    per-step metrics and the checkpoint artifact;
  * the Reasoner role and a GRPO phase killed mid-way and resumed are covered end to end by
    tests/test_evolve_job.py (the loop job is killed during iteration 2's Questioner phase and resubmitted).
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from safetensors.torch import load_file

from visplay import tracking
from visplay.config import load_config
from visplay.train.tasks import QuestionerTask
from visplay.train.trainer import train_phase
from visplay.world.tiny_model import model_version

pytestmark = pytest.mark.slow
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny-cpu.yaml"


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    out = tmp_path_factory.mktemp("grpo")
    return load_config(CONFIG, [f"out_dir={out}", "generation.answers_per_question=4"])


@pytest.fixture(scope="module")
def images(unlabeled_corpus):
    return [p.read_bytes() for p in sorted(Path(unlabeled_corpus).rglob("*.png"))]


def _mlflow_run(cfg, name):
    tracking.setup(cfg)
    return tracking.run(name)


def _weights_differ(a: Path, b: Path) -> float:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return max((wa[k] - wb[k]).abs().max().item() for k in wa if k in wb)


def test_questioner_grpo_updates_weights_syncs_engine_and_logs(
    cfg, rollout_actors, policy_actor, bootstrapped_model, images, tmp_path, ray_local
):
    _, reasoner = rollout_actors
    grpo = cfg.questioner_grpo.model_copy(
        update={"steps": 2, "prompts_per_step": 2, "group_size": 4, "save_every": 2}
    )
    task = QuestionerTask(
        images=images, reasoner=reasoner, reasoner_sampling=cfg.generation.reasoner_sampling,
        answers_per_question=4, rewards=cfg.rewards, seed=0,
    )  # fmt: skip
    with _mlflow_run(cfg, "questioner-test") as run_id:
        result = train_phase(
            cfg, role="questioner", task=task, checkpoint=str(bootstrapped_model),
            version=model_version(bootstrapped_model), grpo=grpo, sampling=cfg.generation.questioner_sampling,
            out_dir=tmp_path / "q", rollout_actors=[policy_actor], mlflow_uri=tracking.tracking_uri(cfg),
            mlflow_run_id=run_id,
        )  # fmt: skip
    assert result is not None and result.steps == 2
    # Parameters changed, and the final checkpoint is a loadable HF directory with a new version.
    assert _weights_differ(Path(result.checkpoint), Path(bootstrapped_model)) > 0
    assert result.version != model_version(bootstrapped_model)
    # The rollout engine received the trained weights (the last push names step 2).
    assert ray_local.get(policy_actor.version.remote()).endswith("questioner-step2")
    # MLflow holds per-step metrics of every kind and the checkpoint artifact.
    client = mlflow.MlflowClient()
    for key in ["reward_mean", "reward_valid", "reward_uncertainty", "kl", "clip_frac", "entropy", "response_length",
                "zero_variance_group_share", "time_gen", "time_reward", "time_update", "time_sync"]:  # fmt: skip
        history = client.get_metric_history(run_id, key)
        assert sorted(m.step for m in history) == [1, 2], key
    artifacts = [a.path for a in client.list_artifacts(run_id, "checkpoint")]
    assert "checkpoint/model.safetensors" in artifacts
