"""The evaluation harness end to end: small releases of MMMU (a two-image question, and one with more images
than the engine takes), HallusionBench (a text-only question) and MMStar plus the held-out synthetic split,
answered greedily by the bootstrapped tiny model through vLLM (Ray Data engine stage on the shared warm
engine), scored, written (predictions.jsonl, rejects.jsonl, report.json) and logged to MLflow; a judge
that cannot be reached loses no prediction. A malformed file fails before any generation.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
from benchmark_files import image_struct, png, write_parquet

from visplay import prompts, tracking
from visplay.checkpoints import Checkpoint, model_version
from visplay.config import load_config
from visplay.eval import BenchmarkFormatError, load_benchmark
from visplay.eval.judge import JudgeError
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


def _cfg(tmp_path: Path, files: dict[str, Path], synthetic_n: int = 4, more: tuple[str, ...] = ()):
    benchmarks = ",".join(f"{{name: {name}, path: '{path}'}}" for name, path in files.items())
    return load_config(
        CONFIG,
        [f"out_dir={tmp_path}", f"eval.synthetic_n={synthetic_n}", f"eval.synthetic_path={tmp_path / 'heldout'}",
         f"eval.benchmarks=[{benchmarks}]", "eval.max_tokens=32",
         "rollout_engine.max_images_per_prompt=2", *more],  # the shared engine takes two (conftest)
    )  # fmt: skip


def _releases(root: Path) -> dict[str, Path]:
    """MMMU: rows 1-image, 2-image, 3-image; HallusionBench: two figure questions and a text-only one;
    MMStar: two rows."""

    def mmmu_row(i: int, n_images: int) -> dict:
        refs = " ".join(f"<image {k}>" for k in range(1, n_images + 1))
        return {"id": f"validation_Art_{i}", "question": f"{refs} Which is brighter?", "options": "['left', 'right']",
                "answer": "A", "question_type": "multiple-choice", "subfield": "art",
                **{f"image_{k}": image_struct(("mmmu", i, k)) if k <= n_images else None for k in range(1, 8)}}  # fmt: skip

    def hb_row(i: int, text_only: bool) -> dict:
        return {"category": "VS" if text_only else "VD", "subcategory": "chart", "visual_input": "0" if text_only else "1",
                "set_id": "0", "figure_id": "0" if text_only else str(i), "sample_note": "", "question_id": "0",
                "question": "Is the bar for 2020 higher than for 2019?", "gt_answer_details": "", "gt_answer": "1",
                "filename": None if text_only else f"./VS/chart/0_{i}.png",
                "image": None if text_only else image_struct(("hb", i))}  # fmt: skip

    mmstar = [{"index": i, "question": "Which colour?\nOptions: A: red, B: blue", "image": png(("star", i)),
               "answer": "AB"[i], "category": "perception"} for i in range(2)]  # fmt: skip
    return {
        "mmmu": write_parquet(root / "Art" / "validation-00000-of-00001.parquet",
                              [mmmu_row(0, 1), mmmu_row(1, 2), mmmu_row(2, 3)]),
        "hallusionbench": write_parquet(root / "hb.parquet", [hb_row(1, False), hb_row(2, False), hb_row(0, True)]),
        "mmstar": write_parquet(root / "mmstar.parquet", mmstar),
    }  # fmt: skip


def test_question_text_appends_options_only_when_missing():
    def example(question: str, options: tuple[str, ...]) -> EvalExample:
        return EvalExample("1", "x", question, (b"png",), "A" if options else "3", options, "c",
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


def test_prompts_carry_one_placeholder_per_image():
    assert prompts.reasoner_prompt("Q?", 2).count(prompts.IMAGE_PLACEHOLDER) == 2
    assert prompts.IMAGE_PLACEHOLDER not in prompts.reasoner_prompt("Q?", 0)  # a text-only question


@pytest.mark.slow
def test_releases_and_the_synthetic_split_through_vllm(
    bootstrapped_engine, bootstrapped_model, tmp_path, ray_local
):
    files = _releases(tmp_path / "releases")
    cfg = _cfg(tmp_path, files)
    version = model_version(bootstrapped_model)
    model = Checkpoint(str(bootstrapped_model), version, engines=(bootstrapped_engine,))
    tracking.setup(cfg)
    with tracking.run("eval-test") as run_id:
        reports = evaluate(cfg, model, tmp_path / "out")
        tracking.log_metrics(report_metrics(reports))

    by_name = {r.benchmark: r for r in reports}
    assert sorted(by_name) == sorted([*files, SYNTHETIC])
    # MMMU: the 1- and 2-image questions are answered (vLLM refuses a prompt whose placeholders and images
    # differ in number, so the answer means both images went in); the 3-image one is a reject with its reason.
    assert by_name["mmmu"].n == 2 and by_name["mmmu"].rejected == 1
    # HallusionBench: all three questions, the text-only one included, are answered and in the metrics.
    assert by_name["hallusionbench"].n == 3 and by_name["hallusionbench"].rejected == 0
    assert {"aAcc", "fAcc", "qAcc"} <= set(by_name["hallusionbench"].extra)
    rejects = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert rejects == [{"benchmark": "mmmu", "example_id": "validation_Art_2", "file": str(files["mmmu"]),
                        "reason": "3 images; the engine takes 2 (max_images_per_prompt of eval.engine, or of "
                                  "rollout_engine when the loop's engines answer)"}]  # fmt: skip
    expected = {name: load_benchmark(name, path).examples for name, path in files.items()}
    expected[SYNTHETIC] = load_benchmark(SYNTHETIC, tmp_path / "heldout").examples
    # every answer is on disk with its ids and model version; the report is the returned one
    lines = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert {(row["benchmark"], row["example_id"]) for row in lines} == {
        (name, e.example_id) for name, examples in expected.items() for e in examples if len(e.images) <= 2
    }
    assert all(row["model_version"] == version for row in lines)
    assert json.loads((tmp_path / "out" / "report.json").read_text()) == [r.to_dict() for r in reports]
    # greedy and per-example seeded: a second pass gives the same answers
    again = evaluate(cfg, model, tmp_path / "again", only=[SYNTHETIC])
    assert again[0].to_dict() == by_name[SYNTHETIC].to_dict()
    logged = mlflow.MlflowClient().get_run(run_id).data.metrics
    for name in by_name:
        assert logged[f"eval_{name}"] == pytest.approx(by_name[name].rule_score)

    # a judge that cannot be reached: the run fails naming the judge, and every prediction is already on disk
    dead = _cfg(tmp_path, {"mmstar": files["mmstar"]}, synthetic_n=0,
                more=("eval.judge={base_url: 'http://127.0.0.1:9/v1', model: judge, max_retries: 0}",))  # fmt: skip
    with pytest.raises(JudgeError, match="127.0.0.1:9"):
        evaluate(dead, model, tmp_path / "judged")
    kept = [json.loads(line) for line in (tmp_path / "judged" / "predictions.jsonl").read_text().splitlines()]
    assert [row["example_id"] for row in kept] == ["0", "1"]
