"""Results of the self-evolution experiment (jobs/experiment.py): collect every run, aggregate, report.

One *run* is one arm at one seed: the loop job's iterations from the shared base model, with the
held-out labeled split scored after every iteration (iteration 0 is the base model itself, the
no-training control). :func:`collect_run` reads a finished (or partly finished) run directory into a
:class:`RunResult`; :func:`render_report` turns the runs into the markdown a paper's table would show:
accuracy per iteration as mean ± 95% confidence interval over seeds, the gain over the base model,
per-skill accuracy, and the diagnostics that explain the numbers (kept fraction, agreement p, rewards,
question diversity). Nothing is interpreted beyond arithmetic; the verdict lines compare means and say
whether the intervals overlap.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

from visplay.generation.outputs import read_columns
from visplay.phases import Phase
from visplay.preconditions import check_preconditions, render_preconditions
from visplay.report import HIST_BINS, load_history

BENCHMARK = "synthetic"
"""The held-out labeled split's benchmark name in the evaluation reports."""
GOAL_POINTS = 5.0
"""The goal: held-out accuracy after the last iteration at least this many points above the base."""
ORACLE = "oracle"
"""The arm trained on ground-truth labels: the ceiling whose gain the label-free arms are compared with."""


@dataclass
class RunResult:
    """One arm at one seed. Lists over iterations: ``accuracy``/``per_skill`` start at iteration 0 (the
    base model), the generation and training figures at iteration 1; a missing phase gives None."""

    arm: str
    seed: int
    accuracy: list[float | None]
    per_skill: list[dict[str, float]]
    questions: list[int] = field(default_factory=list)
    kept: list[int] = field(default_factory=list)
    p_histogram: list[list[int]] = field(default_factory=list)
    """Per iteration: answered questions per p bin."""
    p_mean: list[float | None] = field(default_factory=list)
    """Per iteration: mean p of the answered questions."""
    questioner_reward: list[float | None] = field(default_factory=list)
    reasoner_reward: list[float | None] = field(default_factory=list)
    distinct_share: list[float | None] = field(default_factory=list)
    """Share of parsed questions whose normalised text is unique within the iteration's generated set."""
    distinct_answers: list[dict[str, int]] = field(default_factory=list)
    """Per iteration from 0: skill -> distinct greedy answers on the held-out split (1 = the same answer to
    every question of that skill, whatever the image)."""
    sampled: list[dict[str, float]] = field(default_factory=list)
    """Per iteration from 0: sampled pass@1 and maj@k, overall and per skill (``eval.samples``; the
    report's ``sampled_*`` figures, visplay/eval/sampled.py); empty dicts when not sampled."""
    error: str = ""
    """Why the run stopped early ("" when every iteration finished)."""


