"""Canonical forms of short answers: what two answers must share to be the same answer without sympy.

:func:`answer_key` maps an answer to one key, ``(kind, value)``; answers with equal keys are equal, and the
key depends on the answer alone, so grouping by key is transitive and order-independent. Kinds, tried in
this order:

* ``choice``: a multiple-choice letter (``(A)``, ``A.``, ``option a``, ``A: text``), value ``"A"``;
* ``yes_no``: ``yes``/``no``/``true``/``false`` (``"No, it is not."``), value ``"yes"`` or ``"no"``;
* ``number``: an exact rational, value ``"p/q"`` in lowest terms (:func:`parse_number`): integers with or
  without digit groups (``1 000``, ``1,000``, ``1{,}000``), decimals, scientific notation (``1e3``,
  ``1.5 \\times 10^{3}``), simple fractions (``3/4``, ``\\frac{3}{4}``), with a unit word, a percent sign or a
  degree mark after it ignored (``2 apples``, ``28\\%``, ``145^\\circ`` are 2, 28 and 145);
* ``text``: anything else, value :func:`text_key` (lower case, no whitespace, ``\\pi`` read as ``pi``), so
  ``(a, b)`` = ``(a,b)`` and ``cat,dog`` = ``cat, dog``.

Percent: ``10%`` is the number 10 (as in Math-Verify's suite, ``28\\%`` = ``28``), never also 0.1, so
``["10%", "10", "0.1"]`` is two groups whatever the order.

Every function here is linear in the answer's length (one pass to match braces, regexes without nested
repetition), and answers longer than :data:`MAX_ANSWER_CHARS` are only compared as text.
"""

from __future__ import annotations

import re
from fractions import Fraction

MAX_ANSWER_CHARS = 1000
"""Answers longer than this get a ``text`` key only (a real short answer is never this long)."""
ROUNDED_DECIMALS = 6
"""A decimal with at least this many decimals is read as the simplest nearby fraction when one with a
denominator up to :data:`MAX_ROUNDED_DENOMINATOR` lies within half its last digit: ``0.0833333333333333`` and
``0.333333`` are 1/12 and 1/3 (what a model writes for them), ``0.1234567`` stays itself."""
MAX_ROUNDED_DENOMINATOR = 1000
MAX_NUMBER_DIGITS = 400
"""Numbers with more digits, or a power of ten beyond ±this, are not ``number`` keys (no huge Fractions)."""

AnswerKey = tuple[str, str]
"""``(kind, value)``: kind is ``choice``, ``yes_no``, ``number`` or ``text`` (module docstring)."""


def _brace_matches(text: str) -> dict[int, int]:
    """Index of each ``{`` → index of its closing ``}`` (backslash-escaped characters skipped), one pass."""
    matches, stack, i = {}, [], 0
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if char == "{":
            stack.append(i)
        elif char == "}" and stack:
            matches[stack.pop()] = i
        i += 1
    return matches


_WRAPPER_COMMAND_RE = re.compile(r"\\(?:text|textbf|textrm|textit|mathrm|mathbf|mbox)\s*\{")


def strip_wrappers(answer: str) -> str:
    """Remove whitespace, surrounding ``$``/``$$`` and whole-answer ``\\text{}``-style wrappers (repeatedly).

    ``"$\\text{(A)}$"`` → ``"(A)"``; ``"\\text{a} + \\text{b}"`` is left alone (the first wrapper does not
    span the whole answer). Case is preserved. Linear: braces are matched once, then the answer is peeled
    by moving two indices (``\\text{`` nested 2,000 deep takes milliseconds).
    """
    matches = _brace_matches(answer)
    lo, hi = 0, len(answer)
    while True:
        start = (lo, hi)
        while lo < hi and answer[lo].isspace():
            lo += 1
        while hi > lo and answer[hi - 1].isspace():
            hi -= 1
        while hi - lo >= 2 and answer[lo] == "$" and answer[hi - 1] == "$":
            lo, hi = lo + 1, hi - 1
        wrapper = _WRAPPER_COMMAND_RE.match(answer, lo, hi)
        if wrapper and matches.get(wrapper.end() - 1) == hi - 1:
            lo, hi = wrapper.end(), hi - 1
        if (lo, hi) == start:
            return answer[lo:hi]


def normalize_text(answer: str) -> str:
    """Plain-string normal form: :func:`strip_wrappers`, lower case, whitespace runs → one space, trailing
    periods removed. ``"  The Red  Car. "`` → ``"the red car"``."""
    return " ".join(strip_wrappers(answer).lower().split()).rstrip(".").rstrip()


_SPACING_RE = re.compile(r"\\[,;:! ]|\\quad|\\qquad|~|\\left|\\right")
_COMMAND_RE = re.compile(r"\\([a-z]+)")


def text_key(answer: str) -> str:
    """The ``text`` key: :func:`strip_wrappers`, lower case, LaTeX spacing and ``\\left``/``\\right`` removed,
    a backslash before a command name dropped (``\\pi`` → ``pi``), all whitespace removed, trailing periods
    removed. ``"(a, b)"`` and ``"(a,b)"`` → ``"(a,b)"``; ``"f(x )"`` → ``"f(x)"``."""
    text = _SPACING_RE.sub(" ", strip_wrappers(answer).lower())
    text = _COMMAND_RE.sub(r"\1", text)
    return "".join(text.split()).rstrip(".")


