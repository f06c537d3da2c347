"""The non-engine steps of the generation pipeline, each a ``map_batches`` callable over Arrow batches.

Row flow (one arrow per stage; engine stages are :class:`visplay.engine.EngineStage`)::

    images ─QuestionerPrompts─▶ (+prompt,row_seed) ─Engine(q_, n=k)─▶ ─ExplodeQuestions─▶ one row per question
        ─ReasonerPrompts─▶ (+prompt,row_seed) ─Engine(r_, n=m)─▶ ─ScoreQuestions─▶ scored rows (keep, drop_reason)

Every stage declares the columns it reads and fails fast, naming them, when one is missing.
Rows are never filtered out here: a question that cannot be used carries its ``drop_reason``.
"""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa

from visplay import prompts
from visplay.config import GenerationConfig, RewardConfig
from visplay.data.schemas import QUESTIONS_SCHEMA, SCORED_SCHEMA
from visplay.generation.dedup import question_hash
from visplay.rewards import Vote, extract_boxed, parse_questioner_output, score_questions, warm_up
from visplay.seeds import derive_seed


def _require(batch: pa.Table, columns: tuple[str, ...], stage: str) -> None:
    missing = [c for c in columns if c not in batch.column_names]
    if missing:
        raise ValueError(f"{stage} needs columns {columns}; missing {missing} (got {batch.column_names})")


class QuestionerPrompts:
    """images rows -> + ``prompt`` (the questioner prompt) and ``row_seed`` (from the run seed and image id)."""

    columns = ("image_id", "image")

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.prompt = prompts.render_prompt(prompts.questioner_messages())

    def __call__(self, batch: pa.Table) -> pa.Table:
        _require(batch, self.columns, type(self).__name__)
        ids = batch.column("image_id").to_pylist()
        batch = batch.append_column("prompt", pa.array([self.prompt] * len(ids), pa.string()))
        return batch.append_column(
            "row_seed", pa.array([derive_seed(self.seed, "q", i) for i in ids], pa.int64())
        )


class ExplodeQuestions:
    """One row per image x questioner sample: parse the raw text into type, question and proposed answer."""

    columns = (
        "image_id", "source", "item", "shard", "image", "row_seed", "q_completions", "q_completion_token_ids",
        "q_sampling", "q_engine_ckpt", "q_engine_error", "q_engine_seconds",
    )  # fmt: skip

    def __call__(self, batch: pa.Table) -> pa.Table:
        _require(batch, self.columns, type(self).__name__)
        out: dict[str, list] = {name: [] for name in QUESTIONS_SCHEMA.names}
        for row in batch.select(list(self.columns)).to_pylist():
            samples = row["q_completions"] or [None]  # an engine error still yields one (failed) question row
            token_ids = row["q_completion_token_ids"] or [[]]
            for index, raw in enumerate(samples):
                parsed = parse_questioner_output(raw or "")
                out["question_id"].append(
                    hashlib.sha256(
                        f"{row['image_id']}|{row['q_engine_ckpt']}|{row['row_seed']}|{index}".encode()
                    ).hexdigest()[:16]
                )
                out["image_id"].append(row["image_id"])
                out["source"].append(row["source"])
                out["item"].append(row["item"])
                out["shard"].append(row["shard"])
                out["image"].append(row["image"])
                out["questioner_ckpt"].append(row["q_engine_ckpt"])
                out["questioner_seed"].append(row["row_seed"])
                out["sample_index"].append(index)
                out["item_rows"].append(len(samples))
                out["questioner_sampling"].append(row["q_sampling"])
                out["raw"].append(raw)
                out["questioner_tokens"].append(len(token_ids[index]))
                out["questioner_seconds"].append(row["q_engine_seconds"] / len(samples))
                out["parse_ok"].append(parsed.ok and raw is not None)
                out["parse_error"].append(row["q_engine_error"] or parsed.error or "")
                out["qtype"].append(parsed.qtype)
                out["question"].append(parsed.question)
                out["proposed_answer"].append(parsed.answer)
        return pa.table(out, schema=QUESTIONS_SCHEMA)


