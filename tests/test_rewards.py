"""Exact-value tests for visplay.rewards. Every expected number is derived by hand in the comment next to it."""

import ast
import dataclasses
import math
import random
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import visplay.rewards
import visplay.rewards.diversity
import visplay.rewards.grading as grading
from visplay.rewards import (
    PARSE_ERRORS,
    GradeResult,
    QuestionerReward,
    Vote,
    bleu_cluster_penalty,
    bleu_distance_matrix,
    choice_letter,
    extract_boxed,
    grade,
    grade_detailed,
    grade_timeout_count,
    majority_vote,
    parse_questioner_output,
    questioner_reward,
    reasoner_reward,
    reset_grade_timeout_count,
    uncertainty_reward,
    vote,
    yes_no,
)
from visplay.rewards.cost import is_too_costly

# ---------------------------------------------------------------------------------------------------------
# parse_questioner_output
# ---------------------------------------------------------------------------------------------------------


def test_parse_well_formed():
    parsed = parse_questioner_output(
        "<type>numerical</type>\n<question> How many cats are on the sofa? </question>\n<answer> 3 </answer>"
    )
    assert parsed.ok and parsed.error is None
    assert (parsed.qtype, parsed.question, parsed.answer) == (
        "numerical",
        "How many cats are on the sofa?",
        "3",
    )


def test_parse_last_tags_win():
    text = (
        "Draft: <type>regression</type><question>old?</question><answer>1</answer>\n"
        "Final: <type>multiple choice</type><question>Which is red? A. cup B. pen</question><answer>A</answer>"
    )
    parsed = parse_questioner_output(text)
    assert (parsed.ok, parsed.qtype, parsed.question, parsed.answer) == (
        True,
        "multiple choice",
        "Which is red? A. cup B. pen",
        "A",
    )


def test_parse_innermost_well_formed_pair_and_spaced_tags():
    # "<type><type>numerical</type>": the unclosed outer <type> is skipped, the inner pair is well formed.
    parsed = parse_questioner_output(
        "<type><type>numerical</type>< question >Q?</ question ><ANSWER>7</ANSWER>"
    )
    assert (parsed.ok, parsed.qtype, parsed.question, parsed.answer) == (True, "numerical", "Q?", "7")


@pytest.mark.parametrize(
    "text, error",
    [
        ("<question>Q?</question><answer>1</answer>", "missing_type"),
        ("<type>numerical</type><answer>1</answer>", "missing_question"),
        ("<type>numerical</type><question>Q?</question>", "missing_answer"),
        ("<type>numerical</type><question>Q?</question><answer>1", "missing_answer"),  # unclosed tag
        ("<type>essay</type><question>Q?</question><answer>1</answer>", "bad_type"),
        ("<type> </type><question>Q?</question><answer>1</answer>", "bad_type"),
        ("<type>numerical</type><question>  </question><answer>1</answer>", "empty_question"),
        ("<type>numerical</type><question>Q?</question><answer></answer>", "empty_answer"),
        ("", "missing_type"),
        (None, "missing_type"),
        # Several failures: the first in PARSE_ERRORS order is reported (missing_type before bad anything).
        ("<answer></answer>", "missing_type"),
    ],
)
def test_parse_failures_are_typed(text, error):
    parsed = parse_questioner_output(text)
    assert not parsed.ok
    assert parsed.error == error
    assert parsed.error in PARSE_ERRORS


def test_parse_failure_keeps_found_fields():
    parsed = parse_questioner_output("<type>essay</type><question>Q?</question><answer>1</answer>")
    assert (parsed.qtype, parsed.question, parsed.answer) == (None, "Q?", "1")


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("multiple choice", "multiple choice"),
        ("Multiple Choice", "multiple choice"),
        ("multiple-choice", "multiple choice"),
        ("MULTIPLE_CHOICE", "multiple choice"),
        ("`numerical`", "numerical"),
        ("Numeric", "numerical"),
        (" regression ", "regression"),
    ],
)
def test_parse_normalises_type(raw, expected):
    parsed = parse_questioner_output(f"<type>{raw}</type><question>Q?</question><answer>1</answer>")
    assert parsed.ok and parsed.qtype == expected


