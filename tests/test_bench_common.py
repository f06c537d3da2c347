"""Reading benchmark releases: the shared rules (rejects with ids and reasons, file-level errors, folders of
shards, JSON keyed by id, the Vision-SR1 exports) and the benchmarks without a module of tests of their own
(RealWorldQA, MMStar, MathVerse, MATH-Vision, the synthetic split).

Every test writes the release rows it needs (tests/benchmark_files.py) and states the expected values.
"""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from benchmark_files import image_struct, png, write_json, write_jsonl, write_parquet, write_png

from visplay.eval.benchmarks import BENCHMARKS, load_benchmark
from visplay.eval.cells import options_from_text
from visplay.eval.tables import BenchmarkFormatError
from visplay.world.corpus import make_corpus, read_ground_truth


def _mmstar_rows(n: int = 4) -> list[dict]:
    """MMStar's parquet rows: raw image bytes, options inline after "Options:", gold letter L[i % 4]."""
    return [
        {
            "index": i,
            "question": f"Which colour is square {i}?\nOptions: A: red, B: green, C: blue, D: yellow",
            "image": png(("mmstar", i)),
            "answer": "ABCD"[i % 4],
            "category": "coarse perception",
            "l2_category": "colour",
            "meta_info": "{}",
        }
        for i in range(n)
    ]


def test_every_benchmark_is_registered_under_its_name():
    assert sorted(BENCHMARKS) == sorted(
        ["hallusionbench", "mathverse", "mathvision", "mathvista", "mmmu", "mmstar", "mmvet",
         "realworldqa", "synthetic", "visnumbench"]
    )  # fmt: skip
    assert all(name == bench.name for name, bench in BENCHMARKS.items())


def test_mmstar_parquet(tmp_path):
    loaded = load_benchmark("mmstar", write_parquet(tmp_path / "mmstar.parquet", _mmstar_rows()))
    assert [(e.example_id, e.answer, e.answer_type) for e in loaded.examples] == [
        ("0", "A", "choice"), ("1", "B", "choice"), ("2", "C", "choice"), ("3", "D", "choice")
    ]  # fmt: skip
    assert loaded.examples[0].options == ("red", "green", "blue", "yellow")  # the inline "A: red, ..." list
    assert loaded.examples[2].images == (png(("mmstar", 2)),)
    assert loaded.rejects == [] and loaded.layout == "release"


def test_realworldqa_parquet_without_an_id_column(tmp_path):
    rows = [
        {"image": image_struct("rw0"), "question": "Which way?\nA. left\nB. right\nC. up", "answer": "C"},
        {"image": image_struct("rw1"), "question": "How many cars are there?", "answer": "3"},
    ]
    loaded = load_benchmark("realworldqa", write_parquet(tmp_path / "test-00000-of-00001.parquet", rows))
    # no id column: the row number is the id; "3" has digits -> math
    assert [(e.example_id, e.answer, e.answer_type, e.options) for e in loaded.examples] == [
        ("0", "C", "choice", ("left", "right", "up")), ("1", "3", "math", ())
    ]  # fmt: skip


def test_a_bad_row_is_a_reject_and_the_rest_of_the_file_is_read(tmp_path):
    rows = _mmstar_rows()
    rows[1]["question"] = "  "  # blank question
    rows[2]["image"] = None  # no image
    loaded = load_benchmark("mmstar", write_parquet(tmp_path / "mmstar.parquet", rows))
    assert [e.example_id for e in loaded.examples] == ["0", "3"]
    assert [(r.example_id, r.file) for r in loaded.rejects] == [
        ("1", str(tmp_path / "mmstar.parquet"))
    ] * 1 + [("2", str(tmp_path / "mmstar.parquet"))]
    assert "row 1, column 'question' is empty" in loaded.rejects[0].reason
    assert "row 2, column 'image' holds no image" in loaded.rejects[1].reason


