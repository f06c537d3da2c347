"""Rule-based scoring of predictions, per-category accuracy, reports.

Pure functions (no I/O). The flow for one benchmark and one model version::

    rows = score_rows(bench, examples, predictions)   # join by example_id, then bench.score per row
    report = make_report(bench, rows, judge_rows=None)  # BenchmarkReport: rule score, per category, extras
    print(comparison_table([report_a, report_b, ...]))

:func:`score_rule` first takes the answer out of the completion (:func:`extract_answer`: the last
``\\boxed{}``, else the last non-blank line without an "The answer is" lead-in), then compares it with the
gold answer according to the example's ``answer_type``; it returns 1.0 or 0.0. It is the default rule; a
benchmark whose official evaluator differs scores with its own (``Benchmark.score`` in
:mod:`visplay.eval.benchmarks`), which is what :func:`score_rows` calls.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol

from visplay.eval.schema import LETTERS, EvalExample, Prediction
from visplay.rewards import choice_letter, extract_boxed, grade, normalize_text, yes_no

_LEAD_IN_RE = re.compile(
    r"^(?:(?:so|thus|therefore|hence)\s*,?\s+)?(?:the\s+)?(?:final\s+|correct\s+)?answer\s*(?:is\s*)?[:：]?\s*",
    re.IGNORECASE,
)
# Letter mentions inside free text, the last one wins: "answer is B", "option (C)", "(D)", a letter at the end.
_LETTER_MENTION_RES = (
    re.compile(r"(?i:answer|option|choice)\s*(?i:is)?\s*:?\s*\(?([A-J])\b"),
    re.compile(r"\(([A-J])\)"),
    re.compile(r"\b([A-J])\s*[.)]?\s*$"),
)
_YES_NO_WORD_RE = re.compile(r"\b(yes|no)\b", re.IGNORECASE)


def extract_answer(text: str) -> str:
    """The answer part of a completion: the content of the last ``\\boxed{}``; else the last non-blank line
    with a lead-in (``The answer is``, ``So the final answer:``), markdown ``*`` and a final period removed.
    A ``\\boxed{`` that never closes (``"... \\boxed{12"``, cut at max_tokens) gives ``""``: no answer.

    ``"... so \\boxed{\\frac{1}{2}}."`` → ``"\\frac{1}{2}"``; ``"Reasoning...\\nThe answer is B."`` → ``"B"``.
    """
    boxed = extract_boxed(text)
    if boxed is not None:
        return boxed
    if "\\boxed" in text:
        return ""  # a box that never closes (a truncated completion) is no answer, as in the reward path
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    return _LEAD_IN_RE.sub("", lines[-1].strip("*# ")).strip("* ").removesuffix(".").strip()


def choice_from_text(text: str, options: Sequence[str]) -> str | None:
    """The option letter a free-text answer picks, or None. Tried in order, the first that decides wins:

    1. the whole answer is a letter answer (:func:`visplay.rewards.choice_letter`: ``B``, ``(B)``,
       ``The answer is B.``);
    2. it is equivalent (:func:`visplay.rewards.grade`) to exactly one option's text (``0.5`` vs ``1/2``);
    3. the last letter mention in it: ``answer is C``, ``option (C)``, ``(C)``, or a capital letter at its end;
    4. exactly one option's text occurs in it as a whole phrase (``"A circle."`` → the ``circle`` option).

    A letter beyond the options (``E`` with 4 options) is never returned. With no options only 1 and 3 apply.
    """
    allowed = LETTERS[: len(options)] if options else LETTERS
    letter = choice_letter(text)
    if letter is not None and letter in allowed:
        return letter
    equal = [i for i, option in enumerate(options) if grade(text, option)]
    if len(equal) == 1:
        return LETTERS[equal[0]]
    mentions = [(m.start(), m.group(1)) for pattern in _LETTER_MENTION_RES for m in pattern.finditer(text)]
    mentions = [(pos, letter) for pos, letter in mentions if letter in allowed]
    if mentions:
        return max(mentions)[1]
    normalized = normalize_text(text)
    contained = [i for i, option in enumerate(options) if contains_phrase(normalized, normalize_text(option))]
    return LETTERS[contained[0]] if len(contained) == 1 else None


def yes_no_from_text(text: str) -> str | None:
    """``"yes"``/``"no"``: the whole answer is a yes/no answer (``Yes.``, ``no, it is not``), else the only
    one of the two words the text contains; None when it has neither or both."""
    verdict = yes_no(text)
    if verdict is not None:
        return verdict
    words = {word.lower() for word in _YES_NO_WORD_RE.findall(text)}
    return words.pop() if len(words) == 1 else None


def open_match(pred: str, gold: str) -> bool:
    """Normalized exact match (:func:`visplay.rewards.normalize_text`: case, spaces, a final period). A
    benchmark with its own gold markers (MM-Vet's ``<AND>``/``<OR>``) scores them in its class."""
    normalized = normalize_text(pred)
    return bool(normalized) and normalized == normalize_text(gold)


def contains_phrase(text: str, phrase: str) -> bool:
    """True if ``phrase`` occurs in ``text`` not glued to letters or digits on either side."""
    return bool(phrase) and re.search(rf"(?<![\w]){re.escape(phrase)}(?![\w])", text) is not None


def score_rule(example: EvalExample, prediction_text: str) -> float:
    """1.0 if the completion's answer (:func:`extract_answer`) matches the gold answer, else 0.0.

    By ``answer_type``: ``choice`` — :func:`choice_from_text` equals the gold letter; ``yesno`` —
    :func:`yes_no_from_text` equals the gold; ``math`` — :func:`visplay.rewards.grade` (``0.5`` equals
    ``\\frac{1}{2}``); ``open`` — :func:`open_match`.
    """
    answer = extract_answer(prediction_text)
    if not answer:
        return 0.0
    if example.answer_type == "choice":
        correct = choice_from_text(answer, example.options) == example.answer
    elif example.answer_type == "yesno":
        correct = yes_no_from_text(answer) == example.answer
    elif example.answer_type == "math":
        correct = grade(answer, example.answer)
    else:
        correct = open_match(answer, example.answer)
    return 1.0 if correct else 0.0


# ---------------------------------------------------------------------------------------------------------
# Joining and rows
# ---------------------------------------------------------------------------------------------------------
def _some(ids: Iterable[str], k: int = 10) -> str:
    """At most ``k`` ids and the total, for messages."""
    ids = sorted(ids)
    return f"{ids[:k]}{' …' if len(ids) > k else ''} ({len(ids)} in all)"


def join_predictions(
    examples: Sequence[EvalExample], predictions: Sequence[Prediction]
) -> list[tuple[EvalExample, Prediction]]:
    """Pair each example with its prediction by ``example_id`` (never by position), in example order.

    Raises:
        ValueError: duplicate ids on either side, predictions from more than one ``model_version``, a count
            mismatch, examples without a prediction, or predictions for unknown ids; the message lists the ids.
    """
    for side, ids in (
        ("examples", [e.example_id for e in examples]),
        ("predictions", [p.example_id for p in predictions]),
    ):
        duplicates = [i for i, count in Counter(ids).items() if count > 1]
        if duplicates:
            raise ValueError(f"duplicate example ids among the {side}: {_some(duplicates)}")
    versions = {p.model_version for p in predictions}
    if len(versions) > 1:
        raise ValueError(
            f"predictions come from several model versions {sorted(versions)}; join one at a time"
        )
    by_id = {p.example_id: p for p in predictions}
    known = {e.example_id for e in examples}
    missing, unknown = known - by_id.keys(), by_id.keys() - known
    if len(examples) != len(predictions) or missing or unknown:
        raise ValueError(
            f"{len(examples)} examples but {len(predictions)} predictions; "
            f"examples without a prediction: {_some(missing)}; predictions for unknown ids: {_some(unknown)}"
        )
    return [(example, by_id[example.example_id]) for example in examples]


@dataclass(frozen=True)
class ScoredRow:
    """One example, its prediction and a score in [0, 1]; ``score`` None means no verdict (a judge failure
    or an unparseable judge reply), which metrics leave out and count."""

    example: EvalExample
    prediction: Prediction
    score: float | None


class Scorer(Protocol):
    """What scoring needs of a benchmark (``visplay.eval.benchmarks.Benchmark`` is one)."""

    name: str
    notes: tuple[str, ...]

    def score(self, example: EvalExample, text: str) -> float: ...

    def metrics(self, rows: Sequence[ScoredRow]) -> dict[str, float]: ...


def score_rows(
    bench: Scorer, examples: Sequence[EvalExample], predictions: Sequence[Prediction]
) -> list[ScoredRow]:
    """:func:`join_predictions`, then the benchmark's own rule (``bench.score``) on each pair."""
    return [ScoredRow(e, p, bench.score(e, p.text)) for e, p in join_predictions(examples, predictions)]


# ---------------------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------------------
def per_category(rows: Sequence[ScoredRow]) -> dict[str, float]:
    """Mean score per category label, sorted by label. An example with several labels (MM-Vet
    ``"rec,ocr"``) counts in each; rows without a category or without a score (None) are left out."""
    scores: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        if row.score is not None:
            for label in row.example.categories:
                scores[label].append(row.score)
    return {label: sum(values) / len(values) for label, values in sorted(scores.items())}


# ---------------------------------------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BenchmarkReport:
    """One model version's figures on one benchmark (scores are fractions in [0, 1]).

    Attributes:
        benchmark: adapter name.
        model_version: the predictions' model version.
        n: examples scored.
        rule_score: mean score by the benchmark's own rule (``Benchmark.score``).
        judge_score: mean LLM-judge score over the examples with a verdict; None when not judged.
        per_category: :func:`per_category` of the rule scores.
        extra: further figures: the benchmark's own (HallusionBench ``aAcc``/``fAcc``/``qAcc``, rule); with
            a judge, ``judge_n`` (verdicts), ``judge_missing`` (no verdict), ``judge/<category>`` and the
            benchmark's figures over the verdicts when every row has one (``judge/aAcc`` etc.).
        notes: where the scoring deliberately differs from the benchmark's official evaluator.
        judge_prompt: the judge's prompt file and its sha256 (``path sha256:…``); None when not judged.
        rejected: rows of the benchmark's file that could not be evaluated (listed in ``rejects.jsonl``).
    """

    benchmark: str
    model_version: str
    n: int
    rule_score: float
    judge_score: float | None
    per_category: dict[str, float]
    extra: dict[str, float]
    notes: tuple[str, ...] = ()
    judge_prompt: str | None = None
    rejected: int = field(default=0)

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-ready dict of every field (``notes`` as a list, as JSON reads it back)."""
        return {**asdict(self), "notes": list(self.notes)}


def make_report(
    bench: Scorer,
    rule_rows: Sequence[ScoredRow],
    judge_rows: Sequence[ScoredRow] | None = None,
    *,
    judge_prompt: str | None = None,
    rejected: int = 0,
) -> BenchmarkReport:
    """A :class:`BenchmarkReport` from rule-scored rows (and, optionally, judge-scored rows of the same
    examples). Raises ValueError for empty rows, rows of another benchmark, mixed model versions, rule rows
    without a score, or judge rows for other examples."""
    if not rule_rows:
        raise ValueError("make_report needs at least one row")
    benchmarks = {r.example.benchmark for r in rule_rows}
    versions = {r.prediction.model_version for r in rule_rows}
    if benchmarks != {bench.name} or len(versions) != 1:
        raise ValueError(
            f"one report is one benchmark ({bench.name}) and one model version, got {benchmarks} and {versions}"
        )
    if any(r.score is None for r in rule_rows):
        raise ValueError("every rule-scored row needs a score")
    rule_score = sum(r.score for r in rule_rows if r.score is not None) / len(rule_rows)
    extra: dict[str, float] = dict(bench.metrics(rule_rows))
    judge_score = None
    if judge_rows is not None:
        if sorted(r.example.example_id for r in judge_rows) != sorted(
            r.example.example_id for r in rule_rows
        ):
            raise ValueError("judge rows must cover exactly the examples of the rule rows")
        judged = [r.score for r in judge_rows if r.score is not None]
        judge_score = sum(judged) / len(judged) if judged else None
        extra["judge_n"] = float(len(judged))
        extra["judge_missing"] = float(len(judge_rows) - len(judged))
        extra.update({f"judge/{label}": value for label, value in per_category(judge_rows).items()})
        if len(judged) == len(judge_rows):
            extra.update({f"judge/{key}": value for key, value in bench.metrics(judge_rows).items()})
    return BenchmarkReport(
        bench.name,
        versions.pop(),
        len(rule_rows),
        rule_score,
        judge_score,
        per_category(rule_rows),
        extra,
        tuple(bench.notes),
        judge_prompt,
        rejected,
    )


def comparison_table(reports: Sequence[BenchmarkReport]) -> str:
    """Plain-text table: one row per model version, one column per benchmark (both in first-seen order).

    A cell is the rule score in percent with one decimal, followed by the judge score in brackets when
    there is one (``61.2 [58.0]``); ``-`` where that model was not evaluated on that benchmark.
    Raises ValueError for two reports of the same (model version, benchmark).
    """
    versions = list(dict.fromkeys(r.model_version for r in reports))
    benchmarks = list(dict.fromkeys(r.benchmark for r in reports))
    cells: dict[tuple[str, str], str] = {}
    for r in reports:
        if (r.model_version, r.benchmark) in cells:
            raise ValueError(f"two reports for model {r.model_version!r} on {r.benchmark!r}")
        judge = f" [{100 * r.judge_score:.1f}]" if r.judge_score is not None else ""
        cells[(r.model_version, r.benchmark)] = f"{100 * r.rule_score:.1f}{judge}"
    header = ["model_version", *benchmarks]
    body = [[v, *(cells.get((v, b), "-") for b in benchmarks)] for v in versions]
    widths = [max(len(line[k]) for line in [header, *body]) for k in range(len(header))]
    lines = [
        "  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)).rstrip()
        for line in [header, *body]
    ]
    legend = "rule-based score, % (LLM-judge score, %, in brackets)"
    return "\n".join([legend, *lines])
