"""Prompts for VisPlay's two roles, shared by generation, GRPO training, evaluation and serving.

Both roles see one image and some text:

* the **Questioner** is asked to write ONE hard-but-answerable question about the image, in the paper's
  tagged format ``<type>T</type><question>Q</question><answer>A</answer>`` (T in :data:`QUESTION_TYPES`);
  :func:`visplay.rewards.parse_questioner_output` reads that format back;
* the **Reasoner** is asked to answer a question about the image step by step and put its final answer in
  ``\\boxed{}``; :func:`visplay.rewards.extract_boxed` reads that answer back.

Every prompt is built in two steps:

1. ``questioner_messages()`` / ``reasoner_messages(question)`` return an OpenAI/Hugging Face style chat
   ``messages`` list with an ``{"type": "image"}`` part where the image goes (use it with a processor's
   ``apply_chat_template`` or an OpenAI-compatible server);
2. :func:`render_prompt` turns any such list into the raw prompt string vLLM expects for Qwen2.5-VL, with the
   image placeholder ``<|vision_start|><|image_pad|><|vision_end|>`` (vLLM expands ``<|image_pad|>`` to the
   right number of image tokens when the image is passed as ``multi_modal_data``).

Everything here is a pure function of its arguments: no tokenizer, no files, no model.
"""

from __future__ import annotations

from typing import Any

# --------------------------------------------------------------------------------------------------------
# Question types (the paper's three; the parser in visplay.rewards normalises spellings onto these).
# --------------------------------------------------------------------------------------------------------
QTYPE_MULTIPLE_CHOICE = "multiple choice"
QTYPE_NUMERICAL = "numerical"
QTYPE_REGRESSION = "regression"
QUESTION_TYPES: tuple[str, ...] = (QTYPE_MULTIPLE_CHOICE, QTYPE_NUMERICAL, QTYPE_REGRESSION)

# --------------------------------------------------------------------------------------------------------
# Qwen2.5-VL chat markup.
# --------------------------------------------------------------------------------------------------------
IMAGE_PLACEHOLDER = "<|vision_start|><|image_pad|><|vision_end|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
# Qwen2.5-VL's chat template inserts this system turn when a conversation does not start with one.
QWEN_DEFAULT_SYSTEM = "You are a helpful assistant."

# --------------------------------------------------------------------------------------------------------
# Prompt texts. Kept short on purpose: the tiny test model has a small context window.
# --------------------------------------------------------------------------------------------------------
QUESTIONER_SYSTEM = (
    "You are a question generator. Look carefully at the image and write exactly ONE challenging question "
    "about it that needs visual reasoning, not just description, and has a single correct answer."
)
QUESTIONER_USER = (
    "Write one new, hard but answerable question about this image.\n"
    "Its type must be one of:\n"
    "- multiple choice: options A, B, C, D (or Yes/No) listed in the question; the answer is the letter "
    "(or Yes/No)\n"
    "- numerical: the answer is a specific number\n"
    "- regression: the answer is a continuous value such as a measurement, ratio or coordinate\n"
    "Give numbers without units. Output exactly this and nothing else:\n"
    "<type>T</type><question>Q</question><answer>A</answer>"
)

REASONER_SYSTEM = QWEN_DEFAULT_SYSTEM
REASONER_INSTRUCTION = (
    "Please reason step by step based on the question and the image, "
    "and put your final answer within \\boxed{}."
)

ROLES = ("system", "user", "assistant")
"""The chat roles a message may have (the prompt renderer and the Serve ingress both check it)."""
_IMAGE_PART_TYPES = ("image", "image_url")


def _image_turn(system: str, text: str, n_images: int = 1) -> list[dict[str, Any]]:
    """Build ``[system, user(images + text)]`` chat messages.

    Args:
        system: the system prompt (a plain string).
        text: the user text that follows the images.
        n_images: image parts before the text (0: a text-only turn, as for HallusionBench's questions
            without a figure).

    Returns:
        A fresh list of two message dicts (callers may mutate it, e.g. to attach the image object).
    """
    return [
        {"role": "system", "content": system},
        {
            "role": "user",
            "content": [*({"type": "image"} for _ in range(n_images)), {"type": "text", "text": text}],
        },
    ]


def questioner_messages() -> list[dict[str, Any]]:
    """Chat messages asking the Questioner for one tagged question about the image.

    Returns:
        ``[{"role": "system", "content": str}, {"role": "user", "content": [{"type": "image"},
        {"type": "text", "text": str}]}]``; a new list on every call.
    """
    return _image_turn(QUESTIONER_SYSTEM, QUESTIONER_USER)


