"""Serve the evolved Reasoner behind an OpenAI-compatible API (Ray Serve + vLLM).

What is served: ``serve.checkpoint`` when given, else the Reasoner of the newest finished iteration of the
run named by the config (its ``train_reasoner`` completion marker), else the base model. Ray Serve LLM runs
the engines and vLLM's OpenAI layer; our ingress checks requests in front of it (visplay/serve/app.py).
Every response carries the model id ``serve.model_name`` and the ``x-visplay-checkpoint-id`` /
``x-visplay-iteration`` headers.

    POST /v1/chat/completions   OpenAI chat format: streaming, logprobs, stop; text-only or up to
                                serve.engine.max_images_per_prompt images as base64 data URLs
    GET  /v1/models

With ``serve.api_key_env: NAME``, requests need ``Authorization: Bearer $NAME``.

Launch (blocks until Ctrl-C; replicas autoscale between serve.min_replicas and serve.max_replicas):
  python jobs/serve.py --config configs/tiny-cpu.yaml [serve.checkpoint=PATH] [serve.port=8000]
  ray job submit --working-dir . -- python jobs/serve.py --config configs/qwen2.5-vl-7b-gpu.yaml serve.host=0.0.0.0

Client:
  from openai import OpenAI
  client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="none")
  client.chat.completions.create(model="visplay-reasoner", messages=[{"role": "user", "content": [
      {"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}},
      {"type": "text", "text": "How many circles are there?"}]}])
"""

from __future__ import annotations

import ipaddress
import logging
import os
import sys
import time

from ray import serve

from visplay import runtime
from visplay.resource_plan import serve_plan
from visplay.serve.app import build_app, resolve_model

log = logging.getLogger("visplay.serve")


def main(argv: list[str] | None = None) -> int:
    # --- setup -------------------------------------------------------------------------------------
    cfg = runtime.start_job("serve", argv, reads_run=True)
    runtime.stop_unless_fits(
        cfg, serve_plan(cfg)
    )  # replicas the cluster can never place: a message, not a wait
    model = resolve_model(cfg)
    api_key = api_key_from_env(cfg.serve.api_key_env)
    if api_key is None and not _loopback(cfg.serve.host):
        log.warning("serving on %s without an API key: anyone who can reach it can use it "
                    "(set serve.api_key_env)", cfg.serve.host)  # fmt: skip
    log.info(
        "serving %s (checkpoint id %s, iteration %s)",
        model.checkpoint,
        model.checkpoint_id[:12],
        model.iteration,
    )
    serve.start(http_options={"host": cfg.serve.host, "port": cfg.serve.port})
    serve.run(build_app(cfg.serve, model, seed=cfg.seed, api_key=api_key), name="visplay", route_prefix="/")
    print(
        f"serving on http://{cfg.serve.host}:{cfg.serve.port}/v1  (model {cfg.serve.model_name!r})",
        flush=True,
    )

    # --- loop: Serve runs in its own actors; this driver keeps the app alive ----------------------
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass

    # --- cleanup -----------------------------------------------------------------------------------
    serve.shutdown()
    return 0


def api_key_from_env(name: str | None) -> str | None:
    """The API key held by environment variable ``name`` (None: no key). A named but unset or empty
    variable is an error: serving without the key the config asks for would be open by mistake."""
    if name is None:
        return None
    key = os.environ.get(name, "").strip()
    if not key:
        raise SystemExit(f"serve.api_key_env names {name}, but {name} is not set (or empty) here")
    return key


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


if __name__ == "__main__":
    sys.exit(main())
