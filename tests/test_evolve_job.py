"""jobs/evolve.py launched the way users launch it: `ray job submit` to a Ray cluster.

A head node on loopback (`ray start --head`, its own ports and temp dir; only its processes are stopped
afterwards). The module's fixture submits one iteration of the embedded default with tiny step counts and 2
Ray Train workers, and waits for it:

  * test_submitted_iteration_...  (default run, CI): the job SUCCEEDED; every phase wrote its marker; both
    roles trained for real (weights moved, the trainer's last push reached the role's rollout engine,
    per-step metrics and the checkpoint artifact in MLflow); history, curves and the MLflow lineage
    evolve run -> iteration run -> phase runs; the job's console has the driver's step lines and none of
    the workers' output, which is in the Ray log files linked from <run>/logs/ray.
  * test_killed_in_iteration_2_...  (`-m e2e`, ~10 more minutes): the same command with iterations=2 is
    submitted; once iteration 2's Questioner GRPO has saved a step, `ray job stop` interrupts it (SIGTERM:
    the job says so and its MLflow runs end KILLED); the same command again finishes. Nothing finished was
    redone (iteration 1's markers are byte-identical, its phases have one MLflow run each), iteration 2's
    Questioner resumed after its last saved step (each step's metrics exactly once), lineage intact.
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

from visplay.engine.broadcast import free_port

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
JOB_TIMEOUT_S = 900
Q_STEPS, R_STEPS = 3, 2


def _ray(*args: str, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "ray"), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _start_head(temp: Path) -> tuple[dict, int]:
    """Start a head node on fresh free ports; returns (env with RAY_ADDRESS for the job CLI, agent port)."""
    gcs_port, dash_port, agent_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "RAY_ADDRESS": f"http://127.0.0.1:{dash_port}",
        "RAY_AUTH_MODE": "token",  # Ray's default for new clusters; the CLI then sends ~/.ray/auth_token
        "RAY_JOB_STOP_WAIT_TIME_S": "60",  # `ray job stop`: SIGTERM, then SIGKILL only after this grace time
    }
    started = _ray(
        "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs_port}", f"--dashboard-port={dash_port}",
        "--dashboard-host=127.0.0.1", "--include-dashboard=true", "--num-cpus=4", f"--temp-dir={temp}",
        f"--dashboard-agent-listen-port={agent_port}",  # the default 52365 is taken by any other Ray here
        "--disable-usage-stats",
        env={k: v for k, v in env.items() if k != "RAY_ADDRESS"},
    )  # fmt: skip
    assert started.returncode == 0, started.stdout + started.stderr
    return env, agent_port


def _agent_listening(port: int, timeout: float) -> bool:
    """Whether the head's dashboard agent (which runs submitted jobs) accepts connections within timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(2)
    return False


def _agent_log(temp: Path) -> str:
    logs = sorted(temp.glob("session_*/logs/dashboard_agent.log"))
    return logs[-1].read_text(errors="replace")[-3000:] if logs else f"(no dashboard_agent.log under {temp})"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """(env with RAY_ADDRESS for the job CLI, temp dir) of a local head node; stopped after the module.

    The head's job agent binds a port picked free a moment earlier; on a loaded machine another process can
    take it in between (CI once saw "No available agent to submit job" for 3 minutes). A head whose agent
    is not listening after 120 s is stopped and started once more on new ports, with the agent's log."""
    temp = Path("/tmp") / f"vp-ray-{os.getpid()}"  # Ray's socket paths must stay short
    env, agent_port = _start_head(temp)
    if not _agent_listening(agent_port, timeout=120):
        print(
            f"dashboard agent not listening on {agent_port} after 120 s; restarting the head:\n{_agent_log(temp)}"
        )
        _stop_head(temp)
        shutil.rmtree(temp, ignore_errors=True)
        env, agent_port = _start_head(temp)
        assert _agent_listening(agent_port, timeout=120), (
            f"dashboard agent never listened:\n{_agent_log(temp)}"
        )
    try:
        yield env, temp
    finally:
        _stop_head(temp)
        shutil.rmtree(temp, ignore_errors=True)


