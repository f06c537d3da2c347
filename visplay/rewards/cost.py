"""Deterministic bounds on what is sent to sympy: inputs that could run for seconds inside one C call.

Such calls hold the GIL, so no thread timeout can interrupt them (``9^{9^{9}}``, ``10^{10000000}``,
``1000000!``, ``\\binom{99999}{49999}`` all froze or stalled the process). :func:`is_too_costly` decides
from the text alone, so the verdict "too costly" never depends on the machine's load. It is linear in the
input, which is at most :data:`MAX_SYMBOLIC_CHARS` long anyway.
"""

from __future__ import annotations

import re

MAX_SYMBOLIC_CHARS = 200
"""Inputs longer than this are not sent to sympy (answers are short; long ones are usually garbage)."""
MAX_EXPONENT_DIGITS = 5
"""Most digits in one exponent, counted over all its numbers (``2^{99999*9999}`` has 9: refused); a power of
a power counts the digits of both exponents."""
MAX_FACTORIAL_DIGITS = 4
"""Most digits in a factorial's or a binomial's argument (``10000!`` refused, ``9999!`` allowed)."""
MAX_BOUND_DIGITS = 3
"""Most digits in a bound of ``\\sum``/``\\prod`` (``\\prod_{i=1}^{99999} i`` is a 450,000-digit number)."""

_BINOM_RE = re.compile(r"\\[dt]?binom\s*\{([^{}]*)\}\s*\{([^{}]*)\}|\\choose")
_BIG_OPERATOR_RE = re.compile(r"\\(?:sum|prod)")


def _matching_close(expr: str, open_index: int) -> int | None:
    """Index of the bracket closing the ``{``/``(``/``[`` at ``open_index``, or None if it is unbalanced."""
    opener = expr[open_index]
    closer = {"{": "}", "(": ")", "[": "]"}[opener]
    depth = 0
    for i in range(open_index, len(expr)):
        if expr[i] == opener:
            depth += 1
        elif expr[i] == closer:
            depth -= 1
            if depth == 0:
                return i
    return None


def _matching_open(expr: str, close_index: int) -> int | None:
    """Index of the bracket opening the ``}``/``)``/``]`` at ``close_index``, or None if it is unbalanced."""
    closer = expr[close_index]
    opener = {"}": "{", ")": "(", "]": "["}[closer]
    depth = 0
    for i in range(close_index, -1, -1):
        if expr[i] == closer:
            depth += 1
        elif expr[i] == opener:
            depth -= 1
            if depth == 0:
                return i
    return None


def _exponent(expr: str, start: int) -> tuple[str, int]:
    """The operand of the ``^`` just before ``start`` and the index after it: a bracketed group's content, a
    run of letters/digits/dots, or (a command, an unbalanced group) conservatively the rest of the string."""
    i = start
    while i < len(expr) and expr[i].isspace():
        i += 1
    if i < len(expr) and expr[i] in "{([":
        close = _matching_close(expr, i)
        return (expr[i + 1 : close], close + 1) if close is not None else (expr[i + 1 :], len(expr))
    run = re.match(r"[\w.]+", expr[i:])
    return (run.group(), i + run.end()) if run else (expr[i:], len(expr))


def _base_exponent_digits(expr: str, caret: int) -> int:
    """Digits in the exponents inside the base of the ``^`` at ``caret`` when that base is a bracketed group
    (``(10^{9})^{9}``), else 0."""
    i = caret - 1
    while i >= 0 and expr[i].isspace():
        i -= 1
    if i < 0 or expr[i] not in ")}]":
        return 0
    opened = _matching_open(expr, i)
    base = expr[opened + 1 : i] if opened is not None else expr[:i]
    return sum(_digits(_exponent(base, m.end())[0]) for m in re.finditer(r"\^", base))


def _digits(text: str) -> int:
    """Number of digit characters in ``text``."""
    return sum(ch.isdigit() for ch in text)


def is_too_costly(expr: str) -> bool:
    """Could sympy/CPython spend unbounded time on ``expr`` inside one C call? Decided from the text alone.

    True when ``expr`` is longer than :data:`MAX_SYMBOLIC_CHARS`; or an exponent (``^`` or ``**``) contains
    another exponent or a factorial, is followed by another ``^`` (``a^b^c``), or has more than
    :data:`MAX_EXPONENT_DIGITS` digits together with the exponents inside its base; or a factorial applies to
    a bracketed expression or to more than :data:`MAX_FACTORIAL_DIGITS` digits; or a binomial's argument has
    more than :data:`MAX_FACTORIAL_DIGITS` digits (``\\choose`` always); or a ``\\sum``/``\\prod`` has a
    number of more than :data:`MAX_BOUND_DIGITS` digits. Ordinary answers (``x^2+y^2``, ``3 \\times 10^{8}``,
    ``5!``, ``\\binom{10}{3}``, ``10^{\\frac{-5+\\sqrt{13}}{6}}``) pass.
    """
    if len(expr) > MAX_SYMBOLIC_CHARS:
        return True
    expr = expr.replace("**", "^")
    for caret in re.finditer(r"\^", expr):
        operand, end = _exponent(expr, caret.end())
        if "^" in operand or "!" in operand or expr[end:].lstrip().startswith("^"):
            return True
        if _digits(operand) + _base_exponent_digits(expr, caret.start()) > MAX_EXPONENT_DIGITS:
            return True
    for bang in re.finditer(r"!", expr):
        before = expr[: bang.start()].rstrip()
        if before and before[-1] in ")]}":
            return True
        digits = re.search(r"\d+$", before)
        if digits and len(digits.group()) > MAX_FACTORIAL_DIGITS:
            return True
    for binom in _BINOM_RE.finditer(expr):
        if (
            binom.group(1) is None
            or max(_digits(binom.group(1)), _digits(binom.group(2))) > MAX_FACTORIAL_DIGITS
        ):
            return True
    return bool(_BIG_OPERATOR_RE.search(expr) and re.search(rf"\d{{{MAX_BOUND_DIGITS + 1},}}", expr))
