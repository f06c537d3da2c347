"""MMMU: a subject parquet, a subject folder holding three splits, the repo root of subject folders;
every image of a multi-image question; rejects; scoring by the official rules.

The official evaluator is MMMU-Benchmark/MMMU ``mmmu/utils/eval_utils.py`` (``parse_multi_choice_response``,
``parse_open_response``, ``normalize_str``, ``extract_numbers``, ``eval_open``); every expected value below
is derived by hand from those functions in the comment next to it.
"""

from __future__ import annotations

import pytest
from benchmark_files import image_struct, png, write_parquet

from visplay.eval.benchmarks import load_benchmark
from visplay.eval.benchmarks.mmmu import (
    MMMU,
    gold_answers,
    normalize_value,
    open_correct,
    parse_multi_choice,
    parse_open,
    subject_of,
)
from visplay.eval.schema import Prediction
from visplay.eval.scoring import make_report, score_rows
from visplay.eval.tables import BenchmarkFormatError

BENCH = MMMU()


def _row(example_id: str, answer: str, options: str = "['red', 'green', 'blue', 'yellow']", **more) -> dict:
    """One MMMU row as the HF parquet stores it: options in string form, image structs, image_2..7 null."""
    row = {
        "id": example_id,
        "question": f"Which colour is shown in <image 1>? ({example_id})",
        "options": options,
        "explanation": "",
        **{f"image_{k}": None for k in range(1, 8)},
        "image_1": image_struct(f"{example_id}-1"),
        "img_type": "['Photographs']",
        "answer": answer,
        "topic_difficulty": "Easy",
        "question_type": "multiple-choice",
        "subfield": "Colour",
    }
    row.update(more)
    return row


def _subject(folder, subject: str, splits=("dev", "validation", "test")):
    """``<folder>/<subject>/<split>-00000-of-00001.parquet`` for each split, two rows each."""
    for split in splits:
        rows = [_row(f"{split}_{subject}_{i}", "B") for i in (1, 2)]
        write_parquet(folder / subject / f"{split}-00000-of-00001.parquet", rows)
    return folder / subject


# --------------------------------------------------------------------------------------------- layouts
def test_subject_file(tmp_path):
    rows = [
        _row("validation_Art_Theory_1", "B"),
        _row("validation_Art_Theory_2", "E"),  # 4 options: E is beyond them -> rejected
        _row("validation_Art_Theory_3", "3.31", options="[]", question_type="open"),
    ]
    path = write_parquet(tmp_path / "Art_Theory" / "validation-00000-of-00001.parquet", rows)
    loaded = load_benchmark("mmmu", path)
    assert [(e.example_id, e.answer, e.answer_type, e.category) for e in loaded.examples] == [
        ("validation_Art_Theory_1", "B", "choice", "Art_Theory"),  # subject: the id between first/last "_"
        ("validation_Art_Theory_3", "3.31", "math", "Art_Theory"),
    ]
    assert loaded.examples[0].options == ("red", "green", "blue", "yellow")  # from "['red', ...]"
    assert [(r.example_id, r.file) for r in loaded.rejects] == [("validation_Art_Theory_2", str(path))]
    assert "row 1: answer 'E' is not an option letter A-D (4 options)" in loaded.rejects[0].reason
    with pytest.raises(BenchmarkFormatError, match="split 'dev' asked for, but this is a 'validation' file"):
        load_benchmark("mmmu", path, split="dev")


def test_subject_folder_reads_one_split(tmp_path):
    folder = _subject(tmp_path, "Accounting")
    default = load_benchmark("mmmu", folder)  # split None -> "validation"
    assert [e.example_id for e in default.examples] == ["validation_Accounting_1", "validation_Accounting_2"]
    assert [p.name for p in BENCH.open(folder, None).files] == [
        "validation-00000-of-00001.parquet"
    ]  # not dev/test
    dev = load_benchmark("mmmu", folder, split="dev")
    assert [e.example_id for e in dev.examples] == ["dev_Accounting_1", "dev_Accounting_2"]


def test_repo_root_of_subject_folders(tmp_path):
    _subject(tmp_path / "MMMU", "Biology")
    _subject(tmp_path / "MMMU", "Art", splits=("dev", "validation"))
    (tmp_path / "MMMU" / "README.md").write_text("not a subject")
    loaded = load_benchmark("mmmu", tmp_path / "MMMU", split="validation")
    assert [e.example_id for e in loaded.examples] == [  # sorted by path: Art/ before Biology/
        "validation_Art_1",
        "validation_Art_2",
        "validation_Biology_1",
        "validation_Biology_2",
    ]
    test = load_benchmark("mmmu", tmp_path / "MMMU", split="test")  # Art has no test file
    assert [e.example_id for e in test.examples] == ["test_Biology_1", "test_Biology_2"]


def test_no_file_of_the_split_lists_what_was_found(tmp_path):
    _subject(tmp_path / "MMMU", "Math", splits=("dev",))
    with pytest.raises(BenchmarkFormatError) as err:
        load_benchmark("mmmu", tmp_path / "MMMU")
    assert "no parquet file of split 'validation'" in str(err.value)
    assert "found ['Math/dev-00000-of-00001.parquet']" in str(err.value)
    with pytest.raises(BenchmarkFormatError, match="not 'train'"):
        load_benchmark("mmmu", tmp_path / "MMMU", split="train")


