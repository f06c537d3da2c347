"""PPO's update schedule over one step's rollouts: old log-probs first, then epochs x mini-batches of updates.

As verl and EasyR1 do it: the log-probs of the policy that sampled (``old_logp``) are computed once, with no
gradient, before any update; then the step's samples are cut into mini-batches and each epoch makes one
optimizer update per mini-batch. The first mini-batch of the first epoch is on-policy (ratio 1, nothing
clipped); every later one sees a policy the earlier updates moved, so the ratio leaves 1 and the clip
range acts (``clip_frac`` > 0). With one mini-batch and one epoch the ratio is 1 everywhere and the
clipped loss equals the plain policy gradient.

The schedule is framework-free: the caller passes functions for the log-probs, the loss and the update
(DeepSpeed's ``engine.backward``/``engine.step`` in training, a plain optimizer in the tests).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch

B = TypeVar("B")


def minibatch_count(n_samples: int, world: int, mini_batch_size: int | None) -> int:
    """Updates per epoch, the same on every rank: ``ceil(n_samples / mini_batch_size)`` (at most one per
    sample a rank holds, so no rank gets an empty mini-batch), 1 when ``mini_batch_size`` is None.

    ``minibatch_count(32, 2, 16)`` → 2; ``minibatch_count(32, 2, None)`` → 1; ``minibatch_count(3, 2, 1)``
    → 2 (a rank holds at most 2 of 3 samples).
    """
    if mini_batch_size is None:
        return 1
    if n_samples < 1 or world < 1 or mini_batch_size < 1:
        raise ValueError(
            f"need n_samples, world, mini_batch_size >= 1, got {n_samples}, {world}, {mini_batch_size}"
        )
    return min(math.ceil(n_samples / mini_batch_size), math.ceil(n_samples / world))


def split_even(items: Sequence[B], parts: int) -> list[list[B]]:
    """``items`` in ``parts`` contiguous slices whose sizes differ by at most one (earlier ones larger);
    some are empty when ``parts > len(items)``. ``split_even([1, 2, 3, 4, 5], 2)`` → ``[[1, 2, 3], [4, 5]]``."""
    size, extra = divmod(len(items), parts)
    out, start = [], 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        out.append(list(items[start:end]))
        start = end
    return out


def run_updates(
    batches: Sequence[B],
    epochs: int,
    forward: Callable[[B], tuple[torch.Tensor, Any]],
    loss: Callable[[B, tuple[torch.Tensor, Any], torch.Tensor], tuple[torch.Tensor, Any]],
    update: Callable[[torch.Tensor], None],
) -> list[Any]:
    """PPO updates over one step's mini-batches (module docstring).

    Args:
        batches: the step's mini-batches, in order.
        epochs: passes over them (>= 1).
        forward: the current policy on a mini-batch: its sampled tokens' log-probs ``[b, T]`` (with gradient)
            and anything else the loss needs (the token entropy).
        loss: ``(batch, forward(batch), old_logp) -> (loss, metrics)``.
        update: applies one loss (backward, optimizer step).

    Returns:
        The ``metrics`` of each update, ``epochs * len(batches)`` of them in order. With a single update the
        old log-probs are the current ones detached (the same values, without a second forward pass).
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    single = epochs == 1 and len(batches) == 1
    old = [None] * len(batches)
    if not single:
        with torch.no_grad():  # the policy that sampled, before any update
            old = [forward(batch)[0].detach() for batch in batches]
    out = []
    for _ in range(epochs):
        for batch, old_logp in zip(batches, old, strict=True):
            current = forward(batch)
            value, metrics = loss(batch, current, current[0].detach() if single else old_logp)
            update(value)
            out.append(metrics)
    return out
