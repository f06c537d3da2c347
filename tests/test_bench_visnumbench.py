"""VisNumBench: the GitHub json (``option`` one string ``"(a) … (b) …"``, gold ``"(c) text"``,
``image_path`` relative to the repository root), the Hugging Face parquet (both sets, overlapping ids),
an older json-lines copy with option lists and letter golds, the Vision-SR1 export; rejects; the score.

Official rule (GML-FMGroup/mllm_number_sense ``eval/utils.py`` ``judge``): the option label the answer picks
equals the gold's first three characters, ``(c)``.
"""

from __future__ import annotations

import pytest
from benchmark_files import image_struct, png, write_json, write_jsonl, write_parquet, write_png

from visplay.eval.benchmarks import load_benchmark
from visplay.eval.benchmarks.visnumbench import VisNumBench, gold_letter, parse_options
from visplay.eval.schema import EvalExample, Prediction
from visplay.eval.scoring import make_report, score_rows

BENCH = VisNumBench()
SET = "datasets/Real-World Dataset"


def _row(id_, option, answer, attribute="Scale", task="value estimation"):
    """One entry of Real.json (made-up questions, the release's fields)."""
    return {
        "id": id_,
        "question": f"Which option is the best estimate for picture {id_}?",
        "option": option,
        "answer": answer,
        "image_path": f"{SET}/{attribute}/{id_}.png",
        "task_class": task,
        "Attributes": attribute,
    }


ROWS = [
    _row("0_Scale", "(a) 1 hour (b) 4 hours (c) 7 hours (d) 9 hours", "(c) 7 hours"),
    _row("1_Length", "(a) (0.50, 0.60) (b) (0.0, 0.10) (c) (0.80, 0.90) (d) (0.20, 0.30)", "(b) (0.0, 0.10)",
         "Length", "range estimation"),
    _row("2_Angle", "(a) object A (b) object B (c) object C", "(a)", "Angle", "value comparison"),
    _row("3_Quantity", "(a) 10 (b) 20 (c) 30 (d) 40 (e) 50", "(e) 50", "Quantity"),
    _row("4_Depth", "(a) 1 (b) 2 (c) 3 (d) 4", "(e) 5", "Depth"),  # a label beyond the options
    _row("5_Volume", "1, 2, 3, 4", "(b) 2", "Volume"),  # no (a) (b) labels
    _row("6_Scale", "(a) 1 (b) 2", "(a) 1"),  # its image is missing
]  # fmt: skip


def _github(root):
    """The repository: datasets/Real-World Dataset/Real.json and the images under its attribute folders."""
    for row in ROWS[:6]:
        write_png(root / row["image_path"], row["id"])
    return write_json(root / SET / "Real.json", ROWS)


def _check(loaded, json_path):
    assert [(e.example_id, e.answer, e.category) for e in loaded.examples] == [
        ("0_Scale", "C", "Scale"), ("1_Length", "B", "Length"), ("2_Angle", "A", "Angle"),
        ("3_Quantity", "E", "Quantity"),
    ]  # fmt: skip
    first, second = loaded.examples[:2]
    assert first.options == ("1 hour", "4 hours", "7 hours", "9 hours") and first.answer_type == "choice"
    assert second.options == ("(0.50, 0.60)", "(0.0, 0.10)", "(0.80, 0.90)", "(0.20, 0.30)")
    assert first.images == (png("0_Scale"),)
    assert second.extra == {"class": "", "task_class": "range estimation"}
    assert [(r.example_id, r.file) for r in loaded.rejects] == [
        ("4_Depth", str(json_path)), ("5_Volume", str(json_path)), ("6_Scale", str(json_path))
    ]  # fmt: skip
    assert "row 4: answer '(e) 5' names none of the options ['1', '2', '3', '4']" in loaded.rejects[0].reason
    assert "row 5, column 'option': '1, 2, 3, 4' does not list options" in loaded.rejects[1].reason
    assert "6_Scale.png' is not a file" in loaded.rejects[2].reason


def test_github_json_in_place(tmp_path):
    # image_path is relative to the repository root, two folders above Real.json
    json_path = _github(tmp_path)
    _check(load_benchmark("visnumbench", json_path), json_path)


def test_github_json_copied_to_the_repository_root(tmp_path):
    _github(tmp_path)
    json_path = write_json(tmp_path / "Real.json", ROWS)
    _check(load_benchmark("visnumbench", json_path), json_path)


