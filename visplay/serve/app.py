"""Ray Serve app: the evolved Reasoner behind an OpenAI-compatible ``/v1/chat/completions``.

    app = build_app(cfg.serve, checkpoint, version, iteration, seed=cfg.seed)
    serve.run(app, name="visplay", route_prefix="/")        # jobs/serve.py does this

Each replica holds one vLLM engine (built once in ``__init__``). Concurrent requests to a replica are
gathered by ``@serve.batch`` into one ``LLM.generate`` call (run in a thread so the replica's event loop
keeps accepting requests). Replicas autoscale between ``min_replicas`` and ``max_replicas`` on requests in
flight. Bad requests get a 4xx with an OpenAI-style error body (see :mod:`visplay.serve.openai_api`) and the
replica keeps serving; an engine failure is a 500 naming the error.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve

from visplay.config import Config, SamplingConfig, ServeConfig
from visplay.serve.openai_api import (
    ChatRequest,
    Limits,
    RequestError,
    chat_response,
    error_body,
    parse_chat_request,
)

log = logging.getLogger(__name__)
api = FastAPI(title="VisPlay Reasoner")


@dataclass(frozen=True)
class ModelInfo:
    """What is served, reported in every response under ``"visplay"`` and in the response headers."""

    checkpoint: str
    checkpoint_id: str
    iteration: int | None

    def metadata(self) -> dict[str, Any]:
        return {
            "checkpoint": self.checkpoint,
            "checkpoint_id": self.checkpoint_id,
            "iteration": self.iteration,
        }

    def headers(self) -> dict[str, str]:
        return {"x-visplay-checkpoint-id": self.checkpoint_id, "x-visplay-iteration": str(self.iteration)}


@serve.deployment
@serve.ingress(api)
class ReasonerServer:
    """One replica: one vLLM engine on the served checkpoint."""

    def __init__(self, cfg: ServeConfig, model: ModelInfo, seed: int) -> None:
        from visplay.engine.llm import build_llm

        self.cfg = cfg
        self.model = model
        self.limits = Limits(
            cfg.max_image_bytes,
            cfg.max_image_pixels,
            cfg.max_tokens,
            cfg.max_n,
            cfg.engine.max_images_per_prompt,
        )
        self.llm = build_llm(model.checkpoint, cfg.engine, seed=seed)
        self.generate_batch.set_max_batch_size(cfg.max_batch_size)
        self.generate_batch.set_batch_wait_timeout_s(cfg.batch_wait_timeout_s)
        log.info("serving %s (%s) pid %d", model.checkpoint, model.checkpoint_id[:12], os.getpid())

    @api.get("/v1/models")
    def models(self) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {"id": self.cfg.model_name, "object": "model", "owned_by": "visplay", **self.model.metadata()}
            ],
        }

    @api.post("/v1/chat/completions")
    async def chat_completions(self, request: Request) -> JSONResponse:
        raw = await request.body()
        try:
            if len(raw) > 2 * self.cfg.max_image_bytes + 65536:  # base64 grows data by 4/3
                raise RequestError(413, f"request body of {len(raw)} bytes is too large")
            try:
                body = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise RequestError(400, f"the body is not valid JSON ({err})") from None
            parsed = parse_chat_request(body, self.limits, self.cfg.add_reasoner_instruction)
        except RequestError as err:
            log.warning("refused request: %d %s", err.status, err.message)
            return JSONResponse(error_body(err.status, err.message), status_code=err.status)
        try:
            texts, reasons, prompt_tokens, completion_tokens = await self.generate_batch(parsed)
        except Exception as err:  # noqa: BLE001 - reported to the client, the replica stays up
            log.exception("generation failed")
            message = f"generation failed: {type(err).__name__}: {err}"
            return JSONResponse(error_body(500, message), status_code=500)
        response = chat_response(
            self.cfg.model_name, texts, reasons, prompt_tokens, completion_tokens, self.model.metadata()
        )
        return JSONResponse(response, headers=self.model.headers())

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def generate_batch(
        self, requests: list[ChatRequest]
    ) -> list[tuple[list[str], list[str], int, int]]:
        """One engine call for all requests gathered by Serve; per request: texts, finish reasons, token counts."""
        return await asyncio.to_thread(self._generate, requests)

    def _generate(self, requests: list[ChatRequest]) -> list[tuple[list[str], list[str], int, int]]:
        from visplay.engine.llm import sampling_params, vllm_prompt

        prompts = [vllm_prompt(r.prompt, list(r.images)) for r in requests]
        params = [
            sampling_params(
                SamplingConfig(temperature=r.temperature, top_p=r.top_p, max_tokens=r.max_tokens), r.n, r.seed
            )
            for r in requests
        ]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        return [
            (
                [c.text for c in out.outputs],
                [c.finish_reason or "stop" for c in out.outputs],
                len(out.prompt_token_ids or []),
                sum(len(c.token_ids) for c in out.outputs),
            )
            for out in outputs
        ]


def build_app(cfg: ServeConfig, model: ModelInfo, seed: int) -> serve.Application:
    """The Serve application: autoscaling replicas with the engine's resources."""
    return ReasonerServer.options(
        autoscaling_config={
            "min_replicas": cfg.min_replicas,
            "max_replicas": cfg.max_replicas,
            "target_ongoing_requests": cfg.target_ongoing_requests,
        },
        max_ongoing_requests=max(2 * cfg.max_batch_size, int(2 * cfg.target_ongoing_requests)),
        ray_actor_options={
            "num_cpus": cfg.engine.num_cpus,
            "num_gpus": cfg.engine.num_gpus,
            "resources": cfg.engine.resources,
        },
    ).bind(cfg, model, seed)


def resolve_model(cfg: Config) -> ModelInfo:
    """What to serve: ``serve.checkpoint`` if set, else the newest finished Reasoner of this run, else the base.

    Raises FileNotFoundError naming the path when the chosen checkpoint is not an HF model directory.
    """
    from visplay.checkpoints import model_version
    from visplay.phases import Phase

    if cfg.serve.checkpoint is not None:
        path, iteration = cfg.serve.checkpoint, None
    else:
        path, iteration = cfg.models.base, 0
        for it in range(cfg.iterations, 0, -1):
            phase = Phase(cfg.run_dir, it, "train_reasoner")
            done = phase.done()
            if done is not None:  # its checkpoint is stored relative to the run directory (a run can move)
                path, iteration = phase.resolve(done["checkpoint"]), it
                break
    if not (Path(path) / "config.json").is_file():
        raise FileNotFoundError(f"no HF checkpoint to serve at {path}")
    return ModelInfo(checkpoint=str(path), checkpoint_id=model_version(path), iteration=iteration)
