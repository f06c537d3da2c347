"""MMMU (``MMMU/MMMU`` on Hugging Face; also ``lmms-lab/MMMU``, the same columns with all subjects merged).

Layouts read (split: ``dev``, ``validation`` — the default — or ``test``):

* one subject file, ``Art_Theory/validation-00000-of-00001.parquet``, read whatever its split (an explicit
  ``split`` that the file name contradicts is an error);
* a subject folder ``Art_Theory/`` holding ``dev-*``, ``validation-*`` and ``test-*`` parquet files side by
  side (or lmms-lab's ``data/``): only the chosen split's files;
* the repository root ``MMMU/`` of subject folders: every ``<subject>/<split>-*.parquet``, sorted by path.

Columns: ``id`` (``validation_Art_Theory_1``), ``question`` (refers to ``<image 1>`` …), ``options`` (a
list or its string form ``"['a', 'b']"``), ``answer`` (a letter; text for open questions, possibly a list
of accepted answers in string form ``"['24/7', '3.429']"``), ``image_1`` … ``image_7`` (every image is
sent, in order; ``extra["n_images"]`` counts them); optional ``question_type`` (``multiple-choice`` /
``open``; absent: multiple-choice when there are options) and ``subfield``. ``category`` is the subject
read from the id as the official code reads it (``Art_Theory``). A row is rejected when its letter answer
is beyond its options, an image column is empty before a later one is set, or its text refers to an
``<image k>`` it does not have.

Scoring follows the official evaluator, MMMU-Benchmark/MMMU ``mmmu/utils/eval_utils.py``:

* multiple-choice — ``parse_multi_choice_response``: after stripping ``, . ! ? ; : '`` from the ends, the
  letters written ``(B)``, else those standing alone `` B ``, else (for a response of more than five
  words) the options whose text occurs in it; several candidates → the one mentioned last. Right when it
  is the gold letter (``eval_multi_choice``). The official code then picks a random letter when nothing is
  found; this project scores that 0 (see :attr:`MMMU.notes`);
* open — ``parse_open_response``: the tails of the response after ``could be``/``so``/``is``/``thus``/
  ``therefore``/``final``/``answer``/``result`` (and ``=`` in the last line), plus every number in them
  (``extract_numbers``), each normalised (``normalize_str``: numbers rounded to 2 decimals, text lower-cased);
  ``eval_open``: right when a number equals a numeric gold, or a normalised text gold occurs in a text
  candidate (``"The payback period is 3.31 years."`` is right for ``3.31``). A list gold counts each entry
  (the official ``answer_dict_val.json`` stores such golds as lists).

Figures: per subject (``per_category``) and per discipline (``domain/<name>``, micro-averaged as the
official ``calculate_ins_level_acc``).
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from visplay.eval.benchmarks.base import Benchmark, Columns
from visplay.eval.cells import build_example, cell_images, cell_list, cell_text, free_fields, optional_text
from visplay.eval.schema import LETTERS, EvalExample
from visplay.eval.scoring import ScoredRow
from visplay.eval.tables import (
    BenchmarkFormatError,
    Table,
    open_files,
    open_table,
    resolve_columns,
    split_files,
)
from visplay.rewards.parse import extract_boxed

IMAGE_COLUMNS = tuple(f"image_{k}" for k in range(1, 8))
"""MMMU's image columns, in the order ``<image 1>`` … ``<image 7>``."""

SPLITS = ("dev", "validation", "test")
DEFAULT_SPLIT = "validation"

DOMAINS: dict[str, tuple[str, ...]] = {
    "Art and Design": ("Art", "Art_Theory", "Design", "Music"),
    "Business": ("Accounting", "Economics", "Finance", "Manage", "Marketing"),
    "Science": ("Biology", "Chemistry", "Geography", "Math", "Physics"),
    "Health and Medicine": (
        "Basic_Medical_Science",
        "Clinical_Medicine",
        "Diagnostics_and_Laboratory_Medicine",
        "Pharmacy",
        "Public_Health",
    ),
    "Humanities and Social Science": ("History", "Literature", "Sociology", "Psychology"),
    "Tech and Engineering": (
        "Agriculture",
        "Architecture_and_Engineering",
        "Computer_Science",
        "Electronics",
        "Energy_and_Power",
        "Materials",
        "Mechanical_Engineering",
    ),
}
"""MMMU's six disciplines and their 30 subjects (the paper's grouping)."""
_DOMAIN_OF = {subject: domain for domain, subjects in DOMAINS.items() for subject in subjects}

