"""Build a tiny, randomly initialised Qwen2.5-VL checkpoint offline, from a seed.

Nothing can be downloaded on the machines this project targets, yet every stage (vLLM generation, GRPO on
DeepSpeed, weight sync) needs a real Qwen2.5-VL checkpoint directory. :func:`build_tiny_model` writes one:

* ``tokenizer.json`` / ``tokenizer_config.json`` / ``chat_template.jinja``: a byte-level BPE trained here
  (see :mod:`visplay.world.tokenizer`), wrapped as ``Qwen2TokenizerFast`` with the Qwen2.5-VL chat template.
* ``processor_config.json``: a ``Qwen2_5_VLProcessor`` whose image processor resizes any square image to
  ``image_size`` pixels a side (rounded to a multiple of 28). With 14-pixel patches merged 2x2, one image
  becomes ``(image_size / 28) ** 2`` ``<|image_pad|>`` tokens (16 for the default 112): short prompts on a CPU.
* ``config.json`` / ``generation_config.json`` / ``model.safetensors``: float32 random weights from
  ``torch.manual_seed(spec.seed)``. float32 because CPU kernels handle it well at this size and it makes
  transformers and vLLM agree to ~1e-6 in log-probs (vLLM's ``dtype="auto"`` downcasts a float32
  checkpoint to bfloat16; pass ``dtype="float32"`` to keep it).
* ``visplay_model.json``: the spec and a content id (sha256 of the weights), so later code can name the
  model version (:func:`visplay.checkpoints.model_version`).

Why the sizes (all from :class:`visplay.config.TinyModelConfig`): head_dim = hidden_size / num_heads = 64
because vLLM's CPU attention rejects small heads (16 fails; 64 is measured to work); 2 text layers and a 2-block, 64-wide vision tower keep
the whole model near 1.1M parameters (4.3 MB), so building takes seconds and a vLLM engine generates
thousands of tokens per second on two cores. The model outputs noise; it exists to exercise the plumbing.

The directory is written to a temporary sibling and renamed into place, so a half-written directory is
never mistaken for a model. The same seed gives byte-identical weights and tokenizer files.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from visplay.checkpoints import MANIFEST, weight_files, weights_sha256
from visplay.config import TinyModelConfig

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase, Qwen2_5_VLConfig, Qwen2_5_VLProcessor


PATCH_SIZE = 14
"""Vision patch side in pixels (as in Qwen2.5-VL)."""
MERGE_SIZE = 2
"""Patches merged per side into one language-model token (as in Qwen2.5-VL)."""
RENDERED_IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
"""How one image appears in a rendered prompt; the processor (or vLLM) expands the pad to image tokens."""


def image_side(spec: TinyModelConfig) -> int:
    """Side in pixels of every processed square image: ``image_size`` rounded to a multiple of 28."""
    step = PATCH_SIZE * MERGE_SIZE
    return max(step, round(spec.image_size / step) * step)


def image_token_count(spec: TinyModelConfig) -> int:
    """Number of ``<|image_pad|>`` tokens one square image becomes: (side / 28) ** 2, 16 for 112 pixels."""
    per_side = image_side(spec) // (PATCH_SIZE * MERGE_SIZE)
    return per_side * per_side


def mrope_sections(head_dim: int) -> list[int]:
    """Split the head_dim/2 rotary frequencies into (time, height, width) sections like Qwen's [16, 24, 24]."""
    half = head_dim // 2
    temporal = half // 4
    height = (half - temporal) // 2
    return [temporal, height, half - temporal - height]


def hf_config(spec: TinyModelConfig, token_ids: dict[str, int]) -> Qwen2_5_VLConfig:
    """The ``Qwen2_5_VLConfig`` for this spec; ``token_ids`` maps the special tokens to their ids."""
    from transformers import Qwen2_5_VLConfig

    head_dim = spec.hidden_size // spec.num_heads
    text_config = {
        "vocab_size": spec.vocab_size,
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.intermediate_size,
        "num_hidden_layers": spec.num_layers,
        "num_attention_heads": spec.num_heads,
        "num_key_value_heads": spec.num_kv_heads,
        "max_position_embeddings": spec.max_position_embeddings,
        "max_window_layers": spec.num_layers,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 1_000_000.0,
            "mrope_section": mrope_sections(head_dim),
        },
        "bos_token_id": token_ids["<|endoftext|>"],
        "eos_token_id": token_ids["<|im_end|>"],
        "pad_token_id": token_ids["<|endoftext|>"],
    }
    vision_config = {
        "depth": spec.vision_depth,
        "hidden_size": spec.vision_hidden_size,
        "intermediate_size": 2 * spec.vision_hidden_size,
        "num_heads": spec.vision_heads,
        "out_hidden_size": spec.hidden_size,
        "patch_size": PATCH_SIZE,
        "spatial_merge_size": MERGE_SIZE,
        "temporal_patch_size": 2,
        "window_size": 112,  # pixels, as in Qwen2.5-VL: windows of 4x4 merged tokens
        "fullatt_block_indexes": [spec.vision_depth - 1],  # Qwen puts full attention on every 8th block
        "tokens_per_second": 2,
    }
    return Qwen2_5_VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=token_ids["<|image_pad|>"],
        video_token_id=token_ids["<|video_pad|>"],
        vision_start_token_id=token_ids["<|vision_start|>"],
        vision_end_token_id=token_ids["<|vision_end|>"],
        tie_word_embeddings=False,
        dtype="float32",
    )


