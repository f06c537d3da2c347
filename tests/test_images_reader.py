"""The image reader: per-item validation (fast, no Ray), then the Ray Data reader on a real local Ray
(marked slow: Ray's start and its first cold workers take 30-60 s here): exact reject counts by reason,
every good image exactly once, offered = images + rejects.

Tests run as root, so ``chmod 000`` would not stop a read: the ``unreadable`` case is a dangling
symlink (``open`` raises FileNotFoundError, an OSError). A folder named ``dir.png`` is walked into,
never offered itself.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from visplay.data.images import (
    DecodeImages,
    ImageRead,
    count_by_reason,
    read_file_bytes,
    read_images,
    to_pil,
    validate_image,
    write_rejects,
)
from visplay.data.plan import list_files
from visplay.data.schemas import IMAGES_SCHEMA, REJECT_REASONS, REJECTS_SCHEMA
from visplay.world.corpus import make_corpus, read_ground_truth

MAX_PIXELS = 1_000_000
MAX_FILE_BYTES = 100_000


@pytest.fixture(scope="module")
def local_ray(ray_local):
    """The session's local Ray (conftest.py; starting one takes 15-30 s on 2 cores)."""
    return ray_local


def _encoded(fmt: str, seed: int, size: tuple[int, int] = (40, 30), mode: str = "RGB") -> bytes:
    """A small noise image (distinct per seed) encoded as fmt."""
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()


def _png_with_header_size(width: int, height: int) -> bytes:
    """A real small PNG whose IHDR claims width x height (CRC fixed), like a decompression bomb's header."""
    data = bytearray(_encoded("PNG", 99, size=(8, 8)))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def messy_folder(tmp_path_factory) -> tuple[Path, dict[str, bytes]]:
    """A nested folder of good and bad files; returns it and {relative path: bytes} of the good ones."""
    root = tmp_path_factory.mktemp("messy")
    good = {
        "a.png": _encoded("PNG", 1),
        "b.jpg": _encoded("JPEG", 2),
        "c.webp": _encoded("WEBP", 3),
        "UPPER.PNG": _encoded("PNG", 4, mode="RGBA"),
        "nested/deeper/e.jpeg": _encoded("JPEG", 5),
        "dir.png/f.png": _encoded("PNG", 6, mode="P"),
    }
    whole = _encoded("PNG", 7, size=(64, 64))
    bad = {
        "empty.png": b"",  # empty
        "nested/half.png": whole[: len(whole) // 2],  # truncated
        "text.jpg": b"hello, I am not a JPEG\n",  # not_image
        "nested/notes.txt": b"just some notes\n",  # not_image
        "anim.gif": _encoded("GIF", 8),  # not_image: a format we do not accept
        "bomb.png": _png_with_header_size(20_000, 20_000),  # too_many_pixels: Pillow's own bomb error
        "wide.png": _png_with_header_size(3_000, 3_000),  # too_many_pixels: over MAX_PIXELS
        "huge.png": os.urandom(MAX_FILE_BYTES + 1),  # too_many_pixels: over MAX_FILE_BYTES
    }
    for rel, data in {**good, **bad}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    (root / "nested" / "gone.png").symlink_to(root / "does-not-exist.png")  # unreadable
    (root / "nested" / "loop").symlink_to(root, target_is_directory=True)  # followed once, no duplicates
    return root, good


EXPECTED_REJECTS = {"empty": 1, "truncated": 1, "not_image": 3, "too_many_pixels": 3, "unreadable": 1}


@pytest.fixture(scope="module")
def messy_read(local_ray, messy_folder) -> ImageRead:
    """The messy folder read once, shared by the tests that only look at the result."""
    return read_images(messy_folder[0], max_pixels=MAX_PIXELS, max_file_bytes=MAX_FILE_BYTES)


# ---- per-item validation, no Ray ----


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (None, "empty"),
        (b"", "empty"),
        (b"plain text", "not_image"),
        (_encoded("GIF", 1), "not_image"),
        (_encoded("PNG", 2, size=(64, 64))[:1500], "truncated"),
        (_png_with_header_size(20_000, 20_000), "too_many_pixels"),
        (_png_with_header_size(1_001, 1_000), "too_many_pixels"),
        (b"\x89PNG" + bytes(MAX_FILE_BYTES), "too_many_pixels"),
    ],
)
def test_validate_image_rejects_with_the_right_reason(data: bytes | None, reason: str) -> None:
    row = validate_image("x", data, max_pixels=MAX_PIXELS, max_file_bytes=MAX_FILE_BYTES)
    assert (row["ok"], row["reason"], row["image"]) == (False, reason, None)
    assert row["detail"]


