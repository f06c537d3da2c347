"""The trainer's view of the policy: load a Qwen2.5-VL checkpoint, batch rollouts, score their tokens.

A rollout is (prompt token ids as vLLM expanded them, image pads included) + (completion token ids) +
the image. :func:`collate` pads a list of them into one model input; :func:`completion_logprobs`
runs the forward pass (vision tower included) and returns the per-token log-probs of the completion
tokens and their entropies, the quantities GRPO needs. Pure torch + transformers: no Ray, no DeepSpeed.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from visplay.rl import entropy_from_logits, token_logprobs


@dataclass(frozen=True)
class Sample:
    """One rollout to learn from.

    prompt_ids: [P] prompt token ids with the image pads expanded (as the engine saw them).
    completion_ids: [C] sampled token ids.
    image: encoded image bytes.
    advantage: the sample's GRPO advantage.
    weight: 1.0 to learn from it, 0.0 to mask it out (a filtered group, or padding for an idle rank).
    """

    prompt_ids: list[int]
    completion_ids: list[int]
    image: bytes
    advantage: float
    weight: float = 1.0


@dataclass
class ModelBatch:
    """Padded model inputs for B samples (T = longest prompt+completion; C = longest completion).

    input_ids, attention_mask, mm_token_type_ids: [B, T]; pixel_values: [sum of patches, D];
    image_grid_thw: [B, 3]; completion_mask: [B, C] (1 on real completion tokens of weighted samples);
    completion_start: [B] index in T of each first completion token; completion_ids: [B, C];
    advantages: [B].
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    mm_token_type_ids: torch.Tensor
    pixel_values: torch.Tensor
    image_grid_thw: torch.Tensor
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    completion_start: torch.Tensor
    advantages: torch.Tensor


def load_policy(checkpoint: str | Path, dtype: torch.dtype = torch.float32):
    """(model, processor) from an HF Qwen2.5-VL directory; raises FileNotFoundError naming it if missing."""
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    checkpoint = Path(checkpoint)
    if not (checkpoint / "config.json").is_file():
        raise FileNotFoundError(f"policy checkpoint not found: {checkpoint}")
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(checkpoint, dtype=dtype)
    processor = AutoProcessor.from_pretrained(checkpoint)
    return model, processor


def collate(samples: list[Sample], image_processor, image_token_id: int, pad_id: int) -> ModelBatch:
    """Right-pad B samples into one :class:`ModelBatch` (images through the model's image processor)."""
    lengths = [len(s.prompt_ids) + len(s.completion_ids) for s in samples]
    width, c_width = max(lengths), max(max(len(s.completion_ids) for s in samples), 1)
    batch = len(samples)
    input_ids = torch.full((batch, width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((batch, width), dtype=torch.long)
    completion_ids = torch.full((batch, c_width), pad_id, dtype=torch.long)
    completion_mask = torch.zeros((batch, c_width), dtype=torch.float32)
    for i, s in enumerate(samples):
        ids = torch.tensor(s.prompt_ids + s.completion_ids, dtype=torch.long)
        input_ids[i, : len(ids)] = ids
        attention_mask[i, : len(ids)] = 1
        completion_ids[i, : len(s.completion_ids)] = torch.tensor(s.completion_ids, dtype=torch.long)
        completion_mask[i, : len(s.completion_ids)] = s.weight
    images = [Image.open(io.BytesIO(s.image)).convert("RGB") for s in samples]
    vision = image_processor(images=images, return_tensors="pt")
    return ModelBatch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        mm_token_type_ids=(input_ids == image_token_id).long() * attention_mask,
        pixel_values=vision["pixel_values"],
        image_grid_thw=vision["image_grid_thw"],
        completion_ids=completion_ids,
        completion_mask=completion_mask,
        completion_start=torch.tensor([len(s.prompt_ids) for s in samples], dtype=torch.long),
        advantages=torch.tensor([s.advantage for s in samples], dtype=torch.float32),
    )


def completion_logprobs(model, batch: ModelBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probs [B, C] of the completion tokens under `model`, and their entropies [B, C].

    Logits at position t predict token t+1, so completion token j of sample i (at position
    completion_start[i] + j) is scored by the logits at completion_start[i] + j - 1. Only the positions
    from the earliest of those on go through the output layer (``logits_to_keep``): the prompt's logits,
    [B, P, V] with a 152k vocabulary, are never built.
    """
    width = batch.input_ids.shape[1]
    first = int(batch.completion_start.min()) - 1  # the earliest position whose logits score a token
    out = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        mm_token_type_ids=batch.mm_token_type_ids,
        pixel_values=batch.pixel_values,
        image_grid_thw=batch.image_grid_thw,
        use_cache=False,
        logits_to_keep=width - first,
    )
    logits = out.logits  # [B, width - first, V]: positions first .. width - 1
    offsets = torch.arange(batch.completion_ids.shape[1], device=logits.device)
    start = batch.completion_start.to(logits.device)
    positions = (start[:, None] - 1 - first + offsets[None, :]).clamp(max=logits.shape[1] - 1)
    index = positions[:, :, None].expand(-1, -1, logits.shape[-1])
    picked = torch.gather(logits, 1, index).float()  # [B, C, V]
    return token_logprobs(picked, batch.completion_ids), entropy_from_logits(picked.detach())
