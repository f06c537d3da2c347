"""Serving throughput: the Ray Serve LLM app under bounded load against a bare vLLM engine, in one run.

For the same prompts (the shipped tiny Reasoner, one 56 px image and a question each, a fixed number of
completion tokens: ``ignore_eos``), prints:
  (a) the Serve app (jobs/serve.py's app on loopback, the config's serve section): N requests through the
      official ``openai`` client at each concurrency in --concurrency, each figure the best of --repeats:
      requests/s over the wall time, p50 and p99 latency, and errors;
  (b) a bare engine: ``LLM.generate`` of the same rendered prompts in one call (``build_llm`` with the
      same serve.engine settings and torch threads, in this process, after the app is shut down so the
      two never share the cores), requests/s over the call, best of --repeats;
and the ratio (a)/(b) per concurrency (goal: >= 0.8 at 16 concurrent, with 0 errors).

    .venv/bin/python bench/serve.py                      # 64 requests at 16 and 64 concurrent
    .venv/bin/python bench/serve.py --requests 32 --concurrency 16 --repeats 1    # a quick look
"""

from __future__ import annotations

import argparse
import base64
import io
import socket
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import ray
from PIL import Image

from visplay.config import SamplingConfig, load_config
from visplay.prompts import reasoner_messages, render_prompt

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "tiny-cpu.yaml"
MODEL = ROOT / "models" / "tiny-base"


def image(i: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (56, 56), ((37 * i) % 256, (91 * i) % 256, (53 * i) % 256)).save(buf, format="PNG")
    return buf.getvalue()


def question(i: int) -> str:
    return f"Question {i}: how many shapes are in the image?"


def serve_load(base_url: str, n: int, concurrency: int, tokens: int) -> dict:
    """``n`` requests, ``concurrency`` at a time; requests/s, p50, p99, errors."""
    client = openai.OpenAI(base_url=base_url, api_key="none", max_retries=0, timeout=600)

    def one(i: int) -> float:
        url = "data:image/png;base64," + base64.b64encode(image(i)).decode()
        started = time.perf_counter()
        client.chat.completions.create(
            model="visplay-reasoner",
            messages=[{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": question(i)}]}],
            temperature=1.0, seed=i, max_tokens=tokens, extra_body={"ignore_eos": True},
        )  # fmt: skip
        return time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        futures = [pool.submit(one, i) for i in range(n)]
        errors = [repr(f.exception()) for f in futures if f.exception() is not None]
        latencies = sorted(f.result() for f in futures if f.exception() is None)
    wall = time.perf_counter() - started
    p99 = (
        latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))] if latencies else float("nan")
    )
    return {
        "rps": len(latencies) / wall, "p50": statistics.median(latencies) if latencies else float("nan"),
        "p99": p99, "errors": errors,
    }  # fmt: skip


def bare_rps(cfg, n: int, tokens: int, repeats: int) -> float:
    """Requests/s of one ``LLM.generate`` over the same ``n`` prompts (best of ``repeats``, after a warm-up)."""
    import torch

    from visplay.engine.llm import build_llm, sampling_params, vllm_prompt

    torch.set_num_threads(max(1, round(cfg.serve.engine.num_cpus)))  # as a replica's worker (OMP_NUM_THREADS)
    llm = build_llm(MODEL, cfg.serve.engine, seed=cfg.seed)
    prompts = [vllm_prompt(render_prompt(reasoner_messages(question(i))), image(i)) for i in range(n)]
    sampling = SamplingConfig(temperature=1.0, top_p=1.0, max_tokens=tokens)
    params = []
    for i in range(n):
        p = sampling_params(sampling, 1, seed=i)
        p.ignore_eos = True
        params.append(p)
    llm.generate(prompts[:8], params[:8], use_tqdm=False)  # warm-up
    best = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        llm.generate(prompts, params, use_tqdm=False)
        best = max(best, n / (time.perf_counter() - started))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=64, help="requests per load run")
    parser.add_argument("--concurrency", default="16,64", help="comma-separated concurrent clients")
    parser.add_argument("--tokens", type=int, default=32, help="completion tokens per request")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from ray import serve

    from visplay.serve.app import build_app, resolve_model

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(CONFIG, [f"out_dir={tmp}", f"serve.checkpoint={MODEL}", f"serve.port={port}"])
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
        started = time.perf_counter()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(cfg.serve, resolve_model(cfg), seed=cfg.seed), name="bench", route_prefix="/")
        print(f"app ready in {time.perf_counter() - started:.0f} s", flush=True)
        base_url = f"http://127.0.0.1:{port}/v1"
        serve_load(base_url, 8, 8, args.tokens)  # warm-up
        results = {}
        for c in [int(x) for x in args.concurrency.split(",")]:
            runs = [serve_load(base_url, args.requests, c, args.tokens) for _ in range(args.repeats)]
            results[c] = max(runs, key=lambda r: (not r["errors"], r["rps"]))
            r = results[c]
            print(f"serve {c:>3} concurrent: {r['rps']:.2f} req/s, p50 {r['p50']:.2f} s, p99 {r['p99']:.2f} s, "
                  f"errors {len(r['errors'])} {r['errors'][:2]}", flush=True)  # fmt: skip
        serve.shutdown()
        ray.shutdown()
        bare = bare_rps(cfg, args.requests, args.tokens, args.repeats)
    print(f"bare vLLM generate, one call of {args.requests}: {bare:.2f} req/s")
    for c, r in results.items():
        print(f"serve/bare at {c} concurrent: {r['rps'] / bare:.2f} ({len(r['errors'])} errors)")


if __name__ == "__main__":
    main()
