"""The resource plan (visplay/resource_plan.py): every shipped config's plan against a table worked out by
hand, its peak against the hardware it is written for, the fit rule on given resources, and the loop job
stopping within seconds, naming the phase, the actor and the resource, when the local Ray is too small."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from visplay.config import ConfigError, load_config, with_absolute_paths
from visplay.resource_plan import (
    TASK_CPUS,
    DoesNotFit,
    JobPlan,
    Offer,
    check_fit,
    cluster_yaml_offer,
    evaluate_plan,
    evolve_plan,
    generate_plan,
    merge_offers,
    misfits,
    parse_resources,
    serve_plan,
    train_plan,
)

REPO = Path(__file__).resolve().parents[1]
TINY, ONE_NODE, CLUSTER_CFG = (
    REPO / "configs" / name
    for name in ("tiny-cpu.yaml", "qwen2.5-vl-7b-1node.yaml", "qwen2.5-vl-7b-gpu.yaml")
)
CLUSTER_YAML = yaml.safe_load((REPO / "cluster.yaml").read_text())
HELD = ("GRPO train workers", "Ray Train controller", "GRPO phase queue")
ENGINES = ("rollout engines (questioner)", "rollout engines (reasoner)")
ZERO = {
    "Ray Train controller", "GRPO phase queue", "image claims", "Serve controller", "Serve HTTP proxy",
    "Serve ingress (request checks)",
}  # fmt: skip


def actors(plan: JobPlan) -> dict[str, dict[str, tuple[int, dict[str, float]]]]:
    """phase -> actor -> (count, what each asks), the zero-resource actors left out."""
    return {p.name: {d.name: (d.count, d.each) for d in p.demands if d.name not in ZERO} for p in plan.phases}


def peaks(plan: JobPlan) -> dict[str, dict[str, float]]:
    return {p.name: {k: round(v, 6) for k, v in p.peak.items()} for p in plan.phases}


def test_tiny_cpu_plan_matches_the_hand_table():
    plan = evolve_plan(load_config(TINY))
    # Held all job: 2 train workers x 0.5 CPU (ray.*), 1 rollout engine per role x 1 CPU (rollout_engine).
    # reuse_rollout_engines is on: no pools; start, evaluate and generate add one 1-CPU Ray Data task.
    held = {
        "GRPO train workers": (2, {"CPU": 0.5}),
        ENGINES[0]: (1, {"CPU": 1.0}),
        ENGINES[1]: (1, {"CPU": 1.0}),
    }
    task = {"largest Ray Data task": (1, {"CPU": 1.0})}
    assert actors(plan) == {
        "start": held | task, "evaluate": held | task, "train_questioner": held, "generate": held | task,
        "train_reasoner": held,
    }  # fmt: skip
    # held: 2 x 0.5 + 1 + 1 = 3 CPU; with the task 4.
    assert peaks(plan) == {
        "start": {"CPU": 4}, "evaluate": {"CPU": 4}, "train_questioner": {"CPU": 3}, "generate": {"CPU": 4},
        "train_reasoner": {"CPU": 3},
    }  # fmt: skip
    assert plan.peak == {"CPU": 4}
    # Serve: serve.max_replicas 1 x serve.engine.num_cpus 1.
    assert actors(serve_plan(load_config(TINY))) == {
        "serve": {"Serve replicas (Reasoner engine)": (1, {"CPU": 1.0})}
    }


def test_one_node_plan_matches_the_hand_table_and_fills_eight_gpus():
    plan = evolve_plan(load_config(ONE_NODE))
    # 4 train workers x (8 CPU, 1 GPU); rollout_engine.per_role 2, so 2 engines per role x (4 CPU, 1 GPU);
    # reuse_rollout_engines: generation and evaluation start no pools.
    held = {
        "GRPO train workers": (4, {"CPU": 8.0, "GPU": 1.0}),
        ENGINES[0]: (2, {"CPU": 4.0, "GPU": 1.0}),
        ENGINES[1]: (2, {"CPU": 4.0, "GPU": 1.0}),
    }
    task = {"largest Ray Data task": (1, {"CPU": 1.0})}
    assert actors(plan) == {
        "start": held | task, "evaluate": held | task, "train_questioner": held, "generate": held | task,
        "train_reasoner": held,
    }  # fmt: skip
    # CPU: 4 x 8 + 2 x 4 + 2 x 4 = 48 (+1 with a task); GPU: 4 + 2 + 2 = 8 in every phase.
    assert peaks(plan) == {
        "start": {"CPU": 49, "GPU": 8}, "evaluate": {"CPU": 49, "GPU": 8},
        "train_questioner": {"CPU": 48, "GPU": 8}, "generate": {"CPU": 49, "GPU": 8},
        "train_reasoner": {"CPU": 48, "GPU": 8},
    }  # fmt: skip
    node = {"CPU": 64.0, "GPU": 8.0}  # the target: one 8-GPU node (64 CPUs is the low end of such nodes)
    assert misfits(plan, Offer(node, (node,))) == []
    assert misfits(serve_plan(load_config(ONE_NODE)), Offer(node, (node,))) == []  # 4 x 1 GPU, 4 x 4 CPU
    one_gpu_short = {"CPU": 64.0, "GPU": 7.0}
    (miss,) = misfits(plan, Offer(one_gpu_short, (one_gpu_short,)))
    # start order: 4 train workers (GPU 4), questioner engines (6), reasoner engines: the 8th GPU is missing.
    assert (miss.phase, miss.actor, miss.resource) == ("start", ENGINES[1], "GPU")
    cfg = load_config(ONE_NODE)
    assert cfg.generation.reuse_rollout_engines and cfg.ray.address == "auto"
    assert not cfg.ray.train_worker_resources and not cfg.rollout_engine.resources  # no custom resources
    assert cfg.questioner_grpo.zero_stage == cfg.reasoner_grpo.zero_stage == 3


def test_cluster_plan_matches_the_hand_table_and_fits_cluster_yaml():
    plan = evolve_plan(load_config(CLUSTER_CFG))
    t, e = {"trainer_node": 1.0}, {"engine_node": 1.0}
    held = {
        "GRPO train workers": (8, {"CPU": 8.0, "GPU": 1.0} | t),
        ENGINES[0]: (1, {"CPU": 4.0, "GPU": 1.0} | e),
        ENGINES[1]: (1, {"CPU": 4.0, "GPU": 1.0} | e),
    }
    task = {"largest Ray Data task": (1, {"CPU": 1.0})}
    engine = {"CPU": 4.0, "GPU": 1.0} | e  # every pool's engine
    assert actors(plan) == {
        "start": held | task,
        "evaluate": held | {"eval engine pool": (4, engine)} | task,
        "train_questioner": held,
        "generate": held
        | {"questioner engine pool": (8, engine), "reasoner engine pool": (16, engine)}
        | task,
        "train_reasoner": held,
    }
    # held: CPU 8 x 8 + 2 x 4 = 72, GPU 8 + 2 = 10, trainer_node 8, engine_node 2.
    # evaluate: + 4 engines (CPU 16, GPU 4, engine_node 4) + task (CPU 1) -> CPU 89, GPU 14, engine_node 6.
    # generate: + 8 + 16 = 24 engines (CPU 96, GPU 24, engine_node 24) + task -> CPU 169, GPU 34, engine_node 26.
    held_peak = {"CPU": 72, "GPU": 10, "engine_node": 2, "trainer_node": 8}
    assert peaks(plan) == {
        "start": held_peak | {"CPU": 73},
        "evaluate": {"CPU": 89, "GPU": 14, "engine_node": 6, "trainer_node": 8},
        "train_questioner": held_peak,
        "generate": {"CPU": 169, "GPU": 34, "engine_node": 26, "trainer_node": 8},
        "train_reasoner": held_peak,
    }
    # cluster.yaml at its largest: the head (16 CPU) + gpu_engines x 8 + gpu_trainers x 4 = 12 workers, within
    # max_workers 16: CPU 16 + 12 x 48 = 592, GPU 12 x 8 = 96, engine_node 8 x 8 = 64, trainer_node 4 x 8 = 32.
    offer = cluster_yaml_offer(CLUSTER_YAML)
    assert dict(offer.total) == {"CPU": 592, "GPU": 96, "engine_node": 64, "trainer_node": 32}
    assert misfits(plan, offer) == []
    assert (
        misfits(serve_plan(load_config(CLUSTER_CFG)), offer) == []
    )  # 4 replicas x (4 CPU, 1 GPU, engine_node 1)
    assert load_config(CLUSTER_CFG).ray.cluster_config == "cluster.yaml"
    resolved = with_absolute_paths(load_config(CLUSTER_CFG), base=REPO)  # what a job reads: the repo's file
    assert resolved.ray.cluster_config == str(REPO / "cluster.yaml")


def test_the_cluster_config_on_one_8_gpu_node_names_the_engine_that_would_wait():
    """The hang of the issue: the trainer takes all 8 GPUs first, the first rollout engine never starts."""
    plan = evolve_plan(load_config(CLUSTER_CFG))
    node = {"CPU": 96.0, "GPU": 8.0, "engine_node": 8.0, "trainer_node": 8.0}
    found = misfits(plan, Offer(node, (node,), "one 8-GPU node"))
    # start: train workers GPU 8 (fits), then the questioner engine: GPU 9 > 8. Every later phase fails at
    # the same held engine first, so it is named once, in the first phase.
    assert [(m.phase, m.actor, m.resource) for m in found] == [("start", ENGINES[0], "GPU")]
    assert found[0].message == (
        "phase start, rollout engines (questioner): would wait forever for GPU: the phase needs GPU 10 "
        "(GRPO train workers 8 x 1, rollout engines (questioner) 1 x 1, rollout engines (reasoner) 1 x 1), "
        "the cluster offers 8"
    )
    with pytest.raises(
        DoesNotFit, match=r"the evolve job cannot run on one 8-GPU node, which offers CPU 96, GPU 8, "
    ):
        check_fit(plan, Offer(node, (node,), "one 8-GPU node"))


def test_a_custom_resource_no_node_has_is_named_per_actor():
    plan = evolve_plan(load_config(CLUSTER_CFG))
    node = {"CPU": 96.0, "GPU": 8.0}  # no engine_node / trainer_node
    (miss,) = misfits(plan, Offer(node, (node,)))
    assert (miss.phase, miss.actor, miss.resource) == ("start", "GRPO train workers", "trainer_node")
    assert (
        "each needs trainer_node 1 on one node, and no node has that much (the most on one node: 0)"
        in miss.message
    )


def test_an_actor_whose_resources_are_on_different_nodes_does_not_fit():
    plan = evolve_plan(load_config(TINY, ["rollout_engine.num_gpus=1"]))
    nodes = ({"CPU": 8.0}, {"GPU": 4.0})  # 8 CPUs and 4 GPUs in all, never a CPU and a GPU on one node
    (miss,) = misfits(plan, Offer({"CPU": 8.0, "GPU": 4.0}, nodes))
    assert (miss.actor, miss.resource) == (ENGINES[0], "CPU+GPU")
    assert misfits(plan, Offer({"CPU": 8.0, "GPU": 4.0})) == []  # nodes unknown: only the totals count


def test_the_standalone_jobs_plans_match_the_hand_table():
    cfg = load_config(TINY, ["generation.reasoner_engine.max_actors=3", "rollout_engine.per_role=2"])
    task = {"largest Ray Data task": (1, {"CPU": 1.0})}
    # generate_questions: its own pools at max_actors (questioner 1, reasoner 3; 1 CPU each) + the task.
    assert actors(generate_plan(cfg)) == {
        "generate": {"questioner engine pool": (1, {"CPU": 1.0}), "reasoner engine pool": (3, {"CPU": 1.0})}
        | task
    }
    assert generate_plan(cfg).peak == {"CPU": 5}  # 1 + 3 + 1
    # evaluate: the eval pool (max_actors 1, 1 CPU) + the task.
    assert actors(evaluate_plan(cfg)) == {"evaluate": {"eval engine pool": (1, {"CPU": 1.0})} | task}
    workers = {"GRPO train workers": (2, {"CPU": 0.5})}
    # train_questioner: 2 frozen reasoner engines + workers 2 x 0.5 + 2 questioner engines + the image read.
    assert actors(train_plan(cfg, "questioner")) == {
        "train_questioner": {"frozen reasoner engines": (2, {"CPU": 1.0})} | workers
        | {ENGINES[0]: (2, {"CPU": 1.0})} | task
    }  # fmt: skip
    assert train_plan(cfg, "questioner").peak == {"CPU": 6}  # 2 + 1 + 2 + 1
    # train_reasoner: workers + 2 reasoner engines; its questions are read by the workers (no task).
    assert actors(train_plan(cfg, "reasoner")) == {
        "train_reasoner": workers | {ENGINES[1]: (2, {"CPU": 1.0})}
    }
    assert train_plan(cfg, "reasoner").peak == {"CPU": 3}


def test_pools_count_at_max_actors_and_evaluation_off_drops_its_phase():
    cfg = load_config(
        TINY,
        ["generation.reuse_rollout_engines=false", "generation.reasoner_engine.max_actors=3",
         "generation.reasoner_engine.min_actors=2", "eval.during_evolve=false"],
    )  # fmt: skip
    plan = evolve_plan(cfg)
    assert [p.name for p in plan.phases] == ["start", "train_questioner", "generate", "train_reasoner"]
    # generate: held 3 CPU + questioner pool 1 x 1 + reasoner pool 3 x 1 (max_actors) + task 1 = 8.
    assert plan.peak == {"CPU": 8} and plan.peak_phase("CPU") == "generate"


def test_tiny_plan_fits_its_local_ray_and_fails_on_fewer_cpus():
    cfg = load_config(TINY)
    plan = evolve_plan(cfg)
    assert misfits(plan, Offer({"CPU": float(cfg.ray.num_cpus)})) == []  # 4 <= ray.num_cpus 5
    found = misfits(plan, Offer({"CPU": 2.0}, source="a 2-CPU Ray"))
    # start order: workers 1 CPU, questioner engine 2, reasoner engine 3 > 2. Later phases name the same one.
    assert [(m.phase, m.actor, m.resource) for m in found] == [("start", ENGINES[1], "CPU")]
    assert found[0].message == (
        "phase start, rollout engines (reasoner): would wait forever for CPU: the phase needs CPU 4 (GRPO train "
        "workers 2 x 0.5, rollout engines (questioner) 1 x 1, rollout engines (reasoner) 1 x 1, largest Ray "
        "Data task 1 x 1), the cluster offers 2"
    )
    (task_short,) = misfits(plan, Offer({"CPU": 3.0}))  # every actor fits; the phase's task does not
    assert (task_short.phase, task_short.actor) == ("start", "largest Ray Data task")


def test_cluster_yaml_offer_keeps_within_the_clusters_max_workers():
    cluster = {
        "max_workers": 3,
        "head_node_type": "head",
        "available_node_types": {
            "head": {"resources": {"CPU": 4}, "max_workers": 0},
            "big": {"resources": {"CPU": 8, "GPU": 8}, "max_workers": 2},
            "small": {"resources": {"CPU": 32, "GPU": 4}, "max_workers": 2},
            "off": {"resources": {"CPU": 999}, "max_workers": 0},
        },
    }
    offer = cluster_yaml_offer(cluster)
    # GPU: 2 big (16) + 1 small (4) = 20 within 3 workers; CPU: 2 small (64) + 1 big (8) + head 4 = 76;
    # "off" may add no node.
    assert dict(offer.total) == {"CPU": 76, "GPU": 20}
    assert offer.nodes == ({"CPU": 4}, {"CPU": 8, "GPU": 8}, {"CPU": 32, "GPU": 4})
    now = Offer({"CPU": 100.0, "GPU": 0.0, "memory": 1e9}, ({"CPU": 100.0},), "now")
    merged = merge_offers(now, offer)
    assert dict(merged.total) == {"CPU": 100, "GPU": 20, "memory": 1e9} and len(merged.nodes) == 4


def test_parse_resources():
    assert parse_resources("CPU=64, GPU=8,engine_node=0.5") == {"CPU": 64.0, "GPU": 8.0, "engine_node": 0.5}
    for bad in ("CPU", "=3", "GPU=eight"):
        with pytest.raises(ValueError, match="is not NAME=NUMBER"):
            parse_resources(bad)


def test_rollout_engines_are_a_count_per_role_not_a_pool():
    assert load_config(TINY).rollout_engine.per_role == 1
    with pytest.raises(ConfigError, match=r"rollout_engine\.max_actors: .*set rollout_engine\.per_role"):
        load_config(TINY, ["rollout_engine.max_actors=2"])
    with pytest.raises(ConfigError, match=r"rollout_engine\.per_role"):
        load_config(TINY, ["rollout_engine.per_role=0"])
    plan = evolve_plan(load_config(TINY, ["rollout_engine.per_role=3"]))
    assert {d.name: d.count for d in plan.phases[0].demands if d.name in ENGINES} == dict.fromkeys(ENGINES, 3)


def test_plan_command_prints_the_plan_and_checks_an_offer(capsys):
    from visplay.cli import main

    assert main(["plan", "--config", str(TINY), "--offer", "CPU=8"]) == 0
    out = capsys.readouterr().out
    assert "job peak: CPU 4 (start)" in out and "fits the node of --offer" in out
    assert main(["plan", "--config", str(TINY), "--job", "evolve", "--offer", "CPU=2"]) == 1
    out = capsys.readouterr().out
    assert (
        "DOES NOT FIT" in out and "phase start, rollout engines (reasoner): would wait forever for CPU" in out
    )
    assert main(["plan", "--config", str(TINY), "--offer", "CPU"]) == 2


def test_the_largest_task_is_the_largest_any_pipeline_stage_asks():
    from visplay.generation import pipeline

    assert max(pipeline._LIGHT["num_cpus"], pipeline._FORWARD["num_cpus"]) <= TASK_CPUS == 1.0


def test_frozen_answers_are_spread_over_the_engines_in_request_order(monkeypatch):
    from visplay.engine import rollout

    def fake(actor, requests, sampling, n, checkpoint, version):
        return [rollout.Rollout([f"{actor}:{r.seed}"], [[r.seed]], [], version) for r in requests], len(actor)

    monkeypatch.setattr(rollout, "generate_frozen", fake)
    requests = [rollout.RolloutRequest("p", b"", seed) for seed in range(5)]
    out, reloads = rollout.generate_frozen_on(["a", "bb", "ccc"], requests, None, 1, "ckpt", "v")
    # request i -> engine i % 3: a gets 0 and 3, bb 1 and 4, ccc 2; reloads 1 + 2 + 3.
    assert [r.texts[0] for r in out] == ["a:0", "bb:1", "ccc:2", "a:3", "bb:4"] and reloads == 6
    out, reloads = rollout.generate_frozen_on(["a", "bb", "ccc"], requests[:1], None, 1, "ckpt", "v")
    assert [r.texts[0] for r in out] == ["a:0"] and reloads == 1  # idle engines are not asked


@pytest.mark.e2e  # about a minute of imports and a Ray start; the check itself: the live-Ray test below
def test_a_loop_job_that_cannot_fit_the_local_ray_stops_within_seconds(tmp_path):
    """The tiny config on a 2-CPU local Ray: the job stops before starting anything, naming the phase, the
    actor and the resource (a run that fits starts as before: tests/test_evolve_job.py)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(REPO / "jobs" / "evolve.py"), "--config", str(TINY), f"out_dir={tmp_path}",
         "ray.num_cpus=2"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    assert done.returncode == 1, done.stdout + done.stderr[-3000:]
    assert "phase start, rollout engines (reasoner): would wait forever for CPU" in done.stderr
    assert "the cluster offers 2" in done.stderr
    assert not (tmp_path / "tiny-cpu" / "ray_train").exists()  # the trainer never started
    assert not list((tmp_path / "tiny-cpu").glob("iter_*"))  # nor any phase
    assert seconds < 120, f"took {seconds:.0f} s"  # imports and a local Ray start; nothing waits


@pytest.mark.slow
def test_a_fitting_plan_passes_the_check_on_a_live_ray(ray_local):
    from visplay import runtime

    cfg = load_config(TINY)  # peak CPU 4 = the shared local Ray's 4 CPUs (tests/conftest.py)
    runtime.stop_unless_fits(cfg, evolve_plan(cfg))
    wider = load_config(TINY, ["ray.train_workers=4"])  # 4 x 0.5 + 2 engines + task = 5 > 4
    started = time.perf_counter()
    with pytest.raises(SystemExit, match="phase start, largest Ray Data task: would wait forever for CPU"):
        runtime.stop_unless_fits(wider, evolve_plan(wider))
    assert time.perf_counter() - started < 5  # a comparison, not a wait for resources that never come
    missing = load_config(TINY, ["ray.cluster_config=no/such/cluster.yaml"])
    with pytest.raises(SystemExit, match="ray.cluster_config: no file at .*no/such/cluster.yaml"):
        runtime.stop_unless_fits(missing, evolve_plan(missing))
    runtime.stop_unless_fits(wider.model_copy(update={"ray": wider.ray.model_copy(update={"fit_check": False})}),
                             evolve_plan(wider))  # fmt: skip
