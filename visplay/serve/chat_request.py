"""What a chat-completions request may contain before it reaches the engine: pure functions, no Serve.

The wire format itself (streaming, logprobs, stop sequences, the chat template, the response objects) is
vLLM's OpenAI layer behind Ray Serve LLM (:mod:`visplay.serve.app`). What stays ours is checked here, so
that every rule is unit-tested without an engine:

* the body is strict JSON: UTF-8, no ``NaN``/``Infinity``, not nested past Python's recursion limit;
* ``messages`` holds system/user/assistant turns of text and ``image_url`` parts; each image is a base64
  ``data:`` URL (the server never fetches URLs) holding a PNG, JPEG or WEBP within the pixel and byte
  limits, decoded by the training reader's own check (:func:`visplay.data.images.validate_image`);
  at most the engine's ``max_images_per_prompt`` per request; text-only requests are fine;
* ``n``, ``max_tokens``/``max_completion_tokens``, ``temperature``, ``top_p`` and ``top_logprobs`` are
  numbers within bounds; ``max_tokens`` defaults to the server's bound;
* the Reasoner's training instruction is appended to the last user text (``add_reasoner_instruction``).

Anything else is an :class:`ApiError` with the HTTP status (400 malformed, 413 too large, 415 not an image)
and a message that says what was wrong; :func:`error_body` is the OpenAI error object it becomes.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

from visplay.data.images import ACCEPTED_FORMATS, RejectReason, validate_image
from visplay.prompts import REASONER_INSTRUCTION, ROLES, reasoner_user_text

_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<b64>;base64)?,(?P<data>.*)$", re.DOTALL)
MAX_TOP_LOGPROBS = 20
"""OpenAI's bound on ``top_logprobs``."""


class ApiError(Exception):
    """A request the server refuses or cannot serve now: ``status`` is the HTTP code, ``message`` says why,
    ``retry_after`` (seconds) goes into a ``Retry-After`` header when set (503: try again later)."""

    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.retry_after = status, message, retry_after


@dataclass(frozen=True)
class Limits:
    """What one request may contain (from :class:`visplay.config.ServeConfig` and its engine)."""

    max_image_bytes: int
    max_image_pixels: int
    max_tokens: int
    max_n: int
    max_images: int = 1
    """Images per request: the serving engine's ``max_images_per_prompt`` (vLLM's ``limit_mm_per_prompt``)."""


