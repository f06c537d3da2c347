"""The vLLM engine stage: a callable class for ``Dataset.map_batches`` that serves both roles.

One actor = one vLLM engine, built once in ``__init__`` (40-80 s on CPU) and reused for every batch.
Each input row carries a rendered prompt, its image and a seed; the stage returns ``n`` completions per
row with their token ids and the sampling parameters used. The questioner stage runs it with
``n = questions_per_image`` over images, the reasoner stage with ``n = answers_per_question`` over
questions: same class, different constructor arguments.

Failure handling, so that no row is ever lost silently:
- the engine process died (``EngineDeadError``) -> the actor exits; Ray restarts it (``max_restarts``)
  and re-runs the batch on the new actor (``max_task_retries``), see :func:`engine_map_kwargs`;
- the engine is alive but the batch call raised -> each row is retried alone; a row that still fails
  comes back with empty completions and its error text in ``engine_error`` (reported as a drop).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import pyarrow as pa

from visplay.config import EngineConfig, SamplingConfig
from visplay.engine.llm import build_llm, exit_if_engine_dead, sampling_params, sampling_record, vllm_prompt

log = logging.getLogger(__name__)

INPUT_COLUMNS = ("prompt", "image", "row_seed")
"""Columns the stage reads: rendered prompt text (null: pass the row through ungenerated), the encoded
image (bytes; or a list of images, empty for a text-only prompt, as evaluation sends them: the prompt has
one placeholder per image), and the per-row sampling seed."""

OUTPUT_FIELDS = [
    pa.field("completions", pa.list_(pa.string())),
    pa.field("completion_token_ids", pa.list_(pa.list_(pa.int32()))),
    pa.field("num_generated_tokens", pa.int64()),
    pa.field("sampling", pa.string()),
    pa.field("engine_ckpt", pa.string()),
    pa.field("engine_error", pa.string()),
    pa.field("engine_seconds", pa.float64()),
]
"""Columns the stage adds (prefixed by the role, e.g. ``q_completions``, so both stages' outputs coexist)."""


class EngineStage:
    """Generate ``n`` completions per row with one vLLM engine held by this actor.

    Args:
        checkpoint: HF model directory the engine loads.
        checkpoint_id: the model version recorded with every output row (content id of the weights).
        engine: engine resources and limits.
        sampling: temperature, top_p, max_tokens.
        n: completions per row.
        prefix: output column prefix, e.g. ``"q_"`` for the questioner, ``"r_"`` for the reasoner.
        seed: engine seed (each row also carries its own ``row_seed``).
    """

    def __init__(
        self,
        checkpoint: str,
        checkpoint_id: str,
        engine: EngineConfig,
        sampling: SamplingConfig,
        n: int,
        prefix: str,
        seed: int,
    ) -> None:
        self.checkpoint_id = checkpoint_id
        self.sampling = sampling
        self.n = n
        self.prefix = prefix
        from visplay import console

        console.setup(verbose=True)  # this actor's own process: its INFO lines reach its log
        started = time.perf_counter()
        self.llm = build_llm(checkpoint, engine, seed=seed)
        log.info(
            "engine %s%s ready in %.1fs (pid %d)",
            prefix,
            checkpoint_id[:12],
            time.perf_counter() - started,
            os.getpid(),
        )

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = _input_rows(batch, f"EngineStage({self.prefix})")
        started = time.perf_counter()
        results = self._generate_rows(rows)
        return append_outputs(
            batch,
            rows,
            results,
            time.perf_counter() - started,
            self.sampling,
            self.n,
            self.checkpoint_id,
            self.prefix,
        )

    def _generate_rows(self, rows: list[dict]) -> list[tuple[list[str], list[list[int]], str]]:
        """(texts, token ids, error text or "") per row; rows with a null prompt are passed through."""
        active = [i for i, row in enumerate(rows) if row["prompt"] is not None]
        results: list[tuple[list[str], list[list[int]], str]] = [([], [], "")] * len(rows)
        if not active:
            return results
        try:
            outputs = self._generate([rows[i] for i in active])
            for i, out in zip(active, outputs, strict=True):
                results[i] = out
            return results
        except Exception as err:  # noqa: BLE001 - classified below, never swallowed
            exit_if_engine_dead(err, self.prefix)
            log.warning(
                "engine %s batch of %d failed (%s); retrying row by row", self.prefix, len(active), err
            )
        for i in active:
            try:
                results[i] = self._generate([rows[i]])[0]
            except Exception as err:  # noqa: BLE001
                exit_if_engine_dead(err, self.prefix)
                log.error("engine %s row failed and is reported as engine_error: %s", self.prefix, err)
                results[i] = ([], [], f"{type(err).__name__}: {err}"[:500])
        return results

    def _generate(self, rows: list[dict]) -> list[tuple[list[str], list[list[int]], str]]:
        prompts = [vllm_prompt(row["prompt"], row["image"]) for row in rows]
        params = [sampling_params(self.sampling, self.n, row["row_seed"]) for row in rows]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        return [
            ([c.text for c in out.outputs], [list(c.token_ids) for c in out.outputs], "") for out in outputs
        ]


def _input_rows(batch: pa.Table, who: str) -> list[dict]:
    """The rows of the stage's input columns; a missing column is an error naming the stage."""
    missing = [c for c in INPUT_COLUMNS if c not in batch.column_names]
    if missing:
        raise ValueError(f"{who} needs columns {INPUT_COLUMNS}, missing {missing}")
    return batch.select(list(INPUT_COLUMNS)).to_pylist()


def append_outputs(
    batch: pa.Table,
    rows: list[dict],
    results: list[tuple[list[str], list[list[int]], str]],
    seconds: float,
    sampling: SamplingConfig,
    n: int,
    checkpoint_id: str,
    prefix: str,
) -> pa.Table:
    """``batch`` plus the :data:`OUTPUT_FIELDS` columns (prefixed) built from one (texts, ids, error) per row."""
    per_row_seconds = seconds / max(len(rows), 1)
    columns: dict[str, list[Any]] = {f.name: [] for f in OUTPUT_FIELDS}
    for row, (texts, token_ids, error) in zip(rows, results, strict=True):
        columns["completions"].append(texts)
        columns["completion_token_ids"].append(token_ids)
        columns["num_generated_tokens"].append(sum(len(t) for t in token_ids))
        columns["sampling"].append(sampling_record(sampling, n, row["row_seed"]))
        columns["engine_ckpt"].append(checkpoint_id)
        columns["engine_error"].append(error)
        columns["engine_seconds"].append(per_row_seconds)
    for field in OUTPUT_FIELDS:
        batch = batch.append_column(
            pa.field(prefix + field.name, field.type), pa.array(columns[field.name], field.type)
        )
    return batch


class RolloutEngineStage:
    """The same stage, served by running rollout actors (:class:`visplay.engine.rollout.RolloutActor`).

    Used when the job already holds warm engines with exactly the weights to generate from (the embedded
    default reuses its rollout engines, since an engine start costs a minute on CPU). The stage itself
    is light: it forwards each batch to one of ``actors`` and checks that every rollout came from
    ``checkpoint_id``; a mismatch (an actor restarted on other weights, or was pushed new ones) is an
    error, never a silently mislabelled row.

    It runs as Ray tasks (the pipeline hands ``map_batches`` an instance, see
    :func:`visplay.generation.pipeline.engine_stage`), so it keeps no state between batches: the actor is
    picked by the seed of the batch's first request, which spreads batches over the actors and repeats on a rerun.
    """

    def __init__(
        self, actors: list, checkpoint_id: str, sampling: SamplingConfig, n: int, prefix: str
    ) -> None:
        if not actors:
            raise ValueError("RolloutEngineStage needs at least one rollout actor")
        self.actors, self.checkpoint_id, self.sampling, self.n, self.prefix = (
            actors,
            checkpoint_id,
            sampling,
            n,
            prefix,
        )

    def __call__(self, batch: pa.Table) -> pa.Table:
        import ray

        from visplay.engine.rollout import RolloutRequest

        rows = _input_rows(batch, f"RolloutEngineStage({self.prefix})")
        active = [i for i, row in enumerate(rows) if row["prompt"] is not None]
        requests = [RolloutRequest(rows[i]["prompt"], rows[i]["image"], rows[i]["row_seed"]) for i in active]
        started = time.perf_counter()
        rollouts = []
        if requests:
            actor = self.actors[requests[0].seed % len(self.actors)]
            rollouts = ray.get(actor.generate.remote(requests, self.sampling, self.n))
        results: list[tuple[list[str], list[list[int]], str]] = [([], [], "")] * len(rows)
        for i, rollout in zip(active, rollouts, strict=True):
            if rollout.version != self.checkpoint_id:
                raise RuntimeError(
                    f"rollout actor holds weights {rollout.version!r}, expected {self.checkpoint_id!r} "
                    f"({self.prefix} stage); it was restarted or pushed other weights"
                )
            results[i] = (list(rollout.texts), [list(t) for t in rollout.token_ids], "")
        return append_outputs(
            batch,
            rows,
            results,
            time.perf_counter() - started,
            self.sampling,
            self.n,
            self.checkpoint_id,
            self.prefix,
        )


def engine_map_kwargs(engine: EngineConfig) -> dict[str, Any]:
    """``map_batches`` keyword arguments that place an engine stage: autoscaling pool, resources, retries."""
    return {
        "batch_format": "pyarrow",
        "batch_size": engine.batch_size,
        "concurrency": (engine.min_actors, engine.max_actors),
        "num_cpus": engine.num_cpus,
        "num_gpus": engine.num_gpus,
        "resources": engine.resources,
        "max_restarts": engine.max_restarts,
        "max_task_retries": -1 if engine.max_restarts > 0 else 0,
    }
