"""Rule scoring, joins, HallusionBench metrics, per-category accuracy and reports, with exact values.

Every expected number is derived in the comment next to it.
"""

from __future__ import annotations

import pytest

from visplay.eval.benchmarks import BENCHMARKS
from visplay.eval.schema import EvalExample, Prediction
from visplay.eval.scoring import (
    BenchmarkReport,
    ScoredRow,
    choice_from_text,
    comparison_table,
    extract_answer,
    join_predictions,
    make_report,
    open_match,
    per_category,
    score_rows,
    score_rule,
    yes_no_from_text,
)

SHAPES = ("circle", "square", "star")


def _ex(
    answer: str,
    answer_type: str,
    options: tuple[str, ...] = (),
    *,
    example_id: str = "q1",
    benchmark: str = "test",
    category: str = "",
    extra: dict[str, str] | None = None,
) -> EvalExample:
    return EvalExample(
        example_id, benchmark, "Which shape?", (b"png",), answer, options, category, answer_type, extra or {}
    )


class _Plain:
    """A benchmark named "test" scored by the default rule, with no extra figures (the Scorer protocol)."""

    name = "test"
    notes = ("a note",)

    def score(self, example: EvalExample, text: str) -> float:
        return score_rule(example, text)

    def metrics(self, rows) -> dict[str, float]:
        return {}


PLAIN = _Plain()


def _row(example: EvalExample, score: float | None, version: str = "m0") -> ScoredRow:
    return ScoredRow(example, Prediction(example.example_id, "…", version), score)


# ---------------------------------------------------------------------------------------------------------
# extract_answer / score_rule
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, answer",
    [
        ("so x = \\boxed{\\frac{1}{\\sqrt{2}}}.", "\\frac{1}{\\sqrt{2}}"),  # nested braces, last box
        ("first \\boxed{1}, finally \\boxed{2}", "2"),
        ("Let me think.\nThe answer is B.", "B"),  # last line, lead-in and period removed
        ("Reasoning...\n\n**Final answer: 42**\n", "42"),
        ("Thus, the answer: yes", "yes"),
        ("", ""),
        ("so the total is \\boxed{12", ""),  # cut at max_tokens inside the box: no answer (was "12")
        ("\\boxed{1} then \\boxed{2", ""),  # the last box is truncated: not the earlier one either
    ],
)
def test_extract_answer(text, answer):
    assert extract_answer(text) == answer


@pytest.mark.parametrize(
    "text, letter",
    [
        ("B", "B"),
        ("(B)", "B"),
        ("The answer is B.", "B"),
        ("b", "B"),
        ("square", "B"),  # the text of option B
        ("I think it is the square", "B"),  # only option B's text occurs in it
        ("A circle", "A"),  # "A" is the article here: the option text decides (no punctuation after A)
        ("option C is wrong, so (B)", "B"),  # the last letter mention wins
        ("It must be C", "C"),  # a capital letter at the end
        ("D", None),  # beyond the 3 options
        ("a circle or a star", None),  # two option texts: ambiguous
        ("no idea", None),
    ],
)
def test_choice_from_text(text, letter):
    assert choice_from_text(text, SHAPES) == letter


def test_choice_by_equivalent_option_value():
    # "0.5" is equivalent to option B "\frac{1}{2}" (math_verify), to no other option.
    assert choice_from_text("0.5", ("\\frac{1}{4}", "\\frac{1}{2}", "2")) == "B"


@pytest.mark.parametrize(
    "text, score",
    [
        ("... so the shape is \\boxed{B}", 1.0),
        ("\\boxed{(B)}", 1.0),
        ("Looking closely.\nThe answer is B.", 1.0),
        ("\\boxed{square}", 1.0),
        ("\\boxed{A}", 0.0),
        ("The answer is (C).", 0.0),
        ("I cannot tell.", 0.0),
        ("", 0.0),
    ],
)
def test_score_rule_choice(text, score):
    assert score_rule(_ex("B", "choice", SHAPES), text) == score


@pytest.mark.parametrize(
    "text, score",
    [
        ("\\boxed{Yes}", 1.0),
        ("Yes, the upper line is longer.", 1.0),  # last line starts with yes + punctuation
        ("Looking at it...\nI believe yes, it is longer", 1.0),  # the only yes/no word
        ("\\boxed{no}", 0.0),
        ("yes and no", 0.0),  # both words: no verdict
        ("It is longer.", 0.0),  # neither word
    ],
)
def test_score_rule_yesno(text, score):
    assert yes_no_from_text("True") == "yes"
    assert score_rule(_ex("yes", "yesno"), text) == score


