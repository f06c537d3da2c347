"""Load a benchmark export as :class:`~visplay.eval.schema.EvalExample` records: :func:`load_benchmark`.

    examples = load_benchmark("hallusionbench", "data/HallusionBench/image-00000-of-00001.parquet", limit=100)

:data:`ADAPTERS` maps each benchmark name to the adapter for its public release layout
(:mod:`visplay.eval.benchmarks` lists the columns each expects) plus ``synthetic``, this project's own
labeled corpus (:func:`synthetic`).

**Vision-SR1 layout.** Every benchmark except ``synthetic`` can also be read from the ``zli12321/*`` exports
the Vision-SR1 and VisPlay papers evaluate on (``MLLM_test``, ``hallusionbench``, ``MMMU``, ``visnumbench``,
…): columns ``problem``, ``answer``, ``images`` (a list of image structs; the first is used) and optionally
``problem_id`` and ``file_name``. A file with ``problem``, ``answer`` and ``images`` columns is read that way
(:func:`vision_sr1`). The mixed ``MLLM_test`` file says in ``file_name`` which benchmark a row belongs to;
only the rows of the requested benchmark are read (:data:`VISION_SR1_FILE_NAMES`).

Shared rules: ids are unique within the file; a missing or misnamed required column, an empty file, a
blank required cell or an unreadable image is a :class:`~visplay.eval.tables.BenchmarkFormatError` naming the
file (and the row and column); multiple-choice gold answers become letters and yes/no gold answers
``"yes"``/``"no"``. One image per example: of several (MMMU ``image_2``…, a longer ``images`` list) the
first is used and ``extra["n_images"]`` says how many there were.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from visplay.eval.benchmarks import HALLUSION_GT, PUBLIC_ADAPTERS, Adapter
from visplay.eval.schema import EvalExample
from visplay.eval.tables import (
    BenchmarkFormatError,
    Table,
    build_example,
    cell_text,
    free_fields,
    inferred_fields,
    open_table,
    optional_text,
    options_from_text,
    required_image,
    resolve_columns,
)
from visplay.rewards import yes_no
from visplay.world.corpus import GROUND_TRUTH_FILENAME

__all__ = [
    "ADAPTERS",
    "VISION_SR1_FILE_NAMES",
    "BenchmarkFormatError",
    "load_benchmark",
    "synthetic",
    "vision_sr1",
]

VISION_SR1_FILE_NAMES: dict[str, tuple[str, ...]] = {
    "mmvet": ("mm-vet",),
    "mmmu": ("MMMU", "mmmu"),
    "realworldqa": ("realWorldQA",),
    "visnumbench": ("visnumbench",),
    "mathverse": ("mathverse",),
    "mathvision": ("mathvision",),
    "hallusionbench": ("hallusionbench",),
    "mathvista": ("mathvista",),
    "mmstar": ("mmstar",),
}
"""Benchmark → the ``file_name`` values of its rows in a mixed Vision-SR1 file (``MLLM_test``)."""

VISION_SR1_COLUMNS = frozenset({"problem", "answer", "images"})
"""A file holding all of these columns is read in the Vision-SR1 layout."""

_IMAGE_TOKEN_RE = re.compile(r"<image>")
_SYNTHETIC_QA_KEYS = ("question", "answer", "qtype", "skill", "choices")


def synthetic(table: Table) -> Iterator[EvalExample]:
    """This project's synthetic corpus (``ground_truth.jsonl`` written by
    :func:`visplay.world.corpus.make_corpus`): ``split``, ``index``, ``file`` (the PNG, relative to the
    file), ``qa`` (a list of ``{question, answer, qtype, skill, choices}``); optional ``kind``, ``image_id``.

    One example per QA pair, id ``<split>-<index:05d>-q<j>``: ``multiple choice`` → ``choice`` (``answer`` is
    the letter, ``choices`` the options), ``numerical`` / ``regression`` → ``math``; ``category`` is the
    skill; ``extra`` holds ``kind``, ``qtype`` and ``image_id``.
    """
    cols = resolve_columns(
        table,
        "synthetic",
        {"split": ("split",), "index": ("index",), "file": ("file",), "qa": ("qa",)},
        {"kind": ("kind",), "image_id": ("image_id",)},
    )
    for number, row in table.rows():
        index = cell_text(table, number, row, cols["index"])
        if not index.isdigit():
            raise BenchmarkFormatError(
                f"{table.path}: row {number}, column 'index': {index!r} is not an integer"
            )
        stem = f"{cell_text(table, number, row, cols['split'])}-{int(index):05d}"
        image = required_image(table, number, row, cols["file"])[0]
        qa_list = row[cols["qa"]]
        if not isinstance(qa_list, list) or not qa_list:
            raise BenchmarkFormatError(f"{table.path}: row {number}, column 'qa' must be a non-empty list")
        for j, qa in enumerate(qa_list):
            missing = [key for key in _SYNTHETIC_QA_KEYS if not isinstance(qa, dict) or key not in qa]
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
            yield build_example(
                table,
                number,
                example_id=f"{stem}-q{j}",
                benchmark="synthetic",
                question=str(qa["question"]),
                image=image,
                category=str(qa["skill"]),
                extra={
                    "kind": optional_text(table, number, row, cols["kind"]),
                    "qtype": str(qa["qtype"]),
                    "image_id": optional_text(table, number, row, cols["image_id"]),
                },
                **fields,
            )


def vision_sr1(benchmark: str) -> Adapter:
    """The adapter reading ``benchmark`` from a Vision-SR1 export: ``problem`` (``<image>`` tokens are
    removed), ``answer``, ``images``; optional ``problem_id`` (kept in ``extra``) and ``file_name`` (rows of
    other benchmarks are skipped; no matching row at all is an error listing the values found).

    The id is the row number in the file (the ``dataset_index`` the Vision-SR1 tools join on), so it is
    stable for an unchanged file. Types: ``mmvet`` → ``open``; ``hallusionbench`` → ``yesno`` (``1``/``0``
    or yes/no); others are inferred from the answer (:func:`~visplay.eval.tables.inferred_fields`, with
    options parsed from the problem text).
    """
    if benchmark not in VISION_SR1_FILE_NAMES:
        raise ValueError(
            f"benchmark {benchmark!r} has no Vision-SR1 layout; known: {sorted(VISION_SR1_FILE_NAMES)}"
        )
    wanted = VISION_SR1_FILE_NAMES[benchmark]

    def adapter(table: Table) -> Iterator[EvalExample]:
        cols = resolve_columns(
            table,
            benchmark,
            {"problem": ("problem",), "answer": ("answer",), "images": ("images",)},
            {"problem_id": ("problem_id",), "file_name": ("file_name",)},
        )
        seen: Counter[str] = Counter()
        for number, row in table.rows():
            if cols["file_name"]:
                seen[file_name := optional_text(table, number, row, cols["file_name"])] += 1
                if file_name not in wanted:
                    continue
            question = _IMAGE_TOKEN_RE.sub("", cell_text(table, number, row, cols["problem"])).strip()
            answer = cell_text(table, number, row, cols["answer"])
            image, n_images = required_image(table, number, row, cols["images"])
            if benchmark == "mmvet":
                fields = {**free_fields(answer), "answer_type": "open"}
            elif benchmark == "hallusionbench":
                verdict = HALLUSION_GT.get(answer.lower()) or yes_no(answer)
                if verdict is None:
                    raise BenchmarkFormatError(
                        f"{table.path}: row {number}: answer {answer!r} is not yes/no or 1/0"
                    )
                fields = {"answer": verdict, "options": (), "answer_type": "yesno"}
            else:
                fields = inferred_fields(answer, options_from_text(question))
            yield build_example(
                table,
                number,
                example_id=str(number),
                benchmark=benchmark,
                question=question,
                image=image,
                category="",
                extra={
                    "problem_id": optional_text(table, number, row, cols["problem_id"]),
                    "n_images": str(n_images),
                },
                **fields,
            )
        if cols["file_name"] and not any(seen[name] for name in wanted):
            raise BenchmarkFormatError(
                f"{table.path}: no row has file_name {list(wanted)} (benchmark {benchmark!r}); "
                f"file_name values found: {dict(sorted(seen.items()))}"
            )

    return adapter


ADAPTERS: dict[str, Adapter] = {**PUBLIC_ADAPTERS, "synthetic": synthetic}
"""Benchmark name → adapter of its native layout (see :func:`load_benchmark` for the Vision-SR1 layout)."""


def load_benchmark(name: str, path: str | Path, limit: int | None = None) -> list[EvalExample]:
    """Read the first ``limit`` examples (all if None) of benchmark ``name`` from a local export.

    Args:
        name: one of :data:`ADAPTERS` (``mmvet``, ``mmmu``, ``realworldqa``, ``visnumbench``, ``mathverse``,
            ``mathvision``, ``hallusionbench``, ``mathvista``, ``mmstar``, ``synthetic``).
        path: a ``.parquet``/``.jsonl``/``.json`` file or a folder of parquet shards; for ``synthetic`` also
            the corpus folder holding ``ground_truth.jsonl``.
        limit: at most this many examples (>= 1), in file order; reading stops there.

    Returns:
        The examples in file order, ids unique.

    Raises:
        ValueError: an unknown benchmark name (the message lists the known ones) or a bad ``limit``.
        BenchmarkFormatError: the file does not fit the benchmark's layout: the message names the file and
            what is wrong (missing column with the expected and found columns, empty file, duplicate ids, …).
    """
    if name not in ADAPTERS:
        raise ValueError(f"unknown benchmark {name!r}; known benchmarks: {sorted(ADAPTERS)}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 or None, got {limit}")
    path = Path(path)
    if name == "synthetic" and path.is_dir():
        path = path / GROUND_TRUTH_FILENAME
    table = open_table(path)
    if not table.columns:
        raise BenchmarkFormatError(f"{path}: the file is empty (no rows)")
    adapter = ADAPTERS[name]
    if name in VISION_SR1_FILE_NAMES and set(table.columns) >= VISION_SR1_COLUMNS:
        adapter = vision_sr1(name)
    examples = list(islice(adapter(table), limit))
    if not examples:
        raise BenchmarkFormatError(f"{path}: the file has no rows (benchmark {name!r})")
    counts = Counter(example.example_id for example in examples)
    duplicates = sorted(example_id for example_id, count in counts.items() if count > 1)
    if duplicates:
        raise BenchmarkFormatError(
            f"{path}: duplicate example ids {duplicates[:10]} ({len(duplicates)} ids occur more than once)"
        )
    return examples
