"""Reading a benchmark export into rows, and the checks every adapter shares (columns, cells, images).

A benchmark file is one of:

* a ``.parquet`` file, or a folder of ``.parquet`` shards (Hugging Face ``data/test-0000x-of-0000y.parquet``;
  names starting with ``.`` or ``_`` are ignored), read batch by batch so ``limit`` stops early;
* a ``.jsonl`` file (one JSON object per line), or a ``.json`` file holding a list of objects or an object of
  objects keyed by id (MM-Vet's ``mm-vet.json``, MathVista's ``testmini.json``: the key is column
  :data:`KEY_COLUMN`);
* a list of files chosen by the benchmark (:func:`open_files`: MMMU's split within subject folders).

Images may be stored in a cell as raw bytes, as a Hugging Face image struct ``{"bytes": ..., "path": ...}``
(``bytes`` may be null when ``path`` points at a file), as a path string relative to the benchmark file's
folder, relative to a folder the benchmark names (MM-Vet's ``images/``), or absolute; or as a list of any
of these (the Vision-SR1 exports' ``images`` column).

Every problem with a file is a :class:`BenchmarkFormatError` whose message names the file and, where it
applies, the row number (0-based, in file order), the column, and what was expected and found.
"""

from __future__ import annotations

import ast
import difflib
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, UnidentifiedImageError

from visplay.eval.schema import LETTERS, EvalExample
from visplay.rewards import choice_letter, normalize_text, yes_no

_PARQUET_BATCH_ROWS = 64
KEY_COLUMN = "_key"
"""The column holding each row's key when a ``.json`` file is an object of objects keyed by id."""
_MATHY_RE = re.compile(r"[0-9\\]")


class BenchmarkFormatError(ValueError):
    """A benchmark file that does not have the layout its adapter expects (the message says how)."""


@dataclass(frozen=True)
class Table:
    """A benchmark file opened for reading: its column names (known before any row is read) and its rows.

    Attributes:
        path: the file or folder as given.
        base_dir: the folder relative image paths are resolved against (the file's folder, or the folder).
        columns: every column name, in file order (JSONL: first-seen order over all lines).
        files: the files read, in order.
        image_dirs: further folders a relative image path is looked up in, after ``base_dir``.
    """

    path: Path
    base_dir: Path
    columns: tuple[str, ...]
    files: tuple[Path, ...]
    image_dirs: tuple[Path, ...] = ()

    def rows(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """``(row_number, row)`` pairs in file order; a column missing from a JSON object reads as None."""
        number = 0
        for file in self.files:
            for row in _iter_file(file):
                yield number, {column: row.get(column) for column in self.columns}
                number += 1


def open_table(path: str | Path) -> Table:
    """Open a benchmark file (or folder of parquet shards) and read its column names.

    Raises:
        BenchmarkFormatError: the path does not exist, has an unsupported suffix, mixes formats, or a JSON
            file is malformed.
    """
    path = Path(path)
    if not path.exists():
        raise BenchmarkFormatError(f"{path}: no such file or folder")
    if path.is_dir():
        files = tuple(sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith((".", "_"))))
        suffixes = {p.suffix for p in files}
        if not files or len(suffixes) != 1 or suffixes - {".parquet", ".jsonl"}:
            raise BenchmarkFormatError(
                f"{path}: a benchmark folder must hold only .parquet (or only .jsonl) files, "
                f"found {sorted(p.name for p in files)}"
            )
        base_dir = path
    else:
        files, base_dir = (path,), path.parent
    return open_files(path, files, base_dir)


def open_files(
    path: Path, files: tuple[Path, ...], base_dir: Path, image_dirs: tuple[Path, ...] = ()
) -> Table:
    """A table over ``files`` (all of one format), named ``path`` in messages; relative image paths are
    looked up in ``base_dir``, then in ``image_dirs``.

    Raises:
        BenchmarkFormatError: no files, an unsupported suffix, an unreadable parquet file or malformed JSON.
    """
    if not files:
        raise BenchmarkFormatError(f"{path}: no benchmark files found")
    if files[0].suffix not in (".parquet", ".jsonl", ".json"):
        raise BenchmarkFormatError(
            f"{path}: unsupported file type {files[0].suffix!r} (.parquet, .jsonl, .json)"
        )
    columns: dict[str, None] = {}
    for file in files:
        if file.suffix == ".parquet":
            try:
                columns.update(dict.fromkeys(pq.ParquetFile(file).schema_arrow.names))
            except (pa.ArrowException, OSError) as err:
                raise BenchmarkFormatError(f"{file}: not a readable parquet file ({err})") from err
        else:
            for row in _iter_file(file):
                columns.update(dict.fromkeys(row))
    return Table(path, base_dir, tuple(columns), files, image_dirs)


