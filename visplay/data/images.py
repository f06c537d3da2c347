"""Read an image corpus into two Ray Datasets: the usable ``images`` and the ``rejects``, with a reason each.

Input (``corpus.path``) is one of:

* a folder (nested). EVERY non-directory entry under it is *offered*, whatever its name: the bytes
  decide, not the extension (``a.PNG``, ``b.jpg``, ``c.webp``, a PNG named ``x.jpg`` are all fine;
  ``notes.txt`` or a ``.DS_Store`` become ``not_image`` rejects). Symlinked folders are followed
  (each real folder once); a dangling symlink, FIFO or socket is an ``unreadable`` reject; a folder
  whose name looks like an image (``x.png/``) is walked into, never offered itself.
* a parquet file, or a folder whose files all end in ``.parquet`` (names starting with ``.`` or ``_``,
  such as ``_SUCCESS``, are ignored there and listed in :attr:`ImageRead.ignored`). Every row is
  offered; its encoded bytes come from ``parquet_image_column`` (binary, or a Hugging Face style
  struct with a ``bytes`` field). A missing or wrongly typed column is an error, not a reject.

Counts always add up: ``offered == n_images + sum(reject_counts.values())``, checked on every read.

* a single file: a ``.parquet`` file as above, any other file is offered as one image.

How it runs: the driver only lists paths (sorted, so ``limit`` keeps the same first items) or parquet
row groups into a :class:`CorpusPlan` (:func:`plan_corpus`), which numbers the offered items (``item``)
and cuts them into shards; reading, hashing and decoding happen in the :class:`DecodeImages`
``map_batches`` stage (Ray Data tasks) of the lazy, streaming :func:`decode_plan`. :func:`read_images`
materializes that once for small corpora (tests, tools), with ``images``/``rejects`` two cheap filters of
the one result. Row order of the two datasets is not part of the contract (sort by ``item``).

Validation of one item, in order (first failure wins): null/zero bytes -> ``empty``; more than
``max_file_bytes`` -> ``too_many_pixels`` (files: judged from ``stat`` before reading); Pillow cannot
identify it, or it is not PNG/JPEG/WEBP -> ``not_image``; Pillow refuses it as a decompression bomb, or
the header says width x height > ``max_pixels`` (checked before any pixel is decoded) ->
``too_many_pixels``; ``load()`` fails -> ``truncated``. An OSError while reading a file ->
``unreadable``.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray.data
from PIL import Image

from visplay.data.plan import CorpusPlan, plan_corpus
from visplay.data.schemas import IMAGES_SCHEMA, REJECT_REASONS, REJECTS_SCHEMA, RejectReason

logger = logging.getLogger(__name__)

ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP")
"""Pillow format names accepted as images; anything else Pillow can open is ``not_image``."""

_DECODED_SCHEMA = pa.schema(
    [
        pa.field("ok", pa.bool_()),
        *IMAGES_SCHEMA,
        pa.field("reason", pa.string()),
        pa.field("detail", pa.string()),
    ]
)
"""What DecodeImages emits: ``ok`` rows fill the images columns, the others ``reason`` and ``detail``."""


@dataclass(frozen=True)
class ImageRead:
    """The result of :func:`read_images`. Both datasets are cheap views of one materialized decode."""

    images: ray.data.Dataset
    """Rows in :data:`~visplay.data.schemas.IMAGES_SCHEMA`."""
    rejects: ray.data.Dataset
    """Rows in :data:`~visplay.data.schemas.REJECTS_SCHEMA`."""
    offered: int
    """Items offered: files found (folder input) or parquet rows (parquet input), after ``limit``."""
    n_images: int
    """Rows in ``images``."""
    reject_counts: dict[str, int]
    """Rows in ``rejects`` per reason, every reason of the fixed set present (zeros included)."""
    ignored: tuple[str, ...] = ()
    """Parquet input only: hidden/underscore files next to the parquet files that were not read."""

    def summary(self) -> str:
        """One log line with all the counts."""
        reasons = " ".join(f"{reason}={count}" for reason, count in self.reject_counts.items())
        return (
            f"offered={self.offered} images={self.n_images} rejects={sum(self.reject_counts.values())} "
            f"({reasons}) ignored={len(self.ignored)}"
        )


def decode_plan(
    plan: CorpusPlan, *, max_pixels: int, max_file_bytes: int, batch_size: int = 32
) -> ray.data.Dataset:
    """The lazy Ray Dataset of decoded rows (``_DECODED_SCHEMA``: images and rejects) of ``plan``'s items.

    Nothing is read until the dataset is consumed, and it streams: only the blocks in flight are held.
    Blocks follow the plan's order (one block per ``batch_size`` items), so the first shards come first.
    """
    if max_pixels < 1 or max_file_bytes < 1:
        raise ValueError("max_pixels and max_file_bytes must be >= 1")
    if plan.items.num_rows == 0:
        return ray.data.from_arrow(_DECODED_SCHEMA.empty_table())
    per_block = 1 if plan.kind == "bytes" else batch_size
    blocks = [plan.items.slice(i, per_block) for i in range(0, plan.items.num_rows, per_block)]
    ds = ray.data.from_arrow(blocks)
    if plan.kind == "bytes":
        ds = ds.map_batches(
            _read_row_groups, fn_kwargs={"column": plan.column}, batch_size=1, batch_format="pyarrow"
        )
    decode = DecodeImages(plan.kind, max_pixels=max_pixels, max_file_bytes=max_file_bytes)
    return ds.map_batches(decode, batch_size=batch_size, batch_format="pyarrow")


def read_images(
    path: str | Path,
    *,
    max_pixels: int,
    max_file_bytes: int,
    parquet_image_column: str = "image",
    limit: int | None = None,
    batch_size: int = 32,
) -> ImageRead:
    """Read, validate and decode every item under ``path`` into a *materialized* :class:`ImageRead`.

    For small corpora and tools (tests, benches, the evaluation's image folders): the whole decoded corpus
    is held in the object store. A generation pass over a real corpus streams instead
    (:func:`plan_corpus` + :func:`decode_plan`, in :mod:`visplay.generation.pipeline`).
    """
    plan = plan_corpus(path, parquet_image_column=parquet_image_column, limit=limit)
    decoded = decode_plan(
        plan, max_pixels=max_pixels, max_file_bytes=max_file_bytes, batch_size=batch_size
    ).materialize()
    n_images, counts = 0, dict.fromkeys(REJECT_REASONS, 0)
    for batch in decoded.select_columns(["ok", "reason"]).iter_batches(
        batch_format="pyarrow", batch_size=None
    ):
        n_images += pc.sum(batch["ok"]).as_py() or 0
        add_reason_counts(counts, batch["reason"].drop_null())
    if n_images + sum(counts.values()) != plan.offered:
        raise RuntimeError(
            f"{path}: offered {plan.offered} items but decoded {n_images} images + {sum(counts.values())} rejects"
        )
    result = ImageRead(
        images=decoded.map_batches(images_of, batch_format="pyarrow", batch_size=None),
        rejects=decoded.map_batches(rejects_of, batch_format="pyarrow", batch_size=None),
        offered=plan.offered,
        n_images=n_images,
        reject_counts=counts,
        ignored=plan.ignored,
    )
    logger.info("read_images %s: %s", path, result.summary())
    return result


class DecodeImages:
    """Ray Data stage (``map_batches``, pyarrow batches): offered items -> one decoded row each.

    It holds only its settings, so :func:`read_images` passes an *instance*, which Ray Data runs in its
    task pool on already-started workers; as an actor class it would cost a fresh actor process (about
    5 s on 2 cores) per read, with no state worth keeping.

    ``input_kind="files"`` reads column ``source`` (a file path) and reads the file itself;
    ``input_kind="bytes"`` reads ``source`` (a label) and ``data`` (encoded bytes, may be null).
    Output rows follow ``_DECODED_SCHEMA``: ``ok`` plus the images columns, or ``reason``/``detail``.
    """

    def __init__(
        self, input_kind: Literal["files", "bytes"], *, max_pixels: int, max_file_bytes: int
    ) -> None:
        """Remember the limits; ``input_kind`` fixes the input columns this stage requires."""
        if input_kind not in ("files", "bytes"):
            raise ValueError(f"input_kind must be 'files' or 'bytes', got {input_kind!r}")
        self.input_kind = input_kind
        self.input_columns = ("source", "item", "shard") + (("data",) if input_kind == "bytes" else ())
        self.max_pixels = max_pixels
        self.max_file_bytes = max_file_bytes

    def __call__(self, batch: pa.Table) -> pa.Table:
        """Validate the batch's columns (fail fast), then decode each item into one output row."""
        missing = [c for c in self.input_columns if c not in batch.column_names]
        if missing:
            raise ValueError(
                f"DecodeImages({self.input_kind}) needs columns {self.input_columns}; missing {missing}"
            )
        source_type = batch.schema.field("source").type
        if not (pa.types.is_string(source_type) or pa.types.is_large_string(source_type)):
            raise TypeError(f"DecodeImages: column 'source' must be string, got {source_type}")
        if self.input_kind == "bytes":
            data_type = batch.schema.field("data").type
            if not (pa.types.is_binary(data_type) or pa.types.is_large_binary(data_type)):
                raise TypeError(f"DecodeImages: column 'data' must be binary, got {data_type}")
        sources = batch.column("source").to_pylist()
        places = zip(batch.column("item").to_pylist(), batch.column("shard").to_pylist(), strict=True)
        rows = []
        for i, (source, (item, shard)) in enumerate(zip(sources, places, strict=True)):
            if self.input_kind == "files":
                data, problem = read_file_bytes(source, self.max_file_bytes)
                if problem is not None:
                    rows.append(_reject(source, *problem) | {"item": item, "shard": shard})
                    continue
            else:
                data = batch.column("data")[i].as_py()
            row = validate_image(source, data, max_pixels=self.max_pixels, max_file_bytes=self.max_file_bytes)
            rows.append(row | {"item": item, "shard": shard})
        return pa.Table.from_pylist(rows, schema=_DECODED_SCHEMA)


def read_file_bytes(path: str, max_file_bytes: int) -> tuple[bytes | None, tuple[RejectReason, str] | None]:
    """The bytes of a regular file, or ``(None, (reason, detail))`` when it cannot or must not be read."""
    try:
        info = os.stat(path)  # follows symlinks: a dangling one raises FileNotFoundError
        if not stat.S_ISREG(info.st_mode):
            return None, (RejectReason.UNREADABLE, f"not a regular file (mode {stat.filemode(info.st_mode)})")
        if info.st_size > max_file_bytes:
            return None, (
                RejectReason.TOO_MANY_PIXELS,
                f"{info.st_size} bytes > max_file_bytes={max_file_bytes}",
            )
        with open(path, "rb") as handle:
            return handle.read(max_file_bytes + 1), None  # validate_image catches a file that grew meanwhile
    except OSError as err:
        return None, (RejectReason.UNREADABLE, f"{type(err).__name__}: {err}")


def validate_image(
    source: str, data: bytes | None, *, max_pixels: int, max_file_bytes: int
) -> dict[str, Any]:
    """Decode one encoded image; returns one ``_DECODED_SCHEMA`` row (ok, or a reject with reason)."""
    if not data:
        return _reject(source, RejectReason.EMPTY, "null value" if data is None else "zero bytes")
    if len(data) > max_file_bytes:
        return _reject(
            source, RejectReason.TOO_MANY_PIXELS, f"{len(data)} bytes > max_file_bytes={max_file_bytes}"
        )
    try:
        with warnings.catch_warnings():
            # max_pixels is the limit that counts; Pillow's own hard limit still raises DecompressionBombError.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as err:
        return _reject(source, RejectReason.TOO_MANY_PIXELS, str(err))
    except Exception as err:  # UnidentifiedImageError, or a plugin choking on a garbled header
        return _reject(source, RejectReason.NOT_IMAGE, f"{type(err).__name__}: {err}")
    with image:
        width, height = image.size
        if image.format not in ACCEPTED_FORMATS:
            return _reject(
                source,
                RejectReason.NOT_IMAGE,
                f"format {image.format}; accepted: {', '.join(ACCEPTED_FORMATS)}",
            )
        if width * height > max_pixels:
            return _reject(
                source,
                RejectReason.TOO_MANY_PIXELS,
                f"{width}x{height} = {width * height} pixels > max_pixels={max_pixels}",
            )
        try:
            image.load()
        except Exception as err:  # OSError "image file is truncated", SyntaxError "broken PNG file", ...
            return _reject(source, RejectReason.TRUNCATED, f"{type(err).__name__}: {err}")
    return {
        "ok": True,
        "image_id": hashlib.sha256(data).hexdigest(),
        "source": source,
        "width": width,
        "height": height,
        "image": data,
        "reason": None,
        "detail": None,
    }


def count_by_reason(rejects: ray.data.Dataset) -> dict[str, int]:
    """Rows of a rejects dataset per reason, every reason of the fixed set present (zeros included)."""
    counts = dict.fromkeys(REJECT_REASONS, 0)
    for batch in rejects.select_columns(["reason"]).iter_batches(batch_format="pyarrow", batch_size=None):
        add_reason_counts(counts, batch["reason"])
    return counts


def write_rejects(rejects: ray.data.Dataset, path: str | Path) -> Path:
    """Write the rejects (sorted by source) as one parquet file in REJECTS_SCHEMA, even when there are none."""
    tables = [
        t.select(REJECTS_SCHEMA.names).cast(REJECTS_SCHEMA)
        for t in rejects.iter_batches(batch_format="pyarrow", batch_size=None)
    ]
    table = pa.concat_tables(tables) if tables else REJECTS_SCHEMA.empty_table()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.sort_by("source"), path)
    return path