_CHOICE_RE = re.compile(
    r"^(?:(?:the\s+)?(?:correct\s+)?(?:answer|option|choice)(?:\s+is)?\s*:?\s*)?"  # optional lead-in
    r"(?:[(\[]([A-J])[)\]](?:[\s.:,].*)?"  # (A)  [A]  (A) text  (A).
    r"|([A-J])(?:[.:)](?:\s.*)?)?)$",  # A  A.  A)  A: text  A. text (not "A:B=1", a ratio)
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


# --- numbers ---------------------------------------------------------------------------------------------
# Words that are mathematics, not units: "2 pi" is not the number 2.
_MATH_WORDS = frozenset(
    {"pi", "sqrt", "sin", "cos", "tan", "log", "ln", "exp", "mod", "deg", "rad", "or", "and"}
)
_INT = r"\d+"
_GROUPED = r"\d{1,3}(?:(?P<sep>[, ])\d{3})(?:(?P=sep)\d{3})*"  # 1,000  1 000 000 (one separator throughout)
_DECIMAL = rf"(?:{_GROUPED}|{_INT})(?:\.\d*)?|\.\d+"
_SCI_RE = re.compile(
    rf"(?P<mant>{_DECIMAL})\s*(?:e(?P<e>[+-]?\d+)|(?:\\times|\\cdot|\*|×)\s*10\s*\^\s*\{{?\s*(?P<p>[+-]?\d+)\s*\}}?)"
)
_PLAIN_RE = re.compile(rf"(?P<mant>{_DECIMAL})")
_FRAC_RE = re.compile(
    r"\\[dt]?frac\s*\{\s*(?P<num>[+-]?\d+)\s*\}\s*\{\s*(?P<den>\d+)\s*\}|(?P<a>\d+)\s*/\s*(?P<b>\d+)"
)
_UNIT_RE = re.compile(
    r"\s*(?:\\?%|percent(?:age)?|pct|°|\^\s*\{?\s*\\circ\s*\}?|\\circ|\\degree)?"  # percent or degree mark
    r"(?:\s*(?P<words>[a-z]{2,}(?:\s+[a-z]{2,})*))?\s*\.?$"  # unit words ("apples", "square meters")
)
_TEXT_UNIT_RE = re.compile(r"\\(?:text|mathrm|mbox)\s*\{([^{}]*)\}")


def _decimal(text: str) -> Fraction:
    """A matched ``_DECIMAL`` as a Fraction (digit-group separators removed; rounded fractions recovered,
    see :data:`ROUNDED_DECIMALS`)."""
    text = text.replace(",", "").replace(" ", "")
    value = Fraction(text if text.strip(".") else "0")
    decimals = len(text.partition(".")[2])
    if decimals >= ROUNDED_DECIMALS:
        near = value.limit_denominator(MAX_ROUNDED_DENOMINATOR)
        if abs(near - value) <= Fraction(1, 2 * 10**decimals):
            return near
    return value


def parse_number(answer: str) -> Fraction | None:
    """The exact value of a numeric answer, or None if the answer is not a plain number (module docstring).

    ``"1 000"`` → 1000; ``"3,000"`` → 3000 but ``"1,2"`` → None (not one digit-group pattern); ``"1e3"`` →
    1000 and ``"3e"`` → None (3·e is not a plain number); ``"-\\frac{1}{2}"`` → -1/2; ``"2 apples"`` → 2;
    ``"28\\%"`` → 28; ``"145°"`` → 145; ``"2 pi"`` → None.
    """
    text = strip_wrappers(answer)
    if len(text) > MAX_ANSWER_CHARS:
        return None
    text = _TEXT_UNIT_RE.sub(r" \1", text).replace("{,}", ",").replace("\\,", " ").replace("\\!", "")
    text = " ".join(text.lower().split())
    sign, text = (-1, text[1:].lstrip()) if text.startswith("-") else (1, text.removeprefix("+").lstrip())
    for pattern in (_FRAC_RE, _SCI_RE, _PLAIN_RE):
        match = pattern.match(text)
        if match is None:
            continue
        tail = _UNIT_RE.fullmatch(text, match.end())
        if tail is None or (tail["words"] and set(tail["words"].split()) & _MATH_WORDS):
            continue
        if sum(ch.isdigit() for ch in match.group()) > MAX_NUMBER_DIGITS:
            return None
        if pattern is _FRAC_RE:
            num, den = (match["num"], match["den"]) if match["num"] is not None else (match["a"], match["b"])
            return None if int(den) == 0 else sign * Fraction(int(num), int(den))
        value = _decimal(match["mant"])
        if pattern is _SCI_RE:
            power = int(match["e"] if match["e"] is not None else match["p"])
            if abs(power) > MAX_NUMBER_DIGITS:
                return None
            value *= Fraction(10) ** power
        return sign * value
    return None


def answer_key(answer: str | None) -> AnswerKey | None:
    """The canonical key of an answer (module docstring); None for no answer (None or blank)."""
    if answer is None or not answer.strip():
        return None
    if len(answer) > MAX_ANSWER_CHARS:
        return ("text", text_key(answer))
    letter = choice_letter(answer)
    if letter is not None:
        return ("choice", letter)
    verdict = yes_no(answer)
    if verdict is not None:
        return ("yes_no", verdict)
    number = parse_number(answer)
    if number is not None:
        return ("number", f"{number.numerator}/{number.denominator}")
    return ("text", text_key(answer))


def key_as_math(key: AnswerKey, answer: str) -> str:
    """What sympy is given for an answer: a ``number`` key's exact value (``"1 000"`` → ``"1000"``, ``"28\\%"``
    → ``"28"``, so it agrees with the key rule), else the answer without wrappers."""
    if key[0] == "number":
        num, den = key[1].split("/")
        return num if den == "1" else f"{num}/{den}"
    return strip_wrappers(answer)
