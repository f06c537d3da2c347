"""MATH-Vision (``MathLLMs/MathVision``; ``mathllm/MATH-V``).

Layouts read: the GitHub release ``data/test.jsonl`` / ``data/testmini.jsonl`` with ``image`` paths such as
``images/1.jpg`` relative to the repository root (the json's parent folder; the json's own folder is tried
first), and the Hugging Face parquet (``decoded_image`` image struct; its ``image`` column is the path).
Columns: ``id``, ``question`` (refers to ``<image1>``), ``options`` (a list; empty for free-form),
``answer`` (a letter when there are options), ``decoded_image | image``; optional ``subject`` →
``category``, ``level`` → ``extra``.

Scoring follows the official ``evaluation/evaluate.py``: a multiple-choice answer is right when it names the
gold letter or is the gold option's text (:func:`visplay.eval.scoring.choice_from_text`); a free-form
answer when it equals the gold as a value (:func:`visplay.rewards.grade`, symbolic equivalence, where the
official code compares numbers rounded to 2 decimals).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from visplay.eval.benchmarks.base import Benchmark, Columns
from visplay.eval.cells import (
    build_example,
    cell_list,
    cell_text,
    choice_fields,
    optional_text,
    required_images,
)
from visplay.eval.schema import EvalExample
from visplay.eval.tables import Table, resolve_columns


class MathVision(Benchmark):
    """MATH-Vision (module docstring)."""

    name = "mathvision"
    export_names = ("mathvision",)
    notes = ("free-form answers are compared by symbolic equivalence, not the official 2-decimal rounding",)

    def open(self, path: Path, split: str | None) -> Table:
        table = super().open(path, split)
        return replace(table, image_dirs=(table.base_dir.parent,))

    def columns(self, table: Table) -> Columns:
        return resolve_columns(
            table,
            self.name,
            {
                "id": ("id",),
                "question": ("question",),
                "options": ("options",),
                "answer": ("answer",),
                "image": ("decoded_image", "image"),
            },
            {"subject": ("subject",), "level": ("level",)},
        )

    def example(self, table: Table, cols: Columns, number: int, row: dict[str, Any]) -> EvalExample:
        options = tuple(cell_list(table, number, row, cols["options"]))
        answer = cell_text(table, number, row, cols["answer"])
        if options:
            fields = choice_fields(table, number, answer, options)
        else:
            fields = {"answer": answer, "options": (), "answer_type": "math"}
        return build_example(
            table,
            number,
            example_id=cell_text(table, number, row, cols["id"]),
            benchmark=self.name,
            question=cell_text(table, number, row, cols["question"]),
            images=required_images(table, number, row, cols["image"]),
            category=optional_text(table, number, row, cols["subject"]),
            extra={"level": optional_text(table, number, row, cols["level"])},
            **fields,
        )
