"""The cells of a benchmark row: text, lists, images, options written into a question, and the
``answer``/``options``/``answer_type`` fields every benchmark class derives from them.

Images may be stored in a cell as raw bytes, as a Hugging Face image struct ``{"bytes": ..., "path": ...}``
(``bytes`` may be null when ``path`` points at a file), as a path string relative to the benchmark file's
folder, relative to a folder the benchmark names (MM-Vet's ``images/``), or absolute; or as a list of any
of these (the Vision-SR1 exports' ``images`` column). Each must be a decodable image.

Every problem is a :class:`~visplay.eval.tables.BenchmarkFormatError` naming the file, the row (0-based, in
file order) and the column, so :func:`~visplay.eval.benchmarks.base.read_benchmark` can reject that row and
read on.
"""

from __future__ import annotations

import ast
import io
import re
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from visplay.eval.schema import LETTERS, EvalExample
from visplay.eval.tables import BenchmarkFormatError, Table
from visplay.rewards import choice_letter, normalize_text, yes_no

_MATHY_RE = re.compile(r"[0-9\\]")


def cell_text(table: Table, number: int, row: dict[str, Any], column: str, *, required: bool = True) -> str:
    """The cell as stripped text (numbers are formatted with ``str``); ``""`` when empty and not required.

    Raises:
        BenchmarkFormatError: a required cell is null or blank, or holds a list/struct.
    """
    value = row[column]
    if isinstance(value, bytes | bytearray | dict | list):
        raise BenchmarkFormatError(
            f"{table.path}: row {number}, column {column!r}: expected text, got {type(value).__name__}"
        )
    text = "" if value is None else str(value).strip()
    if required and not text:
        raise BenchmarkFormatError(f"{table.path}: row {number}, column {column!r} is empty")
    return text


def cell_list(table: Table, number: int, row: dict[str, Any], column: str) -> list[str]:
    """A list cell as strings: a real list, or its string form (``"['a', 'b']"``, as MMMU stores options).

    Null or ``""`` reads as ``[]``. Raises BenchmarkFormatError for text that is not a list literal.
    """
    value = row[column]
    if value is None:
        return []
    if isinstance(value, str):
        if not value.strip():
            return []
        try:
            value = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as err:
            raise BenchmarkFormatError(
                f"{table.path}: row {number}, column {column!r}: {value[:80]!r} is not a list"
            ) from err
    if not isinstance(value, list | tuple):
        raise BenchmarkFormatError(
            f"{table.path}: row {number}, column {column!r}: expected a list, got {type(value).__name__}"
        )
    return [str(item).strip() for item in value]


def cell_images(table: Table, number: int, row: dict[str, Any], column: str) -> tuple[bytes, ...]:
    """The encoded bytes of every image in a cell (one image, or a list of them), in order.

    Returns ``()`` for a null cell or an empty list; the caller decides whether that is allowed.

    Raises:
        BenchmarkFormatError: a path that is not a file, a struct with neither bytes nor path, empty bytes,
            or a value of another type.
    """
    value = row[column]
    values = list(value) if isinstance(value, list | tuple) else [value]
    return tuple(_image_bytes(table, number, column, v) for v in values if v is not None)


def _image_bytes(table: Table, number: int, column: str, value: Any) -> bytes:
    """One image value (bytes, a ``{bytes, path}`` struct or a path) as encoded bytes."""
    where = f"{table.path}: row {number}, column {column!r}"
    if isinstance(value, dict):
        if value.get("bytes"):
            value = value["bytes"]
        elif value.get("path"):
            value = value["path"]
        else:
            raise BenchmarkFormatError(f"{where}: image struct has neither 'bytes' nor 'path'")
    if isinstance(value, bytes | bytearray):
        if not value:
            raise BenchmarkFormatError(f"{where}: image bytes are empty")
        return _decodable(bytes(value), f"{where}: image bytes")
    if isinstance(value, str):
        if Path(value).is_absolute():
            candidates = [Path(value)]
        else:
            candidates = [folder / value for folder in (table.base_dir, *table.image_dirs)]
        try:
            file = next((c for c in candidates if c.is_file()), None)
            data = file.read_bytes() if file is not None else b""
        except OSError as err:  # a path too long to be one (a base64 string), a file we may not read
            raise BenchmarkFormatError(f"{where}: cannot read image path {value[:80]!r} ({err})") from err
        if file is None:
            looked = ", ".join(str(c) for c in candidates)
            raise BenchmarkFormatError(f"{where}: image path {value!r} is not a file (looked at {looked})")
        if not data:
            raise BenchmarkFormatError(f"{where}: image file {file} is empty")
        return _decodable(data, f"{where}: image file {file}")
    raise BenchmarkFormatError(f"{where}: cannot read an image from a {type(value).__name__}")


def _decodable(data: bytes, what: str) -> bytes:
    """``data`` if PIL recognises it as an image (the header only: cheap), else a BenchmarkFormatError: an
    image the engine could not decode is a reject at loading, not a wrong answer later."""
    try:
        with Image.open(io.BytesIO(data)):
            return data
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise BenchmarkFormatError(f"{what} is not a decodable image ({err})") from err


