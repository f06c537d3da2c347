"""The generation plane end to end: real Ray Data, real vLLM engines (CPU build), the bootstrapped tiny model.

Two runs over the same corpus (good images, bad files, one image copied under a second name), cut into
shards of 1 item:
  A. a plain run: schema, provenance, counts that add up, the copy generated once and counted;
  B. the generate job as a separate driver process, SIGKILLed once its first shard is marked; then the
     same pass resumed here, while one engine actor's process is SIGKILLed mid-run (Ray restarts the actor
     and retries its batch). Only the unfinished shards are redone, and the final tables equal run A's
     row for row (per-row seeds make sampling independent of which actor or which run served the row),
     which is also the "same seed, same questions and answers" check. A file left in questions/ by a
     step 2 that died midway does not survive the resumed step 2.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray

from visplay.checkpoints import Checkpoint, model_version
from visplay.config import load_config
from visplay.data.schemas import DROP_REASONS, SCORED_SCHEMA
from visplay.generation.pipeline import HOLD_AFTER_FIRST_SHARD_ENV, run_generation

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "tiny-cpu.yaml"
K, M = 2, 4  # questions per image, answers per question


@pytest.fixture(scope="module")
def corpus_with_bad_files(unlabeled_corpus, tmp_path_factory) -> Path:
    """The 8 synthetic images plus one empty, one truncated and one non-image file, and a copy of an image."""
    root = tmp_path_factory.mktemp("gen-corpus")
    shutil.copytree(unlabeled_corpus, root / "images")
    good = sorted((root / "images").rglob("*.png"))[0].read_bytes()
    (root / "images" / "zz-copy.png").write_bytes(good)  # the same bytes under another name
    (root / "images" / "empty.png").write_bytes(b"")
    (root / "images" / "cut.png").write_bytes(good[: len(good) // 2])
    (root / "images" / "notes.txt").write_text("not an image")
    return root / "images"


def _config(model: Path, corpus: Path, out_dir: Path):
    return load_config(CONFIG, _overrides(model, corpus, out_dir))


def _overrides(model: Path, corpus: Path, out_dir: Path) -> list[str]:
    return [
        f"models.base={model}",
        f"corpus.path={corpus}",
        f"out_dir={out_dir}",
        f"generation.questions_per_image={K}",
        f"generation.answers_per_question={M}",
        "generation.questioner_engine.batch_size=2",
        "generation.reasoner_engine.batch_size=4",
        "generation.questioner_sampling.max_tokens=48",
        "generation.reasoner_sampling.max_tokens=32",
        "generation.score_batch_size=8",
        "generation.shard_size=1",  # 12 shards: a kill after the first leaves most unfinished
        "generation.decode_batch_size=1",  # one read block per item: 12 items do not travel as one block
        "name=gen-test",
    ]


def _ready_engine_actor_pids() -> list[int]:
    """Local processes of engine-stage actors whose engine is built (Ray titles them ray::<Actor>.<method>)."""
    import psutil

    pids = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        title = " ".join(proc.info["cmdline"] or [])
        if title.startswith("ray::MapWorker(MapBatches(EngineStage))") and "__init__" not in title:
            pids.append(proc.info["pid"])
    return sorted(pids)


def test_pipeline_runs_end_to_end_survives_a_killed_engine_and_is_reproducible(
    ray_local, bootstrapped_model, corpus_with_bad_files, tmp_path
):
    model = Checkpoint(str(bootstrapped_model), model_version(bootstrapped_model))

    # --- run A: a plain run ------------------------------------------------------------------------
    cfg = _config(bootstrapped_model, corpus_with_bad_files, tmp_path / "a")
    summary = run_generation(cfg, tmp_path / "a" / "gen", questioner=model, reasoner=model)

    # Counts add up: 12 files offered = 9 images read (8 + 1 copy, generated once) + 3 rejects (one per
    # reason); 8 images x K questions. 12 items in shards of 1: 12 shards.
    assert summary.images_offered == 12
    assert summary.images_read == 9 and summary.duplicate_image == 1
    assert summary.rejects_by_reason == {"empty": 1, "truncated": 1, "not_image": 1}
    assert summary.questions == 8 * K == summary.kept + summary.dropped
    assert (summary.shards, summary.shards_run) == (12, 12)
    duplicates = pq.read_table(summary.files["duplicates"]).to_pylist()
    assert len(duplicates) == 1 and duplicates[0]["owner_item"] != duplicates[0]["item"]
    assert set(summary.drops_by_reason) <= set(DROP_REASONS)
    # The bootstrapped model writes parseable questions, so the reasoner stage really ran.
    assert summary.parse_rate > 0.25, summary
    assert summary.reasoner_tokens_per_s > 0 and summary.questioner_tokens_per_s > 0

    kept = pq.read_table(summary.files["questions"])
    dropped = pq.read_table(summary.files["dropped"])
    assert kept.schema.equals(SCORED_SCHEMA) and dropped.schema.equals(SCORED_SCHEMA)
    rows = kept.to_pylist() + dropped.to_pylist()
    assert len(rows) == 8 * K
    answered = [r for r in rows if r["parse_ok"]]
    assert answered, "no parsed question reached the reasoner"
    for r in answered:  # provenance of every answered question
        assert r["questioner_ckpt"] == r["reasoner_ckpt"] == model.version
        assert len(r["answers"]) == M and len(r["extracted"]) == M
        assert json.loads(r["reasoner_sampling"])["n"] == M
        assert json.loads(r["questioner_sampling"])["n"] == K
        assert sum(count for _, count in json.loads(r["votes"])) == sum(
            bool(e and e.strip()) for e in r["extracted"]
        )
        assert 0.0 <= r["p"] <= 1.0
    for r in kept.to_pylist():
        assert r["keep"] and r["drop_reason"] == "" and r["silver"] is not None
        assert cfg.generation.p_low <= r["p"] <= cfg.generation.p_high
    for r in dropped.to_pylist():
        assert not r["keep"] and r["drop_reason"] in DROP_REASONS
    rejects = pq.read_table(summary.files["rejects"]).to_pylist()
    assert sorted(r["reason"] for r in rejects) == ["empty", "not_image", "truncated"]

    # --- run B: the job's driver SIGKILLed after its first shard, then resumed with an engine killed --
    cfg_b = _config(bootstrapped_model, corpus_with_bad_files, tmp_path / "b")
    pass_dir = cfg_b.run_dir / "generate"
    job = subprocess.Popen(
        [sys.executable, str(ROOT / "jobs" / "generate_questions.py"), "--config", str(CONFIG),
         *_overrides(bootstrapped_model, corpus_with_bad_files, tmp_path / "b")],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env={**os.environ, HOLD_AFTER_FIRST_SHARD_ENV: "600"},  # the watcher holds after its first marker
    )  # fmt: skip
    deadline = time.monotonic() + 600
    while not list((pass_dir / "shards").glob("shard_*.json")) and time.monotonic() < deadline:
        assert job.poll() is None, "the generate job ended before its first shard"
        time.sleep(0.2)
    os.killpg(job.pid, signal.SIGKILL)  # the driver and the Ray it started, as a lost head node would
    job.wait()
    marked_before = len(list((pass_dir / "shards").glob("shard_*.json")))
    assert marked_before == 1, marked_before  # killed while holding after its first marker
    assert not (pass_dir / "final.json").exists()
    # As if an earlier step 2 had died while writing: its file must not survive into the final tables.
    (pass_dir / "questions").mkdir()
    pq.write_table(kept.slice(0, 1), pass_dir / "questions" / "part-999999.parquet")

    result: dict = {}
    worker = threading.Thread(
        target=lambda: result.update(summary=run_generation(cfg_b, pass_dir, model, model))
    )
    worker.start()
    killed = None
    deadline = time.monotonic() + 600
    while killed is None and worker.is_alive() and time.monotonic() < deadline:
        pids = _ready_engine_actor_pids()
        if pids:  # an engine actor is up (its engine is built): kill its process like a crashed node would
            killed = pids[0]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.5)
    worker.join(timeout=900)
    assert killed is not None, "no engine actor was seen alive"
    assert "summary" in result, "run B did not finish"
    summary_b = result["summary"]
    assert summary_b.shards_run == 12 - marked_before  # only the unfinished shards were redone
    assert summary_b.questions == 8 * K and summary_b.images_read == 9 and summary_b.duplicate_image == 1

    rows_b = (
        pq.read_table(summary_b.files["questions"]).to_pylist()
        + pq.read_table(summary_b.files["dropped"]).to_pylist()
    )
    per_image = {}
    for r in rows_b:
        per_image[r["image_id"]] = per_image.get(r["image_id"], 0) + 1
    assert len(per_image) == 8 and set(per_image.values()) == {K}  # every image exactly once (K samples)

    def key(r):
        return (r["question_id"], r["raw"], tuple(r["answers"]), r["silver"], r["p"], r["drop_reason"])

    assert sorted(map(key, rows_b)) == sorted(map(key, rows))
    assert [r["question_id"] for r in rows_b] == [r["question_id"] for r in rows]  # same order on disk


def test_warm_engine_stages_stay_separate_streaming_operators(
    ray_local, bootstrapped_model, bootstrapped_engine, unlabeled_corpus, tmp_path
):
    """With running rollout engines (the loop job's case) each role's engine stage runs as Ray tasks that
    forward to the engine. Ray Data fuses consecutive task stages whose remote arguments are equal; if the
    forwarders were fused with the light stages, one task would run questioner and reasoner back to back
    and nothing would stream. The plan must keep both engine stages as operators of their own."""
    from visplay.data.images import read_images
    from visplay.generation.pipeline import build_scored_dataset

    cfg = _config(bootstrapped_model, unlabeled_corpus, tmp_path)
    version = model_version(bootstrapped_model)
    warm = Checkpoint(str(bootstrapped_model), version, engines=(bootstrapped_engine,))
    read = read_images(
        unlabeled_corpus, max_pixels=cfg.corpus.max_pixels, max_file_bytes=cfg.corpus.max_file_bytes
    )
    ds = build_scored_dataset(read.images, cfg, warm, warm).materialize()
    table = pa.concat_tables(ray.get(ds.to_arrow_refs()))

    assert table.num_rows == 8 * K  # 8 images x K questioner samples, parsed or not
    assert set(table["questioner_ckpt"].to_pylist()) == {version}
    answered = [r for r in table.to_pylist() if r["reasoner_ckpt"]]
    assert answered and {r["reasoner_ckpt"] for r in answered} == {version}
    operators = [line for line in ds.stats().splitlines() if line.startswith("Operator")]
    engine_operators = [line for line in operators if "RolloutEngineStage" in line]
    assert len(engine_operators) == 2, operators
    assert not any("->" in line for line in engine_operators), operators
