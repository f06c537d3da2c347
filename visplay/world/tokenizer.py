"""A small byte-level BPE tokenizer in the Qwen2 format, trained offline from text generated here.

Real Qwen tokenizers cannot be downloaded on the machines this project targets, so the tiny model gets its
own: the same pre-tokenizer, byte-level alphabet and special tokens as Qwen2.5-VL, a vocabulary of a few
thousand tokens instead of 151k. The training text is generated deterministically from a seed: sentences
about the synthetic world (shapes, colours, counts, positions, charts), the VisPlay prompt/answer tags,
a list of common English words, and filler pseudo-words that guarantee the BPE trainer has enough distinct
pairs to reach any requested vocabulary size exactly (so ``len(tokenizer) == vocab_size`` of the model and
every id the model can emit decodes to a token).
"""

from __future__ import annotations

import json
import random

from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import Qwen2TokenizerFast

# The Qwen2 pre-tokenizer split (copied from transformers' Qwen2Tokenizer, which rebuilds it on load).
PRETOKENIZE_REGEX = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""

# Qwen2.5-VL's special tokens, in Qwen's relative order; they take the last ids of the vocabulary.
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# The chat template of Qwen2.5-VL-Instruct: a default system turn, images as
# <|vision_start|><|image_pad|><|vision_end|> (the processor expands <|image_pad|> to one token per merged patch).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Words of the synthetic world, space separated (multi-word positions use "_" for a space).
_WORDS = {
    "shapes": "circle square triangle star rectangle hexagon diamond ellipse pentagon cross",
    "colours": "red green blue yellow orange purple black white gray pink brown cyan",
    "positions": "left right top bottom center middle top_left top_right bottom_left bottom_right above below "
    "next_to between",
    "counts": "zero one two three four five six seven eight nine ten",
    "sizes": "small large big tiny largest smallest biggest tall short wide",
    "charts": "bar bars chart tallest shortest value values axis label legend highest lowest sum difference "
    "average total plot line category",
    "questions": "What Which How many Where Is Are Does Why Who When color colour shape count number position "
    "located image picture scene",
    # Common English words, so that free-form questions and reasoning tokenize into words, not bytes.
    "common": "the a an of to and in is are was were be been it this that these those there here for on with as "
    "at by from or not no yes all any each every some more most less than then so if because therefore thus "
    "first second third last next after before look see find answer question reason think step image shows "
    "object objects shape shapes colour colours color colors count number numbers total left right top bottom "
    "side near far close inside outside over under same different both only other another many few several "
    "group pair row column grid corner edge area size larger smaller equal greater fewer has have had can "
    "could should would will must may might do does did make made use used give given let us we you they he "
    "she its their our your which what how where why who when correct option options choice choose select "
    "best describe counted visible appear appears contains contain around across along beside behind front "
    "back compare compared plus minus times divided result final hence multiple numerical regression type "
    "boxed system user assistant helpful",
}
WORDS = {kind: [word.replace("_", " ") for word in text.split()] for kind, text in _WORDS.items()}
"""The word lists above, as lists: ``WORDS["shapes"]``, ``WORDS["colours"]``, ..."""


def _world_sentences(rng: random.Random, n: int) -> list[str]:
    """``10 * n`` sentences in the style of the synthetic world: scenes, charts, VisPlay questions, answers."""
    out: list[str] = []
    for _ in range(n):
        shape, colour = rng.choice(WORDS["shapes"]), rng.choice(WORDS["colours"])
        pos, size, chart = (
            rng.choice(WORDS["positions"]),
            rng.choice(WORDS["sizes"]),
            rng.choice(WORDS["charts"]),
        )
        k, v = rng.randint(0, 12), rng.randint(0, 100)
        a, b, c, d = rng.sample(WORDS["shapes"], 4)
        out += [
            f"There are {k} {colour} {shape}s at the {pos} of the image.",
            f"How many {colour} {shape}s are there? The answer is {rng.choice(WORDS['counts'])}.",
            f"Which {size} shape is {pos}? A. {a} B. {b} C. {c} D. {d}",
            f"The {chart} of the {colour} bar is {v}. Which bar is the tallest?",
            f"<type>multiple choice</type>\n<question>What colour is the {shape} on the {pos}?</question>",
            f"<type>numerical</type>\n<question>How many {shape}s are {pos}?</question>",
            f"<type>regression</type>\n<question>What is the value of the {colour} bar?</question>",
            f"Let's think step by step. The {colour} {shape} is {pos}. The answer is \\boxed{{{k}}}.",
            f"<answer>{rng.choice('ABCD')}</answer> \\boxed{{{v}.{k}}} {k}+{v}={k + v}",
            f"{rng.choice(WORDS['questions'])} {rng.choice(WORDS['questions']).lower()} {colour} {shape} {pos}?",
        ]
    return out


def _filler_words(rng: random.Random, n: int) -> list[str]:
    """Pronounceable pseudo-words: many distinct letter pairs, so BPE can always fill the vocabulary."""
    onsets, vowels = "bcdfghjklmnprstvwz", "aeiou"
    return [
        "".join(rng.choice(onsets) + rng.choice(vowels) for _ in range(rng.randint(2, 5))) for _ in range(n)
    ]


def training_text(seed: int, vocab_size: int) -> list[str]:
    """The deterministic tokenizer training corpus (one string per line) for this seed and vocabulary size.

    World sentences and words come first and most often, so their merges win; the filler only supplies the
    rarest merges that bring the vocabulary to its exact size.
    """
    rng = random.Random(seed)
    every_word = [word for words in WORDS.values() for word in words]
    lines = _world_sentences(rng, 200)
    lines += [" ".join(rng.sample(every_word, 12)) for _ in range(200)]
    lines += [
        "system\nYou are a helpful assistant.\nuser\nassistant\n"
    ] * 50  # chat turns, minus special tokens
    lines += [" ".join(str(i) for i in range(200)), "0123456789 0.5 3.14 -2 10% (a) [b] {c} x*y/z"]
    lines += [" ".join(_filler_words(rng, 12)) for _ in range(vocab_size // 4)]
    return lines


def train_tokenizer(vocab_size: int, seed: int, model_max_length: int = 32768) -> Qwen2TokenizerFast:
    """Train a byte-level BPE with exactly ``vocab_size`` tokens (special tokens last) and wrap it for Qwen."""
    backend = Tokenizer(models.BPE())
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(training_text(seed, vocab_size), trainer)
    model = json.loads(backend.to_str())["model"]
    vocab: dict[str, int] = model["vocab"]
    if len(vocab) != vocab_size - len(SPECIAL_TOKENS):
        raise RuntimeError(f"BPE reached {len(vocab)} tokens, wanted {vocab_size - len(SPECIAL_TOKENS)}")
    for token in SPECIAL_TOKENS:
        vocab[token] = len(vocab)
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    tokenizer = Qwen2TokenizerFast(
        vocab=vocab,
        merges=merges,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        extra_special_tokens=SPECIAL_TOKENS,
        model_max_length=model_max_length,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer
