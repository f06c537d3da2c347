"""Serving throughput: the Ray Serve LLM app under bounded load against a bare vLLM engine, in one run.

For the same prompts (the shipped tiny Reasoner, one 56 px image and a question each, a fixed number of
completion tokens: ``ignore_eos``), prints:
  (a) the Serve app (jobs/serve.py's app on loopback, the config's serve section): N requests through the
      official ``openai`` client at each concurrency in --concurrency, each figure the best of --repeats:
      requests/s over the wall time, p50 and p99 latency, and errors;
  (b) a bare engine: ``LLM.generate`` of the same rendered prompts with the same serve.engine settings,
      in a fresh process after the app is shut down (the two never share the cores), in calls of each
      concurrency (c clients of equal-length requests keep at most c in the engine) and in one call of
      all N; requests/s over the calls, best of --repeats. Twice: with vLLM's "mp" executor, the layout
      Ray Serve LLM runs on CPU (engine core and worker in child processes; vLLM reserves a core for the
      engine core's busy loop), and with the "uni" in-process layout of our own engines;
  (c) the same load (the instruction appended by the client) against vLLM's own OpenAI server
      (``vllm serve``, same engine settings), the serving peer without Ray;
and the ratios (a)/(b) and (a)/(c) per concurrency (goal: (a)/(b) >= 0.8 at 16 concurrent, 0 errors).

    .venv/bin/python bench/serve.py                      # 64 requests at 16 and 64 concurrent
    .venv/bin/python bench/serve.py --requests 32 --concurrency 16 --repeats 1    # a quick look
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import ray
from PIL import Image

from visplay.config import SamplingConfig, load_config
from visplay.engine.broadcast import free_port
from visplay.prompts import reasoner_messages, reasoner_user_text, render_prompt

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "tiny-cpu.yaml"
MODEL = ROOT / "models" / "tiny-base"


def image(i: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (56, 56), ((37 * i) % 256, (91 * i) % 256, (53 * i) % 256)).save(buf, format="PNG")
    return buf.getvalue()


def question(i: int) -> str:
    return f"Question {i}: how many shapes are in the image?"


def serve_load(base_url: str, n: int, concurrency: int, tokens: int, with_instruction: bool = False) -> dict:
    """``n`` requests, ``concurrency`` at a time; requests/s, p50, p99, errors. ``with_instruction``: the
    client appends the Reasoner's instruction (for a server that does not), so both servers get the same
    prompts."""
    client = openai.OpenAI(base_url=base_url, api_key="none", max_retries=0, timeout=600)

    def one(i: int) -> float:
        url = "data:image/png;base64," + base64.b64encode(image(i)).decode()
        started = time.perf_counter()
        client.chat.completions.create(
            model="visplay-reasoner",
            messages=[{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": reasoner_user_text(question(i)) if with_instruction else question(i)}]}],
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


def bare_rps(cfg, executor: str, n: int, tokens: int, repeats: int, per_call: list[int]) -> dict[int, float]:
    """Requests/s of ``LLM.generate`` over the same ``n`` prompts in calls of each size in ``per_call``
    (best of ``repeats``, after a warm-up), on an engine with the serve.engine settings and vLLM executor
    ``executor``: "mp" is what Ray Serve LLM runs on CPU (engine core and worker in child processes),
    "uni" our own engines' in-process layout (``in_process``)."""
    import os

    import torch
    from vllm import LLM

    from visplay.engine.llm import engine_kwargs, sampling_params, vllm_prompt

    if executor == "uni":
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        torch.set_num_threads(max(1, round(cfg.serve.engine.num_cpus)))  # as an engine actor's OMP threads
    llm = LLM(
        model=str(MODEL), distributed_executor_backend=executor, **engine_kwargs(cfg.serve.engine, cfg.seed)
    )
    prompts = [vllm_prompt(render_prompt(reasoner_messages(question(i))), image(i)) for i in range(n)]
    sampling = SamplingConfig(temperature=1.0, top_p=1.0, max_tokens=tokens)
    params = []
    for i in range(n):
        p = sampling_params(sampling, 1, seed=i)
        p.ignore_eos = True
        params.append(p)
    llm.generate(prompts[:8], params[:8], use_tqdm=False)  # warm-up
    best = dict.fromkeys(per_call, 0.0)
    for _ in range(repeats):
        for size in per_call:
            started = time.perf_counter()
            for i in range(0, n, size):
                llm.generate(prompts[i : i + size], params[i : i + size], use_tqdm=False)
            best[size] = max(best[size], n / (time.perf_counter() - started))
    return best


