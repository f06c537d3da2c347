"""Pure reward functions for VisPlay (no Ray, no vLLM, no file I/O).

Pipeline for one image:

1. the Questioner writes ``<type>…</type><question>…</question><answer>…</answer>`` →
   :func:`parse_questioner_output`;
2. the Reasoner answers the question n times → :func:`extract_boxed` on each →
   :func:`majority_vote` gives the silver answer and its share ``p`` (equivalence via :func:`grade`);
3. Questioner reward: :func:`questioner_reward` from ``p`` (:func:`uncertainty_reward`) and the batch's
   :func:`bleu_cluster_penalty`;
4. Reasoner reward (training on the silver labels): :func:`reasoner_reward`.
"""

from visplay.rewards.diversity import bleu_cluster_penalty, bleu_distance_matrix
from visplay.rewards.grading import (
    DEFAULT_GRADE_TIMEOUT_S,
    GRADE_METHODS,
    GradeResult,
    choice_letter,
    grade,
    grade_detailed,
    grade_timeout_count,
    normalize_text,
    reset_grade_timeout_count,
    yes_no,
)
from visplay.rewards.parse import (
    PARSE_ERRORS,
    ParsedQuestion,
    extract_boxed,
    normalize_qtype,
    parse_questioner_output,
)
from visplay.rewards.questioner import (
    UNCERTAINTY_FORMS,
    QuestionerReward,
    questioner_reward,
    uncertainty_reward,
)
from visplay.rewards.reasoner import ReasonerReward, reasoner_reward
from visplay.rewards.vote import majority_vote, vote_distribution

__all__ = [
    "DEFAULT_GRADE_TIMEOUT_S",
    "GRADE_METHODS",
    "PARSE_ERRORS",
    "UNCERTAINTY_FORMS",
    "GradeResult",
    "ParsedQuestion",
    "QuestionerReward",
    "ReasonerReward",
    "bleu_cluster_penalty",
    "bleu_distance_matrix",
    "choice_letter",
    "extract_boxed",
    "grade",
    "grade_detailed",
    "grade_timeout_count",
    "majority_vote",
    "normalize_qtype",
    "normalize_text",
    "parse_questioner_output",
    "questioner_reward",
    "reasoner_reward",
    "reset_grade_timeout_count",
    "uncertainty_reward",
    "vote_distribution",
    "yes_no",
]