def test_validate_image_accepts_and_hashes() -> None:
    data = _encoded("WEBP", 3)
    row = validate_image("x", data, max_pixels=MAX_PIXELS, max_file_bytes=MAX_FILE_BYTES)
    assert row == {
        "ok": True, "image_id": _sha(data), "source": "x", "width": 40, "height": 30,
        "image": data, "reason": None, "detail": None,
    }  # fmt: skip
    exact = validate_image(
        "x", _png_with_header_size(1_000, 1_000), max_pixels=MAX_PIXELS, max_file_bytes=MAX_FILE_BYTES
    )
    assert exact["reason"] == "truncated"  # exactly max_pixels passes; the 8x8 data then fails to decode


def test_read_file_bytes_reasons(tmp_path: Path) -> None:
    (tmp_path / "dangling").symlink_to(tmp_path / "missing")
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "big").write_bytes(bytes(11))
    assert read_file_bytes(str(tmp_path / "dangling"), 10)[1][0] == "unreadable"
    assert read_file_bytes(str(tmp_path / "pipe"), 10)[1][0] == "unreadable"  # never opened: it would block
    assert read_file_bytes(str(tmp_path / "big"), 10)[1][0] == "too_many_pixels"
    assert read_file_bytes(str(tmp_path / "big"), 11) == (bytes(11), None)


def test_list_files_walks_nested_follows_links_once(messy_folder) -> None:
    root, good = messy_folder
    names = [Path(f).relative_to(root).as_posix() for f in list_files(root)]
    assert names == sorted(names) and len(names) == len(set(names)) == 15
    assert "dir.png/f.png" in names and "dir.png" not in names and "nested/gone.png" in names


def test_decode_images_fails_fast_on_wrong_input() -> None:
    decode = DecodeImages("bytes", max_pixels=MAX_PIXELS, max_file_bytes=MAX_FILE_BYTES)
    place = {"item": pa.array([7], pa.int64()), "shard": pa.array([0], pa.int32())}
    with pytest.raises(ValueError, match="missing \\['data'\\]"):
        decode(pa.table({"source": ["a"], **place}))
    with pytest.raises(TypeError, match="'data' must be binary"):
        decode(pa.table({"source": ["a"], **place, "data": [1]}))
    out = decode(
        pa.table({"source": ["a", "b"], "item": [7, 8], "shard": [0, 1],
                  "data": pa.array([_encoded("PNG", 4), b"junk"], pa.binary())})
    )  # fmt: skip
    assert out.column("ok").to_pylist() == [True, False]
    assert out.column("item").to_pylist() == [7, 8] and out.column("shard").to_pylist() == [0, 1]


def test_to_pil_flattens_alpha_on_white() -> None:
    buffer = io.BytesIO()
    Image.new("RGBA", (4, 3), (255, 0, 0, 0)).save(buffer, format="PNG")
    picture = to_pil(buffer.getvalue())
    assert (picture.mode, picture.size, picture.getpixel((0, 0))) == ("RGB", (4, 3), (255, 255, 255))
    assert to_pil(_encoded("PNG", 5, mode="P")).mode == "RGB"


# ---- the Ray Data reader ----


