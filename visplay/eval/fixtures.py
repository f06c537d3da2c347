"""Small benchmark files in each benchmark's own schema, for tests and for trying the pipeline offline.

    path = write_fixture("hallusionbench", tmp_dir, n=8)        # a parquet file shaped like lmms-lab's
    examples = load_benchmark("hallusionbench", path)            # round-trips: 8 examples

Every row's content is a fixed function of its index ``i`` (ids, answers, options, categories), so tests can
state exact expectations; ``seed`` only changes the pixels of the small PNG images (real PNGs drawn with
PIL, 24x24). Formats are varied on purpose to cover every image encoding the adapters read: a Hugging Face
image struct ``{"bytes", "path"}`` (most), raw bytes (``mmstar``), paths relative to the file
(``visnumbench``, ``mathvision``, ``synthetic``), and the Vision-SR1 ``images`` list
(``layout="vision_sr1"``).

Row patterns (``L = "ABCDEFGHIJ"``):

=============== ==========================================================================================
mmvet           id ``v1_<i>``; answer ``"<i+2>"``, every odd row ``"red <OR> crimson"``; capability cycles
                ``rec``, ``ocr``, ``rec,ocr``, ``know,math``
mmmu            id ``validation_Art_Theory_<i+1>`` (even i) / ``validation_Math_<i+1>``; 4 options, answer
                ``L[i % 4]``; the last row (n >= 3) is open with answer ``"12"``; row 1 has an ``image_2``
realworldqa     no id column; even rows ``A./B./C.`` option lines, answer ``L[i % 3]``; odd rows answer
                ``"<i+2>"``
visnumbench     JSONL, ``image_path`` relative; options ``1..4``, answer ``L[i % 4]``
mathverse       id ``<i+1>``; even rows multi-choice with ``Choices:`` lines, answer ``L[i % 4]``; odd rows
                free-form, answer ``\\frac{1}{2}`` (i = 1) else ``"<i>"``; version cycles the 4 below
mathvision      JSONL, ``image`` relative; even rows 5 options, answer ``L[i % 5]``; odd rows answer ``"<3i>"``
hallusionbench  ``VD``/``illusion``, set ``i // 4``, figure ``(i // 2) % 2``, question ``i % 2``; gt ``"1"``
                when ``i % 3 == 0`` else ``"0"``; with n >= 4 the last row is a text-only ``VS`` question
mathvista       pid ``<i+1>``; even rows multi-choice, answer = text of choice ``i % 4``; odd rows free-form
                answer ``"<i>.5"``
mmstar          raw-bytes image; ``Options: A: …, B: …`` inline; answer ``L[i % 4]``
synthetic       :func:`visplay.world.corpus.make_corpus` with ``n`` images (3-4 questions each)
=============== ==========================================================================================
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from visplay.eval.adapters import ADAPTERS, VISION_SR1_FILE_NAMES
from visplay.world.corpus import make_corpus

L = "ABCDEFGHIJ"
MATHVERSE_VERSIONS = ("Text Dominant", "Text Lite", "Vision Intensive", "Vision Only")
MMVET_CAPABILITIES = ("rec", "ocr", "rec,ocr", "know,math")
FIXTURE_SIZE = 24
"""Side of the fixture PNGs in pixels."""

Png = Callable[[int], bytes]
"""Row index → the PNG bytes of that row's image."""


def fixture_png(name: str, seed: int, i: int) -> bytes:
    """A small real PNG: a seeded background with a seeded rectangle (same arguments → same bytes)."""
    rng = random.Random(f"{name}|{seed}|{i}")
    colour = tuple(rng.randrange(256) for _ in range(3))
    image = Image.new("RGB", (FIXTURE_SIZE, FIXTURE_SIZE), colour)
    x, y = rng.randrange(FIXTURE_SIZE - 8), rng.randrange(FIXTURE_SIZE - 8)
    ImageDraw.Draw(image).rectangle(
        [x, y, x + 7, y + 7], fill=(255 - colour[0], 255 - colour[1], 255 - colour[2])
    )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _struct(data: bytes, path: str) -> dict[str, Any]:
    """A Hugging Face image struct."""
    return {"bytes": data, "path": path}


