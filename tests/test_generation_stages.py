"""The generation plane's non-engine stages and the corpus dedup, on hand-built Arrow batches (fast)."""

from __future__ import annotations

import json
import threading

import pyarrow as pa
import pytest

from visplay.config import GenerationConfig, RewardConfig
from visplay.data.schemas import QUESTIONS_SCHEMA, SCORED_SCHEMA
from visplay.generation.dedup import dedup_and_cap, normalise_question
from visplay.generation.stages import ExplodeQuestions, QuestionerPrompts, ReasonerPrompts, ScoreQuestions
from visplay.seeds import derive_seed


def test_derive_seed_is_stable_and_distinct():
    assert derive_seed(0, "q", "abc") == derive_seed(0, "q", "abc")
    assert derive_seed(0, "q", "abc") != derive_seed(1, "q", "abc")
    assert 0 <= derive_seed("x") < 2**31


def test_questioner_prompts_add_prompt_and_seed_and_fail_fast():
    batch = pa.table({"image_id": ["a", "b"], "image": [b"1", b"2"]})
    out = QuestionerPrompts(seed=3)(batch)
    assert out["row_seed"].to_pylist() == [derive_seed(3, "q", "a"), derive_seed(3, "q", "b")]
    assert "<|image_pad|>" in out["prompt"][0].as_py()
    with pytest.raises(ValueError, match=r"missing \['image'\]"):
        QuestionerPrompts(seed=3)(pa.table({"image_id": ["a"]}))


def _engine_batch(completions, error=""):
    return pa.table(
        {
            "image_id": ["img"],
            "source": ["/x/img.png"],
            "item": [5],
            "shard": [0],
            "image": [b"png"],
            "row_seed": [11],
            "q_completions": [completions],
            "q_completion_token_ids": [[[1, 2, 3]] * len(completions)],
            "q_sampling": ['{"n": 2}'],
            "q_engine_ckpt": ["ckpt"],
            "q_engine_error": [error],
            "q_engine_seconds": [1.0],
        }
    )


def test_explode_questions_one_row_per_sample_with_parse_result():
    good = "<type>numerical</type><question>How many circles?</question><answer>3</answer>"
    out = ExplodeQuestions()(_engine_batch([good, "garbage"]))
    assert out.schema.equals(QUESTIONS_SCHEMA)
    rows = out.to_pylist()
    assert [r["sample_index"] for r in rows] == [0, 1]
    assert [r["item_rows"] for r in rows] == [2, 2]  # the shard ledger waits for both rows of the item
    assert (
        rows[0]["parse_ok"]
        and rows[0]["question"] == "How many circles?"
        and rows[0]["proposed_answer"] == "3"
    )
    assert not rows[1]["parse_ok"] and rows[1]["parse_error"] == "missing_type"
    assert rows[0]["questioner_seconds"] == 0.5  # 1.0 s of engine time shared by 2 samples
    assert rows[0]["question_id"] != rows[1]["question_id"]


def test_explode_questions_keeps_an_engine_failure_as_one_failed_row():
    rows = ExplodeQuestions()(_engine_batch([], error="RuntimeError: boom")).to_pylist()
    assert len(rows) == 1 and not rows[0]["parse_ok"] and rows[0]["parse_error"] == "RuntimeError: boom"
    assert rows[0]["item_rows"] == 1


def test_reasoner_prompts_skip_unparsed_questions():
    batch = pa.table(
        {"question_id": ["q1", "q2"], "parse_ok": [True, False], "question": ["How many?", None]}
    )
    out = ReasonerPrompts(seed=0)(batch).to_pylist()
    assert "How many?" in out[0]["prompt"] and out[1]["prompt"] is None


def _answered(question_id, question, answers, parse_ok=True, error=""):
    return {
        "question_id": question_id, "image_id": "img-" + question_id, "source": "s", "item": 0, "shard": 0, "image": b"",
        "questioner_ckpt": "q", "questioner_seed": 1, "sample_index": 0, "item_rows": 1, "questioner_sampling": "{}",
        "raw": "raw", "questioner_tokens": 5, "questioner_seconds": 0.1, "parse_ok": parse_ok,
        "parse_error": "" if parse_ok else "missing_type", "qtype": "numerical" if parse_ok else None,
        "question": question, "proposed_answer": "1", "prompt": None, "row_seed": 9,
        "r_completions": answers, "r_completion_token_ids": [[1]] * len(answers), "r_num_generated_tokens": len(answers),
        "r_sampling": "{}", "r_engine_ckpt": "r", "r_engine_error": error, "r_engine_seconds": 0.2,
    }  # fmt: skip


