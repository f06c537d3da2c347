"""Synthetic image corpus with ground truth: simple scenes, counting scenes and small bar charts.

The embedded default needs images without any download. :func:`make_corpus` draws ``n`` small PNG
scenes from a seed and writes::

    out_dir/
      images/<kind>/<split>-<index>.png   the pictures: the ONLY thing the training path reads
      ground_truth.jsonl                  one JSON object per image: scene contents + labeled QA pairs

``ground_truth.jsonl`` sits next to ``images/``, never inside it, so pointing ``corpus.path`` at
``out_dir/images`` (as ``configs/tiny-cpu.yaml`` does) can never leak labels into training; only
held-out evaluation reads it (:func:`read_ground_truth`), joining on ``image_id`` (sha256 of the
PNG bytes, the same key as the ``images`` table of :mod:`visplay.data.schemas`). With the config::

    make_corpus(Path(cfg.corpus.path).parent, cfg.corpus.synthetic_n, cfg.corpus.synthetic_seed)

fills ``cfg.corpus.path`` when that path ends in ``images`` (as in the shipped configs).

Determinism: image ``index`` of ``split`` depends only on ``(seed, split, index)`` through
:func:`image_seed`, so the same arguments give byte-identical files (for one Pillow/zlib build), a
larger ``n`` extends a smaller one, and splits named differently (``bootstrap``, ``train``,
``heldout``) draw from disjoint generator streams even with the same ``seed``. Scene kinds cycle
with the index (``shapes``, ``count``, ``chart``), so every kind appears once ``n >= 3``.

Each QA pair is ``{"question", "answer", "qtype", "skill", "choices"}`` with ``qtype`` one of
``multiple choice`` (``answer`` is the option letter, ``choices`` the option texts in letter order,
and the question text lists them as ``A. red, B. blue, ...``), ``numerical`` (an integer answer) or
``regression`` (a decimal answer, to be graded with a tolerance); ``choices`` is empty unless
multiple choice. ``skill`` is one of ``colour``, ``count``, ``position``, ``chart`` (the default world)
or ``shape`` (the ``objects`` world).

Two worlds: the default ``KINDS`` (about ten question forms over four skills, small objects, options in
a random order) and the simple ``OBJECT_KINDS`` (three forms: the colour, the shape and the number of up
to four big copies of one shape, options always in the same order), which the tiny model learns to see in
a few thousand steps (docs/experiment/NOTES.md). ``kinds`` of :func:`make_corpus` picks one.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

KINDS = ("shapes", "count", "chart")
"""The default world's scene kinds, in the order they cycle through the index."""
OBJECT_KINDS = ("objects",)
"""The simple world: only ``objects`` scenes (big shapes, three skills; see :func:`_objects_scene`)."""
ALL_KINDS = (*KINDS, *OBJECT_KINDS)
"""Every scene kind :func:`make_corpus` can draw."""
SHAPES = ("circle", "square", "triangle", "diamond", "star")
"""Shapes a scene can contain."""
PALETTE = {
    "red": (220, 30, 30),
    "green": (30, 160, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 195, 20),
    "purple": (140, 50, 170),
    "orange": (245, 130, 20),
    "black": (20, 20, 20),
}
"""Colour names and their RGB fill; the background is white."""
SCENE_POSITIONS = {
    "center": (0.5, 0.5),
    "left": (0.2, 0.5),
    "right": (0.8, 0.5),
    "top": (0.5, 0.2),
    "bottom": (0.5, 0.8),
}
"""Named slots of a shapes scene (fractions of the image side); each slot holds at most one shape."""
GRID_POSITIONS = (
    "top-left", "top", "top-right",
    "left", "center", "right",
    "bottom-left", "bottom", "bottom-right",
)  # fmt: skip
"""The 3x3 grid cells of a counting scene, row by row."""
QTYPES = ("multiple choice", "numerical", "regression")
"""Question types of the labeled QA pairs."""
SKILLS = ("colour", "count", "position", "chart")
"""Skills the default world's labeled QA pairs probe."""
OBJECT_SKILLS = ("colour", "shape", "count")
"""Skills the ``objects`` world's labeled QA pairs probe."""
IMAGES_DIRNAME = "images"
"""Sub-folder of ``out_dir`` holding the PNGs (what ``corpus.path`` should point at)."""
GROUND_TRUTH_FILENAME = "ground_truth.jsonl"
"""Ground-truth file name, directly under ``out_dir`` (outside ``images/``)."""

