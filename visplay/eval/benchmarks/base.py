"""The benchmark interface: one :class:`Benchmark` subclass per public benchmark says how its release is
read, how one answer is scored, and which figures its report adds.

    loaded = load_benchmark("mathvista", "MathVista/data/testmini-00000-of-00001.parquet")
    loaded.examples   # the rows that can be evaluated, in file order
    loaded.rejects    # every other row, with its id and the reason: reported, never dropped silently

A row that cannot be used (a gold answer naming none of its options, an image path that is not a file, a
blank question) becomes a :class:`~visplay.eval.schema.Reject` and the rest of the file is read; only what
makes the whole file unreadable (no such file, a missing column, not JSON) raises
:class:`~visplay.eval.tables.BenchmarkFormatError`.

A subclass implements :meth:`Benchmark.columns` (the file's columns, checked once) and
:meth:`Benchmark.example` (one row), and overrides :meth:`Benchmark.open` (where the release is not one
file), :meth:`Benchmark.score` (its official evaluator's rule) and :meth:`Benchmark.metrics` (figures
beyond accuracy) where it needs to. Everything a benchmark needs lives on its class: adding one is one
module, one line in :data:`visplay.eval.benchmarks.BENCHMARKS`, and its tests.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from visplay.eval.cells import inferred_fields, options_from_text
from visplay.eval.schema import EvalExample, Reject
from visplay.eval.scoring import ScoredRow, score_rule
from visplay.eval.tables import BenchmarkFormatError, Table, open_table

log = logging.getLogger(__name__)

ROW_ERRORS = (ValueError, TypeError, KeyError, IndexError, AttributeError, OSError, RecursionError)
"""Errors a row's cells can raise that no check foresaw: the row is rejected with the error as its reason
(a bug in a benchmark class shows there, in ``rejects.jsonl``, instead of stopping the whole file)."""

Columns = dict[str, str | None]
"""Role → the file's column for it (None for an absent optional role), from
:func:`~visplay.eval.tables.resolve_columns`."""

JUDGE_KINDS = ("verdict", "partial_credit")
"""How the LLM judge grades a benchmark: ``verdict`` (correct/incorrect → 1/0) or ``partial_credit`` (a
score in 0.0-1.0, as MM-Vet grades); each kind has a default prompt file in ``visplay/eval/prompts/``."""


class Benchmark:
    """One public benchmark: its release layouts, its scoring rule and its extra figures.

    Class attributes:
        name: the benchmark's name in configs and reports (``mathvista``).
        judge_kind: one of :data:`JUDGE_KINDS`.
        notes: where this project's scoring deliberately differs from the benchmark's official evaluator;
            copied into every report of the benchmark.
        id_columns: the columns holding a row's own id, used to name a rejected row.
        export_names: the ``file_name`` values of this benchmark's rows in the Vision-SR1 / VisPlay
            evaluation exports (``zli12321/MLLM_test``, read by :class:`~visplay.eval.benchmarks.vision_sr1.
            VisionSR1`); empty: no such export.
    """

    name: ClassVar[str]
    judge_kind: ClassVar[str] = "verdict"
    notes: ClassVar[tuple[str, ...]] = ()
    id_columns: ClassVar[tuple[str, ...]] = ("id",)
    export_names: ClassVar[tuple[str, ...]] = ()

    def open(self, path: Path, split: str | None) -> Table:
        """Open the release at ``path`` (a file, or a folder of shards). ``split`` is for benchmarks whose
        release holds several splits side by side (MMMU); the others refuse it."""
        if split is not None:
            raise BenchmarkFormatError(
                f"{path}: benchmark {self.name!r} has no splits to choose (got {split!r})"
            )
        return open_table(path)

    def columns(self, table: Table) -> Columns:
        """The file's columns for each role; a missing required column is a BenchmarkFormatError."""
        raise NotImplementedError

    def example(self, table: Table, cols: Columns, number: int, row: dict[str, Any]) -> EvalExample:
        """One row as an example; a row that cannot be used raises BenchmarkFormatError saying why (any of
        :data:`ROW_ERRORS` rejects the row too)."""
        raise NotImplementedError

    def examples(self, table: Table, cols: Columns, number: int, row: dict[str, Any]) -> list[EvalExample]:
        """The examples of one row: :meth:`example` (a row holding several questions overrides this)."""
        return [self.example(table, cols, number, row)]

    def wanted(self, table: Table, cols: Columns, row: dict[str, Any]) -> bool:
        """Whether a row belongs to this benchmark at all (a mixed file's other rows are skipped, not
        rejected)."""
        return True

    def score(self, example: EvalExample, text: str) -> float:
        """The score in [0, 1] of one completion (default: :func:`visplay.eval.scoring.score_rule`)."""
        return score_rule(example, text)

    def metrics(self, rows: Sequence[ScoredRow]) -> dict[str, float]:
        """Figures beyond the mean score, from scored rows (default: none)."""
        return {}

    def empty_message(self, table: Table) -> str | None:
        """A better reason than "no rows" when no row of the file is this benchmark's (default: None)."""
        return None

    def export_fields(self, answer: str, question: str) -> dict[str, Any]:
        """``answer``/``options``/``answer_type`` of a row of a Vision-SR1 export (:class:`VisionSR1`),
        which states no question type: inferred from the answer, options parsed from the question."""
        return inferred_fields(answer, options_from_text(question))

    def row_label(self, cols: Columns, number: int, row: dict[str, Any]) -> str:
        """The id that names a rejected row: its id column's text where readable, else ``row <n>``."""
        for column in [cols.get("id"), *self.id_columns]:
            value = row.get(column) if column else None
            if isinstance(value, str | int) and str(value).strip():
                return str(value).strip()
        return f"row {number}"


