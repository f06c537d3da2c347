"""Reading a generation pass's tables: parquet dataset folders (``questions/``, ``dropped/``, ...).

Files are taken in name order, so a row's position in a table is fixed once the pass has written it (step 2
writes rows sorted by item and sample): the Reasoner phase's seeded step permutation addresses rows by
position and reads only the rows a step uses.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads


def table_files(folder: str | Path) -> list[str]:
    """The parquet files of a table folder, in name order (a single ``.parquet`` file is its own table)."""
    folder = Path(folder)
    if folder.is_file():
        return [str(folder)]
    files = sorted(str(p) for p in folder.glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"no parquet files in table folder {folder}")
    return files


def open_table(folder: str | Path) -> pads.Dataset:
    """The table as a lazy ``pyarrow.dataset`` (nothing read until asked)."""
    return pads.dataset(table_files(folder), format="parquet")


def count_rows(folder: str | Path) -> int:
    """Rows of a table, from the parquet footers."""
    return open_table(folder).count_rows()


def read_columns(folder: str | Path, columns: list[str]) -> pa.Table:
    """Only ``columns`` of every row (for small columns: counts, p values)."""
    return open_table(folder).to_table(columns=columns)


def take_rows(folder: str | Path, positions: list[int], columns: list[str]) -> list[dict]:
    """The rows at ``positions`` (in table order), only ``columns``: reads the row groups that hold them."""
    table = open_table(folder).take(pa.array(positions, pa.int64()), columns=columns)
    return table.to_pylist()
