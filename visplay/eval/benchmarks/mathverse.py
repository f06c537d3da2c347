"""MathVerse (``AI4Math/MathVerse`` testmini; ``ZrrSkywalker/MathVerse``).

Layouts read: ``testmini.parquet`` (image struct column ``image``) and ``testmini.json`` (a list of objects,
``image`` a path such as ``images_version_1-4/image_685.png`` relative to the json's folder, or to an
``images/`` folder beside it). Columns: ``sample_index``, ``question`` (blank in the Vision Only version,
where the question is drawn in the image), ``answer``, ``image``, ``question_type`` (``multi-choice`` with
``Choices:`` / ``A:…`` lines in the question, or ``free-form``); optional ``problem_version`` →
``category``, ``problem_index`` → ``extra``; ``query_wo``/``query_cot``/``question_for_eval`` are not used
(the Reasoner prompt adds its own instruction).

Scoring. The official evaluation (``evaluation/score_answer_s2.py``) extracts the answer with GPT and asks a
GPT judge whether it matches; with ``--quick_match`` it compares the extraction with the gold exactly. Here
the rule score extracts by rule (``\\boxed{}`` or the last line) and compares by answer type: a
multi-choice row's letter, a free-form row's value with :func:`visplay.rewards.grade`. Real multi-choice
rows whose gold is not one letter: an option's text (``False`` among ``A:True B:False``) becomes that
option's letter; anything else (``090^\\circ T``, ``C\\nD``) is scored as a free-form answer against that
text (said in :attr:`MathVerse.notes`); the judge, when configured, grades them as it grades every row.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from visplay.eval.benchmarks.base import Benchmark, Columns
from visplay.eval.cells import (
    build_example,
    cell_text,
    free_fields,
    inferred_fields,
    option_index,
    optional_text,
    options_from_text,
    required_images,
)
from visplay.eval.schema import EvalExample
from visplay.eval.tables import Table, resolve_columns

_LETTER_RE = re.compile(r"\(?[A-J]\)?")
"""A gold answer that is one option letter (``B``, ``(B)``)."""


class MathVerse(Benchmark):
    """MathVerse testmini (module docstring)."""

    name = "mathverse"
    id_columns = ("sample_index",)
    export_names = ("mathverse",)
    notes = (
        "answers are extracted by rule (\\boxed{} or the last line), not by the official GPT extractor",
        "multi-choice rows whose gold is neither a letter nor an option's text (e.g. 'C\\nD') are scored as "
        "free-form answers",
    )

    def open(self, path: Path, split: str | None) -> Table:
        table = super().open(path, split)
        return replace(table, image_dirs=(table.base_dir / "images",))

    def columns(self, table: Table) -> Columns:
        return resolve_columns(
            table,
            self.name,
            {
                "id": ("sample_index",),
                "question": ("question",),
                "answer": ("answer",),
                "image": ("image",),
                "question_type": ("question_type",),
            },
            {"version": ("problem_version",), "problem_index": ("problem_index",)},
        )

    def example(self, table: Table, cols: Columns, number: int, row: dict[str, Any]) -> EvalExample:
        question = cell_text(table, number, row, cols["question"], required=False)
        answer = cell_text(table, number, row, cols["answer"])
        multi_choice = cell_text(table, number, row, cols["question_type"]) == "multi-choice"
        options = options_from_text(question)
        if multi_choice and (_LETTER_RE.fullmatch(answer) or option_index(answer, options) is not None):
            fields = inferred_fields(answer, options)
        elif multi_choice:
            fields = free_fields(answer)
        else:
            fields = {"answer": answer, "options": (), "answer_type": "math"}
        return build_example(
            table,
            number,
            example_id=cell_text(table, number, row, cols["id"]),
            benchmark=self.name,
            question=question,
            images=required_images(table, number, row, cols["image"]),
            category=optional_text(table, number, row, cols["version"]),
            extra={
                "problem_index": optional_text(table, number, row, cols["problem_index"]),
                "question_type": "multi-choice" if multi_choice else "free-form",
            },
            **fields,
        )


__all__ = ["MathVerse"]
