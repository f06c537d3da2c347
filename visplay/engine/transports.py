"""The trainer's end of a weight push: one class per way of getting a full state dict into running engines.

Both take the state dict of trainer rank 0 (already gathered under ZeRO-3, see :mod:`visplay.train.sync`)
and leave every rollout actor holding it under ``version``:

* :class:`ObjectStoreTransport` (``weight_sync.kind: file``): one CPU copy, ``ray.put`` once; each actor
  fetches it and reloads its engine from a shared-memory safetensors file (:mod:`visplay.engine.weight_sync`).
  Works with any actor at any time, including one Ray has just restarted.
* :class:`BroadcastTransport` (``weight_sync.kind: broadcast``): rank 0 broadcasts each tensor over a process
  group it forms with every engine worker on its first push (:mod:`visplay.engine.broadcast`; gloo on CPU,
  NCCL GPU to GPU), no CPU copy and no object store. A restarted actor is not in the group.

:func:`make_transport` picks the class from the config.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from visplay.config import BroadcastWeightSync, FileWeightSync

if TYPE_CHECKING:
    import torch


class WeightTransport(Protocol):
    """Pushes a full state dict (runtime or checkpoint names) into every rollout actor, labelled ``version``."""

    def push(self, state: Mapping[str, torch.Tensor], version: str) -> None: ...


class ObjectStoreTransport:
    """Through the Ray object store and a shared-memory file per engine (one CPU copy of the weights)."""

    def __init__(self, actors: Sequence[Any]) -> None:
        self.actors = list(actors)

    def push(self, state: Mapping[str, torch.Tensor], version: str) -> None:
        import ray

        ref = ray.put({k: v.detach().to("cpu", copy=True) for k, v in state.items()})
        ray.get([a.push_weights.remote([ref], version) for a in self.actors])


class BroadcastTransport:
    """By collective broadcast from trainer rank 0 to every engine worker (the group is formed lazily)."""

    def __init__(self, actors: Sequence[Any], backend: str, timeout_s: float) -> None:
        self.actors, self.backend, self.timeout_s = list(actors), backend, timeout_s
        self._sender = None

    def push(self, state: Mapping[str, torch.Tensor], version: str) -> None:
        if self._sender is None:
            from visplay.engine.broadcast import BroadcastSender

            self._sender = BroadcastSender(self.actors, self.backend, self.timeout_s)
        self._sender.push(state, version)


def make_transport(
    settings: FileWeightSync | BroadcastWeightSync, actors: Sequence[Any], backend: str
) -> WeightTransport:
    """The transport ``settings`` names; ``backend`` is the trainer's collective backend (for broadcast)."""
    if isinstance(settings, BroadcastWeightSync):
        return BroadcastTransport(actors, backend, settings.timeout_s)
    return ObjectStoreTransport(actors)