def test_parsed_question_is_frozen():
    parsed = parse_questioner_output("")
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.ok = True


# ---------------------------------------------------------------------------------------------------------
# extract_boxed
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so the answer is \\boxed{42}.", "42"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),  # nested braces
        ("\\boxed{\\sqrt{\\frac{a}{b^{2}}}}", "\\sqrt{\\frac{a}{b^{2}}}"),  # three levels
        ("first \\boxed{1} then \\boxed{2}", "2"),  # last wins
        ("\\boxed{1} and \\fbox{B}", "B"),  # \fbox counts too
        ("\\boxed {  5 }", "5"),  # space before the brace, content stripped
        ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),  # escaped braces are not structure
        ("\\boxed{\\boxed{3}}", "3"),  # the inner box is the last opening
        ("\\boxed{}", ""),
        ("no box here", None),
        ("", None),
        (None, None),
        ("\\boxed{12", None),  # unbalanced
        ("\\boxed{1} ... \\boxed{2", None),  # the LAST box is truncated → None, not the earlier one
    ],
)
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected


# ---------------------------------------------------------------------------------------------------------
# grade
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pred, gold, equal, method",
    [
        ("0.5", "\\frac{1}{2}", True, "number"),  # both the exact number 1/2
        ("\\frac{1}{2}", "0.5", True, "number"),
        ("1/2", "0.5", True, "number"),
        ("3,000", "3000", True, "number"),  # one digit-group pattern
        ("x^2+y^2", "y^2+x^2", True, "math"),
        ("3 \\times 10^{8}", "300000000", True, "number"),  # scientific notation
        ("5!", "120", True, "math"),  # 5! = 120
        ("0.5", "0.6", False, "number"),
        ("2", "3", False, "number"),  # two different numbers: math_verify not called
        ("007", "7", True, "number"),  # 007 = 7
        ("-3", "3", False, "number"),
        ("+4", "4", True, "number"),
        ("7", "7.0", True, "number"),  # 7.0 = 7 exactly
        ("1" * 101, "1" * 101 + "0", False, "number"),
        ("(A)", "A", True, "choice"),
        ("A.", "(A)", True, "choice"),
        ("A)", "A", True, "choice"),
        ("option a", "A", True, "choice"),
        ("A: a red cup", "A", True, "choice"),
        ("The answer is (C)", "C", True, "choice"),
        ("$\\text{(B)}$", "B", True, "choice"),  # wrappers stripped first
        ("B", "A", False, "choice"),
        ("a", "A", True, "choice"),  # both name option A
        ("Yes.", "yes", True, "yes_no"),
        ("YES!", "yes", True, "yes_no"),
        ("No, it is not.", "no", True, "yes_no"),
        ("True", "Yes", True, "yes_no"),
        ("false", "no", True, "yes_no"),
        ("no", "Yes", False, "yes_no"),
        ("  The Red   Car. ", "the red car", True, "string"),
        ("ab", "ba", False, "not_math"),  # math_verify alone would read a*b == b*a
        ("red", "blue", False, "not_math"),
        ("", "1", False, "empty"),
        ("1", "   ", False, "empty"),
        (None, "1", False, "empty"),
        ("1", None, False, "empty"),
    ],
)
def test_grade_rules(pred, gold, equal, method):
    # A generous time limit: these cases test the rules (the timeout has its own test below); on a loaded
    # 2-core CI machine sympy's first symbolic comparison once took longer than the 2 s default.
    assert grade_detailed(pred, gold, timeout_s=60) == GradeResult(equal, method)
    assert grade(pred, gold) is equal


