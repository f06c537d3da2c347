"""The Vision-SR1 / VisPlay evaluation exports (``zli12321/*``: ``MLLM_test``, ``hallusionbench``, ``MMMU``,
``visnumbench``, …), read for any benchmark that has them.

Columns ``problem`` (``<image>`` tokens are removed), ``answer``, ``images`` (a list of image structs, all
sent), optional ``problem_id`` (kept in ``extra``) and ``file_name``. The mixed ``MLLM_test`` file says in
``file_name`` which benchmark a row belongs to: only rows whose ``file_name`` is one of the benchmark's
``export_names`` are read; no matching row at all is an error listing the values found.

The id is the row number in the file (the ``dataset_index`` the Vision-SR1 tools join on), so it is stable
for an unchanged file. The answer type comes from the benchmark's ``export_fields`` (MM-Vet: ``open``;
HallusionBench: ``yesno``; others inferred from the answer); scoring is the benchmark's own.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from visplay.eval.benchmarks.base import Benchmark, Columns
from visplay.eval.cells import build_example, cell_text, optional_text, required_images
from visplay.eval.schema import EvalExample
from visplay.eval.tables import BenchmarkFormatError, Table, resolve_columns

EXPORT_COLUMNS = frozenset({"problem", "answer", "images"})
"""A file holding all of these columns is read as a Vision-SR1 export."""

_IMAGE_TOKEN_RE = re.compile(r"<image>")


class VisionSR1(Benchmark):
    """The reader of ``bench``'s rows in a Vision-SR1 export (module docstring)."""

    def __init__(self, bench: Benchmark) -> None:
        if not bench.export_names:
            raise ValueError(f"benchmark {bench.name!r} has no Vision-SR1 export")
        self.bench = bench
        self.name = bench.name  # type: ignore[misc]  # reads as the benchmark it wraps
        self.seen: Counter[str] = Counter()

    def columns(self, table: Table) -> Columns:
        return resolve_columns(
            table,
            self.name,
            {"problem": ("problem",), "answer": ("answer",), "images": ("images",)},
            {"problem_id": ("problem_id",), "file_name": ("file_name",)},
        )

    def wanted(self, table: Table, cols: Columns, row: dict[str, Any]) -> bool:
        if not cols["file_name"]:
            return True
        file_name = str(row[cols["file_name"]] or "").strip()
        self.seen[file_name] += 1
        return not file_name or file_name in self.bench.export_names  # a blank one is rejected in example()

    def example(self, table: Table, cols: Columns, number: int, row: dict[str, Any]) -> EvalExample:
        if cols["file_name"] and not optional_text(table, number, row, cols["file_name"]):
            raise BenchmarkFormatError(
                f"{table.path}: row {number}: blank file_name, so no benchmark is named"
            )
        question = _IMAGE_TOKEN_RE.sub("", cell_text(table, number, row, cols["problem"])).strip()
        answer = cell_text(table, number, row, cols["answer"])
        return build_example(
            table,
            number,
            example_id=str(number),
            benchmark=self.name,
            question=question,
            images=required_images(table, number, row, cols["images"]),
            category="",
            extra={"problem_id": optional_text(table, number, row, cols["problem_id"])},
            **self.bench.export_fields(answer, question),
        )

    def row_label(self, cols: Columns, number: int, row: dict[str, Any]) -> str:
        return str(number)

    def empty_message(self, table: Table) -> str | None:
        """Why a mixed file gave no row of the benchmark (the ``file_name`` values it has), or None."""
        if not self.seen or any(self.seen[name] for name in self.bench.export_names):
            return None
        return (
            f"{table.path}: no row has file_name {list(self.bench.export_names)} (benchmark {self.name!r}); "
            f"file_name values found: {dict(sorted(self.seen.items()))}"
        )


def is_export(table: Table) -> bool:
    """Whether ``table`` has the Vision-SR1 export's columns."""
    return set(table.columns) >= EXPORT_COLUMNS
