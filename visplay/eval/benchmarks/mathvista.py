"""MathVista (``AI4Math/MathVista`` on Hugging Face; the GitHub release ``lupantech/MathVista``).

Layouts read:

* the Hugging Face parquet ``data/testmini-*.parquet`` (a file, or the ``data/`` folder: of its
  ``testmini-*`` and ``test-*`` files only the chosen split's, default ``testmini``): ``pid``, ``query``
  (the official prompt: hint, question and ``Choices:``), ``question``, ``decoded_image`` (an image struct;
  ``image`` is then only its path), ``choices`` (a list, or null), ``answer``, ``question_type``
  (``multi_choice`` / ``free_form``), ``answer_type`` (``text`` / ``integer`` / ``float`` / ``list``),
  ``precision``, ``unit``, ``metadata`` (a struct or its JSON text);
* the GitHub ``data/testmini.json``: an object keyed by pid, the same fields without ``query`` and
  ``decoded_image``; ``image`` is a path such as ``images/1.jpg`` relative to the json's folder. The prompt
  is the pid's entry in the ``query.json`` beside it (the release ships one), else the question with its
  unit, its choices and a one-line answer-format hint of this project's own wording.

A multiple-choice gold is stored as the letter of the first choice whose text equals the answer (pid 781:
choices ``9, 12, 18, 18``, answer ``18`` → ``C``; pids 168/849: the choice text ``(b)`` is option ``E`` /
``D``, not ``B``), with that text in ``extra["choice_text"]``; ``answer_type``, ``precision`` and ``unit``
go to ``extra`` too, and so do ``task`` and ``skills`` of the metadata (``category`` → ``category``).

Scoring follows ``evaluation/calculate_score.py`` of lupantech/MathVista (``normalize_extracted_answer``,
``safe_equal``) on an answer extracted by rule (:func:`visplay.eval.scoring.extract_answer`: the last
``\\boxed{}``, else the last line), where the official pipeline asks GPT-4 (``extract_answer.py``):

* ``multi_choice`` — a letter in parentheses (the first ``(x)``) or a bare capital letter within the choices
  names that choice; anything else becomes the choice nearest by Levenshtein distance (first of ties), so
  ``145`` picks ``145°``. Right when that choice's text equals the gold text (both ``18`` of pid 781
  count). As officially, an answer ``(b)`` to pid 168 means letter B, the choice ``(a)``;
* ``integer`` — ``str(int(float(x)))`` (``3.7`` → ``3``); ``float`` — ``str(round(float(x), precision))``
  (``1.23`` at precision 1 → ``1.2``), compared with the gold string as it is (on testmini every float gold
  already equals its own rounding); ``x`` is the answer when it is a number, else the last number written in
  it (``145°`` → 145, ``1,000 g`` → 1000; ``\\frac{a}{b}`` and ``a/b`` are divided) — the rule that stands in
  for the GPT extractor; ``list`` / ``text`` — the answer as it is. Then exact string equality.

Figures beyond per-category accuracy: ``task/<task>`` and ``skill/<skill>`` (the official fine-grained
scores; a question counts in each of its skills).
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from visplay.eval.benchmarks.base import Benchmark, Columns
from visplay.eval.cells import build_example, cell_list, cell_text, optional_text, required_images
from visplay.eval.schema import CATEGORY_SEPARATOR, LETTERS, EvalExample
from visplay.eval.scoring import ScoredRow, extract_answer, score_rule
from visplay.eval.tables import (
    KEY_COLUMN,
    BenchmarkFormatError,
    Table,
    check_split,
    open_files,
    open_table,
    resolve_columns,
    split_files,
)

SPLITS = ("testmini", "test")
QUESTION_TYPES = ("multi_choice", "free_form")
ANSWER_TYPES = ("text", "integer", "float", "list")
_ANSWER_KIND = {"integer": "math", "float": "math", "text": "open", "list": "open"}
_FORMAT_HINTS = {
    "integer": "Give the answer as an integer.",
    "float": "Give the answer as a number with {precision} digit(s) after the decimal point.",
    "list": "Give the answer as a Python list, such as [1, 2].",
    "text": "Give the answer as short text.",
}
_PAREN_LETTER_RE = re.compile(r"\(([a-zA-Z])\)")
_FRACTION_RE = re.compile(r"^(-?)\\[dt]?frac\{\s*(-?\d+(?:\.\d+)?)\s*\}\{\s*(-?\d+(?:\.\d+)?)\s*\}$")
_SLASH_RE = re.compile(r"^(-?\d+(?:\.\d+)?)\s*/\s*(-?\d+(?:\.\d+)?)$")
_THOUSANDS_RE = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_NUMBER_RE = re.compile(r"-?(?:\d+(?:\.\d+)?|\.\d+)")


def edit_distance(a: str, b: str) -> int:
    """The Levenshtein distance (insertions, deletions, substitutions; each costs 1)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i]
        for j, char_b in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def nearest_choice(text: str, choices: Sequence[str]) -> str:
    """The choice at the smallest edit distance from ``text``; the first of equal ones."""
    distances = [edit_distance(text, choice) for choice in choices]
    return choices[distances.index(min(distances))]


