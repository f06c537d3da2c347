"""Answer equivalence: is a predicted answer the same as a reference answer?

:func:`grade_detailed` tries cheap, exact rules first and ``math_verify`` last:

1. ``empty``   — either side is None or blank → not equal;
2. ``string``  — equal after light normalisation (see :func:`normalize_text`) → equal;
3. ``choice``  — both sides are multiple-choice letters (``(A)``, ``A.``, ``A)``, ``option a``, ``A: text``)
   → equal iff the letters match;
4. ``yes_no``  — both sides are yes/no (``Yes.``, ``no``, ``True``/``False``) → equal iff they agree;
5. ``not_math`` — one side has no digit, backslash or operator (``+ - * / ^ = < >``): plain words are not sent
   to ``math_verify``, which would read ``ab`` as the product a·b and call it equal to ``ba`` → not equal;
6. ``integer`` — both sides are plain integers (``7``, ``-3``, ``007``; up to :data:`MAX_INTEGER_DIGITS` digits)
   → equal iff their values are. math_verify gives the same verdict; this rule only skips it, since a
   fresh process's first math_verify call costs seconds (sympy) and most votes compare counts;
7. ``too_complex`` — an input ``math_verify``/sympy could not finish in time *while holding the GIL* (huge
   exponents or factorials such as ``9^{9^{9}}``; see :func:`is_too_costly`) → not equal;
8. ``math`` — ``math_verify`` decides (``0.5`` vs ``\\frac{1}{2}`` → equal), under a wall-clock timeout;
   ``timeout`` if it ran out of time and ``math_error`` if it raised → not equal.

Timeouts: ``math_verify`` is called with its own (signal-based, main-thread-only) timeouts disabled and run on
a daemon worker thread (:mod:`visplay.rewards._timeout`), so grading works from any thread. Every timeout also
bumps a per-process counter read with :func:`grade_timeout_count`.
"""

from __future__ import annotations

import functools
import re
import threading
from dataclasses import dataclass

from visplay.rewards._timeout import TimeoutRunner

DEFAULT_GRADE_TIMEOUT_S = 2.0
# Inputs longer than this are not sent to sympy (answers are short; long ones are usually garbage).
MAX_SYMBOLIC_CHARS = 200
# Distinct (pred, gold) pairs whose math_verify verdict is kept per process (short strings: a few MB at most).
MATH_CACHE_SIZE = 65536
# Exponents / factorial arguments with more digits than this can take CPython minutes inside one C call.
MAX_EXPONENT_DIGITS = 5
MAX_FACTORIAL_DIGITS = 4

MAX_INTEGER_DIGITS = 100
"""Longest plain integer the ``integer`` rule compares itself (CPython refuses int() of over 4,300 digits)."""
_INTEGER_RE = re.compile(r"[+-]?\d+")

GRADE_METHODS: tuple[str, ...] = (
    "empty",
    "string",
    "choice",
    "yes_no",
    "not_math",
    "integer",
    "too_complex",
    "math",
    "timeout",
    "math_error",
)

_RUNNER = TimeoutRunner()
_timeout_lock = threading.Lock()
_timeout_count = 0


@dataclass(frozen=True)
class GradeResult:
    """Outcome of :func:`grade_detailed`.

    Attributes:
        equal: the verdict.
        method: which rule decided it, one of :data:`GRADE_METHODS`.
    """

    equal: bool
    method: str

    @property
    def timed_out(self) -> bool:
        """True if ``math_verify`` ran past the timeout (the verdict is then False)."""
        return self.method == "timeout"


def grade_timeout_count() -> int:
    """Number of grading calls that timed out in this process since start (or since the last reset)."""
    return _timeout_count


def reset_grade_timeout_count() -> int:
    """Set the timeout counter to 0 and return the value it had (read-and-reset for per-step metrics)."""
    global _timeout_count
    with _timeout_lock:
        previous, _timeout_count = _timeout_count, 0
    return previous


def _count_timeout() -> None:
    """Add one to the per-process timeout counter."""
    global _timeout_count
    with _timeout_lock:
        _timeout_count += 1


# ---------------------------------------------------------------------------------------------------------
# Normalisation
# ---------------------------------------------------------------------------------------------------------
_WRAPPER_COMMAND_RE = re.compile(r"^\\(?:text|textbf|textrm|textit|mathrm|mathbf|mbox)\s*\{")


