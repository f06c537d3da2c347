"""HallusionBench (``tianyi-lab/HallusionBench``; ``lmms-lab/HallusionBench``).

Layouts read:

* the GitHub release as its README lays it out: ``HallusionBench.json`` (a list of questions) in the
  repository root and the unzipped ``hallusion_bench/`` image folder beside it. ``filename`` is
  ``./VD/illusion/0_0.png`` in the current json (relative to ``hallusion_bench/``) and
  ``./hallusion_bench/VD/illusion/0_0.png`` in the first release (relative to the json's folder), null for a
  text-only question; both resolve, and so does a copy of the json inside the image root. Pass the json or
  the folder holding it. (Any folder beside the json holding ``VD/`` or ``VS/`` is searched too.)
* the lmms-lab parquet, split ``image`` (an image struct column ``image``) and split ``non_image`` (the
  178 text-only questions, ``image`` null); one file, or the ``data/`` folder holding both.

Columns: ``category`` (``VD``/``VS``), ``subcategory``, ``set_id``, ``figure_id``, ``question_id``,
``question``, ``gt_answer`` (``"1"`` yes, ``"0"`` no), ``image | filename``; optional ``visual_input``
(``"0"``: a text-only question, asked without an image; without the column, ``VS`` figure ``"0"`` is the
text-only question, as the official ``get_eval_fig`` treats it) and ``gt_answer_details`` (kept in
``extra`` for a judge). The id is ``category_subcategory_setid_figureid_questionid``, the key the official
``get_eval_all`` asserts unique.

Scoring follows ``utils.py`` of ``tianyi-lab/HallusionBench`` (read by ``evaluation.py``), where a GPT
judge labels each answer correct / incorrect / unclear: here the answer's yes/no
(:func:`visplay.eval.scoring.yes_no_from_text` of :func:`~visplay.eval.scoring.extract_answer`) is compared
with the gold; ``assign_correctness`` also counts an unclear answer to a text-only ``VS`` question
(figure ``"0"``) as correct, and so does :meth:`HallusionBench.score` (an answer that says neither yes nor
no; an empty answer stays wrong). The three figures (:meth:`HallusionBench.metrics`) are computed over
every question, the text-only ones included.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from visplay.eval.benchmarks.base import Benchmark, Columns
from visplay.eval.cells import build_example, cell_images, cell_text, optional_text
from visplay.eval.schema import EvalExample
from visplay.eval.scoring import ScoredRow, extract_answer, yes_no_from_text
from visplay.eval.tables import (
    BenchmarkFormatError,
    Table,
    json_or_folder,
    open_files,
    open_table,
    resolve_columns,
)
from visplay.rewards import yes_no

HALLUSION_KEYS = ("category", "subcategory", "set_id", "figure_id", "question_id")
"""The ids of a question, in the order of the official key; all of them are kept in ``extra``."""

GT_ANSWERS = {"1": "yes", "0": "no", "yes": "yes", "no": "no"}
"""``gt_answer`` values → yes/no (the release writes ``"1"`` for yes and ``"0"`` for no)."""

JSON_NAME = "HallusionBench.json"
IMAGE_FOLDER = "hallusion_bench"
"""The name of the unzipped image folder (``hallusion_bench.zip``) the README puts beside the json."""


def is_text_only(extra: dict[str, str]) -> bool:
    """Whether a question is asked without a figure: ``visual_input == "0"``, or (without that column)
    ``VS`` figure ``"0"``, the question the official ``get_eval_fig`` leaves out as "no figure"."""
    if extra.get("visual_input"):
        return extra["visual_input"] == "0"
    return extra.get("category") == "VS" and extra.get("figure_id") == "0"


class HallusionBench(Benchmark):
    """HallusionBench (module docstring)."""

    name = "hallusionbench"
    id_columns = ()
    export_names = ("hallusionbench",)
    notes = (
        "yes/no is read from the answer by rule where the official evaluation asks a GPT judge",
        "aAcc/fAcc/qAcc need the release's ids: a Vision-SR1 export gives only the mean score",
    )

    def open(self, path: Path, split: str | None) -> Table:
        """The json (with its image folders to search) or the parquet file / ``data/`` folder."""
        if split is not None:
            return super().open(path, split)  # refuses it
        path = json_or_folder(path, JSON_NAME)
        if path.suffix != ".json" or not path.is_file():
            return open_table(path)
        folder = path.parent
        beside = [
            d
            for d in sorted(folder.iterdir())
            if d.is_dir() and d.name != IMAGE_FOLDER and ((d / "VD").is_dir() or (d / "VS").is_dir())
        ]
        return open_files(path, (path,), folder, (folder / IMAGE_FOLDER, *beside, folder.parent))

    def columns(self, table: Table) -> Columns:
        return resolve_columns(
            table,
            self.name,
            {
                **{key: (key,) for key in HALLUSION_KEYS},
                "question": ("question",),
                "gt_answer": ("gt_answer",),
                "image": ("image", "filename"),
            },
            {
                "filename": ("filename",),
                "visual_input": ("visual_input",),
                "details": ("gt_answer_details",),
            },
        )

    def example(self, table: Table, cols: Columns, number: int, row: dict[str, Any]) -> EvalExample:
        ids = {key: cell_text(table, number, row, cols[key]) for key in HALLUSION_KEYS}
        extra = {
            **ids,
            "visual_input": optional_text(table, number, row, cols["visual_input"]),
            "gt_answer_details": optional_text(table, number, row, cols["details"]),
        }
        gt = cell_text(table, number, row, cols["gt_answer"]).lower()
        if gt not in GT_ANSWERS:
            raise BenchmarkFormatError(
                f"{table.path}: row {number}: gt_answer {gt!r} is not '1' (yes) or '0' (no)"
            )
        images: tuple[bytes, ...] = ()
        if not is_text_only(extra):
            sources = list(dict.fromkeys(c for c in (cols["image"], cols["filename"]) if c))
            for column in sources:  # the image struct, else the file it names
                images = images or cell_images(table, number, row, column)
            if not images:
                raise BenchmarkFormatError(
                    f"{table.path}: row {number}: no image in {' or '.join(map(repr, sources))} (only a "
                    f"text-only question, visual_input '0', may have none; got {extra['visual_input']!r})"
                )
        return build_example(
            table,
            number,
            example_id="_".join(ids[key] for key in HALLUSION_KEYS),
            benchmark=self.name,
            question=cell_text(table, number, row, cols["question"]),
            images=images,
            answer=GT_ANSWERS[gt],
            options=(),
            category=ids["category"],
            answer_type="yesno",
            extra=extra,
        )

    def row_label(self, cols: Columns, number: int, row: dict[str, Any]) -> str:
        """The official key where all five ids are readable, else ``row <n>``."""
        values = [row.get(cols[key] or "") for key in HALLUSION_KEYS]
        if all(isinstance(v, str | int) and str(v).strip() for v in values):
            return "_".join(str(v).strip() for v in values)
        return f"row {number}"

    def score(self, example: EvalExample, text: str) -> float:
        """1.0 when the answer's yes/no is the gold; for a text-only question an answer that is neither
        yes nor no (the official "unclear") is also 1.0, as ``assign_correctness`` counts it."""
        answer = extract_answer(text)
        if not answer:
            return 0.0
        verdict = yes_no_from_text(answer)
        if verdict is None and is_text_only(example.extra):
            return 1.0
        return 1.0 if verdict == example.answer else 0.0

    def metrics(self, rows: Sequence[ScoredRow]) -> dict[str, float]:
        """``aAcc``, ``fAcc`` and ``qAcc`` as fractions, following ``utils.py`` of the official repo:

        * ``aAcc`` (``get_eval_all``): correct questions / all questions, text-only ones included;
        * ``fAcc`` (``get_eval_fig``): questions grouped by ``(category, subcategory, set_id, figure_id)``;
          a figure counts when all its questions are correct. Every question enters except ``VS`` ones with
          ``figure_id == "0"`` (the text-only questions: no figure). ``VD`` figure ``"0"`` (the original
          image) is a figure. NaN when no figure remains;
        * ``qAcc`` (``get_eval_pair_all``): questions grouped by ``(category, subcategory, set_id,
          question_id)``, i.e. one question asked on every figure of its set and, for ``VS``, without a
          figure; a group counts when all its questions are correct. Every question enters.

        Rows without the ids (a Vision-SR1 export) give ``{}``.

        Raises:
            ValueError: no rows, some rows with the ids and some without, or a score other than 0.0/1.0.
        """
        if not rows:
            raise ValueError("HallusionBench metrics need at least one row")
        with_ids = [all(key in row.example.extra for key in HALLUSION_KEYS) for row in rows]
        if not any(with_ids):
            return {}
        if not all(with_ids):
            bad = next(row.example.example_id for row, ok in zip(rows, with_ids, strict=True) if not ok)
            raise ValueError(f"row {bad!r} lacks the HallusionBench ids {HALLUSION_KEYS}")
        figures: dict[tuple[str, ...], list[bool]] = defaultdict(list)
        pairs: dict[tuple[str, ...], list[bool]] = defaultdict(list)
        correct = []
        for row in rows:
            if row.score not in (0.0, 1.0):
                raise ValueError(
                    f"row {row.example.example_id!r}: HallusionBench needs 0/1 scores, got {row.score!r}"
                )
            ok = row.score == 1.0
            category, subcategory, set_id, figure_id, question_id = (
                row.example.extra[key] for key in HALLUSION_KEYS
            )
            correct.append(ok)
            if not (category == "VS" and figure_id == "0"):
                figures[(category, subcategory, set_id, figure_id)].append(ok)
            pairs[(category, subcategory, set_id, question_id)].append(ok)
        return {
            "aAcc": sum(correct) / len(correct),
            "fAcc": sum(all(v) for v in figures.values()) / len(figures) if figures else math.nan,
            "qAcc": sum(all(v) for v in pairs.values()) / len(pairs),
        }

    def export_fields(self, answer: str, question: str) -> dict[str, Any]:
        """A Vision-SR1 export row: ``1``/``0``/``yes``/``no`` → ``yesno`` (anything else is rejected)."""
        verdict = GT_ANSWERS.get(answer.strip().lower()) or yes_no(answer)
        if verdict is None:
            raise BenchmarkFormatError(f"answer {answer!r} is not yes/no or 1/0")
        return {"answer": verdict, "options": (), "answer_type": "yesno"}