def test_duplicate_ids_keep_the_first_and_reject_the_others(tmp_path):
    rows = _mmstar_rows()
    rows[2]["index"] = 0
    loaded = load_benchmark("mmstar", write_parquet(tmp_path / "mmstar.parquet", rows))
    assert [e.example_id for e in loaded.examples] == ["0", "1", "3"]
    assert [r.example_id for r in loaded.rejects] == ["0"]
    assert "row 2: duplicate id (first used by row 0)" in loaded.rejects[0].reason


def test_a_file_without_any_usable_row_is_an_error_giving_the_reasons(tmp_path):
    rows = _mmstar_rows(2)
    for row in rows:
        row["answer"] = " "
    path = write_parquet(tmp_path / "mmstar.parquet", rows)
    with pytest.raises(BenchmarkFormatError) as err:
        load_benchmark("mmstar", path)
    assert "no row of benchmark 'mmstar' can be evaluated (2 rejected)" in str(err.value)
    assert "row 0, column 'answer' is empty" in str(err.value)


def test_limit_and_folder_of_shards(tmp_path):
    rows = _mmstar_rows()
    shards = tmp_path / "data"
    write_parquet(shards / "val-00000-of-00002.parquet", rows[:2])
    write_parquet(shards / "val-00001-of-00002.parquet", rows[2:])
    (shards / "_SUCCESS").write_text("")  # names starting with _ or . are not data
    assert [e.example_id for e in load_benchmark("mmstar", shards).examples] == ["0", "1", "2", "3"]
    assert [e.example_id for e in load_benchmark("mmstar", shards, limit=3).examples] == ["0", "1", "2"]
    with pytest.raises(ValueError, match="limit must be >= 1"):
        load_benchmark("mmstar", shards, limit=0)


