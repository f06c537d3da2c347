"""The OpenAI wire format of the Serve app, without an engine: what is accepted, what is refused and why."""

from __future__ import annotations

import base64
import io
import random

import pytest
from PIL import Image

from visplay.prompts import IMAGE_PLACEHOLDER, REASONER_INSTRUCTION
from visplay.serve.openai_api import Limits, RequestError, chat_response, error_body, parse_chat_request

LIMITS = Limits(max_image_bytes=100_000, max_image_pixels=64 * 64, max_tokens=32, max_n=4)


def png(size=(32, 32), color=(255, 0, 0)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
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
    with pytest.raises(RequestError, match=match) as info:
        parse_chat_request(b, limits, add_reasoner_instruction=True)
    assert info.value.status == status


def test_an_engine_that_takes_several_images_takes_them_in_order():
    two = Limits(max_image_bytes=100_000, max_image_pixels=64 * 64, max_tokens=32, max_n=4, max_images=2)
    first, second = png(), png(size=(32, 16))
    req = parse_chat_request(
        body(image_part(data_url(first)), image_part(data_url(second)), text_part("Which is wider?")),
        two,
        False,
    )
    assert req.images == (first, second) and req.prompt.count(IMAGE_PLACEHOLDER) == 2
    refused(
        body(*[image_part(data_url(first))] * 3), 400, "1 to 2 images are supported per request, got 3", two
    )


def test_a_valid_request_is_rendered_with_the_reasoner_instruction_and_defaults():
    image = png()
    req = parse_chat_request(
        body(image_part(data_url(image)), text_part("How many red squares?")),
        LIMITS,
        add_reasoner_instruction=True,
    )
    assert req.images == (image,)
    # Qwen chat template: default system turn, the user turn holds the image placeholder then the text.
    assert req.prompt == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        f"<|im_start|>user\n{IMAGE_PLACEHOLDER}How many red squares?\n{REASONER_INSTRUCTION}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    # Absent sampling fields take the defaults: temperature 1, top_p 1, max_tokens = the limit, n 1, no seed.
    assert (req.temperature, req.top_p, req.max_tokens, req.n, req.seed) == (1.0, 1.0, 32, 1, None)


def test_sampling_fields_are_taken_and_the_instruction_is_not_doubled():
    text = f"Q?\n{REASONER_INSTRUCTION}"
    req = parse_chat_request(
        body(
            image_part(data_url(png())), text_part(text), temperature=0, max_tokens=5, n=3, seed=9, top_p=0.5
        ),
        LIMITS,
        add_reasoner_instruction=True,
    )
    assert req.prompt.count(REASONER_INSTRUCTION) == 1
    assert (req.temperature, req.top_p, req.max_tokens, req.n, req.seed) == (0, 0.5, 5, 3, 9)
    plain = parse_chat_request(body(image_part(data_url(png())), text_part("Q?")), LIMITS, False)
    assert REASONER_INSTRUCTION not in plain.prompt and "Q?<|im_end|>" in plain.prompt


@pytest.mark.parametrize(
    ("b", "status", "match"),
    [
        ([1, 2], 400, "JSON object"),
        ({"messages": []}, 400, "non-empty list"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, 400, r"messages\[0\] must be"),
        (body(text_part("no image")), 400, "exactly one image.*got 0"),
        (body(image_part(data_url(png())), image_part(data_url(png()))), 400, "exactly one image.*got 2"),
        (body({"type": "audio"}), 400, "unsupported part"),
        (body(image_part("https://example.com/cat.png")), 400, "only base64 data URLs"),
        (body(image_part("data:image/png;base64,@@@@")), 400, "invalid base64"),
        (body(image_part(data_url(b""))), 415, "empty"),
        (body(image_part(data_url(b"not an image at all"))), 415, "not a decodable image"),
        (body(image_part(data_url(png()[:60]))), 415, "not a decodable image"),  # truncated PNG
        (body(image_part(data_url(png(size=(65, 64))))), 413, "65x64 pixels, more than 4096"),
        (body(image_part(data_url(png())), temperature="hot"), 400, "'temperature' must be a number"),
        (body(image_part(data_url(png())), max_tokens=33), 400, "'max_tokens' must be between 1 and 32"),
        (body(image_part(data_url(png())), n=1.5), 400, "'n' must be an integer"),
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


def test_response_and_error_bodies_follow_the_openai_format():
    out = chat_response("m", ["a", "b"], ["stop", "length"], 10, 7, {"checkpoint_id": "abc", "iteration": 2})
    assert out["object"] == "chat.completion" and out["model"] == "m" and out["id"].startswith("chatcmpl-")
    assert [c["message"]["content"] for c in out["choices"]] == ["a", "b"]
    assert [c["finish_reason"] for c in out["choices"]] == ["stop", "length"]
    assert out["usage"] == {"prompt_tokens": 10, "completion_tokens": 7, "total_tokens": 17}
    assert out["visplay"] == {"checkpoint_id": "abc", "iteration": 2}
    assert error_body(413, "too big") == {
        "error": {"message": "too big", "type": "invalid_request_error", "code": 413}
    }
