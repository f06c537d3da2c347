"""Reading a benchmark release into rows, and finding its columns (a row's cells: :mod:`visplay.eval.cells`).

A benchmark file is one of:

* a ``.parquet`` file, or a folder of ``.parquet`` shards (Hugging Face ``data/test-0000x-of-0000y.parquet``;
  names starting with ``.`` or ``_`` are ignored), read batch by batch so ``limit`` stops early;
* a ``.jsonl`` file (one JSON object per line), or a ``.json`` file holding a list of objects or an object of
  objects keyed by id (MM-Vet's ``mm-vet.json``, MathVista's ``testmini.json``: the key is column
  :data:`KEY_COLUMN`);
* a list of files chosen by the benchmark (:func:`open_files`: MMMU's split within subject folders).

A :class:`Table` also knows where relative image paths are looked up: the file's folder, then the folders
the benchmark names (MM-Vet's ``images/``).

Every problem with a file is a :class:`BenchmarkFormatError` whose message names the file and, where it
applies, the row number (0-based, in file order), the column, and what was expected and found.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

_PARQUET_BATCH_ROWS = 64
KEY_COLUMN = "_key"
"""The column holding each row's key when a ``.json`` file is an object of objects keyed by id."""


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
        queries: prompts keyed by row id that a benchmark ships beside its rows (MathVista's
            ``query.json``); empty for the others.
    """

    path: Path
    base_dir: Path
    columns: tuple[str, ...]
    files: tuple[Path, ...]
    image_dirs: tuple[Path, ...] = ()
    queries: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)

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


def json_or_folder(path: Path, json_name: str) -> Path:
    """``path``, or ``path / json_name`` when ``path`` is a folder holding that json and no parquet file
    (a release's json given by its folder)."""
    if path.is_dir() and (path / json_name).is_file() and not any(path.glob("*.parquet")):
        return path / json_name
    return path


def check_split(path: Path, split: str | None, splits: tuple[str, ...]) -> None:
    """Raise ``BenchmarkFormatError`` when an explicit ``split`` is not one of the benchmark's ``splits``."""
    if split is not None and split not in splits:
        raise BenchmarkFormatError(f"{path}: the benchmark has splits {list(splits)}, not {split!r}")


def split_files(path: Path, split: str | None, default: str, splits: tuple[str, ...]) -> tuple[Path, ...]:
    """The parquet files of one split (``split``, else ``default``) at ``path``: a file (checked against an
    explicit ``split`` when its name starts with one of ``splits``), a folder of ``<split>-*.parquet``
    files, or a folder of such folders (sorted by path). Hidden (``.``/``_``) entries are skipped.

    Raises:
        BenchmarkFormatError: ``split`` is not one of ``splits``, no such path, or no file of the split
            (the message lists the files found).
    """
    check_split(path, split, splits)
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
