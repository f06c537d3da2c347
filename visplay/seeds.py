"""Derived seeds: every random draw in a run follows from the run seed and a stable name for the draw."""

from __future__ import annotations

import hashlib


def derive_seed(*parts: object) -> int:
    """A stable 31-bit seed from any parts (sha256 of their text), e.g. ``derive_seed(seed, "q", image_id)``.

    The same parts give the same seed in every process and run, so reruns draw the same samples.
    """
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF
