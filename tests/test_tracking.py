"""MLflow tracking against the default local SQLite store and against a real `mlflow server` on loopback."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest

from visplay import tracking
from visplay.config import load_config
from visplay.engine.broadcast import free_port


def _exercise(cfg, tmp_path: Path) -> None:
    """Parent run with the config as params, a nested phase run with metrics and an artifact."""
    tracking.setup(cfg)
    note = tmp_path / "note.txt"
    note.write_text("hello")
    with (
        tracking.run("job", params=tracking.flat_params(cfg)) as parent,
        tracking.run("phase", tags={"phase": "generate"}) as child,
    ):
        tracking.log_metrics({"kept": 3, "parse_rate": 0.5}, step=1)
        tracking.log_metrics({"kept": 5}, step=2)
        tracking.log_artifact(note, "notes")
    client = mlflow.MlflowClient()
    parent_run, child_run = client.get_run(parent), client.get_run(child)
    assert parent_run.data.params["generation.p_low"] == "0.3"
    assert parent_run.data.params["models.tiny.hidden_size"] == str(cfg.models.tiny.hidden_size)
    assert child_run.data.tags["mlflow.parentRunId"] == parent  # nested under the job's run
    assert [m.value for m in client.get_metric_history(child, "kept")] == [3.0, 5.0]
    assert [a.path for a in client.list_artifacts(child, "notes")] == ["notes/note.txt"]
    assert child_run.info.status == "FINISHED"


def test_local_sqlite_store_under_the_run_dir(tmp_path):
    cfg = load_config(None, [f"out_dir={tmp_path}", "name=t"])
    assert tracking.tracking_uri(cfg) == f"sqlite:///{(tmp_path / 't' / 'mlflow.db').resolve()}"
    _exercise(cfg, tmp_path)
    assert (tmp_path / "t" / "mlflow.db").is_file()
    assert list(
        (tmp_path / "t" / "mlartifacts").rglob("note.txt")
    )  # artifacts beside the store, not ./mlruns


def test_failed_phase_is_marked_failed(tmp_path):
    cfg = load_config(None, [f"out_dir={tmp_path}", "name=f"])
    tracking.setup(cfg)
    with pytest.raises(RuntimeError), tracking.run("broken") as run_id:
        raise RuntimeError("boom")
    assert mlflow.MlflowClient().get_run(run_id).info.status == "FAILED"


def test_interrupted_phase_is_killed_and_its_parent_stays_open(tmp_path):
    cfg = load_config(None, [f"out_dir={tmp_path}", "name=k"])
    tracking.setup(cfg)
    with (
        pytest.raises(KeyboardInterrupt),
        tracking.run("parent") as parent_id,
        tracking.run("phase") as phase_id,
    ):
        assert mlflow.active_run().info.run_id == phase_id  # nested under the still-open parent
        raise KeyboardInterrupt
    client = mlflow.MlflowClient()
    assert client.get_run(phase_id).info.status == "KILLED"
    assert client.get_run(parent_id).info.status == "KILLED"
    assert mlflow.active_run() is None


def test_sigterm_raises_keyboard_interrupt_after_interrupt_on_sigterm():
    import os
    import signal

    from visplay.runtime import interrupt_on_sigterm

    previous = signal.getsignal(signal.SIGTERM)
    try:
        interrupt_on_sigterm()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler runs at the next bytecode boundary; never reached
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.mark.slow
def test_against_a_real_mlflow_server_on_loopback(tmp_path):
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}", "--artifacts-destination", str(tmp_path / "art"),
         "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                assert server.poll() is None, "mlflow server exited"
                assert time.monotonic() < deadline, "mlflow server did not come up"
                time.sleep(1)
        cfg = load_config(
            None,
            [f"out_dir={tmp_path}", f"mlflow.tracking_uri=http://127.0.0.1:{port}", "mlflow.experiment=srv"],
        )
        _exercise(cfg, tmp_path)
        assert list((tmp_path / "art").rglob("note.txt"))  # the server stored the artifact
        assert not (tmp_path / "tiny-cpu" / "mlflow.db").exists()  # nothing went to the local store
    finally:
        server.terminate()
        server.wait(timeout=30)
