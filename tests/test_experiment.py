"""The self-evolution experiment (jobs/experiment.py): disjoint splits, the statistics, the report, and a
``--quick`` run of every stage (all five arms from the shared base, evaluation, report) on the tiny model."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from visplay.config import load_config
from visplay.experiment import (
    RunResult,
    answer_variety,
    blind_baseline,
    collect_run,
    distinct_share,
    mean_ci,
    render_report,
)
from visplay.phases import Phase
from visplay.world.corpus import make_corpus, read_ground_truth

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "tiny-cpu.yaml"


def _job():
    """jobs/experiment.py as a module (its argument parsing and run configs)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("experiment_job", ROOT / "jobs" / "experiment.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    return job


def test_the_three_splits_share_no_image(tmp_path: Path) -> None:
    """The shared base's labeled split, the unlabeled corpus and the held-out split, at the sizes, seeds and
    world of configs/tiny-cpu.yaml's experiment: no image id (sha256 of the PNG) occurs twice anywhere."""
    job = _job()
    cfg = job.load_config_from_args(job.parse_args(["--config", str(CONFIG)]))
    kinds, m = cfg.corpus.synthetic_kinds, cfg.models
    splits = {
        "labeled": make_corpus(tmp_path / "b", m.bootstrap_images, m.bootstrap_seed, "bootstrap", kinds=kinds),
        "unlabeled": make_corpus(tmp_path / "u", cfg.corpus.synthetic_n, cfg.corpus.synthetic_seed, kinds=kinds),
        "held-out": make_corpus(tmp_path / "h", cfg.eval.synthetic_n, cfg.eval.synthetic_seed, "heldout", kinds=kinds),
    }  # fmt: skip
    ids = {name: [r["image_id"] for r in read_ground_truth(c.ground_truth)] for name, c in splits.items()}
    every = [i for group in ids.values() for i in group]
    assert len(every) == len(set(every)) == m.bootstrap_images + cfg.corpus.synthetic_n + cfg.eval.synthetic_n
    assert sorted(p.read_bytes() != b"" for p in (tmp_path / "u").rglob("*.png"))  # the images exist


def test_mean_ci_is_the_student_t_interval() -> None:
    # [0.1, 0.2, 0.3]: mean 0.2, sample sd 0.1, se 0.1/sqrt(3); t(0.975, df=2) = 4.3026527297 -> 0.2484137712
    mean, half = mean_ci([0.1, 0.2, 0.3])
    assert mean == pytest.approx(0.2, abs=1e-12) and half == pytest.approx(0.24841377117503302, abs=1e-9)
    # [0.4, 0.6]: sd sqrt(0.02), se 0.1; t(0.975, df=1) = 12.7062047362 -> 1.2706204736
    assert mean_ci([0.4, 0.6])[1] == pytest.approx(1.2706204736174693, abs=1e-9)
    assert mean_ci([0.7])[0] == 0.7 and math.isnan(mean_ci([0.7])[1])  # one seed: no interval
    with pytest.raises(ValueError):
        mean_ci([])


def test_distinct_share_normalises_case_and_spaces() -> None:
    # "How many?" and "how  many?" are one question; "Which colour?" another: 2 distinct of 3
    assert distinct_share(["How many?", "how  many?", "Which colour?"]) == pytest.approx(2 / 3)
    assert distinct_share([]) is None


def test_collect_run_reads_a_run_directory_that_moved(tmp_path: Path) -> None:
    # A phase marker names its tables relative to its own directory; a run copied elsewhere (another
    # machine, a clean clone) must still report. The tables are dataset folders, as a pass writes them.
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    ran_at, moved_to = tmp_path / "ran", tmp_path / "moved"
    phase = Phase(ran_at, 1, "generate")
    phase.dir.mkdir(parents=True)
    for name, questions in (("questions", ["How many?", "Which colour?"]), ("dropped", ["how  many?"])):
        (phase.dir / name).mkdir()
        table = pa.table({"parse_ok": [True] * len(questions), "question": questions})
        pq.write_table(table, phase.dir / name / "part-0.parquet")
    phase.complete({"tables": {"questions": "questions", "dropped": "dropped"}})
    shutil.move(ran_at, moved_to)

    result = collect_run(moved_to, "visplay", 0, 1, "", None)
    assert result.distinct_share == [pytest.approx(2 / 3)]  # 3 questions, "how many?" twice
    assert result.accuracy == [None, None]  # no evaluate phase finished


def test_blind_baseline_is_the_best_constant_answer_per_skill() -> None:
    # count golds 1, 1, 2 -> answering "1" everywhere scores 2/3; colour golds A, B -> 1/2;
    # all five: "1" is right 2 times of 5 -> 0.4
    skill_of = {"c1": "count", "c2": "count", "c3": "count", "k1": "colour", "k2": "colour"}
    gold = {"c1": "1", "c2": "1", "c3": "2", "k1": "A", "k2": "B"}
    assert blind_baseline(skill_of, gold) == {"colour": 0.5, "count": pytest.approx(2 / 3), "all": 0.4}


def test_answer_variety_counts_distinct_boxed_answers_per_skill(tmp_path: Path) -> None:
    rows = [
        ("c1", "\\boxed{2}"),
        ("c2", "so \\boxed{2}."),
        ("k1", "\\boxed{C}"),
        ("k2", "no box"),
        ("x", "\\boxed{9}"),
    ]
    lines = [json.dumps({"benchmark": "synthetic", "example_id": i, "text": t}) for i, t in rows]
    (tmp_path / "p.jsonl").write_text("\n".join(lines) + "\n")
    # count: "2" twice -> 1 answer; colour: "C" and unparsed (None) -> 2; "x" is not a held-out id
    assert answer_variety(
        tmp_path / "p.jsonl", {"c1": "count", "c2": "count", "k1": "colour", "k2": "colour"}
    ) == {
        "colour": 2,
        "count": 1,
    }


def _run(arm: str, seed: int, acc: list[float], skills: dict[str, float]) -> RunResult:
    return RunResult(
        arm=arm, seed=seed, accuracy=acc, per_skill=[skills, skills], questions=[8], kept=[4],
        p_histogram=[[0, 0, 0, 0, 0, 1, 0, 0, 0, 1]], p_mean=[0.75], questioner_reward=[0.25], reasoner_reward=[0.5], distinct_share=[1.0],
    )  # fmt: skip


def test_report_gives_mean_ci_gain_per_skill_and_a_computed_verdict() -> None:
    runs = [
        _run("visplay", 0, [0.1, 0.2], {"count": 0.5}),
        _run("visplay", 1, [0.1, 0.3], {"count": 0.25}),
        _run("fixed_questioner", 0, [0.1, 0.1], {"count": 0.0}),
        RunResult(arm="fixed_questioner", seed=1, accuracy=[0.1, None], per_skill=[{}, {}], error="boom"),
    ]
    arms = [("visplay", "full"), ("fixed_questioner", "control")]
    runs[0].distinct_answers = [{"count": 1}, {"count": 3}]
    text = render_report(runs, arms, 1, {"command": "python jobs/experiment.py"}, {"count": 0.4, "all": 0.3})
    # visplay: iteration 0 [0.1, 0.1] -> 10.0 ± 0.0; iteration 1 [0.2, 0.3]: mean 25.0, se 5 points,
    # t(0.975, 1) = 12.706 -> ± 63.5; gains [0.1, 0.2] -> 15.0 ± 63.5
    assert "| visplay | 10.0 ± 0.0 | 25.0 ± 63.5 | 15.0 ± 63.5 |" in text
    # fixed_questioner: both seeds scored the bootstrap model; one finished iteration 1: the mean alone
    assert "| fixed_questioner | 10.0 ± 0.0 | 10.0 | 0.0 |" in text
    assert "`visplay`: +15.0 points over the base (interval includes 0); meets the +5-point goal" in text
    assert "`fixed_questioner`: +0.0 points over the base; misses the +5-point goal" in text
    assert "is above the no-Questioner-reward control `fixed_questioner` (10.0%)" in text
    assert "| visplay | 37.5 ± 158.8 |" in text  # per skill: [0.5, 0.25] -> 37.5, se 12.5 -> ± 158.8
    # diagnostics: kept share 4/8, mean p 0.75, ten histogram bins of both seeds' [0.5, 1.0] (1.0 in the last)
    assert "| visplay | 1 | 8.0 | 4.0 | 0.50 ± 0.00 | 0.75 | 0 0 0 0 0 2 0 0 0 2 |" in text
    assert "- `fixed_questioner` seed 1: boom" in text
    assert "| best constant answer (image-blind) | 40.0 |" in text and "split scores 30.0%" in text
    assert "- `visplay` seed 0: count 1 → 3" in text


def test_report_gives_the_oracle_share_the_preconditions_and_sampled_accuracy() -> None:
    sampled = [{"sampled_pass1": 0.4, "sampled_maj8": 0.55, "sampled_pass1/count": 0.4, "sampled_maj8/count": 0.55},
               {"sampled_pass1": 0.5, "sampled_maj8": 0.6}]  # fmt: skip
    runs = [_run("visplay", 0, [0.40, 0.46], {"count": 0.7}), _run("oracle", 0, [0.40, 0.55], {"count": 0.8})]
    for run in runs:
        run.sampled = sampled
    arms = [("visplay", "full"), ("oracle", "ceiling")]
    text = render_report(runs, arms, 1, {"command": "x"}, {"count": 0.4, "all": 0.4})
    # gains: visplay 0.46 - 0.40 = 6 points, oracle 0.55 - 0.40 = 15 points: 6 / 15 = 40%
    assert "`visplay` recovers 40% of the `oracle` arm's gain (+6.0 of +15.0 points" in text
    # the base (iteration 0 of visplay, seed 0): count 0.7 >= 1.5 x 0.4 = 0.6 sees; 55 - 40 = 15 points of headroom
    assert "| count | 70.0 | 40.0 | 1.75 | 40.0 | 55.0 | +15.0 |" in text
    assert "sees (greedy >= 1.5 x image-blind on every skill): **yes**" in text
    assert "maj@8 >= sampled pass@1 + 10 points): **yes**" in text
    assert "| visplay | 40.0 / 55.0 | 50.0 / 60.0 |" in text  # sampled pass@1 / maj@8 per iteration
    assert (
        "| base | 40.0 / 55.0 |" in text and "| oracle | – / – |" in text
    )  # per skill (count): iteration 1 has none


@pytest.mark.slow
@pytest.mark.e2e
def test_quick_experiment_runs_every_stage(tmp_path: Path) -> None:
    """``--quick``: one seed, one iteration, 1 GRPO step per role, all five arms from the shared base, then
    the report. In ``-m e2e``, not the default run (minutes of engine starts and GRPO phases)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    cmd = [sys.executable, "jobs/experiment.py", "--config", str(CONFIG), "--quick", f"out_dir={tmp_path}"]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    job = _job()
    root = tmp_path / job.load_config_from_args(job.parse_args(["--config", str(CONFIG)])).name
    results = json.loads((root / "report" / "results.json").read_text())
    arms = [r["arm"] for r in results]
    assert arms == ["visplay", "fixed_questioner", "no_diversity", "no_band", "oracle"]
    for result in results:
        run_dir = root / "seed0" / result["arm"]
        assert result["error"] == "" and None not in result["accuracy"] and len(result["accuracy"]) == 2
        assert Phase(run_dir, 0, "evaluate").done() is not None
        for name in ("train_questioner", "generate", "train_reasoner", "evaluate"):
            assert Phase(run_dir, 1, name).done() is not None, (result["arm"], name)
    # every arm starts from the same shared base: identical iteration-0 accuracy
    assert len({r["accuracy"][0] for r in results}) == 1
    # the Reasoner trained where questions were kept (no_band keeps every question with a silver label)
    for result in results:
        trained = Phase(root / "seed0" / result["arm"], 1, "train_reasoner").done()
        assert trained["steps"] if result["kept"][0] else trained["skipped"], result["arm"]
    assert next(r for r in results if r["arm"] == "no_band")["kept"][0] > 0
    fixed = Phase(root / "seed0" / "fixed_questioner", 1, "train_questioner").done()
    assert fixed["skipped"] is True and fixed["steps"] == []
    no_band = load_config(root / "seed0" / "no_band" / "config.yaml")
    assert (no_band.generation.p_low, no_band.generation.p_high) == (0.0, 1.0)
    assert load_config(root / "seed0" / "no_diversity" / "config.yaml").rewards.diversity_weight == 0.0
    oracle = Phase(root / "seed0" / "oracle", 1, "generate").done()  # the labeled questions, every one kept
    assert oracle["kept"] == oracle["questions"] > 0
    assert Phase(root / "seed0" / "oracle", 1, "train_questioner").done()["skipped"] is True
    report = (root / "report" / "README.md").read_text()
    assert (
        all(f"| {arm} |" in report for arm in arms) and (root / "report" / "accuracy.png").stat().st_size > 0
    )


def test_experiment_overrides_come_before_the_command_line_and_quick_after(tmp_path: Path) -> None:
    """The config's experiment.overrides apply first, the command line's next (last word wins), --quick's last."""
    job = _job()
    shipped = load_config(CONFIG, [])
    tuned = load_config(CONFIG, shipped.experiment.overrides)
    # the shipped experiment runs 10x the loop job's RL samples per iteration, for both roles
    for role in ("questioner_grpo", "reasoner_grpo"):
        demo, exp = getattr(shipped, role), getattr(tuned, role)
        assert (
            exp.steps * exp.prompts_per_step * exp.group_size
            >= 10 * demo.steps * demo.prompts_per_step * demo.group_size
        )
    config = tmp_path / "exp.yaml"
    tree = yaml.safe_load(CONFIG.read_text())
    tree["experiment"]["overrides"] = ["eval.synthetic_n=48", "reasoner_grpo.steps=6"]
    config.write_text(yaml.safe_dump(tree))
    assert load_config(config, []).experiment.overrides == ["eval.synthetic_n=48", "reasoner_grpo.steps=6"]
    args = job.parse_args(["--config", str(config), "eval.synthetic_n=10"])
    assert args == [
        "--config",
        str(config),
        "eval.synthetic_n=48",
        "reasoner_grpo.steps=6",
        "eval.synthetic_n=10",
    ]
    cfg = job.load_config_from_args(args)
    assert (cfg.eval.synthetic_n, cfg.reasoner_grpo.steps) == (10, 6)
    quick = job.load_config_from_args(job.parse_args(["--config", str(config), "--quick"]))
    assert (quick.eval.synthetic_n, quick.reasoner_grpo.steps) == (3, 1)  # experiment.quick's values