def _matching_brace(text: str, open_index: int) -> int | None:
    """Index of the brace closing the ``{`` or ``(`` at ``open_index`` (escaped characters skipped), or None."""
    opener = text[open_index]
    closer = "}" if opener == "{" else ")"
    depth = 0
    i = open_index
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if char == opener:
            depth += 1
        elif char == closer:
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def strip_wrappers(answer: str) -> str:
    """Remove whitespace, surrounding ``$``/``$$`` and whole-answer ``\\text{}``-style wrappers (repeatedly).

    ``"$\\text{(A)}$"`` → ``"(A)"``; ``"\\text{a} + \\text{b}"`` is left alone (the first wrapper does not
    span the whole answer). Case is preserved.
    """
    current = answer.strip()
    while True:
        previous = current
        if len(current) >= 2 and current[0] == current[-1] == "$":
            current = current.strip("$").strip()
        match = _WRAPPER_COMMAND_RE.match(current)
        if match and _matching_brace(current, match.end() - 1) == len(current) - 1:
            current = current[match.end() : -1].strip()
        if current == previous:
            return current


def normalize_text(answer: str) -> str:
    """Plain-string normal form: :func:`strip_wrappers`, lower case, whitespace runs → one space, trailing
    periods removed. ``"  The Red  Car. "`` → ``"the red car"``."""
    return " ".join(strip_wrappers(answer).lower().split()).rstrip(".").rstrip()


_CHOICE_RE = re.compile(
    r"^(?:(?:the\s+)?(?:correct\s+)?(?:answer|option|choice)(?:\s+is)?\s*:?\s*)?"  # optional lead-in
    r"(?:[(\[]([A-J])[)\]](?:[\s.:,].*)?"  # (A)  [A]  (A) text  (A).
    r"|([A-J])(?:[.:)].*)?)$",  # A  A.  A)  A: text  A. text
    re.IGNORECASE | re.DOTALL,
)


def choice_letter(answer: str) -> str | None:
    """The multiple-choice letter (A–J, upper case) an answer names, or None if it is not a letter answer.

    Accepted: ``A``, ``a``, ``(A)``, ``[A]``, ``A.``, ``A)``, ``A: text``, ``A. text``, ``(A) text``,
    ``option a``, ``Answer: B``, ``The answer is (C)``. Not accepted: ``A text`` without punctuation (it could
    be a sentence starting with the article "A").
    """
    match = _CHOICE_RE.match(strip_wrappers(answer))
    if match is None:
        return None
    return (match.group(1) or match.group(2)).upper()


_YES_NO_RE = re.compile(r"^(yes|no|true|false)(?:\s*[,.;:!?].*)?$", re.IGNORECASE | re.DOTALL)
_YES_NO_CANONICAL = {"yes": "yes", "true": "yes", "no": "no", "false": "no"}


def yes_no(answer: str) -> str | None:
    """``"yes"``/``"no"`` if the answer is a yes/no answer, else None.

    Case-insensitive; trailing punctuation and a justification after punctuation are allowed (``"Yes."``,
    ``"no, it is not"``); ``True``/``False`` map to yes/no. ``"No one"`` is not a yes/no answer.
    """
    match = _YES_NO_RE.match(strip_wrappers(answer))
    return _YES_NO_CANONICAL[match.group(1).lower()] if match else None


_MATHY_RE = re.compile(r"[0-9\\+\-*/^=<>]")


def _exponent_operand(expr: str, start: int) -> tuple[str, int]:
    """The operand of an exponent whose ``^`` ends just before ``start``, and the index after it.

    A braced or parenthesised group gives its content; a run of letters/digits/dots gives that run; anything
    else (a LaTeX command, an unbalanced group) conservatively gives the rest of the string.
    """
    i = start
    while i < len(expr) and expr[i].isspace():
        i += 1
    if i < len(expr) and expr[i] in "{(":
        close = _matching_brace(expr, i)
        if close is not None:
            return expr[i + 1 : close], close + 1
        return expr[i + 1 :], len(expr)
    run = re.match(r"[\w.]+", expr[i:])
    if run:
        return run.group(), i + run.end()
    return expr[i:], len(expr)


def is_too_costly(expr: str) -> bool:
    """Heuristic: could sympy/CPython spend unbounded time on ``expr`` *inside one C call*?

    Such calls hold the GIL, so no thread timeout can interrupt them (``9^{9^{9}}``, ``2^{2^{100}}``,
    ``10^{10000000}``, ``1000000!`` all freeze the process). True when ``expr`` is longer than
    :data:`MAX_SYMBOLIC_CHARS`; or an exponent (``^`` or ``**``) contains another exponent or a factorial, has
    more than :data:`MAX_EXPONENT_DIGITS` consecutive digits, or is followed by another ``^`` (``a^b^c``); or a
    factorial applies to a bracketed expression or to more than :data:`MAX_FACTORIAL_DIGITS` digits.
    Ordinary answers (``x^2+y^2``, ``3 \\times 10^{8}``, ``5!``) pass.
    """
    if len(expr) > MAX_SYMBOLIC_CHARS:
        return True
    expr = expr.replace("**", "^")
    long_digits = re.compile(rf"\d{{{MAX_EXPONENT_DIGITS + 1},}}")
    for caret in re.finditer(r"\^", expr):
        operand, end = _exponent_operand(expr, caret.end())
        if "^" in operand or "!" in operand or long_digits.search(operand):
            return True
        if expr[end:].lstrip().startswith("^"):
            return True
    for bang in re.finditer(r"!", expr):
        before = expr[: bang.start()].rstrip()
        if before and before[-1] in ")]}":
            return True
        digits = re.search(r"\d+$", before)
        if digits and len(digits.group()) > MAX_FACTORIAL_DIGITS:
            return True
    return False


