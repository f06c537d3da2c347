"""MathVista: the HF testmini parquet (with the choices of pids 781, 168, 849 and 3 as the release has
them), the HF ``data/`` folder of two splits, the GitHub ``testmini.json`` keyed by pid with ``images/`` and
``query.json``; rejects; scoring by the official normalisation.

The official scorer is lupantech/MathVista ``evaluation/calculate_score.py`` (``normalize_extracted_answer``,
``get_most_similar``, ``safe_equal``); every expected score below is derived from it in the comment next to
it. Question texts are made up; choices and answers of the named pids are the release's.
"""

from __future__ import annotations

import json

import pytest
from benchmark_files import image_struct, png, write_json, write_parquet, write_png

from visplay.eval.benchmarks import load_benchmark
from visplay.eval.benchmarks.mathvista import (
    MathVista,
    answer_number,
    edit_distance,
    nearest_choice,
    normalize_answer,
)
from visplay.eval.schema import Prediction
from visplay.eval.scoring import make_report, score_rows
from visplay.eval.tables import BenchmarkFormatError

BENCH = MathVista()
DEGREES = ["135°", "140°", "145°", "150°"]


def _record(pid, answer, choices=None, answer_type="text", precision=None, task="geometry problem solving"):
    """One MathVista record without image and query (shared by the json and parquet layouts)."""
    return {
        "pid": pid,
        "question": f"Question {pid}?",
        "choices": choices,
        "unit": None,
        "precision": precision,
        "answer": answer,
        "question_type": "multi_choice" if choices is not None else "free_form",
        "answer_type": answer_type,
        "metadata": {"category": "math-targeted-vqa", "task": task, "skills": ["geometry reasoning"]},
    }


RECORDS = [
    _record("781", "18", ["9", "12", "18", "18"]),  # a choice text listed twice
    _record("168", "(b)", ["(c)", "(a)", "(e)", "(d)", "(b)"]),  # choice texts that look like letters
    _record("849", "(b)", ["(c)", "(d)", "(a)", "(b)", "(e)"]),
    _record("3", "145°", DEGREES),
    _record("1", "1.2", answer_type="float", precision=1.0, task="textbook question answering"),
    _record("50", "145", answer_type="integer"),
    _record("506", "[2014, 2016]", answer_type="list"),
    _record("900", "7", ["5", "6"]),  # the answer is none of the choices -> rejected
]


def _parquet(path, records=RECORDS):
    """The HF layout: ``decoded_image`` struct, ``image`` its path, ``query`` the prompt."""
    rows = [
        {
            **r,
            "image": f"images/{r['pid']}.jpg",
            "decoded_image": image_struct(r["pid"]),
            "query": f"Q{r['pid']}",
        }
        for r in records
    ]
    return write_parquet(path, rows)


def test_hf_parquet_loads_the_rows_that_broke_the_old_adapter(tmp_path):
    path = _parquet(tmp_path / "testmini-00000-of-00001.parquet")
    loaded = load_benchmark("mathvista", path)
    got = {e.example_id: e for e in loaded.examples}
    assert list(got) == ["781", "168", "849", "3", "1", "50", "506"]
    # 781: the first choice equal to "18" is the third -> C. 168: "(b)" is the fifth choice -> E (not B).
    # 849: "(b)" is the fourth choice -> D.
    assert [(got[p].answer, got[p].extra["choice_text"]) for p in ("781", "168", "849")] == [
        ("C", "18"),
        ("E", "(b)"),
        ("D", "(b)"),
    ]
    assert got["168"].options == ("(c)", "(a)", "(e)", "(d)", "(b)")
    assert got["781"].question == "Q781"  # the query column is the prompt
    assert got["781"].images == (png("781"),)  # decoded_image, not the image path
    assert got["781"].category == "math-targeted-vqa"
    assert got["1"].extra["precision"] == "1" and got["1"].extra["answer_type"] == "float"
    assert [(got[p].answer_type, got[p].answer) for p in ("1", "50", "506")] == [
        ("math", "1.2"),
        ("math", "145"),
        ("open", "[2014, 2016]"),
    ]
    assert [(r.example_id, r.file) for r in loaded.rejects] == [("900", str(path))]
    assert "row 7: answer '7' is none of the choices ['5', '6']" in loaded.rejects[0].reason


