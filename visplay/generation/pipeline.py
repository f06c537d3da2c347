"""One question-generation pass as a single streaming Ray Data pipeline, and the files it writes.

    images ──▶ QuestionerPrompts ──▶ Engine(questioner, n=k) ──▶ ExplodeQuestions ──▶ ReasonerPrompts
           ──▶ Engine(reasoner, n=m) ──▶ ScoreQuestions ──▶ (driver) corpus dedup + per-image cap ──▶ parquet

The two engine stages are actor pools (or tasks forwarding to warm rollout engines); Ray Data streams
blocks between them, so the reasoner starts on the first questions while the questioner is still working.
Every other step is a light Ray task. Only the final, image-free scored rows are
collected on the driver, for the corpus-wide dedup that needs to see every question once.

Outputs in ``out_dir``: ``questions.parquet`` (kept), ``dropped.parquet`` (every other question, with
``drop_reason``), ``rejects.parquet`` (unusable image files), ``images.parquet`` (the images of kept
questions, by ``image_id``, for Reasoner training), ``summary.json`` (counts that add up).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import ray

from visplay.config import Config
from visplay.data.images import ImageRead, read_images, write_rejects
from visplay.engine.stage import EngineStage, RolloutEngineStage, engine_map_kwargs
from visplay.generation.dedup import dedup_and_cap
from visplay.generation.stages import ExplodeQuestions, QuestionerPrompts, ReasonerPrompts, ScoreQuestions

log = logging.getLogger(__name__)

_LIGHT = {"batch_format": "pyarrow", "num_cpus": 0.25}  # cheap per-row Python stages run as Ray tasks
_FORWARD = {"batch_format": "pyarrow", "num_cpus": 0.05}
"""Tasks that forward batches to running rollout engines: they only wait on an actor, and their CPU share
differs from ``_LIGHT`` on purpose, since Ray Data fuses consecutive task stages with equal remote arguments
into one operator, which would run the questioner and reasoner one after another inside each task instead
of streaming one into the other. As tasks (not an actor pool) they start nothing per pass: a pool's actor
process costs seconds to start, every time the pipeline runs. Two in flight per engine keep it fed."""


@dataclass(frozen=True)
class Checkpoint:
    """A model directory and the version id recorded with everything it generates.

    ``engines``: running rollout actors that hold exactly these weights. When given, the pipeline's engine
    stage forwards to them (:class:`~visplay.engine.stage.RolloutEngineStage`) instead of starting its own
    autoscaling pool of engines: the embedded default reuses its warm engines, a cluster leaves it empty.
    """

    path: str
    version: str
    engines: tuple = ()


@dataclass
class GenerationSummary:
    """Counts of one pass; ``images_offered == images_read + rejected`` and ``questions == kept + dropped``."""

    images_offered: int
    images_read: int
    rejected: int
    rejects_by_reason: dict[str, int]
    questions: int
    kept: int
    dropped: int
    drops_by_reason: dict[str, int]
    parse_rate: float
    p_histogram: list[int]
    questioner_tokens_per_s: float
    reasoner_tokens_per_s: float
    wall_seconds: float
    files: dict[str, str] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        """Flat MLflow metrics: numeric fields, reject/drop counts by reason, the p histogram bins."""
        out = {k: float(v) for k, v in asdict(self).items() if isinstance(v, int | float)}
        out |= {f"rejects_{k}": float(v) for k, v in self.rejects_by_reason.items()}
        out |= {f"drops_{k}": float(v) for k, v in self.drops_by_reason.items()}
        out |= {f"p_hist_{i / 10:.1f}": float(v) for i, v in enumerate(self.p_histogram)}
        out["kept_fraction"] = self.kept / self.questions if self.questions else 0.0
        return out


def build_scored_dataset(
    images: ray.data.Dataset, cfg: Config, questioner: Checkpoint, reasoner: Checkpoint
) -> ray.data.Dataset:
    """The lazy streaming pipeline from image rows to scored question rows (nothing runs until consumed)."""
    return score_questions(ask_questions(images, cfg, questioner), cfg, reasoner)


def ask_questions(images: ray.data.Dataset, cfg: Config, questioner: Checkpoint) -> ray.data.Dataset:
    """First half: image rows -> one parsed question row per questioner sample (image bytes carried on)."""
    gen = cfg.generation
    ds = images.map_batches(QuestionerPrompts(cfg.seed), **_LIGHT)
    ds = engine_stage(
        ds,
        questioner,
        gen.questioner_engine,
        gen.questioner_sampling,
        gen.questions_per_image,
        "q_",
        cfg.seed,
    )
    return ds.map_batches(ExplodeQuestions(), **_LIGHT)


def score_questions(questions: ray.data.Dataset, cfg: Config, reasoner: Checkpoint) -> ray.data.Dataset:
    """Second half: question rows -> m reasoner answers each -> votes, rewards and the keep decision."""
    gen = cfg.generation
    ds = questions.map_batches(ReasonerPrompts(cfg.seed), **_LIGHT)
    ds = engine_stage(
        ds, reasoner, gen.reasoner_engine, gen.reasoner_sampling, gen.answers_per_question, "r_", cfg.seed
    )
    return ds.map_batches(ScoreQuestions(gen, cfg.rewards), batch_size=gen.score_batch_size, **_LIGHT)


def engine_stage(
    ds: ray.data.Dataset, model: Checkpoint, engine, sampling, n: int, prefix: str, seed: int
) -> ray.data.Dataset:
    """Add one role's engine stage: its own engine actor pool, or the model's running rollout engines."""
    if model.engines:
        stage_args = dict(
            actors=list(model.engines), checkpoint_id=model.version, sampling=sampling, n=n, prefix=prefix
        )
        return ds.map_batches(
            RolloutEngineStage(**stage_args), batch_size=engine.batch_size,
            compute=ray.data.TaskPoolStrategy(size=2 * len(model.engines)), **_FORWARD,
        )  # fmt: skip
    stage_args = dict(
        checkpoint=model.path, checkpoint_id=model.version, engine=engine, sampling=sampling, n=n, prefix=prefix,
        seed=seed,
    )  # fmt: skip
    return ds.map_batches(EngineStage, fn_constructor_kwargs=stage_args, **engine_map_kwargs(engine))


def run_generation(
    cfg: Config, out_dir: str | Path, questioner: Checkpoint, reasoner: Checkpoint
) -> GenerationSummary:
    """Run one pass over ``cfg.corpus`` and write its tables and summary to `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    ray.data.DataContext.get_current().execution_options.preserve_order = True  # same seed -> same rows
    read = read_images(  # decoded once and held in the object store; everything after streams
        cfg.corpus.path,
        max_pixels=cfg.corpus.max_pixels,
        max_file_bytes=cfg.corpus.max_file_bytes,
        parquet_image_column=cfg.corpus.parquet_image_column,
        limit=cfg.corpus.limit,
    )
    scored = build_scored_dataset(read.images, cfg, questioner, reasoner)
    table = pa.concat_tables(ray.get(scored.to_arrow_refs()))
    _check_every_image_arrived(read, table)
    rows = table.to_pylist()
    reasons = dedup_and_cap(rows, cfg.generation.max_questions_per_image, cfg.generation.dedup_scope)
    table = table.set_column(
        table.schema.get_field_index("drop_reason"), "drop_reason", pa.array(reasons, pa.string())
    )
    table = table.set_column(
        table.schema.get_field_index("keep"), "keep", pa.array([r == "" for r in reasons])
    )
    kept = table.filter(pa.compute.field("keep"))
    dropped = table.filter(~pa.compute.field("keep"))
    files = {
        "questions": str(out_dir / "questions.parquet"),
        "dropped": str(out_dir / "dropped.parquet"),
        "rejects": str(out_dir / "rejects.parquet"),
        "images": str(out_dir / "images.parquet"),
    }
    pq.write_table(kept, files["questions"])
    _write_kept_images(read, set(kept["image_id"].to_pylist()), files["images"])
    pq.write_table(dropped, files["dropped"])
    write_rejects(read.rejects, files["rejects"])
    summary = summarise(table, read, time.perf_counter() - started, files)
    (out_dir / "summary.json").write_text(json.dumps(asdict(summary), indent=2))
    log.info(
        "generation: %d images read, %d rejected %s; %d questions -> %d kept, drops %s",
        summary.images_read, summary.rejected, summary.rejects_by_reason, summary.questions, summary.kept,
        summary.drops_by_reason,
    )  # fmt: skip
    return summary


def summarise(
    table: pa.Table, read: ImageRead, wall_seconds: float, files: dict[str, str]
) -> GenerationSummary:
    """Counts, parse rate, p histogram (10 bins over [0, 1]) and tokens/s per engine stage."""
    rows = table.select(
        [
            "image_id",
            "parse_ok",
            "p",
            "keep",
            "drop_reason",
            "questioner_tokens",
            "questioner_seconds",
            "reasoner_tokens",
            "reasoner_seconds",
        ]
    ).to_pylist()
    histogram = [0] * 10
    for r in rows:
        if r["parse_ok"]:
            histogram[min(int(r["p"] * 10), 9)] += 1
    q_seconds = sum(r["questioner_seconds"] for r in rows)
    r_seconds = sum(r["reasoner_seconds"] for r in rows)
    return GenerationSummary(
        images_offered=read.offered,
        images_read=read.n_images,
        rejected=sum(read.reject_counts.values()),
        rejects_by_reason={k: v for k, v in read.reject_counts.items() if v},
        questions=len(rows),
        kept=sum(r["keep"] for r in rows),
        dropped=sum(not r["keep"] for r in rows),
        drops_by_reason=dict(Counter(r["drop_reason"] for r in rows if not r["keep"])),
        parse_rate=sum(r["parse_ok"] for r in rows) / max(len(rows), 1),
        p_histogram=histogram,
        questioner_tokens_per_s=sum(r["questioner_tokens"] for r in rows) / q_seconds if q_seconds else 0.0,
        reasoner_tokens_per_s=sum(r["reasoner_tokens"] for r in rows) / r_seconds if r_seconds else 0.0,
        wall_seconds=wall_seconds,
        files=files,
    )


def _check_every_image_arrived(read: ImageRead, table: pa.Table) -> None:
    """Every read image yields at least one question row (even on engine errors); anything else is a bug."""
    read_ids = pa.concat_tables(ray.get(read.images.select_columns(["image_id"]).to_arrow_refs()))["image_id"]
    missing = set(read_ids.to_pylist()) - set(table["image_id"].to_pylist())
    if missing:
        raise RuntimeError(
            f"{len(missing)} images were read but never reached the end of the pipeline: {sorted(missing)[:5]}"
        )


def _write_kept_images(read: ImageRead, image_ids: set[str], path: str) -> None:
    """The images that kept questions refer to (one row per image id), so a question set is self-contained."""
    tables = ray.get(read.images.select_columns(["image_id", "image"]).to_arrow_refs())
    table = (
        pa.concat_tables(tables)
        if tables
        else pa.table({"image_id": pa.array([], pa.string()), "image": pa.array([], pa.binary())})
    )
    rows, seen = [], set()
    for row in table.to_pylist():
        if row["image_id"] in image_ids and row["image_id"] not in seen:
            seen.add(row["image_id"])
            rows.append(row)
    schema = pa.schema([("image_id", pa.string()), ("image", pa.binary())])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
