"""Where does the tiny model's visual skill stall? The probes behind NOTES.md's "session 6" section.

``single``: one question form with the visual fact as the whole target. Count scenes only, prompt "What
colour are the shapes?" (the reasoner prompt, no options), target the colour word. Prints, every 100 steps,
the share of scenes whose colour word is the model's top next token (teacher forced), on the training
scenes and on 50 held-out count scenes. The image-blind baseline is the held-out split's most common colour.

``mix``: the bootstrap's mix of all question forms (questioner targets and reasoner targets), with the
reasoner targets made dense in visual facts (``I see red, option B. The answer is \\boxed{B}.``), optionally
with caption examples (``Describe the image.`` -> ``blue circle left; black square center.``). Prints,
every 250 steps, per skill, the share of 60 held-out scenes' reasoner targets reproduced exactly under
teacher forcing (the fact and the letter both right).

``curriculum``: first ``--fact-steps`` steps on single visual facts only (no options, the fact as the
target: the colour, shape and count of a count scene; the colour at each named position, where each shape
is and how many there are in a shapes scene; each bar's value and the tallest bar's colour in a chart),
scored per form (top next token, teacher forced); then the ``mix`` batches with ``--facts`` fact examples
kept in each, scored like ``mix``.

  .venv/bin/python docs/experiment/vision_probes.py single --steps 400 --images 300
  .venv/bin/python docs/experiment/vision_probes.py mix --steps 3000 --images 900 --captions 2
  .venv/bin/python docs/experiment/vision_probes.py curriculum --steps 2000 --fact-steps 1000 --images 900

One torch thread, constant learning rate after a 100-step ramp, AdamW, batch 8, seed 0; temp work dir.
"""

from __future__ import annotations

import argparse
import collections
import random
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

import visplay.world.bootstrap as bootstrap
from visplay.config import TinyModelConfig
from visplay.prompts import IM_END, questioner_prompt, reasoner_prompt, render_prompt
from visplay.world.corpus import (  # _PHRASE: the generator's own position wording
    _PHRASE,
    make_corpus,
    read_ground_truth,
)
from visplay.world.tiny_model import build_tiny_model

SLOT_ORDER = ("left", "top", "center", "right", "bottom")


def caption(record: dict) -> str:
    """Every visual fact of a scene in one line (the ``mix`` probe's caption target)."""
    if record["kind"] == "shapes":
        objects = sorted(record["objects"], key=lambda o: SLOT_ORDER.index(o["position"]))
        return "; ".join(f"{o['colour']} {o['shape']} {o['position']}" for o in objects) + "."
    if record["kind"] == "count":
        first = record["objects"][0]
        return f"{len(record['objects'])} {first['colour']} {first['shape']}s."
    return "; ".join(f"bar {b['label']} {b['colour']} {b['value']}" for b in record["bars"]) + "."


def facts(record: dict) -> list[tuple[str, str, str]]:
    """Single visual facts of a scene as (question, answer, form), no options (the ``curriculum`` stage 1)."""
    objects, out = record["objects"], []
    if record["kind"] == "count":
        first = objects[0]
        out += [("What colour are the shapes?", first["colour"], "colour"),
                ("What shape are they?", first["shape"], "shape"),
                ("How many shapes are in the image?", str(len(objects)), "count")]  # fmt: skip
    elif record["kind"] == "shapes":
        out.append(("How many shapes are in the image?", str(len(objects)), "count"))
        for o in objects:
            out += [(f"What colour is the object {_PHRASE[o['position']]}?", o["colour"], "colour-at"),
                    (f"Where is the {o['colour']} {o['shape']}?", o["position"], "position")]  # fmt: skip
    else:
        tallest = max(record["bars"], key=lambda b: b["value"])
        out.append(("What colour is the tallest bar?", tallest["colour"], "tallest"))
        for b in record["bars"]:
            out += [(f"What is the value of bar {b['label']}?", str(b["value"]), "value")]
    return out


def dense_target(qa: dict) -> str:
    """A reasoner target that states the visual fact (the option's text) before its letter."""
    if qa["choices"]:
        seen = qa["choices"]["ABCDE".index(qa["answer"])]
        return f"I see {seen}, option {qa['answer']}. The answer is \\boxed{{{qa['answer']}}}.{IM_END}"
    return f"The answer is \\boxed{{{qa['answer']}}}.{IM_END}"


