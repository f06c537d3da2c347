"""The synthetic corpus: deterministic bytes, clean seed namespaces, ground truth that matches the pictures."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from PIL import Image

from visplay.world.corpus import (
    GROUND_TRUTH_FILENAME,
    KINDS,
    OBJECT_COLOURS,
    OBJECT_KINDS,
    OBJECT_SHAPES,
    OBJECT_SKILLS,
    PALETTE,
    QTYPES,
    SKILLS,
    check_world,
    image_seed,
    make_corpus,
    read_ground_truth,
)


def _files(root: Path) -> dict[str, bytes]:
    """Every file under root (relative posix path -> bytes)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _ids(root: Path) -> set[str]:
    return {r["image_id"] for r in read_ground_truth(root)}


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    make_corpus(tmp_path / "a", n=6, seed=3)
    make_corpus(tmp_path / "b", n=6, seed=3)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert len(a) == 7  # 6 images + ground truth
    assert a == b


def test_other_seed_or_split_gives_other_images(tmp_path: Path) -> None:
    make_corpus(tmp_path / "s3", n=6, seed=3)
    make_corpus(tmp_path / "s4", n=6, seed=4)
    make_corpus(tmp_path / "held", n=6, seed=3, split="heldout")
    assert _ids(tmp_path / "s3").isdisjoint(_ids(tmp_path / "s4"))
    assert _ids(tmp_path / "s3").isdisjoint(_ids(tmp_path / "held"))
    assert image_seed(3, "train", 0) != image_seed(3, "heldout", 0)


def test_larger_n_extends_smaller(tmp_path: Path) -> None:
    small = read_ground_truth(make_corpus(tmp_path / "small", n=3, seed=5).ground_truth)
    large = read_ground_truth(make_corpus(tmp_path / "large", n=6, seed=5).ground_truth)
    assert small == large[:3]


def test_ground_truth_lists_every_image_once_with_its_sha(tmp_path: Path) -> None:
    summary = make_corpus(tmp_path, n=12, seed=1)
    records = read_ground_truth(tmp_path)
    on_disk = {p.relative_to(tmp_path).as_posix() for p in summary.images_dir.rglob("*") if p.is_file()}
    assert sorted(r["file"] for r in records) == sorted(on_disk)
    assert len(records) == 12 == summary.n
    for record in records:
        assert record["image_id"] == hashlib.sha256((tmp_path / record["file"]).read_bytes()).hexdigest()
        assert (record["split"], record["seed"]) == ("train", 1)
        with Image.open(tmp_path / record["file"]) as image:
            assert image.format == "PNG" and image.size == (record["width"], record["height"])
    assert {r["kind"] for r in records} == set(KINDS)
    assert summary.by_kind == {kind: 4 for kind in KINDS}
    assert summary.n_questions == sum(len(r["qa"]) for r in records)


def test_ground_truth_is_outside_the_images_folder(tmp_path: Path) -> None:
    summary = make_corpus(tmp_path, n=4, seed=1)
    assert summary.ground_truth == tmp_path / GROUND_TRUTH_FILENAME
    assert summary.ground_truth.is_file()
    assert summary.images_dir not in summary.ground_truth.parents
    assert {p.suffix for p in summary.images_dir.rglob("*") if p.is_file()} == {".png"}
    # the layout is nested: images/<kind>/<split>-<index>.png
    assert {p.parent.name for p in summary.images_dir.rglob("*.png")} <= set(KINDS)


def test_qa_pairs_are_well_formed_and_agree_with_the_scene(tmp_path: Path) -> None:
    make_corpus(tmp_path, n=30, seed=2)
    seen_qtypes, seen_skills = set(), set()
    for record in read_ground_truth(tmp_path):
        assert record["qa"], record["file"]
        for qa in record["qa"]:
            assert qa["qtype"] in QTYPES and qa["skill"] in SKILLS
            seen_qtypes.add(qa["qtype"])
            seen_skills.add(qa["skill"])
            if qa["qtype"] == "multiple choice":
                letter = qa["answer"]
                assert len(qa["choices"]) >= 2 and len(set(qa["choices"])) == len(qa["choices"])
                assert f"{letter}. {qa['choices'][ord(letter) - ord('A')]}" in qa["question"]
            else:
                assert qa["choices"] == []
                float(qa["answer"])
        objects, bars = record["objects"], record["bars"]
        answers = {qa["question"]: qa["answer"] for qa in record["qa"]}
        if record["kind"] == "shapes":
            assert answers["How many shapes are in the image?"] == str(len(objects))
            assert len({o["position"] for o in objects}) == len(objects)  # one shape per slot
        if record["kind"] == "count":
            assert len({(o["shape"], o["colour"]) for o in objects}) == 1
            assert answers[f"How many {objects[0]['shape']}s are in the image?"] == str(len(objects))
        if record["kind"] == "chart":
            values = [b["value"] for b in bars]
            assert 3 <= len(bars) <= 5 and all(1 <= v <= 9 for v in values)
            assert values.count(max(values)) == 1
            mean = next(qa for qa in record["qa"] if qa["qtype"] == "regression")
            assert float(mean["answer"]) == pytest.approx(sum(values) / len(values), abs=0.005)
            for bar in bars:
                question = f"What is the value of bar {bar['label']}?"
                assert answers.get(question, str(bar["value"])) == str(bar["value"])
    assert seen_qtypes == set(QTYPES)
    assert seen_skills == set(SKILLS)