def build_processor(spec: TinyModelConfig, tokenizer: PreTrainedTokenizerBase) -> Qwen2_5_VLProcessor:
    """A ``Qwen2_5_VLProcessor`` that maps any square image to :func:`image_side` pixels a side.

    Qwen's resize rounds each side to a multiple of 28 and rescales into [min_pixels, max_pixels]; bounds
    half a step (14 px) either side of the target make every square image land exactly on it, without
    floating-point edge cases. Other aspect ratios keep their ratio at about as many pixels.
    """
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    pixels = {
        "min_pixels": (image_side(spec) - PATCH_SIZE) ** 2,
        "max_pixels": (image_side(spec) + PATCH_SIZE) ** 2,
        "patch_size": PATCH_SIZE,
        "merge_size": MERGE_SIZE,
        "temporal_patch_size": 2,
    }
    return Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(**pixels),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(**pixels),
        chat_template=tokenizer.chat_template,
    )


def read_manifest(path: str | Path) -> dict | None:
    """The ``visplay_model.json`` of a complete tiny-model directory, or None if there is none."""
    manifest = Path(path) / MANIFEST
    return json.loads(manifest.read_text()) if manifest.is_file() else None


@contextmanager
def _no_progress_bars() -> Iterator[None]:
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _write_model(out: Path, spec: TinyModelConfig) -> None:
    """Write every file of the checkpoint into the (empty) directory ``out``."""
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration

    from visplay.world.tokenizer import SPECIAL_TOKENS, train_tokenizer

    tokenizer = train_tokenizer(spec.vocab_size, spec.seed, spec.max_position_embeddings)
    token_ids = dict(zip(SPECIAL_TOKENS, tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS), strict=True))
    build_processor(spec, tokenizer).save_pretrained(out)

    config = hf_config(spec, token_ids)
    torch.manual_seed(spec.seed)
    model = Qwen2_5_VLForConditionalGeneration(config).to(torch.float32).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=token_ids["<|endoftext|>"],
        eos_token_id=[token_ids["<|im_end|>"], token_ids["<|endoftext|>"]],
        pad_token_id=token_ids["<|endoftext|>"],
    )
    with _no_progress_bars():  # a one-shard "Writing model shards" bar is noise in job logs
        model.save_pretrained(out, safe_serialization=True)

    manifest = {
        "format": "visplay-tiny-qwen2.5-vl/1",
        "spec": spec.model_dump(),
        "content_id": weights_sha256(out),
        "weight_file_sizes": {file.name: file.stat().st_size for file in weight_files(out)},
        "parameters": sum(p.numel() for p in model.parameters()),
        "image_tokens_per_image": image_token_count(spec),
        "dtype": "float32",
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def build_tiny_model(out_dir: str | Path, spec: TinyModelConfig | None = None) -> Path:
    """Build the tiny Qwen2.5-VL for ``spec`` (default: ``TinyModelConfig()``) at ``out_dir``; return the path.

    Idempotent: if ``out_dir`` already holds a tiny model built from the same spec it is returned as is;
    any other existing ``out_dir`` raises ``FileExistsError`` (nothing is overwritten). The files are
    written to a temporary sibling directory and renamed into place, so a concurrent or interrupted build
    never leaves a half-written model at ``out_dir``.
    """
    spec = spec if spec is not None else TinyModelConfig()
    out = Path(out_dir)
    if out.exists():
        return _existing(out, spec)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the model is meant to be read by other processes
    try:
        _write_model(tmp, spec)
        os.rename(tmp, out)  # atomic on one filesystem; fails if another build got there first
    except OSError:
        if out.exists():  # lost a race against another builder: accept its result if it matches
            return _existing(out, spec)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _existing(out: Path, spec: TinyModelConfig) -> Path:
    manifest = read_manifest(out)
    if manifest is None or manifest.get("spec") != spec.model_dump():
        raise FileExistsError(f"{out} exists and is not a tiny model built from {spec.model_dump()}")
    return out
