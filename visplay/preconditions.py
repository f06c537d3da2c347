"""Can self-evolution show anything from this base? The two preconditions, measured on the held-out split.

Label-free RL can only sharpen what a model already does. Two things must hold of the shared base before
an experiment means anything:

* **it sees**: on every skill, its greedy held-out accuracy is at least :data:`SEES_RATIO` times the
  image-blind baseline (every question of the skill answered with the skill's most common gold answer,
  the image unseen). A model below that answers from the question's prior, and majority votes would only
  echo the prior;
* **votes beat samples**: its maj@k is at least :data:`HEADROOM_POINTS` points above its sampled pass@1,
  so the silver labels (majority answers) are right more often than one sampled answer, and rewarding
  agreement with them moves the model toward right answers.

Inputs are the evaluation report's figures (per-category greedy accuracy, ``sampled_*`` extras) and the
blind baseline (:func:`visplay.experiment.blind_baseline`); nothing is interpreted beyond arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass

SEES_RATIO = 1.5
"""The base's greedy accuracy on every skill must be at least this multiple of the image-blind one."""
HEADROOM_POINTS = 10.0
"""The base's maj@k must be at least this many points above its sampled pass@1."""


@dataclass(frozen=True)
class SkillCheck:
    """One skill's figures (fractions 0..1) and whether it sees."""

    skill: str
    greedy: float
    blind: float
    pass1: float | None
    majk: float | None

    @property
    def sees(self) -> bool:
        """Greedy accuracy at least :data:`SEES_RATIO` x the blind baseline."""
        return self.greedy >= SEES_RATIO * self.blind


@dataclass(frozen=True)
class Preconditions:
    """Both preconditions of one base model on one held-out split."""

    skills: tuple[SkillCheck, ...]
    k: int | None
    """Samples per question behind pass@1 and maj@k (None: not sampled)."""
    pass1: float | None
    majk: float | None

    @property
    def sees(self) -> bool:
        """Every skill sees."""
        return bool(self.skills) and all(c.sees for c in self.skills)

    @property
    def headroom(self) -> bool:
        """maj@k at least :data:`HEADROOM_POINTS` above pass@1 over the whole split (False if not sampled)."""
        return (
            None not in (self.pass1, self.majk) and (self.majk - self.pass1) * 100 >= HEADROOM_POINTS - 1e-9
        )

    def to_dict(self) -> dict:
        """Plain figures for a manifest or results file."""
        return {
            "sees": self.sees,
            "headroom": self.headroom,
            "k": self.k,
            "pass1": self.pass1,
            "majk": self.majk,
            "skills": {c.skill: {"greedy": c.greedy, "blind": c.blind, "pass1": c.pass1, "majk": c.majk,
                                 "sees": c.sees} for c in self.skills},
        }  # fmt: skip


def check_preconditions(
    per_skill: dict[str, float], blind: dict[str, float], sampled: dict[str, float]
) -> Preconditions:
    """The preconditions from one evaluation of the base.

    Args:
        per_skill: skill -> greedy accuracy (the report's ``per_category``).
        blind: skill -> image-blind accuracy (:func:`visplay.experiment.blind_baseline`; its ``all`` key
            is ignored).
        sampled: the report's ``sampled_pass1``, ``sampled_maj<k>`` and per-skill ``.../<skill>`` figures
            (empty: not sampled, so ``headroom`` is False).

    Example: colour greedy 0.5 with blind 0.3 sees (0.5 >= 1.5 x 0.3 = 0.45); pass@1 0.40 and maj@8 0.52
    give 12 points of headroom (>= 10).
    """
    k = next((int(key[len("sampled_maj") :]) for key in sampled if key.startswith("sampled_maj") and "/" not in key), None)  # fmt: skip
    checks = tuple(
        SkillCheck(
            skill,
            per_skill[skill],
            blind[skill],
            sampled.get(f"sampled_pass1/{skill}"),
            sampled.get(f"sampled_maj{k}/{skill}") if k else None,
        )
        for skill in sorted(s for s in blind if s != "all")
        if skill in per_skill
    )
    return Preconditions(
        checks, k, sampled.get("sampled_pass1"), sampled.get(f"sampled_maj{k}") if k else None
    )


def render_preconditions(pre: Preconditions) -> list[str]:
    """Markdown lines: one row per skill, then the two verdicts."""
    k = pre.k or "k"
    lines = [
        f"| skill | greedy | image-blind | ratio (need >= {SEES_RATIO}) | sampled pass@1 | maj@{k} | maj - pass (points) |",
        "|---|---|---|---|---|---|---|",
    ]  # fmt: skip

    def pct(value: float | None) -> str:
        return "–" if value is None else f"{value * 100:.1f}"

    for c in pre.skills:
        ratio = f"{c.greedy / c.blind:.2f}" if c.blind else "–"
        gap = "–" if None in (c.pass1, c.majk) else f"{(c.majk - c.pass1) * 100:+.1f}"
        lines.append(f"| {c.skill} | {pct(c.greedy)} | {pct(c.blind)} | {ratio} | {pct(c.pass1)} | {pct(c.majk)} | {gap} |")  # fmt: skip
    gap = "–" if None in (pre.pass1, pre.majk) else f"{(pre.majk - pre.pass1) * 100:+.1f}"
    lines.append(f"| **all** | | | | {pct(pre.pass1)} | {pct(pre.majk)} | {gap} |")
    lines += [
        "",
        f"- sees (greedy >= {SEES_RATIO} x image-blind on every skill): **{'yes' if pre.sees else 'no'}**",
        f"- headroom (maj@{k} >= sampled pass@1 + {HEADROOM_POINTS:.0f} points): "
        f"**{'yes' if pre.headroom else 'no' if pre.k else 'not measured (eval.samples is 0)'}**",
    ]
    return lines