@pytest.mark.parametrize(
    "answer, letter",
    [
        ("A", "A"),
        ("b", "B"),
        ("(C)", "C"),
        ("[D]", "D"),
        ("E.", "E"),
        ("Answer: F", "F"),
        ("(A) 12 apples", "A"),
    ],
)
def test_choice_letter(answer, letter):
    assert choice_letter(answer) == letter


@pytest.mark.parametrize("answer", ["A cat", "answer", "12", "K", "choice"])
def test_choice_letter_rejects(answer):
    assert choice_letter(answer) is None


@pytest.mark.parametrize(
    "answer, expected", [("Yes", "yes"), ("no.", "no"), ("TRUE", "yes"), ("No one", None)]
)
def test_yes_no(answer, expected):
    assert yes_no(answer) == expected


@pytest.mark.parametrize(
    "expr",
    [
        "9^{9^{9}}",
        "2^{2^{100}}",
        "10^{10000000}",
        "1000000!",
        "(10^{9})!",
        "\\frac{1}{10^{10^{6}}}",
        "9**9**9",
    ],
)
def test_gil_holding_inputs_never_reach_math_verify(expr, monkeypatch):
    # Each of these froze the whole process (GIL held inside one C call) when sent to math_verify.
    def must_not_be_called(pred, gold):
        raise AssertionError("math_verify called on a pathological input")

    monkeypatch.setattr(grading, "_math_equal", must_not_be_called)
    assert is_too_costly(expr)
    assert grade_detailed(expr, "5") == GradeResult(False, "too_complex")


@pytest.mark.parametrize("expr", ["x^2+y^2", "10^{5}", "2^{10}", "3 \\times 10^{8}", "5!", "n!", "e^{i\\pi}"])
def test_ordinary_math_is_not_too_costly(expr):
    assert not is_too_costly(expr)


def test_grade_timeout_returns_false_quickly_and_is_counted(monkeypatch):
    release = threading.Event()

    def slow_math_equal(pred, gold):
        release.wait(30)  # stands in for a pathological sympy computation
        return True

    monkeypatch.setattr(grading, "_math_equal", slow_math_equal)
    reset_grade_timeout_count()
    try:
        start = time.monotonic()
        result = grade_detailed("\\sqrt{2}/2", "\\frac{1}{\\sqrt{2}}", timeout_s=0.2)
        elapsed = time.monotonic() - start
        assert result == GradeResult(False, "timeout") and result.timed_out
        assert elapsed < 1.5  # 0.2 s timeout plus scheduling slack, far below the 30 s "computation"
        assert grade("\\sqrt{2}/2", "\\frac{1}{\\sqrt{2}}", timeout_s=0.2) is False
        assert grade_timeout_count() == 2  # two timed-out calls
        assert reset_grade_timeout_count() == 2
        assert grade_timeout_count() == 0
    finally:
        release.set()


def test_grade_error_in_math_verify_is_not_equal(monkeypatch):
    def broken(pred, gold):
        raise RuntimeError("boom")

    monkeypatch.setattr(grading, "_math_equal", broken)
    assert grade_detailed("\\sqrt{2}/2", "\\frac{1}{\\sqrt{2}}") == GradeResult(False, "math_error")


def test_grade_works_off_the_main_thread():
    # math_verify's own timeouts use signal.alarm, which raises outside the main thread.
    results = []
    worker = threading.Thread(
        target=lambda: results.append(grade_detailed("\\sqrt{2}/2", "\\frac{1}{\\sqrt{2}}"))
    )
    worker.start()
    worker.join(30)
    assert results == [GradeResult(True, "math")]


def test_grade_without_timeout_runs_inline():
    assert grade_detailed("\\sqrt{2}/2", "\\frac{1}{\\sqrt{2}}", timeout_s=None) == GradeResult(True, "math")


