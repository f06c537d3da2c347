"""One question-generation pass: a streaming Ray Data pipeline over shards of the corpus, then the
corpus-wide steps over what it wrote.

    plan (list, number, shard; plan.parquet) ──▶ decode ──▶ SplitDecoded ──▶ QuestionerPrompts
        ──▶ Engine(questioner, n=k) ──▶ ExplodeQuestions ──▶ ReasonerPrompts ──▶ Engine(reasoner, n=m)
        ──▶ ScoreQuestions ──▶ WriteScored (part files per shard)      [step 1: streams, resumes by shard]
    finished shards' parts ──▶ dedup (groupby question) ──▶ cap (groupby image) ──▶ questions/, dropped/,
        rejects/, duplicates/ (Ray Data write_parquet), summary.json              [step 2: resumes as a whole]

The two engine stages are autoscaling actor pools (or tasks forwarding to warm rollout engines); Ray Data
streams blocks between every stage, so the reasoner starts on the first questions while the questioner is
still working, and the first shards are on disk while later images are still unread. Rejected files and
duplicate copies of an image are written as parts by :class:`~visplay.generation.shards.SplitDecoded`; the
driver sees only one small row per part written (see :mod:`visplay.generation.shards` for the layout).

Outputs in ``out_dir`` (parquet dataset folders, read them with ``pyarrow.dataset`` or
``ray.data.read_parquet``): ``questions/`` (kept), ``dropped/`` (every other question, with
``drop_reason``), ``rejects/`` (unusable items), ``duplicates/`` (copies of an image under another
source), ``summary.json`` (counts that add up). Questions name their image by ``source`` and ``image_id``
(sha256 of its bytes): the Reasoner phase reads the images it needs from the corpus itself
(:func:`visplay.data.images.load_image`) rather than from a second copy of every kept image.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow.parquet as pq
import ray

from visplay.checkpoints import Checkpoint
from visplay.config import Config
from visplay.data.images import decode_plan
from visplay.data.plan import CorpusPlan, plan_corpus
from visplay.data.schemas import REJECT_REASONS
from visplay.engine.stage import EngineStage, RolloutEngineStage, engine_map_kwargs
from visplay.generation.finalize import finalize
from visplay.generation.shards import RemoteImageClaims, ShardLedger, ShardWatcher, SplitDecoded, WriteScored
from visplay.generation.stages import ExplodeQuestions, QuestionerPrompts, ReasonerPrompts, ScoreQuestions

log = logging.getLogger(__name__)

_LIGHT = {"batch_format": "pyarrow", "num_cpus": 0.25}  # cheap per-row Python stages run as Ray tasks
_FORWARD = {"batch_format": "pyarrow", "num_cpus": 0.05}
"""Tasks that forward batches to running rollout engines: they only wait on an actor, and their CPU share
differs from ``_LIGHT`` on purpose, since Ray Data fuses consecutive task stages with equal remote arguments
into one operator, which would run the questioner and reasoner one after another inside each task instead
of streaming one into the other. As tasks (not an actor pool) they start nothing per pass: a pool's actor
process costs seconds to start, every time the pipeline runs. Two in flight per engine keep it fed."""


@dataclass
class GenerationSummary:
    """Counts of one pass: ``images_offered == images_read + rejected``, ``images_read`` = images generated +
    ``duplicate_image`` and ``questions == kept + dropped`` (checked before it is written)."""

    images_offered: int
    images_read: int
    rejected: int
    rejects_by_reason: dict[str, int]
    duplicate_image: int
    """Images whose bytes another item of the pass already offered: not generated again (``duplicates/``)."""
    questions: int
    kept: int
    dropped: int
    drops_by_reason: dict[str, int]
    parse_rate: float
    p_histogram: list[int]
    grade_timeouts: int
    """Answer comparisons that ran past the grading timeout (their questions dropped as ``grade_timeout``)."""
    questioner_tokens_per_s: float
    reasoner_tokens_per_s: float
    wall_seconds: float
    shards: int = 0
    """Shards of the plan."""
    shards_run: int = 0
    """Shards this call ran (the rest were finished by an earlier, interrupted run)."""
    first_rows_seconds: float | None = None
    """Seconds from the start of this call until the driver got the first written rows (both engines up)."""
    first_shard_seconds: float | None = None
    """Seconds from the start of this call until its first shard was marked finished."""
    finalize_seconds: float = 0.0
    """Seconds of step 2 (corpus-wide dedup and cap, the final tables)."""
    files: dict[str, str] = field(default_factory=dict)
    """Output dataset folders by table (``summary.json`` holds them relative to the pass directory)."""

    @classmethod
    def from_counts(cls, counts: dict, plan: CorpusPlan, wall_seconds: float, tables: dict[str, str],
                    **extra) -> GenerationSummary:  # fmt: skip
        """The summary from the summed partial counts of :func:`~visplay.generation.finalize.finalize`."""
        rejects = {r: counts.get(f"rejects_{r}", 0) for r in REJECT_REASONS if counts.get(f"rejects_{r}", 0)}
        questions, q_s, r_s = (
            counts.get("questions", 0),
            counts.get("questioner_seconds", 0),
            counts.get("reasoner_seconds", 0),
        )
        return cls(
            images_offered=plan.offered,
            images_read=counts.get("images_generated", 0) + counts.get("duplicate_image", 0),
            rejected=sum(rejects.values()),
            rejects_by_reason=rejects,
            duplicate_image=counts.get("duplicate_image", 0),
            questions=questions,
            kept=counts.get("kept", 0),
            dropped=questions - counts.get("kept", 0),
            drops_by_reason={k[len("drops_") :]: v for k, v in counts.items() if k.startswith("drops_")},
            parse_rate=counts.get("parsed", 0) / max(questions, 1),
            p_histogram=[counts.get(f"p_hist_{i}", 0) for i in range(10)],
            grade_timeouts=counts.get("grade_timeouts", 0),
            questioner_tokens_per_s=counts.get("questioner_tokens", 0) / q_s if q_s else 0.0,
            reasoner_tokens_per_s=counts.get("reasoner_tokens", 0) / r_s if r_s else 0.0,
            wall_seconds=wall_seconds,
            files=tables,
            **extra,
        )

    @classmethod
    def from_dict(cls, data: dict, out_dir: Path) -> GenerationSummary:
        """A summary read back from ``summary.json`` (file paths made absolute under ``out_dir``)."""
        summary = cls(**data)
        summary.shards_run, summary.first_rows_seconds, summary.first_shard_seconds = 0, None, None
        summary.files = {k: str(out_dir / v) for k, v in summary.files.items()}
        return summary

    def check(self) -> None:
        """Raise unless the counts add up (an image or a question lost on the way is a bug to report)."""
        if self.images_offered != self.images_read + self.rejected:
            raise RuntimeError(
                f"offered {self.images_offered} != read {self.images_read} + rejected {self.rejected}"
            )
        if self.questions != self.kept + self.dropped or self.dropped != sum(self.drops_by_reason.values()):
            raise RuntimeError(
                f"questions {self.questions} != kept {self.kept} + dropped {self.drops_by_reason}"
            )

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


def pass_fingerprint(cfg: Config, questioner: Checkpoint, reasoner: Checkpoint) -> tuple[str, dict]:
    """The settings a pass's rows depend on, and their hash: a pass directory holds one fingerprint only."""
    settings = {
        "corpus": cfg.corpus.model_dump(mode="json", exclude={"synthetic_n", "synthetic_seed"}),
        "generation": cfg.generation.model_dump(mode="json", exclude={"reuse_rollout_engines"}),
        "rewards": cfg.rewards.model_dump(mode="json"),
        "seed": cfg.seed,
        "questioner": questioner.version,
        "reasoner": reasoner.version,
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16], settings