@pytest.mark.slow
def test_folder_every_good_image_once_and_exact_rejects(messy_folder, messy_read: ImageRead) -> None:
    root, good = messy_folder
    read = messy_read
    images = read.images.take_all()
    rejects = read.rejects.take_all()

    assert sorted(row["image_id"] for row in images) == sorted(_sha(data) for data in good.values())
    assert sorted(row["source"] for row in images) == sorted(str(root / rel) for rel in good)
    assert read.reject_counts == EXPECTED_REJECTS
    assert count_by_reason(read.rejects) == EXPECTED_REJECTS
    assert read.offered == len(good) + sum(EXPECTED_REJECTS.values()) == 15
    assert read.offered == read.n_images + len(rejects)
    assert read.n_images == len(images) == len(good)

    by_name = {Path(row["source"]).name: row for row in rejects}
    assert by_name["gone.png"]["reason"] == "unreadable"
    assert by_name["half.png"]["reason"] == "truncated"
    assert by_name["huge.png"]["reason"] == by_name["bomb.png"]["reason"] == "too_many_pixels"
    assert "max_pixels" in by_name["wide.png"]["detail"] and "max_file_bytes" in by_name["huge.png"]["detail"]
    assert all(row["detail"] for row in rejects)
    for row in images:
        data = good[Path(row["source"]).relative_to(root).as_posix()]
        assert row["image"] == data
        picture = to_pil(row["image"])
        assert picture.mode == "RGB" and picture.size == (row["width"], row["height"]) == (40, 30)


@pytest.mark.slow
def test_datasets_carry_the_table_schemas(messy_read: ImageRead) -> None:
    read = messy_read
    for batch in read.images.iter_batches(batch_format="pyarrow", batch_size=None):
        assert batch.schema.equals(IMAGES_SCHEMA)
    for batch in read.rejects.iter_batches(batch_format="pyarrow", batch_size=None):
        assert batch.schema.equals(REJECTS_SCHEMA)


@pytest.mark.slow
@pytest.mark.usefixtures("local_ray")
def test_limit_keeps_first_sources_in_sorted_order(messy_folder) -> None:
    root, _ = messy_folder
    read = read_images(root, max_pixels=MAX_PIXELS, max_file_bytes=MAX_FILE_BYTES, limit=4)
    sources = sorted(row["source"] for row in read.images.take_all() + read.rejects.take_all())
    # sorted order: UPPER.PNG, a.png, anim.gif, b.jpg ('U' sorts before lower case)
    assert [Path(s).name for s in sources] == ["UPPER.PNG", "a.png", "anim.gif", "b.jpg"]
    assert (read.offered, read.n_images, read.reject_counts["not_image"]) == (4, 3, 1)


@pytest.mark.slow
def test_write_rejects_round_trips(messy_read: ImageRead, tmp_path: Path) -> None:
    table = pq.read_table(write_rejects(messy_read.rejects, tmp_path / "out" / "rejects.parquet"))
    assert table.schema.equals(REJECTS_SCHEMA)
    assert table.num_rows == sum(EXPECTED_REJECTS.values())
    assert table.column("source").to_pylist() == sorted(table.column("source").to_pylist())
    assert set(table.column("reason").to_pylist()) <= set(REJECT_REASONS)


@pytest.mark.slow
@pytest.mark.usefixtures("local_ray")
def test_empty_folder_reads_nothing(tmp_path: Path) -> None:
    read = read_images(tmp_path, max_pixels=MAX_PIXELS, max_file_bytes=MAX_FILE_BYTES)
    assert (read.offered, read.n_images, read.images.count(), read.rejects.count()) == (0, 0, 0, 0)
    rejects = pq.read_table(write_rejects(read.rejects, tmp_path / "rejects.parquet"))
    assert rejects.num_rows == 0 and rejects.schema.equals(REJECTS_SCHEMA)