_PHRASE = {
    "center": "in the center",
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
}
_LETTERS = "ABCDE"


@dataclass(frozen=True)
class CorpusSummary:
    """What :func:`make_corpus` wrote."""

    out_dir: Path
    images_dir: Path
    ground_truth: Path
    split: str
    seed: int
    n: int
    by_kind: dict[str, int]
    n_questions: int


def image_seed(seed: int, split: str, index: int) -> int:
    """The 64-bit generator seed of one image: sha256 of ``(seed, split, index)``, so splits never share streams."""
    digest = hashlib.sha256(f"visplay.corpus|{seed}|{split}|{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def make_corpus(
    out_dir: str | Path,
    n: int,
    seed: int,
    split: str = "train",
    size: int = 112,
    kinds: tuple[str, ...] | list[str] = KINDS,
) -> CorpusSummary:
    """Draw ``n`` scenes of ``split`` into ``out_dir/images/`` and write ``out_dir/ground_truth.jsonl``.

    ``size`` is the square image side in pixels (64..224); scene kinds cycle through ``kinds`` (a subset
    of :data:`ALL_KINDS`, in order) with the index. Raises FileExistsError when
    ``out_dir/images`` already holds files, so two corpora are never mixed; the ground-truth file is
    written last (atomically), so its presence means the corpus is complete.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not 64 <= size <= 224:
        raise ValueError(f"size must be within 64..224 pixels, got {size}")
    if not split or not split.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"split must be a non-empty name of letters, digits, '-' or '_', got {split!r}")
    kinds = tuple(kinds)
    if not kinds or any(k not in ALL_KINDS for k in kinds) or len(set(kinds)) < len(kinds):
        raise ValueError(f"kinds must be distinct scene kinds of {ALL_KINDS}, got {kinds}")
    out = Path(out_dir)
    images_dir = out / IMAGES_DIRNAME
    if images_dir.exists() and any(p.is_file() for p in images_dir.rglob("*")):
        raise FileExistsError(f"{images_dir} already holds files; pick an empty out_dir")
    by_kind = dict.fromkeys(kinds, 0)
    records = []
    for index in range(n):
        kind = kinds[index % len(kinds)]
        rng = np.random.default_rng(image_seed(seed, split, index))
        image, scene, qa = _DRAW[kind](rng, size)
        data = _png_bytes(image)
        rel = f"{IMAGES_DIRNAME}/{kind}/{split}-{index:05d}.png"
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
        records.append(
            {
                "image_id": hashlib.sha256(data).hexdigest(),
                "file": rel,
                "split": split,
                "seed": seed,
                "index": index,
                "image_seed": image_seed(seed, split, index),
                "kind": kind,
                "width": size,
                "height": size,
                **scene,
                "qa": qa,
            }
        )
        by_kind[kind] += 1
    out.mkdir(parents=True, exist_ok=True)
    ground_truth = out / GROUND_TRUTH_FILENAME
    tmp = ground_truth.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    os.replace(tmp, ground_truth)
    return CorpusSummary(
        out, images_dir, ground_truth, split, seed, n, by_kind, sum(len(r["qa"]) for r in records)
    )


def read_ground_truth(path: str | Path) -> list[dict[str, Any]]:
    """Load ``ground_truth.jsonl`` (a file, or the corpus ``out_dir`` holding it) as a list of records."""
    path = Path(path)
    if path.is_dir():
        path = path / GROUND_TRUTH_FILENAME
    with path.open() as handle:
        return [json.loads(line) for line in handle if line.strip()]


def check_world(ground_truth: str | Path, kinds: tuple[str, ...] | list[str], field: str) -> None:
    """Raise ValueError naming ``field`` when a split drawn earlier holds scene kinds outside ``kinds`` (a
    split of another world left at the configured path would be scored, or trained on, as this one)."""
    found = {record["kind"] for record in read_ground_truth(ground_truth)}
    if extra := found - set(kinds):
        raise ValueError(
            f"{field}: the split at {ground_truth} holds {sorted(extra)} scenes, not in corpus.synthetic_kinds "
            f"{list(kinds)}: point {field} at a new folder for this world (nothing was deleted)"
        )


def _png_bytes(image: Image.Image) -> bytes:
    """Encode as PNG with fixed settings (no metadata, so identical pixels give identical bytes)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def _pick(rng: np.random.Generator, options: tuple | list, k: int | None = None) -> Any:
    """One option (k None) or k distinct options, drawn with ``rng``."""
    if k is None:
        return options[int(rng.integers(len(options)))]
    return [options[i] for i in rng.choice(len(options), size=k, replace=False)]


