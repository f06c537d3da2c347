"""Benchmark adapters: every adapter round-trips its fixture (native and Vision-SR1 layouts) with exact
values, and malformed files fail with messages that name the file and the problem.

Expected values follow from the row patterns in visplay/eval/fixtures.py (module docstring); each case
below says which pattern gives it.
"""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from visplay.eval.adapters import ADAPTERS, VISION_SR1_FILE_NAMES, load_benchmark
from visplay.eval.fixtures import FIXTURE_SIZE, fixture_png, write_fixture
from visplay.eval.schema import EvalExample
from visplay.eval.tables import BenchmarkFormatError, options_from_text
from visplay.world.corpus import read_ground_truth

N = 4

# (example_id, answer, answer_type, category) of the 4 fixture rows, derived from the row patterns.
EXPECTED_NATIVE = {
    # id v1_<i>; answer "<i+2>" on even rows, "red <OR> crimson" on odd; capability cycle.
    "mmvet": [
        ("v1_0", "2", "open", "rec"),
        ("v1_1", "red <OR> crimson", "open", "ocr"),
        ("v1_2", "4", "open", "rec,ocr"),
        ("v1_3", "red <OR> crimson", "open", "know,math"),
    ],
    # answer L[i % 4]; the last row (i = 3 = n - 1) is open with answer "12" (digits -> math);
    # category = subject parsed from the id.
    "mmmu": [
        ("validation_Art_Theory_1", "A", "choice", "Art_Theory"),
        ("validation_Math_2", "B", "choice", "Math"),
        ("validation_Art_Theory_3", "C", "choice", "Art_Theory"),
        ("validation_Math_4", "12", "math", "Math"),
    ],
    # no id column -> row numbers; even rows L[i % 3] (0 -> A, 2 -> C); odd rows "<i+2>".
    "realworldqa": [
        ("0", "A", "choice", ""),
        ("1", "3", "math", ""),
        ("2", "C", "choice", ""),
        ("3", "5", "math", ""),
    ],
    # answer L[i % 4]; attribute cycle.
    "visnumbench": [
        ("0", "A", "choice", "Angle"),
        ("1", "B", "choice", "Length"),
        ("2", "C", "choice", "Scale"),
        ("3", "D", "choice", "Quantity"),
    ],
    # even rows multi-choice L[i % 4]; odd rows free-form: i = 1 -> \frac{1}{2}, i = 3 -> "3".
    "mathverse": [
        ("1", "A", "choice", "Text Dominant"),
        ("2", "\\frac{1}{2}", "math", "Text Lite"),
        ("3", "C", "choice", "Vision Intensive"),
        ("4", "3", "math", "Vision Only"),
    ],
    # even rows 5 options, answer L[i % 5]; odd rows answer "<3i>".
    "mathvision": [
        ("1", "A", "choice", "metric geometry - angle"),
        ("2", "3", "math", "arithmetic"),
        ("3", "C", "choice", "metric geometry - angle"),
        ("4", "9", "math", "arithmetic"),
    ],
    # set i // 4 = 0, figure (i // 2) % 2, question i % 2; gt "1" (yes) when i % 3 == 0; with n = 4 the
    # last row is the text-only VS question (figure "0").
    "hallusionbench": [
        ("VD_illusion_0_0_0", "yes", "yesno", "VD"),
        ("VD_illusion_0_0_1", "no", "yesno", "VD"),
        ("VD_illusion_0_1_0", "no", "yesno", "VD"),
        ("VS_chart_0_0_1", "yes", "yesno", "VS"),
    ],
    # even rows: the answer is the text of choice i % 4 of [3, 5, 7, 9] -> "3" is A, "7" is C;
    # odd rows free-form "<i>.5".
    "mathvista": [
        ("1", "A", "choice", "math-targeted-vqa"),
        ("2", "1.5", "math", "general-vqa"),
        ("3", "C", "choice", "math-targeted-vqa"),
        ("4", "3.5", "math", "general-vqa"),
    ],
    # answer L[i % 4], options parsed from the inline "Options: A: red, B: green, ..." text.
    "mmstar": [
        ("0", "A", "choice", "coarse perception"),
        ("1", "B", "choice", "math"),
        ("2", "C", "choice", "coarse perception"),
        ("3", "D", "choice", "math"),
    ],
}


