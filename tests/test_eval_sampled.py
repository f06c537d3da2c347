"""Sampled pass@1 and maj@k (visplay/eval/sampled.py): exact values, then through vLLM on the warm engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from visplay.checkpoints import Checkpoint, model_version
from visplay.config import load_config
from visplay.eval.benchmarks import BENCHMARKS, load_benchmark
from visplay.eval.run import SYNTHETIC, evaluate
from visplay.eval.sampled import majority_text, sampled_scores
from visplay.eval.schema import EvalExample

ROOT = Path(__file__).resolve().parents[1]
IMAGE = b"\x89PNG-not-read-by-the-scorer"


def _example(example_id: str, answer: str, category: str) -> EvalExample:
    return EvalExample(
        benchmark=SYNTHETIC, example_id=example_id, question="How many?", images=(IMAGE,), options=(),
        answer=answer, answer_type="math", category=category,
    )  # fmt: skip


def test_majority_text_is_the_vote_of_the_boxed_answers() -> None:
    assert majority_text(["\\boxed{A}", "\\boxed{B}", "so \\boxed{A}."]) == "\\boxed{A}"  # A: 2 of 3
    assert majority_text(["no answer", "none"]) == ""  # nothing parsed: no silver label
    assert (
        majority_text(["\\boxed{0.5}", "\\boxed{1/2}", "\\boxed{3}"]) == "\\boxed{0.5}"
    )  # 0.5 = 1/2: one class


def test_pass1_and_majk_overall_and_per_skill() -> None:
    score = BENCHMARKS[SYNTHETIC].score
    examples = [_example("a", "2", "count"), _example("b", "3", "count"), _example("c", "1", "colour")]
    samples = {
        "a": ["\\boxed{2}", "\\boxed{2}", "\\boxed{4}", "\\boxed{2}"],  # 3 of 4 right; majority 2: right
        "b": ["\\boxed{3}", "\\boxed{1}", "\\boxed{1}", "\\boxed{2}"],  # 1 of 4 right; majority 1: wrong
        "c": ["\\boxed{1}", "\\boxed{2}", "\\boxed{3}", "\\boxed{1}"],  # 2 of 4 right; majority 1: right
    }
    got = sampled_scores(examples, samples, score)
    # pass@1: (0.75 + 0.25 + 0.5) / 3 = 0.5; maj@4: (1 + 0 + 1) / 3; count: (0.75 + 0.25) / 2 and 1 / 2
    assert got == pytest.approx({
        "sampled_pass1": 0.5, "sampled_maj4": 2 / 3,
        "sampled_pass1/colour": 0.5, "sampled_maj4/colour": 1.0,
        "sampled_pass1/count": 0.5, "sampled_maj4/count": 0.5,
    })  # fmt: skip
    assert sampled_scores([], {}, score) == {}
    with pytest.raises(ValueError, match="same number"):
        sampled_scores(examples, {**samples, "c": ["\\boxed{1}"]}, score)


@pytest.mark.slow
def test_sampled_evaluation_through_vllm(
    bootstrapped_engine, bootstrapped_model, tmp_path, ray_local
) -> None:
    """``eval.samples=4``: four seeded samples per held-out question on disk, and the report's figures are
    the pure function of them; a second evaluation samples the same answers."""
    cfg = load_config(ROOT / "configs" / "tiny-cpu.yaml", [
        f"out_dir={tmp_path}", "eval.synthetic_n=3", f"eval.synthetic_path={tmp_path / 'heldout'}", "eval.samples=4",
    ])  # fmt: skip
    model = Checkpoint(
        str(bootstrapped_model), model_version(bootstrapped_model), engines=(bootstrapped_engine,)
    )
    (report,) = evaluate(cfg, model, tmp_path / "out")
    rows = [json.loads(line) for line in (tmp_path / "out" / "sampled.jsonl").read_text().splitlines()]
    assert len(rows) == report.n and all(len(r["texts"]) == 4 for r in rows)
    examples = load_benchmark(SYNTHETIC, tmp_path / "heldout").examples
    expected = sampled_scores(
        examples, {r["example_id"]: r["texts"] for r in rows}, BENCHMARKS[SYNTHETIC].score
    )
    assert {k: v for k, v in report.extra.items() if k.startswith("sampled_")} == pytest.approx(expected)
    assert len({t for r in rows for t in r["texts"]}) > len(rows)  # sampled at temperature 1, not greedy
    (again,) = evaluate(cfg, model, tmp_path / "again")
    assert again.extra == report.extra
