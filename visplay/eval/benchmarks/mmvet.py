"""MM-Vet (``yuweihao/MM-Vet``; ``lmms-lab/MMVet``).

Layouts read:

* the official release ``mm-vet.zip``: ``mm-vet.json``, an object keyed ``v1_0`` … (the key is the id,
  column ``_key``) of ``{imagename, question, answer, capability}`` (``capability`` a list such as
  ``["rec", "ocr"]``), with the images in ``images/`` beside it (``images/<imagename>``, as the official
  ``inference/utils.py`` opens them). Pass the json or the folder holding it.
* the lmms-lab parquet: ``question_id``, ``image`` (an image struct), ``question``, ``answer``,
  ``image_source``, ``capability`` (``"rec,ocr"`` or a list).

The capabilities become the example's categories (``"rec,ocr"``), so per-capability scores count a
question in each of its capabilities, as the official ``mm-vet_evaluator.py`` does.

Scoring. The official evaluator (``mm-vet_evaluator.py``) has only a GPT judge giving 0.0-1.0, told that
``<AND>`` in the gold means every element must be in the prediction and ``<OR>`` any one; its few-shot rows
give 0.5 to a prediction holding one of two ``<AND>`` elements. The rule score (:meth:`MMVet.score`) is
this project's approximation of that judge, on the answer (``\\boxed{}`` or the last line): ``<OR>`` —
1.0 when any alternative occurs in it as a whole phrase; ``<AND>`` — the fraction of the parts that occur
(1.0 when all do); a plain gold — 1.0 when the answer equals it or holds it as a whole phrase (the judge
accepts "There are 2 apples." for ``2``). Text is compared in the normal form of
:func:`visplay.rewards.normalize_text`. The LLM judge (``judge_kind = "partial_credit"``) is the real metric.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from visplay.eval.benchmarks.base import Benchmark, Columns
from visplay.eval.cells import build_example, cell_list, cell_text, optional_text, required_images
from visplay.eval.schema import CATEGORY_SEPARATOR, EvalExample
from visplay.eval.scoring import contains_phrase, extract_answer
from visplay.eval.tables import KEY_COLUMN, Table, json_or_folder, open_files, open_table, resolve_columns
from visplay.rewards import normalize_text

JSON_NAME = "mm-vet.json"
IMAGE_FOLDER = "images"
AND, OR = "<AND>", "<OR>"
"""MM-Vet's gold markers: every part is needed / any alternative will do."""


def marker_score(answer: str, gold: str) -> float:
    """The rule score of ``answer`` against an MM-Vet gold (module docstring): ``<OR>`` any alternative
    occurs → 1.0; ``<AND>`` the fraction of parts that occur; plain: equal or contained → 1.0; else 0.0.
    Both sides are normalized (:func:`visplay.rewards.normalize_text`: case, spaces, final period)."""
    text = normalize_text(answer)
    if not text:
        return 0.0
    if OR in gold:
        alternatives = [normalize_text(alt) for alt in gold.split(OR)]
        return 1.0 if any(contains_phrase(text, alt) for alt in alternatives) else 0.0
    if AND in gold:
        parts = [part for part in (normalize_text(p) for p in gold.split(AND)) if part]
        return sum(contains_phrase(text, part) for part in parts) / len(parts) if parts else 0.0
    plain = normalize_text(gold)
    return 1.0 if text == plain or contains_phrase(text, plain) else 0.0


class MMVet(Benchmark):
    """MM-Vet (module docstring)."""

    name = "mmvet"
    judge_kind = "partial_credit"
    id_columns = ("question_id", KEY_COLUMN, "id")
    export_names = ("mm-vet",)
    notes = (
        "the official MM-Vet score is a GPT judge's; the rule score approximates it by whole-phrase "
        "containment (<OR>: any alternative, <AND>: the fraction of parts found, plain: the gold)",
    )

    def open(self, path: Path, split: str | None) -> Table:
        """``mm-vet.json`` (or its folder) with ``images/`` searched; else the parquet file or folder."""
        if split is not None:
            return super().open(path, split)  # refuses it
        path = json_or_folder(path, JSON_NAME)
        if path.suffix == ".json" and path.is_file():
            return open_files(path, (path,), path.parent, (path.parent / IMAGE_FOLDER,))
        table = open_table(path)
        return replace(table, image_dirs=(table.base_dir / IMAGE_FOLDER,))

    def columns(self, table: Table) -> Columns:
        return resolve_columns(
            table,
            self.name,
            {
                "id": self.id_columns,
                "question": ("question",),
                "answer": ("answer",),
                "image": ("image", "imagename"),
            },
            {"capability": ("capability",)},
        )

    def example(self, table: Table, cols: Columns, number: int, row: dict[str, Any]) -> EvalExample:
        return build_example(
            table,
            number,
            example_id=cell_text(table, number, row, cols["id"]),
            benchmark=self.name,
            question=cell_text(table, number, row, cols["question"]),
            images=required_images(table, number, row, cols["image"]),
            answer=cell_text(table, number, row, cols["answer"]),
            options=(),
            category=self._capabilities(table, number, row, cols["capability"]),
            answer_type="open",
        )

    @staticmethod
    def _capabilities(table: Table, number: int, row: dict[str, Any], column: str | None) -> str:
        """The capability labels joined with ``","``: from a list, or a ``"rec,ocr"`` / ``"rec, ocr"``
        string."""
        if column and isinstance(row[column], list | tuple):
            labels = cell_list(table, number, row, column)
        else:
            labels = optional_text(table, number, row, column).split(",")
        return CATEGORY_SEPARATOR.join(label.strip() for label in labels if label.strip())

    def score(self, example: EvalExample, text: str) -> float:
        """:func:`marker_score` of the completion's answer (:func:`~visplay.eval.scoring.extract_answer`)."""
        return marker_score(extract_answer(text), example.answer)

    def export_fields(self, answer: str, question: str) -> dict[str, Any]:
        """A Vision-SR1 export row: the answer as an ``open`` gold, markers kept."""
        return {"answer": answer, "options": (), "answer_type": "open"}