def _summary(examples: list[EvalExample]) -> list[tuple[str, str, str, str]]:
    return [(e.example_id, e.answer, e.answer_type, e.category) for e in examples]


def _size(image: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(image)) as decoded:
        return decoded.size


@pytest.mark.parametrize("name", sorted(EXPECTED_NATIVE))
def test_native_fixture_round_trips(name, tmp_path):
    examples = load_benchmark(name, write_fixture(name, tmp_path, n=N, seed=3))
    assert _summary(examples) == EXPECTED_NATIVE[name]
    assert {e.benchmark for e in examples} == {name}
    for i, example in enumerate(examples):
        if example.image:  # the text-only HallusionBench row has no image
            assert example.image == fixture_png(name, 3, i)
            assert _size(example.image) == (FIXTURE_SIZE, FIXTURE_SIZE)


def test_every_adapter_has_a_fixture_case():
    assert set(EXPECTED_NATIVE) | {"synthetic"} == set(ADAPTERS)


def test_native_fixture_details(tmp_path):
    mmmu = load_benchmark("mmmu", write_fixture("mmmu", tmp_path / "mmmu"))
    assert mmmu[0].options == ("red", "green", "blue", "yellow")  # parsed from the string form "['red', ...]"
    assert [e.extra["n_images"] for e in mmmu] == ["1", "2", "1", "1"]  # row 1 also has image_2
    assert mmmu[3].options == ()

    hb = load_benchmark("hallusionbench", write_fixture("hallusionbench", tmp_path / "hb"))
    assert hb[3].image == b""  # visual_input "0": text-only
    assert hb[0].extra == {
        "category": "VD",
        "subcategory": "illusion",
        "set_id": "0",
        "figure_id": "0",
        "question_id": "0",
        "visual_input": "1",
    }

    mathverse = load_benchmark("mathverse", write_fixture("mathverse", tmp_path / "mv"))
    assert mathverse[0].options == ("30°", "45°", "60°", "90°")  # from the "Choices:\nA:30°" lines
    assert mathverse[3].question == ""  # Vision Only: the question is in the image

    realworldqa = load_benchmark("realworldqa", write_fixture("realworldqa", tmp_path / "rw"))
    assert realworldqa[0].options == ("left", "right", "up")

    mmvet = load_benchmark("mmvet", write_fixture("mmvet", tmp_path / "mmvet"))
    assert mmvet[2].categories == ("rec", "ocr")

    mathvista = load_benchmark("mathvista", write_fixture("mathvista", tmp_path / "vista"))
    assert "Choices:" in mathvista[0].question  # the query column is preferred over question


def test_synthetic_fixture_round_trips(tmp_path):
    path = write_fixture("synthetic", tmp_path, n=2, seed=5)
    records = read_ground_truth(path)
    examples = load_benchmark("synthetic", path)
    # One example per QA pair: image 0 is a shapes scene (4 QA), image 1 a counting scene (3 QA) -> 7.
    assert [e.example_id for e in examples] == [f"eval-00000-q{j}" for j in range(4)] + [
        f"eval-00001-q{j}" for j in range(3)
    ]
    qa = [q for record in records for q in record["qa"]]
    assert [e.answer for e in examples] == [q["answer"] for q in qa]
    assert [e.category for e in examples] == [q["skill"] for q in qa]
    assert [e.answer_type for e in examples] == [
        "choice" if q["qtype"] == "multiple choice" else "math" for q in qa
    ]
    assert examples[0].options == tuple(qa[0]["choices"])
    assert _size(examples[0].image) == (112, 112)
    # The corpus folder works as well as the ground-truth file.
    assert [e.example_id for e in load_benchmark("synthetic", path.parent, limit=3)] == [
        "eval-00000-q0",
        "eval-00000-q1",
        "eval-00000-q2",
    ]


