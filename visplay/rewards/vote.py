"""Majority voting over the Reasoner's answers: the silver label and the agreement rate ``p``.

Answers are grouped by :func:`visplay.rewards.grade` equivalence (so ``0.5`` and ``\\frac{1}{2}`` vote
together). Grouping is greedy in order of appearance: each answer joins the first existing group whose
*representative* (the group's first-seen member) it grades equal to, else it starts a new group. ``grade`` is
not guaranteed to be transitive, so comparing only with representatives is what makes the result well
defined and reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence

from visplay.rewards.grading import DEFAULT_GRADE_TIMEOUT_S, grade


def vote_distribution(
    answers: Sequence[str | None], *, timeout_s: float | None = DEFAULT_GRADE_TIMEOUT_S
) -> list[tuple[str, int]]:
    """Group equivalent answers and count them, for provenance and for :func:`majority_vote`.

    Args:
        answers: one extracted answer per Reasoner sample; None or blank strings mean "no answer" and are
            left out of every group.
        timeout_s: per-comparison timeout handed to :func:`visplay.rewards.grade`.

    Returns:
        ``[(representative, count), ...]`` sorted by count, largest first; groups with equal counts keep
        the order in which their representative first appeared. Representatives are returned verbatim.
        ``[]`` if no answer was given. The counts add up to the number of non-blank answers.
    """
    groups: list[list] = []  # [representative, count], in order of first appearance
    for answer in answers:
        if answer is None or not answer.strip():
            continue
        for group in groups:
            if grade(answer, group[0], timeout_s=timeout_s):
                group[1] += 1
                break
        else:
            groups.append([answer, 1])
    groups.sort(key=lambda group: -group[1])  # stable sort: ties stay in first-appearance order
    return [(representative, count) for representative, count in groups]


def majority_vote(
    answers: Sequence[str | None], *, timeout_s: float | None = DEFAULT_GRADE_TIMEOUT_S
) -> tuple[str | None, float]:
    """The silver answer (majority group's representative) and its share ``p`` of ALL answers.

    Tie rule: among equally large groups, the one whose representative appeared first wins
    (``["B", "A", "A", "B"]`` → ``("B", 0.5)``).

    Args:
        answers: one extracted answer per Reasoner sample (None / blank = unparsed).
        timeout_s: per-comparison timeout handed to :func:`visplay.rewards.grade`.

    Returns:
        ``(silver, p)`` with ``p = largest group size / len(answers)``: unparsed answers count in the
        denominator, so ``["A", None]`` → ``("A", 0.5)``. ``(None, 0.0)`` if ``answers`` is empty or has no
        parsed answer.
    """
    distribution = vote_distribution(answers, timeout_s=timeout_s)
    if not distribution:
        return None, 0.0
    silver, count = distribution[0]
    return silver, count / len(answers)