def test_hf_parquet_with_both_sets(tmp_path):
    rows = [
        {"class": "Real", "id": "46_Angle", "question": "Angle?", "option": "(a) 30 (b) 60 (c) 90",
         "answer": "(c) 90", "task_class": "value estimation", "Attributes": "Angle", "image": image_struct("r46")},
        {"class": "Synthetic", "id": "46_Angle", "question": "Angle?", "option": "(a) (0, 10) (b) (80, 90)",
         "answer": "(a) (0, 10)", "task_class": "range estimation", "Attributes": "Angle", "image": image_struct("s46")},
    ]  # fmt: skip
    loaded = load_benchmark(
        "visnumbench", write_parquet(tmp_path / "data" / "train-00000-of-00001.parquet", rows)
    )
    # the two sets share ids: the id is <class>/<id>
    assert [(e.example_id, e.answer, e.options, e.images) for e in loaded.examples] == [
        ("Real/46_Angle", "C", ("30", "60", "90"), (png("r46"),)),
        ("Synthetic/46_Angle", "A", ("(0, 10)", "(80, 90)"), (png("s46"),)),
    ]
    assert loaded.rejects == []


def test_old_jsonl_copy_with_option_lists_and_letters(tmp_path):
    rows = []
    for i in range(4):
        write_png(tmp_path / f"images/vis_{i}.png", i)
        rows.append({"id": i, "question": f"How many dots in region {i}?", "option": ["1", "2", "3", "4"],
                     "answer": "ABCD"[i], "image_path": f"images/vis_{i}.png", "attribute": "Quantity"})  # fmt: skip
    loaded = load_benchmark("visnumbench", write_jsonl(tmp_path / "visnumbench.jsonl", rows))
    assert [(e.example_id, e.answer, e.options, e.category) for e in loaded.examples] == [
        (str(i), "ABCD"[i], ("1", "2", "3", "4"), "Quantity") for i in range(4)
    ]
    assert loaded.rejects == []


@pytest.mark.parametrize(
    "text, options",
    [
        ("(a) 1 (b) 2 (c) 3 (d) 4", ("1", "2", "3", "4")),
        ("(A) left (B) right", ("left", "right")),
        ("(a) (2, 3) (b) (9, 10)", ("(2, 3)", "(9, 10)")),  # parentheses inside an option
        ("(a) x (b) y\nAnswer with the label.", ("x", "y")),  # the last option ends with its line
        ("(a) x (c) y", ()),  # a gap
        ("(a) only", ()),  # one option
        ("pick (a) x (b) y", ()),  # not at the start
    ],
)
def test_parse_options(text, options):
    assert parse_options(text) == options


@pytest.mark.parametrize(
    "answer, letter",
    [
        ("(c) 3", "C"),
        ("(c)", "C"),
        ("c", "C"),
        ("C", "C"),
        ("(C) 3", "C"),
        ("3", "C"),
        ("(e) 5", None),
        ("7", None),
    ],
)
def test_gold_letter(answer, letter):
    # the official judge compares the first three characters "(c)"; a bare letter or an option text also names one
    assert gold_letter(answer, ("1", "2", "3", "4")) == letter


CLOCK = EvalExample(
    "0_Scale",
    "visnumbench",
    "Time?",
    (png(0),),
    "C",
    ("1 hour", "4 hours", "7 hours", "9 hours"),
    "Scale",
    "choice",
)


@pytest.mark.parametrize(
    "text, score",
    [
        ("(c)", 1.0),
        ("c", 1.0),
        ("C", 1.0),
        ("The answer is (c).", 1.0),
        ("Counting the ticks...\n\\boxed{(c) 7 hours}", 1.0),
        ("7 hours", 1.0),  # the option's text
        ("I pick (c) here", 1.0),  # a lower-case label in free text
        ("(d)", 0.0),
        ("(e)", 0.0),  # beyond the options
        ("", 0.0),
    ],
)
def test_score(text, score):
    assert BENCH.score(CLOCK, text) == score


def test_per_set_accuracy_in_the_report():
    examples = [
        EvalExample(
            f"{s}/{i}", "visnumbench", "Q?", (png(i),), "A", ("1", "2"), "Angle", "choice", {"class": s}
        )
        for s, i in [("Real", 0), ("Real", 1), ("Synthetic", 0)]
    ]
    texts = ["(a)", "(b)", "a"]
    rows = score_rows(
        BENCH, examples, [Prediction(e.example_id, t, "m0") for e, t in zip(examples, texts, strict=True)]
    )
    # Real: 1 of 2 right -> 0.5; Synthetic: 1 of 1 -> 1.0; overall 2/3
    report = make_report(BENCH, rows)
    assert report.extra == {"acc/Real": 0.5, "acc/Synthetic": 1.0} and report.rule_score == 2 / 3


def test_vision_sr1_export(tmp_path):
    rows = [
        {
            "problem": "<image>How many? Options: (a) 1 (b) 2 (c) 3",
            "answer": "(b) 2",
            "images": [image_struct(0)],
        },
        {
            "problem": "<image>Which is longer?\n(A) left\n(B) right",
            "answer": "B",
            "images": [image_struct(1)],
        },
    ]
    loaded = load_benchmark("visnumbench", write_parquet(tmp_path / "test.parquet", rows))
    assert [(e.answer, e.options, e.answer_type) for e in loaded.examples] == [
        ("B", ("1", "2", "3"), "choice"), ("B", ("left", "right"), "choice")  # labels one per line too
    ]  # fmt: skip