def parse_json(raw: bytes) -> Any:
    """The request body as JSON, strictly.

    Raises:
        ApiError: 400 when it is not UTF-8, not JSON, holds ``NaN``/``Infinity`` or nests too deep.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ApiError(400, f"the body is not UTF-8 ({err})") from None
    try:
        return json.loads(text, parse_constant=_no_constant)
    except ApiError:
        raise
    except json.JSONDecodeError as err:
        raise ApiError(400, f"the body is not valid JSON ({err})") from None
    except RecursionError:
        raise ApiError(400, "the body nests JSON too deeply") from None


def _no_constant(name: str) -> None:
    raise ApiError(400, f"the body is not valid JSON: {name} is not a JSON number")


def check_chat_body(body: Any, limits: Limits, add_reasoner_instruction: bool) -> dict[str, Any]:
    """Check a chat-completions body against the limits; the body to hand to the engine.

    Args:
        body: the decoded JSON body.
        limits: what a request may contain.
        add_reasoner_instruction: append the Reasoner's "step by step ... \\boxed{}" instruction to the last
            user text, as in training (:func:`visplay.prompts.reasoner_user_text`), unless it is there.

    Returns:
        A copy of ``body`` with ``max_tokens`` set (the request's, or ``limits.max_tokens``) and, when asked,
        the instruction appended. Fields not named above are left to the engine's own validation.

    Raises:
        ApiError: 400 for a malformed body, 413 for an image over the limits, 415 for data that is not a
            PNG, JPEG or WEBP image.
    """
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty list")
    images = 0
    checked = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise ApiError(400, f"messages[{i}] must be an object with role system, user or assistant")
        content = message.get("content")
        if isinstance(content, list):
            for j, part in enumerate(content):
                images += _check_part(part, f"messages[{i}].content[{j}]", limits)
            content = [dict(part) for part in content]
        elif not isinstance(content, str):
            raise ApiError(400, f"messages[{i}].content must be a string or a list of parts")
        checked.append({**message, "content": content})
    if images > limits.max_images:
        raise ApiError(400, f"at most {limits.max_images} image(s) per request, got {images}")
    out = {**body, "messages": checked}
    tokens = [k for k in ("max_tokens", "max_completion_tokens") if out.get(k) is not None]
    for key in tokens:
        _number(out, key, 1, limits.max_tokens, integer=True)
    if not tokens:
        out["max_tokens"] = limits.max_tokens
    _number(out, "n", 1, limits.max_n, integer=True)
    _number(out, "temperature", 0.0, 2.0)
    _number(out, "top_p", 1e-6, 1.0)
    _number(out, "top_logprobs", 0, MAX_TOP_LOGPROBS, integer=True)
    _number(out, "seed", 0, 2**63 - 1, integer=True)
    if add_reasoner_instruction:
        _add_instruction(checked)
    return out


def _check_part(part: Any, where: str, limits: Limits) -> int:
    """Check one content part; 1 for an image part, 0 for a text part."""
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "text" and isinstance(part.get("text"), str):
        return 0
    if kind != "image_url":
        raise ApiError(400, f"{where}: unsupported part {str(part)[:80]!r} (text and image_url parts only)")
    url = part.get("image_url")
    url = url.get("url") if isinstance(url, dict) else None
    if not isinstance(url, str):
        raise ApiError(400, f"{where}: image_url must be {{'url': 'data:image/...;base64,...'}}")
    match = _DATA_URL.match(url)
    if match is None or not match.group("b64"):
        raise ApiError(400, f"{where}: only base64 data URLs are accepted (data:image/png;base64,...)")
    if len(match.group("data")) * 3 // 4 > limits.max_image_bytes:
        raise ApiError(413, f"{where}: the image is larger than {limits.max_image_bytes} bytes")
    try:
        data = base64.b64decode(match.group("data"), validate=True)
    except (binascii.Error, ValueError) as err:
        raise ApiError(400, f"{where}: invalid base64 ({err})") from None
    row = validate_image(
        where, data, max_pixels=limits.max_image_pixels, max_file_bytes=limits.max_image_bytes
    )
    if not row["ok"]:
        status = 413 if row["reason"] == RejectReason.TOO_MANY_PIXELS else 415
        accepted = ", ".join(ACCEPTED_FORMATS)
        raise ApiError(status, f"{where}: {row['reason']}: {row['detail']} (accepted: {accepted})")
    return 1


def _add_instruction(messages: list[dict[str, Any]]) -> None:
    """Rewrite the last user turn's last text as ``reasoner_user_text(text)`` unless it holds the
    instruction already (the instruction is what the Reasoner was trained with)."""
    for message in reversed(messages):
        if message["role"] != "user":
            continue
        content = message["content"]
        if isinstance(content, str):
            if content.strip() and REASONER_INSTRUCTION not in content:
                message["content"] = reasoner_user_text(content)
            return
        for part in reversed(content):
            if part.get("type") == "text" and part["text"].strip():
                if REASONER_INSTRUCTION not in part["text"]:
                    part["text"] = reasoner_user_text(part["text"])
                return
        return


def _number(body: dict, key: str, low: float, high: float, integer: bool = False) -> None:
    """Check ``body[key]`` (absent or null: fine) is a number (an integer) in [low, high]."""
    value = body.get(key)
    if value is None:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (integer and not isinstance(value, int))
    ):
        raise ApiError(400, f"'{key}' must be {'an integer' if integer else 'a number'}, got {value!r}")
    if not low <= value <= high:
        raise ApiError(400, f"'{key}' must be between {low} and {high}, got {value}")


def error_body(status: int, message: str) -> dict[str, Any]:
    """The OpenAI error object, so that the ``openai`` client raises with the server's message."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": None, "code": status}}
