"""What the Serve ingress accepts before the engine sees a request (visplay.serve.chat_request), no engine."""

from __future__ import annotations

import base64
import io
import json
import random

import pytest
from PIL import Image

from visplay.prompts import REASONER_INSTRUCTION
from visplay.serve.chat_request import ApiError, Limits, check_chat_body, error_body, parse_json

LIMITS = Limits(max_image_bytes=100_000, max_image_pixels=64 * 64, max_tokens=32, max_n=4)


def png(size=(32, 32), color=(255, 0, 0), fmt="PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format=fmt)
    return buf.getvalue()


def data_url(data: bytes, mime="image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def body(*parts, **extra) -> dict:
    return {"model": "m", "messages": [{"role": "user", "content": list(parts)}], **extra}


def image_part(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


def text_part(text: str) -> dict:
    return {"type": "text", "text": text}


def refused(b, status: int, match: str, limits: Limits = LIMITS) -> None:
    with pytest.raises(ApiError, match=match) as info:
        check_chat_body(b, limits, add_reasoner_instruction=True)
    assert info.value.status == status


def test_a_valid_request_gets_the_reasoner_instruction_and_the_default_max_tokens():
    url = data_url(png())
    out = check_chat_body(body(image_part(url), text_part("How many red squares?")), LIMITS, True)
    # The last user text becomes reasoner_user_text(text): "question\ninstruction", as in training.
    assert out["messages"][0]["content"] == [
        image_part(url), text_part(f"How many red squares?\n{REASONER_INSTRUCTION}"),
    ]  # fmt: skip
    assert out["max_tokens"] == 32  # absent: the server's bound
    # A text-only request (content as a string) is fine and gets the instruction too.
    text_only = check_chat_body({"messages": [{"role": "user", "content": "Is 7 prime?"}]}, LIMITS, True)
    assert text_only["messages"][0]["content"] == f"Is 7 prime?\n{REASONER_INSTRUCTION}"


def test_the_instruction_is_not_doubled_and_can_be_off_and_the_input_is_not_mutated():
    b = body(image_part(data_url(png())), text_part(f"Q?\n{REASONER_INSTRUCTION}"), max_tokens=5, n=3)
    out = check_chat_body(b, LIMITS, True)
    assert out["messages"][0]["content"][1]["text"].count(REASONER_INSTRUCTION) == 1
    assert (out["max_tokens"], out["n"]) == (5, 3)
    plain = body(image_part(data_url(png())), text_part("Q?"))
    assert check_chat_body(plain, LIMITS, False)["messages"][0]["content"][1]["text"] == "Q?"
    check_chat_body(plain, LIMITS, True)
    assert plain["messages"][0]["content"][1]["text"] == "Q?"  # the caller's body is left as it was


def test_an_engine_that_takes_several_images_takes_them_and_no_more():
    two = Limits(max_image_bytes=100_000, max_image_pixels=64 * 64, max_tokens=32, max_n=4, max_images=2)
    both = body(
        image_part(data_url(png())), image_part(data_url(png(fmt="JPEG"), "image/jpeg")), text_part("?")
    )
    assert len(check_chat_body(both, two, False)["messages"][0]["content"]) == 3
    refused(body(*[image_part(data_url(png()))] * 3), 400, "at most 2 image", two)


@pytest.mark.parametrize(
    ("b", "status", "match"),
    [
        ([1, 2], 400, "JSON object"),
        ({"messages": []}, 400, "non-empty list"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, 400, r"messages\[0\] must be"),
        ({"messages": [{"role": "user", "content": 7}]}, 400, "string or a list of parts"),
        (body(image_part(data_url(png())), image_part(data_url(png()))), 400, "at most 1 image"),
        (body({"type": "input_audio"}), 400, "unsupported part"),
        (body(image_part("https://example.com/cat.png")), 400, "only base64 data URLs"),
        (body({"type": "image_url", "image_url": 5}), 400, "image_url must be"),
        (body(image_part("data:image/png;base64,@@@@")), 400, "invalid base64"),
        (body(image_part(data_url(b""))), 415, "empty"),
        (body(image_part(data_url(b"not an image at all"))), 415, "not_image"),
        (body(image_part(data_url(png(fmt="GIF"), "image/gif"))), 415, "format GIF"),  # not a training format
        (body(image_part(data_url(png()[:60]))), 415, "truncated"),
        (body(image_part(data_url(png(size=(65, 64))))), 413, "65x64 = 4160 pixels > max_pixels=4096"),
        (body(text_part("q"), temperature="hot"), 400, "'temperature' must be a number"),
        (body(text_part("q"), max_tokens=33), 400, "'max_tokens' must be between 1 and 32"),
        (body(text_part("q"), max_completion_tokens=10**9), 400, "'max_completion_tokens' must be between"),
        (body(text_part("q"), n=1.5), 400, "'n' must be an integer"),
        (body(text_part("q"), n=5), 400, "'n' must be between 1 and 4"),
        (body(text_part("q"), top_logprobs=21), 400, "'top_logprobs' must be between 0 and 20"),
        (body(text_part("q"), seed=True), 400, "'seed' must be an integer"),
    ],
)
def test_bad_requests_are_refused_with_a_status_and_a_message(b, status, match):
    refused(b, status, match)


def test_an_image_over_the_byte_limit_is_refused_before_decoding():
    noisy = io.BytesIO()
    Image.frombytes("RGB", (32, 32), random.Random(0).randbytes(32 * 32 * 3)).save(noisy, format="PNG")
    assert len(noisy.getvalue()) > 1000
    small = Limits(max_image_bytes=1000, max_image_pixels=10**6, max_tokens=8, max_n=1)
    refused(body(image_part(data_url(noisy.getvalue()))), 413, "larger than 1000 bytes", small)


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"max_tokens": Infinity}', "Infinity is not a JSON number"),
        (b'{"n": NaN}', "NaN is not a JSON number"),
        (b'{"a": -Infinity}', "-Infinity is not a JSON number"),
        (b'{"messages": "\xff\xfe"}', "not UTF-8"),
        (b"[" * 200_000 + b"]" * 200_000, "nests JSON too deeply"),
    ],
)
def test_the_body_must_be_strict_json(raw, match):
    with pytest.raises(ApiError, match=match) as info:
        parse_json(raw)
    assert info.value.status == 400


def test_strict_json_reads_plain_bodies_and_errors_follow_the_openai_format():
    assert parse_json(json.dumps({"n": 2, "t": 0.5}).encode()) == {"n": 2, "t": 0.5}
    assert error_body(413, "too big") == {
        "error": {"message": "too big", "type": "invalid_request_error", "param": None, "code": 413}
    }
    assert error_body(503, "later")["error"]["type"] == "server_error"
