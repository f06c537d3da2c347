"""HallusionBench: the GitHub json in the README layout (current and first release), the json inside the
image root, the lmms-lab ``image`` / ``non_image`` parquet splits, the Vision-SR1 export; rejects; the
rule score; aAcc/fAcc/qAcc exact on hand-made sets with text-only questions.

Official rules: ``utils.py`` of tianyi-lab/HallusionBench (``get_eval_all``, ``get_eval_fig``,
``get_eval_pair_all``, ``assign_correctness``).
"""

from __future__ import annotations

import math

import pytest
from benchmark_files import image_struct, png, write_json, write_parquet, write_png

from visplay.eval.benchmarks import load_benchmark
from visplay.eval.benchmarks.hallusionbench import HALLUSION_KEYS, HallusionBench
from visplay.eval.schema import EvalExample, Prediction
from visplay.eval.scoring import ScoredRow, make_report, score_rows

BENCH = HallusionBench()


def _question(category, subcategory, set_id, figure_id, question_id, gt, visual_input, filename):
    """One entry of HallusionBench.json, with every field the release has."""
    return {
        "category": category,
        "subcategory": subcategory,
        "visual_input": visual_input,
        "set_id": set_id,
        "figure_id": figure_id,
        "sample_note": "note",
        "question_id": question_id,
        "question": f"Is statement {set_id}.{figure_id}.{question_id} of {subcategory} true?",
        "gt_answer_details": "details",
        "gt_answer": gt,
        "filename": filename,
    }


def _release(prefix: str) -> list[dict]:
    """Six questions: a VD set on two figures, a VS set asked without and with a figure, a gt "2", and a
    figure whose file is missing. ``prefix`` is "./" (current json) or "./hallusion_bench/" (first one)."""
    return [
        _question("VD", "illusion", "0", "0", "0", "1", "1", f"{prefix}VD/illusion/0_0.png"),
        _question("VD", "illusion", "0", "1", "0", "0", "2", f"{prefix}VD/illusion/0_1.png"),
        _question("VS", "chart", "0", "0", "0", "0", "0", None),  # text-only
        _question("VS", "chart", "0", "1", "0", "1", "1", f"{prefix}VS/chart/0_1.png"),
        _question("VS", "chart", "1", "1", "0", "2", "1", f"{prefix}VS/chart/1_1.png"),  # gt "2"
        _question("VD", "video", "0", "0", "0", "1", "1", f"{prefix}VD/video/0_0.png"),  # file missing
    ]


def _write_images(root):
    """The figures of :func:`_release` (not VD/video/0_0.png) under the image root ``root``."""
    for rel in ("VD/illusion/0_0.png", "VD/illusion/0_1.png", "VS/chart/0_1.png", "VS/chart/1_1.png"):
        write_png(root / rel, rel)


EXPECTED_IDS = ["VD_illusion_0_0_0", "VD_illusion_0_1_0", "VS_chart_0_0_0", "VS_chart_0_1_0"]


def _check_release(loaded, json_path):
    """The four usable questions load; the gt "2" row and the missing figure are rejects with id and
    reason."""
    assert [e.example_id for e in loaded.examples] == EXPECTED_IDS
    assert [e.answer for e in loaded.examples] == ["yes", "no", "no", "yes"]  # gt "1" -> yes, "0" -> no
    by_id = {e.example_id: e for e in loaded.examples}
    assert by_id["VD_illusion_0_0_0"].images == (png("VD/illusion/0_0.png"),)
    assert by_id["VS_chart_0_0_0"].images == ()  # visual_input "0": asked without an image
    assert by_id["VS_chart_0_1_0"].extra == {
        "category": "VS", "subcategory": "chart", "set_id": "0", "figure_id": "1", "question_id": "0",
        "visual_input": "1", "gt_answer_details": "details",
    }  # fmt: skip
    assert [(r.example_id, r.file) for r in loaded.rejects] == [
        ("VS_chart_1_1_0", str(json_path)),
        ("VD_video_0_0_0", str(json_path)),
    ]
    assert "row 4: gt_answer '2' is not '1' (yes) or '0' (no)" in loaded.rejects[0].reason
    assert (
        "row 5" in loaded.rejects[1].reason and "VD/video/0_0.png' is not a file" in loaded.rejects[1].reason
    )


def test_readme_layout_current_json_beside_the_image_folder(tmp_path):
    # README: HallusionBench.json in the repo root, hallusion_bench/ unzipped beside it; the current json's
    # filename "./VD/illusion/0_0.png" is relative to hallusion_bench/.
    json_path = write_json(tmp_path / "HallusionBench.json", _release("./"))
    _write_images(tmp_path / "hallusion_bench")
    _check_release(load_benchmark("hallusionbench", json_path), json_path)
    # the folder holding the json reads the same
    _check_release(load_benchmark("hallusionbench", tmp_path), json_path)


def test_readme_layout_first_release_json(tmp_path):
    # the first json wrote "./hallusion_bench/VD/illusion/0_0.png": relative to the json's folder
    json_path = write_json(tmp_path / "HallusionBench.json", _release("./hallusion_bench/"))
    _write_images(tmp_path / "hallusion_bench")
    _check_release(load_benchmark("hallusionbench", json_path), json_path)


