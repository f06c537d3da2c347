"""Ray Serve for real: the bootstrapped tiny Reasoner behind /v1/chat/completions, driven by the `openai` client.

One app (one replica, one vLLM CPU engine) serves the module on a free loopback port:
  * a chat completion with a base64 image answers, names the model version (body and headers), and seeded
    sampling repeats itself;
  * malformed JSON, a non-image, an oversized image and a request without an image each get their 4xx with
    a message, and the server answers normally afterwards;
  * a bounded load test (fixed count, concurrent clients) has zero errors; p50/p99 latency is printed.
"""

from __future__ import annotations

import base64
import io
import socket
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
from PIL import Image

from visplay.config import load_config
from visplay.serve.app import build_app, resolve_model

pytestmark = pytest.mark.slow
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny-cpu.yaml"
LOAD_REQUESTS, LOAD_CONCURRENCY = 24, 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(ray_local, bootstrapped_model, tmp_path_factory):
    """(config, served model info, base URL) of a running app; shut down after the module."""
    from ray import serve

    port = _free_port()
    cfg = load_config(
        CONFIG,
        [
            f"out_dir={tmp_path_factory.mktemp('serve')}",
            f"serve.checkpoint={bootstrapped_model}",
            f"serve.port={port}",
            "serve.max_image_pixels=40000",
        ],
    )
    model = resolve_model(cfg)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(cfg.serve, model, seed=0), name="visplay-test", route_prefix="/")
    yield cfg, model, f"http://127.0.0.1:{port}/v1"
    serve.shutdown()


@pytest.fixture(scope="module")
def image_url(unlabeled_corpus) -> str:
    data = sorted(Path(unlabeled_corpus).rglob("*.png"))[0].read_bytes()
    return "data:image/png;base64," + base64.b64encode(data).decode()


def _messages(image_url: str, question: str = "How many shapes are there?") -> list[dict]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": image_url}},
                {"type": "text", "text": question},
            ],
        }
    ]


def _client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=300)


def test_chat_completion_answers_and_names_the_model_version(server, image_url):
    cfg, model, base_url = server
    client = _client(base_url)
    raw = client.chat.completions.with_raw_response.create(
        model=cfg.serve.model_name, messages=_messages(image_url), temperature=0, max_tokens=24
    )
    response = raw.parse()
    assert response.model == cfg.serve.model_name
    assert len(response.choices) == 1 and isinstance(response.choices[0].message.content, str)
    assert 0 < response.usage.completion_tokens <= 24 and response.usage.prompt_tokens > 16  # 16 image tokens
    assert response.model_extra["visplay"] == {
        "checkpoint": model.checkpoint, "checkpoint_id": model.checkpoint_id, "iteration": None,
    }  # fmt: skip
    assert raw.headers["x-visplay-checkpoint-id"] == model.checkpoint_id
    # Seeded sampling repeats itself; n samples come back as n choices.
    again = [
        client.chat.completions.create(
            model=cfg.serve.model_name,
            messages=_messages(image_url),
            temperature=1.0,
            seed=3,
            n=2,
            max_tokens=16,
        )
        for _ in range(2)
    ]
    assert [c.message.content for c in again[0].choices] == [c.message.content for c in again[1].choices]
    assert len(again[0].choices) == 2
    listed = httpx.get(f"{base_url}/models", timeout=60).json()
    assert listed["data"][0]["id"] == cfg.serve.model_name
    assert listed["data"][0]["checkpoint_id"] == model.checkpoint_id


def test_bad_requests_get_a_4xx_with_a_message_and_the_server_stays_up(server, image_url):
    cfg, _, base_url = server
    url = f"{base_url}/chat/completions"

    def post(content: bytes) -> httpx.Response:
        return httpx.post(url, content=content, headers={"content-type": "application/json"}, timeout=60)

    r = post(b"{not json")
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    not_image = "data:image/png;base64," + base64.b64encode(b"GIF89a? no, plain text").decode()
    r = httpx.post(url, json={"model": "m", "messages": _messages(not_image)}, timeout=60)
    assert r.status_code == 415 and "not a decodable image" in r.json()["error"]["message"]
    big = io.BytesIO()
    Image.new("RGB", (300, 300), "white").save(big, format="PNG")  # 90,000 pixels > serve.max_image_pixels
    big_url = "data:image/png;base64," + base64.b64encode(big.getvalue()).decode()
    r = httpx.post(url, json={"model": "m", "messages": _messages(big_url)}, timeout=60)
    assert r.status_code == 413 and "300x300 pixels" in r.json()["error"]["message"]
    client = _client(base_url)
    with pytest.raises(openai.BadRequestError, match="exactly one image"):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "no image here"}])
    # Still serving.
    ok = client.chat.completions.create(model="m", messages=_messages(image_url), temperature=0, max_tokens=8)
    assert ok.choices[0].message.content is not None


def test_bounded_load_has_no_errors_and_reports_latency(server, image_url):
    cfg, _, base_url = server
    client = _client(base_url)

    def one(i: int) -> float:
        started = time.perf_counter()
        client.chat.completions.create(
            model=cfg.serve.model_name, messages=_messages(image_url, f"Question {i}: what colour is the largest shape?"),
            temperature=1.0, seed=i, max_tokens=32,
        )  # fmt: skip
        return time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(LOAD_CONCURRENCY) as pool:
        futures = [pool.submit(one, i) for i in range(LOAD_REQUESTS)]
        errors = [f.exception() for f in futures if f.exception() is not None]
        latencies = sorted(f.result() for f in futures if f.exception() is None)
    wall = time.perf_counter() - started
    assert errors == [], errors
    assert len(latencies) == LOAD_REQUESTS
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))]
    print(
        f"\nserve load: {LOAD_REQUESTS} requests, {LOAD_CONCURRENCY} concurrent, 0 errors, "
        f"p50 {p50:.2f}s p99 {p99:.2f}s, {LOAD_REQUESTS / wall:.1f} req/s"
    )
