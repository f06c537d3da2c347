"""The GRPO worker group's coordinator (visplay.train.service.PhaseQueue) on its own: a real Ray actor driven
the way the driver and rank 0 drive it, with no workers (the workers are in tests/test_trainer_service.py)."""

from __future__ import annotations

import ray

from visplay.train.service import Idle, PhaseQueue, RunPhase, Stop


def test_a_phase_is_retried_after_a_group_failure_then_fails_and_the_next_one_runs(ray_local):
    queue = PhaseQueue.remote(2)  # two tries per phase
    first = ray.get(queue.submit.remote("job a"))
    assert ray.get(queue.next.remote(1.0)) == RunPhase(first)  # rank 0 of group 1 takes it
    assert ray.get(queue.job.remote(first)) == "job a"  # every rank fetches the job itself
    assert ray.get(queue.group_failed.remote("boom 1"))  # try 1 of 2 failed: worth a new group
    assert ray.get(queue.result.remote(first, 0.1)) == (False, None)  # not settled
    assert ray.get(queue.next.remote(1.0)) == RunPhase(first)  # group 2 gets the same phase again
    assert ray.get(queue.group_failed.remote("boom 2"))  # try 2 of 2 failed: settled with that error
    assert ray.get(queue.result.remote(first, 0.1)) == (True, "boom 2")

    assert not ray.get(queue.group_failed.remote("cannot start"))  # no phase in flight: the service gives up
    assert ray.get(queue.next.remote(0.1)) == Idle()  # nothing queued: the workers meet again later
    second = ray.get(queue.submit.remote("job b"))
    assert ray.get(queue.next.remote(1.0)) == RunPhase(second)
    ray.get(queue.finish.remote(second))
    assert ray.get(queue.result.remote(second, 0.1)) == (True, None)
    ray.get(queue.stop.remote())
    assert ray.get(queue.next.remote(1.0)) == Stop()
    ray.kill(queue)