def test_multi_image_question_gets_all_images_and_bad_image_rows_are_rejected(tmp_path):
    options = "['<image 2>', '<image 3>']"
    rows = [
        _row(
            "validation_Math_1", "B", options=options, image_2=image_struct("m2"), image_3=image_struct("m3")
        ),
        _row("validation_Math_2", "A", options=options, image_2=image_struct("x2")),  # no <image 3>
        _row("validation_Math_3", "A", options="['a', 'b']", image_3=image_struct("y3")),  # image_2 gap
    ]
    path = write_parquet(tmp_path / "validation-00000-of-00001.parquet", rows)
    loaded = load_benchmark("mmmu", path)
    (example,) = loaded.examples
    assert example.images == (png("validation_Math_1-1"), png("m2"), png("m3"))  # image_1, image_2, image_3
    assert example.extra["n_images"] == "3"
    assert example.options == ("<image 2>", "<image 3>")
    assert [r.example_id for r in loaded.rejects] == ["validation_Math_2", "validation_Math_3"]
    assert "refers to <image 3> but has 2 image(s)" in loaded.rejects[0].reason
    assert "column 'image_2' is empty but 'image_3' holds an image" in loaded.rejects[1].reason


# --------------------------------------------------------------------------------------------- scoring
def test_parse_multi_choice_official_rules():
    letters, index2ans = ["A", "B", "C", "D"], {"A": "red", "B": "green", "C": "blue", "D": "yellow"}
    # "(B)" is in the padded response -> the only bracketed candidate.
    assert parse_multi_choice("(B)", letters, index2ans) == "B"
    # "C." -> strip "." -> " C " -> a lone letter.
    assert parse_multi_choice("C.", letters, index2ans) == "C"
    # two bracketed candidates (A) and (C): rfind positions 13 < 28 -> the later one, C.
    assert parse_multi_choice("Not exactly (A) but rather (C)", letters, index2ans) == "C"
    # no letter, 8 words (> 5) -> content: only "blue" occurs in the text -> C.
    assert parse_multi_choice("I believe the sky here is clearly blue", letters, index2ans) == "C"
    # no letter and only 3 words: the official picks a random letter; we return None (scored 0).
    assert parse_multi_choice("sky is blue", letters, index2ans) is None


def test_parse_open_and_eval_open_official_rules():
    # lower -> "the payback period is 3.31 years"; tail after "is " -> "3.31 years"; its number "3.31";
    # normalize_str: "3.31 years" stays text, "3.31" -> 3.31 (float). Gold "3.31" -> [3.31]: the float matches.
    candidates = parse_open("The payback period is 3.31 years.")
    assert sorted(map(str, candidates)) == ["3.31", "3.31 years"]
    assert open_correct(["3.31"], candidates)
    # Text gold by containment: tail after "is " -> "tampa, florida"; "tampa" (normalised gold) occurs in it.
    assert open_correct(["Tampa"], parse_open("The city is Tampa, Florida."))
    # Numbers round to 2 decimals: gold "1,000" -> 1000.0; "1000.004" -> round(., 2) = 1000.0 -> right.
    assert normalize_value("1,000") == [1000.0]
    assert open_correct(["1,000"], parse_open("The total is 1000.004"))
    # ... but 3.316 rounds to 3.32 != 3.31 -> wrong (its text "3.316" does not contain a text gold either).
    assert not open_correct(["3.31"], parse_open("The period is 3.316"))
    # A one-letter text gold is padded: [" a", "a "]; "banana" contains neither -> wrong.
    assert normalize_value("A") == [" a", "a "]
    assert not open_correct(["A"], parse_open("The fruit is banana"))


def test_list_gold_in_string_form():
    # The official answer_dict_val.json stores validation_Math_15's gold as the list ['24/7', '3.429'];
    # the parquet writes it as text. Each entry counts: "3.429" -> round 3.43; "so it is 3.429" -> tail
    # after "is " -> "3.429" -> 3.43 -> right.
    assert gold_answers("['24/7', '3.429']") == ["24/7", "3.429"]
    assert gold_answers("3.31") == ["3.31"]
    assert open_correct(gold_answers("['24/7', '3.429']"), parse_open("so it is 3.429"))


def test_score_and_report_end_to_end(tmp_path):
    rows = [
        _row("validation_Finance_1", "3.31", options="[]", question_type="open"),
        _row("validation_Finance_2", "B"),
        _row("validation_Biology_1", "C"),
        _row("validation_Biology_2", "A"),
    ]
    loaded = load_benchmark("mmmu", write_parquet(tmp_path / "validation-0.parquet", rows))
    texts = {
        "validation_Finance_1": "The payback period is 3.31 years.",  # official open match (above) -> 1
        "validation_Finance_2": "Thinking... so \\boxed{B}",  # box content "B" -> " B " -> B -> 1
        "validation_Biology_1": "Hmm.",  # "Hmm" has no letter, 1 word -> official: random; ours: 0
        "validation_Biology_2": "Final: \\boxed{12",  # a box that never closes: no answer -> 0
    }
    predictions = [Prediction(i, t, "m") for i, t in texts.items()]
    scored = score_rows(BENCH, loaded.examples, predictions)
    assert [r.score for r in scored] == [1.0, 1.0, 0.0, 0.0]
    report = make_report(BENCH, scored)
    assert report.rule_score == 0.5
    assert report.per_category == {"Biology": 0.0, "Finance": 1.0}
    assert report.extra == {
        "domain/Business": 1.0,
        "domain/Science": 0.0,
    }  # Finance: Business, Biology: Science
    assert any("random" in note for note in report.notes)


def test_subject_of():
    assert subject_of("validation_Art_Theory_1") == "Art_Theory"
    assert subject_of("dev_Diagnostics_and_Laboratory_Medicine_3") == "Diagnostics_and_Laboratory_Medicine"
