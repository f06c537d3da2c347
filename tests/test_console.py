"""What reaches the console in quiet mode, the driver's log file, and the driver's GRPO step lines."""

from __future__ import annotations

import json
import logging

from visplay import console
from visplay.train.trainer import StepLines


def _record(name: str, level: int, msg: str) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, None, None)


def test_quiet_console_passes_own_records_and_each_outside_warning_once():
    keep = console.ConsoleFilter()
    seen = [
        keep.filter(_record("visplay.train.trainer", logging.INFO, "questioner step 1/2")),  # own: kept
        keep.filter(_record("__main__", logging.DEBUG, "a job's own line")),  # a job script's logger: kept
        keep.filter(_record("ray.data", logging.INFO, "Running Dataset")),  # outside INFO: file only
        keep.filter(_record("ray.data", logging.WARNING, "no available CPUs")),  # first time: kept
        keep.filter(_record("ray.data", logging.WARNING, "no available CPUs")),  # repeated: dropped
        keep.filter(_record("vllm", logging.WARNING, "no available CPUs")),  # same text, other logger: kept
        keep.filter(_record("py.warnings", logging.ERROR, "boom")),  # errors: kept once
    ]
    assert seen == [True, True, False, True, False, True, True]


def test_the_log_file_gets_every_record(tmp_path):
    root = logging.getLogger()
    before = list(root.handlers)
    try:
        path = console.log_to(tmp_path / "logs")
        library = logging.getLogger("some.library")
        library.setLevel(logging.INFO)  # as a job's root logger is (console.setup)
        library.info("chatter the console does not show")
        library.setLevel(logging.DEBUG)
        library.debug("too fine for the file")  # Ray Data's logger lets DEBUG through; the file stops it
        for handler in root.handlers:
            handler.flush()
        assert path == tmp_path / "logs" / "driver.log"
        text = path.read_text()
        assert "INFO some.library: chatter the console does not show" in text
        assert "too fine" not in text
    finally:
        for handler in root.handlers[len(before) :]:
            handler.close()
        root.handlers[:] = before


def test_step_lines_log_each_new_complete_step_once(tmp_path, caplog):
    metrics = tmp_path / "metrics.jsonl"
    old = {"step": 1, "reward_mean": 0.5, "time_gen": 1.0}
    metrics.write_text(json.dumps(old) + "\n")  # a resumed phase: its earlier steps are not printed again
    lines = StepLines(metrics, "reasoner", steps=3)
    new = {"step": 2, "reward_mean": 0.25, "loss": 0.125, "kl": 0.0, "time_setup": 0.5, "time_gen": 1.0}
    with metrics.open("a") as f:
        f.write(json.dumps(new) + "\n" + '{"step": 3, "rew')  # step 3 half written
    with caplog.at_level(logging.INFO, logger="visplay.train.trainer"):
        lines()
        lines()  # nothing new: nothing logged
    # seconds: time_setup 0.5 + time_gen 1.0 = 1.5
    assert caplog.messages == ["reasoner step 2/3 reward_mean=0.25 loss=0.125 kl=0 (1.5s, setup 0.5s)"]
