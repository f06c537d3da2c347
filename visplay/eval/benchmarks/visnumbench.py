"""VisNumBench (``GML-FMGroup/mllm_number_sense`` on GitHub; ``GML-FMGroup/VisNumBench`` on Hugging Face).

Layouts read:

* the GitHub release: ``datasets/Real-World Dataset/Real.json`` and ``datasets/Synthetic Mathematical
  Dataset/Synthetic.json``, each a list of ``{id, question, option, answer, image_path, task_class,
  Attributes}``; ``image_path`` (``datasets/Real-World Dataset/Scale/101_Scale.png``) is relative to the
  repository root, as the official ``eval/utils.py`` joins it with ``root_dir``. It is looked up in the
  json's folder and in the three folders above it, so the json read in place or copied to the root works.
* the Hugging Face parquet: ``class``, ``id``, ``question``, ``option``, ``answer``, ``task_class``,
  ``Attributes``, ``image`` (an image struct). It holds both sets, whose ids overlap (``46_Angle`` is in
  both), so there the id is ``<class>/<id>``.

``option`` is one string, ``"(a) 1 (b) 2 (c) 3 (d) 4"`` (:func:`parse_options`); a list is accepted too.
The gold ``answer`` is ``"(c) 3"``; ``"(c)"``, a bare letter or one option's text also name an option
(:func:`gold_letter`). ``Attributes`` (``Angle`` … ``Volume``, the official ``major_cls``) → ``category``;
``task_class`` and ``class`` go to ``extra``. Older copies with ``attribute`` or ``image`` (a path) read too.

Scoring follows ``eval/utils.py`` ``judge``: the official pipeline maps a free-form answer to an option
label ``(a)``… with an LLM (``eval/extrac_answer.py``, InternVL2.5-38B) and compares it with the first three
characters of the gold (``"(c)"``). Here the option is read by rule (:meth:`VisNumBench.score`): ``(c)``,
``c``, ``C``, ``The answer is (c)``, or the option's text. Per-set accuracies are reported as
``acc/<class>`` when the file says the set (the paper reports Synthetic and Real apart).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from visplay.eval.benchmarks.base import Benchmark, Columns
from visplay.eval.cells import (
    build_example,
    cell_list,
    cell_text,
    inferred_fields,
    option_index,
    optional_text,
    required_images,
)
from visplay.eval.schema import LETTERS, EvalExample
from visplay.eval.scoring import ScoredRow, choice_from_text, extract_answer
from visplay.eval.tables import BenchmarkFormatError, Table, resolve_columns
from visplay.rewards import choice_letter

_LABEL_RE = re.compile(r"(?:^|(?<=\s))\(([a-jA-J])\)")
"""An option label ``(a)`` at the start or after a space."""
_LOWER_MENTION_RE = re.compile(r"\(([a-j])\)")
"""A lower-case label in free text (``I pick (c) here``), the form the benchmark writes its options in."""


def parse_options(text: str) -> tuple[str, ...]:
    """The option texts of ``"(a) 1 (b) 2 (c) 3"`` → ``("1", "2", "3")``: the labels must run ``(a)``,
    ``(b)``, … from the start of the string without a gap (upper case is accepted), at least two; else
    ``()``. Labels inside an option (``(a) (0.5, 0.6) (b) …``) are not confused with it: only the next
    letter's label ends an option, and the last one ends at the end of its line."""
    text = text.strip()
    labels = [(m.start(), m.end(), m.group(1).lower()) for m in _LABEL_RE.finditer(text)]
    if not labels or labels[0][0] != 0:
        return ()
    chosen = []
    for start, end, letter in labels:
        if letter == LETTERS[len(chosen)].lower():
            chosen.append((start, end))
            if len(chosen) == len(LETTERS):
                break
    if len(chosen) < 2:
        return ()
    last_end = chosen[-1][1]
    line_end = text.find("\n", last_end)
    bounds = [*(start for start, _ in chosen[1:]), line_end if line_end >= 0 else len(text)]
    return tuple(text[end:stop].strip() for (_, end), stop in zip(chosen, bounds, strict=True))


