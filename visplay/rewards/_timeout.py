"""Call a function with a wall-clock timeout, from any thread.

``math_verify``'s own timeout uses ``signal.alarm``, which only works in the main thread; our graders run in
Ray Data / Ray Serve worker threads. :class:`TimeoutRunner` instead runs the call on a small pool of reusable
*daemon* threads and waits on it with a timeout.

Limits a caller must know: Python cannot kill a thread, so a timed-out call keeps running in the background
until it finishes (its worker is simply not reused until then, and a fresh worker serves the next call);
daemon threads never block interpreter exit. At most ``max_stuck`` such abandoned calls may run at once:
past that, :meth:`TimeoutRunner.call` gives up at once instead of starting one more thread. A call that holds the GIL inside one C operation (e.g. CPython's
big-integer ``9**9**9``) freezes every thread, the waiting one included, so no thread-based timeout can stop
it: such inputs must be rejected before the call (see ``visplay.rewards.grading``).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any


class _Job:
    """One call handed to a worker: the function, its arguments, and where the outcome lands."""

    __slots__ = ("fn", "args", "done", "result", "error", "finished", "abandoned")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self.finished = False  # set under the runner's lock when fn has returned
        self.abandoned = False  # set under the runner's lock when the caller stopped waiting first


class _Worker(threading.Thread):
    """A daemon thread that runs jobs from its own inbox, then offers itself back to the runner's idle list."""

    def __init__(self, runner: TimeoutRunner) -> None:
        super().__init__(name="visplay-timeout-worker", daemon=True)
        self.inbox: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._runner = runner

    def run(self) -> None:
        """Run jobs until the runner has enough idle workers, then exit."""
        while True:
            job = self.inbox.get()
            try:
                job.result = job.fn(*job.args)
            except BaseException as exc:  # handed back to the caller, who re-raises it
                job.error = exc
            keep_running = self._runner._offer_idle(self, job)
            job.done.set()
            if not keep_running:
                return


class TimeoutRunner:
    """Runs calls on reusable daemon threads and gives up waiting after a timeout.

    Thread-safe: many caller threads may use one runner at once; each call gets its own worker (an idle one
    if available, else a new one). At most ``max_idle`` finished workers are kept for reuse.
    """

    def __init__(self, max_idle: int = 8, max_stuck: int = 4) -> None:
        """Args:
        max_idle: how many idle worker threads to keep alive between calls (>= 0).
        max_stuck: how many timed-out calls may still be running before new calls are refused (>= 1).
        """
        if max_idle < 0 or max_stuck < 1:
            raise ValueError(f"need max_idle >= 0 and max_stuck >= 1, got {max_idle}, {max_stuck}")
        self._max_idle, self._max_stuck = max_idle, max_stuck
        self.stuck = 0
        """Timed-out calls still running now."""
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()

    def _offer_idle(self, worker: _Worker, job: _Job) -> bool:
        """Called by a worker after each job: True if it was kept for reuse, False if it should exit."""
        with self._lock:
            job.finished = True
            if job.abandoned:
                self.stuck -= 1
            if len(self._idle) < self._max_idle:
                self._idle.append(worker)
                return True
            return False

    def _take_worker(self) -> _Worker:
        """An idle worker, or a newly started one if none is idle."""
        with self._lock:
            if self._idle:
                return self._idle.pop()
        worker = _Worker(self)
        worker.start()
        return worker

    def call(self, fn: Callable[..., Any], *args: Any, timeout_s: float) -> tuple[bool, Any]:
        """Run ``fn(*args)`` on a worker thread and wait at most ``timeout_s`` seconds.

        Args:
            fn: the function to run.
            *args: its positional arguments.
            timeout_s: seconds to wait (> 0).

        Returns:
            ``(True, result)`` if ``fn`` finished in time; ``(False, None)`` if it did not (it keeps running
            in the background and its result is dropped) or if ``max_stuck`` calls are already stuck.

        Raises:
            ValueError: if ``timeout_s`` is not positive.
            Exception: whatever ``fn`` raised, if it finished in time.
        """
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        with self._lock:
            if self.stuck >= self._max_stuck:
                return False, None
        job = _Job(fn, args)
        self._take_worker().inbox.put(job)
        if not job.done.wait(timeout_s):
            with self._lock:
                if not job.finished:
                    job.abandoned = True
                    self.stuck += 1
                    return False, None
        if job.error is not None:
            raise job.error
        return True, job.result
