"""Adapters for the public benchmarks, each reading the columns of the benchmark's public release.

Every adapter takes an opened :class:`~visplay.eval.tables.Table` and yields
:class:`~visplay.eval.schema.EvalExample` lazily (so a ``limit`` stops reading early). The columns each one
expects are listed in its docstring; ``a | b`` means either name (the first one present is used). Use them
through :func:`visplay.eval.adapters.load_benchmark`, which also handles the Vision-SR1 layout.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

from visplay.eval.schema import CATEGORY_SEPARATOR, EvalExample
from visplay.eval.tables import (
    BenchmarkFormatError,
    Table,
    build_example,
    cell_image,
    cell_list,
    cell_text,
    choice_fields,
    free_fields,
    inferred_fields,
    optional_text,
    options_from_text,
    required_image,
    resolve_columns,
    row_id,
)
from visplay.rewards import choice_letter

Adapter = Callable[[Table], Iterator[EvalExample]]
"""An adapter: an opened table → its examples, in file order."""

_MMMU_SUBJECT_RE = re.compile(r"^(?:dev|validation|test)_(.+)_\d+$")
HALLUSION_GT = {"1": "yes", "0": "no", "yes": "yes", "no": "no"}
"""HallusionBench ``gt_answer`` values → yes/no (the release writes ``"1"`` for yes and ``"0"`` for no)."""


def mmvet(table: Table) -> Iterator[EvalExample]:
    """MM-Vet (``lmms-lab/MMVet``): ``question_id | id``, ``question``, ``answer`` (may hold ``<AND>`` /
    ``<OR>``), ``image``; optional ``capability`` (``"rec,ocr"`` or a list) → ``category``. Type ``open``."""
    cols = resolve_columns(
        table,
        "mmvet",
        {"id": ("question_id", "id"), "question": ("question",), "answer": ("answer",), "image": ("image",)},
        {"capability": ("capability",)},
    )
    for number, row in table.rows():
        capability = cols["capability"]
        if capability and isinstance(row[capability], list):
            category = CATEGORY_SEPARATOR.join(cell_list(table, number, row, capability))
        else:
            category = optional_text(table, number, row, capability)
        yield build_example(
            table,
            number,
            example_id=cell_text(table, number, row, cols["id"]),
            benchmark="mmvet",
            question=cell_text(table, number, row, cols["question"]),
            image=required_image(table, number, row, cols["image"])[0],
            answer=cell_text(table, number, row, cols["answer"]),
            options=(),
            category=category,
            answer_type="open",
        )


def mmmu(table: Table) -> Iterator[EvalExample]:
    """MMMU (``MMMU/MMMU``, one subject's file or several): ``id`` (``validation_Art_Theory_1``),
    ``question``, ``options`` (a list or its string form ``"['a', 'b']"``), ``answer`` (a letter; text for
    open questions), ``image_1``; optional ``question_type`` (``multiple-choice`` / ``open``), ``subfield``,
    ``image_2`` … ``image_7`` (counted into ``extra["n_images"]``; only ``image_1`` is shown).
    ``category`` is the subject parsed from the id (``Art_Theory``), else the subfield."""
    cols = resolve_columns(
        table,
        "mmmu",
        {
            "id": ("id",),
            "question": ("question",),
            "options": ("options",),
            "answer": ("answer",),
            "image": ("image_1",),
        },
        {"question_type": ("question_type",), "subfield": ("subfield",)},
    )
    more_images = [f"image_{k}" for k in range(2, 8) if f"image_{k}" in table.columns]
    for number, row in table.rows():
        example_id = cell_text(table, number, row, cols["id"])
        options = tuple(cell_list(table, number, row, cols["options"]))
        answer = cell_text(table, number, row, cols["answer"])
        subfield = optional_text(table, number, row, cols["subfield"])
        subject = _MMMU_SUBJECT_RE.match(example_id)
        is_open = optional_text(table, number, row, cols["question_type"]) == "open" or not options
        yield build_example(
            table,
            number,
            example_id=example_id,
            benchmark="mmmu",
            question=cell_text(table, number, row, cols["question"]),
            image=required_image(table, number, row, cols["image"])[0],
            category=subject.group(1) if subject else subfield,
            extra={"subfield": subfield, "n_images": str(1 + sum(row[c] is not None for c in more_images))},
            **(free_fields(answer) if is_open else choice_fields(table, number, answer, options)),
        )


def _embedded_options(benchmark: str, ids: tuple[str, ...], categories: tuple[str, ...]) -> Adapter:
    """An adapter for files with ``question`` (options embedded in the text, see
    :func:`~visplay.eval.tables.options_from_text`), ``answer`` and ``image``, plus an optional id and
    category; the answer type follows from the answer (:func:`~visplay.eval.tables.inferred_fields`)."""

    def adapter(table: Table) -> Iterator[EvalExample]:
        cols = resolve_columns(
            table,
            benchmark,
            {"question": ("question",), "answer": ("answer",), "image": ("image",)},
            {"id": ids, "category": categories},
        )
        for number, row in table.rows():
            question = cell_text(table, number, row, cols["question"])
            answer = cell_text(table, number, row, cols["answer"])
            yield build_example(
                table,
                number,
                example_id=row_id(table, number, row, cols["id"]),
                benchmark=benchmark,
                question=question,
                image=required_image(table, number, row, cols["image"])[0],
                category=optional_text(table, number, row, cols["category"]),
                **inferred_fields(answer, options_from_text(question)),
            )

    return adapter


realworldqa = _embedded_options("realworldqa", ("id", "question_id", "index"), ("category",))
"""RealWorldQA (``xai-org/RealworldQA``, ``lmms-lab/RealWorldQA``): ``question`` (with ``A. …`` option lines
for multiple-choice), ``answer`` (a letter, or a short word/number), ``image``. The release has no id
column, so the id is the row number unless ``id | question_id | index`` exists."""

mmstar = _embedded_options("mmstar", ("index", "id"), ("category",))
"""MMStar (``Lin-Chen/MMStar``): ``index``, ``question`` (ending ``Options: A: …, B: …``), ``answer`` (a
letter), ``image``; optional ``category``. (``l2_category`` and ``meta_info`` are not used.)"""


def visnumbench(table: Table) -> Iterator[EvalExample]:
    """VisNumBench (``GML-FMGroup/VisNumBench``, release JSON): ``question``, ``option | options | choices``
    (a list, may be empty), ``answer`` (a letter or an option's text), ``image | image_path``; optional
    ``id | index`` (else the row number) and ``attribute | class | task_class | category`` → ``category``."""
    cols = resolve_columns(
        table,
        "visnumbench",
        {
            "question": ("question",),
            "options": ("option", "options", "choices"),
            "answer": ("answer",),
            "image": ("image", "image_path"),
        },
        {"id": ("id", "index"), "category": ("attribute", "class", "task_class", "category")},
    )
    for number, row in table.rows():
        options = tuple(cell_list(table, number, row, cols["options"]))
        answer = cell_text(table, number, row, cols["answer"])
        yield build_example(
            table,
            number,
            example_id=row_id(table, number, row, cols["id"]),
            benchmark="visnumbench",
            question=cell_text(table, number, row, cols["question"]),
            image=required_image(table, number, row, cols["image"])[0],
            category=optional_text(table, number, row, cols["category"]),
            **(choice_fields(table, number, answer, options) if options else inferred_fields(answer, ())),
        )


def mathverse(table: Table) -> Iterator[EvalExample]:
    """MathVerse (``AI4Math/MathVerse`` testmini): ``sample_index``, ``question`` (blank in the Vision Only
    version: the question is in the image), ``answer``, ``image``, ``question_type`` (``multi-choice``, with
    ``Choices:`` / ``A:…`` lines in the question, or ``free-form``); optional ``problem_version`` →
    ``category`` and ``problem_index`` → ``extra``."""
    cols = resolve_columns(
        table,
        "mathverse",
        {
            "id": ("sample_index",),
            "question": ("question",),
            "answer": ("answer",),
            "image": ("image",),
            "question_type": ("question_type",),
        },
        {"version": ("problem_version",), "problem_index": ("problem_index",)},
    )
    for number, row in table.rows():
        question = cell_text(table, number, row, cols["question"], required=False)
        answer = cell_text(table, number, row, cols["answer"])
        if cell_text(table, number, row, cols["question_type"]) == "multi-choice":
            if choice_letter(answer) is None:
                raise BenchmarkFormatError(
                    f"{table.path}: row {number}: multi-choice answer {answer!r} is no letter"
                )
            fields = inferred_fields(answer, options_from_text(question))
        else:
            fields = {"answer": answer, "options": (), "answer_type": "math"}
        yield build_example(
            table,
            number,
            example_id=cell_text(table, number, row, cols["id"]),
            benchmark="mathverse",
            question=question,
            image=required_image(table, number, row, cols["image"])[0],
            category=optional_text(table, number, row, cols["version"]),
            extra={"problem_index": optional_text(table, number, row, cols["problem_index"])},
            **fields,
        )


def mathvision(table: Table) -> Iterator[EvalExample]:
    """MATH-Vision (``MathLLMs/MathVision``): ``id``, ``question``, ``options`` (a list; empty for
    free-form), ``answer`` (a letter when there are options), ``decoded_image | image`` (the image struct, or
    the release's ``images/….jpg`` path); optional ``subject`` → ``category``, ``level`` → ``extra``."""
    cols = resolve_columns(
        table,
        "mathvision",
        {
            "id": ("id",),
            "question": ("question",),
            "options": ("options",),
            "answer": ("answer",),
            "image": ("decoded_image", "image"),
        },
        {"subject": ("subject",), "level": ("level",)},
    )
    for number, row in table.rows():
        options = tuple(cell_list(table, number, row, cols["options"]))
        answer = cell_text(table, number, row, cols["answer"])
        yield build_example(
            table,
            number,
            example_id=cell_text(table, number, row, cols["id"]),
            benchmark="mathvision",
            question=cell_text(table, number, row, cols["question"]),
            image=required_image(table, number, row, cols["image"])[0],
            category=optional_text(table, number, row, cols["subject"]),
            extra={"level": optional_text(table, number, row, cols["level"])},
            **(
                choice_fields(table, number, answer, options)
                if options
                else {"answer": answer, "options": (), "answer_type": "math"}
            ),
        )


def _metadata_category(table: Table, number: int, metadata: Any) -> str:
    """``metadata["category"]`` of a MathVista row; the metadata is a struct or its JSON text."""
    if isinstance(metadata, str) and metadata.strip():
        try:
            metadata = json.loads(metadata)
        except json.JSONDecodeError as err:
            raise BenchmarkFormatError(
                f"{table.path}: row {number}, column 'metadata' is not JSON ({err})"
            ) from err
    return str(metadata["category"]) if isinstance(metadata, dict) and "category" in metadata else ""


def mathvista(table: Table) -> Iterator[EvalExample]:
    """MathVista (``AI4Math/MathVista`` testmini): ``pid``, ``query | question`` (``query`` adds the hint
    and the choices, so it is preferred), ``answer`` (for multiple-choice the *text* of the right choice,
    converted to its letter), ``decoded_image | image``; optional ``choices`` (a list or null),
    ``question_type`` (``multi_choice`` / ``free_form``), ``metadata`` (a struct or JSON text whose
    ``category`` → ``category``), ``unit``, ``precision`` → ``extra``."""
    cols = resolve_columns(
        table,
        "mathvista",
        {
            "id": ("pid",),
            "question": ("query", "question"),
            "answer": ("answer",),
            "image": ("decoded_image", "image"),
        },
        {
            "choices": ("choices",),
            "question_type": ("question_type",),
            "metadata": ("metadata",),
            "unit": ("unit",),
            "precision": ("precision",),
        },
    )
    for number, row in table.rows():
        choices = tuple(cell_list(table, number, row, cols["choices"])) if cols["choices"] else ()
        answer = cell_text(table, number, row, cols["answer"])
        if cols["question_type"]:
            is_choice = optional_text(table, number, row, cols["question_type"]) == "multi_choice"
        else:
            is_choice = bool(choices)
        yield build_example(
            table,
            number,
            example_id=cell_text(table, number, row, cols["id"]),
            benchmark="mathvista",
            question=cell_text(table, number, row, cols["question"]),
            image=required_image(table, number, row, cols["image"])[0],
            category=_metadata_category(table, number, row[cols["metadata"]]) if cols["metadata"] else "",
            extra={
                "unit": optional_text(table, number, row, cols["unit"]),
                "precision": optional_text(table, number, row, cols["precision"]),
            },
            **(
                choice_fields(table, number, answer, choices)
                if is_choice
                else {"answer": answer, "options": (), "answer_type": "math"}
            ),
        )


def hallusionbench(table: Table) -> Iterator[EvalExample]:
    """HallusionBench (``lmms-lab/HallusionBench``, the ``image`` and ``non_image`` splits; or the release's
    ``HallusionBench.json`` with ``filename`` paths): ``category`` (``VD``/``VS``), ``subcategory``,
    ``set_id``, ``figure_id``, ``question_id``, ``question``, ``gt_answer`` (``"1"`` = yes, ``"0"`` = no),
    ``image | filename``; optional ``visual_input`` (``"0"`` marks a text-only question: its image may be
    null and is then ``b""``). The id is ``category_subcategory_set_figure_question`` (the official key);
    all five ids and ``visual_input`` go to ``extra`` for :func:`visplay.eval.scoring.hallusion_metrics`."""
    keys = ("category", "subcategory", "set_id", "figure_id", "question_id")
    cols = resolve_columns(
        table,
        "hallusionbench",
        {
            **{key: (key,) for key in keys},
            "question": ("question",),
            "gt_answer": ("gt_answer",),
            "image": ("image", "filename"),
        },
        {"visual_input": ("visual_input",)},
    )
    for number, row in table.rows():
        ids = {key: cell_text(table, number, row, cols[key]) for key in keys}
        visual_input = optional_text(table, number, row, cols["visual_input"])
        gt = cell_text(table, number, row, cols["gt_answer"]).lower()
        if gt not in HALLUSION_GT:
            raise BenchmarkFormatError(
                f"{table.path}: row {number}: gt_answer {gt!r} is not '1'/'0'/'yes'/'no'"
            )
        image, _ = cell_image(table, number, row, cols["image"])
        if image is None and visual_input != "0":
            raise BenchmarkFormatError(
                f"{table.path}: row {number}, column {cols['image']!r} holds no image "
                f"(allowed only for visual_input '0', got {visual_input!r})"
            )
        yield build_example(
            table,
            number,
            example_id="_".join(ids[key] for key in keys),
            benchmark="hallusionbench",
            question=cell_text(table, number, row, cols["question"]),
            image=image or b"",
            answer=HALLUSION_GT[gt],
            options=(),
            category=ids["category"],
            answer_type="yesno",
            extra={**ids, "visual_input": visual_input},
        )


PUBLIC_ADAPTERS: dict[str, Adapter] = {
    "mmvet": mmvet,
    "mmmu": mmmu,
    "realworldqa": realworldqa,
    "visnumbench": visnumbench,
    "mathverse": mathverse,
    "mathvision": mathvision,
    "hallusionbench": hallusionbench,
    "mathvista": mathvista,
    "mmstar": mmstar,
}
"""Benchmark name → adapter for its public release layout."""
