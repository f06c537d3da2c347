"""The trainer's side of weight sync: after an update, get the new weights into the rollout engines.

Every rank calls :meth:`TrainerWeightSync.push` (under ZeRO-3 the full parameters have to be gathered by
all ranks); only rank 0 talks to the rollout actors, through the transport ``grpo.weight_sync`` names
(:mod:`visplay.engine.transports`: the object store and a shared-memory file, or a collective broadcast).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from visplay.config import GRPOConfig
from visplay.engine.transports import ObjectStoreTransport, WeightTransport, make_transport
from visplay.engine.weight_names import WeightSyncError

log = logging.getLogger(__name__)


def full_weights(engine):
    """Context manager: inside it, every parameter of the DeepSpeed ``engine``'s module is whole on every
    rank (under ZeRO-3 all ranks must enter it together; other stages: nothing to do)."""
    import deepspeed

    return deepspeed.zero.GatheredParameters(
        list(engine.module.parameters()), modifier_rank=None, enabled=engine.zero_optimization_stage() == 3
    )


class TrainerWeightSync:
    """Pushes a DeepSpeed engine's weights into rollout actors (one instance per trainer process).

    Args:
        actors: the rollout actors to keep in sync.
        grpo: ``weight_sync`` picks the transport.
        rank: this process's trainer rank; the broadcast group is formed on rank 0's first push.
        version: the weights version the actors hold at the start (what their rollouts must carry).

    ``version`` is always the last version pushed (or the starting one): a rollout stamped otherwise came
    from an engine that Ray restarted, which holds its constructor's checkpoint. Such an engine is not in
    the broadcast group, so after a restart (:meth:`push` with ``after_restart``, or a broadcast that
    fails because a member died) pushes go through the object store for the rest of the phase.
    """

    def __init__(self, actors: Sequence[Any], grpo: GRPOConfig, rank: int, version: str) -> None:
        self.actors, self.grpo, self.rank, self.version = list(actors), grpo, rank, version
        self._transport: WeightTransport | None = None
        self.failed_broadcasts = 0
        """Broadcast pushes that failed (an engine died mid-push) and went through the object store."""

    def push(self, engine, version: str, after_restart: bool = False) -> None:
        """Every rank calls this; rank 0 pushes the full weights, labelled ``version``."""
        import torch.distributed as dist

        self.version = version
        if after_restart and not isinstance(self._transport, ObjectStoreTransport):
            self._transport = ObjectStoreTransport(self.actors)  # a restarted engine is in no group
        with full_weights(engine):
            if self.rank != 0:
                return
            if self._transport is None:
                self._transport = make_transport(self.grpo.weight_sync, self.actors, dist.get_backend())
            state = engine.module.state_dict()
            try:
                self._transport.push(state, version)
            except Exception as err:  # a dead member fails the collective, or its receive (an actor error)
                if isinstance(self._transport, ObjectStoreTransport) or isinstance(err, WeightSyncError):
                    raise
                # A member died mid-broadcast: its restart is not in the group; the object store reaches it.
                log.warning("%s; pushing through the object store from now on", err)
                self.failed_broadcasts += 1
                self._transport = ObjectStoreTransport(self.actors)
                self._transport.push(state, version)