@functools.lru_cache(maxsize=MATH_CACHE_SIZE)
def _math_equal(pred: str, gold: str) -> bool:
    """``math_verify`` verdict for two bare answers, with math_verify's signal-based timeouts disabled.

    Cached per (pred, gold): votes compare the same few short answers (``0.5`` vs ``0.6``) over and over, and
    each sympy parse-and-verify costs milliseconds (bench/generation.py: scoring 128 questions took 10.8 s
    in a pipeline's first pass, 0.7 s once its workers were warm). The verdict is a pure function of the two
    strings, so the cache changes no result.

    Both are wrapped in ``\\boxed{}`` so LaTeX (``\\frac{1}{2}``) and plain forms (``0.5``, ``1/2``) parse;
    ``verify`` takes the gold first (it is not symmetric). An unparsable side → False.

    math_verify is imported here, not at module level: it pulls in sympy (about 3 s of imports), which
    every fresh Ray worker that merely unpickles a pipeline stage would otherwise pay.
    """
    from math_verify import parse, verify

    gold_parsed = parse(f"\\boxed{{{gold}}}", parsing_timeout=None)
    pred_parsed = parse(f"\\boxed{{{pred}}}", parsing_timeout=None)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))


def grade_detailed(
    pred: str | None, gold: str | None, *, timeout_s: float | None = DEFAULT_GRADE_TIMEOUT_S
) -> GradeResult:
    """Decide whether ``pred`` is equivalent to ``gold`` and say which rule decided (module docstring).

    Args:
        pred: the predicted answer, already extracted (e.g. the content of ``\\boxed{}``); None = no answer.
        gold: the reference (silver or ground-truth) answer; None = no reference.
        timeout_s: wall-clock limit in seconds for the ``math_verify`` step (> 0). ``None`` runs it inline
            in the calling thread with no limit (debugging only).

    Returns:
        A :class:`GradeResult`. A timed-out comparison is ``GradeResult(False, "timeout")`` and is also
        counted in :func:`grade_timeout_count`.

    Raises:
        ValueError: only for a bad ``timeout_s``; never on answer text.
    """
    if timeout_s is not None and not timeout_s > 0:
        raise ValueError(f"timeout_s must be > 0 or None, got {timeout_s}")
    if pred is None or gold is None:
        return GradeResult(False, "empty")
    pred, gold = strip_wrappers(pred), strip_wrappers(gold)
    if not pred or not gold:
        return GradeResult(False, "empty")
    if normalize_text(pred) == normalize_text(gold):
        return GradeResult(True, "string")

    pred_letter, gold_letter = choice_letter(pred), choice_letter(gold)
    if pred_letter is not None and gold_letter is not None:
        return GradeResult(pred_letter == gold_letter, "choice")
    pred_yes_no, gold_yes_no = yes_no(pred), yes_no(gold)
    if pred_yes_no is not None and gold_yes_no is not None:
        return GradeResult(pred_yes_no == gold_yes_no, "yes_no")

    if not (_MATHY_RE.search(pred) and _MATHY_RE.search(gold)):
        return GradeResult(False, "not_math")
    if (
        _INTEGER_RE.fullmatch(pred)
        and _INTEGER_RE.fullmatch(gold)
        and max(len(pred), len(gold)) <= MAX_INTEGER_DIGITS
    ):
        return GradeResult(int(pred) == int(gold), "integer")
    if is_too_costly(pred) or is_too_costly(gold):
        return GradeResult(False, "too_complex")
    try:
        if timeout_s is None:
            return GradeResult(_math_equal(pred, gold), "math")
        finished, equal = _RUNNER.call(_math_equal, pred, gold, timeout_s=timeout_s)
    except Exception:  # math_verify swallows most errors itself; this is the safety net
        return GradeResult(False, "math_error")
    if not finished:
        _count_timeout()
        return GradeResult(False, "timeout")
    return GradeResult(bool(equal), "math")


def grade(pred: str | None, gold: str | None, *, timeout_s: float | None = DEFAULT_GRADE_TIMEOUT_S) -> bool:
    """True if ``pred`` is equivalent to ``gold``; ``grade_detailed(...).equal`` (see it for the rules).

    ``grade("0.5", "\\\\frac{1}{2}")`` → True; ``grade("(A)", "A")`` → True; ``grade("Yes.", "yes")`` → True.
    A timeout counts as not equal (and in :func:`grade_timeout_count`).
    """
    return grade_detailed(pred, gold, timeout_s=timeout_s).equal
