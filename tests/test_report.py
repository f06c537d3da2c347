"""The per-iteration report: p histogram (exact), summary text, history round trip, plot, step metrics file."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from visplay.report import (
    IterationRecord,
    load_history,
    p_histogram,
    plot_history,
    read_step_metrics,
    save_history,
    summary_text,
)


def test_p_histogram_bins_are_half_open_and_p_one_lands_in_the_last_bin():
    # 0.0 -> bin 0; 0.25 -> int(2.5)=2; 0.3 -> int(3.0000000000000004)=3; 0.5 -> 5; 0.999 -> 9; 1.0 -> clamp to 9.
    assert p_histogram([0.0, 0.25, 0.3, 0.5, 0.999, 1.0]) == [1, 0, 1, 1, 0, 1, 0, 0, 0, 2]
    assert p_histogram([], bins=4) == [0, 0, 0, 0]
    assert p_histogram([0.5, 0.75], bins=4) == [0, 0, 1, 1]  # 0.5*4=2 -> bin 2; 0.75*4=3 -> bin 3
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        p_histogram([1.5])


def _record(it=1) -> IterationRecord:
    return IterationRecord(
        iteration=it, questions=8, kept=3, answered=4, p_histogram=p_histogram([0.25, 0.5, 0.5, 1.0]),
        p_mean=0.5625, questioner_reward=[0.1, 0.3],
        reasoner_reward=[], eval_scores={}, seconds={"generate": 12.4},
    )  # fmt: skip


def test_summary_text_states_counts_histogram_rewards_and_what_did_not_run():
    text = summary_text(_record(), width=10)
    lines = text.splitlines()
    assert lines[0].startswith("=== iteration 1 ")
    assert lines[1] == "questions   3 kept of 8 written (38%), 4 answered"  # 3/8 = 37.5% -> 38%
    # Bin [0.5, 0.6) holds the two 0.5s: the longest bar (width 10); [0.2, 0.3) holds one: 5 marks.
    assert "  [0.5, 0.6)     2 ##########" in lines
    assert "  [0.2, 0.3)     1 #####" in lines
    assert "  [0.9, 1.0]     1 #####" in lines
    assert "questioner  reward first 0.100 -> last 0.300 (mean 0.200, 2 steps)" in lines
    assert "reasoner    not trained this iteration" in lines
    assert "eval        not run" in lines
    assert "time        generate 12s" in lines


def test_history_round_trips_and_plots(tmp_path):
    records = [_record(1), _record(2)]
    path = save_history(records, tmp_path / "history.json")
    assert load_history(path) == records
    assert load_history(tmp_path / "missing.json") == []
    png = plot_history(records, tmp_path / "curves.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_collect_reads_p_of_answered_questions_from_both_tables(tmp_path):
    kept = pa.table({"parse_ok": [True, True], "p": [0.5, 0.75]})
    dropped = pa.table({"parse_ok": [True, False, True], "p": [1.0, None, 0.125]})
    pq.write_table(kept, tmp_path / "q.parquet")
    pq.write_table(dropped, tmp_path / "d.parquet")
    record = IterationRecord.collect(
        3, {"questions": str(tmp_path / "q.parquet"), "dropped": str(tmp_path / "d.parquet")},
        [{"step": 1, "reward_mean": 0.2}], [{"step": 1, "reward_mean": 0.4}, {"step": 2, "reward_mean": 0.6}],
    )  # fmt: skip
    assert (record.iteration, record.questions, record.kept) == (3, 5, 2)
    # The unparsed question has no p: 4 answered, p = 0.5 -> bin 5, 0.75 -> 7, 1.0 -> 9, 0.125 -> 1;
    # mean (0.5 + 0.75 + 1.0 + 0.125) / 4 = 2.375 / 4 = 0.59375.
    assert (record.answered, record.p_mean) == (4, 0.59375)
    assert record.p_histogram == [0, 1, 0, 0, 0, 1, 0, 1, 0, 1]
    assert record.questioner_reward == [0.2] and record.reasoner_reward == [0.4, 0.6]


def test_step_metrics_keep_one_row_per_step_the_last_write_winning(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rows = [
        {"step": 1, "reward_mean": 0.1},
        {"step": 2, "reward_mean": 0.2},
        {"step": 2, "reward_mean": 0.25},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert read_step_metrics(path) == [{"step": 1, "reward_mean": 0.1}, {"step": 2, "reward_mean": 0.25}]
    assert read_step_metrics(tmp_path / "none.jsonl") == []