def load_image(source: str, image_id: str, column: str = "image") -> bytes:
    """The encoded bytes of one image of the corpus, by its ``source`` (a file path, or ``<file>#<row>`` of
    parquet input, whose bytes are in ``column``), checked against its ``image_id`` (sha256). Reads one file,
    or one column of one parquet row group.

    Raises FileNotFoundError / ValueError naming the source when it is gone or its bytes changed.
    """
    path, hashmark, row = source.rpartition("#")
    if hashmark and path.lower().endswith(".parquet") and row.isdigit():
        data = _parquet_row_bytes(path, int(row), column)
    else:
        with open(source, "rb") as handle:
            data = handle.read()
    if hashlib.sha256(data).hexdigest() != image_id:
        raise ValueError(
            f"{source}: bytes changed since the pass read it (sha256 != image_id {image_id[:12]})"
        )
    return data


def _parquet_row_bytes(path: str, row: int, column: str) -> bytes:
    """Image bytes at 0-based ``row`` of a parquet file's ``column`` (binary, or a struct with ``bytes``)."""
    reader = pq.ParquetFile(path)
    start = 0
    for group in range(reader.metadata.num_row_groups):
        rows = reader.metadata.row_group(group).num_rows
        if row < start + rows:
            values = reader.read_row_group(group, columns=[column]).column(column).combine_chunks()
            if pa.types.is_struct(values.type):
                values = pc.struct_field(values, "bytes")
            return values[row - start].as_py()
        start += rows
    raise FileNotFoundError(f"{path} has no row {row}")


