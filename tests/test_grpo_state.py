"""Bounded training state and a guarded resume: pruning old DeepSpeed states, a torn metrics line."""

from __future__ import annotations

import json
import logging

from visplay.report import read_step_metrics
from visplay.train.grpo import drop_torn_metrics_line, prune_states


def _states(state_dir, steps, latest):
    for step in steps:
        (state_dir / f"step_{step}").mkdir(parents=True)
        (state_dir / f"step_{step}" / "mp_rank_00_model_states.pt").write_bytes(b"x")
    (state_dir / "latest.json").write_text(json.dumps({"step": latest, "tag": f"step_{latest}"}))


def test_prune_keeps_the_newest_states_by_step_number(tmp_path):
    # steps 2, 4, 6, 8, 10 (numeric order, not text order: "step_10" < "step_2" as strings); keep 2.
    _states(tmp_path, [2, 4, 6, 8, 10], latest=10)
    (tmp_path / "step_notes").mkdir()  # not a state: left alone
    assert prune_states(tmp_path, keep=2) == ["step_2", "step_4", "step_6"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.json", "step_10", "step_8", "step_notes"]
    assert prune_states(tmp_path, keep=2) == []  # nothing more to remove


def test_prune_never_removes_the_state_latest_json_names(tmp_path):
    # A marker still naming an older state (the newest one not yet marked): that state stays.
    _states(tmp_path, [2, 4, 6], latest=2)
    assert prune_states(tmp_path, keep=1) == ["step_4"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.json", "step_2", "step_6"]


def test_a_torn_last_metrics_line_is_dropped_with_a_warning(tmp_path, caplog):
    path = tmp_path / "metrics.jsonl"
    path.write_text(
        '{"step": 1, "loss": 0.5}\n{"step": 2, "loss": 0.4}\n{"step": 3, "lo'
    )  # disk filled mid-line
    with caplog.at_level(logging.WARNING):
        assert drop_torn_metrics_line(path)
    assert "torn last line (15 bytes)" in caplog.text  # len('{"step": 3, "lo') = 15
    # the resumed phase appends step 3 again; every row reads back
    with open(path, "a") as f:
        f.write('{"step": 3, "loss": 0.3}\n')
    assert [r["step"] for r in read_step_metrics(path)] == [1, 2, 3]
    assert not drop_torn_metrics_line(path)  # a whole file is left as it is
    assert not drop_torn_metrics_line(tmp_path / "absent.jsonl")
