"""Does self-evolution work? Every arm's self-evolution run from one shared base, over seeds, then one report.

Algorithm (three disjoint synthetic splits: the *labeled* split the base was warmed up on, the *unlabeled*
training corpus, the *labeled* held-out split; generator seeds and split names keep their image ids apart):
  base             the shared base checkpoint ``models.base`` (as a real user starts every run from one
                   instruction-tuned model; shipped with its manifest, or built once by jobs/bootstrap.py)
  for each seed s in experiment.seeds:
    arms           for each arm (the full method; the fixed-Questioner control; the ablations: no
                   diversity penalty, no difficulty band; the oracle: Reasoner GRPO on the corpus's labeled
                   questions, the ceiling): the loop job's iterations from the base on the unlabeled corpus
                   with seed s (visplay/loop.py), the held-out split scored after every iteration (greedy,
                   and sampled pass@1 / maj@k with ``eval.samples``); iteration 0 is the base itself
  report           the base's preconditions (does it see? do votes beat samples?), accuracy per iteration
                   (mean ± 95% CI over seeds), gain over the base, the share of the oracle's gain, per
                   skill, diagnostics (visplay/experiment.py) -> experiment.report_dir/{README.md,
                   accuracy.png, results.json}
One Ray and one set of rollout engines (``rollout_engine.per_role`` per role) serve every run (engines load each run's weights; no restarts). A run
that fails is reported as such and the experiment goes on; a rerun resumes every run from its finished
phases.

Launch (README "The experiment"):
  python jobs/experiment.py --config configs/tiny-cpu.yaml iterations=3       # report in docs/experiment
  python jobs/experiment.py --config configs/tiny-cpu.yaml --quick out_dir=/tmp/x  # CI: every stage once
  python jobs/experiment.py --config configs/tiny-cpu.yaml iterations=3 --report-only  # report from runs so far
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import ray

from visplay import experiment, runtime, tracking
from visplay.checkpoints import Checkpoint
from visplay.config import Config, load_config, save_config, with_absolute_paths, with_overrides
from visplay.engine.rollout import start_rollout_actors
from visplay.loop import run_iterations
from visplay.resource_plan import evolve_plan
from visplay.train.service import TrainerService
from visplay.train.tasks import QuestionerTask
from visplay.world.corpus import GROUND_TRUTH_FILENAME
from visplay.world.embedded import ensure_base_model, ensure_corpus

log = logging.getLogger("visplay.experiment")


def parse_args(argv: list[str] | None) -> list[str]:
    """``--config``, ``--quick`` and dotted overrides -> the override list start_job parses: the config's
    ``experiment.overrides``, then the command line's, then (``--quick``) ``experiment.quick``;
    ``--report-only`` is read by :func:`main`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None)
    parser.add_argument(
        "--quick", action="store_true", help="one seed, one iteration, experiment.quick overrides"
    )
    parser.add_argument("--report-only", action="store_true", help="rewrite the report from finished runs")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    head = ["--config", args.config] if args.config else []
    cfg = load_config(args.config, args.overrides)
    settings = [*cfg.experiment.overrides, *args.overrides]  # the command line has the last word
    if not args.quick:
        return [*head, *settings]
    quick = ["experiment.seeds=[0]", "iterations=1", *cfg.experiment.quick]
    run_dir = load_config(args.config, [*settings, *quick]).run_dir  # the experiment's own name and out_dir
    report = f"experiment.report_dir={run_dir.resolve() / 'report'}"
    return [*head, *settings, *quick, report]


def run_config(cfg: Config, seed: int, arm: str, overrides: list[str] = ()) -> Config:
    """The config of one run: its own directory and seed; the shared base, corpus and held-out split."""
    root = cfg.run_dir
    base = [
        f"seed={seed}",
        f"out_dir={root / f'seed{seed}'}",
        f"name={arm}",
        f"corpus.path={root / 'corpus' / 'images'}",
        f"eval.synthetic_path={root / 'heldout'}",
        "eval.during_evolve=true",
    ]
    return with_overrides(cfg, [*base, *overrides])