def _write_parquet(rows: list[dict[str, Any]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def _write_jsonl(rows: list[dict[str, Any]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _mmvet(n: int, png: Png, out: Path) -> Path:
    rows = [
        {
            "question_id": f"v1_{i}",
            "image": _struct(png(i), f"v1_{i}.png"),
            "question": f"What is shown in panel {i}?",
            "answer": "red <OR> crimson" if i % 2 else str(i + 2),
            "image_source": "fixture",
            "capability": MMVET_CAPABILITIES[i % 4],
        }
        for i in range(n)
    ]
    return _write_parquet(rows, out / "mmvet.parquet")


def _mmmu(n: int, png: Png, out: Path) -> Path:
    rows = []
    for i in range(n):
        is_open = n >= 3 and i == n - 1
        rows.append(
            {
                "id": f"validation_{'Art_Theory' if i % 2 == 0 else 'Math'}_{i + 1}",
                "question": f"<image 1> Which colour fills figure {i}?",
                "options": "[]" if is_open else str(["red", "green", "blue", "yellow"]),
                "explanation": "",
                "image_1": _struct(png(i), f"{i}_1.png"),
                "image_2": _struct(png(100 + i), f"{i}_2.png") if i == 1 else None,
                "img_type": "['Diagrams']",
                "answer": "12" if is_open else L[i % 4],
                "topic_difficulty": "Easy",
                "question_type": "open" if is_open else "multiple-choice",
                "subfield": "Art History" if i % 2 == 0 else "Calculus",
            }
        )
    return _write_parquet(rows, out / "mmmu.parquet")


def _realworldqa(n: int, png: Png, out: Path) -> Path:
    rows = []
    for i in range(n):
        if i % 2 == 0:
            question = (
                f"Which way does arrow {i} point?\nA. left\nB. right\nC. up\n"
                "Please answer directly with only the letter of the correct option and nothing else."
            )
            answer = L[i % 3]
        else:
            question = (
                "How many cars are in the picture? Please answer directly with a single word or number."
            )
            answer = str(i + 2)
        rows.append({"image": _struct(png(i), f"{i}.png"), "question": question, "answer": answer})
    return _write_parquet(rows, out / "realworldqa.parquet")


def _visnumbench(n: int, png: Png, out: Path) -> Path:
    rows = []
    for i in range(n):
        rel = f"images/vis_{i}.png"
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(png(i))
        rows.append(
            {
                "id": i,
                "question": f"How many dots are in region {i}?",
                "option": ["1", "2", "3", "4"],
                "answer": L[i % 4],
                "image_path": rel,
                "attribute": ("Angle", "Length", "Scale", "Quantity")[i % 4],
            }
        )
    return _write_jsonl(rows, out / "visnumbench.jsonl")


def _mathverse(n: int, png: Png, out: Path) -> Path:
    rows = []
    for i in range(n):
        version = MATHVERSE_VERSIONS[i % 4]
        multi = i % 2 == 0
        if multi:
            question = f"As shown in the figure, find angle {i}.\nChoices:\nA:30°\nB:45°\nC:60°\nD:90°"
        else:
            question = f"Find the length of side {i}."
        rows.append(
            {
                "sample_index": str(i + 1),
                "problem_index": str(i // 2 + 1),
                "problem_version": version,
                "question": "" if version == "Vision Only" else question,
                "image": _struct(png(i), f"{i}.png"),
                "answer": L[i % 4] if multi else ("\\frac{1}{2}" if i == 1 else str(i)),
                "question_type": "multi-choice" if multi else "free-form",
                "metadata": {"split": "testmini", "source": "fixture"},
                "query_wo": question,
                "query_cot": question,
                "question_for_eval": question,
            }
        )
    return _write_parquet(rows, out / "mathverse.parquet")


def _mathvision(n: int, png: Png, out: Path) -> Path:
    rows = []
    for i in range(n):
        rel = f"images/{i + 1}.png"
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(png(i))
        multi = i % 2 == 0
        rows.append(
            {
                "id": str(i + 1),
                "question": f"<image1>\nWhat is the area of shape {i}?",
                "options": ["2", "4", "6", "8", "10"] if multi else [],
                "image": rel,
                "answer": L[i % 5] if multi else str(3 * i),
                "solution": None,
                "level": i % 5 + 1,
                "subject": ("metric geometry - angle", "arithmetic")[i % 2],
            }
        )
    return _write_jsonl(rows, out / "mathvision.jsonl")


def _hallusionbench(n: int, png: Png, out: Path) -> Path:
    rows = []
    for i in range(n):
        text_only = n >= 4 and i == n - 1
        rows.append(
            {
                "category": "VS" if text_only else "VD",
                "subcategory": "chart" if text_only else "illusion",
                "visual_input": "0" if text_only else "1",
                "set_id": str(i // 4),
                "figure_id": "0" if text_only else str((i // 2) % 2),
                "sample_note": "fixture",
                "question_id": str(i % 2),
                "question": f"Is the upper line in figure {i} longer than the lower one?",
                "gt_answer_details": "fixture",
                "gt_answer": "1" if i % 3 == 0 else "0",
                "filename": None if text_only else f"./VD/illusion/{i // 4}_{(i // 2) % 2}.png",
                "image": None if text_only else _struct(png(i), f"{i}.png"),
            }
        )
    return _write_parquet(rows, out / "hallusionbench.parquet")


def _mathvista(n: int, png: Png, out: Path) -> Path:
    rows = []
    for i in range(n):
        multi = i % 2 == 0
        choices = ["3", "5", "7", "9"] if multi else None
        question = f"What is the value of x in figure {i}?"
        query = f"Hint: Please answer the question.\nQuestion: {question}"
        if choices:
            query += "\nChoices:\n" + "\n".join(f"({L[k]}) {c}" for k, c in enumerate(choices))
        rows.append(
            {
                "pid": str(i + 1),
                "question": question,
                "image": f"images/{i + 1}.jpg",
                "decoded_image": _struct(png(i), f"images/{i + 1}.jpg"),
                "choices": choices,
                "unit": None,
                "precision": None if multi else 1.0,
                "answer": choices[i % 4] if choices else f"{i}.5",
                "question_type": "multi_choice" if multi else "free_form",
                "answer_type": "text" if multi else "float",
                "metadata": {"category": ("math-targeted-vqa", "general-vqa")[i % 2], "split": "testmini"},
                "query": query,
            }
        )
    return _write_parquet(rows, out / "mathvista.parquet")


def _mmstar(n: int, png: Png, out: Path) -> Path:
    rows = [
        {
            "index": i,
            "question": f"What colour is shape {i}?\nOptions: A: red, B: green, C: blue, D: yellow",
            "image": png(i),
            "answer": L[i % 4],
            "category": ("coarse perception", "math")[i % 2],
            "l2_category": ("image scene and topic", "numeric commonsense and calculation")[i % 2],
            "meta_info": {"source": "fixture", "split": "val", "image_path": f"{i}.png"},
        }
        for i in range(n)
    ]
    return _write_parquet(rows, out / "mmstar.parquet")


def _vision_sr1(name: str, n: int, png: Png, out: Path) -> Path:
    """A mixed ``MLLM_test``-style file: ``n`` rows of ``name`` with 2 rows of another set in between."""
    rows = []
    for i in range(n):
        if i == 1:  # rows of another benchmark, which the adapter must skip
            rows += [
                {"images": [_struct(png(900 + k), "o.png")], "problem": "<image>Count.", "answer": "3",
                 "problem_id": f"other-{k}", "file_name": "clevr_count_70k"}
                for k in range(2)
            ]  # fmt: skip
        if name == "mmvet":
            problem, answer = f"<image>Describe panel {i}.", "a red square"
        elif name == "hallusionbench":
            problem, answer = f"<image>Is line {i} longer?", ("yes", "no")[i % 2]
        elif i % 2 == 0:
            problem, answer = f"<image>Which shape is {i}?\nA. circle\nB. square\nC. star", L[i % 3]
        else:
            problem, answer = f"<image>What is the ratio in figure {i}?", "\\frac{1}{2}"
        rows.append(
            {
                "images": [_struct(png(i), f"{i}.png")],
                "problem": problem,
                "answer": answer,
                "problem_id": f"p{i}",
                "file_name": VISION_SR1_FILE_NAMES[name][0],
            }
        )
    return _write_parquet(rows, out / f"{name}_vision_sr1.parquet")


_WRITERS = {
    "mmvet": _mmvet,
    "mmmu": _mmmu,
    "realworldqa": _realworldqa,
    "visnumbench": _visnumbench,
    "mathverse": _mathverse,
    "mathvision": _mathvision,
    "hallusionbench": _hallusionbench,
    "mathvista": _mathvista,
    "mmstar": _mmstar,
}


def write_fixture(name: str, out_dir: str | Path, n: int = 4, seed: int = 0, layout: str = "native") -> Path:
    """Write an ``n``-row file of benchmark ``name`` (module docstring: its rows) and return its path.

    Args:
        name: a benchmark of :data:`visplay.eval.adapters.ADAPTERS`.
        out_dir: folder to write into (created); images referenced by path are written under it.
        n: rows (``synthetic``: images, each with 3-4 questions); >= 1.
        seed: changes only the image pixels.
        layout: ``"native"`` (the benchmark's own columns) or ``"vision_sr1"`` (``problem``/``answer``/
            ``images``/``problem_id``/``file_name``, with 2 rows of another benchmark mixed in; not for
            ``synthetic``).

    Returns:
        The file to pass to :func:`visplay.eval.adapters.load_benchmark` (``synthetic``: ground_truth.jsonl).
    """
    if name not in ADAPTERS:
        raise ValueError(f"unknown benchmark {name!r}; known benchmarks: {sorted(ADAPTERS)}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    def png(i: int) -> bytes:
        return fixture_png(name, seed, i)

    if layout == "vision_sr1":
        if name not in VISION_SR1_FILE_NAMES:
            raise ValueError(f"benchmark {name!r} has no Vision-SR1 layout")
        return _vision_sr1(name, n, png, out)
    if layout != "native":
        raise ValueError(f"layout must be 'native' or 'vision_sr1', got {layout!r}")
    if name == "synthetic":
        return make_corpus(out / "synthetic_corpus", n=n, seed=seed, split="eval").ground_truth
    return _WRITERS[name](n, png, out)
