"""The Questioner's reward: uncertainty of the Reasoner on the question, minus a diversity penalty."""

from __future__ import annotations

import math
from dataclasses import dataclass

UNCERTAINTY_FORMS: tuple[str, ...] = ("paper", "code")


def _check_probability(p: float) -> None:
    """Raise ValueError unless ``p`` is a real number in [0, 1] (NaN is rejected)."""
    if isinstance(p, bool) or not isinstance(p, int | float) or not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be a number in [0, 1], got {p!r}")


def _check_form(form: str) -> None:
    """Raise ValueError naming ``form`` unless it is one of :data:`UNCERTAINTY_FORMS`."""
    if form not in UNCERTAINTY_FORMS:
        raise ValueError(f"unknown uncertainty form {form!r}; expected one of {UNCERTAINTY_FORMS}")


def uncertainty_reward(p: float, form: str = "paper") -> float:
    """Reward for a question the Reasoner answers consistently with probability ``p`` (majority share).

    Both forms peak at p = 1/2 (the Reasoner is maximally unsure) and are 0 at p = 0 and p = 1:

    * ``"paper"``: ``1 - 2 * |p - 1/2|`` (VisPlay paper; range [0, 1]);
    * ``"code"``: ``min(p, 1 - p)`` (R-Zero/VisPlay code; range [0, 1/2], i.e. half the paper form).

    Raises:
        ValueError: if ``form`` is unknown (the message names it) or ``p`` is not in [0, 1].
    """
    _check_form(form)
    _check_probability(p)
    if form == "paper":
        return 1.0 - 2.0 * abs(p - 0.5)
    return min(p, 1.0 - p)


@dataclass(frozen=True)
class QuestionerReward:
    """The Questioner's reward for one generated question, with its parts for logging.

    Attributes:
        total: the scalar reward used by GRPO.
        uncertainty: :func:`uncertainty_reward` of the vote share (0.0 for invalid outputs).
        diversity_penalty: the BLEU-cluster penalty passed in (recorded even when not applied).
        valid: whether the Questioner's output parsed.
    """

    total: float
    uncertainty: float
    diversity_penalty: float
    valid: bool


def questioner_reward(
    parse_ok: bool,
    p: float | None,
    penalty: float,
    *,
    form: str = "paper",
    invalid_penalty: float = -1.0,
    clip_at_zero: bool = False,
) -> QuestionerReward:
    """Combine validity, uncertainty and diversity into the Questioner's reward.

    * invalid output (``parse_ok`` False): ``total = invalid_penalty`` — the diversity penalty is NOT
      subtracted and ``clip_at_zero`` does not apply (the R-Zero/VisPlay code would give ``-1 - penalty``);
    * valid output: ``total = uncertainty_reward(p, form) - penalty``, then ``max(0, total)`` if
      ``clip_at_zero``. ``p = None`` (no Reasoner answer could be parsed) gives uncertainty 0.

    Args:
        parse_ok: ``ParsedQuestion.ok``.
        p: the majority share from :func:`visplay.rewards.majority_vote`, or None.
        penalty: this question's :func:`visplay.rewards.bleu_cluster_penalty` value (finite).
        form: ``"paper"`` or ``"code"`` (see :func:`uncertainty_reward`).
        invalid_penalty: reward for an unparsable output.
        clip_at_zero: floor valid rewards at 0.

    Raises:
        ValueError: on an unknown ``form`` (checked even for invalid outputs), a ``p`` outside [0, 1], or a
            non-finite ``penalty``.
    """
    _check_form(form)
    if not math.isfinite(penalty):
        raise ValueError(f"penalty must be finite, got {penalty!r}")
    if not parse_ok:
        return QuestionerReward(
            total=float(invalid_penalty), uncertainty=0.0, diversity_penalty=float(penalty), valid=False
        )
    uncertainty = 0.0 if p is None else uncertainty_reward(p, form)
    total = uncertainty - penalty
    if clip_at_zero:
        total = max(0.0, total)
    return QuestionerReward(
        total=float(total), uncertainty=float(uncertainty), diversity_penalty=float(penalty), valid=True
    )
