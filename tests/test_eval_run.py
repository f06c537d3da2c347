"""The evaluation harness end to end: fixture files of every benchmark adapter plus the held-out synthetic
split, answered greedily by the bootstrapped tiny model through vLLM (Ray Data engine stage on the shared warm
engine), scored, written (report.json, predictions.jsonl) and logged to MLflow. A malformed file fails
before any generation, with a message that names the file and the column.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest

from visplay import tracking
from visplay.checkpoints import Checkpoint, model_version
from visplay.config import load_config
from visplay.eval import ADAPTERS, BenchmarkFormatError, load_benchmark
from visplay.eval.fixtures import write_fixture
from visplay.eval.run import (
    SYNTHETIC,
    VISION_ONLY_QUESTION,
    evaluate,
    load_suites,
    question_text,
    report_metrics,
)
from visplay.eval.schema import EvalExample

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny-cpu.yaml"
PUBLIC = sorted(name for name in ADAPTERS if name != SYNTHETIC)


def _cfg(tmp_path: Path, files: dict[str, Path], synthetic_n: int = 4):
    benchmarks = ",".join(f"{{name: {name}, path: '{path}'}}" for name, path in files.items())
    return load_config(
        CONFIG,
        [f"out_dir={tmp_path}", f"eval.synthetic_n={synthetic_n}", f"eval.synthetic_path={tmp_path / 'heldout'}",
         f"eval.benchmarks=[{benchmarks}]", "eval.max_tokens=32"],
    )  # fmt: skip


def test_question_text_appends_options_only_when_missing():
    def example(question: str, options: tuple[str, ...]) -> EvalExample:
        return EvalExample("1", "x", question, b"png", "A" if options else "3", options, "c",
                           "choice" if options else "math", {})  # fmt: skip

    # options already in the text (the synthetic split's style): unchanged
    inline = example("Colour? Options: A. red, B. blue.", ("red", "blue"))
    assert question_text(inline) == "Colour? Options: A. red, B. blue."
    # options kept apart (MMMU's style): appended with letters
    assert question_text(example("Colour?", ("red", "blue"))) == "Colour? Options: A. red, B. blue."
    assert question_text(example(" How many? ", ())) == "How many?"
    assert (
        question_text(example("  ", ())) == VISION_ONLY_QUESTION
    )  # MathVerse Vision Only: question in the image


def test_malformed_file_fails_before_any_generation(tmp_path):
    bad = tmp_path / "mmstar.jsonl"
    bad.write_text(json.dumps({"idx": 0, "question": "q", "answer": "A", "category": "c"}) + "\n")  # no image
    cfg = _cfg(tmp_path, {"mmstar": bad}, synthetic_n=0)
    with pytest.raises(BenchmarkFormatError) as err:
        load_suites(cfg)
    assert str(bad) in str(err.value) and "image" in str(err.value)
    with pytest.raises(ValueError, match="not configured"):
        load_suites(cfg, only=["mmvet"])


@pytest.mark.slow
def test_every_adapter_and_the_synthetic_split_through_vllm(
    bootstrapped_engine, bootstrapped_model, tmp_path, ray_local
):
    files = {name: write_fixture(name, tmp_path / "fixtures" / name, n=4) for name in PUBLIC}
    cfg = _cfg(tmp_path, files)
    version = model_version(bootstrapped_model)
    model = Checkpoint(str(bootstrapped_model), version, engines=(bootstrapped_engine,))
    tracking.setup(cfg)
    with tracking.run("eval-test") as run_id:
        reports = evaluate(cfg, model, tmp_path / "out")
        tracking.log_metrics(report_metrics(reports))

    by_name = {r.benchmark: r for r in reports}
    assert sorted(by_name) == sorted([*PUBLIC, SYNTHETIC])
    expected = {name: load_benchmark(name, path) for name, path in files.items()}
    expected[SYNTHETIC] = load_benchmark(SYNTHETIC, tmp_path / "heldout" / "ground_truth.jsonl")
    for name, examples in expected.items():
        with_image = [e for e in examples if e.image]
        assert by_name[name].n == len(with_image), name
        assert by_name[name].extra["text_only_not_answered"] == len(examples) - len(with_image), name
        assert 0.0 <= by_name[name].rule_score <= 1.0
        assert by_name[name].model_version == version
    assert {"aAcc", "fAcc", "qAcc"} <= set(by_name["hallusionbench"].extra)

    # every answer is on disk with its ids and model version; the report is the returned one
    lines = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert len(lines) == sum(r.n for r in reports)
    assert {(row["benchmark"], row["example_id"]) for row in lines} == {
        (name, e.example_id) for name, examples in expected.items() for e in examples if e.image
    }
    assert all(row["model_version"] == version for row in lines)
    assert json.loads((tmp_path / "out" / "report.json").read_text()) == [r.to_dict() for r in reports]
    # greedy and per-example seeded: a second pass gives the same answers
    again = evaluate(cfg, model, tmp_path / "again", only=[SYNTHETIC])
    assert again[0].to_dict() == by_name[SYNTHETIC].to_dict()

    logged = mlflow.MlflowClient().get_run(run_id).data.metrics
    for name in by_name:
        assert logged[f"eval_{name}"] == pytest.approx(by_name[name].rule_score)
