"""Supervised warm-up ("bootstrap"): the stand-in for an instruction-tuned checkpoint.

VisPlay starts from an instruction-tuned VLM that already follows chat prompts: its Questioner writes
``<type>T</type><question>Q</question><answer>A</answer>`` and its Reasoner ends with ``\\boxed{answer}``.
The offline tiny model (:mod:`visplay.world.tiny_model`) is random and emits noise, so the generation
pipeline would parse no questions and the GRPO trainers would see all-zero rewards. :func:`warm_up` fills
that gap with a short supervised fine-tune on a **labeled** synthetic split (:func:`visplay.world.corpus.
make_corpus` with e.g. ``split="bootstrap"``). This is the ONLY step of the project that reads labels for
training; self-evolution afterwards uses unlabeled images, and held-out evaluation must use another split.

Each ground-truth QA pair ``{question, answer, qtype, skill}`` of an image gives two examples, with the
exact prompts of :mod:`visplay.prompts` (so training matches what vLLM sees at generation time):

* questioner: ``render_prompt(questioner_messages())`` + image ->
  ``<type>{qtype}</type><question>{question}</question><answer>{answer}</answer><|im_end|>``
* reasoner: ``render_prompt(reasoner_messages(question))`` + image ->
  ``{one sentence per skill} The answer is \\boxed{answer}.<|im_end|>``

The prompt is tokenized by the processor (which expands the image placeholder to one ``<|image_pad|>`` per
merged patch) and the target by the tokenizer alone, then concatenated: exactly the token sequence a
generator produces after that prompt. The loss covers only target tokens (prompt labels are -100).

Training is a single-process torch loop (AdamW, linear warm-up then cosine decay, gradient clipping),
seeded for its data order and any randomness. The result is written with ``save_pretrained`` (float32
safetensors, same architecture, so vLLM loads it like the base) plus :data:`MANIFEST`, into a temporary
sibling directory renamed into place. Its version id is :func:`visplay.checkpoints.model_version`.

    visplay bootstrap runs/tiny-model runs/bootstrap-corpus runs/tiny-model-warm
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from visplay.checkpoints import model_version
from visplay.prompts import IM_END, questioner_prompt, reasoner_prompt
from visplay.world.corpus import GROUND_TRUTH_FILENAME, read_ground_truth

if TYPE_CHECKING:
    import torch
    from PIL import Image
    from transformers import ProcessorMixin

log = logging.getLogger(__name__)

DEFAULT_STEPS = 200
"""Optimizer steps of the default warm-up: about 1-2 minutes on 2 CPU cores for the default tiny model."""
DEFAULT_BATCH_SIZE = 8
"""Examples per step (questioner and reasoner examples mixed, see ``questioner_share``)."""
DEFAULT_LR = 5e-3
"""Peak AdamW learning rate; high because the tiny model is randomly initialised, not pre-trained."""
WARMUP_FRACTION = 0.1
"""Share of the steps over which the learning rate ramps up linearly before the cosine decay."""
LOG_EVERY = 10
"""Steps between recorded losses in :attr:`BootstrapSummary.losses`."""
IGNORE_INDEX = -100
"""Label of positions excluded from the loss (torch's cross-entropy default)."""
MANIFEST = "visplay_bootstrap.json"
"""Written next to the weights: base model version, corpus hash, hyper-parameters, final loss."""

REASONER_LEADS = {
    "colour": "I look at the colour of the object.",
    "count": "I count the shapes one by one.",
    "position": "I look at where the object is in the image.",
    "chart": "I read the bar heights against the axis.",
    "shape": "I look at the shape of the objects.",
}
"""The one-sentence rationale a reasoner target starts with, by QA skill (see :data:`corpus.SKILLS`)."""


@dataclass(frozen=True)
class Example:
    """One tokenized training example (one image, one prompt, one target).

    Attributes:
        input_ids: ``(L,)`` int64, prompt tokens (image pads expanded) then target tokens.
        labels: ``(L,)`` int64, :data:`IGNORE_INDEX` on the prompt, equal to ``input_ids`` on the target.
        mm_token_type_ids: ``(L,)`` int64, 1 on image pad tokens, else 0 (Qwen2.5-VL's 3D rope needs it).
        pixel_values: ``(P, 3 * 2 * 14 * 14)`` float32 patches of the image (P = 64 for 112 pixels).
        image_grid_thw: ``(3,)`` int64, the image's (time, height, width) patch grid.
    """

    input_ids: torch.Tensor
    labels: torch.Tensor
    mm_token_type_ids: torch.Tensor
    pixel_values: torch.Tensor
    image_grid_thw: torch.Tensor


@dataclass(frozen=True)
class BootstrapSummary:
    """What :func:`warm_up` did.

    Attributes:
        steps: optimizer steps taken.
        final_loss: mean training loss over the last :data:`LOG_EVERY` steps (per target token).
        losses: ``(step, loss)`` of that single step's batch, at steps 0, LOG_EVERY, 2 * LOG_EVERY, ... and
            the last step.
        seconds: wall time of the whole call (loading, tokenizing, training, saving).
        out_dir: the written checkpoint directory.
        model_version: :func:`visplay.checkpoints.model_version` of ``out_dir``.
    """

    steps: int
    final_loss: float
    losses: tuple[tuple[int, float], ...]
    seconds: float
    out_dir: Path
    model_version: str


def questioner_target(qa: dict[str, Any]) -> str:
    """The questioner's training completion for one ground-truth QA pair, ending in ``<|im_end|>``."""
    return f"<type>{qa['qtype']}</type><question>{qa['question']}</question><answer>{qa['answer']}</answer>{IM_END}"


def reasoner_target(qa: dict[str, Any]) -> str:
    """The reasoner's training completion: a one-sentence rationale, then ``The answer is \\boxed{answer}.``"""
    lead = REASONER_LEADS.get(qa["skill"], "I look at the image.")
    return f"{lead} The answer is \\boxed{{{qa['answer']}}}.{IM_END}"


def build_example(processor: ProcessorMixin, image: Image.Image, prompt: str, target: str) -> Example:
    """Tokenize ``prompt`` (with ``image``) and ``target``; mask the prompt out of the labels.

    ``prompt`` must contain one image placeholder (as :func:`visplay.prompts.render_prompt` writes it).
    """
    import torch

    encoded = processor(text=[prompt], images=[image], return_tensors="pt")
    prompt_ids = encoded["input_ids"][0]
    target_ids = torch.tensor(processor.tokenizer.encode(target, add_special_tokens=False), dtype=torch.long)
    return Example(
        input_ids=torch.cat([prompt_ids, target_ids]),
        labels=torch.cat([torch.full_like(prompt_ids, IGNORE_INDEX), target_ids]),
        mm_token_type_ids=torch.cat([encoded["mm_token_type_ids"][0], torch.zeros_like(target_ids)]),
        pixel_values=encoded["pixel_values"],
        image_grid_thw=encoded["image_grid_thw"][0],
    )


def build_examples(processor: ProcessorMixin, corpus_dir: str | Path) -> tuple[list[Example], list[Example]]:
    """(questioner examples, reasoner examples) for every QA pair of the corpus's ground truth, in file order."""
    from PIL import Image

    corpus_dir = Path(corpus_dir)
    questioner, reasoner = [], []
    for record in read_ground_truth(corpus_dir):
        with Image.open(corpus_dir / record["file"]) as handle:
            image = handle.convert("RGB")
        pixels = None  # every example of one image shares one pixel tensor (~300 KB each)
        for qa in record["qa"]:
            q = build_example(processor, image, questioner_prompt(), questioner_target(qa))
            r = build_example(processor, image, reasoner_prompt(qa["question"]), reasoner_target(qa))
            pixels = q.pixel_values if pixels is None else pixels
            questioner.append(replace(q, pixel_values=pixels))
            reasoner.append(replace(r, pixel_values=pixels))
    if not questioner:
        raise ValueError(f"{corpus_dir / GROUND_TRUTH_FILENAME} holds no QA pairs to train on")
    return questioner, reasoner


def collate(examples: list[Example], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch of B examples to the longest length L into model keyword arguments.

    Returns ``input_ids``, ``labels``, ``attention_mask``, ``mm_token_type_ids``: ``(B, L)`` int64 (padding:
    ``pad_token_id``, -100, 0, 0); ``pixel_values``: ``(sum of P, D)``, the images' patches in batch order;
    ``image_grid_thw``: ``(B, 3)``.
    """
    import torch

    length = max(len(e.input_ids) for e in examples)

    def pad(rows: list[torch.Tensor], value: int) -> torch.Tensor:
        return torch.stack(
            [torch.nn.functional.pad(row, (0, length - len(row)), value=value) for row in rows]
        )

    return {
        "input_ids": pad([e.input_ids for e in examples], pad_token_id),
        "labels": pad([e.labels for e in examples], IGNORE_INDEX),
        "attention_mask": pad([torch.ones_like(e.input_ids) for e in examples], 0),
        "mm_token_type_ids": pad([e.mm_token_type_ids for e in examples], 0),
        "pixel_values": torch.cat([e.pixel_values for e in examples]),
        "image_grid_thw": torch.stack([e.image_grid_thw for e in examples]),
    }


def batch_loss(model: torch.nn.Module, sub_batches: list[dict[str, torch.Tensor]]) -> torch.Tensor:
    """Mean cross-entropy per target token over several collated sub-batches (a scalar with gradient).

    The model's own loss is a per-token mean within one sub-batch; weighting each by its target-token count
    gives the mean over all target tokens of the step, as if it were one padded batch.
    """
    counts = [int((sub["labels"] != IGNORE_INDEX).sum()) for sub in sub_batches]
    total = sum(model(**sub).loss * count for sub, count in zip(sub_batches, counts, strict=True))
    return total / sum(counts)


def _shuffled_forever(items: list[Example], rng: random.Random) -> Iterator[Example]:
    """Yield ``items`` in a fresh ``rng`` permutation each epoch, forever."""
    while True:
        order = list(range(len(items)))
        rng.shuffle(order)
        for i in order:
            yield items[i]


def _lr_factor(step: int, steps: int) -> float:
    """Learning-rate multiplier: linear warm-up over :data:`WARMUP_FRACTION`, then cosine decay to 10%."""
    warmup = max(1, round(WARMUP_FRACTION * steps))
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))


@contextmanager
def _torch_threads(num_threads: int | None) -> Iterator[None]:
    """Run the block with ``num_threads`` torch intra-op threads (None: unchanged), then restore the setting."""
    import torch

    previous = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def warm_up(
    base_dir: str | Path,
    corpus_dir: str | Path,
    out_dir: str | Path,
    *,
    steps: int = DEFAULT_STEPS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    lr: float = DEFAULT_LR,
    seed: int = 0,
    questioner_share: float = 0.5,
    num_threads: int | None = 1,
) -> BootstrapSummary:
    """Fine-tune the checkpoint at ``base_dir`` on the labeled corpus at ``corpus_dir``; save it at ``out_dir``.

    Args:
        base_dir: a Qwen2.5-VL checkpoint directory (model + processor files), e.g. the tiny model.
        corpus_dir: a corpus directory holding ``ground_truth.jsonl`` (a LABELED split; see module docstring).
        out_dir: where the warmed-up checkpoint goes; must not exist yet.
        steps: optimizer steps.
        batch_size: examples per step.
        lr: peak AdamW learning rate.
        seed: seeds torch and the data order; same inputs and seed give the same training run.
        questioner_share: share of each batch drawn from questioner examples (rounded); the rest are
            reasoner examples. Each kind is drawn without replacement, reshuffled every epoch.
        num_threads: torch intra-op threads while training (restored afterwards); None keeps torch's
            setting. 1 by default: on 2 cores shared with other work (Ray, vLLM engines) one thread was
            measured 8x faster than two (0.33 s vs 2.8 s per step), as OpenMP threads wait on each other.

    Raises:
        FileExistsError: if ``out_dir`` exists (nothing is overwritten).
        ValueError: on a bad argument or a corpus without QA pairs.
    """
    import torch
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    # Imported here, not at the top: the example helpers above need only torch and transformers.
    from visplay.world.tiny_model import _no_progress_bars

    if steps < 1 or batch_size < 1 or lr <= 0 or not 0.0 <= questioner_share <= 1.0:
        raise ValueError("need steps >= 1, batch_size >= 1, lr > 0 and 0 <= questioner_share <= 1")
    start = time.monotonic()
    base_dir, corpus_dir, out = Path(base_dir), Path(corpus_dir), Path(out_dir)
    ground_truth = corpus_dir / GROUND_TRUTH_FILENAME
    if out.exists():
        raise FileExistsError(f"{out} exists; pick a new out_dir")

    with _torch_threads(num_threads), _no_progress_bars():
        torch.manual_seed(seed)
        processor = AutoProcessor.from_pretrained(base_dir)
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(base_dir, dtype=torch.float32)
        questioner, reasoner = build_examples(processor, corpus_dir)
        log.info("bootstrap: %d questioner + %d reasoner examples", len(questioner), len(reasoner))
        n_questioner, pad_id = round(questioner_share * batch_size), processor.tokenizer.pad_token_id
        history = _train(model, questioner, reasoner, pad_id, steps, n_questioner, batch_size, lr, seed)

        final_loss = sum(history[-LOG_EVERY:]) / len(history[-LOG_EVERY:])
        losses = tuple((step, history[step]) for step in sorted({*range(0, steps, LOG_EVERY), steps - 1}))
        manifest = {
            "format": "visplay-bootstrap/1",
            "base_model_version": model_version(base_dir),
            "corpus_ground_truth_sha256": hashlib.sha256(ground_truth.read_bytes()).hexdigest(),
            "examples": {"questioner": len(questioner), "reasoner": len(reasoner)},
            "steps": steps,
            "batch_size": batch_size,
            "lr": lr,
            "seed": seed,
            "questioner_share": questioner_share,
            "final_loss": final_loss,
            "losses": [list(pair) for pair in losses],
        }
        _save_atomically(out, model, processor, manifest)
    return BootstrapSummary(
        steps=steps,
        final_loss=final_loss,
        losses=losses,
        seconds=time.monotonic() - start,
        out_dir=out,
        model_version=model_version(out),
    )


def _train(
    model: torch.nn.Module,
    questioner: list[Example],
    reasoner: list[Example],
    pad_token_id: int,
    steps: int,
    n_questioner: int,
    batch_size: int,
    lr: float,
    seed: int,
) -> list[float]:
    """Train ``model`` in place for ``steps`` AdamW steps; return the loss of every step.

    Each step takes ``n_questioner`` questioner examples and ``batch_size - n_questioner`` reasoner examples,
    each kind in a ``seed``-ed order that is reshuffled every epoch.
    """
    import torch

    rng = random.Random(seed)
    streams = (_shuffled_forever(questioner, rng), _shuffled_forever(reasoner, rng))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, steps))
    model.train()
    history: list[float] = []
    for step in range(1, steps + 1):
        # Questioner prompts are ~3x longer than reasoner prompts: padding each kind separately saves work.
        parts = [[next(streams[0]) for _ in range(n_questioner)]]
        parts.append([next(streams[1]) for _ in range(batch_size - n_questioner)])
        loss = batch_loss(model, [collate(part, pad_token_id) for part in parts if part])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        history.append(float(loss.detach()))
        if step % LOG_EVERY == 0 or step == steps:
            log.info("bootstrap step %d/%d loss %.4f", step, steps, history[-1])
    model.eval()
    return history


def _save_atomically(out: Path, model: Any, processor: Any, manifest: dict[str, Any]) -> None:
    """Write model, processor and ``manifest`` (plus the new model version) to a temp sibling, rename to ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the checkpoint is read by other processes (vLLM, Ray)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
        manifest = {**manifest, "model_version": model_version(tmp)}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        os.rename(tmp, out)  # atomic on one filesystem; fails if out appeared meanwhile
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
