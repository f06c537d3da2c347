"""Diversity penalty for a batch of generated questions: BLEU-distance clustering (R-Zero / VisPlay).

Near-duplicate questions are clustered together and each question is penalised by the share of the batch
that sits in its cluster, so a Questioner that repeats itself earns less.

The reference construction is nltk's ``sentence_bleu`` (smoothing method 1) and scikit-learn's
average-linkage ``AgglomerativeClustering`` on the precomputed distances. Both are computed here without
importing either library: importing nltk's BLEU module and ``sklearn.cluster`` costs about 12 s of CPU,
paid by every fresh Ray worker that scores a batch, on the same cores the engine needs. :func:`sentence_bleu`
is nltk's arithmetic written out, and the clustering is the same scipy linkage that scikit-learn calls,
cut the way scikit-learn cuts it; ``tests/test_rewards.py`` checks both against the libraries to 1e-9.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

BLEU_ORDERS = 4
"""BLEU-4 with uniform weights (nltk's default ``weights=(0.25, 0.25, 0.25, 0.25)``)."""
SMOOTHING_EPSILON = 0.1
"""nltk ``SmoothingFunction().method1``: a zero n-gram match count becomes ``epsilon / total``."""


def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def sentence_bleu(reference: Sequence[str], hypothesis: Sequence[str]) -> float:
    """BLEU-4 of token list `hypothesis` against one `reference`, as nltk's ``sentence_bleu([reference],
    hypothesis, smoothing_function=SmoothingFunction().method1)`` computes it.

    For n = 1..4: ``p_n = matches_n / max(1, hypothesis n-grams)`` with matches clipped by the reference's
    n-gram counts, and a zero ``matches_n`` replaced by ``epsilon / max(1, hypothesis n-grams)``.
    The score is ``BP * exp(sum(0.25 * log p_n))`` with brevity penalty ``BP = 1`` if the hypothesis is
    longer than the reference, else ``exp(1 - len(reference) / len(hypothesis))``; no unigram match (or an
    empty side) scores 0. Example: ``"a b c d e"`` vs reference ``"a b c d f"`` matches 4/5, 3/4, 2/3, 1/2,
    BP = 1, so the score is ``(4/5 * 3/4 * 2/3 * 1/2) ** 0.25 = 0.2 ** 0.25``.
    """
    hyp_len = len(hypothesis)
    if hyp_len == 0 or not reference:
        return 0.0
    log_sum = []
    for n in range(1, BLEU_ORDERS + 1):
        hyp_counts, ref_counts = _ngrams(hypothesis, n), _ngrams(reference, n)
        matches = sum(min(count, ref_counts[gram]) for gram, count in hyp_counts.items())
        total = max(1, sum(hyp_counts.values()))
        if n == 1 and matches == 0:
            return 0.0
        precision = matches / total if matches else SMOOTHING_EPSILON / total
        log_sum.append(0.25 * math.log(precision))
    ref_len = len(reference)
    brevity = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    return brevity * math.exp(math.fsum(log_sum))


def bleu_distance_matrix(questions: Sequence[str]) -> np.ndarray:
    """Pairwise ``1 - BLEU`` distances, built exactly like the R-Zero/VisPlay reference.

    Tokens are ``str.split()`` (whitespace). For ``i < j`` the score is
    ``sentence_bleu(q_j.split(), q_i.split())`` (nltk's ``sentence_bleu([q_j.split()], q_i.split(),
    smoothing_function=SmoothingFunction().method1)``; question
    ``i`` is the hypothesis, ``j`` the reference; BLEU is not symmetric, the upper triangle decides) and
    ``dist[i, j] = dist[j, i] = 1 - score``; the diagonal is 0. BLEU-4 means identical questions of fewer than
    4 tokens are NOT at distance 0 (``"a"`` vs ``"a"`` scores about 0.178). An empty question scores 0 against
    everything (distance 1), as nltk itself does.

    Args:
        questions: n question strings.

    Returns:
        A symmetric ``(n, n)`` float64 array with entries in [0, 1].
    """
    tokens = [question.split() for question in questions]
    n = len(tokens)
    dist = np.zeros((n, n), dtype=np.float64)
    for i in range(n):
        for j in range(i + 1, n):
            dist[i, j] = dist[j, i] = 1.0 - sentence_bleu(tokens[j], tokens[i])
    return dist


def bleu_cluster_penalty(questions: Sequence[str], distance_threshold: float = 0.5) -> list[float]:
    """Per-question diversity penalty: (size of the question's cluster) / (number of questions).

    Clusters are those of ``sklearn.cluster.AgglomerativeClustering(n_clusters=None,
    distance_threshold=distance_threshold, metric="precomputed", linkage="average")`` on
    :func:`bleu_distance_matrix`, computed as scikit-learn does: scipy's average linkage over the condensed
    distances, then the tree cut into ``1 + (merges at distance >= threshold)`` clusters by undoing the
    last merges. So two clusters merge only while their average distance is strictly below the threshold.
    Cost is O(n²) :func:`sentence_bleu` calls.

    Args:
        questions: the batch's questions (invalid outputs may be passed as ``""``; they never crash).
        distance_threshold: linkage distance at or above which clusters stay apart (> 0).

    Returns:
        n floats in (0, 1]: all 1.0 when every question is a (≥ 4-token) duplicate of the others, 1/n each
        when all are far apart. ``[]`` for no questions, ``[1.0]`` for one (sklearn needs >= 2 samples).

    Raises:
        ValueError: if ``distance_threshold`` is not positive.
    """
    if not distance_threshold > 0:
        raise ValueError(f"distance_threshold must be > 0, got {distance_threshold}")
    n = len(questions)
    if n == 0:
        return []
    if n == 1:
        return [1.0]
    labels = _average_linkage_labels(bleu_distance_matrix(questions), distance_threshold)
    cluster_sizes = Counter(labels)
    return [cluster_sizes[label] / n for label in labels]


def _average_linkage_labels(dist: np.ndarray, distance_threshold: float) -> list[int]:
    """Cluster label per point: average linkage on the ``(n, n)`` distances (n >= 2), cut at the threshold.

    scipy's linkage returns the n - 1 merges in order, with non-decreasing distances for average linkage.
    scikit-learn keeps ``k = 1 + #(merge distances >= threshold)`` clusters by undoing the last k - 1
    merges, which is the same as applying only the first n - k merges (union-find below).
    """
    from scipy.cluster.hierarchy import linkage  # 1-2 s import, only where penalties are computed

    n = dist.shape[0]
    rows, cols = np.triu_indices(n, k=1)
    merges = linkage(dist[rows, cols], method="average")
    keep = n - (1 + int(np.count_nonzero(merges[:, 2] >= distance_threshold)))
    parent = list(range(2 * n - 1))  # leaves 0..n-1, merge t creates node n + t

    def root(node: int) -> int:
        while parent[node] != node:
            node = parent[node]
        return node

    for t, (a, b) in enumerate(merges[:keep, :2].astype(int).tolist()):
        parent[root(a)] = parent[root(b)] = n + t
    return [root(i) for i in range(n)]