def test_object_colours_are_where_the_ground_truth_says(tmp_path: Path) -> None:
    make_corpus(tmp_path, n=9, seed=7)
    for record in read_ground_truth(tmp_path):
        with Image.open(tmp_path / record["file"]) as image:
            rgb = image.convert("RGB")
            for item in record["objects"] + record["bars"]:
                x0, y0, x1, y1 = item["bbox"]
                assert rgb.getpixel(((x0 + x1) // 2, (y0 + y1) // 2)) == PALETTE[item["colour"]], (
                    record["file"],
                    item,
                )


def test_refuses_to_mix_corpora_and_bad_arguments(tmp_path: Path) -> None:
    make_corpus(tmp_path, n=2, seed=1)
    with pytest.raises(FileExistsError):
        make_corpus(tmp_path, n=2, seed=1)
    with pytest.raises(ValueError):
        make_corpus(tmp_path / "x", n=-1, seed=1)
    with pytest.raises(ValueError):
        make_corpus(tmp_path / "x", n=1, seed=1, split="../escape")
    with pytest.raises(ValueError):
        make_corpus(tmp_path / "x", n=1, seed=1, size=1000)


def test_the_objects_world_asks_three_facts_with_fixed_options(tmp_path: Path) -> None:
    """``kinds=["objects"]``: 1-4 big copies of one shape in one colour; colour and shape options always in
    the same order (the letter names the fact), the count a number; the pixels agree with the answers."""
    make_corpus(tmp_path, n=40, seed=5, kinds=["objects"])
    counts = set()
    for record in read_ground_truth(tmp_path):
        assert record["kind"] == "objects" and record["file"].startswith("images/objects/")
        colour, shape = record["objects"][0]["colour"], record["objects"][0]["shape"]
        assert {(o["colour"], o["shape"]) for o in record["objects"]} == {(colour, shape)}
        by_skill = {qa["skill"]: qa for qa in record["qa"]}
        assert sorted(by_skill) == sorted(OBJECT_SKILLS)
        assert by_skill["colour"]["question"] == (
            "What colour are the shapes? Options: A. red, B. green, C. blue, D. yellow."
        )
        assert by_skill["colour"]["answer"] == "ABCD"[OBJECT_COLOURS.index(colour)]
        assert by_skill["shape"]["choices"] == list(OBJECT_SHAPES)
        assert by_skill["shape"]["answer"] == "ABCD"[OBJECT_SHAPES.index(shape)]
        assert by_skill["count"]["answer"] == str(len(record["objects"]))
        counts.add(len(record["objects"]))
        with Image.open(tmp_path / record["file"]) as image:
            for o in record["objects"]:
                x0, y0, x1, y1 = o["bbox"]
                assert x1 - x0 >= 0.27 * image.width  # big: more than a quarter of the side
                assert image.convert("RGB").getpixel(((x0 + x1) // 2, (y0 + y1) // 2)) == PALETTE[colour]
    assert counts == {1, 2, 3, 4}
    with pytest.raises(ValueError, match="kinds"):
        make_corpus(tmp_path / "x", n=1, seed=1, kinds=["nope"])


def test_a_split_of_another_world_is_refused(tmp_path: Path) -> None:
    make_corpus(tmp_path, n=3, seed=1)  # the default world
    check_world(tmp_path / GROUND_TRUTH_FILENAME, KINDS, "eval.synthetic_path")  # same world: no error
    with pytest.raises(ValueError, match=r"eval.synthetic_path: .* holds \['chart', 'count', 'shapes'\]"):
        check_world(tmp_path / GROUND_TRUTH_FILENAME, OBJECT_KINDS, "eval.synthetic_path")
