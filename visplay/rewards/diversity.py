"""Diversity penalty for a batch of generated questions: BLEU-distance clustering (R-Zero / VisPlay).

Near-duplicate questions are clustered together and each question is penalised by the share of the batch
that sits in its cluster, so a Questioner that repeats itself earns less.

nltk and scikit-learn are imported inside the functions: importing them takes seconds, and most processes
that import ``visplay.rewards`` (graders, servers) never compute this penalty.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np


def bleu_distance_matrix(questions: Sequence[str]) -> np.ndarray:
    """Pairwise ``1 - BLEU`` distances, built exactly like the R-Zero/VisPlay reference.

    Tokens are ``str.split()`` (whitespace). For ``i < j`` the score is
    ``sentence_bleu([q_j.split()], q_i.split(), smoothing_function=SmoothingFunction().method1)`` (question
    ``i`` is the hypothesis, ``j`` the reference; BLEU is not symmetric, the upper triangle decides) and
    ``dist[i, j] = dist[j, i] = 1 - score``; the diagonal is 0. BLEU-4 means identical questions of fewer than
    4 tokens are NOT at distance 0 (``"a"`` vs ``"a"`` scores about 0.178). An empty question scores 0 against
    everything (distance 1), as nltk itself does.

    Args:
        questions: n question strings.

    Returns:
        A symmetric ``(n, n)`` float64 array with entries in [0, 1].
    """
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu  # slow import, see module doc

    smoothing = SmoothingFunction().method1
    tokens = [question.split() for question in questions]
    n = len(tokens)
    dist = np.zeros((n, n), dtype=np.float64)
    for i in range(n):
        for j in range(i + 1, n):
            if tokens[i] and tokens[j]:
                score = float(sentence_bleu([tokens[j]], tokens[i], smoothing_function=smoothing))
            else:
                score = 0.0
            dist[i, j] = dist[j, i] = 1.0 - score
    return dist


def bleu_cluster_penalty(questions: Sequence[str], distance_threshold: float = 0.5) -> list[float]:
    """Per-question diversity penalty: (size of the question's cluster) / (number of questions).

    Clusters come from ``sklearn.cluster.AgglomerativeClustering(n_clusters=None,
    distance_threshold=distance_threshold, metric="precomputed", linkage="average")`` on
    :func:`bleu_distance_matrix`; two clusters merge only while their average distance is strictly below
    the threshold. Cost is O(n²) ``sentence_bleu`` calls.

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
    from sklearn.cluster import AgglomerativeClustering  # slow import, see module doc

    clustering = AgglomerativeClustering(
        n_clusters=None, distance_threshold=distance_threshold, metric="precomputed", linkage="average"
    )
    labels = clustering.fit_predict(bleu_distance_matrix(questions))
    cluster_sizes = Counter(labels.tolist())
    return [cluster_sizes[label] / n for label in labels.tolist()]
