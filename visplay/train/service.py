"""One GRPO worker group for the whole job: phases go to it as commands, one at a time.

    with TrainerService(cfg, storage=run_dir / "ray_train") as trainer:
        trainer.run(job_a)   # questioner, iteration 1
        trainer.run(job_b)   # reasoner, iteration 1 (the same processes, the same process group)

Starting a Ray Train worker group costs far more than a short phase: placing workers, importing torch,
transformers and DeepSpeed, creating the process group (NCCL on GPUs), the first model load. Here a
single ``TorchTrainer`` runs :func:`serve_phases` on every worker for as long as the job lives:

    driver                          PhaseQueue actor                 worker rank 0         ranks 1..
    run(job) --submit-------------> pending
                                    <---------------- next() --------  (polls)
                                    in flight: job  ---------------->  broadcast job id --> fetch job
                                                                       run_phase(job) on every rank
    <--- result(job id) ----------  done  <--------- finish(job id) --  barrier

Each phase loads its starting weights in-process (seconds; only the phase's own policy and reference are
resident, and they are freed when it ends), writes what it always wrote and resumes as before: from its
``state/latest.json``.

Failures: a worker that dies or raises fails the group (Ray Train, ``max_failures=0``); the service then
starts a new group, whose rank 0 gets the phase in flight again from the queue, and that phase resumes
from its last saved step. A phase gets ``attempts`` tries in all; after the last its error (with the
worker's traceback) is raised by :meth:`TrainerService.run`, and the next group takes the next phase. A
group that fails outside any phase (it cannot start) ends the service: :meth:`run` raises its error. A
killed job that is resubmitted starts a new service, which resumes the same way.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import ray

from visplay.config import Config
from visplay.train.grpo import deepspeed_config

log = logging.getLogger(__name__)

POLL_S = 30.0
"""Rank 0 asks the queue for a command at least this often; between phases every rank meets it in a
broadcast (the process group's collectives time out after idling much longer than this)."""


@dataclass(frozen=True)
class Idle:
    """No phase yet: the workers meet again after the next poll."""


@dataclass(frozen=True)
class Stop:
    """The job is done with training: the workers leave :func:`serve_phases` and the group ends."""


@dataclass(frozen=True)
class RunPhase:
    """Run the queued phase ``job_id`` (every rank fetches the job itself from the queue)."""

    job_id: int


@ray.remote(num_cpus=0, max_restarts=0)
class PhaseQueue:
    """The coordinator between the driver and the worker group: pending phases, the one in flight, results."""

    def __init__(self, attempts: int):
        self._attempts = attempts
        self._jobs: dict[int, object] = {}
        self._pending: deque[int] = deque()
        self._current: int | None = None
        self._tries: dict[int, int] = {}
        self._results: dict[int, str | None] = {}  # job id -> None (done) or its error
        self._stopping = False
        self._ids = itertools.count()
        self._changed: asyncio.Condition | None = None

    def _cond(self) -> asyncio.Condition:
        if self._changed is None:  # created in the actor's event loop
            self._changed = asyncio.Condition()
        return self._changed

    async def submit(self, job) -> int:
        job_id = next(self._ids)
        self._jobs[job_id] = job
        self._pending.append(job_id)
        async with self._cond():
            self._cond().notify_all()
        return job_id

    async def next(self, timeout_s: float) -> Idle | Stop | RunPhase:
        """Rank 0's next command. A phase still in flight is handed out again: the group that had it died."""
        if self._current is not None:
            self._tries[self._current] += 1
            return RunPhase(self._current)
        async with self._cond():
            try:
                await asyncio.wait_for(
                    self._cond().wait_for(lambda: self._stopping or self._pending), timeout_s
                )
            except TimeoutError:
                return Idle()
        if self._stopping:
            return Stop()
        self._current = self._pending.popleft()
        self._tries[self._current] = 1
        return RunPhase(self._current)

    def job(self, job_id: int):
        return self._jobs[job_id]

    async def finish(self, job_id: int) -> None:
        await self._settle(job_id, None)

    async def group_failed(self, error: str) -> bool:
        """The worker group died with ``error``. The phase in flight gets another try in the next group, or,
        after its last, fails with ``error``; True if there was one (a new group is worth starting), False if
        the group died outside any phase (starting it fails: the service gives up)."""
        job_id = self._current
        if job_id is None:
            return False
        if self._tries[job_id] >= self._attempts:
            await self._settle(job_id, error)
        return True

    async def _settle(self, job_id: int, error: str | None) -> None:
        self._results[job_id] = error
        self._jobs.pop(job_id, None)
        if self._current == job_id:
            self._current = None
        async with self._cond():
            self._cond().notify_all()

    async def result(self, job_id: int, timeout_s: float) -> tuple[bool, str | None]:
        """(finished, its error or None), waiting up to ``timeout_s`` for the phase to finish."""
        async with self._cond():
            try:
                await asyncio.wait_for(self._cond().wait_for(lambda: job_id in self._results), timeout_s)
            except TimeoutError:
                return False, None
        return True, self._results[job_id]

    async def stop(self) -> None:
        self._stopping = True
        async with self._cond():
            self._cond().notify_all()


class PhaseFailed(RuntimeError):
    """A GRPO phase failed on its last attempt; the message holds the worker's error."""


class TrainerService:
    """Driver side: starts the worker group (a ``TorchTrainer`` whose ``fit`` runs in a thread) and runs
    phases through it. Use as a context manager, or call :meth:`close`."""

    def __init__(self, cfg: Config, storage: str | Path, *, attempts: int = 2):
        self._cfg = cfg
        self._storage = str(Path(storage).resolve())
        self.queue = PhaseQueue.remote(attempts)
        self._attempts = attempts
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name="grpo-workers", daemon=True)
        self._thread.start()

    def _trainer(self, group: int):
        from ray.train import FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchConfig, TorchTrainer

        ray_cfg = self._cfg.ray
        use_gpu = ray_cfg.gpus_per_train_worker > 0
        resources = {"CPU": ray_cfg.cpus_per_train_worker, **ray_cfg.train_worker_resources}
        if use_gpu:
            resources["GPU"] = ray_cfg.gpus_per_train_worker
        return TorchTrainer(
            serve_phases,
            # the workers warm DeepSpeed up with the first phase's settings (visplay.train.grpo.prepare_worker)
            train_loop_config={"queue": self.queue, "warm": deepspeed_config(self._cfg.questioner_grpo)},
            scaling_config=ScalingConfig(
                num_workers=ray_cfg.train_workers, use_gpu=use_gpu, resources_per_worker=resources
            ),
            torch_config=TorchConfig(backend=ray_cfg.collective_backend),
            run_config=RunConfig(
                name=f"grpo-workers-{time.strftime('%Y%m%d-%H%M%S')}-{group}",
                storage_path=self._storage,
                failure_config=FailureConfig(max_failures=0),  # restarts are decided here, per phase
            ),
        )

    def _serve(self) -> None:
        """The thread: run worker groups until the queue says stop; a group that dies inside a phase is
        replaced by a new one (which retries that phase or, after its last try, takes the next)."""
        for group in itertools.count():
            try:
                self._trainer(group).fit()
                return
            except Exception as exc:  # noqa: BLE001 - reported to the phase's caller, not swallowed
                try:
                    in_phase = ray.get(self.queue.group_failed.remote(f"{type(exc).__name__}: {exc}"))
                except Exception:  # the queue is gone: the job is shutting down
                    in_phase = False
                if not in_phase:
                    self._error = exc
                    return
                log.warning("the GRPO workers failed in a phase; starting a new group: %s", exc)

    def run(self, job, progress: Callable[[], None] | None = None) -> None:
        """Run one phase (a :class:`~visplay.train.grpo.GRPOJob`) on the worker group; returns when it is done.
        ``progress`` is called every couple of seconds while it runs, and once at the end."""
        job_id = ray.get(self.queue.submit.remote(job))
        while True:
            done, error = ray.get(self.queue.result.remote(job_id, 2.0))
            if progress is not None:
                progress()
            if done:
                if error is not None:
                    raise PhaseFailed(f"{job.role} phase failed after {self._attempts} attempts: {error}")
                return
            if not self._thread.is_alive():
                raise PhaseFailed(
                    f"the GRPO workers stopped before the {job.role} phase ended: {self._error}"
                )

    def close(self, timeout_s: float = 120.0) -> None:
        """Let the workers leave after the phase in flight (there is none between phases) and end the group."""
        try:
            ray.get(self.queue.stop.remote())
            self._thread.join(timeout_s)
        finally:
            ray.kill(self.queue)

    def __enter__(self) -> TrainerService:
        return self

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is None:
            self.close()
        else:  # an interrupt or a failed phase: do not wait for workers; ray.kill ends the queue, Ray the rest
            ray.kill(self.queue)


def serve_phases(config: dict) -> None:
    """Ray Train entry point of every worker: prepare once, then run the phases rank 0 gets from the queue."""
    from visplay.train.grpo import prepare_worker, run_phase

    queue = config["queue"]
    dist = prepare_worker(config["warm"])
    rank = dist.get_rank()
    while True:
        command = [ray.get(queue.next.remote(POLL_S))] if rank == 0 else [None]
        dist.broadcast_object_list(command, src=0)
        match command[0]:
            case Stop():
                return
            case Idle():
                continue
            case RunPhase(job_id):
                run_phase(ray.get(queue.job.remote(job_id)))
                dist.barrier()
                if rank == 0:
                    ray.get(queue.finish.remote(job_id))