@pytest.mark.parametrize("name", sorted(VISION_SR1_FILE_NAMES))
def test_vision_sr1_fixture_round_trips(name, tmp_path):
    examples = load_benchmark(name, write_fixture(name, tmp_path, n=N, layout="vision_sr1"))
    # Two rows of another benchmark sit between fixture rows 0 and 1 (file rows 1 and 2) and are skipped;
    # the id is the file row number: 0, 3, 4, 5.
    assert [e.example_id for e in examples] == ["0", "3", "4", "5"]
    assert [e.extra["problem_id"] for e in examples] == ["p0", "p1", "p2", "p3"]
    assert all("<image>" not in e.question for e in examples)
    if name == "mmvet":
        assert {(e.answer, e.answer_type) for e in examples} == {("a red square", "open")}
    elif name == "hallusionbench":
        assert [(e.answer, e.answer_type) for e in examples] == [("yes", "yesno"), ("no", "yesno")] * 2
    else:  # even rows: options A./B./C. and answer L[i % 3]; odd rows \frac{1}{2}
        assert [(e.answer, e.answer_type) for e in examples] == [
            ("A", "choice"),
            ("\\frac{1}{2}", "math"),
            ("C", "choice"),
            ("\\frac{1}{2}", "math"),
        ]
        assert examples[0].options == ("circle", "square", "star")


def test_vision_sr1_file_without_the_benchmark_lists_file_names(tmp_path):
    path = write_fixture("mathverse", tmp_path, n=N, layout="vision_sr1")
    with pytest.raises(BenchmarkFormatError) as err:
        load_benchmark("mmvet", path)
    message = str(err.value)
    assert str(path) in message and "['mm-vet']" in message
    assert "{'clevr_count_70k': 2, 'mathverse': 4}" in message


def test_limit_stops_early(tmp_path):
    path = write_fixture("mmstar", tmp_path, n=N)
    assert [e.example_id for e in load_benchmark("mmstar", path, limit=2)] == ["0", "1"]
    with pytest.raises(ValueError, match="limit must be >= 1"):
        load_benchmark("mmstar", path, limit=0)


def test_folder_of_parquet_shards(tmp_path):
    path = write_fixture("mmstar", tmp_path / "one", n=N)
    table = pq.read_table(path)
    shards = tmp_path / "shards"
    shards.mkdir()
    pq.write_table(table.slice(0, 2), shards / "test-00000-of-00002.parquet")
    pq.write_table(table.slice(2, 2), shards / "test-00001-of-00002.parquet")
    (shards / "_SUCCESS").write_text("")
    assert [e.example_id for e in load_benchmark("mmstar", shards)] == ["0", "1", "2", "3"]


# ---------------------------------------------------------------------------------------------------------
# Malformed files
# ---------------------------------------------------------------------------------------------------------
def test_unknown_benchmark_lists_known_names(tmp_path):
    with pytest.raises(ValueError) as err:
        load_benchmark("mmvett", tmp_path / "x.parquet")
    assert "unknown benchmark 'mmvett'" in str(err.value)
    assert str(sorted(ADAPTERS)) in str(err.value)


def test_missing_column_names_file_column_expected_and_found(tmp_path):
    path = write_fixture("mmstar", tmp_path, n=N)
    pq.write_table(pq.read_table(path).drop_columns(["answer"]), path)
    with pytest.raises(BenchmarkFormatError) as err:
        load_benchmark("mmstar", path)
    message = str(err.value)
    assert str(path) in message
    assert "needs column 'answer', which is missing" in message
    assert "Expected columns ['question', 'answer', 'image']" in message
    assert "found ['index', 'question', 'image', 'category', 'l2_category', 'meta_info']" in message