def test_math_verdicts_are_cached_per_pair_and_unchanged_by_the_cache():
    # Votes compare the same short answers again and again; each pair goes to math_verify once per process.
    grading.warm_up()
    grading._math_equal.cache_clear()
    pairs = [("\\sqrt{2}/2", "\\frac{1}{\\sqrt{2}}"), ("\\sqrt{2}", "\\sqrt{3}")]
    first = [grade_detailed(p, g, timeout_s=60) for p, g in pairs]
    again = [grade_detailed(p, g, timeout_s=60) for p, g in pairs]
    assert first == again == [GradeResult(True, "math"), GradeResult(False, "math")]
    info = grading._math_equal.cache_info()
    assert (info.misses, info.hits) == (2, 2)
    # order matters: (sqrt 3, sqrt 2) is a new pair
    assert grade_detailed("\\sqrt{3}", "\\sqrt{2}", timeout_s=60) == GradeResult(False, "math")
    assert grading._math_equal.cache_info().misses == 3


@pytest.mark.parametrize("timeout_s", [0, -1.0])
def test_grade_rejects_bad_timeout(timeout_s):
    with pytest.raises(ValueError, match="timeout_s"):
        grade("1", "1", timeout_s=timeout_s)


# ---------------------------------------------------------------------------------------------------------
# vote / majority_vote (order independence and transitivity: tests/test_grading.py)
# ---------------------------------------------------------------------------------------------------------


def test_majority_vote_tie_goes_to_the_smaller_key():
    # Groups: A = 2, B = 2 → tie; keys ("choice", "A") < ("choice", "B") → A whatever the order; p = 2/4.
    assert majority_vote(["B", "A", "A", "B"]) == ("A", 0.5)
    assert majority_vote(["A", "B", "B", "A"]) == ("A", 0.5)


def test_majority_vote_groups_equivalent_answers():
    # {"0.5", "\frac{1}{2}", "1/2"} = 3 (one number key, 1/2; representative: the smallest string of the
    # equally common spellings, "0.5"), {"3"} = 1, None counts only in the denominator: p = 3/5 = 0.6.
    assert majority_vote(["0.5", "\\frac{1}{2}", "1/2", None, "3"]) == ("0.5", 3 / 5)


def test_majority_vote_choice_letters():
    # "(A)" and "A" are one group of 2 out of 3 answers → p = 2/3; representative "(A)" ("(" < "A").
    assert majority_vote(["(A)", "A", "B."]) == ("(A)", 2 / 3)


def test_majority_vote_unparsed_answers():
    assert majority_vote([None, None, None]) == (None, 0.0)  # all unparsed
    assert majority_vote(["", "  ", None]) == (None, 0.0)  # blank = unparsed
    assert majority_vote([]) == (None, 0.0)  # empty list
    assert majority_vote(["A", None]) == ("A", 0.5)  # 1 of 2


def test_vote_groups_silver_and_p_are_one_computation():
    # "3": 2; "0.5"/"\frac{1}{2}": 2 (key 1/2); "7": 1. Tie 2-2 → key 1/2 < 3/1 → "0.5" leads; p = 2/6.
    answers = ["3", "0.5", "\\frac{1}{2}", "3", "7", None]
    result = vote(answers)
    assert result == Vote("0.5", 2 / 6, (("0.5", 2), ("3", 2), ("7", 1)), timeouts=0, left_out=0)
    assert (result.silver, result.p) == (result.groups[0][0], result.groups[0][1] / len(answers))
    assert majority_vote(answers) == ("0.5", 2 / 6)
    assert vote([None, ""]).groups == ()


