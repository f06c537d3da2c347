"""Image corpus readers with rejects, and the Arrow schemas of the pipeline's tables.

* :mod:`visplay.data.schemas`: ``IMAGES_SCHEMA``, ``REJECTS_SCHEMA`` and the fixed reject reasons.
* :mod:`visplay.data.images`: :func:`read_images` (a Ray Data reader that returns the usable images and
  the rejects), :func:`count_by_reason`, :func:`write_rejects` and :func:`to_pil` for engines.

The reader's names are imported on first use: ``import ray.data`` costs seconds, and modules that only
need a schema (``from visplay.data.schemas import ...``) should not pay for it.
"""

from importlib import import_module
from typing import Any

from visplay.data.schemas import IMAGES_SCHEMA, REJECT_REASONS, REJECTS_SCHEMA, RejectReason

_LAZY = ("ImageRead", "count_by_reason", "read_images", "to_pil", "write_rejects")

__all__ = ["IMAGES_SCHEMA", "REJECTS_SCHEMA", "REJECT_REASONS", "RejectReason", *_LAZY]


def __getattr__(name: str) -> Any:
    """Load the reader's names from :mod:`visplay.data.images` when first asked for (PEP 562)."""
    if name in _LAZY:
        return getattr(import_module("visplay.data.images"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
