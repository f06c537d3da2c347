"""Does a longer supervised warm-up give the tiny model visual skill? The probe behind NOTES.md.

Warms the offline tiny Qwen2.5-VL up (visplay.world.bootstrap.warm_up) on a labeled split of N scenes for
S steps at learning rate LR, then answers a held-out split of 48 scenes greedily with transformers and
prints, per skill: accuracy, the number of distinct boxed answers, and the image-blind baseline (the
share of the skill's most common gold answer). A model that looks at the image gives more distinct
answers than question forms; an image-blind one gives one constant per form.

``--rationale`` swaps the reasoner's targets for ones that name the visual fact before the letter
(``I see red, option B. The answer is \\boxed{B}.``), splitting "what is in the image" from "which
letter lists it".

  .venv/bin/python docs/experiment/bootstrap_probe.py --steps 2000 --images 300 --lr 2e-3 --rationale

Slow on purpose (one torch thread, about 0.2 s a step on 2 cores); the work directory is a temp dir.
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

import visplay.world.bootstrap as bootstrap
from visplay.config import TinyModelConfig
from visplay.prompts import IM_END, reasoner_prompt
from visplay.rewards import extract_boxed, grade
from visplay.world.corpus import make_corpus, read_ground_truth
from visplay.world.tiny_model import build_tiny_model


def rationale_target(qa: dict) -> str:
    """A reasoner target that states the option's text (the visual fact) before its letter."""
    lead = bootstrap.REASONER_LEADS.get(qa["skill"], "I look at the image.")
    if qa["choices"]:
        seen = qa["choices"]["ABCDE".index(qa["answer"])]
        return f"{lead} I see {seen}, option {qa['answer']}. The answer is \\boxed{{{qa['answer']}}}.{IM_END}"
    return f"{lead} The answer is \\boxed{{{qa['answer']}}}.{IM_END}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--questioner-share", type=float, default=0.5)
    parser.add_argument("--rationale", action="store_true")
    args = parser.parse_args()
    if args.rationale:
        bootstrap.reasoner_target = rationale_target  # build_examples looks it up at call time

    work = Path(tempfile.mkdtemp(prefix="visplay-probe-"))
    build_tiny_model(work / "random", TinyModelConfig())
    make_corpus(work / "labeled", args.images, 100, split="bootstrap")
    make_corpus(work / "heldout", 48, 7, split="heldout")
    summary = bootstrap.warm_up(
        work / "random", work / "labeled", work / "model", steps=args.steps, lr=args.lr, seed=0,
        questioner_share=args.questioner_share,
    )  # fmt: skip
    print(f"warm-up {summary.seconds:.0f}s, final loss {summary.final_loss:.3f}")

    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    torch.set_num_threads(1)
    processor = AutoProcessor.from_pretrained(work / "model")
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(work / "model").eval()
    correct, answers, golds = (collections.defaultdict(list) for _ in range(3))
    started = time.perf_counter()
    for record in read_ground_truth(work / "heldout"):
        image = Image.open(work / "heldout" / record["file"]).convert("RGB")
        for qa in record["qa"]:
            inputs = processor(text=[reasoner_prompt(qa["question"])], images=[image], return_tensors="pt")
            with torch.no_grad():
                out = model.generate(**inputs, max_new_tokens=40, do_sample=False)
            text = processor.tokenizer.decode(
                out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True
            )
            answer = extract_boxed(text)
            correct[qa["skill"]].append(grade(answer, qa["answer"]))
            answers[qa["skill"]].append(answer)
            golds[qa["skill"]].append(qa["answer"])
    total = sum(map(sum, correct.values())) / sum(map(len, correct.values()))
    print(f"held-out accuracy {100 * total:.1f}% ({time.perf_counter() - started:.0f}s to answer)")
    for skill in sorted(correct):
        n = len(correct[skill])
        blind = collections.Counter(golds[skill]).most_common(1)[0][1] / n
        print(
            f"  {skill:<9} {100 * sum(correct[skill]) / n:5.1f}% of {n:3d}  distinct answers "
            f"{len(set(answers[skill])):2d}  image-blind baseline {100 * blind:5.1f}%"
        )


if __name__ == "__main__":
    main()
