"""Arrow schemas of the tables the pipeline passes around, in one place.

A column means the same thing in every table that has it; this docstring is the reference:

``images`` (one decoded, usable image)
    ``image_id``  sha256 hex digest of the encoded bytes (the join key everywhere, also of the
                  synthetic corpus ground truth); ``source`` where the bytes came from: an absolute
                  file path, or ``<parquet file>#<row>`` (0-based row within that file);
                  ``item`` the offered item's index in the pass's plan (the stable order key: sorted
                  paths, or parquet rows in file order); ``shard`` the plan shard it belongs to;
                  ``width``/``height`` in pixels; ``image`` the encoded bytes exactly as read
                  (PNG/JPEG/WEBP; decode with :func:`visplay.data.images.to_pil`).

``rejects`` (one offered item that could not be used)
    ``source``, ``item``, ``shard`` as above; ``reason`` one of :data:`REJECT_REASONS`; ``detail`` a human message
    (the exception text, or the numbers that broke a limit).

``questions`` (one questioner sample: image x sample index)
    ``question_id`` stable id (image, questioner checkpoint, seed, sample index); ``questioner_ckpt``
    the model version that wrote it; ``questioner_seed`` the per-image sampling seed; ``sample_index``
    which of the k samples; ``questioner_sampling`` JSON of the sampling parameters; ``raw`` the text
    as generated (null only when the engine failed); ``parse_ok``/``parse_error`` the parser's verdict
    (or the engine error); ``qtype``/``question``/``proposed_answer`` the parsed fields (null when
    unparsed); ``questioner_tokens``/``questioner_seconds`` generated tokens and engine time.

``duplicates`` (an image whose bytes were already offered under another source; not generated again)
    ``image_id``, ``source``, ``item``, ``shard`` as above; ``owner_item`` the item whose copy was generated.

``scored`` (a question with its m answers, rewards and the keep decision; no image bytes)
    the questions columns plus ``reasoner_ckpt``, ``reasoner_seed``, ``reasoner_sampling``,
    ``reasoner_tokens``, ``reasoner_seconds``; ``answers`` all m raw answers; ``extracted`` their
    ``\\boxed{}`` contents (null when absent); ``silver`` the majority answer; ``p`` its share of all m;
    ``votes`` JSON ``[[answer, count], ...]`` (``silver``, ``p`` and ``votes`` are one
    :func:`visplay.rewards.vote`); ``grade_timeouts`` its comparisons that timed out; ``uncertainty``, ``diversity_penalty``, ``reward`` the
    questioner reward and its parts; ``question_key`` the hash of the normalised question text (the
    corpus dedup's key; "" when unparsed); ``keep`` and ``drop_reason`` (one of :data:`DROP_REASONS`, "" when
    kept).
"""

from __future__ import annotations

from enum import StrEnum

import pyarrow as pa


class RejectReason(StrEnum):
    """Why an offered file or parquet row is not an image of the corpus. The set is fixed."""

    EMPTY = "empty"
    """Zero bytes (or a null parquet value)."""
    TRUNCATED = "truncated"
    """The header identifies an image format, but decoding the pixels fails."""
    NOT_IMAGE = "not_image"
    """Pillow cannot identify it, or it is an image format other than PNG, JPEG or WEBP."""
    TOO_MANY_PIXELS = "too_many_pixels"
    """width x height above ``max_pixels`` (a decompression bomb), or more bytes than ``max_file_bytes``."""
    UNREADABLE = "unreadable"
    """The bytes could not be read (OSError: dangling symlink, permission, not a regular file, I/O error)."""


REJECT_REASONS: tuple[str, ...] = tuple(reason.value for reason in RejectReason)
"""The reason strings, in a fixed order (the order reports list them in)."""

_PLACE = [pa.field("item", pa.int64()), pa.field("shard", pa.int32())]
"""Where an offered item sits in its pass's plan: every table of a pass carries these two columns."""

IMAGES_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string()),
        pa.field("source", pa.string()),
        *_PLACE,
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("image", pa.binary()),
    ]
)
"""One row per usable image (no column is ever null)."""

REJECTS_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string()),
        *_PLACE,
        pa.field("reason", pa.string()),
        pa.field("detail", pa.string()),
    ]
)
"""One row per offered item that could not be used (no column is ever null)."""

DUPLICATES_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string()),
        pa.field("source", pa.string()),
        *_PLACE,
        pa.field("owner_item", pa.int64()),
    ]
)
"""One row per offered copy of an image that another item already generated (reason ``duplicate_image``)."""

QUESTIONS_SCHEMA = pa.schema(
    [
        pa.field("question_id", pa.string()),
        pa.field("image_id", pa.string()),
        pa.field("source", pa.string()),
        *_PLACE,
        pa.field("image", pa.binary()),
        pa.field("questioner_ckpt", pa.string()),
        pa.field("questioner_seed", pa.int64()),
        pa.field("sample_index", pa.int32()),
        pa.field(
            "item_rows", pa.int32()
        ),  # question rows of this item: its parts are complete with all of them
        pa.field("questioner_sampling", pa.string()),
        pa.field("raw", pa.string()),
        pa.field("questioner_tokens", pa.int64()),
        pa.field("questioner_seconds", pa.float64()),
        pa.field("parse_ok", pa.bool_()),
        pa.field("parse_error", pa.string()),
        pa.field("qtype", pa.string()),
        pa.field("question", pa.string()),
        pa.field("proposed_answer", pa.string()),
    ]
)
"""One row per questioner sample, carrying its image bytes on to the reasoner stage."""

SCORED_SCHEMA = pa.schema(
    [
        *(f for f in QUESTIONS_SCHEMA if f.name != "image"),
        pa.field("reasoner_ckpt", pa.string()),
        pa.field("reasoner_seed", pa.int64()),
        pa.field("reasoner_sampling", pa.string()),
        pa.field("reasoner_tokens", pa.int64()),
        pa.field("reasoner_seconds", pa.float64()),
        pa.field("answers", pa.list_(pa.string())),
        pa.field("extracted", pa.list_(pa.string())),
        pa.field("silver", pa.string()),
        pa.field("p", pa.float64()),
        pa.field("votes", pa.string()),
        pa.field("grade_timeouts", pa.int64()),
        pa.field("uncertainty", pa.float64()),
        pa.field("diversity_penalty", pa.float64()),
        pa.field("reward", pa.float64()),
        pa.field("question_key", pa.string()),
        pa.field("keep", pa.bool_()),
        pa.field("drop_reason", pa.string()),
    ]
)
"""The ``questions/`` (kept rows) and ``dropped/`` (the rest) datasets share this schema."""

DROP_REASONS: tuple[str, ...] = (
    "engine_error", "unparsed", "grade_timeout", "no_silver", "too_hard", "too_easy", "duplicate",
    "per_image_cap",
)  # fmt: skip
"""Why a question was not kept, in the order the checks run."""