def mean_ci(values: list[float], confidence: float = 0.95) -> tuple[float, float]:
    """(mean, half-width of the Student-t confidence interval); the half-width is NaN for one value."""
    from scipy.stats import t

    if not values:
        raise ValueError("mean_ci needs at least one value")
    mean = statistics.fmean(values)
    if len(values) == 1:
        return mean, math.nan
    half = t.ppf(0.5 + confidence / 2, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, float(half)


def _normalise(question: str) -> str:
    return " ".join(question.lower().split())


def distinct_share(questions: list[str]) -> float | None:
    """Unique normalised (lower-case, single-spaced) questions / all questions; None for none."""
    if not questions:
        return None
    return len({_normalise(q) for q in questions}) / len(questions)


def blind_baseline(skill_of: dict[str, str], gold: dict[str, str]) -> dict[str, float]:
    """Skill -> accuracy of answering every held-out question of that skill with its most common gold answer
    (what an image-blind model can reach); ``"all"`` for the whole split."""
    out = {}
    for skill in sorted(set(skill_of.values())) + ["all"]:
        answers = [gold[i] for i, s in skill_of.items() if skill in ("all", s)]
        out[skill] = max(answers.count(a) for a in set(answers)) / len(answers)
    return out


def heldout_labels(truth_path: str | Path) -> tuple[dict[str, str], dict[str, str]]:
    """(example id -> skill, example id -> gold answer) of the held-out synthetic split's ground truth."""
    from visplay.eval.benchmarks import load_benchmark

    examples = load_benchmark(BENCHMARK, truth_path).examples
    return {e.example_id: e.category for e in examples}, {e.example_id: e.answer for e in examples}


def answer_variety(predictions: str | Path, skill_of: dict[str, str]) -> dict[str, int]:
    """Skill -> number of distinct extracted answers in an evaluation's predictions.jsonl (unparsed: one more)."""
    from visplay.rewards import extract_boxed

    seen: dict[str, set] = {}
    for line in Path(predictions).read_text().splitlines():
        row = json.loads(line)
        if row["benchmark"] == BENCHMARK and row["example_id"] in skill_of:
            seen.setdefault(skill_of[row["example_id"]], set()).add(extract_boxed(row["text"]))
    return {skill: len(answers) for skill, answers in sorted(seen.items())}


def collect_run(
    run_dir: str | Path,
    arm: str,
    seed: int,
    iterations: int,
    error: str = "",
    skill_of: dict[str, str] | None = None,
) -> RunResult:
    """Read one run's evaluation markers, history and generated question sets (finished phases only);
    with `skill_of` (:func:`heldout_labels`) also the variety of its held-out answers."""
    run_dir = Path(run_dir)
    result = RunResult(arm=arm, seed=seed, accuracy=[], per_skill=[], error=error)
    for it in range(iterations + 1):
        phase = Phase(run_dir, it, "evaluate")
        evaluated = phase.done()
        report = next((r for r in (evaluated or {}).get("reports", []) if r["benchmark"] == BENCHMARK), None)
        result.accuracy.append(None if report is None else report["rule_score"])
        result.per_skill.append({} if report is None else dict(report["per_category"]))
        extra = {} if report is None else report.get("extra", {})
        result.sampled.append({k: v for k, v in extra.items() if k.startswith("sampled_")})
        predictions = phase.dir / "predictions.jsonl"
        if skill_of and evaluated and predictions.is_file():
            result.distinct_answers.append(answer_variety(predictions, skill_of))
    history = {r.iteration: r for r in load_history(run_dir / "history.json")}
    for it in range(1, iterations + 1):
        record = history.get(it)
        result.questions.append(record.questions if record else 0)
        result.kept.append(record.kept if record else 0)
        result.p_histogram.append(list(record.p_histogram) if record else [0] * HIST_BINS)
        result.p_mean.append(record.p_mean if record else None)
        result.questioner_reward.append(_mean(record.questioner_reward) if record else None)
        result.reasoner_reward.append(_mean(record.reasoner_reward) if record else None)
        phase = Phase(run_dir, it, "generate")
        generated = phase.done()
        texts: list[str] = []
        for name in ("questions", "dropped"):
            if generated:  # tables are named relative to the phase's directory, so a moved run reads too
                table = read_columns(phase.dir / generated["tables"][name], ["parse_ok", "question"])
                texts += [r["question"] for r in table.to_pylist() if r["parse_ok"] and r["question"]]
        result.distinct_share.append(distinct_share(texts))
    return result


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _cell(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    """``mean ± half-width`` (scaled), ``mean`` alone for one value, ``–`` for none."""
    if not values:
        return "–"
    mean, half = mean_ci(values)
    if math.isnan(half):
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} ± {half * scale:.{digits}f}"


def _present(values: list[float | None]) -> list[float]:
    return [v for v in values if v is not None]


def _at(runs: list[RunResult], attr: str, index: int) -> list[float]:
    return _present([getattr(r, attr)[index] if index < len(getattr(r, attr)) else None for r in runs])


def render_report(
    runs: list[RunResult],
    arms: list[tuple[str, str]],
    iterations: int,
    header: dict[str, str],
    blind: dict[str, float] | None = None,
) -> str:
    """The markdown report. ``arms``: (name, description) in display order; ``header``: label -> value
    lines shown first (command, commit, settings, wall time); ``blind``: :func:`blind_baseline`."""
    by_arm = {name: [r for r in runs if r.arm == name] for name, _ in arms}
    seeds = sorted({r.seed for r in runs})
    lines = ["# Self-evolution at laptop scale: held-out accuracy per iteration", ""]
    lines += [f"- **{key}**: {value}" for key, value in header.items()]
    lines += [f"- **seeds**: {seeds} (intervals: 95% Student-t over seeds; one seed shows the mean only)", ""]

    lines += ["## Held-out accuracy (%)", ""]
    cols = [
        "arm",
        "iter 0 (base)",
        *[f"iter {i}" for i in range(1, iterations + 1)],
        "gain over base",
    ]
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for name, _ in arms:
        group = by_arm[name]
        gains = [r.accuracy[-1] - r.accuracy[0] for r in group if None not in (r.accuracy[0], r.accuracy[-1])]
        cells = [_cell(_at(group, "accuracy", i)) for i in range(iterations + 1)]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {_cell(gains)} |")
    lines += ["", "Arms:", ""] + [f"- `{name}`: {text}" for name, text in arms] + [""]
    lines += ["## Verdict (computed)", ""] + _verdict(by_arm, arms) + [""]
    first = by_arm[arms[0][0]]
    if blind and first and first[0].per_skill and first[0].per_skill[0]:
        lines += [f"## The base's preconditions (iteration 0 of `{arms[0][0]}`, seed {first[0].seed})", ""]
        base = check_preconditions(
            first[0].per_skill[0], blind, first[0].sampled[0] if first[0].sampled else {}
        )
        lines += render_preconditions(base) + [""]
    lines += _sampled_table(by_arm, arms, iterations)

    skills = sorted({s for r in runs for row in r.per_skill for s in row})
    if skills:
        lines += [
            f"## Per skill after iteration {iterations} (%; base = iteration 0 of `{arms[0][0]}`)",
            "",
        ]
        lines += ["| arm | " + " | ".join(skills) + " |", "|---|" + "---|" * len(skills)]
        first = by_arm[arms[0][0]]
        rows = [("base", first, 0)] + [(name, by_arm[name], iterations) for name, _ in arms]
        for label, group, it in rows:
            cells = [
                _cell(_present([r.per_skill[it].get(s) if it < len(r.per_skill) else None for r in group]))
                for s in skills
            ]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        if blind:
            cells = [f"{blind[s] * 100:.1f}" if s in blind else "–" for s in skills]
            lines.append("| best constant answer (image-blind) | " + " | ".join(cells) + " |")
        lines.append("")
        if blind and "all" in blind:
            lines += [f"Best constant answer: every question of a skill given that skill's most common gold answer, "
                      f"image unseen; one constant answer for the whole split scores {blind['all'] * 100:.1f}%.", ""]  # fmt: skip
    variety = [r for r in runs if r.distinct_answers]
    if variety:
        lines += [
            "## Distinct greedy answers on the held-out split, per skill (seed: iteration 0 → last)",
            "",
        ]
        lines += [
            "An arm whose answers to every question of a skill are one and the same is not looking at the image.",
            "",
        ]
        for r in variety:
            first, last = r.distinct_answers[0], r.distinct_answers[-1]
            cells = ", ".join(
                f"{s} {first.get(s, 0)} → {last.get(s, 0)}" for s in sorted(set(first) | set(last))
            )
            lines.append(f"- `{r.arm}` seed {r.seed}: {cells}")
        lines.append("")

    lines += ["## Diagnostics per iteration (mean over seeds)", ""]
    lines += [
        "| arm | iter | questions | kept | kept share | mean p | p histogram (0.0…1.0) | questioner reward | reasoner reward | distinct questions |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for name, _ in arms:
        for i in range(iterations):
            group = by_arm[name]
            questions, kept = _at(group, "questions", i), _at(group, "kept", i)
            hist = [
                sum(col)
                for col in zip(*(r.p_histogram[i] for r in group if i < len(r.p_histogram)), strict=True)
            ]
            share = [k / q for q, k in zip(questions, kept, strict=True) if q]
            lines.append(
                f"| {name} | {i + 1} | {_num(questions)} | {_num(kept)} | {_cell(share, 1, 2)} | "
                f"{_num(_at(group, 'p_mean', i), 2)} | {' '.join(map(str, hist or [0] * HIST_BINS))} | {_cell(_at(group, 'questioner_reward', i), 1, 3)} | "
                f"{_cell(_at(group, 'reasoner_reward', i), 1, 3)} | {_cell(_at(group, 'distinct_share', i), 1, 2)} |"
            )  # fmt: skip
    failed = [r for r in runs if r.error]
    if failed:
        lines += ["", "## Runs that did not finish", ""]
        lines += [f"- `{r.arm}` seed {r.seed}: {r.error}" for r in failed]
    return "\n".join(lines) + "\n"


def _sampled_table(
    by_arm: dict[str, list[RunResult]], arms: list[tuple[str, str]], iterations: int
) -> list[str]:
    """Markdown: sampled pass@1 and maj@k per arm and iteration (mean ± 95% CI over seeds); [] if not sampled."""
    keys = sorted({k for g in by_arm.values() for r in g for row in r.sampled for k in row if "/" not in k})
    if len(keys) != 2:
        return []
    majk, pass1 = keys  # "sampled_maj<k>" sorts before "sampled_pass1"
    lines = [f"## Sampled pass@1 / maj@{majk[len('sampled_maj') :]} on the held-out split (%)", ""]
    lines += [
        "| arm | " + " | ".join(f"iter {i}" for i in range(iterations + 1)) + " |",
        "|---|" + "---|" * (iterations + 1),
    ]
    for name, _ in arms:
        cells = []
        for i in range(iterations + 1):
            rows = [r.sampled[i] for r in by_arm[name] if i < len(r.sampled) and r.sampled[i]]
            cells.append(
                f"{_cell([r[pass1] for r in rows])} / {_cell([r[majk] for r in rows])}" if rows else "–"
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    skills = sorted(
        {k.split("/", 1)[1] for g in by_arm.values() for r in g for row in r.sampled for k in row if "/" in k}
    )
    if skills:
        lines += [
            "",
            f"Per skill, base (iteration 0 of `{arms[0][0]}`) and after iteration {iterations}:",
            "",
        ]
        lines += ["| arm | " + " | ".join(skills) + " |", "|---|" + "---|" * len(skills)]
        first = by_arm[arms[0][0]]
        for label, group, it in [("base", first, 0)] + [(name, by_arm[name], iterations) for name, _ in arms]:
            rows = [r.sampled[it] for r in group if it < len(r.sampled) and r.sampled[it]]
            cells = [
                f"{_cell([r[f'{pass1}/{s}'] for r in rows if f'{pass1}/{s}' in r])} / "
                f"{_cell([r[f'{majk}/{s}'] for r in rows if f'{majk}/{s}' in r])}"
                for s in skills
            ]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _num(values: list[float], digits: int = 1) -> str:
    return f"{statistics.fmean(values):.{digits}f}" if values else "–"


def _verdict(by_arm: dict[str, list[RunResult]], arms: list[tuple[str, str]]) -> list[str]:
    """Gain of each arm over the base model against the goal, and the main arm against the control."""
    out = []
    finals = {}
    for name, _ in arms:
        gains = [
            r.accuracy[-1] - r.accuracy[0]
            for r in by_arm[name]
            if None not in (r.accuracy[0], r.accuracy[-1])
        ]
        if not gains:
            out.append(f"- `{name}`: no finished run")
            continue
        mean, half = mean_ci(gains)
        finals[name] = [r.accuracy[-1] for r in by_arm[name] if r.accuracy[-1] is not None]
        met = "meets" if mean * 100 >= GOAL_POINTS else "misses"
        sure = (
            ""
            if math.isnan(half)
            else (" (interval excludes 0)" if abs(mean) > half else " (interval includes 0)")
        )
        out.append(
            f"- `{name}`: {mean * 100:+.1f} points over the base{sure}; {met} the +{GOAL_POINTS:.0f}-point goal"
        )
    main, control = arms[0][0], "fixed_questioner"
    gains = {name: [r.accuracy[-1] - r.accuracy[0] for r in by_arm[name] if None not in (r.accuracy[0], r.accuracy[-1])]
             for name in (main, ORACLE) if name in by_arm}  # fmt: skip
    if gains.get(main) and gains.get(ORACLE):
        g_main, g_oracle = statistics.fmean(gains[main]), statistics.fmean(gains[ORACLE])
        share = f"{g_main / g_oracle * 100:.0f}%" if g_oracle > 0 else "undefined (the oracle gained nothing)"
        out.append(
            f"- `{main}` recovers {share} of the `{ORACLE}` arm's gain ({g_main * 100:+.1f} of "
            f"{g_oracle * 100:+.1f} points; ground-truth rewards on the same images and GRPO samples)"
        )
    if main in finals and control in finals:
        a, b = mean_ci(finals[main]), mean_ci(finals[control])
        overlap = math.isnan(a[1]) or math.isnan(b[1]) or abs(a[0] - b[0]) <= a[1] + b[1]
        relation = "above" if a[0] > b[0] else "not above"
        out.append(
            f"- `{main}` final accuracy {a[0] * 100:.1f}% is {relation} the no-Questioner-reward control "
            f"`{control}` ({b[0] * 100:.1f}%){'; the intervals overlap' if overlap else ''}"
        )
    return out


def plot_accuracy(
    runs: list[RunResult], arms: list[tuple[str, str]], iterations: int, path: str | Path
) -> Path:
    """Mean held-out accuracy per iteration with 95% interval bars, one line per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for k, (name, _) in enumerate(arms):
        group = [r for r in runs if r.arm == name]
        xs, means, halves = [], [], []
        for i in range(iterations + 1):
            values = _at(group, "accuracy", i)
            if values:
                mean, half = mean_ci(values)
                xs.append(i + (k - len(arms) / 2) * 0.04)
                means.append(mean * 100)
                halves.append(0 if math.isnan(half) else half * 100)
        ax.errorbar(xs, means, yerr=halves, marker="o", capsize=3, label=name)
    ax.set_xticks(range(iterations + 1), ["base"] + [str(i) for i in range(1, iterations + 1)])
    ax.set_xlabel("iteration")
    ax.set_ylabel("held-out accuracy (%)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def save_results(runs: list[RunResult], path: str | Path) -> Path:
    """Every run's raw figures as JSON (what the report was computed from)."""
    Path(path).write_text(json.dumps([asdict(r) for r in runs], indent=1) + "\n")
    return Path(path)
