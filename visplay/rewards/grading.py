"""Answer equivalence: is a predicted answer the same as a reference answer?

:func:`grade_detailed` compares canonical keys first (:func:`visplay.rewards.forms.answer_key`) and asks
``math_verify`` only when keys cannot decide:

1. ``empty``   — either side is None or blank → not equal;
2. equal keys  → equal, the method naming the kind: ``choice`` (``(A)`` = ``A.``), ``yes_no`` (``Yes.`` =
   ``true``), ``number`` (``0.5`` = ``\\frac{1}{2}`` = ``1/2``, ``1 000`` = ``1000``, ``1e3`` = ``1000``,
   ``2 apples`` = ``2``) or ``string`` (``(a, b)`` = ``(a,b)``, ``\\pi`` = ``pi``);
3. ``choice`` / ``yes_no`` / ``number`` — both keys of that kind and different → not equal;
4. ``not_math`` — either side is a letter or yes/no answer, or has no digit, backslash or operator
   (``+ - * / ^ = < >``): plain words are not sent to ``math_verify``, which would read ``ab`` as a·b = b·a;
5. ``too_complex`` — sympy could run for seconds holding the GIL (:func:`visplay.rewards.cost.is_too_costly`);
6. ``math`` — ``math_verify`` decides (``x^2+y^2`` = ``y^2+x^2``), numbers given as their exact value;
   ``timeout`` if it ran past the wall-clock limit and ``math_error`` if it raised.

Steps 1–5 depend on the two strings alone. So does step 6 unless the machine stalls: ``math_verify`` and
sympy are imported and exercised once per process *before* any comparison is timed (:func:`warm_up`, also
called by every pipeline stage and trainer in its setup), so the limit measures the comparison only. A
timeout that still happens is an error, not a verdict: it is counted (:func:`grade_timeout_count`), a vote
leaves the answers out (:func:`visplay.rewards.vote`), and the phases report it as ``grade_timeouts``.

Timeouts: ``math_verify`` is called with its own (signal-based, main-thread-only) timeouts disabled and run on
a daemon worker thread (:mod:`visplay.rewards._timeout`), so grading works from any thread.
"""

from __future__ import annotations

import functools
import re
import threading
from dataclasses import dataclass

from visplay.rewards._timeout import TimeoutRunner
from visplay.rewards.cost import is_too_costly
from visplay.rewards.forms import answer_key, key_as_math

DEFAULT_GRADE_TIMEOUT_S = 2.0
MATH_CACHE_SIZE = 65536
"""Distinct (pred, gold) pairs whose math_verify verdict is kept per process (short strings: a few MB)."""

GRADE_METHODS: tuple[str, ...] = (
    "empty", "string", "choice", "yes_no", "number", "not_math", "too_complex", "math", "timeout", "math_error",
)  # fmt: skip

_RUNNER = TimeoutRunner()
_lock = threading.Lock()
_timeout_count = 0
_warm = False
_MATHY_RE = re.compile(r"[0-9\\+\-*/^=<>]")


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
        """True if ``math_verify`` ran past the timeout (the verdict is then False, and counted)."""
        return self.method == "timeout"


def grade_timeout_count() -> int:
    """Number of grading calls that timed out in this process since start (or since the last reset)."""
    return _timeout_count


def reset_grade_timeout_count() -> int:
    """Set the timeout counter to 0 and return the value it had (read-and-reset for per-step metrics)."""
    global _timeout_count
    with _lock:
        previous, _timeout_count = _timeout_count, 0
    return previous


def _count_timeout() -> None:
    global _timeout_count
    with _lock:
        _timeout_count += 1


def warm_up() -> None:
    """Import math_verify and sympy and run one comparison, untimed, once per process (idempotent).

    The import alone takes about 2 s on a loaded 2-core machine; timed, it made a fresh process's first
    verdicts ``timeout``. :func:`grade_detailed` calls this before it times anything; stages and trainers call
    it in their setup so the first batch does not pay it either.
    """
    global _warm
    if _warm:
        return
    with _lock:
        if not _warm:
            _verify("\\sqrt{2}/2", "\\frac{1}{\\sqrt{2}}")
            _warm = True


def _verify(pred: str, gold: str) -> bool:
    """``math_verify`` verdict for two bare answers, with math_verify's signal-based timeouts disabled.

    Both are wrapped in
    ``\\boxed{}`` so LaTeX and plain forms parse; ``verify`` takes the gold first (it is not symmetric). An
    unparsable side → False. math_verify is imported here, not at module level: it pulls in sympy, which
    every Ray worker that merely unpickles a pipeline stage would otherwise pay.
    """
    from math_verify import parse, verify

    gold_parsed = parse(f"\\boxed{{{gold}}}", parsing_timeout=None)
    pred_parsed = parse(f"\\boxed{{{pred}}}", parsing_timeout=None)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))


_math_equal = functools.lru_cache(maxsize=MATH_CACHE_SIZE)(_verify)
""":func:`_verify`, cached per (pred, gold): a vote compares the same few short answers over and over."""


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
    pred_key, gold_key = answer_key(pred), answer_key(gold)
    if pred_key is None or gold_key is None:
        return GradeResult(False, "empty")
    if pred_key == gold_key:
        return GradeResult(True, "string" if pred_key[0] == "text" else pred_key[0])
    if pred_key[0] == gold_key[0] != "text":
        return GradeResult(False, pred_key[0])
    kinds = {pred_key[0], gold_key[0]}
    if kinds & {"choice", "yes_no"} or not (_MATHY_RE.search(pred) and _MATHY_RE.search(gold)):
        return GradeResult(False, "not_math")
    pred_math, gold_math = key_as_math(pred_key, pred), key_as_math(gold_key, gold)
    if is_too_costly(pred_math) or is_too_costly(gold_math):
        return GradeResult(False, "too_complex")
    try:
        if timeout_s is None:
            return GradeResult(_math_equal(pred_math, gold_math), "math")
        warm_up()
        finished, equal = _RUNNER.call(_math_equal, pred_math, gold_math, timeout_s=timeout_s)
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
