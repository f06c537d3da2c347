"""The trainer's side of weight sync: after an update, get the new weights into the rollout engines.

Every rank calls :meth:`TrainerWeightSync.push` (under ZeRO-3 the full parameters have to be gathered by
all ranks); only rank 0 talks to the rollout actors, by one of two methods (``grpo.weight_sync``):

* ``file``: rank 0 copies the state dict to the CPU and ``ray.put``s it once; each actor fetches it from
  the object store and reloads its engine from a shared-memory file (:mod:`visplay.engine.weight_sync`);
* ``broadcast``: rank 0 broadcasts each tensor over a process group it shares with every engine worker
  (:mod:`visplay.engine.broadcast`; gloo on CPU, NCCL on GPU), no CPU copy and no object store.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from visplay.config import GRPOConfig


class TrainerWeightSync:
    """Pushes a DeepSpeed engine's weights into rollout actors (one instance per trainer process).

    Args:
        actors: the rollout actors to keep in sync.
        grpo: ``weight_sync`` picks the method, ``weight_sync_timeout_s`` bounds a broadcast.
        rank: this process's trainer rank; the broadcast group is formed on rank 0's first push.
    """

    def __init__(self, actors: Sequence[Any], grpo: GRPOConfig, rank: int) -> None:
        self.actors, self.grpo, self.rank = list(actors), grpo, rank
        self._sender = None

    def push(self, engine, version: str) -> None:
        """Every rank calls this; rank 0 pushes the full weights, labelled ``version``."""
        import deepspeed
        import ray
        import torch.distributed as dist

        params = list(engine.module.parameters())
        with deepspeed.zero.GatheredParameters(
            params, modifier_rank=None, enabled=engine.zero_optimization_stage() == 3
        ):
            if self.rank != 0:
                return
            state = engine.module.state_dict()
            if self.grpo.weight_sync == "broadcast":
                if self._sender is None:
                    from visplay.engine.broadcast import BroadcastSender

                    self._sender = BroadcastSender(
                        self.actors, dist.get_backend(), self.grpo.weight_sync_timeout_s
                    )
                self._sender.push(state, version)
                return
            cpu = {k: v.detach().to("cpu", copy=True) for k, v in state.items()}
        ref = ray.put(cpu)
        ray.get([a.push_weights.remote([ref], version) for a in self.actors])