def examples(processor, corpus: Path, mode: str) -> dict[str, list]:
    """Tokenized examples of one corpus, only the kinds ``mode`` draws: {"single"} (single); {"questioner",
    "reasoner", "caption"} (mix); {"questioner", "reasoner", "fact"} (curriculum)."""
    cap_prompt = render_prompt(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]}]
    )
    out = collections.defaultdict(list)
    for record in read_ground_truth(corpus):
        image = Image.open(corpus / record["file"]).convert("RGB")
        if mode == "single":
            if record["kind"] == "count":
                colour = record["objects"][0]["colour"]
                prompt = reasoner_prompt("What colour are the shapes?")
                out["single"].append(
                    (bootstrap.build_example(processor, image, prompt, colour + IM_END), colour)
                )
            continue
        if mode == "curriculum":
            for question, answer, form in facts(record):
                prompt = reasoner_prompt(question)
                out["fact"].append((bootstrap.build_example(processor, image, prompt, answer + IM_END), form))
        else:
            out["caption"].append(
                bootstrap.build_example(processor, image, cap_prompt, caption(record) + IM_END)
            )
        for qa in record["qa"]:
            target = bootstrap.questioner_target(qa)
            out["questioner"].append(bootstrap.build_example(processor, image, questioner_prompt(), target))
            example = bootstrap.build_example(
                processor, image, reasoner_prompt(qa["question"]), dense_target(qa)
            )
            out["reasoner"].append((example, qa["skill"] + ("-mc" if qa["choices"] else "")))
    return out


def teacher_forced(
    model, pad_id: int, labelled: list, whole_target: bool, by_label: bool = False
) -> dict[str, float]:
    """Per label: share of examples whose first target token (or whole target) is the argmax prediction."""
    model.eval()
    hits = collections.defaultdict(list)
    with torch.no_grad():
        for example, label in labelled:
            batch = bootstrap.collate([example], pad_id)
            gold = batch.pop("labels")[0, 1:]
            predicted = model(**batch).logits[0, :-1].argmax(-1)
            mask = gold != bootstrap.IGNORE_INDEX
            right = predicted[mask] == gold[mask]
            hits[label if whole_target or by_label else "single"].append(
                bool(right.all() if whole_target else right[0])
            )
    model.train()
    return {k: round(sum(v) / len(v), 2) for k, v in sorted(hits.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("single", "mix", "curriculum"))
    parser.add_argument("--fact-steps", type=int, default=1000, help="curriculum: single-fact steps first")
    parser.add_argument("--facts", type=int, default=2, help="curriculum: fact examples per batch afterwards")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--tiny", nargs="*", default=[], help="TinyModelConfig fields, e.g. hidden_size=256")
    parser.add_argument("--questioner", type=int, default=2, help="mix: questioner examples per batch of 8")
    parser.add_argument("--captions", type=int, default=0, help="mix: caption examples per batch of 8")
    args = parser.parse_args()

    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    torch.set_num_threads(1)
    torch.manual_seed(0)
    work = Path(tempfile.mkdtemp(prefix="visplay-vision-probe-"))
    shape = TinyModelConfig(**{k: int(v) for k, v in (item.split("=") for item in args.tiny)})
    build_tiny_model(work / "random", shape)
    print(f"tiny model {shape.model_dump()}", flush=True)
    make_corpus(work / "labeled", args.images, 100, split="bootstrap")
    make_corpus(work / "heldout", 150 if args.mode == "single" else 60, 7, split="heldout")
    processor = AutoProcessor.from_pretrained(work / "random")
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(work / "random", dtype=torch.float32)
    pad_id = processor.tokenizer.pad_token_id
    train, heldout = (
        examples(processor, work / "labeled", args.mode),
        examples(processor, work / "heldout", args.mode),
    )
    if args.mode == "single":
        colours = collections.Counter(colour for _, colour in heldout["single"])
        print(f"{len(train['single'])} training scenes; held-out {len(heldout['single'])}, image-blind "
              f"baseline {colours.most_common(1)[0][1] / len(heldout['single']):.2f}")  # fmt: skip
        draws = [("single", 8)]
    elif args.mode == "mix":
        draws = [("questioner", args.questioner), ("reasoner", 8 - args.questioner - args.captions)]
        draws.append(("caption", args.captions))
    else:
        draws = [("fact", 8)]
        later = [("questioner", args.questioner), ("reasoner", 8 - args.questioner - args.facts)]
        later.append(("fact", args.facts))

    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95))
    rng, started, every = random.Random(0), time.perf_counter(), 100 if args.mode == "single" else 250
    for step in range(args.steps):
        if args.mode == "curriculum" and step == args.fact_steps:
            draws = later
        for group in optimizer.param_groups:
            group["lr"] = args.lr * min(1.0, (step + 1) / 100)
        parts = []
        for kind, n in draws:
            picked = [rng.choice(train[kind]) for _ in range(n)]
            parts.append([p[0] if isinstance(p, tuple) else p for p in picked])
        loss = bootstrap.batch_loss(model, [bootstrap.collate(p, pad_id) for p in parts if p])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step % every == 0 or step == args.steps - 1:
            if args.mode == "single":
                scores = {"train": teacher_forced(model, pad_id, train["single"][:60], False)["single"],
                          "held-out": teacher_forced(model, pad_id, heldout["single"], False)["single"]}  # fmt: skip
            elif args.mode == "mix" or step >= args.fact_steps:
                scores = teacher_forced(model, pad_id, heldout["reasoner"], True)
            else:
                scores = teacher_forced(model, pad_id, heldout["fact"], False, by_label=True)
            print(
                step, f"loss {loss.item():.3f}", scores, f"{time.perf_counter() - started:.0f}s", flush=True
            )


if __name__ == "__main__":
    main()
