"""jobs/evolve.py end to end, launched the way users launch it: `ray job submit` to a Ray cluster.

A head node on loopback (`ray start --head`, its own ports and temp dir), then:
  1. submit evolve for 2 iterations with tiny step counts; once iteration 2's Questioner GRPO has saved
     its first step, `ray job stop` kills the job (driver, engines, trainer workers);
  2. resubmit the same command; it must end SUCCEEDED;
  3. iteration 1's phases were not redone (their markers are byte-identical), iteration 2's Questioner
     phase resumed at step 2 (each step's metrics once), history/curves were written, and MLflow holds
     the lineage: every phase run under an iteration run under an evolve run, iteration 1's phases once.
The cluster is stopped afterwards, whatever happened.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from safetensors.torch import load_file

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
JOB_TIMEOUT_S = 900


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray(*args: str, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "ray"), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """(env with RAY_ADDRESS for the job CLI, temp dir) of a local head node; stopped after the module."""
    temp = Path("/tmp") / f"vp-ray-{os.getpid()}"  # Ray's socket paths must stay short
    gcs_port, dash_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "RAY_ADDRESS": f"http://127.0.0.1:{dash_port}",
        "RAY_AUTH_MODE": "token",  # Ray's default for new clusters; the CLI then sends ~/.ray/auth_token
    }
    started = _ray(
        "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs_port}", f"--dashboard-port={dash_port}",
        "--dashboard-host=127.0.0.1", "--include-dashboard=true", "--num-cpus=4", f"--temp-dir={temp}",
        "--disable-usage-stats",
        env={k: v for k, v in env.items() if k != "RAY_ADDRESS"},
    )  # fmt: skip
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        yield env, temp
    finally:
        _ray("stop", "--force", env=env, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)


def _submit(env: dict, args: list[str]) -> str:
    """Submit evolve without waiting; returns the submission id."""
    submitted = _ray(
        "job",
        "submit",
        "--no-wait",
        f"--working-dir={REPO}",
        "--",
        "python",
        "jobs/evolve.py",
        *args,
        env=env,
    )
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    match = re.search(r"raysubmit_[A-Za-z0-9]+", submitted.stdout + submitted.stderr)
    assert match, f"no submission id in: {submitted.stdout + submitted.stderr}"
    return match.group(0)


def _status(env: dict, job: str) -> str:
    """The job's status word from `ray job status` (ANSI colours stripped)."""
    done = _ray("job", "status", job, env=env, timeout=120)
    out = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout + done.stderr)
    match = re.search(r"Status for job '[^']+': (\w+)", out)
    if match:  # PENDING / RUNNING
        return match.group(1)
    for phrase, status in (("succeeded", "SUCCEEDED"), ("was stopped", "STOPPED"), ("failed", "FAILED")):
        if f"Job '{job}' {phrase}" in out:  # terminal states are printed as sentences
            return status
    return out.strip()[-300:]


def _logs(env: dict, job: str, tail: int = 6000) -> str:
    done = _ray("job", "logs", job, env=env, timeout=120)
    return (done.stdout + done.stderr)[-tail:]


