"""Rollout actors: long-lived vLLM engines that GRPO samples from and pushes new weights into.

A :class:`RolloutActor` is a Ray actor that starts one vLLM engine in ``__init__`` (40-120 s on CPU) and
then serves for a whole training phase:

* :meth:`RolloutActor.generate` samples ``n`` completions per :class:`RolloutRequest` (rendered prompt text
  with the image placeholder, encoded image bytes, per-request seed -> reproducible) and returns one
  :class:`Rollout` per request, stamped with the weights ``version`` that produced it;
* :meth:`RolloutActor.push_weights` loads the trainer's new weights into the running engine (no restart),
  through :mod:`visplay.engine.weight_sync`::

      trainer rank 0: ref = ray.put(model.state_dict())
                      ray.get([a.push_weights.remote([ref], version) for a in actors])
      each actor:     ray.get(ref) -> state dict -> /dev/shm/....safetensors -> engine reload -> delete file

  or, with ``grpo.weight_sync.kind: broadcast``, receives them tensor by tensor from the trainer's rank 0 over a
  process group (:meth:`RolloutActor.join_weight_group` once, :meth:`RolloutActor.receive_weights` per
  push; :mod:`visplay.engine.broadcast`);
* :meth:`RolloutActor.sequence_logprobs` scores a given completion with the engine (prompt log-probs), used
  to check that a push really changed what the engine computes, and for debugging train/infer mismatch.

Ray runs one method of an actor at a time, so a push never overlaps a generation: every rollout comes from
exactly the weights its ``version`` names.

Restarts: with ``max_restarts > 0`` Ray restarts a crashed actor by running ``__init__`` again, i.e. the
restarted engine holds the *constructor's* checkpoint and version, not the last pushed weights. Every
:class:`Rollout` carries its ``version``, and every caller checks it: the GRPO trainer pushes its current
weights again and redoes the step's rollouts (``visplay.train.grpo``), a frozen engine is re-loaded from
its checkpoint (:func:`generate_frozen`), the generation stage fails the batch
(``visplay.engine.stage.RolloutEngineStage``). Calls are retried on the restarted actor.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray

from visplay.config import EngineConfig, SamplingConfig
from visplay.engine.llm import build_llm, decode_image, restart_if_engine_dies, sampling_params, vllm_prompt
from visplay.engine.weight_sync import EXTENSION_CLS, WeightSync

if TYPE_CHECKING:
    import torch
    from ray.actor import ActorHandle

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RolloutRequest:
    """One prompt to sample from.

    Attributes:
        prompt: rendered prompt text with one ``<|vision_start|><|image_pad|><|vision_end|>`` placeholder
            per image (:func:`visplay.prompts.render_prompt`); vLLM expands the pad to the image's tokens.
        image: the encoded image (PNG/JPEG bytes), or a list of them (evaluation: several, or none for a
            text-only question).
        seed: sampling seed of this request; the same request, sampling config, ``n`` and weights give the
            same completions on any actor.
    """

    prompt: str
    image: bytes | list[bytes]
    seed: int


@dataclass(frozen=True)
class Rollout:
    """The ``n`` completions sampled for one :class:`RolloutRequest`.

    Attributes:
        texts: decoded completions.
        token_ids: completion token ids, one list per completion (EOS included when generation stopped on it).
        prompt_token_ids: the prompt ids as vLLM expanded them (one ``<|image_pad|>`` per image token), i.e.
            exactly the ids a transformers processor produces for the same prompt text and image; with the
            processor's ``pixel_values``/``image_grid_thw`` they rebuild the sequence the engine sampled from.
            Do not feed them back to vLLM together with the image: vLLM would expand the pads a second time.
        version: weights version of the engine that sampled them (the constructor's or the last pushed one).
    """

    texts: list[str]
    token_ids: list[list[int]]
    prompt_token_ids: list[int]
    version: str


@dataclass(frozen=True)
class ProcessIds:
    """Process ids of an actor and of its engine's workers (they stay the same across weight pushes)."""

    actor: int
    engine_workers: tuple[int, ...]


class RolloutActor:
    """One vLLM engine for rollouts that accepts new weights while running (use through Ray, see module doc).

    Args:
        checkpoint: HF model directory the engine starts from (fixes architecture, tokenizer, processor).
        version: weights version of ``checkpoint`` (e.g. :func:`visplay.checkpoints.model_version`).
        engine: engine settings; ``dtype`` is kept for every push (weights are cast to it).
        seed: engine seed (only used by requests without a seed; every :class:`RolloutRequest` has one).
    """

    def __init__(self, checkpoint: str, version: str, engine: EngineConfig, seed: int) -> None:
        from visplay import console

        console.setup(verbose=True)  # this actor's own process: its INFO lines (starts, pushes) reach its log
        started = time.perf_counter()
        self.checkpoint = str(checkpoint)
        self._version = version
        self.llm = build_llm(checkpoint, engine, seed=seed, worker_extension_cls=EXTENSION_CLS)
        self.sync = WeightSync(self.llm, checkpoint)
        self.tokenizer = self.llm.get_tokenizer()
        log.info(
            "rollout engine %s ready in %.1fs (pid %d, dtype %s)",
            version[:12],
            time.perf_counter() - started,
            os.getpid(),
            self.sync.dtype,
        )

    def generate(self, requests: list[RolloutRequest], sampling: SamplingConfig, n: int) -> list[Rollout]:
        """Sample ``n`` completions for each request with the current weights; one :class:`Rollout` each."""
        if not requests:
            return []
        prompts = [vllm_prompt(request.prompt, request.image) for request in requests]
        params = [sampling_params(sampling, n, request.seed) for request in requests]
        with restart_if_engine_dies("rollout"):
            outputs = self.llm.generate(prompts, params, use_tqdm=False)
        return [
            Rollout(
                texts=[c.text for c in out.outputs],
                token_ids=[list(c.token_ids) for c in out.outputs],
                prompt_token_ids=list(out.prompt_token_ids),
                version=self._version,
            )
            for out in outputs
        ]

    def push_weights(
        self, state_dict: Mapping[str, torch.Tensor] | Sequence[ray.ObjectRef], version: str
    ) -> float:
        """Load a full state dict into the running engine; return the seconds it took in this actor.

        How to pass it (both travel through the Ray object store):

        * ``actor.push_weights.remote([ref], version)`` with ``ref = ray.put(state_dict)`` - recommended:
          one ``ray.put`` serves any number of actors, and the object-store fetch is done here (and counted
          in the returned seconds);
        * ``actor.push_weights.remote(ref, version)`` or ``actor.push_weights.remote(state_dict, version)`` -
          Ray hands the method the resolved dict (a plain dict is put into the store once per call).

        Names may be transformers runtime names (``model.language_model.*``, from ``state_dict()``) or
        checkpoint names; every weight of the engine's checkpoint must be present with its shape. Tensors
        are cast to the engine dtype. ``version()`` returns ``version`` afterwards.

        Raises:
            visplay.engine.weight_names.WeightSyncError: missing/mis-shaped weights (engine unchanged).
            TypeError: for a list that is not exactly one ObjectRef.
        """
        started = time.perf_counter()
        if isinstance(state_dict, (list, tuple)):
            if len(state_dict) != 1 or not isinstance(state_dict[0], ray.ObjectRef):
                raise TypeError("push_weights takes a state dict or a one-element list [ObjectRef]")
            state_dict = ray.get(state_dict[0])
        with restart_if_engine_dies("rollout"):
            report = self.sync.push_state_dict(state_dict)
        self._version = version
        seconds = time.perf_counter() - started
        log.info(
            "pushed weights %s: %d tensors, %.1f MB, %.3fs (write %.3fs, load %.3fs)",
            short_version(version),
            report.tensors,
            report.bytes / 1e6,
            seconds,
            report.write_seconds,
            report.load_seconds,
        )
        return seconds

    def weight_sync_info(self) -> dict[str, Any]:
        """What a broadcast sender needs: checkpoint weight shapes, engine dtype name, number of workers."""
        return {
            "shapes": self.sync.expected_shapes,
            "dtype": str(self.sync.dtype).removeprefix("torch."),
            "workers": self.llm.llm_engine.vllm_config.parallel_config.world_size,
        }

    def join_weight_group(
        self, host: str, port: int, rank_offset: int, world_size: int, backend: str, timeout_s: float
    ) -> list[int]:
        """Have every engine worker join the trainer's broadcast group; return their ranks (blocks until formed)."""
        return list(
            self.llm.collective_rpc(
                "visplay_join_group", args=(host, port, rank_offset, world_size, backend, timeout_s)
            )
        )

    def receive_weights(self, specs: Sequence[Any], version: str) -> float:
        """Receive one push broadcast by the trainer (:class:`visplay.engine.broadcast.BroadcastSender`).

        ``specs`` (name, shape, dtype, in send order) were checked by the sender against this engine's
        checkpoint. Returns the seconds spent here; ``version()`` returns ``version`` afterwards.
        """
        started = time.perf_counter()
        plain = [
            [s.name, list(s.shape), s.dtype] for s in specs
        ]  # collective_rpc arguments go through msgpack
        with restart_if_engine_dies("rollout"):
            counts = self.llm.collective_rpc("visplay_receive_broadcast", args=(plain,))
            self.sync.invalidate_caches()
        self._version = version
        seconds = time.perf_counter() - started
        log.info(
            "received weights %s: %d tensors by broadcast, %.3fs",
            short_version(version),
            min(counts),
            seconds,
        )
        return seconds

    def reload_from_checkpoint(self, path: str, version: str) -> float:
        """Reload the running engine's weights from an HF directory (same architecture); return seconds.

        Only the weights are read; tokenizer, processor and config stay those of the constructor's checkpoint.
        """
        with restart_if_engine_dies("rollout"):
            report = self.sync.load_checkpoint(path)
        self._version = version
        return report.seconds

    def sequence_logprobs(self, prompt: str, image: bytes, completion_token_ids: list[int]) -> list[float]:
        """Log-prob of each completion token given the prompt, image and earlier completion tokens.

        The engine scores ``prompt + completion`` in one prefill (vLLM prompt log-probs, from the raw
        logits: no temperature or top-p applied), and the completion part is returned, one float per token.
        """
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        completion = [int(t) for t in completion_token_ids]
        if not completion:
            return []
        # The prompt goes in unexpanded (one <|image_pad|>): vLLM expands it with the image, as for text.
        prompt_ids = list(self.tokenizer.encode(prompt, add_special_tokens=False))
        tokens = TokensPrompt(
            prompt_token_ids=prompt_ids + completion, multi_modal_data={"image": decode_image(image)}
        )
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        with restart_if_engine_dies("rollout"):
            (out,) = self.llm.generate([tokens], params, use_tqdm=False)
        scored = list(out.prompt_token_ids)
        if scored[-len(completion) :] != completion:
            raise RuntimeError("vLLM changed the completion tokens while expanding the image placeholder")
        entries = out.prompt_logprobs[-len(completion) :]
        return [entry[token].logprob for entry, token in zip(entries, completion, strict=True)]

    def version(self) -> str:
        """Weights version the engine holds now."""
        return self._version

    def pids(self) -> ProcessIds:
        """Process ids of this actor and its engine workers (unchanged by pushes; a restart changes them)."""
        return ProcessIds(actor=os.getpid(), engine_workers=tuple(self.sync.worker_pids()))


RemoteRolloutActor = ray.remote(RolloutActor)
"""The Ray actor class: ``RemoteRolloutActor.options(**rollout_actor_options(cfg)).remote(...)``."""


def rollout_actor_options(engine: EngineConfig) -> dict[str, Any]:
    """Ray actor options for one rollout actor: resources and fault tolerance from the engine config.

    ``num_cpus``/``num_gpus`` reserve the engine's resources (on a GPU cluster ``num_gpus`` should equal
    ``tensor_parallel_size``: vLLM's workers inherit the actor's visible GPUs). Every method is idempotent
    for its arguments (seeded sampling, full-state pushes), so calls are retried on a restarted actor.
    """
    return {
        "num_cpus": engine.num_cpus,
        "num_gpus": engine.num_gpus,
        "resources": engine.resources,
        "max_restarts": engine.max_restarts,
        "max_task_retries": -1 if engine.max_restarts > 0 else 0,
    }


def start_rollout_actors(
    checkpoint: str | Path, version: str, engine: EngineConfig, seed: int, count: int
) -> list[ActorHandle]:
    """Start ``count`` rollout actors on ``checkpoint`` and wait until every engine is up.

    Actor ``i`` gets engine seed ``seed + i`` (per-request seeds decide sampling anyway). Blocks for the
    engines' start (40-120 s each on CPU; they start in parallel when resources allow) and re-raises the
    first start-up error.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    options = rollout_actor_options(engine)
    actors = [
        RemoteRolloutActor.options(**options).remote(str(checkpoint), version, engine, seed + i)
        for i in range(count)
    ]
    ray.get([actor.version.remote() for actor in actors])
    return actors


def load_checkpoint_into(actors: Sequence[ActorHandle], checkpoint: str | Path, version: str) -> bool:
    """Make every actor hold ``checkpoint``'s weights under ``version``; load only where they differ.

    Each engine reads the checkpoint's files itself (:meth:`RolloutActor.reload_from_checkpoint`): nothing
    passes through the driver, whose memory stays flat at any model size (a 7B checkpoint is 15 GB).
    Returns True when something was loaded. Raises FileNotFoundError naming the checkpoint without weights.
    """
    stale = [
        a for a, v in zip(actors, ray.get([a.version.remote() for a in actors]), strict=True) if v != version
    ]
    if not stale:
        return False
    if not any(Path(checkpoint).glob("*.safetensors")):
        raise FileNotFoundError(f"no *.safetensors weights in checkpoint {checkpoint}")
    ray.get([a.reload_from_checkpoint.remote(str(checkpoint), version) for a in stale])
    log.info("loaded %s (%s) into %d rollout actor(s)", checkpoint, version[:12], len(stale))
    return True


def generate_frozen(
    actor: ActorHandle, requests: list[RolloutRequest], sampling: SamplingConfig, n: int, checkpoint: str,
    version: str, attempts: int = 3,
) -> tuple[list[Rollout], int]:  # fmt: skip
    """Rollouts of a frozen engine that must hold ``checkpoint`` (``version``), and how many times it had to
    be re-loaded: an engine that Ray restarted answers with its constructor's weights, so it is re-loaded
    from ``checkpoint`` and asked again. Raises after ``attempts`` re-loads, naming the engine."""
    import ray

    for reloads in range(attempts + 1):
        rollouts = ray.get(actor.generate.remote(requests, sampling, n))
        wrong = sorted({r.version for r in rollouts} - {version})
        if not wrong:
            return rollouts, reloads
        if reloads == attempts:
            break
        log.warning(
            "frozen engine %s answered with %s, not %s: re-loading %s", actor, wrong, version, checkpoint
        )
        ray.get(actor.reload_from_checkpoint.remote(checkpoint, version))
    raise RuntimeError(
        f"frozen engine {actor} still answers with {wrong} after {attempts} re-loads of {checkpoint}"
    )


def generate_frozen_on(
    actors: Sequence[ActorHandle], requests: list[RolloutRequest], sampling: SamplingConfig, n: int,
    checkpoint: str, version: str,
) -> tuple[list[Rollout], int]:  # fmt: skip
    """:func:`generate_frozen` spread over several frozen engines that hold the same ``checkpoint``: request
    ``i`` goes to engine ``i % len(actors)``, all engines at once; the rollouts come back in request order
    (seeded requests sample the same on any engine) with the re-loads of all engines added up."""
    if len(actors) == 1:
        return generate_frozen(actors[0], requests, sampling, n, checkpoint, version)
    from concurrent.futures import ThreadPoolExecutor

    shards = [requests[i :: len(actors)] for i in range(len(actors))]
    busy = [(a, s) for a, s in zip(actors, shards, strict=True) if s]  # empty shards are the last ones
    if not busy:
        return [], 0
    with ThreadPoolExecutor(len(busy)) as pool:
        parts = list(
            pool.map(lambda job: generate_frozen(job[0], job[1], sampling, n, checkpoint, version), busy)
        )
    rollouts: list[Rollout] = [None] * len(requests)  # type: ignore[list-item]
    for i, (part, _) in enumerate(parts):
        rollouts[i :: len(actors)] = part
    return rollouts, sum(reloads for _, reloads in parts)


def short_version(version: str) -> str:
    """A version for log lines: the content id's first 12 characters and any ``+role-stepN`` label."""
    base, plus, label = version.partition("+")
    return base[:12] + plus + label