# ---------------------------------------------------------------------------------------------------------
# uncertainty_reward / questioner_reward
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "p, paper, code",
    [
        (0.0, 0.0, 0.0),  # paper: 1 - 2|0 - 1/2| = 1 - 1 = 0;        code: min(0, 1) = 0
        (0.25, 0.5, 0.25),  # paper: 1 - 2|0.25 - 0.5| = 1 - 0.5 = 0.5;  code: min(0.25, 0.75) = 0.25
        (0.5, 1.0, 0.5),  # paper: 1 - 2·0 = 1;                       code: min(0.5, 0.5) = 0.5
        (0.75, 0.5, 0.25),  # paper: 1 - 2·0.25 = 0.5;                  code: min(0.75, 0.25) = 0.25
        (1.0, 0.0, 0.0),  # paper: 1 - 2·0.5 = 0;                     code: min(1, 0) = 0
    ],
)
def test_uncertainty_reward_values(p, paper, code):
    # All values are exact binary fractions, so exact equality is safe.
    assert uncertainty_reward(p) == paper
    assert uncertainty_reward(p, form="paper") == paper
    assert uncertainty_reward(p, form="code") == code


def test_uncertainty_reward_bad_form_names_it():
    with pytest.raises(ValueError, match="banana"):
        uncertainty_reward(0.5, form="banana")


@pytest.mark.parametrize("p", [-0.1, 1.1, math.nan, None, "0.5"])
def test_uncertainty_reward_bad_p(p):
    with pytest.raises(ValueError, match="p must be"):
        uncertainty_reward(p)


def test_questioner_reward_valid():
    # paper: u(0.5) = 1; total = 1 - 0.25 = 0.75.
    assert questioner_reward(True, 0.5, 0.25) == QuestionerReward(0.75, 1.0, 0.25, True)
    # code: u(0.75) = 0.25; total = 0.25 - 0.5 = -0.25 (negative allowed without clipping).
    assert questioner_reward(True, 0.75, 0.5, form="code") == QuestionerReward(-0.25, 0.25, 0.5, True)


def test_questioner_reward_clip_at_zero():
    # code: 0.25 - 0.5 = -0.25 → max(0, -0.25) = 0.
    assert questioner_reward(True, 0.75, 0.5, form="code", clip_at_zero=True) == QuestionerReward(
        0.0, 0.25, 0.5, True
    )
    # paper: u(0.25) = 0.5; 0.5 - 0.25 = 0.25 > 0 → unchanged by clipping.
    assert questioner_reward(True, 0.25, 0.25, clip_at_zero=True).total == 0.25


def test_questioner_reward_invalid():
    # Invalid → total = invalid_penalty; the penalty is recorded but not subtracted; clipping does not apply.
    assert questioner_reward(False, None, 0.5) == QuestionerReward(-1.0, 0.0, 0.5, False)
    assert questioner_reward(False, 0.5, 0.5, invalid_penalty=-0.5, clip_at_zero=True) == QuestionerReward(
        -0.5, 0.0, 0.5, False
    )


def test_questioner_reward_no_parsed_answers():
    # Valid question but p = None (no Reasoner answer parsed) → uncertainty 0; total = 0 - 0.125 = -0.125.
    assert questioner_reward(True, None, 0.125) == QuestionerReward(-0.125, 0.0, 0.125, True)


def test_questioner_reward_rejects_bad_arguments():
    with pytest.raises(ValueError, match="banana"):
        questioner_reward(False, None, 0.5, form="banana")  # checked even for invalid outputs
    with pytest.raises(ValueError, match="penalty"):
        questioner_reward(True, 0.5, math.nan)
    with pytest.raises(ValueError, match="p must be"):
        questioner_reward(True, 1.5, 0.0)


# ---------------------------------------------------------------------------------------------------------
# reasoner_reward
# ---------------------------------------------------------------------------------------------------------


def test_reasoner_reward_correct():
    reward = reasoner_reward("Half of them. \\boxed{\\frac{1}{2}}", "0.5")
    # accuracy 1, format 1 → 0.9·1 + 0.1·1 = 1.0
    assert (reward.accuracy, reward.format, reward.answer, reward.timed_out) == (
        1.0,
        1.0,
        "\\frac{1}{2}",
        False,
    )
    assert reward.total == pytest.approx(1.0, abs=1e-12)