def _stop_head(temp: Path) -> None:
    """Stop this head node's processes only (`ray stop` would stop every Ray on the machine, the test
    session's own included). Its daemons name ``temp`` on their command line; workers exit with the raylet."""
    import psutil

    mine = []
    for proc in psutil.process_iter(["cmdline"]):
        if str(temp) in " ".join(proc.info["cmdline"] or []):
            mine.append(proc)
    for proc in mine:
        proc.terminate()
    _, alive = psutil.wait_procs(mine, timeout=30)
    for proc in alive:
        proc.kill()


def _submit(env: dict, args: list[str]) -> str:
    """Submit evolve without waiting; returns the submission id. Retries while the new head's job agent is
    still starting ("No available agent to submit job")."""
    for _ in range(12):
        submitted = _ray(
            "job", "submit", "--no-wait", f"--working-dir={REPO}", "--", "python", "jobs/evolve.py", *args, env=env
        )  # fmt: skip
        if "No available agent" not in submitted.stderr:
            break
        time.sleep(5)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr[-3000:]
    match = re.search(r"raysubmit_[A-Za-z0-9]+", submitted.stdout + submitted.stderr)
    assert match, f"no submission id in: {submitted.stdout + submitted.stderr}"
    return match.group(0)


def _client(env: dict):
    """A job SDK client for status and logs: the CLI costs seconds of CPU per call, the SDK milliseconds."""
    from ray.job_submission import JobSubmissionClient

    token = (Path.home() / ".ray" / "auth_token").read_text().strip()  # written by `ray start` (token mode)
    return JobSubmissionClient(env["RAY_ADDRESS"], headers={"authorization": f"Bearer {token}"})


def _status(env: dict, job: str) -> str:
    """The job's status: PENDING, RUNNING, STOPPED, SUCCEEDED or FAILED."""
    return str(_client(env).get_job_status(job).value)


def _logs(env: dict, job: str, tail: int = 6000) -> str:
    return _client(env).get_job_logs(job)[-tail:]


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


@pytest.fixture(scope="module")
def first_iteration(cluster, bootstrapped_model, unlabeled_corpus, tmp_path_factory):
    """(env, common job arguments, run dir, job id, job logs) of one submitted iteration, waited for."""
    env, _ = cluster
    out = tmp_path_factory.mktemp("evolve-job") / "runs"
    args = [
        "--config", "configs/tiny-cpu.yaml", f"out_dir={out}", "name=evolve-test",
        f"models.base={bootstrapped_model}", f"corpus.path={unlabeled_corpus}",
        "corpus.synthetic_kinds=[shapes,count,chart]",  # the fixtures' world (conftest), not the shipped one
        "generation.questions_per_image=2", "generation.answers_per_question=4",
        f"questioner_grpo.steps={Q_STEPS}", "questioner_grpo.save_every=1", f"reasoner_grpo.steps={R_STEPS}",
        "ray.train_workers=2", "eval.synthetic_n=6", f"eval.synthetic_path={out / 'heldout'}",
    ]  # fmt: skip
    job = _submit(env, [*args, "iterations=1"])
    status = _wait(env, job, lambda s: s == "SUCCEEDED", JOB_TIMEOUT_S)
    return env, args, out / "evolve-test", job, status, _logs(env, job, tail=10**8)


def _worker_logs(run_dir: Path) -> str:
    """The Ray workers' output (engines, trainer workers): Ray's session log files, linked from the run."""
    return "\n".join(p.read_text(errors="replace") for p in (run_dir / "logs" / "ray").glob("worker-*"))


