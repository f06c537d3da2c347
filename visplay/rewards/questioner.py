"""The Questioner's reward: uncertainty of the Reasoner on the question, minus a diversity penalty.

:func:`score_questions` is the batch rule that generation (``ScoreQuestions``) and training
(``QuestionerTask``) both call; :func:`questioner_reward` is its per-question part.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from visplay.rewards.diversity import bleu_cluster_penalty
from visplay.rewards.vote import Vote, vote

if TYPE_CHECKING:
    from visplay.config import RewardConfig

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


@dataclass(frozen=True)
class ScoredQuestion:
    """One Questioner output scored: its vote (None for an unparsed output) and its reward."""

    vote: Vote | None
    reward: QuestionerReward


def score_questions(
    questions: Sequence[str | None], answers: Sequence[Sequence[str | None]], settings: RewardConfig
) -> list[ScoredQuestion]:
    """The Questioner's reward for a batch of outputs: the one rule both generation and training use.

    Args:
        questions: per output, the parsed question, or None when the output did not parse; length n.
        answers: per output, the Reasoner's extracted answers to it (``[]`` for unparsed ones); length n.
        settings: ``uncertainty_form``, ``invalid_penalty``, ``clip_at_zero``, ``bleu_distance_threshold``
            and ``diversity_weight`` (:class:`visplay.config.RewardConfig`).

    Returns:
        n :class:`ScoredQuestion`. Parsed questions get :func:`visplay.rewards.vote` of their answers and
        ``questioner_reward(True, p, diversity_weight * penalty)``, the penalty being
        :func:`visplay.rewards.bleu_cluster_penalty` over the *parsed questions of this batch* (the GRPO
        batch in training, the stage's batch in generation); unparsed ones get ``invalid_penalty``.
    """
    if len(questions) != len(answers):
        raise ValueError(f"{len(questions)} questions but {len(answers)} answer lists")
    parsed = [i for i, q in enumerate(questions) if q is not None]
    penalties = dict(
        zip(
            parsed,
            bleu_cluster_penalty([questions[i] for i in parsed], settings.bleu_distance_threshold),
            strict=True,
        )
    )
    scored = []
    for i, question in enumerate(questions):
        result = vote(answers[i]) if question is not None else None
        reward = questioner_reward(
            question is not None,
            result.p if result is not None else None,
            settings.diversity_weight * penalties.get(i, 0.0),
            form=settings.uncertainty_form,
            invalid_penalty=settings.invalid_penalty,
            clip_at_zero=settings.clip_at_zero,
        )
        scored.append(ScoredQuestion(result, reward))
    return scored
