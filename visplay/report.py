"""What a person reads after each iteration: a one-screen summary, a history file and a plot of the curves.

    record = IterationRecord.collect(it, generation_files, q_metrics, r_metrics, eval_scores, seconds)
    print(summary_text(record))
    save_history(records, run_dir / "history.json")
    plot_history(records, run_dir / "curves.png")        # logged to MLflow by the job

Inputs are plain: the generation plane's parquet tables (the agreement p of every answered question,
read in batches into a histogram and a mean: a record's size does not grow with the corpus) and the
per-step metric rows the GRPO phases write (``metrics.jsonl``, see :func:`read_step_metrics`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from visplay.generation.outputs import count_rows, open_table

HIST_BINS = 10
"""Bins of the p histogram over [0, 1]."""


@dataclass
class IterationRecord:
    """The figures of one finished iteration."""

    iteration: int
    questions: int
    """Questions the Questioner wrote (parsed or not)."""
    kept: int
    """Questions kept after the difficulty band, dedup and per-image cap."""
    answered: int
    """Questions with an agreement p (parsed and answered; kept and dropped)."""
    p_histogram: list[int]
    """Answered questions per p bin (:func:`p_histogram`'s bins)."""
    p_mean: float | None
    """Mean p of the answered questions (None when there are none)."""
    questioner_reward: list[float]
    """Mean reward of the Questioner's rollouts per GRPO step."""
    reasoner_reward: list[float]
    """Mean reward of the Reasoner's rollouts per GRPO step."""
    eval_scores: dict[str, float] = field(default_factory=dict)
    """Benchmark -> accuracy of this iteration's Reasoner (empty until evaluation runs)."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall time per phase."""

    @classmethod
    def collect(
        cls,
        iteration: int,
        generation_files: dict[str, str],
        questioner_steps: list[dict],
        reasoner_steps: list[dict],
        eval_scores: dict[str, float] | None = None,
        seconds: dict[str, float] | None = None,
    ) -> IterationRecord:
        counts, total, questions = [0] * HIST_BINS, 0.0, 0
        for name in ("questions", "dropped"):
            for batch in open_table(generation_files[name]).to_batches(columns=["parse_ok", "p"]):
                questions += batch.num_rows
                ps = [p for ok, p in zip(*batch.to_pydict().values(), strict=True) if ok and p is not None]
                counts = [a + b for a, b in zip(counts, p_histogram(ps), strict=True)]
                total += sum(ps)
        answered = sum(counts)
        return cls(
            iteration=iteration,
            questions=questions,
            kept=count_rows(generation_files["questions"]),
            answered=answered,
            p_histogram=counts,
            p_mean=total / answered if answered else None,
            questioner_reward=[s["reward_mean"] for s in questioner_steps],
            reasoner_reward=[s["reward_mean"] for s in reasoner_steps],
            eval_scores=dict(eval_scores or {}),
            seconds=dict(seconds or {}),
        )


def p_histogram(p_values: list[float], bins: int = HIST_BINS) -> list[int]:
    """Counts of p in ``bins`` equal bins over [0, 1]; bin i holds i/bins <= p < (i+1)/bins, p = 1 in the last."""
    counts = [0] * bins
    for p in p_values:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"agreement p must be in [0, 1], got {p}")
        counts[min(int(p * bins), bins - 1)] += 1
    return counts


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summary_text(record: IterationRecord, width: int = 40) -> str:
    """A one-screen, plain-text summary of an iteration (questions kept, p histogram, rewards, eval, time)."""
    kept_share = record.kept / record.questions if record.questions else 0.0
    lines = [
        f"=== iteration {record.iteration} " + "=" * 50,
        f"questions   {record.kept} kept of {record.questions} written ({kept_share:.0%}), "
        f"{record.answered} answered",
        "agreement p of answered questions:",
    ]
    counts = record.p_histogram
    top = max(counts) or 1
    for i, count in enumerate(counts):
        bar = "#" * round(width * count / top)
        lines.append(
            f"  [{i / HIST_BINS:.1f}, {(i + 1) / HIST_BINS:.1f}{']' if i == HIST_BINS - 1 else ')'} {count:5d} {bar}"
        )
    for name, steps in (("questioner", record.questioner_reward), ("reasoner", record.reasoner_reward)):
        if steps:
            lines.append(
                f"{name:<11} reward first {steps[0]:.3f} -> last {steps[-1]:.3f} (mean {_mean(steps):.3f}, {len(steps)} steps)"
            )
        else:
            lines.append(f"{name:<11} not trained this iteration")
    if record.eval_scores:
        lines.append(
            "eval        " + "  ".join(f"{k} {v:.3f}" for k, v in sorted(record.eval_scores.items()))
        )
    else:
        lines.append("eval        not run")
    if record.seconds:
        lines.append("time        " + "  ".join(f"{k} {v:.0f}s" for k, v in record.seconds.items()))
    return "\n".join(lines)


def save_history(records: list[IterationRecord], path: str | Path) -> Path:
    """Write every iteration's record as JSON (atomically); returns the path."""
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps([asdict(r) for r in records], indent=1))
    tmp.replace(path)
    return path


def load_history(path: str | Path) -> list[IterationRecord]:
    """The records written by :func:`save_history` ([] when the file does not exist yet)."""
    path = Path(path)
    if not path.is_file():
        return []
    return [IterationRecord(**_upgrade(r)) for r in json.loads(path.read_text())]


def _upgrade(record: dict) -> dict:
    """A record written before records kept a histogram (it lists every p) in today's form."""
    if "p_values" not in record:
        return record
    ps = record.pop("p_values")
    return record | {
        "answered": len(ps),
        "p_histogram": p_histogram(ps),
        "p_mean": sum(ps) / len(ps) if ps else None,
    }


def plot_history(records: list[IterationRecord], path: str | Path) -> Path:
    """A PNG of the key curves across iterations: kept share, mean p, mean rewards, eval scores."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    its = [r.iteration for r in records]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(its, [r.kept / r.questions if r.questions else 0 for r in records], "o-", label="kept share")
    axes[0].plot(its, [r.p_mean or 0 for r in records], "s-", label="mean p (answered)")
    axes[0].set_title("question set")
    axes[1].plot(its, [_mean(r.questioner_reward) or 0 for r in records], "o-", label="questioner")
    axes[1].plot(its, [_mean(r.reasoner_reward) or 0 for r in records], "s-", label="reasoner")
    axes[1].set_title("mean GRPO reward")
    for name in sorted({k for r in records for k in r.eval_scores}):
        axes[2].plot(its, [r.eval_scores.get(name, float("nan")) for r in records], "o-", label=name)
    axes[2].set_title("evaluation" if any(r.eval_scores for r in records) else "evaluation (not run)")
    for ax in axes:
        ax.set_xlabel("iteration")
        ax.set_xticks(its)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def read_step_metrics(path: str | Path) -> list[dict]:
    """Per-step metric rows of a GRPO phase (``metrics.jsonl``), one per step, the last write of a step winning."""
    path = Path(path)
    if not path.is_file():
        return []
    by_step: dict[int, dict] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            by_step[int(row["step"])] = row
    return [by_step[s] for s in sorted(by_step)]