def test_file_level_errors_name_the_file_and_the_problem(tmp_path):
    with pytest.raises(ValueError, match=r"unknown benchmark 'mmvett'; known benchmarks: \['hallusionbench'"):
        load_benchmark("mmvett", tmp_path / "x.parquet")
    with pytest.raises(BenchmarkFormatError, match="no such file or folder"):
        load_benchmark("mmstar", tmp_path / "missing.parquet")
    path = write_parquet(tmp_path / "mmstar.parquet", _mmstar_rows())
    pq.write_table(pq.read_table(path).drop_columns(["answer"]), path)
    with pytest.raises(BenchmarkFormatError) as err:
        load_benchmark("mmstar", path)
    assert str(path) in str(err.value) and "needs column 'answer', which is missing" in str(err.value)
    assert "found ['index', 'question', 'image', 'category', 'l2_category', 'meta_info']" in str(err.value)
    misnamed = write_jsonl(tmp_path / "q.jsonl", [{"questions": "q", "answer": "A", "image": "x.png"}])
    with pytest.raises(BenchmarkFormatError, match=r"did you mean \['questions'\]\?"):
        load_benchmark("mmstar", misnamed)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(BenchmarkFormatError, match="the file is empty"):
        load_benchmark("mmstar", empty)
    (tmp_path / "bench.csv").write_text("question,answer\n")
    with pytest.raises(BenchmarkFormatError, match=r"unsupported file type '\.csv'"):
        load_benchmark("mmstar", tmp_path / "bench.csv")
    (tmp_path / "broken.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(BenchmarkFormatError, match="not a readable parquet file"):
        load_benchmark("mmstar", tmp_path / "broken.parquet")
    (tmp_path / "bad.jsonl").write_text('{"question": "q"}\n{"question": \n')
    with pytest.raises(BenchmarkFormatError, match="line 2 is not valid JSON"):
        load_benchmark("mmstar", tmp_path / "bad.jsonl")
    with pytest.raises(BenchmarkFormatError, match="has no splits to choose"):
        load_benchmark("mmstar", path, split="validation")


def test_mathverse_testmini_with_non_letter_multi_choice_answers(tmp_path):
    def row(i: int, question: str, answer: str, question_type: str, version: str = "Text Lite") -> dict:
        return {"sample_index": str(i + 1), "problem_index": str(i // 5 + 1), "problem_version": version,
                "question": question, "image": f"images_version_1-4/image_{i}.png", "answer": answer,
                "question_type": question_type, "query_wo": "", "query_cot": ""}  # fmt: skip

    for i in range(6):
        write_png(tmp_path / "images" / "images_version_1-4" / f"image_{i}.png", ("mv", i))
    choices = "Which angle?\nChoices:\nA:30°\nB:45°\nC:60°\nD:90°"
    rows = [
        row(0, choices, "B", "multi-choice"),
        row(1, "Find x.", "\\frac{1}{2}", "free-form"),
        row(2, "", "3", "free-form", "Vision Only"),  # the question is drawn in the image
        # real multi-choice golds that are not one letter (testmini rows 1,690 and later)
        row(3, "Is the statement true?\nChoices:\nA:True\nB:False", "False", "multi-choice"),
        row(4, "Which angle and side?", "090^\\circ T", "multi-choice"),
        row(5, "Which two?\nChoices:\nA:p\nB:q\nC:r\nD:s", "C\nD", "multi-choice"),
    ]
    loaded = load_benchmark("mathverse", write_json(tmp_path / "testmini.json", rows))
    assert loaded.rejects == []
    got = [(e.example_id, e.answer, e.answer_type) for e in loaded.examples]
    assert got == [
        ("1", "B", "choice"),
        ("2", "\\frac{1}{2}", "math"),
        ("3", "3", "math"),
        ("4", "B", "choice"),  # "False" is the text of option B
        ("5", "090^\\circ T", "math"),  # digits -> math
        ("6", "C\nD", "open"),  # two letters: scored as the text, no digits or LaTeX -> open
    ]
    assert loaded.examples[0].options == ("30°", "45°", "60°", "90°")
    assert loaded.examples[2].question == "" and loaded.examples[2].category == "Vision Only"
    # the images were found in images/ beside the json (the release's images.zip unpacked there)
    assert loaded.examples[4].images == (png(("mv", 4)),)


def test_mathvision_github_jsonl_with_images_in_the_repo_root_and_hf_parquet(tmp_path):
    rows = [
        {"id": "1", "question": "<image1> Which shape?", "options": ["A", "B", "C", "D", "E"], "image": "images/1.jpg",
         "answer": "C", "solution": None, "level": 2, "subject": "metric geometry - angle"},
        {"id": "2", "question": "<image1> How many?", "options": [], "image": "images/2.jpg", "answer": "12",
         "solution": None, "level": 1, "subject": "counting"},
        {"id": "3", "question": "<image1> Which?", "options": ["1", "2", "3", "4", "5"], "image": "images/3.jpg",
         "answer": "F", "solution": None, "level": 1, "subject": "counting"},
    ]  # fmt: skip
    for i in (1, 2):  # images/ is in the repo root, the jsonl in data/
        write_png(tmp_path / "images" / f"{i}.jpg", ("mathv", i))
    loaded = load_benchmark("mathvision", write_jsonl(tmp_path / "data" / "testmini.jsonl", rows))
    assert [(e.example_id, e.answer, e.answer_type) for e in loaded.examples] == [
        ("1", "C", "choice"), ("2", "12", "math")
    ]  # fmt: skip
    assert loaded.examples[0].images == (png(("mathv", 1)),) and loaded.examples[1].extra == {"level": "1"}
    # row 3: the gold F is beyond its 5 options (and its image is missing: the first problem is reported)
    assert [r.example_id for r in loaded.rejects] == ["3"]
    parquet_rows = [{**r, "decoded_image": image_struct(("mathv", r["id"]))} for r in rows[:2]]
    from_hf = load_benchmark("mathvision", write_parquet(tmp_path / "hf" / "testmini.parquet", parquet_rows))
    assert [e.images for e in from_hf.examples] == [(png(("mathv", "1")),), (png(("mathv", "2")),)]


def test_synthetic_split(tmp_path):
    make_corpus(tmp_path / "heldout", 2, 5, split="eval")
    truth = tmp_path / "heldout" / "ground_truth.jsonl"
    records = read_ground_truth(truth)
    loaded = load_benchmark("synthetic", tmp_path / "heldout")  # the folder or the file
    qa = [q for record in records for q in record["qa"]]
    assert [e.example_id for e in loaded.examples] == [
        f"eval-{i:05d}-q{j}" for i, record in enumerate(records) for j in range(len(record["qa"]))
    ]
    assert [e.answer for e in loaded.examples] == [q["answer"] for q in qa]
    assert [e.category for e in loaded.examples] == [q["skill"] for q in qa]
    assert len(load_benchmark("synthetic", truth, limit=3).examples) == 3


EXPORT_FILE_NAMES = {name: bench.export_names for name, bench in BENCHMARKS.items() if bench.export_names}


def _export_rows(file_name: str) -> list[dict]:
    """A mixed Vision-SR1 export: 4 rows of ``file_name`` with two rows of another dataset after the first.

    Row answers: even rows the letter of "A. circle / B. square / C. star" (A, C), odd rows \\frac{1}{2};
    MM-Vet rows answer "a red square", HallusionBench rows 1/0.
    """

    def answer(i: int) -> str:
        if file_name == "mm-vet":
            return "a red square"
        if file_name == "hallusionbench":
            return "1" if i % 2 == 0 else "0"
        return "ABC"[i % 3] if i % 2 == 0 else "\\frac{1}{2}"

    rows = []
    for i in range(4):
        question = "<image>Which shape?\nA. circle\nB. square\nC. star" if i % 2 == 0 else "<image>Solve."
        rows.append({"problem": question, "answer": answer(i), "images": [image_struct(("sr1", i))],
                     "problem_id": f"p{i}", "file_name": file_name})  # fmt: skip
        if i == 0:
            rows += [{"problem": "<image>Count.", "answer": "2", "images": [image_struct("other")],
                      "problem_id": "x", "file_name": "clevr_count_70k"}] * 2  # fmt: skip
    return rows


@pytest.mark.parametrize("name", sorted(EXPORT_FILE_NAMES))
def test_vision_sr1_exports(name, tmp_path):
    path = write_parquet(tmp_path / "test.parquet", _export_rows(EXPORT_FILE_NAMES[name][0]))
    loaded = load_benchmark(name, path)
    assert loaded.layout == "vision_sr1"
    # rows 1 and 2 of the file are another dataset's and are skipped; the id is the file row number
    assert [e.example_id for e in loaded.examples] == ["0", "3", "4", "5"]
    assert [e.extra["problem_id"] for e in loaded.examples] == ["p0", "p1", "p2", "p3"]
    assert all("<image>" not in e.question for e in loaded.examples)
    got = [(e.answer, e.answer_type) for e in loaded.examples]
    if name == "mmvet":
        assert got == [("a red square", "open")] * 4
    elif name == "hallusionbench":
        assert got == [("yes", "yesno"), ("no", "yesno")] * 2
    else:
        assert got == [("A", "choice"), ("\\frac{1}{2}", "math"), ("C", "choice"), ("\\frac{1}{2}", "math")]


def test_vision_sr1_export_without_the_benchmark_lists_its_file_names(tmp_path):
    path = write_parquet(tmp_path / "test.parquet", _export_rows("mathverse"))
    with pytest.raises(BenchmarkFormatError) as err:
        load_benchmark("mmvet", path)
    assert str(path) in str(err.value) and "['mm-vet']" in str(err.value)
    assert "{'clevr_count_70k': 2, 'mathverse': 4}" in str(err.value)


def test_json_object_keyed_by_id_reads_the_key_as_a_column(tmp_path):
    write_png(tmp_path / "a.png", "a")
    data = {"7": {"index": 7, "question": "Q?\nA. x\nB. y", "image": "a.png", "answer": "B"}}
    loaded = load_benchmark("mmstar", write_json(tmp_path / "bench.json", data))
    assert [(e.example_id, e.answer) for e in loaded.examples] == [("7", "B")]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"a": 1}))
    with pytest.raises(BenchmarkFormatError, match="a list of objects or an object of objects keyed by id"):
        load_benchmark("mmstar", bad)