@pytest.mark.parametrize(
    "text, score",
    [
        ("\\boxed{0.5}", 1.0),  # 0.5 == 1/2 (math_verify)
        ("\\boxed{\\frac{1}{2}}", 1.0),
        ("So the ratio is\n1/2", 1.0),  # last line
        ("\\boxed{0.4}", 0.0),
    ],
)
def test_score_rule_math(text, score):
    assert score_rule(_ex("\\frac{1}{2}", "math"), text) == score


@pytest.mark.parametrize(
    "pred, gold, match",
    [
        ("Red.", "red", True),  # normalized: case and final period
        ("  The  Red car ", "the red car", True),
        ("", "red", False),
    ],
)
def test_open_match(pred, gold, match):
    assert open_match(pred, gold) is match


# ---------------------------------------------------------------------------------------------------------
# join
# ---------------------------------------------------------------------------------------------------------
def _examples(*ids: str) -> list[EvalExample]:
    return [_ex("B", "choice", SHAPES, example_id=i) for i in ids]


def test_join_is_by_id_not_position():
    examples = _examples("a", "b", "c")
    predictions = [
        Prediction("c", "\\boxed{A}", "m0"),
        Prediction("a", "\\boxed{B}", "m0"),
        Prediction("b", "x", "m0"),
    ]
    pairs = join_predictions(examples, predictions)
    assert [(e.example_id, p.text) for e, p in pairs] == [
        ("a", "\\boxed{B}"),
        ("b", "x"),
        ("c", "\\boxed{A}"),
    ]
    assert [r.score for r in score_rows(PLAIN, examples, predictions)] == [1.0, 0.0, 0.0]  # only a answers B


@pytest.mark.parametrize(
    "prediction_ids, message",
    [
        (["a", "b"], r"3 examples but 2 predictions; examples without a prediction: \['c'\]"),
        (["a", "b", "x"], r"examples without a prediction: \['c'\] .*predictions for unknown ids: \['x'\]"),
        (["a", "b", "c", "x"], r"3 examples but 4 predictions; .*unknown ids: \['x'\]"),
        (["a", "a", "b"], r"duplicate example ids among the predictions: \['a'\]"),
    ],
)
def test_join_errors_name_the_ids(prediction_ids, message):
    predictions = [Prediction(i, "B", "m0") for i in prediction_ids]
    with pytest.raises(ValueError, match=message):
        join_predictions(_examples("a", "b", "c"), predictions)


def test_join_rejects_duplicate_examples_and_mixed_versions():
    with pytest.raises(ValueError, match=r"duplicate example ids among the examples: \['a'\]"):
        join_predictions(_examples("a", "a"), [Prediction("a", "B", "m0")])
    with pytest.raises(ValueError, match=r"several model versions \['m0', 'm1'\]"):
        join_predictions(_examples("a", "b"), [Prediction("a", "B", "m0"), Prediction("b", "B", "m1")])


# ---------------------------------------------------------------------------------------------------------
# HallusionBench
# ---------------------------------------------------------------------------------------------------------
# (category, subcategory, set_id, figure_id, question_id, correct): 8 hand-built rows.
HB_ROWS = [
    ("VD", "illusion", "0", "0", "0", True),
    ("VD", "illusion", "0", "0", "1", True),
    ("VD", "illusion", "0", "1", "0", True),
    ("VD", "illusion", "0", "1", "1", False),
    ("VD", "illusion", "1", "0", "0", False),
    ("VD", "illusion", "1", "1", "0", True),
    ("VS", "chart", "0", "0", "0", True),  # VS figure "0": the text-only question, not a figure
    ("VS", "chart", "0", "1", "0", True),
]


def _hb_rows(spec) -> list[ScoredRow]:
    keys = ("category", "subcategory", "set_id", "figure_id", "question_id")
    rows = []
    for *ids, correct in spec:
        extra = dict(zip(keys, ids, strict=True))
        example = _ex(
            "yes", "yesno", example_id="_".join(ids), benchmark="hallusionbench", category=ids[0], extra=extra
        )
        rows.append(_row(example, 1.0 if correct else 0.0))
    return rows