def test_reasoner_reward_wrong_but_boxed():
    reward = reasoner_reward("\\boxed{3}", "4")
    # accuracy 0, format 1 → 0.9·0 + 0.1·1 = 0.1
    assert (reward.accuracy, reward.format) == (0.0, 1.0)
    assert reward.total == pytest.approx(0.1, abs=1e-12)


def test_reasoner_reward_no_box_or_empty_box():
    # No answer → accuracy 0, format 0 → total 0.
    assert reasoner_reward("The answer is 4.", "4").total == 0.0
    assert reasoner_reward("The answer is 4.", "4").answer is None
    assert reasoner_reward("\\boxed{}", "4").format == 0.0  # an empty box is not an answer
    assert reasoner_reward("\\boxed{4", "4").total == 0.0  # truncated box


def test_reasoner_reward_weights_and_missing_silver():
    # format_weight 0.5, wrong answer: 0.5·0 + 0.5·1 = 0.5.
    assert reasoner_reward("\\boxed{(B)}", "A", format_weight=0.5).total == pytest.approx(0.5, abs=1e-12)
    # format_weight 0, correct letter: 1·1 + 0·1 = 1.
    assert reasoner_reward("\\boxed{(B)}", "B", format_weight=0.0).total == 1.0
    # No silver label → accuracy 0, format 1 → 0.1.
    assert reasoner_reward("\\boxed{3}", None).total == pytest.approx(0.1, abs=1e-12)
    with pytest.raises(ValueError, match="format_weight"):
        reasoner_reward("\\boxed{3}", "3", format_weight=1.5)


def test_reasoner_reward_reports_timeout(monkeypatch):
    release = threading.Event()
    monkeypatch.setattr(grading, "_math_equal", lambda pred, gold: release.wait(30))
    try:
        reward = reasoner_reward("\\boxed{\\sqrt{2}/2}", "\\frac{1}{\\sqrt{2}}", timeout_s=0.1)
        # Timed out → accuracy 0, format 1 → 0.1.
        assert (reward.accuracy, reward.format, reward.timed_out) == (0.0, 1.0, True)
    finally:
        release.set()


# ---------------------------------------------------------------------------------------------------------
# BLEU clustering penalty
# ---------------------------------------------------------------------------------------------------------


def _reference_penalty(questions, distance_threshold=0.5):
    """The R-Zero/VisPlay construction, written out independently of visplay.rewards."""
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
    from sklearn.cluster import AgglomerativeClustering

    n = len(questions)
    smoother = SmoothingFunction().method1
    dist = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            score = sentence_bleu([questions[j].split()], questions[i].split(), smoothing_function=smoother)
            dist[i, j] = dist[j, i] = 1 - score
    labels = AgglomerativeClustering(
        n_clusters=None, distance_threshold=distance_threshold, metric="precomputed", linkage="average"
    ).fit_predict(dist)
    sizes = Counter(labels)
    return [sizes[label] / n for label in labels]


def _random_batches():
    """Deterministic random-ish question batches with real near-duplicates, so clusters of several sizes form."""
    rng = random.Random(20251119)
    things = ["car", "dog", "tree", "red sign", "person", "window", "bus"]
    templates = [
        "what color is the {a} in the image",
        "how many {a}s are visible in this picture",
        "is the {a} to the left of the {b}",
        "what is the distance between the {a} and the {b} in meters",
        "which object is closer to the camera , the {a} or the {b}",
    ]
    vocabulary = [
        "alpha",
        "beta",
        "gamma",
        "delta",
        "epsilon",
        "zeta",
        "eta",
        "theta",
        "iota",
        "kappa",
        "lambda",
        "mu",
    ]
    batches = []
    for size in (2, 3, 5, 8, 13, 21):
        batch = []
        for _ in range(size):
            if rng.random() < 0.2:  # unrelated word salad
                batch.append(" ".join(rng.choice(vocabulary) for _ in range(rng.randint(1, 9))))
            else:
                batch.append(rng.choice(templates).format(a=rng.choice(things), b=rng.choice(things)))
        batches.append(batch)
    return batches