_IMAGE_REF_RE = re.compile(r"<image (\d+)>")
_END_PUNCTUATION = (",", ".", "!", "?", ";", ":", "'")
_KEY_INDICATORS = ("could be ", "so ", "is ", "thus ", "therefore ", "final ", "answer ", "result ")
_SENTENCE_SPLIT_RE = re.compile(r"\.\s(?=[A-Z])|\n")
_NUMBER_RES = (
    re.compile(r"-?\b\d{1,3}(?:,\d{3})+\b"),  # 1,234,567
    re.compile(r"-?\d+(?:\.\d+)?[eE][+-]?\d+"),  # 1.5e-3
    re.compile(r"-?(?:\d+\.\d+|\.\d+|\d+\b)(?![eE][+-]?\d+)(?![,\d])"),  # 3, 3.31, .5
)


def subject_of(example_id: str) -> str:
    """The subject in an MMMU id, as the official code reads it: ``validation_Art_Theory_1`` →
    ``Art_Theory`` (the parts between the first and the last ``_``)."""
    return "_".join(example_id.split("_")[1:-1])


def parse_multi_choice(response: str, letters: Sequence[str], index2ans: dict[str, str]) -> str | None:
    """The letter a response picks, by the official ``parse_multi_choice_response``; None where the
    official code would pick a random letter (nothing found).

    ``"(B)"`` → B; ``"I think B is right"`` → B (a lone letter); ``"The answer is the green one"`` (more
    than five words) → the option whose text it contains; several → the one mentioned last.
    """
    for char in _END_PUNCTUATION:
        response = response.strip(char)
    padded = f" {response} "
    bracketed = [c for c in letters if f"({c})" in padded]
    candidates = bracketed or [c for c in letters if f" {c} " in padded]
    by_content = False
    if not candidates and len(padded.split()) > 5:
        candidates = [c for c, text in index2ans.items() if text.lower() in padded.lower()]
        by_content = True
    if not candidates:
        return None
    if len(candidates) == 1:
        return candidates[0]
    if by_content:
        positions = [padded.lower().rfind(index2ans[c].lower()) for c in candidates]
    elif bracketed:
        positions = [padded.rfind(f"({c})") for c in candidates]
    else:
        positions = [padded.rfind(f" {c} ") for c in candidates]
    return candidates[positions.index(max(positions))]  # the first of equal positions, as np.argmax


def normalize_value(text: str) -> list[str | float]:
    """The official ``normalize_str``: a number (commas dropped) → ``[round(x, 2)]``; other text → its
    lower-cased form, a single character padded (``[" a", "a "]``) so it cannot match inside a word."""
    text = text.strip()
    try:
        return [round(float(text.replace(",", "")), 2)]
    except ValueError:
        lowered = text.lower()
        return [f" {lowered}", f"{lowered} "] if len(lowered) == 1 else [lowered]


def extract_numbers(text: str) -> list[str]:
    """Every number written in ``text`` (the official ``extract_numbers``): with thousands commas, in
    scientific notation, and plain (``-3``, ``3.31``, ``.5``), in that order."""
    return [number for pattern in _NUMBER_RES for number in pattern.findall(text)]


def _key_responses(response: str) -> list[str]:
    """The official ``get_key_subresponses``: per line, the shortest tail after a key word."""
    response = response.strip().strip(".").lower()
    parts = _SENTENCE_SPLIT_RE.split(response)
    keys = []
    for index, part in enumerate(parts):
        indicators = _KEY_INDICATORS + (("=",) if index == len(parts) - 1 else ())
        shortest: str | None = None
        for indicator in indicators:
            if indicator in part:
                tail = part.split(indicator)[-1].strip()
                if not shortest or len(tail) < len(shortest):
                    shortest = tail
        if shortest and shortest.strip() not in _END_PUNCTUATION:
            keys.append(shortest)
    return keys or [response]


def parse_open(response: str) -> list[str | float]:
    """The candidates of an open answer (the official ``parse_open_response``): the key tails and every
    number in them, normalised (:func:`normalize_value`), without duplicates.

    ``"The payback period is 3.31 years."`` → ``{"3.31 years", 3.31}``.
    """
    keys = _key_responses(response)
    candidates = keys + [number for key in keys for number in extract_numbers(key)]
    return list(dict.fromkeys(value for candidate in candidates for value in normalize_value(candidate)))


def gold_answers(answer: str) -> list[str]:
    """The accepted answers of an open question: a list in string form (``"['24/7', '3.429']"``) gives
    each entry, any other answer itself."""
    text = answer.strip()
    if text.startswith("[") and text.endswith("]"):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = None
        if isinstance(value, list) and value:
            return [str(item) for item in value]
    return [answer]


def open_correct(golds: Sequence[str], candidates: Sequence[str | float]) -> bool:
    """The official ``eval_open``: a text candidate is right when a normalised text gold occurs in it, a
    number when it equals a normalised numeric gold."""
    normalized = [value for gold in golds for value in normalize_value(gold)]
    for candidate in candidates:
        if isinstance(candidate, str):
            if any(isinstance(gold, str) and gold in candidate for gold in normalized):
                return True
        elif any(isinstance(gold, float) and gold == candidate for gold in normalized):
            return True
    return False