def load_or_make_plan(cfg: Config, out_dir: Path, fingerprint: str, settings: dict) -> CorpusPlan:
    """The pass's saved plan (a resumed pass), or a new one saved before anything is read."""
    plan_json, plan_parquet = out_dir / "plan.json", out_dir / "plan.parquet"
    if plan_json.is_file() and plan_parquet.is_file():
        saved = json.loads(plan_json.read_text())
        if saved["fingerprint"] != fingerprint:
            changed = sorted(k for k in settings if saved["settings"].get(k) != settings[k])
            raise RuntimeError(
                f"{out_dir} holds a pass made with other settings ({', '.join(changed)} differ); "
                "use another run name or remove that folder"
            )
        return CorpusPlan(saved["kind"], pq.read_table(plan_parquet), saved["offered"], saved["column"],
                          tuple(saved["ignored"]))  # fmt: skip
    corpus = cfg.corpus
    plan = plan_corpus(
        corpus.path, parquet_image_column=corpus.parquet_image_column, limit=corpus.limit,
        shard_size=cfg.generation.shard_size,
    )  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    pq.write_table(plan.items, plan_parquet)
    record = {"fingerprint": fingerprint, "settings": settings, "kind": plan.kind, "offered": plan.offered,
              "column": plan.column, "ignored": list(plan.ignored), "shards": len(plan.shards)}  # fmt: skip
    tmp = plan_json.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(plan_json)
    return plan


HOLD_AFTER_FIRST_SHARD_ENV = "VISPLAY_TEST_HOLD_AFTER_FIRST_SHARD_S"
"""Fault injection for tests: seconds the shard watcher holds right after marking its first shard (no
other shard is marked meanwhile; the pipeline streams on), so a kill lands with exactly one marker whatever
the machine's speed (shards often finish in one burst). Unset in real runs."""


def _first_marked(started: float) -> float:
    """Seconds since ``started`` at the first shard marker (then the test hold, if one is set)."""
    seconds = time.perf_counter() - started
    hold = float(os.environ.get(HOLD_AFTER_FIRST_SHARD_ENV, "0") or 0)
    if hold > 0:
        log.warning("%s=%s: holding after the first shard", HOLD_AFTER_FIRST_SHARD_ENV, hold)
        time.sleep(hold)
    return seconds


