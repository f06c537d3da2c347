"""What every job does first: read its config from the command line, log (visplay.console), seed, start
or join Ray.

cfg = runtime.start_job("generate questions", argv)   # --config FILE plus dotted overrides
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from visplay import console
from visplay.config import Config, load_config, save_config, with_absolute_paths

log = logging.getLogger("visplay")


def parse_config(description: str, argv: list[str] | None = None) -> Config:
    """``--config FILE`` followed by any number of ``section.field=value`` overrides."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", default=None, help="YAML file in configs/ (default: schema defaults)")
    parser.add_argument(
        "overrides", nargs="*", help="dotted overrides, e.g. generation.answers_per_question=4"
    )
    args = parser.parse_args(argv)
    return load_config(args.config, args.overrides)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch in this process (engines and workers get derived seeds)."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def init_ray(cfg: Config) -> None:
    """Join ``cfg.ray.address`` (or ``RAY_ADDRESS``, as under ``ray job submit``), else start a local Ray."""
    import ray

    if ray.is_initialized():
        return
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    # Workers' output (engines, trainer workers) reaches the console only when verbose (visplay.console).
    if address:
        ray.init(address=address, log_to_driver=cfg.verbose)
    else:
        ray.init(num_cpus=cfg.ray.num_cpus, include_dashboard=False, log_to_driver=cfg.verbose)
    console.route_framework_logs(cfg.verbose)
    log.info("ray: %s", ray.cluster_resources())


def job_config_path(cfg: Config, description: str, reads_run: bool) -> Path:
    """Where a job saves its resolved config: ``<run>/config.yaml`` for jobs that write the run; a job that
    only reads it (serve, evaluate) saves ``<run>/<job>.config.yaml`` and leaves the run's own config alone."""
    if not reads_run:
        return cfg.run_dir / "config.yaml"
    return cfg.run_dir / f"{'-'.join(description.lower().split())}.config.yaml"


def start_job(
    description: str, argv: list[str] | None = None, *, reads_run: bool = False,
    check: Callable[[Config], object] | None = None,
) -> Config:  # fmt: skip
    """Parse, log, seed, save the resolved config under the run directory (:func:`job_config_path`), start
    Ray; returns the config. ``reads_run``: the job only reads an existing run (serve, evaluate).
    ``check``: run on the config before anything is written or started (a refused rerun changes nothing)."""
    cfg = with_absolute_paths(parse_config(description, argv))  # workers run in other directories
    console.setup(cfg.verbose)
    if check is not None:
        check(cfg)
    seed_everything(cfg.seed)
    path = save_config(cfg, job_config_path(cfg, description, reads_run))
    log_file = console.log_to(cfg.run_dir / "logs")
    log.info("%s: run %s, seed %d, config %s, log %s", description, cfg.name, cfg.seed, path, log_file)
    init_ray(cfg)
    console.link_ray_logs(cfg.run_dir / "logs")
    interrupt_on_sigterm()
    return cfg


def interrupt_on_sigterm() -> None:
    """Make SIGTERM (``ray job stop``, a node shutting down) raise KeyboardInterrupt, as Ctrl-C does.

    Jobs then unwind the same way for both: MLflow runs end KILLED, no completion marker is written for the
    phase in progress, Ray shuts down (engines and trainer workers stop), and a rerun resumes.
    """
    signal.signal(signal.SIGTERM, signal.default_int_handler)


@contextmanager
def phase_timer(timings: dict[str, float], name: str) -> Iterator[None]:
    """Time a named phase (``gen``, ``reward``, ``update``, ``sync``...) into `timings` and log it."""
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = time.perf_counter() - started
        log.info("phase %s took %.2fs", name, timings[name])