def test_json_copied_inside_the_image_root(tmp_path):
    root = tmp_path / "hallusion_bench"
    _write_images(root)
    for prefix in ("./", "./hallusion_bench/"):  # both resolve: the root itself, and its parent
        json_path = write_json(root / "HallusionBench.json", _release(prefix))
        _check_release(load_benchmark("hallusionbench", json_path), json_path)


def test_image_folder_with_another_name_beside_the_json(tmp_path):
    json_path = write_json(tmp_path / "HallusionBench.json", _release("./"))
    _write_images(tmp_path / "images")  # holds VD/ and VS/: searched
    _check_release(load_benchmark("hallusionbench", json_path), json_path)


def _lmms_rows(text_only: bool) -> list[dict]:
    """lmms-lab rows: the json's fields plus an ``image`` struct (null in split non_image)."""
    rows = []
    for entry in _release("./")[:4]:
        if (entry["visual_input"] == "0") == text_only:
            image = None if text_only else image_struct(entry["filename"])
            rows.append({**entry, "image": image})
    return rows


def test_lmms_lab_image_and_non_image_splits(tmp_path):
    data = tmp_path / "data"
    image = write_parquet(data / "image-00000-of-00001.parquet", _lmms_rows(text_only=False))
    non_image = write_parquet(data / "non_image-00000-of-00001.parquet", _lmms_rows(text_only=True))
    loaded = load_benchmark("hallusionbench", image)
    assert [e.example_id for e in loaded.examples] == [
        "VD_illusion_0_0_0",
        "VD_illusion_0_1_0",
        "VS_chart_0_1_0",
    ]
    assert loaded.examples[0].images == (png("./VD/illusion/0_0.png"),)  # the struct's bytes
    loaded = load_benchmark("hallusionbench", non_image)
    assert [(e.example_id, e.images) for e in loaded.examples] == [("VS_chart_0_0_0", ())]
    # the data/ folder: both splits, files in name order (image-… before non_image-…)
    loaded = load_benchmark("hallusionbench", data)
    assert [e.example_id for e in loaded.examples] == [
        "VD_illusion_0_0_0", "VD_illusion_0_1_0", "VS_chart_0_1_0", "VS_chart_0_0_0"
    ]  # fmt: skip
    assert loaded.rejects == []


def test_a_figure_question_without_an_image_is_a_reject(tmp_path):
    rows = _lmms_rows(text_only=False)
    rows[1]["image"] = None  # VD figure 1 (visual_input "2") needs its image: filename is tried, not a file
    rows[2]["image"] = rows[2]["filename"] = None  # VS figure 1: neither
    loaded = load_benchmark("hallusionbench", write_parquet(tmp_path / "image.parquet", rows))
    assert [e.example_id for e in loaded.examples] == ["VD_illusion_0_0_0"]
    assert [r.example_id for r in loaded.rejects] == ["VD_illusion_0_1_0", "VS_chart_0_1_0"]
    assert (
        "row 1, column 'filename': image path './VD/illusion/0_1.png' is not a file"
        in loaded.rejects[0].reason
    )
    assert "row 2: no image in 'image' or 'filename'" in loaded.rejects[1].reason


def _example(category, subcategory, set_id, figure_id, question_id, gold="yes", visual_input=""):
    ids = (category, subcategory, set_id, figure_id, question_id)
    extra = {**dict(zip(HALLUSION_KEYS, ids, strict=True)), "visual_input": visual_input}
    images = () if visual_input == "0" else (png(ids),)
    return EvalExample("_".join(ids), "hallusionbench", "Is it?", images, gold, (), category, "yesno", extra)


@pytest.mark.parametrize(
    "text, gold, text_only, score",
    [
        ("Yes.", "yes", False, 1.0),
        ("Let me look.\n\\boxed{No}", "no", False, 1.0),
        ("No, it is not.", "yes", False, 0.0),
        ("I cannot tell from the figure.", "yes", False, 0.0),  # a figure question: unclear is wrong
        ("I cannot tell without the chart.", "no", True, 1.0),  # text-only: unclear counts as correct
        ("Yes.", "no", True, 0.0),  # text-only but a wrong yes/no
        ("", "no", True, 0.0),  # no answer at all
    ],
)
def test_score(text, gold, text_only, score):
    # assign_correctness: VS figure "0" (text-only) is correct when GPT says correct or unclear.
    example = _example("VS", "chart", "0", "0" if text_only else "1", "0", gold, "0" if text_only else "1")
    assert BENCH.score(example, text) == score