class ReasonerPrompts:
    """questions -> + reasoner ``prompt`` (null for unparsed questions: the engine skips them) and ``row_seed``."""

    columns = ("question_id", "parse_ok", "question")

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def __call__(self, batch: pa.Table) -> pa.Table:
        _require(batch, self.columns, type(self).__name__)
        rows = batch.select(list(self.columns)).to_pylist()
        texts = [
            prompts.render_prompt(prompts.reasoner_messages(r["question"])) if r["parse_ok"] else None
            for r in rows
        ]
        seeds = [derive_seed(self.seed, "r", r["question_id"]) for r in rows]
        batch = batch.append_column("prompt", pa.array(texts, pa.string()))
        return batch.append_column("row_seed", pa.array(seeds, pa.int64()))


class ScoreQuestions:
    """Vote over the m answers, then questioner reward and the difficulty filter, per question.

    The reward is :func:`visplay.rewards.score_questions`, the rule training uses too: the diversity penalty
    clusters the valid questions *of this batch* by BLEU distance, as the questioner's GRPO batch does in
    training; ``batch_size`` of this stage sets that window. Each worker process warms the grader up before
    its first vote (:func:`visplay.rewards.warm_up`, once per process; not in ``__init__``, which runs on
    the driver), so no verdict depends on import time.
    """

    columns = (
        "question_id", "parse_ok", "parse_error", "question", "row_seed", "r_completions", "r_engine_ckpt",
        "r_engine_error", "r_sampling", "r_num_generated_tokens", "r_engine_seconds",
    )  # fmt: skip

    def __init__(self, generation: GenerationConfig, rewards: RewardConfig) -> None:
        self.generation, self.rewards = generation, rewards

    def __call__(self, batch: pa.Table) -> pa.Table:
        _require(batch, self.columns, type(self).__name__)
        warm_up()
        rows = batch.to_pylist()
        extracted = [[extract_boxed(a) for a in row["r_completions"] or []] for row in rows]
        questions = [row["question"] if row["parse_ok"] else None for row in rows]
        results = score_questions(questions, extracted, self.rewards)
        scored = []
        for row, answers, result in zip(rows, extracted, results, strict=True):
            votes = result.vote or Vote(None, 0.0, ())
            drop = self._drop_reason(row, votes)
            scored.append(
                {
                    **{k: row[k] for k in QUESTIONS_SCHEMA.names if k != "image"},
                    "reasoner_ckpt": row["r_engine_ckpt"],
                    "reasoner_seed": row["row_seed"],
                    "reasoner_sampling": row["r_sampling"],
                    "reasoner_tokens": row["r_num_generated_tokens"],
                    "reasoner_seconds": row["r_engine_seconds"],
                    "answers": row["r_completions"] or [],
                    "extracted": answers,
                    "silver": votes.silver,
                    "p": votes.p,
                    "votes": json.dumps([list(group) for group in votes.groups]),
                    "grade_timeouts": votes.timeouts,
                    "uncertainty": result.reward.uncertainty,
                    "diversity_penalty": result.reward.diversity_penalty,
                    "reward": result.reward.total,
                    "question_key": question_hash(row["question"]) if row["parse_ok"] else "",
                    "keep": drop == "",
                    "drop_reason": drop,
                }
            )
        return pa.Table.from_pylist(scored, schema=SCORED_SCHEMA)

    def _drop_reason(self, row: dict, votes: Vote) -> str:
        """The first of :data:`visplay.data.schemas.DROP_REASONS` (in order) that applies, "" to keep."""
        if row["r_engine_error"]:
            return "engine_error"
        if not row["parse_ok"]:
            return "unparsed"
        if votes.timeouts:
            return "grade_timeout"
        if votes.silver is None:
            return "no_silver"
        if votes.p < self.generation.p_low:
            return "too_hard"
        if votes.p > self.generation.p_high:
            return "too_easy"
        return ""