def reasoner_user_text(question: str) -> str:
    """The Reasoner's user text for ``question``: the question, a newline, then the \\boxed{} instruction.

    Args:
        question: the question about the image; surrounding whitespace is stripped.

    Raises:
        ValueError: if ``question`` is empty or only whitespace (a prompt without a question is a bug).
    """
    question = question.strip()
    if not question:
        raise ValueError("reasoner prompt needs a non-empty question")
    return f"{question}\n{REASONER_INSTRUCTION}"


def reasoner_messages(question: str, n_images: int = 1) -> list[dict[str, Any]]:
    """Chat messages asking the Reasoner to answer ``question`` about the image, step by step, in \\boxed{}.

    Args:
        question: the question text (e.g. ``ParsedQuestion.question``).
        n_images: image parts in the user turn (evaluation: a multi-image MMMU question has several, a
            text-only HallusionBench question none).

    Returns:
        The same shape as :func:`questioner_messages`; a new list on every call.

    Raises:
        ValueError: if ``question`` is blank.
    """
    return _image_turn(REASONER_SYSTEM, reasoner_user_text(question), n_images)


def _render_content(content: Any) -> str:
    """Render one message's ``content`` (a string or a list of typed parts) as Qwen2.5-VL prompt text.

    Text parts are concatenated as-is; each image part (``{"type": "image"}`` or ``{"type": "image_url"}``)
    becomes :data:`IMAGE_PLACEHOLDER`.

    Raises:
        ValueError: on a part that is not a dict with a known ``type``, or a text part without a string text.
    """
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise ValueError(f"message content must be a str or a list of parts, got {type(content).__name__}")
    pieces = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in _IMAGE_PART_TYPES:
            pieces.append(IMAGE_PLACEHOLDER)
        elif kind == "text" and isinstance(part.get("text"), str):
            pieces.append(part["text"])
        else:
            raise ValueError(f"unsupported message part: {part!r}")
    return "".join(pieces)


def render_prompt(messages: list[dict[str, Any]], add_generation_prompt: bool = True) -> str:
    """Render chat ``messages`` to the raw Qwen2.5-VL prompt string that vLLM takes with ``multi_modal_data``.

    Each message becomes ``<|im_start|>{role}\\n{content}<|im_end|>\\n``. Like Qwen2.5-VL's own chat template,
    a conversation that does not start with a system message gets the default system turn
    (:data:`QWEN_DEFAULT_SYSTEM`) first. With ``add_generation_prompt`` the string ends with
    ``<|im_start|>assistant\\n`` so the model answers next. For the messages built here this equals
    ``processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)``.

    Example (reasoner)::

        <|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n
        <|im_start|>user\\n<|vision_start|><|image_pad|><|vision_end|>QUESTION\\nPlease reason ...<|im_end|>\\n
        <|im_start|>assistant\\n

    Args:
        messages: list of ``{"role": "system"|"user"|"assistant", "content": str | list[part]}``.
        add_generation_prompt: append the opening of the assistant turn (default True).

    Returns:
        The prompt text. The number of ``<|image_pad|>`` occurrences equals the number of image parts, which
        must match the number of images handed to vLLM.

    Raises:
        ValueError: on an empty list, an unknown role or an unsupported content part.
    """
    if not messages:
        raise ValueError("render_prompt needs at least one message")
    out = []
    if messages[0].get("role") != "system":
        out.append(f"{IM_START}system\n{QWEN_DEFAULT_SYSTEM}{IM_END}\n")
    for message in messages:
        role = message.get("role")
        if role not in ROLES:
            raise ValueError(f"unknown chat role {role!r}; expected one of {ROLES}")
        out.append(f"{IM_START}{role}\n{_render_content(message.get('content'))}{IM_END}\n")
    if add_generation_prompt:
        out.append(f"{IM_START}assistant\n")
    return "".join(out)


def questioner_prompt() -> str:
    """``render_prompt(questioner_messages())``: the Questioner's vLLM prompt with one image placeholder."""
    return render_prompt(questioner_messages())


def reasoner_prompt(question: str, n_images: int = 1) -> str:
    """``render_prompt(reasoner_messages(question, n_images))``: the Reasoner's vLLM prompt with
    ``n_images`` image placeholders (one by default).

    Raises:
        ValueError: if ``question`` is blank.
    """
    return render_prompt(reasoner_messages(question, n_images))
