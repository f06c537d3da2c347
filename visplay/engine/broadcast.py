"""Weight sync by collective broadcast: trainer rank 0 sends each tensor straight into the engine workers.

The ``"file"`` path of :mod:`visplay.engine.weight_sync` moves a push through the Ray object store and a
file in shared memory (two host copies). The ``"broadcast"`` path skips both: the trainer's rank 0 and every
vLLM worker of every rollout engine form one extra process group (a *stateless* one: its own TCP store, not
the trainer's default group), and each tensor goes out in one ``broadcast`` from rank 0::

    trainer rank 0 (BroadcastSender)                        each engine worker (WeightSyncExtension)
    --------------------------------                        ----------------------------------------
    setup:  TCPStore(master) on a free port                 visplay_join_group(host, port, rank, ...)
            open the group as rank 0             ◄─ rendezvous ─►   opens the same group as rank 1..N
    push:   check names/shapes against the engines' own checkpoint (nothing is sent on a mismatch)
            actor.receive_weights.remote(specs)  ─────────► visplay_receive_broadcast(specs):
            for each tensor: cast, broadcast(t, root=0) ──►     empty buffer on the model's device,
                                                                 broadcast(buf, root=0) -> reload_weights
                                                            reset prefix + encoder caches

The backend is gloo on CPU (used in tests/test_weight_sync.py, so this exact code runs in CI) and NCCL on
GPUs, where tensors travel GPU to GPU. The NCCL variant has not been run yet: no GPU machine was lent to
this project so far (README "Status").

Order is the contract: the sender broadcasts ``specs`` in list order and the receiver feeds them to vLLM
in the same order. A receiver that fails part-way keeps receiving (and discards) the rest, so the sender
never blocks on a tensor nobody will take; the group's timeout bounds any other hang.
"""

from __future__ import annotations

import datetime
import logging
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from visplay.engine.weight_names import WeightSyncError, check_push_shapes, to_checkpoint_names

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

Backend = Literal["gloo", "nccl"]


@dataclass(frozen=True)
class TensorSpec:
    """One broadcast tensor: checkpoint name, shape and dtype name (e.g. ``"float32"``), msgpack-friendly."""

    name: str
    shape: tuple[int, ...]
    dtype: str


def open_group(host: str, port: int, rank: int, world_size: int, backend: Backend, timeout_s: float):
    """Join a process group of `world_size` ranks whose TCP store rank 0 hosts at ``host:port``.

    It is independent of ``torch.distributed``'s default group (a Ray Train worker already has one).
    Blocks until every rank has joined. Returns the backend object (``.broadcast(tensor, root)``).
    """
    import torch.distributed as dist

    timeout = datetime.timedelta(seconds=timeout_s)
    store = dist.TCPStore(host, port, world_size, is_master=rank == 0, timeout=timeout)
    if backend == "gloo":
        return dist.ProcessGroupGloo(store, rank, world_size, timeout)
    if backend == "nccl":
        options = dist.ProcessGroupNCCL.Options()
        options._timeout = timeout
        return dist.ProcessGroupNCCL(store, rank, world_size, options)
    raise ValueError(f"unknown collective backend {backend!r}; expected 'gloo' or 'nccl'")


def free_port() -> int:
    """A TCP port that is free on this host now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


def receive_into_engine(
    group, specs: Sequence[TensorSpec], device: torch.device
) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) pairs as they arrive from rank 0, in `specs` order (the engine's weights iterator)."""
    import torch

    for spec in specs:
        buffer = torch.empty(spec.shape, dtype=getattr(torch, spec.dtype), device=device)
        group.broadcast(buffer, 0).wait()
        yield spec.name, buffer


def drain(group, specs: Sequence[TensorSpec], device: torch.device) -> int:
    """Receive and discard `specs` (the rest of a push the engine stopped reading); return how many."""
    return sum(1 for _ in receive_into_engine(group, specs, device))


