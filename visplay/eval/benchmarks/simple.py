"""Benchmarks whose release is one question column with the options written into it: RealWorldQA, MMStar.

Both are scored by :func:`visplay.eval.scoring.score_rule` (their official evaluation is exact match of the
option letter, or of the short answer).
"""

from __future__ import annotations

from typing import Any, ClassVar

from visplay.eval.benchmarks.base import Benchmark, Columns
from visplay.eval.cells import (
    build_example,
    cell_text,
    inferred_fields,
    optional_text,
    options_from_text,
    required_images,
    row_id,
)
from visplay.eval.schema import EvalExample
from visplay.eval.tables import Table, resolve_columns


class EmbeddedOptions(Benchmark):
    """A file with ``question`` (options embedded in the text, see
    :func:`~visplay.eval.cells.options_from_text`), ``answer`` and ``image``, plus an optional id and
    category; the answer type follows from the answer (:func:`~visplay.eval.cells.inferred_fields`)."""

    categories: ClassVar[tuple[str, ...]] = ("category",)

    def columns(self, table: Table) -> Columns:
        return resolve_columns(
            table,
            self.name,
            {"question": ("question",), "answer": ("answer",), "image": ("image",)},
            {"id": self.id_columns, "category": self.categories},
        )

    def example(self, table: Table, cols: Columns, number: int, row: dict[str, Any]) -> EvalExample:
        question = cell_text(table, number, row, cols["question"])
        answer = cell_text(table, number, row, cols["answer"])
        return build_example(
            table,
            number,
            example_id=row_id(table, number, row, cols["id"]),
            benchmark=self.name,
            question=question,
            images=required_images(table, number, row, cols["image"]),
            category=optional_text(table, number, row, cols["category"]),
            **inferred_fields(answer, options_from_text(question)),
        )


class RealWorldQA(EmbeddedOptions):
    """RealWorldQA (``xai-org/RealworldQA``, ``lmms-lab/RealWorldQA`` parquet): ``question`` (with ``A. …``
    option lines for multiple-choice), ``answer`` (a letter, or a short word/number), ``image``. The release
    has no id column, so the id is the row number unless ``id | question_id | index`` exists."""

    name = "realworldqa"
    id_columns = ("id", "question_id", "index")
    export_names = ("realWorldQA",)


class MMStar(EmbeddedOptions):
    """MMStar (``Lin-Chen/MMStar`` parquet): ``index``, ``question`` (ending ``Options: A: …, B: …``),
    ``answer`` (a letter), ``image``; optional ``category``. (``l2_category`` and ``meta_info`` are not
    used.)"""

    name = "mmstar"
    id_columns = ("index", "id")
    export_names = ("mmstar",)