def test_github_json_keyed_by_pid_with_images_and_query_json(tmp_path):
    data = tmp_path / "data"
    records = {r["pid"]: {**r, "image": f"images/{r['pid']}.jpg"} for r in RECORDS[:5]}
    for pid in ("781", "168", "849", "1"):  # images/3.jpg is missing
        write_png(data / "images" / f"{pid}.jpg", pid)
    path = write_json(data / "testmini.json", records)
    write_json(data / "query.json", {pid: f"Official prompt {pid}" for pid in records})
    loaded = load_benchmark("mathvista", path)
    assert [e.example_id for e in loaded.examples] == ["781", "168", "849", "1"]
    assert loaded.examples[1].answer == "E" and loaded.examples[1].images == (png("168"),)
    assert loaded.examples[0].question == "Official prompt 781"  # query.json beside the json
    assert [r.example_id for r in loaded.rejects] == ["3"]
    assert "image path 'images/3.jpg' is not a file" in loaded.rejects[0].reason

    (data / "query.json").unlink()  # without query.json: question, choices, or a hint on the answer's form
    composed = {e.example_id: e.question for e in load_benchmark("mathvista", path).examples}
    assert composed["781"] == "Question 781?\nChoices:\n(A) 9\n(B) 12\n(C) 18\n(D) 18"
    assert (
        composed["1"] == "Question 1?\nGive the answer as a number with 1 digit(s) after the decimal point."
    )


def test_hf_data_folder_reads_one_split(tmp_path):
    folder = tmp_path / "data"
    records = [{**r, "metadata": json.dumps(r["metadata"])} for r in RECORDS[:2]]  # metadata as JSON text
    _parquet(folder / "testmini-00000-of-00001.parquet", records)
    _parquet(folder / "test-00000-of-00002.parquet", [{**RECORDS[4], "pid": "2001", "answer": ""}])
    loaded = load_benchmark("mathvista", folder)  # default split: testmini
    assert [e.example_id for e in loaded.examples] == ["781", "168"] and not loaded.rejects
    assert loaded.examples[0].category == "math-targeted-vqa"  # from the JSON text
    with pytest.raises(BenchmarkFormatError, match="no row of benchmark 'mathvista' can be evaluated"):
        load_benchmark("mathvista", folder, split="test")  # the test split has no answers
    with pytest.raises(BenchmarkFormatError, match="not 'dev'"):
        load_benchmark("mathvista", folder, split="dev")


def test_edit_distance_and_nearest_choice():
    assert edit_distance("kitten", "sitting") == 3  # k->s, e->i, +g
    assert edit_distance("145", "145°") == 1  # one insertion
    assert edit_distance("", "abc") == 3
    # "145" vs 135°: 4->3 and +° = 2; 140°: 5->0 and +° = 2; 145°: +° = 1; 150°: 4->5, 5->0, +° = 3.
    assert nearest_choice("145", DEGREES) == "145°"
    assert nearest_choice("x", ["ab", "cd"]) == "ab"  # equal distances (2): the first


