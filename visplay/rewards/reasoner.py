"""The Reasoner's reward: accuracy against the silver (majority-vote) label plus a small format term."""

from __future__ import annotations

from dataclasses import dataclass

from visplay.rewards.grading import DEFAULT_GRADE_TIMEOUT_S, grade_detailed
from visplay.rewards.parse import extract_boxed


@dataclass(frozen=True)
class ReasonerReward:
    """The Reasoner's reward for one response, with its parts for logging.

    Attributes:
        total: ``(1 - format_weight) * accuracy + format_weight * format``.
        accuracy: 1.0 if the boxed answer grades equal to the silver label, else 0.0.
        format: 1.0 if the response has a complete, non-empty ``\\boxed{}`` answer, else 0.0.
        answer: the extracted boxed answer (None if absent or unbalanced).
        timed_out: True if grading hit the timeout (accuracy is then 0.0).
    """

    total: float
    accuracy: float
    format: float
    answer: str | None
    timed_out: bool


def reasoner_reward(
    response_text: str,
    silver: str | None,
    format_weight: float = 0.1,
    *,
    timeout_s: float | None = DEFAULT_GRADE_TIMEOUT_S,
) -> ReasonerReward:
    """Score one Reasoner response against the silver label.

    The answer is the last ``\\boxed{}`` (:func:`visplay.rewards.extract_boxed`); ``format`` is 1 when it is
    present and non-empty; ``accuracy`` is 1 when, in addition, :func:`visplay.rewards.grade` says it equals
    ``silver``. With the default weight 0.1: correct → 1.0, boxed but wrong → 0.1, no box → 0.0.

    Args:
        response_text: the full Reasoner completion.
        silver: the majority-vote answer for the question (None → accuracy 0).
        format_weight: weight of the format term, in [0, 1].
        timeout_s: grading timeout (see :func:`visplay.rewards.grade_detailed`).

    Raises:
        ValueError: if ``format_weight`` is outside [0, 1].
    """
    if not 0.0 <= format_weight <= 1.0:
        raise ValueError(f"format_weight must be in [0, 1], got {format_weight!r}")
    answer = extract_boxed(response_text)
    has_answer = bool(answer)
    accuracy, timed_out = 0.0, False
    if has_answer and silver is not None:
        result = grade_detailed(answer, silver, timeout_s=timeout_s)
        accuracy, timed_out = float(result.equal), result.timed_out
    fmt = 1.0 if has_answer else 0.0
    total = (1.0 - format_weight) * accuracy + format_weight * fmt
    return ReasonerReward(total=total, accuracy=accuracy, format=fmt, answer=answer, timed_out=timed_out)
