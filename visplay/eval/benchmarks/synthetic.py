"""This project's labeled synthetic corpus as a benchmark (the held-out split the loop evaluates on)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from visplay.eval.benchmarks.base import Benchmark, Columns
from visplay.eval.cells import build_example, cell_text, optional_text, required_images
from visplay.eval.schema import EvalExample
from visplay.eval.tables import BenchmarkFormatError, Table, resolve_columns
from visplay.world.corpus import GROUND_TRUTH_FILENAME

_QA_KEYS = ("question", "answer", "qtype", "skill", "choices")


class Synthetic(Benchmark):
    """``ground_truth.jsonl`` written by :func:`visplay.world.corpus.make_corpus` (or its folder):
    ``split``, ``index``, ``file`` (the PNG, relative to the file), ``qa`` (a list of ``{question, answer,
    qtype, skill, choices}``); optional ``kind``, ``image_id``.

    One example per QA pair, id ``<split>-<index:05d>-q<j>``: ``multiple choice`` → ``choice`` (``answer`` is
    the letter, ``choices`` the options), ``numerical`` / ``regression`` → ``math``; ``category`` is the
    skill; ``extra`` holds ``kind``, ``qtype`` and ``image_id``. The answers are exact by construction.
    """

    name = "synthetic"
    id_columns = ("index",)

    def open(self, path: Path, split: str | None) -> Table:
        return super().open(path / GROUND_TRUTH_FILENAME if path.is_dir() else path, split)

    def columns(self, table: Table) -> Columns:
        return resolve_columns(
            table,
            self.name,
            {"split": ("split",), "index": ("index",), "file": ("file",), "qa": ("qa",)},
            {"kind": ("kind",), "image_id": ("image_id",)},
        )

    def examples(self, table: Table, cols: Columns, number: int, row: dict[str, Any]) -> list[EvalExample]:
        index = cell_text(table, number, row, cols["index"])
        if not index.isdigit():
            raise BenchmarkFormatError(
                f"{table.path}: row {number}, column 'index': {index!r} is not an integer"
            )
        stem = f"{cell_text(table, number, row, cols['split'])}-{int(index):05d}"
        images = required_images(table, number, row, cols["file"])
        qa_list = row[cols["qa"]]
        if not isinstance(qa_list, list) or not qa_list:
            raise BenchmarkFormatError(f"{table.path}: row {number}, column 'qa' must be a non-empty list")
        examples = []
        for j, qa in enumerate(qa_list):
            missing = [key for key in _QA_KEYS if not isinstance(qa, dict) or key not in qa]
            if missing:
                raise BenchmarkFormatError(f"{table.path}: row {number}, qa[{j}] lacks keys {missing}")
            if qa["qtype"] == "multiple choice":
                fields: dict[str, Any] = {
                    "answer": str(qa["answer"]),
                    "options": tuple(str(c) for c in qa["choices"]),
                    "answer_type": "choice",
                }
            else:
                fields = {"answer": str(qa["answer"]), "options": (), "answer_type": "math"}
            examples.append(
                build_example(
                    table,
                    number,
                    example_id=f"{stem}-q{j}",
                    benchmark=self.name,
                    question=str(qa["question"]),
                    images=images,
                    category=str(qa["skill"]),
                    extra={
                        "kind": optional_text(table, number, row, cols["kind"]),
                        "qtype": str(qa["qtype"]),
                        "image_id": optional_text(table, number, row, cols["image_id"]),
                    },
                    **fields,
                )
            )
        return examples