@dataclass(frozen=True)
class Loaded:
    """What :func:`read_benchmark` read from one release.

    Attributes:
        benchmark: the benchmark's name.
        path: the file or folder read.
        examples: the rows that can be evaluated, in file order, ids unique.
        rejects: every other row of the benchmark with its id and the reason (duplicate ids included).
        layout: ``"release"`` or ``"vision_sr1"`` (which reader was used).
    """

    benchmark: str
    path: str
    examples: list[EvalExample]
    rejects: list[Reject] = field(default_factory=list)
    layout: str = "release"


def read_benchmark(
    bench: Benchmark, reader: Benchmark, path: Path, table: Table, limit: int | None
) -> Loaded:
    """Every row of ``table`` through ``reader`` (the benchmark itself, or its export reader), as examples
    and rejects; stops after ``limit`` examples. Raises BenchmarkFormatError when no row can be evaluated
    (the message gives the first reasons)."""
    if not table.columns:
        raise BenchmarkFormatError(f"{path}: the file is empty (no rows)")
    cols = reader.columns(table)
    examples: list[EvalExample] = []
    rejects: list[Reject] = []
    first_row: dict[str, int] = {}
    for number, row in table.rows():
        if not reader.wanted(table, cols, row):
            continue
        try:
            found = reader.examples(table, cols, number, row)
        except BenchmarkFormatError as err:
            rejects.append(Reject(reader.row_label(cols, number, row), str(table.path), str(err)))
            continue
        except ROW_ERRORS as err:  # a cell no check foresaw: still this row's problem, not the file's
            reason = f"{table.path}: row {number}: unexpected {type(err).__name__}: {err}"
            rejects.append(Reject(reader.row_label(cols, number, row), str(table.path), reason))
            continue
        for example in found:
            if example.example_id in first_row:
                first = first_row[example.example_id]
                reason = f"{table.path}: row {number}: duplicate id (first used by row {first})"
                rejects.append(Reject(example.example_id, str(table.path), reason))
                continue
            first_row[example.example_id] = number
            examples.append(example)
        if limit is not None and len(examples) >= limit:
            del examples[limit:]
            break
    if not examples and not rejects and reader.empty_message(table):
        raise BenchmarkFormatError(reader.empty_message(table))
    if not examples:
        reasons = "; ".join(r.reason for r in rejects[:3]) or "the file has no rows of this benchmark"
        raise BenchmarkFormatError(
            f"{path}: no row of benchmark {bench.name!r} can be evaluated ({len(rejects)} rejected): {reasons}"
        )
    if rejects:
        log.warning(
            "%s: %d rows of %s cannot be evaluated and are reported as rejects (first: %s)",
            path,
            len(rejects),
            bench.name,
            rejects[0].reason,
        )
    layout = "release" if reader is bench else "vision_sr1"
    return Loaded(bench.name, str(path), examples, rejects, layout)
