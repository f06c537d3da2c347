"""Session-wide fixtures: one local Ray, one tiny model, one bootstrapped model, one corpus per test run.

Building these costs minutes on 2 cores (vLLM engines cost more), so every slow test shares them.
They are built lazily: a run of only the fast tests (`pytest -m "not slow"`) builds nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Keep Ray quiet and local in tests; vLLM engines run on the CPU build.
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray shared by every test that needs one (4 logical CPUs: engine actors mostly wait)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """The offline tiny random Qwen2.5-VL (default spec, seed 0)."""
    from visplay.world.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def bootstrapped_model(tiny_model, tmp_path_factory) -> Path:
    """The tiny model after the labeled warm-up: it writes parseable questions and \\boxed{} answers."""
    from visplay.world.bootstrap import warm_up
    from visplay.world.corpus import make_corpus

    labeled = make_corpus(tmp_path_factory.mktemp("labeled"), n=48, seed=101, split="bootstrap")
    out = tmp_path_factory.mktemp("models") / "bootstrapped"
    warm_up(tiny_model, labeled.out_dir, out, seed=0)
    return out


@pytest.fixture(scope="session")
def unlabeled_corpus(tmp_path_factory) -> Path:
    """A small synthetic unlabeled split (its images/ folder), disjoint from the labeled one."""
    from visplay.world.corpus import make_corpus

    return Path(make_corpus(tmp_path_factory.mktemp("unlabeled"), n=8, seed=202, split="train").images_dir)


@pytest.fixture(scope="session")
def bootstrapped_engine(ray_local, bootstrapped_model):
    """One rollout actor (configs/tiny-cpu.yaml's ``rollout_engine``: vLLM in the actor's process, taking two
    images per prompt for the evaluation test's multi-image question) holding the bootstrapped model, shared
    by the tests that need a warm engine (an engine start costs about a minute). A test that changes its
    weights puts the bootstrapped ones back (a push: milliseconds)."""
    from visplay.checkpoints import model_version
    from visplay.config import load_config
    from visplay.engine.rollout import start_rollout_actors

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "tiny-cpu.yaml", [])
    engine = cfg.rollout_engine.model_copy(update={"max_images_per_prompt": 2})
    (actor,) = start_rollout_actors(
        bootstrapped_model, model_version(bootstrapped_model), engine, cfg.seed, count=1
    )
    yield actor
    ray_local.kill(actor)
