"""Majority voting over the Reasoner's answers: the silver label, its share ``p`` and the groups, at once.

:func:`vote` groups answers into equivalence classes that depend on the *set* of answers, not their order:

1. each answer gets its canonical key (:func:`visplay.rewards.forms.answer_key`); equal keys are one group;
2. groups whose keys differ are merged when :func:`visplay.rewards.grade` says their representatives are
   equal (``\\sqrt{2}/2`` and ``\\frac{1}{\\sqrt{2}}``), pairs taken in key order, and merging is closed
   under transitivity (union-find), so the classes are a partition whatever order the answers came in;
3. a class's representative is its most common verbatim answer (ties: the smallest key, then the smallest
   string); classes are ranked by size, ties by representative key.

A comparison that times out decides nothing: the answers whose ``text`` keys it had to read are left out of
the vote (counted in ``left_out``, the comparison in ``timeouts``), so ``p`` is the top class's share of the
answers that were voted on. Generation drops such a question (``grade_timeout``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from visplay.rewards.forms import AnswerKey, answer_key
from visplay.rewards.grading import DEFAULT_GRADE_TIMEOUT_S, grade_detailed


@dataclass(frozen=True)
class Vote:
    """One question's vote; ``silver``, ``p`` and ``groups`` come from the same grouping.

    Attributes:
        silver: the top class's representative, None if no answer was voted on.
        p: the top class's size over the answers voted on (unparsed answers count; left-out ones do not).
        groups: ``(representative, count)`` per class, largest first; counts add up to the parsed answers
            that were not left out.
        timeouts: comparisons that ran past the grading timeout.
        left_out: answers left out because a comparison involving them timed out.
    """

    silver: str | None
    p: float
    groups: tuple[tuple[str, int], ...]
    timeouts: int = 0
    left_out: int = 0


class _Classes:
    """Union-find over indices ``0..n-1``; the root of a class is its smallest index (deterministic)."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        a, b = self.find(i), self.find(j)
        self.parent[max(a, b)] = min(a, b)


def vote(answers: Sequence[str | None], *, timeout_s: float | None = DEFAULT_GRADE_TIMEOUT_S) -> Vote:
    """Group equivalent answers and pick the silver label (module docstring).

    Args:
        answers: one extracted answer per Reasoner sample; None or blank = no answer (counted in ``p``'s
            denominator, in no group).
        timeout_s: per-comparison timeout handed to :func:`visplay.rewards.grade_detailed`.

    Returns:
        A :class:`Vote`. ``["A", None]`` → silver ``"A"``, p 0.5; ``[]`` or all blank → ``(None, 0.0, ())``.
    """
    by_key: dict[AnswerKey, Counter[str]] = {}
    for answer in answers:
        key = answer_key(answer)
        if key is not None:
            by_key.setdefault(key, Counter())[answer] += 1
    keys = sorted(by_key)
    reps = [min(by_key[k], key=lambda a, c=by_key[k]: (-c[a], a)) for k in keys]
    classes, timed_out, timeouts = _Classes(len(keys)), set(), 0
    for i in range(len(keys)):
        for j in range(i + 1, len(keys)):
            if "text" not in (keys[i][0], keys[j][0]) or classes.find(i) == classes.find(j):
                continue  # two non-text keys that differ are different answers without asking sympy
            result = grade_detailed(reps[j], reps[i], timeout_s=timeout_s)
            if result.timed_out:
                timeouts += 1
                timed_out.update(k for k in (i, j) if keys[k][0] == "text")  # the side sympy had to read
            elif result.equal:
                classes.union(i, j)
    sizes: Counter[int] = Counter()
    best: dict[int, int] = {}  # class root -> index of its most common key (ties: the smallest key)
    for i, key in enumerate(keys):
        if i in timed_out:
            continue
        root, count = classes.find(i), sum(by_key[key].values())
        sizes[root] += count
        if root not in best or count > sum(by_key[keys[best[root]]].values()):
            best[root] = i
    ranked = sorted(sizes, key=lambda root: (-sizes[root], keys[best[root]]))
    groups = tuple((reps[best[root]], sizes[root]) for root in ranked)
    left_out = sum(sum(by_key[keys[i]].values()) for i in timed_out)
    voted_on = len(answers) - left_out
    if not groups or voted_on <= 0:
        return Vote(None, 0.0, (), timeouts, left_out)
    return Vote(groups[0][0], groups[0][1] / voted_on, groups, timeouts, left_out)


def majority_vote(
    answers: Sequence[str | None], *, timeout_s: float | None = DEFAULT_GRADE_TIMEOUT_S
) -> tuple[str | None, float]:
    """``(silver, p)`` of :func:`vote`: ``["0.5", "\\frac{1}{2}", "1/2", "0.6"]`` → ``("0.5", 0.75)``."""
    result = vote(answers, timeout_s=timeout_s)
    return result.silver, result.p