def split_files(path: Path, split: str | None, default: str, splits: tuple[str, ...]) -> tuple[Path, ...]:
    """The parquet files of one split (``split``, else ``default``) at ``path``: a file (checked against an
    explicit ``split`` when its name starts with one of ``splits``), a folder of ``<split>-*.parquet``
    files, or a folder of such folders (sorted by path). Hidden (``.``/``_``) entries are skipped.

    Raises:
        BenchmarkFormatError: no such path, or no file of the split (the message lists the files found).
    """
    if not path.exists():
        raise BenchmarkFormatError(f"{path}: no such file or folder")
    if path.is_file():
        named = path.name.split("-")[0]
        if split is not None and named in splits and named != split:
            raise BenchmarkFormatError(f"{path}: split {split!r} asked for, but this is a {named!r} file")
        return (path,)
    wanted = split or default

    def visible(folder: Path) -> list[Path]:
        return sorted(p for p in folder.iterdir() if not p.name.startswith((".", "_")))

    direct = [p for p in visible(path) if p.is_file() and p.suffix == ".parquet"]
    nested = (p for d in visible(path) if d.is_dir() for p in visible(d) if p.suffix == ".parquet")
    found = direct or list(nested)
    chosen = tuple(p for p in found if p.name.startswith(f"{wanted}-"))
    if not chosen:
        names = [str(p.relative_to(path)) for p in found]
        shown = names[:20] + ([f"… ({len(names)} in all)"] if len(names) > 20 else [])
        raise BenchmarkFormatError(
            f"{path}: no parquet file of split {wanted!r} ({wanted}-*.parquet, in the folder or in its "
            f"subject folders); found {shown}"
        )
    return chosen


def _iter_file(file: Path) -> Iterator[dict[str, Any]]:
    """The rows of one file as dicts (parquet batch by batch; JSON objects checked to be objects)."""
    if file.suffix == ".parquet":
        for batch in pq.ParquetFile(file).iter_batches(batch_size=_PARQUET_BATCH_ROWS):
            yield from batch.to_pylist()
        return
    if file.suffix == ".json":
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise BenchmarkFormatError(f"{file}: not valid JSON ({err})") from err
        if isinstance(data, dict) and all(isinstance(v, dict) for v in data.values()):
            data = [{KEY_COLUMN: key, **value} for key, value in data.items()]
        if not isinstance(data, list):
            raise BenchmarkFormatError(
                f"{file}: a .json benchmark must hold a list of objects or an object of objects keyed by id"
            )
        lines: list[tuple[int, Any]] = list(enumerate(data, start=1))
    else:
        lines = []
        with file.open(encoding="utf-8") as handle:
            for line_no, line in enumerate(handle, start=1):
                if line.strip():
                    try:
                        lines.append((line_no, json.loads(line)))
                    except json.JSONDecodeError as err:
                        raise BenchmarkFormatError(
                            f"{file}: line {line_no} is not valid JSON ({err})"
                        ) from err
    for line_no, obj in lines:
        if not isinstance(obj, dict):
            raise BenchmarkFormatError(f"{file}: entry {line_no} is a {type(obj).__name__}, not an object")
        yield obj


def resolve_columns(
    table: Table,
    benchmark: str,
    required: dict[str, tuple[str, ...]],
    optional: dict[str, tuple[str, ...]] | None = None,
) -> dict[str, str | None]:
    """Pick, for each role, the first of its accepted column names that the table has.

    Args:
        table: the opened file.
        benchmark: adapter name, for the message.
        required: role → accepted column names, in order of preference; a role with none present is an error.
        optional: role → accepted names; a role with none present maps to None.

    Returns:
        role → column name (None for an absent optional role).

    Raises:
        BenchmarkFormatError: naming the file, the missing column(s), the columns the adapter expects and the
            columns found, plus close matches (a misnamed ``questions`` suggests ``question``).
    """
    optional = optional or {}
    found = set(table.columns)
    chosen: dict[str, str | None] = {}
    missing = []
    for role, names in {**required, **optional}.items():
        chosen[role] = next((name for name in names if name in found), None)
        if chosen[role] is None and role in required:
            missing.append(names)
    if missing:
        wanted = "; ".join(" or ".join(repr(n) for n in names) for names in missing)
        expected = [" | ".join(names) for names in required.values()]
        hints = sorted(
            {m for names in missing for n in names for m in difflib.get_close_matches(n, found, 1)}
        )
        hint = f"; did you mean {hints}?" if hints else ""
        raise BenchmarkFormatError(
            f"{table.path}: benchmark {benchmark!r} needs column {wanted}, which is missing. "
            f"Expected columns {expected} (optional: {[' | '.join(n) for n in optional.values()]}); "
            f"found {list(table.columns)}{hint}"
        )
    return chosen


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