def test_misnamed_column_suggests_the_right_name(tmp_path):
    path = write_fixture("visnumbench", tmp_path, n=N)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text(
        "".join(
            json.dumps({("questions" if k == "question" else k): v for k, v in r.items()}) + "\n"
            for r in rows
        )
    )
    with pytest.raises(BenchmarkFormatError) as err:
        load_benchmark("visnumbench", path)
    message = str(err.value)
    assert str(path) in message and "needs column 'question'" in message
    assert "did you mean ['questions']?" in message


def test_empty_files(tmp_path):
    empty_jsonl = tmp_path / "empty.jsonl"
    empty_jsonl.write_text("")
    with pytest.raises(BenchmarkFormatError, match="the file is empty"):
        load_benchmark("visnumbench", empty_jsonl)
    path = write_fixture("mmvet", tmp_path, n=N)
    pq.write_table(pq.read_table(path).slice(0, 0), path)  # columns, no rows
    with pytest.raises(BenchmarkFormatError, match="the file has no rows"):
        load_benchmark("mmvet", path)


def test_duplicate_ids_are_an_error(tmp_path):
    path = write_fixture("mmvet", tmp_path, n=N)
    table = pq.read_table(path)
    ids = pa.array(["v1_0", "v1_1", "v1_0", "v1_1"])
    pq.write_table(table.set_column(table.schema.get_field_index("question_id"), "question_id", ids), path)
    with pytest.raises(BenchmarkFormatError) as err:
        load_benchmark("mmvet", path)
    assert str(path) in str(err.value) and "duplicate example ids ['v1_0', 'v1_1']" in str(err.value)


def test_bad_cells_name_row_and_column(tmp_path):
    path = write_fixture("visnumbench", tmp_path, n=N)
    (tmp_path / "images" / "vis_2.png").unlink()
    with pytest.raises(
        BenchmarkFormatError, match=r"row 2, column 'image_path': image path 'images/vis_2.png'"
    ):
        load_benchmark("visnumbench", path)

    hb = write_fixture("hallusionbench", tmp_path / "hb", n=N)
    table = pq.read_table(hb)
    gt = pa.array(["1", "maybe", "0", "1"])
    pq.write_table(table.set_column(table.schema.get_field_index("gt_answer"), "gt_answer", gt), hb)
    with pytest.raises(BenchmarkFormatError, match=r"row 1: gt_answer 'maybe' is not"):
        load_benchmark("hallusionbench", hb)

    vista = write_fixture("mathvista", tmp_path / "vista", n=N)
    table = pq.read_table(vista)
    answers = pa.array(["4", "1.5", "7", "3.5"])  # "4" is none of the choices 3, 5, 7, 9
    pq.write_table(table.set_column(table.schema.get_field_index("answer"), "answer", answers), vista)
    with pytest.raises(BenchmarkFormatError, match=r"row 0: answer '4' names none of the options"):
        load_benchmark("mathvista", vista)


def test_unsupported_or_unreadable_files(tmp_path):
    path = tmp_path / "bench.csv"
    path.write_text("question,answer\n")
    with pytest.raises(BenchmarkFormatError, match=r"unsupported file type '\.csv'"):
        load_benchmark("mmstar", path)
    broken = tmp_path / "bench.parquet"
    broken.write_bytes(b"not parquet at all")
    with pytest.raises(BenchmarkFormatError, match="not a readable parquet file"):
        load_benchmark("mmstar", broken)
    bad_line = tmp_path / "bench.jsonl"
    bad_line.write_text('{"question": "q"}\n{"question": \n')
    with pytest.raises(BenchmarkFormatError, match="line 2 is not valid JSON"):
        load_benchmark("mmstar", bad_line)
    with pytest.raises(BenchmarkFormatError, match="no such file or folder"):
        load_benchmark("mmstar", tmp_path / "missing.parquet")


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