# ---------------------------------------------------------------------------------------------------------
# per category, reports
# ---------------------------------------------------------------------------------------------------------
def test_per_category_mmvet_capabilities():
    rows = [
        _row(_ex("a", "open", example_id="1", category="rec"), 1.0),
        _row(_ex("a", "open", example_id="2", category="ocr"), 0.0),
        _row(_ex("a", "open", example_id="3", category="rec,ocr"), 0.5),
        _row(_ex("a", "open", example_id="4", category="know,math"), 1.0),
        _row(_ex("a", "open", example_id="5", category="rec"), None),  # no verdict: left out
        _row(_ex("a", "open", example_id="6", category=""), 0.0),  # no category: left out
    ]
    # rec: (1.0 + 0.5) / 2 = 0.75; ocr: (0.0 + 0.5) / 2 = 0.25; know: 1.0; math: 1.0.
    assert per_category(rows) == {"know": 1.0, "math": 1.0, "ocr": 0.25, "rec": 0.75}


def test_make_report_and_comparison_table():
    examples = [
        _ex("B", "choice", SHAPES, example_id=i, category=c)
        for i, c in [("1", "x"), ("2", "x"), ("3", "y"), ("4", "y")]
    ]
    rule = [_row(e, s) for e, s in zip(examples, [1.0, 1.0, 0.0, 1.0], strict=True)]
    judge = [_row(e, s) for e, s in zip(examples, [1.0, 0.0, None, 1.0], strict=True)]
    report = make_report(PLAIN, rule, judge, judge_prompt="verdict.txt sha256:abc", rejected=2)
    # rule 3/4; judge over the 3 verdicts (1 + 0 + 1) / 3; per category x: (1+1)/2, y: (0+1)/2.
    assert report == BenchmarkReport(
        benchmark="test",
        model_version="m0",
        n=4,
        rule_score=0.75,
        judge_score=2 / 3,
        per_category={"x": 1.0, "y": 0.5},
        extra={"judge_n": 3.0, "judge_missing": 1.0, "judge/x": 0.5, "judge/y": 1.0},
        notes=("a note",),
        judge_prompt="verdict.txt sha256:abc",
        rejected=2,
    )
    assert report.to_dict()["per_category"] == {"x": 1.0, "y": 0.5}

    hb = make_report(BENCHMARKS["hallusionbench"], _hb_rows(HB_ROWS))
    # HallusionBench's own figures come from its class (tests/test_bench_hallusionbench.py derives them)
    assert (hb.rule_score, hb.judge_score, hb.extra) == (0.75, None, {"aAcc": 0.75, "fAcc": 0.6, "qAcc": 0.5})
    other = BenchmarkReport("test", "m1", 4, 0.5, None, {}, {})
    assert comparison_table([report, hb, other]) == (
        "rule-based score, % (LLM-judge score, %, in brackets)\n"
        "model_version  test         hallusionbench\n"
        "m0             75.0 [66.7]  75.0\n"
        "m1             50.0         -"
    )
    with pytest.raises(ValueError, match="two reports for model 'm0' on 'test'"):
        comparison_table([report, report])


def test_make_report_errors():
    rows = [_row(_ex("B", "choice", SHAPES, example_id="1"), 1.0)]
    with pytest.raises(ValueError, match=r"one report is one benchmark \(test\) and one model version"):
        make_report(PLAIN, [*rows, _row(_ex("B", "choice", SHAPES, example_id="2"), 1.0, version="m1")])
    with pytest.raises(ValueError, match="judge rows must cover exactly the examples"):
        make_report(PLAIN, rows, [])
    with pytest.raises(ValueError, match=r"one report is one benchmark \(hallusionbench\)"):
        make_report(BENCHMARKS["hallusionbench"], rows)


def test_schema_rejects_inconsistent_examples():
    with pytest.raises(ValueError, match="a choice answer must be one of"):
        _ex("D", "choice", SHAPES)
    with pytest.raises(ValueError, match="a yesno answer must be 'yes' or 'no'"):
        _ex("1", "yesno")
    with pytest.raises(ValueError, match="answer_type 'free'"):
        _ex("1", "free")
    with pytest.raises(ValueError, match="options are only allowed for answer_type 'choice'"):
        _ex("1", "math", ("1", "2"))