def to_pil(image_bytes: bytes) -> Image.Image:
    """Decode bytes of the ``image`` column into an RGB PIL image (transparent areas composited on white).

    No EXIF rotation is applied, so the result is ``width`` x ``height`` of the images table.
    """
    with Image.open(io.BytesIO(image_bytes)) as image:
        image.load()
        if image.mode == "RGB":
            return image.copy()
        if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
            rgba = image.convert("RGBA")
            return Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
        return image.convert("RGB")


def _reject(source: str, reason: RejectReason, detail: str) -> dict[str, Any]:
    """A ``_DECODED_SCHEMA`` row for an item that is not used."""
    return {
        "ok": False,
        "image_id": None,
        "source": source,
        "width": None,
        "height": None,
        "image": None,
        "reason": reason.value,
        "detail": detail,
    }


def add_reason_counts(counts: dict[str, int], reasons: pa.Array | pa.ChunkedArray) -> None:
    """Add value counts of a reason column into ``counts``; a reason outside the fixed set is an error."""
    for entry in pc.value_counts(reasons).to_pylist():
        if entry["values"] not in counts:
            raise ValueError(f"unknown reject reason {entry['values']!r}; the fixed set is {REJECT_REASONS}")
        counts[entry["values"]] += entry["counts"]


def images_of(batch: pa.Table) -> pa.Table:
    """The ok rows of a decoded batch, as IMAGES_SCHEMA."""
    return batch.filter(batch["ok"]).select(IMAGES_SCHEMA.names).cast(IMAGES_SCHEMA)


