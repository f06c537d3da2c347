"""The evolved Reasoner behind Ray Serve LLM: vLLM's OpenAI layer, with our checks in front of it.

    app = build_app(cfg.serve, model, seed=cfg.seed)
    serve.run(app, name="visplay", route_prefix="/")        # jobs/serve.py does this

Two deployments, composed as Ray Serve LLM documents it (``ray.serve.llm.ingress``):

* ``LLMServer`` replicas (the library's), one vLLM engine each, autoscaled between ``serve.min_replicas``
  and ``serve.max_replicas``. vLLM's own OpenAI layer does the wire format: streaming (with usage at the end
  when ``stream_options.include_usage``), logprobs, stop sequences, the chat template, text-only and
  multi-image prompts (``limit_mm_per_prompt``), continuous batching. Serve bounds each replica's queue
  (``max_queued_requests``) and replaces a replica whose engine fails its health check.
* :class:`ReasonerIngress`, a subclass of the library's ``OpenAiIngress`` (its supported extension point),
  serving ``/v1/chat/completions`` and ``/v1/models`` only. Per request it checks the API key
  (constant-time, against the key's SHA-256), reads the body up to ``serve.max_body_bytes`` while it
  arrives, then, in a worker thread, parses strict JSON and checks it
  (:func:`visplay.serve.chat_request.check_chat_body`: data-URL images of the training reader's formats
  within the pixel limits, bounded ``n``/``max_tokens``, the Reasoner's instruction appended as in
  training). Responses carry the model id (``serve.model_name``) and the ``x-visplay-checkpoint-id`` /
  ``x-visplay-iteration`` headers, never the checkpoint's path. Every failure is an OpenAI error object:
  4xx for the request's own faults, 503 with ``Retry-After`` when the engine queue is full or the engine
  is being replaced, 504 past ``serve.request_timeout_s``.

When a call to the engine fails (its replica died, or it answered 5xx), the ingress answers 503 and probes
the engine's health until a replica answers again; meanwhile new requests get 503 at once instead of
waiting on a replica that Serve is still starting.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from ray import serve
from ray.serve.llm import LLMConfig, LLMServer
from ray.serve.llm.ingress import OpenAiIngress, make_fastapi_ingress

from visplay.config import Config, ServeConfig
from visplay.serve.chat_request import ApiError, Limits, check_chat_body, error_body, parse_json

log = logging.getLogger(__name__)

ENDPOINTS = {
    "chat": lambda app: app.post("/v1/chat/completions"),
    "models": lambda app: app.get("/v1/models"),
    "model_data": lambda app: app.get("/v1/models/{model:path}"),
    "not_served": lambda app: app.api_route(
        "/{path:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"]
    ),
}
"""The routes served (the library's default map also has completions, embeddings, score, tokenize...);
anything else is a 404 in the OpenAI error format."""


@dataclass(frozen=True)
class ModelInfo:
    """What is served: reported in response headers and ``/v1/models``, its path only in the server log."""

    checkpoint: str
    checkpoint_id: str
    iteration: int | None

    def headers(self) -> dict[str, str]:
        return {"x-visplay-checkpoint-id": self.checkpoint_id, "x-visplay-iteration": str(self.iteration)}


@dataclass(frozen=True)
class IngressSettings:
    """What the ingress replicas need (picklable; bound into the deployment)."""

    model_name: str
    model: ModelInfo
    limits: Limits
    add_reasoner_instruction: bool
    max_body_bytes: int
    request_timeout_s: float
    retry_after_s: int
    api_key_sha256: str | None
    """SHA-256 hex digest of the API key; None: no key required."""


class ReasonerIngress(OpenAiIngress):
    """The OpenAI ingress with the project's checks, headers and engine-health handling (module docstring)."""

    def __init__(self, llm_deployments, model_cards, *, settings: IngressSettings, **kwargs: Any) -> None:
        super().__init__(llm_deployments, model_cards, **kwargs)
        self.settings = settings
        self._engine = llm_deployments[settings.model_name]
        self._probe: asyncio.Task | None = None
        log.info(
            "ingress for %s (%s), pid %d", settings.model_name, settings.model.checkpoint_id, os.getpid()
        )

    # --- routes ------------------------------------------------------------------------------------

    async def chat(self, request: Request) -> Response:
        try:
            self._authorize(request)
            raw = await self._read_body(request)
            body = await asyncio.to_thread(self._checked_body, raw)  # image decoding off the event loop
            if self._probe is not None:
                raise self._unavailable("the engine is being replaced")
            response = await self._call_engine(body, request)
        except ApiError as err:
            return _error_response(err)
        response.headers.update(self.settings.model.headers())
        return response

    async def models(self, request: Request) -> Response:
        try:
            self._authorize(request)
        except ApiError as err:
            return _error_response(err)
        return JSONResponse({"object": "list", "data": [self._card()]}, headers=self.settings.model.headers())

    async def model_data(self, model: str, request: Request) -> Response:
        try:
            self._authorize(request)
            self._check_model(model)
        except ApiError as err:
            return _error_response(err)
        return JSONResponse(self._card(), headers=self.settings.model.headers())

    async def not_served(self, path: str) -> Response:
        return _error_response(ApiError(404, f"no route /{path}; served: /v1/chat/completions, /v1/models"))

    # --- steps -------------------------------------------------------------------------------------

    def _authorize(self, request: Request) -> None:
        expected = self.settings.api_key_sha256
        if expected is None:
            return
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        presented = hashlib.sha256(key.strip().encode()).hexdigest()
        if scheme.lower() != "bearer" or not hmac.compare_digest(presented, expected):
            raise ApiError(401, "missing or wrong API key (send 'Authorization: Bearer <key>')")

    def _check_model(self, model: Any) -> None:
        if model != self.settings.model_name:
            raise ApiError(404, f"no model {model!r}; this server serves {self.settings.model_name!r}")

    async def _read_body(self, request: Request) -> bytes:
        """The body, refused with 413 as soon as it passes ``max_body_bytes`` (declared or counted)."""
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise ApiError(413, f"the request body of {declared} bytes is larger than {limit} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"the request body is larger than {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def _checked_body(self, raw: bytes) -> Any:
        """Strict JSON, our checks, then the library's own request model (its ValidationError is a 400)."""
        from ray.serve.llm.openai_api_models import ChatCompletionRequest

        s = self.settings
        body = check_chat_body(parse_json(raw), s.limits, s.add_reasoner_instruction)
        if body.get("model") is not None:
            self._check_model(body["model"])
        try:
            return ChatCompletionRequest.model_validate({**body, "model": s.model_name})
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(x) for x in first.get("loc", ()))
            raise ApiError(400, f"invalid request: {first.get('msg')} at {where or 'body'}") from None

    async def _call_engine(self, body: Any, request: Request) -> Response:
        """The library's request path, bounded in time; engine trouble becomes 503 and starts the probe."""
        from ray.exceptions import RayError

        # What the library's request path raises for an engine's error answer (it has no public alias).
        from ray.llm._internal.serve.core.configs.openai_api_models import OpenAIHTTPException
        from ray.serve.exceptions import BackPressureError

        try:
            async with asyncio.timeout(self.settings.request_timeout_s):
                return await self._process_llm_request(body, call_method="chat", raw_request=request)
        except TimeoutError:
            raise ApiError(504, f"no response within {self.settings.request_timeout_s:g} s") from None
        except BackPressureError:
            raise self._unavailable("the engine queue is full") from None
        except OpenAIHTTPException as err:
            if err.status_code < 500:
                raise ApiError(err.status_code, err.message) from None
            log.error("engine error %d: %s", err.status_code, err.message)
            self._start_probe()
            raise self._unavailable(f"engine error: {err.message}") from None
        except RayError as err:  # the replica died, or raised (vLLM's EngineDeadError when its core died)
            log.error("engine call failed: %s", str(err).splitlines()[-1] if str(err) else type(err).__name__)
            self._start_probe()
            raise self._unavailable("the engine failed and is being replaced") from None

    def _unavailable(self, why: str) -> ApiError:
        return ApiError(503, f"{why}; retry later", retry_after=self.settings.retry_after_s)

    def _start_probe(self) -> None:
        if self._probe is None:
            self._probe = asyncio.get_running_loop().create_task(self._probe_until_healthy())

    async def _probe_until_healthy(self) -> None:
        """Ask an engine replica for its health until one answers (Serve starts a new replica meanwhile)."""
        while True:
            try:
                await asyncio.wait_for(self._engine.check_health.remote(), timeout=10)
                break
            except Exception as err:  # noqa: BLE001 - any failure means: not yet
                log.info("engine not healthy yet (%s: %s)", type(err).__name__, err)
                await asyncio.sleep(2)
        log.info("engine healthy again")
        self._probe = None

    def _card(self) -> dict[str, Any]:
        m = self.settings.model
        return {
            "id": self.settings.model_name, "object": "model", "owned_by": "visplay",
            "checkpoint_id": m.checkpoint_id, "iteration": m.iteration,
        }  # fmt: skip


def _error_response(err: ApiError) -> JSONResponse:
    if err.status >= 500:
        log.warning("answered %d: %s", err.status, err.message)
    headers = {"Retry-After": str(err.retry_after)} if err.retry_after is not None else None
    return JSONResponse(error_body(err.status, err.message), status_code=err.status, headers=headers)


def llm_config(cfg: ServeConfig, model: ModelInfo, seed: int) -> LLMConfig:
    """Ray Serve LLM's config of the engine replicas: our engine settings (the same vLLM arguments as our
    own engines), one placement bundle per replica with the engine's resources, autoscaling and the queue
    bound."""
    from visplay.engine.llm import engine_kwargs

    engine = cfg.engine
    bundle = {
        "CPU": engine.num_cpus,
        **({"GPU": engine.num_gpus} if engine.num_gpus else {}),
        **engine.resources,
    }
    return LLMConfig(
        model_loading_config={"model_id": cfg.model_name, "model_source": model.checkpoint},
        engine_kwargs=engine_kwargs(engine, seed),
        placement_group_config={"bundles": [bundle]},
        deployment_config={
            "autoscaling_config": {
                "min_replicas": cfg.min_replicas,
                "max_replicas": cfg.max_replicas,
                "target_ongoing_requests": cfg.target_ongoing_requests,
            },
            "max_ongoing_requests": cfg.max_ongoing_requests,
            "max_queued_requests": cfg.max_queued_requests,
            "ray_actor_options": {"num_cpus": 0},  # the replica shares its engine worker's bundle
        },
    )


def build_app(cfg: ServeConfig, model: ModelInfo, seed: int, api_key: str | None = None) -> serve.Application:
    """The Serve application: engine replicas behind one :class:`ReasonerIngress` deployment."""
    if cfg.engine.tensor_parallel_size > 1:
        raise ValueError(
            "serve.engine.tensor_parallel_size > 1 is not supported yet (one bundle per replica)"
        )
    engine_cfg = llm_config(cfg, model, seed)
    engine = (
        serve.deployment(LLMServer).options(**LLMServer.get_deployment_options(engine_cfg)).bind(engine_cfg)
    )
    settings = IngressSettings(
        model_name=cfg.model_name,
        model=model,
        limits=Limits(
            cfg.max_image_bytes,
            cfg.max_image_pixels,
            cfg.max_tokens,
            cfg.max_n,
            cfg.engine.max_images_per_prompt,
        ),  # fmt: skip
        add_reasoner_instruction=cfg.add_reasoner_instruction,
        max_body_bytes=cfg.max_body_bytes,
        request_timeout_s=cfg.request_timeout_s,
        retry_after_s=cfg.retry_after_s,
        api_key_sha256=None if api_key is None else hashlib.sha256(api_key.encode()).hexdigest(),
    )
    ingress = serve.deployment(make_fastapi_ingress(ReasonerIngress, endpoint_map=ENDPOINTS))
    return ingress.options(
        autoscaling_config={"min_replicas": cfg.min_replicas, "max_replicas": cfg.max_replicas},
        max_ongoing_requests=4 * (cfg.max_ongoing_requests + cfg.max_queued_requests),
        ray_actor_options={"num_cpus": 0},  # parsing and checks only; the engines hold the resources
    ).bind(
        llm_deployments={cfg.model_name: engine},
        model_cards={cfg.model_name: None},  # the library's cards are not used: models() answers with ours
        settings=settings,
    )


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