def test_bleu_penalty_matches_sklearn_reference():
    batches = _random_batches()
    nontrivial = 0
    for batch in batches:
        ours = bleu_cluster_penalty(batch)
        reference = _reference_penalty(batch)
        assert ours == pytest.approx(reference, abs=1e-9)
        n = len(batch)
        nontrivial += len(set(reference)) > 1 or reference[0] not in (1.0, 1 / n)
    assert nontrivial >= 3  # the batches really exercise mixed cluster sizes


def _tie_heavy_batches(count=150):
    """Short questions over a 4-word vocabulary: many equal BLEU distances, so tie order in the linkage counts."""
    rng = random.Random(7)
    words = ["what", "red", "ball", "left"]
    return [
        [" ".join(rng.choice(words) for _ in range(rng.randint(0, 6))) for _ in range(rng.randint(2, 12))]
        for _ in range(count)
    ]


def test_bleu_penalty_matches_reference_with_ties_and_short_questions():
    # visplay computes BLEU and the linkage cut itself (no nltk/sklearn import in a scoring worker); this
    # is the check that it is the same construction, on batches built to have equal distances everywhere.
    for threshold in (0.5, 0.8):
        for batch in _tie_heavy_batches():
            assert bleu_cluster_penalty(batch, threshold) == pytest.approx(
                _reference_penalty(batch, threshold), abs=1e-9
            ), batch


def test_sentence_bleu_matches_nltk():
    from nltk.translate.bleu_score import SmoothingFunction
    from nltk.translate.bleu_score import sentence_bleu as nltk_bleu

    smoother = SmoothingFunction().method1
    for batch in _tie_heavy_batches(60) + _random_batches():
        for hyp in batch:
            for ref in batch:
                ours = visplay.rewards.diversity.sentence_bleu(ref.split(), hyp.split())
                theirs = (
                    nltk_bleu([ref.split()], hyp.split(), smoothing_function=smoother) if hyp and ref else 0
                )
                assert ours == pytest.approx(theirs, abs=1e-12), (hyp, ref)


def test_bleu_penalty_identical_questions():
    # BLEU(q, q) = 1 for >= 4 tokens → distance 0 → one cluster of 3 → 3/3 = 1.0 each.
    assert bleu_cluster_penalty(["what color is the car"] * 3) == [1.0, 1.0, 1.0]


def test_bleu_penalty_totally_different_questions():
    # No shared unigram → nltk BLEU = 0 → all distances 1 ≥ 0.5 → 4 singletons → 1/4 each.
    questions = [
        "how many dogs are here",
        "what colour is the sky",
        "is it raining outside now",
        "name every car",
    ]
    assert bleu_cluster_penalty(questions) == [0.25, 0.25, 0.25, 0.25]


def test_bleu_penalty_small_cases():
    assert bleu_cluster_penalty([]) == []
    assert bleu_cluster_penalty(["only one question here"]) == [1.0]
    # Empty questions score BLEU 0 against everything (distance 1) → singletons, no crash.
    assert bleu_cluster_penalty(["", ""]) == [0.5, 0.5]
    assert bleu_cluster_penalty(["", "what color is the car", "what color is the car"]) == [
        1 / 3,
        2 / 3,
        2 / 3,
    ]