def _draw_shape(
    draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, colour: str
) -> list[int]:
    """Fill one shape centred at (cx, cy) with half-size r; returns its bounding box [x0, y0, x1, y1]."""
    fill = PALETTE[colour]
    box = [round(cx - r), round(cy - r), round(cx + r), round(cy + r)]
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=fill)
    elif shape == "star":
        points = []
        for i in range(10):
            radius = r if i % 2 == 0 else 0.45 * r
            angle = -math.pi / 2 + i * math.pi / 5
            points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
        draw.polygon(points, fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return box


def _qa(
    question: str, answer: object, qtype: str, skill: str, choices: list[str] | None = None
) -> dict[str, Any]:
    """One labeled QA pair (all keys always present)."""
    return {
        "question": question,
        "answer": str(answer),
        "qtype": qtype,
        "skill": skill,
        "choices": choices or [],
    }


def _multiple_choice(
    rng: np.random.Generator, stem: str, truth: str, pool: list[str], skill: str
) -> dict[str, Any]:
    """A 4-option (or fewer, if the pool is small) multiple-choice QA: the truth plus distractors, shuffled."""
    distractors = [p for p in pool if p != truth]
    options = [truth, *_pick(rng, distractors, min(3, len(distractors)))]
    options = [options[i] for i in rng.permutation(len(options))]
    listed = ", ".join(f"{_LETTERS[i]}. {text}" for i, text in enumerate(options))
    return _qa(
        f"{stem} Options: {listed}.", _LETTERS[options.index(truth)], "multiple choice", skill, options
    )


def _shapes_scene(rng: np.random.Generator, size: int) -> tuple[Image.Image, dict, list[dict]]:
    """1-5 shapes with distinct colours, one per named slot (left/right/top/bottom/center)."""
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    count = int(rng.integers(1, 6))
    slots = _pick(rng, list(SCENE_POSITIONS), count)
    colours = _pick(rng, list(PALETTE), count)
    objects = []
    for slot, colour in zip(slots, colours, strict=True):
        shape = _pick(rng, SHAPES)
        fx, fy = SCENE_POSITIONS[slot]
        cx, cy = (fx + rng.uniform(-0.03, 0.03)) * size, (fy + rng.uniform(-0.03, 0.03)) * size
        box = _draw_shape(draw, shape, cx, cy, size * rng.uniform(0.08, 0.11), colour)
        objects.append({"shape": shape, "colour": colour, "position": slot, "bbox": box})
    target = _pick(rng, objects)
    same_shape = sum(o["shape"] == target["shape"] for o in objects)
    qa = [
        _multiple_choice(
            rng,
            f"What colour is the {target['shape']} {_PHRASE[target['position']]}?",
            target["colour"],
            list(PALETTE),
            "colour",
        ),
        _multiple_choice(
            rng,
            f"Where is the {target['colour']} {target['shape']}?",
            target["position"],
            list(SCENE_POSITIONS),
            "position",
        ),
        _qa("How many shapes are in the image?", count, "numerical", "count"),
        _qa(f"How many {target['shape']}s are in the image?", same_shape, "numerical", "count"),
    ]
    return image, {"objects": objects, "bars": []}, qa


def _count_scene(rng: np.random.Generator, size: int) -> tuple[Image.Image, dict, list[dict]]:
    """1-9 copies of one shape in one colour, each in its own cell of a 3x3 grid."""
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    count = int(rng.integers(1, 10))
    shape, colour = _pick(rng, SHAPES), _pick(rng, list(PALETTE))
    objects = []
    cells = sorted(int(c) for c in rng.choice(9, size=count, replace=False))
    for cell in cells:
        fx, fy = (cell % 3 * 2 + 1) / 6, (cell // 3 * 2 + 1) / 6
        cx, cy = (fx + rng.uniform(-0.02, 0.02)) * size, (fy + rng.uniform(-0.02, 0.02)) * size
        box = _draw_shape(draw, shape, cx, cy, size * rng.uniform(0.07, 0.1), colour)
        objects.append({"shape": shape, "colour": colour, "position": GRID_POSITIONS[cell], "bbox": box})
    row_index = int(rng.integers(3))
    row = ("top", "middle", "bottom")[row_index]
    in_row = sum(cell // 3 == row_index for cell in cells)
    noun = f"{shape}s" if count > 1 else shape
    verb = "are" if count > 1 else "is"
    qa = [
        _qa(f"How many {shape}s are in the image?", count, "numerical", "count"),
        _multiple_choice(rng, f"What colour {verb} the {noun}?", colour, list(PALETTE), "colour"),
        _multiple_choice(
            rng, f"How many {shape}s are in the {row} row?", str(in_row), ["0", "1", "2", "3"], "count"
        ),
    ]
    return image, {"objects": objects, "bars": []}, qa


def _chart_scene(rng: np.random.Generator, size: int) -> tuple[Image.Image, dict, list[dict]]:
    """A bar chart of 3-5 bars labelled A..E, distinct colours, values 1-9 with a unique maximum."""
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default_imagefont()  # bitmap font: no FreeType-version dependence in the bytes
    k = int(rng.integers(3, 6))
    while True:  # a unique tallest bar keeps "which is tallest" answerable
        values = [int(v) for v in rng.integers(1, 10, size=k)]
        if values.count(max(values)) == 1:
            break
    colours = _pick(rng, list(PALETTE), k)
    left, right, top, bottom = 14, size - 4, 6, size - 14
    unit = (bottom - top) / 9
    for v in range(10):  # light grid line per unit, labelled every 3
        y = round(bottom - v * unit)
        draw.line([(left, y), (right, y)], fill=(225, 225, 225))
        if v % 3 == 0:
            draw.text((2, y - 5), str(v), fill=(0, 0, 0), font=font)
    draw.line([(left, top), (left, bottom)], fill=(0, 0, 0))
    draw.line([(left, bottom), (right, bottom)], fill=(0, 0, 0))
    slot = (right - left) / k
    bars = []
    for i, (value, colour) in enumerate(zip(values, colours, strict=True)):
        x0, x1 = round(left + i * slot + slot * 0.2), round(left + (i + 1) * slot - slot * 0.2)
        box = [x0, round(bottom - value * unit), x1, bottom]
        draw.rectangle(box, fill=PALETTE[colour])
        draw.text(((x0 + x1) / 2 - 3, bottom + 2), _LETTERS[i], fill=(0, 0, 0), font=font)
        bars.append({"label": _LETTERS[i], "colour": colour, "value": value, "bbox": box})
    tallest = bars[values.index(max(values))]
    asked = _pick(rng, bars)
    big, small = sorted(_pick(rng, bars, 2), key=lambda b: -b["value"])
    mean = sum(values) / k
    qa = [
        _multiple_choice(rng, "What colour is the tallest bar?", tallest["colour"], list(PALETTE), "chart"),
        _qa(f"What is the value of bar {asked['label']}?", asked["value"], "numerical", "chart"),
        _qa(
            f"What is the difference between the values of bar {big['label']} and bar {small['label']}?",
            big["value"] - small["value"],
            "numerical",
            "chart",
        ),
        _qa(
            "What is the average value of the bars? Round to two decimals.",
            f"{round(mean, 2):g}",
            "regression",
            "chart",
        ),
    ]
    return image, {"objects": [], "bars": bars}, qa


OBJECT_COLOURS = ("red", "green", "blue", "yellow")
"""Colours of an ``objects`` scene, in their fixed option order (A-D)."""
OBJECT_SHAPES = ("circle", "square", "triangle", "star")
"""Shapes of an ``objects`` scene, in their fixed option order (A-D)."""
SUPERSAMPLE = 4
"""An ``objects`` scene is drawn this many times larger, then reduced (anti-aliased edges)."""
OBJECT_QUESTIONS = {
    "colour": "What colour are the shapes?",
    "shape": "What shape are they?",
    "count": "How many shapes are in the image?",
}
"""The three question stems of an ``objects`` scene, by skill."""


def _fixed_choice(stem: str, truth: str, options: tuple[str, ...], skill: str) -> dict[str, Any]:
    """A multiple-choice QA whose options are always ``options`` in that order (the letter names the fact)."""
    listed = ", ".join(f"{_LETTERS[i]}. {text}" for i, text in enumerate(options))
    return _qa(
        f"{stem} Options: {listed}.", _LETTERS[options.index(truth)], "multiple choice", skill, list(options)
    )


def _objects_scene(rng: np.random.Generator, size: int) -> tuple[Image.Image, dict, list[dict]]:
    """1-4 big copies of one shape in one colour, each in its own cell of a 2x2 grid.

    Drawn at :data:`SUPERSAMPLE` times the size and reduced with a box filter, so the continuous jitter of
    position and size shows in the edges and no two scenes repeat pixel for pixel (the splits stay
    disjoint). Three questions, one per skill: the colour and the shape (options in a fixed order, so the
    letter is a function of the fact, with no option text to bind) and the number of copies.
    """
    big = size * SUPERSAMPLE
    image = Image.new("RGB", (big, big), "white")
    draw = ImageDraw.Draw(image)
    count = int(rng.integers(1, 5))
    shape, colour = _pick(rng, OBJECT_SHAPES), _pick(rng, OBJECT_COLOURS)
    objects = []
    for cell in sorted(int(c) for c in rng.choice(4, size=count, replace=False)):
        fx, fy = (cell % 2 * 2 + 1) / 4, (cell // 2 * 2 + 1) / 4
        cx, cy = (fx + rng.uniform(-0.04, 0.04)) * big, (fy + rng.uniform(-0.04, 0.04)) * big
        box = _draw_shape(draw, shape, cx, cy, big * rng.uniform(0.14, 0.2), colour)  # stays in its cell
        box = [round(v / SUPERSAMPLE) for v in box]
        position = ("top-left", "top-right", "bottom-left", "bottom-right")[cell]
        objects.append({"shape": shape, "colour": colour, "position": position, "bbox": box})
    qa = [
        _fixed_choice(OBJECT_QUESTIONS["colour"], colour, OBJECT_COLOURS, "colour"),
        _fixed_choice(OBJECT_QUESTIONS["shape"], shape, OBJECT_SHAPES, "shape"),
        _qa(OBJECT_QUESTIONS["count"], count, "numerical", "count"),
    ]
    return image.resize((size, size), Image.Resampling.BOX), {"objects": objects, "bars": []}, qa


_DRAW = {
    "shapes": _shapes_scene,
    "count": _count_scene,
    "chart": _chart_scene,
    "objects": _objects_scene,
}
