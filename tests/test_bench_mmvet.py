"""MM-Vet: the official ``mm-vet.json`` (keyed ``v1_0`` …) with ``images/``, the lmms-lab parquet, the
Vision-SR1 export; rejects; the rule score for ``<AND>`` / ``<OR>`` / plain golds.

The official evaluator (yuweihao/MM-Vet ``mm-vet_evaluator.py``) is a GPT judge; its few-shot rows for the
gold ``-1 <AND> -5`` are the expected rule scores below (0.0, 0.5, 0.5, 0.5, 1.0).
"""

from __future__ import annotations

import pytest
from benchmark_files import image_struct, png, write_json, write_parquet, write_png

from visplay.eval.benchmarks import load_benchmark
from visplay.eval.benchmarks.mmvet import MMVet, marker_score
from visplay.eval.schema import EvalExample, Prediction
from visplay.eval.scoring import make_report, per_category, score_rows

BENCH = MMVet()


def _official(folder, missing_image: bool = True):
    """mm-vet/mm-vet.json + mm-vet/images/: four questions; v1_2's question is blank and v1_3's image is
    not in images/ (when ``missing_image``)."""
    data = {
        "v1_0": {"imagename": "v1_0.png", "question": "What is x in the equation?", "answer": "-1 <AND> -5",
                 "capability": ["ocr", "math"]},
        "v1_1": {"imagename": "v1_1.jpg", "question": "What colour is the car?", "answer": "red <OR> crimson",
                 "capability": ["rec"]},
        "v1_2": {"imagename": "v1_2.png", "question": "  ", "answer": "2", "capability": ["rec"]},
        "v1_3": {"imagename": "v1_3.png", "question": "How many apples?", "answer": "2",
                 "capability": ["rec", "know"]},
    }  # fmt: skip
    for key in ("v1_0", "v1_1", "v1_2") if missing_image else data:
        write_png(folder / "images" / data[key]["imagename"], key)
    return write_json(folder / "mm-vet.json", data)


def test_official_json_with_images_folder(tmp_path):
    json_path = _official(tmp_path / "mm-vet")
    for path in (json_path, tmp_path / "mm-vet"):  # the json, or the unzipped folder
        loaded = load_benchmark("mmvet", path)
        assert [(e.example_id, e.answer, e.answer_type, e.category) for e in loaded.examples] == [
            ("v1_0", "-1 <AND> -5", "open", "ocr,math"),  # capability list -> categories
            ("v1_1", "red <OR> crimson", "open", "rec"),
        ]
        assert loaded.examples[0].images == (png("v1_0"),)  # images/v1_0.png
        assert loaded.examples[0].categories == ("ocr", "math")
        assert [(r.example_id, r.file) for r in loaded.rejects] == [
            ("v1_2", str(json_path)),
            ("v1_3", str(json_path)),
        ]
        assert "row 2, column 'question' is empty" in loaded.rejects[0].reason
        assert "row 3, column 'imagename': image path 'v1_3.png' is not a file" in loaded.rejects[1].reason


def test_official_json_all_rows_load(tmp_path):
    loaded = load_benchmark("mmvet", _official(tmp_path, missing_image=False), limit=None)
    assert [e.example_id for e in loaded.examples] == ["v1_0", "v1_1", "v1_3"]  # v1_2: blank question
    assert loaded.examples[2].images == (png("v1_3"),) and loaded.examples[2].category == "rec,know"


def test_lmms_lab_parquet(tmp_path):
    rows = [
        {"question_id": "v1_0", "image": image_struct("p0"), "question": "What is x?", "answer": "-1<AND>-5",
         "image_source": "x", "capability": "ocr,math"},
        {"question_id": "v1_1", "image": image_struct("p1"), "question": "Colour?", "answer": "red",
         "image_source": "x", "capability": "rec, spat"},
        {"question_id": "v1_2", "image": None, "question": "Colour?", "answer": "red",
         "image_source": "x", "capability": "rec"},
    ]  # fmt: skip
    loaded = load_benchmark("mmvet", write_parquet(tmp_path / "data" / "test-00000-of-00001.parquet", rows))
    assert [(e.example_id, e.category, e.images) for e in loaded.examples] == [
        ("v1_0", "ocr,math", (png("p0"),)), ("v1_1", "rec,spat", (png("p1"),))  # "rec, spat": spaces dropped
    ]  # fmt: skip
    assert [r.example_id for r in loaded.rejects] == ["v1_2"]
    assert "column 'image' holds no image" in loaded.rejects[0].reason


