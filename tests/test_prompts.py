"""Exact-value tests for visplay.prompts (pure string functions)."""

import pytest

from visplay import prompts
from visplay.prompts import (
    IMAGE_PLACEHOLDER,
    QUESTION_TYPES,
    QUESTIONER_SYSTEM,
    QUESTIONER_USER,
    questioner_messages,
    questioner_prompt,
    reasoner_messages,
    reasoner_prompt,
    render_prompt,
)
from visplay.rewards import parse_questioner_output

REASONER_TAIL = "Please reason step by step based on the question and the image, and put your final answer within \\boxed{}."


def test_question_type_constants():
    assert QUESTION_TYPES == ("multiple choice", "numerical", "regression")
    assert (
        prompts.QTYPE_MULTIPLE_CHOICE,
        prompts.QTYPE_NUMERICAL,
        prompts.QTYPE_REGRESSION,
    ) == QUESTION_TYPES


def test_image_placeholder_is_qwen25vl_markup():
    assert IMAGE_PLACEHOLDER == "<|vision_start|><|image_pad|><|vision_end|>"


def test_questioner_messages_structure():
    assert questioner_messages() == [
        {"role": "system", "content": QUESTIONER_SYSTEM},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTIONER_USER}]},
    ]


def test_messages_are_fresh_lists():
    # Mutating one result (e.g. attaching an image) must not leak into the next call.
    first = questioner_messages()
    first[1]["content"][0]["image"] = "IMG"
    assert questioner_messages()[1]["content"][0] == {"type": "image"}


def test_questioner_text_names_all_types_and_the_format():
    for qtype in QUESTION_TYPES:
        assert qtype in QUESTIONER_USER
    assert "<type>T</type><question>Q</question><answer>A</answer>" in QUESTIONER_USER


def test_questioner_format_line_filled_in_parses():
    # The prompt's own format line, with T/Q/A filled in, must be accepted by the reward parser.
    format_line = QUESTIONER_USER.splitlines()[-1]
    filled = (
        format_line.replace(">T<", ">numerical<").replace(">Q<", ">How many cats?<").replace(">A<", ">3<")
    )
    parsed = parse_questioner_output(filled)
    assert (parsed.ok, parsed.qtype, parsed.question, parsed.answer) == (
        True,
        "numerical",
        "How many cats?",
        "3",
    )


def test_reasoner_messages_exact():
    assert reasoner_messages("  How many cats?  ") == [
        {"role": "system", "content": "You are a helpful assistant."},
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "text", "text": "How many cats?\n" + REASONER_TAIL}],
        },
    ]


def test_reasoner_prompt_exact_string():
    expected = (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>How many cats?\n"
        + REASONER_TAIL
        + "<|im_end|>\n<|im_start|>assistant\n"
    )
    assert reasoner_prompt("How many cats?") == expected
    assert render_prompt(reasoner_messages("How many cats?")) == expected


def test_questioner_prompt_exact_string():
    expected = (
        f"<|im_start|>system\n{QUESTIONER_SYSTEM}<|im_end|>\n"
        f"<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>{QUESTIONER_USER}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert questioner_prompt() == expected
    # One image part → exactly one image pad (must match the single image handed to vLLM).
    assert expected.count("<|image_pad|>") == 1


def test_render_inserts_default_system_like_qwen_template():
    messages = [{"role": "user", "content": "hi"}]
    assert render_prompt(messages) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nhi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_render_multi_turn_without_generation_prompt():
    messages = [
        {"role": "system", "content": "S"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "x"}, {"type": "image_url"}, {"type": "image"}],
        },
        {"role": "assistant", "content": "y"},
    ]
    # Parts are concatenated in order; both image part spellings become one placeholder each.
    assert render_prompt(messages, add_generation_prompt=False) == (
        "<|im_start|>system\nS<|im_end|>\n"
        f"<|im_start|>user\nx{IMAGE_PLACEHOLDER}{IMAGE_PLACEHOLDER}<|im_end|>\n"
        "<|im_start|>assistant\ny<|im_end|>\n"
    )


@pytest.mark.parametrize(
    "messages",
    [
        [],
        [{"role": "tool", "content": "x"}],
        [{"role": "user", "content": [{"type": "video"}]}],
        [{"role": "user", "content": [{"type": "text"}]}],
        [{"role": "user", "content": 3}],
    ],
)
def test_render_rejects_malformed_messages(messages):
    with pytest.raises(ValueError):
        render_prompt(messages)


@pytest.mark.parametrize("question", ["", "   \n"])
def test_reasoner_rejects_blank_question(question):
    with pytest.raises(ValueError, match="non-empty question"):
        reasoner_messages(question)