def _wait(env: dict, job: str, until, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = _status(env, job)
        if until(status):
            return status
        if status in ("FAILED", "STOPPED", "SUCCEEDED"):
            return status
        time.sleep(5)
    return "TIMEOUT"


def test_evolve_survives_a_kill_in_iteration_2_and_resumes_without_redoing(
    cluster, bootstrapped_model, unlabeled_corpus, tmp_path
):
    env, _ = cluster
    out = tmp_path / "runs"
    args = [
        "--config", "configs/tiny-cpu.yaml", f"out_dir={out}", "name=evolve-test", "iterations=2",
        f"models.base={bootstrapped_model}", f"corpus.path={unlabeled_corpus}",
        "generation.questions_per_image=2", "generation.answers_per_question=4",
        "questioner_grpo.steps=6", "questioner_grpo.save_every=1", "reasoner_grpo.steps=2",
        "ray.train_workers=2",
    ]  # fmt: skip
    run_dir = out / "evolve-test"
    first_save = run_dir / "iter_2" / "train_questioner" / "state" / "latest.json"

    # 1. run until iteration 2's Questioner has saved a step, then kill the job.
    job = _submit(env, args)
    deadline, polls = time.monotonic() + JOB_TIMEOUT_S, 0
    while not first_save.is_file() and time.monotonic() < deadline:
        polls += 1
        if polls % 20 == 0:  # `ray job status` costs seconds: ask rarely, watch the file often
            status = _status(env, job)
            assert status in ("PENDING", "RUNNING"), f"job ended early: {status}\n{_logs(env, job)}"
        time.sleep(0.5)
    assert first_save.is_file(), f"iteration 2 never saved a step\n{_logs(env, job)}"
    stopped = _ray("job", "stop", job, env=env, timeout=180)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert _wait(env, job, lambda s: s == "STOPPED", 180) == "STOPPED"
    assert not (run_dir / "iter_2" / "generate" / "DONE.json").exists()
    iter1_markers = {p: p.read_bytes() for p in sorted((run_dir / "iter_1").glob("*/DONE.json"))}
    assert [p.parent.name for p in iter1_markers] == ["generate", "train_questioner", "train_reasoner"]

    # 2. resubmit the same command: it finishes.
    again = _submit(env, args)
    status = _wait(env, again, lambda s: s == "SUCCEEDED", JOB_TIMEOUT_S)
    logs = _logs(env, again)
    assert status == "SUCCEEDED", logs
    assert "=== iteration 2" in logs  # the one-screen summary

    # 3. nothing finished was redone; the interrupted phase resumed; outputs are complete.
    assert {p: p.read_bytes() for p in iter1_markers} == iter1_markers
    for name in ("train_questioner", "generate", "train_reasoner"):
        assert (run_dir / "iter_2" / name / "DONE.json").is_file(), name
    q2 = json.loads((run_dir / "iter_2" / "train_questioner" / "DONE.json").read_text())["outputs"]
    assert [s["step"] for s in q2["steps"]] == [1, 2, 3, 4, 5, 6]
    lines = (run_dir / "iter_2" / "train_questioner" / "metrics.jsonl").read_text().splitlines()
    # resumed after its last saved step: each step's metrics exactly once across the two jobs
    assert sorted(json.loads(line)["step"] for line in lines) == [1, 2, 3, 4, 5, 6]
    history = json.loads((run_dir / "history.json").read_text())
    assert [r["iteration"] for r in history] == [1, 2]
    assert (run_dir / "curves.png").stat().st_size > 0

    # MLflow lineage: evolve run -> iteration run -> phase runs; iteration 1's phases ran exactly once.
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{run_dir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("visplay-tiny")
    runs = client.search_runs([experiment.experiment_id], max_results=200)
    by_id = {r.info.run_id: r for r in runs}
    names = [r.info.run_name for r in runs]
    assert names.count("evolve-test-evolve") == 2  # the killed job and the resubmitted one
    for name in ("iter1-train_questioner", "iter1-generate", "iter1-train_reasoner"):
        assert names.count(name) == 1, (name, names)
    for run in runs:
        if run.info.run_name.startswith("iter") and "-" in run.info.run_name:  # a phase run
            parent = by_id[run.data.tags["mlflow.parentRunId"]]
            assert parent.info.run_name == run.info.run_name.split("-")[0]
            assert by_id[parent.data.tags["mlflow.parentRunId"]].info.run_name == "evolve-test-evolve"
    # Both roles trained for real (2 Ray Train workers, DeepSpeed): per-step metrics and a checkpoint artifact
    # in each phase run, weights that differ from where the phase started, and pushes into the rollout engine.
    for name in (
        "iter1-train_questioner",
        "iter1-train_reasoner",
        "iter2-train_questioner",
        "iter2-train_reasoner",
    ):
        (run,) = [r for r in runs if r.info.run_name == name]
        assert run.info.status == "FINISHED", name
        steps = list(range(1, 7)) if name.endswith("train_questioner") else [1, 2]
        for key in ("reward_mean", "kl", "entropy", "time_update", "time_sync"):
            assert sorted(m.step for m in client.get_metric_history(run.info.run_id, key)) == steps, (
                name,
                key,
            )
        assert "checkpoint/model.safetensors" in [
            a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")
        ], name
    for it, role in ((1, "questioner"), (1, "reasoner"), (2, "reasoner")):
        done = json.loads((run_dir / f"iter_{it}" / f"train_{role}" / "DONE.json").read_text())["outputs"]
        assert done["version"] != done["from"]
        started = load_file(str(Path(bootstrapped_model) / "model.safetensors")) if it == 1 else None
        trained = load_file(str(Path(done["checkpoint"]) / "model.safetensors"))
        if started is not None:
            assert max((trained[k] - started[k]).abs().max().item() for k in started) > 0
    full_logs = _logs(env, again, tail=10**8) + _logs(env, job, tail=10**8)
    for pushed in ("questioner-step6", "reasoner-step2"):  # the trainer's last push into the role's engine
        assert re.search(rf"pushed weights \S*{pushed}", full_logs), pushed
