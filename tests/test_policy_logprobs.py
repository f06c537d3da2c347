"""completion_logprobs keeps only the completion span's logits (logits_to_keep): its log-probs and
entropies equal those read from the full [B, T, V] logits, for samples whose prompts differ in length."""

from __future__ import annotations

import io

import torch
from PIL import Image

from visplay import prompts
from visplay.rl.logits import token_logprobs
from visplay.train.policy import Sample, collate, completion_logprobs, load_policy


def test_completion_logprobs_equal_the_full_logits_reading(tiny_model):
    model, processor = load_policy(str(tiny_model), dtype=torch.float32)
    model.eval()
    tok = processor.tokenizer
    samples = []
    for i, question in enumerate(
        ["What colour is it?", "How many shapes are there in the picture, all told?"]
    ):
        image = Image.new("RGB", (112, 112), (60 * i, 90, 160))
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        text = prompts.render_prompt(prompts.reasoner_messages(question))
        ids = processor(text=[text], images=[image], return_tensors="pt")["input_ids"][0].tolist()
        samples.append(Sample(ids, [5 + i, 17, 33, 9][: 4 - i], buf.getvalue(), advantage=1.0))
    batch = collate(samples, processor.image_processor, tok.convert_tokens_to_ids("<|image_pad|>"), 0)
    assert len(set(batch.completion_start.tolist())) == 2  # prompts of two lengths, right-padded
    with torch.no_grad():
        logp, entropy = completion_logprobs(model, batch)
        full = model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask,
            mm_token_type_ids=batch.mm_token_type_ids, pixel_values=batch.pixel_values,
            image_grid_thw=batch.image_grid_thw, use_cache=False,
        ).logits  # fmt: skip
    for i, s in enumerate(samples):
        n, start = len(s.completion_ids), int(batch.completion_start[i])
        # completion token j sits at start + j and is scored by the logits at start + j - 1
        rows = full[i, start - 1 : start - 1 + n].float()
        expected = token_logprobs(rows[None], torch.tensor([s.completion_ids]))[0]
        torch.testing.assert_close(logp[i, :n], expected, rtol=1e-5, atol=1e-5)
        probs = rows.softmax(-1)
        torch.testing.assert_close(entropy[i, :n], -(probs * probs.log()).sum(-1), rtol=1e-4, atol=1e-4)