def gold_letter(answer: str, options: tuple[str, ...]) -> str | None:
    """The option letter a gold answer names: ``"(c) 3"`` / ``"(c)"`` / ``"c"`` / ``"C"`` → ``"C"`` (the
    official ``judge`` compares only the first three characters, ``(c)``); else the one option whose text it
    is; None if neither (or the letter is beyond the options)."""
    match = re.match(r"^\s*\(([a-jA-J])\)", answer)
    letter = match.group(1).upper() if match else (choice_letter(answer) if len(answer) <= 3 else None)
    if letter is not None:
        return letter if LETTERS.index(letter) < len(options) else None
    index = option_index(answer, options)
    return LETTERS[index] if index is not None else None


class VisNumBench(Benchmark):
    """VisNumBench (module docstring)."""

    name = "visnumbench"
    export_names = ("visnumbench",)
    notes = (
        "the chosen option is read by rule (label or option text) where the official pipeline asks an LLM "
        "to map the answer to an option",
    )

    def open(self, path: Path, split: str | None) -> Table:
        table = super().open(path, split)
        return replace(table, image_dirs=tuple(table.base_dir.resolve().parents)[:3])

    def columns(self, table: Table) -> Columns:
        return resolve_columns(
            table,
            self.name,
            {
                "question": ("question",),
                "options": ("option", "options", "choices"),
                "answer": ("answer",),
                "image": ("image", "image_path"),
            },
            {
                "id": ("id", "index"),
                "class": ("class",),
                "category": ("Attributes", "attribute", "category"),
                "task_class": ("task_class",),
            },
        )

    def example(self, table: Table, cols: Columns, number: int, row: dict[str, Any]) -> EvalExample:
        cell = row[cols["options"]]
        if isinstance(cell, list | tuple):
            options = tuple(cell_list(table, number, row, cols["options"]))
        else:
            raw = cell_text(table, number, row, cols["options"])
            options = parse_options(raw)
            if not options:
                raise BenchmarkFormatError(
                    f"{table.path}: row {number}, column {cols['options']!r}: {raw[:80]!r} does not list "
                    "options as '(a) … (b) …'"
                )
        answer = cell_text(table, number, row, cols["answer"])
        letter = gold_letter(answer, options)
        if letter is None:
            raise BenchmarkFormatError(
                f"{table.path}: row {number}: answer {answer!r} names none of the options {list(options)}"
            )
        own_id = cell_text(table, number, row, cols["id"]) if cols["id"] else str(number)
        set_name = optional_text(table, number, row, cols["class"])
        return build_example(
            table,
            number,
            example_id=f"{set_name}/{own_id}" if set_name else own_id,
            benchmark=self.name,
            question=cell_text(table, number, row, cols["question"]),
            images=required_images(table, number, row, cols["image"]),
            answer=letter,
            options=options,
            category=optional_text(table, number, row, cols["category"]),
            answer_type="choice",
            extra={
                "class": set_name,
                "task_class": optional_text(table, number, row, cols["task_class"]),
            },
        )

    def score(self, example: EvalExample, text: str) -> float:
        """1.0 when the answer picks the gold option: :func:`~visplay.eval.scoring.choice_from_text` (a
        letter in any case, ``(c)``, the option's text), then the last lower-case ``(c)`` label in it."""
        answer = extract_answer(text)
        if not answer or example.answer_type != "choice":
            return 0.0
        picked = choice_from_text(answer, example.options)
        if picked is None:
            allowed = LETTERS[: len(example.options)].lower()
            mentions = [m.group(1) for m in _LOWER_MENTION_RE.finditer(answer) if m.group(1) in allowed]
            picked = mentions[-1].upper() if mentions else None
        return 1.0 if picked == example.answer else 0.0

    def metrics(self, rows: Sequence[ScoredRow]) -> dict[str, float]:
        """``acc/<class>``: the mean score of each set (``class``) when the rows name one; else ``{}``."""
        by_set: dict[str, list[float]] = defaultdict(list)
        for row in rows:
            if row.score is not None and row.example.extra.get("class"):
                by_set[row.example.extra["class"]].append(row.score)
        return {f"acc/{name}": sum(v) / len(v) for name, v in sorted(by_set.items())}

    def export_fields(self, answer: str, question: str) -> dict[str, Any]:
        """A Vision-SR1 export row: options ``(a) … (b) …`` found in the question and a gold naming one
        → ``choice``; else inferred from the answer (:func:`~visplay.eval.cells.inferred_fields`)."""
        start = _LABEL_RE.search(question)
        options = parse_options(question[start.start() :]) if start else ()
        letter = gold_letter(answer, options) if options else None
        if letter is not None:
            return {"answer": letter, "options": options, "answer_type": "choice"}
        return inferred_fields(answer, ())