def answer_number(text: str) -> float | None:
    """The number an extracted answer gives: the whole text when it is one (``"1.5"``), a fraction
    (``\\frac{1}{2}``, ``1/2``), else the last number written in it (thousands commas dropped:
    ``"145°"`` → 145, ``"1,000 g"`` → 1000); None when it has none."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    fraction = _FRACTION_RE.match(text)
    if fraction:
        sign, top, bottom = fraction.groups()
        slash = (f"{sign}{top}", bottom)
    else:
        match = _SLASH_RE.match(text)
        slash = match.groups() if match else None
    if slash and float(slash[1]) != 0:
        return float(slash[0]) / float(slash[1])
    numbers = _NUMBER_RE.findall(_THOUSANDS_RE.sub("", text))
    return float(numbers[-1]) if numbers else None


def normalize_answer(
    extraction: str, choices: Sequence[str], question_type: str, answer_type: str, precision: str
) -> str | None:
    """An extracted answer in the gold's form, by the official ``normalize_extracted_answer`` (module
    docstring): a choice's text, an integer or rounded float as text, or the text itself; None when an
    integer/float answer has no number (scored wrong)."""
    if question_type == "multi_choice":
        extraction = extraction.strip()
        letters = _PAREN_LETTER_RE.findall(extraction)
        if letters:
            extraction = letters[0].upper()
        sequence = [chr(ord("A") + i) for i in range(len(choices))]
        if extraction in sequence:
            return choices[sequence.index(extraction)]
        return nearest_choice(extraction, choices)
    if answer_type in ("integer", "float"):
        value = answer_number(extraction)
        if value is None or not math.isfinite(value):
            return None
        if answer_type == "integer":
            return str(int(value))
        return str(round(value, int(precision))) if precision else None
    return extraction.strip()


def _metadata(table: Table, number: int, value: Any) -> dict[str, Any]:
    """The ``metadata`` cell as a dict (a struct, or its JSON text; empty when null)."""
    if isinstance(value, str) and value.strip():
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise BenchmarkFormatError(
                f"{table.path}: row {number}, column 'metadata' is not JSON ({err})"
            ) from err
    return value if isinstance(value, dict) else {}


def _precision(table: Table, number: int, value: Any) -> str:
    """``precision`` (``1``, ``1.0`` or ``"1"``) as the integer's text; ``""`` when null."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == "":
        return ""
    try:
        return str(int(float(value)))
    except (TypeError, ValueError) as err:
        raise BenchmarkFormatError(
            f"{table.path}: row {number}, column 'precision': {value!r} is not a number"
        ) from err


def _composed_query(
    question: str, choices: tuple[str, ...], answer_type: str, precision: str, unit: str
) -> str:
    """A prompt for a row without the official one: the question, its unit, then its choices or a hint on
    the answer's form (this project's wording)."""
    text = f"{question} (Unit: {unit})" if unit else question
    if choices:
        listed = "\n".join(f"({LETTERS[i]}) {choice}" for i, choice in enumerate(choices))
        return f"{text}\nChoices:\n{listed}"
    return f"{text}\n{_FORMAT_HINTS[answer_type].format(precision=precision)}"