def _runs(run_dir: Path):
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{run_dir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("visplay-tiny")
    return client, client.search_runs([experiment.experiment_id], max_results=200)


def _check_lineage(runs) -> None:
    """Every phase run sits under its iteration's run, which sits under an evolve run."""
    by_id = {r.info.run_id: r for r in runs}
    for run in runs:
        if run.info.run_name.startswith("iter") and "-" in run.info.run_name:  # a phase run
            parent = by_id[run.data.tags["mlflow.parentRunId"]]
            assert parent.info.run_name == run.info.run_name.split("-")[0]
            assert by_id[parent.data.tags["mlflow.parentRunId"]].info.run_name == "evolve-test-evolve"


def _check_trained_phase(client, runs, name: str, steps: list[int]) -> None:
    """One FINISHED run of phase `name` (others: interrupted, KILLED) holding the checkpoint artifact; per-step
    metrics across its runs cover `steps` exactly once."""
    named = [r for r in runs if r.info.run_name == name]
    finished = [r for r in named if r.info.status == "FINISHED"]
    assert len(finished) == 1, (name, [r.info.status for r in named])
    assert all(r.info.status == "KILLED" for r in named if r not in finished), name
    for key in ("reward_mean", "kl", "entropy", "time_gen", "time_update", "time_sync"):
        logged = sorted(m.step for r in named for m in client.get_metric_history(r.info.run_id, key))
        assert logged == steps, (name, key, logged)
    # MLflow holds the checkpoint's location and its small config, never a copy of its weights.
    artifacts = [a.path for a in client.list_artifacts(finished[0].info.run_id, "checkpoint")]
    assert artifacts == ["checkpoint/config.json"], (name, artifacts)
    assert Path(finished[0].data.tags["location.checkpoint"], "model.safetensors").is_file(), name


def test_submitted_iteration_trains_both_roles_and_records_lineage(first_iteration, bootstrapped_model):
    _, _, run_dir, _, status, logs = first_iteration
    assert status == "SUCCEEDED", logs[-6000:]
    assert "=== iteration 1" in logs  # the one-screen summary
    for name in ("train_questioner", "generate", "train_reasoner"):
        assert (run_dir / "iter_1" / name / "DONE.json").is_file(), name
    history = json.loads((run_dir / "history.json").read_text())
    assert [r["iteration"] for r in history] == [1]
    # evaluation: the base model (iteration 0) and iteration 1's Reasoner on the held-out synthetic split
    for it in (0, 1):
        done = json.loads((run_dir / f"iter_{it}" / "evaluate" / "DONE.json").read_text())["outputs"]
        assert [r["benchmark"] for r in done["reports"]] == ["synthetic"]
    assert set(history[0]["eval_scores"]) == {"synthetic"}
    comparison = (run_dir / "eval_comparison.txt").read_text()
    assert "base (" in comparison and "iter 1 (" in comparison
    assert (run_dir / "curves.png").stat().st_size > 0

    client, runs = _runs(run_dir)
    names = [r.info.run_name for r in runs]
    phases = [
        "iter0-evaluate",
        "iter1-train_questioner",
        "iter1-generate",
        "iter1-train_reasoner",
        "iter1-evaluate",
    ]
    for name in ("evolve-test-evolve", "iter0", "iter1", *phases):
        assert names.count(name) == 1, (name, names)
    _check_lineage(runs)
    _check_trained_phase(client, runs, "iter1-train_questioner", list(range(1, Q_STEPS + 1)))
    _check_trained_phase(client, runs, "iter1-train_reasoner", list(range(1, R_STEPS + 1)))
    started = load_file(str(Path(bootstrapped_model) / "model.safetensors"))
    for role in (
        "questioner",
        "reasoner",
    ):  # weights moved, and the role's engine got the trainer's last push
        done = json.loads((run_dir / "iter_1" / f"train_{role}" / "DONE.json").read_text())["outputs"]
        assert done["version"] != done["from"]
        trained = load_file(str(run_dir / done["checkpoint"] / "model.safetensors"))  # relative to the run
        assert max((trained[k] - started[k]).abs().max().item() for k in started) > 0, role
    workers = _worker_logs(run_dir)
    for pushed in (f"questioner-step{Q_STEPS}", f"reasoner-step{R_STEPS}"):
        assert re.search(rf"pushed weights \S*{pushed}", workers), pushed
    # The console (the job's log) is quiet: the driver's step lines, not the workers' output.
    assert "RolloutActor pid=" not in logs and "RayTrainWorker pid=" not in logs
    assert re.search(rf"questioner step {Q_STEPS}/{Q_STEPS} reward_mean=", logs)
    assert "INFO ray.data" in (run_dir / "logs" / "driver.log").read_text()  # Ray Data's progress: the file


@pytest.mark.e2e
def test_killed_in_iteration_2_and_resubmitted_it_resumes_without_redoing(first_iteration):
    env, args, run_dir, _, status, _ = first_iteration
    assert status == "SUCCEEDED"
    iter1_markers = {p: p.read_bytes() for p in sorted((run_dir / "iter_1").glob("*/DONE.json"))}
    assert [p.parent.name for p in iter1_markers] == [
        "evaluate",
        "generate",
        "train_questioner",
        "train_reasoner",
    ]
    first_save = run_dir / "iter_2" / "train_questioner" / "state" / "latest.json"

    # 1. iterations=2: run until iteration 2's Questioner has saved a step, then stop the job (SIGTERM).
    job = _submit(env, [*args, "iterations=2"])
    deadline, polls = time.monotonic() + JOB_TIMEOUT_S, 0
    while not first_save.is_file() and time.monotonic() < deadline:
        polls += 1
        if polls % 20 == 0:
            status = _status(env, job)
            assert status in ("PENDING", "RUNNING"), f"job ended early: {status}\n{_logs(env, job)}"
        time.sleep(0.5)
    assert first_save.is_file(), f"iteration 2 never saved a step\n{_logs(env, job)}"
    stopped = _ray("job", "stop", job, env=env, timeout=180)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert _wait(env, job, lambda s: s == "STOPPED", 180) == "STOPPED"
    assert "interrupted: finished phases are kept" in _logs(env, job)  # it unwound, not SIGKILLed
    assert not (run_dir / "iter_2" / "generate" / "DONE.json").exists()

    # 2. the same command again: it finishes.
    again = _submit(env, [*args, "iterations=2"])
    status = _wait(env, again, lambda s: s == "SUCCEEDED", JOB_TIMEOUT_S)
    logs = _logs(env, again, tail=10**8)
    assert status == "SUCCEEDED", logs[-6000:]
    assert "=== iteration 2" in logs

    # 3. nothing finished was redone; the interrupted phase resumed; outputs are complete.
    assert {p: p.read_bytes() for p in iter1_markers} == iter1_markers
    for name in ("train_questioner", "generate", "train_reasoner"):
        assert (run_dir / "iter_2" / name / "DONE.json").is_file(), name
    q2 = json.loads((run_dir / "iter_2" / "train_questioner" / "DONE.json").read_text())["outputs"]
    assert [s["step"] for s in q2["steps"]] == list(range(1, Q_STEPS + 1))
    lines = (run_dir / "iter_2" / "train_questioner" / "metrics.jsonl").read_text().splitlines()
    # resumed after its last saved step: each step's metrics exactly once across the two jobs
    assert sorted(json.loads(line)["step"] for line in lines) == list(range(1, Q_STEPS + 1))
    history = json.loads((run_dir / "history.json").read_text())
    assert [r["iteration"] for r in history] == [1, 2]

    client, runs = _runs(run_dir)
    names = [r.info.run_name for r in runs]
    assert names.count("evolve-test-evolve") == 3  # iteration 1's job, the stopped one, the resubmitted one
    for name in ("iter0-evaluate", "iter1-train_questioner", "iter1-generate", "iter1-train_reasoner"):
        assert names.count(name) == 1, (name, names)  # finished phases were not run again
    assert names.count("iter2-train_questioner") == 2  # stopped (KILLED) and resumed (FINISHED)
    _check_lineage(runs)
    _check_trained_phase(client, runs, "iter2-train_questioner", list(range(1, Q_STEPS + 1)))
    _check_trained_phase(client, runs, "iter2-train_reasoner", list(range(1, R_STEPS + 1)))
    assert re.search(rf"pushed weights \S*reasoner-step{R_STEPS}", _worker_logs(run_dir))
