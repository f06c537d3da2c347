"""Corpus-scale diversity: near-duplicate questions across the whole output, and a per-image cap.

Per-batch BLEU clusters only see one batch; this pass sees every kept question once, after the
streaming pipeline, and turns the surplus into drops with a reason (``duplicate``, ``per_image_cap``).
Pure functions over plain rows; no I/O.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

_SPACE = re.compile(r"\s+")
_PUNCT = re.compile(r"[^\w\s]")


def normalise_question(text: str) -> str:
    """Lower-case, NFKC, punctuation removed, whitespace collapsed: "What colour is it?" == "what colour is it"."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = _PUNCT.sub(" ", text)
    return _SPACE.sub(" ", text).strip()


def question_hash(question: str, image_id: str = "") -> str:
    """Identity of a question for dedup: its normalised text (and, when given, the image it is about)."""
    return hashlib.sha256(f"{image_id}|{normalise_question(question)}".encode()).hexdigest()[:16]


def dedup_and_cap(rows: list[dict], max_per_image: int, scope: str = "corpus") -> list[str]:
    """New drop reason per row ("" keeps it), for rows that are in order and already scored.

    Only rows with ``keep`` True are considered. The first occurrence of a normalised question wins
    (``duplicate`` for the others), across the whole output (`scope` "corpus") or within one image
    ("image"); after dedup, an image keeps at most `max_per_image`
    questions, preferring higher questioner reward, then the earlier row (``per_image_cap``).

    Args:
        rows: dicts with ``keep``, ``drop_reason``, ``image_id``, ``question``, ``reward``.
    Returns:
        one drop reason per row; rows that were already dropped keep their reason.
    """
    reasons = [row["drop_reason"] for row in rows]
    seen: set[str] = set()
    per_image: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        if not row["keep"]:
            continue
        if scope not in ("corpus", "image"):
            raise ValueError(f"dedup scope must be 'corpus' or 'image', got {scope!r}")
        key = question_hash(row["question"], row["image_id"] if scope == "image" else "")
        if key in seen:
            reasons[i] = "duplicate"
            continue
        seen.add(key)
        per_image.setdefault(row["image_id"], []).append(i)
    for indices in per_image.values():
        ranked = sorted(indices, key=lambda i: (-rows[i]["reward"], i))
        for i in ranked[max_per_image:]:
            reasons[i] = "per_image_cap"
    return reasons