def test_normalize_answer_official_rules():
    assert normalize_answer("C", DEGREES, "multi_choice", "text", "") == "145°"  # a letter names its choice
    assert normalize_answer("(C) 145°", DEGREES, "multi_choice", "text", "") == "145°"  # first "(x)" -> C
    assert normalize_answer("145", DEGREES, "multi_choice", "text", "") == "145°"  # nearest (above)
    # pid 168's choices: "(b)" has the letter b in parentheses -> B -> the second choice, "(a)".
    assert normalize_answer("(b)", ["(c)", "(a)", "(e)", "(d)", "(b)"], "multi_choice", "text", "") == "(a)"
    assert normalize_answer("3.7", [], "free_form", "integer", "") == "3"  # str(int(float("3.7")))
    assert normalize_answer("145°", [], "free_form", "integer", "") == "145"  # its last number
    assert normalize_answer("no idea", [], "free_form", "integer", "") is None  # no number: wrong
    assert normalize_answer("1.23", [], "free_form", "float", "1") == "1.2"  # str(round(1.23, 1))
    assert normalize_answer("\\frac{1}{4}", [], "free_form", "float", "2") == "0.25"
    assert normalize_answer("[2014, 2016]", [], "free_form", "list", "") == "[2014, 2016]"  # as it is
    assert answer_number("1,000 g") == 1000.0  # thousands comma dropped, then the last number


def test_scores_follow_the_official_comparison(tmp_path):
    loaded = load_benchmark("mathvista", _parquet(tmp_path / "testmini.parquet"))
    cases = [
        ("781", "\\boxed{D}", 1.0),  # D -> choices[3] = "18" == gold text "18" (the duplicate counts)
        ("781", "\\boxed{18}", 1.0),  # not a letter; distance 0 to "18" (index 2) -> "18"
        ("781", "\\boxed{B}", 0.0),  # B -> "12"
        ("168", "\\boxed{E}", 1.0),  # E -> "(b)" == gold
        ("168", "\\boxed{(b)}", 0.0),  # "(b)" -> letter B -> "(a)": wrong, as officially
        ("849", "Reasoning.\nThe answer is D.", 1.0),  # last line, lead-in removed -> D -> "(b)"
        ("3", "\\boxed{145}", 1.0),  # nearest choice "145°" (test_edit_distance_and_nearest_choice)
        ("1", "d is about 1.23 m, so \\boxed{1.23}", 1.0),  # round(1.23, 1) = 1.2 -> "1.2" == "1.2"
        ("1", "\\boxed{1.3}", 0.0),  # "1.3" != "1.2"
        ("50", "\\boxed{145^\\circ}", 1.0),  # not a number; its last number 145 -> "145"
        ("50", "\\boxed{145.9}", 1.0),  # int(145.9) = 145: the official truncates
        ("506", "\\boxed{[2014, 2016]}", 1.0),  # list: exact text
        ("506", "\\boxed{[2014,2016]}", 0.0),  # no space: a different string
        ("3", "\\boxed{C", 0.0),  # a box that never closes: empty extraction -> 0
    ]
    by_id = {e.example_id: e for e in loaded.examples}
    assert [(pid, BENCH.score(by_id[pid], text)) for pid, text, _ in cases] == [(p, s) for p, _, s in cases]


def test_report_figures(tmp_path):
    loaded = load_benchmark("mathvista", _parquet(tmp_path / "testmini.parquet"))
    texts = {"781": "\\boxed{C}", "168": "\\boxed{A}", "849": "\\boxed{D}", "3": "\\boxed{C}",
             "1": "\\boxed{1.2}", "50": "\\boxed{7}", "506": "\\boxed{[2014, 2016]}"}  # fmt: skip
    # right: 781 (C -> "18"), 849 (D -> "(b)"), 3, 1, 506; wrong: 168 (A -> "(c)"), 50 (7 != 145).
    rows = score_rows(BENCH, loaded.examples, [Prediction(p, t, "m") for p, t in texts.items()])
    report = make_report(BENCH, rows)
    assert report.rule_score == 5 / 7
    # task of pid 1 is textbook question answering, the other six geometry problem solving (4 right of 6).
    assert report.extra == {
        "skill/geometry reasoning": 5 / 7,
        "task/geometry problem solving": 4 / 6,
        "task/textbook question answering": 1.0,
    }
    assert report.per_category == {"math-targeted-vqa": 5 / 7}
    assert any("GPT-4" in note for note in report.notes)
