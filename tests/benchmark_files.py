"""Builders of small benchmark releases for the tests: real PNGs and files in each release's own layout.

Test-only (the library never writes benchmark files). Each test module writes the rows it needs with these
helpers and states the expected values next to them.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

PNG_SIZE = 24
"""Side of the test PNGs in pixels."""


def png(key: object) -> bytes:
    """A small real PNG: a background and a rectangle drawn from ``key`` (same key → same bytes)."""
    rng = random.Random(repr(key))
    colour = tuple(rng.randrange(256) for _ in range(3))
    image = Image.new("RGB", (PNG_SIZE, PNG_SIZE), colour)
    x, y = rng.randrange(PNG_SIZE - 8), rng.randrange(PNG_SIZE - 8)
    ImageDraw.Draw(image).rectangle([x, y, x + 7, y + 7], fill=tuple(255 - c for c in colour))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def image_struct(key: object, path: str = "") -> dict[str, Any]:
    """A Hugging Face image struct ``{"bytes", "path"}`` holding :func:`png` of ``key``."""
    return {"bytes": png(key), "path": path or f"{key}.png"}


def write_png(path: Path, key: object) -> Path:
    """:func:`png` of ``key`` written to ``path`` (folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png(key))
    return path


def write_parquet(path: Path, rows: list[dict[str, Any]], schema: pa.Schema | None = None) -> Path:
    """``rows`` as one parquet file (folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    """``rows`` as JSON lines (folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def write_json(path: Path, data: Any) -> Path:
    """``data`` (a list of rows, or a dict of rows keyed by id) as one JSON file (folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))
    return path
