"""Pure reward functions for VisPlay (no Ray, no vLLM, no file I/O).

Pipeline for one image:

1. the Questioner writes ``<type>…</type><question>…</question><answer>…</answer>`` →
   :func:`parse_questioner_output`;
2. the Reasoner answers the question n times → :func:`extract_boxed` on each →
   :func:`vote` gives the silver answer, its share ``p`` and the answer groups (canonical keys, then
   :func:`grade`);
3. Questioner reward: :func:`questioner_reward` from ``p`` (:func:`uncertainty_reward`) and the batch's
   :func:`bleu_cluster_penalty`;
4. Reasoner reward (training on the silver labels): :func:`reasoner_reward`.
"""

from visplay.rewards.diversity import bleu_cluster_penalty, bleu_distance_matrix
from visplay.rewards.forms import answer_key, choice_letter, normalize_text, parse_number, yes_no
from visplay.rewards.grading import (
    DEFAULT_GRADE_TIMEOUT_S,
    GRADE_METHODS,
    GradeResult,
    grade,
    grade_detailed,
    grade_timeout_count,
    reset_grade_timeout_count,
    warm_up,
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
    ScoredQuestion,
    questioner_reward,
    score_questions,
    uncertainty_reward,
)
from visplay.rewards.reasoner import ReasonerReward, reasoner_reward
from visplay.rewards.vote import Vote, majority_vote, vote

__all__ = [
    "DEFAULT_GRADE_TIMEOUT_S",
    "GRADE_METHODS",
    "PARSE_ERRORS",
    "UNCERTAINTY_FORMS",
    "Vote",
    "GradeResult",
    "ParsedQuestion",
    "QuestionerReward",
    "ReasonerReward",
    "ScoredQuestion",
    "answer_key",
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
    "parse_number",
    "parse_questioner_output",
    "questioner_reward",
    "reasoner_reward",
    "reset_grade_timeout_count",
    "score_questions",
    "uncertainty_reward",
    "vote",
    "warm_up",
    "yes_no",
]
