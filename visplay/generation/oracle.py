"""The oracle question set: the corpus's own labeled questions in place of a generation pass.

The experiment's ``oracle`` arm (jobs/experiment.py) asks how far Reasoner GRPO gets when its labels are
right: the same GRPO samples on the same training images as the label-free arms, but on the synthetic
generator's ground-truth questions, each with its gold answer as the ``silver`` label. Generated
questions have no ground truth, so this is the ceiling the label-free arms are measured against; it
exists only for a synthetic corpus (``ground_truth.jsonl`` beside ``corpus.path``'s ``images/`` folder,
:mod:`visplay.world.corpus`). A real corpus has no labels, and asking for the oracle there is an error.

The tables have the generation pass's schema (:data:`~visplay.data.schemas.SCORED_SCHEMA`), so the
Reasoner's GRPO task and the iteration report read them unchanged: every question is kept, ``p`` is 1.0
(the label is certain), and ``dropped/`` is empty. Ray Data reads the ground truth and writes the rows
(:func:`~visplay.generation.finalize.write_table`); nothing passes through the driver.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import ray

from visplay.data.schemas import SCORED_SCHEMA
from visplay.generation.finalize import write_table
from visplay.generation.outputs import count_rows
from visplay.world.corpus import GROUND_TRUTH_FILENAME, IMAGES_DIRNAME

ORACLE_CKPT = "oracle:ground_truth"
"""What the ``questioner_ckpt`` and ``reasoner_ckpt`` columns say of an oracle row (no model wrote it)."""


def ground_truth_of(corpus_path: str | Path) -> Path:
    """The ground-truth file of a synthetic corpus at ``corpus_path`` (its ``images/`` folder).

    Raises FileNotFoundError naming the path when there is none (a real corpus has no labels).
    """
    images = Path(corpus_path)
    truth = images.parent / GROUND_TRUTH_FILENAME
    if images.name != IMAGES_DIRNAME or not truth.is_file():
        raise FileNotFoundError(
            f"the oracle needs a synthetic corpus: no {GROUND_TRUTH_FILENAME} beside corpus.path {images} "
            f"(expected {truth}); a real corpus has no labels"
        )
    return truth


def oracle_rows(record: dict, corpus_root: str) -> list[dict]:
    """The scored rows (:data:`SCORED_SCHEMA`) of one ground-truth record: one kept row per labeled question.

    ``item`` is the record's index, ``sample_index`` the question's position; the question id is the
    sha256 of (image id, position), so it names the same question in every run.
    """
    rows = []
    for j, qa in enumerate(record["qa"]):
        question_id = hashlib.sha256(f"oracle|{record['image_id']}|{j}".encode()).hexdigest()[:16]
        row = dict.fromkeys(SCORED_SCHEMA.names)
        row.update(
            question_id=question_id, image_id=record["image_id"], source=str(Path(corpus_root) / record["file"]),
            item=int(record["index"]), shard=0, questioner_ckpt=ORACLE_CKPT, questioner_seed=0,
            sample_index=j, item_rows=len(record["qa"]), questioner_sampling="", raw="", questioner_tokens=0,
            questioner_seconds=0.0, parse_ok=True, parse_error="", qtype=qa["qtype"], question=qa["question"],
            proposed_answer=qa["answer"], reasoner_ckpt=ORACLE_CKPT, reasoner_seed=0, reasoner_sampling="",
            reasoner_tokens=0, reasoner_seconds=0.0, answers=[], extracted=[], silver=str(qa["answer"]),
            p=1.0, votes=json.dumps({str(qa["answer"]): 1}), grade_timeouts=0, uncertainty=0.0,
            diversity_penalty=0.0, reward=0.0, question_key=question_id, keep=True, drop_reason="",
        )  # fmt: skip
        rows.append(row)
    return rows


def _with_file(batch: pa.Table) -> pa.Table:
    """Ray Data step: ``ground_truth.jsonl`` lines (column ``text``) -> plus their image's ``file`` (the sort key)."""
    files = [json.loads(line)["file"] for line in batch.column("text").to_pylist()]
    return batch.append_column("file", pa.array(files, pa.string()))


class OracleRows:
    """Ray Data stage: ground-truth lines (input column ``text``) -> their scored rows (:func:`oracle_rows`)."""

    def __init__(self, corpus_root: str) -> None:
        self.corpus_root = corpus_root

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = [
            row
            for line in batch.column("text").to_pylist()
            for row in oracle_rows(json.loads(line), self.corpus_root)
        ]
        return pa.Table.from_pylist(rows, schema=SCORED_SCHEMA)


def write_oracle_questions(corpus_path: str | Path, out_dir: str | Path, limit: int | None = None) -> dict:
    """Write ``out_dir/questions/`` (every labeled question of the corpus) and an empty ``out_dir/dropped/``.

    ``limit`` keeps the images of the first ``limit`` paths in sorted order, as ``corpus.limit`` does for a
    generation pass. Returns the generate phase's record: ``{"tables", "kept", "questions"}``.
    """
    truth, out = ground_truth_of(corpus_path), Path(out_dir)
    lines = ray.data.read_text(str(truth))
    if limit is not None:
        lines = lines.map_batches(_with_file, batch_format="pyarrow").sort("file").limit(limit)
    rows = lines.map_batches(
        OracleRows, fn_constructor_args=(str(truth.parent),), batch_format="pyarrow", concurrency=1
    )
    tables = {
        "questions": write_table(rows, out / "questions", SCORED_SCHEMA),
        "dropped": write_table(
            ray.data.from_arrow(SCORED_SCHEMA.empty_table()), out / "dropped", SCORED_SCHEMA
        ),
    }
    kept = count_rows(str(out / "questions"))  # from the part files' footers
    return {"tables": tables, "kept": kept, "questions": kept}
