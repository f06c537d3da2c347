"""The two records evaluation passes around: one benchmark question (:class:`EvalExample`) and one model
answer to it (:class:`Prediction`).

Every benchmark class (:mod:`visplay.eval.benchmarks`) maps its release's rows onto :class:`EvalExample`;
inference writes one :class:`Prediction` per example; scoring (:mod:`visplay.eval.scoring`) joins the two
by ``example_id``, never by position.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

ANSWER_TYPES: tuple[str, ...] = ("choice", "yesno", "math", "open")
"""How a gold answer is compared with a prediction (see :func:`visplay.eval.scoring.score_rule`):

* ``choice`` — ``answer`` is an option letter (``A``..``J``), ``options`` the option texts in letter order
  (may be empty when the file embeds the options in the question text and they could not be parsed);
* ``yesno``  — ``answer`` is ``"yes"`` or ``"no"``;
* ``math``   — ``answer`` is a number or expression, compared with :func:`visplay.rewards.grade`;
* ``open``   — free text, compared by normalized exact match (the LLM judge is the real metric).
"""

LETTERS = "ABCDEFGHIJ"
"""Option letters, in order: option ``i`` of :attr:`EvalExample.options` is ``LETTERS[i]``."""

CATEGORY_SEPARATOR = ","
"""Separates labels in :attr:`EvalExample.category` when an example has several (MM-Vet capabilities)."""

_ID_RE = re.compile(r"^\S(?:.*\S)?$")


@dataclass(frozen=True)
class EvalExample:
    """One benchmark question with its image and gold answer.

    Attributes:
        example_id: stable id, unique within one benchmark file (the benchmark's own id where it has one,
            else the row number in the file); predictions are joined on it.
        benchmark: the adapter name (``"mmvet"``, ``"hallusionbench"``, ...).
        question: the text shown to the model (options included when the benchmark puts them there).
        images: the encoded image files (PNG/JPEG/... bytes, as stored in the benchmark), in the order the
            question refers to them (MMMU ``<image 1>``, ``<image 2>``, ...; most benchmarks have one). Empty
            only for a question the benchmark itself marks as text-only (HallusionBench
            ``visual_input == "0"``): it is asked without an image.
        answer: the gold answer, normalised per ``answer_type`` (a letter, ``"yes"``/``"no"``, or text).
        options: option texts in letter order for ``choice`` questions; empty otherwise.
        category: the benchmark's own category label; several labels are joined with ``","``
            (see :attr:`categories`); ``""`` if the file has none.
        answer_type: one of :data:`ANSWER_TYPES`.
        extra: benchmark-specific ids and labels as strings, e.g. HallusionBench's ``set_id``,
            ``figure_id``, ``question_id``, ``subcategory``, ``visual_input``.
    """

    example_id: str
    benchmark: str
    question: str
    images: tuple[bytes, ...] = field(repr=False)
    answer: str
    options: tuple[str, ...]
    category: str
    answer_type: str
    extra: dict[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        """Reject records no scorer could use (the message names the example)."""
        where = f"example {self.example_id!r} of {self.benchmark!r}"
        if not isinstance(self.example_id, str) or not _ID_RE.match(self.example_id):
            raise ValueError(f"{where}: example_id must be a non-blank string without surrounding spaces")
        if self.answer_type not in ANSWER_TYPES:
            raise ValueError(f"{where}: answer_type {self.answer_type!r} is not one of {ANSWER_TYPES}")
        if not isinstance(self.options, tuple):
            raise ValueError(
                f"{where}: options must be a tuple of strings, got {type(self.options).__name__}"
            )
        if len(self.options) > len(LETTERS):
            raise ValueError(f"{where}: {len(self.options)} options, at most {len(LETTERS)} are supported")
        if self.answer_type == "choice":
            allowed = LETTERS[: len(self.options)] if self.options else LETTERS
            if self.answer not in allowed:
                raise ValueError(
                    f"{where}: a choice answer must be one of {list(allowed)}, got {self.answer!r}"
                )
        elif self.options:
            raise ValueError(f"{where}: options are only allowed for answer_type 'choice'")
        if self.answer_type == "yesno" and self.answer not in ("yes", "no"):
            raise ValueError(f"{where}: a yesno answer must be 'yes' or 'no', got {self.answer!r}")
        if not self.answer.strip():
            raise ValueError(f"{where}: the gold answer is blank")
        if not isinstance(self.images, tuple) or not all(isinstance(i, bytes) and i for i in self.images):
            raise ValueError(f"{where}: images must be a tuple of non-empty bytes")

    @property
    def categories(self) -> tuple[str, ...]:
        """The category labels: ``"rec,ocr"`` → ``("rec", "ocr")``; ``""`` → ``()``."""
        return tuple(part.strip() for part in self.category.split(CATEGORY_SEPARATOR) if part.strip())


@dataclass(frozen=True)
class Reject:
    """A row of a benchmark file that cannot be evaluated, and why: reported, never dropped silently.

    Attributes:
        example_id: the row's own id where it could be read, else ``"row <n>"`` (0-based, in file order).
        file: the file the row is in.
        reason: what is wrong with it (the message names the column where one is at fault).
    """

    example_id: str
    file: str
    reason: str


@dataclass(frozen=True)
class Prediction:
    """A model's raw completion for one example.

    Attributes:
        example_id: the :attr:`EvalExample.example_id` it answers.
        text: the full completion (the scorer extracts ``\\boxed{}`` or the last line itself).
        model_version: which checkpoint wrote it (e.g. ``"iter_2/reasoner"`` or a content id).
    """

    example_id: str
    text: str
    model_version: str