# "A. text", "(A) text", "A: text", "A) text" at the start of a line, or inline after "Options:"/"Choices:".
_OPTION_LINE_RE = re.compile(r"^\s*\(?([A-J])\s*[.:)]\s*(.+?)\s*$")
_OPTION_INLINE_RE = re.compile(r"(?:^|[\s,;(])\(?([A-J])\s*[.:)]\s*(.+?)(?=(?:[\s,;]+\(?[A-J]\s*[.:)]\s)|$)")


def options_from_text(question: str) -> tuple[str, ...]:
    """Option texts embedded in a question, if it lists ``A``, ``B``, ... in order; else ``()``.

    Recognised: one option per line (``A. red`` / ``(B) blue`` / ``C: green``, as MathVerse and RealWorldQA
    write them) or inline after ``Options:`` / ``Choices:`` (``Options: A: red, B: blue``, as MMStar writes
    them). The letters must run ``A, B, C, ...`` without gaps, and there must be at least two.
    """
    lines = [m for m in (_OPTION_LINE_RE.match(line) for line in question.splitlines()) if m]
    if _is_letter_run([m.group(1) for m in lines]):
        return tuple(m.group(2).rstrip(",;") for m in lines)
    marker = re.search(r"(?:options|choices)\s*:", question, re.IGNORECASE)
    if marker:
        inline = list(_OPTION_INLINE_RE.finditer(question[marker.end() :].strip()))
        if _is_letter_run([m.group(1) for m in inline]):
            return tuple(m.group(2).rstrip(",;.").strip() for m in inline)
    return ()


def _is_letter_run(letters: list[str]) -> bool:
    """True for ``["A", "B", ...]`` of length >= 2."""
    return len(letters) >= 2 and letters == [chr(ord("A") + i) for i in range(len(letters))]


# ---------------------------------------------------------------------------------------------------------
# Row helpers shared by the adapters
# ---------------------------------------------------------------------------------------------------------
def build_example(table: Table, number: int, **fields: Any) -> EvalExample:
    """Build an example; a record the schema rejects becomes a BenchmarkFormatError naming file and row."""
    try:
        return EvalExample(**fields)
    except ValueError as err:
        raise BenchmarkFormatError(f"{table.path}: row {number}: {err}") from err


def required_images(table: Table, number: int, row: dict[str, Any], *columns: str) -> tuple[bytes, ...]:
    """The images of one or more columns, in column order; none at all is a BenchmarkFormatError."""
    images = tuple(image for column in columns for image in cell_images(table, number, row, column))
    if not images:
        raise BenchmarkFormatError(f"{table.path}: row {number}, column {columns[0]!r} holds no image")
    return images


def optional_text(table: Table, number: int, row: dict[str, Any], column: str | None) -> str:
    """An optional text column: its text, or ``""`` when the file has no such column or the cell is empty."""
    return cell_text(table, number, row, column, required=False) if column else ""


def row_id(table: Table, number: int, row: dict[str, Any], column: str | None) -> str:
    """The id column's text, or the row number (as text) when the file has no id column."""
    return cell_text(table, number, row, column) if column else str(number)


def option_index(answer: str, options: tuple[str, ...]) -> int | None:
    """Index of the option a gold answer names: a letter within range, else the one option with equal text."""
    letter = choice_letter(answer) if len(answer) <= 3 else None
    if letter is not None and LETTERS.index(letter) < len(options):
        return LETTERS.index(letter)
    matches = [i for i, text in enumerate(options) if normalize_text(text) == normalize_text(answer)]
    return matches[0] if len(matches) == 1 else None


def choice_fields(table: Table, number: int, answer: str, options: tuple[str, ...]) -> dict[str, Any]:
    """``answer``/``options``/``answer_type`` of a row the file marks multiple-choice: the gold answer must be
    an option letter or one option's text (raises BenchmarkFormatError otherwise)."""
    index = option_index(answer, options)
    if index is None:
        raise BenchmarkFormatError(
            f"{table.path}: row {number}: answer {answer!r} names none of the options {list(options)}"
        )
    return {"answer": LETTERS[index], "options": options, "answer_type": "choice"}


def free_fields(answer: str) -> dict[str, Any]:
    """``answer``/``options``/``answer_type`` of a free-form row: ``math`` if the answer has digits or LaTeX,
    else ``open``."""
    return {"answer": answer, "options": (), "answer_type": "math" if _MATHY_RE.search(answer) else "open"}


def inferred_fields(answer: str, options: tuple[str, ...]) -> dict[str, Any]:
    """``answer``/``options``/``answer_type`` for a row whose file does not state the question type.

    A letter (``B``, ``(B)``) → ``choice`` (the options are kept only if they reach that letter); the text of
    exactly one option → ``choice`` with that option's letter; ``yes``/``no``/``true``/``false`` → ``yesno``;
    otherwise :func:`free_fields`.
    """
    letter = choice_letter(answer) if len(answer) <= 3 else None
    if letter is not None:  # options that do not reach the letter were parsed wrongly: drop them
        in_range = LETTERS.index(letter) < len(options)
        return {"answer": letter, "options": options if in_range else (), "answer_type": "choice"}
    index = option_index(answer, options)
    if index is not None:
        return {"answer": LETTERS[index], "options": options, "answer_type": "choice"}
    verdict = yes_no(answer)
    if verdict is not None:
        return {"answer": verdict, "options": (), "answer_type": "yesno"}
    return free_fields(answer)