def receive_and_load(
    group, specs: Sequence[TensorSpec], device: torch.device, load: Callable[[Iterator], object]
) -> int:
    """Feed a push to ``load`` (e.g. vLLM's ``reload_weights``) as its tensors arrive; return how many it took.

    If ``load`` stops reading early or raises, the rest of the push is still received and discarded, so the
    sender is never left blocking. If the collective itself fails (a peer died, the group timed out),
    nothing more is received, since every further receive would wait out the timeout again; the error
    propagates either way.
    """
    taken, collective_failed = 0, False

    def stream() -> Iterator[tuple[str, torch.Tensor]]:
        nonlocal taken, collective_failed
        source = receive_into_engine(group, specs, device)
        while True:
            try:
                item = next(source)
            except StopIteration:
                return
            except Exception:
                collective_failed = True
                raise
            taken += 1
            yield item

    try:
        load(stream())
    finally:
        if not collective_failed:
            drain(group, specs[taken:], device)
    return taken


class BroadcastSender:
    """Trainer rank 0's end of the broadcast path to a set of rollout actors.

    Args:
        actors: :class:`visplay.engine.rollout.RolloutActor` handles (their engines need the worker extension).
        backend: ``"gloo"`` (CPU) or ``"nccl"`` (GPU; tensors must then be on this process's GPU).
        timeout_s: how long any rank waits for the others in a collective before it fails.

    The constructor forms the group (blocks until every engine worker has joined); :meth:`push` sends a
    full state dict. The group lives as long as this object's process: a new trainer forms a new one (the
    actors drop their old group when they join the new one).
    """

    def __init__(self, actors: Sequence, backend: Backend, timeout_s: float) -> None:
        import ray
        import torch

        self.actors = list(actors)
        self.backend = backend
        self.device = (
            torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
        )
        infos = ray.get([a.weight_sync_info.remote() for a in self.actors])
        self.expected_shapes = infos[0]["shapes"]
        self.dtype = getattr(torch, infos[0]["dtype"])
        if any(i["shapes"] != self.expected_shapes or i["dtype"] != infos[0]["dtype"] for i in infos):
            raise WeightSyncError(
                "rollout actors hold different architectures or dtypes; one push cannot serve all"
            )
        host, port = ray.util.get_node_ip_address(), free_port()
        world_size = 1 + sum(i["workers"] for i in infos)
        offsets = [1 + sum(i["workers"] for i in infos[:k]) for k in range(len(infos))]
        joins = [
            a.join_weight_group.remote(host, port, offset, world_size, backend, timeout_s)
            for a, offset in zip(self.actors, offsets, strict=True)
        ]
        started = time.perf_counter()
        self.group = open_group(host, port, 0, world_size, backend, timeout_s)
        ray.get(joins)
        log.info(
            "weight broadcast group: %d ranks (%s) at %s:%d, formed in %.2fs",
            world_size, backend, host, port, time.perf_counter() - started,
        )  # fmt: skip

    def push(self, state_dict: Mapping[str, torch.Tensor], version: str) -> float:
        """Broadcast a full state dict (runtime or checkpoint names) into every actor; return seconds.

        Raises:
            WeightSyncError: a weight missing or mis-shaped (checked before anything is sent).
            RuntimeError: an actor failed to load what it received (its error is chained).
        """
        import ray

        started = time.perf_counter()
        renamed = to_checkpoint_names(state_dict)
        check_push_shapes(self.expected_shapes, {n: tuple(t.shape) for n, t in renamed.items()})
        names = sorted(self.expected_shapes)
        dtype_name = str(self.dtype).removeprefix("torch.")
        specs = [TensorSpec(n, tuple(renamed[n].shape), dtype_name) for n in names]
        receives = [a.receive_weights.remote(specs, version) for a in self.actors]
        try:
            for name in names:
                tensor = renamed[name].detach().to(device=self.device, dtype=self.dtype).contiguous()
                self.group.broadcast(tensor, 0).wait()
        except Exception as err:  # a collective timed out: surface the receiver's own error if it has one
            ready, _ = ray.wait(receives, num_returns=len(receives), timeout=5)
            for ref in ready:
                ray.get(ref)
            raise RuntimeError(f"weight broadcast of {version} failed: {err}") from err
        ray.get(receives)
        return time.perf_counter() - started
