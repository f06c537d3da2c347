"""The OpenAI chat-completions wire format, as pure functions: request -> :class:`ChatRequest`, result -> JSON.

Kept apart from the Ray Serve deployment (:mod:`visplay.serve.app`) so that every rule about what a
request may contain is unit-tested without an engine. What is accepted::

    {"model": "...", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,...."}},
        {"type": "text", "text": "How many red squares are there?"}]}],
     "temperature": 0, "max_tokens": 64, "n": 1, "seed": 7}

One image per request, or up to the engine's ``max_images_per_prompt`` (vLLM's ``limit_mm_per_prompt``),
each given as a base64 ``data:`` URL: the server never fetches URLs. Anything else is a :class:`RequestError` carrying
the HTTP status (400 malformed, 413 too large, 415 not an image) and a message that says what was wrong.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

from PIL import Image, UnidentifiedImageError

from visplay.prompts import reasoner_user_text, render_prompt

_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<b64>;base64)?,(?P<data>.*)$", re.DOTALL)


class RequestError(Exception):
    """A request the server refuses: ``status`` is the HTTP code, the message says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Limits:
    """What one request may contain (from :class:`visplay.config.ServeConfig`)."""

    max_image_bytes: int
    max_image_pixels: int
    max_tokens: int
    max_n: int
    max_images: int = 1
    """Images per request: the serving engine's ``max_images_per_prompt``."""


@dataclass(frozen=True)
class ChatRequest:
    """A validated request: the rendered prompt, its encoded images (in prompt order) and the sampling
    asked for."""

    prompt: str
    images: tuple[bytes, ...]
    temperature: float
    top_p: float
    max_tokens: int
    n: int
    seed: int | None


def parse_chat_request(body: Any, limits: Limits, add_reasoner_instruction: bool) -> ChatRequest:
    """Validate an OpenAI chat-completions body and render it for the engine.

    Args:
        body: the decoded JSON body.
        limits: size limits.
        add_reasoner_instruction: append the Reasoner's "step by step ... \\boxed{}" instruction to the last
            user text, as in training (:func:`visplay.prompts.reasoner_user_text`), unless it is there.

    Raises:
        RequestError: 400 for a malformed body, 413 for an image over the limits, 415 for data that is
            not a decodable image.
    """
    if not isinstance(body, dict):
        raise RequestError(400, "the request body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "'messages' must be a non-empty list")
    images: list[bytes] = []
    rendered_messages = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("system", "user", "assistant"):
            raise RequestError(400, f"messages[{i}] must be an object with role system, user or assistant")
        content = message.get("content")
        if isinstance(content, str):
            rendered_messages.append({"role": message["role"], "content": content})
            continue
        if not isinstance(content, list):
            raise RequestError(400, f"messages[{i}].content must be a string or a list of parts")
        parts = []
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                parts.append({"type": "text", "text": part["text"]})
            elif kind == "image_url":
                images.append(_decode_image_part(part, f"messages[{i}].content[{j}]", limits))
                parts.append({"type": "image"})
            else:
                raise RequestError(400, f"messages[{i}].content[{j}]: unsupported part {str(part)[:80]!r}")
        rendered_messages.append({"role": message["role"], "content": parts})
    if not 1 <= len(images) <= limits.max_images:
        allowed = "exactly one image is" if limits.max_images == 1 else f"1 to {limits.max_images} images are"
        raise RequestError(400, f"{allowed} supported per request, got {len(images)}")
    if add_reasoner_instruction:
        _add_instruction(rendered_messages)
    return ChatRequest(
        prompt=render_prompt(rendered_messages),
        images=tuple(images),
        temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
        top_p=_number(body, "top_p", 1.0, 1e-6, 1.0),
        max_tokens=int(_number(body, "max_tokens", limits.max_tokens, 1, limits.max_tokens, integer=True)),
        n=int(_number(body, "n", 1, 1, limits.max_n, integer=True)),
        seed=None if body.get("seed") is None else int(_number(body, "seed", 0, 0, 2**63 - 1, integer=True)),
    )


def _decode_image_part(part: dict, where: str, limits: Limits) -> bytes:
    """The bytes of an ``image_url`` part holding a base64 data URL, checked to be one image within limits."""
    url = part.get("image_url")
    url = url.get("url") if isinstance(url, dict) else url
    if not isinstance(url, str):
        raise RequestError(400, f"{where}: image_url must be {{'url': 'data:image/...;base64,...'}}")
    match = _DATA_URL.match(url)
    if match is None or not match.group("b64"):
        raise RequestError(400, f"{where}: only base64 data URLs are accepted (data:image/png;base64,...)")
    if len(match.group("data")) * 3 // 4 > limits.max_image_bytes:
        raise RequestError(413, f"{where}: image is larger than {limits.max_image_bytes} bytes")
    try:
        data = base64.b64decode(match.group("data"), validate=True)
    except (binascii.Error, ValueError) as err:
        raise RequestError(400, f"{where}: invalid base64 ({err})") from None
    if not data:
        raise RequestError(415, f"{where}: the image is empty")
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > limits.max_image_pixels:
                raise RequestError(
                    413, f"{where}: image has {width}x{height} pixels, more than {limits.max_image_pixels}"
                )
            image.load()  # decodes the pixels: catches truncated files
    except RequestError:
        raise
    except Image.DecompressionBombError as err:
        raise RequestError(413, f"{where}: {err}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise RequestError(415, f"{where}: not a decodable image ({type(err).__name__}: {err})") from None
    return data


def _add_instruction(messages: list[dict]) -> None:
    """Rewrite the last user text part as ``reasoner_user_text(text)`` unless it already holds the instruction."""
    for message in reversed(messages):
        if message["role"] != "user" or not isinstance(message["content"], list):
            continue
        for part in reversed(message["content"]):
            if part.get("type") == "text" and part["text"].strip():
                if "\\boxed{}" not in part["text"]:
                    part["text"] = reasoner_user_text(part["text"])
                return
        return


def _number(body: dict, key: str, default: float, low: float, high: float, integer: bool = False) -> float:
    """``body[key]`` (or ``default`` when absent/null) checked to be a number in [low, high]."""
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or (integer and int(value) != value):
        raise RequestError(400, f"'{key}' must be {'an integer' if integer else 'a number'}, got {value!r}")
    if not low <= value <= high:
        raise RequestError(400, f"'{key}' must be between {low} and {high}, got {value}")
    return value


def chat_response(
    model: str,
    texts: list[str],
    finish_reasons: list[str],
    prompt_tokens: int,
    completion_tokens: int,
    metadata: dict[str, Any],
) -> dict[str, Any]:
    """A ``chat.completion`` object; ``metadata`` (checkpoint id, iteration) goes under ``"visplay"``."""
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": reason}
            for i, (text, reason) in enumerate(zip(texts, finish_reasons, strict=True))
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
        "visplay": metadata,
    }


def error_body(status: int, message: str) -> dict[str, Any]:
    """The OpenAI error object, so that the ``openai`` client raises with the server's message."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "code": status}}