def response_text(text: str) -> str:
    """What is parsed of a completion: the last ``\\boxed{}``'s content when there is one (``""`` for a box
    that never closes), else the whole completion as the official code parses it; stripped."""
    boxed = extract_boxed(text)
    if boxed is not None:
        return boxed.strip()
    return "" if "\\boxed" in text else text.strip()


class MMMU(Benchmark):
    """MMMU (module docstring)."""

    name = "mmmu"
    export_names = ("MMMU", "mmmu")
    notes = (
        "a multiple-choice answer naming no option scores 0 (the official evaluator picks a random option)",
        "the \\boxed{} content is parsed when the completion has one, else the whole completion as officially",
    )

    def open(self, path: Path, split: str | None) -> Table:
        files = split_files(path, split, DEFAULT_SPLIT, SPLITS)
        if path.is_file():
            return open_table(path)
        return open_files(path, files, path)

    def columns(self, table: Table) -> Columns:
        return resolve_columns(
            table,
            self.name,
            {
                "id": ("id",),
                "question": ("question",),
                "options": ("options",),
                "answer": ("answer",),
                "image_1": ("image_1",),
            },
            {
                "question_type": ("question_type",),
                "subfield": ("subfield",),
                **{column: (column,) for column in IMAGE_COLUMNS[1:]},
            },
        )

    def example(self, table: Table, cols: Columns, number: int, row: dict[str, Any]) -> EvalExample:
        where = f"{table.path}: row {number}"
        example_id = cell_text(table, number, row, cols["id"])
        question = cell_text(table, number, row, cols["question"])
        options = tuple(cell_list(table, number, row, cols["options"]))
        answer = cell_text(table, number, row, cols["answer"])
        question_type = optional_text(table, number, row, cols["question_type"])
        question_type = question_type or ("multiple-choice" if options else "open")
        if question_type == "multiple-choice":
            if not options:
                raise BenchmarkFormatError(f"{where}: a multiple-choice question without options")
            if answer not in LETTERS[: len(options)]:
                raise BenchmarkFormatError(
                    f"{where}: answer {answer!r} is not an option letter A-{LETTERS[len(options) - 1]} "
                    f"({len(options)} options)"
                )
            fields = {"answer": answer, "options": options, "answer_type": "choice"}
        elif question_type == "open":
            fields = free_fields(answer)
        else:
            raise BenchmarkFormatError(
                f"{where}: question_type {question_type!r} is not 'multiple-choice' or 'open'"
            )
        images = self._images(table, cols, number, row)
        referred = [int(k) for k in _IMAGE_REF_RE.findall(" ".join((question, *options)))]
        if referred and max(referred) > len(images):
            raise BenchmarkFormatError(
                f"{where}: refers to <image {max(referred)}> but has {len(images)} image(s)"
            )
        subfield = optional_text(table, number, row, cols["subfield"])
        return build_example(
            table,
            number,
            example_id=example_id,
            benchmark=self.name,
            question=question,
            images=images,
            category=subject_of(example_id) or subfield,
            extra={"subfield": subfield, "question_type": question_type, "n_images": str(len(images))},
            **fields,
        )

    @staticmethod
    def _images(table: Table, cols: Columns, number: int, row: dict[str, Any]) -> tuple[bytes, ...]:
        """``image_1`` … ``image_7`` in order; none, or a gap before a later image, is an error."""
        per_column = [
            (column, cell_images(table, number, row, column)) for column in IMAGE_COLUMNS if cols.get(column)
        ]
        images: list[bytes] = []
        gap = None
        for column, found in per_column:
            if found and gap:
                raise BenchmarkFormatError(
                    f"{table.path}: row {number}: column {gap!r} is empty but {column!r} holds an image "
                    "(the <image k> references would be misnumbered)"
                )
            if not found and gap is None:
                gap = column
            images.extend(found)
        if not images:
            raise BenchmarkFormatError(f"{table.path}: row {number}, column 'image_1' holds no image")
        return tuple(images)

    def score(self, example: EvalExample, text: str) -> float:
        response = response_text(text)
        if not response:
            return 0.0
        if example.answer_type == "choice":
            letters = LETTERS[: len(example.options)] if example.options else LETTERS
            index2ans = dict(zip(LETTERS, example.options, strict=False))
            return 1.0 if parse_multi_choice(response, letters, index2ans) == example.answer else 0.0
        return 1.0 if open_correct(gold_answers(example.answer), parse_open(response)) else 0.0

    def metrics(self, rows: Sequence[ScoredRow]) -> dict[str, float]:
        """``domain/<discipline>``: the mean score over the rows of its subjects (rows without a score or
        of an unknown subject are left out)."""
        scores: dict[str, list[float]] = defaultdict(list)
        for row in rows:
            domain = _DOMAIN_OF.get(row.example.category)
            if domain and row.score is not None:
                scores[domain].append(row.score)
        return {f"domain/{domain}": sum(v) / len(v) for domain, v in sorted(scores.items())}
