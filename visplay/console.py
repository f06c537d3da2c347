"""Where a job's output goes: its own lines on the console, the frameworks' chatter in log files.

    console.setup(verbose=cfg.verbose)      # first thing a job does (runtime.start_job)
    console.log_to(cfg.run_dir / "logs")    # once the run directory may be written

The console (stderr) gets every record of the project's own loggers (``visplay.*`` and the jobs', phase
lines, progress and summaries) and, from any other library, each distinct warning or error once. Everything,
at INFO and above, also goes to ``<run>/logs/driver.log``. The Ray workers' own output (vLLM engines, Ray
Train workers, DeepSpeed, Triton) is not streamed to the console at all (``ray.init(log_to_driver=False)``,
see :func:`visplay.runtime.init_ray`): Ray writes it per worker under the Ray session's log folder, which
``<run>/logs/ray`` links to. ``verbose=true`` shows everything on the console as well, worker output
included. An uncaught error still prints its traceback, followed by where the logs are.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

log = logging.getLogger("visplay")

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
OWN_LOGGERS = ("visplay", "__main__")
"""Loggers whose every record reaches the console; jobs run as scripts log as ``__main__``."""
FRAMEWORK_HANDLERS = ("ray", "ray.data")
"""Loggers that Ray gives their own stderr handler (not propagating to the root logger)."""


class ConsoleFilter(logging.Filter):
    """Quiet mode: the project's own records; from other loggers, WARNING and above, each message once."""

    def __init__(self):
        super().__init__()
        self._seen: set[tuple[str, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.split(".")[0] in OWN_LOGGERS:
            return True
        if record.levelno < logging.WARNING:
            return False
        key = (record.name, record.getMessage())
        if key in self._seen:
            return False
        self._seen.add(key)
        return True


def setup(verbose: bool) -> None:
    """The console handler on the root logger (stderr); quiet unless ``verbose``."""
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter(FORMAT))
    if not verbose:
        console.addFilter(ConsoleFilter())
    logging.basicConfig(level=logging.INFO, handlers=[console], force=True)
    logging.captureWarnings(True)  # Python warnings become records: to the file, and once to the console


def route_framework_logs(verbose: bool) -> None:
    """Ray's loggers write to stderr with handlers of their own; in quiet mode their records go through the
    root logger instead (the file, and the console filter). Call after ``ray.init`` (Ray sets them up)."""
    if verbose:
        return
    for name in FRAMEWORK_HANDLERS:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if type(handler) is not logging.FileHandler and isinstance(handler, logging.StreamHandler):
                logger.removeHandler(handler)
        logger.propagate = True


def log_to(log_dir: Path) -> Path:
    """Also write every record (INFO and above) to ``log_dir/driver.log``, and name ``log_dir`` after an
    uncaught error's traceback; returns the file's path."""
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / "driver.log"
    handler = logging.FileHandler(path)
    handler.setLevel(logging.INFO)  # Ray Data's logger lets DEBUG records through
    handler.setFormatter(logging.Formatter(FORMAT))
    logging.getLogger().addHandler(handler)
    previous = sys.excepthook

    def hook(kind, value, tb):
        previous(kind, value, tb)
        print(f"logs: {log_dir} (driver.log; ray/ for the engines and trainer workers)", file=sys.stderr)

    sys.excepthook = hook
    return path


def link_ray_logs(log_dir: Path) -> None:
    """``log_dir/ray`` -> the Ray session's log folder on this node (worker-*.out/err per process)."""
    import ray

    try:  # no public API names the session folder; the node object has held it since Ray 1.x
        session_logs = Path(ray._private.worker.global_worker.node.get_logs_dir_path())
    except AttributeError:
        log.warning("the Ray session's log folder is unknown here; worker logs stay in Ray's temp dir")
        return
    link = log_dir / "ray"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(session_logs, target_is_directory=True)
