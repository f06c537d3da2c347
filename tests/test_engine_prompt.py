"""What vLLM is handed for a prompt: one image, several (in order), or none (a text-only question)."""

from __future__ import annotations

from benchmark_files import png

from visplay.engine.llm import vllm_prompt


def test_one_image_several_or_none():
    one = vllm_prompt("p", png("a"))
    assert one["prompt"] == "p" and one["multi_modal_data"]["image"].size == (24, 24)
    assert one["multi_modal_data"]["image"].mode == "RGB"
    several = vllm_prompt("p", [png("a"), png("b"), png("c")])["multi_modal_data"]["image"]
    assert [image.tobytes() for image in several] == [vllm_prompt("p", png(k))["multi_modal_data"]["image"].tobytes()
                                                       for k in "abc"]  # fmt: skip
    assert vllm_prompt("p", [png("a")])["multi_modal_data"]["image"].size == (
        24,
        24,
    )  # a list of one: one image
    assert vllm_prompt("p", []) == {"prompt": "p"}  # text-only: no multi_modal_data at all