@pytest.mark.parametrize(
    "question, options",
    [
        ("Which?\nA. left\nB. right\nC. up\nAnswer with the letter.", ("left", "right", "up")),
        ("Which?\n(A) 3\n(B) 5", ("3", "5")),
        ("What colour?\nOptions: A: red, B: green, C: blue", ("red", "green", "blue")),
        ("Pick one. Choices: (A) 1.5 (B) 2.5", ("1.5", "2.5")),
        ("A. only one option", ()),  # fewer than two options
        ("Which?\nA. left\nC. up", ()),  # letters must run A, B, ... without gaps
        ("How many cars are there?", ()),
    ],
)
def test_options_from_text(question, options):
    assert options_from_text(question) == options


def test_the_config_names_every_benchmark_and_takes_its_split():
    from visplay.config import BENCHMARK_NAMES, load_config

    # every benchmark but the synthetic split (generated, not configured) and MMMU (its own config class)
    assert sorted([*BENCHMARK_NAMES, "mmmu", "synthetic"]) == sorted(BENCHMARKS)
    cfg = load_config(
        None, ["eval.benchmarks=[{name: mmmu, path: MMMU}, {name: mathvista, path: d, split: test}]"]
    )
    assert [(b.name, b.split) for b in cfg.eval.benchmarks] == [("mmmu", "validation"), ("mathvista", "test")]
    with pytest.raises(ValueError, match="split"):
        load_config(None, ["eval.benchmarks=[{name: mmmu, path: MMMU, split: train}]"])