def bare_in_child(executor: str, args: argparse.Namespace, per_call: list[int]) -> dict[int, float]:
    """:func:`bare_rps` in a fresh process (one engine per process; nothing else on the cores)."""
    command = [
        sys.executable, __file__, "--bare", executor, "--requests", str(args.requests), "--tokens",
        str(args.tokens), "--repeats", str(args.repeats), "--concurrency", ",".join(map(str, per_call)),
    ]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT).stdout
    line = next(x for x in out.splitlines() if x.startswith("BARE "))
    return {int(k): v for k, v in json.loads(line[5:]).items()}


def vllm_server_load(cfg, args: argparse.Namespace, concurrency: list[int]) -> dict[int, dict]:
    """The same load against vLLM's own OpenAI server (``vllm serve``, same engine settings), the peer
    without Ray: a fresh process, started after the app is shut down."""
    engine = cfg.serve.engine
    port = free_port()
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(MODEL),
        "--served-model-name", "visplay-reasoner", "--port", str(port), "--host", "127.0.0.1",
        "--dtype", engine.dtype, "--max-model-len", str(engine.max_model_len), "--max-num-seqs",
        str(engine.max_num_seqs), "--kv-cache-memory-bytes", str(engine.kv_cache_memory_bytes),
        "--limit-mm-per-prompt", json.dumps({"image": engine.max_images_per_prompt, "video": 0}),
        "--enforce-eager", "--no-enable-chunked-prefill", "--seed", str(cfg.seed),
    ]  # fmt: skip
    server = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base_url = f"http://127.0.0.1:{port}/v1"
        deadline = time.monotonic() + 600
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"vllm serve did not start (exit {server.poll()})")
            time.sleep(2)
        serve_load(base_url, 8, 8, args.tokens, with_instruction=True)  # warm-up
        results = {}
        for c in concurrency:
            runs = [serve_load(base_url, args.requests, c, args.tokens, True) for _ in range(args.repeats)]
            results[c] = max(runs, key=lambda r: (not r["errors"], r["rps"]))
            print_load(f"vllm serve {c:>3} concurrent", results[c])
        return results
    finally:
        server.terminate()
        server.wait(60)


def print_load(label: str, r: dict) -> None:
    print(f"{label}: {r['rps']:.2f} req/s, p50 {r['p50']:.2f} s, p99 {r['p99']:.2f} s, "
          f"errors {len(r['errors'])} {r['errors'][:2]}", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=64, help="requests per load run")
    parser.add_argument("--concurrency", default="16,64", help="comma-separated concurrent clients")
    parser.add_argument("--tokens", type=int, default=32, help="completion tokens per request")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bare", choices=("mp", "uni"), help=argparse.SUPPRESS)  # the child of bare_in_child
    args = parser.parse_args()
    concurrency = [int(x) for x in args.concurrency.split(",")]
    if args.bare:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = load_config(CONFIG, [f"out_dir={tmp}"])
            print(
                "BARE "
                + json.dumps(bare_rps(cfg, args.bare, args.requests, args.tokens, args.repeats, concurrency))
            )
        return
    from ray import serve

    from visplay.serve.app import build_app, resolve_model

    port = free_port()
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
        for c in concurrency:
            runs = [serve_load(base_url, args.requests, c, args.tokens) for _ in range(args.repeats)]
            results[c] = max(runs, key=lambda r: (not r["errors"], r["rps"]))
            print_load(f"serve {c:>3} concurrent", results[c])
        serve.shutdown()
        ray.shutdown()
        peer = vllm_server_load(cfg, args, concurrency)
    for c, r in results.items():
        print(f"serve / vllm serve at {c} concurrent: {r['rps'] / peer[c]['rps']:.2f}", flush=True)
    per_call = sorted({args.requests, *results})
    for executor in ("mp", "uni"):
        bare = bare_in_child(executor, args, per_call)
        for size, rps in bare.items():
            print(f"bare vLLM generate ({executor} executor), calls of {size}: {rps:.2f} req/s", flush=True)
        for c, r in results.items():
            print(
                f"serve at {c} concurrent / bare {executor} in calls of {c}: {r['rps'] / bare[c]:.2f}, "
                f"in one call of {args.requests}: {r['rps'] / bare[args.requests]:.2f} ({len(r['errors'])} errors)",
                flush=True,
            )


if __name__ == "__main__":
    main()