def test_bleu_distance_hand_derived():
    # hyp "a b c d e" vs ref "a b c d f": p1 = 4/5, p2 = 3/4, p3 = 2/3, p4 = 1/2, equal lengths → BP = 1.
    # BLEU = (4/5 · 3/4 · 2/3 · 1/2)^(1/4) = 0.2^(1/4) ≈ 0.6687 → distance ≈ 0.3313.
    dist = bleu_distance_matrix(["a b c d e", "a b c d f"])
    assert dist[0, 1] == dist[1, 0] == pytest.approx(1 - 0.2**0.25, abs=1e-12)
    assert dist[0, 0] == dist[1, 1] == 0.0
    # hyp "a b c d e" vs ref "a b c x y": p1 = 3/5, p2 = 2/4, p3 = 1/3, p4 = 0/2 → method1 → (0 + 0.1)/2 = 0.05.
    # BLEU = (0.6 · 0.5 · 1/3 · 0.05)^(1/4) = 0.005^(1/4) ≈ 0.2659 → distance ≈ 0.7341.
    assert bleu_distance_matrix(["a b c d e", "a b c x y"])[0, 1] == pytest.approx(1 - 0.005**0.25, abs=1e-12)


def test_bleu_distance_uses_earlier_question_as_hypothesis():
    # Row i < column j: hypothesis = question i. hyp "a b c d" vs ref "a b c d e f g h": all precisions 1,
    # BP = exp(1 - 8/4) = e^-1 → distance 1 - e^-1 ≈ 0.6321.
    assert bleu_distance_matrix(["a b c d", "a b c d e f g h"])[0, 1] == pytest.approx(
        1 - math.exp(-1), abs=1e-12
    )
    # Swapped: hyp has 8 tokens, p1 = 4/8, p2 = 3/7, p3 = 2/6, p4 = 1/5, BP = 1.
    # BLEU = (1/2 · 3/7 · 1/3 · 1/5)^(1/4) = (1/70)^(1/4) ≈ 0.3457 → distance ≈ 0.6543.
    assert bleu_distance_matrix(["a b c d e f g h", "a b c d"])[0, 1] == pytest.approx(
        1 - (1 / 70) ** 0.25, abs=1e-12
    )


def test_bleu_penalty_hand_derived_clusters():
    # d(0,1) ≈ 0.3313 < 0.5 → merge {0,1}; q2 shares nothing → distance 1 to both; average linkage
    # = (1 + 1)/2 = 1 ≥ 0.5 → stays alone. Penalties: 2/3, 2/3, 1/3.
    assert bleu_cluster_penalty(["a b c d e", "a b c d f", "v w x y z"]) == [2 / 3, 2 / 3, 1 / 3]
    # d ≈ 0.7341 ≥ 0.5 → two singletons → 1/2 each.
    assert bleu_cluster_penalty(["a b c d e", "a b c x y"]) == [0.5, 0.5]
    # Raising the threshold to 0.8 merges them: 0.7341 < 0.8 → one cluster → 1.0 each.
    assert bleu_cluster_penalty(["a b c d e", "a b c x y"], distance_threshold=0.8) == [1.0, 1.0]


def test_bleu_penalty_rejects_bad_threshold():
    with pytest.raises(ValueError, match="distance_threshold"):
        bleu_cluster_penalty(["a", "b"], distance_threshold=0)


# ---------------------------------------------------------------------------------------------------------
# Package boundary
# ---------------------------------------------------------------------------------------------------------


ALLOWED_REWARDS_IMPORTS = {
    "__future__",
    "collections",
    "dataclasses",
    "functools",
    "fractions",
    "math",
    "math_verify",
    "numpy",
    "queue",
    "re",
    "scipy",
    "threading",
    "typing",
    "visplay",
}


def test_rewards_package_is_pure():
    # visplay/rewards/ may import only pure-computation libraries (no Ray, no vLLM) and never calls open().
    package_dir = Path(visplay.rewards.__file__).parent
    sources = sorted(package_dir.glob("*.py"))
    assert len(sources) >= 7
    for source in sources:
        tree = ast.parse(source.read_text(), filename=str(source))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                roots = {(node.module or "").split(".")[0]}
            else:
                roots = set()
            assert roots <= ALLOWED_REWARDS_IMPORTS, (
                f"{source.name} imports {roots - ALLOWED_REWARDS_IMPORTS}"
            )
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id != "open", f"{source.name} opens a file"
