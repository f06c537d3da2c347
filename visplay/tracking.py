"""MLflow tracking: where runs go, nesting, the resolved config as params, metrics and artifacts.

The default store is local: a SQLite database and an artifact folder under the run directory, so a laptop
run needs no server. ``mlflow.tracking_uri`` in the config points every job at a tracking server instead.
One parent run per job, nested runs per iteration and per phase (:func:`run`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow

from visplay.config import Config

log = logging.getLogger(__name__)


def tracking_uri(cfg: Config) -> str:
    """The configured tracking server, or a SQLite store under the run directory."""
    if cfg.mlflow.tracking_uri:
        return cfg.mlflow.tracking_uri
    return f"sqlite:///{(cfg.run_dir / 'mlflow.db').resolve()}"


def setup(cfg: Config) -> str:
    """Point MLflow at the configured store and experiment; returns the experiment id."""
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri(cfg))
    experiment = mlflow.get_experiment_by_name(cfg.mlflow.experiment)
    if experiment is not None:
        experiment_id = experiment.experiment_id
    else:
        artifact_location = None
        if not cfg.mlflow.tracking_uri:  # keep local artifacts next to the local store, not in ./mlruns
            artifact_location = (cfg.run_dir / "mlartifacts").resolve().as_uri()
        experiment_id = mlflow.create_experiment(cfg.mlflow.experiment, artifact_location=artifact_location)
    mlflow.set_experiment(experiment_id=experiment_id)
    log.info("mlflow: %s experiment=%s", tracking_uri(cfg), cfg.mlflow.experiment)
    return experiment_id


def flat_params(cfg: Config) -> dict[str, str]:
    """The resolved config as dotted MLflow params (``generation.p_low -> "0.3"``)."""
    out: dict[str, str] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            out[prefix[:-1]] = str(node)

    walk(cfg.model_dump(mode="json"), "")
    return out


@contextlib.contextmanager
def run(
    name: str, *, params: dict[str, Any] | None = None, tags: dict[str, str] | None = None
) -> Iterator[str]:
    """Start a run (nested under the active one, if any), yield its id, end it.

    The run ends FINISHED, FAILED on an exception, or KILLED on KeyboardInterrupt (Ctrl-C, or SIGTERM under
    :func:`visplay.runtime.interrupt_on_sigterm`): an interrupted job is resumable, not broken.
    """
    nested = mlflow.active_run() is not None
    with mlflow.start_run(run_name=name, nested=nested, tags=tags) as active:
        if params:
            mlflow.log_params({k: str(v)[:6000] for k, v in params.items()})
        try:
            yield active.info.run_id
        except KeyboardInterrupt:
            mlflow.end_run("KILLED")  # start_run's exit leaves a run that is no longer active alone
            raise


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    """Log numeric metrics to the active run (non-finite or non-numeric values are an error)."""
    clean = {k: float(v) for k, v in metrics.items()}
    mlflow.log_metrics(clean, step=step)


def log_artifact(path: str | Path, artifact_path: str | None = None) -> None:
    """Attach a file or a folder to the active run."""
    path = Path(path)
    if path.is_dir():
        mlflow.log_artifacts(str(path), artifact_path=artifact_path)
    else:
        mlflow.log_artifact(str(path), artifact_path=artifact_path)


def log_dataset_location(folder: str | Path) -> None:
    """Record where a phase's outputs live (a tag on the active run), not a copy of them: a pass over 1M
    images writes tens of GB, a 7B checkpoint 15 GB; the tag is what a reader needs to find them."""
    mlflow.set_tag(f"location.{Path(folder).name}", str(Path(folder).resolve()))