# (category, subcategory, set_id, figure_id, question_id, visual_input, correct): 9 hand-made questions.
HB_ROWS = [
    ("VD", "illusion", "0", "0", "0", "1", True),
    ("VD", "illusion", "0", "0", "1", "1", True),
    ("VD", "illusion", "0", "1", "0", "2", True),
    ("VD", "illusion", "0", "1", "1", "2", False),
    ("VD", "illusion", "1", "0", "0", "1", False),
    ("VD", "illusion", "1", "1", "0", "2", True),
    ("VS", "chart", "0", "0", "0", "0", True),  # text-only: no figure
    ("VS", "chart", "0", "1", "0", "1", True),
    ("VS", "chart", "1", "0", "0", "0", False),  # text-only, alone in its pair group
]


def _rows(spec) -> list[ScoredRow]:
    rows = []
    for *ids, visual_input, correct in spec:
        example = _example(*ids, visual_input=visual_input)
        rows.append(ScoredRow(example, Prediction(example.example_id, "…", "m0"), 1.0 if correct else 0.0))
    return rows


def test_metrics_exact_over_all_questions():
    # aAcc (get_eval_all): 6 of 9 questions correct -> 2/3.
    # fAcc (get_eval_fig, VS figure "0" left out): VD/illusion/0/0 {T,T} ok; VD/illusion/0/1 {T,F} no;
    #   VD/illusion/1/0 {F} no; VD/illusion/1/1 {T} ok; VS/chart/0/1 {T} ok -> 3/5 = 0.6.
    # qAcc (get_eval_pair_all, every question): VD/illusion/0/q0 {T,T} ok; VD/illusion/0/q1 {T,F} no;
    #   VD/illusion/1/q0 {F,T} no; VS/chart/0/q0 {T text-only, T} ok; VS/chart/1/q0 {F text-only} no
    #   -> 2/5 = 0.4. (Dropping the text-only questions, as the old evaluate() did, would give 2/4 = 0.5.)
    assert BENCH.metrics(_rows(HB_ROWS)) == {"aAcc": 6 / 9, "fAcc": 0.6, "qAcc": 0.4}


def test_a_wrong_text_only_answer_changes_qacc_not_facc():
    spec = [(*r[:6], False) if r[:4] == ("VS", "chart", "0", "0") else r for r in HB_ROWS]
    # aAcc 5/9; fAcc unchanged 3/5 (it is no figure); qAcc loses VS/chart/0/q0 -> 1/5.
    assert BENCH.metrics(_rows(spec)) == {"aAcc": 5 / 9, "fAcc": 0.6, "qAcc": 0.2}


def test_metrics_from_predictions_end_to_end():
    examples = [r.example for r in _rows(HB_ROWS)]
    correct = {r.example.example_id: r.score for r in _rows(HB_ROWS)}
    # right answers "Yes." / "\boxed{Yes}" (gold yes); wrong ones "No." (a text-only "No." is not unclear)
    predictions = [
        Prediction(
            e.example_id, ("\\boxed{Yes}" if i % 2 else "Yes.") if correct[e.example_id] else "No.", "m0"
        )
        for i, e in enumerate(examples)
    ]
    rows = score_rows(BENCH, examples, predictions)
    assert [r.score for r in rows] == [correct[e.example_id] for e in examples]
    report = make_report(BENCH, rows)
    assert report.extra == {"aAcc": 6 / 9, "fAcc": 0.6, "qAcc": 0.4}
    assert report.rule_score == 6 / 9 and report.notes == BENCH.notes


def test_metrics_errors_and_edge_cases():
    rows = _rows(HB_ROWS[:2])
    with pytest.raises(ValueError, match="needs 0/1 scores, got 0.5"):
        BENCH.metrics([rows[0], ScoredRow(rows[1].example, rows[1].prediction, 0.5)])
    export = EvalExample("7", "hallusionbench", "Is it?", (png(7),), "yes", (), "", "yesno", {})
    with pytest.raises(ValueError, match="lacks the HallusionBench ids"):
        BENCH.metrics([rows[0], ScoredRow(export, Prediction("7", "Yes", "m0"), 1.0)])
    assert BENCH.metrics([ScoredRow(export, Prediction("7", "Yes", "m0"), 1.0)]) == {}  # export: no ids
    only_text = BENCH.metrics(_rows([("VS", "chart", "0", "0", "0", "0", True)]))
    assert math.isnan(only_text["fAcc"]) and only_text["qAcc"] == 1.0  # no figure at all


def test_vision_sr1_export(tmp_path):
    rows = [
        {"problem": "<image>Is the left circle bigger?", "answer": answer, "images": [image_struct(i)],
         "file_name": "hallusionbench"}
        for i, answer in enumerate(["1", "0", "yes", "No", "maybe"])
    ]  # fmt: skip
    loaded = load_benchmark("hallusionbench", write_parquet(tmp_path / "test.parquet", rows))
    assert [(e.example_id, e.answer, e.answer_type) for e in loaded.examples] == [
        ("0", "yes", "yesno"), ("1", "no", "yesno"), ("2", "yes", "yesno"), ("3", "no", "yesno")
    ]  # fmt: skip
    assert loaded.layout == "vision_sr1" and loaded.examples[0].question == "Is the left circle bigger?"
    assert [r.example_id for r in loaded.rejects] == ["4"]
    assert "answer 'maybe' is not yes/no or 1/0" in loaded.rejects[0].reason