def run_generation(
    cfg: Config, out_dir: str | Path, questioner: Checkpoint, reasoner: Checkpoint
) -> GenerationSummary:
    """Run one pass over ``cfg.corpus`` into ``out_dir``, resuming from its finished shards and steps.

    Step 1 streams the unfinished shards through the pipeline; workers write the scored rows, rejects and
    duplicate copies as per-shard part files, and the driver marks a shard when all its items are on disk.
    Step 2 (:func:`visplay.generation.finalize.finalize`) decides dedup and cap corpus-wide and writes the
    final tables. Only shard ids, part paths and counts reach the driver.
    """
    out_dir = Path(out_dir)
    started = time.perf_counter()
    fingerprint, settings = pass_fingerprint(cfg, questioner, reasoner)
    if (out_dir / "summary.json").is_file() and (out_dir / "final.json").is_file():
        final = json.loads((out_dir / "final.json").read_text())
        if final["fingerprint"] == fingerprint:
            return GenerationSummary.from_dict(json.loads((out_dir / "summary.json").read_text()), out_dir)
    plan = load_or_make_plan(cfg, out_dir, fingerprint, settings)
    sizes = plan.shard_sizes()
    ledger = ShardLedger(out_dir, sizes, fingerprint)
    finished = ledger.finished()
    todo = [s for s in sorted(sizes) if s not in finished]
    log.info("generation: %d shards planned, %d finished earlier, %d to run", len(sizes), len(finished),
             len(todo))  # fmt: skip

    # --- step 1: the streaming pass over the unfinished shards ------------------------------------------
    first_rows_seconds = first_shard_seconds = None
    if todo:
        for shard in todo:
            ledger.clear(shard)
        claims = RemoteImageClaims.remote(
            str(out_dir), [f for m in finished.values() for f in m["files"]["scored"]]
        )
        ray.data.DataContext.get_current().execution_options.preserve_order = True  # shards in plan order
        decoded = decode_plan(
            plan.only(set(todo)), max_pixels=cfg.corpus.max_pixels, max_file_bytes=cfg.corpus.max_file_bytes,
            batch_size=cfg.generation.decode_batch_size,
        )  # fmt: skip
        images = decoded.map_batches(SplitDecoded(str(out_dir), claims), **_LIGHT)
        scored = build_scored_dataset(images, cfg, questioner, reasoner)
        written = scored.map_batches(WriteScored(str(out_dir)), **_LIGHT)
        # Shards are marked by a driver thread that polls the part files on disk (ShardWatcher): rows reach
        # the driver in plan order, behind the slowest earlier block, while the parts are written as blocks
        # finish. The loop below only drives the pipeline; the rows it gets are one small row per part.
        first: list[float] = []
        watcher = ShardWatcher(ledger, todo, on_first=lambda: first.append(_first_marked(started)))
        watcher.start()
        try:
            for _ in written.iter_batches(batch_format="pyarrow", batch_size=None):
                first_rows_seconds = first_rows_seconds or time.perf_counter() - started
        except BaseException:
            watcher.stop(raise_error=False)  # the pass's own error is the one to report
            ray.kill(claims)
            raise
        waiting = watcher.stop()
        for shard in waiting:  # the last shards, shards of rejects only
            if ledger.try_finish(shard) is None:
                raise RuntimeError(
                    f"shard {shard} of {out_dir}: its items did not all reach a part file after the pass "
                    "(an image lost in the pipeline); rerun to redo that shard"
                )
            if not first:
                first.append(_first_marked(started))
        first_shard_seconds = first[0]
        ray.kill(claims)

    # --- step 2: corpus-wide dedup and cap, final tables -------------------------------------------------
    markers = ledger.finished()
    step2_started = time.perf_counter()
    log.info("generation: step 1 done at %.1f s; step 2 (dedup, cap, final tables)", step2_started - started)
    result = finalize(out_dir, markers, cfg.generation.max_questions_per_image, cfg.generation.dedup_scope)
    counts = result["counts"]
    summary = GenerationSummary.from_counts(
        counts, plan, time.perf_counter() - started, result["tables"], shards=len(sizes),
        shards_run=len(todo), first_rows_seconds=first_rows_seconds, first_shard_seconds=first_shard_seconds,
        finalize_seconds=time.perf_counter() - step2_started,
    )  # fmt: skip
    summary.check()
    (out_dir / "summary.json").write_text(json.dumps(asdict(summary), indent=2))
    (out_dir / "final.json").write_text(json.dumps({"fingerprint": fingerprint, "tables": result["tables"]}))
    log.info(
        "generation: %d images read, %d rejected %s, %d duplicate images; %d questions -> %d kept, drops %s",
        summary.images_read, summary.rejected, summary.rejects_by_reason, summary.duplicate_image,
        summary.questions, summary.kept, summary.drops_by_reason,
    )  # fmt: skip
    summary.files = {k: str(out_dir / v) for k, v in summary.files.items()}
    return summary
