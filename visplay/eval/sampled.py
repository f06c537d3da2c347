"""Sampled accuracy of a Reasoner: pass@1 and maj@k from k sampled answers per question.

Greedy accuracy says what the model answers; majority-vote RL needs to know what its *samples* say.
With k answers sampled per question (``eval.samples``, at ``generation.reasoner_sampling``):

* **pass@1** is the mean correctness of the k answers (the unbiased estimate of one sample's accuracy);
* **maj@k** is the correctness of their majority answer, voted with the generation pass's own rule
  (:func:`visplay.rewards.vote.vote`): exactly the silver label the Reasoner would be trained against.

maj@k well above pass@1 is the headroom label-free RL has: the silver labels are right more often than
one sample is. Both are reported overall and per category (the synthetic split's skills) in the
benchmark report's ``extra`` (``sampled_pass1``, ``sampled_maj<k>``, ``sampled_pass1/<skill>``, ...).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence

from visplay.eval.schema import EvalExample
from visplay.rewards.parse import extract_boxed
from visplay.rewards.vote import vote


def majority_text(texts: Sequence[str]) -> str:
    """The majority ``\\boxed{}`` answer of ``texts`` as a completion (``""`` when none parsed).

    ``["\\boxed{A}", "\\boxed{B}", "\\boxed{A}"]`` -> ``"\\boxed{A}"`` (A has 2 of 3 votes).
    """
    silver = vote([extract_boxed(t) for t in texts]).silver
    return "" if silver is None else f"\\boxed{{{silver}}}"


def sampled_scores(
    examples: Sequence[EvalExample],
    samples: dict[str, list[str]],
    score: Callable[[EvalExample, str], float],
) -> dict[str, float]:
    """pass@1 and maj@k over ``examples``, overall and per category.

    Args:
        examples: the questions (each has ``example_id`` and ``category``).
        samples: example id -> its k sampled completions (k the same for every example, k >= 1).
        score: the benchmark's rule, ``(example, completion) -> 0.0..1.0``.

    Returns ``{"sampled_pass1": ., "sampled_maj<k>": ., "sampled_pass1/<category>": ., ...}``; empty when
    there are no examples. Example: two questions, k = 2, answers right/wrong and right/right: pass@1 =
    (0.5 + 1.0) / 2 = 0.75.
    """
    if not examples:
        return {}
    k = {len(samples[e.example_id]) for e in examples}
    if len(k) != 1 or min(k) < 1:
        raise ValueError(f"every example needs the same number (>= 1) of samples, got {sorted(k)}")
    (k,) = k
    by_category: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for e in examples:
        texts = samples[e.example_id]
        pair = (sum(score(e, t) for t in texts) / k, score(e, majority_text(texts)))
        by_category[""].append(pair)
        for category in e.categories:
            by_category[category].append(pair)
    out = {}
    for category, pairs in sorted(by_category.items()):
        suffix = f"/{category}" if category else ""
        out[f"sampled_pass1{suffix}"] = sum(p for p, _ in pairs) / len(pairs)
        out[f"sampled_maj{k}{suffix}"] = sum(m for _, m in pairs) / len(pairs)
    return out