def test_lmms_lab_parquet_with_capability_lists(tmp_path):
    rows = [{"question_id": "v1_5", "image": image_struct("p5"), "question": "Q?", "answer": "a",
             "image_source": "x", "capability": ["gen", "rec"]}]  # fmt: skip
    loaded = load_benchmark("mmvet", write_parquet(tmp_path / "mmvet.parquet", rows))
    assert loaded.examples[0].categories == ("gen", "rec")


@pytest.mark.parametrize(
    "answer, gold, score",
    [
        # the official few-shot rows for -1 <AND> -5: one part of two found -> 0.5, both -> 1.0
        ("x = 3", "-1 <AND> -5", 0.0),
        ("x = -1", "-1 <AND> -5", 0.5),
        ("x = -5", "-1 <AND> -5", 0.5),
        ("x = -5 or 5", "-1 <AND> -5", 0.5),
        ("x = -1 or x = -5", "-1 <AND> -5", 1.0),
        ("x = -15", "-1 <AND> -5", 0.0),  # "-1" glued to "5" is not the phrase "-1"; "-5" does not occur
        ("-1, -5", "-1<AND>-5", 1.0),  # markers without spaces, as some golds write them
        # <OR>: any alternative occurring as a phrase (containment, like <AND>)
        ("crimson", "red <OR> crimson", 1.0),
        ("The car is Crimson.", "red <OR> crimson", 1.0),
        ("blue", "red <OR> crimson", 0.0),
        ("reddish", "red <OR> crimson", 0.0),  # "red" glued to "dish"
        # plain gold: equal, or held as a phrase
        ("Red.", "red", 1.0),
        ("There are 2 apples.", "2", 1.0),
        ("12 apples", "2", 0.0),
        ("", "2", 0.0),
    ],
)
def test_marker_score(answer, gold, score):
    assert marker_score(answer, gold) == score


def _example(answer: str, example_id: str = "v1_0", category: str = "rec") -> EvalExample:
    return EvalExample(example_id, "mmvet", "Q?", (png(example_id),), answer, (), category, "open")


def test_score_reads_the_box_or_last_line():
    example = _example("red <OR> crimson")
    assert BENCH.score(example, "The car is painted.\n\\boxed{Crimson}") == 1.0
    assert BENCH.score(example, "It is red.\nActually it is blue.") == 0.0  # the last line decides
    assert BENCH.score(example, "Thinking \\boxed{crim") == 0.0  # an unclosed box is no answer


def test_report_per_capability_and_partial_credit():
    examples = [
        _example("-1 <AND> -5", "v1_0", "ocr,math"),
        _example("red <OR> crimson", "v1_1", "rec"),
        _example("2", "v1_2", "rec,ocr"),
    ]
    texts = ["\\boxed{x = -1}", "crimson", "There are 3."]
    rows = score_rows(
        BENCH, examples, [Prediction(e.example_id, t, "m0") for e, t in zip(examples, texts, strict=True)]
    )
    assert [r.score for r in rows] == [0.5, 1.0, 0.0]  # one of two <AND> parts; an <OR> alternative; wrong
    # ocr: (0.5 + 0.0) / 2 = 0.25; math: 0.5; rec: (1.0 + 0.0) / 2 = 0.5
    assert per_category(rows) == {"math": 0.5, "ocr": 0.25, "rec": 0.5}
    report = make_report(BENCH, rows)
    assert report.rule_score == 0.5 and report.notes == BENCH.notes and BENCH.judge_kind == "partial_credit"


def test_vision_sr1_export(tmp_path):
    rows = [
        {"problem": "<image>What is x?", "answer": "-1 <AND> -5", "images": [image_struct("e0")], "file_name": "mm-vet"},
        {"problem": "<image>Which one?", "answer": "B", "images": [image_struct("e1")], "file_name": "mm-vet"},
        {"problem": "<image>Other", "answer": "A", "images": [image_struct("e2")], "file_name": "mmstar"},
    ]  # fmt: skip
    loaded = load_benchmark("mmvet", write_parquet(tmp_path / "MLLM_test.parquet", rows))
    # every MM-Vet export row is open, a letter answer included; the mmstar row is not MM-Vet's
    assert [(e.example_id, e.answer, e.answer_type) for e in loaded.examples] == [
        ("0", "-1 <AND> -5", "open"), ("1", "B", "open")
    ]  # fmt: skip
    assert loaded.layout == "vision_sr1" and loaded.rejects == []
