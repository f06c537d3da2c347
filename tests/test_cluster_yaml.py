"""cluster.yaml is a valid Ray cluster-launcher config, and what it names exists and fits the GPU config."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import jsonschema
import ray.autoscaler
import yaml

from visplay.config import load_config

REPO = Path(__file__).resolve().parents[1]
CLUSTER = yaml.safe_load((REPO / "cluster.yaml").read_text())
TEXT = (REPO / "cluster.yaml").read_text()


def test_cluster_yaml_matches_rays_launcher_schema():
    schema_path = Path(os.path.dirname(ray.autoscaler.__file__)) / "ray-schema.json"
    jsonschema.validate(CLUSTER, json.loads(schema_path.read_text()))
    types = CLUSTER["available_node_types"]
    assert CLUSTER["head_node_type"] in types
    workers = [t for name, t in types.items() if name != CLUSTER["head_node_type"]]
    assert workers and all(t["max_workers"] > t["min_workers"] >= 0 for t in workers)  # they autoscale
    assert types[CLUSTER["head_node_type"]]["resources"].get("GPU", 0) == 0  # CPU head


def test_referenced_jobs_and_configs_exist_and_load():
    jobs = set(re.findall(r"jobs/[\w.]+\.py", TEXT))
    configs = set(re.findall(r"configs/[\w.-]+\.yaml", TEXT))
    assert jobs and configs
    for job in jobs:
        assert (REPO / job).is_file(), job
    for config in configs:
        load_config(REPO / config, [])


def test_every_resource_the_gpu_config_asks_for_is_offered_by_a_worker_group():
    cfg = load_config(REPO / "configs" / "qwen2.5-vl-7b-gpu.yaml", [])
    offered = [t["resources"] for t in CLUSTER["available_node_types"].values()]
    engines = [
        cfg.generation.questioner_engine,
        cfg.generation.reasoner_engine,
        cfg.rollout_engine,
        cfg.serve.engine,
    ]
    asks = [{"CPU": e.num_cpus, "GPU": e.num_gpus, **e.resources} for e in engines]
    asks.append(
        {
            "CPU": cfg.ray.cpus_per_train_worker,
            "GPU": cfg.ray.gpus_per_train_worker,
            **cfg.ray.train_worker_resources,
        }
    )
    for ask in asks:
        fits = [node for node in offered if all(node.get(k, 0) >= v for k, v in ask.items() if v)]
        assert fits, f"no node type of cluster.yaml can host {ask}"
