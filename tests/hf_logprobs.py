"""Transformers reference log-probs for the exact engine comparisons of the tests (test-only helpers)."""

from __future__ import annotations

import io

import torch
from PIL import Image


def _hf_inputs(processor, prompt: str, image: bytes, tokens: list[int]) -> dict[str, torch.Tensor]:
    """Processor inputs for prompt+image with `tokens` appended to the (expanded) prompt ids."""
    inputs = dict(
        processor(text=[prompt], images=[Image.open(io.BytesIO(image)).convert("RGB")], return_tensors="pt")
    )
    extra = torch.tensor([tokens], dtype=inputs["input_ids"].dtype)
    inputs["input_ids"] = torch.cat([inputs["input_ids"], extra], dim=1)
    inputs["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(extra)], dim=1)
    if "mm_token_type_ids" in inputs:  # 0 = text token
        inputs["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], torch.zeros_like(extra)], dim=1)
    return inputs


def hf_token_logprobs(processor, model, prompt: str, image: bytes, tokens: list[int]) -> torch.Tensor:
    """[len(tokens), vocab] log-softmax of the distributions that predicted each of `tokens` (teacher forced)."""
    inputs = _hf_inputs(processor, prompt, image, tokens)
    start = inputs["input_ids"].shape[1] - len(tokens)
    with torch.no_grad():
        logits = model(**inputs).logits[0, start - 1 : start - 1 + len(tokens)]
    return torch.log_softmax(logits.float(), dim=-1)


def hf_sequence_logprobs(processor, model, prompt: str, image: bytes, tokens: list[int]) -> list[float]:
    """Log-prob of each of `tokens` given prompt, image and the earlier tokens (transformers reference)."""
    table = hf_token_logprobs(processor, model, prompt, image, tokens)
    return table.gather(1, torch.tensor(tokens).unsqueeze(1)).squeeze(1).tolist()


def max_abs_diff(a: list[float], b: list[float]) -> float:
    """Largest elementwise |a - b| of two equally long, non-empty lists."""
    assert len(a) == len(b) and a
    return max(abs(x - y) for x, y in zip(a, b, strict=True))
