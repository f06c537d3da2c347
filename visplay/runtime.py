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
from typing import TYPE_CHECKING

import numpy as np

from visplay import console
from visplay.config import Config, ConfigError, load_config, save_config, with_absolute_paths

if TYPE_CHECKING:
    from visplay.resource_plan import JobPlan, Offer

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


def cluster_offer(cfg: Config) -> Offer:
    """What the connected cluster can give: ``ray.cluster_resources()`` and its alive nodes; with
    ``ray.cluster_config``, merged with that launcher YAML at its largest (visplay.resource_plan)."""
    import ray
    import yaml

    from visplay.resource_plan import Offer, cluster_yaml_offer, merge_offers

    nodes = tuple(n["Resources"] for n in ray.nodes() if n["Alive"])
    now = Offer(ray.cluster_resources(), nodes, "the connected cluster (ray.cluster_resources())")
    if cfg.ray.cluster_config is None:
        return now
    path = Path(cfg.ray.cluster_config)
    if not path.is_file():
        raise ConfigError(f"ray.cluster_config: no file at {path}")
    largest = cluster_yaml_offer(yaml.safe_load(path.read_text()), f"{path.name} at its largest")
    return merge_offers(now, largest)


def stop_unless_fits(cfg: Config, *plans: JobPlan) -> None:
    """Before a job starts anything: raise SystemExit with a message naming the phase, the actor and the
    missing resource when one of ``plans`` can never fit the cluster (instead of waiting for resources that
    never come). The cluster's offer is read once for all of them. With ``ray.fit_check`` off a misfit is
    only logged."""
    from visplay.resource_plan import DoesNotFit, check_fit, format_resources

    try:
        offer = cluster_offer(cfg)
    except ConfigError as err:  # ray.cluster_config names no file
        raise SystemExit(f"{plans[0].job}: {err}") from None
    for plan in plans:
        try:
            check_fit(plan, offer)
        except DoesNotFit as err:
            if cfg.ray.fit_check:
                raise SystemExit(f"{plan.job}: {err}") from None
            log.warning("%s\n(ray.fit_check is false: starting anyway)", err)
            continue
        log.info(
            "%s: the resource plan fits %s (peak %s)", plan.job, offer.source, format_resources(plan.peak)
        )


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
