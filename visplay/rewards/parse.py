"""Parsers for model outputs: the Questioner's tagged question and the Reasoner's ``\\boxed{}`` answer.

Both are lenient (models drift from the format) and never raise on model text: a failure is a value
(:class:`ParsedQuestion` with ``ok=False`` and a fixed ``error`` code, or ``None`` from :func:`extract_boxed`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from visplay.prompts import QTYPE_MULTIPLE_CHOICE, QTYPE_NUMERICAL, QTYPE_REGRESSION

# The fixed set of reasons a Questioner output is rejected, in the order they are checked.
ERR_MISSING_TYPE = "missing_type"
ERR_MISSING_QUESTION = "missing_question"
ERR_MISSING_ANSWER = "missing_answer"
ERR_BAD_TYPE = "bad_type"
ERR_EMPTY_QUESTION = "empty_question"
ERR_EMPTY_ANSWER = "empty_answer"
PARSE_ERRORS: tuple[str, ...] = (
    ERR_MISSING_TYPE,
    ERR_MISSING_QUESTION,
    ERR_MISSING_ANSWER,
    ERR_BAD_TYPE,
    ERR_EMPTY_QUESTION,
    ERR_EMPTY_ANSWER,
)

# Spellings accepted for each question type, after lower-casing, turning "-"/"_" into spaces and
# collapsing whitespace (so "Multiple-Choice" and "multiple_choice" both become "multiple choice").
_TYPE_ALIASES: dict[str, str] = {
    "multiple choice": QTYPE_MULTIPLE_CHOICE,
    "multiplechoice": QTYPE_MULTIPLE_CHOICE,
    "multiple choice question": QTYPE_MULTIPLE_CHOICE,
    "multi choice": QTYPE_MULTIPLE_CHOICE,
    "mcq": QTYPE_MULTIPLE_CHOICE,
    "numerical": QTYPE_NUMERICAL,
    "numeric": QTYPE_NUMERICAL,
    "number": QTYPE_NUMERICAL,
    "regression": QTYPE_REGRESSION,
}


def _tag_pattern(name: str) -> re.Pattern[str]:
    """Regex for one ``<name>…</name>`` pair: tag names case-insensitive, spaces allowed inside the brackets
    (``< question >``), content may span lines. The content may not contain another opening ``<name>``, so
    in ``<type><type>x</type>`` only the inner, well-formed pair matches."""
    return re.compile(
        rf"<\s*{name}\s*>((?:(?!<\s*{name}\s*>).)*?)<\s*/\s*{name}\s*>",
        re.IGNORECASE | re.DOTALL,
    )


_TYPE_RE = _tag_pattern("type")
_QUESTION_RE = _tag_pattern("question")
_ANSWER_RE = _tag_pattern("answer")


@dataclass(frozen=True)
class ParsedQuestion:
    """Result of :func:`parse_questioner_output`.

    Attributes:
        ok: True when type, question and answer were all found, the type is valid and neither the question
            nor the answer is blank.
        qtype: the normalised type (one of ``visplay.prompts.QUESTION_TYPES``), or None if missing/invalid.
        question: the stripped question text, or None if the tag is missing.
        answer: the stripped answer text, or None if the tag is missing.
        error: None when ``ok``; otherwise one of :data:`PARSE_ERRORS` (the first failing check, in that
            order). Fields that were found are kept even when ``ok`` is False, for logging.
    """

    ok: bool
    qtype: str | None
    question: str | None
    answer: str | None
    error: str | None


def normalize_qtype(raw: str) -> str | None:
    """Map a model-written question type onto ``visplay.prompts.QUESTION_TYPES``.

    Case-insensitive; "-", "_" and runs of whitespace count as one space; surrounding quotes, backticks and
    asterisks are ignored. ``"Multiple-Choice"`` → ``"multiple choice"``, ``"NUMERIC"`` → ``"numerical"``.

    Returns:
        The canonical type, or None if ``raw`` is not a known spelling (including the empty string).
    """
    key = " ".join(re.sub(r"[-_]", " ", raw.strip().strip("`'\"*").lower()).split())
    return _TYPE_ALIASES.get(key)


def _last_match(pattern: re.Pattern[str], text: str) -> str | None:
    """Stripped content of the LAST match of ``pattern`` in ``text``; None if there is no match."""
    matches = pattern.findall(text)
    return matches[-1].strip() if matches else None


def parse_questioner_output(text: str | None) -> ParsedQuestion:
    """Parse ``<type>T</type><question>Q</question><answer>A</answer>`` from a Questioner completion.

    Lenient by design: text around or between the tags is ignored, the tags may come in any order, and when a
    tag appears several times the LAST well-formed pair wins (each of the three tags independently). Contents
    are whitespace-stripped and the type is normalised with :func:`normalize_qtype`.

    Checks run in the order of :data:`PARSE_ERRORS` and the first failure is reported: a missing tag
    (``missing_type``, ``missing_question``, ``missing_answer``), then an unknown or empty type (``bad_type``),
    then a blank question (``empty_question``) or answer (``empty_answer``).

    Args:
        text: the raw completion; None is treated like ``""`` (reported as ``missing_type``).

    Returns:
        A :class:`ParsedQuestion`; never raises on model text.
    """
    text = text or ""
    raw_type = _last_match(_TYPE_RE, text)
    question = _last_match(_QUESTION_RE, text)
    answer = _last_match(_ANSWER_RE, text)
    qtype = normalize_qtype(raw_type) if raw_type is not None else None

    error = None
    if raw_type is None:
        error = ERR_MISSING_TYPE
    elif question is None:
        error = ERR_MISSING_QUESTION
    elif answer is None:
        error = ERR_MISSING_ANSWER
    elif qtype is None:
        error = ERR_BAD_TYPE
    elif not question:
        error = ERR_EMPTY_QUESTION
    elif not answer:
        error = ERR_EMPTY_ANSWER
    return ParsedQuestion(ok=error is None, qtype=qtype, question=question, answer=answer, error=error)


_BOXED_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")


def extract_boxed(text: str | None) -> str | None:
    """Content of the LAST ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text``, whitespace-stripped.

    Braces are matched, so ``\\boxed{\\frac{1}{2}}`` gives ``\\frac{1}{2}``; escaped characters (``\\{``,
    ``\\}``, ``\\\\``) do not count as braces. Only the last occurrence is considered: if it is unbalanced
    (e.g. a truncated completion ending in ``\\boxed{12``) the result is None, even if an earlier box was
    complete. In ``\\boxed{\\boxed{3}}`` the inner box is the last one, giving ``3``. The brace-less form
    ``\\boxed 5`` is not recognised.

    Args:
        text: a Reasoner completion (None is treated as no box).

    Returns:
        The box content (possibly ``""`` for ``\\boxed{}``), or None if there is no box or it is unbalanced.
    """
    if not text:
        return None
    openings = list(_BOXED_RE.finditer(text))
    if not openings:
        return None
    start = openings[-1].end()  # first character after the last opening brace
    depth = 1
    i = start
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2  # skip the escaped character
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[start:i].strip()
        i += 1
    return None