@pytest.mark.slow
@pytest.mark.usefixtures("local_ray")
def test_parquet_folder_rows_with_one_bad_row(tmp_path: Path) -> None:
    folder = tmp_path / "shards"
    folder.mkdir()
    first = [_encoded("PNG", 10), _encoded("JPEG", 11), b"not an image at all", _encoded("WEBP", 12)]
    second = [_encoded("PNG", 13), None]
    table = pa.table({"id": list(range(4)), "image": pa.array(first, pa.binary())})
    pq.write_table(table, folder / "part-0.parquet", row_group_size=2)  # rows 2-3 sit in row group 1
    pq.write_table(pa.table({"image": pa.array(second, pa.large_binary())}), folder / "part-1.parquet")
    (folder / "_SUCCESS").write_bytes(b"")

    read = read_images(folder, max_pixels=MAX_PIXELS, max_file_bytes=MAX_FILE_BYTES)
    images, rejects = read.images.take_all(), read.rejects.take_all()
    good = [d for d in first + second if d is not None and d != b"not an image at all"]
    assert sorted(row["image_id"] for row in images) == sorted(_sha(d) for d in good)
    assert {row["source"]: row["reason"] for row in rejects} == {
        f"{folder / 'part-0.parquet'}#2": "not_image",
        f"{folder / 'part-1.parquet'}#1": "empty",
    }
    assert f"{folder / 'part-0.parquet'}#3" in {row["source"] for row in images}
    assert (read.offered, read.n_images) == (6, 4)
    assert read.ignored == (str(folder / "_SUCCESS"),)

    limited = read_images(folder, max_pixels=MAX_PIXELS, max_file_bytes=MAX_FILE_BYTES, limit=3)
    assert (limited.offered, limited.n_images, limited.reject_counts["not_image"]) == (3, 2, 1)


@pytest.mark.slow
@pytest.mark.usefixtures("local_ray")
def test_parquet_file_with_struct_column_and_missing_column(tmp_path: Path) -> None:
    path = tmp_path / "hf.parquet"
    rows = [{"bytes": _encoded("PNG", 20), "path": "x.png"}, {"bytes": b"", "path": "y.png"}]
    pq.write_table(pa.table({"picture": rows}), path)
    read = read_images(
        path, max_pixels=MAX_PIXELS, max_file_bytes=MAX_FILE_BYTES, parquet_image_column="picture"
    )
    assert (read.n_images, read.reject_counts["empty"], read.offered) == (1, 1, 2)
    with pytest.raises(ValueError, match="no image column"):
        read_images(path, max_pixels=MAX_PIXELS, max_file_bytes=MAX_FILE_BYTES)


@pytest.mark.slow
@pytest.mark.usefixtures("local_ray")
def test_synthetic_corpus_reads_cleanly_and_matches_ground_truth(tmp_path: Path) -> None:
    summary = make_corpus(tmp_path / "corpus", n=9, seed=1)
    read = read_images(summary.images_dir, max_pixels=MAX_PIXELS, max_file_bytes=MAX_FILE_BYTES)
    assert read.reject_counts == dict.fromkeys(REJECT_REASONS, 0)
    truth = {r["image_id"]: r for r in read_ground_truth(summary.ground_truth)}
    images = read.images.take_all()
    assert sorted(row["image_id"] for row in images) == sorted(truth)
    for row in images:
        assert row["source"] == os.path.abspath(summary.out_dir / truth[row["image_id"]]["file"])


@pytest.mark.slow
@pytest.mark.usefixtures("local_ray")
def test_single_image_file_is_one_offered_item(tmp_path: Path) -> None:
    (tmp_path / "one.jpg").write_bytes(_encoded("JPEG", 30))
    read = read_images(tmp_path / "one.jpg", max_pixels=MAX_PIXELS, max_file_bytes=MAX_FILE_BYTES)
    assert (read.offered, read.n_images) == (1, 1)
    assert read.images.take_all()[0]["source"] == str(tmp_path / "one.jpg")