def rejects_of(batch: pa.Table) -> pa.Table:
    """The failed rows of a decoded batch, as REJECTS_SCHEMA."""
    return batch.filter(pc.invert(batch["ok"])).select(REJECTS_SCHEMA.names).cast(REJECTS_SCHEMA)


def _read_row_groups(batch: pa.Table, column: str) -> pa.Table:
    """Ray Data stage: row-group items -> one ``source``/``data`` row per parquet row (``file#row``)."""
    sources: list[str] = []
    chunks: list[pa.Array] = []
    items: list[int] = []
    shards: list[int] = []
    for item in batch.to_pylist():
        table = (
            pq.ParquetFile(item["file"])
            .read_row_group(item["row_group"], columns=[column])
            .slice(0, item["take"])
        )
        values = table.column(column).combine_chunks()
        if pa.types.is_struct(values.type):
            values = pc.struct_field(values, "bytes")
        chunks.append(values.cast(pa.binary()))
        sources.extend(f"{item['file']}#{item['first_row'] + i}" for i in range(len(values)))
        items.extend(item["item"] + i for i in range(len(values)))
        shards.extend([item["shard"]] * len(values))
    data = pa.concat_arrays(chunks) if chunks else pa.array([], pa.binary())
    return pa.table(
        {
            "source": pa.array(sources, pa.string()),
            "item": pa.array(items, pa.int64()),
            "shard": pa.array(shards, pa.int32()),
            "data": data,
        }
    )