class MathVista(Benchmark):
    """MathVista (module docstring)."""

    name = "mathvista"
    id_columns = ("pid", KEY_COLUMN)
    export_names = ("mathvista",)
    notes = (
        "answers are extracted by rule (last \\boxed{} or last line, then its last number), not by GPT-4",
        "an empty extraction scores 0 (the official code maps it to the nearest choice)",
    )

    def open(self, path: Path, split: str | None) -> Table:
        if path.is_dir() and any(p.name.startswith(("testmini-", "test-")) for p in path.iterdir()):
            table = open_files(path, split_files(path, split, "testmini", SPLITS), path)
        else:
            if path.is_file():
                split_files(path, split, "testmini", SPLITS)  # an explicit split must match the file name
            else:
                check_split(path, split, SPLITS)
            table = open_table(path)
        queries_file = table.base_dir / "query.json"
        if path.suffix != ".json" or "query" in table.columns or not queries_file.is_file():
            return table
        try:
            queries = json.loads(queries_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise BenchmarkFormatError(f"{queries_file}: not valid JSON ({err})") from err
        if not isinstance(queries, dict):
            raise BenchmarkFormatError(f"{queries_file}: expected an object of prompts keyed by pid")
        return replace(table, queries={str(k): str(v) for k, v in queries.items()})

    def columns(self, table: Table) -> Columns:
        return resolve_columns(
            table,
            self.name,
            {
                "id": ("pid", KEY_COLUMN),
                "question": ("question",),
                "answer": ("answer",),
                "image": ("decoded_image", "image"),
                "question_type": ("question_type",),
                "answer_type": ("answer_type",),
            },
            {
                "query": ("query",),
                "choices": ("choices",),
                "metadata": ("metadata",),
                "unit": ("unit",),
                "precision": ("precision",),
            },
        )

    def example(self, table: Table, cols: Columns, number: int, row: dict[str, Any]) -> EvalExample:
        where = f"{table.path}: row {number}"
        pid = cell_text(table, number, row, cols["id"])
        answer = cell_text(table, number, row, cols["answer"])
        question_type = cell_text(table, number, row, cols["question_type"])
        answer_type = cell_text(table, number, row, cols["answer_type"])
        if question_type not in QUESTION_TYPES or answer_type not in ANSWER_TYPES:
            raise BenchmarkFormatError(
                f"{where}: question_type {question_type!r} / answer_type {answer_type!r} are not one of "
                f"{list(QUESTION_TYPES)} / {list(ANSWER_TYPES)}"
            )
        choices = tuple(cell_list(table, number, row, cols["choices"])) if cols["choices"] else ()
        precision = _precision(table, number, row[cols["precision"]]) if cols["precision"] else ""
        unit = optional_text(table, number, row, cols["unit"])
        extra = {"question_type": question_type, "answer_type": answer_type, "precision": precision}
        if question_type == "multi_choice":
            if answer not in choices:
                raise BenchmarkFormatError(
                    f"{where}: answer {answer!r} is none of the choices {list(choices)}"
                )
            letter = LETTERS[choices.index(answer)]  # the first equal choice (pid 781 lists 18 twice)
            fields_ = {"answer": letter, "options": choices, "answer_type": "choice"}
            extra["choice_text"] = answer
        else:
            if answer_type == "float" and not precision:
                raise BenchmarkFormatError(f"{where}: a float answer without a precision cannot be scored")
            choices = ()
            fields_ = {"answer": answer, "options": (), "answer_type": _ANSWER_KIND[answer_type]}
        metadata = _metadata(table, number, row[cols["metadata"]]) if cols["metadata"] else {}
        skills = metadata.get("skills") or []
        extra.update(
            unit=unit,
            task=str(metadata.get("task") or ""),
            skills=CATEGORY_SEPARATOR.join(str(s) for s in skills)
            if isinstance(skills, list)
            else str(skills),
        )
        query = optional_text(table, number, row, cols["query"])
        query = query or table.queries.get(pid, "")
        if not query:
            question = cell_text(table, number, row, cols["question"])
            query = _composed_query(question, choices, answer_type, precision, unit)
        return build_example(
            table,
            number,
            example_id=pid,
            benchmark=self.name,
            question=query,
            images=required_images(table, number, row, cols["image"]),
            category=str(metadata.get("category") or ""),
            extra=extra,
            **fields_,
        )

    def score(self, example: EvalExample, text: str) -> float:
        """The official comparison (module docstring); a row without MathVista's types (a Vision-SR1
        export row) is scored by :func:`~visplay.eval.scoring.score_rule`."""
        question_type = example.extra.get("question_type")
        if question_type not in QUESTION_TYPES:
            return score_rule(example, text)
        extraction = extract_answer(text)
        if not extraction:
            return 0.0
        answer_type = example.extra["answer_type"]
        prediction = normalize_answer(
            extraction, example.options, question_type, answer_type, example.extra.get("precision", "")
        )
        gold = example.extra["choice_text"] if question_type == "multi_choice" else example.answer
        return 1.0 if prediction is not None and prediction == gold else 0.0

    def metrics(self, rows: Sequence[ScoredRow]) -> dict[str, float]:
        """``task/<task>`` and ``skill/<skill>``: mean scores (rows without a score are left out)."""
        scores: dict[str, list[float]] = defaultdict(list)
        for row in rows:
            if row.score is None:
                continue
            extra = row.example.extra
            if extra.get("task"):
                scores[f"task/{extra['task']}"].append(row.score)
            for skill in filter(None, extra.get("skills", "").split(CATEGORY_SEPARATOR)):
                scores[f"skill/{skill}"].append(row.score)
        return {key: sum(v) / len(v) for key, v in sorted(scores.items())}
