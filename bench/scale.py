"""Does a generation pass's driver stay flat as the corpus grows? (corpus-scale generation benchmark)

Runs ``jobs/generate_questions.py`` as its own driver process over synthetic corpora and samples that
process's resident memory (the driver only: Ray's workers are other processes) and the object store's use,
all in one run:

  (a) N images at 112 px and 4N images at 112 px: the driver's peak RSS at 4N against N;
  (b) N images at 800 x 800 (random pixels, PNG: about 1.9 MB each) against (a)'s N at 112 px;
  (c) planning a 1M-row parquet input (row groups of 10,000): seconds and driver memory.

Tokens are cheap (k = 1, m = 1, a few tokens each), so the pass measures the data plane, not the model.
Each line prints wall seconds, images/s, the time to the first scored rows (both engines started: on 2
cores about two minutes of the pass), the time to the first finished shard, as a share of the pass and
as a share of the pass after the first rows, step 2's seconds and the peaks. The object store's peak is
``/dev/shm`` in use above its level when the job started.

    .venv/bin/python bench/scale.py --images 500          # (a) 500 and 2,000, (b) 500 at 800 px, (c)
    .venv/bin/python bench/scale.py --images 64 --skip-large --skip-4n   # a quick look
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "tiny-cpu.yaml"


def make_images(folder: Path, n: int, side: int, seed: int = 0) -> Path:
    """``n`` random-pixel PNGs of ``side`` x ``side`` (all distinct), in 10 subfolders."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        sub = folder / f"d{i % 10}"
        sub.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(sub / f"img{i:07d}.png", compress_level=1)
    return folder


def shm_used() -> int:
    """Bytes in use on ``/dev/shm``: the local object store's pages (Ray maps its store file there; pages
    count only once written, so this is what the store holds, not its reserved size)."""
    return shutil.disk_usage("/dev/shm").used


class Sampler:
    """Peak RSS of one process and peak object-store use (``/dev/shm`` above its level at the start),
    sampled every 0.2 s."""

    def __init__(self, pid: int) -> None:
        self.proc, self.rss, self.store, self.base = psutil.Process(pid), 0, 0, shm_used()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.rss = max(self.rss, self.proc.memory_info().rss)
                self.store = max(self.store, shm_used() - self.base)
            except psutil.Error:
                pass
            time.sleep(0.2)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def run_pass(work: Path, corpus: Path, label: str, model: Path) -> dict:
    """One generate job over ``corpus``; its figures."""
    overrides = [
        f"corpus.path={corpus}", f"out_dir={work / 'runs'}", f"name={label}", f"models.base={model}",
        "generation.questions_per_image=1", "generation.answers_per_question=1",
        "generation.questioner_sampling.max_tokens=8", "generation.reasoner_sampling.max_tokens=4",
        "generation.shard_size=64", "generation.reuse_rollout_engines=false", "corpus.synthetic_n=0",
    ]  # fmt: skip
    started = time.perf_counter()
    command = [
        sys.executable,
        str(ROOT / "jobs" / "generate_questions.py"),
        "--config",
        str(CONFIG),
        *overrides,
    ]
    with open(work / f"{label}.log", "w") as log:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log)
        sampler = Sampler(proc.pid)
        code = proc.wait()
        sampler.stop()
    wall = time.perf_counter() - started
    if code != 0:
        tail = "\n".join((work / f"{label}.log").read_text().splitlines()[-40:])
        raise SystemExit(f"{label}: the job failed (exit {code}); the end of its log:\n{tail}")
    summary = json.loads((work / "runs" / label / "generate" / "summary.json").read_text())
    print(f"{label}: done in {wall:.0f} s, driver peak RSS {sampler.rss / 1e9:.2f} GB", flush=True)
    return {
        "label": label, "images": summary["images_read"], "wall_s": wall,
        "images_per_s": summary["images_read"] / summary["wall_seconds"],
        "first_rows_s": summary["first_rows_seconds"], "first_shard_s": summary["first_shard_seconds"],
        "pass_s": summary["wall_seconds"], "finalize_s": summary["finalize_seconds"],
        "driver_peak_rss_gb": sampler.rss / 1e9, "store_peak_gb": sampler.store / 1e9,
    }  # fmt: skip


def planning_cost(work: Path, rows: int = 1_000_000) -> dict:
    """Plan a ``rows``-row parquet input (tiny binary values, row groups of 10,000) in a fresh process."""
    path = work / "million.parquet"
    if not path.exists():
        table = pa.table({"image": pa.array([b"x"] * rows, pa.binary())})
        pq.write_table(table, path, row_group_size=10_000)
    code = (
        "import time, psutil; from visplay.data.plan import plan_corpus; t = time.perf_counter(); "
        f"p = plan_corpus({str(path)!r}, shard_size=10_000); "
        "print(time.perf_counter() - t, psutil.Process().memory_info().rss, p.offered, len(p.shards))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    return {"rows": int(out[2]), "shards": int(out[3]), "seconds": float(out[0]), "rss_gb": int(out[1]) / 1e9}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=500, help="N")
    parser.add_argument("--skip-4n", action="store_true", help="leave out the 4N pass")
    parser.add_argument("--skip-large", action="store_true", help="leave out the 800 x 800 pass")
    parser.add_argument("--model", default=str(ROOT / "models" / "tiny-base"), help="model directory")
    parser.add_argument("--work", help="keep corpora, runs and job logs in this folder (default: a temp one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        model = Path(args.model)
        n = args.images
        results = [run_pass(work, make_images(work / "small", n, 112), f"n{n}-112px", model)]
        if not args.skip_4n:
            results.append(
                run_pass(work, make_images(work / "small4", 4 * n, 112, seed=1), f"n{4 * n}-112px", model)
            )
        if not args.skip_large:
            results.append(run_pass(work, make_images(work / "large", n, 800, seed=2), f"n{n}-800px", model))
        for r in results:
            print(
                f"{r['label']:>14}: {r['images']} images, pass {r['pass_s']:.1f} s ({r['images_per_s']:.2f} images/s), "
                f"first rows at {r['first_rows_s']:.1f} s, first shard at {r['first_shard_s']:.1f} s "
                f"({r['first_shard_s'] / r['pass_s']:.0%} of the pass, "
                f"{(r['first_shard_s'] - r['first_rows_s']) / (r['pass_s'] - r['first_rows_s']):.0%} after the "
                f"first rows), step 2 {r['finalize_s']:.1f} s, "
                f"driver peak RSS {r['driver_peak_rss_gb']:.2f} GB, object store peak {r['store_peak_gb']:.2f} GB"
            )
        base = results[0]["driver_peak_rss_gb"]
        for r in results[1:]:
            print(
                f"driver peak RSS {r['label']} / {results[0]['label']}: {r['driver_peak_rss_gb'] / base:.3f}"
            )
        plan = planning_cost(work)
        print(
            f"planning {plan['rows']:,} parquet rows into {plan['shards']} shards: {plan['seconds']:.2f} s, "
            f"process RSS {plan['rss_gb']:.2f} GB"
        )


if __name__ == "__main__":
    main()