def main(argv: list[str] | None = None) -> int:
    # --- setup -------------------------------------------------------------------------------------
    started = time.perf_counter()
    args = list(sys.argv[1:] if argv is None else argv)
    if "--report-only" in args:  # no Ray, no training: collect what the runs have finished so far
        cfg = with_absolute_paths(load_config_from_args(parse_args(args)))
        results = [
            experiment.collect_run(
                run_config(cfg, s, a.name).run_dir, a.name, s, cfg.iterations, "", _skills(cfg)
            )
            for s in cfg.experiment.seeds
            for a in cfg.experiment.arms
        ]
        write_report(cfg, results, [a for a in args if a != "--report-only"], None)
        print(f"report: {Path(cfg.experiment.report_dir) / 'README.md'}")
        return 0
    cfg = runtime.start_job("experiment", parse_args(argv))
    exp = cfg.experiment
    results: list[experiment.RunResult] = []
    n = cfg.rollout_engine.per_role  # rollout engines per role: questioner engines[:n], reasoner engines[n:]
    try:
        # every run holds what the loop job holds; an arm's overrides may add pools
        plans = [
            evolve_plan(run_config(cfg, seed, arm.name, arm.overrides))
            for seed in exp.seeds
            for arm in exp.arms
        ]
        runtime.stop_unless_fits(cfg, *plans)
        trainer = TrainerService(cfg, cfg.run_dir / "ray_train")  # one GRPO worker group for every run
        base_path, base_version = ensure_base_model(cfg)  # the shared base (built once if missing)
        log.info("shared base model %s (%s)", base_path, base_version[:12])
        engines = start_rollout_actors(base_path, base_version, cfg.rollout_engine, cfg.seed, count=2 * n)

        # --- loop: every arm from the base, per seed ------------------------------------------------
        for seed in exp.seeds:
            for arm in exp.arms:
                run = run_config(cfg, seed, arm.name, arm.overrides)
                error = ""
                try:
                    save_config(run, run.run_dir / "config.yaml")
                    ensure_corpus(run)
                    tracking.setup(run)
                    images = QuestionerTask.load_images(
                        run.corpus, limit=run.questioner_grpo.steps * run.questioner_grpo.prompts_per_step
                    )
                    print(f"=== seed {seed}, arm {arm.name}: {run.run_dir}", flush=True)
                    run_iterations(
                        run,
                        Checkpoint(base_path, base_version, engines=tuple(engines[:n])),
                        Checkpoint(base_path, base_version, engines=tuple(engines[n:])),
                        images,
                        trainer,
                    )
                except Exception as err:  # reported in the table; the other runs still go ahead
                    log.exception("seed %d arm %s failed", seed, arm.name)
                    error = f"{type(err).__name__}: {err}"
                results.append(
                    experiment.collect_run(run.run_dir, arm.name, seed, cfg.iterations, error, _skills(cfg))
                )
                write_report(cfg, results, argv, started)
        trainer.close()  # the workers leave; an interrupt skips this and ray.shutdown ends them
    except KeyboardInterrupt:
        print(f"interrupted: finished phases are kept under {cfg.run_dir}; rerun the same command to resume")
        return 130
    finally:
        ray.shutdown()

    # --- cleanup ----------------------------------------------------------------------------------
    print(f"report: {Path(exp.report_dir) / 'README.md'}")
    return 1 if any(r.error for r in results) else 0


def write_report(
    cfg: Config, results: list[experiment.RunResult], argv: list[str] | None, started: float
) -> None:
    """3. The report from the runs so far (rewritten after every run, so a stopped experiment has one)."""
    exp = cfg.experiment
    arms = [(a.name, a.description) for a in exp.arms]
    out = Path(exp.report_dir)
    out.mkdir(parents=True, exist_ok=True)
    header = {
        "command": "python jobs/experiment.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "commit": _git_commit(),
        "settings": (
            f"{cfg.iterations} iterations; questioner GRPO {cfg.questioner_grpo.steps} steps x "
            f"{cfg.questioner_grpo.prompts_per_step} images x {cfg.questioner_grpo.group_size}; reasoner GRPO "
            f"{cfg.reasoner_grpo.steps} steps x {cfg.reasoner_grpo.prompts_per_step} x "
            f"{cfg.reasoner_grpo.group_size}; corpus {cfg.corpus.synthetic_n} unlabeled images; held-out "
            f"{_heldout_size(cfg)}; world {cfg.corpus.synthetic_kinds}; shared base {cfg.models.base}"
        ),
        "runs": f"{len(results)} of {len(exp.seeds) * len(arms)} finished or failed",
        "wall time": (
            "see each run's history.json (report rewritten from finished runs)"
            if started is None
            else f"{(time.perf_counter() - started) / 60:.1f} min on this machine so far"
        ),
        "resolved config": os.path.relpath(cfg.run_dir / "config.yaml"),  # relative: no home paths in docs
    }
    truth = _heldout_truth(cfg)
    blind = experiment.blind_baseline(*experiment.heldout_labels(truth)) if truth else None
    (out / "README.md").write_text(experiment.render_report(results, arms, cfg.iterations, header, blind))
    experiment.plot_accuracy(results, arms, cfg.iterations, out / "accuracy.png")
    experiment.save_results(results, out / "results.json")


def _heldout_size(cfg: Config) -> str:
    """The held-out split as scored: scenes and questions in its ground truth (it is generated once, at
    ``eval.synthetic_n`` scenes, and kept: a later run with another ``synthetic_n`` scores the same split)."""
    truth = _heldout_truth(cfg)
    if truth is None:
        return f"{cfg.eval.synthetic_n} labeled scenes (not generated yet)"
    skills = experiment.heldout_labels(truth)[0]
    return f"{len(truth.read_text().splitlines())} labeled scenes, {len(skills)} questions"


def _skills(cfg: Config) -> dict[str, str] | None:
    """Example id -> skill of the experiment's held-out split (None before it exists)."""
    truth = _heldout_truth(cfg)
    return experiment.heldout_labels(truth)[0] if truth else None


def _heldout_truth(cfg: Config) -> Path | None:
    """The ground truth of the experiment's held-out split (what ``eval.synthetic_path`` points runs at), or
    None before the first run has generated it."""
    truth = cfg.run_dir / "heldout" / GROUND_TRUTH_FILENAME
    return truth if truth.is_file() else None


def load_config_from_args(args: list[str]) -> Config:
    """The config that ``--config FILE overrides...`` (as :func:`parse_args` returns them) describe."""
    if args[:1] == ["--config"]:
        return load_config(args[1], args[2:])
    return load_config(None, args)


def _git_commit() -> str:
    """The checkout's commit (with ``-dirty`` when it has changes), or ``unknown`` outside git."""
    try:
        commit = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit


if __name__ == "__main__":
    sys.exit(main())
