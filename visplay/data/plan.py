"""Plan a pass over an image corpus: list what is offered, number it, cut it into shards. Reads no image.

A :class:`CorpusPlan` is what a generation pass saves before it reads anything (``plan.parquet``), so a
resumed pass cuts exactly the same shards even if the folder changed meanwhile. See
:mod:`visplay.data.images` for what counts as offered and how items are decoded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


@dataclass(frozen=True)
class CorpusPlan:
    """The offered items of a corpus, in their stable order, cut into shards (no byte has been read).

    ``items`` is one Arrow row per work item: for folder input (``kind == "files"``) one file,
    columns ``source``, ``item``, ``shard``; for parquet input (``kind == "bytes"``) one row group, columns
    ``file``, ``row_group``, ``first_row``, ``take``, ``item`` (the global index of its first row) and
    ``shard``. Offered item ``i`` (a file, or a parquet row) belongs to shard ``i // shard_size`` for
    folders; for parquet, row groups are taken whole, so a shard holds whole row groups (about
    ``shard_size`` rows). A plan is a pure function of the listing and its settings, so a resumed pass that
    re-reads its saved plan cuts exactly the same shards.
    """

    kind: Literal["files", "bytes"]
    items: pa.Table
    offered: int
    """Items offered: files found (folder input) or parquet rows (parquet input), after ``limit``."""
    column: str = "image"
    """Parquet input: the column of encoded bytes."""
    ignored: tuple[str, ...] = ()
    """Parquet input only: hidden/underscore files next to the parquet files that were not read."""

    @property
    def shards(self) -> list[int]:
        """The shard ids, ascending."""
        return sorted(self.shard_sizes())

    def shard_sizes(self) -> dict[int, int]:
        """Offered items per shard (an Arrow group-by: no Python object per item)."""
        if self.kind == "bytes":
            sizes = self.items.group_by("shard").aggregate([("take", "sum")])
            return dict(zip(sizes["shard"].to_pylist(), sizes["take_sum"].to_pylist(), strict=True))
        sizes = self.items.group_by("shard").aggregate([("item", "count")])
        return dict(zip(sizes["shard"].to_pylist(), sizes["item_count"].to_pylist(), strict=True))

    def only(self, shards: set[int]) -> CorpusPlan:
        """The same plan restricted to ``shards`` (a resumed pass: the unfinished ones)."""
        items = self.items.filter(pc.is_in(self.items["shard"], pa.array(sorted(shards), pa.int32())))
        offered = sum(items["take"].to_pylist()) if self.kind == "bytes" else items.num_rows
        return CorpusPlan(self.kind, items, offered, self.column, self.ignored)


def plan_corpus(
    path: str | Path, *, parquet_image_column: str = "image", limit: int | None = None, shard_size: int = 1024
) -> CorpusPlan:
    """List ``path`` (see the module docstring for what is offered) and cut it into shards; reads no image.

    ``limit`` keeps the first ``limit`` offered items in sorted order (rejects included). Folder input
    costs one ``os.walk`` and one path string per file (about 150 MB for 1M files); parquet input one Arrow
    row per row group.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 or None, got {limit}")
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    root = Path(os.path.abspath(path))
    if not root.exists():
        raise FileNotFoundError(f"image corpus not found: {root}")
    files = [str(root)] if root.is_file() else list_files(root)
    parquet_files, ignored = _parquet_input(root, files)
    if parquet_files is None:
        sources = pa.array(files[:limit], pa.string())
        del files
        index = pa.array(range(len(sources)), pa.int64())
        shard = pc.cast(pc.divide(index, shard_size), pa.int32())
        items = pa.table({"source": sources, "item": index, "shard": shard})
        return CorpusPlan("files", items, len(sources), parquet_image_column)
    items = _row_group_items(parquet_files, parquet_image_column, limit, shard_size)
    return CorpusPlan("bytes", items, sum(items["take"].to_pylist()), parquet_image_column, tuple(ignored))


def list_files(root: str | Path) -> list[str]:
    """Every non-directory entry under ``root`` as an absolute path, sorted; symlinked folders once each.

    A folder that cannot be listed raises (an unlisted folder would drop its files silently).
    """

    def fail(err: OSError) -> None:
        raise err

    found: list[str] = []
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(os.path.abspath(root), onerror=fail, followlinks=True):
        info = os.stat(dirpath)
        if (info.st_dev, info.st_ino) in seen:  # a symlink loop or a second link to the same folder
            dirnames[:] = []
            continue
        seen.add((info.st_dev, info.st_ino))
        found.extend(os.path.join(dirpath, name) for name in filenames)
    return sorted(found)


def _parquet_input(root: Path, files: list[str]) -> tuple[list[str] | None, list[str]]:
    """(parquet files to read, ignored files) when ``root`` is parquet input, else (None, [])."""
    if root.is_file():
        return ([str(root)], []) if root.suffix.lower() == ".parquet" else (None, [])
    visible = [f for f in files if not os.path.basename(f).startswith((".", "_"))]
    if visible and all(f.lower().endswith(".parquet") for f in visible):
        keep = set(visible)
        return visible, [f for f in files if f not in keep]
    return None, []


def _row_group_items(parquet_files: list[str], column: str, limit: int | None, shard_size: int) -> pa.Table:
    """One work item per parquet row group: file, row group, its first row in the file, rows to take, the
    global index of its first row (``item``) and its shard (row groups filled greedily up to ``shard_size``
    rows, a shard holds at least one)."""
    cols: dict[str, list] = {k: [] for k in ("file", "row_group", "first_row", "take", "item", "shard")}
    remaining, item, shard, in_shard = limit, 0, 0, 0
    for file in parquet_files:
        reader = pq.ParquetFile(file)
        if column not in reader.schema_arrow.names:
            raise ValueError(f"{file}: no image column {column!r} (columns: {reader.schema_arrow.names})")
        _check_image_type(file, column, reader.schema_arrow.field(column).type)
        first_row = 0
        for group in range(reader.metadata.num_row_groups):
            rows = reader.metadata.row_group(group).num_rows
            take = rows if remaining is None else min(rows, remaining)
            if take:
                if in_shard and in_shard + take > shard_size:
                    shard, in_shard = shard + 1, 0
                for key, value in zip(cols, (file, group, first_row, take, item, shard), strict=True):
                    cols[key].append(value)
                item, in_shard = item + take, in_shard + take
            first_row += rows
            if remaining is not None:
                remaining -= take
                if remaining == 0:
                    break
        if remaining == 0:
            break
    types = (pa.string(), pa.int32(), pa.int64(), pa.int64(), pa.int64(), pa.int32())
    return pa.table({k: pa.array(v, t) for (k, v), t in zip(cols.items(), types, strict=True)})


def _check_image_type(file: str, column: str, kind: pa.DataType) -> None:
    """Raise unless the column holds encoded bytes: binary, large binary, or a struct with a ``bytes`` field."""
    if pa.types.is_struct(kind) and kind.get_field_index("bytes") >= 0:
        kind = kind.field("bytes").type
    if not (pa.types.is_binary(kind) or pa.types.is_large_binary(kind)):
        raise TypeError(f"{file}: column {column!r} must hold image bytes (binary), got {kind}")