def test_undecodable_images_and_unforeseen_cell_errors_are_rejects(tmp_path):
    rows = _mmstar_rows(3)
    rows[1]["image"] = b"not an image at all"
    loaded = load_benchmark("mmstar", write_parquet(tmp_path / "mmstar.parquet", rows))
    assert [e.example_id for e in loaded.examples] == ["0", "2"]
    assert "row 1, column 'image': image bytes is not a decodable image" in loaded.rejects[0].reason
    # a synthetic record whose choices are a number: no check foresaw it, the row is still only a reject
    make_corpus(tmp_path / "heldout", 2, 5, split="eval")
    truth = tmp_path / "heldout" / "ground_truth.jsonl"
    records = read_ground_truth(truth)
    records[0]["qa"][0] |= {"qtype": "multiple choice", "choices": 7}
    truth.write_text("".join(json.dumps(r) + "\n" for r in records))
    loaded = load_benchmark("synthetic", truth)
    assert [r.example_id for r in loaded.rejects] == ["0"]
    assert "unexpected TypeError" in loaded.rejects[0].reason
    assert {e.example_id.split("-q")[0] for e in loaded.examples} == {"eval-00001"}


def test_vision_sr1_rows_with_a_blank_file_name_are_rejects(tmp_path):
    rows = _export_rows("mmstar")
    rows[3]["file_name"] = " "
    loaded = load_benchmark("mmstar", write_parquet(tmp_path / "test.parquet", rows))
    assert [e.example_id for e in loaded.examples] == ["0", "4", "5"]
    assert [(r.example_id, "blank file_name" in r.reason) for r in loaded.rejects] == [("3", True)]


def test_mathverse_parquet(tmp_path):
    rows = [{"sample_index": "1", "problem_index": "1", "problem_version": "Vision Only", "question": "",
             "image": image_struct(("mvp", 1)), "answer": "A", "question_type": "multi-choice"}]  # fmt: skip
    loaded = load_benchmark("mathverse", write_parquet(tmp_path / "testmini.parquet", rows))
    # a letter gold with no options parsed (the question is in the image): a choice among A..J
    assert [(e.answer, e.answer_type, e.options, e.images) for e in loaded.examples] == [
        ("A", "choice", (), (png(("mvp", 1)),))
    ]
