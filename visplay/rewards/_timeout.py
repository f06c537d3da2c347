"""Call a function with a wall-clock timeout, from any thread.

``math_verify``'s own timeout uses ``signal.alarm``, which only works in the main thread; our graders run in
Ray Data / Ray Serve worker threads. :class:`TimeoutRunner` instead runs the call on a small pool of reusable
*daemon* threads and waits on it with a timeout.

Limits a caller must know: Python cannot kill a thread, so a timed-out call keeps running in the background
until it finishes (its worker is simply not reused until then, and a fresh worker serves the next call);
daemon threads never block interpreter exit. A call that holds the GIL inside one C operation (e.g. CPython's
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

    __slots__ = ("fn", "args", "done", "result", "error")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None


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
            keep_running = self._runner._offer_idle(self)
            job.done.set()
            if not keep_running:
                return


class TimeoutRunner:
    """Runs calls on reusable daemon threads and gives up waiting after a timeout.

    Thread-safe: many caller threads may use one runner at once; each call gets its own worker (an idle one
    if available, else a new one). At most ``max_idle`` finished workers are kept for reuse.
    """

    def __init__(self, max_idle: int = 8) -> None:
        """Args: max_idle: how many idle worker threads to keep alive between calls (>= 0)."""
        if max_idle < 0:
            raise ValueError(f"max_idle must be >= 0, got {max_idle}")
        self._max_idle = max_idle
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()

    def _offer_idle(self, worker: _Worker) -> bool:
        """Called by a worker after each job: True if it was kept for reuse, False if it should exit."""
        with self._lock:
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
            in the background and its result is dropped).

        Raises:
            ValueError: if ``timeout_s`` is not positive.
            Exception: whatever ``fn`` raised, if it finished in time.
        """
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        job = _Job(fn, args)
        self._take_worker().inbox.put(job)
        if not job.done.wait(timeout_s):
            return False, None
        if job.error is not None:
            raise job.error
        return True, job.result