def test_a_question_whose_vote_timed_out_is_dropped_and_counted(monkeypatch):
    # math_verify stalls (a frozen machine): the two square-root spellings cannot be compared with each other
    # or with "1" (3 comparisons, each past the 2 s limit), so the question is dropped as grade_timeout, not
    # kept with a p that depends on the stall; the pass's counts carry the 3 timeouts.
    import visplay.rewards.grading as grading
    from visplay.generation.finalize import partial_counts

    release = threading.Event()
    grading.warm_up()
    monkeypatch.setattr(grading, "_math_equal", lambda pred, gold: release.wait(30))
    try:
        answers = [f"\\boxed{{{a}}}" for a in ["1", "\\sqrt{2}/2", "\\frac{1}{\\sqrt{2}}", "1"]]
        out = ScoreQuestions(GenerationConfig(), RewardConfig())(
            pa.Table.from_pylist([_answered("a", "how long is the diagonal of the square", answers)])
        )
    finally:
        release.set()
    row = out.to_pylist()[0]
    assert (row["drop_reason"], row["grade_timeouts"], row["keep"]) == ("grade_timeout", 3, False)
    counts = partial_counts(out)
    assert counts["grade_timeouts"] == 3 and counts["drops_grade_timeout"] == 1


def test_score_questions_votes_rewards_and_drop_reasons():
    box = "so \\boxed{{{}}}".format
    rows = [
        # p = 2/4 = 0.5 -> kept; paper uncertainty 1 - 2|0.5 - 0.5| = 1
        _answered("a", "how many red circles are there", [box(3), box(3), box(4), "no box"]),
        # p = 4/4 = 1 -> too easy
        _answered("b", "what colour is the big square shape", [box("red")] * 4),
        # p = 1/4 = 0.25 (< 0.3) -> too hard (4 different answers)
        _answered("c", "which bar in the chart is the tallest one", [box("A"), box("B"), box("C"), box("D")]),
        # no boxed answer at all -> no silver
        _answered("d", "is the triangle left of the star shape here", ["x", "y", "z", "w"]),
        _answered("e", None, [], parse_ok=False),  # unparsed: invalid penalty -1
        _answered("f", "how many shapes", [], error="EngineDeadError"),  # engine failure
    ]
    out = ScoreQuestions(GenerationConfig(), RewardConfig())(pa.Table.from_pylist(rows))
    assert out.schema.equals(SCORED_SCHEMA)
    got = {r["question_id"]: r for r in out.to_pylist()}
    assert [got[k]["drop_reason"] for k in "abcdef"] == [
        "",
        "too_easy",
        "too_hard",
        "no_silver",
        "unparsed",
        "engine_error",
    ]
    assert got["a"]["keep"] and got["a"]["silver"] == "3" and got["a"]["p"] == 0.5
    assert json.loads(got["a"]["votes"]) == [["3", 2], ["4", 1]]
    assert got["a"]["uncertainty"] == 1.0
    assert got["b"]["p"] == 1.0 and got["b"]["uncertainty"] == 0.0
    assert got["c"]["p"] == 0.25 and got["c"]["uncertainty"] == 0.5  # 1 - 2|0.25 - 0.5|
    assert got["d"]["silver"] is None and got["d"]["p"] == 0.0
    # Four distinct valid questions (a-d, plus f which parsed) share no long n-grams: each is its own
    # BLEU cluster of 1 in a window of 5 valid questions -> penalty 1/5 each; reward = uncertainty - 0.2.
    assert got["a"]["diversity_penalty"] == pytest.approx(0.2)
    assert got["a"]["reward"] == pytest.approx(0.8)
    assert got["e"]["reward"] == -1.0 and got["e"]["diversity_penalty"] == 0.0


def test_normalise_question():
    assert normalise_question("  What COLOUR is it?? ") == normalise_question("what colour is it")


def _scored(image_id, question, reward, keep=True):
    return {
        "image_id": image_id,
        "question": question,
        "reward": reward,
        "keep": keep,
        "drop_reason": "" if keep else "too_easy",
    }


def test_dedup_corpus_scope_and_per_image_cap():
    rows = [
        _scored("i1", "How many circles?", 0.5),
        _scored("i2", "how many circles", 0.9),  # same normalised text on another image: duplicate (corpus)
        _scored("i1", "Which is red?", 0.7),
        _scored("i1", "Which is blue?", 0.9),
        _scored("i1", "Which is green?", 0.1, keep=False),  # already dropped: untouched
    ]
    # i1 keeps 3 unique questions; cap 2 keeps the two best rewards (0.9 "blue", 0.7 "red").
    assert dedup_and_cap(rows, max_per_image=2) == ["per_image_cap", "duplicate", "", "", "too_easy"]
    # Image scope: the i2 question is not a duplicate any more.
    assert dedup_and_cap(rows, max_per_image=2, scope="image") == ["per_image_cap", "", "", "", "too_easy"]
    with pytest.raises(ValueError, match="scope"):
        dedup_and_cap(rows, max_per_image=2, scope="galaxy")
